/*
 * harbor.c
 *		Every read and write of Harbor's tables, as Harbor's table owner.
 *
 * Harbor's role owns its tables and may change them at will: swap a table
 * for a view, add a trigger, a default or a row-level security policy
 * calling a function of its own.  Code of ours that runs as a superuser (the
 * worker, definer functions, CREATE EXTENSION) must never run such a
 * function with its own privileges.  So a query on Harbor's tables here
 * first checks that each table it names is an ordinary table of the owner
 * recorded when the extension attached, in the recorded schema; then it runs
 * as that owner under a security-restricted operation, with search_path
 * pinned to pg_catalog, as VACUUM and REFRESH MATERIALIZED VIEW do.  An
 * error anywhere rolls the user back with the (sub)transaction.
 *
 * The queries name their output columns; results are copied out by name
 * into the composite types the install script declares.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "harbor.h"

PG_FUNCTION_INFO_V1(p2p_preheat_harbor_policy);
PG_FUNCTION_INFO_V1(p2p_preheat_harbor_policies);
PG_FUNCTION_INFO_V1(p2p_preheat_harbor_instance);
PG_FUNCTION_INFO_V1(p2p_preheat_harbor_candidates);
PG_FUNCTION_INFO_V1(p2p_preheat_harbor_project);
PG_FUNCTION_INFO_V1(p2p_preheat_harbor_scopes);
PG_FUNCTION_INFO_V1(p2p_preheat_harbor_set_extra_attrs);
PG_FUNCTION_INFO_V1(p2p_preheat_harbor_extra_attrs_to_text);

char	   *harbor_schema_setting = NULL;

/* The row of p2p_preheat.harbor. */
typedef struct HarborRecord
{
	bool		found;
	Oid			nsp;
	NameData	schema;
	Oid			owner;
	Oid			policy_rel;
} HarborRecord;

/* One fixed query on Harbor's tables; its plan is kept per schema. */
typedef struct HarborQuery
{
	const char *sql;			/* %1$s stands for Harbor's schema */
	const char *tables[16];		/* every Harbor table it reads, NULL-ended */
	int			nargs;
	Oid			argtypes[8];
	SPIPlanPtr	plan;
	NameData	plan_schema;
	/* its tables passed check_table() for this schema and owner, in ... */
	uint64		checked_generation;
	Oid			checked_nsp;
	Oid			checked_owner;
} HarborQuery;

/*
 * A generation of the catalogs: any change to pg_class, pg_namespace or a
 * relation that reaches this backend (its own, or another's at its next
 * lock or transaction) starts a new one.  The checks read the same syscaches
 * that these invalidations flush, so skipping them within a generation sees
 * nothing older than checking again would.
 */
static uint64 catalog_generation = 1;

#define POLICY_SELECT \
	"SELECT p.id, p.name::text AS name, p.project_id, pr.name::text AS project," \
	"       p.provider_id, p.enabled, p.filters::text AS filters, p.trigger::text AS trigger," \
	"       p.extra_attrs::text AS extra_attrs, i.id IS NOT NULL AS instance_found," \
	"       i.vendor::text AS vendor, i.enabled AS instance_enabled," \
	"       p.tableoid AS policy_rel, p.ctid AS policy_tid, p.xmin AS policy_xmin," \
	"       pr.tableoid AS project_rel, pr.ctid AS project_tid, pr.xmin AS project_xmin," \
	"       i.tableoid AS instance_rel, i.ctid AS instance_tid, i.xmin AS instance_xmin" \
	"  FROM %1$s.p2p_preheat_policy p" \
	"  LEFT JOIN %1$s.project pr ON pr.project_id = p.project_id" \
	"  LEFT JOIN %1$s.p2p_preheat_instance i ON i.id = p.provider_id"

static HarborQuery q_policy = {
	POLICY_SELECT " WHERE p.id = $1",
	{"p2p_preheat_policy", "project", "p2p_preheat_instance"}, 1, {INT4OID}
};

static HarborQuery q_policies = {
	POLICY_SELECT " ORDER BY p.id",
	{"p2p_preheat_policy", "project", "p2p_preheat_instance"}, 0, {0}
};

static HarborQuery q_instance = {
	"SELECT id, vendor::text AS vendor, enabled, endpoint::text AS endpoint,"
	"       tableoid AS instance_rel, ctid AS instance_tid, xmin AS instance_xmin"
	"  FROM %1$s.p2p_preheat_instance WHERE id = $1",
	{"p2p_preheat_instance"}, 1, {INT4OID}
};

static HarborQuery q_instances = {
	"SELECT id, vendor::text AS vendor, coalesce(enabled, true) AS enabled,"
	"       coalesce(insecure, false) AS insecure, endpoint::text AS endpoint,"
	"       auth_mode::text AS auth_mode, auth_data::text AS auth_data"
	"  FROM %1$s.p2p_preheat_instance WHERE id = ANY ($1)",
	{"p2p_preheat_instance"}, 1, {INT4ARRAYOID}
};

/*
 * Harbor's vulnerability severity of artifact "a" for its preheat filter
 * (docs/harbor-and-dragonfly.md, "filters"): 99 unless the artifact's digest
 * has vulnerability reports and each report's latest scan task succeeded;
 * then the highest severity among the reports' vulnerabilities whose CVE is
 * not on the allowlist, 0 when none is left.  Severities are numbered as
 * Harbor numbers them; a name Harbor does not know counts as 99.
 */
#define SEVERITY_CODE(s) \
	"CASE " s " WHEN 'None' THEN 0 WHEN 'Unknown' THEN 0 WHEN 'Negligible' THEN 1" \
	" WHEN 'Low' THEN 2 WHEN 'Medium' THEN 3 WHEN 'High' THEN 4 WHEN 'Critical' THEN 5 ELSE 99 END"

#define ARTIFACT_SEVERITY(allowlist) \
	"(SELECT CASE WHEN count(*) = 0 OR bool_or(st.status IS DISTINCT FROM 'Success') THEN 99" \
	"             ELSE coalesce((SELECT max(" SEVERITY_CODE("v.severity::text") ")" \
	"                              FROM %1$s.report_vulnerability_record rv" \
	"                              JOIN %1$s.vulnerability_record v ON v.id = rv.vuln_record_id" \
	"                             WHERE rv.report_uuid::text = ANY (array_agg(sr.uuid::text))" \
	"                               AND NOT (v.cve_id::text = ANY (" allowlist "))), 0) END" \
	"   FROM %1$s.scan_report sr" \
	"   LEFT JOIN LATERAL (SELECT t.status::text AS status FROM %1$s.task t" \
	"                       WHERE t.vendor_type::text IN ('IMAGE_SCAN', 'SCAN_ALL')" \
	"                         AND (t.extra_attrs::jsonb -> 'report_uuids') ? sr.uuid::text" \
	"                       ORDER BY t.id DESC LIMIT 1) st ON true" \
	"  WHERE sr.digest::text = a.digest::text" \
	"    AND sr.mime_type::text IN ('application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0'," \
	"                               'application/vnd.security.vulnerability.report; version=1.1'))"

