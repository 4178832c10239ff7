/*
 * extra_attrs.c
 *		Validation of a preheat policy's extra_attrs against Dragonfly's rules.
 *
 * Dragonfly ignores unknown keys, falls back silently on unknown scopes and
 * answers a wrong type with a 422 only when a preheat finally runs.  Every
 * rule it applies to preheat arguments (docs/harbor-and-dragonfly.md,
 * "Creating a preheat") is checked here, at save time, so the mistake is
 * reported to whoever made it.
 *
 * The document is parsed once, without throwing (so extra_attrs_problems()
 * can report bad text as a row), into an in-memory JsonbValue that is walked
 * directly; a jsonb is built only when the caller wants the normalized
 * object.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/varlena.h"

#include "extra_attrs.h"
#include "json_soft.h"

#define EA_MAX_DEPTH		32	/* deeper than any real provider argument */
#define EA_SHOWN_BYTES		40	/* values longer than this are cut short */
#define EA_MAX_CLUSTER_IDS	1000
#define EA_MAX_CLUSTER_ID	INT64CONST(4294967295)

bool		ea_allow_unknown_attrs = false;
int			ea_max_size_kb = 64;

typedef enum AttrKind
{
	AK_SCOPE,
	AK_CLUSTER_IDS,
	AK_PLATFORM,
	AK_STRING,
	AK_INT,
	AK_IPS,
	AK_TIMEOUT,
	AK_PER_JOB,					/* filled in by the dispatcher for each job */
	AK_CREDENTIAL				/* secrets: never stored in a policy */
} AttrKind;

typedef struct AttrRule
{
	const char *name;
	AttrKind	kind;
	int64		min;
	int64		max;
	bool		all_scopes_only;	/* Dragonfly ignores it for single_* */
} AttrRule;

/* Sorted by name, like jsonb keys of equal length; looked up linearly. */
static const AttrRule dragonfly_rules[] = {
	{"application", AK_STRING, 0, 0, false},
	{"cluster_ids", AK_CLUSTER_IDS, 0, 0, false},
	{"concurrent_peer_count", AK_INT, 1, 1000, false},
	{"concurrent_task_count", AK_INT, 1, 100, false},
	{"count", AK_INT, 1, 200, true},
	{"filtered_query_params", AK_STRING, 0, 0, false},
	{"headers", AK_CREDENTIAL, 0, 0, false},
	{"ips", AK_IPS, 1, 100, true},
	{"password", AK_CREDENTIAL, 0, 0, false},
	{"percentage", AK_INT, 1, 100, true},
	{"piece_length", AK_INT, 4194304, 67108864, false},
	{"platform", AK_PLATFORM, 0, 0, false},
	{"scope", AK_SCOPE, 0, 0, false},
	{"tag", AK_STRING, 0, 0, false},
	{"timeout", AK_TIMEOUT, 0, 0, false},
	{"type", AK_PER_JOB, 0, 0, false},
	{"url", AK_PER_JOB, 0, 0, false},
	{"username", AK_CREDENTIAL, 0, 0, false},
};

/* Accepted scope names and the name Dragonfly is sent. */
static const char *const scope_names[][2] = {
	{"single_peer", "single_seed_peer"},	/* the proposal's name */
	{"all_peers", "all_peers"},
	{"single_seed_peer", "single_seed_peer"},
	{"all_seed_peers", "all_seed_peers"},
};

/* Names people write for cluster_ids that are too far for edit distance. */
static const char *const key_aliases[][2] = {
	{"scheduler_cluster_ids", "cluster_ids"},
	{"clusters", "cluster_ids"},
	{"cluster", "cluster_ids"},
	{"peers", "scope"},
};

typedef struct EaState
{
	List	   *problems;
	bool		stop_at_first;
} EaState;

static bool
enough(EaState *st)
{
	return st->stop_at_first && st->problems != NIL;
}

static void
add_problem(EaState *st, int sqlstate, const char *path,
			const char *detail, const char *hint, const char *fmt,...)
