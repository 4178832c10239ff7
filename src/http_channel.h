/*
 * http_channel.h
 *		The worker's transfers, run by a helper process of its own.
 *
 * A job costs the worker about as much CPU in SQL (claim, record) as in
 * HTTP (libcurl and the kernel's TCP).  In one process the two take turns;
 * with the transfers in a helper ("p2p_preheat http", no database
 * connection) they overlap on two cores.  The worker and the helper share a
 * DSM segment holding two shm_mq rings, one each way.  Every call in http.h
 * keeps its meaning while the channel is open, so dispatch.c cannot tell
 * where a transfer runs.
 *
 * A message is a run of records, each a type byte and its fields: integers
 * in the sender's byte order (both ends are one machine), strings as a
 * uint32 length (NO_STRING for NULL) and their bytes.
 */
#ifndef P2P_PREHEAT_HTTP_CHANNEL_H
#define P2P_PREHEAT_HTTP_CHANNEL_H

#include "lib/stringinfo.h"

#include "http.h"

/* worker -> helper */
#define CH_START	'S'			/* id, flags, max_bytes, url, body, auth header */
#define CH_CANCEL	'C'			/* id: end it, answer nothing */
#define CH_ABORT	'A'			/* end every transfer, answer nothing */
#define CH_TRIM		'T'			/* going idle: give pooled handles back */
#define CH_CONFIG	'G'			/* count, then name and value of each setting */
/* helper -> worker */
#define CH_DONE		'D'			/* id, result, status, flags, refused, errbuf, location, answer */

#define CH_POST			0x01	/* CH_START: POST, else GET */
#define CH_INSECURE		0x02
#define CH_TOO_LARGE	0x01	/* CH_DONE */
#define CH_OVER_BUDGET	0x02

#define CH_NO_STRING	0xFFFFFFFFu

/*
 * Requests the worker may hand over at once, in multiples of max_in_flight:
 * a record and claim take the worker a few milliseconds, and the helper
 * should not run dry meanwhile.
 */
#define HTTP_CHANNEL_DEPTH	4

/* Answers the helper sends in one message, and the longest it holds one. */
#define CH_ANSWER_GROUP		64
#define CH_ANSWER_WAIT_MS	1
#define CH_ANSWER_BYTES		((int) (256 * 1024))

/* Each ring; an answer larger than a ring streams through it in pieces. */
#define CH_RING_SIZE	((Size) 512 * 1024)

typedef struct ChannelHeader
{
	uint32		magic;
} ChannelHeader;

#define CH_MAGIC	0x70327068

/* The segment: header, then the ring to the helper, then the ring back. */
#define CH_TO_HELPER_OFFSET		MAXALIGN(sizeof(ChannelHeader))
#define CH_FROM_HELPER_OFFSET	(CH_TO_HELPER_OFFSET + CH_RING_SIZE)
#define CH_SEGMENT_SIZE			(CH_FROM_HELPER_OFFSET + CH_RING_SIZE)

/* A reader over one received message. */
typedef struct ChannelReader
{
	const char *p;
	const char *end;
} ChannelReader;

static inline void
ch_put_u32(StringInfo s, uint32 v)
{
	appendBinaryStringInfo(s, (const char *) &v, sizeof(v));
}

static inline void
ch_put_u64(StringInfo s, uint64 v)
{
	appendBinaryStringInfo(s, (const char *) &v, sizeof(v));
}

static inline void
ch_put_str(StringInfo s, const char *str, size_t len)
{
	if (str == NULL)
	{
		ch_put_u32(s, CH_NO_STRING);
		return;
	}
	ch_put_u32(s, (uint32) len);
	appendBinaryStringInfo(s, str, (int) len);
}

static inline bool
ch_get(ChannelReader *r, void *out, size_t n)
{
	if ((size_t) (r->end - r->p) < n)
		return false;
	memcpy(out, r->p, n);
	r->p += n;
	return true;
}

/* A string in place (not NUL-terminated): *str NULL for a NULL string. */
static inline bool
ch_get_str(ChannelReader *r, const char **str, uint32 *len)
{
	if (!ch_get(r, len, sizeof(uint32)))
		return false;
	if (*len == CH_NO_STRING)
	{
		*str = NULL;
		*len = 0;
		return true;
	}
	if ((size_t) (r->end - r->p) < *len)
		return false;
	*str = r->p;
	r->p += *len;
	return true;
}

/* Worker side (http_channel.c) */
extern bool http_channel_on;
extern bool http_channel_open(void);
extern void http_channel_close(void);
extern void http_channel_start(HttpRequest *req);
extern int	http_channel_wait(long timeout_ms, HttpRequest **done, int max,
							  uint32 wait_event_info);
extern void http_channel_cancel(HttpRequest *req, const char *why);
extern void http_channel_abort_all(void);
extern void http_channel_trim(void);
extern void http_channel_flush(void);
extern int	http_channel_in_flight(void);

/* http.c: a request that ends without an answer, as a failed transfer */
extern void http_end_early(HttpRequest *req, CURLcode result, const char *why);

/* Helper side (http_process.c): set in the helper; its entry point */
extern bool http_in_helper;
extern PGDLLEXPORT void p2p_preheat_http_main(Datum arg);

#endif
