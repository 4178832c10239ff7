#!/usr/bin/env bash
# What queueing one preheat costs the caller, against pg_net's net.http_post()
# in the same run, on the same cluster, one call after another in one
# statement (no network: both only queue a row):
#   - net.http_post() (pg_net 0.20.4, built under /tmp from its source tarball);
#   - preheat_url(instance, url);
#   - preheat(policy, repository, reference);
#   - preheat(policy, repositories[], references[]), per job, in batches;
#   - and the floor under all three: the job's INSERT alone, one statement a
#     job, from a PL/pgSQL loop.
# Then the same three calls one statement each, from a PL/pgSQL loop: each
# statement has a snapshot of its own, so what one read from Harbor's tables
# is reused by the next only once the tuples it came from are found
# unchanged under the new snapshot (src/harbor.c).
# Every call queues a new job (distinct URLs).  Each figure is the best of
# ROUNDS rounds, each on a fresh database; prints microseconds per job and
# the ratio to net.http_post().
# Usage: bench/enqueue.sh [calls] [rounds]
#   PG_NET_TARBALL: pg_net's source (default ../shared/reference/pg_net-0.20.4.tar.gz
#   beside the repository)
#   BATCH: jobs per call of the set form (default 1000)
#   KEEP_CLUSTER=1: leave the cluster running (for perf) and print how to reach it
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
calls=${1:-20000}
rounds=${2:-3}
batch=${BATCH:-1000}
need_pg_net_tarball

ensure_deps
build_and_install
dir=$(make_workdir)
cleanup() {
	if [ "${KEEP_CLUSTER:-}" = 1 ]; then
		echo "cluster left running: PGHOST=$dir PGPORT=5432 PGUSER=postgres (stop: pg_ctl -D $dir/data stop)"
		return
	fi
	stop_cluster "$dir"
	rm -rf "$dir"
}
trap cleanup EXIT

build_pg_net "$dir"

# pg_net's worker serves database "postgres"; the rounds use their own
# databases, so neither worker sends anything while we measure.
start_cluster "$dir" "shared_preload_libraries = 'p2p_preheat,pg_net'" \
	"p2p_preheat.database = 'postgres'" "pg_net.database_name = 'postgres'" \
	"shared_buffers = 256MB" "max_wal_size = 4GB" "synchronous_commit = off" \
	"p2p_preheat.registry_url = 'https://harbor.example.com'"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"
cd "$dir"

setup_db() {
	psql -qX -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null 2>&1
	psql -qX -v ON_ERROR_STOP=1 -d "$1" <<'SQL' >/dev/null
\i harbor.sql
SELECT harbor_fixture.create_tables('2.13');
SELECT harbor_fixture.add_instances('http://127.0.0.1:1');
CREATE EXTENSION p2p_preheat;
CREATE EXTENSION pg_net;
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, extra_attrs)
VALUES (1, 'bench', 1, 1, true, '{"scope": "all_peers", "timeout": "30m"}');
-- one of each first: plans prepared, caches warm
SELECT net.http_post('http://127.0.0.1:1/x', '{}'::jsonb);
SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/warm/manifests/1');
SELECT p2p_preheat.preheat(1, 'warm', '2');
SQL
}

# seconds a statement takes, as the server measures it (psql's \timing)
timed() {
	psql -qX -v ON_ERROR_STOP=1 -d "$1" -c '\timing on' -c "$2" | awk '/^Time:/ {print $2 / 1000}'
}

per_job() { awk -v s="$1" -v n="$calls" 'BEGIN { printf "%.2f", s / n * 1e6 }'; }
best() { printf '%s\n' "$@" | sort -g | head -1; }