pg_attribute_printf(6, 7);

static void
add_problem(EaState *st, int sqlstate, const char *path,
			const char *detail, const char *hint, const char *fmt,...)
{
	EaProblem  *p = palloc0(sizeof(EaProblem));
	StringInfoData buf;

	if (enough(st))
		return;
	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	p->sqlstate = sqlstate;
	p->path = pstrdup(path);
	p->problem = buf.data;
	p->detail = detail ? pstrdup(detail) : NULL;
	p->hint = hint ? pstrdup(hint) : NULL;
	st->problems = lappend(st->problems, p);
}

/* JSON text of a string, cut to a readable length. */
static char *
shown_string(const char *s, int len)
{
	StringInfoData buf;
	int			cut = len;
	char	   *copy;

	if (len > EA_SHOWN_BYTES)
		cut = pg_mbcliplen(s, len, EA_SHOWN_BYTES);
	copy = pnstrdup(s, cut);
	initStringInfo(&buf);
	escape_json(&buf, copy);
	if (cut < len)
		appendStringInfoString(&buf, "...");
	return buf.data;
}

/* A value as JSON text for a message, cut short if long. */
static char *
shown_value(const JsonbValue *v)
{
	StringInfoData buf;

	switch (v->type)
	{
		case jbvNull:
			return pstrdup("null");
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvString:
			return shown_string(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			{
				char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
																	NumericGetDatum(v->val.numeric)));

				if (strlen(s) > EA_SHOWN_BYTES)
					strcpy(s + EA_SHOWN_BYTES, "...");
				return s;
			}
		case jbvArray:
		case jbvObject:
			{
				Jsonb	   *j = JsonbValueToJsonb((JsonbValue *) v);

				initStringInfo(&buf);
				JsonbToCString(&buf, &j->root, VARSIZE(j));
			}
			if (buf.len > EA_SHOWN_BYTES)
			{
				buf.len = pg_mbcliplen(buf.data, buf.len, EA_SHOWN_BYTES);
				buf.data[buf.len] = '\0';
				appendStringInfoString(&buf, "...");
			}
			return buf.data;
		default:
			return pstrdup("?");
	}
}

static const char *
type_name(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvBool:
			return "a boolean";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvArray:
			return "an array";
		case jbvObject:
			return "an object";
		default:
			return "a value";
	}
}

/* "cluster_ids", or ["odd key"] for keys that are not plain identifiers. */
static char *
key_path(const char *key, int len)
{
	bool		plain = len > 0 && len <= EA_SHOWN_BYTES &&
		(isalpha((unsigned char) key[0]) || key[0] == '_');

	for (int i = 0; plain && i < len; i++)
		if (!isalnum((unsigned char) key[i]) && key[i] != '_')
			plain = false;
	if (plain)
		return pnstrdup(key, len);
	return psprintf("[%s]", shown_string(key, len));
}

typedef enum WholeNumber
{
	WN_OK,
	WN_NOT_NUMBER,
	WN_FRACTION,
	WN_HUGE
} WholeNumber;

/* Whole numbers only: Dragonfly decodes these into Go integers. */
static WholeNumber
whole_number(const JsonbValue *v, int64 *out)
{
	static Numeric int64_min = NULL;
	static Numeric int64_max = NULL;
	Datum		num;

	if (v->type != jbvNumeric)
		return WN_NOT_NUMBER;
	num = NumericGetDatum(v->val.numeric);
	if (DatumGetInt32(DirectFunctionCall1(numeric_scale, num)) > 0)
		return WN_FRACTION;
	if (int64_min == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		int64_min = int64_to_numeric(PG_INT64_MIN);
		int64_max = int64_to_numeric(PG_INT64_MAX);
		MemoryContextSwitchTo(old);
	}
	if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, num, NumericGetDatum(int64_min))) < 0 ||
		DatumGetInt32(DirectFunctionCall2(numeric_cmp, num, NumericGetDatum(int64_max))) > 0)
		return WN_HUGE;
	*out = DatumGetInt64(DirectFunctionCall1(numeric_int8, num));
	return WN_OK;
}

