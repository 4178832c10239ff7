/*
 * http.c
 *		The libcurl multi engine shared by preheat_dispatch() and the worker.
 *
 * libcurl allocates with malloc and never sees palloc: responses are
 * collected in malloc'd buffers and copied into the caller's memory context
 * when a transfer ends, so an ERROR can never longjmp through libcurl.  Easy
 * handles that are still in flight when an ERROR is raised are reclaimed by
 * http_abort_all(), which callers run from PG_CATCH.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "http.h"

#define MAX_RESPONSE_BYTES (4 * 1024 * 1024)
#define USER_AGENT "p2p_preheat/" P2P_PREHEAT_VERSION

int			http_connect_timeout_ms = 5000;
int			http_request_timeout_ms = 30000;
int			http_max_in_flight = 64;
char	   *http_ca_file = NULL;
bool		http_allow_link_local = false;
bool		http_debug = false;

static CURLM *multi = NULL;
static int	epfd = -1;
static WaitEventSet *wes = NULL;
static TimestampTz timer_deadline = 0;	/* 0: no libcurl timer */
static int	in_flight = 0;
static HttpRequest *in_flight_list = NULL;
static bool latch_fired = false;

static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev = {0};

	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	ev.data.fd = s;
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
		((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

static int
on_timer(CURLM *m, long timeout_ms, void *userp)
{
	timer_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/*
 * Refuse link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata
 * services) at connect time, after DNS, so a name cannot be rebound to one.
 */
static curl_socket_t
on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	HttpRequest *req = clientp;

	if (!http_allow_link_local)
	{
		if (addr->family == AF_INET)
		{
			uint32		a = ntohl(((struct sockaddr_in *) &addr->addr)->sin_addr.s_addr);

			if ((a & 0xFFFF0000) == 0xA9FE0000)
			{
				req->link_local = true;
				return CURL_SOCKET_BAD;
			}
		}
		else if (addr->family == AF_INET6)
		{
			const unsigned char *b = ((struct sockaddr_in6 *) &addr->addr)->sin6_addr.s6_addr;

			if ((b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||
				/* IPv4-mapped 169.254.x.x */
				(IN6_IS_ADDR_V4MAPPED((const struct in6_addr *) b) && b[12] == 169 && b[13] == 254))
			{
				req->link_local = true;
				return CURL_SOCKET_BAD;
			}
		}
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

/*
 * p2p_preheat.http_debug: libcurl's own trace, line by line, with every
 * credential-bearing header value replaced.  Bodies are never traced: they
 * carry registry tokens and passwords.
 */
static int
on_debug(CURL *handle, curl_infotype type, char *data, size_t size, void *userp)
{
	const char *dir;
	char	   *line;
	char	   *colon;

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
	line = pnstrdup(data, size);
	for (char *l = strtok(line, "\r\n"); l; l = strtok(NULL, "\r\n"))
	{
		colon = strchr(l, ':');
		if (type != CURLINFO_TEXT && colon &&
			(pg_strncasecmp(l, "authorization:", 14) == 0 ||
			 pg_strncasecmp(l, "proxy-authorization:", 20) == 0 ||
			 pg_strncasecmp(l, "cookie:", 7) == 0 ||
			 pg_strncasecmp(l, "x-", 2) == 0))
			colon[1] = '\0';	/* keep the name, drop the value */
		elog(LOG, "p2p_preheat http %s %s%s", dir, l,
			 (colon && colon[1] == '\0') ? " [redacted]" : "");
	}
	pfree(line);
	return 0;
}

static size_t
on_data(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpRequest *req = userp;
	size_t		n = size * nmemb;

	if (req->buf_len + n + 1 > MAX_RESPONSE_BYTES)
	{
		req->too_large = true;
		return 0;				/* makes libcurl end the transfer */
	}
	if (req->buf_len + n + 1 > req->buf_cap)
	{
		size_t		cap = Max(req->buf_cap * 2, req->buf_len + n + 1);
		char	   *nbuf = realloc(req->buf, Max(cap, 1024));

		if (nbuf == NULL)
			return 0;
		req->buf = nbuf;
		req->buf_cap = Max(cap, 1024);
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

static void
release_request(HttpRequest *req)
{
	if (req->easy)
	{
		curl_multi_remove_handle(multi, req->easy);
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
		in_flight--;
		if (req->prev)
			req->prev->next = req->next;
		else
			in_flight_list = req->next;
		if (req->next)
			req->next->prev = req->prev;
		req->prev = req->next = NULL;
	}
	if (req->headers)
	{
		/* the Authorization value lives here: wipe it before free */
		for (struct curl_slist *h = req->headers; h; h = h->next)
			explicit_bzero(h->data, strlen(h->data));
		curl_slist_free_all(req->headers);
		req->headers = NULL;
	}
	free(req->buf);
	req->buf = NULL;
}

void
http_start(HttpRequest *req)
{
	CURL	   *e;

	engine_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) http_max_in_flight);
	e = curl_easy_init();
	if (e == NULL)
		elog(ERROR, "could not create a libcurl handle");
	req->easy = e;
	req->done = false;
	if (req->cxt == NULL)
		req->cxt = CurrentMemoryContext;
	req->errbuf[0] = '\0';
	req->headers = curl_slist_append(NULL, "Accept: application/json");
	if (strcmp(req->method, "POST") == 0)
	{
		req->headers = curl_slist_append(req->headers, "Content-Type: application/json");
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body);
	}
	if (req->auth_header)
		req->headers = curl_slist_append(req->headers, req->auth_header);
	/* no "Expect: 100-continue" round trip */
	req->headers = curl_slist_append(req->headers, "Expect:");

	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) http_connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) http_request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, req);
	if (http_debug)
	{
		curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
		curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
	}
	req->link_local = false;
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, req->insecure ? 0L : 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, req->insecure ? 0L : 2L);
	if (http_ca_file && http_ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, http_ca_file);

	if (curl_multi_add_handle(multi, e) != CURLM_OK)
	{
		curl_easy_cleanup(e);
		req->easy = NULL;
		elog(ERROR, "could not start an HTTP transfer");
	}
	in_flight++;
	req->prev = NULL;
	req->next = in_flight_list;
	if (in_flight_list)
		in_flight_list->prev = req;
	in_flight_list = req;
}

