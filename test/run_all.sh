#!/usr/bin/env bash
# Every test of p2p_preheat: installs what is missing, builds and installs the
# extension, then runs the pg_regress suite against a throwaway cluster that
# pg_regress starts and stops itself.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

ensure_deps
build_and_install
make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install-test-fixtures >/dev/null
build_standin

work=$(make_workdir)
trap 'rm -rf "$work"' EXIT
cp -r "$REPO/test" "$work/"
# clusters 1 and 2 exist, as the tests name them; unknown ids are refused
start_standin "$work" "${STANDIN_TEST_AUTH[@]}" --clusters 1,2
trap 'stop_standin; rm -rf "$work"' EXIT
# paths known only now: the secret files the suite's instances use
cat >>"$work/test/regress.conf" <<CONF
p2p_preheat.secret_key_file = '$work/test/fixtures/harbor_secret.key'
p2p_preheat.registry_credentials_file = '$work/test/fixtures/registry_robot.json'
p2p_preheat_test.endpoint = 'http://127.0.0.1:$DRAGONFLY_PORT'
p2p_preheat_test.standin_log = '$DRAGONFLY_LOG'
CONF
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$work"

tests=$(make -C "$REPO" -s --no-print-directory print-regress 2>/dev/null || true)
status=0
cd "$work"
as_pg "$PGXS_DIR/../test/regress/pg_regress" \
	--temp-instance="$work/tmp_check" \
	--temp-config="$work/test/regress.conf" \
	--bindir="$PG_BIN" \
	--inputdir="$work/test" --outputdir="$work/test" \
	--dbname=contrib_regression \
	$tests || status=$?
report_failure() {
	cat "$1/regression.diffs" 2>/dev/null | head -300
	cp "$1/regression.diffs" "$REPO/regression.diffs" 2>/dev/null || true
	mkdir -p "$REPO/results" && cp "$1"/results/*.out "$REPO/results/" 2>/dev/null || true
	echo "$2 failed" >&2
	exit 1
}
[ $status -eq 0 ] || report_failure "$work/test" pg_regress

# isolation specs: concurrent sessions against their own throwaway instance
iso="$work/test/isolation"
as_pg "$PGXS_DIR/../test/isolation/pg_isolation_regress" \
	--temp-instance="$iso/tmp_check" \
	--temp-config="$work/test/regress.conf" \
	--bindir="$PG_BIN" \
	--inputdir="$iso" --outputdir="$iso" \
	$(cd "$REPO/test/isolation/specs" && ls *.spec | sed 's/\.spec$//') || report_failure "$iso" isolation

# TAP: the background worker on clusters of its own (PostgreSQL::Test::Cluster)
tap="$work/tap"
mkdir -p "$tap"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$tap"
as_pg env TESTDIR="$tap" PG_REGRESS="$PGXS_DIR/../test/regress/pg_regress" \
	PERL5LIB="$PGXS_DIR/../test/perl" \
	HARBOR_FIXTURE="$work/test/fixtures/harbor.sql" \
	P2P_PREHEAT_README="$REPO/README.md" \
	FUZZ_GENERATOR="$work/test/fuzz/gen_extra_attrs.py" \
	prove ${PROVE_FLAGS:-} "$work"/test/t/*.pl || {
	for f in "$tap"/tmp_check/log/regress_log_*; do tail -40 "$f"; done
	echo "TAP tests failed" >&2
	exit 1
}

echo "all tests passed"