/*
 * The CVE ids a project's artifacts may carry without counting: the system
 * allowlist (project 0) unless the project's reuse_sys_cve_allowlist says
 * otherwise, as Harbor reads it; none once the list has expired.
 */
#define ALLOWLIST(project) \
	"coalesce((SELECT array_agg(i ->> 'cve_id')" \
	"            FROM %1$s.cve_allowlist c, json_array_elements(c.items::json) i" \
	"           WHERE c.project_id = CASE WHEN coalesce((SELECT lower(m.value::text) FROM %1$s.project_metadata m" \
	"                                                      WHERE m.project_id = " project \
	"                                                        AND m.name::text = 'reuse_sys_cve_allowlist')," \
	"                                                    'true') = 'true' THEN 0 ELSE " project " END" \
	"             AND (c.expires_at IS NULL OR c.expires_at > extract(epoch FROM now()))), '{}')"

#define SEVERITY_TABLES "scan_report", "report_vulnerability_record", "vulnerability_record", "task", \
	"cve_allowlist", "project_metadata"

/*
 * Every tagged artifact of the project of the given types (or the one
 * artifact $7), one row per tag, that passes the filters: repository and
 * tag patterns, every label named, and with $6 a severity below $6.
 */
static HarborQuery q_candidates = {
	"SELECT a.id AS artifact_id, a.digest::text AS digest, r.name::text AS repository, t.name::text AS tag"
	"  FROM %1$s.tag t"
	"  JOIN %1$s.artifact a ON a.id = t.artifact_id"
	"  JOIN %1$s.repository r ON r.repository_id = a.repository_id"
	"  JOIN %1$s.project pr ON pr.project_id = a.project_id"
	" WHERE a.project_id = $1 AND a.type::text = ANY ($5) AND ($7 IS NULL OR a.id = $7)"
	"   AND ($2 IS NULL OR p2p_preheat.doublestar_match($2, substr(r.name, length(pr.name) + 2)))"
	"   AND ($3 IS NULL OR p2p_preheat.doublestar_match($3, t.name))"
	"   AND (cardinality($4) = 0 OR"
	"        (SELECT count(DISTINCT l.name) FROM %1$s.label_reference lr"
	"           JOIN %1$s.harbor_label l ON l.id = lr.label_id"
	"          WHERE lr.artifact_id = a.id AND l.name::text = ANY ($4)) = cardinality($4))"
	"   AND ($6 IS NULL OR " ARTIFACT_SEVERITY(ALLOWLIST("$1")) " < $6)",
	{"tag", "artifact", "repository", "project", "label_reference", "harbor_label", SEVERITY_TABLES},
	7, {INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, INT4OID, INT4OID}
};

#define PROJECT_SETTING(project, key) \
	"(SELECT m.value::text FROM %1$s.project_metadata m WHERE m.project_id = " project \
	"    AND m.name::text = '" key "')"

/*
 * One artifact for an event: its repository, project, type, digest, tags
 * (with $2) and its project's security settings.  Its severity is a
 * query of its own (below), run only when the project prevents vulnerable
 * images: its plan is large, and even unused it costs every event to start.
 */
static HarborQuery q_event_artifact = {
	"SELECT a.id AS artifact_id, r.name::text AS repository, pr.name::text AS project,"
	"       a.project_id, a.type::text AS type, a.digest::text AS digest,"
	"       CASE WHEN $2 THEN ARRAY(SELECT t.name::text FROM %1$s.tag t WHERE t.artifact_id = a.id) END AS tags,"
	"       ARRAY(SELECT pm.name::text || '=' || pm.value::text FROM %1$s.project_metadata pm"
	"              WHERE pm.project_id = a.project_id"
	"                AND pm.name::text IN ('enable_content_trust', 'prevent_vul', 'severity')"
	"              ORDER BY pm.name::text, pm.value::text) AS settings"
	"  FROM %1$s.artifact a"
	"  JOIN %1$s.repository r ON r.repository_id = a.repository_id"
	"  JOIN %1$s.project pr ON pr.project_id = a.project_id"
	" WHERE a.id = $1",
	{"artifact", "repository", "project", "tag", "project_metadata"},
	2, {INT4OID, BOOLOID}
};

/*
 * An artifact's labels, read only when a policy filters on labels: Harbor
 * indexes label_reference by label, not by artifact.
 */
static HarborQuery q_artifact_labels = {
	"SELECT ARRAY(SELECT l.name::text FROM %1$s.label_reference lr"
	"               JOIN %1$s.harbor_label l ON l.id = lr.label_id"
	"              WHERE lr.artifact_id = $1) AS labels",
	{"label_reference", "harbor_label"},
	1, {INT4OID}
};

static HarborQuery q_artifact_severity = {
	"SELECT " ARTIFACT_SEVERITY(ALLOWLIST("a.project_id")) " AS vulnerability"
	"  FROM %1$s.artifact a WHERE a.id = $1",
	{"artifact", SEVERITY_TABLES},
	1, {INT4OID}
};

/* A project's name and the security settings Harbor's preheat reads. */
static HarborQuery q_project = {
	"SELECT pr.name::text AS project,"
	"       coalesce(" PROJECT_SETTING("pr.project_id", "enable_content_trust") " = 'true', false) AS content_trust,"
	"       coalesce(" PROJECT_SETTING("pr.project_id", "prevent_vul") " = 'true', false) AS prevent_vul,"
	"       " PROJECT_SETTING("pr.project_id", "severity") " AS severity"
	"  FROM %1$s.project pr WHERE pr.project_id = $1",
	{"project", "project_metadata"}, 1, {INT4OID}
};

static HarborQuery q_scopes = {
	"SELECT id, scope::text AS scope, extra_attrs::text AS extra_attrs"
	"  FROM %1$s.p2p_preheat_policy WHERE scope IS NOT NULL AND scope::text <> '' ORDER BY id",
	{"p2p_preheat_policy"}, 0, {0}
};

/* Harbor's token_expiration setting (minutes), if Harbor has set it. */
static HarborQuery q_token_expiration = {
	"SELECT v::text AS v FROM %1$s.properties WHERE k = 'token_expiration'",
	{"properties"}, 0, {0}
};

static bool version_checked = false;
static bool callback_registered = false;

/*
 * A queueing loop or an event calls here once per job, so two things are
 * kept between calls:
 *  - the record (p2p_preheat.harbor, an ordinary table) until the
 *    transaction or a subtransaction ends, or the catalog changes (attach()
 *    rewrites the record and, in the same transaction, replaces triggers on
 *    Harbor's policy table: that invalidates too);
 *  - which queries' tables passed check_table(), for a schema and owner, in
 *    a generation of the catalog (catalog_generation, above): across
 *    transactions, since every change those checks could see arrives as an
 *    invalidation first.
 * check_epoch also keys the policy and instance rows reused below.
 */
static HarborRecord checked_record;
static bool record_checked = false;
static uint64 check_epoch = 1;	/* a query's checks hold while equal */

static void
forget_checks(void)
{
	record_checked = false;
	check_epoch++;
}

