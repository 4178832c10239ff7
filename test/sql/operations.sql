-- Running it in production: the two roles and what they may do, the status
-- view, the link-local guard and retention.
\set SHOW_CONTEXT never
\getenv port DRAGONFLY_PORT
\set endpoint 'http://127.0.0.1:' :port
CREATE DATABASE harbor_ops;
\c harbor_ops
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances(:'endpoint');
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, enabled) VALUES
	(3, 'metadata', 'dragonfly', 'http://169.254.169.254', 'NONE', true);
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, filters)
VALUES (1, 'p', 1, 1, true, '[{"type":"repository","value":"**"}]');
CREATE EXTENSION p2p_preheat;
SELECT rolname FROM pg_roles WHERE rolname LIKE 'p2p_preheat%' ORDER BY 1;

-- nothing that makes network calls, reads credentials or changes configuration is for PUBLIC
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'p2p_preheat'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;
-- security definer functions pin their search_path
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'p2p_preheat'::regnamespace AND p.prosecdef
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
 ORDER BY 1;

CREATE ROLE ops_nobody LOGIN;
CREATE ROLE ops_harbor LOGIN IN ROLE p2p_preheat_user;
CREATE ROLE ops_dba LOGIN IN ROLE p2p_preheat_admin;
SET p2p_preheat.registry_url = 'https://harbor.example.com';

SET ROLE ops_nobody;
SELECT p2p_preheat.preheat(1, 'app', '1.0');
SELECT count(*) FROM p2p_preheat.job;
SELECT p2p_preheat.preheat_dispatch();
RESET ROLE;

SET ROLE ops_harbor;
SELECT p2p_preheat.preheat(1, 'app', '1.0') AS queued_by_harbor;
SELECT p2p_preheat.run_policy(1) AS execution;
SELECT id, state FROM p2p_preheat.job;
SELECT p2p_preheat.preheat_dispatch();
SELECT p2p_preheat.cancel(1);
SELECT count(*) FROM p2p_preheat.job_secret;
RESET ROLE;

SET ROLE ops_dba;
SELECT sent FROM p2p_preheat.preheat_dispatch();
SELECT p2p_preheat.purge() AS purged_nothing_yet;
RESET ROLE;

-- endpoints that resolve to link-local addresses (cloud metadata) are refused
SELECT p2p_preheat.preheat_url(3, 'https://harbor.example.com/v2/library/meta/manifests/1') AS meta \gset
SET p2p_preheat.max_attempts = 1;
SELECT failed FROM p2p_preheat.preheat_dispatch();
SELECT state, last_error FROM p2p_preheat.job WHERE id = :meta;
SET ROLE ops_dba;
SET p2p_preheat.allow_link_local = on;
RESET ROLE;

-- per instance: jobs per state, oldest queued age, last error
SELECT instance_id, queued, sending, running, succeeded, failed, canceled,
	   oldest_queued_age IS NULL AS nothing_queued, last_error
  FROM p2p_preheat.status ORDER BY 1;

-- retention: final jobs older than p2p_preheat.retention go, in batches
UPDATE p2p_preheat.job SET state = 'succeeded', finished_at = now() - interval '40 days' WHERE id = :meta;
UPDATE p2p_preheat.execution SET started_at = now() - interval '40 days';
SELECT count(*) AS jobs_before FROM p2p_preheat.job;
SELECT p2p_preheat.purge(1) AS purged;
SELECT count(*) AS jobs_after, (SELECT count(*) FROM p2p_preheat.execution) AS executions
  FROM p2p_preheat.job;

-- pg_dump keeps the history
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'p2p_preheat';

-- a library and SQL objects of different versions: nothing is dispatched
RESET ROLE;
BEGIN;
UPDATE pg_extension SET extversion = '0.9' WHERE extname = 'p2p_preheat';
SELECT * FROM p2p_preheat.preheat_dispatch();
ROLLBACK;
SELECT * FROM p2p_preheat.preheat_dispatch(0);

RESET ROLE;
\c contrib_regression
DROP DATABASE harbor_ops;
DROP ROLE ops_nobody, ops_harbor, ops_dba;
