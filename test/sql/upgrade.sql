-- ALTER EXTENSION UPDATE from every released version, with work in flight,
-- and DROP EXTENSION leaving Harbor's data alone.
\set SHOW_CONTEXT never
CREATE DATABASE harbor_upgrade;
\c harbor_upgrade
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.12');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, scope)
VALUES (1, 'nightly', 1, 1, 'all_peers');

-- 1.0: the migration and the trigger
CREATE EXTENSION p2p_preheat VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat';
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, extra_attrs)
VALUES (2, 'weekly', 1, 1, '{"scope": "single_peer", "cluster_ids": [3]}');

-- 1.0 -> 1.1: the job queue arrives; the policies and the trigger stay
ALTER EXTENSION p2p_preheat UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat';
SELECT id, name, extra_attrs FROM p2p_preheat_policy ORDER BY id;
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, extra_attrs)
VALUES (3, 'broken', 1, 1, '{"cluster_ids": "3"}');
SET p2p_preheat.registry_url = 'https://harbor.example.com';
SELECT p2p_preheat.preheat(2, 'app', '1.0') AS job;
SELECT id, url, attrs, state FROM p2p_preheat.job;

-- 1.1 -> 1.2: the worker's functions; queued work is untouched
ALTER EXTENSION p2p_preheat UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat';
SELECT id, url, state FROM p2p_preheat.job;
SELECT p2p_preheat.preheat(2, 'app', '1.0') AS same_job, p2p_preheat.preheat(2, 'app', '2.0') AS new_job;
-- not preloaded here: SQL calls work, and no worker runs
SELECT pid, state, jobs_in_flight FROM p2p_preheat.worker_status();

-- 1.2 -> 1.3: policies evaluated in the database; the queue is untouched
ALTER EXTENSION p2p_preheat UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat';
SELECT count(*) AS jobs FROM p2p_preheat.job;
SELECT p2p_preheat.doublestar_match('app/**', 'app/x/y') AS matcher_works;

-- 1.3 -> 1.4: push and schedule triggers arrive on Harbor's tables
ALTER EXTENSION p2p_preheat UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat';
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgname LIKE 'p2p_preheat%' ORDER BY 2;
SELECT count(*) AS jobs FROM p2p_preheat.job;

-- 1.4 -> 1.5: roles, retention, status; the queue is untouched
ALTER EXTENSION p2p_preheat UPDATE TO '1.5';
SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat';
SELECT count(*) AS jobs, (SELECT count(*) FROM p2p_preheat.status) AS instances FROM p2p_preheat.job;

-- the same objects as a fresh install
CREATE TEMP TABLE upgraded AS
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'p2p_preheat');
DROP EXTENSION p2p_preheat;
SELECT count(*) AS jobs_table_left FROM pg_class WHERE relname = 'job' AND relnamespace::regnamespace::text = 'p2p_preheat';
SELECT id, name, extra_attrs FROM p2p_preheat_policy ORDER BY id;
CREATE EXTENSION p2p_preheat;
SELECT object FROM upgraded
EXCEPT
SELECT pg_describe_object(classid, objid, objsubid)
  FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'p2p_preheat');
-- (18 also lists the row types of the tables and views, and their arrays)
SELECT count(*) AS objects FROM upgraded u
 WHERE NOT EXISTS (SELECT FROM pg_class c
					WHERE u.object IN (format('type %s', c.oid::regclass), format('type %s[]', c.oid::regclass)));
\c contrib_regression
DROP DATABASE harbor_upgrade;