/* Checks v is a whole number in [min, max]; returns false with a problem. */
static bool
check_int(EaState *st, const char *path, const JsonbValue *v,
		  int64 min, int64 max, const char *what, int64 *out)
{
	int64		n = 0;

	switch (whole_number(v, &n))
	{
		case WN_NOT_NUMBER:
			add_problem(st, ERRCODE_CHECK_VIOLATION, path, NULL, NULL,
						"%s is %s: %s is a whole number from " INT64_FORMAT " to " INT64_FORMAT,
						shown_value(v), type_name(v), what, min, max);
			return false;
		case WN_FRACTION:
			add_problem(st, ERRCODE_CHECK_VIOLATION, path,
						"Dragonfly decodes this argument as an integer and rejects fractions.",
						NULL,
						"%s is not a whole number: %s is a whole number from " INT64_FORMAT " to " INT64_FORMAT,
						shown_value(v), what, min, max);
			return false;
		case WN_HUGE:
			n = max + 1;
			/* FALLTHROUGH */
		case WN_OK:
			if (n < min || n > max)
			{
				add_problem(st, ERRCODE_CHECK_VIOLATION, path, NULL, NULL,
							"%s is out of range: %s is a whole number from " INT64_FORMAT " to " INT64_FORMAT,
							shown_value(v), what, min, max);
				return false;
			}
	}
	if (out)
		*out = n;
	return true;
}

/* The closest known argument name, or NULL if nothing is close. */
static const char *
closest_key(const char *key, int len)
{
	char	   *lower = pnstrdup(key, Min(len, 255));
	const char *best = NULL;
	int			best_dist = INT_MAX;

	for (char *c = lower; *c; c++)
		*c = pg_tolower((unsigned char) *c);
	for (int i = 0; i < lengthof(key_aliases); i++)
		if (strcmp(lower, key_aliases[i][0]) == 0)
			return key_aliases[i][1];
	for (int i = 0; i < lengthof(dragonfly_rules); i++)
	{
		const char *name = dragonfly_rules[i].name;
		int			dist;

		if (dragonfly_rules[i].kind == AK_PER_JOB ||
			dragonfly_rules[i].kind == AK_CREDENTIAL)
			continue;
		dist = varstr_levenshtein(lower, strlen(lower), name, strlen(name),
								  1, 1, 1, true);
		if (dist < best_dist)
		{
			best_dist = dist;
			best = name;
		}
	}
	if (best && best_dist <= Max(2, (int) strlen(best) / 3))
		return best;
	return NULL;
}

static const AttrRule *
find_rule(const char *key, int len)
{
	for (int i = 0; i < lengthof(dragonfly_rules); i++)
		if (strlen(dragonfly_rules[i].name) == len &&
			memcmp(dragonfly_rules[i].name, key, len) == 0)
			return &dragonfly_rules[i];
	return NULL;
}

/* Returns the name sent to Dragonfly, or NULL if s is not a scope. */
static const char *
scope_sent(const char *s, int len)
{
	for (int i = 0; i < lengthof(scope_names); i++)
		if (strlen(scope_names[i][0]) == len &&
			memcmp(scope_names[i][0], s, len) == 0)
			return scope_names[i][1];
	return NULL;
}

static bool
check_platform(const char *s, int len)
{
	int			parts = 1;
	int			seglen = 0;

	if (len == 0)
		return true;			/* Dragonfly uses the manager's platform */
	for (int i = 0; i < len; i++)
	{
		char		c = s[i];

		if (c == '/')
		{
			if (seglen == 0)
				return false;
			parts++;
			seglen = 0;
		}
		else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
				 c == '_' || c == '.' || c == '-')
			seglen++;
		else
			return false;
	}
	return seglen > 0 && (parts == 2 || parts == 3);
}