static void
harbor_xact_callback(XactEvent event, void *arg)
{
	version_checked = false;
	forget_checks();
}

static void
harbor_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB || event == SUBXACT_EVENT_COMMIT_SUB)
		forget_checks();
}

static void
harbor_relcache_callback(Datum arg, Oid relid)
{
	catalog_generation++;
	forget_checks();
}

static void
harbor_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	catalog_generation++;
	forget_checks();
}

static void
register_callbacks(void)
{
	if (callback_registered)
		return;
	RegisterXactCallback(harbor_xact_callback, NULL);
	RegisterSubXactCallback(harbor_subxact_callback, NULL);
	CacheRegisterRelcacheCallback(harbor_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, harbor_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(RELOID, harbor_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(RELNAMENSP, harbor_syscache_callback, (Datum) 0);
	callback_registered = true;
}

/* extversion of p2p_preheat in this database, or NULL. */
static char *
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *v = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("p2p_preheat"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			v = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return v;
}

void
harbor_check_version(void)
{
	char	   *v;

	if (version_checked)
		return;
	register_callbacks();
	v = installed_version();
	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"p2p_preheat\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION p2p_preheat in Harbor's database.")));
	if (strcmp(v, P2P_PREHEAT_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the p2p_preheat library is version %s, but the extension in this database is version %s",
						P2P_PREHEAT_VERSION, v),
				 errdetail("A library and SQL objects of different versions could fail halfway through a dispatch, so nothing is dispatched."),
				 errhint("Run ALTER EXTENSION p2p_preheat UPDATE TO '%s', or install the library of version %s.",
						 P2P_PREHEAT_VERSION, v)));
	version_checked = true;
}

/* Reads the row of p2p_preheat.harbor, without privilege checks: it is ours. */
static void
load_record(HarborRecord *h)
{
	Oid			nsp = get_namespace_oid("p2p_preheat", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("harbor", nsp) : InvalidOid;
	Relation	rel;
	TableScanDesc scan;
	Snapshot	snap;
	HeapTuple	tup;

	memset(h, 0, sizeof(*h));
	if (!OidIsValid(relid))
		return;
	rel = table_open(relid, AccessShareLock);
	snap = RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	tup = heap_getnext(scan, ForwardScanDirection);
	if (HeapTupleIsValid(tup))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		n1,
					n2,
					n3;
		Datum		schema = heap_getattr(tup, attnameAttNum(rel, "schema_name", false), desc, &n1);
		Datum		owner = heap_getattr(tup, attnameAttNum(rel, "owner", false), desc, &n2);
		Datum		policy = heap_getattr(tup, attnameAttNum(rel, "policy_table", false), desc, &n3);

		if (!n1 && !n2 && !n3)
		{
			namestrcpy(&h->schema, NameStr(*DatumGetName(schema)));
			h->owner = DatumGetObjectId(owner);
			h->policy_rel = DatumGetObjectId(policy);
			h->nsp = get_namespace_oid(NameStr(h->schema), true);
			h->found = OidIsValid(h->nsp);
		}
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
}

static void
require_record(HarborRecord *h)
{
	load_record(h);
	if (!h->found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database holds no Harbor tables that p2p_preheat is attached to"),
				 errhint("Install the extension in Harbor's database; it attaches when Harbor creates p2p_preheat_policy, or a superuser runs SELECT p2p_preheat.attach('public.p2p_preheat_policy').")));
}

/* Refuses anything but an ordinary table of Harbor's owner in Harbor's schema. */
static void
check_table(const HarborRecord *h, const char *relname)
{
	Oid			relid = get_relname_relid(relname, h->nsp);
	HeapTuple	tup;
	Form_pg_class c;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("Harbor's table \"%s.%s\" does not exist", NameStr(h->schema), relname),
				 errhint("p2p_preheat reads Harbor's tables in the schema recorded in p2p_preheat.harbor.")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	c = (Form_pg_class) GETSTRUCT(tup);
	if ((c->relkind != RELKIND_RELATION && c->relkind != RELKIND_PARTITIONED_TABLE) ||
		c->relpersistence == RELPERSISTENCE_TEMP || c->relowner != h->owner)
	{
		char	   *owner = GetUserNameFromId(h->owner, true);
		char	   *actual = GetUserNameFromId(c->relowner, true);
		bool		table = c->relkind == RELKIND_RELATION || c->relkind == RELKIND_PARTITIONED_TABLE;

		ReleaseSysCache(tup);
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s.%s\" is not one of Harbor's tables", NameStr(h->schema), relname),
				 errdetail("p2p_preheat reads only ordinary tables owned by role \"%s\", which owned Harbor's policy table when the extension attached; this is %s owned by \"%s\".",
						   owner ? owner : "?", table ? "a table" : "not an ordinary table",
						   actual ? actual : "?"),
				 errhint("If Harbor's tables have a new owner, a superuser runs SELECT p2p_preheat.attach('%s.p2p_preheat_policy').",
						 quote_identifier(NameStr(h->schema)))));
	}
	ReleaseSysCache(tup);
}

#define PINNED_SEARCH_PATH "pg_catalog, pg_temp"

typedef struct AsHarbor
{
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
} AsHarbor;

