-- run_policy() with each filter type (the patterns themselves: doublestar.sql),
-- filters as Harbor reads them (label names in one string, every filter
-- applying, no filters an error the execution reports), CNAI candidates, the
-- project's security settings replacing the policy's own, deduplication
-- across runs, execution status derived from jobs, and who runs policies.
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

-- a project with images, a model (CNAI), a chart, an untagged artifact and labels
INSERT INTO project (project_id, name) VALUES (2, 'other');
INSERT INTO repository (repository_id, name, project_id) VALUES
	(1, 'library/app', 1), (2, 'library/tools/cli', 1), (3, 'library/db', 1), (4, 'library/charts', 1),
	(5, 'other/jobfail', 2), (6, 'library/models/llm', 1);
INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type) VALUES
	(1, 1, 1, 'library/app', 'sha256:a1', 'IMAGE', 'm', 'm'),
	(2, 1, 1, 'library/app', 'sha256:a2', 'IMAGE', 'm', 'm'),
	(3, 1, 2, 'library/tools/cli', 'sha256:a3', 'IMAGE', 'm', 'm'),
	(4, 1, 3, 'library/db', 'sha256:a4', 'IMAGE', 'm', 'm'),
	(5, 1, 3, 'library/db', 'sha256:a5', 'IMAGE', 'm', 'm'),
	(6, 1, 4, 'library/charts', 'sha256:c1', 'CHART', 'm', 'm'),
	(7, 2, 5, 'other/jobfail', 'sha256:f1', 'IMAGE', 'm', 'm'),
	(8, 1, 6, 'library/models/llm', 'sha256:m1', 'CNAI', 'm', 'm');
INSERT INTO tag (repository_id, artifact_id, name) VALUES
	(1, 1, '1.0'), (1, 1, '1.1'), (1, 1, 'latest'), (1, 2, '2.0-rc'),
	(2, 3, 'v1'), (3, 4, '9.6'), (4, 6, '0.1.0'), (5, 7, 'x'), (6, 8, 'q4');
INSERT INTO harbor_label (id, name, level, scope, project_id) VALUES (1, 'prod', 'u', 'p', 1), (2, 'gpu', 'u', 'p', 1);
INSERT INTO label_reference (label_id, artifact_id) VALUES (1, 1), (2, 1), (1, 3);
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, enabled) VALUES
	(3, 'off', 'dragonfly', :'endpoint', 'NONE', false);
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, filters, extra_attrs) VALUES
	(1, 'all', 1, 1, true, '[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]', '{"scope": "all_peers"}'),
	(2, 'cli', 1, 1, true, '[{"type":"repository","value":"tools/**"},{"type":"tag","value":"v*"}]', NULL),
	(3, 'prod', 1, 1, true, '[{"type":"label","value":"prod"},{"type":"tag","value":"1.*"}]', NULL),
	(4, 'gpu-prod', 1, 1, true, '[{"type":"label","value":"prod,gpu"}]', NULL),
	(5, 'signed', 1, 1, true, '[{"type":"repository","value":"db"},{"type":"signature","value":true},{"type":"vulnerability","value":2}]', NULL),
	(6, 'disabled', 1, 1, false, '[]', NULL),
	(7, 'instance-off', 1, 3, true, '[]', NULL),
	(8, 'broken-filters', 1, 1, true, '[{"type":', NULL),
	(9, 'fails', 2, 1, true, '[{"type":"tag","value":"x"}]', NULL),
	-- several filters of one type all apply; label names are split at commas only
	(10, 'two-repos', 1, 1, true, '[{"type":"repository","value":"{app,db}"},{"type":"repository","value":"a*"}]', NULL),
	(11, 'spaced-labels', 1, 1, true, '[{"type":"label","value":"prod, gpu"}]', NULL),
	-- Harbor refuses these when it runs them
	(12, 'label-array', 1, 1, true, '[{"type":"label","value":["prod"]}]', NULL),
	(13, 'no-filters', 1, 1, true, '[]', NULL),
	(14, 'only-security', 1, 1, true, '[{"type":"signature","value":true}]', NULL),
	(15, 'unknown-type', 1, 1, true, '[{"type":"size","value":"1"}]', NULL),
	(16, 'bad-pattern', 1, 1, true, '[{"type":"tag","value":"v["}]', NULL),
	(17, 'empty', 1, 1, true, '', NULL),
	(18, 'no-value', 1, 1, true, '[{"type":"tag"}]', NULL);

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
CREATE FUNCTION run(policy integer, trigger text DEFAULT 'manual') RETURNS TABLE (
	execution bigint, status text, candidates integer, preheated text[], notes text[], error text)
