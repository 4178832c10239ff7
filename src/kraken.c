/*
 * kraken.c
 *		Kraken's side of a preheat job, as Harbor's Kraken driver does it.
 *
 * Harbor tells Kraken about an image the way a registry announces a push:
 * POST <endpoint>/registry/notifications with one "push" event whose
 * target names the manifest (media type, digest, repository, URL, tag).
 * Kraken fetches the image in the background and answers at once; Harbor
 * takes any 2xx as the preheat done and never asks again, so a job here
 * succeeds on the answer and is not followed.  Harbor's body spells the
 * keys as its Go fields (Events, Target, MediaType, ...); Kraken decodes
 * JSON keys without regard to case, and the registry's own notifications
 * spell them in lower camel case, as this body does.  The instance's
 * credentials are sent as for Dragonfly; Harbor sends Kraken no pull token.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "pgtime.h"
#include "utils/timestamp.h"

#include "kraken.h"

#define MANIFEST_MEDIA_TYPE "application/vnd.docker.distribution.manifest.v2+json"
#define SHOWN_ANSWER 300

bool
kraken_vendor(const char *vendor)
{
	return vendor != NULL && pg_strcasecmp(vendor, "kraken") == 0;
}

char *
kraken_notify_url(const char *endpoint)
{
	int			len = strlen(endpoint);

	while (len > 0 && endpoint[len - 1] == '/')
		len--;
	return psprintf("%.*s/registry/notifications", len, endpoint);
}

/* Harbor's event id: 32 random letters and digits. */
static bool
event_id(char *out)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	uint8		r[32];

	if (!pg_strong_random(r, sizeof(r)))
		return false;
	for (int i = 0; i < 32; i++)
		out[i] = alphabet[r[i] % (sizeof(alphabet) - 1)];
	out[32] = '\0';
	return true;
}

/* Now in UTC as Go writes a time: 2026-11-28T08:15:00.123456Z */
static void
append_rfc3339_now(StringInfo buf)
{
	TimestampTz now = GetCurrentTimestamp();
	pg_time_t	t = timestamptz_to_time_t(now);
	struct pg_tm *tm = pg_gmtime(&t);

	appendStringInfo(buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"",
					 tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday,
					 tm->tm_hour, tm->tm_min, tm->tm_sec,
					 (int) (now % USECS_PER_SEC + USECS_PER_SEC) % (int) USECS_PER_SEC);
}

char *
kraken_notification(const char *url, Jsonb *attrs, char **error)
{
	const char *v2 = strstr(url, "/v2/");
	const char *manifests = NULL;
	const char *p;
	char	   *repository;
	const char *tag;
	char	   *digest = NULL;
	char		id[33];
	JsonbValue	d;
	StringInfoData buf;

	for (p = v2 ? v2 + 4 : NULL; p && (p = strstr(p, "/manifests/")) != NULL; p++)
		manifests = p;
	if (v2 == NULL || manifests == NULL || manifests == v2 + 3 || manifests[11] == '\0')
	{
		*error = psprintf("\"%s\" is not a manifest URL (<registry>/v2/<repository>/manifests/<tag>)", url);
		return NULL;
	}
	repository = pnstrdup(v2 + 4, manifests - (v2 + 4));
	tag = manifests + 11;
	if (attrs && getKeyJsonValueFromContainer(&attrs->root, "digest", 6, &d) && d.type == jbvString)
		digest = pnstrdup(d.val.string.val, d.val.string.len);
	else if (strncmp(tag, "sha256:", 7) == 0)
		digest = pstrdup(tag);
	if (digest == NULL || digest[0] == '\0')
	{
		*error = psprintf("Kraken needs the digest of %s:%s, and this job does not carry one", repository, tag);
		return NULL;
	}
	if (!event_id(id))
	{
		*error = pstrdup("could not generate a random event id");
		return NULL;
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"events\":[{\"id\":");
	escape_json(&buf, id);
	appendStringInfoString(&buf, ",\"timestamp\":");
	append_rfc3339_now(&buf);
	appendStringInfoString(&buf, ",\"action\":\"push\",\"target\":{\"mediaType\":\"" MANIFEST_MEDIA_TYPE "\",\"digest\":");
	escape_json(&buf, digest);
	appendStringInfoString(&buf, ",\"repository\":");
	escape_json(&buf, repository);
	appendStringInfoString(&buf, ",\"url\":");
	escape_json(&buf, url);
	appendStringInfoString(&buf, ",\"tag\":");
	escape_json(&buf, tag);
	appendStringInfoString(&buf, "},\"request\":null,\"actor\":null}]}");
	return buf.data;
}

void
kraken_read_answer(const HttpRequest *req, DfAnswer *a)
{
	memset(a, 0, sizeof(*a));
	if (req->result != CURLE_OK)
	{
		a->verdict = DF_RETRY;
		a->error = psprintf("could not reach Kraken: %s", http_error_text(req));
		return;
	}
	if (req->status >= 200 && req->status < 300 && req->status != 208)
	{
		a->verdict = DF_SUCCEEDED;
		return;
	}
	if (req->status == 429 || req->status >= 500)
		a->verdict = DF_RETRY;
	else
		a->verdict = DF_FAILED;
	if (req->status >= 300 && req->status < 400)
		a->error = psprintf("endpoint is not Kraken's registry notification endpoint (HTTP %ld, redirected to %s)",
							req->status, req->location ? req->location : "an unnamed location");
	else
		a->error = psprintf("Kraken answered HTTP %ld: %.*s", req->status,
							req->response_len > SHOWN_ANSWER ? SHOWN_ANSWER : (int) req->response_len,
							req->response ? req->response : "");
}
