#!/usr/bin/env bash
# Failover in the middle of a run: etcd and two PostgreSQL nodes managed by
# Patroni, all on loopback.  5,000 jobs are queued on the primary; once the
# worker is under way the primary node is lost: its Patroni and then its
# postmaster are killed with -9 (killing the postmaster alone makes Patroni
# restart it in place, which 012_recovery.pl covers), and Patroni promotes
# the replica once the leader key expires.  Reports jobs lost (queued but never accepted by the
# stand-in: must be 0), duplicate POSTs, and the time from the kill to the
# new primary's worker starting and to its first POST.
# Patroni's timing here is ttl 10 s, loop_wait 2 s (its defaults are 30 s and
# 10 s, which only lengthen the wait for promotion), and synchronous_mode is on:
# with asynchronous replication a failover loses the commits the replica had
# not received, queued jobs among them, which no extension can prevent.
# Usage: bench/failover.sh [jobs]
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
jobs=${1:-5000}

ensure_deps
need_packages patroni etcd-server
build_and_install
build_standin
dir=$(make_workdir)
pids=()
# every process under one we started (a subshell, runuser, then the program)
children() {
	local c
	for c in $(pgrep -P "$1" 2>/dev/null || true); do
		echo "$c"
		children "$c"
	done
}
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill $(children "$p") "$p" 2>/dev/null; done
	sleep 3
	for f in "$dir"/n*/data/postmaster.pid; do [ -f "$f" ] && kill -9 "$(head -1 "$f")" 2>/dev/null; done
	for p in "${pids[@]}"; do kill -9 $(children "$p") "$p" 2>/dev/null; done
	stop_standin
	[ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_standin "$dir" --token bench-token
cp "$REPO/test/fixtures/harbor.sql" "$dir/"

# ---- etcd ------------------------------------------------------------------
etcd_client=$(free_port)
etcd_peer=$(free_port)
as_pg etcd --name fo --data-dir "$dir/etcd" \
	--listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
	--listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
	--initial-cluster "fo=http://127.0.0.1:$etcd_peer" >"$dir/etcd.log" 2>&1 &
pids+=($!)

# ---- two Patroni nodes -------------------------------------------------------
declare -A pgport apiport
for n in n1 n2; do
	pgport[$n]=$(free_port)
	apiport[$n]=$(free_port)
	mkdir -p "$dir/$n"
	cat >"$dir/$n/patroni.yml" <<YAML
scope: p2p-failover
name: $n
restapi:
  listen: 127.0.0.1:${apiport[$n]}
  connect_address: 127.0.0.1:${apiport[$n]}
etcd3:
  hosts: 127.0.0.1:$etcd_client
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1073741824
    # a commit waits for the replica: a failover loses no queued job
    synchronous_mode: true
    postgresql:
      use_pg_rewind: false
      parameters:
        shared_preload_libraries: p2p_preheat
        p2p_preheat.database: postgres
        p2p_preheat.registry_url: https://harbor.example.com
        p2p_preheat.poll_schedule: '1'
        wal_level: replica
        hot_standby: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
        fsync: 'off'
  initdb:
    - encoding: UTF8
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:${pgport[$n]}
  connect_address: 127.0.0.1:${pgport[$n]}
  data_dir: $dir/$n/data
  bin_dir: $PG_BIN
  pgpass: $dir/$n/pgpass
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: replicator, password: replicator}
  parameters:
    unix_socket_directories: $dir/$n
YAML
done
chown -R postgres:postgres "$dir"
as_pg patroni "$dir/n1/patroni.yml" >"$dir/n1/patroni.log" 2>&1 &
pids+=($!)
n1_wrapper=$!
leader_of() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${apiport[$1]}/leader" || true; }
for _ in $(seq 1 120); do [ "$(leader_of n1)" = 200 ] && break; sleep 0.5; done
[ "$(leader_of n1)" = 200 ] || { tail -30 "$dir/n1/patroni.log"; echo "n1 did not become leader" >&2; exit 1; }
as_pg patroni "$dir/n2/patroni.yml" >"$dir/n2/patroni.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
	curl -s "http://127.0.0.1:${apiport[n2]}/replica" -o /dev/null -w '%{http_code}' | grep -q 200 && break
	sleep 0.5
done

q() { local n=$1; shift; as_pg psql -qXAt -h "$dir/$n" -p "${pgport[$n]}" -U postgres -d postgres "$@"; }
# the replica streams, as the synchronous standby, before anything is queued
for _ in $(seq 1 240); do
	[ "$(q n1 -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'")" = 1 ] && break
	sleep 0.25
done
[ "$(q n1 -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] ||
	{ tail -30 "$dir/n2/patroni.log"; echo "n2 is not a synchronous standby" >&2; exit 1; }
q n1 -v ON_ERROR_STOP=1 -v endpoint="http://127.0.0.1:$DRAGONFLY_PORT" >/dev/null <<SQL
\i $dir/harbor.sql
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances(:'endpoint');
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "bench-token"}' WHERE id = 1;
CREATE EXTENSION p2p_preheat;
SQL

# ---- the run, and the kill -----------------------------------------------------
# slow answers keep the run going long enough to kill it in the middle
q n1 -c "SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/fo-slow20ms/manifests/%s', g))) FROM generate_series(1, $jobs) g" >/dev/null
until [ "$(q n1 -c "SELECT count(*) FROM p2p_preheat.job WHERE state = 'running'")" -gt $((jobs / 5)) ]; do sleep 0.1; done
sleep 0.5
pm=$(head -1 "$dir/n1/data/postmaster.pid")
t_kill=$(date +%s.%N)
kill -9 $(children "$n1_wrapper") "$pm"
echo "lost the primary node: killed its Patroni and its postmaster (pid $pm) at $t_kill"
for _ in $(seq 1 240); do [ "$(leader_of n2)" = 200 ] && break; sleep 0.25; done
[ "$(leader_of n2)" = 200 ] || { tail -30 "$dir/n2/patroni.log"; echo "n2 was not promoted" >&2; exit 1; }
for _ in $(seq 1 600); do
	[ "$(q n2 -c "SELECT count(*) FROM p2p_preheat.job WHERE state IN ('queued', 'sending')" 2>/dev/null || echo 1)" = 0 ] && break
	sleep 0.5
done
started=$(q n2 -c "SELECT extract(epoch FROM started_at) FROM p2p_preheat.worker_status()")
q n2 -c "SELECT state, count(*) FROM p2p_preheat.job GROUP BY 1 ORDER BY 1" | sed 's/^/  jobs on the new primary: /'

python3 - "$DRAGONFLY_LOG" "$jobs" "$t_kill" "$started" <<'PY'
import json, sys
log, jobs, t_kill, started = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
posts, first_new = {}, None
for line in open(log):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get('route') != 'POST /oapi/v1/jobs' or r.get('status') != 200:
        continue
    url = (r.get('body') or {}).get('args', {}).get('url', '')
    if '/fo-' not in url:
        continue
    posts[url] = posts.get(url, 0) + 1
    if r['t'] >= started and (first_new is None or r['t'] < first_new):
        first_new = r['t']
lost = jobs - len(posts)
dups = sum(posts.values()) - len(posts)
print("jobs %d: lost %d (never accepted by Dragonfly; must be 0), duplicate POSTs %d" % (jobs, lost, dups))
print("kill -> new primary's worker started: %.1f s; kill -> its first POST: %s"
      % (started - t_kill, "%.1f s" % (first_new - t_kill) if first_new else "none"))
PY
