#!/usr/bin/env bash
# Every test of p2p_preheat, on each PostgreSQL major in PG_MAJORS (default
# "15 18"; PG_MAJORS=15 runs one).  Installs what is missing (PostgreSQL 18 is
# built once per machine, see test/lib/pg18.sh), starts the Dragonfly stand-in,
# and for each major: builds and installs the extension, starts a throwaway
# server, and runs the Makefile's PGXS targets against it (pg_regress,
# isolation, TAP).  Ends with "N passed, N failed" over test files and specs of
# all majors, and exits non-zero if any failed.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

PG_MAJORS=${PG_MAJORS:-"15 18"}

ensure_deps
for major in $PG_MAJORS; do use_pg_major "$major"; done    # builds 18 if missing
build_standin

work=$(make_workdir)
trap 'stop_standin; stop_cluster "$work/server"; rm -rf "$work"' EXIT

# The upgrade test (006) starts from PostgreSQL 15 with the extension: when
# 15 is not among the majors run here, install it there anyway.
case " $PG_MAJORS " in
*" 15 "*) ;;
*" 18 "*) use_pg_major 15 && build_and_install ;;
esac

rm -f "$REPO"/test/results/regression-*.diffs
passed=0
failed=0
failures=()

# count_regress LOG SUITE: add one pg_regress or isolation run's tests to the totals.
# Both the 15 ("All 9 tests passed.") and the 18 ("# All 9 tests passed.")
# summaries contain the phrases matched here.
count_regress() {
	local log=$1 suite=$2 all n total
	all=$(sed -n 's/.*All \([0-9]*\) tests passed.*/\1/p' "$log" | tail -1)
	if [ -n "$all" ]; then
		passed=$((passed + all))
		return
	fi
	n=$(sed -n 's/.* \([0-9]*\) of \([0-9]*\) tests failed.*/\1/p' "$log" | tail -1)
	total=$(sed -n 's/.* \([0-9]*\) of \([0-9]*\) tests failed.*/\2/p' "$log" | tail -1)
	if [ -n "$n" ]; then
		passed=$((passed + total - n))
		failed=$((failed + n))
	else
		failed=$((failed + 1))    # the suite did not get to run
	fi
	failures+=("$suite")
}

# count_tap LOG: one per test file prove reported ok (or skipped); the rest of
# test/t failed, including files a bail-out kept from running.
count_tap() {
	local log=$1 total ok
	total=$(ls "$REPO"/test/t/*.pl | wc -l)
	ok=$(grep -cE '^\[[0-9:]+\] \S+\.pl \.+ (ok|skipped)' "$log" || true)
	passed=$((passed + ok))
	failed=$((failed + total - ok))
	[ "$ok" -eq "$total" ] || failures+=("TAP ($PG_MAJOR)")
}

# Show and keep what a failed pg_regress or isolation run left behind (in
# test/results/, which the next major's "make clean" leaves alone).
keep_diffs() {
	local dir=$1 name=$2
	[ -f "$dir/regression.diffs" ] || return 0
	head -300 "$dir/regression.diffs"
	mkdir -p "$REPO/test/results"
	cp "$dir/regression.diffs" "$REPO/test/results/regression-$name.diffs"
	echo "(kept as test/results/regression-$name.diffs)"
}

for major in $PG_MAJORS; do
	use_pg_major "$major"
	version=$("$PG_CONFIG" --version)
	echo "==== $version ($PG_BIN)"
	build_and_install
	# the scratch previous release the upgrade test updates from
	make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install-test-fixtures >/dev/null
	# a stand-in of its own: its log and per-URL fault counters start empty
	stop_standin || true
	mkdir -p "$work/standin-$major"
	start_standin "$work/standin-$major" "${STANDIN_TEST_AUTH[@]}" --clusters 1,2

	# a copy of the tree the server's user can write in (results, tmp_check)
	tree="$work/tree-$major"
	mkdir -p "$tree"
	# (the whole source: the Quick start and package tests build from it)
	tar -C "$REPO" --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' -cf - . | tar -C "$tree" -xf -
	[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$tree"

	rm -rf "$work/server" && mkdir -p "$work/server"
	[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$work/server"
	mapfile -t conf < <(grep -v '^#' "$REPO/test/regress.conf")
	start_cluster "$work/server" "${conf[@]}"

	pgxs_make() {
		as_pg env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER" \
			DRAGONFLY_PORT="$DRAGONFLY_PORT" DRAGONFLY_LOG="$DRAGONFLY_LOG" \
			make -C "$tree" --no-print-directory PG_CONFIG="$PG_CONFIG" "$@"
	}

	echo "---- $version: pg_regress (make installcheck, regression suite)"
	pgxs_make installcheck ISOLATION= TAP_TESTS= 2>&1 | tee "$work/regress-$major.log" || true
	count_regress "$work/regress-$major.log" "pg_regress ($major)"
	keep_diffs "$tree" "pg$major"

	echo "---- $version: isolation (make installcheck, isolation specs)"
	pgxs_make installcheck REGRESS= TAP_TESTS= 2>&1 | tee "$work/isolation-$major.log" || true
	count_regress "$work/isolation-$major.log" "isolation ($major)"
	keep_diffs "$tree/output_iso" "isolation-pg$major"

	stop_cluster "$work/server"

	echo "---- $version: TAP (make prove_installcheck)"
	pgxs_make prove_installcheck 2>&1 | tee "$work/tap-$major.log" || true
	count_tap "$work/tap-$major.log"
	if ! grep -q '^Result: PASS' "$work/tap-$major.log"; then
		for f in "$tree"/tmp_check/log/regress_log_*; do
			[ -f "$f" ] && { echo "== $f"; tail -40 "$f"; }
		done
	fi
	echo "==== $version done"
done

[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
