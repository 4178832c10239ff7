/*
 * pacing.c
 *		Per preheat instance and scheduler cluster, the pace at which job
 *		creations may be sent, and what a 429 means.
 *
 * Dragonfly's limiter is a GCRA whose burst equals the rate, so sending
 * evenly at a little under the rate (SHARE) never meets it, whatever the
 * state of its bucket.  The pace comes from the cluster's own
 * job_rate_limit (GET /oapi/v1/clusters/<id>, looked up again every
 * RELEARN_S and soon after a 429; a 429 cuts it, AIMD back to SHARE).
 *
 * When the token may not read clusters (403), the pace is found from 429s.
 * It starts at Dragonfly's default of 10/s and doubles every second that
 * jobs wait for their turns (slow start).  A 429 means the limiter's bucket
 * is full, and what it let through tells its rate: no more than the rate
 * plus one second's burst over any span, and exactly the rate between two
 * 429s if it never ran dry.  So the first 429 sets the target to the best
 * such bound over the last seconds' acceptances (the slow start's overshoot
 * does not count), a later one to what passed since the previous cut; the
 * pace drops to BACK_OFF of the target, climbs back to it within a second
 * (too short for the bucket to empty, so nothing of the limit is lost), then
 * past it ever faster, +PROBE*t^2, until the next 429; at RESTART times the
 * target without one, the limit was raised, and slow start begins again.
 * 429s for turns reserved before a cut are not new news (cut_until), and an
 * adaptive pace reserves turns at most ADAPTIVE_HORIZON ahead (SLOW_HORIZON
 * in slow start), so a cut takes effect at once.  The pace grows only while
 * it holds jobs back.
 *
 * A job either takes its turn now, waits in memory for a turn at most
 * HORIZON away, or goes back to the queue until a turn further on: its
 * place is booked on a second timeline (defer_tat) so that jobs deferred
 * together come back one turn apart, at the pace expected by then (a pace
 * being found grows; booked at today's it would starve itself).  A 429 from
 * a cluster that exists is no attempt: the job is deferred the same way.  A
 * cluster that does not exist (404 from the clusters route, or, without that
 * route, 429s and no acceptance for it while other clusters of the instance
 * accept jobs) fails its jobs with a message that names it.
 *
 * The state is per process: the worker keeps it for as long as it runs, a
 * backend calling preheat_dispatch() for its own session.  No allocation or
 * elog happens inside libcurl callbacks: lookups are ordinary transfers of
 * the http.c engine, recognised when they finish by their memory context.
 */
#include "postgres.h"

#include <math.h>

#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "json_soft.h"
#include "pacing.h"

#define DEFAULT_RATE		10.0	/* Dragonfly's job_rate_limit when unset */
#define SHARE				0.95	/* of a learned rate */
#define MIN_RATE			0.2
#define MAX_RATE			1000000.0
#define HORIZON				1.0		/* seconds a turn is waited for in memory */
#define ADAPTIVE_HORIZON	0.25	/* ... at a pace found from 429s */
#define SLOW_HORIZON		0.1		/* ... in slow start */
#define REQUEUE_S			0.1		/* soonest a deferred job comes back */
#define RELEARN_S			30.0
#define RELEARN_AFTER_429_S 1.0
#define DECREASE			0.75	/* a learned pace's cut on a 429; an adaptive one's floor */
#define DECREASE_EVERY_S	0.5
#define INCREASE			2.0		/* learned pace: jobs/s regained per second */
#define SLOW_START			0.7		/* adaptive, until the first 429: x2 a second */
#define BACK_OFF			0.9		/* adaptive: of the target, after a 429 */
#define RECOVER				0.1		/* ... regaining this share of it a second */
#define PROBE				0.02	/* ... then past it: +2% after 1 s, +8% after 2 s */
#define RESTART				1.2		/* ... and up to this much of it, then slow start */
#define CUT_GRACE_S			0.2		/* 429s for turns booked before a cut */
#define CONTINUED_S			2.0		/* a 429 this soon after a cut: the same congestion */
#define BOUND_S				1.0		/* pace binding: a job waited this recently */
#define HIST_SLOT_S			0.1		/* acceptances counted per slot ... */
#define HIST_SLOTS			40		/* ... over the last 4 s */
#define ADAPTIVE_BOOK_S		2.0		/* how far ahead an adaptive pace books turns */
#define HOLD_S				0.05	/* recheck while a cluster is looked up */
#define UNKNOWN_429S		5		/* 429s without an acceptance ... */
#define UNKNOWN_AFTER_S		3.0		/* ... over this long, others accepting */
#define ALONE_AFTER_S		60.0	/* ... or this long, whatever the others do */

