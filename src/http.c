/*
 * http.c
 *		The libcurl multi engine shared by preheat_dispatch() and the worker.
 *
 * libcurl allocates with malloc and never sees palloc: responses are
 * collected in malloc'd buffers and copied into the caller's memory context
 * when a transfer ends, so an ERROR can never longjmp through libcurl.  Easy
 * handles that are still in flight when an ERROR is raised are reclaimed by
 * http_abort_all(), which callers run from PG_CATCH.
 *
 * What an answer may cost is bounded (see http.h): the bytes in flight and
 * the bytes delivered are counted in held_bytes; delivered bytes stay
 * counted until the memory context they went to is reset or deleted, which
 * a reset callback on that context reports back.
 *
 * Easy handles are kept in a small pool and reset between transfers
 * (curl_easy_reset keeps nothing of a request's options): creating and
 * destroying one per request cost more than the request itself on
 * loopback.  Connections live in the multi handle either way.  A POST body
 * is the caller's, not a copy: it stays where the caller can wipe it.
 *
 * Where a transfer may go is guarded at connect time, after DNS, so a name
 * cannot be rebound to a forbidden address; proxies from the environment
 * are never used, only p2p_preheat.proxy.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "http.h"
#include "http_channel.h"

#define USER_AGENT "p2p_preheat/" P2P_PREHEAT_VERSION

int			http_connect_timeout_ms = 5000;
int			http_request_timeout_ms = 30000;
int			http_max_in_flight = 64;
char	   *http_ca_file = NULL;
bool		http_allow_link_local = false;
bool		http_debug = false;
char	   *http_proxy = NULL;
int			http_max_answer_kb = 256;
int			http_answer_memory_kb = 16 * 1024;

PG_FUNCTION_INFO_V1(p2p_preheat_endpoint_refusal);

#define MAX_ANSWER_BYTES ((size_t) http_max_answer_kb * 1024)
#define ANSWER_MEMORY_BYTES ((size_t) http_answer_memory_kb * 1024)

/* Answers delivered into one memory context, released with it. */
typedef struct HeldAnswers
{
	MemoryContextCallback cb;
	MemoryContext cxt;
	Size		bytes;
	struct HeldAnswers *next;
} HeldAnswers;

static Size held_bytes = 0;
static HeldAnswers *held_list = NULL;

/* http_debug lines waiting to be logged (malloc'd) */
#define MAX_TRACE (256 * 1024)
static char *trace = NULL;
static size_t trace_len = 0;
static size_t trace_cap = 0;
static bool trace_dropped = false;

static CURLM *multi = NULL;
static int	epfd = -1;
static WaitEventSet *wes = NULL;
static TimestampTz timer_deadline = 0;	/* 0: no libcurl timer */
static int	in_flight = 0;		/* in libcurl */
static dlist_head in_flight_reqs = DLIST_STATIC_INIT(in_flight_reqs);

/*
 * Requests beyond max_in_flight wait here, not in libcurl: libcurl's own
 * queue of transfers waiting for a connection costs CPU for every transfer
 * it holds (measured: the HTTP process spent 20-26 us a job with three
 * times max_in_flight waiting in libcurl, 33-41 with seven times).  A
 * parked request's timeout starts when it leaves.  First in, first out.
 */
static dlist_head parked_reqs = DLIST_STATIC_INIT(parked_reqs);
static int	parked = 0;

/* Parked requests that could not be started: collect() ends them first. */
static dlist_head unstarted_reqs = DLIST_STATIC_INIT(unstarted_reqs);

/* Easy handles between transfers; at most POOL_MAX, and http_start_limit(). */
#define POOL_MAX 256
typedef struct PooledHandle
{
	CURL	   *easy;
	int			config;			/* the shared options it carries: see handle_config */
} PooledHandle;
static PooledHandle pool[POOL_MAX];
static int	pool_len = 0;
static int	easy_handles = 0;	/* alive, pooled or in flight: see http_easy_handles() */