declare -a t_net t_url t_pol t_set t_ins s_net s_url s_pol
for r in $(seq 1 "$rounds"); do
	db=queue_$r
	setup_db "$db"
	t_net+=("$(per_job "$(timed "$db" "SELECT count(net.http_post('http://127.0.0.1:1/oapi/v1/jobs',
		'{\"type\": \"preheat\"}'::jsonb)) FROM generate_series(1, $calls)")")")
	t_url+=("$(per_job "$(timed "$db" "SELECT count(p2p_preheat.preheat_url(1,
		'https://harbor.example.com/v2/library/q/manifests/' || g)) FROM generate_series(1, $calls) g")")")
	t_pol+=("$(per_job "$(timed "$db" "SELECT count(p2p_preheat.preheat(1, 'app', 'r' || g))
		FROM generate_series(1, $calls) g")")")
	t_ins+=("$(per_job "$(timed "$db" "DO \$\$ BEGIN FOR g IN 1..$calls LOOP
		INSERT INTO p2p_preheat.job (instance_id, url, attrs)
		VALUES (1, 'https://harbor.example.com/v2/library/i/manifests/' || g, '{}')
		ON CONFLICT (instance_id, url, md5(attrs::text)) WHERE open DO NOTHING; END LOOP; END \$\$")")")
	s_net+=("$(per_job "$(timed "$db" "DO \$\$ BEGIN FOR g IN 1..$calls LOOP
		PERFORM net.http_post('http://127.0.0.1:1/oapi/v1/jobs', '{\"type\": \"preheat\"}'::jsonb); END LOOP; END \$\$")")")
	s_url+=("$(per_job "$(timed "$db" "DO \$\$ BEGIN FOR g IN 1..$calls LOOP
		PERFORM p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/s/manifests/' || g); END LOOP; END \$\$")")")
	s_pol+=("$(per_job "$(timed "$db" "DO \$\$ BEGIN FOR g IN 1..$calls LOOP
		PERFORM p2p_preheat.preheat(1, 'app', 's' || g); END LOOP; END \$\$")")")
	if psql -qXAt -d "$db" -c "SELECT to_regprocedure('p2p_preheat.preheat(integer,text[],text[],jsonb)')" | grep -q preheat; then
		t_set+=("$(per_job "$(timed "$db" "SELECT sum((SELECT count(*) FROM p2p_preheat.preheat(1,
			array_fill('app'::text, ARRAY[$batch]),
			ARRAY(SELECT 's' || (b * $batch + i) FROM generate_series(1, $batch) i))))
		  FROM generate_series(0, $calls / $batch - 1) b")")")
	fi
	[ "${KEEP_CLUSTER:-}" = 1 ] || psql -qX -d postgres -c "DROP DATABASE $db" >/dev/null
done

net=$(best "${t_net[@]}")
report() { awk -v name="$1" -v us="$2" -v net="$net" 'BEGIN { printf "  %-44s %7.2f us a job  %5.2f x net.http_post()\n", name, us, us / net }'; }
echo "queueing $calls jobs one call at a time, best of $rounds rounds ($("$PG_CONFIG" --version))"
report "net.http_post() (pg_net 0.20.4)" "$net"
report "preheat_url(instance, url)" "$(best "${t_url[@]}")"
report "preheat(policy, repository, reference)" "$(best "${t_pol[@]}")"
[ ${#t_set[@]} -eq 0 ] || report "preheat(policy, repositories[], references[]) / $batch" "$(best "${t_set[@]}")"
report "the job's INSERT alone (PL/pgSQL loop)" "$(best "${t_ins[@]}")"
echo "  (target: preheat_url() and preheat() <= 1.5 x net.http_post())"
net=$(best "${s_net[@]}")
echo "one statement a call (PL/pgSQL loop)"
report "net.http_post()" "$net"
report "preheat_url(instance, url)" "$(best "${s_url[@]}")"
report "preheat(policy, repository, reference)" "$(best "${s_pol[@]}")"
echo "  every round: net ${t_net[*]}; preheat_url ${t_url[*]}; preheat ${t_pol[*]}${t_set[*]:+; set ${t_set[*]:-}}; INSERT ${t_ins[*]}"
echo "  every round, a statement each: net ${s_net[*]}; preheat_url ${s_url[*]}; preheat ${s_pol[*]}"
