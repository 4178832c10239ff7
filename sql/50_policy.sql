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
	notes text[] NOT NULL DEFAULT '{}',	-- which project setting replaced which filter
	error text							-- why the run queued nothing (status Error)
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
	   CASE WHEN e.error IS NOT NULL THEN 'Error'
			WHEN count(j.id) = 0 THEN 'Success'
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
	   e.notes, e.error
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

/*
 * A policy's filters as Harbor reads them (docs/harbor-and-dragonfly.md,
 * "filters"): a JSON array of {"type", "value"}; every filter applies.
 * repository, tag and label take a string (label: names separated by
 * commas, all required); anything else, an unknown type or a missing value
 * is an error, as in Harbor.  The policy's own signature and vulnerability
 * filters are dropped, because Harbor replaces them with the project's
 * settings (see _security()).  own_filters counts the filters that remain.
 */
CREATE FUNCTION p2p_preheat._parse_filters(filters text, who text,
	OUT repo_patterns text[], OUT tag_patterns text[], OUT labels text[], OUT own_filters integer,
	OUT notes text[])
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	doc jsonb;
	f jsonb;
	v jsonb;
BEGIN
	repo_patterns := '{}';
	tag_patterns := '{}';
	labels := '{}';
	own_filters := 0;
	notes := '{}';
	IF coalesce(filters, '') = '' THEN
		RAISE EXCEPTION '% has no filters', who
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Harbor refuses a policy whose filters column is empty.',
				  HINT = 'Store a JSON array such as [{"type":"repository","value":"**"}].';
	END IF;
	BEGIN
		doc := filters::jsonb;
	EXCEPTION WHEN invalid_text_representation THEN
		RAISE EXCEPTION 'filters of % are not valid JSON', who
			USING ERRCODE = 'invalid_text_representation';
	END;
	IF jsonb_typeof(doc) = 'null' THEN
		RETURN;
	END IF;
	IF jsonb_typeof(doc) <> 'array' THEN
		RAISE EXCEPTION 'filters of % must be a JSON array', who
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR f IN SELECT * FROM jsonb_array_elements(doc) LOOP
		IF jsonb_typeof(f) <> 'object' THEN
			RAISE EXCEPTION 'filters of % hold %, not a filter object', who, f
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v := f->'value';
		IF f->>'type' IN ('signature', 'vulnerability') THEN
			notes := notes || format('the policy''s %s filter (%s) is not used: Harbor replaces it with the project''s settings',
									 f->>'type', coalesce(v::text, 'null'));
			CONTINUE;
		END IF;
		IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
			RAISE EXCEPTION 'filter % of % has no value', coalesce(f->'type', 'null'), who
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF f->>'type' IN ('repository', 'tag', 'label') AND jsonb_typeof(v) <> 'string' THEN
			RAISE EXCEPTION '% filter of % must be a string, not %', f->>'type', who, v
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = CASE WHEN f->>'type' = 'label'
								  THEN 'Harbor takes label names as one string separated by commas: "prod,gpu".' END;
		END IF;
		CASE f->>'type'
			WHEN 'repository' THEN
				PERFORM p2p_preheat.doublestar_regex(v->>0);	-- a malformed pattern errors here
				repo_patterns := repo_patterns || (v->>0);
			WHEN 'tag' THEN
				PERFORM p2p_preheat.doublestar_regex(v->>0);
				tag_patterns := tag_patterns || (v->>0);
			WHEN 'label' THEN
				IF v->>0 <> '' THEN
					labels := labels || string_to_array(v->>0, ',');
				END IF;
			ELSE
				RAISE EXCEPTION 'unknown filter type % in %', coalesce(f->'type', 'null'), who
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Harbor knows repository, tag, label, signature and vulnerability.';
		END CASE;
		own_filters := own_filters + 1;
	END LOOP;
END
$$;

-- Harbor's number for a severity name, as its project settings spell it.
CREATE FUNCTION p2p_preheat._severity_code(severity text)
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE initcap(lower(severity)) WHEN 'None' THEN 0 WHEN 'Unknown' THEN 0 WHEN 'Negligible' THEN 1
		   WHEN 'Low' THEN 2 WHEN 'Medium' THEN 3 WHEN 'High' THEN 4 WHEN 'Critical' THEN 5 ELSE 99 END
$$;

/*
 * What the project's security settings add to a policy's filters, as
 * Harbor's enforcer does: "signed only" when content trust is on, and
 * "severity below the project's" when it prevents vulnerable images.
 * Harbor never records the candidates' signatures for that filter, so no
 * artifact passes it: with content trust on, Harbor preheats nothing, and
 * neither does this (signed_only).  below_severity is NULL without a
 * vulnerability filter.
 */
CREATE FUNCTION p2p_preheat._security(project text, content_trust boolean, prevent_vul boolean,
	severity text, OUT signed_only boolean, OUT below_severity integer, OUT filters integer,
	OUT notes text[])
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	signed_only := coalesce(content_trust, false);
	below_severity := CASE WHEN prevent_vul AND coalesce(severity, '') <> ''
						   THEN p2p_preheat._severity_code(severity) END;
	filters := signed_only::integer + (below_severity IS NOT NULL)::integer;
	notes := '{}';
	IF signed_only THEN
		notes := notes || format('project %s enables content trust (enable_content_trust): Harbor adds a signature filter, '
								 'which no artifact passes because Harbor does not record signatures for it, so nothing is preheated',
								 project);
	END IF;
	IF below_severity IS NOT NULL THEN
		notes := notes || format('project %s prevents vulnerable images (prevent_vul, severity %s): only artifacts whose '
								 'last scan succeeded with every vulnerability below %s, allowlisted CVEs aside, are preheated; '
								 'unscanned ones are skipped', project, severity, initcap(lower(severity)));
	END IF;
