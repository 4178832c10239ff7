#!/usr/bin/env bash
# Side by side, in one process tree, against one nginx on loopback that
# answers every request with a Dragonfly job (200):
#   - nginx's ceiling, measured by wrk (64 connections);
#   - the database-only ceiling: the worker's claim and record statements
#     (p2p_preheat._claim with a lease, p2p_preheat._record) without HTTP;
#   - pg_net 0.20.4 (built under /tmp from its source tarball) sending N
#     net.http_post() requests with its background worker;
#   - preheat_dispatch() in a loop (one session), and the p2p_preheat background
#     worker, each with its CPU time per job;
#   - queueing: N preheat_url() calls against N net.http_post() calls, best
#     of three rounds each.
# Prints each figure and the ratios.
# Usage: bench/peers.sh [jobs]
#   PG_NET_TARBALL: pg_net's source (default ../shared/reference/pg_net-0.20.4.tar.gz
#   beside the repository)
#   PERF_DATA: if set, `perf record -g` the worker process during its phase
#   into this file (perf report -i FILE --no-children shows where a job's time goes)
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
jobs=${1:-20000}
need_pg_net_tarball

ensure_deps
need_packages nginx wrk
build_and_install
dir=$(make_workdir)
ngx_pid=
cleanup() {
	[ -n "$ngx_pid" ] && kill "$ngx_pid" 2>/dev/null && wait "$ngx_pid" 2>/dev/null
	stop_cluster "$dir"
	rm -rf "$dir"
}
trap cleanup EXIT

# ---- pg_net, built under /tmp, installed beside p2p_preheat -------------
build_pg_net "$dir"

# ---- nginx: a Dragonfly job for every request -----------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $dir/nginx-error.log;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $dir/nginx-body;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$port;
		location / {
			default_type application/json;
			return 200 '{"id": 1, "type": "preheat", "state": "PENDING", "args": {}}';
		}
	}
}
CONF
nginx -c "$dir/nginx.conf" &
ngx_pid=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
endpoint="http://127.0.0.1:$port"

cat >"$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"preheat","scheduler_cluster_ids":[1,2],"args":{"type":"image","url":"https://harbor.example.com/v2/library/app/manifests/1","scope":"all_peers"}}'
LUA
nginx_rate=$(wrk -t2 -c64 -d5s -s "$dir/post.lua" "$endpoint/oapi/v1/jobs" | awk '/Requests\/sec/ {print $2}')

# ---- one cluster: both workers serve database "postgres" -----------------
start_cluster "$dir" "shared_preload_libraries = 'p2p_preheat,pg_net'" \
	"p2p_preheat.database = 'postgres'" "pg_net.database_name = 'postgres'" \
	"shared_buffers = 256MB" "max_wal_size = 4GB" "synchronous_commit = off" \
	"p2p_preheat.registry_url = 'https://harbor.example.com'"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"
cd "$dir"
for db in dispatch dbonly queue; do
	psql -qX -d postgres -c "CREATE DATABASE $db" >/dev/null
done
for db in postgres dispatch dbonly queue; do
	psql -qX -v ON_ERROR_STOP=1 -d "$db" -v endpoint="$endpoint" <<'SQL' >/dev/null
\i harbor.sql
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances(:'endpoint');
CREATE EXTENSION p2p_preheat;
SQL
done
psql -qX -d postgres -c "CREATE EXTENSION pg_net" >/dev/null
psql -qX -d queue -c "CREATE EXTENSION pg_net" >/dev/null

