/*
 * worker.c
 *		The background worker: dispatches on its own, woken at COMMIT.
 *
 * Lessons from pg_net's users shape this file: the queue is a logged table,
 * so a crash loses nothing; claims and records are short transactions of
 * their own and HTTP happens outside any transaction; transfers stay in
 * flight while the worker waits on its latch, so a slow Dragonfly never
 * holds back new jobs or a shutdown; locks are taken with a short
 * lock_timeout so DROP EXTENSION or TRUNCATE never wait behind us.
 *
 * A misconfiguration (no such database or role, the extension or Harbor's
 * tables missing, a key file that cannot be read) never makes the worker
 * crash-loop or fill the log: it says so once, in the log and in
 * worker_status().state with the fix, and looks again with a back-off.
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "utils/syscache.h"
#include <fcntl.h>
#include <unistd.h>
#include "commands/dbcommands.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "dispatch.h"
#include "harbor_auth.h"
#include "harbor_token.h"
#include "http.h"
#include "http_channel.h"
#include "pacing.h"
#include "worker.h"

char	   *worker_database = NULL;
char	   *worker_role = NULL;
int			worker_safety_poll_s = 30;
int			worker_batch = 1000;
int			worker_retention_s = 30 * 86400;

typedef struct WorkerShared
{
	slock_t		mutex;
	pid_t		pid;
	Latch	   *latch;
	char		state[512];		/* what it does, or the problem and its fix */
	TimestampTz started_at;
	TimestampTz last_activity;
	int			in_flight;
	int64		sent;
	int64		polled;
	int64		succeeded;
	int64		failed;
	int64		retried;
	int64		wakeups;
	int			db_check;		/* DB_CHECK_* below */
	char		pace[8192];		/* pacing_describe(), as JSON */
	int			connect_failures;	/* starts that could not connect, in a row */
	bool		connect_failure_logged;
	int64		generation;		/* this start of the worker; 0 if none runs */
	bool		wake_requested; /* a COMMIT queued work since the worker last looked */
} WorkerShared;

#define PACE_PUBLISH_MS 250

/*
 * DROP DATABASE of the worker's database: the worker steps aside, and its
 * next incarnation checks from no database at all whether its database is
 * still there before connecting, so it never blocks the drop nor
 * crash-loops on a database that is gone.
 */
#define DB_CHECK_NONE		0
#define DB_CHECK_NEEDED		1	/* look before connecting */
#define DB_CHECK_CONNECTING 2	/* it was there: connect now */

static WorkerShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;
static bool wake_at_commit = false;

static void
worker_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(WorkerShared)));
}

static void
worker_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("p2p_preheat worker", sizeof(WorkerShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(WorkerShared));
		SpinLockInit(&shared->mutex);
		strlcpy(shared->state, "not started", sizeof(shared->state));
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Once per transaction that queued work, never on rollback. */
static void
worker_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit && shared != NULL)
			{
				Latch	   *latch;

				SpinLockAcquire(&shared->mutex);
				latch = shared->latch;
				shared->wake_requested = true;
				SpinLockRelease(&shared->mutex);
				if (latch)
					SetLatch(latch);
			}
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/* Ask the worker to let go of its database, and wait until it has. */
static void
worker_step_aside(void)
{
	pid_t		pid;

	SpinLockAcquire(&shared->mutex);
	shared->db_check = DB_CHECK_NEEDED;
	pid = shared->latch ? shared->pid : 0;
	SpinLockRelease(&shared->mutex);
	if (pid == 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 500; i++)
	{
		bool		gone;

		SpinLockAcquire(&shared->mutex);
		gone = shared->latch == NULL;
		SpinLockRelease(&shared->mutex);
		if (gone)
			break;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000L);
	}
}

static void
worker_process_utility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (shared && IsA(stmt, DropdbStmt) && worker_database &&
		strcmp(((DropdbStmt *) stmt)->dbname, worker_database) == 0)
		worker_step_aside();
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

