/*
 * doublestar.c
 *		Harbor's repository and tag patterns, matched with PostgreSQL's own
 *		regex engine.
 *
 * Harbor matches its preheat filters with bmatcuk/doublestar v1.3.4, and an
 * empty pattern means "no filter".  The rules we reproduce, and the few odd
 * corners we do not, are in docs/harbor-and-dragonfly.md, section "Repository
 * and tag patterns".  A pattern is translated once into an anchored regex,
 * compiled by pg_regcomp, and kept in a backend-local cache, so a push that
 * is checked against hundreds of policies compiles nothing.
 *
 * Compiling is the costly step: alternatives that hold wildcards make the
 * regex compiler's work grow much faster than the pattern.  The pattern, the
 * regex, and the number of such wildcards are therefore capped, and
 * pg_regcomp's cancel requests become ordinary interrupts, so neither a
 * hostile pattern nor statement_timeout leaves a backend stuck.
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "miscadmin.h"
#include "regex/regex.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "compat.h"
#include "doublestar.h"

PG_FUNCTION_INFO_V1(p2p_preheat_doublestar_regex);
PG_FUNCTION_INFO_V1(p2p_preheat_doublestar_match);

/* Harbor keeps all filters of a policy in a varchar(1024). */
#define MAX_PATTERN 1024
/* Beyond these, compiling takes tens of milliseconds or more. */
#define MAX_REGEX 4096
#define MAX_GROUP_WILDCARDS 64

#define CACHE_SIZE 1024
#define CACHE_BYTES (32 * 1024 * 1024)

/* A regex that matches nothing: a "/" that is not a "/". */
#define NEVER "(?!/)/"

/* What comes right after a run of the pattern, seen through closing braces. */
typedef enum Follow
{
	FOLLOW_END,					/* the end of the pattern */
	FOLLOW_SLASH,				/* a "/" */
	FOLLOW_OTHER
} Follow;

typedef struct Translation
{
	const char *p;				/* the whole pattern */
	StringInfoData re;
	int			group_wildcards;	/* wildcards inside {...} */
	const char *error;			/* NULL, or why the pattern is malformed */
	const char *hint;
	int			error_at;		/* 1-based character position */
} Translation;

static bool translate_run(Translation *t, int start, int end, Follow follow, bool top);

static bool
fail(Translation *t, int at, const char *error, const char *hint)
{
	t->error = error;
	t->hint = hint;
	t->error_at = pg_mbstrlen_with_len(t->p, at) + 1;
	return false;
}

/* Append the character at p as a literal outside brackets. */
static void
literal(StringInfo re, const char *p, int len)
{
	if (len == 1 && strchr("\\^$.|?*+()[]{}", *p))
		appendStringInfoChar(re, '\\');
	appendBinaryStringInfo(re, p, len);
}

/* Append the character at p as a literal inside brackets. */
static void
bracket_literal(StringInfo re, const char *p, int len)
{
	if (len == 1 && strchr("\\[]^-", *p))
		appendStringInfoChar(re, '\\');
	appendBinaryStringInfo(re, p, len);
}

/*
 * Append s unless the regex already ends with it: "** / **" is "**", and
 * chains of them cost the regex compiler dearly.
 */
static void
append_once(StringInfo re, const char *s)
{
	int			len = strlen(s);

	if (re->len >= len && memcmp(re->data + re->len - len, s, len) == 0)
		return;
	appendStringInfoString(re, s);
}

static pg_wchar
code_of(const char *p, int len)
{
	pg_wchar	w[2];

	pg_mb2wchar_with_len(p, w, len);
	return w[0];
}

/*
 * What follows the run that ends at end (exclusive) when the enclosing run
 * ends at outer_end with outer_follow after it.
 */
static Follow
follow_at(const char *p, int end, int outer_end, Follow outer_follow)
{
	if (end >= outer_end)
		return outer_follow;
	return p[end] == '/' ? FOLLOW_SLASH : FOLLOW_OTHER;
}

/*
 * A character class "[...]" starting at i.  Like doublestar, the class ends
 * at the first "]" not right after a backslash, "^" (only) negates, "\"
 * escapes, "-" makes a range, and the class never matches "/".  A range
 * whose ends are reversed matches nothing.
 */
