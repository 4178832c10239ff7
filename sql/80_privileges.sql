/*
 * Who may do what, in one place.  Nothing is executable by PUBLIC unless it
 * is granted here; the README's reference lists the same, and a test
 * compares the two.
 *   PUBLIC            checks documents and patterns, reads worker_status();
 *   p2p_preheat_user  queues preheats, runs policies, reads jobs and executions;
 *   p2p_preheat_admin also dispatches, cancels, purges, repairs schedules and
 *                     reads the policies that break the rules.
 */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA p2p_preheat FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA p2p_preheat FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
	p2p_preheat.validate_extra_attrs(text, json),
	p2p_preheat.validate_extra_attrs(text, text),
	p2p_preheat.extra_attrs_problems(text, json),
	p2p_preheat.extra_attrs_problems(text, text),
	p2p_preheat.doublestar_regex(text),
	p2p_preheat.doublestar_match(text, text),
	p2p_preheat.job_state_is_open(p2p_preheat.job_state),
	p2p_preheat.worker_status()
	TO PUBLIC;

GRANT EXECUTE ON FUNCTION
	p2p_preheat.preheat(integer, text, text, jsonb),
	p2p_preheat.preheat(integer, text[], text[], jsonb),
	p2p_preheat.run_policy(integer, text)
	TO p2p_preheat_user;
GRANT SELECT ON p2p_preheat.job, p2p_preheat.execution, p2p_preheat.execution_job,
	p2p_preheat.execution_status, p2p_preheat.execution_detail, p2p_preheat.event_error,
	p2p_preheat.status
	TO p2p_preheat_user;

-- preheat_url() sends to any host a caller names: an admin's operation.
GRANT EXECUTE ON FUNCTION
	p2p_preheat.preheat_url(integer, text, jsonb),
	p2p_preheat.preheat_dispatch(integer),
	p2p_preheat.cancel(bigint),
	p2p_preheat.purge(integer),
	p2p_preheat.sync_schedules(),
	p2p_preheat.harbor_cron_to_pg_cron(text),
	p2p_preheat.endpoint_refusal(text)
	TO p2p_preheat_admin;
GRANT SELECT ON p2p_preheat.invalid_policies, p2p_preheat.harbor TO p2p_preheat_admin;
-- functions a view calls are checked against the view's reader
GRANT EXECUTE ON FUNCTION p2p_preheat._invalid_policies() TO p2p_preheat_admin;