void
worker_register(void)
{
	BackgroundWorker bgw;

	RegisterXactCallback(worker_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = worker_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = worker_shmem_startup;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = worker_process_utility;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* idle on a standby; starts on the new primary right after promotion */
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	strlcpy(bgw.bgw_library_name, "p2p_preheat", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "p2p_preheat_worker_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "p2p_preheat dispatcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "p2p_preheat dispatcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

static void
set_state(const char *state, int in_flight)
{
	SpinLockAcquire(&shared->mutex);
	strlcpy(shared->state, state, sizeof(shared->state));
	shared->in_flight = in_flight;
	shared->last_activity = GetCurrentTimestamp();
	SpinLockRelease(&shared->mutex);
	pgstat_report_activity(STATE_IDLE, state);
}

/* The pace of each cluster, for worker_status(); at most every PACE_PUBLISH_MS. */
static void
publish_pace(void)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	StringInfoData buf;

	if (!TimestampDifferenceExceeds(last, now, PACE_PUBLISH_MS))
		return;
	last = now;
	initStringInfo(&buf);
	pacing_describe(&buf, pacing_epoch(now));
	SpinLockAcquire(&shared->mutex);
	if (buf.len < sizeof(shared->pace))
		memcpy(shared->pace, buf.data, buf.len + 1);
	else
		strlcpy(shared->pace, "[]", sizeof(shared->pace));
	SpinLockRelease(&shared->mutex);
	pfree(buf.data);
}

static void
add_counts(const DispatchCounts *c)
{
	SpinLockAcquire(&shared->mutex);
	shared->sent += c->sent;
	shared->polled += c->polled;
	shared->succeeded += c->succeeded;
	shared->failed += c->failed;
	shared->retried += c->retried;
	SpinLockRelease(&shared->mutex);
}

/*
 * Run fn in a short transaction of its own.  Errors are logged, not fatal:
 * a vanished extension or a lock we would have to wait for just means
 * "not now".  Returns false on error.
 */
static char *last_error = NULL;	/* of the last in_transaction(), in TopMemoryContext */

static bool
in_transaction(bool (*fn) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		ok = fn(arg);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		CurrentResourceOwner = owner;
		/* the caller reports it, once: see report_problem() */
		if (last_error)
			pfree(last_error);
		last_error = edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ? NULL :
			MemoryContextStrdup(TopMemoryContext,
								edata->hint ? psprintf("%s; %s", edata->message, edata->hint) :
								edata->message);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_stat(false);
	if (ok && last_error)
	{
		pfree(last_error);
		last_error = NULL;
	}
	return ok;
}

/*
 * A problem that keeps the worker from working: logged when it first
 * appears or changes (and again at most every ten minutes), shown in
 * worker_status() all along.  Returns the seconds to wait before looking
 * again: 1, 2, 4 ... up to a minute.
 */
static char *reported = NULL;
static TimestampTz reported_at = 0;
static int	problem_backoff = 0;

static double
report_problem(const char *problem)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *state = psprintf("waiting: %s", problem);

	set_state(state, 0);
	if (reported == NULL || strcmp(reported, problem) != 0 ||
		TimestampDifferenceExceeds(reported_at, now, 600 * 1000))
	{
		ereport(LOG,
				(errmsg("p2p_preheat worker is waiting: %s", problem),
				 errdetail("It looks again with a back-off of up to a minute, and at once when a job is queued.")));
		if (reported)
			pfree(reported);
		reported = MemoryContextStrdup(TopMemoryContext, problem);
		reported_at = now;
	}
	pfree(state);
	problem_backoff = Min(Max(problem_backoff * 2, 1), 60);
	return problem_backoff;
}

static void
problem_solved(void)
{
	if (reported)
	{
		ereport(LOG, (errmsg("p2p_preheat worker resumes: solved: %s", reported)));
		pfree(reported);
		reported = NULL;
	}
	problem_backoff = 0;
}

/* An error of a step other than the claim: logged, the same one at most once a minute. */
static void
log_failure(const char *step)
{
	static char *logged = NULL;
	static TimestampTz logged_at = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (last_error == NULL)
		return;
	if (logged && strcmp(logged, last_error) == 0 &&
		!TimestampDifferenceExceeds(logged_at, now, 60 * 1000))
		return;
	ereport(LOG, (errmsg("p2p_preheat worker could not %s: %s", step, last_error)));
	if (logged)
		pfree(logged);
	logged = MemoryContextStrdup(TopMemoryContext, last_error);
	logged_at = now;
}

/* A setting naming a file this server cannot read, as a problem, or NULL. */
static char *
file_problem(const char *setting, const char *path)
{
	int			fd;

	if (path == NULL || path[0] == '\0')
		return NULL;
	fd = open(path, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
		return psprintf("could not open %s \"%s\": %s; make the file readable by the server's "
						"operating system user, or correct the setting and reload",
						setting, path, strerror(errno));
	close(fd);
	return NULL;
}

/* What would make every job fail for want of configuration, or NULL. */
static char *
config_problem(void)
{
	char	   *p = file_problem("p2p_preheat.secret_key_file", harbor_secret_key_file);

	if (p == NULL)
		p = file_problem("p2p_preheat.registry_credentials_file", registry_credentials_file);
	if (p == NULL)
		p = file_problem("p2p_preheat.token_private_key_file", harbor_token_private_key_file);
	return p;
}

/* A claimed batch: its jobs and the memory they live in. */
typedef struct Batch
{
	MemoryContext cxt;
	DispatchQueue queue;
	int			outstanding;	/* claimed, not yet recorded */
} Batch;

/*
 * Answers are recorded in groups: RECORD_BATCH of them, or whatever is in
 * once no transfer is in flight or the oldest has waited RECORD_WAIT_MS.
 * A group is recorded in the same transaction as the next claim, so a
 * steady stream costs one transaction per group, not two.
 */
#define RECORD_BATCH	256
#define RECORD_WAIT_MS	20

/*
 * With an HTTP process, answers come in while the worker is in SQL: it
 * records what came meanwhile once that is half a group, rather than wait
 * for a full one (the HTTP process holds enough to keep sending through
 * a turn of that size).  A quarter of a group cost 2-3 us more of the
 * worker's CPU per job: each turn is a transaction, with its fixed cost.
 */
#define RECORD_BATCH_SHARED 128

/*
 * Jobs claimed and not yet recorded: CLAIM_AHEAD times max_in_flight, so
 * that transfers keep going while a group of answers waits for its turn.
 */
#define CLAIM_AHEAD		8

/*
 * With an HTTP process, more: it holds http_start_limit() requests, and
 * jobs it can take next must be claimed before the worker's SQL turn.
 */
static int
claim_cap(void)
{
	return http_max_in_flight * CLAIM_AHEAD + (http_start_limit() - http_max_in_flight);
}

typedef struct ClaimArgs
{
	int			max;			/* 0: record only */
	List	   *jobs;
	MemoryContext cxt;
	double		next_due;		/* seconds until the next due job, or -1 */
	bool		extension_present;
	List	   *record;			/* answers to record first */
	bool		recorded;
	DispatchCounts counts;
	bool		harbor_attached;
} ClaimArgs;

static bool harbor_seen_attached = false;

static bool
claim_fn(void *p)
{
	ClaimArgs  *a = p;
	MemoryContext old;

	a->extension_present = OidIsValid(get_extension_oid("p2p_preheat", true));
	if (!a->extension_present)
		return true;
	if (a->record != NIL)
	{
		dispatch_record(a->record, &a->counts);
		a->recorded = true;
	}
	a->harbor_attached = true;
	if (a->max <= 0)
		return true;
	/*
	 * Installed before Harbor created its tables: nothing can be queued yet.
	 * Once seen attached, not looked at again: a Harbor that goes away later
	 * shows in the claim's own error.
	 */
	if (!harbor_seen_attached)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		harbor_seen_attached =
			SPI_execute("SELECT FROM p2p_preheat.harbor h WHERE to_regnamespace(h.schema_name::text) IS NOT NULL",
						true, 1) == SPI_OK_SELECT && SPI_processed == 1;
		SPI_finish();
	}
	a->harbor_attached = harbor_seen_attached;
	if (!a->harbor_attached)
		return true;
	old = MemoryContextSwitchTo(a->cxt);
	a->jobs = dispatch_claim(a->max, true);
	MemoryContextSwitchTo(old);
	/* a full claim is followed by another at once: no need to look ahead */
	if (list_length(a->jobs) < a->max)
		a->next_due = dispatch_next_due();
	return true;
}

typedef struct RecordArgs
{
	List	   *jobs;
	DispatchCounts counts;
} RecordArgs;

static bool
record_fn(void *p)
{
	RecordArgs *a = p;

	if (!OidIsValid(get_extension_oid("p2p_preheat", true)))
		return true;
	dispatch_record(a->jobs, &a->counts);
	return true;
}

/* Retention, a batch at a time, when the worker has nothing else to do. */
static bool
purge_fn(void *p)
{
	int64	   *deleted = p;

	*deleted = 0;
	if (!OidIsValid(get_extension_oid("p2p_preheat", true)))
		return true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT p2p_preheat.purge(1000)", false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		*deleted = isnull ? 0 : DatumGetInt64(d);
	}
	SPI_finish();
	return true;
}

