/*
 * dispatch.c
 *		Claim due preheat jobs, push or poll them over HTTP, record outcomes.
 *
 * One claim query and one record query serve a whole batch, whatever its
 * size.  Claims use FOR UPDATE SKIP LOCKED and a lease, so concurrent
 * dispatchers never send the same job twice; the worker's claims also carry
 * its generation, so what a dead worker held is taken up again at once
 * rather than when the lease ends.  A POST that may have reached Dragonfly
 * without its answer coming back is looked for in Dragonfly's job list
 * before it is sent again (reconcile()).
 *
 * Harbor's dispatcher never retries, polls every 10 s and gives up after
 * 30 min.  Here transient failures (5xx, 429, network) are retried with
 * exponential back-off and jitter; polls follow Dragonfly's own update
 * instants (p2p_preheat.poll_schedule); the give-up time matches Dragonfly's
 * 62.5-minute window with a margin.
 */
#include "postgres.h"

#include <float.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/array.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "dispatch.h"
#include "dragonfly.h"
#include "extra_attrs.h"
#include "harbor.h"
#include "harbor_auth.h"
#include "harbor_token.h"
#include "http.h"
#include "kraken.h"
#include "pacing.h"

int			dispatch_max_attempts = 8;
int			dispatch_retry_base_ms = 1000;
int			dispatch_retry_max_ms = 300000;
int			dispatch_give_up_after_s = 3900;
int			dispatch_lease_s = 300;
char	   *dispatch_poll_schedule = NULL;
char	   *dispatch_registry_url = NULL;

#define MAX_SCHEDULE 32
typedef struct PollSchedule
{
	int			n;
	int			secs[MAX_SCHEDULE];
} PollSchedule;

static PollSchedule schedule = {5, {31, 91, 211, 451, 300}};

typedef struct DispatchJob
{
	int64		id;
	int			policy_id;		/* 0 for preheat_url() */
	JobState	state;			/* as claimed */
	bool		is_poll;		/* running: GET its state; else POST it */
	char	   *url;
	Jsonb	   *attrs;
	int			instance_id;
	int64		df_id;
	int			attempts;
	int			polls;
	double		sent_epoch;		/* 0 if never accepted */
	double		created_epoch;
	bool		maybe_sent;		/* an earlier POST may have reached Dragonfly */
	bool		looked_up;		/* looked for in Dragonfly's list, in vain for now */
	bool		posted;			/* its request went out: it may have reached Dragonfly */
	char	   *endpoint;
	char	   *auth_mode;
	char	   *auth_data;		/* secret until parsed */
	bool		insecure;
	bool		enabled;
	bool		instance_found;
	char	   *vendor;
	char	   *headers;		/* secret: the caller's registry token */

	HttpRequest req;
	bool		needs_http;
	DfAnswer	answer;
	void	   *owner;

	/* pacing of a POST naming scheduler clusters */
	int64	   *clusters;
	int			nclusters;
	bool		started;		/* sent, or settled without HTTP */
	double		not_before;		/* its reserved turn, 0 if none */
	bool		deferred;		/* back to the queue unsent, until defer_until */
	double		defer_until;
	PaceVerdict pace;			/* after the answer: PACE_DEFER or PACE_FAIL */
	double		pace_when;
	char	   *pace_why;
} DispatchJob;

/* p2p_preheat.poll_schedule: seconds after creation, the last repeating */
bool
dispatch_check_poll_schedule(char **newval, void **extra, GucSource source)
{
	PollSchedule *ps;
	char	   *p = *newval;

	ps = p2p_guc_malloc(sizeof(PollSchedule));
	if (ps == NULL)
		return false;
	ps->n = 0;
	while (p && *p)
	{
		char	   *end;
		long		v;

		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		errno = 0;
		v = strtol(p, &end, 10);
		if (end == p || errno || v < 1 || v > 86400 || ps->n == MAX_SCHEDULE)
		{
			GUC_check_errdetail("p2p_preheat.poll_schedule is a list of up to %d whole "
								"numbers of seconds from 1 to 86400, such as '31,91,211,451,300'.",
								MAX_SCHEDULE);
			p2p_guc_free(ps);
			return false;
		}
		ps->secs[ps->n++] = (int) v;
		p = end;
	}
	if (ps->n == 0)
	{
		GUC_check_errdetail("p2p_preheat.poll_schedule needs at least one number of seconds.");
		p2p_guc_free(ps);
		return false;
	}
	*extra = ps;
	return true;
}

void
dispatch_assign_poll_schedule(const char *newval, void *extra)
{
	if (extra)
		schedule = *(PollSchedule *) extra;
}

