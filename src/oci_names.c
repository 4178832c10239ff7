/*
 * oci_names.c
 *		The OCI distribution grammar for repositories and references, manifest
 *		URLs built on it, and the origin comparison that decides whether the
 *		registry's robot account may travel with a URL.
 *
 * The grammar is the distribution spec's:
 *   repository  [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
 *               at most 255 characters (Harbor's and the reference library's limit)
 *   tag         [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
 *   digest      sha256:<64 hex>, sha384:<96 hex> or sha512:<128 hex>, lower case
 * It is checked by hand, not with a regex engine, so each refusal can name
 * the rule that was broken.  Anything outside it (a "..", "?", "#", "%",
 * space or CR/LF) is refused, never escaped: a name that needs escaping is
 * not a name the registry can hold.
 *
 * URLs are parsed with libcurl's URL API, the parser that will later send
 * them.  libcurl's strings are copied into fixed buffers and freed before
 * anything that could raise an ERROR.
 */
#include "postgres.h"

#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "compat.h"
#include "http.h"
#include "miscadmin.h"
#include "oci_names.h"

#define MAX_REPOSITORY 255
#define MAX_TAG 128
#define MAX_SHOWN 200			/* bytes of a refused value shown back */

PG_FUNCTION_INFO_V1(p2p_preheat_check_manifest_url);
PG_FUNCTION_INFO_V1(p2p_preheat_check_image_name);

typedef struct UrlParts
{
	char		scheme[16];
	char		host[512];
	long		port;
	bool		userinfo;
} UrlParts;

/* Copy and free one part; false if it is missing or too long. */
static bool
take_part(CURLU *h, CURLUPart what, unsigned int flags, char *dst, size_t size)
{
	char	   *s = NULL;
	bool		ok;

	if (curl_url_get(h, what, &s, flags) != CURLUE_OK || s == NULL)
		return false;
	ok = strlen(s) < size;
	if (ok)
		strcpy(dst, s);
	curl_free(s);
	return ok;
}

static bool
has_part(CURLU *h, CURLUPart what)
{
	char	   *s = NULL;
	bool		present = curl_url_get(h, what, &s, 0) == CURLUE_OK && s != NULL;

	curl_free(s);
	return present;
}

/* Scheme, host and port of an http(s) URL; false if it does not parse. */
static bool
url_parts(const char *url, UrlParts *p)
{
	CURLU	   *h;
	char		port[16];
	bool		ok;

	memset(p, 0, sizeof(*p));
	if (url == NULL)
		return false;
	h = curl_url();
	if (h == NULL)
		return false;
	ok = curl_url_set(h, CURLUPART_URL, url, CURLU_PATH_AS_IS) == CURLUE_OK &&
		take_part(h, CURLUPART_SCHEME, 0, p->scheme, sizeof(p->scheme)) &&
		take_part(h, CURLUPART_HOST, 0, p->host, sizeof(p->host)) &&
		take_part(h, CURLUPART_PORT, CURLU_DEFAULT_PORT, port, sizeof(port));
	if (ok)
		p->userinfo = has_part(h, CURLUPART_USER) || has_part(h, CURLUPART_PASSWORD) ||
			has_part(h, CURLUPART_OPTIONS);
	curl_url_cleanup(h);
	if (!ok)
		return false;
	for (char *c = p->scheme; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);
	for (char *c = p->host; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);
	p->port = strtol(port, NULL, 10);
	return strcmp(p->scheme, "http") == 0 || strcmp(p->scheme, "https") == 0;
}

bool
p2p_url_same_origin(const char *a, const char *b)
{
	UrlParts	pa,
				pb;

	if (!url_parts(a, &pa) || !url_parts(b, &pb))
		return false;
	return strcmp(pa.scheme, pb.scheme) == 0 &&
		strcmp(pa.host, pb.host) == 0 &&
		pa.port == pb.port;
}

bool
p2p_url_has_userinfo(const char *url)
{
	UrlParts	p;

	if (!url_parts(url, &p))
		return true;
	return p.userinfo;
}