typedef enum PaceSource
{
	SRC_NEW,					/* being looked up */
	SRC_ROUTE,					/* job_rate_limit from the clusters route */
	SRC_ADAPTIVE,				/* from 429s */
	SRC_UNKNOWN					/* not a scheduler cluster */
} PaceSource;

static const char *const source_names[] = {
	"looking up", "clusters route", "adapting to 429s", "unknown cluster"
};

typedef struct PaceKey
{
	int64		instance_id;
	int64		cluster_id;
} PaceKey;

typedef struct PaceEntry
{
	PaceKey		key;
	PaceSource	source;
	PaceSource	fallback;		/* what a lookup that cannot tell leaves */
	double		limit;			/* learned job_rate_limit, 0 if none */
	double		rate;			/* pace now, jobs/s */
	double		tat;			/* the next turn */
	double		defer_tat;		/* the next turn of a deferred job */
	double		learned_at;
	double		relearn_at;
	double		last_decrease;
	double		last_ok;
	double		first_429;		/* of the 429s since last_ok */
	int			n429;
	/* adaptive pace */
	double		target;			/* the limit as measured at the last cut, 0: none yet */
	double		cut_at;			/* the last cut */
	double		cut_until;		/* later 429s are a new sign of congestion */
	double		since_cut;		/* pacing-bound seconds since the cut */
	int64		ok_since_cut;
	double		bound_at;		/* a job last waited for a turn */
	int64		hist_slot[HIST_SLOTS];	/* acceptances per slot of HIST_SLOT_S */
	int			hist_n[HIST_SLOTS];
	int64		sent;
	int64		throttled;
	char	   *why;			/* SRC_UNKNOWN: the reason */
	bool		probing;
	HttpRequest probe;
} PaceEntry;

static HTAB *entries = NULL;
static MemoryContext pace_cxt = NULL;

static double
now_epoch(void)
{
	return pacing_epoch(GetCurrentTimestamp());
}

