/*
 * extra_attrs_sql.c
 *		SQL entry points to the extra_attrs rules, for callers without a table:
 *		a UI checking a form, a migration report, the dispatcher.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "extra_attrs.h"

PG_FUNCTION_INFO_V1(p2p_preheat_validate_extra_attrs);
PG_FUNCTION_INFO_V1(p2p_preheat_extra_attrs_problems);
PG_FUNCTION_INFO_V1(p2p_preheat_as_object);

/* validate_extra_attrs(vendor text, extra_attrs json) returns jsonb */
Datum
p2p_preheat_validate_extra_attrs(PG_FUNCTION_ARGS)
{
	char	   *vendor = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *doc = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	Jsonb	   *normalized;
	List	   *problems;

	problems = ea_check(vendor,
						doc ? VARDATA_ANY(doc) : "",
						doc ? VARSIZE_ANY_EXHDR(doc) : 0,
						false, &normalized);
	if (problems != NIL)
		ea_report(linitial(problems), list_length(problems), NULL);
	PG_RETURN_JSONB_P(normalized);
}

/*
 * extra_attrs_problems(vendor text, extra_attrs json)
 *		returns table (path text, problem text, hint text)
 *
 * Also bound to a text argument, for Harbor 2.13's text column, where the
 * document may not even parse: that is reported as a row too.
 */
Datum
p2p_preheat_extra_attrs_problems(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *vendor = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *doc = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	List	   *problems;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	problems = ea_check(vendor,
						doc ? VARDATA_ANY(doc) : "",
						doc ? VARSIZE_ANY_EXHDR(doc) : 0,
						false, NULL);
	foreach(lc, problems)
	{
		EaProblem  *p = lfirst(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(p->path);
		values[1] = CStringGetTextDatum(p->problem);
		values[2] = p->hint ? CStringGetTextDatum(p->hint) : (Datum) 0;
		nulls[2] = p->hint == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * _as_object(extra_attrs text) returns jsonb: the document as an object to
 * merge Harbor 2.12's scope into ('{}' when empty or null), or NULL when it is
 * not an object.  Never raises, so one broken row cannot stop a migration.
 */
Datum
p2p_preheat_as_object(PG_FUNCTION_ARGS)
{
	text	   *doc = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	Jsonb	   *normalized;

	if (ea_check(NULL,
				 doc ? VARDATA_ANY(doc) : "",
				 doc ? VARSIZE_ANY_EXHDR(doc) : 0,
				 true, &normalized) != NIL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(normalized);
}