static bool
is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static const char *
repository_problem_len(const char *s, size_t len)
{
	const char *end = s + len;
	const char *p = s;

	if (len == 0)
		return "a repository name must not be empty";
	if (len > MAX_REPOSITORY)
		return "a repository name has at most 255 characters";
	for (;;)
	{
		/* a component: alnum runs joined by one separator each */
		for (;;)
		{
			if (p == end || !is_lower_alnum(*p))
				return "each path component of a repository name is lower-case letters and digits, "
					"joined inside by \".\", \"_\", \"__\" or dashes, and components are joined by \"/\"";
			while (p < end && is_lower_alnum(*p))
				p++;
			if (p < end && *p == '.')
				p++;
			else if (p < end && *p == '_')
				p += (p + 1 < end && p[1] == '_') ? 2 : 1;
			else if (p < end && *p == '-')
			{
				while (p < end && *p == '-')
					p++;
			}
			else
				break;
		}
		if (p == end)
			return NULL;
		if (*p != '/')
			return "each path component of a repository name is lower-case letters and digits, "
				"joined inside by \".\", \"_\", \"__\" or dashes, and components are joined by \"/\"";
		p++;
	}
}

const char *
p2p_oci_repository_problem(const char *repository)
{
	return repository_problem_len(repository, strlen(repository));
}

const char *
p2p_oci_reference_problem(const char *reference)
{
	const char *colon = strchr(reference, ':');
	size_t		len = strlen(reference);

	if (len == 0)
		return "a reference must not be empty";
	/* algorithm ":" encoded, the algorithm being [a-z0-9]+([+._-][a-z0-9]+)* */
	for (const char *c = reference; colon && c < colon; c++)
		if (!is_lower_alnum(*c) && *c != '+' && *c != '.' && *c != '_' && *c != '-')
			colon = NULL;
	if (colon)
	{
		size_t		alg = colon - reference;
		const char *hex = colon + 1;
		size_t		want;

		if (alg == 6 && strncmp(reference, "sha256", 6) == 0)
			want = 64;
		else if (alg == 6 && strncmp(reference, "sha384", 6) == 0)
			want = 96;
		else if (alg == 6 && strncmp(reference, "sha512", 6) == 0)
			want = 128;
		else
			return "a digest reference is sha256:, sha384: or sha512: followed by its hex value";
		if (strlen(hex) != want)
			return "a digest's hex value has 64 (sha256), 96 (sha384) or 128 (sha512) characters";
		for (const char *c = hex; *c; c++)
			if (!is_hex(*c))
				return "a digest's hex value is digits and lower-case a to f";
		return NULL;
	}
	if (len > MAX_TAG)
		return "a tag has at most 128 characters";
	if (!is_alnum(reference[0]) && reference[0] != '_')
		return "a tag starts with a letter, a digit or \"_\"";
	for (const char *c = reference + 1; *c; c++)
		if (!is_alnum(*c) && *c != '_' && *c != '.' && *c != '-')
			return "a tag is letters, digits, \"_\", \".\" and \"-\"";
	return NULL;
}

/* A refused value, quoted, with anything unprintable shown as \xNN. */
static char *
shown_value(const char *v)
{
	StringInfoData buf;
	size_t		n = 0;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '"');
	for (const unsigned char *c = (const unsigned char *) v; *c; c++, n++)
	{
		if (n == MAX_SHOWN)
		{
			appendStringInfoString(&buf, "...");
			break;
		}
		if (*c == '"' || *c == '\\')
			appendStringInfo(&buf, "\\%c", *c);
		else if (*c < 0x20 || *c >= 0x7f)
			appendStringInfo(&buf, "\\x%02x", *c);
		else
			appendStringInfoChar(&buf, *c);
	}
	appendStringInfoChar(&buf, '"');
	return buf.data;
}

pg_noreturn static void
refuse(const char *field, const char *value, const char *rule, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s: %s", field, rule),
			 errdetail("The %s is %s.", field, shown_value(value)),
			 errhint("%s", hint)));
	pg_unreachable();
}

#define IMAGE_HINT "Repository names follow the OCI distribution grammar " \
	"[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*; " \
	"a reference is a tag [A-Za-z0-9_][A-Za-z0-9._-]{0,127} or a digest such as sha256:<64 hex digits>."
#define URL_HINT "A manifest URL is http(s)://<registry>/v2/<repository>/manifests/<tag or digest>, " \
	"without user name, password, query or fragment, such as " \
	"https://harbor.example.com/v2/library/app/manifests/1.0."

