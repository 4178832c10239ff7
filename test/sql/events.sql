-- Push events: tags inserted or moved queue preheats for the project's
-- event-based policies; problems are recorded and never fail the push.
-- Harbor's cron converted for pg_cron (pg_cron itself: test/t/003_pg_cron.pl).
\set SHOW_CONTEXT never
\getenv port DRAGONFLY_PORT
\set endpoint 'http://127.0.0.1:' :port
CREATE DATABASE harbor_events;
\c harbor_events
\set ECHO none
\i test/fixtures/harbor.sql
\set ECHO all
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances(:'endpoint');
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
INSERT INTO repository (repository_id, name, project_id) VALUES (1, 'library/app', 1), (2, 'library/db', 1);
INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type) VALUES
	(1, 1, 1, 'library/app', 'sha256:a1', 'IMAGE', 'm', 'm'),
	(2, 1, 1, 'library/app', 'sha256:a2', 'IMAGE', 'm', 'm'),
	(3, 1, 2, 'library/db', 'sha256:d1', 'IMAGE', 'm', 'm'),
	(4, 1, 1, 'library/app', 'sha256:c1', 'CHART', 'm', 'm');
CREATE EXTENSION p2p_preheat;
SELECT tgname FROM pg_trigger WHERE tgrelid IN ('tag'::regclass, 'p2p_preheat_policy'::regclass)
   AND NOT tgisinternal ORDER BY 1;

INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters, extra_attrs) VALUES
	(1, 'app-releases', 1, 1, true, '{"type":"event_based","trigger_setting":{"cron":""}}',
	 '[{"type":"repository","value":"app"},{"type":"tag","value":"v*"}]', '{"scope": "all_peers"}'),
	(2, 'latest-off', 1, 1, false, '{"type":"event_based"}', '[{"type":"tag","value":"latest"}]', NULL),
	(3, 'gone-instance', 1, 99, true, '{"type":"event_based"}', '[{"type":"repository","value":"db"}]', NULL),
	(4, 'manual', 1, 1, true, '{"type":"manual"}', '[]', NULL);
SELECT policy_id, project_id, provider_id, repo_pattern, tag_pattern, labels, attrs
  FROM p2p_preheat.event_policy ORDER BY 1;
-- a policy whose filters are not JSON is refused when saved
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters)
VALUES (5, 'broken', 1, 1, true, '{"type":"event_based"}', '[{"type":');

SET p2p_preheat.registry_url = 'https://harbor.example.com';
-- pushes: a matching tag, a tag no enabled policy wants, a chart, another repository
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES
	(1, 1, 1, 'v1.0'), (2, 1, 1, 'latest'), (3, 1, 4, 'v9-chart'), (4, 2, 3, 'v1');
SELECT j.id, j.policy_id, substring(j.url FROM '/v2/(.*)$') AS image, j.attrs, j.state
  FROM p2p_preheat.job j ORDER BY j.id;
SELECT e.policy_id, e.trigger, ej.artifact_id, ej.tag FROM p2p_preheat.execution e
  JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id ORDER BY e.id;
SELECT policy_id, artifact_id, tag, error FROM p2p_preheat.event_error ORDER BY id;

-- other updates of a tag do nothing; moving it to another image queues again
-- (the unfinished identical job is reused, once per policy, artifact and tag)
UPDATE tag SET pull_time = now() WHERE id = 1;
SELECT count(*) AS executions FROM p2p_preheat.execution;
UPDATE tag SET artifact_id = 2 WHERE id = 1;
SELECT e.policy_id, ej.job_id, ej.artifact_id, ej.tag FROM p2p_preheat.execution e
  JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id ORDER BY e.id;

-- the push commits even when nothing can be queued
RESET p2p_preheat.registry_url;
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (5, 1, 2, 'v2.0');
SELECT name FROM tag WHERE id = 5;
SELECT sqlstate, error FROM p2p_preheat.event_error WHERE tag = 'v2.0';

-- disabling, re-enabling and deleting policies keeps the matcher in step
UPDATE p2p_preheat_policy SET enabled = false WHERE id = 1;
UPDATE p2p_preheat_policy SET enabled = true, filters = '[{"type":"tag","value":"latest"}]' WHERE id = 2;
DELETE FROM p2p_preheat_policy WHERE id = 3;
SELECT policy_id, repo_pattern, tag_pattern FROM p2p_preheat.event_policy ORDER BY 1;

-- Harbor's 6-field cron for pg_cron
SELECT cron, p2p_preheat.harbor_cron_to_pg_cron(cron) FROM (VALUES
	('0 0 2 * * *'), ('0 */5 * * * ?'), ('00 30 3 1 * *'), ('0 0 0 * * 1-5'), ('30 2 * * *')) v(cron);
SELECT p2p_preheat.harbor_cron_to_pg_cron('*/10 * * * * *');
SELECT p2p_preheat.harbor_cron_to_pg_cron('0 0 2 * *  * *');
-- without pg_cron: scheduled policies save fine, and sync_schedules() says why it cannot
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters)
VALUES (6, 'nightly', 1, 1, true, '{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}', '[]');
SELECT p2p_preheat.sync_schedules();

-- DROP EXTENSION takes the push and schedule triggers too; pushes go on
DROP EXTENSION p2p_preheat;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'p2p_preheat%';
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (6, 1, 2, 'v3.0');

\c contrib_regression
DROP DATABASE harbor_events;
