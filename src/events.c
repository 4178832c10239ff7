/*
 * events.c
 *		One of Harbor's events (push, label added, scan completed) matched
 *		against the project's event-based policies.
 *
 * Every push, label and scan in Harbor's database runs this, usually to find
 * that no policy matches: so the artifact is read once, the policies as
 * parsed when saved (p2p_preheat.event_policy) are matched here with the
 * patterns compiled once per backend, and SQL is entered again only for a
 * policy that queues something (p2p_preheat._event_queue) or that cannot
 * run.  Harbor's rules are those of sql/60_events.sql's header.  Nothing
 * raised here reaches Harbor's write: a subtransaction catches it, and it
 * becomes a row of p2p_preheat.event_error.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "doublestar.h"
#include "harbor.h"

PG_FUNCTION_INFO_V1(p2p_preheat_on_artifact_event);

/* Plans kept for the life of the backend. */
static SPIPlanPtr queue_plan = NULL;
static SPIPlanPtr problem_plan = NULL;

/* What a policy without filters of its own or of its project gets told. */
#define NO_FILTERS "it has no filters to apply (Harbor refuses to run a policy without filters)"

/* An event as the trigger reported it. */
typedef struct Event
{
	const char *kind;			/* push, label or scan */
	int32		artifact;
	char	   *pushed_tag;		/* NULL unless a push */
	bool		has_repository;
	int32		repository_id;
} Event;

/* A list of patterns; NULL entries stand for SQL NULL and never refuse. */
typedef struct Patterns
{
	char	  **p;
	int			n;
} Patterns;

static AttrNumber
attnum(Relation rel, const char *name)
{
	AttrNumber	n = attnameAttNum(rel, name, false);

	if (n == InvalidAttrNumber)
		elog(ERROR, "p2p_preheat.event_policy has no column \"%s\"", name);
	return n;
}

/* A row of p2p_preheat.event_policy. */
typedef struct EventPolicy
{
	int32		policy_id;
	int32		provider_id;
	char	   *vendor;
	Datum		attrs;			/* jsonb */
	bool		attrs_null;
	char	   *problem;
	int32		own_filters;
	Datum		labels;			/* text[] */
	bool		labels_null;
	char	   *repo_pattern;
	char	   *tag_pattern;
	Jsonb	   *more;
} EventPolicy;

/* p2p_preheat.event_policy, opened with its project index, or with none. */
static Relation
open_event_policy(Relation *index)
{
	Oid			nsp = get_namespace_oid("p2p_preheat", false);
	Oid			relid = get_relname_relid("event_policy", nsp);
	Oid			indexid = get_relname_relid("event_policy_project", nsp);
	Relation	rel;

	if (!OidIsValid(relid) || (index && !OidIsValid(indexid)))
		elog(ERROR, "p2p_preheat.event_policy or its index event_policy_project is missing");
	rel = table_open(relid, AccessShareLock);
	if (index)
		*index = index_open(indexid, AccessShareLock);
	return rel;
}

/* Whether any event-based policy is enabled at all. */
static bool
any_event_policy(void)
{
	Relation	rel = open_event_policy(NULL);
	TableScanDesc scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	bool		any = heap_getnext(scan, ForwardScanDirection) != NULL;

	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return any;
}

static int
by_policy_id(const void *a, const void *b)
{
	int32		x = ((const EventPolicy *) a)->policy_id;
	int32		y = ((const EventPolicy *) b)->policy_id;

	return (x > y) - (x < y);
}

static char *
text_attr(Datum *values, bool *nulls, AttrNumber att)
{
	return nulls[att - 1] ? NULL : TextDatumGetCString(values[att - 1]);
}

/*
 * The policies of a project, ordered by id, read through the project index
 * with the statement's snapshot (the table is ours: no query, no plan).
 */