static void
become_harbor(const HarborRecord *h, AsHarbor *s)
{
	GetUserIdAndSecContext(&s->save_user, &s->save_sec);
	SetUserIdAndSecContext(h->owner, s->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	/*
	 * The nest level undoes whatever settings Harbor's code changes; the
	 * pinned search_path is set unless the caller (a function of ours with
	 * SET search_path) already runs with exactly it.
	 */
	s->nestlevel = NewGUCNestLevel();
	if (namespace_search_path == NULL ||
		strcmp(namespace_search_path, PINNED_SEARCH_PATH) != 0)
		(void) set_config_option("search_path", PINNED_SEARCH_PATH, PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

static void
stop_being_harbor(AsHarbor *s)
{
	AtEOXact_GUC(false, s->nestlevel);
	SetUserIdAndSecContext(s->save_user, s->save_sec);
}

/*
 * The record, and q's tables checked against it; false when Harbor is not
 * attached and missing_ok.
 */
static bool
harbor_prepare(HarborQuery *q, HarborRecord *h, bool missing_ok)
{
	harbor_check_version();
	if (record_checked)
		*h = checked_record;
	else
	{
		if (missing_ok)
		{
			load_record(h);
			if (!h->found)
				return false;
		}
		else
			require_record(h);
		checked_record = *h;
		record_checked = true;
	}
	if (q->checked_generation != catalog_generation || q->checked_nsp != h->nsp ||
		q->checked_owner != h->owner)
	{
		uint64		generation = catalog_generation;	/* before: a change during the checks counts */

		q->checked_generation = 0;
		for (int i = 0; i < lengthof(q->tables) && q->tables[i]; i++)
			check_table(h, q->tables[i]);
		q->checked_generation = generation;
		q->checked_nsp = h->nsp;
		q->checked_owner = h->owner;
	}
	return true;
}

/*
 * Runs q as Harbor's owner (SPI must be connected) and returns its rows, or
 * NULL when Harbor is not attached and missing_ok.
 */
static SPITupleTable *
harbor_run(HarborQuery *q, Datum *args, const char *nulls, bool read_only,
		   bool missing_ok)
{
	HarborRecord h;
	AsHarbor	s;
	int			rc;

	if (!harbor_prepare(q, &h, missing_ok))
		return NULL;
	become_harbor(&h, &s);
	if (q->plan == NULL || strcmp(NameStr(q->plan_schema), NameStr(h.schema)) != 0)
	{
		char	   *sql = psprintf(q->sql, quote_identifier(NameStr(h.schema)));
		SPIPlanPtr	plan = SPI_prepare(sql, q->nargs, q->argtypes);

		if (plan == NULL)
			elog(ERROR, "could not prepare a query on Harbor's tables: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep a query plan");
		if (q->plan)
			SPI_freeplan(q->plan);
		q->plan = plan;
		namestrcpy(&q->plan_schema, NameStr(h.schema));
	}
	rc = SPI_execute_plan(q->plan, args, nulls, read_only, 0);
	if (rc < 0)
		elog(ERROR, "could not query Harbor's tables: %s", SPI_result_code_string(rc));
	stop_being_harbor(&s);
	return SPI_tuptable;
}

/* Column name of an SPI result, by name; its datum is not copied. */
static Datum
get_col(SPITupleTable *tt, uint64 row, const char *name, bool *isnull)
{
	int			n = SPI_fnumber(tt->tupdesc, name);

	if (n <= 0)
		elog(ERROR, "p2p_preheat: a query on Harbor's tables returned no column \"%s\"", name);
	return SPI_getbinval(tt->vals[row], tt->tupdesc, n, isnull);
}

static char *
get_text(SPITupleTable *tt, uint64 row, const char *name)
{
	bool		isnull;
	Datum		d = get_col(tt, row, name, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* Fills values/nulls of out's columns from the same-named columns of row. */
static void
values_by_name(SPITupleTable *tt, uint64 row, TupleDesc out, Datum *values, bool *nulls)
{
	for (int i = 0; i < out->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(out, i);

		nulls[i] = true;
		values[i] = (Datum) 0;
		if (a->attisdropped)
			continue;
		if (SPI_gettypeid(tt->tupdesc, SPI_fnumber(tt->tupdesc, NameStr(a->attname))) != a->atttypid)
			elog(ERROR, "p2p_preheat: column \"%s\" of a query on Harbor's tables has the wrong type",
				 NameStr(a->attname));
		values[i] = get_col(tt, row, NameStr(a->attname), &nulls[i]);
		if (!nulls[i])
			values[i] = datumCopy(values[i], a->attbyval, a->attlen);
	}
}

/* A composite result of the function's declared row type, or SQL NULL. */
static Datum
one_row(FunctionCallInfo fcinfo, HarborQuery *q, Datum *args, bool missing_ok)
{
	MemoryContext caller = CurrentMemoryContext;
	TupleDesc	desc;
	SPITupleTable *tt;
	HeapTuple	tup = NULL;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "function returning a row called in a context that cannot accept one");
	desc = BlessTupleDesc(desc);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(q, args, NULL, true, missing_ok);
	if (tt && SPI_processed > 0)
	{
		Datum	   *values = palloc(desc->natts * sizeof(Datum));
		bool	   *nulls = palloc(desc->natts * sizeof(bool));
		MemoryContext old = MemoryContextSwitchTo(caller);

		values_by_name(tt, 0, desc, values, nulls);
		tup = heap_form_tuple(desc, values, nulls);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	if (tup == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(HeapTupleGetDatum(tup));
}

/* Every row, into the function's result set. */
static void
all_rows(FunctionCallInfo fcinfo, HarborQuery *q, Datum *args, const char *nulls_in,
		 bool missing_ok)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SPITupleTable *tt;

	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(q, args, nulls_in, true, missing_ok);
	if (tt)
	{
		TupleDesc	desc = rsinfo->setDesc;
		Datum	   *values = palloc(desc->natts * sizeof(Datum));
		bool	   *nulls = palloc(desc->natts * sizeof(bool));

		for (uint64 i = 0; i < SPI_processed; i++)
		{
			CHECK_FOR_INTERRUPTS();
			values_by_name(tt, i, desc, values, nulls);
			tuplestore_putvalues(rsinfo->setResult, desc, values, nulls);
		}
	}
	SPI_finish();
}

Datum
p2p_preheat_harbor_policy(PG_FUNCTION_ARGS)
{
	Datum		arg = PG_GETARG_DATUM(0);

	return one_row(fcinfo, &q_policy, &arg, false);
}

/* Every policy; none when Harbor is not attached (a view reads this). */
Datum
p2p_preheat_harbor_policies(PG_FUNCTION_ARGS)
{
	all_rows(fcinfo, &q_policies, NULL, NULL, true);
	return (Datum) 0;
}

Datum
p2p_preheat_harbor_instance(PG_FUNCTION_ARGS)
{
	Datum		arg = PG_GETARG_DATUM(0);

	return one_row(fcinfo, &q_instance, &arg, false);
}

Datum
p2p_preheat_harbor_candidates(PG_FUNCTION_ARGS)
{
	Datum		args[7];
	char		nulls[7];

	for (int i = 0; i < 7; i++)
	{
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		args[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	}
	if (PG_ARGISNULL(0) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("project_id, labels and types must not be null")));
	all_rows(fcinfo, &q_candidates, args, nulls, false);
	return (Datum) 0;
}

Datum
p2p_preheat_harbor_project(PG_FUNCTION_ARGS)
{
	Datum		arg = PG_GETARG_DATUM(0);

	return one_row(fcinfo, &q_project, &arg, false);
}

/* Harbor 2.12's scope per policy; none when the column is not there. */
Datum
p2p_preheat_harbor_scopes(PG_FUNCTION_ARGS)
{
	HarborRecord h;

	load_record(&h);
	if (!h.found || !OidIsValid(get_relname_relid("p2p_preheat_policy", h.nsp)) ||
		get_attnum(get_relname_relid("p2p_preheat_policy", h.nsp), "scope") == InvalidAttrNumber)
	{
		InitMaterializedSRF(fcinfo, 0);
		return (Datum) 0;
	}
	all_rows(fcinfo, &q_scopes, NULL, NULL, false);
	return (Datum) 0;
}

/* Writes one policy's extra_attrs, cast to the column's own type. */
Datum
p2p_preheat_harbor_set_extra_attrs(PG_FUNCTION_ARGS)
{
	HarborRecord h;
	AsHarbor	s;
	Oid			relid;
	AttrNumber	att;
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	Datum		args[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
	char	   *sql;

	harbor_check_version();
	require_record(&h);
	check_table(&h, "p2p_preheat_policy");
	relid = get_relname_relid("p2p_preheat_policy", h.nsp);
	att = get_attnum(relid, "extra_attrs");
	if (att == InvalidAttrNumber)
		elog(ERROR, "p2p_preheat_policy has no extra_attrs column");
	sql = psprintf("UPDATE %s.p2p_preheat_policy SET extra_attrs = $2::%s WHERE id = $1",
				   quote_identifier(NameStr(h.schema)),
				   format_type_be_qualified(get_atttype(relid, att)));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	become_harbor(&h, &s);
	if (SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update Harbor's policy %d", PG_GETARG_INT32(0));
	stop_being_harbor(&s);
	SPI_finish();
	PG_RETURN_VOID();
}

List *
harbor_instances(int *ids, int nids)
{
	MemoryContext caller = CurrentMemoryContext;
	List	   *out = NIL;
	Datum		arg;
	SPITupleTable *tt;
	Datum	   *elems;

	if (nids == 0)
		return NIL;
	elems = palloc(nids * sizeof(Datum));
	for (int i = 0; i < nids; i++)
		elems[i] = Int32GetDatum(ids[i]);
	arg = PointerGetDatum(construct_array(elems, nids, INT4OID, sizeof(int32), true,
										  TYPALIGN_INT));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(&q_instances, &arg, NULL, true, false);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(caller);
		HarborInstance *inst = palloc0(sizeof(HarborInstance));
		bool		isnull;

		inst->id = DatumGetInt32(get_col(tt, i, "id", &isnull));
		inst->vendor = get_text(tt, i, "vendor");
		inst->enabled = DatumGetBool(get_col(tt, i, "enabled", &isnull));
		inst->insecure = DatumGetBool(get_col(tt, i, "insecure", &isnull));
		inst->endpoint = get_text(tt, i, "endpoint");
		inst->auth_mode = get_text(tt, i, "auth_mode");
		inst->auth_data = get_text(tt, i, "auth_data");
		out = lappend(out, inst);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return out;
}

/* An int4 or bool column by name; *isnull says whether it was NULL. */
static int32
get_int4(SPITupleTable *tt, uint64 row, const char *name, bool *isnull)
{
	Datum		d = get_col(tt, row, name, isnull);

	return *isnull ? 0 : DatumGetInt32(d);
}

static bool
get_bool(SPITupleTable *tt, uint64 row, const char *name, bool *isnull)
{
	Datum		d = get_col(tt, row, name, isnull);

	return *isnull ? false : DatumGetBool(d);
}

/*
 * The last policy and instance read, and the snapshot they were read with.
 *
 * A loop that queues one job per call (SELECT preheat(...) FROM ...) reads
 * the same policy under the same snapshot every time: these read-only
 * queries run with the caller's active snapshot, and what an MVCC snapshot
 * sees is fixed by its xmin, xmax, in-progress transactions and command id.
 * So a row is reused at once under a snapshot equal in all of these, within
 * the same check epoch (same transaction, no subtransaction ended since, no
 * catalog change); under any other snapshot only once the tuples it came
 * from vouch for it (sources_current(), below).
 */
typedef struct RowKey
{
	bool		valid;
	int			id;
	uint64		epoch;
	TransactionId xmin;
	TransactionId xmax;
	CommandId	curcid;
	bool		suboverflowed;
	uint32		xcnt;
	int32		subxcnt;
	TransactionId *xip;			/* in the row's memory context */
	TransactionId *subxip;
} RowKey;

/* A copy of a kept row into a memory context. */
typedef void *(*RowCopy) (MemoryContext cxt, const void *row);

/*
 * One tuple a kept row was read from: a row of one of Harbor's tables, found
 * by a unique integer key, as it was stored (table, TID, xmin and the bytes
 * after its header).
 */
typedef struct RowSource
{
	const char *table;
	const char *key_column;
	const char *prefix;			/* of the query's tableoid/ctid/xmin columns */
	Oid			relid;
	ItemPointerData tid;
	TransactionId xmin;
	uint32		len;			/* t_len */
	uint16		natts;			/* t_infomask2 & HEAP_NATTS_MASK */
	uint16		nullflag;		/* t_infomask & HEAP_HASNULL */
	uint8		hoff;
	char	   *data;			/* len - offsetof(HeapTupleHeaderData, t_bits) bytes */
} RowSource;

#define MAX_ROW_SOURCES 3

/*
 * One kept row: its key, its copy in a context of its own, and what vouches
 * for it under a later snapshot: its sources, if it can have them (see
 * sources_current()), the catalog generation before it was read, and the
 * record it was read with.
 */
typedef struct RowCache
{
	MemoryContext cxt;
	MemoryContext keycxt;		/* the snapshot key's arrays */
	RowKey		key;
	void	   *row;
	RowCopy		copy;
	HarborQuery *query;
	bool		vouched;
	int			nsources;
	RowSource	sources[MAX_ROW_SOURCES];
	uint64		generation;
	Oid			nsp;
	Oid			owner;
} RowCache;

/* The active snapshot, if it is an MVCC one. */
static Snapshot
mvcc_snapshot(void)
{
	Snapshot	snap;

	if (!ActiveSnapshotSet())
		return NULL;
	snap = GetActiveSnapshot();
	return snap->snapshot_type == SNAPSHOT_MVCC && !snap->takenDuringRecovery ? snap : NULL;
}

static bool
row_key_matches(const RowKey *k, int id)
{
	Snapshot	snap;

	if (!k->valid || k->id != id || k->epoch != check_epoch || (snap = mvcc_snapshot()) == NULL)
		return false;
	return snap->xmin == k->xmin && snap->xmax == k->xmax && snap->curcid == k->curcid &&
		snap->suboverflowed == k->suboverflowed &&
		snap->xcnt == k->xcnt && snap->subxcnt == k->subxcnt &&
		(k->xcnt == 0 || memcmp(snap->xip, k->xip, k->xcnt * sizeof(TransactionId)) == 0) &&
		(k->subxcnt <= 0 ||
		 memcmp(snap->subxip, k->subxip, k->subxcnt * sizeof(TransactionId)) == 0);
}

/* The key of the active snapshot now, its arrays copied into cxt. */
static void
take_row_key(RowKey *k, int id, uint64 epoch, Snapshot snap, MemoryContext cxt)
{
	memset(k, 0, sizeof(*k));
	k->id = id;
	k->epoch = epoch;
	k->xmin = snap->xmin;
	k->xmax = snap->xmax;
	k->curcid = snap->curcid;
	k->suboverflowed = snap->suboverflowed;
	k->xcnt = snap->xcnt;
	k->subxcnt = snap->subxcnt;
	if (k->xcnt > 0)
	{
		k->xip = MemoryContextAlloc(cxt, k->xcnt * sizeof(TransactionId));
		memcpy(k->xip, snap->xip, k->xcnt * sizeof(TransactionId));
	}
	if (k->subxcnt > 0)
	{
		k->subxip = MemoryContextAlloc(cxt, k->subxcnt * sizeof(TransactionId));
		memcpy(k->subxip, snap->subxip, k->subxcnt * sizeof(TransactionId));
	}
	k->valid = true;
}

/*
 * A kept row under a later snapshot.
 *
 * Each statement of a PL/pgSQL loop, or each autocommit call, has a snapshot
 * of its own, so the snapshot key above misses; running the query again
 * costs more than queueing.  Instead, the tuples the row was read from are
 * looked at again, by TID, under the new snapshot.  The row is current when
 * each of them is still visible with the same xmin and the same bytes:
 *  - the query finds each of its tables' rows by an integer key that a
 *    valid, immediate, non-partial unique btree index covers, in a plain
 *    heap table without inheritance children or row-level security; so an
 *    MVCC snapshot sees at most one row per key (a second visible one would
 *    have failed the unique check when it was inserted), and the visible
 *    tuple with that key is the only row the query could find;
 *  - its bytes (no TOAST pointers: those are refused) hold every value the
 *    query read from it, and the tuple descriptor is unchanged while the
 *    catalog generation is;
 *  - the record and the table checks are redone as for the query.
 * Visibility is the snapshot's own rule, so a change this transaction made
 * (or that a subtransaction rolled back) counts as it does for the query.
 * Anything else (a tuple no longer visible, another catalog generation, a
 * serializable transaction, whose reads must take predicate locks) runs the
 * query again.  No user code runs: only the buffer manager and visibility.
 *
 * The tables are locked as the query locks them, once per check epoch: the
 * lock is then held to the end of the transaction (or until a
 * subtransaction ends, which moves the epoch), so no VACUUM can truncate them
 * and their size read with the lock holds until then.
 */
typedef struct LockedTable
{
	Oid			relid;
	BlockNumber nblocks;
} LockedTable;

static LockedTable locked_tables[MAX_ROW_SOURCES * 2];
static int	nlocked_tables = 0;
static uint64 locked_epoch = 0;

/*
 * The tables locked in this check epoch, and their sizes once read.  Locks
 * first: taking one takes in other sessions' catalog changes, which must be
 * seen before a table is opened.
 */
static LockedTable *
locked_table(Oid relid)
{
	if (locked_epoch != check_epoch)
	{
		nlocked_tables = 0;
		locked_epoch = check_epoch;
	}
	for (int i = 0; i < nlocked_tables; i++)
		if (locked_tables[i].relid == relid)
			return &locked_tables[i];
	LockRelationOid(relid, AccessShareLock);
	if (locked_epoch != check_epoch || nlocked_tables == lengthof(locked_tables))
		return NULL;			/* the lock moved the epoch: lock again next time */
	locked_tables[nlocked_tables].relid = relid;
	locked_tables[nlocked_tables].nblocks = InvalidBlockNumber;
	return &locked_tables[nlocked_tables++];
}

/* The size of relid, locked (above), read once per epoch or now with refresh. */
static BlockNumber
locked_table_blocks(Oid relid, bool refresh)
{
	LockedTable *t = locked_table(relid);
	Relation	rel;
	BlockNumber n;

	if (t && t->nblocks != InvalidBlockNumber && !refresh)
		return t->nblocks;
	rel = table_open(relid, NoLock);
	n = RelationGetNumberOfBlocks(rel);
	table_close(rel, NoLock);
	if (t && locked_epoch == check_epoch)
		t->nblocks = n;
	return n;
}

/*
 * The tuple of src under snap, pinned in *buf, if it is still that version;
 * the caller releases *buf.  relid is locked.
 */
static bool
fetch_source(const RowSource *src, Snapshot snap, BlockNumber nblocks, HeapTuple tup,
			 Buffer *buf)
{
	Relation	rel;
	bool		found;

	*buf = InvalidBuffer;
	if (ItemPointerGetBlockNumber(&src->tid) >= nblocks)
		return false;
	rel = table_open(src->relid, NoLock);
	tup->t_self = src->tid;
	found = heap_fetch(rel, snap, tup, buf, false);
	table_close(rel, NoLock);
	if (!found)
		return false;
	if (HeapTupleHeaderGetRawXmin(tup->t_data) != src->xmin ||
		HeapTupleHasExternal(tup))
	{
		ReleaseBuffer(*buf);
		*buf = InvalidBuffer;
		return false;
	}
	return true;
}

static bool
source_unchanged(const RowSource *src, HeapTuple tup)
{
	const size_t head = offsetof(HeapTupleHeaderData, t_bits);

	return tup->t_len == src->len && tup->t_data->t_hoff == src->hoff &&
		(tup->t_data->t_infomask2 & HEAP_NATTS_MASK) == src->natts &&
		(tup->t_data->t_infomask & HEAP_HASNULL) == src->nullflag &&
		memcmp((char *) tup->t_data + head, src->data, src->len - head) == 0;
}

/* Whether c's row is what its query would return under snap (see above). */
static bool
sources_current(RowCache *c, Snapshot snap)
{
	HarborRecord h;

	if (!c->vouched || IsolationIsSerializable())
		return false;
	if (!harbor_prepare(c->query, &h, false) || h.nsp != c->nsp || h.owner != c->owner)
		return false;
	for (int i = 0; i < c->nsources; i++)
		(void) locked_table(c->sources[i].relid);
	if (c->generation != catalog_generation)
		return false;
	for (int i = 0; i < c->nsources; i++)
	{
		HeapTupleData tup;
		Buffer		buf;
		bool		same;

		if (!fetch_source(&c->sources[i], snap,
						  locked_table_blocks(c->sources[i].relid, false), &tup, &buf))
			return false;
		same = source_unchanged(&c->sources[i], &tup);
		ReleaseBuffer(buf);
		if (!same)
			return false;
	}
	return true;
}

/* The kept row of id, copied into the caller's context, or NULL. */
static void *
reuse_row(RowCache *c, int id)
{
	Snapshot	snap;

	if (row_key_matches(&c->key, id))
		return c->copy(CurrentMemoryContext, c->row);
	if (!c->key.valid || c->key.id != id || (snap = mvcc_snapshot()) == NULL ||
		!sources_current(c, snap))
		return NULL;
	/* current under this snapshot too: keyed by it from now on */
	MemoryContextReset(c->keycxt);
	take_row_key(&c->key, id, check_epoch, snap, c->keycxt);
	return c->copy(CurrentMemoryContext, c->row);
}

/*
 * Whether a source's table may vouch for rows found by key_column: see
 * sources_current().  Its lock is held (the query took it).
 */
static bool
table_can_vouch(Oid relid, const char *key_column)
{
	Relation	rel = table_open(relid, NoLock);
	AttrNumber	key = get_attnum(relid, key_column);
	bool		ok = false;
	List	   *indexes;
	ListCell   *lc;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relam != HEAP_TABLE_AM_OID ||
		rel->rd_rel->relhassubclass || rel->rd_rel->relrowsecurity ||
		key == InvalidAttrNumber || get_atttype(relid, key) != INT4OID)
	{
		table_close(rel, NoLock);
		return false;
	}
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		HeapTuple	itup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index ind;
		bool		isnull;
		oidvector  *opclasses;

		if (!HeapTupleIsValid(itup))
			continue;
		ind = (Form_pg_index) GETSTRUCT(itup);
		opclasses = (oidvector *) DatumGetPointer(SysCacheGetAttr(INDEXRELID, itup,
																  Anum_pg_index_indclass,
																  &isnull));
		if (ind->indisunique && ind->indimmediate && ind->indisvalid && ind->indislive &&
			ind->indisready && ind->indnkeyatts == 1 && ind->indkey.values[0] == key &&
			!isnull && opclasses->values[0] == INT4_BTREE_OPS_OID &&
			heap_attisnull(itup, Anum_pg_index_indexprs, NULL) &&
			heap_attisnull(itup, Anum_pg_index_indpred, NULL))
			ok = true;
		ReleaseSysCache(itup);
		if (ok)
			break;
	}
	list_free(indexes);
	table_close(rel, NoLock);
	return ok;
}

/*
 * Records, from row 0 of the query's result, the tuples of c's sources
 * (read under snap, the record h): c->vouched when each can vouch.
 */
static void
take_sources(RowCache *c, SPITupleTable *tt, Snapshot snap, const HarborRecord *h)
{
	c->vouched = false;
	if (IsolationIsSerializable())
		return;
	for (int i = 0; i < c->nsources; i++)
	{
		RowSource  *src = &c->sources[i];
		char		col[NAMEDATALEN];
		bool		n1,
					n2,
					n3;
		Datum		rel,
					tid,
					xmin;
		HeapTupleData tup;
		Buffer		buf;
		const size_t head = offsetof(HeapTupleHeaderData, t_bits);

		snprintf(col, sizeof(col), "%s_rel", src->prefix);
		rel = get_col(tt, 0, col, &n1);
		snprintf(col, sizeof(col), "%s_tid", src->prefix);
		tid = get_col(tt, 0, col, &n2);
		snprintf(col, sizeof(col), "%s_xmin", src->prefix);
		xmin = get_col(tt, 0, col, &n3);
		/* never a row that is not there */
		if (n1 || n2 || n3)
			return;
		src->relid = DatumGetObjectId(rel);
		src->tid = *(ItemPointer) DatumGetPointer(tid);
		src->xmin = DatumGetTransactionId(xmin);
		if (src->relid != get_relname_relid(src->table, h->nsp) ||
			!table_can_vouch(src->relid, src->key_column))
			return;
		if (!fetch_source(src, snap, locked_table_blocks(src->relid, true), &tup, &buf))
			return;
		src->len = tup.t_len;
		src->hoff = tup.t_data->t_hoff;
		src->natts = tup.t_data->t_infomask2 & HEAP_NATTS_MASK;
		src->nullflag = tup.t_data->t_infomask & HEAP_HASNULL;
		src->data = MemoryContextAlloc(c->cxt, src->len - head);
		memcpy(src->data, (char *) tup.t_data + head, src->len - head);
		ReleaseBuffer(buf);
	}
	c->vouched = true;
}

/*
 * Keeps row, read under snap when the epoch was epoch and the catalog
 * generation was generation; only if the same snapshot is still active and
 * nothing moved the epoch while it was read.
 */
static void
keep_row(RowCache *c, int id, const void *row, SPITupleTable *tt, Snapshot snap,
		 uint64 epoch, uint64 generation)
{
	if (snap == NULL || snap != mvcc_snapshot() || epoch != check_epoch)
		return;
	if (c->cxt == NULL)
	{
		c->cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat Harbor row",
									   ALLOCSET_SMALL_SIZES);
		c->keycxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat Harbor row key",
										  ALLOCSET_SMALL_SIZES);
	}
	c->key.valid = false;
	c->vouched = false;
	MemoryContextReset(c->cxt);
	MemoryContextReset(c->keycxt);
	c->row = c->copy(c->cxt, row);
	c->generation = generation;
	c->nsp = checked_record.nsp;
	c->owner = checked_record.owner;
	take_sources(c, tt, snap, &checked_record);
	take_row_key(&c->key, id, epoch, snap, c->keycxt);
}

static char *
dup_or_null(MemoryContext cxt, const char *s)
{
	return s ? MemoryContextStrdup(cxt, s) : NULL;
}

static void *
copy_policy(MemoryContext cxt, const void *row)
{
	const HarborPolicy *p = row;
	HarborPolicy *c = MemoryContextAlloc(cxt, sizeof(HarborPolicy));

	*c = *p;
	c->name = dup_or_null(cxt, p->name);
	c->project = dup_or_null(cxt, p->project);
	c->filters = dup_or_null(cxt, p->filters);
	c->trigger = dup_or_null(cxt, p->trigger);
	c->extra_attrs = dup_or_null(cxt, p->extra_attrs);
	c->vendor = dup_or_null(cxt, p->vendor);
	return c;
}

static void *
copy_instance(MemoryContext cxt, const void *row)
{
	const HarborInstanceInfo *i = row;
	HarborInstanceInfo *c = MemoryContextAlloc(cxt, sizeof(HarborInstanceInfo));

	*c = *i;
	c->vendor = dup_or_null(cxt, i->vendor);
	c->endpoint = dup_or_null(cxt, i->endpoint);
	return c;
}

static RowCache policy_cache = {
	.copy = copy_policy, .query = &q_policy, .nsources = 3,
	.sources = {{"p2p_preheat_policy", "id", "policy"},
				{"project", "project_id", "project"},
				{"p2p_preheat_instance", "id", "instance"}}
};
static RowCache instance_cache = {
	.copy = copy_instance, .query = &q_instance, .nsources = 1,
	.sources = {{"p2p_preheat_instance", "id", "instance"}}
};

HarborPolicy *
harbor_policy(int policy_id)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		arg = Int32GetDatum(policy_id);
	SPITupleTable *tt;
	HarborPolicy *p;
	MemoryContext old;
	bool		isnull;
	Snapshot	snap = mvcc_snapshot();
	uint64		epoch = check_epoch;
	uint64		generation = catalog_generation;

	if ((p = reuse_row(&policy_cache, policy_id)) != NULL)
		return p;
	tt = harbor_run(&q_policy, &arg, NULL, true, false);
	if (SPI_processed == 0)
		return NULL;
	old = MemoryContextSwitchTo(caller);
	p = palloc0(sizeof(HarborPolicy));
	p->id = get_int4(tt, 0, "id", &isnull);
	p->name = get_text(tt, 0, "name");
	p->project_id = get_int4(tt, 0, "project_id", &p->project_id_null);
	p->project = get_text(tt, 0, "project");
	p->provider_id = get_int4(tt, 0, "provider_id", &p->provider_id_null);
	p->enabled = get_bool(tt, 0, "enabled", &p->enabled_null);
	p->filters = get_text(tt, 0, "filters");
	p->trigger = get_text(tt, 0, "trigger");
	p->extra_attrs = get_text(tt, 0, "extra_attrs");
	p->instance_found = get_bool(tt, 0, "instance_found", &isnull);
	p->vendor = get_text(tt, 0, "vendor");
	p->instance_enabled = get_bool(tt, 0, "instance_enabled", &p->instance_enabled_null);
	MemoryContextSwitchTo(old);
	keep_row(&policy_cache, policy_id, p, tt, snap, epoch, generation);
	return p;
}

HarborInstanceInfo *
harbor_instance(int instance_id)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		arg = Int32GetDatum(instance_id);
	SPITupleTable *tt;
	HarborInstanceInfo *inst;
	MemoryContext old;
	bool		isnull;
	Snapshot	snap = mvcc_snapshot();
	uint64		epoch = check_epoch;
	uint64		generation = catalog_generation;

	if ((inst = reuse_row(&instance_cache, instance_id)) != NULL)
		return inst;
	tt = harbor_run(&q_instance, &arg, NULL, true, false);
	if (SPI_processed == 0)
		return NULL;
	old = MemoryContextSwitchTo(caller);
	inst = palloc0(sizeof(HarborInstanceInfo));
	inst->id = get_int4(tt, 0, "id", &isnull);
	inst->vendor = get_text(tt, 0, "vendor");
	inst->enabled = get_bool(tt, 0, "enabled", &inst->enabled_null);
	inst->endpoint = get_text(tt, 0, "endpoint");
	MemoryContextSwitchTo(old);
	keep_row(&instance_cache, instance_id, inst, tt, snap, epoch, generation);
	return inst;
}

char *
harbor_instance_vendor(int instance_id)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		arg = Int32GetDatum(instance_id);
	SPITupleTable *tt;
	char	   *vendor = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(&q_instance, &arg, NULL, true, true);
	if (tt && SPI_processed == 1)
	{
		char	   *v = get_text(tt, 0, "vendor");

		if (v)
			vendor = MemoryContextStrdup(caller, v);
	}
	SPI_finish();
	return vendor;
}