/* Seconds after creation of poll number k (0-based). */
static double
poll_offset(int k)
{
	int			n = schedule.n;

	if (k < n - 1)
		return schedule.secs[k];
	if (n == 1)
		return (double) (k + 1) * schedule.secs[0];
	return schedule.secs[n - 2] + (double) (k - n + 2) * schedule.secs[n - 1];
}

static double
now_epoch(void)
{
	return pacing_epoch(GetCurrentTimestamp());
}

/* Exponential back-off with jitter: half to all of base * 2^(attempt-1). */
static double
backoff_secs(int attempt)
{
	double		ms = dispatch_retry_base_ms;

	for (int i = 1; i < attempt && ms < dispatch_retry_max_ms; i++)
		ms *= 2;
	ms = Min(ms, (double) dispatch_retry_max_ms);
	return ms * (0.5 + 0.5 * pg_prng_double(&pg_global_prng_state)) / 1000.0;
}

/* Harbor's token_expiration, read with the last claim (prepare has no transaction) */
static int	token_lifetime_s = HARBOR_TOKEN_DEFAULT_LIFETIME_S;

const char *const job_state_names[] = {
	"queued", "sending", "running", "succeeded", "failed", "canceled"
};

JobState
job_state_from_name(const char *name)
{
	for (int i = 0; i < lengthof(job_state_names); i++)
		if (strcmp(job_state_names[i], name) == 0)
			return (JobState) i;
	elog(ERROR, "p2p_preheat: unknown job state \"%s\"", name);
	return JOB_QUEUED;			/* keep the compiler quiet */
}

/* A column of an SPI result by name; an error if the contract changed. */
static int
colno(TupleDesc desc, const char *name)
{
	int			n = SPI_fnumber(desc, name);

	if (n <= 0)
		elog(ERROR, "p2p_preheat: the claim returned no column \"%s\"", name);
	return n;
}

static char *
col_text(HeapTuple t, TupleDesc d, int n)
{
	return SPI_getvalue(t, d, n);
}

static int64
col_int(HeapTuple t, TupleDesc d, int n)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, n, &isnull);

	if (isnull)
		return 0;
	return SPI_gettypeid(d, n) == INT4OID ? DatumGetInt32(v) : DatumGetInt64(v);
}

static TimestampTz
epoch_timestamptz(double e)
{
	return (TimestampTz) ((e - ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)) *
						  USECS_PER_SEC);
}

/*
 * The engine's statements, planned once per process and kept: the claim,
 * the record and the next due time run for every small batch.  A plan is
 * made again if the argument type changed (the extension was recreated);
 * anything else that changes underneath is caught by the plan cache.
 */
typedef struct KeptPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[2];
	SPIPlanPtr	plan;
} KeptPlan;

static KeptPlan claim_plan = {"SELECT * FROM p2p_preheat._claim($1, $2)", 2, {INT4OID, INTERVALOID}};
static KeptPlan record_plan = {"SELECT p2p_preheat._record($1)", 1};
static KeptPlan next_due_plan = {"SELECT p2p_preheat._next_due()", 0};

/* Needs SPI_connect(). */
static SPIPlanPtr
kept_plan(KeptPlan *kp, Oid argtype0)
{
	if (kp->plan && kp->nargs > 0 && OidIsValid(argtype0) && kp->argtypes[0] != argtype0)
	{
		SPI_freeplan(kp->plan);
		kp->plan = NULL;
	}
	if (kp->plan == NULL)
	{
		SPIPlanPtr	p;

		if (OidIsValid(argtype0))
			kp->argtypes[0] = argtype0;
		/*
		 * Generic plans: a custom plan would copy the argument (for
		 * _record(), every outcome of a batch, answers included) into the
		 * plan as a constant, twice, in each of a backend's first five runs.
		 */
		p = SPI_prepare_cursor(kp->sql, kp->nargs, kp->argtypes, CURSOR_OPT_GENERIC_PLAN);
		if (p == NULL)
			elog(ERROR, "p2p_preheat: could not prepare \"%s\": %s", kp->sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "p2p_preheat: could not keep the plan of \"%s\"", kp->sql);
		kp->plan = p;
	}
	return kp->plan;
}

/* Gives each job its instance, read as Harbor's owner. */
static void
attach_instances(List *jobs)
{
	int		   *ids = palloc(list_length(jobs) * sizeof(int));
	int			n = 0;
	List	   *instances;
	ListCell   *lc;

	foreach(lc, jobs)
	{
		DispatchJob *j = lfirst(lc);
		bool		seen = false;

		for (int i = 0; i < n && !seen; i++)
			seen = ids[i] == j->instance_id;
		if (!seen)
			ids[n++] = j->instance_id;
	}
	instances = harbor_instances(ids, n);
	foreach(lc, jobs)
	{
		DispatchJob *j = lfirst(lc);
		ListCell   *li;

		foreach(li, instances)
		{
			HarborInstance *inst = lfirst(li);

			if (inst->id != j->instance_id)
				continue;
			j->instance_found = true;
			j->endpoint = inst->endpoint;
			j->auth_mode = inst->auth_mode;
			j->auth_data = inst->auth_data ? pstrdup(inst->auth_data) : NULL;
			j->insecure = inst->insecure;
			j->enabled = inst->enabled;
			j->vendor = inst->vendor;
			break;
		}
	}
	foreach(lc, instances)
		secret_free(((HarborInstance *) lfirst(lc))->auth_data);
}

