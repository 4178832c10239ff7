/*
 * Harbor's event-based policies and its scheduled policies (mirrored as
 * pg_cron jobs).  Harbor raises three events that preheat (docs/
 * harbor-and-dragonfly.md, "Events"); each shows in its tables as a write
 * that a trigger here turns into what Harbor would queue:
 *  - push: a tag inserted, or moved to another artifact (IMAGE only; the
 *    pushed tag alone);
 *  - label added: a label_reference row inserted (IMAGE only; every tag);
 *  - scan completed: a scan task (IMAGE_SCAN, SCAN_ALL or SBOM) turning to
 *    Success, its extra_attrs naming the artifact (every tag).
 * A trigger on the policy table keeps the parsed policies and the pg_cron
 * jobs in step with every change to a policy.  Nothing here fails Harbor's
 * write: a problem is written to event_error, per policy.
 */

-- Event-based policies, parsed once when saved, for matching on every event.
CREATE TABLE p2p_preheat.event_policy (
	policy_id integer PRIMARY KEY,
	project_id integer NOT NULL,
	provider_id integer NOT NULL,
	vendor text,
	repo_pattern text,				-- the first repository filter; NULL: none
	tag_pattern text,				-- the first tag filter
	more_patterns jsonb,			-- {"repository": [...], "tag": [...]}: any further ones

	labels text[] NOT NULL DEFAULT '{}',
	own_filters integer NOT NULL DEFAULT 0,	-- filters left once signature and vulnerability are dropped
	attrs jsonb NOT NULL DEFAULT '{}',
	problem text							-- why the policy cannot run: each event skips it and says so
);
CREATE INDEX event_policy_project ON p2p_preheat.event_policy (project_id);

COMMENT ON TABLE p2p_preheat.event_policy IS
'Enabled event-based policies, parsed when saved, matched against every push, label and scan';

-- What went wrong for an event: recorded here, never raised into Harbor's write.
CREATE TABLE p2p_preheat.event_error (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT clock_timestamp(),
	policy_id integer,
	repository_id integer,
	artifact_id integer,
	tag text,
	sqlstate text,
	error text NOT NULL
);

COMMENT ON TABLE p2p_preheat.event_error IS
'Problems met while queueing preheats for Harbor''s events (bad filters, missing instance, ...); Harbor''s write always commits';

