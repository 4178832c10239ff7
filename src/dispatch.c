/*
 * dispatch.c
 *		Claim due preheat jobs, push or poll them over HTTP, record outcomes.
 *
 * One claim query and one record query serve a whole batch, whatever its
 * size.  Claims use FOR UPDATE SKIP LOCKED and a lease, so concurrent
 * dispatchers never send the same job twice, and a dispatcher that dies
 * leaves jobs that any other picks up once the lease expires.
 *
 * Harbor's dispatcher never retries, polls every 10 s and gives up after
 * 30 min.  Here transient failures (5xx, 429, network) are retried with
 * exponential back-off and jitter; polls follow Dragonfly's own update
 * instants (p2p_preheat.poll_schedule); the give-up time matches Dragonfly's
 * 62.5-minute window with a margin.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/array.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "dispatch.h"
#include "dragonfly.h"
#include "harbor_auth.h"
#include "http.h"

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
	bool		is_poll;		/* running: GET its state; else POST it */
	char	   *url;
	Jsonb	   *attrs;
	int			instance_id;
	int64		df_id;
	int			attempts;
	int			polls;
	double		sent_epoch;		/* 0 if never accepted */
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
	return (double) GetCurrentTimestamp() / USECS_PER_SEC +
		((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);
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

static char *
harbor_schema(void)
{
	char	   *s;

	if (SPI_execute("SELECT p2p_preheat._harbor_schema()::text", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not find Harbor's schema");
	s = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return s ? s : "public";
}

static char *
get_text(HeapTuple tup, TupleDesc desc, int col)
{
	return SPI_getvalue(tup, desc, col);
}

static int64
get_int8(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (isnull)
		return 0;
	switch (TupleDescAttr(desc, col - 1)->atttypid)
	{
		case INT4OID:
			return DatumGetInt32(d);
		case FLOAT8OID:
			return (int64) DatumGetFloat8(d);
		default:
			return DatumGetInt64(d);
	}
}

static bool
get_bool(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return !isnull && DatumGetBool(d);
}

#define CLAIMED_COLUMNS \
	"j.id, j.state, j.url, j.attrs, j.instance_id, j.dragonfly_job_id," \
	" j.attempts, j.polls, extract(epoch FROM j.sent_at)::float8 AS sent_epoch, j.policy_id"

List *
dispatch_claim(int max_jobs, bool lease)
{
	MemoryContext caller = CurrentMemoryContext;
	List	   *jobs = NIL;
	char	   *schema;
	char	   *q;
	Oid			argtypes[2] = {INT4OID, FLOAT8OID};
	Datum		args[2];

	if (max_jobs <= 0)
		return NIL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schema = harbor_schema();
	q = psprintf("WITH c AS ("
				 "  SELECT id FROM p2p_preheat.job"
				 "   WHERE state IN ('queued', 'sending', 'running')"
				 "     AND next_attempt_at <= clock_timestamp()"
				 "     AND (lease_until IS NULL OR lease_until < clock_timestamp())"
				 "   ORDER BY next_attempt_at"
				 "   LIMIT $1"
				 "   FOR UPDATE SKIP LOCKED),"
				 " u AS (%s)"
				 " SELECT u.id, u.state, u.url, u.attrs, u.instance_id, u.dragonfly_job_id,"
				 "        u.attempts, u.polls, u.sent_epoch,"
				 "        i.endpoint::text, i.auth_mode::text, i.auth_data::text,"
				 "        coalesce(i.insecure, false), coalesce(i.enabled, true),"
				 "        i.vendor::text, i.id IS NOT NULL, s.headers::text, u.policy_id"
				 "   FROM u"
				 "   LEFT JOIN %s.p2p_preheat_instance i ON i.id = u.instance_id"
				 "   LEFT JOIN p2p_preheat.job_secret s ON s.job_id = u.id",
				 lease ?
				 "  UPDATE p2p_preheat.job j"
				 "     SET state = CASE WHEN j.state = 'running' THEN 'running' ELSE 'sending' END,"
				 "         lease_until = clock_timestamp() + make_interval(secs => $2),"
				 "         updated_at = clock_timestamp()"
				 "    FROM c WHERE j.id = c.id"
				 "  RETURNING " CLAIMED_COLUMNS :
				 "  SELECT " CLAIMED_COLUMNS
				 "    FROM p2p_preheat.job j JOIN c ON j.id = c.id"
				 "   WHERE $2 IS NOT NULL",
				 quote_identifier(schema));
	args[0] = Int32GetDatum(max_jobs);
	args[1] = Float8GetDatum((double) dispatch_lease_s);
	if (SPI_execute_with_args(q, 2, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not claim preheat jobs");

	MemoryContextSwitchTo(caller);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		DispatchJob *j = palloc0(sizeof(DispatchJob));
		bool		isnull;
		Datum		attrs = SPI_getbinval(t, d, 4, &isnull);
		char	   *state = get_text(t, d, 2);	/* running or sending/queued */
		char	   *sent = get_text(t, d, 9);

		j->id = get_int8(t, d, 1);
		j->is_poll = strcmp(state, "running") == 0;
		j->url = get_text(t, d, 3);
		j->attrs = isnull ? NULL : DatumGetJsonbPCopy(attrs);
		j->instance_id = (int) get_int8(t, d, 5);
		j->df_id = get_int8(t, d, 6);
		j->attempts = (int) get_int8(t, d, 7);
		j->polls = (int) get_int8(t, d, 8);
		j->sent_epoch = sent ? strtod(sent, NULL) : 0;
		j->endpoint = get_text(t, d, 10);
		j->auth_mode = get_text(t, d, 11);
		j->auth_data = get_text(t, d, 12);
		j->insecure = get_bool(t, d, 13);
		j->enabled = get_bool(t, d, 14);
		j->vendor = get_text(t, d, 15);
		j->instance_found = get_bool(t, d, 16);
		j->headers = get_text(t, d, 17);
		j->policy_id = (int) get_int8(t, d, 18);
		jobs = lappend(jobs, j);
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
	if (j->vendor == NULL || pg_strcasecmp(j->vendor, "dragonfly") != 0)
		return psprintf("preheat instance %d is a %s instance; p2p_preheat sends to dragonfly only",
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
	if (j->is_poll)
	{
		j->req.method = "GET";
		j->req.url = df_jobs_url(j->endpoint, j->df_id);
	}
	else
	{
		j->req.method = "POST";
		j->req.url = df_jobs_url(j->endpoint, 0);
		j->req.body = df_preheat_body(j->url, j->attrs, j->headers, username, password);
	}
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
}

List *
dispatch_pump(DispatchQueue *q, long timeout_ms)
{
	List	   *answered = NIL;
	HttpRequest *done[64];
	int			n;

	while (q->next < list_length(q->jobs) && http_in_flight() < http_max_in_flight)
	{
		DispatchJob *j = list_nth(q->jobs, q->next++);

		if (j->needs_http)
			http_start(&j->req);
		else
			answered = lappend(answered, j);
	}
	if (answered != NIL || http_in_flight() == 0)
		return answered;

	n = http_wait(timeout_ms, done, lengthof(done), PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		DispatchJob *j = done[i]->arg;
		MemoryContext old = MemoryContextSwitchTo(j->req.cxt);

		df_read_answer(&j->req, j->is_poll, &j->answer);
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
		http_abort_all();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* What the answer means for the job: its next state and when to look again. */
/* One array per column of the record query, a row per job. */
typedef struct Outcomes
{
	ArrayBuildState *col[13];
} Outcomes;

static const Oid outcome_types[13] = {
	INT8OID, TEXTOID, INT4OID, INT4OID, FLOAT8OID, FLOAT8OID, INT8OID,
	TEXTOID, INT4OID, TEXTOID, INT4OID, JSONBOID, BOOLOID
};

static void
put(Outcomes *o, int col, Datum v, bool isnull)
{
	o->col[col] = accumArrayResult(o->col[col], v, isnull, outcome_types[col],
								   CurrentMemoryContext);
}

static void
settle(DispatchJob *j, Outcomes *out, DispatchCounts *c, double now)
{
	DfAnswer   *a = &j->answer;
	const char *state;
	int			attempts = j->attempts;
	int			polls = j->polls;
	double		next = 0;
	double		sent = 0;
	char	   *error = a->error;
	bool		finished = false;

	if (!j->is_poll)
	{
		if (j->needs_http)
			attempts++;
		switch (a->verdict)
		{
			case DF_ACCEPTED:
				state = "running";
				sent = now;
				polls = 0;
				next = now + poll_offset(0);
				c->sent++;
				break;
			case DF_RETRY:
				if (attempts >= dispatch_max_attempts)
				{
					state = "failed";
					error = psprintf("gave up after %d attempts: %s", attempts, a->error);
				}
				else
				{
					state = "queued";
					next = now + backoff_secs(attempts);
					c->retried++;
				}
				break;
			default:
				state = "failed";
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
				state = "succeeded";
				break;
			case DF_FAILED:
				state = "failed";
				break;
			default:
				if (a->verdict == DF_RETRY)
					c->retried++;
				if (age >= dispatch_give_up_after_s)
				{
					state = "failed";
					error = psprintf("Dragonfly did not finish the job within %d minutes%s%s",
									 dispatch_give_up_after_s / 60,
									 a->error ? "; last answer: " : " (still PENDING)",
									 a->error ? a->error : "");
				}
				else
				{
					state = "running";
					next = a->verdict == DF_RETRY ?
						now + Min(backoff_secs(Max(polls, 1)), 60.0) :
						Max(j->sent_epoch + poll_offset(polls), now + 1.0);
				}
				break;
		}
	}
	if (strcmp(state, "succeeded") == 0)
	{
		c->succeeded++;
		finished = true;
	}
	else if (strcmp(state, "failed") == 0)
	{
		c->failed++;
		finished = true;
	}

	put(out, 0, Int64GetDatum(j->id), false);
	put(out, 1, CStringGetTextDatum(state), false);
	put(out, 2, Int32GetDatum(attempts), false);
	put(out, 3, Int32GetDatum(polls), false);
	put(out, 4, Float8GetDatum(next), next <= 0);
	put(out, 5, Float8GetDatum(sent), sent <= 0);
	put(out, 6, Int64GetDatum(a->job_id), a->job_id <= 0);
	put(out, 7, a->state ? CStringGetTextDatum(a->state) : (Datum) 0, a->state == NULL);
	put(out, 8, Int32GetDatum((int32) j->req.status),
		!(j->needs_http && j->req.done && j->req.status > 0));
	put(out, 9, error ? CStringGetTextDatum(error) : (Datum) 0, error == NULL);
	put(out, 10, Int32GetDatum(a->failed_peers), false);
	put(out, 11, JsonbPGetDatum(a->result), a->result == NULL);
	put(out, 12, BoolGetDatum(finished), false);

	if (finished || error)
		elog(finished && strcmp(state, "failed") == 0 ? LOG : DEBUG1,
			 "p2p_preheat: job=" INT64_FORMAT " policy=%d instance=%d state=%s%s%s",
			 j->id, j->policy_id, j->instance_id, state, error ? " error: " : "", error ? error : "");
}

static bool
counts_finished(List *jobs)
{
	ListCell   *lc;

	foreach(lc, jobs)
	{
		DfVerdict	v = ((DispatchJob *) lfirst(lc))->answer.verdict;

		if (v == DF_SUCCEEDED || v == DF_FAILED)
			return true;
	}
	return false;
}

void
dispatch_record(List *jobs, DispatchCounts *counts)
{
	Outcomes	out = {0};
	ListCell   *lc;
	double		now = now_epoch();
	Oid			argtypes[13];
	Datum		args[13];

	if (jobs == NIL)
		return;
	foreach(lc, jobs)
		settle(lfirst(lc), &out, counts, now);
	for (int i = 0; i < 13; i++)
	{
		argtypes[i] = get_array_type(outcome_types[i]);
		args[i] = makeArrayResult(out.col[i], CurrentMemoryContext);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(
							  "WITH o AS ("
							  "  SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
							  "    AS o(id, state, attempts, polls, next_epoch, sent_epoch, df_id, df_state,"
							  "         http_status, error, failed_peers, result, finished)),"
							  " u AS ("
							  "  UPDATE p2p_preheat.job j"
							  "     SET state = o.state, attempts = o.attempts, polls = o.polls,"
							  "         next_attempt_at = coalesce(to_timestamp(o.next_epoch), j.next_attempt_at),"
							  "         sent_at = coalesce(to_timestamp(o.sent_epoch), j.sent_at),"
							  "         dragonfly_job_id = coalesce(o.df_id, j.dragonfly_job_id),"
							  "         dragonfly_state = coalesce(o.df_state, j.dragonfly_state),"
							  "         last_http_status = o.http_status,"
							  "         last_error = o.error,"
							  "         failed_peers = CASE WHEN o.finished THEN o.failed_peers END,"
							  "         result = coalesce(o.result, j.result),"
							  "         finished_at = CASE WHEN o.finished THEN clock_timestamp() END,"
							  "         lease_until = NULL,"
							  "         updated_at = clock_timestamp()"
							  "    FROM o"
							  "   WHERE j.id = o.id AND j.state IN ('queued', 'sending', 'running')"
							  "  RETURNING j.id, j.state, j.policy_id, j.instance_id),"
							  " d AS ("
							  "  DELETE FROM p2p_preheat.job_secret s USING u"
							  "   WHERE s.job_id = u.id AND u.state <> 'queued' RETURNING s.job_id)"
							  /* LISTEN p2p_preheat: a small payload per job that ended */
							  " SELECT (SELECT count(*) FROM d),"
							  "        count(pg_notify('p2p_preheat', json_build_object('job', u.id,"
							  "              'state', u.state, 'policy', u.policy_id, 'instance', u.instance_id)::text))"
							  "   FROM u WHERE u.state IN ('succeeded', 'failed')",
							  13, argtypes, args, NULL, false, 0) < 0)
		elog(ERROR, "could not record preheat outcomes");
	/* executions whose last job just ended */
	if (counts_finished(jobs) &&
		SPI_execute_with_args("SELECT pg_notify('p2p_preheat', json_build_object("
							  "         'execution', s.id, 'policy', s.policy_id, 'status', s.status)::text)"
							  "  FROM p2p_preheat.execution_status s"
							  " WHERE s.id IN (SELECT ej.execution_id FROM p2p_preheat.execution_job ej"
							  "                 WHERE ej.job_id = ANY ($1))"
							  "   AND s.status NOT IN ('Pending', 'Running')",
							  1, &argtypes[0], &args[0], NULL, false, 0) < 0)
		elog(ERROR, "could not notify ended executions");
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
	ArrayBuildState *ids = NULL;
	ListCell   *lc;
	Oid			argtype = INT8ARRAYOID;
	Datum		arg;

	if (jobs == NIL)
		return;
	foreach(lc, jobs)
		ids = accumArrayResult(ids, Int64GetDatum(((DispatchJob *) lfirst(lc))->id),
							   false, INT8OID, CurrentMemoryContext);
	arg = makeArrayResult(ids, CurrentMemoryContext);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("UPDATE p2p_preheat.job"
							  "   SET state = CASE WHEN state = 'sending' THEN 'queued' ELSE state END,"
							  "       lease_until = NULL, updated_at = clock_timestamp()"
							  " WHERE id = ANY ($1) AND state IN ('sending', 'running')",
							  1, &argtype, &arg, NULL, false, 0) < 0)
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
	if (SPI_execute("SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8"
					"  FROM p2p_preheat.job WHERE state IN ('queued', 'sending', 'running')",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			secs = Max(0.0, DatumGetFloat8(d));
	}
	SPI_finish();
	return secs;
}