/*
 * The lifetime of Harbor's pull token: Harbor's token_expiration property
 * (minutes), read as Harbor's owner, or Harbor's default of 30 minutes when
 * it is absent or not a positive whole number.
 */
int
harbor_token_lifetime_s(int default_s)
{
	HarborRecord h;
	SPITupleTable *tt;
	int			lifetime = default_s;

	load_record(&h);
	if (!h.found || !OidIsValid(get_relname_relid("properties", h.nsp)))
		return default_s;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(&q_token_expiration, NULL, NULL, true, true);
	if (tt && SPI_processed == 1)
	{
		char	   *v = get_text(tt, 0, "v");
		char	   *end;
		long		minutes;

		errno = 0;
		minutes = v ? strtol(v, &end, 10) : 0;
		if (v && errno == 0 && end != v && *end == '\0' && minutes > 0 && minutes <= 60 * 24 * 365)
			lifetime = (int) minutes * 60;
	}
	SPI_finish();
	return lifetime;
}

/*
 * Converts Harbor's json extra_attrs to text.  The rewrite re-checks the
 * table's constraints and rebuilds its indexes, whose expressions Harbor's
 * role wrote: so it runs as Harbor's owner, like every other touch here.
 */
Datum
p2p_preheat_harbor_extra_attrs_to_text(PG_FUNCTION_ARGS)
{
	HarborRecord h;
	AsHarbor	s;
	char	   *sql;

	harbor_check_version();
	require_record(&h);
	check_table(&h, "p2p_preheat_policy");
	sql = psprintf("ALTER TABLE %s.p2p_preheat_policy ALTER COLUMN extra_attrs TYPE text"
				   " USING extra_attrs::text", quote_identifier(NameStr(h.schema)));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	become_harbor(&h, &s);
	if (SPI_execute(sql, false, 0) < 0)
		elog(ERROR, "could not change the type of Harbor's extra_attrs");
	stop_being_harbor(&s);
	SPI_finish();
	PG_RETURN_VOID();
}

