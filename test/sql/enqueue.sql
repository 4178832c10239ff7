-- Queueing in C: preheat()'s set form against the one-at-a-time forms (same
-- checks, same deduplication), what each bad input is told, and the checks
-- of Harbor's tables kept within a transaction only while the catalog stays.
\set SHOW_CONTEXT errors
CREATE DATABASE harbor_enqueue;
\c harbor_enqueue
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances('http://127.0.0.1:1');
CREATE EXTENSION p2p_preheat;
SET p2p_preheat.registry_url = 'https://harbor.example.com/';
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, extra_attrs) VALUES
	(1, 'nightly', 1, 1, true, '{"scope": "single_peer", "timeout": "30m"}'),
	(2, 'plain', 1, 1, true, NULL),
	(3, 'off', 1, 1, false, NULL),
	(4, 'no-instance', 1, 77, true, NULL);

-- SQLSTATE, message, detail, hint and context of a call, or its result
CREATE FUNCTION try(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hint text; ctx text; r text;
BEGIN
	EXECUTE call INTO r;
	RETURN 'ok ' || coalesce(r, '');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hint = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
	RETURN st || ' ' || msg || coalesce(' | ' || nullif(det, ''), '') ||
		coalesce(' | hint: ' || nullif(hint, ''), '') ||
		coalesce(' | ' || substring(ctx FROM '^(element [0-9]+ of [a-z ]+)'), '');
END $$;

CREATE VIEW jobs AS
SELECT id, policy_id, instance_id, substring(url FROM '/v2/(.*)$') AS image, attrs, state
  FROM p2p_preheat.job ORDER BY id;

-- one INSERT for the set: one job id per element, in order; an image named
-- twice (with or without the project prefix) gets one job
SELECT ord, job FROM p2p_preheat.preheat(1, ARRAY['app', 'library/app', 'db', 'app'],
	ARRAY['1.0', '1.0', 'sha256:' || repeat('a', 64), '2.0']) WITH ORDINALITY AS p(job, ord);
SELECT * FROM jobs;
-- the scalar form finds the same open jobs, and the set form the scalar's
SELECT p2p_preheat.preheat(1, 'app', '1.0') = (SELECT min(id) FROM p2p_preheat.job) AS same_job;
SELECT p2p_preheat.preheat(1, 'app', '3.0') AS scalar_job \gset
SELECT array_agg(j) = ARRAY[:scalar_job, :scalar_job]::bigint[] AS set_finds_scalar
  FROM p2p_preheat.preheat(1, ARRAY['app', 'app'], ARRAY['3.0', '3.0']) j;
-- other arguments (policy 2 has none): other jobs
SELECT count(*) AS new_jobs FROM p2p_preheat.preheat(2, ARRAY['app', 'db'], ARRAY['1.0', '1.0']) j
 WHERE j NOT IN (SELECT id FROM p2p_preheat.job WHERE policy_id = 1);
-- a job that ended is queued anew
UPDATE p2p_preheat.job SET state = 'succeeded', finished_at = now() WHERE url LIKE '%/db/manifests/1.0';
SELECT count(*) AS requeued FROM p2p_preheat.preheat(2, ARRAY['db'], ARRAY['1.0']) j
 WHERE j > (SELECT max(id) - 1 FROM p2p_preheat.job);
-- nothing to queue
SELECT count(*) AS none FROM p2p_preheat.preheat(1, '{}'::text[], '{}'::text[]);
SELECT * FROM jobs;

-- the caller's token is kept with every job of the set, once per job
SELECT count(*) AS jobs FROM p2p_preheat.preheat(1, ARRAY['app', 'web', 'web'], ARRAY['9', '9', '9'],
	'{"Authorization": "Bearer reg-token-1"}');
SELECT substring(j.url FROM '/v2/(.*)$') AS image, s.headers
  FROM p2p_preheat.job_secret s JOIN p2p_preheat.job j ON j.id = s.job_id ORDER BY j.id;

-- bad input: SQLSTATE, message, detail, hint, and which element
SELECT call, try(call) FROM (VALUES
	($$SELECT p2p_preheat.preheat(1, ARRAY['app', 'db'], ARRAY['1.0'])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app'], '{}'::text[])$$),
	($$SELECT p2p_preheat.preheat(1, NULL::text[], ARRAY['1.0'])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app'], NULL::text[])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY[['app'], ['db']], ARRAY['1.0', '2.0'])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app', NULL], ARRAY['1.0', '2.0'])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app', 'db'], ARRAY['1.0', NULL])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app', ''], ARRAY['1.0', '2.0'])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app', 'Bad'], ARRAY['1.0', '2.0'])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app', 'db'], ARRAY['1.0', 'a?b'])$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app'], ARRAY['1.0'], '{"Authorization": 1}')$$),
	($$SELECT p2p_preheat.preheat(1, ARRAY['app'], ARRAY['1.0'], '["Bearer x"]')$$),
	($$SELECT p2p_preheat.preheat(3, ARRAY['app'], ARRAY['1.0'])$$),
	($$SELECT p2p_preheat.preheat(4, ARRAY['app'], ARRAY['1.0'])$$),
	($$SELECT p2p_preheat.preheat(99, ARRAY['app'], ARRAY['1.0'])$$),
	($$SELECT p2p_preheat.preheat(NULL, ARRAY['app'], ARRAY['1.0'])$$),
	-- the scalar forms say the same
	($$SELECT p2p_preheat.preheat(1, 'app', NULL)$$),
	($$SELECT p2p_preheat.preheat(1, 'Bad', '1.0')$$),
	($$SELECT p2p_preheat.preheat(3, 'app', '1.0')$$),
	($$SELECT p2p_preheat.preheat(4, 'app', '1.0')$$),
	($$SELECT p2p_preheat.preheat(NULL, 'app', '1.0')$$),
	($$SELECT p2p_preheat.preheat(1, 'app', '1.0', '{"Authorization": {"a": "b"}}')$$),
	($$SELECT p2p_preheat.preheat_url(99, 'https://harbor.example.com/v2/library/app/manifests/1')$$),
	($$SELECT p2p_preheat.preheat_url(NULL, 'https://harbor.example.com/v2/library/app/manifests/1')$$),
	($$SELECT p2p_preheat.preheat_url(1, NULL)$$),
	($$SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/app/manifests/1', '{"scope": "bogus"}')$$),
	-- run_policy() refuses a disabled policy with the same words
	($$SELECT p2p_preheat.run_policy(3)$$)
  ) c(call);
