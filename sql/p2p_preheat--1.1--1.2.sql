/* p2p_preheat 1.2: the background worker */

\echo Use "ALTER EXTENSION p2p_preheat UPDATE TO '1.2'" to load this file. \quit

CREATE FUNCTION p2p_preheat._wake_worker()
RETURNS void
AS 'MODULE_PATHNAME', 'p2p_preheat_wake_worker'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION p2p_preheat._wake_worker() FROM PUBLIC;

CREATE OR REPLACE FUNCTION p2p_preheat._enqueue(policy_id integer, instance_id integer, url text,
									 attrs jsonb, headers jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	jid bigint;
BEGIN
	IF headers IS NOT NULL AND (jsonb_typeof(headers) <> 'object'
		OR EXISTS (SELECT FROM jsonb_each(headers) h WHERE jsonb_typeof(h.value) <> 'string')) THEN
		RAISE EXCEPTION 'headers must be a JSON object of strings'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass {"Authorization": "Bearer <registry token>"}.';
	END IF;
	LOOP
		INSERT INTO p2p_preheat.job AS j (policy_id, instance_id, url, attrs)
		VALUES (_enqueue.policy_id, _enqueue.instance_id, _enqueue.url, _enqueue.attrs)
		ON CONFLICT (instance_id, url, md5(attrs::text))
			WHERE state IN ('queued', 'sending', 'running')
			DO NOTHING
		RETURNING j.id INTO jid;
		IF jid IS NULL THEN
			-- an identical job is not finished yet: that one is the answer
			SELECT j.id INTO jid FROM p2p_preheat.job j
			 WHERE j.instance_id = _enqueue.instance_id AND j.url = _enqueue.url
			   AND md5(j.attrs::text) = md5(_enqueue.attrs::text)
			   AND j.state IN ('queued', 'sending', 'running');
		END IF;
		EXIT WHEN jid IS NOT NULL;
	END LOOP;
	-- the worker is woken when this transaction commits, never on rollback
	PERFORM p2p_preheat._wake_worker();
	IF headers IS NOT NULL AND headers <> '{}' THEN
		-- the newest token wins while the job has not been sent
		INSERT INTO p2p_preheat.job_secret AS s (job_id, headers)
		SELECT jid, _enqueue.headers
		 WHERE EXISTS (SELECT FROM p2p_preheat.job j WHERE j.id = jid AND j.state IN ('queued', 'sending'))
		ON CONFLICT (job_id) DO UPDATE SET headers = excluded.headers;
	END IF;
	RETURN jid;
END
$$;

CREATE FUNCTION p2p_preheat.worker_status(
	OUT pid integer, OUT state text, OUT started_at timestamptz, OUT last_activity timestamptz,
	OUT jobs_in_flight integer, OUT sent bigint, OUT polled bigint, OUT succeeded bigint,
	OUT failed bigint, OUT retried bigint, OUT wakeups bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'p2p_preheat_worker_status'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION p2p_preheat.worker_status() IS
'The background worker: pid, state, last activity, jobs in flight, and counts since it started';