static bool
release_fn(void *p)
{
	if (OidIsValid(get_extension_oid("p2p_preheat", true)))
		dispatch_release((List *) p);
	return true;
}

/* Whether a COMMIT queued work since the last call. */
static bool
take_wake_request(void)
{
	bool		wake;

	SpinLockAcquire(&shared->mutex);
	wake = shared->wake_requested;
	shared->wake_requested = false;
	SpinLockRelease(&shared->mutex);
	return wake;
}

/* One pump over every batch; only the last may wait.  No handle outlives an ERROR. */
static List *
pump_all(List *batches, long wait_ms)
{
	List	   *answered = NIL;

	PG_TRY();
	{
		ListCell   *lc;

		foreach(lc, batches)
		{
			Batch	   *b = lfirst(lc);

			List	   *got = dispatch_pump(&b->queue, lnext(batches, lc) ? 0 : wait_ms);

			answered = list_concat(answered, got);
			list_free(got);
		}
		/* the answers just taken made room: fill it before SQL takes a turn */
		if (http_channel_on)
		{
			foreach(lc, batches)
			{
				List	   *got = dispatch_refill(&((Batch *) lfirst(lc))->queue);

				answered = list_concat(answered, got);
				list_free(got);
			}
			http_flush();
		}
	}
	PG_CATCH();
	{
		dispatch_abort();
		PG_RE_THROW();
	}
	PG_END_TRY();
	return answered;
}

