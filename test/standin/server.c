/*
 * server.c
 *		The HTTP side of the stand-in: libmicrohttpd (two poll() threads, so
 *		benchmarks measure the dispatcher and not us), authentication as
 *		Dragonfly's Open API does it, the request log, pauses, routing and the
 *		/_standin/ control endpoints.
 *
 * A pause (--delay, slow<MS>ms, slowget<MS>ms) suspends the connection and a
 * short-lived thread resumes it, so one slow answer never holds up the others.
 */
#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "standin.h"

#define MAX_BODY (1 << 20)

pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
Stats		stats;
static json_object *by_status;	/* "status" -> count, under state_lock */

static int	log_fd = -1;

/* sleeping pauses wake early when the server stops */
static pthread_mutex_t pause_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cond;
static atomic_bool stopping;
static atomic_int nsuspended;

double
wall_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* o as text (malloc'd); json-c's own buffer belongs to o. */
char *
json_text(json_object *o)
{
	char	   *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));

	if (s == NULL)
		abort();
	return s;
}

/* One more of key in *counts (a JSON object of numbers); the new count.  Under state_lock. */
long long
count(json_object **counts, const char *key)
{
	json_object *n;

	if (*counts == NULL)
		*counts = json_object_new_object();
	if (!json_object_object_get_ex(*counts, key, &n))
		json_object_object_add(*counts, key, n = json_object_new_int64(0));
	json_object_set_int64(n, json_object_get_int64(n) + 1);
	return json_object_get_int64(n);
}

/* Authentication */

static bool
basic_ok(const char *cred)
{
	size_t		n = strlen(cred);
	unsigned char *out = malloc(n + 1);
	int			len = out && n % 4 == 0 ? EVP_DecodeBlock(out, (const unsigned char *) cred, (int) n) : -1;
	bool		ok = false;

	/* EVP_DecodeBlock counts the bytes the padding stands for */
	len -= (n > 0 && cred[n - 1] == '=') + (n > 1 && cred[n - 2] == '=');
	for (int i = 0; i < opt.nbasic && len >= 0 && !ok; i++)
		ok = strlen(opt.basic[i]) == (size_t) len && memcmp(opt.basic[i], out, len) == 0;
	free(out);
	return ok;
}

/*
 * 0 (pass), 401 or 403 (*why says why, in Dragonfly's words).  *kind is what
 * the client sent: bearer, basic, custom or none.  Without any credentials
 * configured every request passes.
 */
unsigned
check_auth(Call *c, unsigned scope, const char **kind, const char **why)
{
	const char *authz = MHD_lookup_connection_value(c->con, MHD_HEADER_KIND, "Authorization");
	const char *cred = "";
	size_t		n = 0;

	*why = "Unauthorized";
	*kind = "none";
	for (int i = 0; i < opt.nheaders; i++)
	{
		const char *v = MHD_lookup_connection_value(c->con, MHD_HEADER_KIND, opt.headers[i].name);

		if (v)
			*kind = "custom";
		if (v && strcmp(v, opt.headers[i].value) == 0)
			return 0;
	}
	if (authz)
	{
		while (isspace((unsigned char) *authz))
			authz++;
		n = strcspn(authz, " ");
		for (cred = authz + n; isspace((unsigned char) *cred); cred++)
			;
	}
	if (n == 6 && strncasecmp(authz, "bearer", 6) == 0)
		*kind = "bearer";
	else if (n == 5 && strncasecmp(authz, "basic", 5) == 0)
		*kind = "basic";
	if (!opt.auth_required)
		return 0;
	if (strcmp(*kind, "basic") == 0)
		return basic_ok(cred) ? 0 : 401;
	for (int i = 0; strcmp(*kind, "bearer") == 0 && i < opt.ntokens; i++)
	{
		const Token *t = &opt.tokens[i];

		if (strcmp(t->value, cred) != 0)
			continue;
		if (t->inactive)
			return *why = "token is inactive", 403;
		if (scope != 0 && t->scopes != 0 && (t->scopes & scope) == 0)
			return *why = scope == SCOPE_CLUSTER ?
				"Token doesn't have permission to access this resource. Required permission: cluster" :
				"Token doesn't have permission to access this resource. Required permission: job", 403;
		return 0;
	}
	return 401;
}

