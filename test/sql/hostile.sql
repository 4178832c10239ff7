-- Hostile input: image names and manifest URLs outside the OCI grammar, and
-- instance endpoints that resolve to cloud metadata or unspecified addresses.
\set SHOW_CONTEXT never
\getenv port DRAGONFLY_PORT
\getenv standin_log DRAGONFLY_LOG
CREATE DATABASE harbor_hostile;
\c harbor_hostile
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances('http://127.0.0.1:' || :'port');
CREATE EXTENSION p2p_preheat;

-- the C functions, declared here in a scratch schema
CREATE SCHEMA scratch;
CREATE FUNCTION scratch.check_image_name(repository text, reference text) RETURNS void
	AS 'p2p_preheat', 'p2p_preheat_check_image_name' LANGUAGE C;
CREATE FUNCTION scratch.check_manifest_url(url text) RETURNS void
	AS 'p2p_preheat', 'p2p_preheat_check_manifest_url' LANGUAGE C;
CREATE FUNCTION scratch.endpoint_refusal(address text) RETURNS text
	AS 'p2p_preheat', 'p2p_preheat_endpoint_refusal' LANGUAGE C STRICT;

-- SQLSTATE, message, detail and hint of a call, or 'ok'
CREATE FUNCTION scratch.try(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hint text;
BEGIN
	EXECUTE call;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hint = PG_EXCEPTION_HINT;
	RETURN st || ' ' || msg || coalesce(' | ' || left(nullif(det, ''), 80), '') ||
		CASE WHEN hint <> '' THEN ' | hint' ELSE '' END;
END $$;

-- repositories and references: the grammar, and what lies outside it
SELECT left(repo, 40) AS repo, left(ref, 40) AS ref, scratch.try(format('SELECT scratch.check_image_name(%L, %L)', repo, ref))
  FROM (VALUES
	('library/app', '1.0'),
	('a/b/c-d/e.f/g_h/i__j/k---l', 'v1.2.3-rc_1'),
	('x', '_'),
	('library/app', 'sha256:' || repeat('ab', 32)),
	('library/app', 'sha512:' || repeat('0f', 64)),
	('library/app', repeat('t', 128)),
	('library/app', repeat('t', 129)),
	('library/app', '.hidden'),
	('library/app', '-dash'),
	('library/app', 'a b'),
	('library/app', E'1.0\r\nX-Injected: 1'),
	('library/app', '1.0?x=1'),
	('library/app', '1.0#frag'),
	('library/app', '1.0/../x'),
	('library/app', '%0d%0a'),
	('library/app', 'sha256:' || repeat('AB', 32)),
	('library/app', 'sha256:abc'),
	('library/app', 'md5:' || repeat('a', 32)),
	('library/app', ''),
	('', '1.0'),
	('Library/app', '1.0'),
	('library/../etc', '1.0'),
	('library//app', '1.0'),
	('library/app/', '1.0'),
	('/library/app', '1.0'),
	('library/a___b', '1.0'),
	('library/a._b', '1.0'),
	('library/app?x', '1.0'),
	('library/app#x', '1.0'),
	('library/a%2fb', '1.0'),
	('library/a b', '1.0'),
	(E'library/a\nb', '1.0'),
	('library/é', '1.0'),
	(repeat('a', 255), '1.0'),
	(repeat('a', 256), '1.0')) t(repo, ref);
SELECT scratch.check_image_name(NULL, '1.0');
-- the full message of one refusal
SELECT scratch.check_image_name('library/app', E'1.0\r\nX-Injected: 1');

-- manifest URLs
SELECT url, scratch.try(format('SELECT scratch.check_manifest_url(%L)', url))
  FROM (VALUES
	('https://harbor.example.com/v2/library/app/manifests/1.0'),
	('HTTP://Harbor.Example.com:8080/v2/library/app/manifests/sha256:' || repeat('0', 64)),
	('http://[::1]:5000/v2/a/manifests/b'),
	('https://harbor.example.com/v2/a/manifests/b/manifests/c'),
	('ftp://harbor.example.com/v2/library/app/manifests/1.0'),
	('file:///v2/library/app/manifests/1.0'),
	('https://robot:pw@harbor.example.com/v2/library/app/manifests/1.0'),
	('https://robot@harbor.example.com/v2/library/app/manifests/1.0'),
	('https://harbor.example.com/v2/library/app/manifests/1.0?x=1'),
	('https://harbor.example.com/v2/library/app/manifests/1.0#f'),
	('https://harbor.example.com/v2/library/../app/manifests/1.0'),
	('https://harbor.example.com/v2/library/app/manifests/1.0%0d%0aX:1'),
	(E'https://harbor.example.com/v2/library/app/manifests/1.0\r\nX: 1'),
	('https://harbor.example.com/v2/library/my app/manifests/1.0'),
	('https://harbor.example.com/v2/library/app/manifests/'),
	('https://harbor.example.com/v2//manifests/1.0'),
	('https://harbor.example.com/v2/library/app/blobs/1.0'),
	('https://harbor.example.com/library/app/manifests/1.0'),
	('https://harbor.example.com'),
	('https:///v2/library/app/manifests/1.0'),
	('https://harbor.example.com/v2/Library/app/manifests/1.0')) t(url);
SELECT scratch.check_manifest_url(NULL);
SELECT scratch.check_manifest_url('https://robot:pw@harbor.example.com/v2/library/app/manifests/1.0');

-- addresses the endpoint guard refuses after DNS, and some it lets through
SELECT address, scratch.endpoint_refusal(address)
  FROM (VALUES
	('169.254.169.254'), ('169.254.170.2'), ('169.254.1.1'), ('100.100.100.200'),
	('0.0.0.0'), ('0.1.2.3'), ('::'), ('fe80::1'), ('fd00:ec2::254'),
	('::ffff:169.254.169.254'), ('[::ffff:169.254.169.254]'), ('::169.254.169.254'),
	('::ffff:0:169.254.169.254'), ('64:ff9b::169.254.169.254'), ('64:ff9b::a9fe:a9fe'),
	('64:ff9b:1::a9fe:a9fe'), ('2002:a9fe:a9fe::1'), ('::ffff:100.100.100.200'),
	('::ffff:0.0.0.0'), ('64:ff9b::0.0.0.0'),
	('127.0.0.1'), ('::1'), ('::ffff:127.0.0.1'), ('10.0.0.1'), ('100.100.100.201'),
	('169.253.255.255'), ('fd00:ec2::253'), ('2001:db8::1')) t(address);
SELECT scratch.endpoint_refusal('not an address');
SET p2p_preheat.allow_link_local = on;
SELECT scratch.endpoint_refusal('169.254.169.254') AS allowed_when_on;
RESET p2p_preheat.allow_link_local;

-- at connect time: endpoints whose address is refused, even on a port where
-- the stand-in listens; nothing reaches the stand-in
INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, auth_data, enabled, insecure) VALUES
	(20, 'unspecified4', 'dragonfly', 'http://0.0.0.0:' || :'port', 'NONE', NULL, true, false),
	(21, 'unspecified6', 'dragonfly', 'http://[::]:' || :'port', 'NONE', NULL, true, false),
	(22, 'metadata-mapped', 'dragonfly', 'http://[::ffff:169.254.169.254]:1/', 'NONE', NULL, true, false),
	(23, 'mapped-unspecified', 'dragonfly', 'http://[::ffff:0.0.0.0]:' || :'port', 'NONE', NULL, true, false);