static void
worker_exit(int code, Datum arg)
{
	SpinLockAcquire(&shared->mutex);
	strlcpy(shared->state, "stopped", sizeof(shared->state));
	shared->latch = NULL;
	shared->generation = 0;
	shared->in_flight = 0;
	SpinLockRelease(&shared->mutex);
}

/* Why the worker could not connect, from no database at all, or NULL. */
static char *
connect_problem(void)
{
	char	   *problem = NULL;
	HeapTuple	tup;

	StartTransactionCommand();
	tup = SearchSysCache1(DATABASEOID,
						  ObjectIdGetDatum(get_database_oid(worker_database, true)));
	if (!HeapTupleIsValid(tup))
		problem = psprintf("database \"%s\" does not exist; create it, or set p2p_preheat.database "
						   "to Harbor's database and restart the server", worker_database);
	else
	{
		if (!((Form_pg_database) GETSTRUCT(tup))->datallowconn)
			problem = psprintf("database \"%s\" does not allow connections; "
							   "ALTER DATABASE %s WITH ALLOW_CONNECTIONS true",
							   worker_database, quote_identifier(worker_database));
		ReleaseSysCache(tup);
	}
	if (problem == NULL && worker_role && worker_role[0])
	{
		tup = SearchSysCache1(AUTHNAME, CStringGetDatum(worker_role));
		if (!HeapTupleIsValid(tup))
			problem = psprintf("role \"%s\" (p2p_preheat.worker_role) does not exist; create it, "
							   "or set p2p_preheat.worker_role and restart the server", worker_role);
		else
		{
			if (!((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin)
				problem = psprintf("role \"%s\" (p2p_preheat.worker_role) may not log in; "
								   "ALTER ROLE %s LOGIN", worker_role, quote_identifier(worker_role));
			ReleaseSysCache(tup);
		}
	}
	CommitTransactionCommand();
	return problem;
}

/*
 * The last start could not connect.  Connected to no database, find out
 * why, say it once, and look again with a back-off until it is solved;
 * then exit so that the next start connects.  Never returns.
 */
static void
check_connection_then_exit(void)
{
	bool		waited = false;

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	SpinLockAcquire(&shared->mutex);
	shared->pid = MyProcPid;
	shared->started_at = GetCurrentTimestamp();
	shared->connect_failures++;
	SpinLockRelease(&shared->mutex);
	while (!ShutdownRequestPending)
	{
		char	   *problem = connect_problem();
		double		wait_s;

		/*
		 * Nothing wrong that can be seen from here, yet connecting keeps
		 * failing (a connection limit, say): back off between attempts too.
		 */
		if (problem == NULL && shared->connect_failures > 2 && !waited)
		{
			problem = psprintf("could not connect to database \"%s\"%s%s%s (%d attempts in a row) for a reason "
							   "the server log gives in its FATAL message; the worker tries again with a back-off",
							   worker_database,
							   worker_role && worker_role[0] ? " as role \"" : "",
							   worker_role && worker_role[0] ? worker_role : "",
							   worker_role && worker_role[0] ? "\"" : "",
							   shared->connect_failures - 1);
			set_state(psprintf("waiting: %s", problem), 0);
			if (!shared->connect_failure_logged)
				ereport(LOG, (errmsg("p2p_preheat worker is waiting: %s", problem)));
			shared->connect_failure_logged = true;
			waited = true;
			ResetLatch(MyLatch);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(1000L << Min(shared->connect_failures - 2, 6), 60000L),
							 PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (problem == NULL)
		{
			if (reported)
				ereport(LOG, (errmsg("p2p_preheat worker: solved: %s; connecting", reported)));
			shared->db_check = DB_CHECK_CONNECTING;
			proc_exit(1);		/* restarted at once, and connects */
		}
		wait_s = report_problem(problem);
		ResetLatch(MyLatch);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) (wait_s * 1000), PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
	set_state("stopped", 0);
	proc_exit(1);
}

/* the postmaster looks it up by name: exported (16+ hide the rest) */
PGDLLEXPORT void p2p_preheat_worker_main(Datum arg);

void
p2p_preheat_worker_main(Datum arg)
{
	List	   *batches = NIL;
	List	   *unrecorded = NIL;	/* answered jobs not yet recorded */
	TimestampTz unrecorded_since = 0;
	MemoryContext worker_cxt;
	TimestampTz next_claim = 0;
	TimestampTz next_purge = 0;
	double		safety = 0;
	bool		was_busy = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	if (shared->db_check == DB_CHECK_NEEDED)
		check_connection_then_exit();
	shared->db_check = DB_CHECK_NEEDED;	/* until the connection works */
	BackgroundWorkerInitializeConnection(worker_database,
										 worker_role && worker_role[0] ? worker_role : NULL, 0);
	shared->db_check = DB_CHECK_NONE;
	shared->connect_failures = 0;
	shared->connect_failure_logged = false;
	pgstat_report_appname("p2p_preheat dispatcher");
	/* never wait long behind DROP EXTENSION, TRUNCATE or ALTER EXTENSION */
	SetConfigOption("lock_timeout", "200", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "p2p_preheat dispatcher", PGC_SUSET, PGC_S_OVERRIDE);

	SpinLockAcquire(&shared->mutex);
	shared->pid = MyProcPid;
	shared->latch = MyLatch;
	shared->started_at = GetCurrentTimestamp();
	/* unique across restarts and servers: claims of any other are void */
	shared->generation = shared->started_at;
	shared->sent = shared->polled = shared->succeeded = shared->failed =
		shared->retried = shared->wakeups = 0;
	SpinLockRelease(&shared->mutex);
	on_shmem_exit(worker_exit, (Datum) 0);

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat worker",
									   ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(worker_cxt);
	ereport(LOG, (errmsg("p2p_preheat worker started for database \"%s\"", worker_database)));
	/* transfers in a process of their own, beside claims and records */
	(void) http_channel_open();

	while (!ShutdownRequestPending)
	{
		int			in_flight = 0;
		ListCell   *lc;
		List	   *answered = NIL;
		TimestampTz now = GetCurrentTimestamp();
		bool		record_now;
		bool		claim_now;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		foreach(lc, batches)
			in_flight += ((Batch *) lfirst(lc))->outstanding;

		/* record a group of answers, and claim in the same transaction */
		record_now = unrecorded != NIL &&
			(list_length(unrecorded) >= RECORD_BATCH || http_in_flight() == 0 ||
			 (http_channel_on && list_length(unrecorded) >= RECORD_BATCH_SHARED) ||
			 TimestampDifferenceExceeds(unrecorded_since, now, RECORD_WAIT_MS) ||
			 ShutdownRequestPending);
		/* claim when woken, when something is due, or on the safety-net timer */
		claim_now = (now >= next_claim || record_now) && in_flight < claim_cap();
		if (claim_now || record_now)
		{
			ClaimArgs	ca = {0};
			Batch	   *b = palloc0(sizeof(Batch));
			bool		ok;
			char	   *problem = config_problem();

			b->cxt = AllocSetContextCreate(worker_cxt, "p2p_preheat batch",
										   ALLOCSET_DEFAULT_SIZES);
			ca.max = claim_now ? Min(worker_batch, claim_cap() - in_flight) : 0;
			ca.cxt = b->cxt;
			ca.next_due = -1;
			ca.record = record_now ? unrecorded : NIL;
			if (problem != NULL)
				ca.max = 0;		/* record what came back; claim nothing */
			set_state(claim_now ? "claiming" : "recording", in_flight);
			ok = in_transaction(claim_fn, &ca);
			if (record_now)
			{
				/* a failed claim must not lose the answers: record them alone */
				if (!(ok && ca.recorded) && ca.extension_present)
				{
					RecordArgs	ra = {0};

					ra.jobs = unrecorded;
					if (!in_transaction(record_fn, &ra))
						log_failure("record answers from Dragonfly");
					ca.counts = ra.counts;
				}
				add_counts(&ca.counts);
				/* forget recorded jobs; free a batch once all are recorded */
				foreach(lc, unrecorded)
					((Batch *) dispatch_owner(lfirst(lc)))->outstanding--;
				foreach(lc, batches)
				{
					Batch	   *rb = lfirst(lc);

					if (rb->outstanding == 0)
					{
						MemoryContextDelete(rb->cxt);
						batches = foreach_delete_current(batches, lc);
						pfree(rb);
					}
				}
				list_free(unrecorded);
				unrecorded = NIL;
				unrecorded_since = 0;
				in_flight = 0;
				foreach(lc, batches)
					in_flight += ((Batch *) lfirst(lc))->outstanding;
			}
			if (claim_now)
			{
				if (problem != NULL)
					safety = report_problem(problem);
				else if (!ok)
					safety = last_error ? report_problem(last_error) : 1.0;
				else if (!ca.extension_present)
				{
					char	   *missing = psprintf("extension p2p_preheat is not installed in database \"%s\"; "
												   "run CREATE EXTENSION p2p_preheat there, or set p2p_preheat.database "
												   "to Harbor's database and restart",
												   worker_database);

					safety = Min(report_problem(missing), 5.0);
					pfree(missing);
				}
				else if (!ca.harbor_attached)
					safety = report_problem("this database holds no Harbor tables that p2p_preheat is attached to; "
											"it attaches when Harbor creates p2p_preheat_policy, or a superuser runs "
											"SELECT p2p_preheat.attach('public.p2p_preheat_policy')");
				else
				{
					problem_solved();
					safety = ca.next_due >= 0 ? Min(ca.next_due, worker_safety_poll_s) :
						worker_safety_poll_s;
				}
				next_claim = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 (int) (safety * 1000));
			}
			if (ca.jobs != NIL)
			{
				MemoryContext old = MemoryContextSwitchTo(b->cxt);

				b->queue.jobs = ca.jobs;
				b->outstanding = list_length(ca.jobs);
				dispatch_set_owner(ca.jobs, b);
				dispatch_prepare(ca.jobs);
				MemoryContextSwitchTo(old);
				batches = lappend(batches, b);
				in_flight += b->outstanding;
				/* a full batch means more may be waiting */
				if (list_length(ca.jobs) == ca.max)
					next_claim = 0;
			}
			else
			{
				MemoryContextDelete(b->cxt);
				pfree(b);
			}
		}

		if (in_flight > 0)
		{
			/*
			 * Claim again at once only if there is room: with as many jobs
			 * claimed as may be, a wait of 0 would spin until answers come.
			 * The clock is read once: Max() evaluates its arguments twice.
			 */
			bool		room = in_flight < claim_cap();
			long		until_claim = (long) ((next_claim - GetCurrentTimestamp()) / 1000);
			long		wait_ms = !room ? 1000 : next_claim == 0 ? 0 : Max(0, until_claim);

			/* answers waiting to be recorded: wake in time to record them */
			if (unrecorded != NIL)
				wait_ms = Min(wait_ms, RECORD_WAIT_MS);
			set_state("dispatching", in_flight);
			was_busy = true;
			answered = pump_all(batches, Min(wait_ms, 1000));
			publish_pace();
			/* the latch also wakes for answers from the HTTP process: ask */
			if (take_wake_request())
			{
				next_claim = 0;	/* a COMMIT queued work: claim it now */
				SpinLockAcquire(&shared->mutex);
				shared->wakeups++;
				SpinLockRelease(&shared->mutex);
			}

			if (answered != NIL)
			{
				if (unrecorded == NIL)
					unrecorded_since = GetCurrentTimestamp();
				unrecorded = list_concat(unrecorded, answered);
				list_free(answered);
			}
			continue;
		}

		/* idle: sleep until woken or the next due job; no queries meanwhile */
		if (was_busy)
		{
			http_trim_pool();
#ifdef __GLIBC__
			/* give a burst's freed batches back to the OS, not just to malloc */
			malloc_trim(0);
#endif
			was_busy = false;
		}
		if (GetCurrentTimestamp() >= next_purge)
		{
			int64		deleted = 0;

			set_state("purging", 0);
			if (!in_transaction(purge_fn, &deleted))
				log_failure("purge old jobs");
			/* a full batch: more to delete, keep going between other work */
			next_purge = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 deleted >= 1000 ? 100 : 60000);
		}
		if (reported == NULL)
			set_state("idle", 0);
		publish_pace();
		{
			long		until_due = (long) ((Min(next_claim, next_purge) - GetCurrentTimestamp()) / 1000);
			long		timeout = Max(1, until_due);
			int			rc = WaitLatch(MyLatch,
									   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									   timeout, PG_WAIT_EXTENSION);

			ResetLatch(MyLatch);
			if (rc & WL_LATCH_SET)
			{
				(void) take_wake_request();
				next_claim = 0;
				SpinLockAcquire(&shared->mutex);
				shared->wakeups++;
				SpinLockRelease(&shared->mutex);
			}
		}
	}

	/* shutdown: stop transfers; claimed jobs go back to the queue at once */
	http_abort_all();
	if (unrecorded != NIL)
	{
		/* answers already in (a job Dragonfly created) must not be sent again */
		RecordArgs	ra = {0};

		ra.jobs = unrecorded;
		in_transaction(record_fn, &ra);
		add_counts(&ra.counts);
	}
	{
		List	   *claimed = NIL;
		ListCell   *lc;

		foreach(lc, batches)
			claimed = list_concat(claimed, ((Batch *) lfirst(lc))->queue.jobs);
		if (claimed != NIL && in_transaction(release_fn, claimed))
			ereport(LOG,
					(errmsg("p2p_preheat worker stopping: returned %d claimed jobs to the queue",
							list_length(claimed))));
		else
			ereport(LOG,
					(errmsg("p2p_preheat worker stopping"),
					 unrecorded != NIL && last_error ?
					 errdetail("Its %d claimed jobs could not be returned to the queue (%s); "
							   "the next worker takes them up as soon as it starts.",
							   list_length(unrecorded), last_error) : 0));
	}
	http_shutdown();
	/* non-zero: restarted unless the server itself is stopping */
	proc_exit(1);
}

PG_FUNCTION_INFO_V1(p2p_preheat_wake_worker);
PG_FUNCTION_INFO_V1(p2p_preheat_worker_status);
PG_FUNCTION_INFO_V1(p2p_preheat_worker_generation);

/*
 * The running worker's generation, or NULL.  A job claimed under any other
 * generation was claimed by a worker that has died or stopped: it needs no
 * lease to run out before it is sent again.
 */
Datum
p2p_preheat_worker_generation(PG_FUNCTION_ARGS)
{
	int64		gen = 0;

	if (shared != NULL)
	{
		SpinLockAcquire(&shared->mutex);
		if (shared->latch != NULL)
			gen = shared->generation;
		SpinLockRelease(&shared->mutex);
	}
	if (gen == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(gen);
}

/* Called when a job is queued: the worker is woken when this commits. */
void
worker_wake_at_commit(void)
{
	wake_at_commit = true;
}

Datum
p2p_preheat_wake_worker(PG_FUNCTION_ARGS)
{
	worker_wake_at_commit();
	PG_RETURN_VOID();
}

Datum
p2p_preheat_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[12];
	bool		nulls[12] = {0};
	WorkerShared s;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "worker_status() must return a record");
	if (shared == NULL)
	{
		/* not preloaded: SQL calls work, no worker runs */
		for (int i = 0; i < 12; i++)
			nulls[i] = true;
		values[1] = CStringGetTextDatum("not running: p2p_preheat is not in shared_preload_libraries");
		nulls[1] = false;
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
	}
	SpinLockAcquire(&shared->mutex);
	s = *shared;
	SpinLockRelease(&shared->mutex);

	values[0] = Int32GetDatum(s.pid);
	nulls[0] = s.pid == 0 || strcmp(s.state, "stopped") == 0;
	values[1] = CStringGetTextDatum(s.state);
	values[2] = TimestampTzGetDatum(s.started_at);
	nulls[2] = s.started_at == 0;
	values[3] = TimestampTzGetDatum(s.last_activity);
	nulls[3] = s.last_activity == 0;
	values[4] = Int32GetDatum(s.in_flight);
	values[5] = Int64GetDatum(s.sent);
	values[6] = Int64GetDatum(s.polled);
	values[7] = Int64GetDatum(s.succeeded);
	values[8] = Int64GetDatum(s.failed);
	values[9] = Int64GetDatum(s.retried);
	values[10] = Int64GetDatum(s.wakeups);
	values[11] = DirectFunctionCall1(jsonb_in, CStringGetDatum(s.pace[0] ? s.pace : "[]"));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