static bool
translate_class(Translation *t, int i, int end, int *next)
{
	const char *p = t->p;
	int			from = i + 1;
	int			close = -1;
	int			j;
	bool		negate;
	StringInfoData items;

	for (j = from; j < end; j++)
	{
		if (p[j] != ']')
			continue;
		if (j > from && p[j - 1] == '\\')
		{
			from = j + 1;
			continue;
		}
		close = j;
		break;
	}
	if (close < 0)
		return fail(t, i, "\"[\" is not closed",
					"Close the character class with \"]\", or write a literal \"[\" as \"\\[\".");
	if (close == i + 1)
		return fail(t, i, "the character class is empty",
					"A class needs at least one character; write a literal \"[]\" as \"\\[\\]\".");

	initStringInfo(&items);
	j = i + 1;
	negate = p[j] == '^';
	if (negate)
		j++;
	while (j < close)
	{
		int			lo,
					lo_len,
					hi,
					hi_len;

		if (p[j] == '-')
			return fail(t, j, "a \"-\" in a character class has no start",
						"Put a literal \"-\" in a class as \"\\-\".");
		if (p[j] == '\\')
		{
			if (++j >= close)
				return fail(t, j - 1, "the character class ends with \"\\\"",
							"Follow \"\\\" with the character it makes literal.");
		}
		lo = j;
		lo_len = pg_mblen(p + j);
		j += lo_len;
		hi = lo;
		hi_len = lo_len;
		if (j < close && p[j] == '-')
		{
			if (++j >= close)
				return fail(t, j - 1, "a range in a character class has no end",
							"Put a literal \"-\" in a class as \"\\-\".");
			if (p[j] == '-')
				return fail(t, j, "a range in a character class ends with \"-\"",
							"Put a literal \"-\" in a class as \"\\-\".");
			if (p[j] == '\\')
			{
				if (++j >= close)
					return fail(t, j - 1, "the character class ends with \"\\\"",
								"Follow \"\\\" with the character it makes literal.");
			}
			hi = j;
			hi_len = pg_mblen(p + j);
			j += hi_len;
		}
		if (code_of(p + lo, lo_len) > code_of(p + hi, hi_len))
			continue;			/* doublestar: matches nothing, no error */
		bracket_literal(&items, p + lo, lo_len);
		if (hi != lo)
		{
			appendStringInfoChar(&items, '-');
			bracket_literal(&items, p + hi, hi_len);
		}
	}

	if (negate)
	{
		appendStringInfoString(&t->re, "[^/");
		appendBinaryStringInfo(&t->re, items.data, items.len);
		appendStringInfoChar(&t->re, ']');
	}
	else if (items.len == 0)
		appendStringInfoString(&t->re, NEVER);
	else
	{
		appendStringInfoString(&t->re, "(?!/)[");
		appendBinaryStringInfo(&t->re, items.data, items.len);
		appendStringInfoChar(&t->re, ']');
	}
	pfree(items.data);
	*next = close + 1;
	return true;
}

/*
 * Alternatives "{a,b,...}" starting at i, split the way doublestar splits
 * them: only braces and backslashes count, so a "," or "}" inside a class
 * still ends an alternative.
 */
static bool
translate_group(Translation *t, int i, int end, Follow follow, int *next)
{
	const char *p = t->p;
	int			depth = 1;
	int			j;
	int			opt = i + 1;
	Follow		after;
	List	   *cuts = NIL;
	ListCell   *lc;

	for (j = i + 1; j < end; j++)
	{
		CHECK_FOR_INTERRUPTS();
		if (p[j] == '\\')
			j++;
		else if (p[j] == '{')
			depth++;
		else if (p[j] == '}' && --depth == 0)
			break;
		else if (p[j] == ',' && depth == 1)
			cuts = lappend_int(cuts, j);
	}
	if (j >= end)
		return fail(t, i, "\"{\" is not closed",
					"Close the alternatives with \"}\", or write a literal \"{\" as \"\\{\".");
	cuts = lappend_int(cuts, j);
	after = follow_at(p, j + 1, end, follow);

	appendStringInfoString(&t->re, "(?:");
	foreach(lc, cuts)
	{
		int			cut = lfirst_int(lc);

		if (opt > i + 1)
			appendStringInfoChar(&t->re, '|');
		if (!translate_run(t, opt, cut, after, false))
			return false;
		opt = cut + 1;
	}
	appendStringInfoChar(&t->re, ')');
	list_free(cuts);
	*next = j + 1;
	return true;
}

/*
 * Translate p[start, end).  follow says what comes after end; top is true
 * only for the whole pattern, where a leading "**" can span segments.
 */