static PaceEntry *
lookup(int instance_id, int64 cluster_id)
{
	PaceKey		key;
	PaceEntry  *e;
	bool		found;

	if (entries == NULL)
	{
		HASHCTL		ctl;

		pace_cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat pacing",
										 ALLOCSET_SMALL_SIZES);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(PaceKey);
		ctl.entrysize = sizeof(PaceEntry);
		ctl.hcxt = pace_cxt;
		entries = hash_create("p2p_preheat pacing", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.instance_id = instance_id;
	key.cluster_id = cluster_id;
	e = hash_search(entries, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset((char *) e + sizeof(PaceKey), 0, sizeof(PaceEntry) - sizeof(PaceKey));
		e->source = SRC_NEW;
		e->fallback = SRC_ADAPTIVE;
		e->rate = DEFAULT_RATE;
	}
	return e;
}

int64 *
pacing_cluster_ids(Jsonb *attrs, int *n)
{
	JsonbValue	v;
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken r;
	int64	   *ids;
	int			count = 0;

	*n = 0;
	if (attrs == NULL ||
		!getKeyJsonValueFromContainer(&attrs->root, "cluster_ids", 11, &v) ||
		v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data) ||
		JsonContainerSize(v.val.binary.data) == 0)
		return NULL;
	ids = palloc(JsonContainerSize(v.val.binary.data) * sizeof(int64));
	it = JsonbIteratorInit(v.val.binary.data);
	while ((r = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		if (r != WJB_ELEM || elem.type != jbvNumeric)
			continue;
		ids[count++] = DatumGetInt64(DirectFunctionCall1(numeric_int8,
														 NumericGetDatum(elem.val.numeric)));
	}
	*n = count;
	return count > 0 ? ids : NULL;
}

static void
probe_start(PaceEntry *e, const PaceTarget *t, double now)
{
	MemoryContext old = MemoryContextSwitchTo(pace_cxt);
	int			len = strlen(t->endpoint);

	while (len > 0 && t->endpoint[len - 1] == '/')
		len--;
	if (e->probe.url)
		pfree((char *) e->probe.url);
	memset(&e->probe, 0, sizeof(e->probe));
	e->probe.url = psprintf("%.*s/oapi/v1/clusters/" INT64_FORMAT, len, t->endpoint,
							e->key.cluster_id);
	e->probe.method = "GET";
	e->probe.auth_header = t->auth_header;	/* libcurl keeps its own copy */
	e->probe.insecure = t->insecure;
	e->probe.cxt = pace_cxt;	/* how pacing_take() knows its own */
	e->probe.arg = e;
	e->relearn_at = now + RELEARN_S;
	MemoryContextSwitchTo(old);
	http_start(&e->probe);
	e->probe.auth_header = NULL;
	e->probing = true;
}

/* The pace of a cluster the route describes, or its absence. */
static void
learn(PaceEntry *e, const HttpRequest *req, double now)
{
	e->learned_at = now;
	if (req->result == CURLE_OK && req->status == 200)
	{
		JsonSoftError err;
		JsonbValue *root = req->response ?
			json_parse_soft(req->response, req->response_len, 16, &err) : NULL;
		JsonbValue *limit = jbv_get(jbv_get(root, "scheduler_cluster_config"), "job_rate_limit");
		double		rate = DEFAULT_RATE;

		if (limit && limit->type == jbvNumeric)
		{
			double		v = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
															   NumericGetDatum(limit->val.numeric)));

			if (v >= 1)
				rate = Min(v, MAX_RATE);
		}
		if (e->source != SRC_ROUTE || e->limit != rate || e->rate > rate * SHARE)
			e->rate = rate * SHARE;
		e->limit = rate;
		e->source = SRC_ROUTE;
		e->fallback = SRC_ROUTE;
		e->n429 = 0;
		return;
	}
	if (req->result == CURLE_OK && req->status == 404)
	{
		MemoryContext old = MemoryContextSwitchTo(pace_cxt);

		if (e->why)
			pfree(e->why);
		e->why = psprintf("scheduler cluster " INT64_FORMAT " does not exist on preheat instance "
						  INT64_FORMAT " (GET /oapi/v1/clusters/" INT64_FORMAT " answered 404)",
						  e->key.cluster_id, e->key.instance_id, e->key.cluster_id);
		MemoryContextSwitchTo(old);
		e->source = SRC_UNKNOWN;
		e->fallback = SRC_ADAPTIVE;
		e->limit = 0;
		return;
	}

	/*
	 * 401/403 (no cluster scope), a redirect (an older manager), 5xx or no
	 * answer: keep what we knew, or adapt to 429s.
	 */
	if (e->source == SRC_NEW || e->source == SRC_UNKNOWN)
	{
		e->source = e->fallback;
		if (e->source == SRC_ADAPTIVE)
		{
			e->limit = 0;
			e->rate = DEFAULT_RATE;
			e->target = 0;		/* slow start again */
		}
	}
}

bool
pacing_take(HttpRequest *req)
{
	PaceEntry  *e;

	if (pace_cxt == NULL || req->cxt != pace_cxt)
		return false;
	e = req->arg;
	e->probing = false;
	learn(e, req, now_epoch());
	if (req->response)
		pfree(req->response);
	if (req->location)
		pfree(req->location);
	req->response = req->location = NULL;
	return true;
}

