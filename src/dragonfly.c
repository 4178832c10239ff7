/*
 * dragonfly.c
 *		Request bodies for Dragonfly's POST /oapi/v1/jobs, and the meaning of
 *		its answers to POST and GET /oapi/v1/jobs/<id>.
 *
 * Whatever comes back is treated as hostile before it is kept in a row,
 * an error or the log:
 *  - it is made valid in the server encoding (bad bytes become U+FFFD, or
 *    '?' outside UTF-8) and cut on character boundaries, so every row can
 *    be dumped and restored;
 *  - every secret the request carried (instance credential, robot password,
 *    the caller's header values) and every secret Dragonfly echoes in a job's
 *    args is replaced by "[redacted]", raw or JSON-escaped, wherever it
 *    appears; args.password and args.headers are dropped from kept answers;
 *  - it is parsed in a short-lived memory context, so only the job object
 *    kept and a short error outlive the call, and the kept object is counted
 *    against p2p_preheat.answer_memory (http.h).
 *
 * What an answer means is decided by what retrying can change: Dragonfly's
 * own trouble (429, 5xx) and the network are retried; a registry that
 * refuses the manifest, which Dragonfly reports as a 500 while answering
 * the POST, is not.  Dragonfly has no idempotency key, so a POST that ended
 * without an answer is marked maybe_sent and looked for in Dragonfly's job
 * list before it is sent again.
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "compat.h"
#include "dispatch.h"
#include "dragonfly.h"
#include "json_soft.h"
#include "oci_names.h"

#define SHOWN_ANSWER 300		/* bytes of an unexpected answer kept */
#define SHOWN_FIELD 120			/* bytes of a peer's name, address, reason */
#define SHOWN_STATE 64			/* bytes of Dragonfly's job state */
#define MIN_HEADER_SECRET 6		/* shorter caller header values are not secrets */
#define REDACTED "[redacted]"

/* An answer, made safe to keep, and the secrets to keep out of it. */
typedef struct Answer
{
	const HttpRequest *req;
	char	   *body;			/* valid in the server encoding, scrubbed */
	int			len;
	List	   *secrets;		/* char * */
} Answer;

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

/*
 * Text made valid in the server encoding: each byte that does not start a
 * valid character (and each NUL) becomes U+FFFD, or '?' outside UTF-8.
 */
static char *
valid_text(const char *s, int len)
{
	int			enc = GetDatabaseEncoding();
	const char *bad = enc == PG_UTF8 ? "\xEF\xBF\xBD" : "?";
	StringInfoData buf;
	int			i = 0;

	if (pg_encoding_verifymbstr(enc, s, len) == len)
		return pnstrdup(s, len);
	initStringInfo(&buf);
	while (i < len)
	{
		int			l;

		if (s[i] == '\0')
			l = -1;
		else if (!IS_HIGHBIT_SET(s[i]))
			l = 1;
		else
			l = pg_encoding_verifymbchar(enc, s + i, len - i);
		if (l < 0)
		{
			appendStringInfoString(&buf, bad);
			i++;
		}
		else
		{
			appendBinaryStringInfo(&buf, s + i, l);
			i += l;
		}
	}
	return buf.data;
}

/* Bytes of s (valid text) that fit in limit without splitting a character. */
static int
clip(const char *s, int len, int limit)
{
	return len <= limit ? len : pg_mbcliplen(s, len, limit);
}

static void
add_secret(Answer *ans, const char *s, int len, int min_len)
{
	StringInfoData esc;
	char	   *raw;

	if (s == NULL || len < Max(min_len, 1))
		return;
	raw = pnstrdup(s, len);
	ans->secrets = lappend(ans->secrets, raw);
	/* as it would appear inside a JSON string, when that differs */
	initStringInfo(&esc);
	escape_json(&esc, raw);
	if (esc.len - 2 != len)
		ans->secrets = lappend(ans->secrets, pnstrdup(esc.data + 1, esc.len - 2));
}

/* "Scheme credential" values: the whole value and the credential alone. */
static void
add_credential(Answer *ans, const char *v, int len, int min_len)
{
	const char *sp = memchr(v, ' ', len);

	add_secret(ans, v, len, min_len);
	if (sp == NULL)
		return;
	add_secret(ans, sp + 1, len - (sp + 1 - v), min_len);
	if (sp - v == 5 && pg_strncasecmp(v, "Basic", 5) == 0)
	{
		int			elen = len - (sp + 1 - v);
		char	   *dec = palloc(pg_b64_dec_len(elen) + 1);
		int			n = pg_b64_decode(sp + 1, elen, (P2P_B64_BYTES *) dec, pg_b64_dec_len(elen));

		if (n > 0)
		{
			char	   *colon = memchr(dec, ':', n);

			add_secret(ans, dec, n, min_len);
			if (colon)
				add_secret(ans, colon + 1, n - (colon + 1 - dec), min_len);
		}
	}
}

