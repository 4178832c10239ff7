/*
 * p2p_preheat: Harbor's P2P preheat policies carried out inside PostgreSQL.
 *
 * This install script is built by the Makefile from the numbered files in
 * sql/, each one concern, read top to bottom:
 *   00 roles and the schema's grants
 *   10 the record of Harbor's tables, and attaching to them
 *   20 the rules for extra_attrs and the validation trigger
 *   30 the job queue and its contract with the C engine
 *   40 dispatch and the background worker
 *   50 policies run in the database, and their executions
 *   60 Harbor's events and pg_cron schedules
 *   70 operations: status, retention, dump and restore
 *   80 privileges, in one place
 *   90 attaching to Harbor's tables already there
 *   95 a notice when no worker will dispatch for this database
 * A released script is frozen; later versions add upgrade scripts.
 */

\echo Use "CREATE EXTENSION p2p_preheat" to load this file. \quit

-- Two roles ship with the extension:
--   p2p_preheat_user: what Harbor's database user needs: queue preheats, run
--     policies and read job state;
--   p2p_preheat_admin: also dispatch, cancel, purge and repair schedules.
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'p2p_preheat_user') THEN
		CREATE ROLE p2p_preheat_user NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'p2p_preheat_admin') THEN
		CREATE ROLE p2p_preheat_admin NOLOGIN;
	END IF;
END
$$;
GRANT p2p_preheat_user TO p2p_preheat_admin;

GRANT USAGE ON SCHEMA p2p_preheat TO PUBLIC;
