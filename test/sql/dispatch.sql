-- preheat(), preheat_url(), cancel() and preheat_dispatch() against the
-- Dragonfly stand-in on loopback: body mapping, auth modes, every outcome,
-- redaction and dedupe.
\set SHOW_CONTEXT never
\getenv port DRAGONFLY_PORT
\getenv standin_log DRAGONFLY_LOG
\set endpoint 'http://127.0.0.1:' :port
CREATE DATABASE harbor_dispatch;
\c harbor_dispatch
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances(:'endpoint');
CREATE EXTENSION p2p_preheat;
SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat';

-- instances for every auth mode the stand-in accepts, and some it refuses
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, auth_data, enabled, insecure) VALUES
	(3, 'basic', 'dragonfly', :'endpoint', 'BASIC', '{"username": "d7y-user", "password": "d7y-pass-3"}', true, false),
	(4, 'custom', 'dragonfly', :'endpoint', 'CUSTOM', '{"X-Api-Key": "k-custom-5"}', true, false),
	(5, 'encrypted', 'dragonfly', :'endpoint', 'OAUTH', '<enc-v1>AAECAwQFBgcICQoLDA0ODyxNz9JZDRYK+6uHyw/sRpIwBiFaicqVqSE=', true, false),
	(6, 'wrong-token', 'dragonfly', :'endpoint', 'OAUTH', '{"token": "t-wrong"}', true, false),
	(7, 'inactive-token', 'dragonfly', :'endpoint', 'OAUTH', '{"token": "t-inactive-4"}', true, false),
	(8, 'no-auth', 'dragonfly', :'endpoint', 'NONE', NULL, true, false),
	(9, 'disabled', 'dragonfly', :'endpoint', 'OAUTH', '{"token": "t-secret-1"}', false, false),
	(10, 'console', 'dragonfly', :'endpoint' || '/console-not-api', 'OAUTH', '{"token": "t-secret-1"}', true, false),
	(11, 'nobody-home', 'dragonfly', 'http://127.0.0.1:1', 'OAUTH', '{"token": "t-secret-1"}', true, false),
	(12, 'bad-key', 'dragonfly', :'endpoint', 'OAUTH', '<enc-v1>AAECAwQFBgcICQoLDA0ODw==', true, false),
	(13, 'not-http', 'dragonfly', 'ftp://127.0.0.1/', 'NONE', NULL, true, false);
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, extra_attrs) VALUES
	(1, 'nightly', 1, 1, true, '{"scope": "single_peer", "cluster_ids": [1, 2], "timeout": "30m"}'),
	(2, 'plain', 1, 1, true, NULL),
	(3, 'off', 1, 1, false, NULL);
-- a disabled policy queues nothing, as run_policy() refuses it
SELECT p2p_preheat.preheat(3, 'app', '1.0');

-- fast retries and polls for the test
SET p2p_preheat.poll_schedule = '1';
SET p2p_preheat.retry_base = '10ms';
SET p2p_preheat.max_attempts = 3;

-- runs preheat_dispatch() until nothing is left to do; totals of its counts
CREATE FUNCTION dispatch_all(OUT sent bigint, OUT polled bigint, OUT succeeded bigint,
							 OUT failed bigint, OUT retried bigint)
LANGUAGE plpgsql AS $$
DECLARE
	r record;
	deadline timestamptz := clock_timestamp() + interval '30 s';
BEGIN
	sent := 0; polled := 0; succeeded := 0; failed := 0; retried := 0;
	LOOP
		r := p2p_preheat.preheat_dispatch();
		sent := sent + r.sent; polled := polled + r.polled; succeeded := succeeded + r.succeeded;
		failed := failed + r.failed; retried := retried + r.retried;
		EXIT WHEN NOT EXISTS (SELECT FROM p2p_preheat.job WHERE state IN ('queued', 'sending', 'running'))
			OR clock_timestamp() > deadline;
		PERFORM pg_sleep(0.05);
	END LOOP;
END $$;

CREATE VIEW jobs AS
SELECT id, instance_id AS inst, substring(url FROM '/v2/(.*)$') AS image, state, attempts,
	   last_http_status AS http, failed_peers,
	   regexp_replace(regexp_replace(regexp_replace(last_error, ':[0-9]+/', ':<port>/'),
			'after [0-9]+ ms', 'after <n> ms'),
			'(Connection died.*|Empty reply from server)$', '<connection closed without an answer>') AS last_error
  FROM p2p_preheat.job ORDER BY id;

-- preheat() needs the registry's URL
SELECT p2p_preheat.preheat(1, 'app', '1.0');
SET p2p_preheat.registry_url = 'https://harbor.example.com/';

-- queue like Harbor: project prefix optional, identical unfinished jobs deduplicated
SELECT p2p_preheat.preheat(1, 'app', '1.0', '{"Authorization": "Bearer reg-token-8"}') AS job;
SELECT p2p_preheat.preheat(1, 'library/app', '1.0') AS same_job;
SELECT p2p_preheat.preheat(2, 'app', '1.0') AS other_attrs;
SELECT p2p_preheat.preheat(1, 'app', '2.0') AS other_tag;
SELECT p2p_preheat.preheat(99, 'app', '1.0');
SELECT p2p_preheat.preheat(1, 'app', '1.0', '"Bearer x"');
SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/not-a-manifest');
SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/app/manifests/1.0', '{"scope": "bogus"}');
SELECT count(*) AS secrets_kept FROM p2p_preheat.job_secret;
SELECT id, policy_id, instance_id, url, attrs, state FROM p2p_preheat.job ORDER BY id;

