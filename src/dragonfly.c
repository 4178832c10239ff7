/*
 * dragonfly.c
 *		Request bodies for Dragonfly's POST /oapi/v1/jobs, and the meaning of
 *		its answers to POST and GET /oapi/v1/jobs/<id>.
 *
 * Dragonfly echoes a job's args back with the registry password and headers
 * in clear, so every stored answer goes through redact() first.
 *
 * What an answer means is decided by what retrying can change: Dragonfly's
 * own trouble (429, 5xx) and the network are retried; a registry that
 * refuses the manifest, which Dragonfly reports as a 500 while answering
 * the POST, is not.  Dragonfly has no idempotency key, so a POST that ended
 * without an answer is marked maybe_sent and looked for in Dragonfly's job
 * list before it is sent again.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "dragonfly.h"
#include "json_soft.h"

#define SHOWN_ANSWER 300		/* bytes of an unexpected answer kept */

char *
df_jobs_url(const char *endpoint, int64 job_id)
{
	int			len = strlen(endpoint);

	while (len > 0 && endpoint[len - 1] == '/')
		len--;
	if (job_id > 0)
		return psprintf("%.*s/oapi/v1/jobs/" INT64_FORMAT, len, endpoint, job_id);
	return psprintf("%.*s/oapi/v1/jobs", len, endpoint);
}

static void
append_jsonb_value(StringInfo buf, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvBinary:
			JsonbToCString(buf, v->val.binary.data, v->val.binary.len);
			break;
		case jbvString:
			escape_json(buf, pnstrdup(v->val.string.val, v->val.string.len));
			break;
		case jbvNumeric:
			appendStringInfoString(buf, DatumGetCString(DirectFunctionCall1(numeric_out,
																			NumericGetDatum(v->val.numeric))));
			break;
		case jbvBool:
			appendStringInfoString(buf, v->val.boolean ? "true" : "false");
			break;
		default:
			appendStringInfoString(buf, "null");
			break;
	}
}

/*
 * {"type": "preheat", "scheduler_cluster_ids": [..],
 *  "args": {"type": "image", "url": .., <attrs>, "headers": {..},
 *           "username": .., "password": ..}}
 * attrs is the policy's extra_attrs as validate_extra_attrs() returned it.
 */
char *
df_preheat_body(const char *url, Jsonb *attrs, const char *headers_json,
				const char *username, const char *password)
{
	StringInfoData buf;
	JsonbIterator *it;
	JsonbValue	k,
				v;
	JsonbIteratorToken r;
	JsonbValue	clusters;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"preheat\"");
	if (getKeyJsonValueFromContainer(&attrs->root, "cluster_ids", 11, &clusters) &&
		clusters.type == jbvBinary &&
		JsonContainerSize(clusters.val.binary.data) > 0)
	{
		appendStringInfoString(&buf, ",\"scheduler_cluster_ids\":");
		append_jsonb_value(&buf, &clusters);
	}
	appendStringInfoString(&buf, ",\"args\":{\"type\":\"image\",\"url\":");
	escape_json(&buf, url);

	it = JsonbIteratorInit(&attrs->root);
	while ((r = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (r != WJB_KEY)
			continue;
		r = JsonbIteratorNext(&it, &v, true);
		if (k.val.string.len == 11 && memcmp(k.val.string.val, "cluster_ids", 11) == 0)
			continue;
		appendStringInfoChar(&buf, ',');
		escape_json(&buf, pnstrdup(k.val.string.val, k.val.string.len));
		appendStringInfoChar(&buf, ':');
		append_jsonb_value(&buf, &v);
	}
	if (headers_json && headers_json[0])
	{
		appendStringInfoString(&buf, ",\"headers\":");
		appendStringInfoString(&buf, headers_json);
	}
	if (username && password)
	{
		appendStringInfoString(&buf, ",\"username\":");
		escape_json(&buf, username);
		appendStringInfoString(&buf, ",\"password\":");
		escape_json(&buf, password);
	}
	appendStringInfoString(&buf, "}}");
	return buf.data;
}

