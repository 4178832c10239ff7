#!/usr/bin/env bash
# Cost of the extra_attrs trigger: 100,000 updates of realistic policy rows
# with no trigger, with the C trigger, and with the same rules in PL/pgSQL,
# all in one run on one throwaway cluster.  Two kinds of document are timed
# apart: those the trigger stores as written, and those it rewrites (scope
# "single_peer" is stored as "single_seed_peer"), which cost more; the
# headline ratio weighs them equally.  Prints times and ratios.
# Usage: bench/trigger.sh [rows] [repetitions]
#        PG_MAJOR=18 bench/trigger.sh ...   on PostgreSQL 18 (default 15; built once if missing)
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
rows=${1:-100000}
reps=${2:-5}

ensure_deps
build_and_install
echo "on $("$PG_CONFIG" --version)"
dir=$(make_workdir)
trap 'stop_cluster "$dir"; rm -rf "$dir"' EXIT
start_cluster "$dir" "shared_buffers = 256MB" "max_wal_size = 4GB" "checkpoint_timeout = 30min"
cp "$REPO/test/fixtures/harbor.sql" "$REPO/bench/plpgsql_trigger.sql" "$dir/"

psql -qX -v ON_ERROR_STOP=1 -d postgres <<SQL
\i $dir/harbor.sql
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances();
CREATE EXTENSION p2p_preheat;
-- measured here: the validation trigger alone (the push/schedule sync trigger
-- maintains the event cache on policy saves and is left out of all three runs)
DROP TRIGGER p2p_preheat_policy_sync ON p2p_preheat_policy;
\i $dir/plpgsql_trigger.sql
-- realistic rows: Harbor's columns, one Dragonfly instance, extra_attrs as the
-- proposal's UI writes them; two documents per row so every update changes it
INSERT INTO p2p_preheat_policy (name, project_id, provider_id, filters, trigger, enabled,
	creation_time, update_time, extra_attrs)
SELECT 'policy-' || g, 1, 1, '[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]',
	'{"type":"event_based","trigger_setting":{"cron":""}}', true, now(), now(), NULL
  FROM generate_series(1, $rows) g;
-- two kinds of document, two of each so that every update changes the
-- value: "single_peer" (a, a2), which the trigger stores as
-- "single_seed_peer" (parse, set, print: the row is rewritten), and
-- documents stored as written (b, b2)
CREATE TABLE docs AS
SELECT g AS id,
	json_build_object('scope', 'single_peer', 'cluster_ids', json_build_array(1 + g % 7, 8 + g % 5))::json AS a,
	json_build_object('scope', 'single_peer', 'cluster_ids', json_build_array(2 + g % 7, 9 + g % 5))::json AS a2,
	json_build_object('scope', 'all_peers', 'cluster_ids', json_build_array(1 + g % 3),
		'timeout', '30m', 'count', 1 + g % 200)::json AS b,
	json_build_object('scope', 'all_peers', 'cluster_ids', json_build_array(2 + g % 3),
		'timeout', '31m', 'count', 1 + g % 200)::json AS b2
  FROM generate_series(1, $rows) g;
CREATE INDEX ON docs (id);
ANALYZE;
CREATE FUNCTION run_update(col text) RETURNS float8 LANGUAGE plpgsql AS \$f\$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
	EXECUTE format('UPDATE p2p_preheat_policy p SET extra_attrs = d.%I, update_time = now() FROM docs d WHERE d.id = p.id', col);
	RETURN extract(epoch FROM clock_timestamp() - t0) * 1000;
END
\$f\$;
SQL

# variant: none | c | plpgsql
set_trigger() {
	psql -qX -d postgres -c "SET client_min_messages = warning; DROP TRIGGER IF EXISTS p2p_preheat_extra_attrs ON p2p_preheat_policy;
		DROP TRIGGER IF EXISTS bench_plpgsql ON p2p_preheat_policy;" >/dev/null
	case $1 in
	# the validation trigger alone, as attach() creates it (attach() would
	# also bring back the sync trigger and sync every policy)
	c) psql -qX -d postgres -c "CREATE TRIGGER p2p_preheat_extra_attrs BEFORE INSERT OR UPDATE ON p2p_preheat_policy
		FOR EACH ROW EXECUTE FUNCTION p2p_preheat.policy_trigger()" >/dev/null ;;
	plpgsql) psql -qX -d postgres -c "CREATE TRIGGER bench_plpgsql BEFORE INSERT OR UPDATE ON p2p_preheat_policy
		FOR EACH ROW EXECUTE FUNCTION bench_plpgsql_extra_attrs()" >/dev/null ;;
	esac
}

declare -A best
for variant in none c plpgsql; do
	set_trigger "$variant"
	for kind in a b; do
		times=()
		for ((i = 0; i < reps; i++)); do
			# alternate the two documents of this kind: every update changes the value
			if [ $((i % 2)) -eq 0 ]; then col=$kind; else col=${kind}2; fi
			psql -qX -d postgres -c "VACUUM p2p_preheat_policy" >/dev/null
			times+=("$(psql -qXAt -d postgres -c "SELECT run_update('$col')")")
		done
		med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
		best[$variant$kind]=$med
		printf '%-8s %s %d rows: median %.1f ms over %d runs (%s)\n' "$variant" \
			"$([ $kind = a ] && echo 'rewritten (single_peer)' || echo 'stored as written      ')" \
			"$rows" "$med" "$reps" "$(printf '%.0f ' "${times[@]}")"
	done
done
awk -v na="${best[nonea]}" -v nb="${best[noneb]}" -v ca="${best[ca]}" -v cb="${best[cb]}" \
	-v pa="${best[plpgsqla]}" -v pb="${best[plpgsqlb]}" -v rows="$rows" 'BEGIN {
	n = (na + nb) / 2; c = (ca + cb) / 2; p = (pa + pb) / 2
	printf "per row, half of each kind: none %.2f us, C %.2f us, PL/pgSQL %.2f us\n", n*1000/rows, c*1000/rows, p*1000/rows
	printf "C trigger / no trigger = %.2fx (target <= 1.5x); stored as written %.2fx, rewritten %.2fx\n", c/n, cb/nb, ca/na
	printf "PL/pgSQL / C trigger   = %.2fx, whole UPDATE (target >= 3x)\n", p/c
	printf "trigger cost alone: C %.2f us/row, PL/pgSQL %.2f us/row: PL/pgSQL costs %.1fx the C trigger\n", (c-n)*1000/rows, (p-n)*1000/rows, (p-n)/(c-n)
}'
