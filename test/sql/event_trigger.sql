-- Installed before Harbor first starts: the column and the trigger arrive the
-- moment Harbor's migration, running as Harbor's own role, creates the table.
\set SHOW_CONTEXT never
CREATE DATABASE harbor_fresh;
\c harbor_fresh
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
CREATE EXTENSION p2p_preheat;
SELECT * FROM p2p_preheat.invalid_policies;

-- Harbor's role owns every table of Harbor's, as Harbor's migrations make them
CREATE ROLE harbor_core LOGIN;
GRANT CREATE, USAGE ON SCHEMA public TO harbor_core;
GRANT USAGE ON SCHEMA harbor_fixture TO harbor_core;
SET ROLE harbor_core;
SELECT harbor_fixture.create_tables('none');
-- Harbor's 2.1 migration, then 2.13's ADD COLUMN IF NOT EXISTS
SELECT harbor_fixture.create_preheat_tables('2.11');
SELECT harbor_fixture.create_preheat_tables('2.13');
SELECT harbor_fixture.add_instances();
SELECT format_type(atttypid, atttypmod) AS extra_attrs_type FROM pg_attribute
 WHERE attrelid = 'p2p_preheat_policy'::regclass AND attname = 'extra_attrs';
SELECT tgname FROM pg_trigger WHERE tgrelid = 'p2p_preheat_policy'::regclass AND NOT tgisinternal ORDER BY 1;
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('bad', 1, 1, '{"cluster_ids": [0]}');
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('good', 1, 1, '{"cluster_ids": [1]}');
-- Harbor's role may check documents, but not run the privileged parts itself
SELECT path, problem FROM p2p_preheat.extra_attrs_problems('dragonfly', '{"scope": 1}');
SELECT p2p_preheat.attach('p2p_preheat_policy');
RESET ROLE;

-- other tables, temporary tables and other names are left alone
CREATE TABLE p2p_preheat_other (id int);
CREATE TEMP TABLE p2p_preheat_policy (id int);
SELECT count(*) AS attached FROM pg_trigger WHERE tgname = 'p2p_preheat_extra_attrs';
DROP TABLE pg_temp.p2p_preheat_policy;

-- one Harbor per database: a policy table in another schema is not attached
-- automatically, and attaching it by hand is refused with the reason
CREATE SCHEMA elsewhere;
CREATE TABLE elsewhere.p2p_preheat_policy (id int, name text, provider_id int);
SELECT count(*) AS attached FROM pg_trigger WHERE tgname = 'p2p_preheat_extra_attrs';
SELECT p2p_preheat.attach('elsewhere.p2p_preheat_policy');
SELECT schema_name, owner FROM p2p_preheat.harbor;
DROP SCHEMA elsewhere CASCADE;

-- DROP EXTENSION leaves Harbor's table, column and data
DROP EXTENSION p2p_preheat;
SELECT name, extra_attrs FROM p2p_preheat_policy;
SELECT count(*) AS attached FROM pg_trigger WHERE tgname = 'p2p_preheat_extra_attrs';
\c contrib_regression
DROP DATABASE harbor_fresh;
DROP ROLE harbor_core;