# N jobs as a policy run would queue them: a scope and a timeout in every body
fill() {
	psql -qX -d "$1" -c "INSERT INTO p2p_preheat.job (instance_id, url, attrs)
		SELECT 1, format('https://harbor.example.com/v2/library/app-%s/manifests/%s', g % 500, g),
			   '{\"scope\": \"all_peers\", \"timeout\": 1800000000000}'
		  FROM generate_series(1, $jobs) g" >/dev/null
	psql -qX -d "$1" -c "VACUUM ANALYZE p2p_preheat.job" >/dev/null
}
now() { date +%s.%N; }
# A phase leaves 20,000 updated rows behind: vacuum them now, so that
# autovacuum does not wake up for them in the middle of a later phase.
# On a virtual machine the host may take CPU time from it ("steal" in
# /proc/stat): reported for each timed phase, as the share of all CPU time.
steal_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t }' /proc/stat; }
steal_share() {
	steal_ticks | awk -v before="$1" 'BEGIN { split(before, b, " ") }
		{ d = $2 - b[2]; printf "%.1f", (d > 0 ? 100 * ($1 - b[1]) / d : 0) }'
}
settle() { psql -qX -d "$1" -c "VACUUM p2p_preheat.job" >/dev/null; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

# ---- the database-only ceiling -------------------------------------------
fill dbonly
t0=$(now)
psql -qX -v ON_ERROR_STOP=1 -d dbonly <<'SQL' >/dev/null
DO $$
DECLARE
	o p2p_preheat.job_outcome[];
BEGIN
	LOOP
		SELECT array_agg(ROW(c.id, 'running', c.attempts + 1, 0, clock_timestamp() + interval '31 s',
				clock_timestamp(), c.id, 'PENDING', 200, NULL, 0, NULL, false)::p2p_preheat.job_outcome)
		  INTO o FROM p2p_preheat._claim(256, interval '300 s') c;
		COMMIT;
		EXIT WHEN o IS NULL;
		PERFORM p2p_preheat._record(o);
		COMMIT;
	END LOOP;
END $$;
SQL
t1=$(now)
dbonly_rate=$(rate "$jobs" "$t0" "$t1")
settle dbonly

# ---- pg_net ----------------------------------------------------------------
t0=$(now)
psql -qX -d postgres -c "SELECT count(net.http_post('$endpoint/oapi/v1/jobs',
	'{\"type\": \"preheat\", \"args\": {\"type\": \"image\"}}'::jsonb)) FROM generate_series(1, $jobs)" >/dev/null
t1=$(now)
until [ "$(psql -qXAt -d postgres -c "SELECT count(*) FROM net._http_response")" -ge "$jobs" ]; do sleep 0.2; done
t2=$(now)
pgnet_rate=$(rate "$jobs" "$t1" "$t2")

# ---- preheat_dispatch() in a loop ------------------------------------------
fill dispatch
# one session, so that its backend's CPU time can be read before and after
coproc DISPATCH { psql -qXAt -d dispatch; }
echo "SELECT pg_backend_pid();" >&"${DISPATCH[1]}"
read -r dpid <&"${DISPATCH[0]}"
dispatch_ticks() { sed 's/.*) //' "/proc/$dpid/stat" | awk '{ print $12 + $13 }'; }
dcpu0=$(dispatch_ticks)
dsteal0=$(steal_ticks)
t0=$(now)
while :; do
	echo "SELECT sent FROM p2p_preheat.preheat_dispatch(5000);" >&"${DISPATCH[1]}"
	read -r sent <&"${DISPATCH[0]}"
	[ "$sent" -gt 0 ] || break
done
t1=$(now)
dcpu1=$(dispatch_ticks)
dsteal=$(steal_share "$dsteal0")
echo '\q' >&"${DISPATCH[1]}"
wait "$DISPATCH_PID" || true
dispatch_rate=$(rate "$jobs" "$t0" "$t1")
dispatch_cpu_us=$(awk -v n="$jobs" -v a="$dcpu0" -v b="$dcpu1" -v hz="$(getconf CLK_TCK)" \
	'BEGIN { printf "%.1f", (b - a) / hz / n * 1e6 }')
settle dispatch

