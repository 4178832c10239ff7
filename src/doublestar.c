/*
 * doublestar.c
 *		Harbor's repository and tag patterns, matched with PostgreSQL's own
 *		regex engine.
 *
 * Harbor matches filters with the doublestar rules: "*" within a path
 * segment, "**" as a whole segment across segments (zero or more), "?" one
 * character of a segment, "[...]" classes, "{a,b}" alternatives (nested),
 * and "\" escapes.  A pattern is translated once into an anchored regex,
 * compiled by pg_regcomp, and kept in a backend-local cache, so a push that
 * is checked against hundreds of policies compiles nothing.
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "regex/regex.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "compat.h"

PG_FUNCTION_INFO_V1(p2p_preheat_doublestar_regex);
PG_FUNCTION_INFO_V1(p2p_preheat_doublestar_match);

#define MAX_PATTERN 1024
#define CACHE_SIZE 4096

/* Append c to the regex as a literal. */
static void
literal(StringInfo re, char c)
{
	if (strchr("\\^$.|?*+()[]{}", c))
		appendStringInfoChar(re, '\\');
	appendStringInfoChar(re, c);
}

/*
 * Translate a doublestar pattern into an anchored ARE.  Returns NULL with
 * *error set when the pattern is malformed (unclosed class or brace).
 */
static char *
to_regex(const char *p, const char **error)
{
	StringInfoData re;
	int			braces = 0;
	int			len = strlen(p);

	initStringInfo(&re);
	appendStringInfoString(&re, "^(?:");
	for (int i = 0; i < len; i++)
	{
		char		c = p[i];

		switch (c)
		{
			case '*':
				if (i + 1 < len && p[i + 1] == '*' &&
					(i == 0 || p[i - 1] == '/' || p[i - 1] == '{' || p[i - 1] == ',') &&
					(i + 2 == len || p[i + 2] == '/' || p[i + 2] == '}' || p[i + 2] == ','))
				{
					/* "**" as a whole segment: zero or more segments */
					i++;
					if (i + 1 < len && p[i + 1] == '/')
					{
						appendStringInfoString(&re, "(?:[^/]*/)*");
						i++;
					}
					else if (re.len > 4 && re.data[re.len - 1] == '/')
					{
						/* a trailing slash-doublestar also matches the directory itself */
						re.len--;
						re.data[re.len] = '\0';
						appendStringInfoString(&re, "(?:/.*)?");
					}
					else
						appendStringInfoString(&re, ".*");
				}
				else
				{
					while (i + 1 < len && p[i + 1] == '*')
						i++;		/* "a**b" is just "*" */
					appendStringInfoString(&re, "[^/]*");
				}
				break;
			case '?':
				appendStringInfoString(&re, "[^/]");
				break;
			case '[':
				{
					int			j = i + 1;

					appendStringInfoChar(&re, '[');
					if (j < len && (p[j] == '!' || p[j] == '^'))
					{
						appendStringInfoChar(&re, '^');
						j++;
					}
					if (j < len && p[j] == ']')
					{
						appendStringInfoString(&re, "\\]");
						j++;
					}
					for (; j < len && p[j] != ']'; j++)
					{
						if (p[j] == '\\' && j + 1 < len)
							j++;
						if (p[j] == '\\' || p[j] == '[' || p[j] == ']')
							appendStringInfoChar(&re, '\\');
						appendStringInfoChar(&re, p[j]);
					}
					if (j >= len)
					{
						*error = "unclosed [ in pattern";
						return NULL;
					}
					appendStringInfoChar(&re, ']');
					i = j;
					break;
				}
			case '{':
				braces++;
				appendStringInfoString(&re, "(?:");
				break;
			case ',':
				if (braces > 0)
					appendStringInfoChar(&re, '|');
				else
					literal(&re, c);
				break;
			case '}':
				if (braces == 0)
				{
					literal(&re, c);
					break;
				}
				braces--;
				appendStringInfoChar(&re, ')');
				break;
			case '\\':
				if (i + 1 < len)
					i++;
				literal(&re, p[i]);
				break;
			default:
				literal(&re, c);
				break;
		}
	}
	if (braces > 0)
	{
		*error = "unclosed { in pattern";
		return NULL;
	}
	appendStringInfoString(&re, ")$");
	return re.data;
}

