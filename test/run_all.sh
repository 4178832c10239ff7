#!/usr/bin/env bash
# Every test of p2p_preheat: installs what is missing, builds and installs the
# extension, then runs the pg_regress suite against a throwaway cluster that
# pg_regress starts and stops itself.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

ensure_deps
build_and_install

work=$(make_workdir)
trap 'rm -rf "$work"' EXIT
cp -r "$REPO/sql" "$REPO/expected" "$REPO/test" "$work/"
start_standin "$work" "${STANDIN_TEST_AUTH[@]}"
trap 'stop_standin; rm -rf "$work"' EXIT
# paths known only now: the secret files the suite's instances use
cat >>"$work/test/regress.conf" <<CONF
p2p_preheat.secret_key_file = '$work/test/fixtures/harbor_secret.key'
p2p_preheat.registry_credentials_file = '$work/test/fixtures/registry_robot.json'
CONF
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$work"

tests=$(make -C "$REPO" -s --no-print-directory print-regress 2>/dev/null || true)
status=0
cd "$work"
as_pg "$PGXS_DIR/../test/regress/pg_regress" \
	--temp-instance="$work/tmp_check" \
	--temp-config="$work/test/regress.conf" \
	--bindir="$PG_BIN" \
	--inputdir="$work" --outputdir="$work" \
	--dbname=contrib_regression \
	$tests || status=$?
if [ $status -ne 0 ]; then
	cat "$work/regression.diffs" 2>/dev/null | head -300
	cp "$work/regression.diffs" "$REPO/regression.diffs" 2>/dev/null || true
	mkdir -p "$REPO/results" && cp "$work"/results/*.out "$REPO/results/" 2>/dev/null || true
	echo "pg_regress failed" >&2
	exit $status
fi
echo "all tests passed"
