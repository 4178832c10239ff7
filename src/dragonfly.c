/*
 * dragonfly.c
 *		Request bodies for Dragonfly's POST /oapi/v1/jobs, and the meaning of
 *		its answers to POST and GET /oapi/v1/jobs/<id>.
 *
 * Dragonfly echoes a job's args back with the registry password and headers
 * in clear, so every stored answer goes through redact() first.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "dispatch.h"
#include "dragonfly.h"
#include "json_soft.h"
#include "oci_names.h"

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

static bool
key_is(JsonbValue *k, const char *name)
{
	return k->val.string.len == strlen(name) &&
		memcmp(k->val.string.val, name, k->val.string.len) == 0;
}

/*
 * {"type": "preheat", "scheduler_cluster_ids": [..],
 *  "args": {"type": "image", "url": .., <attrs>, "headers": {..},
 *           "username": .., "password": ..}}
 * attrs is the policy's extra_attrs as validate_extra_attrs() returned it.
 * Each key is written once: Dragonfly (Go) keeps the last of duplicates, so
 * an attrs key named like one we set would otherwise override ours.
 *
 * The robot account goes only to the registry: only when the manifest URL
 * has the scheme, host and port of p2p_preheat.registry_url.
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
	bool		send_headers = headers_json && headers_json[0];
	bool		send_robot = username && password &&
		dispatch_registry_url && dispatch_registry_url[0] &&
		p2p_url_same_origin(url, dispatch_registry_url);

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
		if (key_is(&k, "cluster_ids") || key_is(&k, "url") || key_is(&k, "type") ||
			(send_headers && key_is(&k, "headers")) ||
			(send_robot && (key_is(&k, "username") || key_is(&k, "password"))))
			continue;
		appendStringInfoChar(&buf, ',');
		escape_json(&buf, pnstrdup(k.val.string.val, k.val.string.len));
		appendStringInfoChar(&buf, ':');
		append_jsonb_value(&buf, &v);
	}
	if (send_headers)
	{
		appendStringInfoString(&buf, ",\"headers\":");
		appendStringInfoString(&buf, headers_json);
	}
	if (send_robot)
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
	if (req->status == 429 || req->status >= 500)
	{
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