/*
 * Go's time.ParseDuration: a sequence of decimal numbers, each with an
 * optional fraction and a unit (ns, us, µs, ms, s, m, h).
 */
bool
ea_parse_duration(const char *s, int64 *ns)
{
	static const struct
	{
		const char *unit;
		int64		ns;
	}			units[] = {
		{"ns", 1}, {"us", 1000}, {"\xc2\xb5s", 1000}, {"\xce\xbcs", 1000},
		{"ms", 1000000}, {"s", INT64CONST(1000000000)},
		{"m", INT64CONST(60000000000)}, {"h", INT64CONST(3600000000000)},
	};
	bool		neg = false;
	int64		total = 0;

	if (*s == '-' || *s == '+')
		neg = (*s++ == '-');
	if (strcmp(s, "0") == 0)
	{
		*ns = 0;
		return true;
	}
	if (*s == '\0')
		return false;
	while (*s)
	{
		int64		whole = 0;
		double		frac = 0,
					scale = 1;
		bool		digits = false;
		int			ulen = 0;
		int			u;
		int64		part;

		for (; isdigit((unsigned char) *s); s++, digits = true)
		{
			if (whole > (PG_INT64_MAX - 9) / 10)
				return false;
			whole = whole * 10 + (*s - '0');
		}
		if (*s == '.')
			for (s++; isdigit((unsigned char) *s); s++, digits = true)
			{
				scale *= 10;
				frac = frac * 10 + (*s - '0');
			}
		if (!digits)
			return false;
		while (s[ulen] && s[ulen] != '.' && !isdigit((unsigned char) s[ulen]))
			ulen++;
		for (u = 0; u < lengthof(units); u++)
			if (strlen(units[u].unit) == ulen &&
				strncmp(units[u].unit, s, ulen) == 0)
				break;
		if (u == lengthof(units))
			return false;
		s += ulen;
		if (whole > PG_INT64_MAX / units[u].ns)
			return false;
		part = whole * units[u].ns + (int64) (frac / scale * (double) units[u].ns);
		if (part < 0 || total > PG_INT64_MAX - part)
			return false;
		total += part;
	}
	*ns = neg ? -total : total;
	return true;
}

static void
check_cluster_ids(EaState *st, const char *key, const JsonbValue *v)
{
	int			n;
	int64	   *ids;

	if (v->type != jbvArray)
	{
		add_problem(st, ERRCODE_CHECK_VIOLATION, key,
					"cluster_ids is sent to Dragonfly as scheduler_cluster_ids, a list of cluster ids.",
					"Write an array such as [1, 2]; [] means all clusters.",
					"%s is %s, not an array of cluster ids", shown_value(v), type_name(v));
		return;
	}
	n = v->val.array.nElems;
	if (n > EA_MAX_CLUSTER_IDS)
	{
		add_problem(st, ERRCODE_CHECK_VIOLATION, key, NULL,
					"An empty array means all clusters.",
					"has %d entries; at most %d cluster ids are allowed", n, EA_MAX_CLUSTER_IDS);
		return;
	}
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		char	   *path = psprintf("%s[%d]", key, i);
		int64		id;

		if (check_int(st, path, &v->val.array.elems[i], 1, EA_MAX_CLUSTER_ID,
					  "a cluster id", &id))
		{
			for (int j = 0; j < i; j++)
				if (ids[j] == id)
				{
					add_problem(st, ERRCODE_CHECK_VIOLATION, path, NULL,
								"Remove the repeated id.",
								"cluster id " INT64_FORMAT " is listed twice (also at %s[%d])",
								id, key, j);
					break;
				}
		}
		else
			id = -1;
		ids[i] = id;
		if (enough(st))
			return;
	}
}

