/*
 * extra_attrs.h
 *		The rules a policy's extra_attrs must follow before a provider sees it.
 *
 * The trigger, validate_extra_attrs() and extra_attrs_problems() all go
 * through ea_check(), so a UI, a migration report and an INSERT can never
 * disagree about what is valid.
 */
#ifndef P2P_PREHEAT_EXTRA_ATTRS_H
#define P2P_PREHEAT_EXTRA_ATTRS_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

#include "compat.h"

/* One broken rule: where it is, and what is wrong with it. */
typedef struct EaProblem
{
	int			sqlstate;		/* ERRCODE_CHECK_VIOLATION,
								 * ERRCODE_INVALID_TEXT_REPRESENTATION, or
								 * ERRCODE_INVALID_PARAMETER_VALUE (vendor) */
	char	   *path;			/* JSON path, "" for the whole document */
	char	   *problem;		/* names the offending value and the rule */
	char	   *detail;			/* may be NULL */
	char	   *hint;			/* may be NULL */
} EaProblem;

/* GUCs, defined in p2p_preheat.c */
extern bool ea_allow_unknown_attrs;
extern int	ea_max_size_kb;

extern bool ea_vendor_is_dragonfly(const char *vendor);

/*
 * Check a document given as JSON text.  Returns the list of problems (empty
 * when valid); with stop_at_first the list holds at most one.  When valid and
 * normalized is not NULL, *normalized is the object as it will be sent.
 */
extern List *ea_check(const char *vendor, const char *json, int len,
					  bool stop_at_first, Jsonb **normalized);

/*
 * The same check; when the document is a valid object, *parsed is that
 * object as written (keys unique and ordered as jsonb orders them), else NULL.
 */
extern List *ea_check_parsed(const char *vendor, const char *json, int len,
							 JsonbValue **parsed);

/* Raise problem p as an ERROR; who describes the policy or is NULL. */
pg_noreturn extern void ea_report(const EaProblem *p, int nproblems, const char *who);

/* Convert a Go-style duration ("1h30m", "250ms") to nanoseconds. */
extern bool ea_parse_duration(const char *s, int64 *ns);

#endif
