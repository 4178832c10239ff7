/*
 * policy_trigger.c
 *		The BEFORE INSERT OR UPDATE trigger that guards extra_attrs on Harbor's
 *		p2p_preheat_policy table, whichever client writes it.
 *
 * The trigger has no column list (UPDATE OF would make Harbor's own
 * migrations of the column fail on the dependency); instead it skips rows
 * whose extra_attrs and provider_id did not change.  The provider's vendor is
 * looked up once per statement and provider, so bulk updates stay cheap.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "compat.h"
#include "extra_attrs.h"

PG_FUNCTION_INFO_V1(p2p_preheat_policy_trigger);

#define VENDOR_CACHE_SIZE 16

/* Vendors seen by the current statement, keyed by provider id. */
typedef struct VendorCache
{
	LocalTransactionId lxid;
	CommandId	cid;
	Oid			nsp;
	int			n;
	int32		provider[VENDOR_CACHE_SIZE];
	char	   *vendor[VENDOR_CACHE_SIZE];	/* NULL: no such instance */
} VendorCache;

static VendorCache vcache;
static MemoryContext vcache_cxt = NULL;
static SPIPlanPtr vendor_plan = NULL;
static Oid	vendor_plan_nsp = InvalidOid;

static const char *
lookup_vendor(Relation rel, int32 provider_id)
{
	Oid			nsp = RelationGetNamespace(rel);
	LocalTransactionId lxid = P2P_MY_LXID;
	CommandId	cid = GetCurrentCommandId(false);
	char	   *vendor = NULL;
	Datum		arg = Int32GetDatum(provider_id);

	if (vcache.lxid != lxid || vcache.cid != cid || vcache.nsp != nsp)
	{
		if (vcache_cxt == NULL)
			vcache_cxt = AllocSetContextCreate(TopMemoryContext,
											   "p2p_preheat vendor cache",
											   ALLOCSET_SMALL_SIZES);
		MemoryContextReset(vcache_cxt);
		vcache.lxid = lxid;
		vcache.cid = cid;
		vcache.nsp = nsp;
		vcache.n = 0;
	}
	for (int i = 0; i < vcache.n; i++)
		if (vcache.provider[i] == provider_id)
			return vcache.vendor[i];

	/* Harbor keeps p2p_preheat_instance next to the policy table. */
	if (OidIsValid(get_relname_relid("p2p_preheat_instance", nsp)))
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (vendor_plan == NULL || vendor_plan_nsp != nsp)
		{
			Oid			argtype = INT4OID;
			char	   *q = psprintf("SELECT vendor::text FROM %s.p2p_preheat_instance WHERE id = $1",
									 quote_identifier(get_namespace_name(nsp)));
			SPIPlanPtr	plan = SPI_prepare(q, 1, &argtype);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			if (vendor_plan)
				SPI_freeplan(vendor_plan);
			SPI_keepplan(plan);
			vendor_plan = plan;
			vendor_plan_nsp = nsp;
		}
		if (SPI_execute_plan(vendor_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up the vendor of preheat instance %d", provider_id);
		if (SPI_processed == 1)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (v)
				vendor = MemoryContextStrdup(vcache_cxt, v);
		}
		SPI_finish();
	}
	if (vcache.n < VENDOR_CACHE_SIZE)
	{
		vcache.provider[vcache.n] = provider_id;
		vcache.vendor[vcache.n] = vendor;
		vcache.n++;
	}
	return vendor;
}

static bool
column_changed(HeapTuple oldtup, HeapTuple newtup, TupleDesc desc, int attno)
{
	Form_pg_attribute att = TupleDescAttr(desc, attno - 1);
	bool		oldnull,
				newnull;
	Datum		o = heap_getattr(oldtup, attno, desc, &oldnull);
	Datum		n = heap_getattr(newtup, attno, desc, &newnull);

	if (oldnull || newnull)
		return oldnull != newnull;
	return !datumIsEqual(o, n, att->attbyval, att->attlen);
}