static void
check_ips(EaState *st, const char *key, const JsonbValue *v)
{
	int			n;

	if (v->type != jbvArray)
	{
		add_problem(st, ERRCODE_CHECK_VIOLATION, key, NULL,
					"Write an array of peer IP addresses such as [\"10.0.0.5\"].",
					"%s is %s, not an array of IP addresses", shown_value(v), type_name(v));
		return;
	}
	n = v->val.array.nElems;
	if (n < 1 || n > 100)
	{
		add_problem(st, ERRCODE_CHECK_VIOLATION, key, NULL, NULL,
					"has %d entries; Dragonfly accepts 1 to 100 IP addresses", n);
		return;
	}
	for (int i = 0; i < n; i++)
	{
		JsonbValue *elem = &v->val.array.elems[i];
		char		addr[sizeof(struct in6_addr)];
		char	   *s;

		s = elem->type == jbvString ? pnstrdup(elem->val.string.val, elem->val.string.len) : NULL;
		if (s == NULL || strlen(s) != elem->val.string.len ||
			(inet_pton(AF_INET, s, addr) != 1 && inet_pton(AF_INET6, s, addr) != 1))
			add_problem(st, ERRCODE_CHECK_VIOLATION, psprintf("%s[%d]", key, i), NULL, NULL,
						"%s is not an IPv4 or IPv6 address", shown_value(elem));
		if (enough(st))
			return;
	}
}

/* Returns the value to send, or NULL when the attribute has a problem. */
static JsonbValue *
check_dragonfly_attr(EaState *st, const char *key, int keylen, JsonbValue *v,
					 const char *scope, const char *scope_written,
					 bool *peer_selector_seen)
{
	const AttrRule *rule = find_rule(key, keylen);
	char	   *path = key_path(key, keylen);
	int			nproblems = list_length(st->problems);
	JsonbValue *out = v;

	if (rule == NULL)
	{
		const char *near;

		if (ea_allow_unknown_attrs)
			return v;
		near = closest_key(key, keylen);
		add_problem(st, ERRCODE_CHECK_VIOLATION, path,
					"Dragonfly ignores arguments it does not know, so this one would have no effect.",
					near ? psprintf("Did you mean %s?", near) :
					"Known arguments: application, cluster_ids, concurrent_peer_count, "
					"concurrent_task_count, count, filtered_query_params, ips, percentage, "
					"piece_length, platform, scope, tag, timeout.",
					"not a Dragonfly preheat argument");
		return NULL;
	}

	if (rule->all_scopes_only)
	{
		if (scope == NULL || strncmp(scope, "all_", 4) != 0)
		{
			add_problem(st, ERRCODE_CHECK_VIOLATION, path,
						"Dragonfly ignores ips, count and percentage when it preheats a single seed peer.",
						"Set \"scope\" to \"all_peers\" or \"all_seed_peers\".",
						"applies only with scope all_peers or all_seed_peers (scope is %s)",
						scope_written ? scope_written : "not set, so single_seed_peer");
			return NULL;
		}
		if (*peer_selector_seen)
		{
			add_problem(st, ERRCODE_CHECK_VIOLATION, path,
						"Dragonfly uses one of ips, count and percentage and ignores the others.",
						"Keep only one of ips, count and percentage.",
						"ips, count and percentage are alternatives; only one may be set");
			return NULL;
		}
		*peer_selector_seen = true;
	}

	switch (rule->kind)
	{
		case AK_SCOPE:
			{
				const char *sent = v->type == jbvString ?
				scope_sent(v->val.string.val, v->val.string.len) : NULL;

				if (sent == NULL)
				{
					add_problem(st, ERRCODE_CHECK_VIOLATION, path,
								"Dragonfly would silently preheat a single seed peer instead.",
								"Use single_peer, all_peers, single_seed_peer or all_seed_peers.",
								"%s is not a preheat scope", shown_value(v));
					return NULL;
				}
				out = palloc(sizeof(JsonbValue));
				out->type = jbvString;
				out->val.string.val = (char *) sent;
				out->val.string.len = strlen(sent);
				break;
			}
		case AK_CLUSTER_IDS:
			check_cluster_ids(st, path, v);
			break;
		case AK_PLATFORM:
			if (v->type != jbvString ||
				!check_platform(v->val.string.val, v->val.string.len))
				add_problem(st, ERRCODE_CHECK_VIOLATION, path, NULL,
							"Write os/arch or os/arch/variant in lower case, such as \"linux/amd64\" or \"linux/arm/v7\".",
							"%s is not a platform of the form os/arch[/variant]", shown_value(v));
			break;
		case AK_STRING:
			if (v->type != jbvString)
				add_problem(st, ERRCODE_CHECK_VIOLATION, path, NULL, NULL,
							"%s is %s, not a string", shown_value(v), type_name(v));
			break;
		case AK_INT:
			check_int(st, path, v, rule->min, rule->max, path, NULL);
			break;
		case AK_IPS:
			check_ips(st, path, v);
			break;
		case AK_TIMEOUT:
			if (v->type == jbvString)
			{
				char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
				int64		ns;

				if (!ea_parse_duration(s, &ns) || ns <= 0)
				{
					add_problem(st, ERRCODE_CHECK_VIOLATION, path, NULL,
								"Write a positive duration such as \"30m\" or \"1h30m\", or integer nanoseconds.",
								"%s is not a positive duration", shown_value(v));
					return NULL;
				}
				/* Dragonfly rejects a string here: send nanoseconds. */
				out = palloc(sizeof(JsonbValue));
				out->type = jbvNumeric;
				out->val.numeric = int64_to_numeric(ns);
			}
			else
				check_int(st, path, v, 1, PG_INT64_MAX, "a timeout in nanoseconds", NULL);
			break;
		case AK_PER_JOB:
			add_problem(st, ERRCODE_CHECK_VIOLATION, path, NULL,
						"Remove it from extra_attrs.",
						"set by p2p_preheat for every job; a policy cannot set it");
			break;
		case AK_CREDENTIAL:
			add_problem(st, ERRCODE_CHECK_VIOLATION, path,
						"Policies are readable by every Harbor user; registry credentials are configured once by a superuser.",
						"Remove it from extra_attrs.",
						"registry credentials must not be stored in a policy");
			break;
	}
	return list_length(st->problems) == nproblems ? out : NULL;
}

