/*
 * enqueue.c
 *		Queueing preheat jobs: preheat() and its set form, preheat_url(), the
 *		checks a policy must pass first (_runnable_policy), the registry's URL
 *		(_registry_url), and _enqueue(), the one place where jobs are created
 *		and deduplicated.
 *
 * Callers queue jobs one call at a time, often in a loop, so a call must
 * cost about what its INSERT costs: the statements are prepared once per
 * backend and kept, Harbor's rows come from harbor.c (whose table checks
 * last until the catalog changes), names are checked by oci_names.c and
 * extra_attrs by ea_check(), all without leaving C.
 *
 * Every statement names its tables with their schema; the SQL entry points
 * pin search_path to pg_catalog, pg_temp, as the plans were prepared under.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "dispatch.h"
#include "extra_attrs.h"
#include "harbor.h"
#include "oci_names.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(p2p_preheat_job_state_is_open);
PG_FUNCTION_INFO_V1(p2p_preheat_enqueue);
PG_FUNCTION_INFO_V1(p2p_preheat_runnable_policy);
PG_FUNCTION_INFO_V1(p2p_preheat_registry_url);
PG_FUNCTION_INFO_V1(p2p_preheat_preheat);
PG_FUNCTION_INFO_V1(p2p_preheat_preheat_set);
PG_FUNCTION_INFO_V1(p2p_preheat_preheat_url);

/* A statement prepared on first use and kept for the backend's life. */
typedef struct KeptPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[4];
	SPIPlanPtr	plan;
} KeptPlan;

/* One URL: insert, unless an identical job is open. */
static KeptPlan insert_one = {
	"INSERT INTO p2p_preheat.job AS j (policy_id, instance_id, url, attrs)"
	" VALUES ($1, $2, $3, $4)"
	" ON CONFLICT (instance_id, url, md5(attrs::text)) WHERE open DO NOTHING"
	" RETURNING j.id",
	4, {INT4OID, INT4OID, TEXTOID, JSONBOID}
};

/*
 * The open identical job that kept the insert from happening (through the
 * identity index, whose URLs are in collation "C").
 */
static KeptPlan find_one = {
	"SELECT j.id FROM p2p_preheat.job j"
	" WHERE j.instance_id = $1 AND j.url COLLATE \"C\" = $2 AND md5(j.attrs::text) = md5($3::text)"
	"   AND j.open",
	3, {INT4OID, TEXTOID, JSONBOID}
};

/* Many URLs in one statement: the jobs it inserted. */
static KeptPlan insert_many = {
	"INSERT INTO p2p_preheat.job AS j (policy_id, instance_id, url, attrs)"
	" SELECT $1, $2, m, $4 FROM unnest($3) m"
	" ON CONFLICT (instance_id, url, md5(attrs::text)) WHERE open DO NOTHING"
	" RETURNING j.url, j.id AS job_id",
	4, {INT4OID, INT4OID, TEXTARRAYOID, JSONBOID}
};

/*
 * The open identical jobs of the URLs the insert skipped (NULL: none any
 * more), each found through the identity index whatever the statistics say.
 */
static KeptPlan find_many = {
	"SELECT m AS url,"
	"       (SELECT j.id FROM p2p_preheat.job j"
	"         WHERE j.instance_id = $1 AND j.url COLLATE \"C\" = m"
	"           AND md5(j.attrs::text) = md5($3::text)"
	"           AND j.open) AS job_id"
	"  FROM unnest($2) m",
	3, {INT4OID, TEXTARRAYOID, JSONBOID}
};

/* The caller's registry token: the newest wins while a job is unsent. */
static KeptPlan store_secret = {
	"INSERT INTO p2p_preheat.job_secret AS s (job_id, headers)"
	" SELECT j.id, $2 FROM p2p_preheat.job j"
	"  WHERE j.id = ANY ($1) AND j.state IN ('queued', 'sending')"
	" ON CONFLICT (job_id) DO UPDATE SET headers = excluded.headers",
	2, {INT8ARRAYOID, JSONBOID}
};