/* A lookup that http_abort_all() stopped is no longer in flight. */
static void
check_probe(PaceEntry *e)
{
	if (e->probing && !http_in_progress(&e->probe) && !e->probe.done)
	{
		e->probing = false;
		e->relearn_at = 0;
	}
}

/*
 * The pace an entry is expected to have "ahead" seconds from now, for
 * booking turns: a pace being found grows, and turns booked at today's
 * pace would hold the jobs back once it has.
 */
static double
book_rate(PaceEntry *e, double ahead)
{
	if (e->source != SRC_ADAPTIVE)
		return e->rate;
	if (e->target == 0)
		return Min(MAX_RATE, e->rate * exp(SLOW_START * ahead));
	return Max(e->rate, e->target);
}

/* The turn of a job that goes back to the queue, booked on the deferred line. */
static double
defer_turn(PaceEntry **es, int n, double now)
{
	double		slot = now + REQUEUE_S;
	bool		adaptive = false;

	for (int i = 0; i < n; i++)
	{
		slot = Max(slot, Max(es[i]->defer_tat, es[i]->tat));
		adaptive |= es[i]->source == SRC_ADAPTIVE;
		es[i]->bound_at = now;
	}

	/*
	 * A pace still being found books only a little ahead; the rest come
	 * back then, unbooked, and are booked at the pace found by then.
	 */
	if (adaptive && slot > now + ADAPTIVE_BOOK_S)
		return now + ADAPTIVE_BOOK_S;
	for (int i = 0; i < n; i++)
		es[i]->defer_tat = slot + 1.0 / book_rate(es[i], slot - now);
	return slot;
}

PaceVerdict
pacing_admit(const PaceTarget *t, double now, double *when, char **why)
{
	PaceEntry **es = palloc(t->nclusters * sizeof(PaceEntry *));
	bool		hold = false;
	double		slot = now;
	double		horizon = HORIZON;

	for (int i = 0; i < t->nclusters; i++)
	{
		PaceEntry  *e = es[i] = lookup(t->instance_id, t->clusters[i]);

		check_probe(e);
		if (e->source == SRC_UNKNOWN && now < e->relearn_at)
		{
			*why = pstrdup(e->why);
			pfree(es);
			return PACE_FAIL;
		}
		if (!e->probing && now >= e->relearn_at && t->endpoint)
			probe_start(e, t, now);
		if (e->source == SRC_NEW || e->source == SRC_UNKNOWN)
			hold = true;
		/* turns taken far ahead would outlast the 429 that says the pace is too fast */
		if (e->source == SRC_ADAPTIVE)
			horizon = Min(horizon, e->target > 0 ? ADAPTIVE_HORIZON : SLOW_HORIZON);
		slot = Max(slot, e->tat);
	}
	if (hold)
	{
		*when = now + HOLD_S;
		pfree(es);
		return PACE_HOLD;
	}
	if (slot > now + horizon)
	{
		*when = defer_turn(es, t->nclusters, now);
		pfree(es);
		return PACE_DEFER;
	}
	for (int i = 0; i < t->nclusters; i++)
	{
		if (es[i]->tat > now)
			es[i]->bound_at = now;
		es[i]->tat = Max(es[i]->tat, slot) + 1.0 / es[i]->rate;
	}
	pfree(es);
	*when = slot;
	return slot <= now + 0.0005 ? PACE_SEND : PACE_WAIT;
}

/*
 * The adaptive pace, seconds of pacing-bound sending after a cut: back to
 * the target in (1 - BACK_OFF) / RECOVER s, then past it ever faster.
 */
static double
adaptive_curve(double target, double t)
{
	double		t1 = (1.0 - BACK_OFF) / RECOVER;

	if (t < t1)
		return target * (BACK_OFF + RECOVER * t);
	return target * (1.0 + PROBE * (t - t1) * (t - t1));
}

