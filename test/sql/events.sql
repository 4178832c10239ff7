-- Harbor's three events: a push (tag inserted or moved), a label added
-- (label_reference inserted) and a scan completed (scan task turning to
-- Success) queue preheats for the project's event-based policies; problems
-- are recorded per policy and never fail Harbor's write.
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
SELECT tgrelid::regclass, tgname FROM pg_trigger
 WHERE tgrelid IN ('tag'::regclass, 'p2p_preheat_policy'::regclass, 'label_reference'::regclass,
				   'task'::regclass, 'execution'::regclass)
   AND NOT tgisinternal ORDER BY 1, 2;

INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters, extra_attrs) VALUES
	(1, 'app-releases', 1, 1, true, '{"type":"event_based","trigger_setting":{"cron":""}}',
	 '[{"type":"repository","value":"app"},{"type":"tag","value":"v*"}]', '{"scope": "all_peers"}'),
	(2, 'latest-off', 1, 1, false, '{"type":"event_based"}', '[{"type":"tag","value":"latest"}]', NULL),
	(3, 'gone-instance', 1, 99, true, '{"type":"event_based"}', '[{"type":"repository","value":"db"}]', NULL),
	(4, 'manual', 1, 1, true, '{"type":"manual"}', '[]', NULL);
SELECT policy_id, project_id, provider_id, repo_pattern, tag_pattern, more_patterns, labels, own_filters, attrs, problem
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

-- a label added: every tag of the artifact, filters applying -----------------
TRUNCATE p2p_preheat.event_error;
SET p2p_preheat.registry_url = 'https://harbor.example.com';
INSERT INTO harbor_label (id, name, level, scope, project_id) VALUES (1, 'prod', 'u', 'p', 1), (2, 'gpu', 'u', 'p', 1);
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (7, 1, 2, 'latest-2'), (8, 2, 3, 'v2');
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters) VALUES
	(10, 'prod-gpu', 1, 1, true, '{"type":"event_based"}',
	 '[{"type":"label","value":"prod,gpu"},{"type":"repository","value":"**"}]'),
	(11, 'prod-v', 1, 1, true, '{"type":"event_based"}',
	 '[{"type":"label","value":"prod"},{"type":"tag","value":"v*"},{"type":"tag","value":"*.0"}]');
-- the label array is refused as Harbor refuses it
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters)
VALUES (12, 'label-array', 1, 1, true, '{"type":"event_based"}', '[{"type":"label","value":["prod"]}]');
SELECT policy_id, repo_pattern, tag_pattern, more_patterns, labels FROM p2p_preheat.event_policy
 WHERE policy_id IN (10, 11) ORDER BY 1;
SELECT count(*) AS executions_before FROM p2p_preheat.execution \gset
INSERT INTO label_reference (label_id, artifact_id) VALUES (1, 2);	-- prod on app@a2: v2.0, v3.0 (if any), latest-2
INSERT INTO label_reference (label_id, artifact_id) VALUES (2, 2);	-- and gpu: prod-gpu matches too
INSERT INTO label_reference (label_id, artifact_id) VALUES (1, 4);	-- a chart: Harbor preheats images only
SELECT e.policy_id, e.trigger, e.candidates, ej.artifact_id, ej.tag FROM p2p_preheat.execution e
  JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id
 WHERE e.id > :executions_before ORDER BY e.id, ej.tag;
SELECT policy_id, artifact_id, error FROM p2p_preheat.event_error ORDER BY id;

-- a scan completed: only a successful one, every tag of the artifact -------
SELECT count(*) AS executions_before FROM p2p_preheat.execution \gset
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters) VALUES
	(13, 'scanned-cli', 1, 1, true, '{"type":"event_based"}', '[{"type":"repository","value":"tools/**"}]');
INSERT INTO repository (repository_id, name, project_id) VALUES (3, 'library/tools/cli', 1);
UPDATE artifact SET repository_id = 3, repository_name = 'library/tools/cli' WHERE id = 3;
SELECT harbor_fixture.add_scan(3, '{}', NULL, 'Error') > 0 AS failed_scan;
SELECT harbor_fixture.add_scan(3, '{}', NULL, 'Stopped') > 0 AS stopped_scan;
SELECT count(*) AS executions_after_failed_scans FROM p2p_preheat.execution WHERE id > :executions_before;
SELECT harbor_fixture.add_scan(3, '{Low}') > 0 AS successful_scan;
SELECT e.policy_id, e.candidates, ej.artifact_id, ej.tag FROM p2p_preheat.execution e
  JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id
 WHERE e.id > :executions_before ORDER BY e.id, ej.tag;
