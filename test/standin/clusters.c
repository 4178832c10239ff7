/*
 * clusters.c
 *		Dragonfly's scheduler clusters as jobs meet them: which ids exist, and
 *		the job rate limiter of Dragonfly's manager (v2.5).
 *
 * Dragonfly checks only POST /oapi/v1/jobs naming scheduler_cluster_ids: it
 * charges each named cluster in turn, and the first that refuses ends the
 * request with 429 "rate limit exceeded" (the clusters charged before stay
 * charged).  Each cluster allows job_rate_limit creations a second with a
 * burst of the same size (GCRA, as redis_rate does it); 0 means Dragonfly's
 * default of 10.  An id that is no scheduler cluster is always refused.
 * Everything here runs under state_lock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "standin.h"

#define DEFAULT_JOB_RATE_LIMIT 10

typedef struct Cluster
{
	long long	id;
	json_object *obj;			/* as GET /oapi/v1/clusters/<id> answers */
	int64_t		tat;			/* GCRA: theoretical arrival time, mono_ns() */
} Cluster;

static Cluster *clusters;
static int	nclusters;
static bool strict;				/* ids were given: unknown ones are refused */
static bool limiter;			/* --cluster given: rates are enforced */

static Cluster *
find(long long id)
{
	for (int i = 0; i < nclusters; i++)
		if (clusters[i].id == id)
			return &clusters[i];
	return NULL;
}

/* A cluster as Dragonfly's manager seeds its default one. */
static void
add(long long id, long long rate)
{
	Cluster    *c = find(id);
	char		text[1024];
	const char *block = "{\"task\":null,\"persistent_task\":null,\"persistent_cache_task\":null}";

	if (c == NULL)
	{
		if ((clusters = realloc(clusters, (nclusters + 1) * sizeof(Cluster))) == NULL)
			abort();
		c = &clusters[nclusters++];
		c->id = id;
		c->tat = 0;
	}
	else
		json_object_put(c->obj);
	snprintf(text, sizeof(text),
			 "{\"id\":%lld,\"name\":\"cluster-%lld\",\"bio\":\"\","
			 "\"scopes\":{\"idc\":\"\",\"location\":\"\",\"cidrs\":null,\"hostnames\":null},"
			 "\"scheduler_cluster_id\":%lld,\"seed_peer_cluster_id\":%lld,"
			 "\"scheduler_cluster_config\":{\"candidate_parent_limit\":3,\"filter_parent_limit\":15,\"job_rate_limit\":%lld},"
			 "\"seed_peer_cluster_config\":{\"load_limit\":2000,\"block_list\":%s},"
			 "\"peer_cluster_config\":{\"load_limit\":200,\"block_list\":%s},"
			 "\"created_at\":null,\"updated_at\":null,\"is_default\":%s}",
			 id, id, id, id, rate, block, block, id == 1 ? "true" : "false");
	c->obj = json_tokener_parse(text);
	json_object_object_add(c->obj, "created_at", rfc3339_now());
	json_object_object_add(c->obj, "updated_at", json_object_get(field(c->obj, "created_at")));
}

/* From --clusters (known ids) and --cluster (ids with their job rate limit). */
void
clusters_init(void)
{
	for (int i = 0; i < opt.nclusters; i++)
		add(opt.clusters[i], DEFAULT_JOB_RATE_LIMIT);
	for (int i = 0; i < opt.nlimits; i++)
		add(opt.limits[i].id, opt.limits[i].rate);
	strict = nclusters > 0;
	limiter = opt.nlimits > 0;
	if (nclusters == 0)
		add(1, DEFAULT_JOB_RATE_LIMIT);
}

/* One job creation charged to c; false if its rate refuses it. */
static bool
charge(Cluster *c)
{
	long long	rate = json_object_get_int64(field(field(c->obj, "scheduler_cluster_config"), "job_rate_limit"));
	int64_t		now = mono_ns(),
				interval = 1000000000 / (rate > 0 ? rate : DEFAULT_JOB_RATE_LIMIT),
				burst = interval * (rate > 0 ? rate : DEFAULT_JOB_RATE_LIMIT),
				tat = c->tat > now ? c->tat : now;

	if (now < tat + interval - burst)
		return false;
	c->tat = tat + interval;
	return true;
}

/* Whether a job naming these scheduler cluster ids may be created. */
bool
clusters_admit(json_object *ids)
{
	for (size_t i = 0; ids && i < json_object_array_length(ids); i++)
	{
		Cluster    *c = find(json_object_get_int64(json_object_array_get_idx(ids, i)));

		if (c == NULL ? strict : limiter && !charge(c))
			return false;
	}
	return true;
}