/* Checks every argument of obj; returns what to send when all are valid. */
static JsonbValue *
check_dragonfly(EaState *st, JsonbValue *obj)
{
	int			n = obj->val.object.nPairs;
	JsonbPair  *pairs = obj->val.object.pairs;
	JsonbValue *out = palloc(sizeof(JsonbValue));
	const char *scope = NULL;
	const char *scope_written = NULL;
	bool		peer_selector_seen = false;

	for (int i = 0; i < n; i++)
		if (pairs[i].key.val.string.len == 5 &&
			memcmp(pairs[i].key.val.string.val, "scope", 5) == 0 &&
			pairs[i].value.type == jbvString)
		{
			scope = scope_sent(pairs[i].value.val.string.val,
							   pairs[i].value.val.string.len);
			scope_written = pnstrdup(pairs[i].value.val.string.val,
									 pairs[i].value.val.string.len);
		}

	out->type = jbvObject;
	out->val.object.nPairs = n;
	out->val.object.pairs = palloc(sizeof(JsonbPair) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *sent;

		sent = check_dragonfly_attr(st, pairs[i].key.val.string.val,
									pairs[i].key.val.string.len, &pairs[i].value,
									scope, scope_written, &peer_selector_seen);
		if (enough(st))
			return NULL;
		out->val.object.pairs[i] = pairs[i];
		if (sent)
			out->val.object.pairs[i].value = *sent;
	}
	return st->problems == NIL ? out : NULL;
}

bool
ea_vendor_is_dragonfly(const char *vendor)
{
	return vendor != NULL && pg_strcasecmp(vendor, "dragonfly") == 0;
}

