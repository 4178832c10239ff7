/*
 * json_soft.h
 *		Parse JSON text into an in-memory JsonbValue without ever throwing.
 *
 * Used for documents we did not write: policies stored before the rules
 * existed and Dragonfly's answers.  A bad document becomes a value to report,
 * never an ERROR that would abort a migration or a dispatch batch.
 */
#ifndef P2P_PREHEAT_JSON_SOFT_H
#define P2P_PREHEAT_JSON_SOFT_H

#include "utils/jsonb.h"

typedef struct JsonSoftError
{
	int			sqlstate;		/* 22P02 for syntax, 23514 for limits */
	char	   *message;
	char	   *detail;			/* may be NULL */
} JsonSoftError;

/* Returns the root (scalars wrapped as jsonb does) or NULL with *err set. */
extern JsonbValue *json_parse_soft(const char *json, int len, int max_depth,
								   JsonSoftError *err);

/* Depth of the deepest array or object, found without recursion. */
extern int	json_depth(const char *s, int len);

/* Member of an in-memory object, or NULL. */
extern JsonbValue *jbv_get(JsonbValue *obj, const char *key);


#endif