-- a task of another kind turning to Success is no scan; a task that was
-- Success already does not fire again
INSERT INTO execution (id, vendor_type, trigger) VALUES (900, 'REPLICATION', 'MANUAL');
INSERT INTO task (execution_id, status, status_code, extra_attrs, vendor_type)
VALUES (900, 'Running', 2, '{"artifact_id": 3}', 'REPLICATION');
UPDATE task SET status = 'Success' WHERE execution_id = 900;
UPDATE task SET update_time = now() WHERE vendor_type = 'IMAGE_SCAN' AND status = 'Success';
-- a scan task whose extra_attrs name no artifact: recorded, Harbor's update commits
INSERT INTO task (execution_id, status, status_code, extra_attrs, vendor_type)
VALUES (900, 'Running', 2, '{"artifact_id": "x"}', 'IMAGE_SCAN');
UPDATE task SET status = 'Success' WHERE extra_attrs::jsonb ->> 'artifact_id' = 'x';
SELECT count(*) AS executions_after FROM p2p_preheat.execution WHERE id > :executions_before;
SELECT error FROM p2p_preheat.event_error WHERE error LIKE 'scan event%';

-- the project's security settings replace the policies' own filters --------
SELECT count(*) AS executions_before FROM p2p_preheat.execution \gset
INSERT INTO project_metadata (project_id, name, value) VALUES (1, 'prevent_vul', 'true'), (1, 'severity', 'low');
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (9, 3, 3, 'v3');	-- cli has a Low: skipped
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (10, 1, 1, 'v4.0');	-- app@a1 never scanned: skipped
UPDATE project_metadata SET value = 'critical' WHERE name = 'severity';
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (11, 3, 3, 'v4');	-- Low is below Critical
SELECT e.policy_id, ej.tag, e.notes FROM p2p_preheat.execution e
  JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id
 WHERE e.id > :executions_before ORDER BY e.id, ej.tag;
DELETE FROM project_metadata WHERE name IN ('prevent_vul', 'severity');
INSERT INTO project_metadata (project_id, name, value) VALUES (1, 'enable_content_trust', 'true');
SELECT count(*) AS executions_before FROM p2p_preheat.execution \gset
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (12, 3, 3, 'v5');
SELECT count(*) AS content_trust_executions FROM p2p_preheat.execution WHERE id > :executions_before;
DELETE FROM project_metadata WHERE name = 'enable_content_trust';

-- a policy broken before the extension came is skipped by every event, and
-- says so; the others go on
ALTER TABLE p2p_preheat_policy DISABLE TRIGGER p2p_preheat_policy_sync;
ALTER TABLE p2p_preheat_policy DISABLE TRIGGER p2p_preheat_extra_attrs;
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters) VALUES
	(14, 'bad-pattern', 1, 1, true, '{"type":"event_based"}', '[{"type":"tag","value":"v["}]'),
	(15, 'no-filters', 1, 1, true, '{"type":"event_based"}', '[]');
ALTER TABLE p2p_preheat_policy ENABLE TRIGGER p2p_preheat_policy_sync;
ALTER TABLE p2p_preheat_policy ENABLE TRIGGER p2p_preheat_extra_attrs;
SELECT p2p_preheat.attach('p2p_preheat_policy');
SELECT policy_id, own_filters, problem FROM p2p_preheat.event_policy WHERE policy_id IN (14, 15) ORDER BY 1;
TRUNCATE p2p_preheat.event_error;
SELECT count(*) AS executions_before FROM p2p_preheat.execution \gset
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (13, 3, 3, 'v6');
SELECT e.policy_id, ej.tag FROM p2p_preheat.execution e
  JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id
 WHERE e.id > :executions_before ORDER BY e.id, ej.tag;
SELECT policy_id, tag, sqlstate, error FROM p2p_preheat.event_error ORDER BY policy_id;
DELETE FROM p2p_preheat_policy WHERE id IN (14, 15);

-- one runner per policy --------------------------------------------------
-- the database runs event-based and scheduled policies: Harbor's own
-- executions for them are not recorded, so Harbor launches no job; its manual
-- runs and every other kind of execution are left alone
INSERT INTO execution (vendor_type, vendor_id, status, trigger, extra_attrs) VALUES
	('P2P_PREHEAT', 1, 'Running', 'event_based', '{}'),
	('P2P_PREHEAT', 6, 'Running', 'scheduled', '{}'),
	('P2P_PREHEAT', 1, 'Running', 'manual', '{}'),
	('IMAGE_SCAN', 3, 'Running', 'EVENT', '{}');
SELECT vendor_type, trigger FROM execution WHERE id <> 900 AND vendor_type <> 'IMAGE_SCAN' OR trigger = 'EVENT' ORDER BY id;
-- with Harbor's job service running them, the database runs none, and
-- Harbor's executions are recorded
SET p2p_preheat.run_policies = 'harbor';
SELECT count(*) AS executions_before FROM p2p_preheat.execution \gset
INSERT INTO tag (id, repository_id, artifact_id, name) VALUES (14, 3, 3, 'v7');
INSERT INTO label_reference (label_id, artifact_id) VALUES (2, 3);
SELECT harbor_fixture.add_scan(3, '{}') > 0 AS scanned;
SELECT count(*) AS executions_by_the_database FROM p2p_preheat.execution WHERE id > :executions_before;
INSERT INTO execution (vendor_type, vendor_id, status, trigger, extra_attrs) VALUES
	('P2P_PREHEAT', 1, 'Running', 'event_based', '{}');
SELECT count(*) AS harbor_event_executions FROM execution WHERE vendor_type = 'P2P_PREHEAT' AND trigger = 'event_based';
RESET p2p_preheat.run_policies;

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