static EventPolicy *
project_policies(int32 project_id, int *n)
{
	Relation	index;
	Relation	rel = open_event_policy(&index);
	TupleDesc	desc = RelationGetDescr(rel);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int			size = 16;
	EventPolicy *out = palloc(size * sizeof(EventPolicy));
	Datum	   *values = palloc(desc->natts * sizeof(Datum));
	bool	   *nulls = palloc(desc->natts * sizeof(bool));
	AttrNumber	a_policy = attnum(rel, "policy_id"),
				a_provider = attnum(rel, "provider_id"),
				a_vendor = attnum(rel, "vendor"),
				a_attrs = attnum(rel, "attrs"),
				a_problem = attnum(rel, "problem"),
				a_own = attnum(rel, "own_filters"),
				a_labels = attnum(rel, "labels"),
				a_repo = attnum(rel, "repo_pattern"),
				a_tag = attnum(rel, "tag_pattern"),
				a_more = attnum(rel, "more_patterns");

	*n = 0;
	/* (a heap attribute number: the scan maps it onto the index) */
	ScanKeyInit(&key, attnum(rel, "project_id"), BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(project_id));
	scan = systable_beginscan_ordered(rel, index, GetActiveSnapshot(), 1, &key);
	while ((tup = systable_getnext_ordered(scan, ForwardScanDirection)) != NULL)
	{
		EventPolicy *ep;

		if (*n == size)
		{
			size *= 2;
			out = repalloc(out, size * sizeof(EventPolicy));
		}
		ep = &out[(*n)++];
		heap_deform_tuple(tup, desc, values, nulls);
		ep->policy_id = DatumGetInt32(values[a_policy - 1]);
		ep->provider_id = DatumGetInt32(values[a_provider - 1]);
		ep->vendor = text_attr(values, nulls, a_vendor);
		ep->attrs_null = nulls[a_attrs - 1];
		ep->attrs = ep->attrs_null ? (Datum) 0 :
			PointerGetDatum(DatumGetJsonbPCopy(values[a_attrs - 1]));
		ep->problem = text_attr(values, nulls, a_problem);
		ep->own_filters = DatumGetInt32(values[a_own - 1]);
		ep->labels_null = nulls[a_labels - 1];
		ep->labels = ep->labels_null ? (Datum) 0 :
			PointerGetDatum(DatumGetArrayTypePCopy(values[a_labels - 1]));
		ep->repo_pattern = text_attr(values, nulls, a_repo);
		ep->tag_pattern = text_attr(values, nulls, a_tag);
		ep->more = nulls[a_more - 1] ? NULL : DatumGetJsonbPCopy(values[a_more - 1]);
	}
	systable_endscan_ordered(scan);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	qsort(out, *n, sizeof(EventPolicy), by_policy_id);
	return out;
}

static SPIPlanPtr
kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "could not keep a query plan");
		*plan = p;
	}
	return *plan;
}

/* p2p_preheat.run_policies = database, as _database_runs_policies() reads it. */
static bool
database_runs_policies(void)
{
	const char *v = GetConfigOption("p2p_preheat.run_policies", true, false);

	return v == NULL || strcmp(v, "database") == 0;
}

