#!/usr/bin/env bash
# The main job, end to end, on a throwaway cluster: Harbor's tables as a
# Harbor 2.12 database has them, CREATE EXTENSION migrating them, the
# validation trigger refusing what Dragonfly would reject or misread, then
# preheats queued and dispatched to a local Dragonfly stand-in and followed
# to their final states.
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"

ensure_deps
build_and_install
build_standin
dir=$(make_workdir)
cd "$dir"
trap 'stop_standin; stop_cluster "$dir"; rm -rf "$dir"' EXIT
# the stand-in answers like a Dragonfly manager; jobs finish 2 s after creation
start_standin "$dir" --token demo-token --success-after 2
start_cluster "$dir"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"

psql -X -q -d postgres -v endpoint="http://127.0.0.1:$DRAGONFLY_PORT" <<'SQL'
\set ECHO queries
\set VERBOSITY default
\set SHOW_CONTEXT never
\pset footer off
\set ECHO none
\i harbor.sql
\set ECHO queries
-- Harbor 2.12: policies with the scope column, no extra_attrs yet
SELECT harbor_fixture.create_tables('2.12');
SELECT harbor_fixture.add_instances();
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, filters, trigger, enabled, scope)
VALUES ('nightly', 1, 1, '[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]',
		'{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}', true, 'all_peers'),
	   ('on-push', 1, 1, '[{"type":"repository","value":"app/**"}]',
		'{"type":"event_based"}', true, 'single_peer');

-- the migration: extra_attrs json added, scope carried into it
CREATE EXTENSION p2p_preheat;
SELECT id, name, scope, extra_attrs FROM p2p_preheat_policy ORDER BY id;

-- what Dragonfly would reject or silently misread is refused at save time
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "cluster_ids": [1, "2"]}' WHERE name = 'nightly';
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "clusterids": [1, 2]}' WHERE name = 'nightly';
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "single_peer", "count": 5}' WHERE name = 'nightly';
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "cluster_ids": [1, 2], "timeout": "30m"}' WHERE name = 'nightly';

-- the object as it will be sent, and every problem at once for a UI
SELECT p2p_preheat.validate_extra_attrs('dragonfly', extra_attrs) AS sent FROM p2p_preheat_policy WHERE name = 'nightly';
SELECT * FROM p2p_preheat.extra_attrs_problems('dragonfly',
	'{"scope": "al_peers", "cluster_ids": [0, 1.5], "piece_length": 1024}');
SELECT * FROM p2p_preheat.invalid_policies;

-- the Dragonfly instance, as Harbor stores it (token in auth_data)
UPDATE p2p_preheat_instance SET endpoint = :'endpoint', auth_mode = 'OAUTH',
	auth_data = '{"token": "demo-token"}' WHERE id = 1;
SET p2p_preheat.registry_url = 'https://harbor.example.com';
SET p2p_preheat.poll_schedule = '1';
-- queue preheats the way Harbor would; the same image twice is one job
SELECT p2p_preheat.preheat(1, 'app', '1.0') AS job_1,
	   p2p_preheat.preheat(1, 'app', '1.1') AS job_2,
	   p2p_preheat.preheat(1, 'library/app', '1.0') AS job_1_again,
	   p2p_preheat.preheat(2, 'app', '1.0') AS job_3;
-- an image Dragonfly cannot fetch (the stand-in fails this one)
SELECT p2p_preheat.preheat(1, 'jobfail', 'latest') AS job_4;
SELECT id, state, url, attrs FROM p2p_preheat.job ORDER BY id;

-- dispatch until every job is final: first sent, then followed by polling
-- (each round is what a pg_cron schedule or the worker would run)
SELECT 1 AS round, * FROM p2p_preheat.preheat_dispatch();
SELECT state, count(*) FROM p2p_preheat.job GROUP BY state ORDER BY state;
SELECT pg_sleep(1.2) AS "waiting for Dragonfly";
SELECT 2 AS round, * FROM p2p_preheat.preheat_dispatch();
SELECT pg_sleep(1.2) AS "waiting for Dragonfly";
SELECT 3 AS round, * FROM p2p_preheat.preheat_dispatch();
SELECT pg_sleep(1.2) AS "waiting for Dragonfly";
SELECT 4 AS round, * FROM p2p_preheat.preheat_dispatch();
SELECT state, count(*) FROM p2p_preheat.job GROUP BY state ORDER BY state;

-- the readable summary
SELECT id, state, substring(url FROM '/v2/(.*)$') AS image, dragonfly_job_id AS dragonfly_job,
	   attempts, polls, round(extract(epoch FROM finished_at - created_at)::numeric, 1) AS seconds,
	   coalesce(last_error, '') AS error
  FROM p2p_preheat.job ORDER BY id;
SQL
echo "demo finished: the throwaway cluster is removed"