END
$$;

-- p2p_preheat.run_policies: who runs Harbor's policies here.
-- (no SET clause, so that it is inlined: every name in it is qualified)
CREATE FUNCTION p2p_preheat._database_runs_policies()
RETURNS boolean
LANGUAGE sql STABLE
AS $$
	SELECT coalesce(pg_catalog.current_setting('p2p_preheat.run_policies', true), 'database')
		   OPERATOR(pg_catalog.=) 'database'
$$;

/*
 * Candidates as Harbor's manual and scheduled runs take them: every tagged
 * IMAGE or CNAI artifact of the project, one per tag, filtered.  Any filter
 * problem, or no filter at all, is the execution's error (status Error):
 * the run queues nothing and says why.
 */
CREATE FUNCTION p2p_preheat.run_policy(policy_id integer, trigger text DEFAULT 'manual')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	pol p2p_preheat.harbor_policy;
	registry text;
	who text;
	f record;
	proj record;
	sec record;
	attrs jsonb;
	eid bigint;
	n integer;
BEGIN
	IF trigger IS NULL OR trigger NOT IN ('manual', 'scheduled', 'event_based') THEN
		RAISE EXCEPTION 'trigger must be manual, scheduled or event_based, not %', trigger
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT p2p_preheat._database_runs_policies() THEN
		RAISE EXCEPTION 'Harbor''s job service runs the preheat policies of this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'p2p_preheat.run_policies is harbor, so the database runs no policy, lest an image be preheated twice.',
				  HINT = 'Run it from Harbor, or set p2p_preheat.run_policies = database (see the README''s deployment section).';
	END IF;
	pol := p2p_preheat._runnable_policy(policy_id);
	registry := p2p_preheat._registry_url();
	who := format('preheat policy "%s" (id %s)', pol.name, policy_id);
	INSERT INTO p2p_preheat.execution (policy_id, trigger)
	VALUES (policy_id, trigger) RETURNING id INTO eid;
	BEGIN
		f := p2p_preheat._parse_filters(pol.filters, who);
		attrs := p2p_preheat.validate_extra_attrs(pol.vendor, pol.extra_attrs);
		proj := p2p_preheat._harbor_project(pol.project_id);
		sec := p2p_preheat._security(proj.project, proj.content_trust, proj.prevent_vul, proj.severity);
		UPDATE p2p_preheat.execution SET notes = f.notes || sec.notes WHERE id = eid;
		IF f.own_filters + sec.filters = 0 THEN
			RAISE EXCEPTION '% has no filters to apply', who
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'Harbor refuses to run a policy without filters; its signature and vulnerability filters do not count, the project''s settings replace them.',
					  HINT = 'Add a filter such as {"type":"repository","value":"**"}.';
		END IF;
	EXCEPTION WHEN OTHERS THEN
		UPDATE p2p_preheat.execution SET error = SQLERRM WHERE id = eid;
		RAISE WARNING 'p2p_preheat: execution % of %: %', eid, who, SQLERRM;
		RETURN eid;
	END;
	IF sec.signed_only THEN
		RETURN eid;
	END IF;

	-- every tagged image of the project, one candidate per artifact and tag,
	-- queued like preheat() queues (open identical jobs are reused); a Kraken
	-- job carries the digest Kraken's notification names
	WITH c AS MATERIALIZED (
		SELECT h.artifact_id, h.tag, registry || '/v2/' || h.repository || '/manifests/' || h.tag AS url,
			   CASE WHEN pol.vendor = 'kraken' THEN attrs || jsonb_build_object('digest', h.digest)
					ELSE attrs END AS job_attrs
		  FROM p2p_preheat._harbor_candidates(pol.project_id, f.repo_patterns[1], f.tag_patterns[1],
											  f.labels, '{IMAGE,CNAI}', sec.below_severity, NULL) h
		 WHERE (cardinality(f.repo_patterns) < 2 OR
				(SELECT bool_and(p2p_preheat.doublestar_match(p, substr(h.repository, length(proj.project) + 2)))
				   FROM unnest(f.repo_patterns[2:]) p))
		   AND (cardinality(f.tag_patterns) < 2 OR
				(SELECT bool_and(p2p_preheat.doublestar_match(p, h.tag)) FROM unnest(f.tag_patterns[2:]) p))),
	q AS (
		SELECT e.url, e.job_id, g.job_attrs
		  FROM (SELECT c.job_attrs, array_agg(c.url) AS urls FROM c GROUP BY c.job_attrs) g,
			   p2p_preheat._enqueue(policy_id, pol.provider_id, g.urls, g.job_attrs) e)
	INSERT INTO p2p_preheat.execution_job (execution_id, job_id, artifact_id, tag)
	SELECT DISTINCT ON (q.job_id) eid, q.job_id, c.artifact_id, c.tag
	  FROM q JOIN c ON c.url = q.url AND c.job_attrs = q.job_attrs;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE p2p_preheat.execution SET candidates = n WHERE id = eid;
	RETURN eid;
END
$$;

COMMENT ON FUNCTION p2p_preheat.run_policy(integer, text) IS
'Evaluates a policy like Harbor (every tagged image of its project, filtered), queues its preheats and returns the execution id';
