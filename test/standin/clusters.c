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
