/*
 * Harbor's policies evaluated in the database: its doublestar patterns on
 * PostgreSQL's regex engine, run_policy(), and the executions it records.
 */

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

-- Executions: one per run of a policy -----------------------------------

CREATE TABLE p2p_preheat.execution (
	id bigserial PRIMARY KEY,
	policy_id integer NOT NULL,
	trigger text NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'event_based')),
	started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	candidates integer NOT NULL DEFAULT 0,
	notes text[] NOT NULL DEFAULT '{}'	-- filters that could not be evaluated, and why
);
CREATE INDEX execution_policy ON p2p_preheat.execution (policy_id, started_at);

COMMENT ON TABLE p2p_preheat.execution IS
'One row per run of a policy: manual, scheduled or for an event';

-- which jobs an execution asked for (a job shared by runs is linked to each)
CREATE TABLE p2p_preheat.execution_job (
	execution_id bigint NOT NULL REFERENCES p2p_preheat.execution ON DELETE CASCADE,
	job_id bigint NOT NULL REFERENCES p2p_preheat.job ON DELETE CASCADE,
	artifact_id integer,
	tag text,
	PRIMARY KEY (execution_id, job_id)
);
CREATE INDEX execution_job_job ON p2p_preheat.execution_job (job_id);

COMMENT ON TABLE p2p_preheat.execution_job IS
'The jobs each execution asked for, with the artifact and tag';

-- status derived from the jobs, with Harbor's names
CREATE VIEW p2p_preheat.execution_status AS
SELECT e.id, e.policy_id, e.trigger, e.started_at,
	   CASE WHEN count(j.id) = 0 THEN 'Success'
			WHEN count(j.id) FILTER (WHERE j.state = 'queued') = count(j.id) THEN 'Pending'
			WHEN bool_or(j.open) THEN 'Running'
			WHEN bool_or(j.state = 'failed') THEN 'Error'
			WHEN bool_or(j.state = 'canceled') THEN 'Stopped'
			ELSE 'Success' END AS status,
	   count(j.id) AS jobs,
	   count(j.id) FILTER (WHERE j.state IN ('queued', 'sending')) AS queued,
	   count(j.id) FILTER (WHERE j.state = 'running') AS running,
	   count(j.id) FILTER (WHERE j.state = 'succeeded') AS succeeded,
	   count(j.id) FILTER (WHERE j.state = 'failed') AS failed,
	   count(j.id) FILTER (WHERE j.state = 'canceled') AS canceled,
	   CASE WHEN NOT coalesce(bool_or(j.open), false)
			THEN coalesce(max(j.finished_at), e.started_at) END AS ended_at,
	   min(j.next_attempt_at) FILTER (WHERE j.open) AS next_check_at,
	   e.notes
  FROM p2p_preheat.execution e
  LEFT JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id
  LEFT JOIN p2p_preheat.job j ON j.id = ej.job_id
 GROUP BY e.id;

COMMENT ON VIEW p2p_preheat.execution_status IS
'Each execution with its status (Pending, Running, Success, Error, Stopped), job counts per state and when its next job is due';

-- what was preheated where, and why anything failed
CREATE VIEW p2p_preheat.execution_detail AS
SELECT ej.execution_id, j.id AS job_id, ej.artifact_id, ej.tag, j.url, j.instance_id,
	   j.state, j.attempts, j.dragonfly_job_id, j.failed_peers, j.last_error, j.finished_at
  FROM p2p_preheat.execution_job ej
  JOIN p2p_preheat.job j ON j.id = ej.job_id;

COMMENT ON VIEW p2p_preheat.execution_detail IS
'Per execution: each job with its artifact, tag, state and error';

-- run_policy() -----------------------------------------------------------

-- Harbor's filters: repository and tag patterns, label names; signature and
-- vulnerability come back as notes.
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
				notes := notes || format('%s filter (%s) not evaluated: Harbor replaces it with the project''s settings',
					f->>'type', f->'value');
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
	pol p2p_preheat.harbor_policy;
	registry text;
	f record;
	attrs jsonb;
	eid bigint;
	n integer;
BEGIN
	IF trigger IS NULL OR trigger NOT IN ('manual', 'scheduled', 'event_based') THEN
		RAISE EXCEPTION 'trigger must be manual, scheduled or event_based, not %', trigger
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	pol := p2p_preheat._runnable_policy(policy_id);
	registry := p2p_preheat._registry_url();
	f := p2p_preheat._parse_filters(pol.filters, format('preheat policy "%s" (id %s)', pol.name, policy_id));
	attrs := p2p_preheat.validate_extra_attrs(pol.vendor, pol.extra_attrs);
	INSERT INTO p2p_preheat.execution (policy_id, trigger, notes)
	VALUES (policy_id, trigger, f.notes) RETURNING id INTO eid;

	-- every tagged image of the project, one candidate per artifact and tag,
	-- queued like preheat() queues (open identical jobs are reused)
	WITH c AS MATERIALIZED (
		SELECT h.artifact_id, h.tag, registry || '/v2/' || h.repository || '/manifests/' || h.tag AS url
		  FROM p2p_preheat._harbor_candidates(pol.project_id, f.repo_pattern, f.tag_pattern,
											  f.labels, '{IMAGE}') h),
	q AS (
		SELECT e.url, e.job_id
		  FROM p2p_preheat._enqueue(policy_id, pol.provider_id,
									ARRAY(SELECT c.url FROM c), attrs) e)
	INSERT INTO p2p_preheat.execution_job (execution_id, job_id, artifact_id, tag)
	SELECT DISTINCT ON (q.job_id) eid, q.job_id, c.artifact_id, c.tag
	  FROM q JOIN c ON c.url = q.url;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE p2p_preheat.execution SET candidates = n WHERE id = eid;
	RETURN eid;
END
$$;

COMMENT ON FUNCTION p2p_preheat.run_policy(integer, text) IS
'Evaluates a policy like Harbor (every tagged image of its project, filtered), queues its preheats and returns the execution id';
