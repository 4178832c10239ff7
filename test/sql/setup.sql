-- Settings the suite needs that only the server's configuration can hold:
-- Harbor's secret key and the registry credentials (files the server reads),
-- and, for the isolation specs, which cannot read the environment, the
-- stand-in's address and log.  Taken from the variables described in the
-- Makefile, so any server the suite runs against works: ALTER SYSTEM for the
-- extension's settings (15 only accepts settings it knows, hence the LOAD),
-- ALTER ROLE for the test's own.
\getenv fixtures P2P_TEST_FIXTURES
\getenv port DRAGONFLY_PORT
\getenv standin_log DRAGONFLY_LOG
LOAD 'p2p_preheat';
\set ECHO none
\o /dev/null
SELECT format('ALTER SYSTEM SET %s = %L', name, value)
  FROM (VALUES
	('p2p_preheat.secret_key_file', :'fixtures' || '/harbor_secret.key'),
	('p2p_preheat.registry_credentials_file', :'fixtures' || '/registry_robot.json')) AS s(name, value)
\gexec
SELECT format('ALTER ROLE CURRENT_USER SET %s = %L', name, value)
  FROM (VALUES
	('p2p_preheat_test.endpoint', 'http://127.0.0.1:' || :'port'),
	('p2p_preheat_test.standin_log', :'standin_log')) AS s(name, value)
\gexec
\o
\set ECHO all
SELECT pg_reload_conf();
-- the server re-reads its configuration asynchronously; give it a moment
SELECT pg_sleep(0.5);
SELECT current_setting('p2p_preheat.secret_key_file') = :'fixtures' || '/harbor_secret.key' AS key_file_set;
