#!/usr/bin/env bash
# The background worker against Dragonfly's per-cluster job rate limiter:
# N jobs naming clusters 1 and 2, each limited to R jobs/s (the stand-in's
# --cluster ID:RATE), with the settings a user ships with.  Prints the rate
# at which jobs were created against R, the share of POSTs refused with 429
# and the jobs that failed, once with a token that may read clusters (the
# pace is learned) and once with one that may not (the pace adapts to 429s).
# Usage: bench/ratelimit.sh [jobs] [rate]
# Environment: RUNS="learned adaptive" (the runs to make), KEEP_LOG=FILE
# (a copy of the stand-in's log, one JSON line per request, to study the
# pace over time).
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
jobs=${1:-1200}
rate=${2:-40}

ensure_deps
build_and_install
build_standin
dir=$(make_workdir)
runs=${RUNS:-learned adaptive}
trap 'stop_standin; [ -z "${KEEP_LOG:-}" ] || cp "$dir/standin.log" "$KEEP_LOG"; stop_cluster "$dir"; rm -rf "$dir"' EXIT
start_standin "$dir" --token full-token --token jobs-token:job --cluster "1:$rate" --cluster "2:$rate"
start_cluster "$dir" "shared_preload_libraries = 'p2p_preheat'" "p2p_preheat.database = 'postgres'" \
	"p2p_preheat.registry_url = 'https://harbor.example.com'"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"
cd "$dir"
psql -qX -v ON_ERROR_STOP=1 -d postgres -v endpoint="http://127.0.0.1:$DRAGONFLY_PORT" <<'SQL' >/dev/null
\i harbor.sql
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances(:'endpoint');
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "full-token"}' WHERE id = 1;
INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, auth_data, enabled, insecure)
VALUES (3, 'jobs-only', 'dragonfly', :'endpoint', 'OAUTH', '{"token": "jobs-token"}', true, false);
CREATE EXTENSION p2p_preheat;
SQL

run() {
	local instance=$1 label=$2
	psql -qX -d postgres -c "SELECT count(p2p_preheat.preheat_url($instance,
		'https://harbor.example.com/v2/library/$label/manifests/' || i, '{\"cluster_ids\": [1, 2]}'))
		FROM generate_series(1, $jobs) i" >/dev/null
	for _ in $(seq 1 1200); do
		left=$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job
			WHERE url LIKE '%/$label/%' AND state IN ('queued', 'sending')")
		[ "$left" -eq 0 ] && break
		sleep 0.5
	done
	python3 - "$DRAGONFLY_LOG" "$label" "$jobs" "$rate" <<'PY'
import json, sys
log, label, jobs, rate = sys.argv[1], "/" + sys.argv[2] + "/", int(sys.argv[3]), float(sys.argv[4])
ok, limited = [], 0
for line in open(log):
    if label not in line:
        continue
    l = json.loads(line)
    if l["route"] != "POST /oapi/v1/jobs":
        continue
    if l["status"] == 200:
        ok.append(l["t"])
    elif l["status"] == 429:
        limited += 1
span = max(ok) - min(ok) if len(ok) > 1 else 0
r = (len(ok) - 1) / span if span > 0 else 0
print(f"{sys.argv[2]:>9}: {len(ok)} of {jobs} jobs created in {span:.1f} s = {r:.1f} jobs/s "
      f"= {r / rate:.2f} x the limit of {rate:g}/s; 429s {limited} of {len(ok) + limited} POSTs "
      f"({100.0 * limited / max(1, len(ok) + limited):.1f}%)")
PY
	psql -qXAt -d postgres -c "SELECT '           failed: ' || count(*) FILTER (WHERE state = 'failed')
		|| ', more than one attempt: ' || count(*) FILTER (WHERE attempts > 1)
		FROM p2p_preheat.job WHERE url LIKE '%/$label/%'"
}

echo "$jobs jobs naming scheduler clusters 1 and 2, each limited to $rate jobs/s"
for r in $runs; do
	case $r in
	learned) run 1 learned ;;
	adaptive) run 3 adaptive ;;
	*) echo "unknown run: $r" >&2; exit 1 ;;
	esac
done
psql -qXAt -d postgres -c "SELECT jsonb_pretty(pace) FROM p2p_preheat.worker_status()"