/*
 * The options every request shares are set once on a handle, not at each
 * transfer (a full reset and twenty options cost more than the request on
 * loopback).  They depend on these settings; when one changes (a reload),
 * handle_config moves on and older handles are reset before their next use.
 */
static int	handle_config = 0;
static const char *config_proxy = NULL;
static const char *config_ca_file = NULL;
static bool config_debug = false;

/*
 * The interest registered in epfd for each socket, so that a transfer on a
 * kept connection costs no epoll_ctl() when nothing changes.  A socket
 * libcurl stops watching stays registered until it reports an event no one
 * wants (then it is removed): between two requests on one connection, that
 * saves a removal and an addition.  Every socket libcurl uses is opened by
 * on_open_socket(), which forgets what an earlier socket of that number
 * had, and closed by on_close_socket(), which forgets it (closing a socket
 * removes it from epfd).  Sockets libcurl makes itself (its resolver's)
 * are registered and removed as libcurl asks, as before.
 */
#define WATCH_MAX 4096
static uint8 registered[WATCH_MAX];	/* EPOLLIN/EPOLLOUT bits, or 0 */
static uint8 wanted[WATCH_MAX];
#define REG_IN	1
#define REG_OUT 2
#define REG_ON	4
#define REG_OURS 8				/* opened by on_open_socket(), not yet closed */

/*
 * Headers shared by every request, never freed; a request with an
 * Authorization header puts one node of its own in front (req->headers).
 */
static struct curl_slist *get_headers = NULL;
static struct curl_slist *post_headers = NULL;