SET p2p_preheat.max_attempts = 1;
SELECT p2p_preheat.preheat_url(i, 'https://harbor.example.com/v2/library/guard-' || i || '/manifests/1')
  FROM generate_series(20, 23) i;
SELECT sent, failed FROM p2p_preheat.preheat_dispatch();
SELECT instance_id, state, last_error
  FROM p2p_preheat.job WHERE url ~ '/guard-' ORDER BY instance_id;
SELECT count(*) AS reached_standin
  FROM regexp_split_to_table(pg_read_file(:'standin_log'), E'\n') line
 WHERE line ~ '/guard-';

-- the same rules where callers type names: preheat() and preheat_url()
SET p2p_preheat.registry_url = 'https://harbor.example.com';
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, filters)
VALUES (1, 'p', 1, 1, true, '[{"type":"repository","value":"**"}]');
SELECT name, reference, scratch.try(format('SELECT p2p_preheat.preheat(1, %L, %L)', name, reference)) AS outcome
  FROM (VALUES ('app', '1.0'), ('../admin', '1.0'), ('app', '1.0?x=1'), ('app', '1.0#f'),
			   ('my app', '1.0'), ('app', E'1.0\r\nX-Evil: 1'), ('app', '1.0%0d%0a'),
			   ('app', 'sha256:' || repeat('a', 64))) v(name, reference);
SELECT scratch.try($$SELECT p2p_preheat.preheat_url(1, 'http://internal@evil.example/v2/x/manifests/y')$$) AS userinfo;
-- a manifest on an address the dispatcher would refuse is refused at queue
-- time: Dragonfly would fetch it with the registry's credentials
SELECT u AS url, scratch.try(format('SELECT p2p_preheat.preheat_url(1, %L)', u)) AS outcome
  FROM (VALUES ('http://169.254.169.254/v2/x/manifests/y'),
			   ('http://[::ffff:169.254.169.254]/v2/x/manifests/y'),
			   ('http://100.100.100.200/v2/x/manifests/y'),
			   ('http://0.0.0.0:5000/v2/x/manifests/y')) v(u);
-- only the two valid names were queued
SELECT url FROM p2p_preheat.job WHERE policy_id = 1 ORDER BY id;
-- a foreign host is an admin's operation: Harbor's role cannot name one
CREATE ROLE hostile_harbor IN ROLE p2p_preheat_user;
GRANT USAGE ON SCHEMA scratch TO hostile_harbor;
SET ROLE hostile_harbor;
SELECT scratch.try($$SELECT p2p_preheat.preheat_url(1, 'http://evil.example/v2/x/manifests/y')$$) AS foreign_host;
RESET ROLE;
REVOKE USAGE ON SCHEMA scratch FROM hostile_harbor;
DROP ROLE hostile_harbor;

\c contrib_regression
DROP DATABASE harbor_hostile;
