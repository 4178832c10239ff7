/*
 * dispatch_sql.c
 *		preheat_dispatch(): the dispatch engine as a SQL function, for Harbor
 *		and pg_cron.  Claim, HTTP (the lookups of maybe-sent jobs too) and
 *		record all run in the caller's transaction, which holds the claimed
 *		rows' locks meanwhile; row locks keep concurrent callers apart.  The
 *		background worker keeps HTTP outside transactions.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"

#include "dispatch.h"

PG_FUNCTION_INFO_V1(p2p_preheat_dispatch);

Datum
p2p_preheat_dispatch(PG_FUNCTION_ARGS)
{
	int			max_jobs = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	DispatchCounts c = {0};
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	List	   *jobs;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "preheat_dispatch() must return a record");
	if (max_jobs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must not be negative, not %d", max_jobs)));

	/* one transaction: its row locks are the claim, no lease to write */
	jobs = dispatch_claim(max_jobs, false);
	dispatch_run(jobs);
	dispatch_record(jobs, &c);

	values[0] = Int64GetDatum(c.sent);
	values[1] = Int64GetDatum(c.polled);
	values[2] = Int64GetDatum(c.succeeded);
	values[3] = Int64GetDatum(c.failed);
	values[4] = Int64GetDatum(c.retried);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