/* Drop args.password and args.headers from an answer before it is kept. */
static void
redact(JsonbValue *job)
{
	JsonbValue *args = jbv_get(job, "args");
	int			n = 0;

	if (args == NULL || args->type != jbvObject)
		return;
	for (int i = 0; i < args->val.object.nPairs; i++)
	{
		JsonbPair  *p = &args->val.object.pairs[i];
		const char *key = p->key.val.string.val;
		int			len = p->key.val.string.len;

		if ((len == 8 && memcmp(key, "password", 8) == 0) ||
			(len == 7 && memcmp(key, "headers", 7) == 0))
			continue;
		args->val.object.pairs[n++] = *p;
	}
	args->val.object.nPairs = n;
}

static char *
shown_answer(const HttpRequest *req)
{
	if (req->response == NULL || req->response_len == 0)
		return pstrdup("an empty body");
	if (req->response_len <= SHOWN_ANSWER)
		return psprintf("\"%s\"", req->response);
	return psprintf("\"%.*s...\"", SHOWN_ANSWER, req->response);
}

/* Dragonfly's own words: {"errors": ...} or {"message": ...}, else the body. */
static char *
dragonfly_message(const HttpRequest *req)
{
	JsonSoftError err;
	JsonbValue *root = req->response ?
		json_parse_soft(req->response, req->response_len, 16, &err) : NULL;
	JsonbValue *m = jbv_get(root, "errors");

	if (m == NULL)
		m = jbv_get(root, "message");
	if (m && m->type == jbvString)
		return pnstrdup(m->val.string.val, Min(m->val.string.len, SHOWN_ANSWER));
	return shown_answer(req);
}

static int64
json_int(JsonbValue *v)
{
	char	   *s;
	char	   *end;
	int64		n;

	if (v == NULL || v->type != jbvNumeric)
		return 0;
	s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	errno = 0;
	n = strtoi64(s, &end, 10);
	return (errno || *end) ? 0 : n;
}

/* Failed peers of a finished job, and a short list of them. */
static int
failed_peers(JsonbValue *job, StringInfo why)
{
	JsonbValue *states = jbv_get(jbv_get(job, "result"), "job_states");
	int			n = 0;

	if (states == NULL || states->type != jbvArray)
		return 0;
	for (int i = 0; i < states->val.array.nElems; i++)
	{
		JsonbValue *results = jbv_get(&states->val.array.elems[i], "results");

		for (int j = 0; results && results->type == jbvArray && j < results->val.array.nElems; j++)
		{
			JsonbValue *fails = jbv_get(&results->val.array.elems[j], "failure_tasks");

			for (int f = 0; fails && fails->type == jbvArray && f < fails->val.array.nElems; f++)
			{
				JsonbValue *t = &fails->val.array.elems[f];
				JsonbValue *host = jbv_get(t, "hostname");
				JsonbValue *ip = jbv_get(t, "ip");
				JsonbValue *desc = jbv_get(t, "description");

				if (n < 5)
					appendStringInfo(why, "%s%.*s (%.*s): %.*s", n ? "; " : "",
									 host && host->type == jbvString ? host->val.string.len : 1,
									 host && host->type == jbvString ? host->val.string.val : "?",
									 ip && ip->type == jbvString ? ip->val.string.len : 1,
									 ip && ip->type == jbvString ? ip->val.string.val : "?",
									 desc && desc->type == jbvString ? Min(desc->val.string.len, 120) : 0,
									 desc && desc->type == jbvString ? desc->val.string.val : "");
				n++;
			}
		}
	}
	return n;
}