/* Parse r's body as strict JSON; false (err set, body kept for the log) if it is not. */
bool
parse_body(Req *r, char *err, size_t errlen)
{
	json_tokener *tok = json_tokener_new();
	enum json_tokener_error e;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	r->jbody = json_tokener_parse_ex(tok, r->body ? r->body : "", (int) r->len);
	e = json_tokener_get_error(tok);
	if (e == json_tokener_continue)
		e = json_tokener_error_parse_eof;
	else if (e == json_tokener_success && json_tokener_get_parse_end(tok) < r->len)
		e = json_tokener_error_parse_unexpected;
	json_tokener_free(tok);
	if (e == json_tokener_success)
		return true;
	snprintf(err, errlen, "invalid JSON: %s", json_tokener_error_desc(e));
	json_object_put(r->jbody);
	r->jbody = NULL;
	/* logged as a string of its printable ASCII */
	r->bad_body = strndup(r->body ? r->body : "", 4096);
	for (char *p = r->bad_body; p && *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			*p = '?';
	return false;
}

/* Answers */

static enum MHD_Result
queue(Call *c, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result ret = MHD_queue_response(c->con, status, resp);

	MHD_destroy_response(resp);
	if (!c->control)
	{
		char		key[8];

		snprintf(key, sizeof(key), "%u", status);
		pthread_mutex_lock(&state_lock);
		count(&by_status, key);
		pthread_mutex_unlock(&state_lock);
	}
	if (opt.verbose)
		fprintf(stderr, "\"%s %s\" %u\n", c->method, c->url, status);
	return ret;
}

/* An answer of body (copied), with one more header if name is not NULL */
static enum MHD_Result
answer(Call *c, unsigned status, const char *body, const char *ctype, const char *name, const char *value)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), (void *) body, MHD_RESPMEM_MUST_COPY);

	if (resp == NULL)
		abort();
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (name)
		MHD_add_response_header(resp, name, value);
	return queue(c, status, resp);
}

enum MHD_Result
reply(Call *c, unsigned status, const char *body, const char *ctype)
{
	return answer(c, status, body, ctype, NULL, NULL);
}

/* A JSON answer from malloc'd text, which it frees; with one more header if name is not NULL. */
enum MHD_Result
reply_text(Call *c, unsigned status, char *text, const char *name, const char *value)
{
	enum MHD_Result ret = answer(c, status, text, JSON_CT, name, value);

	free(text);
	return ret;
}

/* {"<key>": "<msg>"}: Dragonfly's "message", or "errors" for a 422 */
enum MHD_Result
reply_message(Call *c, unsigned status, const char *key, const char *msg)
{
	json_object *o = json_object_new_object();
	char	   *text;

	json_object_object_add(o, key, json_object_new_string(msg));
	text = json_text(o);
	json_object_put(o);
	return reply_text(c, status, text, NULL, NULL);
}

enum MHD_Result
reply_redirect(Call *c, unsigned status, const char *location)
{
	char		body[256];

	snprintf(body, sizeof(body), "<a href=\"%s\">%s</a>.\n\n", location, status == 301 ? "Moved Permanently" : "Found");
	return answer(c, status, body, "text/html; charset=utf-8", MHD_HTTP_HEADER_LOCATION, location);
}

/* The 200 answer prepared before a pause. */
enum MHD_Result
reply_pending(Call *c)
{
	char	   *text = c->r->pending;

	c->r->pending = NULL;
	return reply_text(c, 200, text, NULL, NULL);
}

/* Pauses */

typedef struct Sleeper
{
	struct MHD_Connection *con;
	int64_t		due;
} Sleeper;