-- every auth mode, every outcome
SELECT p2p_preheat.preheat_url(i, 'https://harbor.example.com/v2/library/auth-' || i || '/manifests/1')
  FROM generate_series(3, 13) i;
SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/' || m || '/manifests/1')
  FROM unnest(ARRAY['fail500', 'flaky500x2', 'ratelimit429x1', 'ratelimit', 'badjson', 'jobfail',
					'partial', 'forget', 'redirect', 'drop']) m;
-- a row written by other means, with a timeout Dragonfly refuses as a string: 422
INSERT INTO p2p_preheat.job (instance_id, url, attrs)
VALUES (1, 'https://harbor.example.com/v2/library/raw-insert/manifests/1', '{"timeout": "30m"}');

SELECT * FROM dispatch_all();
SELECT * FROM jobs;

-- what Dragonfly received for the first job: Harbor's body, cluster ids on top,
-- the duration in nanoseconds, the caller's token and the robot account
SELECT l->'body'->>'type' AS type, l->'body'->'scheduler_cluster_ids' AS clusters,
	   (l->'body'->'args') - 'headers' - 'password' AS args,
	   l->'body'->'args'->'headers' = '{"Authorization": "Bearer reg-token-8"}' AS caller_token_sent,
	   l->'body'->'args'->>'password' = 'robot-secret-9' AS robot_password_sent,
	   l->>'auth_kind' AS auth
  FROM (SELECT line::jsonb AS l FROM regexp_split_to_table(pg_read_file(:'standin_log'), E'\n') line
		 WHERE line LIKE '{%') s
 WHERE l->'body'->'args'->>'url' = 'https://harbor.example.com/v2/library/app/manifests/1.0'
   AND (l->>'status')::int = 200
 ORDER BY clusters NULLS LAST;
SELECT l->'body'->'args'->>'url' AS url, l->'body' ? 'scheduler_cluster_ids' AS has_clusters
  FROM (SELECT line::jsonb AS l FROM regexp_split_to_table(pg_read_file(:'standin_log'), E'\n') line
		 WHERE line LIKE '{%') s
 WHERE l->'body'->'args'->>'url' = 'https://harbor.example.com/v2/library/app/manifests/2.0';

-- nothing secret is kept: not in the job table, and the caller's token is gone
SELECT count(*) AS secrets_kept FROM p2p_preheat.job_secret;
SELECT count(*) AS rows_with_secrets FROM p2p_preheat.job j
 WHERE j::text ~ '(t-secret-1|t-encrypted-7|d7y-pass-3|k-custom-5|robot-secret-9|reg-token-8)';
SELECT result->'args' ? 'password' AS password_kept, result->'args' ? 'headers' AS headers_kept,
	   result->'args'->>'username' AS username, dragonfly_state
  FROM p2p_preheat.job WHERE id = 1;

-- cancel: a queued job, a finished one, a missing one
SELECT p2p_preheat.preheat(1, 'app', '3.0', '{"Authorization": "Bearer reg-token-8"}') AS job \gset
SELECT p2p_preheat.cancel(:job) AS canceled, p2p_preheat.cancel(:job) AS again, p2p_preheat.cancel(1) AS finished;
SELECT p2p_preheat.cancel(123456);
SELECT state, last_error, (SELECT count(*) FROM p2p_preheat.job_secret) AS secrets_kept
  FROM p2p_preheat.job WHERE id = :job;
-- a canceled job is never sent, and the same image can be queued again
SELECT * FROM p2p_preheat.preheat_dispatch();
SELECT p2p_preheat.preheat(1, 'app', '3.0') <> :job AS new_job;
SELECT * FROM dispatch_all();

-- a request slower than p2p_preheat.request_timeout is retried, not waited for
SET p2p_preheat.request_timeout = '300ms';
SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/slow2000ms/manifests/1') AS slow_job \gset
SELECT sent, retried, clock_timestamp() - statement_timestamp() < interval '1.5 s' AS quick
  FROM p2p_preheat.preheat_dispatch();
SELECT state, attempts, regexp_replace(last_error, '[0-9]+ milliseconds.*', '<n> milliseconds...') AS last_error
  FROM p2p_preheat.job WHERE id = :slow_job;
RESET p2p_preheat.request_timeout;
-- query cancel (here statement_timeout) interrupts a dispatch waiting on HTTP;
-- its claims roll back and the job is still queued, untouched
UPDATE p2p_preheat.job SET next_attempt_at = clock_timestamp() WHERE id = :slow_job;
SET statement_timeout = '300ms';
SELECT * FROM p2p_preheat.preheat_dispatch();
RESET statement_timeout;
SELECT state, attempts FROM p2p_preheat.job WHERE id = :slow_job;
SELECT p2p_preheat.cancel(:slow_job);

-- only superusers (for now) may queue, cancel and dispatch
CREATE ROLE plain_user;
SET ROLE plain_user;
SELECT p2p_preheat.preheat_dispatch();
SELECT p2p_preheat.preheat(1, 'app', '1.0');
SELECT count(*) FROM p2p_preheat.job_secret;
RESET ROLE;
DROP ROLE plain_user;
SELECT p2p_preheat.preheat_dispatch(-1);

\c contrib_regression
DROP DATABASE harbor_dispatch;