/* "preheat policy "nightly" (id 7)" for messages. */
static char *
describe_policy(HeapTuple tup, TupleDesc desc)
{
	int			name_att = SPI_fnumber(desc, "name");
	int			id_att = SPI_fnumber(desc, "id");
	char	   *name = name_att > 0 ? SPI_getvalue(tup, desc, name_att) : NULL;
	char	   *id = id_att > 0 ? SPI_getvalue(tup, desc, id_att) : NULL;

	return psprintf("preheat policy \"%s\" (id %s)",
					name ? name : "?", id ? id : "?");
}

/* Column numbers of extra_attrs and provider_id, looked up once per relation version. */
typedef struct ColumnCache
{
	Oid			relid;
	TupleDesc	desc;			/* the relcache's, to notice ALTER TABLE */
	int			ea_att;
	int			pv_att;
} ColumnCache;

/* attno still names that live column (a cheap guard against a reused descriptor) */
static bool
column_is(TupleDesc desc, int attno, const char *name)
{
	Form_pg_attribute att;

	if (attno <= 0)
		return attno == SPI_fnumber(desc, name);
	if (attno > desc->natts)
		return false;
	att = TupleDescAttr(desc, attno - 1);
	return !att->attisdropped && strcmp(NameStr(att->attname), name) == 0;
}

static void
column_numbers(FunctionCallInfo fcinfo, Relation rel, int *ea_att, int *pv_att)
{
	ColumnCache *cc = fcinfo->flinfo->fn_extra;
	TupleDesc	desc = RelationGetDescr(rel);

	if (cc == NULL)
		cc = fcinfo->flinfo->fn_extra =
			MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ColumnCache));
	if (cc->relid != RelationGetRelid(rel) || cc->desc != desc ||
		!column_is(desc, cc->ea_att, "extra_attrs") ||
		!column_is(desc, cc->pv_att, "provider_id"))
	{
		cc->relid = RelationGetRelid(rel);
		cc->desc = desc;
		cc->ea_att = SPI_fnumber(desc, "extra_attrs");
		cc->pv_att = SPI_fnumber(desc, "provider_id");
	}
	*ea_att = cc->ea_att;
	*pv_att = cc->pv_att;
}

Datum
p2p_preheat_policy_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	newtup;
	int			ea_att;
	int			pv_att;
	Datum		value;
	bool		isnull;
	const char *vendor = NULL;
	const char *json;
	int			len;
	List	   *problems;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(td->tg_event) ||
		TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("p2p_preheat.policy_trigger() must be a BEFORE INSERT OR UPDATE row trigger")));

	desc = RelationGetDescr(td->tg_relation);
	newtup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	column_numbers(fcinfo, td->tg_relation, &ea_att, &pv_att);
	if (ea_att <= 0)
		return PointerGetDatum(newtup);

	value = heap_getattr(newtup, ea_att, desc, &isnull);
	if (isnull)
		return PointerGetDatum(newtup);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) &&
		!column_changed(td->tg_trigtuple, newtup, desc, ea_att) &&
		(pv_att <= 0 || !column_changed(td->tg_trigtuple, newtup, desc, pv_att)))
		return PointerGetDatum(newtup);

	if (TupleDescAttr(desc, ea_att - 1)->atttypid == JSONBOID)
	{
		Jsonb	   *jb = DatumGetJsonbP(value);

		json = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
		len = strlen(json);
	}
	else
	{
		/* json, text and varchar share the text representation */
		text	   *t = DatumGetTextPP(value);

		json = VARDATA_ANY(t);
		len = VARSIZE_ANY_EXHDR(t);
	}

	if (pv_att > 0)
	{
		Datum		pv = heap_getattr(newtup, pv_att, desc, &isnull);

		if (!isnull)
			vendor = lookup_vendor(td->tg_relation, DatumGetInt32(pv));
	}

	problems = ea_check(vendor, json, len, false, NULL);
	if (problems != NIL)
		ea_report(linitial(problems), list_length(problems),
				  describe_policy(newtup, desc));
	return PointerGetDatum(newtup);
}
