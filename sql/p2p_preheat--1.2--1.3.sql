/* p2p_preheat 1.3: policies evaluated in the database, and their executions */

\echo Use "ALTER EXTENSION p2p_preheat UPDATE TO '1.3'" to load this file. \quit

-- Harbor's doublestar patterns, on PostgreSQL's regex engine -------------

CREATE FUNCTION p2p_preheat.doublestar_regex(pattern text)
RETURNS text
AS 'MODULE_PATHNAME', 'p2p_preheat_doublestar_regex'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION p2p_preheat.doublestar_regex(text) IS
'The anchored regular expression a Harbor doublestar pattern becomes';

CREATE FUNCTION p2p_preheat.doublestar_match(pattern text, name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'p2p_preheat_doublestar_match'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION p2p_preheat.doublestar_match(text, text) IS
'Whether name matches a Harbor doublestar pattern (* within a segment, ** across, ?, [..], {a,b}); compiled once per backend';

-- Executions: one per run of a policy ------------------------------------

CREATE TABLE p2p_preheat.execution (
	id bigserial PRIMARY KEY,
	policy_id integer NOT NULL,
	trigger text NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'event_based')),
	started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	candidates integer NOT NULL DEFAULT 0,
	notes text[] NOT NULL DEFAULT '{}'	-- filters that could not be evaluated, and why
);
CREATE INDEX execution_policy ON p2p_preheat.execution (policy_id, started_at);

-- which jobs an execution asked for (a job shared by runs is linked to each)
CREATE TABLE p2p_preheat.execution_job (
	execution_id bigint NOT NULL REFERENCES p2p_preheat.execution ON DELETE CASCADE,
	job_id bigint NOT NULL REFERENCES p2p_preheat.job ON DELETE CASCADE,
	artifact_id integer,
	tag text,
	PRIMARY KEY (execution_id, job_id)
);
CREATE INDEX execution_job_job ON p2p_preheat.execution_job (job_id);

-- status derived from the jobs, with Harbor's names
CREATE VIEW p2p_preheat.execution_status AS
SELECT e.id, e.policy_id, e.trigger, e.started_at,
	   CASE WHEN count(j.id) = 0 THEN 'Success'
			WHEN count(j.id) FILTER (WHERE j.state = 'queued') = count(j.id) THEN 'Pending'
			WHEN bool_or(j.state IN ('queued', 'sending', 'running')) THEN 'Running'
			WHEN bool_or(j.state = 'failed') THEN 'Error'
			WHEN bool_or(j.state = 'canceled') THEN 'Stopped'
			ELSE 'Success' END AS status,
	   count(j.id) AS jobs,
	   count(j.id) FILTER (WHERE j.state IN ('queued', 'sending')) AS queued,
	   count(j.id) FILTER (WHERE j.state = 'running') AS running,
	   count(j.id) FILTER (WHERE j.state = 'succeeded') AS succeeded,
	   count(j.id) FILTER (WHERE j.state = 'failed') AS failed,
	   count(j.id) FILTER (WHERE j.state = 'canceled') AS canceled,
	   CASE WHEN NOT coalesce(bool_or(j.state IN ('queued', 'sending', 'running')), false)
			THEN coalesce(max(j.finished_at), e.started_at) END AS ended_at,
	   e.notes
  FROM p2p_preheat.execution e
  LEFT JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id
  LEFT JOIN p2p_preheat.job j ON j.id = ej.job_id
 GROUP BY e.id;

COMMENT ON VIEW p2p_preheat.execution_status IS
'Each execution with its status (Pending, Running, Success, Error, Stopped) and job counts per state';

-- what was preheated where, and why anything failed
CREATE VIEW p2p_preheat.execution_detail AS
SELECT ej.execution_id, j.id AS job_id, ej.artifact_id, ej.tag, j.url, j.instance_id,
	   j.state, j.attempts, j.dragonfly_job_id, j.failed_peers, j.last_error, j.finished_at
  FROM p2p_preheat.execution_job ej
  JOIN p2p_preheat.job j ON j.id = ej.job_id;

-- run_policy() ------------------------------------------------------------

-- Harbor's filters: repository and tag patterns, label names; signature and
-- vulnerability cannot be evaluated here and come back as notes.
CREATE FUNCTION p2p_preheat._parse_filters(filters text, who text,
	OUT repo_pattern text, OUT tag_pattern text, OUT labels text[], OUT notes text[])
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	doc jsonb;
	f jsonb;
BEGIN
	labels := '{}';
	notes := '{}';
	BEGIN
		doc := coalesce(nullif(btrim(filters), ''), '[]')::jsonb;
	EXCEPTION WHEN invalid_text_representation THEN
		RAISE EXCEPTION 'filters of % are not valid JSON', who
			USING ERRCODE = 'invalid_text_representation';
	END;
	IF jsonb_typeof(doc) <> 'array' THEN
		RAISE EXCEPTION 'filters of % must be a JSON array', who
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR f IN SELECT * FROM jsonb_array_elements(doc) LOOP
		CASE f->>'type'
			WHEN 'repository' THEN repo_pattern := f->>'value';
			WHEN 'tag' THEN tag_pattern := f->>'value';
			WHEN 'label' THEN
				labels := CASE jsonb_typeof(f->'value')
					WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(f->'value'))
					WHEN 'string' THEN ARRAY[f->>'value']
					ELSE '{}' END;
			WHEN 'signature', 'vulnerability' THEN
				-- Harbor's signature and scan results are not in the tables this extension reads
				notes := notes || format('%s filter (%s) not applicable: the database holds no %s data; not evaluated',
					f->>'type', f->'value', CASE f->>'type' WHEN 'signature' THEN 'signature' ELSE 'scan' END);
			ELSE
				notes := notes || format('unknown filter type %s ignored', coalesce(f->>'type', 'null'));
		END CASE;
	END LOOP;
