/* p2p_preheat 1.5: roles, retention, observability, dump and restore */

\echo Use "ALTER EXTENSION p2p_preheat UPDATE TO '1.5'" to load this file. \quit

-- Two roles ship with the extension ---------------------------------------
-- p2p_preheat_user: what Harbor's database user needs: queue preheats, run
--   policies and read job state.
-- p2p_preheat_admin: also dispatch, cancel, purge and repair schedules.
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'p2p_preheat_user') THEN
		CREATE ROLE p2p_preheat_user NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'p2p_preheat_admin') THEN
		CREATE ROLE p2p_preheat_admin NOLOGIN;
	END IF;
END
$$;
GRANT p2p_preheat_user TO p2p_preheat_admin;

GRANT EXECUTE ON FUNCTION p2p_preheat.preheat(integer, text, text, jsonb),
	p2p_preheat.preheat_url(integer, text, jsonb),
	p2p_preheat.run_policy(integer, text)
	TO p2p_preheat_user;
GRANT SELECT ON p2p_preheat.job, p2p_preheat.execution, p2p_preheat.execution_job,
	p2p_preheat.execution_status, p2p_preheat.execution_detail, p2p_preheat.event_error
	TO p2p_preheat_user;
GRANT EXECUTE ON FUNCTION p2p_preheat.preheat_dispatch(integer),
	p2p_preheat.cancel(bigint),
	p2p_preheat.sync_schedules()
	TO p2p_preheat_admin;

-- Observability -----------------------------------------------------------
CREATE VIEW p2p_preheat.status AS
SELECT j.instance_id,
	   count(*) FILTER (WHERE j.state = 'queued') AS queued,
	   count(*) FILTER (WHERE j.state = 'sending') AS sending,
	   count(*) FILTER (WHERE j.state = 'running') AS running,
	   count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
	   count(*) FILTER (WHERE j.state = 'failed') AS failed,
	   count(*) FILTER (WHERE j.state = 'canceled') AS canceled,
	   clock_timestamp() - min(j.created_at) FILTER (WHERE j.state = 'queued') AS oldest_queued_age,
	   (SELECT l.last_error FROM p2p_preheat.job l
		 WHERE l.instance_id = j.instance_id AND l.state = 'failed'
		 ORDER BY l.finished_at DESC NULLS LAST LIMIT 1) AS last_error,
	   max(j.finished_at) FILTER (WHERE j.state = 'failed') AS last_error_at
  FROM p2p_preheat.job j
 GROUP BY j.instance_id;

COMMENT ON VIEW p2p_preheat.status IS
'Per instance: jobs per state, the age of the oldest queued job, and the last error';
GRANT SELECT ON p2p_preheat.status TO p2p_preheat_user;

-- Retention ---------------------------------------------------------------
CREATE INDEX job_finished ON p2p_preheat.job (finished_at)
	WHERE state IN ('succeeded', 'failed', 'canceled');

/*
 * Delete final jobs (and the executions left without jobs) older than
 * p2p_preheat.retention, at most batch_size rows per call: short
 * transactions, no long locks.  The worker calls it when idle; pg_cron can.
 */
CREATE FUNCTION p2p_preheat.purge(batch_size integer DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	keep interval := coalesce(nullif(current_setting('p2p_preheat.retention', true), ''), '30 days')::interval;
	n bigint;
	e bigint;
BEGIN
	WITH old AS (
		SELECT id FROM p2p_preheat.job
		 WHERE state IN ('succeeded', 'failed', 'canceled')
		   AND finished_at < clock_timestamp() - keep
		 ORDER BY finished_at
		 LIMIT batch_size
		 FOR UPDATE SKIP LOCKED)
	DELETE FROM p2p_preheat.job j USING old WHERE j.id = old.id;
	GET DIAGNOSTICS n = ROW_COUNT;
	WITH old AS (
		SELECT e.id FROM p2p_preheat.execution e
		 WHERE e.started_at < clock_timestamp() - keep
		   AND NOT EXISTS (SELECT FROM p2p_preheat.execution_job ej WHERE ej.execution_id = e.id)
		 ORDER BY e.started_at
		 LIMIT batch_size
		 FOR UPDATE SKIP LOCKED)
	DELETE FROM p2p_preheat.execution x USING old WHERE x.id = old.id;
	GET DIAGNOSTICS e = ROW_COUNT;
	DELETE FROM p2p_preheat.event_error
	 WHERE id IN (SELECT id FROM p2p_preheat.event_error WHERE at < clock_timestamp() - keep
				   ORDER BY id LIMIT batch_size);
	RETURN n + e;
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat.purge(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION p2p_preheat.purge(integer) TO p2p_preheat_admin;

-- pg_dump keeps the job history and executions ---------------------------
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.job', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.execution', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.execution_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.execution_job', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.event_error', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.event_error_id_seq', '');

-- the dispatch engine reads Harbor's instance credentials and the callers'
-- tokens: it runs as the extension's owner, for p2p_preheat_admin
ALTER FUNCTION p2p_preheat.preheat_dispatch(integer) SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp;

-- internal helpers are not for PUBLIC
REVOKE ALL ON FUNCTION p2p_preheat.policy_trigger(), p2p_preheat._on_tag(),
	p2p_preheat._on_policy_change(), p2p_preheat._tag_context(name, integer, integer),
	p2p_preheat._instance(name, integer), p2p_preheat._label_count(name, integer, text[]),
	p2p_preheat._policy_exists(integer)
	FROM PUBLIC;

-- pg_restore: the dump carries Harbor's column and our triggers itself (and
-- restores data before triggers).  It runs with check_function_bodies off,
-- which Harbor's migrations never do: attach nothing then.
CREATE OR REPLACE FUNCTION p2p_preheat._on_create_table()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
BEGIN
	IF current_setting('check_function_bodies') = 'off' THEN
		RETURN;
	END IF;
	FOR t IN
		SELECT c.oid
		  FROM pg_event_trigger_ddl_commands() d
		  JOIN pg_class c ON c.oid = d.objid
		 WHERE d.classid = 'pg_class'::regclass
		   AND c.relname = 'p2p_preheat_policy'
		   AND c.relkind IN ('r', 'p')
		   AND c.relpersistence <> 't'
	LOOP
		PERFORM p2p_preheat.attach(t);
		PERFORM p2p_preheat._attach_events(t);
	END LOOP;
END
$$;
