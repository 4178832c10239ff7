/*
 * http.h
 *		Many HTTP transfers in flight from one backend, without blocking.
 *
 * libcurl's multi interface drives the transfers; its sockets live in an
 * epoll set that sits in a PostgreSQL WaitEventSet beside the process latch,
 * so query cancel, SIGTERM and postmaster death are noticed at once even
 * while every transfer is stalled.  Connections are kept between calls.
 *
 * Memory is bounded whatever the other end sends: one answer holds at most
 * p2p_preheat.max_answer_size, and the answers a process holds at once (in
 * flight, or delivered into a memory context that is still alive) at most
 * p2p_preheat.answer_memory.  A transfer that would go past either bound is
 * ended and reported as a transport failure, which callers retry later.
 */
#ifndef P2P_PREHEAT_HTTP_H
#define P2P_PREHEAT_HTTP_H

#include <curl/curl.h>

#include "lib/ilist.h"
#include "utils/palloc.h"

typedef struct HttpRequest
{
	/* set by the caller before http_start() */
	const char *url;
	const char *method;			/* "GET" or "POST" */
	const char *body;			/* POST body; not copied: keep it until done */
	const char *auth_header;	/* "Name: value", may be NULL; copied */
	bool		insecure;		/* skip TLS verification */
	void	   *arg;			/* the caller's */
	MemoryContext cxt;			/* where the answer goes; default: current */
	size_t		max_bytes;		/* largest answer kept; 0: p2p_preheat.max_answer_size */

	/* filled in when the transfer ends */
	bool		done;
	CURLcode	result;
	long		status;
	char	   *response;		/* palloc'd, NUL-terminated, may be NULL */
	size_t		response_len;
	char	   *location;		/* redirect target, palloc'd, or NULL */
	char		errbuf[CURL_ERROR_SIZE];

	/* private */
	bool		in_flight;		/* in libcurl, or in the worker's HTTP process */
	bool		parked;			/* waiting for a connection slot: see http.c */
	CURL	   *easy;
	struct curl_slist *headers;	/* its own header node (malloc'd), or NULL */
	char	   *buf;			/* malloc'd while libcurl writes into it */
	size_t		buf_len;
	size_t		buf_cap;
	size_t		buf_held;		/* bytes of buf counted in the budget */
	bool		too_large;
	bool		over_budget;
	char		refused[160];	/* why the endpoint guard refused, or "" */
	dlist_node	list_node;		/* in-flight, parked or unstarted list */
} HttpRequest;

/* Settings, from GUCs in p2p_preheat.c */
extern int	http_connect_timeout_ms;
extern int	http_request_timeout_ms;
extern int	http_max_in_flight;
extern char *http_ca_file;
extern bool http_allow_link_local;
extern bool http_debug;
extern char *http_proxy;
extern int	http_max_answer_kb;
extern int	http_answer_memory_kb;

extern void http_start(HttpRequest *req);

/*
 * Wait up to timeout_ms for transfers to progress.  Returns finished
 * requests, at most max, through done[].  Returns early, with 0, when the
 * latch is set; interrupts are checked before it returns.
 */
extern int	http_wait(long timeout_ms, HttpRequest **done, int max,
					  uint32 wait_event_info);

extern int	http_in_flight(void);

/* Whether this request is still under way (not done, canceled or aborted). */
extern bool http_in_progress(const HttpRequest *req);

/*
 * How many requests a caller may have started at once: max_in_flight, or
 * more when a helper process runs them (it queues what its connections
 * cannot take yet, so it keeps sending while the worker is in SQL).
 */
extern int	http_start_limit(void);

/* Hands requests started so far to the helper process now, if there is one. */
extern void http_flush(void);

/* Stop every transfer in flight (after an error, or on shutdown). */
extern void http_abort_all(void);
extern void http_cancel(HttpRequest *req, const char *why);

/* libcurl easy handles alive in this process, in flight or pooled. */
extern int	http_easy_handles(void);

/* Free the pooled handles (when going idle). */
extern void http_trim_pool(void);

/* At exit: stop transfers, free pooled handles and the multi handle. */
extern void http_shutdown(void);

/* A short, secret-free description of a transport failure. */
extern const char *http_error_text(const HttpRequest *req);

/*
 * Count bytes a caller keeps in cxt (an answer's parsed form) against
 * p2p_preheat.answer_memory until cxt is reset or deleted.  Returns false,
 * counting nothing, when that would go past the bound.
 */
extern bool http_hold(MemoryContext cxt, Size bytes);

/*
 * Why the endpoint guard refuses an address (AF_INET or AF_INET6, in
 * network order), or NULL.  Ignores p2p_preheat.allow_link_local.
 */
extern const char *http_address_refusal(int family, const unsigned char *addr);

#endif