LANGUAGE plpgsql AS $$
DECLARE eid bigint := p2p_preheat.run_policy(policy, trigger);
BEGIN
	RETURN QUERY
	SELECT s.id, s.status, e.candidates,
		   ARRAY(SELECT substring(d.url FROM '/v2/(.*)/manifests/') || ':' || d.tag
				   FROM p2p_preheat.execution_detail d WHERE d.execution_id = s.id ORDER BY 1),
		   s.notes, s.error
	  FROM p2p_preheat.execution_status s JOIN p2p_preheat.execution e ON e.id = s.id
	 WHERE s.id = eid;
END $$;
-- each filter type; manual and scheduled runs take IMAGE and CNAI artifacts
SELECT * FROM run(1);
SELECT * FROM run(2);
SELECT * FROM run(3);
SELECT * FROM run(4, 'scheduled');
SELECT * FROM run(5, 'event_based');
SELECT * FROM run(10);
SELECT * FROM run(11);
SELECT j.attrs FROM p2p_preheat.execution_detail d JOIN p2p_preheat.job j ON j.id = d.job_id
 WHERE d.execution_id = 1 LIMIT 1;

-- refused before any execution, as Harbor refuses them
SELECT p2p_preheat.run_policy(6);
SELECT p2p_preheat.run_policy(7);
SELECT p2p_preheat.run_policy(99);
SELECT p2p_preheat.run_policy(1, 'hourly');
-- an execution that says why it queued nothing
SELECT * FROM run(8);
SELECT * FROM run(12);
SELECT * FROM run(13);
SELECT * FROM run(14);
SELECT * FROM run(15);
SELECT * FROM run(16);
SELECT * FROM run(17);
SELECT * FROM run(18);

-- running again reuses the unfinished jobs: no duplicates
SELECT count(*) AS jobs_before FROM p2p_preheat.job;
SELECT execution, candidates FROM run(1);
SELECT count(*) AS jobs_after FROM p2p_preheat.job;

-- the project's security settings replace the policy's -----------------------
-- content trust: Harbor's signature filter, which nothing passes
INSERT INTO project_metadata (project_id, name, value) VALUES (1, 'enable_content_trust', 'true');
SELECT * FROM run(2);
SELECT * FROM run(13);
DELETE FROM project_metadata WHERE name = 'enable_content_trust';
-- prevent_vul with a severity: only artifacts scanned below it
INSERT INTO project_metadata (project_id, name, value) VALUES (1, 'prevent_vul', 'true'), (1, 'severity', 'high');
SELECT harbor_fixture.add_scan(1, '{Low,Medium}') > 0 AS app_scanned;		-- app 1.0, 1.1, latest: pass
SELECT harbor_fixture.add_scan(2, '{Critical}') > 0 AS rc_scanned;			-- app 2.0-rc: too severe
SELECT harbor_fixture.add_scan(3, '{High,Low}', '{CVE-1,CVE-2}') > 0 AS cli_scanned; -- cli: High unless allowlisted
SELECT harbor_fixture.add_scan(8, '{}') > 0 AS model_scanned;				-- the model: clean
-- the scan of one db image failed; the other was never scanned
SELECT harbor_fixture.add_scan(4, '{}', NULL, 'Error') > 0 AS db_scan_failed;
SELECT * FROM run(1);
-- the policy's own vulnerability filter no longer counts; the project's does
SELECT * FROM run(14);
-- the system allowlist (project 0) applies unless the project says otherwise
INSERT INTO cve_allowlist (project_id, items) VALUES (0, '[{"cve_id": "CVE-1"}]');
SELECT preheated FROM run(1);
INSERT INTO project_metadata (project_id, name, value) VALUES (1, 'reuse_sys_cve_allowlist', 'false');
INSERT INTO cve_allowlist (project_id, items, expires_at) VALUES (1, '[{"cve_id": "CVE-1"}]', 1);
SELECT preheated FROM run(1);
UPDATE cve_allowlist SET expires_at = NULL WHERE project_id = 1;
SELECT preheated FROM run(1);
DELETE FROM project_metadata WHERE name IN ('prevent_vul', 'severity', 'reuse_sys_cve_allowlist');

