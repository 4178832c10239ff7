/*
 * jobs.c
 *		Dragonfly's job API as the tests need it: POST /oapi/v1/jobs with
 *		Dragonfly's validation (422 {"errors": ...}), the fault markers found
 *		in args.url, the job store (kept across restarts by state.c with
 *		--state-file), and GET /oapi/v1/jobs/<id> whose state turns final
 *		--success-after seconds after creation.
 *
 * Fault markers are plain words in the image URL, so a test chooses the
 * outcome of each job by naming its image (listed in main.c).  Every json-c
 * object of the store is touched only under state_lock (json-c's reference
 * counts are not atomic); answers leave the lock as copied text.
 */
#define _GNU_SOURCE

#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "standin.h"

enum { FAULT_NONE, FAULT_FORGET, FAULT_JOBFAIL, FAULT_PARTIAL, NFAULTS };

/* as --state-file writes them, by the enum above */
static const char *const fault_names[NFAULTS] = {"none", "forget", "jobfail", "partial"};

typedef struct Job
{
	json_object *obj;			/* the Open API job object; NULL: lost (a torn
								 * line of --state-file), answered 404 */
	char	   *url;
	int			fault;
	int64_t		created;		/* mono_ns() */
	int64_t		slowget_ns;
	long long	polls;
} Job;

/*
 * Ids are never reused: after a reset the old ones answer 404.  Job id is
 * jobs[id - base_id], so next_id == base_id + njobs always.
 */
static Job *jobs;
static size_t njobs, jobs_cap, nlost;
static long long next_id = 1, base_id = 1;
static json_object *url_posts;	/* args.url -> POSTs seen */

#define JOBFAIL_ERROR "pull manifest: 404 not found"
#define POST_ROUTE "POST /oapi/v1/jobs"

/* The slot of the next id (caller holds state_lock or is alone). */
static Job *
job_slot(void)
{
	if (njobs == jobs_cap && (jobs = realloc(jobs, (jobs_cap = jobs_cap ? jobs_cap * 2 : 4096) * sizeof(Job))) == NULL)
		abort();
	next_id++;
	return memset(&jobs[njobs++], 0, sizeof(Job));
}

/* The number in the first "<prefix><digits><suffix>" of url, or -1. */
static long long
marker(const char *url, const char *prefix, const char *suffix)
{
	for (const char *p = url; (p = strstr(p, prefix)) != NULL;)
	{
		char	   *end;
		long long	v;

		p += strlen(prefix);
		if (*p < '0' || *p > '9')
			continue;
		v = strtoll(p, &end, 10);
		if (strncmp(end, suffix, strlen(suffix)) == 0)
			return v;
	}
	return -1;
}

static bool
has(const char *url, const char *word)
{
	return strstr(url, word) != NULL;
}

json_object *
field(json_object *o, const char *key)
{
	json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;					/* NULL for JSON null too */
}

static bool
is(json_object *o, json_type t)
{
	return o != NULL && json_object_get_type(o) == t;
}

static bool
str_is(json_object *o, const char *s)
{
	return is(o, json_type_string) && strcmp(json_object_get_string(o), s) == 0;
}

static bool
all_of(json_object *arr, json_type t, bool positive)
{
	for (size_t i = 0; i < json_object_array_length(arr); i++)
	{
		json_object *e = json_object_array_get_idx(arr, i);

		if (!is(e, t) || (positive && json_object_get_int64(e) <= 0))
			return false;
	}
	return true;
}

static regex_t image_re;

static void
compile_image_re(void)
{
	if (regcomp(&image_re, "://[^/]+/v2/.+/manifests/[^/]+$", REG_EXTENDED | REG_NOSUB | REG_NEWLINE))
		abort();
}

