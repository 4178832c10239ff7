# Shared by the README's two commands and by bench/: find or install what the
# project needs on a Debian machine, build and install the extension, and run
# commands as an unprivileged user when we are root (initdb refuses root).

PG_MAJOR=${PG_MAJOR:-15}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

need_packages() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages: ${missing[*]} (run as root, or install them)" >&2
		return 1
	fi
	echo "installing: ${missing[*]}"
	apt-get update -qq -o DPkg::Lock::Timeout=600
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's PostgreSQL 15 is always installed: it is the system copy, the old
# side of the upgrade test, and its tools build the others.  PG_MAJOR (15 or
# 18) picks the server the caller uses; PG_CONFIG, when set, overrides it.
ensure_deps() {
	need_packages build-essential make gcc postgresql-15 postgresql-server-dev-15 \
		"postgresql-contrib" postgresql-15-cron postgresql-15-plpgsql-check libcurl4-openssl-dev libssl-dev \
		libmicrohttpd-dev libjson-c-dev libipc-run-perl perl python3 curl ca-certificates \
		openssl python3-jwt python3-cryptography prometheus-postgres-exporter debhelper postgresql-server-dev-all
	if [ -n "${PG_CONFIG:-}" ]; then
		use_pg_config "$PG_CONFIG"
	else
		use_pg_major "$PG_MAJOR"
	fi
}

# use_pg_major N: PostgreSQL N for what follows; 18 is built (once) if missing.
use_pg_major() {
	case $1 in
	15) use_pg_config /usr/lib/postgresql/15/bin/pg_config ;;
	18) ensure_pg18 && use_pg_config "$PG18_PREFIX/bin/pg_config" ;;
	*)
		echo "PostgreSQL $1 is not supported here (15 or 18)" >&2
		return 1
		;;
	esac
}

use_pg_config() {
	PG_CONFIG=$1
	PG_BIN=$("$PG_CONFIG" --bindir)
	PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")
	PG_MAJOR=$("$PG_CONFIG" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
	PATH="$PG_BIN:$PATH"    # psql and friends of the same major
	export PG_CONFIG PG_BIN PGXS_DIR PG_MAJOR PATH
}

# Objects built for another major must not be linked into this one: clean first.
build_and_install() {
	make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
	make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# A scratch directory the server's user can write to.
make_workdir() {
	local d
	d=$(mktemp -d /tmp/p2p_preheat.XXXXXX)
	chmod 755 "$d"
	if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$d"; fi
	echo "$d"
}

# Run a command as the server's user when we are root.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- env PATH="$PG_BIN:$PATH" "$@"
	else
		env PATH="$PG_BIN:$PATH" "$@"
	fi
}

# start_cluster DIR [postgresql.conf lines...]: a throwaway cluster listening
# only on a socket in DIR; sets PGHOST, PGPORT, PGUSER for the caller.
start_cluster() {
	local dir=$1
	shift
	as_pg initdb -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
	{
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "port = 5432"
		echo "fsync = off"
		for line in "$@"; do echo "$line"; done
	} >>"$dir/data/postgresql.conf"
	as_pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
	export PGHOST=$dir PGPORT=5432 PGUSER=postgres
}

stop_cluster() {
	as_pg pg_ctl -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

# start_standin DIR [options...]: the Dragonfly stand-in on a free loopback
# port; sets DRAGONFLY_PORT and DRAGONFLY_LOG.  Secrets the tests use are
# the stand-in's valid credentials.
start_standin() {
	local dir=$1
	shift
	rm -f "$dir/standin.port"
	"$STANDIN" --host 127.0.0.1 --port 0 \
		--port-file "$dir/standin.port" --log-file "$dir/standin.log" "$@" \
		>"$dir/standin.out" 2>&1 &
	STANDIN_PID=$!
	for _ in $(seq 1 100); do
		[ -s "$dir/standin.port" ] && break
		sleep 0.05
	done
	[ -s "$dir/standin.port" ] || { cat "$dir/standin.out" >&2; echo "stand-in did not start" >&2; return 1; }
	DRAGONFLY_PORT=$(cat "$dir/standin.port")
	DRAGONFLY_LOG="$dir/standin.log"
	export DRAGONFLY_PORT DRAGONFLY_LOG STANDIN_PID
}

stop_standin() {
	[ -n "${STANDIN_PID:-}" ] && kill "$STANDIN_PID" 2>/dev/null && wait "$STANDIN_PID" 2>/dev/null
	STANDIN_PID=
}

# The credentials the test suite's stand-in accepts (see test/fixtures/).
STANDIN_TEST_AUTH=(--token t-secret-1 --token t-encrypted-7 --basic d7y-user:d7y-pass-3
	--header X-Api-Key:k-custom-5 --inactive-token t-inactive-4)

# The C stand-in and its load generator (test/standin/).
build_standin() {
	make -C "$REPO/test/standin" -s >/dev/null
	STANDIN="$REPO/test/standin/dragonfly_standin"
	export STANDIN
}

# pg_net 0.20.4, the peer bench/peers.sh and bench/enqueue.sh measure against,
# built from its source tarball (PG_NET_TARBALL) under the bench's work
# directory and installed beside p2p_preheat.  need_pg_net_tarball fails
# early, before anything is built; build_pg_net DIR builds it in DIR/pg_net.
need_pg_net_tarball() {
	PG_NET_TARBALL=${PG_NET_TARBALL:-$REPO/../shared/reference/pg_net-0.20.4.tar.gz}
	if [ ! -f "$PG_NET_TARBALL" ]; then
		echo "pg_net's source tarball is missing: $PG_NET_TARBALL" >&2
		echo "set PG_NET_TARBALL to the path of pg_net-0.20.4.tar.gz" >&2
		exit 1
	fi
}
build_pg_net() {
	mkdir -p "$1/pg_net"
	tar -xzf "$PG_NET_TARBALL" -C "$1/pg_net" --strip-components=1
	make -C "$1/pg_net" -s PG_CONFIG="$PG_CONFIG" >/dev/null 2>&1
	make -C "$1/pg_net" -s PG_CONFIG="$PG_CONFIG" install >/dev/null 2>&1
}

# PostgreSQL 18 built from source, cached per machine (ensure_pg18).
source "$REPO/test/lib/pg18.sh"