static List *
check_doc(const char *vendor, const char *json, int len, bool stop_at_first,
		  Jsonb **normalized, JsonbValue **parsed)
{
	EaState		st = {0};
	JsonSoftError err;
	JsonbValue *root;
	JsonbValue *out;
	int			i = 0;

	st.stop_at_first = stop_at_first;
	if (normalized)
		*normalized = NULL;
	if (parsed)
		*parsed = NULL;

	/* a misspelt vendor would skip every check: Harbor knows only these two */
	if (vendor != NULL && !ea_vendor_is_dragonfly(vendor) && pg_strcasecmp(vendor, "kraken") != 0)
	{
		add_problem(&st, ERRCODE_INVALID_PARAMETER_VALUE, "", NULL,
					"Harbor's preheat instances are of vendor \"dragonfly\" or \"kraken\".",
					"unknown vendor \"%s\"; the known vendors are dragonfly and kraken", vendor);
		return st.problems;
	}

	if (len > ea_max_size_kb * 1024)
	{
		add_problem(&st, ERRCODE_CHECK_VIOLATION, "",
					NULL, "A superuser can raise p2p_preheat.max_extra_attrs_size.",
					"document is %d bytes, more than the %d kB limit", len, ea_max_size_kb);
		return st.problems;
	}
	/* Harbor 2.13's text column holds '' for a policy without attributes. */
	while (i < len && isspace((unsigned char) json[i]))
		i++;
	if (i == len)
		goto no_attrs;

	root = json_parse_soft(json, len, EA_MAX_DEPTH, &err);
	if (root == NULL)
	{
		add_problem(&st, err.sqlstate, "", err.detail, NULL, "%s", err.message);
		return st.problems;
	}

	if (root->type == jbvArray)
	{
		JsonbValue *v = root;

		if (root->val.array.rawScalar)
		{
			v = &root->val.array.elems[0];
			if (v->type == jbvNull)
				goto no_attrs;
		}
		add_problem(&st, ERRCODE_CHECK_VIOLATION, "", NULL,
					"Write an object such as {\"scope\": \"all_peers\", \"cluster_ids\": [1]}.",
					"%s is %s, not a JSON object", shown_value(v), type_name(v));
		return st.problems;
	}

	if (ea_vendor_is_dragonfly(vendor))
		out = check_dragonfly(&st, root);
	else
		out = root;				/* other providers own their arguments */
	if (normalized && st.problems == NIL)
		*normalized = JsonbValueToJsonb(out);
	if (parsed && st.problems == NIL)
		*parsed = root;
	return st.problems;

no_attrs:
	if (normalized)
	{
		JsonbParseState *ps = NULL;

		pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
		*normalized = JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
	}
	return NIL;
}

List *
ea_check(const char *vendor, const char *json, int len, bool stop_at_first,
		 Jsonb **normalized)
{
	return check_doc(vendor, json, len, stop_at_first, normalized, NULL);
}

List *
ea_check_parsed(const char *vendor, const char *json, int len, JsonbValue **parsed)
{
	return check_doc(vendor, json, len, false, NULL, parsed);
}

void
ea_report(const EaProblem *p, int nproblems, const char *who)
{
	const char *sep = p->path[0] ? ": " : "";
	char	   *more = NULL;

	if (nproblems > 1)
		more = psprintf("There %s %d more problem%s; p2p_preheat.extra_attrs_problems() lists them all.",
						nproblems > 2 ? "are" : "is", nproblems - 1, nproblems > 2 ? "s" : "");
	ereport(ERROR,
			(errcode(p->sqlstate),
			 who ? errmsg("invalid extra_attrs for %s: %s%s%s", who, p->path, sep, p->problem)
			 : errmsg("invalid extra_attrs: %s%s%s", p->path, sep, p->problem),
			 (p->detail && more) ? errdetail("%s\n%s", p->detail, more) :
			 p->detail ? errdetail("%s", p->detail) :
			 more ? errdetail("%s", more) : 0,
			 p->hint ? errhint("%s", p->hint) : 0));
	pg_unreachable();
}