static void
adaptive_accepted(PaceEntry *e, double now)
{
	int64		slot = (int64) floor(now / HIST_SLOT_S);
	int			i = slot % HIST_SLOTS;

	if (e->hist_slot[i] != slot)
	{
		e->hist_slot[i] = slot;
		e->hist_n[i] = 0;
	}
	e->hist_n[i]++;
	e->ok_since_cut++;

	/* a pace that held nothing back has shown nothing: it stays */
	if (now - e->bound_at > BOUND_S)
		return;
	if (e->target == 0)
		e->rate += SLOW_START;
	else
	{
		e->since_cut += 1.0 / e->rate;
		e->rate = adaptive_curve(e->target, e->since_cut);
		/* this far past the target without a 429: the limit was raised */
		if (e->rate > RESTART * e->target)
			e->target = 0;
	}
	e->rate = Min(MAX_RATE, e->rate);
}

/*
 * The limiter's rate as the acceptances show it, a lower bound: it let
 * through no more than its burst (one second's worth) plus its rate over
 * any span, and exactly its rate between two 429s if it was never idle.
 */
static double
measured_limit(PaceEntry *e, double now)
{
	int64		cur = (int64) floor(now / HIST_SLOT_S);
	int64		n = 0;
	double		best = 0;

	for (int k = 0; k < HIST_SLOTS; k++)
	{
		int64		slot = cur - k;
		int			i = slot % HIST_SLOTS;

		if (e->hist_slot[i] == slot)
			n += e->hist_n[i];
		best = Max(best, n / (now - slot * HIST_SLOT_S + 1.0));
	}
	if (e->cut_at > 0 && now - e->cut_at >= 1.0)
		best = Max(best, e->ok_since_cut / (now - e->cut_at));
	return best;
}

/*
 * A 429 at an adaptive pace: the limiter is full.  Once per congestion (the
 * turns booked at the old pace draw 429s too), the target becomes the
 * rate measured, and the pace a little under it.
 */
static void
adaptive_refused(PaceEntry *e, double now)
{
	double		est;
	double		lo;

	if (now < e->cut_until)
		return;
	if (e->target > 0 && now - e->cut_at < CONTINUED_S)
	{
		/* still too fast: the limiter was full all along, what passed is its rate */
		est = e->ok_since_cut / (now - e->cut_at);
		lo = DECREASE * e->rate;
	}
	else
	{
		est = measured_limit(e, now);
		lo = e->target > 0 || est <= 0 ? DECREASE * e->rate : MIN_RATE;
	}
	e->target = Max(lo, Min(est, e->rate));
	e->rate = Max(MIN_RATE, BACK_OFF * e->target);
	e->cut_at = e->last_decrease = now;
	e->cut_until = Max(now, e->tat) + CUT_GRACE_S;
	e->since_cut = 0;
	e->ok_since_cut = 0;
	e->tat = Max(e->tat, now) + 1.0 / e->rate;
}

/* 429s and no acceptance for a cluster that others of its instance pass. */
static bool
looks_unknown(PaceEntry *e, double now)
{
	HASH_SEQ_STATUS seq;
	PaceEntry  *o;
	bool		others_pass = false;

	if (e->source == SRC_ROUTE || e->n429 < UNKNOWN_429S)
		return false;
	if (now - e->first_429 >= ALONE_AFTER_S)
		return true;
	if (now - e->first_429 < UNKNOWN_AFTER_S)
		return false;
	hash_seq_init(&seq, entries);
	while ((o = hash_seq_search(&seq)) != NULL)
	{
		if (o != e && o->key.instance_id == e->key.instance_id && o->last_ok > e->first_429)
			others_pass = true;
	}
	return others_pass;
}