-- status follows the jobs: Pending, then Success, Error, Stopped
SELECT execution FROM run(9);
SELECT p2p_preheat.cancel(job_id) FROM p2p_preheat.execution_detail WHERE execution_id = 2;
SELECT id, policy_id, status, jobs, queued, succeeded, failed, canceled FROM p2p_preheat.execution_status
 WHERE id IN (1, 2, 9) OR policy_id = 9 ORDER BY id;
SELECT dispatch_all();
SELECT id, policy_id, status, jobs, queued, running, succeeded, failed, canceled, ended_at IS NOT NULL AS ended
  FROM p2p_preheat.execution_status WHERE id IN (1, 2, 9) OR policy_id = 9 ORDER BY id;
SELECT execution_id, substring(url FROM '/v2/(.*)$') AS image, state, last_error
  FROM p2p_preheat.execution_detail WHERE state <> 'succeeded' ORDER BY execution_id;

-- Kraken, as Harbor drives it: one registry notification per image to
-- <endpoint>/registry/notifications, with the instance's credentials; a 2xx
-- is the preheat done, nothing is polled
\getenv standin_log DRAGONFLY_LOG
INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, auth_data, enabled) VALUES
	(4, 'kraken-proxy', 'kraken', :'endpoint' || '/', 'OAUTH', '{"token": "t-secret-1"}', true),
	(5, 'kraken-locked', 'kraken', :'endpoint', 'OAUTH', '{"token": "wrong"}', true);
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, filters, extra_attrs) VALUES
	(19, 'kraken', 1, 4, true, '[{"type":"repository","value":"app"},{"type":"tag","value":"1.*"}]', ''),
	(20, 'kraken-refused', 1, 5, true, '[{"type":"repository","value":"db"}]', '');
SELECT execution, candidates FROM run(19);
SELECT execution, candidates FROM run(20);
SELECT p2p_preheat.preheat(19, 'app', 'latest') > 0 AS queued_by_tag;
SELECT dispatch_all();
SELECT j.policy_id, substring(j.url FROM '/v2/(.*)$') AS image, j.attrs, j.state, j.attempts, j.polls,
	   j.last_http_status, j.last_error
  FROM p2p_preheat.job j WHERE j.instance_id IN (4, 5) ORDER BY j.id;
SELECT s.status FROM p2p_preheat.execution_status s JOIN p2p_preheat.execution e ON e.id = s.id
 WHERE e.policy_id IN (19, 20) ORDER BY e.id;
SELECT l->>'route' AS route, l->>'status' AS status, l->>'auth_kind' AS auth,
	   jsonb_array_length(l->'body'->'events') AS events,
	   length(l->'body'->'events'->0->>'id') AS id_length,
	   (l->'body'->'events'->0->>'timestamp') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$' AS rfc3339,
	   (l->'body'->'events'->0) - 'id' - 'timestamp' AS event
  FROM (SELECT line::jsonb AS l FROM regexp_split_to_table(pg_read_file(:'standin_log'), E'\n') line
		 WHERE line LIKE '{%') s
 WHERE l->>'route' LIKE '%/registry/notifications'
 ORDER BY l->'body'->'events'->0->'target'->>'tag', status;

-- one runner per policy: with Harbor's job service running them, the
-- database runs none
SET p2p_preheat.run_policies = 'harbor';
SELECT p2p_preheat.run_policy(1);
RESET p2p_preheat.run_policies;
SET ROLE p2p_preheat_user;
SET p2p_preheat.run_policies = 'harbor';
RESET ROLE;

\c contrib_regression
DROP DATABASE harbor_policy;
