# PostgreSQL 18 for the tests and benchmarks.  Debian 12 packages only 15, and
# Harbor 2.16 runs 18, so we build 18 (and pg_cron for it) from source once per
# machine into a cache keyed by version, outside the repository.
#
# Variables (all optional):
#   PG18_VERSION   version to build (18.6)
#   PG18_PREFIX    install prefix, the cache (/var/cache/p2p_preheat/pg-$PG18_VERSION)
#   PG18_TARBALL   PostgreSQL source tarball
#                  (default: shared/reference/postgresql-18_$PG18_VERSION.orig.tar.bz2
#                  beside the repository)
#   PG_CRON_TARBALL pg_cron source tarball
#                  (default: shared/reference/pg_cron-1.6-16618e6.tar.gz beside the repository)
#
# Without the tarball, the source comes from Debian's postgresql-18 source package
# (suite sid), fetched through a private apt sources list; the machine's own
# lists are never touched.  Sourced by test/lib/common.sh; needs $REPO.

PG18_VERSION=${PG18_VERSION:-18.6}
PG18_PREFIX=${PG18_PREFIX:-/var/cache/p2p_preheat/pg-$PG18_VERSION}
_pg18_shared=$(cd "$REPO/.." && pwd)/shared/reference
PG18_TARBALL=${PG18_TARBALL:-$_pg18_shared/postgresql-18_$PG18_VERSION.orig.tar.bz2}
PG_CRON_TARBALL=${PG_CRON_TARBALL:-$_pg18_shared/pg_cron-1.6-16618e6.tar.gz}

# The stamp is written last: a cache without it is a build that was interrupted.
_pg18_done() { [ -f "$PG18_PREFIX/.p2p_preheat-complete" ]; }

# Fetch Debian's source package into $1 and print the path of its orig tarball.
_pg18_debian_source() {
	local dir=$1 uri
	# The mirror the machine already uses, asked for suite sid.
	uri=$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
	[ -n "$uri" ] || uri=$(sed -n 's/^deb \(http[^ ]*\/debian\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
	[ -n "$uri" ] || return 1
	mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial"
	echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main" >"$dir/sources.list"
	local opts=(-o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=-
		-o Dir::State="$dir/state" -o Dir::Cache="$dir/cache" -o APT::Get::List-Cleanup=0
		-o APT::Sandbox::User=root)
	echo "fetching postgresql-18 source from Debian (suite sid)..." >&2
	apt-get "${opts[@]}" update -qq >&2 || return 1
	(cd "$dir" && apt-get "${opts[@]}" source --download-only -qq postgresql-18 >&2) || return 1
	local got
	got=$(ls "$dir"/postgresql-18_*.orig.tar.* 2>/dev/null | head -1)
	case $got in
	*"_$PG18_VERSION.orig.tar."*) echo "$got" ;;
	"") return 1 ;;
	*)
		echo "Debian's source package is ${got##*/}, not $PG18_VERSION: set PG18_VERSION to build it" >&2
		return 1
		;;
	esac
}

_pg18_fail() {
	echo "PostgreSQL $PG18_VERSION build failed ($1); last lines of $2:" >&2
	tail -40 "$2" >&2
	return 1
}

_pg18_build() {
	local src=$PG18_TARBALL build log
	build=$(mktemp -d /tmp/p2p_preheat-pg18.XXXXXX)
	log=$build/build.log
	if [ ! -f "$src" ]; then
		src=$(_pg18_debian_source "$build/apt") || src=
		if [ -z "$src" ]; then
			cat >&2 <<MSG
PostgreSQL $PG18_VERSION source not found: no tarball at
  $PG18_TARBALL
and Debian's postgresql-18 source package could not be fetched.
Get postgresql-18_$PG18_VERSION.orig.tar.bz2 (PostgreSQL's release tarball) and either put it
there or point PG18_TARBALL at it, or use an already built PostgreSQL 18 with
PG18_PREFIX=/its/prefix (it needs pg_cron, dblink and the TAP test modules).
MSG
			rm -rf "$build"
			return 1
		fi
	fi
	need_packages bison flex libssl-dev libipc-run-perl pkg-config || return 1
	rm -rf "$PG18_PREFIX"
	mkdir -p "$PG18_PREFIX"
	echo "building PostgreSQL $PG18_VERSION into $PG18_PREFIX (about 5 minutes; log: $log)..."
	tar -xf "$src" -C "$build" || { echo "cannot unpack $src" >&2; return 1; }
	local top
	top=$(find "$build" -maxdepth 1 -type d -name 'postgresql-*' | head -1)
	(
		set -e
		cd "$top"
		./configure --prefix="$PG18_PREFIX" --without-icu --without-readline --without-zlib \
			--with-openssl --enable-tap-tests
		make -j2
		make install
		# what the suites use beyond the core: dblink, the isolation
		# tester, and the Perl modules PGXS's prove_installcheck loads
		make -C contrib/dblink install
		make -C src/test/isolation install
		make -C src/test/perl install
	) >"$log" 2>&1 || { _pg18_fail "see the log" "$log"; return 1; }
	echo "building pg_cron for PostgreSQL $PG18_VERSION..."
	[ -f "$PG_CRON_TARBALL" ] || {
		echo "pg_cron source not found at $PG_CRON_TARBALL (set PG_CRON_TARBALL)" >&2
		return 1
	}
	mkdir -p "$build/pg_cron"
	(
		set -e
		tar -xzf "$PG_CRON_TARBALL" -C "$build/pg_cron" --strip-components=1
		cd "$build/pg_cron"
		make -j2 PG_CONFIG="$PG18_PREFIX/bin/pg_config"
		make install PG_CONFIG="$PG18_PREFIX/bin/pg_config"
	) >>"$log" 2>&1 || { _pg18_fail "pg_cron" "$log"; return 1; }
	# servers run as postgres and must read (not write) the installation
	chmod -R a+rX "$PG18_PREFIX"
	touch "$PG18_PREFIX/.p2p_preheat-complete"
	rm -rf "$build"
	echo "PostgreSQL $PG18_VERSION ready in $PG18_PREFIX"
}

# ensure_pg18: build PostgreSQL 18 and pg_cron unless the cache has them.
# Two runs at once wait for each other instead of building twice.
ensure_pg18() {
	_pg18_done && return 0
	mkdir -p "$(dirname "$PG18_PREFIX")"
	(
		flock 9
		_pg18_done || _pg18_build
	) 9>"$PG18_PREFIX.lock"
}