static void *
sleeper_main(void *arg)
{
	Sleeper    *s = arg;
	struct timespec ts = {s->due / 1000000000, s->due % 1000000000};

	pthread_mutex_lock(&pause_lock);
	while (!atomic_load(&stopping) && mono_ns() < s->due)
		pthread_cond_timedwait(&pause_cond, &pause_lock, &ts);
	pthread_mutex_unlock(&pause_lock);
	MHD_resume_connection(s->con);
	free(s);
	return NULL;
}

/* Suspend the request for ns nanoseconds, then run next. */
enum MHD_Result
pause_then(Call *c, int64_t ns, Step next)
{
	Sleeper    *s = malloc(sizeof(Sleeper));
	pthread_attr_t attr;
	pthread_t	th;

	if (s == NULL || atomic_load(&stopping))
		return free(s), MHD_NO;
	*s = (Sleeper) {c->con, mono_ns() + ns};
	c->r->next = next;
	c->r->suspended = true;
	atomic_fetch_add(&nsuspended, 1);
	MHD_suspend_connection(c->con);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	if (pthread_create(&th, &attr, sleeper_main, s) != 0)
	{
		free(s);
		MHD_resume_connection(c->con);
	}
	pthread_attr_destroy(&attr);
	return MHD_YES;
}

/* Request log */

/*
 * One JSON line per request that creates or changes something:
 * {"t":<arrival, epoch seconds>,"route":"<METHOD> <path>","id":<id or null>,
 *  "status":<HTTP status; 0 = connection dropped>,"body":<request body, or a
 *  string when it is not JSON, or null>,"auth_kind":"bearer|basic|custom|none"}
 */
void
log_request(const Req *r, const char *route, long long id, unsigned status)
{
	json_object *line;
	char		t[32], *text;
	size_t		n;

	if (log_fd < 0)
		return;
	line = json_object_new_object();
	snprintf(t, sizeof(t), "%.6f", r->t);
	json_object_object_add(line, "t", json_object_new_double_s(r->t, t));
	json_object_object_add(line, "route", json_object_new_string(route));
	json_object_object_add(line, "id", id > 0 ? json_object_new_int64(id) : NULL);
	json_object_object_add(line, "status", json_object_new_int((int) status));
	json_object_object_add(line, "body", r->jbody ? json_object_get(r->jbody) :
						   r->bad_body ? json_object_new_string(r->bad_body) : NULL);
	json_object_object_add(line, "auth_kind", json_object_new_string(r->auth_kind ? r->auth_kind : "none"));
	if (r->chaos != CHAOS_NONE)
		json_object_object_add(line, "chaos", json_object_new_string((const char *[]) {"", "500", "429", "drop", "slow"}[r->chaos]));
	text = json_text(line);
	json_object_put(line);
	n = strlen(text);
	text[n++] = '\n';			/* in place of the NUL: one write, whole lines (O_APPEND) */
	if (write(log_fd, text, n) < 0 && opt.verbose)
		fprintf(stderr, "dragonfly_standin: log write failed: %s\n", strerror(errno));
	free(text);
}

/* Control endpoints (no auth, not counted) */

static enum MHD_Result
control(Call *c)
{
	const char *what = c->url + strlen("/_standin/");
	bool		get = strcmp(c->method, "GET") == 0;
	json_object *o = NULL;
	char	   *text = NULL;

	c->control = true;
	pthread_mutex_lock(&state_lock);
	if (get && strcmp(what, "stats") == 0)
	{
		o = json_object_new_object();
		json_object_object_add(o, "posts", json_object_new_int64(stats.posts));
		json_object_object_add(o, "gets", json_object_new_int64(stats.gets));
		json_object_object_add(o, "jobs", json_object_new_int64(jobs_count()));
		json_object_object_add(o, "healthy", json_object_new_int64(stats.healthy));
		json_object_object_add(o, "notifications", json_object_new_int64(stats.notifications));
		json_object_object_add(o, "by_status", by_status ? json_object_get(by_status) : json_object_new_object());
	}
	else if (get && strcmp(what, "jobs") == 0)
		o = jobs_summary();
	else if (get && strcmp(what, "urls") == 0)
		o = jobs_urls();
	else if (strcmp(c->method, "POST") == 0 && strcmp(what, "reset") == 0)
	{
		jobs_reset();
		memset(&stats, 0, sizeof(stats));
		json_object_put(by_status);
		by_status = NULL;
		o = json_tokener_parse("{\"reset\":true}");
	}
	if (o)
		text = json_text(o);
	json_object_put(o);
	pthread_mutex_unlock(&state_lock);
	if (text == NULL)
		return reply_message(c, 404, "message", "unknown control endpoint");
	if (strcmp(what, "reset") == 0)
		malloc_trim(0);			/* hand the jobs' memory back between runs */
	return reply_text(c, 200, text, NULL, NULL);
}