/* Move finished transfers to done[]. */
static int
collect(HttpRequest **done, int max)
{
	CURLMsg    *msg;
	int			left;
	int			n = 0;

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
			req->result = CURLE_FILESIZE_EXCEEDED;
		req->response = NULL;
		if (req->buf)
		{
			req->response = MemoryContextAlloc(req->cxt, req->buf_len + 1);
			memcpy(req->response, req->buf, req->buf_len);
			req->response[req->buf_len] = '\0';
		}
		req->response_len = req->buf_len;
		release_request(req);
		req->done = true;
		done[n++] = req;
	}
	return n;
}

int
http_wait(long timeout_ms, HttpRequest **done, int max, uint32 wait_event_info)
{
	WaitEvent	events[3];
	int			running;
	int			nevents;
	int			n;

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
	nevents = WaitEventSetWait(wes, timeout_ms, events, lengthof(events), wait_event_info);
	for (int i = 0; i < nevents; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch_fired = true;
		}
		if (events[i].events & WL_SOCKET_READABLE)
		{
			struct epoll_event ready[64];
			int			nready = epoll_wait(epfd, ready, lengthof(ready), 0);

			for (int j = 0; j < nready; j++)
			{
				int			flags = 0;

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
	CHECK_FOR_INTERRUPTS();
	return collect(done, max);
}

bool
http_latch_fired(void)
{
	bool		fired = latch_fired;

	latch_fired = false;
	return fired;
}

int
http_in_flight(void)
{
	return in_flight;
}

void
http_abort_all(void)
{
	while (in_flight_list)
		release_request(in_flight_list);
	/* finished transfers not yet collected belong to the same requests */
	if (multi)
	{
		CURLMsg    *msg;
		int			left;

		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
			;
	}
}

const char *
http_error_text(const HttpRequest *req)
{
	if (req->result == CURLE_FILESIZE_EXCEEDED)
		return "response larger than 4 MB";
	if (req->link_local)
		return "refused to connect to a link-local address (set p2p_preheat.allow_link_local to allow it)";
	/* errbuf names hosts and reasons, never headers or bodies */
	return req->errbuf[0] ? req->errbuf : curl_easy_strerror(req->result);
}
