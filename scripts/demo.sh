#!/usr/bin/env bash
# The main job, end to end, on a throwaway cluster: Harbor's tables as a
# Harbor 2.12 database has them, CREATE EXTENSION migrating them, and the
# validation trigger refusing what Dragonfly would reject or misread.
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"

ensure_deps
build_and_install
dir=$(make_workdir)
trap 'stop_cluster "$dir"; rm -rf "$dir"' EXIT
start_cluster "$dir"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"

psql -X -q -d postgres <<SQL
\set ECHO queries
\set VERBOSITY default
\set SHOW_CONTEXT never
\pset footer off
\set ECHO none
\i $dir/harbor.sql
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
SQL
echo "demo finished: the throwaway cluster is removed"
