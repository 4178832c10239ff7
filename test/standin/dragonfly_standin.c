/*
 * dragonfly_standin.c
 *		Dragonfly manager Open API stand-in for p2p_preheat's tests and
 *		benchmarks, in C.
 *
 * test/dragonfly_standin.py is the behavioural reference: same options,
 * routes, auth, validation, job states, fault markers and /_standin/ control
 * endpoints (docs/harbor-and-dragonfly.md).  The Python one tops out far below what the
 * dispatcher can push, so benchmarks measured the stand-in rather than the
 * dispatcher; this one serves tens of thousands of keep-alive POSTs a second
 * with libmicrohttpd (two poll() worker threads).  Pauses (--delay,
 * slow<MS>ms, slowget<MS>ms) suspend the connection and a timer thread
 * resumes it, so a slow request never holds up the others.  Beyond the Python
 * version there is one more fault marker, "drop": the connection is closed
 * without any answer.
 *
 * Usage: dragonfly_standin --port 0 --port-file F [--token T]... [--log-file L]
 *		  (--help lists every option and fault marker)
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>

#define MAX_BODY		(1 << 20)
#define MAX_DEPTH		985		/* Python's json raises RecursionError deeper */
#define WORKERS			2
#define MAX_CONNECTIONS 8192
#define IDLE_TIMEOUT_S	300
#define LOG_GROUP_NS	(2 * 1000000LL) /* log lines are on disk within 2 ms */
#define LOG_PERIOD_NS	(100 * 1000000LL)
#define LOG_MAX_BUFFER	(1 << 20)

#define JSON_CT "application/json; charset=utf-8"
#define TEXT_CT "text/plain; charset=utf-8"
#define HTML_CT "text/html; charset=utf-8"

static const char *const faults_help =
"fault markers (matched anywhere in args.url of POST /oapi/v1/jobs):\n"
"  fail500          500 {\"message\":\"failed to get manifest: unexpected status 500\"} every time\n"
"  flaky500x<N>     500 for the first N POSTs of that exact url, then normal\n"
"  ratelimit        429 text/plain \"rate limit exceeded\" (no Retry-After) every time\n"
"  ratelimit429x<N> 429 for the first N POSTs of that exact url, then normal\n"
"  badjson          200 with body \"not json\" (no job created)\n"
"  slow<MS>ms       sleep MS milliseconds before answering the POST\n"
"  slowget<MS>ms    sleep MS milliseconds before answering each GET of that job\n"
"  jobfail          job created; final state FAILURE (\"pull manifest: 404 not found\")\n"
"  partial          job created; final state SUCCESS with one failure_tasks entry\n"
"  forget           job created; GET /oapi/v1/jobs/<id> answers 404 (as after cleanup)\n"
"  redirect         302 to http://example.invalid/console/ for the POST\n"
"  drop             close the connection without any response (after slow<MS>ms)\n"
"control endpoints (no auth): GET /_standin/stats, GET /_standin/jobs,\n"
"  GET /_standin/urls, POST /_standin/reset\n";

static const char *const usage_line =
"usage: %s [-h] [--host HOST] [--port PORT] [--port-file PORT_FILE]\n"
"       [--token TOKEN] [--inactive-token TOKEN] [--basic USER:PASS]\n"
"       [--header NAME:VALUE] [--log-file LOG_FILE] [--success-after SECONDS]\n"
"       [--delay SECONDS] [--clusters ID,ID] [--lenient-scope] [--verbose]\n";

static const char *const options_help =
"\nDragonfly manager Open API stand-in (docs/harbor-and-dragonfly.md).\n\n"
"options:\n"
"  -h, --help            show this help message and exit\n"
"  --host HOST           address to listen on (default 127.0.0.1)\n"
"  --port PORT           0 = pick a free port\n"
"  --port-file PORT_FILE\n"
"                        write the chosen port here once listening (atomic)\n"
"  --token TOKEN         valid bearer token (repeatable)\n"
"  --inactive-token TOKEN\n"
"                        bearer token answered with 403 token is inactive (repeatable)\n"
"  --basic USER:PASS     valid Basic credentials (repeatable)\n"
"  --header NAME:VALUE   request header that authenticates (repeatable)\n"
"  --log-file LOG_FILE   append one JSON line per POST /oapi/v1/jobs\n"
"  --success-after SECONDS\n"
"                        job is final when polled at least this long after creation\n"
"  --delay SECONDS       sleep before answering every API request (not /_standin/)\n"
"  --clusters ID,ID      known scheduler cluster ids; others get 429 like Dragonfly.\n"
"                        Default: any id accepted, omitted ids = [1]\n"
"  --lenient-scope       accept any args.scope string (Dragonfly >= 2.1.66)\n"
"  --verbose             log requests and errors to stderr\n\n";

/* ---------------------------------------------------------------------- */
/* Options																  */
/* ---------------------------------------------------------------------- */

typedef struct StrList
{
	char	  **v;
	size_t	   *len;
	int			n;
} StrList;

typedef struct Options
{
	const char *host;
	int			port;
	const char *port_file;
	StrList		token;
	StrList		inactive_token;
	StrList		basic;
	StrList		header_name;
	StrList		header_value;
	const char *log_file;
	double		success_after;
	double		delay;
	bool		have_clusters;
	long long  *clusters;
	int			nclusters;
	bool		lenient_scope;
	bool		verbose;
	bool		auth_required;
} Options;

static Options opt = {.host = "127.0.0.1"};
static const char *progname = "dragonfly_standin";

/* ---------------------------------------------------------------------- */
/* Small utilities														  */
/* ---------------------------------------------------------------------- */

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static void
oom(void)
{
	fputs("dragonfly_standin: out of memory\n", stderr);
	abort();
}

static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		oom();
	return p;
}

static void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		oom();
	return p;
}

static void
buf_reserve(Buf *b, size_t extra)
{
	size_t		need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	if (b->cap < 256)
		b->cap = 256;
	while (b->cap < need)
		b->cap *= 2;
	b->data = xrealloc(b->data, b->cap);
}

