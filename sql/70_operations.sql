/*
 * Running it in production: a status view per instance, retention, and
 * pg_dump keeping the history.
 */

CREATE VIEW p2p_preheat.status AS
SELECT j.instance_id,
	   count(*) FILTER (WHERE j.state = 'queued') AS queued,
	   count(*) FILTER (WHERE j.state = 'sending') AS sending,
	   count(*) FILTER (WHERE j.state = 'running') AS running,
	   count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
	   count(*) FILTER (WHERE j.state = 'failed') AS failed,
	   count(*) FILTER (WHERE j.state = 'canceled') AS canceled,
	   clock_timestamp() - min(j.created_at) FILTER (WHERE j.state = 'queued') AS oldest_queued_age,
	   min(j.next_attempt_at) FILTER (WHERE j.open) AS next_check_at,
	   (SELECT l.last_error FROM p2p_preheat.job l
		 WHERE l.instance_id = j.instance_id AND l.state = 'failed'
		 ORDER BY l.finished_at DESC NULLS LAST LIMIT 1) AS last_error,
	   max(j.finished_at) FILTER (WHERE j.state = 'failed') AS last_error_at,
	   -- jobs still to be created, per scheduler cluster they name
	   (SELECT jsonb_object_agg(b.cluster, b.jobs ORDER BY b.cluster)
		  FROM (SELECT c.cluster::bigint AS cluster, count(*) AS jobs
				  FROM p2p_preheat.job q, jsonb_array_elements_text(q.attrs->'cluster_ids') c(cluster)
				 WHERE q.instance_id = j.instance_id AND q.state IN ('queued', 'sending')
				   AND jsonb_typeof(q.attrs->'cluster_ids') = 'array'
				 GROUP BY 1) b) AS backlog,
	   -- the worker's pace for each of those clusters
	   (SELECT jsonb_agg(p ORDER BY (p->>'cluster')::bigint)
		  FROM jsonb_array_elements((p2p_preheat.worker_status()).pace) p
		 WHERE (p->>'instance')::integer = j.instance_id) AS pace
  FROM p2p_preheat.job j
 GROUP BY j.instance_id;

COMMENT ON VIEW p2p_preheat.status IS
'Per instance: jobs per state, the age of the oldest queued job, when the next job is due, the last error, jobs still to be created per scheduler cluster, and the worker''s pace for each';

/*
 * Deletes final jobs (and the executions left without jobs) older than
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
		 WHERE NOT open AND finished_at < clock_timestamp() - keep
		 ORDER BY finished_at
		 LIMIT batch_size
		 FOR UPDATE SKIP LOCKED)
	DELETE FROM p2p_preheat.job j USING old WHERE j.id = old.id;
	GET DIAGNOSTICS n = ROW_COUNT;
	WITH old AS (
		SELECT x.id FROM p2p_preheat.execution x
		 WHERE x.started_at < clock_timestamp() - keep
		   AND NOT EXISTS (SELECT FROM p2p_preheat.execution_job ej WHERE ej.execution_id = x.id)
		 ORDER BY x.started_at
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

COMMENT ON FUNCTION p2p_preheat.purge(integer) IS
'Deletes final jobs and emptied executions older than p2p_preheat.retention, at most batch_size of each; returns how many';

-- pg_dump keeps the record of Harbor, the job history and executions
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.harbor', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.job', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.execution', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.execution_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.execution_job', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.event_policy', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.event_error', '');
SELECT pg_catalog.pg_extension_config_dump('p2p_preheat.event_error_id_seq', '');