static void
watch(curl_socket_t s, uint8 bits)
{
	struct epoll_event ev = {0};

	ev.data.fd = s;
	ev.events = ((bits & REG_IN) ? EPOLLIN : 0) | ((bits & REG_OUT) ? EPOLLOUT : 0);
	if (s < 0 || s >= WATCH_MAX || !(registered[s] & REG_OURS))
	{
		/* not ours, or beyond the table: registered at every change, as libcurl asks */
		if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
			epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
		return;
	}
	if (registered[s] == (bits | REG_ON | REG_OURS))
		return;
	if (epoll_ctl(epfd, (registered[s] & REG_ON) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0 &&
		epoll_ctl(epfd, (registered[s] & REG_ON) ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev) != 0)
	{
		registered[s] = REG_OURS;
		return;
	}
	registered[s] = bits | REG_ON | REG_OURS;
}

static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	uint8		bits = ((what & CURL_POLL_IN) ? REG_IN : 0) | ((what & CURL_POLL_OUT) ? REG_OUT : 0);

	if (what == CURL_POLL_REMOVE)
	{
		if (s >= 0 && s < WATCH_MAX && (registered[s] & REG_OURS))
			wanted[s] = 0;		/* removed lazily: see registered[] */
		else
			epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	if (s >= 0 && s < WATCH_MAX)
		wanted[s] = bits | REG_ON;
	watch(s, bits);
	return 0;
}

/* An event on a socket libcurl no longer watches: stop watching it too. */
static bool
unwanted(int fd)
{
	if (fd < 0 || fd >= WATCH_MAX || !(registered[fd] & REG_OURS) || wanted[fd] != 0)
		return false;
	epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	registered[fd] = REG_OURS;
	return true;
}

static int
on_timer(CURLM *m, long timeout_ms, void *userp)
{
	timer_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

static void
release_held(void *arg)
{
	HeldAnswers *h = arg;

	held_bytes -= Min(h->bytes, held_bytes);
	for (HeldAnswers **p = &held_list; *p; p = &(*p)->next)
	{
		if (*p == h)
		{
			*p = h->next;
			break;
		}
	}
}

static void
hold_always(MemoryContext cxt, Size bytes)
{
	HeldAnswers *h;

	for (h = held_list; h; h = h->next)
		if (h->cxt == cxt)
			break;
	if (h == NULL)
	{
		h = MemoryContextAllocZero(cxt, sizeof(HeldAnswers));
		h->cxt = cxt;
		h->cb.func = release_held;
		h->cb.arg = h;
		MemoryContextRegisterResetCallback(cxt, &h->cb);
		h->next = held_list;
		held_list = h;
	}
	h->bytes += bytes;
	held_bytes += bytes;
}

bool
http_hold(MemoryContext cxt, Size bytes)
{
	if (held_bytes + bytes > ANSWER_MEMORY_BYTES)
		return false;
	hold_always(cxt, bytes);
	return true;
}

static const char *
ipv4_refusal(const unsigned char *a)
{
	if (a[0] == 0)
		return "an unspecified address (0.0.0.0/8)";
	if (a[0] == 169 && a[1] == 254)
	{
		if (a[2] == 169 && a[3] == 254)
			return "a cloud metadata address (169.254.169.254)";
		if (a[2] == 170 && a[3] == 2)
			return "a cloud metadata address (169.254.170.2, container credentials)";
		return "a link-local address (169.254.0.0/16)";
	}
	if (a[0] == 100 && a[1] == 100 && a[2] == 100 && a[3] == 200)
		return "a cloud metadata address (100.100.100.200)";
	return NULL;
}

/* An IPv6 form that carries an IPv4 address: refused as that address is. */
static const char *
embedded_refusal(const char *form, const unsigned char *v4)
{
	static char buf[160];
	const char *why = ipv4_refusal(v4);

	if (why == NULL)
		return NULL;
	snprintf(buf, sizeof(buf), "%s of %s", form, why);
	return buf;
}

/*
 * Metadata services answer with cloud credentials to whoever asks, and an
 * unspecified address reaches the local host.  Plain IPv4 and every IPv6
 * form that carries an IPv4 address (mapped, compatible, translated, NAT64,
 * 6to4) are checked alike.  Loopback is allowed: it is where the stand-in
 * and sidecar proxies live.
 */
const char *
http_address_refusal(int family, const unsigned char *a)
{
	static const unsigned char zero[16] = {0};
	static const unsigned char aws6[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0x02, 0x54};

	if (family == AF_INET)
		return ipv4_refusal(a);
	if (family != AF_INET6)
		return NULL;
	if (memcmp(a, zero, 16) == 0)
		return "an unspecified address (::)";
	if (memcmp(a, zero, 15) == 0 && a[15] == 1)
		return NULL;			/* ::1 */
	if (memcmp(a, zero, 12) == 0)
		return embedded_refusal("an IPv4-compatible form", a + 12);
	if (memcmp(a, zero, 10) == 0 && a[10] == 0xff && a[11] == 0xff)
		return embedded_refusal("an IPv4-mapped form", a + 12);
	if (memcmp(a, zero, 8) == 0 && a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0)
		return embedded_refusal("an IPv4-translated form", a + 12);
	if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b &&
		(memcmp(a + 4, zero, 8) == 0 || (a[4] == 0 && a[5] == 1)))
		return embedded_refusal("a NAT64 form", a + 12);
	if (a[0] == 0x20 && a[1] == 0x02)
		return embedded_refusal("a 6to4 form", a + 2);
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return "a link-local address (fe80::/10)";
	if (memcmp(a, aws6, 16) == 0)
		return "a cloud metadata address (fd00:ec2::254)";
	return NULL;
}

/* Runs inside libcurl: no palloc, no elog. */
static curl_socket_t
on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	HttpRequest *req = clientp;

	if (!http_allow_link_local)
	{
		const unsigned char *a = NULL;
		const char *why;

		if (addr->family == AF_INET)
			a = (const unsigned char *) &((struct sockaddr_in *) &addr->addr)->sin_addr;
		else if (addr->family == AF_INET6)
			a = ((struct sockaddr_in6 *) &addr->addr)->sin6_addr.s6_addr;
		if (a && (why = http_address_refusal(addr->family, a)) != NULL)
		{
			char		host[INET6_ADDRSTRLEN] = "?";

			inet_ntop(addr->family, a, host, sizeof(host));
			snprintf(req->refused, sizeof(req->refused),
					 "refused to connect to %s, %s (p2p_preheat.allow_link_local is off)",
					 host, why);
			return CURL_SOCKET_BAD;
		}
	}
	{
		curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);

		/* a new socket: nothing registered for its number yet */
		if (fd >= 0 && fd < WATCH_MAX)
		{
			registered[fd] = REG_OURS;
			wanted[fd] = 0;
		}
		return fd;
	}
}