List *
dispatch_claim(int max_jobs, bool lease)
{
	MemoryContext caller = CurrentMemoryContext;
	List	   *jobs = NIL;
	Datum		args[2];
	char		nulls[2] = {' ', lease ? ' ' : 'n'};
	Interval   *iv = palloc0(sizeof(Interval));

	if (max_jobs <= 0)
		return NIL;
	harbor_check_version();
	iv->time = (int64) dispatch_lease_s * USECS_PER_SEC;
	args[0] = Int32GetDatum(max_jobs);
	args[1] = IntervalPGetDatum(iv);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_plan(kept_plan(&claim_plan, InvalidOid), args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not claim preheat jobs");

	MemoryContextSwitchTo(caller);
	if (SPI_processed > 0)
	{
		TupleDesc	d = SPI_tuptable->tupdesc;
		int			c_id = colno(d, "id"),
					c_state = colno(d, "state"),
					c_url = colno(d, "url"),
					c_attrs = colno(d, "attrs"),
					c_instance = colno(d, "instance_id"),
					c_policy = colno(d, "policy_id"),
					c_df_id = colno(d, "dragonfly_job_id"),
					c_attempts = colno(d, "attempts"),
					c_polls = colno(d, "polls"),
					c_sent = colno(d, "sent_at"),
					c_created = colno(d, "created_at"),
					c_maybe_sent = colno(d, "maybe_sent"),
					c_headers = colno(d, "headers");

		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			DispatchJob *j = palloc0(sizeof(DispatchJob));
			bool		isnull;
			Datum		attrs = SPI_getbinval(t, d, c_attrs, &isnull);
			Datum		v;

			j->id = col_int(t, d, c_id);
			j->state = job_state_from_name(col_text(t, d, c_state));
			j->is_poll = j->state == JOB_RUNNING;
			j->url = col_text(t, d, c_url);
			j->attrs = isnull ? NULL : DatumGetJsonbPCopy(attrs);
			j->instance_id = (int) col_int(t, d, c_instance);
			j->policy_id = (int) col_int(t, d, c_policy);
			j->df_id = col_int(t, d, c_df_id);
			j->attempts = (int) col_int(t, d, c_attempts);
			j->polls = (int) col_int(t, d, c_polls);
			v = SPI_getbinval(t, d, c_sent, &isnull);
			j->sent_epoch = isnull ? 0 : pacing_epoch(DatumGetTimestampTz(v));
			v = SPI_getbinval(t, d, c_created, &isnull);
			j->created_epoch = isnull ? 0 : pacing_epoch(DatumGetTimestampTz(v));
			v = SPI_getbinval(t, d, c_maybe_sent, &isnull);
			j->maybe_sent = !isnull && DatumGetBool(v);
			j->headers = col_text(t, d, c_headers);
			jobs = lappend(jobs, j);
		}
	}
	if (jobs != NIL)
	{
		attach_instances(jobs);
		/* the pull token lives as long as Harbor's own would */
		token_lifetime_s = harbor_token_lifetime_s(HARBOR_TOKEN_DEFAULT_LIFETIME_S);
	}
	SPI_finish();
	return jobs;
}

static void
fail_now(DispatchJob *j, char *why)
{
	j->needs_http = false;
	j->answer.verdict = DF_FAILED;
	j->answer.error = why;
}

/* Why a job cannot be sent at all, or NULL. */
static char *
unsendable(DispatchJob *j, const char *cred_error)
{
	if (!j->instance_found)
		return psprintf("preheat instance %d does not exist", j->instance_id);
	if (!j->enabled)
		return psprintf("preheat instance %d is disabled", j->instance_id);
	if (!ea_vendor_is_dragonfly(j->vendor) && !kraken_vendor(j->vendor))
		return psprintf("preheat instance %d is a %s instance; p2p_preheat sends to dragonfly and kraken only",
						j->instance_id, j->vendor ? j->vendor : "(no vendor)");
	if (j->endpoint == NULL ||
		(pg_strncasecmp(j->endpoint, "http://", 7) != 0 &&
		 pg_strncasecmp(j->endpoint, "https://", 8) != 0))
		return psprintf("preheat instance %d has an endpoint that is not http(s)", j->instance_id);
	if (cred_error && !j->is_poll)
		return pstrdup(cred_error);
	if (j->is_poll && j->df_id <= 0)
		return pstrdup("running job without a Dragonfly job id");
	return NULL;
}