PaceVerdict
pacing_answer(const PaceTarget *t, long status, bool accepted,
			  double now, double *when, char **why)
{
	PaceEntry **es;
	PaceVerdict v = PACE_SEND;

	if (status != 429 && !accepted)
		return PACE_SEND;
	es = palloc(t->nclusters * sizeof(PaceEntry *));
	for (int i = 0; i < t->nclusters; i++)
	{
		PaceEntry  *e = es[i] = lookup(t->instance_id, t->clusters[i]);

		if (accepted)
		{
			e->last_ok = now;
			e->n429 = 0;
			e->sent++;
			if (e->source == SRC_ROUTE)
				e->rate = Min(e->limit * SHARE, e->rate + INCREASE / e->rate);
			else
				adaptive_accepted(e, now);
			continue;
		}
		e->throttled++;
		if (e->n429++ == 0)
			e->first_429 = now;
		if (e->source != SRC_ROUTE)
			adaptive_refused(e, now);
		else if (now - e->last_decrease >= DECREASE_EVERY_S)
		{
			e->rate = Max(MIN_RATE, e->rate * DECREASE);
			e->last_decrease = now;
			/* the turns booked at the old pace start later */
			e->tat = Max(e->tat, now) + 1.0 / e->rate;
		}
		/* a 429 at a learned pace: the limit may have changed */
		if (e->source == SRC_ROUTE && now - e->learned_at >= RELEARN_AFTER_429_S)
			e->relearn_at = Min(e->relearn_at, now);
	}
	if (!accepted)
	{
		for (int i = 0; i < t->nclusters && v == PACE_SEND; i++)
		{
			PaceEntry  *e = es[i];

			if (e->source != SRC_UNKNOWN && looks_unknown(e, now))
			{
				MemoryContext old = MemoryContextSwitchTo(pace_cxt);

				if (e->why)
					pfree(e->why);
				e->why = psprintf("Dragonfly refused every job naming scheduler cluster " INT64_FORMAT
								  " with HTTP 429 for %.0f s%s: it is not a scheduler cluster of preheat instance "
								  INT64_FORMAT,
								  e->key.cluster_id, now - e->first_429,
								  now - e->first_429 >= ALONE_AFTER_S ? "" :
								  " while other clusters accepted jobs",
								  e->key.instance_id);
				MemoryContextSwitchTo(old);
				e->fallback = e->source;
				e->source = SRC_UNKNOWN;
				e->relearn_at = now + RELEARN_S;
				e->n429 = 0;
			}
			if (e->source == SRC_UNKNOWN)
			{
				*why = pstrdup(e->why);
				v = PACE_FAIL;
			}
		}
		if (v == PACE_SEND)
		{
			*when = defer_turn(es, t->nclusters, now);
			v = PACE_DEFER;
		}
	}
	pfree(es);
	return v;
}

void
pacing_describe(StringInfo out, double now)
{
	HASH_SEQ_STATUS seq;
	PaceEntry  *e;
	bool		first = true;

	appendStringInfoChar(out, '[');
	if (entries)
	{
		hash_seq_init(&seq, entries);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			double		ahead = Max(0, Max(e->tat, e->defer_tat) - now);

			appendStringInfo(out, "%s{\"instance\": " INT64_FORMAT ", \"cluster\": " INT64_FORMAT
							 ", \"source\": \"%s\", \"job_rate_limit\": %s, \"pace\": %.1f"
							 ", \"scheduled\": %.0f, \"sent\": " INT64_FORMAT ", \"throttled\": " INT64_FORMAT,
							 first ? "" : ", ", e->key.instance_id, e->key.cluster_id,
							 source_names[e->source],
							 e->source == SRC_ROUTE ? psprintf("%.0f", e->limit) :
							 e->source == SRC_ADAPTIVE && e->target > 0 ?
							 psprintf("%.1f", e->target) : "null",
							 e->source == SRC_UNKNOWN ? 0 : e->rate,
							 e->source == SRC_UNKNOWN ? 0 : ceil(ahead * e->rate),
							 e->sent, e->throttled);
			if (e->source == SRC_UNKNOWN && e->why)
			{
				appendStringInfoString(out, ", \"error\": ");
				escape_json(out, e->why);
			}
			appendStringInfoChar(out, '}');
			first = false;
		}
	}
	appendStringInfoChar(out, ']');
}