/* NULL when body is a valid preheat job, else the 422 message. */
static const char *
validate(json_object *body, char *err, size_t errlen)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	/* json_type order; the names are the ones tests compare */
	static const char *const type_names[] = {"NoneType", "bool", "float", "int", "dict", "list", "str"};
	static const char *const str_args[] = {"url", "username", "password", "platform", "tag",
	"application", "filtered_query_params", "scope"};
	static const struct { const char *name; long long lo, hi; } ranges[] = {
		{"piece_length", 4194304, 67108864}, {"count", 1, 200}, {"percentage", 1, 100},
		{"concurrent_task_count", 1, 100}, {"concurrent_peer_count", 1, 1000}};
	json_object *args, *v;
	const char *url;

	if (!is(body, json_type_object))
		return "request body must be a JSON object";
	if (!str_is(field(body, "type"), "preheat"))
		return "type: required, must be \"preheat\"";
	if ((v = field(body, "scheduler_cluster_ids")) && !(is(v, json_type_array) && all_of(v, json_type_int, true)))
		return "scheduler_cluster_ids: must be a list of positive integers";
	if ((v = field(body, "bio")) && !is(v, json_type_string))
		return "bio: must be a string";
	if ((v = field(body, "user_id")) && !(is(v, json_type_int) && json_object_get_int64(v) >= 0))
		return "user_id: must be a non-negative integer";
	if (!is(args = field(body, "args"), json_type_object))
		return "args: required, must be a JSON object";
	for (size_t i = 0; i < sizeof(str_args) / sizeof(str_args[0]); i++)
		if ((v = field(args, str_args[i])) && !is(v, json_type_string))
			return snprintf(err, errlen, "args.%s: must be a string", str_args[i]), err;
	url = (v = field(args, "url")) ? json_object_get_string(v) : "";
	if (str_is(field(args, "type"), "image"))
	{
		pthread_once(&once, compile_image_re);
		if (regexec(&image_re, url, 0, NULL, 0) != 0)
			return "args.url: invalid image manifest url, must match ://<host>/v2/<repo>/manifests/<reference>";
	}
	else if (str_is(field(args, "type"), "file"))
	{
		if ((v = field(args, "urls")) && !(is(v, json_type_array) && all_of(v, json_type_string, false)))
			return "args.urls: must be a list of strings";
		if (url[0] == '\0' && (v == NULL || json_object_array_length(v) == 0))
			return "args.url: required for type file";
	}
	else
		return "args.type: required, must be \"image\" or \"file\"";
	if ((v = field(args, "headers")))
	{
		if (!is(v, json_type_object))
			return "args.headers: must be an object of string values";
		json_object_object_foreach(v, hk, hv)
		{
			(void) hk;
			if (!is(hv, json_type_string))
				return "args.headers: must be an object of string values";
		}
	}
	if ((v = field(args, "scope")) && json_object_get_string_len(v) != 0 && !opt.lenient_scope &&
		!str_is(v, "single_seed_peer") && !str_is(v, "all_seed_peers") && !str_is(v, "all_peers"))
		return "args.scope: must be one of single_seed_peer, all_seed_peers, all_peers";
	if ((v = field(args, "timeout")) && !is(v, json_type_int))
		return snprintf(err, errlen, "args.timeout: must be an integer (nanoseconds), got %s",
						type_names[json_object_get_type(v)]), err;
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
	{
		if ((v = field(args, ranges[i].name)) == NULL)
			continue;
		if (!is(v, json_type_int))
			return snprintf(err, errlen, "args.%s: must be an integer", ranges[i].name), err;
		if (json_object_get_int64(v) < ranges[i].lo || json_object_get_int64(v) > ranges[i].hi)
			return snprintf(err, errlen, "args.%s: must be between %lld and %lld",
							ranges[i].name, ranges[i].lo, ranges[i].hi), err;
	}
	if ((v = field(args, "ips")) && !(is(v, json_type_array) && json_object_array_length(v) >= 1 &&
									  json_object_array_length(v) <= 100 && all_of(v, json_type_string, false)))
		return "args.ips: must be a list of 1 to 100 strings";
	return NULL;
}

/* The job object */

json_object *
rfc3339_now(void)
{
	struct timespec ts;
	char		out[40];
	size_t		n;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%S", gmtime(&ts.tv_sec));
	snprintf(out + n, sizeof(out) - n, ".%06ldZ", ts.tv_nsec / 1000);
	return json_object_new_string(out);
}