-- a project prefix is the whole first segment: "libraryx/app" is not in project "library"
SELECT p2p_preheat.preheat(1, 'libraryx/app', '1.0') AS prefixed \gset
SELECT substring(url FROM '/v2/(.*)$') AS image FROM p2p_preheat.job WHERE id = :prefixed;
-- without the registry's URL nothing is queued
RESET p2p_preheat.registry_url;
SELECT try($$SELECT p2p_preheat.preheat(1, ARRAY['app'], ARRAY['1.0'])$$);
SET p2p_preheat.registry_url = 'https://harbor.example.com/';

-- the checks of Harbor's tables hold within a transaction only while the
-- catalog does: a table swapped for a view in between is refused
BEGIN;
SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/swap/manifests/1') > 0 AS queued;
SELECT p2p_preheat.preheat(1, 'swap', '1') > 0 AS queued;
ALTER TABLE p2p_preheat_instance RENAME TO p2p_preheat_instance_real;
CREATE VIEW p2p_preheat_instance AS SELECT * FROM p2p_preheat_instance_real;
SELECT try($$SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/swap/manifests/2')$$);
SELECT try($$SELECT p2p_preheat.preheat(1, 'swap', '2')$$);
ROLLBACK;

-- a policy read once is reused only under the same snapshot: a change this
-- transaction makes is seen by the next call
BEGIN;
SELECT count(p2p_preheat.preheat(1, 'cache', g::text)) AS queued FROM generate_series(1, 3) g;
UPDATE p2p_preheat_policy SET enabled = false WHERE id = 1;
SELECT try($$SELECT p2p_preheat.preheat(1, 'cache', '4')$$);
UPDATE p2p_preheat_policy SET enabled = true WHERE id = 1;
UPDATE p2p_preheat_instance SET enabled = false WHERE id = 1;
SELECT try($$SELECT p2p_preheat.preheat(1, 'cache', '5')$$);
ROLLBACK;

-- ... and under a later snapshot (each statement has its own) only while
-- the tuples it came from are still the visible ones: a change this
-- transaction makes, or undoes with a savepoint, is seen by the next call
BEGIN;
SELECT p2p_preheat.preheat(1, 'snap', '1') AS j \gset
SELECT image, attrs FROM jobs WHERE id = :j;
SAVEPOINT s;
UPDATE project SET name = 'moved' WHERE project_id = 1;
SELECT p2p_preheat.preheat(1, 'snap', '2') AS j \gset
SELECT image, attrs FROM jobs WHERE id = :j;
ROLLBACK TO SAVEPOINT s;
SELECT p2p_preheat.preheat(1, 'snap', '3') AS j \gset
SELECT image, attrs FROM jobs WHERE id = :j;
SAVEPOINT t;
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers"}' WHERE id = 1;
SELECT p2p_preheat.preheat(1, 'snap', '4') AS j \gset
SELECT image, attrs FROM jobs WHERE id = :j;
ROLLBACK TO SAVEPOINT t;
SELECT p2p_preheat.preheat(1, 'snap', '5') AS j \gset
SELECT image, attrs FROM jobs WHERE id = :j;
SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/snap/manifests/6') AS j \gset
UPDATE p2p_preheat_instance SET vendor = 'kraken' WHERE id = 1;
SELECT try($$SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/snap/manifests/7', '{"scope": "everywhere"}') > 0$$);
ROLLBACK;
-- a loop, a statement per call, that disables the policy and then its
-- instance halfway: the call after each change refuses
SELECT try($q$DO $do$ BEGIN FOR g IN 1..4 LOOP
	IF g = 3 THEN UPDATE p2p_preheat_policy SET enabled = false WHERE id = 1; END IF;
	PERFORM p2p_preheat.preheat(1, 'loop', g::text);
END LOOP; END $do$$q$);
SELECT try($q$DO $do$ BEGIN FOR g IN 1..4 LOOP
	IF g = 2 THEN UPDATE p2p_preheat_instance SET enabled = false WHERE id = 1; END IF;
	PERFORM p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/loop/manifests/' || g);
	PERFORM p2p_preheat.preheat(1, 'loop', g::text);
END LOOP; END $do$$q$);

\c postgres
DROP DATABASE harbor_enqueue;
