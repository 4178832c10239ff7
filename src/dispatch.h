/*
 * dispatch.h
 *		The one dispatch engine: claim due jobs, talk to Dragonfly, record what
 *		happened.  preheat_dispatch() runs the three steps in the caller's
 *		transaction; the background worker runs claim and record in short
 *		transactions of their own and keeps HTTP outside any transaction.
 */
#ifndef P2P_PREHEAT_DISPATCH_H
#define P2P_PREHEAT_DISPATCH_H

#include "nodes/pg_list.h"
#include "utils/guc.h"

/*
 * A job's state: the SQL enum p2p_preheat.job_state mirrored, in its order.
 * Open states (still to be sent or followed) come first; SQL asks this
 * macro through p2p_preheat.job_state_is_open().
 */
typedef enum JobState
{
	JOB_QUEUED,
	JOB_SENDING,
	JOB_RUNNING,
	JOB_SUCCEEDED,
	JOB_FAILED,
	JOB_CANCELED
} JobState;

#define JOB_STATE_IS_OPEN(s) ((s) <= JOB_RUNNING)

extern const char *const job_state_names[];
extern JobState job_state_from_name(const char *name);

typedef struct DispatchCounts
{
	int64		sent;			/* POSTs Dragonfly accepted */
	int64		polled;			/* status requests answered or failed */
	int64		succeeded;
	int64		failed;
	int64		retried;
} DispatchCounts;

/* GUCs, defined in p2p_preheat.c */
extern int	dispatch_max_attempts;
extern int	dispatch_retry_base_ms;
extern int	dispatch_retry_max_ms;
extern int	dispatch_give_up_after_s;
extern int	dispatch_lease_s;
extern char *dispatch_poll_schedule;
extern char *dispatch_registry_url;

extern bool dispatch_check_poll_schedule(char **newval, void **extra, GucSource source);
extern void dispatch_assign_poll_schedule(const char *newval, void *extra);

/*
 * Needs a transaction; returns a DispatchJob list.  With lease, claimed jobs
 * are marked (sending, lease_until) so they stay claimed after a commit;
 * without, the row locks of the caller's transaction are the claim.
 */
extern List *dispatch_claim(int max_jobs, bool lease);

/*
 * Claimed jobs; next is the first not yet started.  A job creation may wait
 * in the queue for its scheduler clusters' turn (pacing.h), so jobs after
 * it can start first.
 */
typedef struct DispatchQueue
{
	List	   *jobs;
	int			next;
} DispatchQueue;

/*
 * Build each job's request; no transaction needed from here on.  Does HTTP
 * itself: a job whose earlier POST may have reached Dragonfly is looked for
 * in Dragonfly's job list first.  The worker calls it outside any
 * transaction; preheat_dispatch() inside the caller's, like all its HTTP.
 */
extern void dispatch_prepare(List *jobs);

/*
 * Start queued jobs while fewer than p2p_preheat.max_in_flight are in
 * flight (job creations when their clusters' pace allows), wait up to
 * timeout_ms or the next reserved turn, and return the jobs whose answer is
 * in, or that go back to the queue for a later turn, or that fail at once.
 * Callers catch errors and call dispatch_abort().
 */
extern List *dispatch_pump(DispatchQueue *q, long timeout_ms);

/*
 * Starts what may start now, without waiting; returns the jobs that ended
 * without a request.  For the worker, before it turns to SQL, so that its
 * HTTP process has work meanwhile.
 */
extern List *dispatch_refill(DispatchQueue *q);

/* After an error in prepare or pump: stop every transfer, drop stashed answers. */
extern void dispatch_abort(void);

/* prepare + pump until every job has its answer. */
extern void dispatch_run(List *jobs);

/* Needs a transaction. */
extern void dispatch_record(List *jobs, DispatchCounts *counts);

/* Needs a transaction: claimed jobs not recorded go back to the queue. */
extern void dispatch_release(List *jobs);

/* Needs a transaction: seconds until the next job is due, -1 if none. */
extern double dispatch_next_due(void);

/* The worker's bookkeeping: which batch a job belongs to. */
extern void dispatch_set_owner(List *jobs, void *owner);
extern void *dispatch_owner(void *job);

#endif