/* Runs a kept plan (SPI connected); returns SPI's result code. */
static int
run_plan(KeptPlan *k, Datum *args, const char *nulls)
{
	int			rc;

	if (k->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(k->sql, k->nargs, k->argtypes);

		if (plan == NULL)
			elog(ERROR, "p2p_preheat: could not prepare \"%s\": %s", k->sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "p2p_preheat: could not keep a query plan");
		k->plan = plan;
	}
	rc = SPI_execute_plan(k->plan, args, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "p2p_preheat: could not run \"%s\": %s", k->sql, SPI_result_code_string(rc));
	return rc;
}

/* Column of the current SPI result, by name. */
static Datum
spi_col(uint64 row, const char *name, bool *isnull)
{
	int			n = SPI_fnumber(SPI_tuptable->tupdesc, name);

	if (n <= 0)
		elog(ERROR, "p2p_preheat: a queueing statement returned no column \"%s\"", name);
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, n, isnull);
}

/* What RAISE shows for a value that may be NULL. */
static const char *
shown(const char *s)
{
	return s ? s : "<NULL>";
}

static const char *
shown_int(bool isnull, int v)
{
	return isnull ? "<NULL>" : psprintf("%d", v);
}

/* job_state_is_open ------------------------------------------------------- */

/*
 * job_state_is_open(state job_state) returns boolean: the engine's own
 * JOB_STATE_IS_OPEN, so SQL and C share one definition.  C, not SQL: the
 * job table's generated column "open" calls it, and every INSERT would
 * otherwise inline and fold a SQL body when it starts (a third of what
 * queueing one job costs).
 */
Datum
p2p_preheat_job_state_is_open(PG_FUNCTION_ARGS)
{
	Oid			label = PG_GETARG_OID(0);
	HeapTuple	tup = SearchSysCache1(ENUMOID, ObjectIdGetDatum(label));
	bool		open;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for enum value %u", label);
	open = JOB_STATE_IS_OPEN(job_state_from_name(NameStr(((Form_pg_enum) GETSTRUCT(tup))->enumlabel)));
	ReleaseSysCache(tup);
	PG_RETURN_BOOL(open);
}

/* _enqueue ---------------------------------------------------------------- */

/* One URL's job (SPI connected): the new one, or the open identical one. */
static int64
enqueue_one(bool policy_null, int32 policy_id, int32 instance_id, text *url, Jsonb *attrs)
{
	Datum		ins_args[4] = {Int32GetDatum(policy_id), Int32GetDatum(instance_id),
		PointerGetDatum(url), PointerGetDatum(attrs)};
	char		ins_nulls[4] = {policy_null ? 'n' : ' ', ' ', ' ', attrs ? ' ' : 'n'};
	Datum		find_args[3] = {Int32GetDatum(instance_id), PointerGetDatum(url),
		PointerGetDatum(attrs)};
	bool		isnull;

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		run_plan(&insert_one, ins_args, ins_nulls);
		if (SPI_processed == 1)
		{
			worker_wake_at_commit();
			return DatumGetInt64(spi_col(0, "id", &isnull));
		}
		run_plan(&find_one, find_args, NULL);
		if (SPI_processed == 1)
			return DatumGetInt64(spi_col(0, "id", &isnull));
		/* the identical job ended in between: queue a new one */
	}
}

/* A distinct URL of a set, and its job once known. */
typedef struct UrlJob
{
	char	   *url;
	int64		job_id;
	bool		known;
} UrlJob;

static int
url_job_cmp(const void *a, const void *b)
{
	return strcmp(((const UrlJob *) a)->url, ((const UrlJob *) b)->url);
}

/* Records the jobs of the current SPI result's rows (url, job_id). */
static void
take_jobs(UrlJob *urls, int n)
{
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		id = spi_col(r, "job_id", &isnull);
		UrlJob		key;
		UrlJob	   *u;

		if (isnull)
			continue;
		key.url = TextDatumGetCString(spi_col(r, "url", &isnull));
		u = bsearch(&key, urls, n, sizeof(UrlJob), url_job_cmp);
		if (u == NULL)
			elog(ERROR, "p2p_preheat: queued a URL that was not asked for");
		u->job_id = DatumGetInt64(id);
		u->known = true;
	}
}