/* Runs inside libcurl: no palloc, no elog. */
static int
on_close_socket(void *clientp, curl_socket_t s)
{
	if (s >= 0 && s < WATCH_MAX)
		registered[s] = wanted[s] = 0;
	return close(s);
}

/* Headers whose values http_debug shows; every other value is redacted. */
static const char *const shown_headers[] = {
	"host", "user-agent", "accept", "content-type", "content-length", "expect",
	"connection", "transfer-encoding", "date", "server", "keep-alive", NULL
};

static bool
value_shown(const char *line, const char *colon)
{
	size_t		len = colon - line;

	for (const char *c = line; c < colon; c++)
		if (*c == ' ' || *c == '\t')
			return true;		/* a request or status line, not a header */
	for (int i = 0; shown_headers[i]; i++)
		if (strlen(shown_headers[i]) == len && pg_strncasecmp(line, shown_headers[i], len) == 0)
			return true;
	return false;
}

/*
 * p2p_preheat.http_debug: libcurl's own trace, line by line.  Header values
 * are shown only for the harmless headers above: a credential can travel
 * under any name (CUSTOM auth picks its own), and an answer can echo one
 * back under any name.  Bodies are never traced: they carry registry
 * tokens and passwords.  This runs inside libcurl, so lines are collected
 * in a malloc'd buffer and logged by flush_trace() after libcurl returns.
 */
static int
on_debug(CURL *handle, curl_infotype type, char *data, size_t size, void *userp)
{
	const char *dir;
	size_t		start = 0;

	switch (type)
	{
		case CURLINFO_TEXT:
			dir = "*";
			break;
		case CURLINFO_HEADER_OUT:
			dir = ">";
			break;
		case CURLINFO_HEADER_IN:
			dir = "<";
			break;
		default:
			return 0;
	}
	while (start < size)
	{
		size_t		end = start;
		size_t		len;
		size_t		need;
		char	   *line;
		char	   *colon;

		while (end < size && data[end] != '\r' && data[end] != '\n')
			end++;
		len = end - start;
		need = trace_len + len + strlen(dir) + sizeof(" [redacted]") + 2;
		if (len > 0 && need <= MAX_TRACE)
		{
			if (need > trace_cap)
			{
				size_t		cap = Min(Max(need, trace_cap * 2), MAX_TRACE);
				char	   *nbuf = realloc(trace, cap);

				if (nbuf == NULL)
					return 0;
				trace = nbuf;
				trace_cap = cap;
			}
			line = trace + trace_len;
			trace_len += sprintf(line, "%s ", dir);
			memcpy(trace + trace_len, data + start, len);
			trace[trace_len + len] = '\0';
			colon = memchr(trace + trace_len, ':', len);
			if (type != CURLINFO_TEXT && colon && !value_shown(trace + trace_len, colon))
				trace_len = (colon + 1 - trace) + sprintf(colon + 1, " [redacted]");
			else
				trace_len += len;
			trace[trace_len++] = '\n';
			trace[trace_len] = '\0';
		}
		else if (len > 0)
			trace_dropped = true;
		start = end + 1;
	}
	return 0;
}

/* The trace collected during libcurl's calls, logged once they returned. */
static void
flush_trace(void)
{
	char	   *line;
	char	   *nl;

	if (trace_len == 0 && !trace_dropped)
		return;
	for (line = trace; line && line < trace + trace_len; line = nl + 1)
	{
		nl = strchr(line, '\n');
		*nl = '\0';
		elog(LOG, "p2p_preheat http %s", line);
	}
	if (trace_dropped)
		elog(LOG, "p2p_preheat http: trace lines dropped (over %d bytes between two waits)",
			 MAX_TRACE);
	trace_len = 0;
	trace_dropped = false;
}

