-- The extra_attrs rules, through validate_extra_attrs(), extra_attrs_problems()
-- and the policy trigger.
CREATE EXTENSION p2p_preheat;

-- SQLSTATE and message, or the object as it will be sent
CREATE FUNCTION ea(vendor text, doc text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	RETURN p2p_preheat.validate_extra_attrs(vendor, doc)::text;
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END $$;

-- accepted: nothing, null, {}, and every argument within its bounds
SELECT doc, ea('dragonfly', doc) FROM (VALUES
	(NULL), (''), ('  '), ('null'), ('{}'),
	('{"scope": "single_peer"}'),
	('{"scope": "all_peers"}'),
	('{"scope": "single_seed_peer"}'),
	('{"scope": "all_seed_peers"}'),
	('{"cluster_ids": [1, 2, 3], "scope": "single_peer"}'),
	('{"cluster_ids": []}'),
	('{"cluster_ids": [4294967295]}'),
	('{"platform": "linux/amd64"}'),
	('{"platform": "linux/arm/v7"}'),
	('{"platform": ""}'),
	('{"tag": "t", "application": "app", "filtered_query_params": "Expires&Signature"}'),
	('{"piece_length": 4194304}'),
	('{"piece_length": 67108864}'),
	('{"scope": "all_peers", "ips": ["10.0.0.5", "::1"]}'),
	('{"scope": "all_seed_peers", "count": 200}'),
	('{"scope": "all_peers", "percentage": 1}'),
	('{"concurrent_task_count": 100, "concurrent_peer_count": 1000}'),
	('{"timeout": 1800000000000}'),
	('{"timeout": "30m"}'),
	('{"timeout": "1h30m"}'),
	('{"timeout": "1.5h"}'),
	('{"timeout": "250ms"}')
) v(doc);

-- rejected, one rule at a time
SELECT doc, ea('dragonfly', doc) FROM (VALUES
	('{"scope": "everywhere"}'),
	('{"scope": 1}'),
	('{"scope": null}'),
	('{"cluster_ids": 1}'),
	('{"cluster_ids": "1,2"}'),
	('{"cluster_ids": [1, 2.5]}'),
	('{"cluster_ids": [1.0]}'),
	('{"cluster_ids": ["1"]}'),
	('{"cluster_ids": [0]}'),
	('{"cluster_ids": [-1]}'),
	('{"cluster_ids": [4294967296]}'),
	('{"cluster_ids": [99999999999999999999999]}'),
	('{"cluster_ids": [null]}'),
	('{"cluster_ids": [1, [2]]}'),
	('{"cluster_ids": [1, 2, 1]}'),
	('{"platform": "linux"}'),
	('{"platform": "Linux/AMD64"}'),
	('{"platform": "linux//amd64"}'),
	('{"platform": "linux/arm/v7/x"}'),
	('{"tag": 5}'),
	('{"piece_length": 1024}'),
	('{"piece_length": 67108865}'),
	('{"ips": ["10.0.0.5"]}'),
	('{"scope": "single_peer", "count": 3}'),
	('{"scope": "all_peers", "ips": []}'),
	('{"scope": "all_peers", "ips": ["10.0.0.300"]}'),
	('{"scope": "all_peers", "ips": [10]}'),
	('{"scope": "all_peers", "count": 201}'),
	('{"scope": "all_peers", "count": 0}'),
	('{"scope": "all_peers", "percentage": 101}'),
	('{"scope": "all_peers", "count": 3, "percentage": 50}'),
	('{"concurrent_task_count": 0}'),
	('{"concurrent_peer_count": 1001}'),
	('{"timeout": "30 minutes"}'),
	('{"timeout": "-5m"}'),
	('{"timeout": "0"}'),
	('{"timeout": 0}'),
	('{"timeout": 1.5}'),
	('{"timeout": true}'),
	('{"url": "https://evil/v2/x/manifests/y"}'),
	('{"type": "file"}'),
	('{"password": "hunter2"}'),
	('{"headers": {"Authorization": "Bearer x"}}'),
	('{"cluster_id": [1]}'),
	('{"clusterIds": [1]}'),
	('{"scheduler_cluster_ids": [1]}'),
	('{"Scope": "all_peers"}'),
	('{"scop": "all_peers"}'),
	('{"zzz": 1}'),
	('{"a key with spaces": 1}'),
	('[1, 2]'),
	('"all_peers"'),
	('42'),
	('true'),
	('{"scope": '),
	('{"scope": "all_peers",}'),
	('{"a": "\u0000"}'),
	('{"a": "\ud800"}'),
	('{"a": 1e99999}')
) v(doc);

-- other vendors: an object is required, its contents are the provider's business
SELECT doc, ea('kraken', doc) FROM (VALUES
	('{"anything": [1, {"goes": true}], "scope": "weird"}'),
	('null'),
	('[1]'),
	('"x"')
) v(doc);
SELECT ea(NULL, '{"scope": "everywhere"}');
SELECT ea('Dragonfly', '{"scope": "everywhere"}');

-- the whole error: message, detail, hint, SQLSTATE
\set VERBOSITY default
SELECT p2p_preheat.validate_extra_attrs('dragonfly', '{"cluster_ids": [3, 7, -2]}'::json);
SELECT p2p_preheat.validate_extra_attrs('dragonfly', '{"clusterids": [1], "scope": "all"}'::json);
SELECT p2p_preheat.validate_extra_attrs('dragonfly', '{"timeout": "forever"}'::json);
SELECT p2p_preheat.validate_extra_attrs('dragonfly', '{"x": "' || repeat('y', 200) || '"}');
SELECT p2p_preheat.validate_extra_attrs('dragonfly', 'not json');

-- every problem at once, for a UI
SELECT * FROM p2p_preheat.extra_attrs_problems('dragonfly',
	'{"cluster_ids": [0, "2", 2.5, 3, 3], "scope": "al_peers", "count": 5, "tiemout": "1h", "platform": "amd64"}'::json);
SELECT * FROM p2p_preheat.extra_attrs_problems('dragonfly', '{"scope": "all_peers"}'::json);
SELECT * FROM p2p_preheat.extra_attrs_problems('dragonfly', '{broken');

-- huge and deep documents are refused cleanly
SELECT ea('dragonfly', repeat('[', 10000) || repeat(']', 10000));
SELECT ea('kraken', '{"a":' || repeat('{"a":', 40) || '1' || repeat('}', 40) || '}');
SELECT ea('kraken', '{"a":' || repeat('{"a":', 30) || '1' || repeat('}', 30) || '}') LIKE '{%' AS depth_30_ok;
SELECT ea('dragonfly', '{"cluster_ids": [' || (SELECT string_agg(g::text, ',') FROM generate_series(1, 1001) g) || ']}');
SELECT length(ea('dragonfly', '{"cluster_ids": [' || (SELECT string_agg(g::text, ',') FROM generate_series(1, 1000) g) || ']}')) > 4000 AS thousand_ids_ok;
SELECT ea('kraken', '{"a": "' || repeat('x', 70000) || '"}');
SET p2p_preheat.max_extra_attrs_size = '128kB';
SELECT ea('kraken', '{"a": "' || repeat('x', 70000) || '"}') LIKE '{"a": "xxx%' AS bigger_limit_ok;
RESET p2p_preheat.max_extra_attrs_size;

-- unknown keys for providers newer than us, by a superuser's choice
SET p2p_preheat.allow_unknown_attrs = on;
SELECT ea('dragonfly', '{"load_to_cache": true, "scope": "single_peer"}');
SELECT ea('dragonfly', '{"load_to_cache": true, "scope": "bad"}');
RESET p2p_preheat.allow_unknown_attrs;
CREATE ROLE ea_plain LOGIN;
SET ROLE ea_plain;
SET p2p_preheat.allow_unknown_attrs = on;
RESET ROLE;

-- the trigger on Harbor's table
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances();
SELECT p2p_preheat.attach('p2p_preheat_policy');

INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('ok', 1, 1, '{"cluster_ids": [1, 2, 3], "scope": "single_peer"}');
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('none', 1, 1, NULL), ('null', 1, 1, 'null'), ('empty', 1, 1, '{}');
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('bad', 1, 1, '{"cluster_ids": [1, "2"]}');
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('typo', 1, 1, '{"cluster_idz": [1]}');
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('array', 1, 1, '[1]');
-- kraken's arguments are its own business, but only as an object
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('kr', 1, 2, '{"cluster_idz": [1]}');
UPDATE p2p_preheat_policy SET extra_attrs = '"x"' WHERE name = 'kr';
-- changing the provider re-validates against the new one
UPDATE p2p_preheat_policy SET provider_id = 1 WHERE name = 'kr';
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "nowhere"}' WHERE name = 'ok';
-- untouched columns: no work, no error
UPDATE p2p_preheat_policy SET description = 'nightly' WHERE name = 'ok';
-- a provider that does not exist: only the object rule applies
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('orphan', 1, 99, '{"whatever": 1}');
-- a multi-row statement stops at the first bad row and stores nothing
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
SELECT 'bulk' || g, 1, 1, CASE WHEN g = 50 THEN '{"scope": "bad"}' ELSE '{"scope": "all_peers"}' END::json
  FROM generate_series(1, 100) g;
SELECT count(*) AS bulk_rows FROM p2p_preheat_policy WHERE name LIKE 'bulk%';
-- a vendor changed mid-transaction is seen by the next statement
BEGIN;
UPDATE p2p_preheat_instance SET vendor = 'kraken' WHERE id = 1;
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('was_dragonfly', 1, 1, '{"kraken_only": 1}');
UPDATE p2p_preheat_instance SET vendor = 'dragonfly' WHERE id = 1;
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, extra_attrs)
VALUES ('is_dragonfly', 1, 1, '{"kraken_only": 1}');
ROLLBACK;
SELECT name, provider_id, extra_attrs FROM p2p_preheat_policy WHERE name NOT LIKE 'bulk%' ORDER BY id;

DROP EXTENSION p2p_preheat;
DROP ROLE ea_plain;
DROP TABLE p2p_preheat_policy, p2p_preheat_instance, project, repository, artifact, tag,
	harbor_label, label_reference;
DROP SCHEMA harbor_fixture CASCADE;