/* The URLs whose job is not known yet, as a text[] datum; NULL if none. */
static ArrayType *
unknown_urls(UrlJob *urls, int n)
{
	Datum	   *missing = palloc(n * sizeof(Datum));
	int			nmissing = 0;

	for (int i = 0; i < n; i++)
		if (!urls[i].known)
			missing[nmissing++] = CStringGetTextDatum(urls[i].url);
	if (nmissing == 0)
		return NULL;
	return construct_array(missing, nmissing, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * The job of each distinct URL (SPI connected): one INSERT for all, then the
 * open identical jobs of the URLs it skipped.  One that ended in between
 * (or was inserted by a transaction that committed while the INSERT ran,
 * and so is neither inserted nor visible to it) is asked again.  urls are
 * sorted and distinct.
 */
static void
enqueue_many(bool policy_null, int32 policy_id, int32 instance_id, UrlJob *urls, int n,
			 Jsonb *attrs)
{
	ArrayType  *missing;

	while ((missing = unknown_urls(urls, n)) != NULL)
	{
		Datum		ins_args[4] = {Int32GetDatum(policy_id), Int32GetDatum(instance_id),
			PointerGetDatum(missing), PointerGetDatum(attrs)};
		char		ins_nulls[4] = {policy_null ? 'n' : ' ', ' ', ' ', attrs ? ' ' : 'n'};
		Datum		find_args[3] = {Int32GetDatum(instance_id), (Datum) 0, PointerGetDatum(attrs)};

		CHECK_FOR_INTERRUPTS();
		run_plan(&insert_many, ins_args, ins_nulls);
		if (SPI_processed > 0)
			worker_wake_at_commit();
		take_jobs(urls, n);
		if ((missing = unknown_urls(urls, n)) == NULL)
			break;
		find_args[1] = PointerGetDatum(missing);
		run_plan(&find_many, find_args, NULL);
		take_jobs(urls, n);
	}
}

/* Sorts and deduplicates urls in place; returns how many distinct remain. */
static int
distinct_urls(UrlJob *urls, int n)
{
	int			d = 0;

	if (n == 0)
		return 0;
	qsort(urls, n, sizeof(UrlJob), url_job_cmp);
	for (int i = 1; i < n; i++)
		if (strcmp(urls[i].url, urls[d].url) != 0)
			urls[++d] = urls[i];
	return d + 1;
}

/* The job of url among distinct sorted urls. */
static int64
job_of(UrlJob *urls, int n, char *url)
{
	UrlJob		key = {.url = url};
	UrlJob	   *u = bsearch(&key, urls, n, sizeof(UrlJob), url_job_cmp);

	if (u == NULL || !u->known)
		elog(ERROR, "p2p_preheat: no job for a URL that was queued");
	return u->job_id;
}

/*
 * _enqueue(policy_id, instance_id, urls text[], attrs jsonb)
 *		returns setof (url text, job_id bigint)
 *
 * One job per distinct URL (NULLs skipped) for the instance and arguments,
 * or the open identical job; one row per distinct URL.
 */
Datum
p2p_preheat_enqueue(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		policy_null = PG_ARGISNULL(0);
	int32		policy_id = policy_null ? 0 : PG_GETARG_INT32(0);
	int32		instance_id = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	Jsonb	   *attrs = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	MemoryContext caller = CurrentMemoryContext;
	Datum	   *elems = NULL;
	bool	   *elem_nulls = NULL;
	int			nelems = 0;
	UrlJob	   *urls;
	int			n = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (!PG_ARGISNULL(2))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elem_nulls, &nelems);
	urls = palloc0(Max(nelems, 1) * sizeof(UrlJob));
	for (int i = 0; i < nelems; i++)
		if (!elem_nulls[i])
			urls[n++].url = TextDatumGetCString(elems[i]);
	if (n == 0)
		return (Datum) 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* a job without an instance: the table's own NOT NULL refuses it */
	if (PG_ARGISNULL(1))
	{
		Datum		args[4] = {Int32GetDatum(policy_id), (Datum) 0,
			CStringGetTextDatum(urls[0].url), PointerGetDatum(attrs)};
		char		nulls[4] = {policy_null ? 'n' : ' ', 'n', ' ', attrs ? ' ' : 'n'};

		run_plan(&insert_one, args, nulls);
		elog(ERROR, "p2p_preheat: a job without an instance was queued");
	}
	if (n == 1)
	{
		urls[0].job_id = enqueue_one(policy_null, policy_id, instance_id,
									 cstring_to_text(urls[0].url), attrs);
		urls[0].known = true;
	}
	else
	{
		n = distinct_urls(urls, n);
		enqueue_many(policy_null, policy_id, instance_id, urls, n, attrs);
	}

	/* rows in the order the URLs came, each once */
	{
		MemoryContext old = MemoryContextSwitchTo(caller);

		for (int i = 0; i < nelems; i++)
		{
			char	   *url;
			UrlJob		key;
			UrlJob	   *u;

			if (elem_nulls[i])
				continue;
			url = TextDatumGetCString(elems[i]);
			key.url = url;
			u = bsearch(&key, urls, n, sizeof(UrlJob), url_job_cmp);
			if (u == NULL || !u->known)
				elog(ERROR, "p2p_preheat: no job for a URL that was queued");
			if (u->job_id < 0)
				continue;		/* already returned */
			{
				Datum		values[2] = {CStringGetTextDatum(url), Int64GetDatum(u->job_id)};
				bool		nulls[2] = {false, false};

				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			}
			u->job_id = -1;
		}
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return (Datum) 0;
}

/* _runnable_policy -------------------------------------------------------- */

/*
 * The policy a run or a preheat may use, with its project and instance, or
 * the reason it may not (SPI connected).  The one place these checks live.
 */
static HarborPolicy *
runnable_policy(bool isnull, int32 policy_id)
{
	HarborPolicy *pol = isnull ? NULL : harbor_policy(policy_id);

	if (pol == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("preheat policy %s does not exist", shown_int(isnull, policy_id))));
	if (pol->project == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("the project of preheat policy \"%s\" (id %s) does not exist",
						shown(pol->name), shown_int(isnull, policy_id))));
	if (pol->enabled_null || !pol->enabled)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("preheat policy \"%s\" (id %s) is disabled", shown(pol->name),
						shown_int(isnull, policy_id)),
				 errhint("Enable the policy in Harbor first.")));
	if (!pol->instance_found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("preheat policy \"%s\" (id %s) uses preheat instance %s, which does not exist",
						shown(pol->name), shown_int(isnull, policy_id),
						shown_int(pol->provider_id_null, pol->provider_id))));
	if (!pol->instance_enabled_null && !pol->instance_enabled)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("preheat policy \"%s\" (id %s) uses preheat instance %s, which is disabled",
						shown(pol->name), shown_int(isnull, policy_id),
						shown_int(pol->provider_id_null, pol->provider_id)),
				 errhint("Enable the instance in Harbor first.")));
	return pol;
}