static size_t
on_data(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpRequest *req = userp;
	size_t		n = size * nmemb;
	size_t		max = req->max_bytes > 0 ? req->max_bytes : MAX_ANSWER_BYTES;

	if (req->buf_len + n + 1 > max)
	{
		req->too_large = true;
		return 0;				/* makes libcurl end the transfer */
	}
	if (req->buf_len + n + 1 > req->buf_cap)
	{
		size_t		cap = Max(Max(req->buf_cap * 2, req->buf_len + n + 1), 1024);
		char	   *nbuf;

		cap = Min(cap, max);
		if (held_bytes + (cap - req->buf_held) > ANSWER_MEMORY_BYTES)
		{
			req->over_budget = true;
			return 0;
		}
		nbuf = realloc(req->buf, cap);
		if (nbuf == NULL)
			return 0;
		held_bytes += cap - req->buf_held;
		req->buf = nbuf;
		req->buf_cap = req->buf_held = cap;
	}
	memcpy(req->buf + req->buf_len, data, n);
	req->buf_len += n;
	req->buf[req->buf_len] = '\0';
	return n;
}

static void
engine_init(void)
{
	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		elog(ERROR, "could not initialize libcurl");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		elog(ERROR, "could not create epoll set: %m");
	/* the headers every request sends; "Expect:": no 100-continue round trip */
	if (get_headers == NULL)
	{
		get_headers = curl_slist_append(curl_slist_append(NULL, "Accept: application/json"),
										"Expect:");
		post_headers = curl_slist_append(curl_slist_append(curl_slist_append(NULL,
																			 "Accept: application/json"),
														   "Content-Type: application/json"),
										 "Expect:");
		if (get_headers == NULL || post_headers == NULL)
			elog(ERROR, "out of memory");
	}
	multi = curl_multi_init();
	if (multi == NULL)
	{
		close(epfd);
		epfd = -1;
		elog(ERROR, "could not create a libcurl multi handle");
	}
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) http_max_in_flight);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) http_max_in_flight);

	wes = p2p_process_wait_event_set(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, epfd, NULL, NULL);
}

/* A request's own header node holds the Authorization value: wiped, then freed. */
static void
free_own_header(HttpRequest *req)
{
	if (req->headers)
	{
		explicit_bzero(req->headers->data, strlen(req->headers->data));
		free(req->headers->data);
		free(req->headers);
		req->headers = NULL;
	}
}

/* The options a request sets of its own, cleared before a handle is pooled. */
static void
forget_request(CURL *e)
{
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, -1L);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, NULL);
	curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, NULL);
}

/* The options every request shares (see handle_config). */
static void
configure_handle(CURL *e)
{
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
	/* http_proxy, https_proxy, all_proxy and no_proxy are never read */
	curl_easy_setopt(e, CURLOPT_PROXY, http_proxy && http_proxy[0] ? http_proxy : "");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	if (http_debug)
	{
		curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
		curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
	}
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	if (http_ca_file && http_ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, http_ca_file);
}

/* A handle carrying the shared options of the settings in force. */
static CURL *
take_handle(void)
{
	CURL	   *e;

	if (http_proxy != config_proxy || http_ca_file != config_ca_file || http_debug != config_debug)
	{
		handle_config++;
		config_proxy = http_proxy;
		config_ca_file = http_ca_file;
		config_debug = http_debug;
	}
	if (pool_len > 0)
	{
		PooledHandle *p = &pool[--pool_len];

		e = p->easy;
		if (p->config == handle_config)
			return e;
		curl_easy_reset(e);
	}
	else
	{
		e = curl_easy_init();
		if (e == NULL)
			elog(ERROR, "could not create a libcurl handle");
		easy_handles++;
	}
	configure_handle(e);
	return e;
}

