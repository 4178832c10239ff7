#!/usr/bin/env bash
# Builds the Debian package postgresql-<major>-p2p-preheat with pg_buildext
# (debian/), as `dpkg-buildpackage -us -uc` in a scratch copy of the source
# tree, so that neither the tree nor its parent directory is written.  The
# .deb lands in OUTDIR (default: dist/), and its contents are checked: the
# library, the control file and the install script the Makefile builds.
# Usage: bash scripts/build_deb.sh [OUTDIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)

missing=()
for p in dpkg-dev debhelper postgresql-server-dev-all libcurl4-openssl-dev libssl-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || { echo "missing packages: ${missing[*]} (run as root, or install them)" >&2; exit 1; }
	echo "== installing the build dependencies: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scratch=$(mktemp -d /tmp/p2p_preheat-deb.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
src="$scratch/p2p-preheat"
mkdir "$src"
# the source as committed, plus uncommitted edits; never build outputs
tar -C "$repo" --exclude=.git --exclude=./dist --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=tmp_check --exclude=./results --exclude='./regression.*' -cf - . | tar -C "$src" -xf -
rm -f "$src"/p2p_preheat--*.sql	# the install script the Makefile builds

version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
echo "== dpkg-buildpackage -us -uc (p2p-preheat $version, PostgreSQL $(cd "$src" && pg_buildext supported-versions | xargs))"
start=$(date +%s)
(cd "$src" && dpkg-buildpackage -us -uc) >"$scratch/build.log" 2>&1 || {
	tail -40 "$scratch/build.log" >&2
	echo "dpkg-buildpackage failed" >&2
	exit 1
}
echo "   built in $(($(date +%s) - start)) s"

status=0
for deb in "$scratch"/postgresql-*-p2p-preheat_*.deb; do
	[ -e "$deb" ] || { echo "no package was built" >&2; exit 1; }
	major=$(basename "$deb" | sed 's/^postgresql-\([0-9]*\)-.*/\1/')
	echo "== $(basename "$deb")"
	dpkg-deb -c "$deb" | awk '$NF !~ /\/$/ {print "   " $NF}'
	for f in "./usr/lib/postgresql/$major/lib/p2p_preheat.so" \
		"./usr/share/postgresql/$major/extension/p2p_preheat.control" \
		"./usr/share/postgresql/$major/extension/p2p_preheat--1.0.sql"; do
		dpkg-deb -c "$deb" | awk '{print $NF}' | grep -qx "$f" || { echo "missing from the package: $f" >&2; status=1; }
	done
	echo "   Depends: $(dpkg-deb -f "$deb" Depends)"
	cp "$deb" "$out/"
done
[ $status -eq 0 ] || exit 1
echo "== the packages are in $out"
