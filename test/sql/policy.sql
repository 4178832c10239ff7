-- run_policy() with each filter type (the patterns themselves: doublestar.sql),
-- deduplication across runs, and execution status derived from jobs.
\set SHOW_CONTEXT never
\getenv port DRAGONFLY_PORT
\set endpoint 'http://127.0.0.1:' :port
CREATE DATABASE harbor_policy;
\c harbor_policy
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances(:'endpoint');
CREATE EXTENSION p2p_preheat;

-- a project with images, a chart, an untagged artifact and labels
INSERT INTO project (project_id, name) VALUES (2, 'other');
INSERT INTO repository (repository_id, name, project_id) VALUES
	(1, 'library/app', 1), (2, 'library/tools/cli', 1), (3, 'library/db', 1), (4, 'library/charts', 1),
	(5, 'other/jobfail', 2);
INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type) VALUES
	(1, 1, 1, 'library/app', 'sha256:a1', 'IMAGE', 'm', 'm'),
	(2, 1, 1, 'library/app', 'sha256:a2', 'IMAGE', 'm', 'm'),
	(3, 1, 2, 'library/tools/cli', 'sha256:a3', 'IMAGE', 'm', 'm'),
	(4, 1, 3, 'library/db', 'sha256:a4', 'IMAGE', 'm', 'm'),
	(5, 1, 3, 'library/db', 'sha256:a5', 'IMAGE', 'm', 'm'),
	(6, 1, 4, 'library/charts', 'sha256:c1', 'CHART', 'm', 'm'),
	(7, 2, 5, 'other/jobfail', 'sha256:f1', 'IMAGE', 'm', 'm');
INSERT INTO tag (repository_id, artifact_id, name) VALUES
	(1, 1, '1.0'), (1, 1, '1.1'), (1, 1, 'latest'), (1, 2, '2.0-rc'),
	(2, 3, 'v1'), (3, 4, '9.6'), (4, 6, '0.1.0'), (5, 7, 'x');
INSERT INTO harbor_label (id, name, level, scope, project_id) VALUES (1, 'prod', 'u', 'p', 1), (2, 'gpu', 'u', 'p', 1);
INSERT INTO label_reference (label_id, artifact_id) VALUES (1, 1), (2, 1), (1, 3);
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, enabled) VALUES
	(3, 'off', 'dragonfly', :'endpoint', 'NONE', false);
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, filters, extra_attrs) VALUES
	(1, 'all', 1, 1, true, '[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]', '{"scope": "all_peers"}'),
	(2, 'cli', 1, 1, true, '[{"type":"repository","value":"tools/**"},{"type":"tag","value":"v*"}]', NULL),
	(3, 'prod', 1, 1, true, '[{"type":"label","value":["prod"]},{"type":"tag","value":"1.*"}]', NULL),
	(4, 'gpu-prod', 1, 1, true, '[{"type":"label","value":["prod","gpu"]}]', NULL),
	(5, 'signed', 1, 1, true, '[{"type":"repository","value":"db"},{"type":"signature","value":true},{"type":"vulnerability","value":2}]', NULL),
	(6, 'disabled', 1, 1, false, '[]', NULL),
	(7, 'instance-off', 1, 3, true, '[]', NULL),
	(8, 'broken-filters', 1, 1, true, '[{"type":', NULL),
	(9, 'fails', 2, 1, true, '', NULL);

SET p2p_preheat.registry_url = 'https://harbor.example.com';
SET p2p_preheat.poll_schedule = '1';
CREATE FUNCTION dispatch_all() RETURNS void LANGUAGE plpgsql AS $$
DECLARE deadline timestamptz := clock_timestamp() + interval '20 s';
BEGIN
	LOOP
		PERFORM p2p_preheat.preheat_dispatch();
		EXIT WHEN NOT EXISTS (SELECT FROM p2p_preheat.job WHERE state IN ('queued', 'sending', 'running'))
			OR clock_timestamp() > deadline;
		PERFORM pg_sleep(0.05);
	END LOOP;
END $$;

-- each filter type
SELECT p2p_preheat.run_policy(1) AS all_images;
SELECT p2p_preheat.run_policy(2) AS cli;
SELECT p2p_preheat.run_policy(3) AS prod_1x;
SELECT p2p_preheat.run_policy(4, 'scheduled') AS gpu_prod;
SELECT p2p_preheat.run_policy(5, 'event_based') AS signed;
SELECT e.id, e.policy_id, e.trigger, e.candidates, d.artifact_id, d.tag,
	   substring(d.url FROM '/v2/(.*)$') AS image, j.attrs
  FROM p2p_preheat.execution e
  JOIN p2p_preheat.execution_detail d ON d.execution_id = e.id
  JOIN p2p_preheat.job j ON j.id = d.job_id
 ORDER BY e.id, d.artifact_id, d.tag;
SELECT id, notes FROM p2p_preheat.execution WHERE notes <> '{}';

-- refused with a clear error
SELECT p2p_preheat.run_policy(6);
SELECT p2p_preheat.run_policy(7);
SELECT p2p_preheat.run_policy(8);
SELECT p2p_preheat.run_policy(99);
SELECT p2p_preheat.run_policy(1, 'hourly');
SELECT count(*) AS executions FROM p2p_preheat.execution;

-- running again reuses the unfinished jobs: no duplicates
SELECT count(*) AS jobs_before FROM p2p_preheat.job;
SELECT p2p_preheat.run_policy(1) AS again;
SELECT count(*) AS jobs_after, (SELECT count(*) FROM p2p_preheat.execution_job WHERE execution_id = 6) AS linked
  FROM p2p_preheat.job;

-- status follows the jobs: Pending, then Success, Error, Stopped
SELECT p2p_preheat.run_policy(9) AS fails;
SELECT p2p_preheat.cancel(job_id) FROM p2p_preheat.execution_detail WHERE execution_id = 2;
SELECT id, policy_id, status, jobs, queued, succeeded, failed, canceled FROM p2p_preheat.execution_status ORDER BY id;
SELECT dispatch_all();
SELECT id, policy_id, status, jobs, queued, running, succeeded, failed, canceled, ended_at IS NOT NULL AS ended
  FROM p2p_preheat.execution_status ORDER BY id;
SELECT execution_id, substring(url FROM '/v2/(.*)$') AS image, state, last_error
  FROM p2p_preheat.execution_detail WHERE state <> 'succeeded' ORDER BY execution_id;

\c contrib_regression
DROP DATABASE harbor_policy;