/* Build the HTTP request of a job, or settle it at once if it cannot be sent. */
static void
prepare(DispatchJob *j, const char *username, const char *password,
		const char *cred_error)
{
	const char *auth_error = NULL;
	char	   *why = unsendable(j, cred_error);
	char	   *auth = NULL;

	j->needs_http = true;
	if (why == NULL)
	{
		auth = instance_auth_header(j->auth_mode, j->auth_data, &auth_error);
		if (auth_error)
			why = psprintf("preheat instance %d: %s", j->instance_id, auth_error);
	}
	secret_free(j->auth_data);
	j->auth_data = NULL;
	if (why)
	{
		fail_now(j, why);
		return;
	}

	j->req.arg = j;
	j->req.cxt = CurrentMemoryContext;	/* answers live with their job */
	j->req.auth_header = auth;
	j->req.insecure = j->insecure;
	if (kraken_vendor(j->vendor))
	{
		/* Kraken: one notification, done at once (src/kraken.c) */
		char	   *error = NULL;

		j->req.method = "POST";
		j->req.url = kraken_notify_url(j->endpoint);
		j->req.body = kraken_notification(j->url, j->attrs, &error);
		if (error)
		{
			secret_free(auth);
			j->req.auth_header = NULL;
			fail_now(j, error);
		}
	}
	else if (j->is_poll)
	{
		j->req.method = "GET";
		j->req.url = df_jobs_url(j->endpoint, j->df_id);
	}
	else
	{
		/* no headers from the caller: Harbor's pull token, as Harbor sends */
		char	   *token_error = NULL;
		char	   *minted = j->headers ? NULL :
			harbor_token_headers(j->url, dispatch_registry_url,
								 token_lifetime_s, &token_error);

		if (token_error)
		{
			secret_free(auth);
			j->req.auth_header = NULL;
			fail_now(j, token_error);
			return;
		}
		j->req.method = "POST";
		j->req.url = df_jobs_url(j->endpoint, 0);
		j->req.body = df_preheat_body(j->url, j->attrs, minted ? minted : j->headers,
									  username, password);
		secret_free(minted);
		j->clusters = pacing_cluster_ids(j->attrs, &j->nclusters);
	}
}

static void
pace_target(DispatchJob *j, PaceTarget *t)
{
	t->instance_id = j->instance_id;
	t->endpoint = j->endpoint;
	t->auth_header = j->req.auth_header;
	t->insecure = j->insecure;
	t->clusters = j->clusters;
	t->nclusters = j->nclusters;
}

static void
forget_secrets(DispatchJob *j)
{
	if (j->req.auth_header)
	{
		secret_free((char *) j->req.auth_header);
		j->req.auth_header = NULL;
	}
	if (j->req.body && !j->is_poll)
	{
		secret_free((char *) j->req.body);
		j->req.body = NULL;
	}
	secret_free(j->headers);
	j->headers = NULL;
}

/* Answers to other requests that arrived while a lookup waited: the pump's. */
static List *stash = NIL;

/* After an error: every transfer stopped, and with it every stashed answer. */
void
dispatch_abort(void)
{
	http_abort_all();
	list_free(stash);
	stash = NIL;
}

static void
wait_for(HttpRequest *req)
{
	HttpRequest *done[64];

	while (!req->done)
	{
		int			n;

		/* the worker stops within a second, not after a slow list's timeout */
		if (ShutdownRequestPending)
		{
			http_cancel(req, "the worker is shutting down");
			break;
		}
		n = http_wait(1000, done, lengthof(done), PG_WAIT_EXTENSION);

		for (int i = 0; i < n; i++)
			if (done[i] != req)
			{
				MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

				stash = lappend(stash, done[i]);
				MemoryContextSwitchTo(old);
			}
	}
}

#define LOOKUP_PER_PAGE 500
#define LOOKUP_MAX_PAGES 40
/* a page of job objects is far larger than one answer (max_answer_size) */
#define LOOKUP_MAX_BYTES ((size_t) 8 * 1024 * 1024)
/*
 * Dragonfly stamps created_at with its own clock: a manager whose clock is
 * behind ours must not hide a POST that did arrive.  Adopting an earlier
 * preheat of the same image instead is harmless.
 */
#define LOOKUP_CLOCK_MARGIN_S 60.0

/*
 * Jobs of one instance whose earlier POST may have reached Dragonfly (the
 * worker died while sending them, or the POST ended without an answer):
 * look for each in Dragonfly's job list, newest first, back to the job's
 * creation; follow the one found instead of sending it again.  When the
 * list cannot be read for now, the job waits (a retry); when Dragonfly
 * refuses to list, it is sent again.
 */
