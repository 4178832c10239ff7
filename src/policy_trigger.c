/*
 * policy_trigger.c
 *		The BEFORE INSERT OR UPDATE trigger that guards extra_attrs on Harbor's
 *		p2p_preheat_policy table, whichever client writes it.
 *
 * The trigger has no column list (UPDATE OF would make Harbor's own
 * migrations of the column fail on the dependency); instead it skips rows
 * whose extra_attrs and provider_id did not change.  The provider's vendor is
 * looked up once per statement and provider, so bulk updates stay cheap, and
 * as Harbor's table owner, so a superuser writing a policy never runs code
 * Harbor's role put in its instance table.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "compat.h"
#include "extra_attrs.h"
#include "harbor.h"
#include "json_soft.h"

PG_FUNCTION_INFO_V1(p2p_preheat_policy_trigger);

#define VENDOR_CACHE_SIZE 16

/* Vendors seen by the current statement, keyed by provider id. */
typedef struct VendorCache
{
	LocalTransactionId lxid;
	CommandId	cid;
	int			n;
	int32		provider[VENDOR_CACHE_SIZE];
	char	   *vendor[VENDOR_CACHE_SIZE];	/* NULL: no such instance */
} VendorCache;

static VendorCache vcache;
static MemoryContext vcache_cxt = NULL;

/* The instance's vendor, read as Harbor's table owner (harbor.c). */
static const char *
lookup_vendor(int32 provider_id)
{
	LocalTransactionId lxid = P2P_MY_LXID;
	CommandId	cid = GetCurrentCommandId(false);
	char	   *vendor;

	if (vcache.lxid != lxid || vcache.cid != cid)
	{
		if (vcache_cxt == NULL)
			vcache_cxt = AllocSetContextCreate(TopMemoryContext,
											   "p2p_preheat vendor cache",
											   ALLOCSET_SMALL_SIZES);
		MemoryContextReset(vcache_cxt);
		vcache.lxid = lxid;
		vcache.cid = cid;
		vcache.n = 0;
	}
	for (int i = 0; i < vcache.n; i++)
		if (vcache.provider[i] == provider_id)
			return vcache.vendor[i];

	vendor = harbor_instance_vendor(provider_id);
	if (vendor)
		vendor = MemoryContextStrdup(vcache_cxt, vendor);
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

/*
 * The proposal's scope "single_peer" is stored as "single_seed_peer", the
 * name Harbor 2.13+ and Dragonfly accept: Harbor's own driver refuses any
 * other name.  The document is rewritten (as jsonb prints it) only then,
 * from the tree the check already parsed.
 */
static HeapTuple
store_seed_peer_scope(HeapTuple tup, TupleDesc desc, int ea_att, Oid ea_type,
					  JsonbValue *doc)
{
	Form_pg_attribute att = TupleDescAttr(desc, ea_att - 1);
	JsonbValue *scope = jbv_get(doc, "scope");
	Jsonb	   *jb;
	Datum		value;
	bool		isnull = false;
	char	   *out;

	if (scope == NULL || scope->type != jbvString || scope->val.string.len != 11 ||
		memcmp(scope->val.string.val, "single_peer", 11) != 0)
		return tup;
	scope->val.string.val = "single_seed_peer";
	scope->val.string.len = strlen("single_seed_peer");
	jb = JsonbValueToJsonb(doc);
	if (ea_type == JSONBOID)
		value = JsonbPGetDatum(jb);
	else
	{
		out = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
		/* a varchar(n) too short for the new name keeps the old one */
		if (ea_type == VARCHAROID && att->atttypmod > VARHDRSZ &&
			pg_mbstrlen(out) > att->atttypmod - VARHDRSZ)
			return tup;
		value = CStringGetTextDatum(out);
	}
	return heap_modify_tuple_by_cols(tup, desc, 1, &ea_att, &value, &isnull);
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
	Oid			ea_type;
	const char *json;
	int			len;
	List	   *problems;
	JsonbValue *doc;

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

	ea_type = getBaseType(TupleDescAttr(desc, ea_att - 1)->atttypid);
	if (ea_type == JSONBOID)
	{
		Jsonb	   *jb = DatumGetJsonbP(value);

		json = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
		len = strlen(json);
	}
	else if (ea_type == JSONOID || ea_type == TEXTOID || ea_type == VARCHAROID)
	{
		/* json, text and varchar share the text representation */
		text	   *t = DatumGetTextPP(value);

		json = VARDATA_ANY(t);
		len = VARSIZE_ANY_EXHDR(t);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("extra_attrs of %s is of type %s, which p2p_preheat cannot validate",
						RelationGetRelationName(td->tg_relation), format_type_be(ea_type)),
				 errhint("extra_attrs must be text, json, jsonb or varchar, as Harbor creates it.")));

	if (pv_att > 0)
	{
		Datum		pv = heap_getattr(newtup, pv_att, desc, &isnull);

		if (!isnull)
			vendor = lookup_vendor(DatumGetInt32(pv));
	}

	problems = ea_check_parsed(vendor, json, len, &doc);
	if (problems != NIL)
		ea_report(linitial(problems), list_length(problems),
				  describe_policy(newtup, desc));
	if (doc != NULL && ea_vendor_is_dragonfly(vendor))
		newtup = store_seed_peer_scope(newtup, desc, ea_att, ea_type, doc);
	return PointerGetDatum(newtup);
}