/* Routing */

/* Once per request: what --chaos does to it. */
static Chaos
chaos_roll(void)
{
	static _Thread_local unsigned short seed[3];
	double		x;

	if (seed[0] == 0 && seed[1] == 0 && seed[2] == 0 && getrandom(seed, sizeof(seed), 0) < 0)
		seed[0] = (unsigned short) mono_ns();
	x = erand48(seed) * 100;
	for (int k = CHAOS_500; k <= CHAOS_SLOW; k++)
		if ((x -= opt.chaos[k]) < 0)
			return (Chaos) k;
	return CHAOS_NONE;
}

static enum MHD_Result
route(Call *c)
{
	const char *u = c->url, *m = c->method;
	Req		   *r = c->r;

	if (!r->rolled)
	{
		r->rolled = true;
		r->chaos = strncmp(u, "/oapi/", 6) == 0 || strncmp(u, "/registry/", 10) == 0 ? chaos_roll() : CHAOS_NONE;
		if (r->chaos == CHAOS_SLOW)
			return pause_then(c, opt.chaos_slow_ms * 1000000, route);
	}
	if (strcmp(u, "/registry/notifications") == 0 && strcmp(m, "POST") == 0)
		return kraken_notify(c);
	/* POST /oapi/v1/jobs suffers its chaos later, to log the body */
	if (strcmp(u, "/oapi/v1/jobs") != 0 || strcmp(m, "POST") != 0)
	{
		if (r->chaos == CHAOS_DROP)
			return MHD_NO;
		if (r->chaos == CHAOS_500)
			return reply_message(c, 500, "message", "Internal Server Error");
	}

	if ((strcmp(u, "/healthy") == 0 || strcmp(u, "/health") == 0) && (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0))
	{
		pthread_mutex_lock(&state_lock);
		stats.healthy++;
		pthread_mutex_unlock(&state_lock);
		/* Dragonfly's /healthy, Kraken's /health */
		return strcmp(u, "/healthy") == 0 ? reply(c, 200, "\"OK\"", JSON_CT) : reply(c, 200, "OK", TEXT_CT);
	}
	if (strcmp(u, "/oapi/v1/jobs") == 0 && strcmp(m, "POST") == 0)
		return post_job(c);
	if (strcmp(u, "/oapi/v1/jobs") == 0 && strcmp(m, "GET") == 0)
		return opt.list_delay > 0 ? pause_then(c, (int64_t) (opt.list_delay * 1e9), list_jobs) : list_jobs(c);
	if (strncmp(u, "/oapi/v1/jobs/", 14) == 0 && strcmp(m, "GET") == 0)
		return get_job(c, u + 14);
	if (strncmp(u, "/oapi/v1/clusters/", 18) == 0 && (strcmp(m, "GET") == 0 || strcmp(m, "PATCH") == 0))
		return cluster_route(c, u + 18);
	/* anything else is the web console's business, as in Dragonfly */
	return reply_redirect(c, 301, "/console/");
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
		   const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	Req		   *r = *con_cls;
	Call		c = {.con = con, .url = url, .method = method, .r = r};

	(void) cls, (void) version;
	if (r == NULL)				/* headers are in */
	{
		const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

		if ((*con_cls = r = calloc(1, sizeof(Req))) == NULL)
			return MHD_NO;
		r->too_big = cl != NULL && strtoull(cl, NULL, 10) > MAX_BODY;
		return MHD_YES;
	}
	if (*upload_size != 0)
	{
		r->too_big |= r->len + *upload_size > MAX_BODY;
		if (!r->too_big)
		{
			if ((r->body = realloc(r->body, r->len + *upload_size + 1)) == NULL)
				return MHD_NO;
			memcpy(r->body + r->len, upload, *upload_size);
			r->body[r->len += *upload_size] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (r->suspended)
	{
		r->suspended = false;
		atomic_fetch_sub(&nsuspended, 1);
		if (atomic_load(&stopping))
			return MHD_NO;
	}
	if (r->next)
	{
		Step		next = r->next;

		r->next = NULL;
		return next(&c);
	}
	if (r->too_big)
		return answer(&c, 413, "{\"message\":\"request body too large\"}", JSON_CT, MHD_HTTP_HEADER_CONNECTION, "close");
	if (strncmp(url, "/_standin/", 10) == 0)
		return control(&c);
	if (opt.delay > 0)
		return pause_then(&c, (int64_t) (opt.delay * 1e9), route);
	return route(&c);
}

static void
on_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	Req		   *r = *con_cls;

	(void) cls, (void) con, (void) toe;
	if (r == NULL)
		return;
	if (r->suspended)
		atomic_fetch_sub(&nsuspended, 1);
	free(r->body);
	json_object_put(r->jbody);
	free(r->bad_body);
	free(r->pending);
	free(r);
	*con_cls = NULL;
}

/* Keep the request target as sent: markers are matched on the raw URL. */
static size_t
unescape_none(void *cls, struct MHD_Connection *con, char *s)
{
	(void) cls, (void) con;
	return strlen(s);
}

/*
 * Serve until SIGTERM or SIGINT (blocked by the caller), then resume every
 * paused request so that it closes, and stop.
 */
int
server_run(int listen_fd, int port)
{
	pthread_condattr_t ca;
	struct MHD_Daemon *d;
	sigset_t	sigs;
	int			sig = 0;
	int64_t		deadline;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pause_cond, &ca);
	if (opt.log_file && (log_fd = open(opt.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0)
	{
		fprintf(stderr, "dragonfly_standin: cannot open %s: %s\n", opt.log_file, strerror(errno));
		return 1;
	}

	/*
	 * poll(), not epoll: with libmicrohttpd 0.9.75 (Debian 12) epoll workers
	 * sometimes sleep while a burst of new keep-alive connections has
	 * requests waiting.
	 */
	d = MHD_start_daemon(MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
						 (opt.verbose ? MHD_USE_ERROR_LOG : 0), 0, NULL, NULL, on_request, NULL,
						 MHD_OPTION_LISTEN_SOCKET, listen_fd,
						 MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) 2,
						 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 8192,
						 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 300,
						 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 32 * 1024,
						 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
						 MHD_OPTION_UNESCAPE_CALLBACK, unescape_none, NULL,
						 MHD_OPTION_END);
	if (d == NULL)
	{
		fputs("dragonfly_standin: cannot start the HTTP daemon\n", stderr);
		return 1;
	}
	printf("dragonfly-standin listening on http://%s:%d (auth %s)\n",
		   opt.host, port, opt.auth_required ? "required" : "off");
	fflush(stdout);

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	while (sig != SIGTERM && sig != SIGINT)
		if (sigwait(&sigs, &sig) != 0)
			sig = 0;

	atomic_store(&stopping, true);
	MHD_quiesce_daemon(d);
	pthread_mutex_lock(&pause_lock);
	pthread_cond_broadcast(&pause_cond);
	pthread_mutex_unlock(&pause_lock);
	for (deadline = mono_ns() + 2000000000LL; atomic_load(&nsuspended) > 0 && mono_ns() < deadline;)
		usleep(2000);
	if (atomic_load(&nsuspended) == 0)
		MHD_stop_daemon(d);
	return 0;
}
