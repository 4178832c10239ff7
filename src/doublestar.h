/*
 * doublestar.h
 *		Harbor's repository and tag patterns, for C callers (events.c).
 */
#ifndef P2P_PREHEAT_DOUBLESTAR_H
#define P2P_PREHEAT_DOUBLESTAR_H

/*
 * Whether name (len bytes, server encoding) matches a Harbor doublestar
 * pattern; the pattern is compiled once per backend.  A malformed pattern is
 * an error.
 */
extern bool doublestar_matches(const char *pattern, const char *name, int len);

#endif