/* _runnable_policy(policy_id) returns p2p_preheat.harbor_policy */
Datum
p2p_preheat_runnable_policy(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	TupleDesc	desc;
	HarborPolicy *pol;
	Datum	   *values;
	bool	   *nulls;
	HeapTuple	tup;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "function returning a row called in a context that cannot accept one");
	desc = BlessTupleDesc(desc);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	pol = runnable_policy(PG_ARGISNULL(0), PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0));

	/* the row type's columns, by name */
	values = palloc(desc->natts * sizeof(Datum));
	nulls = palloc(desc->natts * sizeof(bool));
	for (int i = 0; i < desc->natts; i++)
	{
		const char *col = NameStr(TupleDescAttr(desc, i)->attname);
		const char *s = NULL;
		bool		is_text = false;

		nulls[i] = false;
		if (TupleDescAttr(desc, i)->attisdropped)
		{
			nulls[i] = true;
			continue;
		}
		if (strcmp(col, "id") == 0)
			values[i] = Int32GetDatum(pol->id);
		else if (strcmp(col, "project_id") == 0)
			values[i] = Int32GetDatum(pol->project_id), nulls[i] = pol->project_id_null;
		else if (strcmp(col, "provider_id") == 0)
			values[i] = Int32GetDatum(pol->provider_id), nulls[i] = pol->provider_id_null;
		else if (strcmp(col, "enabled") == 0)
			values[i] = BoolGetDatum(pol->enabled), nulls[i] = pol->enabled_null;
		else if (strcmp(col, "instance_found") == 0)
			values[i] = BoolGetDatum(pol->instance_found);
		else if (strcmp(col, "instance_enabled") == 0)
			values[i] = BoolGetDatum(pol->instance_enabled), nulls[i] = pol->instance_enabled_null;
		else if (strcmp(col, "name") == 0)
			s = pol->name, is_text = true;
		else if (strcmp(col, "project") == 0)
			s = pol->project, is_text = true;
		else if (strcmp(col, "filters") == 0)
			s = pol->filters, is_text = true;
		else if (strcmp(col, "trigger") == 0)
			s = pol->trigger, is_text = true;
		else if (strcmp(col, "extra_attrs") == 0)
			s = pol->extra_attrs, is_text = true;
		else if (strcmp(col, "vendor") == 0)
			s = pol->vendor, is_text = true;
		else
			elog(ERROR, "p2p_preheat: harbor_policy has an unknown column \"%s\"", col);
		if (is_text)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			nulls[i] = s == NULL;
			values[i] = s ? CStringGetTextDatum(s) : (Datum) 0;
			MemoryContextSwitchTo(old);
		}
	}
	{
		MemoryContext old = MemoryContextSwitchTo(caller);

		tup = heap_form_tuple(desc, values, nulls);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(tup));
}