void
p2p_check_image_name(const char *repository, const char *reference)
{
	const char *why;

	if ((why = p2p_oci_repository_problem(repository)) != NULL)
		refuse("repository", repository, why, IMAGE_HINT);
	if ((why = p2p_oci_reference_problem(reference)) != NULL)
		refuse("reference", reference, why, IMAGE_HINT);
}

/*
 * The manifest's host must not be an address the dispatcher itself would
 * refuse (link-local, cloud metadata, unspecified): Dragonfly would fetch
 * it, with the registry's credentials.  Only address literals are checked
 * here: resolving names at queue time would put a DNS wait in every call
 * (and every row of a policy run); Dragonfly resolves them on its side.
 */
static void
check_manifest_host(const char *url, const char *host)
{
	struct addrinfo hints = {0};
	struct addrinfo *res = NULL;
	char	   *name = pstrdup(host);

	if (http_allow_link_local)
		return;
	/* [v6] literals lose their brackets */
	if (name[0] == '[')
	{
		name++;
		name[strcspn(name, "]")] = '\0';
	}
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(name, NULL, &hints, &res) != 0 || res == NULL)
		return;					/* a name, not an address */
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
	{
		const unsigned char *a = NULL;
		const char *why;

		if (ai->ai_family == AF_INET)
			a = (const unsigned char *) &((struct sockaddr_in *) ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			a = ((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr.s6_addr;
		if (a && (why = http_address_refusal(ai->ai_family, a)) != NULL)
		{
			char		addr[INET6_ADDRSTRLEN] = "?";

			inet_ntop(ai->ai_family, a, addr, sizeof(addr));
			freeaddrinfo(res);
			refuse("url", url, psprintf("its host is %s, %s", addr, why),
				   "Dragonfly would fetch this manifest with the registry's credentials. "
				   "A superuser may set p2p_preheat.allow_link_local to allow such addresses.");
		}
	}
	freeaddrinfo(res);
}

void
p2p_check_manifest_url(const char *url)
{
	UrlParts	p;
	const char *rest;
	const char *path;
	const char *last = NULL;
	char	   *repository;

	for (const unsigned char *c = (const unsigned char *) url; *c; c++)
		if (*c <= 0x20 || *c >= 0x7f)
			refuse("url", url, "a manifest URL holds printable ASCII characters only, without spaces",
				   URL_HINT);
	if (pg_strncasecmp(url, "http://", 7) == 0)
		rest = url + 7;
	else if (pg_strncasecmp(url, "https://", 8) == 0)
		rest = url + 8;
	else
		refuse("url", url, "the scheme must be http or https", URL_HINT);
	if (strchr(url, '?') || strchr(url, '#'))
		refuse("url", url, "a manifest URL has no query and no fragment", URL_HINT);
	if (!url_parts(url, &p))
		refuse("url", url, "it is not a URL with a host", URL_HINT);
	if (p.userinfo)
		refuse("url", url, "a manifest URL must not carry a user name or password", URL_HINT);
	if (strchr(url, '%'))
		refuse("url", url, "a manifest URL has no percent-encoded characters", URL_HINT);

	path = strchr(rest, '/');
	if (path == rest)
		refuse("url", url, "it is not a URL with a host", URL_HINT);
	if (path == NULL || strncmp(path, "/v2/", 4) != 0)
		refuse("url", url, "the path must be /v2/<repository>/manifests/<reference>", URL_HINT);
	for (const char *m = path + 3; (m = strstr(m, "/manifests/")) != NULL; m++)
		last = m;
	if (last == NULL || last < path + 4)
		refuse("url", url, "the path must be /v2/<repository>/manifests/<reference>", URL_HINT);
	repository = pnstrdup(path + 4, last - (path + 4));
	p2p_check_image_name(repository, last + strlen("/manifests/"));
	check_manifest_host(url, p.host);
}

Datum
p2p_preheat_check_manifest_url(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("url must not be NULL")));
	p2p_check_manifest_url(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

Datum
p2p_preheat_check_image_name(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", PG_ARGISNULL(0) ? "repository" : "reference")));
	p2p_check_image_name(text_to_cstring(PG_GETARG_TEXT_PP(0)),
					 text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}