/* FAILURE: Dragonfly's job_states[].error, joined. */
static char *
failure_reason(JsonbValue *job)
{
	JsonbValue *states = jbv_get(jbv_get(job, "result"), "job_states");
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; states && states->type == jbvArray && i < states->val.array.nElems; i++)
	{
		JsonbValue *e = jbv_get(&states->val.array.elems[i], "error");

		if (e && e->type == jbvString && e->val.string.len > 0)
			appendStringInfo(&buf, "%s%.*s", buf.len ? "; " : "",
							 Min(e->val.string.len, SHOWN_ANSWER), e->val.string.val);
	}
	if (buf.len == 0)
		appendStringInfoString(&buf, "Dragonfly reported FAILURE without a reason");
	return buf.data;
}

/*
 * An accepted job needs only its top-level id and state: scan for those two
 * without building the document (the full answer is kept from the polls).
 */
typedef struct JobScan
{
	int			depth;
	const char *field;			/* top-level field being read, or NULL */
	int64		id;
	char	   *state;
	bool		is_object;
} JobScan;

static void
scan_object_start(void *s)
{
	JobScan    *js = s;

	if (js->depth++ == 0)
		js->is_object = true;
}

static void
scan_object_end(void *s)
{
	((JobScan *) s)->depth--;
}

static void
scan_array_start(void *s)
{
	((JobScan *) s)->depth++;
}

static void
scan_array_end(void *s)
{
	((JobScan *) s)->depth--;
}

static void
scan_field_start(void *s, char *fname, bool isnull)
{
	JobScan    *js = s;

	js->field = NULL;
	if (js->depth == 1 && (strcmp(fname, "id") == 0 || strcmp(fname, "state") == 0))
		js->field = strcmp(fname, "id") == 0 ? "id" : "state";
}

static void
scan_scalar(void *s, char *token, JsonTokenType type)
{
	JobScan    *js = s;

	if (js->depth != 1 || js->field == NULL)
		return;
	if (js->field[0] == 'i' && type == JSON_TOKEN_NUMBER)
	{
		char	   *end;

		errno = 0;
		js->id = strtoi64(token, &end, 10);
		if (errno || *end)
			js->id = 0;
	}
	else if (js->field[0] == 's' && type == JSON_TOKEN_STRING)
		js->state = token;
	js->field = NULL;
}

static bool
scan_job(const HttpRequest *req, int64 *id, char **state)
{
	JobScan		js = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	if (req->response == NULL)
		return false;
	lex = makeJsonLexContextCstringLen(req->response, req->response_len,
									   GetDatabaseEncoding(), true);
	sem.semstate = &js;
	sem.object_start = scan_object_start;
	sem.object_end = scan_object_end;
	sem.array_start = scan_array_start;
	sem.array_end = scan_array_end;
	sem.object_field_start = scan_field_start;
	sem.scalar = scan_scalar;
	/* Dragonfly's job objects are shallow; refuse absurd nesting first */
	if (json_depth(req->response, req->response_len) > 64 ||
		pg_parse_json(lex, &sem) != JSON_SUCCESS || !js.is_object)
		return false;
	*id = js.id;
	*state = js.state;
	return js.id > 0 && js.state != NULL;
}

/*
 * Words of a 500 that report the registry's refusal of the manifest, or a
 * platform no manifest matches: Dragonfly's pkg/oci ("no matching manifest
 * for platform", "invalid platform format") and the registry's own errors it
 * passes on (docker/distribution's "unauthorized: ...", "denied: ...",
 * "manifest unknown", "name unknown"; Harbor's "unknown: artifact ... not
 * found").  Matched without regard to case.
 */
static const char *const registry_refusals[] = {
	"no matching manifest for platform",
	"invalid platform format",
	"unauthorized",
	"denied",
	"manifest unknown",
	"name unknown",
	"unknown: artifact",
};

static bool
is_registry_refusal(const char *message)
{
	char	   *lower = pstrdup(message);
	bool		found = false;

	for (char *c = lower; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);

	for (int i = 0; i < lengthof(registry_refusals) && !found; i++)
		found = strstr(lower, registry_refusals[i]) != NULL;
	pfree(lower);
	return found;
}

