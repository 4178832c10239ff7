#!/usr/bin/env bash
# Throughput of preheat_dispatch(): N jobs pushed to the Dragonfly stand-in
# (C, libmicrohttpd) on loopback, beside the stand-in's own ceiling measured
# in the same run by a plain libcurl-multi client (test/standin/loadgen).
# Usage: bench/dispatch.sh [jobs] [batch] [max_in_flight] [final_rows]
#        PG_MAJOR=18 bench/dispatch.sh ...   on PostgreSQL 18 (default 15; built once if missing)
# final_rows: finished jobs already in the table (history), to show that a
# long history does not slow dispatch.
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
jobs=${1:-20000}
batch=${2:-5000}
inflight=${3:-64}
final_rows=${4:-0}

ensure_deps
build_and_install
echo "on $("$PG_CONFIG" --version)"
build_standin
dir=$(make_workdir)
trap 'stop_standin; stop_cluster "$dir"; rm -rf "$dir"' EXIT
# clusters 1 and 2 with a limit far above what one machine sends: pacing learns it
start_standin "$dir" --token bench-token --cluster 1:1000000 --cluster 2:1000000
start_cluster "$dir" "shared_buffers = 256MB" "max_wal_size = 4GB" "synchronous_commit = off"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"
cd "$dir"

psql -qX -v ON_ERROR_STOP=1 -d postgres -v endpoint="http://127.0.0.1:$DRAGONFLY_PORT" -v n="$jobs" -v f="$final_rows" <<'SQL' >/dev/null
\i harbor.sql
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances(:'endpoint');
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "bench-token"}' WHERE id = 1;
CREATE EXTENSION p2p_preheat;
-- history: finished jobs (none by default)
INSERT INTO p2p_preheat.job (instance_id, url, attrs, state, finished_at, created_at)
SELECT 1, format('https://harbor.example.com/v2/library/old-%s/manifests/%s', g % 500, g), '{}',
	   'succeeded', now() - interval '1 day', now() - interval '1 day'
  FROM generate_series(1, :f) g;
-- realistic attributes: a scope, cluster ids and a timeout in every body
INSERT INTO p2p_preheat.job (instance_id, url, attrs)
SELECT 1, format('https://harbor.example.com/v2/library/app-%s/manifests/%s', g % 500, g),
	   '{"scope": "all_peers", "cluster_ids": [1, 2], "timeout": 1800000000000}'
  FROM generate_series(1, :n) g;
VACUUM ANALYZE p2p_preheat.job;
SQL

# preheat_dispatch() in a loop, as pg_cron or a script would call it
start=$(date +%s.%N)
rounds=$(( (jobs + batch - 1) / batch ))
{
	echo "SET p2p_preheat.max_in_flight = $inflight;"
	for _ in $(seq 1 "$rounds"); do echo "SELECT sent FROM p2p_preheat.preheat_dispatch($batch);"; done
} | psql -qXAt -d postgres >"$dir/rounds.txt"
end=$(date +%s.%N)
sent=$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE state = 'running'")
left=$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE state NOT IN ('running', 'succeeded')")
posts=$(curl -s "http://127.0.0.1:$DRAGONFLY_PORT/_standin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["posts"])')

# the stand-in's ceiling: the same POSTs from a bare libcurl-multi client
ceiling=$("$REPO/test/standin/loadgen" "http://127.0.0.1:$DRAGONFLY_PORT/oapi/v1/jobs" bench-token "$jobs" "$inflight")

awk -v jobs="$sent" -v left="$left" -v posts="$posts" -v s="$start" -v e="$end" -v c="$ceiling" \
	-v batch="$batch" -v inflight="$inflight" -v hist="$final_rows" 'BEGIN {
	secs = e - s
	split(c, f, /[ =\/]+/)
	for (i = 1; i in f; i++) if (f[i] == "rate") rate = f[i + 1]
	printf "history of %d finished jobs; ", hist
	printf "preheat_dispatch(%d), max_in_flight %d: %d jobs sent in %.2f s = %.0f jobs/s (%d not sent, stand-in saw %d POSTs)\n", batch, inflight, jobs, secs, jobs / secs, left, posts
	printf "stand-in ceiling (loadgen, %d connections): %s\n", inflight, c
	printf "dispatch / ceiling = %.2f (target >= 0.5); target >= 5000 jobs/s\n", (jobs / secs) / rate
}'