-- Harbor's 6-field cron (seconds first) as pg_cron's 5 fields.
CREATE FUNCTION p2p_preheat.harbor_cron_to_pg_cron(cron text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	f text[] := regexp_split_to_array(btrim(cron), '\s+');
BEGIN
	IF cardinality(f) = 5 THEN
		RETURN array_to_string(array_replace(f, '?', '*'), ' ');
	END IF;
	IF cardinality(f) <> 6 THEN
		RAISE EXCEPTION 'cron "%" has % fields; Harbor''s cron has 6 (seconds first)', cron, cardinality(f)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example "0 0 2 * * *" runs at 02:00 every day.';
	END IF;
	IF f[1] NOT IN ('0', '00') THEN
		RAISE EXCEPTION 'cron "%" runs at second "%", which pg_cron cannot express', cron, f[1]
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'pg_cron runs at minute granularity: put 0 in the seconds field.';
	END IF;
	RETURN array_to_string(array_replace(f[2:6], '?', '*'), ' ');
END
$$;

COMMENT ON FUNCTION p2p_preheat.harbor_cron_to_pg_cron(text) IS
'Harbor''s 6-field cron (seconds first) as pg_cron''s 5 fields; refuses what pg_cron cannot express';

CREATE FUNCTION p2p_preheat._cron_available()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT to_regprocedure('cron.schedule_in_database(text,text,text,text,text,boolean)') IS NOT NULL
$$;

/*
 * Brings one policy's event cache and pg_cron job in line with its row.  A
 * policy whose filters or attributes are broken is refused when saved
 * (strict); one found broken otherwise (on install) is kept with its problem,
 * so that each event says why it skips it, as Harbor's log would.
 */
CREATE FUNCTION p2p_preheat._sync_policy(policy_id integer, strict boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pol p2p_preheat.harbor_policy := p2p_preheat._harbor_policy(policy_id);
	kind text;
	cron text;
	f record;
	attrs jsonb;
	cron_job text := 'p2p_preheat_policy_' || policy_id;
BEGIN
	BEGIN
		kind := (pol.trigger::jsonb)->>'type';
		cron := (pol.trigger::jsonb)->'trigger_setting'->>'cron';
	EXCEPTION WHEN invalid_text_representation THEN
		kind := NULL;
	END;

	-- events
	DELETE FROM p2p_preheat.event_policy e WHERE e.policy_id = _sync_policy.policy_id;
	IF pol.id IS NOT NULL AND coalesce(pol.enabled, false) AND kind = 'event_based' THEN
		BEGIN
			f := p2p_preheat._parse_filters(pol.filters, format('preheat policy "%s" (id %s)', pol.name, policy_id));
			attrs := p2p_preheat.validate_extra_attrs(pol.vendor, pol.extra_attrs);
			INSERT INTO p2p_preheat.event_policy (policy_id, project_id, provider_id, vendor, repo_pattern,
												  tag_pattern, more_patterns, labels, own_filters, attrs)
			VALUES (policy_id, pol.project_id, pol.provider_id, pol.vendor, f.repo_patterns[1], f.tag_patterns[1],
					CASE WHEN cardinality(f.repo_patterns) > 1 OR cardinality(f.tag_patterns) > 1
						 THEN jsonb_build_object('repository', to_jsonb(f.repo_patterns[2:]),
												 'tag', to_jsonb(f.tag_patterns[2:])) END,
					f.labels, f.own_filters, attrs);
		EXCEPTION WHEN OTHERS THEN
			IF strict THEN
				RAISE;
			END IF;
			INSERT INTO p2p_preheat.event_policy (policy_id, project_id, provider_id, vendor, problem)
			VALUES (policy_id, pol.project_id, pol.provider_id, pol.vendor, SQLERRM);
			RAISE WARNING 'p2p_preheat: event-based policy % is skipped by every event: %', policy_id, SQLERRM;
		END;
	END IF;

	-- schedules, when the database runs the policies
	IF NOT p2p_preheat._cron_available() THEN
		RETURN;
	END IF;
	IF pol.id IS NOT NULL AND coalesce(pol.enabled, false) AND kind = 'scheduled'
	   AND p2p_preheat._database_runs_policies() THEN
		IF coalesce(cron, '') = '' THEN
			RAISE EXCEPTION 'scheduled preheat policy "%" (id %) has no cron', pol.name, policy_id
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		PERFORM cron.schedule_in_database(cron_job, p2p_preheat.harbor_cron_to_pg_cron(cron),
			format('SELECT p2p_preheat.run_policy(%s, %L)', policy_id, 'scheduled'),
			current_database());
	ELSE
		PERFORM cron.unschedule(j.jobid) FROM cron.job j WHERE j.jobname = cron_job;
	END IF;
END
$$;

-- Every policy, as on install; a policy that cannot be synced is reported
-- and does not stop the others.
CREATE FUNCTION p2p_preheat._sync_all_policies()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids integer[];
	id integer;
BEGIN
	BEGIN
		ids := ARRAY(SELECT p.id FROM p2p_preheat._harbor_policies() p);
	EXCEPTION WHEN OTHERS THEN
		RAISE WARNING 'p2p_preheat: could not read Harbor''s policies: %', SQLERRM;
		RETURN;
	END;
	FOREACH id IN ARRAY ids LOOP
		BEGIN
			PERFORM p2p_preheat._sync_policy(id, false);
		EXCEPTION WHEN OTHERS THEN
			RAISE WARNING 'p2p_preheat: policy %: %', id, SQLERRM;
		END;
	END LOOP;
END
$$;

CREATE FUNCTION p2p_preheat._on_policy_change()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM p2p_preheat._sync_policy(OLD.id);
	END IF;
	IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id <> OLD.id) THEN
		PERFORM p2p_preheat._sync_policy(NEW.id);
	END IF;
	RETURN NULL;
END
$$;

/*
 * One of Harbor's events on one artifact: queue what the project's enabled
 * event-based policies ask for, as Harbor's enforcer does for an event.
 * kind is push (only pushed_tag), label or scan (every tag of the artifact).
 * Filters AND together, the project's security settings replace the
 * policies' signature and vulnerability filters, and a policy that cannot
 * run (broken filters, no filters, no instance) is skipped with a row in
 * event_error while the others go on.  Nothing raised here reaches Harbor.
 * In C (src/events.c), as every write to Harbor's tag, label_reference and
 * task tables runs it: it reads the artifact once and matches the parsed
 * policies with compiled patterns, and calls _event_queue for each policy
 * that matches.
 */
CREATE FUNCTION p2p_preheat._on_artifact_event(kind text, artifact integer, pushed_tag text,
	repository_id integer)
RETURNS void
AS 'MODULE_PATHNAME', 'p2p_preheat_on_artifact_event'
LANGUAGE C VOLATILE;

/*
 * What one matching policy queues for an event: an execution, and a job per
 * tag that passed its filters (tags), through _enqueue().  A failure (no
 * instance, instance disabled, no registry URL, ...) is this policy's row in
 * event_error; the others go on.
 */
CREATE FUNCTION p2p_preheat._event_queue(kind text, artifact integer, pushed_tag text,
	repository_id integer, policy_id integer, provider_id integer, vendor text, attrs jsonb,
	tags text[], repository text, project text, digest text, content_trust boolean,
	prevent_vul boolean, severity text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	inst p2p_preheat.harbor_instance;
	registry text;
	notes text[];
	eid bigint;
BEGIN
	tags := ARRAY(SELECT t FROM unnest(tags) t ORDER BY t);
	BEGIN
		inst := p2p_preheat._harbor_instance(provider_id);
		IF inst.id IS NULL OR NOT coalesce(inst.enabled, true) THEN
			RAISE EXCEPTION 'preheat instance % %', provider_id,
				CASE WHEN inst.id IS NULL THEN 'does not exist' ELSE 'is disabled' END
				USING ERRCODE = 'object_not_in_prerequisite_state';
		END IF;
		registry := p2p_preheat._registry_url();
		notes := (p2p_preheat._security(project, content_trust, prevent_vul, severity)).notes;
		INSERT INTO p2p_preheat.execution (policy_id, trigger, candidates, notes)
		VALUES (policy_id, 'event_based', cardinality(tags), notes) RETURNING id INTO eid;
		INSERT INTO p2p_preheat.execution_job (execution_id, job_id, artifact_id, tag)
		SELECT eid, e.job_id, artifact, substring(e.url FROM '/manifests/(.*)$')
		  FROM p2p_preheat._enqueue(policy_id, provider_id,
				ARRAY(SELECT registry || '/v2/' || repository || '/manifests/' || t FROM unnest(tags) t),
				CASE WHEN vendor = 'kraken' THEN attrs || jsonb_build_object('digest', digest)
					 ELSE attrs END) e
		ON CONFLICT DO NOTHING;
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO p2p_preheat.event_error (policy_id, repository_id, artifact_id, tag, sqlstate, error)
		VALUES (policy_id, repository_id, artifact, pushed_tag, SQLSTATE, format('%s event: %s', kind, SQLERRM));
	END;
END
$$;

-- push: a tag inserted, or moved to another artifact
CREATE FUNCTION p2p_preheat._on_tag()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.artifact_id IS NOT DISTINCT FROM OLD.artifact_id THEN
		RETURN NULL;
	END IF;
	PERFORM p2p_preheat._on_artifact_event('push', NEW.artifact_id, NEW.name, NEW.repository_id);
	RETURN NULL;
END
$$;

-- label added: a label_reference row inserted
CREATE FUNCTION p2p_preheat._on_label()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM p2p_preheat._on_artifact_event('label', NEW.artifact_id, NULL, NULL);
	RETURN NULL;
END
$$;

/*
 * scan completed: Harbor raises it when a scan task (of an IMAGE_SCAN,
 * SCAN_ALL or SBOM execution) reaches Success, for the artifact its
 * extra_attrs name; Error and Stopped raise other events.  The trigger has
 * no column list or WHEN clause, so that Harbor's migrations may alter the
 * task table's columns.
 */
CREATE FUNCTION p2p_preheat._on_scan_task()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	task jsonb;
	artifact integer;
BEGIN
	-- read as JSON, so that a column Harbor renames or drops never fails
	-- Harbor's update of a task
	IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
		RETURN NULL;
	END IF;
	task := to_jsonb(NEW);
	IF task->>'status' IS DISTINCT FROM 'Success'
	   OR coalesce(task->>'vendor_type', '') NOT IN ('IMAGE_SCAN', 'SCAN_ALL', 'SBOM') THEN
		RETURN NULL;
	END IF;
	BEGIN
		artifact := (task->'extra_attrs'->>'artifact_id')::integer;
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO p2p_preheat.event_error (sqlstate, error)
		VALUES (SQLSTATE, format('scan event: task %s names no artifact: %s', task->>'id', SQLERRM));
		RETURN NULL;
	END;
	IF artifact > 0 THEN
		PERFORM p2p_preheat._on_artifact_event('scan', artifact, NULL, NULL);
	END IF;
	RETURN NULL;
END
$$;

/*
 * With p2p_preheat.run_policies = database the database runs event-based
 * and scheduled policies, so Harbor's own execution for them is not
 * recorded: Harbor's enforcer then launches no job (it logs that it could
 * not create the execution).  Manual runs from Harbor's UI stay Harbor's,
 * and every other execution (scans, replication, ...) is untouched.
 */
CREATE FUNCTION p2p_preheat._on_harbor_execution()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.vendor_type = 'P2P_PREHEAT' AND NEW.trigger IN ('event_based', 'scheduled')
	   AND p2p_preheat._database_runs_policies() THEN
		RETURN NULL;
	END IF;
	RETURN NEW;
END
$$;

-- The event triggers on Harbor's tables in schema nsp, for those that exist.
CREATE FUNCTION p2p_preheat._attach_events(nsp name)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: security_warnings = false
-- (dynamic DDL is needed here; its %s parts are the constant timings below)
DECLARE
	t record;
	rel regclass;
BEGIN
	FOR t IN SELECT * FROM (VALUES
		('tag', 'p2p_preheat_push', 'AFTER INSERT OR UPDATE OF artifact_id', '_on_tag'),
		('label_reference', 'p2p_preheat_label', 'AFTER INSERT', '_on_label'),
		('task', 'p2p_preheat_scan', 'AFTER UPDATE', '_on_scan_task'),
		('execution', 'p2p_preheat_runner', 'BEFORE INSERT', '_on_harbor_execution')) v(tbl, tg, timing, fn)
	LOOP
		rel := to_regclass(format('%I.%I', nsp, t.tbl));
		CONTINUE WHEN rel IS NULL;
		EXECUTE format('CREATE OR REPLACE TRIGGER %I %s ON %s FOR EACH ROW EXECUTE FUNCTION p2p_preheat.%I()',
					   t.tg, t.timing, rel, t.fn);
		EXECUTE format('ALTER TRIGGER %I ON %s DEPENDS ON EXTENSION p2p_preheat', t.tg, rel);
	END LOOP;
END
$$;

-- Repairs drift between policies and pg_cron; returns how many cron jobs changed.
CREATE FUNCTION p2p_preheat.sync_schedules()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	before text[];
	after text[];
BEGIN
	IF NOT p2p_preheat._cron_available() THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Without pg_cron, call p2p_preheat.run_policy(id, ''scheduled'') from any scheduler.';
	END IF;
	SELECT coalesce(array_agg(concat_ws('|', j.jobname, j.schedule, j.command, j.active)), '{}') INTO before
	  FROM cron.job j WHERE j.jobname LIKE 'p2p\_preheat\_policy\_%';
	-- jobs whose policy is gone
	PERFORM cron.unschedule(j.jobid) FROM cron.job j
	 WHERE j.jobname LIKE 'p2p\_preheat\_policy\_%'
	   AND substr(j.jobname, 20) NOT IN (SELECT p.id::text FROM p2p_preheat._harbor_policies() p);
	PERFORM p2p_preheat._sync_all_policies();
	SELECT coalesce(array_agg(concat_ws('|', j.jobname, j.schedule, j.command, j.active)), '{}') INTO after
	  FROM cron.job j WHERE j.jobname LIKE 'p2p\_preheat\_policy\_%';
	RETURN (SELECT count(DISTINCT split_part(x, '|', 1))
			  FROM ((SELECT unnest(before) EXCEPT SELECT unnest(after))
					UNION ALL
					(SELECT unnest(after) EXCEPT SELECT unnest(before))) d(x));
END
$$;

COMMENT ON FUNCTION p2p_preheat.sync_schedules() IS
'Makes pg_cron''s jobs match the scheduled policies again; returns how many jobs changed';

-- pg_cron created after this extension: scheduled policies get their jobs.
CREATE FUNCTION p2p_preheat._on_create_extension()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p2p_preheat._cron_available() AND EXISTS (SELECT FROM p2p_preheat.harbor)
	   AND current_setting('check_function_bodies') <> 'off' THEN
		PERFORM p2p_preheat.sync_schedules();
	END IF;
END
$$;

CREATE EVENT TRIGGER p2p_preheat_cron_created ON ddl_command_end
	WHEN TAG IN ('CREATE EXTENSION')
	EXECUTE FUNCTION p2p_preheat._on_create_extension();
