/*
 * http_process.c
 *		The worker's HTTP helper: runs transfers, touches no database.
 *
 * It runs the same libcurl engine (http.c) as any backend, with the
 * worker's settings, and answers a round of finished transfers in one
 * message.  It lives as long as the worker's channel: when the worker
 * detaches (it stopped, or crashed) the helper stops every transfer and
 * exits.  A request's body and Authorization header are wiped when the
 * request ends.
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "http.h"
#include "http_channel.h"

/* A request in this process: the worker's id and its own copies. */
typedef struct HelperRequest
{
	HttpRequest req;			/* first: done[] gives these back */
	uint64		id;
	dlist_node	node;
	size_t		secret_len;		/* body and auth header, wiped at the end */
	char		data[FLEXIBLE_ARRAY_MEMBER];	/* url, body, auth header */
} HelperRequest;

bool		http_in_helper = false;

/* after SIGTERM, how long the worker has to detach first (see the main loop) */
#define STOP_GRACE_MS 1000

static dlist_head requests = DLIST_STATIC_INIT(requests);
static MemoryContext answers_cxt;

static void
end_request(HelperRequest *h)
{
	dlist_delete(&h->node);
	explicit_bzero(h->data, h->secret_len);
	pfree(h);
}

static void
abort_all(void)
{
	dlist_mutable_iter it;

	http_abort_all();
	dlist_foreach_modify(it, &requests)
		end_request(dlist_container(HelperRequest, node, it.cur));
}

static void
start(ChannelReader *r)
{
	uint64		id;
	uint8		flags;
	uint64		max_bytes;
	const char *url,
			   *body,
			   *auth;
	uint32		url_len,
				body_len,
				auth_len;
	HelperRequest *h;
	char	   *p;

	if (!ch_get(r, &id, sizeof(id)) || !ch_get(r, &flags, sizeof(flags)) ||
		!ch_get(r, &max_bytes, sizeof(max_bytes)) || !ch_get_str(r, &url, &url_len) ||
		!ch_get_str(r, &body, &body_len) || !ch_get_str(r, &auth, &auth_len) || url == NULL)
		elog(ERROR, "p2p_preheat: malformed request from the worker");
	h = palloc0(offsetof(HelperRequest, data) + url_len + body_len + auth_len + 3);
	h->id = id;
	p = h->data;
	memcpy(p, url, url_len);
	h->req.url = p;
	p += url_len + 1;
	/* the secrets: body and header, wiped by end_request() */
	if (body)
	{
		memcpy(p, body, body_len);
		h->req.body = p;
		p += body_len + 1;
	}
	if (auth)
	{
		memcpy(p, auth, auth_len);
		h->req.auth_header = p;
		p += auth_len + 1;
	}
	h->secret_len = p - h->data;
	h->req.method = (flags & CH_POST) ? "POST" : "GET";
	h->req.insecure = (flags & CH_INSECURE) != 0;
	h->req.max_bytes = (size_t) max_bytes;
	h->req.cxt = answers_cxt;
	dlist_push_tail(&requests, &h->node);
	http_start(&h->req);
}

static void
cancel(ChannelReader *r)
{
	uint64		id;
	dlist_mutable_iter it;

	if (!ch_get(r, &id, sizeof(id)))
		elog(ERROR, "p2p_preheat: malformed request from the worker");
	dlist_foreach_modify(it, &requests)
	{
		HelperRequest *h = dlist_container(HelperRequest, node, it.cur);

		if (h->id == id)
		{
			http_cancel(&h->req, "canceled");
			end_request(h);
			return;
		}
	}
}

static void
configure(ChannelReader *r)
{
	uint32		n;

	if (!ch_get(r, &n, sizeof(n)))
		elog(ERROR, "p2p_preheat: malformed request from the worker");
	for (uint32 i = 0; i < n; i++)
	{
		const char *name,
				   *value;
		uint32		name_len,
					value_len;
		char	   *name_z,
				   *value_z;

		if (!ch_get_str(r, &name, &name_len) || !ch_get_str(r, &value, &value_len) ||
			name == NULL || value == NULL)
			elog(ERROR, "p2p_preheat: malformed request from the worker");
		name_z = pnstrdup(name, name_len);
		value_z = pnstrdup(value, value_len);
		/* the worker's values win over this process's own reload */
		SetConfigOption(name_z, value_z, PGC_SUSET, PGC_S_OVERRIDE);
		pfree(name_z);
		pfree(value_z);
	}
}

static void
handle(const char *data, Size nbytes)
{
	ChannelReader r = {data, data + nbytes};

	while (r.p < r.end)
	{
		switch (*r.p++)
		{
			case CH_START:
				start(&r);
				break;
			case CH_CANCEL:
				cancel(&r);
				break;
			case CH_ABORT:
				abort_all();
				break;
			case CH_TRIM:
				http_trim_pool();
#ifdef __GLIBC__
				malloc_trim(0);
#endif
				break;
			case CH_CONFIG:
				configure(&r);
				break;
			default:
				elog(ERROR, "p2p_preheat: malformed request from the worker");
		}
	}
}