static void
buf_put(Buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_puts(Buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

static void
buf_putc(Buf *b, char c)
{
	buf_reserve(b, 1);
	b->data[b->len++] = c;
	b->data[b->len] = '\0';
}

static void
buf_printf(Buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(b->data ? b->data + b->len : NULL,
				  b->data ? b->cap - b->len : 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (b->data == NULL || (size_t) n >= b->cap - b->len)
	{
		buf_reserve(b, (size_t) n);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t) n;
}

static void
buf_free(Buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* A JSON string literal for n bytes of UTF-8 (control characters escaped). */
static void
buf_json_str(Buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t		i,
				run = 0;

	buf_reserve(b, n + 2);
	b->data[b->len++] = '"';
	for (i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];
		char		esc[7];
		size_t		elen = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		buf_put(b, s + run, i - run);
		run = i + 1;
		esc[0] = '\\';
		switch (c)
		{
			case '"':
				esc[1] = '"';
				break;
			case '\\':
				esc[1] = '\\';
				break;
			case '\n':
				esc[1] = 'n';
				break;
			case '\r':
				esc[1] = 'r';
				break;
			case '\t':
				esc[1] = 't';
				break;
			case '\b':
				esc[1] = 'b';
				break;
			case '\f':
				esc[1] = 'f';
				break;
			default:
				memcpy(esc + 1, "u00", 3);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				elen = 6;
				break;
		}
		buf_put(b, esc, elen);
	}
	buf_put(b, s + run, n - run);
	buf_putc(b, '"');
}

static int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void
wall_now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

/* "2024-05-01T12:00:00.123456Z", like the Python rfc3339() */
static void
rfc3339(const struct timespec *ts, char *out, size_t outlen)
{
	struct tm	tm;
	size_t		n;
	unsigned	us = (unsigned) (ts->tv_nsec / 1000) % 1000000;
	int			k;

	gmtime_r(&ts->tv_sec, &tm);
	n = strftime(out, outlen - 9, "%Y-%m-%dT%H:%M:%S.", &tm);
	for (k = 5; k >= 0; k--, us /= 10)
		out[n + (size_t) k] = (char) ('0' + us % 10);
	out[n + 6] = 'Z';
	out[n + 7] = '\0';
}

/* xorshift128+ per thread, seeded from getrandom(): enough for uuid4s */
static __thread uint64_t rng_state[2];

static uint64_t
rng_next(void)
{
	uint64_t	s1 = rng_state[0];
	uint64_t	s0 = rng_state[1];

	if ((s0 | s1) == 0)
	{
		if (getrandom(rng_state, sizeof(rng_state), 0) != sizeof(rng_state))
		{
			rng_state[0] = (uint64_t) mono_ns() ^ (uint64_t) (uintptr_t) &s0;
			rng_state[1] = 0x9e3779b97f4a7c15ULL ^ (uint64_t) getpid();
		}
		s1 = rng_state[0];
		s0 = rng_state[1];
	}
	rng_state[0] = s0;
	s1 ^= s1 << 23;
	rng_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return rng_state[1] + s0;
}

/* "group_" + a version 4 UUID; out has room for 43 bytes */
static void
make_task_id(char *out)
{
	unsigned char u[16];
	uint64_t	a = rng_next(),
				b = rng_next();

	memcpy(u, &a, 8);
	memcpy(u + 8, &b, 8);
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
	snprintf(out, 43,
			 "group_%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
			 u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* Value of the first run of decimal digits at p, saturating. */
static long long
digits_value(const char *p, const char *end, const char **after)
{
	unsigned long long v = 0;

	while (p < end && *p >= '0' && *p <= '9')
	{
		if (v > (unsigned long long) LLONG_MAX / 10)
			v = LLONG_MAX;
		else
		{
			v = v * 10 + (unsigned long long) (*p - '0');
			if (v > LLONG_MAX)
				v = LLONG_MAX;
		}
		p++;
	}
	*after = p;
	return (long long) v;
}

static bool
contains(const char *s, size_t n, const char *needle)
{
	return memmem(s, n, needle, strlen(needle)) != NULL;
}

/*
 * re.search(prefix + r"(\d+)" + suffix): the value of the leftmost match, or
 * -1.  Saturates instead of growing without bound like Python's int().
 */
static long long
find_marker_number(const char *s, size_t n, const char *prefix, const char *suffix)
{
	size_t		plen = strlen(prefix),
				slen = strlen(suffix);
	const char *end = s + n,
			   *p = s;

	while (p < end)
	{
		const char *hit = memmem(p, (size_t) (end - p), prefix, plen);
		const char *after;
		long long	v;

		if (hit == NULL)
			return -1;
		p = hit + plen;
		if (p >= end || *p < '0' || *p > '9')
			continue;
		v = digits_value(p, end, &after);
		if ((size_t) (end - after) >= slen && memcmp(after, suffix, slen) == 0)
			return v;
	}
	return -1;
}

/* re.search(r"ratelimit(?!429x\d)") */
static bool
plain_ratelimit(const char *s, size_t n)
{
	const char *end = s + n,
			   *p = s;

	while (p < end)
	{
		const char *hit = memmem(p, (size_t) (end - p), "ratelimit", 9);
		const char *q;

		if (hit == NULL)
			return false;
		q = hit + 9;
		if (!((size_t) (end - q) >= 5 && memcmp(q, "429x", 4) == 0 &&
			  q[4] >= '0' && q[4] <= '9'))
			return true;
		p = q;
	}
	return false;
}

/*
 * re.search(r"://[^/]+/v2/.+/manifests/[^/]+$", url).  [^/]+$ pins
 * "/manifests/" to the last slash; "." does not match a newline; "$" also
 * matches before a final newline, which the last [^/]+ absorbs anyway.
 */
static bool
image_url_ok(const char *u, size_t n)
{
	const char *last = memrchr(u, '/', n);
	size_t		lastpos,
				m,
				i;

	if (last == NULL)
		return false;
	lastpos = (size_t) (last - u);
	if (lastpos + 1 >= n || lastpos < 10 ||
		memcmp(u + lastpos - 10, "/manifests", 10) != 0)
		return false;
	m = lastpos - 10;
	for (i = 0; i + 3 < m; i++)
	{
		const char *slash;
		size_t		k;

		if (memcmp(u + i, "://", 3) != 0)
			continue;
		slash = memchr(u + i + 3, '/', m - (i + 3));
		if (slash == NULL)
			return false;		/* no later "://" can do better */
		k = (size_t) (slash - u);
		if (k == i + 3 || k + 4 >= m || memcmp(u + k, "/v2/", 4) != 0)
			continue;
		if (memchr(u + k + 4, '\n', m - (k + 4)) == NULL)
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------------- */
/* UTF-8 and JSON syntax, reported the way Python's json.loads() does		  */
/* ---------------------------------------------------------------------- */

enum
{
	U8_OK, U8_START, U8_CONT, U8_END
};

/* Classify the sequence at s[i]; *adv = bytes it covers (maximal subpart). */
static int
utf8_step(const unsigned char *s, size_t len, size_t i, size_t *adv)
{
	unsigned char c = s[i];
	int			need;
	unsigned char lo = 0x80,
				hi = 0xbf;
	int			k;

	if (c < 0x80)
	{
		*adv = 1;
		return U8_OK;
	}
	if (c >= 0xc2 && c <= 0xdf)
		need = 1;
	else if (c >= 0xe0 && c <= 0xef)
	{
		need = 2;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	}
	else if (c >= 0xf0 && c <= 0xf4)
	{
		need = 3;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	}
	else
	{
		*adv = 1;
		return U8_START;
	}
	for (k = 1; k <= need; k++)
	{
		unsigned char d;

		if (i + k >= len)
		{
			*adv = len - i;
			return U8_END;
		}
		d = s[i + k];
		if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xbf))
		{
			*adv = (size_t) k;
			return U8_CONT;
		}
	}
	*adv = (size_t) need + 1;
	return U8_OK;
}

/* NULL if valid, else Python's UnicodeDecodeError text in err. */
static const char *
utf8_check(const unsigned char *s, size_t len, char *err, size_t errlen)
{
	size_t		i = 0,
				adv;

	while (i < len)
	{
		int			r;

		if (s[i] < 0x80)
		{
			i++;
			continue;
		}
		r = utf8_step(s, len, i, &adv);
		if (r != U8_OK)
		{
			const char *why = r == U8_START ? "invalid start byte" :
			r == U8_CONT ? "invalid continuation byte" : "unexpected end of data";

			if (adv == 1)
				snprintf(err, errlen, "'utf-8' codec can't decode byte 0x%02x in position %zu: %s",
						 s[i], i, why);
			else
				snprintf(err, errlen, "'utf-8' codec can't decode bytes in position %zu-%zu: %s",
						 i, i + adv - 1, why);
			return err;
		}
		i += adv;
	}
	return NULL;
}

/* raw.decode("utf-8", "replace")[:maxchars], as UTF-8 */
static void
utf8_replace(Buf *out, const unsigned char *s, size_t len, size_t maxchars)
{
	size_t		i = 0,
				chars = 0,
				adv;

	while (i < len && chars < maxchars)
	{
		if (utf8_step(s, len, i, &adv) == U8_OK)
			buf_put(out, s + i, adv);
		else
			buf_put(out, "\xef\xbf\xbd", 3);
		i += adv;
		chars++;
	}
}

enum
{
	JS_SYNTAX, JS_CONSTANT, JS_DEPTH
};

typedef struct JScan
{
	const unsigned char *s;
	size_t		len;
	int			depth;
	int			kind;
	const char *msg;
	size_t		pos;
} JScan;

#define JS_WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')
#define JS_DIGIT(c) ((c) >= '0' && (c) <= '9')

static bool js_value(JScan *js, size_t i, size_t *next);

static bool
js_fail(JScan *js, int kind, const char *msg, size_t pos)
{
	js->kind = kind;
	js->msg = msg;
	js->pos = pos;
	return false;
}

static size_t
js_ws(const JScan *js, size_t i)
{
	while (i < js->len && JS_WS(js->s[i]))
		i++;
	return i;
}

static bool
js_hex4(const unsigned char *p, unsigned *v)
{
	int			k;

	*v = 0;
	for (k = 0; k < 4; k++)
	{
		unsigned char c = p[k];

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (unsigned) (c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (unsigned) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (unsigned) (c - 'A' + 10);
		else
			return false;
	}
	return true;
}

/* i is just past the opening quote (scanstring_unicode in _json.c) */
static bool
js_string(JScan *js, size_t i, size_t *next)
{
	const unsigned char *s = js->s;
	size_t		len = js->len,
				begin = i - 1;

	for (;;)
	{
		size_t		j;
		unsigned char c = 0;

		for (j = i; j < len; j++)
		{
			c = s[j];
			if (c == '"' || c == '\\')
				break;
			if (c <= 0x1f)
				return js_fail(js, JS_SYNTAX, "Invalid control character at", j);
		}
		if (j >= len)
			return js_fail(js, JS_SYNTAX, "Unterminated string starting at", begin);
		if (c == '"')
		{
			*next = j + 1;
			return true;
		}
		if (j + 1 >= len)
			return js_fail(js, JS_SYNTAX, "Unterminated string starting at", begin);
		c = s[j + 1];
		if (c != 'u')
		{
			if (c == 0 || strchr("\"\\/bfnrt", c) == NULL)
				return js_fail(js, JS_SYNTAX, "Invalid \\escape", j);
			i = j + 2;
		}
		else
		{
			size_t		u = j + 1,
						end = u + 5;
			unsigned	v,
						v2;

			if (end >= len || !js_hex4(s + u + 1, &v))
				return js_fail(js, JS_SYNTAX, "Invalid \\uXXXX escape", u);
			if (v >= 0xd800 && v <= 0xdbff && end + 6 < len &&
				s[end] == '\\' && s[end + 1] == 'u')
			{
				if (!js_hex4(s + end + 2, &v2))
					return js_fail(js, JS_SYNTAX, "Invalid \\uXXXX escape", end + 1);
				if (v2 >= 0xdc00 && v2 <= 0xdfff)
					end += 6;
			}
			i = end;
		}
	}
}

/* _match_number_unicode; false means "no value here" */
static bool
js_number(JScan *js, size_t i, size_t *next)
{
	const unsigned char *s = js->s;
	size_t		end_idx = js->len - 1,
				idx = i;

	if (s[idx] == '-')
	{
		idx++;
		if (idx > end_idx)
			return js_fail(js, JS_SYNTAX, "Expecting value", i);
	}
	if (s[idx] >= '1' && s[idx] <= '9')
	{
		idx++;
		while (idx <= end_idx && JS_DIGIT(s[idx]))
			idx++;
	}
	else if (s[idx] == '0')
		idx++;
	else
		return js_fail(js, JS_SYNTAX, "Expecting value", i);
	if (idx < end_idx && s[idx] == '.' && JS_DIGIT(s[idx + 1]))
	{
		idx += 2;
		while (idx <= end_idx && JS_DIGIT(s[idx]))
			idx++;
	}
	if (idx < end_idx && (s[idx] == 'e' || s[idx] == 'E'))
	{
		size_t		e_start = idx;

		idx++;
		if (idx < end_idx && (s[idx] == '-' || s[idx] == '+'))
			idx++;
		while (idx <= end_idx && JS_DIGIT(s[idx]))
			idx++;
		if (!JS_DIGIT(s[idx - 1]))
			idx = e_start;
	}
	*next = idx;
	return true;
}

static bool
js_object(JScan *js, size_t idx, size_t *next)
{
	const unsigned char *s = js->s;
	size_t		len = js->len;

	if (++js->depth > MAX_DEPTH)
		return js_fail(js, JS_DEPTH, "RecursionError", idx);
	idx = js_ws(js, idx);
	if (idx >= len || s[idx] != '}')
	{
		for (;;)
		{
			if (idx >= len || s[idx] != '"')
				return js_fail(js, JS_SYNTAX,
							   "Expecting property name enclosed in double quotes", idx);
			if (!js_string(js, idx + 1, &idx))
				return false;
			idx = js_ws(js, idx);
			if (idx >= len || s[idx] != ':')
				return js_fail(js, JS_SYNTAX, "Expecting ':' delimiter", idx);
			idx = js_ws(js, idx + 1);
			if (!js_value(js, idx, &idx))
				return false;
			idx = js_ws(js, idx);
			if (idx < len && s[idx] == '}')
				break;
			if (idx >= len || s[idx] != ',')
				return js_fail(js, JS_SYNTAX, "Expecting ',' delimiter", idx);
			idx = js_ws(js, idx + 1);
		}
	}
	js->depth--;
	*next = idx + 1;
	return true;
}

static bool
js_array(JScan *js, size_t idx, size_t *next)
{
	const unsigned char *s = js->s;
	size_t		len = js->len;

	if (++js->depth > MAX_DEPTH)
		return js_fail(js, JS_DEPTH, "RecursionError", idx);
	idx = js_ws(js, idx);
	if (idx >= len || s[idx] != ']')
	{
		for (;;)
		{
			if (!js_value(js, idx, &idx))
				return false;
			idx = js_ws(js, idx);
			if (idx < len && s[idx] == ']')
				break;
			if (idx >= len || s[idx] != ',')
				return js_fail(js, JS_SYNTAX, "Expecting ',' delimiter", idx);
			idx = js_ws(js, idx + 1);
		}
	}
	js->depth--;
	*next = idx + 1;
	return true;
}

/* scan_once_unicode */
static bool
js_value(JScan *js, size_t i, size_t *next)
{
	const unsigned char *s = js->s;
	size_t		len = js->len;

	if (i >= len)
		return js_fail(js, JS_SYNTAX, "Expecting value", i);
	switch (s[i])
	{
		case '"':
			return js_string(js, i + 1, next);
		case '{':
			return js_object(js, i + 1, next);
		case '[':
			return js_array(js, i + 1, next);
		case 'n':
			if (i + 3 < len && memcmp(s + i, "null", 4) == 0)
			{
				*next = i + 4;
				return true;
			}
			break;
		case 't':
			if (i + 3 < len && memcmp(s + i, "true", 4) == 0)
			{
				*next = i + 4;
				return true;
			}
			break;
		case 'f':
			if (i + 4 < len && memcmp(s + i, "false", 5) == 0)
			{
				*next = i + 5;
				return true;
			}
			break;
		case 'N':
			if (i + 2 < len && memcmp(s + i, "NaN", 3) == 0)
				return js_fail(js, JS_CONSTANT, "invalid JSON number NaN", i);
			break;
		case 'I':
			if (i + 7 < len && memcmp(s + i, "Infinity", 8) == 0)
				return js_fail(js, JS_CONSTANT, "invalid JSON number Infinity", i);
			break;
		case '-':
			if (i + 8 < len && memcmp(s + i, "-Infinity", 9) == 0)
				return js_fail(js, JS_CONSTANT, "invalid JSON number -Infinity", i);
			break;
	}
	return js_number(js, i, next);
}

/*
 * Check s as json.loads() would.  Returns JS_SYNTAX/JS_CONSTANT with the
 * message in err, JS_DEPTH, or -1 when the text is valid JSON.
 */
static int
json_check(const unsigned char *s, size_t len, char *err, size_t errlen)
{
	JScan		js = {.s = s, .len = len};
	size_t		i = js_ws(&js, 0);
	size_t		pos,
				k,
				chars = 0,
				line = 1,
				col;
	ssize_t		lastnl = -1;

	if (js_value(&js, i, &i))
	{
		i = js_ws(&js, i);
		if (i == len)
			return -1;
		js_fail(&js, JS_SYNTAX, "Extra data", i);
	}
	if (js.kind != JS_SYNTAX)
	{
		snprintf(err, errlen, "%s", js.msg);
		return js.kind;
	}
	/* positions count characters, not bytes */
	pos = js.pos;
	for (k = 0; k < pos && k < len; k++)
	{
		if ((s[k] & 0xc0) == 0x80)
			continue;
		if (s[k] == '\n')
		{
			line++;
			lastnl = (ssize_t) chars;
		}
		chars++;
	}
	col = (size_t) ((ssize_t) chars - lastnl);
	snprintf(err, errlen, "%s: line %zu column %zu (char %zu)", js.msg, line, col, chars);
	return JS_SYNTAX;
}

/* Python's repr() of a str decoded as latin-1 (the request line), as UTF-8 */
static void
py_repr_latin1(Buf *out, const unsigned char *s, size_t n)
{
	char		q = '\'';
	size_t		i;

	if (memchr(s, '\'', n) && !memchr(s, '"', n))
		q = '"';
	buf_putc(out, q);
	for (i = 0; i < n; i++)
	{
		unsigned char c = s[i];

		if (c == (unsigned char) q || c == '\\')
		{
			buf_putc(out, '\\');
			buf_putc(out, (char) c);
		}
		else if (c == '\t')
			buf_puts(out, "\\t");
		else if (c == '\n')
			buf_puts(out, "\\n");
		else if (c == '\r')
			buf_puts(out, "\\r");
		else if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad)
			buf_printf(out, "\\x%02x", c);
		else if (c < 0x80)
			buf_putc(out, (char) c);
		else
		{
			buf_putc(out, (char) (0xc0 | (c >> 6)));
			buf_putc(out, (char) (0x80 | (c & 0x3f)));
		}
	}
	buf_putc(out, q);
}

/* ---------------------------------------------------------------------- */
/* Shared state (all of it under state_lock)							  */
/* ---------------------------------------------------------------------- */

enum
{
	JOB_PENDING, JOB_SUCCESS, JOB_FAILURE
};
enum
{
	FAULT_NONE, FAULT_FORGET, FAULT_JOBFAIL, FAULT_PARTIAL
};

static const char *const state_names[] = {"PENDING", "SUCCESS", "FAILURE"};

typedef struct Job
{
	long long	id;
	char		task_id[44];
	char		created_s[32];
	char		updated_s[32];
	int			state;
	int			fault;
	int64_t		created;		/* monotonic ns */
	int64_t		slowget_ns;
	long long	polls;
	long long	user_id;
	int			nclusters;
	long long  *clusters;
	char	   *url;
	size_t		url_len;
	char	   *args;			/* args as JSON text */
	size_t		args_len;
	char	   *bio;
	size_t		bio_len;
} Job;

typedef struct UrlEntry
{
	char	   *key;
	size_t		len;
	uint64_t	hash;
	long long	count;
} UrlEntry;

typedef struct State
{
	long long	next_id;		/* never reset: stale ids stay 404 */
	long long	base_id;		/* id of jobs[0] */
	Job		  **jobs;
	size_t		njobs;
	size_t		jobs_cap;
	UrlEntry   *urls;			/* in insertion order */
	size_t		nurls;
	size_t		urls_cap;
	uint32_t   *slots;			/* open addressing: index + 1, 0 = empty */
	size_t		nslots;
	long long	posts;
	long long	gets;
	long long	healthy;
	int			nstatus;
	unsigned	status_code[64];
	long long	status_count[64];
} State;

static State st = {.next_id = 1, .base_id = 1};
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t
hash_bytes(const char *s, size_t n)
{
	uint64_t	h = 1469598103934665603ULL;
	size_t		i;

	for (i = 0; i < n; i++)
	{
		h ^= (unsigned char) s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static UrlEntry *
url_lookup(const char *key, size_t len, bool create)
{
	uint64_t	h = hash_bytes(key, len);
	size_t		mask,
				i;

	if (st.nslots == 0)
	{
		if (!create)
			return NULL;
		st.nslots = 1024;
		st.slots = calloc(st.nslots, sizeof(uint32_t));
		if (st.slots == NULL)
			oom();
	}
	mask = st.nslots - 1;
	for (i = (size_t) h & mask; st.slots[i] != 0; i = (i + 1) & mask)
	{
		UrlEntry   *e = &st.urls[st.slots[i] - 1];

		if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
			return e;
	}
	if (!create)
		return NULL;
	if (st.nurls == st.urls_cap)
	{
		st.urls_cap = st.urls_cap ? st.urls_cap * 2 : 1024;
		st.urls = xrealloc(st.urls, st.urls_cap * sizeof(UrlEntry));
	}
	st.urls[st.nurls].key = xmalloc(len + 1);
	memcpy(st.urls[st.nurls].key, key, len);
	st.urls[st.nurls].key[len] = '\0';
	st.urls[st.nurls].len = len;
	st.urls[st.nurls].hash = h;
	st.urls[st.nurls].count = 0;
	st.slots[i] = (uint32_t) (++st.nurls);
	if (st.nurls * 2 > st.nslots)
	{
		size_t		n;

		free(st.slots);
		st.nslots *= 2;
		st.slots = calloc(st.nslots, sizeof(uint32_t));
		if (st.slots == NULL)
			oom();
		mask = st.nslots - 1;
		for (n = 0; n < st.nurls; n++)
		{
			for (i = (size_t) st.urls[n].hash & mask; st.slots[i] != 0; i = (i + 1) & mask)
				;
			st.slots[i] = (uint32_t) (n + 1);
		}
	}
	return &st.urls[st.nurls - 1];
}

static void
count_status(unsigned code)
{
	int			i;

	for (i = 0; i < st.nstatus; i++)
	{
		if (st.status_code[i] == code)
		{
			st.status_count[i]++;
			return;
		}
	}
	if (st.nstatus < 64)
	{
		st.status_code[st.nstatus] = code;
		st.status_count[st.nstatus++] = 1;
	}
}

static void
state_reset(void)
{
	size_t		i;

	for (i = 0; i < st.njobs; i++)
		free(st.jobs[i]);
	st.njobs = 0;
	st.base_id = st.next_id;
	for (i = 0; i < st.nurls; i++)
		free(st.urls[i].key);
	st.nurls = 0;
	if (st.slots)
		memset(st.slots, 0, st.nslots * sizeof(uint32_t));
	st.posts = st.gets = st.healthy = 0;
	st.nstatus = 0;
}

static Job *
job_find(long long id)
{
	if (id < st.base_id || id >= st.base_id + (long long) st.njobs)
		return NULL;
	return st.jobs[id - st.base_id];
}

/* The job object of the Open API (job_obj() in the Python version). */
static void
job_json(Buf *b, const Job *j)
{
	int			i;

	buf_printf(b, "{\"id\":%lld,\"created_at\":\"%s\",\"updated_at\":\"%s\",\"task_id\":\"%s\",\"bio\":",
			   j->id, j->created_s, j->updated_s, j->task_id);
	buf_json_str(b, j->bio, j->bio_len);
	buf_printf(b, ",\"type\":\"preheat\",\"state\":\"%s\",\"args\":", state_names[j->state]);
	buf_put(b, j->args, j->args_len);
	buf_puts(b, ",\"result\":");
	if (j->state == JOB_PENDING)
		buf_puts(b, "null");
	else if (j->fault == FAULT_JOBFAIL)
	{
		buf_puts(b, "{\"job_states\":[{\"state\":\"FAILURE\",\"error\":\"pull manifest: 404 not found\",\"results\":[");
		for (i = 0; i < j->nclusters; i++)
		{
			buf_printf(b, "%s{\"scheduler_cluster_id\":%lld,\"success_tasks\":[],\"failure_tasks\":[{\"url\":",
					   i ? "," : "", j->clusters[i]);
			buf_json_str(b, j->url, j->url_len);
			buf_puts(b, ",\"hostname\":\"peer-1\",\"ip\":\"10.0.0.1\",\"description\":\"pull manifest: 404 not found\"}]}");
		}
		buf_puts(b, "]}]}");
	}
	else
	{
		buf_puts(b, "{\"job_states\":[{\"state\":\"SUCCESS\",\"error\":\"\",\"results\":[");
		for (i = 0; i < j->nclusters; i++)
		{
			buf_printf(b, "%s{\"scheduler_cluster_id\":%lld,\"success_tasks\":[{\"url\":",
					   i ? "," : "", j->clusters[i]);
			buf_json_str(b, j->url, j->url_len);
			buf_puts(b, ",\"hostname\":\"peer-1\",\"ip\":\"10.0.0.1\"}],\"failure_tasks\":[");
			if (j->fault == FAULT_PARTIAL && i == 0)
			{
				buf_puts(b, "{\"url\":");
				buf_json_str(b, j->url, j->url_len);
				buf_puts(b, ",\"hostname\":\"peer-2\",\"ip\":\"10.0.0.2\",\"description\":\"connection reset\"}");
			}
			buf_puts(b, "]}");
		}
		buf_puts(b, "]}]}");
	}
	buf_printf(b, ",\"user_id\":%lld,\"scheduler_clusters\":[", j->user_id);
	for (i = 0; i < j->nclusters; i++)
		buf_printf(b, "%s{\"id\":%lld}", i ? "," : "", j->clusters[i]);
	buf_puts(b, "]}");
}

/* ---------------------------------------------------------------------- */
/* Request log: one JSON line per POST, written in groups				  */
/* ---------------------------------------------------------------------- */

static int	log_fd = -1;
static Buf	log_buf;
static int64_t log_last_write;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void ticker_flush_at(int64_t when);

/* caller holds log_lock */
static void
log_write_locked(void)
{
	size_t		off = 0;

	while (off < log_buf.len)
	{
		ssize_t		n = write(log_fd, log_buf.data + off, log_buf.len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			if (opt.verbose)
				fprintf(stderr, "dragonfly_standin: log write failed: %s\n", strerror(errno));
			break;
		}
		off += (size_t) n;
	}
	log_buf.len = 0;
	log_last_write = mono_ns();
}

static void
log_flush(void)
{
	if (log_fd < 0)
		return;
	pthread_mutex_lock(&log_lock);
	if (log_buf.len > 0)
		log_write_locked();
	pthread_mutex_unlock(&log_lock);
}

/*
 * A line goes straight to the file when nothing was written for LOG_GROUP_NS
 * (so a test reading the log right after its request finds it); under load
 * the lines of the next LOG_GROUP_NS go out together, from the timer thread.
 */
static void
log_append(const Buf *line)
{
	int64_t		now = mono_ns();
	int64_t		flush_at = 0;

	pthread_mutex_lock(&log_lock);
	buf_put(&log_buf, line->data, line->len);
	if (now - log_last_write >= LOG_GROUP_NS || log_buf.len >= LOG_MAX_BUFFER)
		log_write_locked();
	else if (log_buf.len == line->len)
		flush_at = log_last_write + LOG_GROUP_NS;	/* first line of a group */
	pthread_mutex_unlock(&log_lock);
	if (flush_at != 0)
		ticker_flush_at(flush_at);
}

/* ---------------------------------------------------------------------- */
/* Timer thread: resumes paused connections, flushes the log			  */
/* ---------------------------------------------------------------------- */

typedef struct Timer
{
	int64_t		due;
	struct MHD_Connection *con;
} Timer;

static pthread_mutex_t ticker_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ticker_cond;
static Timer *heap;
static size_t nheap,
			heap_cap;
static int64_t flush_due;		/* 0 = none scheduled */
static bool ticker_stop;
static atomic_bool stopping;
static atomic_int nsuspended;

static void
heap_push(Timer t)
{
	size_t		i;

	if (nheap == heap_cap)
	{
		heap_cap = heap_cap ? heap_cap * 2 : 256;
		heap = xrealloc(heap, heap_cap * sizeof(Timer));
	}
	i = nheap++;
	while (i > 0 && heap[(i - 1) / 2].due > t.due)
	{
		heap[i] = heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	heap[i] = t;
}

static Timer
heap_pop(void)
{
	Timer		top = heap[0],
				last = heap[--nheap];
	size_t		i = 0;

	for (;;)
	{
		size_t		c = 2 * i + 1;

		if (c >= nheap)
			break;
		if (c + 1 < nheap && heap[c + 1].due < heap[c].due)
			c++;
		if (heap[c].due >= last.due)
			break;
		heap[i] = heap[c];
		i = c;
	}
	if (nheap > 0)
		heap[i] = last;
	return top;
}

static void
ticker_flush_at(int64_t when)
{
	pthread_mutex_lock(&ticker_lock);
	if (flush_due == 0 || when < flush_due)
	{
		flush_due = when;
		pthread_cond_signal(&ticker_cond);
	}
	pthread_mutex_unlock(&ticker_lock);
}

static void
ticker_add(struct MHD_Connection *con, int64_t due)
{
	pthread_mutex_lock(&ticker_lock);
	heap_push((Timer) {.due = due, .con = con});
	if (heap[0].con == con)
		pthread_cond_signal(&ticker_cond);
	pthread_mutex_unlock(&ticker_lock);
}

static void
ticker_wake(void)
{
	pthread_mutex_lock(&ticker_lock);
	pthread_cond_signal(&ticker_cond);
	pthread_mutex_unlock(&ticker_lock);
}

static void *
ticker_main(void *arg)
{
	int64_t		next_periodic = mono_ns() + LOG_PERIOD_NS;

	(void) arg;
	pthread_mutex_lock(&ticker_lock);
	while (!ticker_stop)
	{
		int64_t		now = mono_ns();
		int64_t		wake;
		bool		flush = false;
		struct timespec ts;

		while (nheap > 0 && (heap[0].due <= now || atomic_load(&stopping)))
		{
			struct MHD_Connection *con = heap_pop().con;

			pthread_mutex_unlock(&ticker_lock);
			MHD_resume_connection(con);
			pthread_mutex_lock(&ticker_lock);
		}
		if (flush_due != 0 && flush_due <= now)
		{
			flush_due = 0;
			flush = true;
		}
		if (now >= next_periodic)
		{
			next_periodic = now + LOG_PERIOD_NS;
			flush = true;
		}
		if (flush)
		{
			pthread_mutex_unlock(&ticker_lock);
			log_flush();
			pthread_mutex_lock(&ticker_lock);
			continue;
		}
		wake = next_periodic;
		if (nheap > 0 && heap[0].due < wake)
			wake = heap[0].due;
		if (flush_due != 0 && flush_due < wake)
			wake = flush_due;
		ts.tv_sec = wake / 1000000000LL;
		ts.tv_nsec = wake % 1000000000LL;
		pthread_cond_timedwait(&ticker_cond, &ticker_lock, &ts);
	}
	pthread_mutex_unlock(&ticker_lock);
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* Responses															  */
/* ---------------------------------------------------------------------- */

enum
{
	ST_NEW, ST_ROUTE, ST_POST_B, ST_PENDING, ST_DONE
};

typedef struct Req
{
	Buf			body;
	bool		too_big;
	bool		suspended;
	int			stage;
	/* POST /oapi/v1/jobs, kept across a slow<MS>ms pause */
	struct timespec t;
	const char *kind;
	bool		parsed;			/* body is JSON (jbody may be NULL for null) */
	json_object *jbody;
	json_object *args;
	const char *url;
	size_t		url_len;
	long long	n;
	char	   *bad_body;		/* logged instead of jbody when it is not JSON */
	/* GET answer prepared before a slowget<MS>ms pause */
	struct MHD_Response *pending;
	unsigned	pending_status;
} Req;

static struct MHD_Response *r_healthy,
		   *r_moved,
		   *r_found,
		   *r_401,
		   *r_403,
		   *r_404,
		   *r_404_control,
		   *r_413,
		   *r_429,
		   *r_500_manifest,
		   *r_500_recursion,
		   *r_501,
		   *r_badjson,
		   *r_reset;

static struct MHD_Response *
make_response(const char *body, size_t len, bool owned, const char *ctype)
{
	struct MHD_Response *r;

	r = MHD_create_response_from_buffer(len, (void *) body,
										owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		oom();
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	return r;
}

static struct MHD_Response *
static_response(const char *body, const char *ctype)
{
	return make_response(body, strlen(body), false, ctype);
}

static void
make_static_responses(void)
{
	r_healthy = static_response("\"OK\"", JSON_CT);
	r_moved = static_response("<a href=\"/console/\">Moved Permanently</a>.\n\n", HTML_CT);
	MHD_add_response_header(r_moved, MHD_HTTP_HEADER_LOCATION, "/console/");
	r_found = static_response("<a href=\"http://example.invalid/console/\">Found</a>.\n\n", HTML_CT);
	MHD_add_response_header(r_found, MHD_HTTP_HEADER_LOCATION, "http://example.invalid/console/");
	r_401 = static_response("{\"message\":\"Unauthorized\"}", JSON_CT);
	r_403 = static_response("{\"message\":\"token is inactive\"}", JSON_CT);
	r_404 = static_response("{\"message\":\"record not found\"}", JSON_CT);
	r_404_control = static_response("{\"message\":\"unknown control endpoint\"}", JSON_CT);
	r_413 = static_response("{\"message\":\"request body too large\"}", JSON_CT);
	MHD_add_response_header(r_413, MHD_HTTP_HEADER_CONNECTION, "close");
	r_429 = static_response("rate limit exceeded", TEXT_CT);
	r_500_manifest = static_response("{\"message\":\"failed to get manifest: unexpected status 500\"}", JSON_CT);
	r_500_recursion = static_response("{\"message\":\"standin internal error: RecursionError\"}", JSON_CT);
	MHD_add_response_header(r_500_recursion, MHD_HTTP_HEADER_CONNECTION, "close");
	r_501 = static_response("<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n"
							"        <title>Error response</title>\n    </head>\n    <body>\n"
							"        <h1>Error response</h1>\n        <p>Error code: 501</p>\n"
							"        <p>Message: Unsupported method.</p>\n"
							"        <p>Error code explanation: 501 - Server does not support this operation.</p>\n"
							"    </body>\n</html>\n", HTML_CT);
	MHD_add_response_header(r_501, MHD_HTTP_HEADER_CONNECTION, "close");
	r_badjson = static_response("not json", JSON_CT);
	r_reset = static_response("{\"reset\":true}", JSON_CT);
}

static void
verbose_line(struct MHD_Connection *con, const char *method, const char *url,
			 const char *version, unsigned status)
{
	const union MHD_ConnectionInfo *ci;
	char		addr[INET6_ADDRSTRLEN] = "-";

	ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr)
	{
		if (ci->client_addr->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *) ci->client_addr)->sin_addr,
					  addr, sizeof(addr));
		else if (ci->client_addr->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) ci->client_addr)->sin6_addr,
					  addr, sizeof(addr));
	}
	fprintf(stderr, "%s - \"%s %s %s\" %u -\n", addr, method, url, version, status);
}

typedef struct Call
{
	struct MHD_Connection *con;
	const char *url;
	const char *method;
	const char *version;
	Req		   *r;
} Call;

/* Queue resp; owned responses are released here.  count = into by_status. */
static enum MHD_Result
reply(Call *c, unsigned status, struct MHD_Response *resp, bool owned, bool count)
{
	enum MHD_Result ret = MHD_queue_response(c->con, status, resp);

	if (owned)
		MHD_destroy_response(resp);
	c->r->stage = ST_DONE;
	if (count)
	{
		pthread_mutex_lock(&state_lock);
		count_status(status);
		pthread_mutex_unlock(&state_lock);
	}
	if (opt.verbose)
		verbose_line(c->con, c->method, c->url, c->version, status);
	return ret;
}

static enum MHD_Result
reply_buf(Call *c, unsigned status, Buf *b, bool count)
{
	struct MHD_Response *resp = make_response(b->data, b->len, true, JSON_CT);

	b->data = NULL;
	b->len = b->cap = 0;
	return reply(c, status, resp, true, count);
}

static enum MHD_Result
reply_errors(Call *c, const char *msg)
{
	Buf			b = {0};

	buf_puts(&b, "{\"errors\":");
	buf_json_str(&b, msg, strlen(msg));
	buf_putc(&b, '}');
	return reply_buf(c, 422, &b, true);
}

/*
 * Pause the request for ns nanoseconds; the handler runs again afterwards
 * with r->stage telling it where to go on.
 */
static enum MHD_Result
pause_request(Call *c, int64_t ns, int next_stage)
{
	if (atomic_load(&stopping))
		return MHD_NO;
	c->r->stage = next_stage;
	c->r->suspended = true;
	atomic_fetch_add(&nsuspended, 1);
	MHD_suspend_connection(c->con);
	ticker_add(c->con, mono_ns() + ns);
	return MHD_YES;
}

static int64_t
seconds_ns(double s)
{
	if (!(s > 0))
		return 0;
	if (s > 1e9)
		return (int64_t) 1e18;
	return (int64_t) (s * 1e9);
}

static int64_t
ms_ns(long long ms)
{
	if (ms > 1000000000000LL)
		ms = 1000000000000LL;
	return (int64_t) ms * 1000000LL;
}

/* ---------------------------------------------------------------------- */
/* Auth																	  */
/* ---------------------------------------------------------------------- */

/* str.strip() of a latin-1 decoded header value */
static bool
py_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) ||
		c == 0x85 || c == 0xa0;
}

static void
strip(const char **s, size_t *n)
{
	while (*n > 0 && py_space((unsigned char) **s))
	{
		(*s)++;
		(*n)--;
	}
	while (*n > 0 && py_space((unsigned char) (*s)[*n - 1]))
		(*n)--;
}

static bool
list_has(const StrList *l, const char *s, size_t n)
{
	int			i;

	for (i = 0; i < l->n; i++)
	{
		if (l->len[i] == n && memcmp(l->v[i], s, n) == 0)
			return true;
	}
	return false;
}

static int
b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* base64.b64decode(s, validate=True); false where Python raises */
static bool
b64decode_strict(const char *s, size_t n, Buf *out)
{
	size_t		i,
				pad = 0;

	while (pad < n && pad < 3 && s[n - 1 - pad] == '=')
		pad++;
	if (pad > 2 || n % 4 != 0)
		return false;
	for (i = 0; i < n - pad; i++)
		if (b64val((unsigned char) s[i]) < 0)
			return false;
	for (i = 0; i + 4 <= n; i += 4)
	{
		int			v0 = b64val((unsigned char) s[i]),
					v1 = b64val((unsigned char) s[i + 1]),
					v2 = s[i + 2] == '=' ? 0 : b64val((unsigned char) s[i + 2]),
					v3 = s[i + 3] == '=' ? 0 : b64val((unsigned char) s[i + 3]);
		unsigned char o[3];
		size_t		k = 3;

		o[0] = (unsigned char) ((v0 << 2) | (v1 >> 4));
		o[1] = (unsigned char) (((v1 & 15) << 4) | (v2 >> 2));
		o[2] = (unsigned char) (((v2 & 3) << 6) | v3);
		if (i + 4 == n)
			k -= pad;
		buf_put(out, o, k);
	}
	return true;
}

/* Returns 0 (pass), 401 or 403; *kind = bearer, basic, custom or none. */
static unsigned
check_auth(struct MHD_Connection *con, const char **kind)
{
	const char *authz = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
	const char *scheme = "",
			   *cred = "";
	size_t		scheme_len = 0,
				cred_len = 0;
	int			i;

	if (authz)
	{
		const char *sp;
		size_t		n = strlen(authz);

		strip(&authz, &n);
		sp = memchr(authz, ' ', n);
		scheme = authz;
		scheme_len = sp ? (size_t) (sp - authz) : n;
		if (sp)
		{
			cred = sp + 1;
			cred_len = n - scheme_len - 1;
			strip(&cred, &cred_len);
		}
	}
	for (i = 0; i < opt.header_name.n; i++)
	{
		const char *v = MHD_lookup_connection_value(con, MHD_HEADER_KIND, opt.header_name.v[i]);

		if (v && strlen(v) == opt.header_value.len[i] &&
			memcmp(v, opt.header_value.v[i], opt.header_value.len[i]) == 0)
		{
			*kind = "custom";
			return 0;
		}
	}
	if (scheme_len == 6 && strncasecmp(scheme, "bearer", 6) == 0)
		*kind = "bearer";
	else if (scheme_len == 5 && strncasecmp(scheme, "basic", 5) == 0)
		*kind = "basic";
	else
	{
		*kind = "none";
		for (i = 0; i < opt.header_name.n; i++)
		{
			if (MHD_lookup_connection_value(con, MHD_HEADER_KIND, opt.header_name.v[i]))
			{
				*kind = "custom";
				break;
			}
		}
	}
	if (!opt.auth_required)
		return 0;
	if (strcmp(*kind, "bearer") == 0)
	{
		if (list_has(&opt.token, cred, cred_len))
			return 0;
		if (list_has(&opt.inactive_token, cred, cred_len))
			return 403;
	}
	else if (strcmp(*kind, "basic") == 0)
	{
		Buf			up = {0};
		bool		ok;

		ok = b64decode_strict(cred, cred_len, &up) &&
			list_has(&opt.basic, up.data ? up.data : "", up.len);
		buf_free(&up);
		if (ok)
			return 0;
	}
	return 401;
}

/* ---------------------------------------------------------------------- */
/* Validation (validate() in the Python version)							  */
/* ---------------------------------------------------------------------- */

static json_object *
jget(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;				/* NULL for JSON null too, like dict.get() */
}

static bool
is_type(json_object *o, json_type t)
{
	return o != NULL && json_object_get_type(o) == t;
}

static bool
str_is(json_object *o, const char *s)
{
	size_t		n = strlen(s);

	return is_type(o, json_type_string) &&
		(size_t) json_object_get_string_len(o) == n &&
		memcmp(json_object_get_string(o), s, n) == 0;
}

static const char *
py_type_name(json_object *o)
{
	switch (json_object_get_type(o))
	{
		case json_type_boolean:
			return "bool";
		case json_type_double:
			return "float";
		case json_type_int:
			return "int";
		case json_type_string:
			return "str";
		case json_type_array:
			return "list";
		case json_type_object:
			return "dict";
		default:
			return "NoneType";
	}
}

static const char *const str_args[] = {"url", "username", "password", "platform", "tag",
"application", "filtered_query_params", "scope"};

static const struct
{
	const char *name;
	long long	lo;
	long long	hi;
}			int_ranges[] =
{
	{"piece_length", 4194304, 67108864},
	{"count", 1, 200},
	{"percentage", 1, 100},
	{"concurrent_task_count", 1, 100},
	{"concurrent_peer_count", 1, 1000},
};

/* NULL when valid (*args_out set), else the 422 message (maybe in err) */
static const char *
validate(json_object *body, char *err, size_t errlen, json_object **args_out)
{
	json_object *v,
			   *args;
	size_t		i;
	const char *url = "";
	size_t		url_len = 0;

	if (!is_type(body, json_type_object))
		return "request body must be a JSON object";
	if (!str_is(jget(body, "type"), "preheat"))
		return "type: required, must be \"preheat\"";
	v = jget(body, "scheduler_cluster_ids");
	if (v != NULL)
	{
		if (!is_type(v, json_type_array))
			return "scheduler_cluster_ids: must be a list of positive integers";
		for (i = 0; i < json_object_array_length(v); i++)
		{
			json_object *e = json_object_array_get_idx(v, i);

			if (!is_type(e, json_type_int) || json_object_get_int64(e) <= 0)
				return "scheduler_cluster_ids: must be a list of positive integers";
		}
	}
	v = jget(body, "bio");
	if (v != NULL && !is_type(v, json_type_string))
		return "bio: must be a string";
	v = jget(body, "user_id");
	if (v != NULL && !(is_type(v, json_type_int) && json_object_get_int64(v) >= 0))
		return "user_id: must be a non-negative integer";
	args = jget(body, "args");
	if (!is_type(args, json_type_object))
		return "args: required, must be a JSON object";
	for (i = 0; i < sizeof(str_args) / sizeof(str_args[0]); i++)
	{
		v = jget(args, str_args[i]);
		if (v != NULL && !is_type(v, json_type_string))
		{
			snprintf(err, errlen, "args.%s: must be a string", str_args[i]);
			return err;
		}
	}
	v = jget(args, "type");
	if (!str_is(v, "image") && !str_is(v, "file"))
		return "args.type: required, must be \"image\" or \"file\"";
	if ((v = jget(args, "url")) != NULL)
	{
		url = json_object_get_string(v);
		url_len = (size_t) json_object_get_string_len(v);
	}
	if (str_is(jget(args, "type"), "image"))
	{
		if (!image_url_ok(url, url_len))
			return "args.url: invalid image manifest url, must match "
				"://<host>/v2/<repo>/manifests/<reference>";
	}
	else
	{
		json_object *urls = jget(args, "urls");

		if (urls != NULL)
		{
			if (!is_type(urls, json_type_array))
				return "args.urls: must be a list of strings";
			for (i = 0; i < json_object_array_length(urls); i++)
				if (!is_type(json_object_array_get_idx(urls, i), json_type_string))
					return "args.urls: must be a list of strings";
		}
		if (url_len == 0 && (urls == NULL || json_object_array_length(urls) == 0))
			return "args.url: required for type file";
	}
	v = jget(args, "headers");
	if (v != NULL)
	{
		if (!is_type(v, json_type_object))
			return "args.headers: must be an object of string values";
		json_object_object_foreach(v, hk, hv)
		{
			(void) hk;
			if (!is_type(hv, json_type_string))
				return "args.headers: must be an object of string values";
		}
	}
	v = jget(args, "scope");
	if (v != NULL && json_object_get_string_len(v) != 0 && !opt.lenient_scope &&
		!str_is(v, "single_seed_peer") && !str_is(v, "all_seed_peers") && !str_is(v, "all_peers"))
		return "args.scope: must be one of single_seed_peer, all_seed_peers, all_peers";
	v = jget(args, "timeout");
	if (v != NULL && !is_type(v, json_type_int))
	{
		snprintf(err, errlen, "args.timeout: must be an integer (nanoseconds), got %s",
				 py_type_name(v));
		return err;
	}
	for (i = 0; i < sizeof(int_ranges) / sizeof(int_ranges[0]); i++)
	{
		long long	n;

		v = jget(args, int_ranges[i].name);
		if (v == NULL)
			continue;
		if (!is_type(v, json_type_int))
		{
			snprintf(err, errlen, "args.%s: must be an integer", int_ranges[i].name);
			return err;
		}
		n = json_object_get_int64(v);
		if (n < int_ranges[i].lo || n > int_ranges[i].hi)
		{
			snprintf(err, errlen, "args.%s: must be between %lld and %lld",
					 int_ranges[i].name, int_ranges[i].lo, int_ranges[i].hi);
			return err;
		}
	}
	v = jget(args, "ips");
	if (v != NULL)
	{
		size_t		n;

		if (!is_type(v, json_type_array))
			return "args.ips: must be a list of 1 to 100 strings";
		n = json_object_array_length(v);
		if (n < 1 || n > 100)
			return "args.ips: must be a list of 1 to 100 strings";
		for (i = 0; i < n; i++)
			if (!is_type(json_object_array_get_idx(v, i), json_type_string))
				return "args.ips: must be a list of 1 to 100 strings";
	}
	*args_out = args;
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* POST /oapi/v1/jobs													  */
/* ---------------------------------------------------------------------- */

static void
log_post(Req *r, long long id, unsigned status)
{
	Buf			line = {0};

	if (log_fd < 0)
		return;
	buf_printf(&line, "{\"t\":%lld.%06ld,\"id\":", (long long) r->t.tv_sec, r->t.tv_nsec / 1000);
	if (id > 0)
		buf_printf(&line, "%lld", id);
	else
		buf_puts(&line, "null");
	buf_printf(&line, ",\"status\":%u,\"body\":", status);
	if (r->parsed && r->jbody != NULL)
		buf_puts(&line, json_object_to_json_string_ext(r->jbody,
													   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	else if (r->bad_body != NULL)
		buf_json_str(&line, r->bad_body, strlen(r->bad_body));
	else
		buf_puts(&line, "null");
	buf_printf(&line, ",\"auth_kind\":\"%s\"}\n", r->kind);
	log_append(&line);
	buf_free(&line);
}

static enum MHD_Result
post_reply(Call *c, unsigned status, struct MHD_Response *resp, bool owned, long long id)
{
	log_post(c->r, id, status);
	return reply(c, status, resp, owned, true);
}

static enum MHD_Result
post_reply_errors(Call *c, const char *msg)
{
	log_post(c->r, 0, 422);
	return reply_errors(c, msg);
}

static enum MHD_Result post_job_b(Call *c);

/* Everything up to the slow<MS>ms pause. */
static enum MHD_Result
post_job_a(Call *c)
{
	Req		   *r = c->r;
	unsigned	code;
	const char *perr = NULL;
	char		errbuf[512];
	const char *verr;
	UrlEntry   *e;
	long long	slow;

	wall_now(&r->t);
	pthread_mutex_lock(&state_lock);
	st.posts++;
	pthread_mutex_unlock(&state_lock);
	code = check_auth(c->con, &r->kind);

	if (r->body.len == 0)
		perr = "EOF";
	else
	{
		const unsigned char *s = (const unsigned char *) r->body.data;
		size_t		len = r->body.len;
		int			jc;

		if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
		{
			s += 3;
			len -= 3;
		}
		perr = utf8_check(s, len, errbuf + 14, sizeof(errbuf) - 14);
		if (perr == NULL)
		{
			jc = json_check(s, len, errbuf + 14, sizeof(errbuf) - 14);
			if (jc == JS_DEPTH)
			{
				/* Python's json hits the recursion limit: a 500, no log line */
				return reply(c, 500, r_500_recursion, false, true);
			}
			if (jc >= 0)
				perr = errbuf + 14;
		}
		if (perr == NULL)
		{
			json_tokener *tok = json_tokener_new_ex(MAX_DEPTH + 16);

			if (tok == NULL)
				oom();
			/* s[len] is the buffer's NUL: it ends a top-level number */
			r->jbody = json_tokener_parse_ex(tok, (const char *) s, (int) len + 1);
			if (json_tokener_get_error(tok) != json_tokener_success)
			{
				snprintf(errbuf + 14, sizeof(errbuf) - 14, "%s",
						 json_tokener_error_desc(json_tokener_get_error(tok)));
				perr = errbuf + 14;
				json_object_put(r->jbody);
				r->jbody = NULL;
			}
			else
				r->parsed = true;
			json_tokener_free(tok);
		}
		if (perr != NULL)
		{
			Buf			raw = {0};

			memcpy(errbuf, "invalid JSON: ", 14);
			perr = errbuf;
			utf8_replace(&raw, (const unsigned char *) r->body.data, r->body.len, 4096);
			r->bad_body = raw.data ? raw.data : strdup("");
		}
	}

	if (code == 401)
		return post_reply(c, 401, r_401, false, 0);
	if (code == 403)
		return post_reply(c, 403, r_403, false, 0);
	if (perr != NULL)
		return post_reply_errors(c, perr);
	verr = validate(r->jbody, errbuf, sizeof(errbuf), &r->args);
	if (verr != NULL)
		return post_reply_errors(c, verr);

	{
		json_object *u = jget(r->args, "url");

		r->url = u ? json_object_get_string(u) : "";
		r->url_len = u ? (size_t) json_object_get_string_len(u) : 0;
	}
	pthread_mutex_lock(&state_lock);
	e = url_lookup(r->url, r->url_len, true);
	r->n = ++e->count;
	pthread_mutex_unlock(&state_lock);

	slow = find_marker_number(r->url, r->url_len, "slow", "ms");
	if (slow > 0)
		return pause_request(c, ms_ns(slow), ST_POST_B);
	return post_job_b(c);
}

static bool
cluster_known(long long id)
{
	int			i;

	for (i = 0; i < opt.nclusters; i++)
		if (opt.clusters[i] == id)
			return true;
	return false;
}

/* Fault markers and job creation, after the slow<MS>ms pause. */
static enum MHD_Result
post_job_b(Call *c)
{
	Req		   *r = c->r;
	const char *url = r->url;
	size_t		url_len = r->url_len,
				i,
				nids,
				args_len,
				bio_len = 0,
				off;
	long long	lim;
	json_object *ids,
			   *v;
	const char *args_text,
			   *bio = "";
	int			nclusters;
	Job		   *j;
	Buf			out = {0};
	long long	id;

	if (contains(url, url_len, "drop"))
	{
		log_post(r, 0, 0);
		if (opt.verbose)
			verbose_line(c->con, c->method, c->url, c->version, 0);
		return MHD_NO;
	}
	if (contains(url, url_len, "redirect"))
		return post_reply(c, 302, r_found, false, 0);
	if (contains(url, url_len, "fail500"))
		return post_reply(c, 500, r_500_manifest, false, 0);
	lim = find_marker_number(url, url_len, "flaky500x", "");
	if (lim >= 0 && r->n <= lim)
		return post_reply(c, 500, r_500_manifest, false, 0);
	lim = find_marker_number(url, url_len, "ratelimit429x", "");
	if ((lim >= 0 && r->n <= lim) || plain_ratelimit(url, url_len))
		return post_reply(c, 429, r_429, false, 0);
	if (contains(url, url_len, "badjson"))
		return post_reply(c, 200, r_badjson, false, 0);

	ids = jget(r->jbody, "scheduler_cluster_ids");
	nids = ids ? json_object_array_length(ids) : 0;
	if (opt.have_clusters)
	{
		for (i = 0; i < nids; i++)
			if (!cluster_known(json_object_get_int64(json_object_array_get_idx(ids, i))))
				return post_reply(c, 429, r_429, false, 0);
		nclusters = nids ? (int) nids : opt.nclusters;
	}
	else
		nclusters = nids ? (int) nids : 1;

	args_text = json_object_to_json_string_ext(r->args,
											   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	args_len = strlen(args_text);
	if ((v = jget(r->jbody, "bio")) != NULL)
	{
		bio = json_object_get_string(v);
		bio_len = (size_t) json_object_get_string_len(v);
	}

	/* one allocation: the job, its clusters, url, args and bio */
	off = sizeof(Job);
	j = xmalloc(off + (size_t) nclusters * sizeof(long long) + url_len + args_len + bio_len + 3);
	j->clusters = (long long *) ((char *) j + off);
	off += (size_t) nclusters * sizeof(long long);
	j->url = (char *) j + off;
	memcpy(j->url, url, url_len);
	j->url[url_len] = '\0';
	off += url_len + 1;
	j->args = (char *) j + off;
	memcpy(j->args, args_text, args_len + 1);
	off += args_len + 1;
	j->bio = (char *) j + off;
	memcpy(j->bio, bio, bio_len);
	j->bio[bio_len] = '\0';
	j->url_len = url_len;
	j->args_len = args_len;
	j->bio_len = bio_len;
	j->nclusters = nclusters;
	for (i = 0; i < (size_t) nclusters; i++)
		j->clusters[i] = nids ? json_object_get_int64(json_object_array_get_idx(ids, i)) :
			opt.have_clusters ? opt.clusters[i] : 1;
	make_task_id(j->task_id);
	j->created = mono_ns();
	rfc3339(&r->t, j->created_s, sizeof(j->created_s));
	memcpy(j->updated_s, j->created_s, sizeof(j->created_s));
	j->state = JOB_PENDING;
	j->polls = 0;
	j->fault = contains(url, url_len, "forget") ? FAULT_FORGET :
		contains(url, url_len, "jobfail") ? FAULT_JOBFAIL :
		contains(url, url_len, "partial") ? FAULT_PARTIAL : FAULT_NONE;
	lim = find_marker_number(url, url_len, "slowget", "ms");
	j->slowget_ns = lim > 0 ? ms_ns(lim) : 0;
	v = jget(r->jbody, "user_id");
	j->user_id = v ? json_object_get_int64(v) : 0;

	pthread_mutex_lock(&state_lock);
	id = j->id = st.next_id++;
	if (st.njobs == st.jobs_cap)
	{
		st.jobs_cap = st.jobs_cap ? st.jobs_cap * 2 : 4096;
		st.jobs = xrealloc(st.jobs, st.jobs_cap * sizeof(Job *));
	}
	st.jobs[st.njobs++] = j;
	job_json(&out, j);
	count_status(200);			/* here rather than in reply(): one lock less */
	pthread_mutex_unlock(&state_lock);

	log_post(r, id, 200);
	return reply_buf(c, 200, &out, false);
}

/* ---------------------------------------------------------------------- */
/* GET /oapi/v1/jobs/<id>												  */
/* ---------------------------------------------------------------------- */

static enum MHD_Result
get_job(Call *c, const char *sid)
{
	const char *kind;
	unsigned	code;
	size_t		n = strlen(sid),
				i;
	bool		digits = n > 0,
				zero = true;
	long long	id = 0;
	Job		   *j;
	Buf			out = {0};
	int64_t		delay = 0;

	pthread_mutex_lock(&state_lock);
	st.gets++;
	pthread_mutex_unlock(&state_lock);
	code = check_auth(c->con, &kind);
	if (code == 401)
		return reply(c, 401, r_401, false, true);
	if (code == 403)
		return reply(c, 403, r_403, false, true);
	for (i = 0; i < n && digits; i++)
	{
		if (sid[i] < '0' || sid[i] > '9')
			digits = false;
		else if (sid[i] != '0')
			zero = false;
	}
	if (!digits || zero)
	{
		Buf			msg = {0};
		enum MHD_Result ret;

		buf_puts(&msg, "id: must be a positive integer, got ");
		py_repr_latin1(&msg, (const unsigned char *) sid, n < 64 ? n : 64);
		ret = reply_errors(c, msg.data);
		buf_free(&msg);
		return ret;
	}
	for (i = 0; i < n; i++)
	{
		if (id > (LLONG_MAX - 9) / 10)
		{
			id = LLONG_MAX;
			break;
		}
		id = id * 10 + (sid[i] - '0');
	}

	pthread_mutex_lock(&state_lock);
	j = job_find(id);
	if (j != NULL)
	{
		j->polls++;
		delay = j->slowget_ns;
		if (j->fault == FAULT_FORGET)
			j = NULL;
		else
		{
			if (j->state == JOB_PENDING &&
				mono_ns() - j->created >= seconds_ns(opt.success_after))
			{
				struct timespec now;

				j->state = j->fault == FAULT_JOBFAIL ? JOB_FAILURE : JOB_SUCCESS;
				wall_now(&now);
				rfc3339(&now, j->updated_s, sizeof(j->updated_s));
			}
			job_json(&out, j);
		}
	}
	pthread_mutex_unlock(&state_lock);
	if (j == NULL)
		return reply(c, 404, r_404, false, true);
	if (delay > 0)
	{
		c->r->pending = make_response(out.data, out.len, true, JSON_CT);
		c->r->pending_status = 200;
		return pause_request(c, delay, ST_PENDING);
	}
	return reply_buf(c, 200, &out, true);
}

/* ---------------------------------------------------------------------- */
/* /_standin/ control endpoints (no auth, not counted)					  */
/* ---------------------------------------------------------------------- */

static enum MHD_Result
control(Call *c, const char *path)
{
	bool		get = strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0;
	Buf			out = {0};
	size_t		i;

	if (get && strcmp(path, "/_standin/stats") == 0)
	{
		pthread_mutex_lock(&state_lock);
		buf_printf(&out, "{\"posts\":%lld,\"gets\":%lld,\"jobs\":%zu,\"healthy\":%lld,\"by_status\":{",
				   st.posts, st.gets, st.njobs, st.healthy);
		for (i = 0; i < (size_t) st.nstatus; i++)
			buf_printf(&out, "%s\"%u\":%lld", i ? "," : "", st.status_code[i], st.status_count[i]);
		pthread_mutex_unlock(&state_lock);
		buf_puts(&out, "}}");
		return reply_buf(c, 200, &out, false);
	}
	if (get && strcmp(path, "/_standin/jobs") == 0)
	{
		buf_putc(&out, '[');
		pthread_mutex_lock(&state_lock);
		for (i = 0; i < st.njobs; i++)
		{
			Job		   *j = st.jobs[i];
			UrlEntry   *e = url_lookup(j->url, j->url_len, false);

			buf_printf(&out, "%s{\"id\":%lld,\"url\":", i ? "," : "", j->id);
			buf_json_str(&out, j->url, j->url_len);
			buf_printf(&out, ",\"state\":\"%s\",\"polls\":%lld,\"posts_for_url\":%lld}",
					   state_names[j->state], j->polls, e ? e->count : 0);
		}
		pthread_mutex_unlock(&state_lock);
		buf_putc(&out, ']');
		return reply_buf(c, 200, &out, false);
	}
	if (get && strcmp(path, "/_standin/urls") == 0)
	{
		buf_putc(&out, '{');
		pthread_mutex_lock(&state_lock);
		for (i = 0; i < st.nurls; i++)
		{
			if (i)
				buf_putc(&out, ',');
			buf_json_str(&out, st.urls[i].key, st.urls[i].len);
			buf_printf(&out, ":%lld", st.urls[i].count);
		}
		pthread_mutex_unlock(&state_lock);
		buf_putc(&out, '}');
		return reply_buf(c, 200, &out, false);
	}
	if (strcmp(c->method, "POST") == 0 && strcmp(path, "/_standin/reset") == 0)
	{
		pthread_mutex_lock(&state_lock);
		state_reset();
		pthread_mutex_unlock(&state_lock);
		malloc_trim(0);			/* hand the jobs' memory back between runs */
		return reply(c, 200, r_reset, false, false);
	}
	return reply(c, 404, r_404_control, false, false);
}

/* ---------------------------------------------------------------------- */
/* libmicrohttpd callbacks												  */
/* ---------------------------------------------------------------------- */

/* Python's http.server turns a leading "//..." into "/..." */
static const char *
request_path(const char *url)
{
	if (url[0] == '/' && url[1] == '/')
	{
		while (url[1] == '/')
			url++;
	}
	return url;
}

static enum MHD_Result
route_api(Call *c)
{
	const char *path = request_path(c->url);
	const char *m = c->method;

	if (strcmp(path, "/healthy") == 0 && (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0))
	{
		pthread_mutex_lock(&state_lock);
		st.healthy++;
		pthread_mutex_unlock(&state_lock);
		return reply(c, 200, r_healthy, false, true);
	}
	if (strcmp(path, "/oapi/v1/jobs") == 0 && strcmp(m, "POST") == 0)
		return post_job_a(c);
	if (strncmp(path, "/oapi/v1/jobs/", 14) == 0 && strcmp(m, "GET") == 0)
		return get_job(c, path + 14);
	return reply(c, 301, r_moved, false, true);
}

static bool
method_supported(const char *m)
{
	static const char *const known[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
	size_t		i;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(m, known[i]) == 0)
			return true;
	return false;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *con, const char *url,
		   const char *method, const char *version, const char *upload,
		   size_t *upload_size, void **con_cls)
{
	Req		   *r = *con_cls;
	Call		c = {.con = con, .url = url, .method = method, .version = version};

	(void) cls;
	if (r == NULL)
	{
		const char *cl;

		r = calloc(1, sizeof(Req));
		if (r == NULL)
			return MHD_NO;
		*con_cls = r;
		c.r = r;
		if (!method_supported(method))
			return reply(&c, 501, r_501, false, false);
		cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL && strtoull(cl, NULL, 10) > MAX_BODY)
			return reply(&c, 413, r_413, false, true);
		return MHD_YES;
	}
	c.r = r;
	if (*upload_size != 0)
	{
		if (!r->too_big && r->stage != ST_DONE)
		{
			if (r->body.len + *upload_size > MAX_BODY)
			{
				r->too_big = true;
				buf_free(&r->body);
			}
			else
				buf_put(&r->body, upload, *upload_size);
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (r->suspended)
	{
		r->suspended = false;
		atomic_fetch_sub(&nsuspended, 1);
		if (atomic_load(&stopping))
			return MHD_NO;
	}
	switch (r->stage)
	{
		case ST_NEW:
			{
				const char *path = request_path(url);

				if (r->too_big)
					return reply(&c, 413, r_413, false, true);
				if (strncmp(path, "/_standin/", 10) == 0)
					return control(&c, path);
				if (opt.delay > 0)
					return pause_request(&c, seconds_ns(opt.delay), ST_ROUTE);
				return route_api(&c);
			}
		case ST_ROUTE:
			return route_api(&c);
		case ST_POST_B:
			return post_job_b(&c);
		case ST_PENDING:
			{
				struct MHD_Response *resp = r->pending;

				r->pending = NULL;
				return reply(&c, r->pending_status, resp, true, true);
			}
		default:
			return MHD_YES;
	}
}

static void
on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	Req		   *r = *con_cls;

	(void) cls;
	(void) con;
	(void) toe;
	if (r == NULL)
		return;
	if (r->suspended)
		atomic_fetch_sub(&nsuspended, 1);
	buf_free(&r->body);
	json_object_put(r->jbody);
	free(r->bad_body);
	if (r->pending)
		MHD_destroy_response(r->pending);
	free(r);
	*con_cls = NULL;
}

/* Keep the request target as sent: Python's self.path is not unescaped. */
static size_t
unescape_none(void *cls, struct MHD_Connection *con, char *s)
{
	(void) cls;
	(void) con;
	return strlen(s);
}

/* ---------------------------------------------------------------------- */
/* Command line (argparse-like)											  */
/* ---------------------------------------------------------------------- */

static void
usage_error(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, usage_line, progname);
	fprintf(stderr, "%s: error: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void
list_add(StrList *l, const char *s, size_t n)
{
	l->v = xrealloc(l->v, (size_t) (l->n + 1) * sizeof(char *));
	l->len = xrealloc(l->len, (size_t) (l->n + 1) * sizeof(size_t));
	l->v[l->n] = xmalloc(n + 1);
	memcpy(l->v[l->n], s, n);
	l->v[l->n][n] = '\0';
	l->len[l->n++] = n;
}

enum
{
	O_HELP, O_HOST, O_PORT, O_PORT_FILE, O_TOKEN, O_INACTIVE, O_BASIC, O_HEADER,
	O_LOG_FILE, O_SUCCESS_AFTER, O_DELAY, O_CLUSTERS, O_LENIENT, O_VERBOSE
};

static const struct
{
	const char *name;
	bool		arg;
}			optdefs[] =
{
	[O_HELP] = {"--help", false},
	[O_HOST] = {"--host", true},
	[O_PORT] = {"--port", true},
	[O_PORT_FILE] = {"--port-file", true},
	[O_TOKEN] = {"--token", true},
	[O_INACTIVE] = {"--inactive-token", true},
	[O_BASIC] = {"--basic", true},
	[O_HEADER] = {"--header", true},
	[O_LOG_FILE] = {"--log-file", true},
	[O_SUCCESS_AFTER] = {"--success-after", true},
	[O_DELAY] = {"--delay", true},
	[O_CLUSTERS] = {"--clusters", true},
	[O_LENIENT] = {"--lenient-scope", false},
	[O_VERBOSE] = {"--verbose", false},
};

#define NOPTS ((int) (sizeof(optdefs) / sizeof(optdefs[0])))

/* argparse's test for "-1" / "-.5" being a value rather than an option */
static bool
negative_number(const char *s)
{
	char	   *end;

	if (s[0] != '-' || s[1] == '\0')
		return false;
	strtod(s, &end);
	return *end == '\0' && strspn(s + 1, "0123456789.") == strlen(s + 1);
}

static double
parse_float(const char *name, const char *v)
{
	char	   *end;
	double		d;

	errno = 0;
	d = strtod(v, &end);
	while (end != v && *end && py_space((unsigned char) *end))
		end++;
	if (end == v || *end != '\0')
		usage_error("argument %s: invalid float value: '%s'", name, v);
	return d;
}

static void
parse_args(int argc, char **argv)
{
	int			i;

	for (i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *eq;
		const char *val = NULL;
		size_t		nlen;
		int			k,
					found = -1,
					nfound = 0;
		char		cand[256] = "";

		if (strcmp(a, "-h") == 0)
			found = O_HELP;
		else
		{
			if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
				usage_error("unrecognized arguments: %s", a);
			eq = strchr(a, '=');
			nlen = eq ? (size_t) (eq - a) : strlen(a);
			if (eq)
				val = eq + 1;
			for (k = 0; k < NOPTS; k++)
			{
				if (strlen(optdefs[k].name) == nlen && strncmp(optdefs[k].name, a, nlen) == 0)
				{
					found = k;
					nfound = 1;
					break;
				}
				if (strncmp(optdefs[k].name, a, nlen) == 0)
				{
					found = k;
					nfound++;
					snprintf(cand + strlen(cand), sizeof(cand) - strlen(cand), "%s%s",
							 cand[0] ? ", " : "", optdefs[k].name);
				}
			}
			if (nfound > 1)
				usage_error("ambiguous option: %.*s could match %s", (int) nlen, a, cand);
			if (found < 0)
				usage_error("unrecognized arguments: %s", a);
		}
		if (optdefs[found].arg && val == NULL)
		{
			if (i + 1 >= argc || (argv[i + 1][0] == '-' && !negative_number(argv[i + 1])))
				usage_error("argument %s: expected one argument", optdefs[found].name);
			val = argv[++i];
		}
		else if (!optdefs[found].arg && val != NULL)
			usage_error("argument %s: ignored explicit argument '%s'", optdefs[found].name, val);

		switch (found)
		{
			case O_HELP:
				printf(usage_line, progname);
				fputs(options_help, stdout);
				fputs(faults_help, stdout);
				exit(0);
			case O_HOST:
				opt.host = val;
				break;
			case O_PORT:
				{
					char	   *end;
					long		p;

					errno = 0;
					p = strtol(val, &end, 10);
					while (end != val && *end && py_space((unsigned char) *end))
						end++;
					if (end == val || *end != '\0' || errno != 0)
						usage_error("argument --port: invalid int value: '%s'", val);
					if (p < 0 || p > 65535)
						usage_error("argument --port: port must be 0-65535");
					opt.port = (int) p;
				}
				break;
			case O_PORT_FILE:
				opt.port_file = val;
				break;
			case O_TOKEN:
				list_add(&opt.token, val, strlen(val));
				break;
			case O_INACTIVE:
				list_add(&opt.inactive_token, val, strlen(val));
				break;
			case O_BASIC:
				if (strchr(val, ':') == NULL)
					usage_error("--basic expects USER:PASS");
				list_add(&opt.basic, val, strlen(val));
				break;
			case O_HEADER:
				{
					const char *colon = strchr(val, ':');
					const char *name = val,
							   *hv;
					size_t		name_len,
								hv_len;

					if (colon == NULL)
						usage_error("--header expects NAME:VALUE");
					name_len = (size_t) (colon - val);
					strip(&name, &name_len);
					if (name_len == 0)
						usage_error("--header expects NAME:VALUE");
					hv = colon + 1;
					hv_len = strlen(hv);
					strip(&hv, &hv_len);
					list_add(&opt.header_name, name, name_len);
					list_add(&opt.header_value, hv, hv_len);
				}
				break;
			case O_LOG_FILE:
				opt.log_file = val;
				break;
			case O_SUCCESS_AFTER:
				opt.success_after = parse_float("--success-after", val);
				break;
			case O_DELAY:
				opt.delay = parse_float("--delay", val);
				break;
			case O_CLUSTERS:
				{
					const char *p = val;

					opt.have_clusters = true;
					opt.nclusters = 0;
					while (*p)
					{
						const char *comma = strchr(p, ',');
						size_t		n = comma ? (size_t) (comma - p) : strlen(p);
						const char *s = p;
						char		num[64],
								   *end;

						strip(&s, &n);
						if (n > 0)
						{
							if (n >= sizeof(num))
								usage_error("--clusters expects comma-separated integers");
							memcpy(num, s, n);
							num[n] = '\0';
							errno = 0;
							opt.clusters = xrealloc(opt.clusters,
													(size_t) (opt.nclusters + 1) * sizeof(long long));
							opt.clusters[opt.nclusters] = strtoll(num, &end, 10);
							if (*end != '\0' || errno != 0 || !(num[0] == '-' || num[0] == '+' ||
																 (num[0] >= '0' && num[0] <= '9')))
								usage_error("--clusters expects comma-separated integers");
							opt.nclusters++;
						}
						if (comma == NULL)
							break;
						p = comma + 1;
					}
				}
				break;
			case O_LENIENT:
				opt.lenient_scope = true;
				break;
			case O_VERBOSE:
				opt.verbose = true;
				break;
		}
	}
	opt.auth_required = opt.token.n || opt.inactive_token.n || opt.basic.n || opt.header_name.n;
}

/* ---------------------------------------------------------------------- */
/* main																	  */
/* ---------------------------------------------------------------------- */

static int
open_listener(int *port_out)
{
	static const int families[] = {AF_INET, AF_INET6};
	char		portstr[16];
	size_t		f;
	const char *why = NULL;

	snprintf(portstr, sizeof(portstr), "%d", opt.port);
	for (f = 0; f < 2; f++)
	{
		struct addrinfo hints = {0},
				   *res,
				   *ai;
		int			rc;

		hints.ai_family = families[f];
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		rc = getaddrinfo(opt.host[0] ? opt.host : NULL, portstr, &hints, &res);
		if (rc != 0)
		{
			if (why == NULL)
				why = gai_strerror(rc);
			continue;
		}
		for (ai = res; ai; ai = ai->ai_next)
		{
			int			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
									ai->ai_protocol);
			int			one = 1;
			struct sockaddr_storage ss;
			socklen_t	sl = sizeof(ss);

			if (fd < 0)
				continue;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0 ||
				getsockname(fd, (struct sockaddr *) &ss, &sl) != 0)
			{
				why = strerror(errno);
				close(fd);
				continue;
			}
			*port_out = ntohs(ss.ss_family == AF_INET ?
							  ((struct sockaddr_in *) &ss)->sin_port :
							  ((struct sockaddr_in6 *) &ss)->sin6_port);
			freeaddrinfo(res);
			return fd;
		}
		freeaddrinfo(res);
	}
	fprintf(stderr, "dragonfly_standin: cannot listen on %s:%d: %s\n",
			opt.host, opt.port, why ? why : "no usable address");
	exit(1);
}

static void
write_port_file(int port)
{
	char		tmp[4096];
	FILE	   *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", opt.port_file, (int) getpid());
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 ||
		rename(tmp, opt.port_file) != 0)
	{
		fprintf(stderr, "dragonfly_standin: cannot write %s: %s\n", opt.port_file, strerror(errno));
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	sigset_t	sigs;
	pthread_condattr_t ca;
	pthread_t	ticker;
	struct MHD_Daemon *d;
	struct rlimit rl;
	unsigned	conn_limit = MAX_CONNECTIONS;
	unsigned	flags;
	int			lfd,
				port,
				sig;
	int64_t		deadline;

	if (argc > 0 && argv[0][0])
	{
		const char *slash = strrchr(argv[0], '/');

		progname = slash ? slash + 1 : argv[0];
	}
	parse_args(argc, argv);

	/* room for the connections and their sockets */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
	{
		if (rl.rlim_cur < rl.rlim_max)
		{
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
			getrlimit(RLIMIT_NOFILE, &rl);
		}
		if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t) conn_limit + 64)
			conn_limit = rl.rlim_cur > 128 ? (unsigned) rl.rlim_cur - 64 : 64;
	}

	if (opt.log_file)
	{
		log_fd = open(opt.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (log_fd < 0)
		{
			fprintf(stderr, "dragonfly_standin: cannot open %s: %s\n", opt.log_file, strerror(errno));
			return 1;
		}
	}

	/* signals go to sigwait() below, never to the worker threads */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	json_object_put(json_tokener_parse("{\"warm\":[1]}"));	/* json-c's hash seed */
	make_static_responses();

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ticker_cond, &ca);
	if (pthread_create(&ticker, NULL, ticker_main, NULL) != 0)
	{
		fputs("dragonfly_standin: cannot start the timer thread\n", stderr);
		return 1;
	}

	lfd = open_listener(&port);
	/*
	 * poll(), not epoll: with libmicrohttpd 0.9.75 (Debian 12) the epoll
	 * workers sometimes sleep in epoll_wait() while freshly accepted
	 * connections have requests waiting (a burst of a few hundred new
	 * keep-alive connections stalls until the 300 s timeout); poll() is as
	 * fast here and never stalled.
	 */
	flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
	if (opt.verbose)
		flags |= MHD_USE_ERROR_LOG;
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
						 MHD_OPTION_LISTEN_SOCKET, lfd,
						 MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) WORKERS,
						 MHD_OPTION_CONNECTION_LIMIT, conn_limit,
						 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) IDLE_TIMEOUT_S,
						 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 32 * 1024,
						 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
						 MHD_OPTION_UNESCAPE_CALLBACK, unescape_none, NULL,
						 MHD_OPTION_END);
	if (d == NULL)
	{
		fputs("dragonfly_standin: cannot start the HTTP daemon\n", stderr);
		return 1;
	}
	if (opt.port_file)
		write_port_file(port);
	printf("dragonfly-standin listening on http://%s:%d (auth %s)\n",
		   opt.host, port, opt.auth_required ? "required" : "off");
	fflush(stdout);

	do
	{
		if (sigwait(&sigs, &sig) != 0)
			sig = 0;
	} while (sig != SIGTERM && sig != SIGINT);

	/* resume every paused request (they close), then stop the daemon */
	atomic_store(&stopping, true);
	MHD_quiesce_daemon(d);
	ticker_wake();
	deadline = mono_ns() + 2000000000LL;
	while (atomic_load(&nsuspended) > 0 && mono_ns() < deadline)
	{
		struct timespec ts = {0, 2000000};

		ticker_wake();
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&nsuspended) == 0)
		MHD_stop_daemon(d);
	close(lfd);

	pthread_mutex_lock(&ticker_lock);
	ticker_stop = true;
	pthread_cond_signal(&ticker_cond);
	pthread_mutex_unlock(&ticker_lock);
	pthread_join(ticker, NULL);
	log_flush();
	if (log_fd >= 0)
		close(log_fd);
	return 0;
}