static bool
translate_run(Translation *t, int start, int end, Follow follow, bool top)
{
	const char *p = t->p;
	bool		segment_start = top;	/* at the start, or right after "**" "/" */
	int			i = start;

	while (i < end)
	{
		char		c = p[i];
		Follow		f;

		CHECK_FOR_INTERRUPTS();

		/* "**" that is a whole leading segment: zero or more segments */
		if (segment_start && c == '*' && i + 1 < end && p[i + 1] == '*')
		{
			f = follow_at(p, i + 2, end, follow);
			if (f == FOLLOW_END)
			{
				appendStringInfoString(&t->re, ".*");
				i += 2;
				continue;
			}
			if (f == FOLLOW_SLASH && i + 2 < end)
			{
				append_once(&t->re, "(?:[^/]*/)*");
				i += 3;
				continue;
			}
		}
		segment_start = false;

		switch (c)
		{
			case '/':
				/* slash-doublestar as a whole segment */
				if (i + 2 < end && p[i + 1] == '*' && p[i + 2] == '*')
				{
					f = follow_at(p, i + 3, end, follow);
					if (f != FOLLOW_OTHER && !top)
						t->group_wildcards++;
					if (f == FOLLOW_END)
					{
						/* one or more further segments, even empty ones */
						appendStringInfoString(&t->re, "/.*");
						i += 3;
						continue;
					}
					if (f == FOLLOW_SLASH)
					{
						/* zero or more segments before the next "/" */
						append_once(&t->re, "(?:/[^/]*)*");
						i += 3;
						continue;
					}
				}
				appendStringInfoChar(&t->re, '/');
				i++;
				break;
			case '*':
				{
					/*
					 * Stars within a segment.  Like doublestar: a star
					 * followed by more of the segment leaves that rest at
					 * least one character, and three or more stars never
					 * match an empty segment.
					 */
					int			stars = 0;

					while (i < end && p[i] == '*')
						i++, stars++;
					f = follow_at(p, i, end, follow);
					if (f == FOLLOW_OTHER)
						appendStringInfoString(&t->re, "[^/]*(?=[^/])");
					else
						appendStringInfoString(&t->re, stars >= 3 ? "[^/]+" : "[^/]*");
					if (!top)
						t->group_wildcards++;
					break;
				}
			case '?':
				appendStringInfoString(&t->re, "[^/]");
				if (!top)
					t->group_wildcards++;
				i++;
				break;
			case '[':
				if (!translate_class(t, i, end, &i))
					return false;
				if (!top)
					t->group_wildcards++;
				break;
			case '{':
				if (!translate_group(t, i, end, follow, &i))
					return false;
				break;
			case '\\':
				if (i + 1 >= end)
					return fail(t, i, "the pattern ends with \"\\\"",
								"Follow \"\\\" with the character it makes literal, e.g. \"\\\\\" for a backslash.");
				i++;
				if (p[i] == '/')
					appendStringInfoString(&t->re, NEVER);	/* names never hold "\/" */
				else
					literal(&t->re, p + i, pg_mblen(p + i));
				i += pg_mblen(p + i);
				break;
			default:
				/* also "}" and "," outside alternatives: literal */
				literal(&t->re, p + i, pg_mblen(p + i));
				i += pg_mblen(p + i);
				break;
		}
	}
	return true;
}

/*
 * Translate a pattern into an anchored ARE; ereport 22023 when it is
 * malformed or too large.
 */
static char *
to_regex(const char *pattern)
{
	Translation t = {0};
	int			len = strlen(pattern);

	if (len > MAX_PATTERN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("doublestar pattern is too long"),
				 errdetail("The pattern is %d bytes; the limit is %d bytes.", len, MAX_PATTERN),
				 errhint("Harbor keeps a policy's filters in 1024 characters; use a shorter pattern.")));

	t.p = pattern;
	initStringInfo(&t.re);
	appendStringInfoString(&t.re, "^(?:");
	if (len == 0)
		appendStringInfoString(&t.re, ".*");	/* Harbor: no pattern, no filter */
	else if (!translate_run(&t, 0, len, FOLLOW_END, true))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid doublestar pattern \"%s\"", pattern),
				 errdetail("At character %d: %s.", t.error_at, t.error),
				 errhint("%s", t.hint)));
	appendStringInfoString(&t.re, ")$");

	if (t.re.len > MAX_REGEX || t.group_wildcards > MAX_GROUP_WILDCARDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("doublestar pattern \"%s\" is too complex", pattern),
				 t.re.len > MAX_REGEX ?
				 errdetail("It becomes a regular expression of %d characters; the limit is %d.",
						   t.re.len, MAX_REGEX) :
				 errdetail("It has %d wildcards inside alternatives; the limit is %d.",
						   t.group_wildcards, MAX_GROUP_WILDCARDS),
				 errhint("Use fewer alternatives and wildcards, or split the policy in two.")));
	return t.re.data;
}

typedef struct CachedPattern
{
	char		pattern[MAX_PATTERN + 1];	/* hash key */
	regex_t		re;
	int			prefix_len;		/* bytes every match starts with (literal_prefix) */
} CachedPattern;

static HTAB *cache = NULL;
static MemoryContext cache_cxt = NULL;	/* pg_regcomp allocates with palloc */

