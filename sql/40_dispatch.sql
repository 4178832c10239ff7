/*
 * Dispatch: the same C engine runs as preheat_dispatch(), in the caller's
 * transaction, and as the background worker, in short transactions of its
 * own.  It runs as the extension's owner, because it reads the instances'
 * credentials and the callers' tokens, and reads Harbor's instance table as
 * Harbor's owner.
 */

CREATE FUNCTION p2p_preheat.preheat_dispatch(max_jobs integer DEFAULT 1000,
	OUT sent bigint, OUT polled bigint, OUT succeeded bigint, OUT failed bigint,
	OUT retried bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'p2p_preheat_dispatch'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION p2p_preheat.preheat_dispatch(integer) IS
'Sends due queued jobs to Dragonfly, polls due running ones and records the answers; returns counts';

CREATE FUNCTION p2p_preheat.worker_status(
	OUT pid integer, OUT state text, OUT started_at timestamptz, OUT last_activity timestamptz,
	OUT jobs_in_flight integer, OUT sent bigint, OUT polled bigint, OUT succeeded bigint,
	OUT failed bigint, OUT retried bigint, OUT wakeups bigint, OUT pace jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'p2p_preheat_worker_status'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION p2p_preheat.worker_status() IS
'The background worker: pid, state, last activity, jobs in flight, counts since it started, and the pace of each scheduler cluster it sends to';

-- Why an endpoint address would be refused at connect time (link-local,
-- cloud metadata, unspecified, and their IPv6 forms), or NULL.
CREATE FUNCTION p2p_preheat.endpoint_refusal(address text)
RETURNS text
AS 'MODULE_PATHNAME', 'p2p_preheat_endpoint_refusal'
LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION p2p_preheat.endpoint_refusal(text) IS
'Why the dispatcher would refuse to connect to this address, or NULL when it may';