/* The ids of a job naming none: every cluster known. */
void
clusters_default(json_object *ids)
{
	for (int i = 0; i < nclusters; i++)
		json_object_array_add(ids, json_object_new_int64(clusters[i].id));
}

/*
 * PATCH body: Dragonfly replaces scheduler_cluster_config as a whole (a
 * limit left out becomes 0); name and bio change when not empty.
 */
static const char *
patch(Cluster *c, json_object *body, char *err, size_t errlen)
{
	static const struct { const char *key, *go; long long lo, hi; } limits[] = {
		{"candidate_parent_limit", "CandidateParentLimit", 1, 20},
		{"filter_parent_limit", "FilterParentLimit", 10, 1000},
		{"job_rate_limit", "JobRateLimit", 1, 1000000}};
	json_object *config = field(body, "scheduler_cluster_config"), *v;

	if (!json_object_is_type(body, json_type_object))
		return "json: cannot unmarshal into Go value of type types.UpdateClusterRequest";
	for (size_t i = 0; config && i < sizeof(limits) / sizeof(limits[0]); i++)
	{
		long long	n;

		if ((v = field(config, limits[i].key)) == NULL)
			continue;
		n = json_object_get_int64(v);
		if (!json_object_is_type(v, json_type_int) || n < 0 || n > UINT32_MAX)
			return snprintf(err, errlen, "json: cannot unmarshal %s into Go struct field "
							"UpdateClusterRequest.scheduler_cluster_config.%s of type uint32",
							json_object_to_json_string(v), limits[i].key), err;
		if (n != 0 && (n < limits[i].lo || n > limits[i].hi))
			return snprintf(err, errlen, "Key: 'UpdateClusterRequest.SchedulerClusterConfig.%s' "
							"Error:Field validation for '%s' failed on the '%s' tag",
							limits[i].go, limits[i].go, n < limits[i].lo ? "gte" : "lte"), err;
	}
	if (c == NULL)
		return NULL;
	for (const char *const *k = (const char *const[]) {"name", "bio", NULL}; *k; k++)
		if ((v = field(body, *k)) && json_object_get_string_len(v) > 0)
			json_object_object_add(c->obj, *k, json_object_new_string(json_object_get_string(v)));
	if ((v = field(body, "is_default")) && json_object_get_boolean(v))
		json_object_object_add(c->obj, "is_default", json_object_new_boolean(1));
	if (config)
	{
		json_object *n = json_object_new_object();

		for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
			json_object_object_add(n, limits[i].key,
								   json_object_new_int64(json_object_get_int64(field(config, limits[i].key))));
		json_object_object_add(c->obj, "scheduler_cluster_config", n);
	}
	json_object_object_add(c->obj, "updated_at", rfc3339_now());
	return NULL;
}

/* GET and PATCH /oapi/v1/clusters/<id>; a PATCH takes effect at once. */
enum MHD_Result
cluster_route(Call *c, const char *sid)
{
	Req		   *r = c->r;
	bool		is_patch = strcmp(c->method, "PATCH") == 0;
	const char *why, *verr = NULL;
	char		err[512], *end, *text = NULL;
	unsigned	code;
	long long	id = strtoll(sid, &end, 10);

	r->t = wall_seconds();
	if ((code = check_auth(c, SCOPE_CLUSTER, &r->auth_kind, &why)) != 0)
	{
		if (is_patch)
			log_request(r, "PATCH /oapi/v1/clusters/:id", id, code);
		return reply_message(c, code, "message", why);
	}
	if (sid[0] < '0' || sid[0] > '9' || *end != '\0')
		return snprintf(err, sizeof(err), "strconv.ParseUint: parsing \"%.64s\": invalid syntax", sid),
			reply_message(c, 422, "errors", err);
	if (id == 0)
		return reply_message(c, 422, "errors",
							 "Key: 'ClusterParams.ID' Error:Field validation for 'ID' failed on the 'required' tag");
	if (is_patch && ((!parse_body(r, err, sizeof(err)) && (verr = err)) ||
					 (verr = patch(NULL, r->jbody, err, sizeof(err))) != NULL))
	{
		log_request(r, "PATCH /oapi/v1/clusters/:id", id, 422);
		return reply_message(c, 422, "errors", verr);
	}
	pthread_mutex_lock(&state_lock);
	{
		Cluster    *cl = find(id);

		if (cl && is_patch)
			patch(cl, r->jbody, err, sizeof(err));
		if (cl)
			text = json_text(cl->obj);
	}
	pthread_mutex_unlock(&state_lock);
	if (is_patch)
		log_request(r, "PATCH /oapi/v1/clusters/:id", id, text ? 200 : 404);
	if (text == NULL)
		return reply_message(c, 404, "message", "record not found");
	return reply_text(c, 200, text, NULL, NULL);
}