static Datum
text_or_null(const char *s, char *null)
{
	*null = s ? ' ' : 'n';
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* A row of event_error. */
static void
record_error(const Event *ev, bool has_policy, int32 policy_id, const char *sqlstate,
			 const char *error)
{
	Oid			types[6] = {INT4OID, INT4OID, INT4OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = Int32GetDatum(policy_id);
	nulls[0] = has_policy ? ' ' : 'n';
	args[1] = Int32GetDatum(ev->repository_id);
	nulls[1] = ev->has_repository ? ' ' : 'n';
	args[2] = Int32GetDatum(ev->artifact);
	args[3] = text_or_null(ev->pushed_tag, &nulls[3]);
	args[4] = CStringGetTextDatum(sqlstate);
	args[5] = CStringGetTextDatum(error);
	if (SPI_execute_plan(kept_plan(&problem_plan,
								   "INSERT INTO p2p_preheat.event_error (policy_id, repository_id, artifact_id, tag, sqlstate, error)"
								   " VALUES ($1, $2, $3, $4, $5, $6)", 6, types),
						 args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record an event error");
}

/* The patterns under key of more_patterns ({"repository": [...], "tag": [...]}). */
static Patterns
more_patterns(Jsonb *more, const char *key)
{
	Patterns	out = {NULL, 0};
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	int			size = 0;

	if (more == NULL || !JB_ROOT_IS_OBJECT(more) ||
		getKeyJsonValueFromContainer(&more->root, key, strlen(key), &v) == NULL ||
		v.type == jbvNull)
		return out;
	if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
		elog(ERROR, "p2p_preheat.event_policy.more_patterns->'%s' is not an array", key);
	size = JsonContainerSize(v.val.binary.data);
	out.p = palloc0((size + 1) * sizeof(char *));
	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (v.type == jbvString)
			out.p[out.n++] = pnstrdup(v.val.string.val, v.val.string.len);
		else if (v.type == jbvNull)
			out.p[out.n++] = NULL;
		else
			elog(ERROR, "p2p_preheat.event_policy.more_patterns->'%s' holds a pattern that is not a string", key);
	}
	return out;
}

/*
 * Whether name passes one filter and its further patterns, as the SQL that
 * matched them before read: a NULL name fails a first pattern (WHERE NULL)
 * but no further one (bool_and(NULL) IS NOT FALSE).
 */
static bool
passes(const char *first, const Patterns *more, const char *name)
{
	if (first != NULL && (name == NULL || !doublestar_matches(first, name, strlen(name))))
		return false;
	if (name == NULL)
		return true;
	for (int i = 0; i < more->n; i++)
		if (more->p[i] != NULL && !doublestar_matches(more->p[i], name, strlen(name)))
			return false;
	return true;
}

/*
 * Every label of the policy (a text[]) is one of the artifact's, whose
 * labels are read the first time a policy names one.
 */
static bool
has_labels(Datum policy_labels, HarborArtifact *a)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(DatumGetArrayTypeP(policy_labels), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *label;
		bool		found = false;

		if (nulls[i])
			return false;
		if (!a->labels_read)
			harbor_artifact_labels(a);
		label = TextDatumGetCString(elems[i]);
		for (int j = 0; j < a->nlabels && !found; j++)
			found = strcmp(label, a->labels[j]) == 0;
		if (!found)
			return false;
	}
	return true;
}

/* substr(repository, length(project) + 2): the repository within its project. */
static const char *
path_in_project(const HarborArtifact *a)
{
	const char *p = a->repository;
	int			skip = pg_mbstrlen(a->project) + 1;

	while (skip-- > 0 && *p)
		p += pg_mblen(p);
	return p;
}

static Datum
strings_to_array(char **s, int n)
{
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));
	bool	   *nulls = palloc(Max(n, 1) * sizeof(bool));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = s[i] == NULL;
		elems[i] = s[i] ? CStringGetTextDatum(s[i]) : (Datum) 0;
	}
	if (n == 0)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false,
											  TYPALIGN_INT));
}