static void
reconcile_instance(List *same)
{
	DispatchJob *first = linitial(same);
	DfLookup   *lk = palloc0(list_length(same) * sizeof(DfLookup));
	int			n = 0;
	int			found = 0;
	int			waiting = 0;
	double		not_before = DBL_MAX;
	char	   *error = NULL;
	bool		transient = false;
	ListCell   *lc;

	foreach(lc, same)
	{
		DispatchJob *j = lfirst(lc);

		lk[n].args = df_lookup_args(j->url, j->attrs);
		lk[n].not_before = j->created_epoch - LOOKUP_CLOCK_MARGIN_S;
		not_before = Min(not_before, lk[n].not_before);
		n++;
	}
	for (int page = 1; page <= LOOKUP_MAX_PAGES && found < n; page++)
	{
		HttpRequest req = {0};
		double		oldest;
		int			got;

		req.method = "GET";
		req.url = df_list_url(first->endpoint, page, LOOKUP_PER_PAGE);
		req.auth_header = first->req.auth_header;
		req.insecure = first->insecure;
		req.cxt = CurrentMemoryContext;
		req.max_bytes = LOOKUP_MAX_BYTES;
		http_start(&req);
		wait_for(&req);
		got = df_match_page(&req, lk, n, &oldest, &error);
		if (got < 0)
		{
			transient = req.result != CURLE_OK || req.status == 429 || req.status >= 500;
			break;
		}
		found = 0;
		for (int k = 0; k < n; k++)
			found += lk[k].found_id > 0;
		if (got < LOOKUP_PER_PAGE || (oldest > 0 && oldest < not_before))
			break;
	}
	n = 0;
	foreach(lc, same)
	{
		DispatchJob *j = lfirst(lc);
		DfLookup   *l = &lk[n++];

		if (l->found_id > 0)
		{
			forget_secrets(j);
			j->needs_http = false;
			j->answer.verdict = DF_ACCEPTED;
			j->answer.job_id = l->found_id;
			j->answer.state = l->found_state;
		}
		else if (error && transient)
		{
			forget_secrets(j);
			j->needs_http = false;
			j->looked_up = true;
			j->answer.verdict = DF_RETRY;
			j->answer.maybe_sent = true;
			j->answer.error = psprintf("could not look in Dragonfly for an earlier POST of this job: %s",
									   error);
			waiting++;
		}
	}
	ereport(LOG,
			(errmsg("p2p_preheat: looked in Dragonfly (instance %d) for %d jobs whose POST may have arrived unanswered: "
					"%d found and followed, %d to wait, %d to send again",
					first->instance_id, n, found, waiting, n - found - waiting),
			 error ? errdetail("Dragonfly's job list: %s", error) : 0));
}

static List *
needing_lookup(List *jobs)
{
	List	   *pending = NIL;
	ListCell   *lc;

	foreach(lc, jobs)
	{
		DispatchJob *j = lfirst(lc);

		if (j->needs_http && !j->is_poll && j->maybe_sent)
			pending = lappend(pending, j);
	}
	return pending;
}

static void
reconcile_all(List *pending)
{
	ListCell   *lc;

	while (pending != NIL)
	{
		DispatchJob *first = linitial(pending);
		List	   *same = NIL;
		List	   *rest = NIL;

		foreach(lc, pending)
		{
			DispatchJob *j = lfirst(lc);

			if (j->instance_id == first->instance_id)
				same = lappend(same, j);
			else
				rest = lappend(rest, j);
		}
		reconcile_instance(same);
		pending = rest;
	}
}