static json_object *
task(const char *url, const char *host, const char *ip, const char *description)
{
	json_object *t = json_object_new_object();

	json_object_object_add(t, "url", json_object_new_string(url));
	json_object_object_add(t, "hostname", json_object_new_string(host));
	json_object_object_add(t, "ip", json_object_new_string(ip));
	if (description)
		json_object_object_add(t, "description", json_object_new_string(description));
	return t;
}

/* The final result: one group state, one entry per scheduler cluster. */
static json_object *
job_result(const Job *j, bool failed)
{
	json_object *clusters = field(j->obj, "scheduler_clusters");
	json_object *results = json_object_new_array();
	json_object *state = json_object_new_object();
	json_object *result = json_object_new_object();

	for (size_t i = 0; i < json_object_array_length(clusters); i++)
	{
		json_object *r = json_object_new_object(),
				   *ok = json_object_new_array(),
				   *bad = json_object_new_array();

		json_object_object_add(r, "scheduler_cluster_id",
							   json_object_get(field(json_object_array_get_idx(clusters, i), "id")));
		json_object_array_add(failed ? bad : ok, task(j->url, "peer-1", "10.0.0.1", failed ? JOBFAIL_ERROR : NULL));
		if (j->fault == FAULT_PARTIAL && i == 0)
			json_object_array_add(bad, task(j->url, "peer-2", "10.0.0.2", "connection reset"));
		json_object_object_add(r, "success_tasks", ok);
		json_object_object_add(r, "failure_tasks", bad);
		json_object_array_add(results, r);
	}
	json_object_object_add(state, "state", json_object_new_string(failed ? "FAILURE" : "SUCCESS"));
	json_object_object_add(state, "error", json_object_new_string(failed ? JOBFAIL_ERROR : ""));
	json_object_object_add(state, "results", results);
	json_object_object_add(result, "job_states", json_object_new_array());
	json_object_array_add(field(result, "job_states"), state);
	return result;
}