static void
release_request(HttpRequest *req)
{
	if (req->easy)
	{
		curl_multi_remove_handle(multi, req->easy);
		if (pool_len < Min(http_start_limit(), POOL_MAX))
		{
			/* nothing of this request stays set: its headers and body go below */
			forget_request(req->easy);
			pool[pool_len].easy = req->easy;
			pool[pool_len++].config = handle_config;
		}
		else
		{
			curl_easy_cleanup(req->easy);
			easy_handles--;
		}
		req->easy = NULL;
		req->in_flight = false;
		in_flight--;
		dlist_delete(&req->list_node);
	}
	free_own_header(req);
	free(req->buf);
	req->buf = NULL;
	held_bytes -= Min(req->buf_held, held_bytes);
	req->buf_held = 0;
	req->buf_len = req->buf_cap = 0;
}

/*
 * Hands a request to libcurl.  Returns NULL, or why it could not: then
 * nothing of the request is left in libcurl or the pool's handle.
 */
static const char *
launch(HttpRequest *req)
{
	CURL	   *e;
	struct curl_slist *headers;

	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) http_max_in_flight);
	e = take_handle();
	req->easy = e;
	headers = get_headers;
	if (strcmp(req->method, "POST") == 0)
	{
		headers = post_headers;
		/* not copied: the caller keeps (and wipes) it until the transfer ends */
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long) strlen(req->body));
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
	}
	else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	req->headers = NULL;
	if (req->auth_header)
	{
		/* this request's own header, in front of the shared ones */
		req->headers = malloc(sizeof(struct curl_slist));
		if (req->headers)
		{
			req->headers->data = strdup(req->auth_header);
			if (req->headers->data == NULL)
			{
				free(req->headers);
				req->headers = NULL;
			}
		}
		if (req->headers == NULL)
		{
			forget_request(e);	/* nothing of this request may stay set */
			pool[pool_len].easy = e;
			pool[pool_len++].config = handle_config;
			req->easy = NULL;
			return "out of memory";
		}
		req->headers->next = headers;
		headers = req->headers;
	}

	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) http_connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) http_request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, req->insecure ? 0L : 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, req->insecure ? 0L : 2L);

	if (curl_multi_add_handle(multi, e) != CURLM_OK)
	{
		curl_easy_cleanup(e);
		easy_handles--;
		req->easy = NULL;
		free_own_header(req);
		return "could not start an HTTP transfer";
	}
	in_flight++;
	req->in_flight = true;
	dlist_push_head(&in_flight_reqs, &req->list_node);
	return NULL;
}

static void
unpark(HttpRequest *req)
{
	dlist_delete(&req->list_node);
	req->parked = false;
	parked--;
}

/* Parked requests take the connections that transfers have let go of. */
static void
start_parked(void)
{
	while (!dlist_is_empty(&parked_reqs) && in_flight < http_max_in_flight)
	{
		HttpRequest *req = dlist_head_element(HttpRequest, list_node, &parked_reqs);
		const char *why;

		unpark(req);
		why = launch(req);
		if (why != NULL)
		{
			req->in_flight = false;
			http_end_early(req, CURLE_FAILED_INIT, why);
			dlist_push_tail(&unstarted_reqs, &req->list_node);
		}
	}
}

void
http_start(HttpRequest *req)
{
	const char *why;

	if (http_channel_on)
	{
		http_channel_start(req);
		return;
	}

	engine_init();
	req->in_flight = false;
	req->parked = false;
	req->easy = NULL;
	req->done = false;
	if (req->cxt == NULL)
		req->cxt = CurrentMemoryContext;
	req->errbuf[0] = '\0';
	req->refused[0] = '\0';
	req->too_large = req->over_budget = false;
	req->buf = NULL;
	req->buf_len = req->buf_cap = req->buf_held = 0;
	req->headers = NULL;
	if (in_flight >= http_max_in_flight || !dlist_is_empty(&parked_reqs))
	{
		req->parked = true;
		req->in_flight = true;
		dlist_push_tail(&parked_reqs, &req->list_node);
		parked++;
		return;
	}
	why = launch(req);
	if (why != NULL)
		elog(ERROR, "%s", why);
}