static void
reconcile(List *pending)
{
	if (pending == NIL)
		return;
	PG_TRY();
	{
		reconcile_all(pending);
	}
	PG_CATCH();
	{
		dispatch_abort();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

void
dispatch_prepare(List *jobs)
{
	char	   *username = NULL;
	char	   *password = NULL;
	const char *cred_error = NULL;
	ListCell   *lc;

	registry_credentials(&username, &password, &cred_error);
	foreach(lc, jobs)
		prepare(lfirst(lc), username, password, cred_error);
	secret_free(username);
	secret_free(password);
	reconcile(needing_lookup(jobs));
}

/* The earliest reserved turn seen by a pump since the last wait, 0 if none. */
static double pending_wake = 0;

static void
note_wake(double when)
{
	if (pending_wake == 0 || when < pending_wake)
		pending_wake = when;
}

/*
 * Start a job, hold it for its turn, or settle it without HTTP; true when
 * it is settled now (deferred to the queue or failed).
 */
static bool
start_or_hold(DispatchJob *j, double now)
{
	PaceTarget	t;
	PaceVerdict v;
	double		when = 0;
	char	   *why = NULL;
	MemoryContext old;

	if (!j->needs_http)
	{
		j->started = true;
		return true;
	}
	if (j->is_poll || j->nclusters == 0 || (j->not_before > 0 && now >= j->not_before))
	{
		http_start(&j->req);
		j->started = j->posted = true;
		return false;
	}
	if (j->not_before > 0)
	{
		note_wake(j->not_before);
		return false;
	}
	pace_target(j, &t);
	old = MemoryContextSwitchTo(j->req.cxt);
	v = pacing_admit(&t, now, &when, &why);
	MemoryContextSwitchTo(old);
	switch (v)
	{
		case PACE_SEND:
			http_start(&j->req);
			j->started = j->posted = true;
			return false;
		case PACE_WAIT:
			j->not_before = when;
			note_wake(when);
			return false;
		case PACE_HOLD:
			note_wake(when);
			return false;
		case PACE_DEFER:
			forget_secrets(j);
			j->needs_http = false;
			j->deferred = true;
			j->defer_until = when;
			j->started = true;
			return true;
		case PACE_FAIL:
			forget_secrets(j);
			fail_now(j, why);
			j->started = true;
			return true;
	}
	return false;
}

/* Starts what may start now; returns jobs that ended without a request. */
static List *
start_some(DispatchQueue *q, double now)
{
	List	   *answered = NIL;
	int			len = list_length(q->jobs);
	bool		contiguous = true;

	for (int i = q->next; i < len && http_in_flight() < http_start_limit(); i++)
	{
		DispatchJob *j = list_nth(q->jobs, i);

		if (!j->started && start_or_hold(j, now))
			answered = lappend(answered, j);
		if (contiguous && j->started)
			q->next = i + 1;
		else
			contiguous = false;
	}
	return answered;
}

List *
dispatch_refill(DispatchQueue *q)
{
	return start_some(q, now_epoch());
}

List *
dispatch_pump(DispatchQueue *q, long timeout_ms)
{
	List	   *answered;
	HttpRequest *done[64];
	int			n;
	double		now = now_epoch();
	ListCell   *lc;

	answered = start_some(q, now);
	if (stash != NIL)
	{
		/* answers that came in while a lookup waited, lengthof(done) at a time */
		n = 0;
		foreach(lc, stash)
		{
			if (n == lengthof(done))
				break;
			done[n++] = lfirst(lc);
		}
		stash = list_delete_first_n(stash, n);
	}
	else if (answered != NIL || (http_in_flight() == 0 && pending_wake == 0))
		return answered;
	else
	{
		if (pending_wake > 0)
			timeout_ms = Min(timeout_ms, Max(0, (long) ((pending_wake - now) * 1000.0 + 1)));
		n = http_wait(timeout_ms, done, lengthof(done), PG_WAIT_EXTENSION);
		pending_wake = 0;
		now = now_epoch();
	}
	for (int i = 0; i < n; i++)
	{
		DispatchJob *j;
		MemoryContext old;

		if (pacing_take(done[i]))
			continue;
		j = done[i]->arg;
		old = MemoryContextSwitchTo(j->req.cxt);
		if (kraken_vendor(j->vendor))
			kraken_read_answer(&j->req, &j->answer);
		else
			df_read_answer(&j->req, j->is_poll, &j->answer);
		if (!j->is_poll && j->nclusters > 0 && !kraken_vendor(j->vendor))
		{
			PaceTarget	t;

			pace_target(j, &t);
			j->pace = pacing_answer(&t, j->req.result == CURLE_OK ? j->req.status : 0,
									j->answer.verdict == DF_ACCEPTED, now,
									&j->pace_when, &j->pace_why);
		}
		forget_secrets(j);
		MemoryContextSwitchTo(old);
		answered = lappend(answered, j);
	}
	return answered;
}

void
dispatch_run(List *jobs)
{
	DispatchQueue q = {jobs, 0};

	dispatch_prepare(jobs);
	PG_TRY();
	{
		while (q.next < list_length(q.jobs) || http_in_flight() > 0)
			dispatch_pump(&q, 1000);
	}
	PG_CATCH();
	{
		/* query cancel or an ERROR: no libcurl handle may outlive it */
		dispatch_abort();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Outcomes go to SQL as an array of p2p_preheat.job_outcome, whose fields
 * are set by name: the order of the type's columns does not matter here.
 */
enum OutcomeField
{
	OF_ID, OF_STATE, OF_ATTEMPTS, OF_POLLS, OF_NEXT, OF_SENT, OF_DF_ID, OF_DF_STATE,
	OF_HTTP_STATUS, OF_ERROR, OF_FAILED_PEERS, OF_RESULT, OF_MAYBE_SENT, OF_COUNT
};

static const char *const outcome_field_names[OF_COUNT] = {
	"id", "state", "attempts", "polls", "next_attempt_at", "sent_at", "dragonfly_job_id",
	"dragonfly_state", "http_status", "error", "failed_peers", "result", "maybe_sent"
};

typedef struct Outcomes
{
	Oid			typid;
	TupleDesc	desc;
	int			attno[OF_COUNT];	/* 0-based column of each field */
	Datum	   *values;
	bool	   *nulls;
	ArrayBuildState *rows;
} Outcomes;

static void
outcomes_init(Outcomes *o)
{
	Oid			nsp = get_namespace_oid("p2p_preheat", false);

	o->typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
							   CStringGetDatum("job_outcome"), ObjectIdGetDatum(nsp));
	if (!OidIsValid(o->typid))
		elog(ERROR, "p2p_preheat: type p2p_preheat.job_outcome is missing");
	o->desc = lookup_rowtype_tupdesc_copy(o->typid, -1);
	for (int f = 0; f < OF_COUNT; f++)
	{
		o->attno[f] = -1;
		for (int i = 0; i < o->desc->natts; i++)
			if (strcmp(NameStr(TupleDescAttr(o->desc, i)->attname), outcome_field_names[f]) == 0)
				o->attno[f] = i;
		if (o->attno[f] < 0)
			elog(ERROR, "p2p_preheat: type p2p_preheat.job_outcome has no field \"%s\"",
				 outcome_field_names[f]);
	}
	o->values = palloc(o->desc->natts * sizeof(Datum));
	o->nulls = palloc(o->desc->natts * sizeof(bool));
	o->rows = NULL;
}

static void
set_field(Outcomes *o, enum OutcomeField f, Datum v, bool isnull)
{
	o->values[o->attno[f]] = isnull ? (Datum) 0 : v;
	o->nulls[o->attno[f]] = isnull;
}

/* What the answer means for the job: its next state and when to look again. */
static void
settle(DispatchJob *j, Outcomes *out, DispatchCounts *c, double now)
{
	DfAnswer   *a = &j->answer;
	JobState	state;
	int			attempts = j->attempts;
	int			polls = j->polls;
	double		next = 0;
	double		sent = 0;
	char	   *error = a->error;

	if (!j->is_poll && j->deferred)
	{
		/* never sent: back to the queue for its turn, not an attempt */
		state = JOB_QUEUED;
		next = j->defer_until;
	}
	else if (!j->is_poll && j->pace == PACE_DEFER)
	{
		/* a 429 from clusters that exist: wait for a turn, not an attempt */
		state = JOB_QUEUED;
		next = j->pace_when;
		c->retried++;
	}
	else if (!j->is_poll && j->pace == PACE_FAIL)
	{
		attempts++;
		state = JOB_FAILED;
		error = j->pace_why;
	}
	else if (!j->is_poll)
	{
		if (j->needs_http || j->looked_up)
			attempts++;
		switch (a->verdict)
		{
			case DF_ACCEPTED:
				state = JOB_RUNNING;
				sent = now;
				polls = 0;
				next = now + poll_offset(0);
				c->sent++;
				break;
			case DF_SUCCEEDED:	/* Kraken: done on the answer */
				state = JOB_SUCCEEDED;
				sent = now;
				c->sent++;
				break;
			case DF_RETRY:
				if (attempts >= dispatch_max_attempts)
				{
					state = JOB_FAILED;
					error = psprintf("gave up after %d attempts: %s", attempts, a->error);
				}
				else
				{
					state = JOB_QUEUED;
					next = now + backoff_secs(attempts);
					c->retried++;
				}
				break;
			default:
				state = JOB_FAILED;
				break;
		}
	}
	else
	{
		double		age = now - j->sent_epoch;

		if (j->needs_http)
			c->polled++;
		if (j->needs_http && a->verdict != DF_RETRY)
			polls++;
		switch (a->verdict)
		{
			case DF_SUCCEEDED:
				state = JOB_SUCCEEDED;
				break;
			case DF_FAILED:
				state = JOB_FAILED;
				break;
			default:
				if (a->verdict == DF_RETRY)
					c->retried++;
				if (age >= dispatch_give_up_after_s)
				{
					state = JOB_FAILED;
					error = psprintf("Dragonfly did not finish the job within %d minutes%s%s",
									 dispatch_give_up_after_s / 60,
									 a->error ? "; last answer: " : " (still PENDING)",
									 a->error ? a->error : "");
				}
				else
				{
					/* one draw of the jitter: Min() evaluates its arguments twice */
					double		backoff = backoff_secs(Max(polls, 1));

					state = JOB_RUNNING;
					next = a->verdict == DF_RETRY ?
						now + Min(backoff, 60.0) :
						Max(j->sent_epoch + poll_offset(polls), now + 1.0);
				}
				break;
		}
	}
	if (state == JOB_SUCCEEDED)
		c->succeeded++;
	else if (state == JOB_FAILED)
		c->failed++;

	set_field(out, OF_ID, Int64GetDatum(j->id), false);
	set_field(out, OF_STATE, CStringGetTextDatum(job_state_names[state]), false);
	set_field(out, OF_ATTEMPTS, Int32GetDatum(attempts), false);
	set_field(out, OF_POLLS, Int32GetDatum(polls), false);
	set_field(out, OF_NEXT, TimestampTzGetDatum(epoch_timestamptz(next)), next <= 0);
	set_field(out, OF_SENT, TimestampTzGetDatum(epoch_timestamptz(sent)), sent <= 0);
	set_field(out, OF_DF_ID, Int64GetDatum(a->job_id), a->job_id <= 0);
	set_field(out, OF_DF_STATE, a->state ? CStringGetTextDatum(a->state) : (Datum) 0, a->state == NULL);
	set_field(out, OF_HTTP_STATUS, Int32GetDatum((int32) j->req.status),
			  !(j->needs_http && j->req.done && j->req.status > 0));
	set_field(out, OF_ERROR, error ? CStringGetTextDatum(error) : (Datum) 0, error == NULL);
	set_field(out, OF_FAILED_PEERS, Int32GetDatum(a->failed_peers), false);
	set_field(out, OF_RESULT, JsonbPGetDatum(a->result), a->result == NULL);
	set_field(out, OF_MAYBE_SENT, BoolGetDatum(!j->is_poll && state == JOB_QUEUED && a->maybe_sent), false);
	/*
	 * One copy of the row goes into the array being built: the formed tuple
	 * and the job's answer are freed at once, so a batch of large job objects
	 * is held about twice at most (the rows, then the finished array).
	 */
	{
		HeapTuple	t = heap_form_tuple(out->desc, out->values, out->nulls);
		Datum		row = heap_copy_tuple_as_datum(t, out->desc);

		heap_freetuple(t);
		out->rows = accumArrayResult(out->rows, row, false, out->typid, CurrentMemoryContext);
		pfree(DatumGetPointer(row));
		if (a->result)
		{
			pfree(a->result);
			a->result = NULL;
		}
	}

	if (!JOB_STATE_IS_OPEN(state) || error)
		elog(state == JOB_FAILED ? LOG : DEBUG1,
			 "p2p_preheat: job=" INT64_FORMAT " policy=%d instance=%d state=%s%s%s",
			 j->id, j->policy_id, j->instance_id, job_state_names[state],
			 error ? " error: " : "", error ? error : "");
}

void
dispatch_record(List *jobs, DispatchCounts *counts)
{
	Outcomes	out;
	ListCell   *lc;
	double		now = now_epoch();
	Oid			argtype;
	Datum		arg;

	if (jobs == NIL)
		return;
	outcomes_init(&out);
	foreach(lc, jobs)
		settle(lfirst(lc), &out, counts, now);
	argtype = get_array_type(out.typid);
	arg = makeArrayResult(out.rows, CurrentMemoryContext);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_plan(kept_plan(&record_plan, argtype), &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not record preheat outcomes");
	SPI_finish();
}

void
dispatch_set_owner(List *jobs, void *owner)
{
	ListCell   *lc;

	foreach(lc, jobs)
		((DispatchJob *) lfirst(lc))->owner = owner;
}

void *
dispatch_owner(void *job)
{
	return ((DispatchJob *) job)->owner;
}

void
dispatch_release(List *jobs)
{
	ArrayBuildState *ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	ArrayBuildState *started = initArrayResult(INT8OID, CurrentMemoryContext, false);
	ListCell   *lc;
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Datum		args[2];

	if (jobs == NIL)
		return;
	foreach(lc, jobs)
	{
		DispatchJob *j = lfirst(lc);

		accumArrayResult(ids, Int64GetDatum(j->id), false, INT8OID, CurrentMemoryContext);
		/* a POST cut off in flight may have reached Dragonfly */
		if (j->posted && !j->is_poll)
			accumArrayResult(started, Int64GetDatum(j->id), false, INT8OID, CurrentMemoryContext);
	}
	args[0] = makeArrayResult(ids, CurrentMemoryContext);
	args[1] = makeArrayResult(started, CurrentMemoryContext);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT p2p_preheat._release($1, $2)",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not release claimed preheat jobs");
	SPI_finish();
}

double
dispatch_next_due(void)
{
	double		secs = -1;
	bool		isnull;
	Datum		d;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_plan(kept_plan(&next_due_plan, InvalidOid), NULL, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			secs = DatumGetFloat8(d);
	}
	SPI_finish();
	return secs;
}
