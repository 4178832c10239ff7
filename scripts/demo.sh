#!/usr/bin/env bash
# The main job, end to end, on a throwaway cluster with the background worker
# and pg_cron: Harbor 2.12's tables with sample projects, artifacts and tags,
# CREATE EXTENSION migrating them, the validation trigger at work, a Dragonfly
# stand-in, an instance and three policies (event-based, scheduled, manual),
# a push, a policy run, and the jobs moving to their final states.
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"

ensure_deps
build_and_install
build_standin
dir=$(make_workdir)
trap 'stop_standin; stop_cluster "$dir"; rm -rf "$dir"' EXIT
cd "$dir"
# the stand-in answers like a Dragonfly manager; jobs finish 2 s after creation
start_standin "$dir" --token demo-token --success-after 2 --clusters 1,2
start_cluster "$dir" "shared_preload_libraries = 'pg_cron,p2p_preheat'" \
	"cron.database_name = 'postgres'" "cron.use_background_workers = on" "max_worker_processes = 16" \
	"p2p_preheat.database = 'postgres'" "p2p_preheat.registry_url = 'https://harbor.example.com'" \
	"p2p_preheat.poll_schedule = '1'"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"

psql -X -q -d postgres -v endpoint="http://127.0.0.1:$DRAGONFLY_PORT" <<'SQL'
\set ECHO none
\i harbor.sql
\set ECHO queries
\set VERBOSITY default
\set SHOW_CONTEXT never
\pset footer off
-- Harbor 2.12's database: a project with images, and policies using the old scope column
SELECT harbor_fixture.create_tables('2.12');
SELECT harbor_fixture.add_instances(:'endpoint');
INSERT INTO repository (repository_id, name, project_id) VALUES
	(1, 'library/app', 1), (2, 'library/tools/cli', 1), (3, 'library/db', 1);
INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
VALUES (1, 1, 1, 'library/app', 'sha256:a1', 'IMAGE', 'm', 'm'),
	   (2, 1, 2, 'library/tools/cli', 'sha256:c1', 'IMAGE', 'm', 'm'),
	   (3, 1, 3, 'library/db', 'sha256:d1', 'IMAGE', 'm', 'm'),
	   (4, 1, 1, 'library/app', 'sha256:a2', 'IMAGE', 'm', 'm');
INSERT INTO tag (repository_id, artifact_id, name) VALUES
	(1, 1, '1.0'), (1, 1, 'latest'), (2, 2, 'v1'), (3, 3, '9.6');
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, filters, trigger, enabled, scope) VALUES
	(1, 'on-push', 1, 1, '[{"type":"repository","value":"app"},{"type":"tag","value":"v*"}]',
	 '{"type":"event_based","trigger_setting":{"cron":""}}', true, 'single_peer'),
	(2, 'nightly', 1, 1, '[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]',
	 '{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}', true, 'all_peers'),
	(3, 'tools', 1, 1, '[{"type":"repository","value":"tools/**"}]',
	 '{"type":"manual","trigger_setting":{"cron":""}}', true, NULL);

-- the migration: extra_attrs json added, scope carried into it; the nightly
-- policy becomes a pg_cron job
CREATE EXTENSION pg_cron;
CREATE EXTENSION p2p_preheat;
SELECT id, name, scope, extra_attrs FROM p2p_preheat_policy ORDER BY id;
SELECT jobname, schedule, command FROM cron.job;

-- what Dragonfly would reject or silently misread is refused at save time
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "clusterids": [1, 2]}' WHERE id = 3;
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "single_peer", "count": 5}' WHERE id = 3;
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "cluster_ids": [1, 2], "timeout": "30m"}' WHERE id = 3;
SELECT p2p_preheat.validate_extra_attrs('dragonfly', extra_attrs) AS sent_to_dragonfly
  FROM p2p_preheat_policy WHERE id = 3;

-- the Dragonfly instance, as Harbor stores it (token in auth_data)
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "demo-token"}' WHERE id = 1;
SELECT pid IS NOT NULL AS worker_running, state FROM p2p_preheat.worker_status();

-- a push: tag v2.0 of library/app matches the event-based policy; the worker
-- is woken at COMMIT and sends it at once
INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 4, 'v2.0'), (1, 4, 'dev');
SELECT pg_sleep(0.2);
SELECT id, policy_id, state, substring(url FROM '/v2/(.*)$') AS image, attrs FROM p2p_preheat.job;

-- a manual run of the "tools" policy, and of "nightly" now rather than at 02:00
SELECT p2p_preheat.run_policy(3) AS tools_execution, p2p_preheat.run_policy(2, 'scheduled') AS nightly_execution;
SELECT id, policy_id, state, substring(url FROM '/v2/(.*)$') AS image FROM p2p_preheat.job ORDER BY id;
SELECT 'waiting for Dragonfly' AS "...", pg_sleep(1.5);
SELECT state, count(*) FROM p2p_preheat.job GROUP BY state ORDER BY state;
SELECT 'waiting for Dragonfly' AS "...", pg_sleep(3);
SELECT state, count(*) FROM p2p_preheat.job GROUP BY state ORDER BY state;

-- the readable summary
SELECT e.id AS execution, p.name AS policy, e.trigger, e.status, e.jobs, e.succeeded, e.failed,
	   round(extract(epoch FROM e.ended_at - e.started_at)::numeric, 1) AS seconds
  FROM p2p_preheat.execution_status e JOIN p2p_preheat_policy p ON p.id = e.policy_id ORDER BY e.id;
SELECT j.id AS job, j.state, substring(j.url FROM '/v2/(.*)$') AS image, j.dragonfly_job_id AS dragonfly_job,
	   j.attempts, j.polls, round(extract(epoch FROM j.finished_at - j.created_at)::numeric, 1) AS seconds
  FROM p2p_preheat.job j ORDER BY j.id;
SELECT instance_id, queued, running, succeeded, failed, last_error FROM p2p_preheat.status;
SELECT state, jobs_in_flight, sent, polled, succeeded, failed, wakeups FROM p2p_preheat.worker_status();
SQL
echo "demo finished: the throwaway cluster and the stand-in are removed"