/* Queues what one matching policy asks for (p2p_preheat._event_queue). */
static void
queue(const Event *ev, const HarborArtifact *a, const EventPolicy *ep, char **tags, int ntags)
{
	Oid			types[15] = {TEXTOID, INT4OID, TEXTOID, INT4OID, INT4OID, INT4OID, TEXTOID, JSONBOID,
		TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, BOOLOID, TEXTOID};
	Datum		args[15];
	char		nulls[15];

	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(ev->kind);
	args[1] = Int32GetDatum(ev->artifact);
	args[2] = text_or_null(ev->pushed_tag, &nulls[2]);
	args[3] = Int32GetDatum(ev->repository_id);
	nulls[3] = ev->has_repository ? ' ' : 'n';
	args[4] = Int32GetDatum(ep->policy_id);
	args[5] = Int32GetDatum(ep->provider_id);
	args[6] = text_or_null(ep->vendor, &nulls[6]);
	args[7] = ep->attrs;
	nulls[7] = ep->attrs_null ? 'n' : ' ';
	args[8] = strings_to_array(tags, ntags);
	args[9] = text_or_null(a->repository, &nulls[9]);
	args[10] = text_or_null(a->project, &nulls[10]);
	args[11] = text_or_null(a->digest, &nulls[11]);
	args[12] = BoolGetDatum(a->content_trust);
	args[13] = BoolGetDatum(a->prevent_vul);
	args[14] = text_or_null(a->severity, &nulls[14]);
	if (SPI_execute_plan(kept_plan(&queue_plan,
								   "SELECT p2p_preheat._event_queue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
								   15, types),
						 args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not queue the preheats of an event");
}

/* Harbor's number for a severity name: p2p_preheat._severity_code(). */
static int
severity_code(const char *severity)
{
	Oid			type = TEXTOID;
	Datum		arg = CStringGetTextDatum(severity);
	bool		isnull;
	Datum		d;

	if (SPI_execute_with_args("SELECT p2p_preheat._severity_code($1)", 1, &type, &arg, NULL,
							  true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read a severity code");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 99 : DatumGetInt32(d);
}

static void
handle_event(const Event *ev)
{
	HarborArtifact a;
	bool		push = strcmp(ev->kind, "push") == 0;
	char	   *pushed[1] = {ev->pushed_tag};
	char	  **tags;
	int			ntags;
	const char *path;
	bool		has_below = false;
	int			below = 0;
	int			security_filters;
	bool		blocked;
	EventPolicy *policies;
	int			npolicies;

	if (!harbor_event_artifact(ev->artifact, !push, &a))
		return;
	/*
	 * Harbor preheats pushed and labelled images only, and a scanned artifact
	 * of a type it can preheat (IMAGE, CNAI)
	 */
	if (push || strcmp(ev->kind, "label") == 0)
	{
		if (a.type == NULL || strcmp(a.type, "IMAGE") != 0)
			return;
	}
	else if (a.type != NULL && strcmp(a.type, "IMAGE") != 0 && strcmp(a.type, "CNAI") != 0)
		return;
	if (push)
	{
		tags = pushed;
		ntags = 1;
	}
	else
	{
		tags = a.tags;
		ntags = a.ntags;
	}
	path = path_in_project(&a);

	/*
	 * The filters the project's settings add: Harbor's signature filter
	 * passes nothing; its vulnerability filter passes only artifacts below
	 * the project's severity.
	 */
	if (a.prevent_vul && a.severity != NULL && a.severity[0] != '\0')
	{
		has_below = true;
		below = severity_code(a.severity);
	}
	security_filters = (a.content_trust ? 1 : 0) + (has_below ? 1 : 0);
	blocked = a.content_trust || (has_below && harbor_artifact_severity(a.artifact_id) >= below);

	/* every policy of the project, in order */
	policies = project_policies(a.project_id, &npolicies);
	for (int r = 0; r < npolicies; r++)
	{
		EventPolicy *ep = &policies[r];
		const char *problem = ep->problem;
		Patterns	more_repo;
		Patterns	more_tag;
		char	  **passed;
		int			npassed = 0;

		if (problem == NULL && ep->own_filters + security_filters == 0)
			problem = NO_FILTERS;
		if (problem != NULL)
		{
			record_error(ev, true, ep->policy_id, "22023",
						 psprintf("%s event skipped for this policy: %s", ev->kind, problem));
			continue;
		}
		if (blocked || ep->labels_null || !has_labels(ep->labels, &a))
			continue;
		more_repo = more_patterns(ep->more, "repository");
		if (!passes(ep->repo_pattern, &more_repo, path))
			continue;
		more_tag = more_patterns(ep->more, "tag");
		passed = palloc(Max(ntags, 1) * sizeof(char *));
		for (int i = 0; i < ntags; i++)
			if (passes(ep->tag_pattern, &more_tag, tags[i]))
				passed[npassed++] = tags[i];
		if (npassed == 0)
			continue;			/* no tag passes the tag filters */
		queue(ev, &a, ep, passed, npassed);
	}
}

/*
 * _on_artifact_event(kind text, artifact integer, pushed_tag text,
 * repository_id integer) returns void: what Harbor's enforcer queues for one
 * event on one artifact.
 */
Datum
p2p_preheat_on_artifact_event(PG_FUNCTION_ARGS)
{
	Event		ev;
	MemoryContext cxt;
	ResourceOwner owner = CurrentResourceOwner;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || !database_runs_policies())
		PG_RETURN_VOID();
	ev.kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ev.artifact = PG_GETARG_INT32(1);
	ev.pushed_tag = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	ev.has_repository = !PG_ARGISNULL(3);
	ev.repository_id = ev.has_repository ? PG_GETARG_INT32(3) : 0;

	/* no event-based policy at all: nothing to read */
	if (!any_event_policy())
		PG_RETURN_VOID();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	cxt = CurrentMemoryContext;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		handle_event(&ev);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		record_error(&ev, false, 0, unpack_sql_state(edata->sqlerrcode),
					 psprintf("%s event: %s", ev.kind, edata->message));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_VOID();
}