/* args.password and the values of args.headers of a job object or body. */
static void
add_args_secrets(Answer *ans, JsonbValue *doc)
{
	JsonbValue *args = jbv_get(doc, "args");
	JsonbValue *pw = jbv_get(args, "password");
	JsonbValue *headers = jbv_get(args, "headers");

	if (pw && pw->type == jbvString)
		add_secret(ans, pw->val.string.val, pw->val.string.len, 1);
	for (int i = 0; headers && headers->type == jbvObject && i < headers->val.object.nPairs; i++)
	{
		JsonbValue *v = &headers->val.object.pairs[i].value;

		if (v->type == jbvString)
			add_credential(ans, v->val.string.val, v->val.string.len, MIN_HEADER_SECRET);
	}
}

/* Every secret this request carried. */
static void
request_secrets(Answer *ans)
{
	const HttpRequest *req = ans->req;

	if (req->auth_header)
	{
		const char *v = strchr(req->auth_header, ':');

		if (v)
		{
			while (*++v == ' ')
				;
			add_credential(ans, v, strlen(v), 1);
		}
	}
	if (req->body)
	{
		JsonSoftError err;

		/* our own body: attrs are at most 32 levels deep */
		add_args_secrets(ans, json_parse_soft(req->body, strlen(req->body), 64, &err));
	}
}

/* text with every secret replaced; text itself when there is none. */
static char *
scrub(Answer *ans, char *text)
{
	ListCell   *lc;

	if (text == NULL)
		return NULL;
	foreach(lc, ans->secrets)
	{
		const char *secret = lfirst(lc);
		size_t		slen = strlen(secret);
		char	   *hit = strstr(text, secret);
		StringInfoData buf;
		char	   *from = text;

		if (hit == NULL)
			continue;
		initStringInfo(&buf);
		for (; hit; from = hit + slen, hit = strstr(from, secret))
		{
			appendBinaryStringInfo(&buf, from, hit - from);
			appendStringInfoString(&buf, REDACTED);
		}
		appendStringInfoString(&buf, from);
		text = buf.data;
	}
	return text;
}

static void
scrub_string(Answer *ans, JsonbValue *v)
{
	char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
	char	   *t = scrub(ans, s);

	if (t != s)
	{
		v->val.string.val = t;
		v->val.string.len = strlen(t);
	}
}