/* _registry_url ------------------------------------------------------------ */

/* p2p_preheat.registry_url without its trailing slashes, or why it is missing. */
static char *
registry_url(void)
{
	char	   *r = pstrdup(dispatch_registry_url ? dispatch_registry_url : "");
	size_t		len = strlen(r);

	while (len > 0 && r[len - 1] == '/')
		r[--len] = '\0';
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("p2p_preheat.registry_url is not set"),
				 errhint("A superuser sets it to Harbor's external URL: ALTER SYSTEM SET p2p_preheat.registry_url = 'https://harbor.example.com'.")));
	return r;
}

Datum
p2p_preheat_registry_url(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(registry_url()));
}

/* preheat() and preheat_url() --------------------------------------------- */

/*
 * The last extra_attrs that passed, with what ea_check() read to pass them
 * (the vendor, the document and the two settings it obeys), and their
 * normalized form: a loop queues the same policy's attributes every call.
 */
static struct
{
	MemoryContext cxt;
	bool		valid;
	char	   *vendor;			/* NULL for none */
	char	   *doc;
	int			len;
	bool		allow_unknown;
	int			max_size_kb;
	Jsonb	   *normalized;
} last_attrs;

/* extra_attrs as they will be sent, or the validation's error. */
static Jsonb *
validated_attrs(const char *vendor, const char *doc, int len)
{
	Jsonb	   *normalized;
	List	   *problems;

	if (doc == NULL)
		doc = "", len = 0;
	if (last_attrs.valid && last_attrs.len == len &&
		last_attrs.allow_unknown == ea_allow_unknown_attrs &&
		last_attrs.max_size_kb == ea_max_size_kb &&
		(vendor == NULL ? last_attrs.vendor == NULL :
		 last_attrs.vendor != NULL && strcmp(vendor, last_attrs.vendor) == 0) &&
		memcmp(doc, last_attrs.doc, len) == 0)
		return last_attrs.normalized;
	problems = ea_check(vendor, doc, len, false, &normalized);
	if (problems != NIL)
		ea_report(linitial(problems), list_length(problems), NULL);

	if (last_attrs.cxt == NULL)
		last_attrs.cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat extra_attrs",
											   ALLOCSET_SMALL_SIZES);
	last_attrs.valid = false;
	MemoryContextReset(last_attrs.cxt);
	last_attrs.vendor = vendor ? MemoryContextStrdup(last_attrs.cxt, vendor) : NULL;
	last_attrs.doc = MemoryContextAlloc(last_attrs.cxt, len + 1);
	memcpy(last_attrs.doc, doc, len);
	last_attrs.doc[len] = '\0';
	last_attrs.len = len;
	last_attrs.allow_unknown = ea_allow_unknown_attrs;
	last_attrs.max_size_kb = ea_max_size_kb;
	last_attrs.normalized = MemoryContextAlloc(last_attrs.cxt, VARSIZE(normalized));
	memcpy(last_attrs.normalized, normalized, VARSIZE(normalized));
	last_attrs.valid = true;
	return normalized;
}