# ---- the background worker --------------------------------------------------
fill postgres
perf_pid=
wpid=$(psql -qXAt -d postgres -c "SELECT pid FROM p2p_preheat.worker_status()")
# the worker's CPU time (user + system, in clock ticks): a figure others' load on the machine does not move
cpu_ticks() { sed 's/.*) //' "/proc/$wpid/stat" | awk '{ print $12 + $13 }'; }
# the worker's HTTP process, when it has one (see README, "Architecture")
hpid=$(psql -qXAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'p2p_preheat http'")
http_ticks() { if [ -n "$hpid" ]; then sed 's/.*) //' "/proc/$hpid/stat" | awk '{ print $12 + $13 }'; else echo 0; fi; }
if [ -n "${PERF_DATA:-}" ]; then
	perf record -g -o "$PERF_DATA" -p "$wpid${hpid:+,$hpid}" >/dev/null 2>&1 &
	perf_pid=$!
	sleep 0.5
fi
cpu0=$(cpu_ticks)
wsteal0=$(steal_ticks)
hcpu0=$(http_ticks)
# Start and end by the server's clock: the wake-up, and the last job's
# record.  Waiting for the end polls only every quarter second: a psql (a
# new backend) every few milliseconds would take CPU from the worker on a
# small machine and slow what it measures.
t0=$(psql -qXAt -d postgres -c "SELECT extract(epoch FROM clock_timestamp()) FROM (SELECT p2p_preheat._wake_worker()) w")
until [ "$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE state IN ('queued', 'sending')")" -eq 0 ]; do
	sleep 0.25
done
t1=$(psql -qXAt -d postgres -c "SELECT extract(epoch FROM max(updated_at)) FROM p2p_preheat.job")
cpu1=$(cpu_ticks)
wsteal=$(steal_share "$wsteal0")
hcpu1=$(http_ticks)
worker_rate=$(rate "$jobs" "$t0" "$t1")
worker_cpu_us=$(awk -v n="$jobs" -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" \
	'BEGIN { printf "%.1f", (b - a) / hz / n * 1e6 }')
http_cpu_us=$(awk -v n="$jobs" -v a="$hcpu0" -v b="$hcpu1" -v hz="$(getconf CLK_TCK)" \
	'BEGIN { printf "%.1f", (b - a) / hz / n * 1e6 }')
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
worker_failed=$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE state = 'failed'")

# ---- queueing: preheat_url() against net.http_post() ----------------------
settle postgres
psql -qX -d queue -c "SELECT net.http_post('$endpoint/x', '{}'::jsonb); SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/warm/manifests/1')" >/dev/null
# Three rounds, alternating, and the best of each: one round is under half a
# second, and a single one moved by a tenth from run to run.
q_pgnet=
q_preheat=
best() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }
for round in 1 2 3; do
	t0=$(now)
	psql -qX -d queue -c "SELECT count(net.http_post('$endpoint/oapi/v1/jobs',
		'{\"type\": \"preheat\"}'::jsonb)) FROM generate_series(1, $jobs)" >/dev/null
	t1=$(now)
	psql -qX -d queue -c "SELECT count(p2p_preheat.preheat_url(1,
		'https://harbor.example.com/v2/library/q$round/manifests/' || g)) FROM generate_series(1, $jobs) g" >/dev/null
	t2=$(now)
	q_pgnet=$(best "$q_pgnet" "$(awk -v n="$jobs" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / n * 1e6 }')")
	q_preheat=$(best "$q_preheat" "$(awk -v n="$jobs" -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", (b - a) / n * 1e6 }')")
done

awk -v n="$jobs" -v ngx="$nginx_rate" -v db="$dbonly_rate" -v net="$pgnet_rate" -v d="$dispatch_rate" \
	-v w="$worker_rate" -v wf="$worker_failed" -v wc="$worker_cpu_us" -v hc="$http_cpu_us" -v dc="$dispatch_cpu_us" -v qn="$q_pgnet" -v qp="$q_preheat" -v ds="$dsteal" -v ws="$wsteal" 'BEGIN {
	low = ngx < db ? ngx : db
	printf "%d jobs, one nginx on loopback answering 200 with a Dragonfly job\n", n
	printf "  nginx ceiling (wrk, 64 connections):      %8.0f req/s\n", ngx
	printf "  database-only ceiling (claim + record):   %8.0f jobs/s\n", db
	printf "  pg_net 0.20.4 (net.http_post, worker):    %8.0f req/s\n", net
	printf "  preheat_dispatch() in a loop:             %8.0f jobs/s (host steal %s%%)\n", d, ds
	printf "  p2p_preheat worker:                       %8.0f jobs/s (%d failed; host steal %s%%)\n", w, wf, ws
	printf "  CPU time per job: worker %.1f us + its HTTP process %.1f us, preheat_dispatch() backend %.1f us\n", wc, hc, dc
	printf "  worker / lower ceiling (%.0f):            %8.2f (target >= 0.5, stretch 0.75)\n", low, w / low
	printf "  worker / preheat_dispatch():              %8.2f (target >= 1)\n", w / d
	printf "  worker / pg_net:                          %8.1f\n", w / net
	printf "  queueing, best of 3 rounds: net.http_post() %.1f us a call, preheat_url() %.1f us a call: %.2f x (target <= 1.5)\n", qn, qp, qp / qn
}'
