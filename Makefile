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
	src/harbor_auth.o \
	src/harbor_token.o \
	src/dragonfly.o \
	src/dispatch.o \
	src/pacing.o \
	src/dispatch_sql.o \
	src/worker.o \
	src/doublestar.o

# The install script of the current version is built from the numbered
# files in sql/, one concern each (as pgvector does).  Released scripts of
# earlier versions, and upgrade scripts, are committed as they shipped.
DATA_built = p2p_preheat--$(EXT_VERSION).sql
DATA = $(filter-out sql/[0-9]%,$(wildcard sql/p2p_preheat--*.sql))

REGRESS = validate migrate event_trigger dispatch doublestar policy events operations
REGRESS_OPTS = --inputdir=test

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-cast-function-type -DP2P_PREHEAT_VERSION=\"$(EXT_VERSION)\"
SHLIB_LINK = -lcurl -lcrypto

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

p2p_preheat--$(EXT_VERSION).sql: $(sort $(wildcard sql/[0-9]*.sql))
	cat $^ > $@

# Lets test/run_all.sh run the same list without parsing this file.
print-regress:
	@echo $(REGRESS)
.PHONY: print-regress

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