/* Refuses headers that are not a JSON object of strings. */
static void
check_headers(Jsonb *headers)
{
	bool		ok = JB_ROOT_IS_OBJECT(headers);

	if (ok)
	{
		JsonbIterator *it = JsonbIteratorInit(&headers->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while (ok && (tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_VALUE && v.type != jbvString)
				ok = false;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object of strings"),
				 errhint("Pass {\"Authorization\": \"Bearer <registry token>\"}.")));
}

/* Keeps the caller's headers with each job not yet sent (SPI connected). */
static void
store_headers(int64 *ids, int n, Jsonb *headers)
{
	Datum	   *elems = palloc(n * sizeof(Datum));
	Datum		args[2];

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	args[0] = PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(headers);
	run_plan(&store_secret, args, NULL);
}

/*
 * Harbor names repositories "<project>/<repo>"; preheat() accepts either
 * form.  The project must be the whole first segment.
 */
static char *
project_repository(const char *project, const char *repository)
{
	size_t		plen = strlen(project);

	if (strncmp(repository, project, plen) == 0 && repository[plen] == '/')
		return pstrdup(repository);
	return psprintf("%s/%s", project, repository);
}

static char *
manifest_url(const char *registry, const char *repo, const char *reference)
{
	return psprintf("%s/v2/%s/manifests/%s", registry, repo, reference);
}

/* preheat(policy_id, repository, reference, headers) returns bigint */
Datum
p2p_preheat_preheat(PG_FUNCTION_ARGS)
{
	Jsonb	   *headers = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	HarborPolicy *pol;
	char	   *repository;
	char	   *reference;
	char	   *repo;
	char	   *url;
	Jsonb	   *attrs;
	int64		jid;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	pol = runnable_policy(PG_ARGISNULL(0), PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0));
	if (headers)
		check_headers(headers);
	repository = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	reference = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (repository == NULL || reference == NULL || repository[0] == '\0' || reference[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("repository and reference must not be empty")));
	repo = project_repository(pol->project, repository);
	p2p_check_image_name(repo, reference);
	url = manifest_url(registry_url(), repo, reference);
	attrs = validated_attrs(pol->vendor, pol->extra_attrs,
							pol->extra_attrs ? strlen(pol->extra_attrs) : 0);
	jid = enqueue_one(false, pol->id, pol->provider_id, cstring_to_text(url), attrs);
	if (headers && JB_ROOT_COUNT(headers) > 0)
		store_headers(&jid, 1, headers);
	SPI_finish();
	PG_RETURN_INT64(jid);
}

/* Names the element of preheat()'s arrays that an error is about. */
static void
element_context(void *arg)
{
	int		   *i = arg;

	if (*i > 0)
		errcontext("element %d of repositories and references", *i);
}

/* A text[] argument as C strings (NULL elements stay NULL). */
static char **
text_elements(FunctionCallInfo fcinfo, int argno, const char *name, int *n)
{
	ArrayType  *a;
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name),
				 errhint("Pass an array, empty to queue nothing.")));
	a = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array, not one of %d dimensions",
						name, ARR_NDIM(a)),
				 errhint("Pass one repository and one reference per image, in two arrays of the same length.")));
	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	out = palloc0(Max(*n, 1) * sizeof(char *));
	for (int i = 0; i < *n; i++)
		if (!nulls[i])
			out[i] = TextDatumGetCString(elems[i]);
	return out;
}

/*
 * preheat(policy_id, repositories text[], references text[], headers)
 *		returns setof bigint
 *
 * preheat() for many images of one policy: the same checks, then one INSERT
 * for every job.  One job id per element, in the order given; an image
 * named twice gets the same job.
 */
