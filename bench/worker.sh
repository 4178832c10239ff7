#!/usr/bin/env bash
# The background worker: latency from COMMIT of a queued job to the stand-in
# receiving its POST (1,000 single-job transactions: p50, p99), the worker's
# idle CPU, and its RSS before and after N jobs (default 1,000,000).
# Usage: bench/worker.sh [latency_txns] [rss_jobs]
#        PG_MAJOR=18 bench/worker.sh ...   on PostgreSQL 18 (default 15; built once if missing)
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
txns=${1:-1000}
rss_jobs=${2:-1000000}

ensure_deps
build_and_install
echo "on $("$PG_CONFIG" --version)"
build_standin
dir=$(make_workdir)
trap 'stop_standin; stop_cluster "$dir"; rm -rf "$dir"' EXIT
# clusters 1 and 2 with a limit far above what one machine sends: pacing learns it
start_standin "$dir" --token bench-token --cluster 1:1000000 --cluster 2:1000000
start_cluster "$dir" "shared_preload_libraries = 'p2p_preheat'" "p2p_preheat.database = 'postgres'" \
	"track_commit_timestamp = on" "shared_buffers = 512MB" "max_wal_size = 8GB" \
	"synchronous_commit = off" "p2p_preheat.poll_schedule = '1'" "autovacuum_naptime = 5"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"
cd "$dir"
psql -qX -v ON_ERROR_STOP=1 -d postgres -v endpoint="http://127.0.0.1:$DRAGONFLY_PORT" <<'SQL' >/dev/null
\i harbor.sql
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances(:'endpoint');
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "bench-token"}' WHERE id = 1;
CREATE EXTENSION p2p_preheat;
SQL
pid=$(psql -qXAt -d postgres -c "SELECT pid FROM p2p_preheat.worker_status()")
# the worker's HTTP process (none if no background worker slot was free)
hpid=$(psql -qXAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'p2p_preheat http'")

# ---- latency: COMMIT -> POST received, one job per transaction -----------
# each transaction notes its own xid, whose commit timestamp is the start
psql -qX -d postgres -c "CREATE TABLE lat (url text, xid xid8)" >/dev/null
for i in $(seq 1 "$txns"); do
	u="https://harbor.example.com/v2/library/lat/manifests/$i"
	echo "BEGIN; SELECT p2p_preheat.preheat_url(1, '$u'); INSERT INTO lat VALUES ('$u', pg_current_xact_id()); COMMIT;"
	echo "SELECT pg_sleep(0.005);"
done | psql -qX -d postgres >/dev/null
sleep 2
psql -qXAt -d postgres -F ' ' -c "SELECT url, extract(epoch FROM pg_xact_commit_timestamp(xid::text::xid)) FROM lat" >"$dir/commits.txt"
python3 - "$dir/commits.txt" "$DRAGONFLY_LOG" <<'PY'
import json, sys
commits = dict(l.split() for l in open(sys.argv[1]) if l.strip())
got = {}
for line in open(sys.argv[2]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    url = r.get('body', {}).get('args', {}).get('url')
    if url in commits and url not in got:
        got[url] = r['t']
lat = sorted((got[u] - float(c)) * 1000 for u, c in commits.items() if u in got)
n = len(lat)
pick = lambda q: lat[min(n - 1, int(q * n))]
print("COMMIT -> POST latency over %d single-job transactions: p50 %.2f ms, p99 %.2f ms, max %.2f ms (targets: p50 <= 5 ms, p99 <= 25 ms)"
      % (n, pick(0.50), pick(0.99), lat[-1]))
PY

# ---- idle CPU ---------------------------------------------------------------
sleep 3
cpu() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
c0=$(cpu "$pid"); h0=$(cpu "$hpid"); sleep 10; c1=$(cpu "$pid"); h1=$(cpu "$hpid")
hz=$(getconf CLK_TCK)
awk -v a="$c0" -v b="$c1" -v ha="$h0" -v hb="$h1" -v hz="$hz" 'BEGIN {
	printf "idle CPU over 10 s: worker %.3f%%, its HTTP process %.3f%% of a core\n", (b - a) / hz / 10 * 100, (hb - ha) / hz / 10 * 100 }'

# ---- RSS before and after many jobs --------------------------------------
# private memory only: RssShmem (shared buffers the worker touched) is not its own
rss() { if [ -n "$1" ]; then awk '/RssAnon/ {print $2}' "/proc/$1/status"; else echo 0; fi; }
r0=$(rss "$pid")
rh0=$(rss "$hpid")
t0=$(date +%s.%N)
batch=50000
for ((done = 0; done < rss_jobs; done += batch)); do
	psql -qX -d postgres -c "INSERT INTO p2p_preheat.job (instance_id, url, attrs)
		SELECT 1, format('https://harbor.example.com/v2/library/rss/manifests/%s', g),
			   '{\"scope\": \"all_peers\", \"cluster_ids\": [1, 2]}'
		  FROM generate_series($done + 1, $done + $batch) g; SELECT p2p_preheat._wake_worker();" >/dev/null
	# keep the queue bounded, as a live system would
	until [ "$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE state IN ('queued', 'sending')")" -lt "$batch" ]; do
		sleep 0.5
	done
done
until [ "$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE state IN ('queued', 'sending', 'running')")" -eq 0 ]; do
	sleep 1
done
t1=$(date +%s.%N)
r1=$(rss "$pid")
rh1=$(rss "$hpid")
psql -qXAt -d postgres -c "SELECT state, count(*) FROM p2p_preheat.job WHERE url LIKE '%/rss/%' GROUP BY 1" | sed 's/^/  jobs /'
awk -v r0="$r0" -v r1="$r1" -v h0="$rh0" -v h1="$rh1" -v n="$rss_jobs" -v t0="$t0" -v t1="$t1" 'BEGIN {
	s = t1 - t0
	printf "worker RssAnon: %d kB before, %d kB after %d jobs (growth %d kB; target <= 2048 kB); %.0f jobs/s end to end (POST + poll)\n", r0, r1, n, r1 - r0, n / s
	printf "its HTTP process RssAnon: %d kB before, %d kB after (growth %d kB; target <= 2048 kB)\n", h0, h1, h1 - h0
}'