END
$$;

CREATE FUNCTION p2p_preheat.run_policy(policy_id integer, trigger text DEFAULT 'manual')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	h name := p2p_preheat._harbor_schema();
	pol record;
	registry text := rtrim(coalesce(current_setting('p2p_preheat.registry_url', true), ''), '/');
	repo_pattern text;
	tag_pattern text;
	labels text[] := '{}';
	notes text[] := '{}';
	attrs jsonb;
	eid bigint;
	n integer;
BEGIN
	IF trigger IS NULL OR trigger NOT IN ('manual', 'scheduled', 'event_based') THEN
		RAISE EXCEPTION 'trigger must be manual, scheduled or event_based, not %', trigger
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	EXECUTE format(
		'SELECT p.name::text AS name, p.project_id, p.provider_id, p.filters::text AS filters,
				p.enabled, p.extra_attrs::text AS extra_attrs, i.id AS instance, i.vendor::text AS vendor,
				i.enabled AS instance_enabled, pr.name::text AS project
		   FROM %1$I.p2p_preheat_policy p
		   LEFT JOIN %1$I.p2p_preheat_instance i ON i.id = p.provider_id
		   LEFT JOIN %1$I.project pr ON pr.project_id = p.project_id
		  WHERE p.id = $1', h)
		INTO pol USING policy_id;
	IF pol IS NULL OR pol.name IS NULL THEN
		RAISE EXCEPTION 'preheat policy % does not exist', policy_id USING ERRCODE = 'no_data_found';
	END IF;
	IF NOT coalesce(pol.enabled, false) THEN
		RAISE EXCEPTION 'preheat policy "%" (id %) is disabled', pol.name, policy_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Enable the policy in Harbor before running it.';
	END IF;
	IF pol.instance IS NULL THEN
		RAISE EXCEPTION 'preheat policy "%" (id %) uses preheat instance %, which does not exist',
			pol.name, policy_id, pol.provider_id USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	IF NOT coalesce(pol.instance_enabled, true) THEN
		RAISE EXCEPTION 'preheat policy "%" (id %) uses preheat instance %, which is disabled',
			pol.name, policy_id, pol.provider_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Enable the instance in Harbor before running the policy.';
	END IF;
	IF registry = '' THEN
		RAISE EXCEPTION 'p2p_preheat.registry_url is not set'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'A superuser sets it to Harbor''s external URL.';
	END IF;

	SELECT f.repo_pattern, f.tag_pattern, f.labels, f.notes
	  INTO repo_pattern, tag_pattern, labels, notes
	  FROM p2p_preheat._parse_filters(pol.filters, format('preheat policy "%s" (id %s)', pol.name, policy_id)) f;

	attrs := p2p_preheat.validate_extra_attrs(pol.vendor, pol.extra_attrs);
	INSERT INTO p2p_preheat.execution (policy_id, trigger, notes)
	VALUES (policy_id, trigger, notes) RETURNING id INTO eid;

	-- every tagged image of the project, one candidate per artifact and tag,
	-- queued like preheat() queues (unfinished identical jobs are reused)
	EXECUTE format($q$
		WITH c AS MATERIALIZED (
			SELECT a.id AS artifact_id, t.name::text AS tag,
				   format('%%s/v2/%%s/manifests/%%s', $1, r.name, t.name) AS url
			  FROM %1$I.tag t
			  JOIN %1$I.artifact a ON a.id = t.artifact_id
			  JOIN %1$I.repository r ON r.repository_id = a.repository_id
			 WHERE a.project_id = $2 AND a.type = 'IMAGE'
			   AND ($3 IS NULL OR p2p_preheat.doublestar_match($3, substr(r.name, length($4) + 2)))
			   AND ($5 IS NULL OR p2p_preheat.doublestar_match($5, t.name))
			   AND (cardinality($6) = 0 OR
					(SELECT count(DISTINCT l.name) FROM %1$I.label_reference lr
					   JOIN %1$I.harbor_label l ON l.id = lr.label_id
					  WHERE lr.artifact_id = a.id AND l.name = ANY ($6)) = cardinality($6))),
		ins AS (
			INSERT INTO p2p_preheat.job AS j (policy_id, instance_id, url, attrs)
			SELECT DISTINCT $7, $8, url, $9 FROM c
			ON CONFLICT (instance_id, url, md5(attrs::text))
				WHERE state IN ('queued', 'sending', 'running') DO NOTHING
			RETURNING j.id, j.url),
		ids AS (
			SELECT id, url FROM ins
			UNION ALL
			SELECT j.id, j.url FROM p2p_preheat.job j
			 WHERE j.instance_id = $8 AND md5(j.attrs::text) = md5($9::text)
			   AND j.state IN ('queued', 'sending', 'running')
			   AND j.url IN (SELECT url FROM c))
		INSERT INTO p2p_preheat.execution_job (execution_id, job_id, artifact_id, tag)
		SELECT DISTINCT ON (ids.id) $10, ids.id, c.artifact_id, c.tag
		  FROM ids JOIN c ON c.url = ids.url$q$, h)
		USING registry, pol.project_id, repo_pattern, pol.project, tag_pattern, labels,
			  policy_id, pol.provider_id, attrs, eid;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE p2p_preheat.execution SET candidates = n WHERE id = eid;
	IF n > 0 THEN
		PERFORM p2p_preheat._wake_worker();
	END IF;
	RETURN eid;
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat.run_policy(integer, text) FROM PUBLIC;

COMMENT ON FUNCTION p2p_preheat.run_policy(integer, text) IS
'Evaluates a policy like Harbor (every tagged image of its project, filtered), queues its preheats and returns the execution id';
