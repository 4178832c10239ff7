/*
 * pacing.h
 *		Send job creations no faster than each Dragonfly scheduler cluster
 *		allows (docs/harbor-and-dragonfly.md, "Dragonfly's rate limit").
 *
 * Dragonfly limits POST /oapi/v1/jobs per scheduler cluster named in
 * scheduler_cluster_ids and answers 429 past the limit, also, for good, for
 * an id that is no cluster.  The pacer keeps, per preheat instance and
 * cluster, the pace to send at: learned from GET /oapi/v1/clusters/<id>
 * when the instance's token may read clusters, otherwise found by adapting
 * to 429s.  A job naming several clusters needs a turn from each.
 */
#ifndef P2P_PREHEAT_PACING_H
#define P2P_PREHEAT_PACING_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#include "http.h"

typedef enum PaceVerdict
{
	PACE_SEND,					/* send now (its turn is taken) */
	PACE_WAIT,					/* its turn is reserved at *when: send then */
	PACE_HOLD,					/* nothing known yet (cluster being looked up): ask again at *when */
	PACE_DEFER,					/* back to the queue until *when, not an attempt */
	PACE_FAIL					/* an unknown cluster: *why names it */
} PaceVerdict;

/* What the pacer needs of a job creation. */
typedef struct PaceTarget
{
	int			instance_id;
	const char *endpoint;
	const char *auth_header;	/* for the clusters route; copied by libcurl */
	bool		insecure;
	const int64 *clusters;
	int			nclusters;
} PaceTarget;

/* A timestamp as Unix epoch seconds: the clock of every time given here. */
static inline double
pacing_epoch(TimestampTz t)
{
	return (double) t / USECS_PER_SEC +
		((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);
}

/* The scheduler cluster ids of a job's attrs (cluster_ids), NULL if none. */
extern int64 *pacing_cluster_ids(Jsonb *attrs, int *n);

/* May this job creation go now?  Times are epoch seconds. */
extern PaceVerdict pacing_admit(const PaceTarget *t, double now, double *when, char **why);

/*
 * The answer to a paced POST (status 0: no answer).  Returns PACE_SEND when
 * there is nothing to add, PACE_DEFER with the time to try again for a 429
 * from a cluster that exists, or PACE_FAIL with the reason for one that
 * does not.
 */
extern PaceVerdict pacing_answer(const PaceTarget *t, long status, bool accepted,
								 double now, double *when, char **why);

/* A finished transfer that is one of the pacer's lookups: consumes it. */
extern bool pacing_take(HttpRequest *req);

/* The pace of every cluster, as a JSON array, for worker_status(). */
extern void pacing_describe(StringInfo out, double now);

#endif