/* Every key and string of a parsed answer, scrubbed. */
static void
scrub_tree(Answer *ans, JsonbValue *v)
{
	if (v == NULL || ans->secrets == NIL)
		return;
	switch (v->type)
	{
		case jbvString:
			scrub_string(ans, v);
			break;
		case jbvArray:
			for (int i = 0; i < v->val.array.nElems; i++)
				scrub_tree(ans, &v->val.array.elems[i]);
			break;
		case jbvObject:
			for (int i = 0; i < v->val.object.nPairs; i++)
			{
				scrub_string(ans, &v->val.object.pairs[i].key);
				scrub_tree(ans, &v->val.object.pairs[i].value);
			}
			break;
		default:
			break;
	}
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
shown_answer(Answer *ans)
{
	int			n;

	if (ans->body == NULL || ans->len == 0)
		return pstrdup("an empty body");
	n = clip(ans->body, ans->len, SHOWN_ANSWER);
	return psprintf("\"%.*s%s\"", n, ans->body, n < ans->len ? "..." : "");
}

/* Dragonfly's own words: {"errors": ...} or {"message": ...}, else the body. */
static char *
dragonfly_message(Answer *ans)
{
	JsonSoftError err;
	JsonbValue *root = ans->body ?
		json_parse_soft(ans->body, ans->len, 16, &err) : NULL;
	JsonbValue *m = jbv_get(root, "errors");

	if (m == NULL)
		m = jbv_get(root, "message");
	if (m && m->type == jbvString)
		return pnstrdup(m->val.string.val,
						clip(m->val.string.val, m->val.string.len, SHOWN_ANSWER));
	return shown_answer(ans);
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

/* A string member cut to at most limit bytes on a character boundary, or "?". */
static void
append_field(StringInfo buf, JsonbValue *v, int limit, const char *none)
{
	if (v && v->type == jbvString)
		appendBinaryStringInfo(buf, v->val.string.val,
							   clip(v->val.string.val, v->val.string.len, limit));
	else
		appendStringInfoString(buf, none);
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

				if (n < 5)
				{
					if (n)
						appendStringInfoString(why, "; ");
					append_field(why, jbv_get(t, "hostname"), SHOWN_FIELD, "?");
					appendStringInfoString(why, " (");
					append_field(why, jbv_get(t, "ip"), SHOWN_FIELD, "?");
					appendStringInfoString(why, "): ");
					append_field(why, jbv_get(t, "description"), SHOWN_FIELD, "");
				}
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
		{
			if (buf.len)
				appendStringInfoString(&buf, "; ");
			append_field(&buf, e, SHOWN_ANSWER, "");
		}
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

static P2P_JSON_CB
scan_object_start(void *s)
{
	JobScan    *js = s;

	if (js->depth++ == 0)
		js->is_object = true;
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
scan_object_end(void *s)
{
	((JobScan *) s)->depth--;
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
scan_array_start(void *s)
{
	((JobScan *) s)->depth++;
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
scan_array_end(void *s)
{
	((JobScan *) s)->depth--;
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
scan_field_start(void *s, char *fname, bool isnull)
{
	JobScan    *js = s;

	js->field = NULL;
	if (js->depth == 1 && (strcmp(fname, "id") == 0 || strcmp(fname, "state") == 0))
		js->field = strcmp(fname, "id") == 0 ? "id" : "state";
	P2P_JSON_CONTINUE;
}

static P2P_JSON_CB
scan_scalar(void *s, char *token, JsonTokenType type)
{
	JobScan    *js = s;

	if (js->depth != 1 || js->field == NULL)
		P2P_JSON_CONTINUE;
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
	P2P_JSON_CONTINUE;
}

static bool
scan_job(Answer *ans, int64 *id, char **state)
{
	JobScan		js = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	if (ans->body == NULL)
		return false;
	lex = p2p_json_lexer(ans->body, ans->len, true);
	sem.semstate = &js;
	sem.object_start = scan_object_start;
	sem.object_end = scan_object_end;
	sem.array_start = scan_array_start;
	sem.array_end = scan_array_end;
	sem.object_field_start = scan_field_start;
	sem.scalar = scan_scalar;
	/* Dragonfly's job objects are shallow; refuse absurd nesting first */
	if (json_depth(ans->body, ans->len) > 64 ||
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
		case CURLE_FAILED_INIT:
			return false;
		default:
			return req->refused[0] == '\0';
	}
}

/* What the answer means; everything it allocates is short-lived. */
static void
read_answer(Answer *ans, bool is_poll, DfAnswer *a)
{
	const HttpRequest *req = ans->req;
	JsonSoftError err;
	JsonbValue *job;
	JsonbValue *state;

	if (req->result != CURLE_OK)
	{
		a->verdict = DF_RETRY;
		a->maybe_sent = !is_poll && may_have_arrived(req);
		a->error = psprintf("could not reach Dragonfly: %s", http_error_text(req));
		return;
	}
	if (req->status >= 300 && req->status < 400)
	{
		char	   *to = req->location ?
			valid_text(req->location, strlen(req->location)) : "an unnamed location";

		a->verdict = DF_FAILED;
		a->error = psprintf("endpoint is not a Dragonfly manager Open API (redirected to %.*s)",
							clip(to, strlen(to), SHOWN_ANSWER), to);
		return;
	}
	if (req->status == 500 && !is_poll)
	{
		char	   *message = dragonfly_message(ans);

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
							dragonfly_message(ans));
		return;
	}
	if (req->status == 404 && is_poll)
	{
		a->verdict = DF_FAILED;
		a->error = psprintf("Dragonfly no longer knows this job (HTTP 404: %s); "
							"it deletes jobs 6 to 9 hours after creation",
							dragonfly_message(ans));
		return;
	}
	if (req->status != 200)
	{
		a->verdict = DF_FAILED;
		a->error = psprintf("Dragonfly refused the %s (HTTP %ld): %s",
							is_poll ? "status request" : "job",
							req->status, dragonfly_message(ans));
		return;
	}

	if (!is_poll)
	{
		if (scan_job(ans, &a->job_id, &a->state))
		{
			a->verdict = DF_ACCEPTED;
			return;
		}
		a->verdict = DF_RETRY;
		a->job_id = 0;
		a->state = NULL;
		a->error = psprintf("Dragonfly answered HTTP 200 with %s, not a job object",
							shown_answer(ans));
		return;
	}

	job = ans->body ? json_parse_soft(ans->body, ans->len, 64, &err) : NULL;
	state = jbv_get(job, "state");
	a->job_id = json_int(jbv_get(job, "id"));
	if (job == NULL || job->type != jbvObject || a->job_id <= 0 ||
		state == NULL || state->type != jbvString)
	{
		a->verdict = DF_RETRY;
		a->job_id = 0;
		a->error = psprintf("Dragonfly answered HTTP 200 with %s, not a job object",
							shown_answer(ans));
		return;
	}
	/* Dragonfly echoes the args it was given: those are secrets too */
	add_args_secrets(ans, job);
	redact(job);
	scrub_tree(ans, job);
	a->state = pnstrdup(state->val.string.val, state->val.string.len);
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

/* A short text of the answer, safe to keep, in the caller's context. */
static char *
kept_text(Answer *ans, const char *s, int limit, MemoryContext cxt)
{
	char	   *t;
	int			n;

	if (s == NULL)
		return NULL;
	t = scrub(ans, valid_text(s, strlen(s)));
	n = limit > 0 ? clip(t, strlen(t), limit) : strlen(t);
	return MemoryContextStrdup(cxt, pnstrdup(t, n));
}

/* The states of Dragonfly's job machinery: words no secret hides in. */
static const char *const df_states[] = {
	"PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE"
};

/*
 * The common answer, a POST accepted with a job object (200, an id and one
 * of Dragonfly's states), read without the work a hostile answer needs:
 * only the id and a fixed word are kept, so there is nothing to scrub and
 * the request's own secrets are never looked at.  False: read it in full.
 */
static bool
accepted_at_once(const HttpRequest *req, DfAnswer *a, MemoryContext caller)
{
	Answer		ans = {0};
	int64		id;
	char	   *state;

	if (req->result != CURLE_OK || req->status != 200 || req->response == NULL)
		return false;
	ans.req = req;
	ans.body = req->response;
	ans.len = req->response_len;
	if (!scan_job(&ans, &id, &state))
		return false;
	for (int i = 0; i < lengthof(df_states); i++)
	{
		if (strcmp(state, df_states[i]) == 0)
		{
			a->verdict = DF_ACCEPTED;
			a->job_id = id;
			a->state = MemoryContextStrdup(caller, df_states[i]);
			return true;
		}
	}
	return false;
}

/* Where answers are read: made once, emptied after every answer. */
static MemoryContext answer_cxt = NULL;

void
df_read_answer(const HttpRequest *req, bool is_poll, DfAnswer *a)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext tmp;
	Answer		ans = {0};
	DfAnswer	r = {0};
	ListCell   *lc;

	memset(a, 0, sizeof(*a));
	if (answer_cxt == NULL)
		answer_cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat answer",
										   ALLOCSET_DEFAULT_SIZES);
	tmp = answer_cxt;
	MemoryContextReset(tmp);	/* left over if an ERROR cut the last one short */
	MemoryContextSwitchTo(tmp);
	if (!is_poll && accepted_at_once(req, a, caller))
	{
		MemoryContextSwitchTo(caller);
		MemoryContextReset(tmp);
		return;
	}
	ans.req = req;
	request_secrets(&ans);
	if (req->response)
	{
		ans.body = scrub(&ans, valid_text(req->response, req->response_len));
		ans.len = strlen(ans.body);
	}
	read_answer(&ans, is_poll, &r);

	a->verdict = r.verdict;
	a->job_id = r.job_id;
	a->failed_peers = r.failed_peers;
	a->maybe_sent = r.maybe_sent;
	a->state = kept_text(&ans, r.state, SHOWN_STATE, caller);
	a->error = kept_text(&ans, r.error, 0, caller);
	if (r.result)
	{
		if (http_hold(caller, VARSIZE(r.result)))
		{
			a->result = MemoryContextAlloc(caller, VARSIZE(r.result));
			memcpy(a->result, r.result, VARSIZE(r.result));
		}
		else
		{
			/* over p2p_preheat.answer_memory: read it again later */
			a->verdict = DF_RETRY;
			a->failed_peers = 0;
			a->error = MemoryContextStrdup(caller,
										   psprintf("the job object (%u bytes) was dropped: answers held "
													"by this process fill p2p_preheat.answer_memory (%d kB)",
													VARSIZE(r.result), http_answer_memory_kb));
		}
	}
	/* the request's secrets, copied to scrub the answer: not left in freed memory */
	foreach(lc, ans.secrets)
		explicit_bzero(lfirst(lc), strlen(lfirst(lc)));
	MemoryContextSwitchTo(caller);
	MemoryContextReset(tmp);
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
	Answer		ans = {0};

	*oldest = 0;
	ans.req = req;
	request_secrets(&ans);
	if (req->response)
	{
		ans.body = scrub(&ans, valid_text(req->response, req->response_len));
		ans.len = strlen(ans.body);
	}
	if (req->result != CURLE_OK)
	{
		*error = psprintf("could not reach Dragonfly: %s", http_error_text(req));
		return -1;
	}
	if (req->status != 200)
	{
		*error = psprintf("Dragonfly answered HTTP %ld: %s", req->status, dragonfly_message(&ans));
		return -1;
	}
	list = ans.body ? json_parse_soft(ans.body, ans.len, 64, &err) : NULL;
	if (list == NULL || list->type != jbvArray)
	{
		*error = psprintf("Dragonfly answered HTTP 200 with %s, not a list of jobs",
						  shown_answer(&ans));
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