typedef struct CachedPattern
{
	char		pattern[MAX_PATTERN + 1];	/* hash key */
	bool		valid;
	regex_t		re;
} CachedPattern;

static HTAB *cache = NULL;
static MemoryContext cache_cxt = NULL;	/* pg_regcomp allocates with palloc */

static CachedPattern *
compiled(const char *pattern)
{
	CachedPattern *cp;
	bool		found;
	char		key[MAX_PATTERN + 1] = {0};

	if (strlen(pattern) > MAX_PATTERN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("pattern is longer than %d bytes", MAX_PATTERN)));
	if (cache == NULL)
	{
		HASHCTL		ctl = {0};

		ctl.keysize = MAX_PATTERN + 1;
		ctl.entrysize = sizeof(CachedPattern);
		cache = hash_create("p2p_preheat patterns", 256, &ctl, HASH_ELEM | HASH_STRINGS);
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat compiled patterns",
										  ALLOCSET_SMALL_SIZES);
	}
	strlcpy(key, pattern, sizeof(key));
	cp = hash_search(cache, key, HASH_FIND, NULL);
	if (cp)
		return cp;

	/* bounded: drop everything when full; patterns are few in practice */
	if (hash_get_num_entries(cache) >= CACHE_SIZE)
	{
		HASH_SEQ_STATUS st;
		CachedPattern *e;

		hash_seq_init(&st, cache);
		while ((e = hash_seq_search(&st)) != NULL)
		{
			if (e->valid)
				pg_regfree(&e->re);
			hash_search(cache, e->pattern, HASH_REMOVE, NULL);
		}
	}

	cp = hash_search(cache, key, HASH_ENTER, &found);
	cp->valid = false;
	{
		const char *error = NULL;
		char	   *re = to_regex(pattern, &error);

		if (re)
		{
			int			len = strlen(re);
			pg_wchar   *wre = palloc((len + 1) * sizeof(pg_wchar));
			int			wlen = pg_mb2wchar_with_len(re, wre, len);
			MemoryContext old = MemoryContextSwitchTo(cache_cxt);

			cp->valid = pg_regcomp(&cp->re, wre, wlen, REG_ADVANCED | REG_NOSUB,
								   C_COLLATION_OID) == REG_OKAY;
			MemoryContextSwitchTo(old);
			pfree(wre);
		}
	}
	return cp;
}

/* doublestar_regex(pattern text) returns text: the regex a pattern becomes */
Datum
p2p_preheat_doublestar_regex(PG_FUNCTION_ARGS)
{
	char	   *pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *error = NULL;
	char	   *re = to_regex(pattern, &error);

	if (re == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_REGULAR_EXPRESSION),
				 errmsg("invalid pattern \"%s\": %s", pattern, error)));
	PG_RETURN_TEXT_P(cstring_to_text(re));
}

/*
 * doublestar_match(pattern text, name text) returns boolean.  A malformed
 * pattern matches nothing (Harbor's matcher fails the same way).
 */
Datum
p2p_preheat_doublestar_match(PG_FUNCTION_ARGS)
{
	char	   *pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *name = PG_GETARG_TEXT_PP(1);
	CachedPattern *cp = compiled(pattern);
	int			len = VARSIZE_ANY_EXHDR(name);
	pg_wchar   *wname;
	int			wlen;
	int			rc;

	if (!cp->valid)
		PG_RETURN_BOOL(false);
	wname = palloc((len + 1) * sizeof(pg_wchar));
	wlen = pg_mb2wchar_with_len(VARDATA_ANY(name), wname, len);
	rc = pg_regexec(&cp->re, wname, wlen, 0, NULL, 0, NULL, 0);
	pfree(wname);
	PG_RETURN_BOOL(rc == REG_OKAY);
}