static void
put_done(StringInfo out, HelperRequest *h)
{
	HttpRequest *req = &h->req;
	uint8		flags = (req->too_large ? CH_TOO_LARGE : 0) | (req->over_budget ? CH_OVER_BUDGET : 0);
	int32		result = (int32) req->result;
	int32		status = (int32) req->status;

	appendStringInfoChar(out, CH_DONE);
	ch_put_u64(out, h->id);
	appendBinaryStringInfo(out, (const char *) &result, sizeof(result));
	appendBinaryStringInfo(out, (const char *) &status, sizeof(status));
	appendStringInfoChar(out, (char) flags);
	ch_put_str(out, req->refused[0] ? req->refused : NULL, strlen(req->refused));
	ch_put_str(out, req->errbuf[0] ? req->errbuf : NULL, strlen(req->errbuf));
	ch_put_str(out, req->location, req->location ? strlen(req->location) : 0);
	ch_put_str(out, req->response, req->response_len);
}

void
p2p_preheat_http_main(Datum arg)
{
	dsm_segment *seg;
	ChannelHeader *header;
	shm_mq	   *mq_to;
	shm_mq	   *mq_from;
	shm_mq_handle *in;
	shm_mq_handle *out;
	StringInfoData outbuf;
	bool		sending = false;
	int			unsent = 0;
	TimestampTz first_unsent = 0;
	TimestampTz stop_at = 0;
	HttpRequest *done[256];

	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	http_in_helper = true;
	/* no database: only so that it shows in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("p2p_preheat http");
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "p2p_preheat http");
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		proc_exit(0);			/* the worker is already gone */
	dsm_pin_mapping(seg);
	header = dsm_segment_address(seg);
	if (header->magic != CH_MAGIC)
		proc_exit(0);
	mq_to = (shm_mq *) ((char *) header + CH_TO_HELPER_OFFSET);
	mq_from = (shm_mq *) ((char *) header + CH_FROM_HELPER_OFFSET);
	shm_mq_set_receiver(mq_to, MyProc);
	shm_mq_set_sender(mq_from, MyProc);
	in = shm_mq_attach(mq_to, seg, NULL);
	out = shm_mq_attach(mq_from, seg, NULL);
	answers_cxt = AllocSetContextCreate(TopMemoryContext, "p2p_preheat http answers",
										ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&outbuf);

	for (;;)
	{
		int			n;
		/* idle: no timer at all, the worker's requests set the latch */
		long		wait_ms = http_in_flight() > 0 || outbuf.len > 0 ? 1000 : 3600 * 1000L;

		/*
		 * A server shutdown signals the worker too, which then detaches and
		 * ends this process: answers keep flowing until it has.  SIGTERM to
		 * this process alone ends it after a grace period.
		 */
		if (ShutdownRequestPending)
		{
			TimestampTz now = GetCurrentTimestamp();

			if (stop_at == 0)
				stop_at = TimestampTzPlusMilliseconds(now, STOP_GRACE_MS);
			if (now >= stop_at)
				break;
			wait_ms = Min(wait_ms, (long) ((stop_at - now) / 1000) + 1);
		}

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/*
		 * Answers go in groups: each message wakes the worker, and a wake-up
		 * per answer would cost more than the answer.  A group goes when it
		 * is full (in answers or bytes: large answers are not held), when
		 * nothing else is in flight, or a millisecond after its first answer.
		 */
		if (outbuf.len > 0)
		{
			bool		due = sending || unsent >= CH_ANSWER_GROUP || http_in_flight() == 0 ||
				outbuf.len >= CH_ANSWER_BYTES ||
				TimestampDifferenceExceeds(first_unsent, GetCurrentTimestamp(), CH_ANSWER_WAIT_MS);

			if (due)
			{
				shm_mq_result res = shm_mq_send(out, outbuf.len, outbuf.data, true, true);

				if (res == SHM_MQ_DETACHED)
					break;
				sending = res == SHM_MQ_WOULD_BLOCK;
				if (!sending)
				{
					unsent = 0;
					if (outbuf.maxlen > 1024 * 1024)
					{
						pfree(outbuf.data);
						initStringInfo(&outbuf);
					}
					else
						resetStringInfo(&outbuf);
				}
			}
			if (outbuf.len > 0 && !sending)
				wait_ms = CH_ANSWER_WAIT_MS;
		}
		for (;;)
		{
			Size		nbytes;
			void	   *data;
			shm_mq_result res = shm_mq_receive(in, &nbytes, &data, true);

			if (res == SHM_MQ_WOULD_BLOCK)
				break;
			if (res == SHM_MQ_DETACHED)
				goto worker_gone;
			handle(data, nbytes);
		}

		/*
		 * Wait for transfers or the worker; a partly sent message adds no
		 * answers until it is through (shm_mq wants it again as it was).
		 */
		n = http_wait(wait_ms, done, sending ? 0 : lengthof(done), PG_WAIT_EXTENSION);
		for (int i = 0; i < n; i++)
		{
			HelperRequest *h = (HelperRequest *) done[i];

			if (unsent++ == 0)
				first_unsent = GetCurrentTimestamp();
			put_done(&outbuf, h);
			end_request(h);
		}
		if (n > 0)
			MemoryContextReset(answers_cxt);
	}
worker_gone:
	abort_all();
	http_shutdown();
	proc_exit(0);
}