/* Whether a failed transfer may still have delivered its request. */
static bool
may_have_arrived(const HttpRequest *req)
{
	switch (req->result)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_CONNECT:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
			return false;
		default:
			return !req->link_local;
	}
}

void
df_read_answer(const HttpRequest *req, bool is_poll, DfAnswer *a)
{
	JsonSoftError err;
	JsonbValue *job;
	JsonbValue *state;

	memset(a, 0, sizeof(*a));
	if (req->result != CURLE_OK)
	{
		a->verdict = DF_RETRY;
		a->maybe_sent = !is_poll && may_have_arrived(req);
		a->error = psprintf("could not reach Dragonfly: %s", http_error_text(req));
		return;
	}
	if (req->status >= 300 && req->status < 400)
	{
		a->verdict = DF_FAILED;
		a->error = psprintf("endpoint is not a Dragonfly manager Open API (redirected to %s)",
							req->location ? req->location : "an unnamed location");
		return;
	}
	if (req->status == 500 && !is_poll)
	{
		char	   *message = dragonfly_message(req);

		if (is_registry_refusal(message))
		{
			a->verdict = DF_FAILED;
			a->error = psprintf("the registry refused the manifest (Dragonfly answered HTTP 500: %s)",
								message);
			return;
		}
	}
	if (req->status == 429 || req->status >= 500)
	{
		/* a gateway in front of Dragonfly may have passed the POST on */
		a->maybe_sent = !is_poll && (req->status == 502 || req->status == 504);
		a->verdict = DF_RETRY;
		a->error = psprintf("Dragonfly answered HTTP %ld: %s", req->status,
							dragonfly_message(req));
		return;
	}
	if (req->status == 404 && is_poll)
	{
		a->verdict = DF_FAILED;
		a->error = psprintf("Dragonfly no longer knows this job (HTTP 404: %s); "
							"it deletes jobs 6 to 9 hours after creation",
							dragonfly_message(req));
		return;
	}
	if (req->status != 200)
	{
		a->verdict = DF_FAILED;
		a->error = psprintf("Dragonfly refused the %s (HTTP %ld): %s",
							is_poll ? "status request" : "job",
							req->status, dragonfly_message(req));
		return;
	}

	if (!is_poll)
	{
		if (scan_job(req, &a->job_id, &a->state))
		{
			a->verdict = DF_ACCEPTED;
			return;
		}
		a->verdict = DF_RETRY;
		a->job_id = 0;
		a->state = NULL;
		a->error = psprintf("Dragonfly answered HTTP 200 with %s, not a job object",
							shown_answer(req));
		return;
	}

	job = req->response ? json_parse_soft(req->response, req->response_len, 64, &err) : NULL;
	state = jbv_get(job, "state");
	a->job_id = json_int(jbv_get(job, "id"));
	if (job == NULL || job->type != jbvObject || a->job_id <= 0 ||
		state == NULL || state->type != jbvString)
	{
		a->verdict = DF_RETRY;
		a->job_id = 0;
		a->error = psprintf("Dragonfly answered HTTP 200 with %s, not a job object",
							shown_answer(req));
		return;
	}
	a->state = pnstrdup(state->val.string.val, state->val.string.len);
	redact(job);
	a->result = JsonbValueToJsonb(job);

	if (strcmp(a->state, "SUCCESS") == 0)
	{
		StringInfoData why;

		initStringInfo(&why);
		a->verdict = DF_SUCCEEDED;
		a->failed_peers = failed_peers(job, &why);
		if (a->failed_peers > 0)
			a->error = psprintf("succeeded, but %d peer%s failed: %s", a->failed_peers,
								a->failed_peers > 1 ? "s" : "", why.data);
	}
	else if (strcmp(a->state, "FAILURE") == 0)
	{
		StringInfoData why;

		initStringInfo(&why);
		a->verdict = DF_FAILED;
		a->failed_peers = failed_peers(job, &why);
		a->error = failure_reason(job);
	}
	else
		a->verdict = DF_PENDING;
}

