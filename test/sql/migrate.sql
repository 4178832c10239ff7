-- CREATE EXTENSION on each Harbor schema found in the field, a DBA's
-- lock_timeout, running the migration twice, and DROP EXTENSION keeping data.
\set SHOW_CONTEXT never

-- Harbor <= 2.11: no extra_attrs --------------------------------------------
CREATE DATABASE harbor_211;
\c harbor_211
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.11');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, filters, trigger, enabled)
VALUES ('nightly', 1, 1, '[{"type":"repository","value":"**"}]', '{"type":"manual"}', true);
SELECT pg_relation_filenode('p2p_preheat_policy') AS filenode_before \gset

-- a DBA's lock_timeout is respected, and a timeout leaves nothing behind
CREATE EXTENSION dblink;
-- (dblink connects from the server: to itself, by its own socket and port)
SELECT format('dbname=harbor_211 host=%s port=%s',
			  split_part(current_setting('unix_socket_directories'), ',', 1),
			  current_setting('port')) AS harbor_conn \gset
SELECT dblink_connect('harbor', :'harbor_conn');
SELECT dblink_exec('harbor', 'BEGIN');
SELECT dblink_exec('harbor', 'LOCK p2p_preheat_policy IN ACCESS SHARE MODE');
SET lock_timeout = '100ms';
CREATE EXTENSION p2p_preheat;
RESET lock_timeout;
SELECT count(*) AS extension_rows FROM pg_extension WHERE extname = 'p2p_preheat';
SELECT count(*) AS schema_rows FROM pg_namespace WHERE nspname = 'p2p_preheat';
SELECT column_name, type FROM harbor_fixture.policy_columns();
SELECT dblink_exec('harbor', 'COMMIT');
SELECT dblink_disconnect('harbor');
DROP EXTENSION dblink;

-- without the lock: the column arrives, the table is not rewritten
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
SELECT pg_relation_filenode('p2p_preheat_policy') = :filenode_before AS not_rewritten;
SELECT name, extra_attrs FROM p2p_preheat_policy;
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('broken', 1, 1, '{"scope": "nowhere"}');
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "cluster_ids": [1]}';
-- running the migration again, and updating to the version installed, are harmless
SELECT p2p_preheat.attach('p2p_preheat_policy');
ALTER EXTENSION p2p_preheat UPDATE;
SELECT * FROM harbor_fixture.policy_columns();
SELECT * FROM p2p_preheat.invalid_policies;
-- DROP EXTENSION takes its objects and trigger, never Harbor's column or data
DROP EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
SELECT name, extra_attrs FROM p2p_preheat_policy;
SELECT count(*) AS leftover_functions FROM pg_proc WHERE proname IN ('policy_trigger', 'attach', '_on_create_table');
SELECT count(*) AS leftover_event_triggers FROM pg_event_trigger WHERE evtname LIKE 'p2p_preheat%';
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
\c contrib_regression
DROP DATABASE harbor_211;

-- Harbor 2.12: scope is carried into extra_attrs -----------------------------
CREATE DATABASE harbor_212;
\c harbor_212
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.12');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, scope) VALUES
	('single', 1, 1, 'single_peer'),
	('all', 1, 1, 'all_peers'),
	('unset', 1, 1, NULL),
	('blank', 1, 1, ''),
	('kraken', 1, 2, 'all_peers');
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
SELECT name, scope, extra_attrs FROM p2p_preheat_policy ORDER BY id;
-- Harbor 2.13's own migration then drops scope and is not blocked
ALTER TABLE p2p_preheat_policy DROP COLUMN scope;
ALTER TABLE p2p_preheat_policy ADD COLUMN IF NOT EXISTS extra_attrs text;
SELECT * FROM harbor_fixture.policy_columns();
SELECT name, extra_attrs FROM p2p_preheat_policy ORDER BY id;
\c contrib_regression
DROP DATABASE harbor_212;

-- Harbor 2.12 with extra_attrs already there: merged, existing keys win -----
CREATE DATABASE harbor_212b;
\c harbor_212b
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.12');
ALTER TABLE p2p_preheat_policy ADD COLUMN extra_attrs json;
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, scope, extra_attrs) VALUES
	('merge', 1, 1, 'all_peers', '{"cluster_ids": [1, 2]}'),
	('keep', 1, 1, 'all_peers', '{"scope": "single_peer"}'),
	('null', 1, 1, 'all_peers', 'null'),
	('array', 1, 1, 'all_peers', '[1]');
CREATE EXTENSION p2p_preheat;
SELECT name, scope, extra_attrs FROM p2p_preheat_policy ORDER BY id;
-- a second run changes nothing
SELECT p2p_preheat.attach('p2p_preheat_policy');
SELECT name, extra_attrs FROM p2p_preheat_policy ORDER BY id;
SELECT policy_name, vendor, path, problem FROM p2p_preheat.invalid_policies;
\c contrib_regression
DROP DATABASE harbor_212b;

-- Harbor 2.13+: extra_attrs text keeps its type; text is validated as JSON --
CREATE DATABASE harbor_213;
\c harbor_213
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs) VALUES
	('empty', 1, 1, ''),
	('good', 1, 1, '{"scope": "single_peer", "cluster_ids": [1]}'),
	('garbage', 1, 1, 'not json'),
	('typo', 1, 1, '{"scope": "all_peers", "percentag": 5}'),
	('kraken', 1, 2, '{"whatever": 1}');
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
SELECT policy_id, policy_name, vendor, path, problem, hint FROM p2p_preheat.invalid_policies;
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('new', 1, 1, '{"scope": "all_peers"');
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('new', 1, 1, '{"scope": "all_peers"}');
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "percentage": 5}' WHERE name = 'typo';
SELECT policy_name, problem FROM p2p_preheat.invalid_policies;
\c contrib_regression
DROP DATABASE harbor_213;