/* Move finished transfers to done[]. */
static int
collect(HttpRequest **done, int max)
{
	CURLMsg    *msg;
	int			left;
	int			n = 0;

	while (n < max && !dlist_is_empty(&unstarted_reqs))
		done[n++] = dlist_container(HttpRequest, list_node, dlist_pop_head_node(&unstarted_reqs));
	while (n < max && (msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		HttpRequest *req;
		char	   *loc = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
		curl_easy_getinfo(req->easy, CURLINFO_REDIRECT_URL, &loc);
		/* answers live as long as their request */
		req->location = loc ? MemoryContextStrdup(req->cxt, loc) : NULL;
		if (req->too_large)
		{
			req->result = CURLE_FILESIZE_EXCEEDED;
			if (req->max_bytes > 0)
				snprintf(req->errbuf, sizeof(req->errbuf),
						 "the answer is larger than %zu kB", req->max_bytes / 1024);
			else
				snprintf(req->errbuf, sizeof(req->errbuf),
						 "the answer is larger than p2p_preheat.max_answer_size (%d kB)",
						 http_max_answer_kb);
		}
		else if (req->over_budget)
		{
			req->result = CURLE_WRITE_ERROR;
			snprintf(req->errbuf, sizeof(req->errbuf),
					 "answers held by this process fill p2p_preheat.answer_memory (%d kB); "
					 "the answer was dropped",
					 http_answer_memory_kb);
		}
		req->response = NULL;
		req->response_len = 0;
		if (req->buf && req->result == CURLE_OK)
		{
			req->response = MemoryContextAlloc(req->cxt, req->buf_len + 1);
			memcpy(req->response, req->buf, req->buf_len);
			req->response[req->buf_len] = '\0';
			req->response_len = req->buf_len;
		}
		release_request(req);
		if (req->response)
			hold_always(req->cxt, req->response_len + 1);
		req->done = true;
		done[n++] = req;
	}
	start_parked();
	return n;
}

int
http_wait(long timeout_ms, HttpRequest **done, int max, uint32 wait_event_info)
{
	WaitEvent	events[3];
	int			running;
	int			nevents;
	int			n;

	if (http_channel_on || http_channel_in_flight() > 0)
		return http_channel_wait(timeout_ms, done, max, wait_event_info);

	engine_init();
	n = collect(done, max);
	if (n > 0)
		return n;

	if (timer_deadline != 0)
	{
		long		secs;
		int			usecs;
		long		until;

		TimestampDifference(GetCurrentTimestamp(), timer_deadline, &secs, &usecs);
		until = secs * 1000 + usecs / 1000;
		if (until < timeout_ms)
			timeout_ms = until;
	}
	/* a negative timeout would wait for ever: never what a caller means */
	nevents = WaitEventSetWait(wes, Max(timeout_ms, 0), events, lengthof(events), wait_event_info);
	for (int i = 0; i < nevents; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (events[i].events & WL_SOCKET_READABLE)
		{
			struct epoll_event ready[64];
			int			nready = epoll_wait(epfd, ready, lengthof(ready), 0);

			for (int j = 0; j < nready; j++)
			{
				int			flags = 0;

				if (unwanted(ready[j].data.fd))
					continue;

				if (ready[j].events & EPOLLIN)
					flags |= CURL_CSELECT_IN;
				if (ready[j].events & EPOLLOUT)
					flags |= CURL_CSELECT_OUT;
				if (ready[j].events & (EPOLLERR | EPOLLHUP))
					flags |= CURL_CSELECT_ERR;
				curl_multi_socket_action(multi, ready[j].data.fd, flags, &running);
			}
		}
	}
	if (timer_deadline != 0 && GetCurrentTimestamp() >= timer_deadline)
	{
		timer_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	flush_trace();
	CHECK_FOR_INTERRUPTS();
	return collect(done, max);
}

/* Ends one transfer before its answer: it finishes as a failed transfer. */
void
http_cancel(HttpRequest *req, const char *why)
{
	if (http_channel_on)
	{
		http_channel_cancel(req, why);
		return;
	}
	if (req->parked)
	{
		unpark(req);
		req->in_flight = false;
		http_end_early(req, CURLE_ABORTED_BY_CALLBACK, why);
		return;
	}
	if (req->done || req->easy == NULL)
		return;
	release_request(req);
	http_end_early(req, CURLE_ABORTED_BY_CALLBACK, why);
	start_parked();
}

/* A request that ends without an answer, as a failed transfer. */
void
http_end_early(HttpRequest *req, CURLcode result, const char *why)
{
	req->result = result;
	req->status = 0;
	req->response = NULL;
	req->response_len = 0;
	req->location = NULL;
	strlcpy(req->errbuf, why, sizeof(req->errbuf));
	req->done = true;
}

bool
http_in_progress(const HttpRequest *req)
{
	return req->in_flight;
}

int
http_in_flight(void)
{
	/* the helper's, and answers from it not yet taken */
	return in_flight + parked + http_channel_in_flight();
}

int
http_start_limit(void)
{
	return http_channel_on || http_in_helper ?
		http_max_in_flight * HTTP_CHANNEL_DEPTH : http_max_in_flight;
}

void
http_flush(void)
{
	if (http_channel_on)
		http_channel_flush();
}

void
http_abort_all(void)
{
	http_channel_abort_all();
	trace_len = 0;				/* nothing may be logged from here: we may be in PG_CATCH */
	trace_dropped = false;
	while (!dlist_is_empty(&in_flight_reqs))
		release_request(dlist_head_element(HttpRequest, list_node, &in_flight_reqs));
	while (!dlist_is_empty(&parked_reqs))
	{
		HttpRequest *req = dlist_head_element(HttpRequest, list_node, &parked_reqs);

		unpark(req);
		req->in_flight = false;
	}
	dlist_init(&unstarted_reqs);	/* ended already; their callers drop them */
	/* finished transfers not yet collected belong to the same requests */
	if (multi)
	{
		CURLMsg    *msg;
		int			left;

		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
			;
	}
}

int
http_easy_handles(void)
{
	return easy_handles;
}

/* Pooled handles go back to libcurl (an idle process keeps none). */
void
http_trim_pool(void)
{
	if (http_channel_on)
		http_channel_trim();
	while (pool_len > 0)
	{
		curl_easy_cleanup(pool[--pool_len].easy);
		easy_handles--;
	}
}

/* Every pooled handle, and the pool's connections, go back to libcurl. */
void
http_shutdown(void)
{
	http_channel_close();
	http_abort_all();
	http_trim_pool();
	/* every handle made is either in flight or pooled: none may be left */
	if (easy_handles != 0)
		elog(LOG, "p2p_preheat: %d libcurl handles were not returned", easy_handles);
	if (multi)
	{
		curl_multi_cleanup(multi);
		multi = NULL;
	}
}

const char *
http_error_text(const HttpRequest *req)
{
	if (req->refused[0] && !req->too_large && !req->over_budget)
		return req->refused;
	/* errbuf names hosts and reasons, never headers or bodies */
	return req->errbuf[0] ? req->errbuf : curl_easy_strerror(req->result);
}

/*
 * p2p_preheat_endpoint_refusal(address text) RETURNS text: why the endpoint
 * guard would refuse to connect to this address now, or NULL.
 */
Datum
p2p_preheat_endpoint_refusal(PG_FUNCTION_ARGS)
{
	char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(0));
	size_t		len = strlen(s);
	unsigned char a[16];
	int			family;
	const char *why;

	if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
	{
		s[len - 1] = '\0';
		s++;
	}
	if (inet_pton(AF_INET, s, a) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, s, a) == 1)
		family = AF_INET6;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid address: \"%s\"", s),
				 errhint("Give an IPv4 or IPv6 address, such as 169.254.169.254 or ::ffff:169.254.169.254.")));
	if (http_allow_link_local)
		PG_RETURN_NULL();
	why = http_address_refusal(family, a);
	if (why == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(why));
}
