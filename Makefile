# PGXS build of p2p_preheat.  PG_CONFIG may be overridden: make PG_CONFIG=/path/to/pg_config
EXTENSION = p2p_preheat
MODULE_big = p2p_preheat
OBJS = \
	src/p2p_preheat.o \
	src/extra_attrs.o \
	src/json_soft.o \
	src/policy_trigger.o \
	src/extra_attrs_sql.o \
	src/http.o \
	src/harbor_auth.o \
	src/dragonfly.o \
	src/dispatch.o \
	src/queue_sql.o \
	src/worker.o \
	src/doublestar.o \
	src/oci_names.o

# Install and upgrade scripts live in sql/ and start with "p2p_preheat--";
# every other file in sql/ is a pg_regress test.
DATA = $(wildcard sql/p2p_preheat--*.sql)

REGRESS = validate migrate event_trigger dispatch policy events operations upgrade hostile
REGRESS_OPTS = --inputdir=test

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-cast-function-type -DP2P_PREHEAT_VERSION=\"$(EXT_VERSION)\"
SHLIB_LINK = -lcurl -lcrypto
EXT_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" p2p_preheat.control)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Lets test/run_all.sh run the same list without parsing this file.
print-regress:
	@echo $(REGRESS)
.PHONY: print-regress

# PGXS does not track headers: rebuild every object when any header changes.
$(OBJS): $(wildcard src/*.h)