static json_object *
job_new(long long id, json_object *body, json_object *cluster_ids)
{
	json_object *o = json_object_new_object(), *args = NULL, *clusters = json_object_new_array();
	json_object *bio = field(body, "bio"), *user = field(body, "user_id");
	unsigned char u[16] = {0};
	char		task_id[48];

	json_object_deep_copy(field(body, "args"), &args, NULL);
	if (getrandom(u, sizeof(u), 0) != sizeof(u))
		u[0] = 7;
	snprintf(task_id, sizeof(task_id),
			 "group_%02x%02x%02x%02x-%02x%02x-4%x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 u[0], u[1], u[2], u[3], u[4], u[5], u[6] & 15, u[7], (u[8] & 0x3f) | 0x80,
			 u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
	for (size_t i = 0; i < json_object_array_length(cluster_ids); i++)
	{
		json_object *c = json_object_new_object();

		json_object_object_add(c, "id", json_object_get(json_object_array_get_idx(cluster_ids, i)));
		json_object_array_add(clusters, c);
	}
	json_object_object_add(o, "id", json_object_new_int64(id));
	json_object_object_add(o, "created_at", rfc3339_now());
	json_object_object_add(o, "updated_at", json_object_get(field(o, "created_at")));
	json_object_object_add(o, "task_id", json_object_new_string(task_id));
	json_object_object_add(o, "bio", json_object_new_string(bio ? json_object_get_string(bio) : ""));
	json_object_object_add(o, "type", json_object_new_string("preheat"));
	json_object_object_add(o, "state", json_object_new_string("PENDING"));
	json_object_object_add(o, "args", args);
	json_object_object_add(o, "result", NULL);
	json_object_object_add(o, "user_id", json_object_new_int64(user ? json_object_get_int64(user) : 0));
	json_object_object_add(o, "scheduler_clusters", clusters);
	return o;
}

/* POST /oapi/v1/jobs */

static enum MHD_Result
post_reply(Call *c, unsigned status, const char *body, const char *ctype)
{
	log_request(c->r, POST_ROUTE, 0, status);
	return reply(c, status, body, ctype);
}

static enum MHD_Result
post_message(Call *c, unsigned status, const char *key, const char *msg)
{
	log_request(c->r, POST_ROUTE, 0, status);
	return reply_message(c, status, key, msg);
}

static enum MHD_Result post_job_faults(Call *c);

/* Authentication, parsing and validation, up to the slow<MS>ms pause. */
enum MHD_Result
post_job(Call *c)
{
	Req		   *r = c->r;
	const char *why, *url, *verr = NULL;
	char		err[512];
	unsigned	code;
	long long	ms;
	bool		admitted;

	r->t = wall_seconds();
	pthread_mutex_lock(&state_lock);
	stats.posts++;
	pthread_mutex_unlock(&state_lock);
	code = check_auth(c, SCOPE_JOB, &r->auth_kind, &why);
	if (!parse_body(r, err, sizeof(err)))
		verr = err;
	if (code != 0)
		return post_message(c, code, "message", why);
	if (verr == NULL)
		verr = validate(r->jbody, err, sizeof(err));
	if (verr != NULL)
		return post_message(c, 422, "errors", verr);
	url = json_object_get_string(field(field(r->jbody, "args"), "url"));
	url = url ? url : "";
	pthread_mutex_lock(&state_lock);
	if ((admitted = clusters_admit(field(r->jbody, "scheduler_cluster_ids"))))
		r->url_posts = count(&url_posts, url);
	pthread_mutex_unlock(&state_lock);
	if (!admitted)
		return post_reply(c, 429, "rate limit exceeded", TEXT_CT);

	if ((ms = marker(url, "slow", "ms")) > 0)
		return pause_then(c, ms * 1000000, post_job_faults);
	return post_job_faults(c);
}

/*
 * The 500 of Dragonfly's image preheat when the registry refuses the
 * manifest (Harbor's words, through docker/distribution's client) or no
 * manifest matches args.platform: 1 with err set, else 0.
 */
static int
registry_fault(const char *url, json_object *platform, char *err, size_t errlen)
{
	const char *v2 = strstr(url, "/v2/"), *m = strstr(url, "/manifests/"), *ref;
	int			repo_len = v2 && m > v2 ? (int) (m - v2 - 4) : 0;

	ref = m ? m + 11 : "";
	if (has(url, "registry404"))
		snprintf(err, errlen, "unknown: artifact %.*s%s%s not found", repo_len, v2 ? v2 + 4 : "",
				 strncmp(ref, "sha256:", 7) == 0 ? "@" : ":", ref);
	else if (has(url, "registry401"))
		snprintf(err, errlen, "unauthorized: unauthorized to access repository: %.*s, action: pull: "
				 "unauthorized to access repository: %.*s, action: pull", repo_len, v2 ? v2 + 4 : "",
				 repo_len, v2 ? v2 + 4 : "");
	else if (has(url, "registry500"))
		snprintf(err, errlen, "received unexpected HTTP status: 500 Internal Server Error");
	else if (has(url, "noplatform"))
		snprintf(err, errlen, "no matching manifest for platform %s",
				 json_object_get_string_len(platform) ? json_object_get_string(platform) : "linux/amd64");
	else
		return 0;
	return 1;
}

/* The fault markers, then the job. */
static enum MHD_Result
post_job_faults(Call *c)
{
	Req		   *r = c->r;
	const char *url = json_object_get_string(field(field(r->jbody, "args"), "url"));
	json_object *ids = field(r->jbody, "scheduler_cluster_ids");
	json_object *clusters;
	long long	lim, id;
	Job		   *j;
	char	   *text, err[1024];

	if (url == NULL)
		url = "";
	if (has(url, "drop") || r->chaos == CHAOS_DROP)
		return log_request(r, POST_ROUTE, 0, 0), MHD_NO;
	if (r->chaos == CHAOS_500)
		return post_message(c, 500, "message", "failed to get manifest: unexpected status 500");
	if (r->chaos == CHAOS_429)
		return post_reply(c, 429, "rate limit exceeded", TEXT_CT);
	if (has(url, "redirect"))
		return log_request(r, POST_ROUTE, 0, 302), reply_redirect(c, 302, "http://example.invalid/console/");
	lim = marker(url, "flaky500x", "");
	if (has(url, "fail500") || (lim >= 0 && r->url_posts <= lim))
		return post_message(c, 500, "message", "failed to get manifest: unexpected status 500");
	if (registry_fault(url, field(field(r->jbody, "args"), "platform"), err, sizeof(err)))
		return post_message(c, 500, "message", err);
	lim = marker(url, "ratelimit429x", "");
	if ((lim >= 0 && r->url_posts <= lim) || (lim < 0 && has(url, "ratelimit")))
		return post_reply(c, 429, "rate limit exceeded", TEXT_CT);
	if (has(url, "badjson"))
		return post_reply(c, 200, "not json", JSON_CT);

	/* new objects: the request's own are freed outside state_lock */
	clusters = json_object_new_array();
	for (size_t i = 0; ids && i < json_object_array_length(ids); i++)
		json_object_array_add(clusters, json_object_new_int64(json_object_get_int64(json_object_array_get_idx(ids, i))));
	pthread_mutex_lock(&state_lock);
	if (json_object_array_length(clusters) == 0)
		clusters_default(clusters);
	id = next_id;
	j = job_slot();
	j->obj = job_new(id, r->jbody, clusters);
	j->url = strdup(url);
	j->fault = has(url, "forget") ? FAULT_FORGET : has(url, "jobfail") ? FAULT_JOBFAIL :
		has(url, "partial") ? FAULT_PARTIAL : FAULT_NONE;
	j->created = mono_ns();
	j->slowget_ns = (lim = marker(url, "slowget", "ms")) > 0 ? lim * 1000000 : 0;
	state_save_job(id, j->obj, j->url, fault_names[j->fault], wall_seconds(), j->slowget_ns);
	json_object_put(clusters);
	text = json_text(j->obj);
	pthread_mutex_unlock(&state_lock);

	log_request(r, POST_ROUTE, id, 200);
	return reply_text(c, 200, text, NULL, NULL);
}

/* GET /oapi/v1/jobs/<id> and GET /oapi/v1/jobs */

/* A pending job is final once --success-after seconds old. */
static void
refresh(Job *j)
{
	bool		failed = j->fault == FAULT_JOBFAIL;

	if (!str_is(field(j->obj, "state"), "PENDING") || mono_ns() - j->created < (int64_t) (opt.success_after * 1e9))
		return;
	json_object_object_add(j->obj, "state", json_object_new_string(failed ? "FAILURE" : "SUCCESS"));
	json_object_object_add(j->obj, "result", job_result(j, failed));
	json_object_object_add(j->obj, "updated_at", rfc3339_now());
}

enum MHD_Result
get_job(Call *c, const char *sid)
{
	const char *kind, *why;
	unsigned	code;
	long long	id;
	char	   *end, *text = NULL;
	int64_t		delay = 0;

	pthread_mutex_lock(&state_lock);
	stats.gets++;
	pthread_mutex_unlock(&state_lock);
	if ((code = check_auth(c, SCOPE_JOB, &kind, &why)) != 0)
		return reply_message(c, code, "message", why);
	id = strtoll(sid, &end, 10);
	if (sid[0] < '0' || sid[0] > '9' || *end != '\0' || id <= 0)
	{
		json_object *s = json_object_new_string(sid);
		char		msg[256];

		snprintf(msg, sizeof(msg), "id: must be a positive integer, got %.64s", json_object_to_json_string(s));
		json_object_put(s);
		return reply_message(c, 422, "errors", msg);
	}

	pthread_mutex_lock(&state_lock);
	if (id >= base_id && id < base_id + (long long) njobs)
	{
		Job		   *j = &jobs[id - base_id];

		j->polls++;
		delay = j->slowget_ns;
		if (j->obj != NULL && j->fault != FAULT_FORGET)
		{
			refresh(j);
			text = json_text(j->obj);
		}
	}
	pthread_mutex_unlock(&state_lock);
	if (text == NULL)
		return reply_message(c, 404, "message", "record not found");
	if (delay > 0)
	{
		c->r->pending = text;
		return pause_then(c, delay, reply_pending);
	}
	return reply_text(c, 200, text, NULL, NULL);
}

/* A query parameter as Dragonfly's form binding reads a number; NULL or the 422 message. */
static const char *
query_number(Call *c, const char *name, const char *go, long long lo, long long hi, long long *out, char *err, size_t errlen)
{
	const char *v = MHD_lookup_connection_value(c->con, MHD_GET_ARGUMENT_KIND, name);
	char	   *end;

	*out = 0;
	if (v == NULL || v[0] == '\0')
		return NULL;
	*out = strtoll(v, &end, 10);
	if (*end != '\0' || (lo == 0 && v[0] == '-'))
		return snprintf(err, errlen, "strconv.Parse%s: parsing \"%.64s\": invalid syntax", lo == 0 ? "Uint" : "Int", v), err;
	if (*out != 0 && (*out < lo || *out > hi))	/* omitempty: 0 means unset */
		return snprintf(err, errlen, "Key: 'GetJobsQuery.%s' Error:Field validation for '%s' failed on the '%s' tag",
						go, go, *out < lo ? "gte" : "lte"), err;
	return NULL;
}

/*
 * Dragonfly's job list: newest first, filtered by type, state and user_id,
 * page (from 1) and per_page (default 10), with its Link header.  Like
 * Dragonfly it leaves out the scheduler clusters (null) and jobs deleted
 * (forget).
 */
enum MHD_Result
list_jobs(Call *c)
{
	static const char *const states[] = {"PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE"};
	const char *type = MHD_lookup_connection_value(c->con, MHD_GET_ARGUMENT_KIND, "type");
	const char *state = MHD_lookup_connection_value(c->con, MHD_GET_ARGUMENT_KIND, "state");
	const char *kind, *why, *verr;
	char		err[256], link[2048], *text;
	long long	page, per_page, user, total = 0, last;
	json_object *out = json_object_new_array();
	unsigned	code;
	size_t		n = 0;

	pthread_mutex_lock(&state_lock);
	stats.gets++;
	pthread_mutex_unlock(&state_lock);
	if ((code = check_auth(c, SCOPE_JOB, &kind, &why)) != 0)
		return json_object_put(out), reply_message(c, code, "message", why);
	for (n = 0, verr = state && state[0] ? "Key: 'GetJobsQuery.State' Error:Field validation for 'State' "
		 "failed on the 'oneof' tag" : NULL; verr && n < sizeof(states) / sizeof(states[0]); n++)
		if (strcmp(state, states[n]) == 0)
			verr = NULL;
	if (verr == NULL && (verr = query_number(c, "user_id", "UserID", 0, LLONG_MAX, &user, err, sizeof(err))) == NULL &&
		(verr = query_number(c, "page", "Page", 1, LLONG_MAX, &page, err, sizeof(err))) == NULL)
		verr = query_number(c, "per_page", "PerPage", 1, 10000000, &per_page, err, sizeof(err));
	if (verr != NULL)
		return json_object_put(out), reply_message(c, 422, "errors", verr);
	page = page ? page : 1;
	per_page = per_page ? per_page : 10;

	pthread_mutex_lock(&state_lock);
	for (size_t i = njobs; i-- > 0;)
	{
		Job		   *j = &jobs[i];

		if (j->obj == NULL || j->fault == FAULT_FORGET)
			continue;
		refresh(j);
		if ((type && type[0] && !str_is(field(j->obj, "type"), type)) ||
			(state && state[0] && !str_is(field(j->obj, "state"), state)) ||
			(user && json_object_get_int64(field(j->obj, "user_id")) != user))
			continue;
		if (total++ >= (page - 1) * per_page && (long long) json_object_array_length(out) < per_page)
		{
			json_object *o = json_object_new_object();

			json_object_object_foreach(j->obj, k, v)
				json_object_object_add(o, k, strcmp(k, "scheduler_clusters") ? json_object_get(v) : NULL);
			json_object_array_add(out, o);
		}
	}
	text = json_text(out);
	json_object_put(out);
	pthread_mutex_unlock(&state_lock);

	/* prev, next, first, last, the query's keys in order as Go encodes them */
	last = (total + per_page - 1) / per_page;
	n = 0;
	for (int k = 0; k < 4; k++)
	{
		long long	p = k == 0 ? (page == 1 ? 1 : page - 1) : k == 1 ? (page == last ? page : page + 1) : k == 2 ? 1 : last;

		n += snprintf(link + n, sizeof(link) - n, "%s</oapi/v1/jobs?page=%lld&per_page=%lld%s%s%s%s",
					  k ? "," : "", p, per_page, state && state[0] ? "&state=" : "", state && state[0] ? state : "",
					  type && type[0] ? "&type=" : "", type && type[0] ? type : "");
		if (user)
			n += snprintf(link + n, sizeof(link) - n, "&user_id=%lld", user);
		n += snprintf(link + n, sizeof(link) - n, ">;rel=%s", (const char *[]) {"prev", "next", "first", "last"}[k]);
		if (n >= sizeof(link))
			n = sizeof(link) - 1;
	}
	return reply_text(c, 200, text, "Link", link);
}

/* For /_standin/ (caller holds state_lock) */

long long
jobs_count(void)
{
	return (long long) (njobs - nlost);
}

json_object *
jobs_summary(void)
{
	json_object *out = json_object_new_array();

	for (size_t i = 0; i < njobs; i++)
	{
		json_object *o, *n = NULL;

		if (jobs[i].obj == NULL)
			continue;
		o = json_object_new_object();
		json_object_object_add(o, "id", json_object_get(field(jobs[i].obj, "id")));
		json_object_object_add(o, "url", json_object_new_string(jobs[i].url));
		json_object_object_add(o, "state", json_object_get(field(jobs[i].obj, "state")));
		json_object_object_add(o, "polls", json_object_new_int64(jobs[i].polls));
		json_object_object_get_ex(url_posts, jobs[i].url, &n);
		json_object_object_add(o, "posts_for_url", json_object_new_int64(n ? json_object_get_int64(n) : 0));
		json_object_array_add(out, o);
	}
	return out;
}

json_object *
jobs_urls(void)
{
	return url_posts ? json_object_get(url_posts) : json_object_new_object();
}

void
jobs_reset(void)
{
	for (size_t i = 0; i < njobs; i++)
	{
		json_object_put(jobs[i].obj);
		free(jobs[i].url);
	}
	njobs = nlost = 0;
	base_id = next_id;
	json_object_put(url_posts);
	url_posts = NULL;
	state_save_reset(next_id);
}

/* --state-file's replay (state.c), before the server starts */

/* Ids below id are taken; those not restored answer 404. */
static void
lose_before(long long id)
{
	while (next_id < id)
	{
		job_slot();
		nlost++;
	}
}

/*
 * A job line that did not parse: its id (0 = unreadable), or at least the
 * next one, is taken.
 */
void
jobs_restore_lost(long long id)
{
	lose_before((id > next_id ? id : next_id) + 1);
}

/* Ids from next on; the jobs before are forgotten, as by a reset then. */
void
jobs_restore_reset(long long next)
{
	if (next > next_id)
		next_id = next;
	jobs_reset();
}

/*
 * A job as created by an earlier run; its age goes on from its wall-clock
 * creation.  false (nothing kept) when the id is already taken or the
 * fault is unknown.
 */
bool
jobs_restore(long long id, json_object *obj, const char *url, const char *fault,
			 double created, int64_t slowget_ns)
{
	double		age = wall_seconds() - created;
	int			k = 0;
	Job		   *j;

	while (k < NFAULTS && strcmp(fault, fault_names[k]) != 0)
		k++;
	if (id < next_id || k == NFAULTS)
		return false;
	lose_before(id);
	j = job_slot();
	j->obj = json_object_get(obj);
	j->url = strdup(url);
	j->fault = k;
	j->created = mono_ns() - (int64_t) ((age > 0 ? age : 0) * 1e9);
	j->slowget_ns = slowget_ns > 0 ? slowget_ns : 0;
	return true;
}