/* Forget every compiled pattern. */
static void
flush_cache(void)
{
	HASH_SEQ_STATUS st;
	CachedPattern *e;

	hash_seq_init(&st, cache);
	while ((e = hash_seq_search(&st)) != NULL)
		hash_search(cache, e->pattern, HASH_REMOVE, NULL);
	MemoryContextReset(cache_cxt);
}

/*
 * How many leading bytes of the pattern every name it matches starts with:
 * the literal characters before the first wildcard, class, alternative or
 * escape (translate_run copies them as they are), less a "/" that starts
 * a slash-doublestar, which may stand for no segment at all.  Most names
 * fail here, before the regex engine runs.
 */
static int
literal_prefix(const char *p)
{
	int			i = 0;

	while (p[i] != '\0' && strchr("*?[{\\", p[i]) == NULL &&
		   !(p[i] == '/' && p[i + 1] == '*' && p[i + 2] == '*'))
		i++;
	return i;
}

static CachedPattern *
compiled(const char *pattern)
{
	CachedPattern *cp;
	char		key[MAX_PATTERN + 1] = {0};
	char	   *re;
	pg_wchar   *wre;
	int			wlen;
	int			rc;
	regex_t		compiled_re;
	MemoryContext old;

	if (cache == NULL)
	{
		HASHCTL		ctl = {0};

		ctl.keysize = MAX_PATTERN + 1;
		ctl.entrysize = sizeof(CachedPattern);
		cache = hash_create("p2p_preheat patterns", 256, &ctl, HASH_ELEM | HASH_STRINGS);
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat compiled patterns",
										  ALLOCSET_SMALL_SIZES);
	}
	if (strlen(pattern) <= MAX_PATTERN)
	{
		strlcpy(key, pattern, sizeof(key));
		cp = hash_search(cache, key, HASH_FIND, NULL);
		if (cp)
			return cp;
	}

	re = to_regex(pattern);
	wre = palloc((strlen(re) + 1) * sizeof(pg_wchar));
	wlen = pg_mb2wchar_with_len(re, wre, strlen(re));

	/* bounded: start again when full; patterns are few in practice */
	if (hash_get_num_entries(cache) >= CACHE_SIZE ||
		MemoryContextMemAllocated(cache_cxt, true) > CACHE_BYTES)
		flush_cache();

	old = MemoryContextSwitchTo(cache_cxt);
	rc = pg_regcomp(&compiled_re, wre, wlen, REG_ADVANCED | REG_NOSUB, C_COLLATION_OID);
	MemoryContextSwitchTo(old);
	pfree(wre);
	if (rc != REG_OKAY)
	{
		char		msg[100];

		/* REG_CANCEL: a pending interrupt, such as statement_timeout */
		CHECK_FOR_INTERRUPTS();
		pg_regerror(rc, &compiled_re, msg, sizeof(msg));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("doublestar pattern \"%s\" cannot be compiled: %s", pattern, msg),
				 errdetail("Its regular expression is: %s", re)));
	}

	/* only a compiled pattern enters the cache, so an error leaves no trace */
	cp = hash_search(cache, key, HASH_ENTER, NULL);
	cp->re = compiled_re;
	cp->prefix_len = literal_prefix(pattern);
	return cp;
}

/* doublestar_regex(pattern text) returns text: the regex a pattern becomes */
Datum
p2p_preheat_doublestar_regex(PG_FUNCTION_ARGS)
{
	char	   *pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(to_regex(pattern)));
}

/*
 * Whether name (len bytes) matches a Harbor doublestar pattern.  A malformed
 * pattern is an error, as it is for Harbor, whose preheat then fails.
 */
bool
doublestar_matches(const char *pattern, const char *name, int len)
{
	CachedPattern *cp = compiled(pattern);
	regex_t    *re = &cp->re;
	pg_wchar   *wname;
	int			wlen;
	int			rc;

	if (len < cp->prefix_len || memcmp(name, cp->pattern, cp->prefix_len) != 0)
		return false;
	wname = palloc((len + 1) * sizeof(pg_wchar));
	wlen = pg_mb2wchar_with_len(name, wname, len);
	rc = pg_regexec(re, wname, wlen, 0, NULL, 0, NULL, 0);
	pfree(wname);
	if (rc != REG_OKAY && rc != REG_NOMATCH)
	{
		char		msg[100];

		CHECK_FOR_INTERRUPTS();
		pg_regerror(rc, re, msg, sizeof(msg));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_REGULAR_EXPRESSION),
				 errmsg("doublestar pattern \"%s\" failed to match: %s", pattern, msg)));
	}
	return rc == REG_OKAY;
}

/* doublestar_match(pattern text, name text) returns boolean */
Datum
p2p_preheat_doublestar_match(PG_FUNCTION_ARGS)
{
	char	   *pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *name = PG_GETARG_TEXT_PP(1);

	PG_RETURN_BOOL(doublestar_matches(pattern, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)));
}