-- The proposal: extra_attrs json already there ------------------------------
CREATE DATABASE harbor_json;
\c harbor_json
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs) VALUES
	('proposal_example', 1, 1, '{"cluster_ids":[1,2,3], "scope":"single_peer"}'),
	('string_ids', 1, 1, '{"cluster_ids":["1"]}');
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
SELECT policy_name, path, problem FROM p2p_preheat.invalid_policies;
\c contrib_regression
DROP DATABASE harbor_json;

-- Harbor's upgrades with the extension installed: 2.11's tables, the
-- extension, then each later migration as Harbor runs it, with Harbor's own
-- statements (its ORM sends untyped parameters) working at every step -------
CREATE DATABASE harbor_upgrade;
\c harbor_upgrade
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.11');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, filters, trigger, enabled)
VALUES ('old', 1, 1, '[{"type":"repository","value":"**"}]', '{"type":"manual"}', true);
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
-- 2.12 adds scope, and Harbor 2.12 writes it (never extra_attrs)
SELECT harbor_fixture.upgrade_to('2.12');
PREPARE harbor_212_insert AS INSERT INTO p2p_preheat_policy
	(name, description, project_id, provider_id, filters, trigger, enabled, creation_time, update_time, scope)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id;
EXECUTE harbor_212_insert('seed', '', 1, 1, '[{"type":"repository","value":"**"}]', '{"type":"manual"}',
	true, now(), now(), 'single_peer');
EXECUTE harbor_212_insert('everyone', '', 1, 1, '[{"type":"repository","value":"**"}]', '{"type":"manual"}',
	true, now(), now(), 'all_peers');
-- 2.13 drops scope: its values are carried first, under the names 2.13+ uses
SELECT harbor_fixture.upgrade_to('2.13');
SELECT * FROM harbor_fixture.policy_columns();
SELECT id, name, extra_attrs FROM p2p_preheat_policy ORDER BY id;
-- Harbor 2.13+'s ORM: '' for no attributes, JSON text otherwise, all untyped
PREPARE harbor_update AS UPDATE p2p_preheat_policy SET extra_attrs = $1, update_time = $2 WHERE id = $3;
EXECUTE harbor_update('', now(), 1);
EXECUTE harbor_update('{"scope":"all_peers","cluster_ids":[1]}', now(), 1);
EXECUTE harbor_update('{"scope":"nowhere"}', now(), 1);
PREPARE harbor_insert AS INSERT INTO p2p_preheat_policy
	(name, description, project_id, provider_id, filters, trigger, enabled, creation_time, update_time, extra_attrs)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id;
EXECUTE harbor_insert('plain', '', 1, 1, '[{"type":"tag","value":"v*"}]', '{"type":"manual"}', true, now(), now(), '');
-- the proposal's scope name is stored as the one Harbor 2.13+ accepts
EXECUTE harbor_insert('proposal', '', 1, 1, '[{"type":"tag","value":"v*"}]', '{"type":"manual"}', true, now(), now(),
	'{"scope": "single_peer", "cluster_ids": [2]}');
EXECUTE harbor_update('{"cluster_ids":[3],"scope":"single_peer"}', now(), 2);
-- 2.14, 2.15.3 (bigint setup_timestamp) and 2.16 change nothing we rely on
SELECT harbor_fixture.upgrade_to('2.14');
SELECT harbor_fixture.upgrade_to('2.15.3');
SELECT harbor_fixture.upgrade_to('2.16');
UPDATE p2p_preheat_instance SET setup_timestamp = 4102444800 WHERE id = 1;
SELECT (p2p_preheat._harbor_instance(1)).vendor;
SELECT id, name, extra_attrs FROM p2p_preheat_policy ORDER BY id;
SELECT * FROM p2p_preheat.invalid_policies;
\c contrib_regression
DROP DATABASE harbor_upgrade;

-- The proposal's json column meets Harbor 2.13+: attach makes it text, which
-- Harbor's '' fits; the rules still apply ----------------------------------
CREATE DATABASE harbor_json_213;
\c harbor_json_213
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('p', 1, 1, '{"scope": "all_peers"}');
-- with json, Harbor 2.13+'s save of a policy without attributes fails
PREPARE harbor_update AS UPDATE p2p_preheat_policy SET extra_attrs = $1 WHERE id = $2;
EXECUTE harbor_update('', 1);
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
SELECT harbor_fixture.upgrade_to('2.13');
DEALLOCATE harbor_update;
PREPARE harbor_update AS UPDATE p2p_preheat_policy SET extra_attrs = $1 WHERE id = $2;
EXECUTE harbor_update('', 1);
EXECUTE harbor_update('{"scope": "al_peers"}', 1);
EXECUTE harbor_update('not json', 1);
SELECT name, extra_attrs FROM p2p_preheat_policy;
\c contrib_regression
DROP DATABASE harbor_json_213;

-- a json column that a view depends on cannot change type: the install warns,
-- keeps json, and still validates
CREATE DATABASE harbor_json_view;
\c harbor_json_view
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances();
CREATE VIEW policy_attrs AS SELECT id, extra_attrs FROM p2p_preheat_policy;
CREATE EXTENSION p2p_preheat;
SELECT * FROM harbor_fixture.policy_columns();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs) VALUES ('p', 1, 1, '{"scope": "al_peers"}');
\c contrib_regression
DROP DATABASE harbor_json_view;
