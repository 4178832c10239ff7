/*
 * compat.h: the server APIs that differ between the PostgreSQL majors we
 * support (15, which Harbor up to 2.15 ships, and 18, which Harbor 2.16
 * ships).  Every PG_VERSION_NUM test lives here, so the rest of the code
 * reads as if written for one version.
 */
#ifndef P2P_PREHEAT_COMPAT_H
#define P2P_PREHEAT_COMPAT_H

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"				/* 16 moved VARDATA_ANY and friends here */
#endif

/*
 * 18 removed pg_attribute_noreturn(), placed after a declaration, for
 * pg_noreturn, placed before it.  GCC and Clang accept the attribute in
 * front, so 15 gets pg_noreturn too.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/*
 * 17 lets the caller supply the lexer struct (NULL: palloc one) and takes
 * the text as const.
 */
static inline JsonLexContext *
p2p_json_lexer(const char *json, size_t len, bool need_escapes)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, json, len, GetDatabaseEncoding(),
										need_escapes);
#else
	return makeJsonLexContextCstringLen(unconstify(char *, json), (int) len,
										GetDatabaseEncoding(), need_escapes);
#endif
}

/*
 * 16 made JSON parser callbacks return a JsonParseErrorType.  Ours never
 * fail: they are declared P2P_JSON_CB and end with P2P_JSON_CONTINUE.
 */
#if PG_VERSION_NUM >= 160000
#define P2P_JSON_CB JsonParseErrorType
#define P2P_JSON_CONTINUE return JSON_SUCCESS
#else
#define P2P_JSON_CB void
#define P2P_JSON_CONTINUE return
#endif

/* 18 types the binary side of base64 as uint8 instead of char. */
#if PG_VERSION_NUM >= 180000
#define P2P_B64_BYTES uint8
#else
#define P2P_B64_BYTES char
#endif

/* 17 moved the backend's local transaction id into MyProc->vxid. */
#if PG_VERSION_NUM >= 170000
#define P2P_MY_LXID (MyProc->vxid.lxid)
#else
#define P2P_MY_LXID (MyProc->lxid)
#endif

/*
 * 17 ties a WaitEventSet to a resource owner instead of a memory context.
 * Ours lives as long as the process: no owner, TopMemoryContext.
 */
static inline WaitEventSet *
p2p_process_wait_event_set(int nevents)
{
#if PG_VERSION_NUM >= 170000
	return CreateWaitEventSet(NULL, nevents);
#else
	return CreateWaitEventSet(TopMemoryContext, nevents);
#endif
}

/*
 * A GUC check hook's *extra: the server frees it with free() up to 15 and
 * with guc_free() (a palloc chunk) from 16 on, so it must come from the
 * matching allocator.
 */
#if PG_VERSION_NUM >= 160000
#define p2p_guc_malloc(size) guc_malloc(LOG, (size))
#define p2p_guc_free(ptr) guc_free(ptr)
#else
#define p2p_guc_malloc(size) malloc(size)
#define p2p_guc_free(ptr) free(ptr)
#endif

#endif							/* P2P_PREHEAT_COMPAT_H */