/* A text[] datum as C strings, its NULL elements left out. */
static char **
text_array_strings(Datum d, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	int			count;
	char	  **out;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &count);
	out = palloc((count + 1) * sizeof(char *));
	*n = 0;
	for (int i = 0; i < count; i++)
		if (!nulls[i])
			out[(*n)++] = TextDatumGetCString(elems[i]);
	return out;
}

/*
 * The artifact of an event, read as Harbor's owner into the caller's memory
 * context (its labels apart: harbor_artifact_labels); false when it does not
 * exist.  Harbor's project settings are read
 * as its enforcer reads them: content trust and vulnerability prevention are
 * on when their value is "true", and the severity is the project's
 * "severity" value.  The vulnerability severity is only read when the
 * project prevents vulnerable images with a severity.
 */
bool
harbor_event_artifact(int32 artifact_id, bool with_tags, HarborArtifact *a)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		args[2] = {Int32GetDatum(artifact_id), BoolGetDatum(with_tags)};
	SPITupleTable *tt;
	bool		found = false;

	memset(a, 0, sizeof(*a));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(&q_event_artifact, args, NULL, true, false);
	if (SPI_processed > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(caller);
		bool		isnull;
		Datum		d;
		char	  **settings;
		int			nsettings;

		found = true;
		a->artifact_id = DatumGetInt32(get_col(tt, 0, "artifact_id", &isnull));
		a->repository = get_text(tt, 0, "repository");
		a->project = get_text(tt, 0, "project");
		a->project_id = DatumGetInt32(get_col(tt, 0, "project_id", &isnull));
		a->type = get_text(tt, 0, "type");
		a->digest = get_text(tt, 0, "digest");
		d = get_col(tt, 0, "tags", &isnull);
		if (!isnull)
			a->tags = text_array_strings(d, &a->ntags);
		settings = text_array_strings(get_col(tt, 0, "settings", &isnull), &nsettings);
		for (int i = 0; i < nsettings; i++)
		{
			if (strcmp(settings[i], "enable_content_trust=true") == 0)
				a->content_trust = true;
			else if (strcmp(settings[i], "prevent_vul=true") == 0)
				a->prevent_vul = true;
			else if (strncmp(settings[i], "severity=", 9) == 0)
				a->severity = settings[i] + 9;	/* the greatest, as ordered */
		}
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return found;
}

/* The artifact's label names, into a (caller's memory context). */
void
harbor_artifact_labels(HarborArtifact *a)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		arg = Int32GetDatum(a->artifact_id);
	SPITupleTable *tt;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(&q_artifact_labels, &arg, NULL, true, false);
	a->nlabels = 0;
	if (SPI_processed > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(caller);
		bool		isnull;
		Datum		d = get_col(tt, 0, "labels", &isnull);

		if (!isnull)
			a->labels = text_array_strings(d, &a->nlabels);
		MemoryContextSwitchTo(old);
	}
	a->labels_read = true;
	SPI_finish();
}

/* Harbor's severity code of an artifact for its vulnerability filter. */
int
harbor_artifact_severity(int32 artifact_id)
{
	Datum		arg = Int32GetDatum(artifact_id);
	SPITupleTable *tt;
	bool		isnull = true;
	int			severity = 99;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tt = harbor_run(&q_artifact_severity, &arg, NULL, true, false);
	if (SPI_processed > 0)
	{
		Datum		d = get_col(tt, 0, "vulnerability", &isnull);

		if (!isnull)
			severity = DatumGetInt32(d);
	}
	SPI_finish();
	return severity;
}
