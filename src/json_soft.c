/*
 * json_soft.c
 *		JSON text to an in-memory JsonbValue in one pass, without throwing.
 *
 * PostgreSQL's JSON parser reports syntax errors, \u0000 and bad surrogates
 * as error codes; nesting is bounded by a scan before it recurses, and numbers
 * too long for numeric_in are noted instead of parsed, so nothing here can
 * raise an ERROR for any input.  Keys end up sorted with the last duplicate
 * kept, exactly as in jsonb.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "compat.h"
#include "json_soft.h"

#define MAX_NUMBER_CHARS 1000	/* numeric_in gives up near here */
#define SHOWN_NUMBER_CHARS 40

/* Depth of the deepest array or object, found without recursion. */
int
json_depth(const char *s, int len)
{
	int			depth = 0,
				max = 0;
	bool		in_string = false;

	for (int i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			depth++;
			max = Max(max, depth);
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return max;
}

typedef struct EaBuild
{
	JsonbParseState *ps;
	JsonbValue *root;
	bool		number_out_of_range;
	char	   *bad_number;
} EaBuild;

static P2P_JSON_CB
b_object_start(void *state)
{
	EaBuild    *b = state;

	if (!b->number_out_of_range)
		pushJsonbValue(&b->ps, WJB_BEGIN_OBJECT, NULL);
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
b_object_end(void *state)
{
	EaBuild    *b = state;

	if (!b->number_out_of_range)
		b->root = pushJsonbValue(&b->ps, WJB_END_OBJECT, NULL);
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
b_array_start(void *state)
{
	EaBuild    *b = state;

	if (!b->number_out_of_range)
		pushJsonbValue(&b->ps, WJB_BEGIN_ARRAY, NULL);
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
b_array_end(void *state)
{
	EaBuild    *b = state;

	if (!b->number_out_of_range)
		b->root = pushJsonbValue(&b->ps, WJB_END_ARRAY, NULL);
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
b_field_start(void *state, char *fname, bool isnull)
{
	EaBuild    *b = state;
	JsonbValue	k;

	if (b->number_out_of_range)
		P2P_JSON_CONTINUE;
	k.type = jbvString;
	k.val.string.val = fname;
	k.val.string.len = strlen(fname);
	pushJsonbValue(&b->ps, WJB_KEY, &k);
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
b_scalar(void *state, char *token, JsonTokenType type)
{
	EaBuild    *b = state;
	JsonbValue	v;

	if (b->number_out_of_range)
		P2P_JSON_CONTINUE;
	switch (type)
	{
		case JSON_TOKEN_STRING:
			v.type = jbvString;
			v.val.string.val = token;
			v.val.string.len = strlen(token);
			break;
		case JSON_TOKEN_NUMBER:
			{
				char	   *e = strpbrk(token, "eE");

				if (strlen(token) > MAX_NUMBER_CHARS ||
					(e && (strlen(e + 1) > 5 || abs(atoi(e + 1)) > MAX_NUMBER_CHARS)))
				{
					b->number_out_of_range = true;
					b->bad_number = pnstrdup(token, Min(strlen(token), SHOWN_NUMBER_CHARS));
					P2P_JSON_CONTINUE;
				}
				v.type = jbvNumeric;
				v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																	CStringGetDatum(token),
																	ObjectIdGetDatum(InvalidOid),
																	Int32GetDatum(-1)));
				break;
			}
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			v.type = jbvBool;
			v.val.boolean = (type == JSON_TOKEN_TRUE);
			break;
		default:
			v.type = jbvNull;
			break;
	}
	if (b->ps == NULL)
	{
		/* a scalar document: wrapped in a raw-scalar array, as jsonb does */
		JsonbValue	va;

		va.type = jbvArray;
		va.val.array.rawScalar = true;
		va.val.array.nElems = 1;
		pushJsonbValue(&b->ps, WJB_BEGIN_ARRAY, &va);
		pushJsonbValue(&b->ps, WJB_ELEM, &v);
		b->root = pushJsonbValue(&b->ps, WJB_END_ARRAY, NULL);
	}
	else
		pushJsonbValue(&b->ps, b->ps->contVal.type == jbvArray ? WJB_ELEM : WJB_VALUE, &v);
	P2P_JSON_CONTINUE;
}

JsonbValue *
json_parse_soft(const char *json, int len, int max_depth, JsonSoftError *err)
{
	EaBuild		b = {0};
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	JsonParseErrorType rc;
	int			depth = json_depth(json, len);

	memset(err, 0, sizeof(*err));
	if (depth > max_depth)
	{
		err->sqlstate = ERRCODE_CHECK_VIOLATION;
		err->message = psprintf("document is nested %d levels deep; at most %d levels are allowed",
								depth, max_depth);
		return NULL;
	}
	lex = p2p_json_lexer(pnstrdup(json, len), len, true);
	sem.semstate = &b;
	sem.object_start = b_object_start;
	sem.object_end = b_object_end;
	sem.array_start = b_array_start;
	sem.array_end = b_array_end;
	sem.object_field_start = b_field_start;
	sem.scalar = b_scalar;
	rc = pg_parse_json(lex, &sem);
	if (rc != JSON_SUCCESS)
	{
		err->sqlstate = ERRCODE_INVALID_TEXT_REPRESENTATION;
		err->message = pstrdup("document is not valid JSON");
		err->detail = json_errdetail(rc, lex);
		return NULL;
	}
	if (b.number_out_of_range)
	{
		err->sqlstate = ERRCODE_CHECK_VIOLATION;
		err->message = psprintf("number %s is out of range", b.bad_number);
		return NULL;
	}
	return b.root;
}

JsonbValue *
jbv_get(JsonbValue *obj, const char *key)
{
	int			len = strlen(key);

	if (obj == NULL || obj->type != jbvObject)
		return NULL;
	for (int i = 0; i < obj->val.object.nPairs; i++)
	{
		JsonbPair  *p = &obj->val.object.pairs[i];

		if (p->key.val.string.len == len &&
			memcmp(p->key.val.string.val, key, len) == 0)
			return &p->value;
	}
	return NULL;
}