char *
df_list_url(const char *endpoint, int page, int per_page)
{
	char	   *base = df_jobs_url(endpoint, 0);

	return psprintf("%s?type=preheat&page=%d&per_page=%d", base, page, per_page);
}

Jsonb *
df_lookup_args(const char *url, Jsonb *attrs)
{
	char	   *body = df_preheat_body(url, attrs, NULL, NULL, NULL);
	Jsonb	   *doc = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body)));
	JsonbValue	args;

	if (!getKeyJsonValueFromContainer(&doc->root, "args", 4, &args))
		elog(ERROR, "p2p_preheat: a preheat body without args");
	return JsonbValueToJsonb(&args);
}

/* Go's RFC 3339 time ("2006-01-02T15:04:05.999999999Z07:00") as epoch seconds; 0 if not one. */
static double
rfc3339_epoch(JsonbValue *v)
{
	char	   *s;
	int			y, mo, d, h, mi, n = 0;
	double		sec;
	double		epoch;
	char	   *p;

	if (v == NULL || v->type != jbvString)
		return 0;
	s = pnstrdup(v->val.string.val, v->val.string.len);
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
		return 0;
	epoch = (double) (date2j(y, mo, d) - UNIX_EPOCH_JDATE) * SECS_PER_DAY +
		h * 3600 + mi * 60 + sec;
	p = s + n;
	if ((*p == '+' || *p == '-') && strlen(p) >= 6)
	{
		int			off = atoi(p + 1) * 3600 + atoi(p + 4) * 60;

		epoch += *p == '+' ? -off : off;
	}
	return epoch;
}

int
df_match_page(const HttpRequest *req, DfLookup *lk, int n, double *oldest, char **error)
{
	JsonSoftError err;
	JsonbValue *list;

	*oldest = 0;
	if (req->result != CURLE_OK)
	{
		*error = psprintf("could not reach Dragonfly: %s", http_error_text(req));
		return -1;
	}
	if (req->status != 200)
	{
		*error = psprintf("Dragonfly answered HTTP %ld: %s", req->status, dragonfly_message(req));
		return -1;
	}
	list = req->response ? json_parse_soft(req->response, req->response_len, 64, &err) : NULL;
	if (list == NULL || list->type != jbvArray)
	{
		*error = psprintf("Dragonfly answered HTTP 200 with %s, not a list of jobs",
						  shown_answer(req));
		return -1;
	}
	for (int i = 0; i < list->val.array.nElems; i++)
	{
		JsonbValue *job = &list->val.array.elems[i];
		JsonbValue *type = jbv_get(job, "type");
		JsonbValue *args = jbv_get(job, "args");
		JsonbValue *state = jbv_get(job, "state");
		int64		id = json_int(jbv_get(job, "id"));
		double		created = rfc3339_epoch(jbv_get(job, "created_at"));
		Jsonb	   *have;

		*oldest = created;
		if (id <= 0 || type == NULL || type->type != jbvString ||
			type->val.string.len != 7 || memcmp(type->val.string.val, "preheat", 7) != 0 ||
			args == NULL || args->type != jbvObject)
			continue;
		have = JsonbValueToJsonb(args);
		/* newest first: the first match of each lookup is its latest POST */
		for (int k = 0; k < n; k++)
		{
			bool		taken = false;

			if (lk[k].found_id != 0 || created < lk[k].not_before)
				continue;
			for (int o = 0; o < n && !taken; o++)
				taken = lk[o].found_id == id;
			if (taken ||
				!DatumGetBool(DirectFunctionCall2(jsonb_contains, JsonbPGetDatum(have),
												  JsonbPGetDatum(lk[k].args))))
				continue;
			lk[k].found_id = id;
			lk[k].found_state = state && state->type == jbvString ?
				pnstrdup(state->val.string.val, state->val.string.len) : pstrdup("PENDING");
			break;
		}
		pfree(have);
	}
	return list->val.array.nElems;
}