Datum
p2p_preheat_preheat_set(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Jsonb	   *headers = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	MemoryContext per_query;
	HarborPolicy *pol;
	char	  **repositories;
	char	  **references;
	char	  **elem_urls;
	int			nrepos;
	int			nrefs;
	int			current = 0;
	ErrorContextCallback errctx;
	UrlJob	   *urls;
	int			n;
	int64	   *ids;
	TupleDesc	desc;
	Tuplestorestate *store;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	pol = runnable_policy(PG_ARGISNULL(0), PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0));
	if (headers)
		check_headers(headers);
	repositories = text_elements(fcinfo, 1, "repositories", &nrepos);
	references = text_elements(fcinfo, 2, "references", &nrefs);
	if (nrepos != nrefs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("repositories and references must have the same length"),
				 errdetail("repositories has %d %s, references has %d.", nrepos,
						   nrepos == 1 ? "element" : "elements", nrefs),
				 errhint("Pass one reference per repository: the image repositories[i]:references[i] is queued for each i.")));

	errctx.callback = element_context;
	errctx.arg = &current;
	errctx.previous = error_context_stack;
	error_context_stack = &errctx;
	elem_urls = palloc0(Max(nrepos, 1) * sizeof(char *));
	urls = palloc0(Max(nrepos, 1) * sizeof(UrlJob));
	for (int i = 0; i < nrepos; i++)
	{
		char	   *repo;

		current = i + 1;
		if (repositories[i] == NULL || references[i] == NULL ||
			repositories[i][0] == '\0' || references[i][0] == '\0')
		{
			bool		repo_missing = repositories[i] == NULL || repositories[i][0] == '\0';
			const char *value = repo_missing ? repositories[i] : references[i];

			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("repository and reference must not be empty"),
					 errdetail("The %s is %s.", repo_missing ? "repository" : "reference",
							   value == NULL ? "NULL" : "empty"),
					 errhint("Name an image in every element: a repository and a tag or digest.")));
		}
		repo = project_repository(pol->project, repositories[i]);
		p2p_check_image_name(repo, references[i]);
		elem_urls[i] = repo;	/* the URL once the registry's URL is known */
	}
	current = 0;
	if (nrepos > 0)
	{
		char	   *registry = registry_url();
		Jsonb	   *attrs = validated_attrs(pol->vendor, pol->extra_attrs,
											pol->extra_attrs ? strlen(pol->extra_attrs) : 0);

		for (int i = 0; i < nrepos; i++)
			urls[i].url = elem_urls[i] = manifest_url(registry, elem_urls[i], references[i]);
		n = distinct_urls(urls, nrepos);
		enqueue_many(false, pol->id, pol->provider_id, urls, n, attrs);
		if (headers && JB_ROOT_COUNT(headers) > 0)
		{
			ids = palloc(n * sizeof(int64));
			for (int i = 0; i < n; i++)
				ids[i] = urls[i].job_id;
			store_headers(ids, n, headers);
		}
	}
	else
		n = 0;
	error_context_stack = errctx.previous;

	per_query = rsinfo->econtext->ecxt_per_query_memory;
	{
		MemoryContext old = MemoryContextSwitchTo(per_query);

		desc = CreateTemplateTupleDesc(1);
		TupleDescInitEntry(desc, (AttrNumber) 1, "preheat", INT8OID, -1, 0);
		store = tuplestore_begin_heap(rsinfo->allowedModes & SFRM_Materialize_Random, false, work_mem);
		MemoryContextSwitchTo(old);
	}
	for (int i = 0; i < nrepos; i++)
	{
		Datum		value = Int64GetDatum(job_of(urls, n, elem_urls[i]));
		bool		isnull = false;

		tuplestore_putvalues(store, desc, &value, &isnull);
	}
	SPI_finish();
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = desc;
	return (Datum) 0;
}

/* preheat_url(instance_id, url, extra_attrs) returns bigint */
Datum
p2p_preheat_preheat_url(PG_FUNCTION_ARGS)
{
	HarborInstanceInfo *inst;
	text	   *url;
	char	   *doc;
	Jsonb	   *attrs;
	int64		jid;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	inst = PG_ARGISNULL(0) ? NULL : harbor_instance(PG_GETARG_INT32(0));
	if (inst == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("preheat instance %s does not exist",
						shown_int(PG_ARGISNULL(0), PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0)))));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("url must not be NULL")));
	url = PG_GETARG_TEXT_PP(1);
	p2p_check_manifest_url(text_to_cstring(url));
	doc = PG_ARGISNULL(2) ? "{}" : JsonbToCString(NULL, &PG_GETARG_JSONB_P(2)->root, VARSIZE(PG_GETARG_JSONB_P(2)));
	attrs = validated_attrs(inst->vendor, doc, strlen(doc));
	jid = enqueue_one(true, 0, PG_GETARG_INT32(0), url, attrs);
	SPI_finish();
	PG_RETURN_INT64(jid);
}
