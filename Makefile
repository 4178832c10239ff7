# PGXS build of p2p_preheat.  PG_CONFIG may be overridden: make PG_CONFIG=/path/to/pg_config
EXTENSION = p2p_preheat
EXT_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" p2p_preheat.control)

MODULE_big = p2p_preheat
OBJS = \
	src/p2p_preheat.o \
	src/extra_attrs.o \
	src/json_soft.o \
	src/policy_trigger.o \
	src/extra_attrs_sql.o \
	src/harbor.o \
	src/http.o \
	src/http_channel.o \
	src/http_process.o \
	src/harbor_auth.o \
	src/harbor_token.o \
	src/dragonfly.o \
	src/kraken.o \
	src/dispatch.o \
	src/pacing.o \
	src/dispatch_sql.o \
	src/worker.o \
	src/doublestar.o \
	src/events.o \
	src/oci_names.o \
	src/enqueue.o

# The install script of the current version is built from the numbered
# files in sql/, one concern each (as pgvector does).  Released scripts of
# earlier versions, and upgrade scripts, are committed as they shipped.
DATA_built = p2p_preheat--$(EXT_VERSION).sql
DATA = $(filter-out sql/[0-9]%,$(wildcard sql/p2p_preheat--*.sql))

# Tests, PGXS's way, against a running server (PGHOST, PGPORT, PGUSER) of the
# PostgreSQL that PG_CONFIG names, with the Dragonfly stand-in up:
#   make installcheck          pg_regress (test/sql, test/expected), then the
#                              isolation specs (test/isolation), then TAP
#   make prove_installcheck    the TAP tests alone (test/t; each starts its own
#                              clusters with PostgreSQL::Test::Cluster)
# test/run_all.sh does all of it on each supported major.  The tests read
# these environment variables:
#   DRAGONFLY_PORT     the stand-in's loopback port (required)
#   DRAGONFLY_LOG      the stand-in's request log (required)
#   P2P_TEST_FIXTURES  test/fixtures as the server sees it (default: this tree's)
#   HARBOR_FIXTURE     Harbor's tables for TAP tests (default: this tree's)
#   FUZZ_GENERATOR     document generator of 005_fuzz.pl (default: this tree's)
#   FUZZ_DOCS          documents 005_fuzz.pl checks (default 100000)
#   P2P_OLD_BINDIR     PostgreSQL 15's bindir for 006_pg_upgrade.pl
#                      (default /usr/lib/postgresql/15/bin)
# "setup", the first pg_regress test, stores in the server what only its
# configuration can hold (secret files, stand-in address): ALTER SYSTEM and
# ALTER ROLE.
REGRESS = setup validate migrate event_trigger dispatch doublestar policy events operations hostile enqueue
REGRESS_OPTS = --inputdir=test
ISOLATION = $(basename $(notdir $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation
TAP_TESTS = 1
PROVE_TESTS = $(wildcard test/t/*.pl)
export P2P_TEST_FIXTURES ?= $(abspath test/fixtures)
export HARBOR_FIXTURE ?= $(abspath test/fixtures/harbor.sql)
export FUZZ_GENERATOR ?= $(abspath test/fuzz/gen_extra_attrs.py)
export P2P_PREHEAT_README ?= $(abspath README.md)

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-cast-function-type -DP2P_PREHEAT_VERSION=\"$(EXT_VERSION)\"
SHLIB_LINK = -lcurl -lcrypto -Wl,--version-script=$(srcdir)/exports.map

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

p2p_preheat--$(EXT_VERSION).sql: $(sort $(wildcard sql/[0-9]*.sql))
	cat $^ > $@

# prove prints each file's time; Makefile.global empties PROVE_FLAGS, so
# this comes after it (make PROVE_FLAGS=... still overrides).
PROVE_FLAGS = --timer

prove_installcheck:
	$(prove_installcheck)
.PHONY: prove_installcheck

# PGXS does not track headers: rebuild every object when any header changes.
$(OBJS): $(wildcard src/*.h)

# The upgrade test (test/t/011_catalog.pl) installs the previous release and
# updates it.  While 1.0 is the only release, a scratch copy of this
# version's script stands in as version 0.9, with an empty upgrade script.
install-test-fixtures: p2p_preheat--$(EXT_VERSION).sql
	$(INSTALL_DATA) p2p_preheat--$(EXT_VERSION).sql '$(DESTDIR)$(datadir)/extension/p2p_preheat--0.9.sql'
	echo '-- scratch upgrade for the upgrade test: 0.9 is a copy of $(EXT_VERSION)' > p2p_preheat--0.9--$(EXT_VERSION).sql
	$(INSTALL_DATA) p2p_preheat--0.9--$(EXT_VERSION).sql '$(DESTDIR)$(datadir)/extension/'
	rm -f p2p_preheat--0.9--$(EXT_VERSION).sql
.PHONY: install-test-fixtures
