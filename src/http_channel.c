/*
 * http_channel.c
 *		The worker's side of the channel to its HTTP helper process.
 *
 * Requests are collected into one message and handed to the ring when the
 * worker waits, so a claimed batch costs the ring one message, not one per
 * job; answers come back the same way.  A request's POST body and
 * Authorization header are copied into that message: the copy is wiped
 * once the ring has taken it.
 *
 * If the helper cannot start (no free background worker slot) the worker
 * keeps libcurl in its own process, as preheat_dispatch() does.  If it ends
 * while transfers are in it, those end as transport failures that may have
 * reached Dragonfly, so a POST among them is looked for in Dragonfly
 * before it is sent again; the worker then carries on in its own process
 * until it restarts.  Either way it says so once in the log.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "http.h"
#include "http_channel.h"

bool		http_channel_on = false;

static dsm_segment *segment = NULL;
static ChannelHeader *header = NULL;
static shm_mq_handle *to_helper = NULL;
static shm_mq_handle *from_helper = NULL;
static BackgroundWorkerHandle *helper = NULL;

/* records not yet handed over, and the message the ring is part-way through */
static StringInfoData pending;
static StringInfoData sending;
static bool abort_needed = false;
static StringInfoData sent_settings;	/* the CH_CONFIG record last sent */

/*
 * Requests in the helper, by slot; an id is the slot and the slot's use
 * count, so an answer to a request canceled or aborted since is dropped.
 */
static HttpRequest **slots = NULL;
static uint32 *slot_uses = NULL;
static int *free_slots = NULL;
static int	slot_cap = 0;
static int	slot_top = 0;		/* slots ever used */
static int	nfree = 0;
static int	in_flight = 0;

/* finished requests that http_wait() has not returned yet */
static HttpRequest **ready = NULL;
static int	ready_len = 0;
static int	ready_cap = 0;

static void
wipe(StringInfo s)
{
	if (s->len > 0)
		explicit_bzero(s->data, s->len);
	/* a large answer or batch does not keep its buffer for ever */
	if (s->maxlen > 1024 * 1024)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		pfree(s->data);
		initStringInfo(s);
		MemoryContextSwitchTo(old);
	}
	else
		resetStringInfo(s);
}

/*
 * Opens the channel: a DSM segment and a helper process.  False, with the
 * worker sending from its own process, when no helper can start.
 */
bool
http_channel_open(void)
{
	BackgroundWorker bgw;
	MemoryContext old;
	shm_mq	   *mq_to;
	shm_mq	   *mq_from;

	if (http_channel_on)
		return true;
	old = MemoryContextSwitchTo(TopMemoryContext);
	segment = dsm_create(CH_SEGMENT_SIZE, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (segment == NULL)
	{
		MemoryContextSwitchTo(old);
		ereport(LOG,
				(errmsg("p2p_preheat worker sends from its own process: no dynamic shared memory segment is free for its HTTP process")));
		return false;
	}
	dsm_pin_mapping(segment);
	header = dsm_segment_address(segment);
	header->magic = CH_MAGIC;
	mq_to = shm_mq_create((char *) header + CH_TO_HELPER_OFFSET, CH_RING_SIZE);
	mq_from = shm_mq_create((char *) header + CH_FROM_HELPER_OFFSET, CH_RING_SIZE);
	shm_mq_set_sender(mq_to, MyProc);
	shm_mq_set_receiver(mq_from, MyProc);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "p2p_preheat", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "p2p_preheat_http_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "p2p_preheat http", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "p2p_preheat http", BGW_MAXLEN);
	bgw.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(segment));
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &helper))
	{
		dsm_detach(segment);
		segment = NULL;
		header = NULL;
		MemoryContextSwitchTo(old);
		ereport(LOG,
				(errmsg("p2p_preheat worker sends from its own process: no background worker slot is free for its HTTP process"),
				 errhint("Raise max_worker_processes by one and restart the server: the worker then sends and records at the same time.")));
		return false;
	}
	/* a helper that ends before it attaches shows as a detached ring */
	to_helper = shm_mq_attach(mq_to, segment, helper);
	from_helper = shm_mq_attach(mq_from, segment, helper);
	initStringInfo(&pending);
	initStringInfo(&sending);
	MemoryContextSwitchTo(old);
	in_flight = 0;
	ready_len = 0;
	abort_needed = false;
	if (sent_settings.data)
		pfree(sent_settings.data);
	sent_settings.data = NULL;	/* a new helper is told every setting */
	http_channel_on = true;
	return true;
}

static void
add_ready(HttpRequest *req)
{
	if (ready_len == ready_cap)
	{
		int			cap = Max(64, ready_cap * 2);

		ready = ready ? repalloc(ready, cap * sizeof(HttpRequest *)) :
			MemoryContextAlloc(TopMemoryContext, cap * sizeof(HttpRequest *));
		ready_cap = cap;
	}
	ready[ready_len++] = req;
}

static int
take_ready(HttpRequest **done, int max)
{
	int			n = Min(max, ready_len);

	memcpy(done, ready, n * sizeof(HttpRequest *));
	memmove(ready, ready + n, (ready_len - n) * sizeof(HttpRequest *));
	ready_len -= n;
	return n;
}

static void
free_slot(int slot)
{
	slots[slot]->in_flight = false;
	slots[slot] = NULL;
	slot_uses[slot]++;
	free_slots[nfree++] = slot;
	in_flight--;
}

/*
 * The helper is gone: what it had in flight may have been sent.  The
 * worker carries on with libcurl in its own process.
 */
static void
helper_gone(void)
{
	for (int i = 0; i < slot_top; i++)
		if (slots[i] != NULL)
		{
			HttpRequest *req = slots[i];

			free_slot(i);
			http_end_early(req, CURLE_RECV_ERROR, "p2p_preheat's HTTP process ended during the transfer");
			add_ready(req);
		}
	wipe(&pending);
	wipe(&sending);
	http_channel_close();
	/* at a server shutdown the helper may go first: nothing to say then */
	if (!ShutdownRequestPending)
		ereport(LOG,
				(errmsg("p2p_preheat worker's HTTP process ended; the worker sends from its own process until it restarts")));
}

/*
 * The settings the helper's libcurl engine reads.  The worker's values may
 * differ from the server's (ALTER DATABASE ... SET), so the helper is sent
 * them, in front of the requests of a message, whenever one has changed.
 */
static const char *const forwarded[] = {
	"p2p_preheat.connect_timeout", "p2p_preheat.request_timeout",
	"p2p_preheat.max_in_flight", "p2p_preheat.max_answer_size",
	"p2p_preheat.answer_memory", "p2p_preheat.allow_link_local",
	"p2p_preheat.http_debug", "p2p_preheat.ca_file", "p2p_preheat.proxy"
};

static void
put_settings(StringInfo out)
{
	StringInfoData rec;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	initStringInfo(&rec);
	appendStringInfoChar(&rec, CH_CONFIG);
	ch_put_u32(&rec, lengthof(forwarded));
	for (int i = 0; i < lengthof(forwarded); i++)
	{
		const char *value = GetConfigOption(forwarded[i], false, false);

		ch_put_str(&rec, forwarded[i], strlen(forwarded[i]));
		ch_put_str(&rec, value ? value : "", value ? strlen(value) : 0);
	}
	if (sent_settings.data == NULL || sent_settings.len != rec.len ||
		memcmp(sent_settings.data, rec.data, rec.len) != 0)
	{
		appendBinaryStringInfo(out, rec.data, rec.len);
		if (sent_settings.data)
			pfree(sent_settings.data);
		sent_settings = rec;
	}
	else
		pfree(rec.data);
	MemoryContextSwitchTo(old);
}

/* Hands what is pending to the ring, as far as it takes it without waiting. */
void
http_channel_flush(void)
{
	while (http_channel_on)
	{
		shm_mq_result res;

		if (sending.len == 0)
		{
			if (abort_needed)
			{
				/* in front of every request started after the abort */
				appendStringInfoChar(&sending, CH_ABORT);
				abort_needed = false;
			}
			if (pending.len == 0 && sending.len == 0)
				return;
			if (pending.len > 0)
				put_settings(&sending);
			appendBinaryStringInfo(&sending, pending.data, pending.len);
			wipe(&pending);
		}
		res = shm_mq_send(to_helper, sending.len, sending.data, true, true);
		if (res == SHM_MQ_WOULD_BLOCK)
			return;
		if (res == SHM_MQ_DETACHED)
		{
			helper_gone();
			return;
		}
		wipe(&sending);
	}
}

void
http_channel_start(HttpRequest *req)
{
	int			slot;
	uint8		flags = 0;

	if (req->cxt == NULL)
		req->cxt = CurrentMemoryContext;
	req->done = false;
	req->errbuf[0] = '\0';
	req->refused[0] = '\0';
	req->too_large = req->over_budget = false;
	req->response = NULL;
	req->response_len = 0;
	req->location = NULL;

	if (nfree == 0)
	{
		if (slot_top == slot_cap)
		{
			int			cap = Max(256, slot_cap * 2);

			if (slots == NULL)
			{
				slots = MemoryContextAllocZero(TopMemoryContext, cap * sizeof(HttpRequest *));
				slot_uses = MemoryContextAllocZero(TopMemoryContext, cap * sizeof(uint32));
				free_slots = MemoryContextAlloc(TopMemoryContext, cap * sizeof(int));
			}
			else
			{
				slots = repalloc(slots, cap * sizeof(HttpRequest *));
				slot_uses = repalloc(slot_uses, cap * sizeof(uint32));
				free_slots = repalloc(free_slots, cap * sizeof(int));
				memset(slot_uses + slot_cap, 0, (cap - slot_cap) * sizeof(uint32));
			}
			slot_cap = cap;
		}
		free_slots[nfree++] = slot_top++;
	}
	slot = free_slots[--nfree];
	slots[slot] = req;
	req->in_flight = true;
	in_flight++;

	if (strcmp(req->method, "POST") == 0)
		flags |= CH_POST;
	if (req->insecure)
		flags |= CH_INSECURE;
	appendStringInfoChar(&pending, CH_START);
	ch_put_u64(&pending, ((uint64) slot_uses[slot] << 32) | (uint32) slot);
	appendStringInfoChar(&pending, (char) flags);
	ch_put_u64(&pending, (uint64) req->max_bytes);
	ch_put_str(&pending, req->url, strlen(req->url));
	ch_put_str(&pending, (flags & CH_POST) ? req->body : NULL,
			   (flags & CH_POST) ? strlen(req->body) : 0);
	ch_put_str(&pending, req->auth_header, req->auth_header ? strlen(req->auth_header) : 0);
	/* a long batch streams to the helper while it is being claimed */
	if (pending.len > 64 * 1024)
		http_channel_flush();
}

/* One CH_DONE record: the answer goes where its request asked. */
static bool
read_done(ChannelReader *r)
{
	uint64		id;
	int32		result;
	int32		status;
	uint8		flags;
	const char *refused,
			   *errbuf,
			   *location,
			   *answer;
	uint32		refused_len,
				errbuf_len,
				location_len,
				answer_len;
	uint32		slot;
	HttpRequest *req;

	if (!ch_get(r, &id, sizeof(id)) || !ch_get(r, &result, sizeof(result)) ||
		!ch_get(r, &status, sizeof(status)) || !ch_get(r, &flags, sizeof(flags)) ||
		!ch_get_str(r, &refused, &refused_len) || !ch_get_str(r, &errbuf, &errbuf_len) ||
		!ch_get_str(r, &location, &location_len) || !ch_get_str(r, &answer, &answer_len))
		return false;
	slot = (uint32) id;
	if (slot >= (uint32) slot_top || slots[slot] == NULL || slot_uses[slot] != (uint32) (id >> 32))
		return true;			/* canceled or aborted since */
	req = slots[slot];
	free_slot(slot);
	req->result = (CURLcode) result;
	req->status = status;
	req->too_large = (flags & CH_TOO_LARGE) != 0;
	req->over_budget = (flags & CH_OVER_BUDGET) != 0;
	strlcpy(req->refused, "", sizeof(req->refused));
	if (refused)
		memcpy(req->refused, refused, Min(refused_len, sizeof(req->refused) - 1));
	req->refused[Min(refused_len, sizeof(req->refused) - 1)] = '\0';
	req->errbuf[0] = '\0';
	if (errbuf)
	{
		memcpy(req->errbuf, errbuf, Min(errbuf_len, sizeof(req->errbuf) - 1));
		req->errbuf[Min(errbuf_len, sizeof(req->errbuf) - 1)] = '\0';
	}
	req->location = NULL;
	if (location)
	{
		req->location = MemoryContextAlloc(req->cxt, location_len + 1);
		memcpy(req->location, location, location_len);
		req->location[location_len] = '\0';
	}
	req->response = NULL;
	req->response_len = 0;
	if (answer)
	{
		/* this process bounds what it holds, as the helper bounds what it reads */
		if (!http_hold(req->cxt, answer_len + 1))
		{
			req->result = CURLE_WRITE_ERROR;
			req->over_budget = true;
			snprintf(req->errbuf, sizeof(req->errbuf),
					 "answers held by this process fill p2p_preheat.answer_memory (%d kB); "
					 "the answer was dropped",
					 http_answer_memory_kb);
		}
		else
		{
			req->response = MemoryContextAlloc(req->cxt, answer_len + 1);
			memcpy(req->response, answer, answer_len);
			req->response[answer_len] = '\0';
			req->response_len = answer_len;
		}
	}
	req->done = true;
	add_ready(req);
	return true;
}

/* Takes every message the helper has sent, without waiting. */
static void
receive(void)
{
	while (http_channel_on)
	{
		Size		nbytes;
		void	   *data;
		shm_mq_result res = shm_mq_receive(from_helper, &nbytes, &data, true);
		ChannelReader r;

		if (res == SHM_MQ_WOULD_BLOCK)
			return;
		if (res == SHM_MQ_DETACHED)
		{
			helper_gone();
			return;
		}
		r.p = data;
		r.end = (char *) data + nbytes;
		while (r.p < r.end)
		{
			char		type = *r.p++;

			if (type != CH_DONE || !read_done(&r))
				elog(ERROR, "p2p_preheat: malformed message from the HTTP process");
		}
	}
}

int
http_channel_wait(long timeout_ms, HttpRequest **done, int max, uint32 wait_event_info)
{
	int			n;

	if (ready_len > 0)
		return take_ready(done, max);
	http_channel_flush();
	receive();
	if (ready_len > 0 || !http_channel_on)
		return take_ready(done, max);
	/* the helper sets this latch when it answers, and when the ring has room */
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Max(timeout_ms, 0), wait_event_info);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	http_channel_flush();
	receive();
	n = take_ready(done, max);
	return n;
}

void
http_channel_cancel(HttpRequest *req, const char *why)
{
	for (int i = 0; i < slot_top; i++)
		if (slots[i] == req)
		{
			appendStringInfoChar(&pending, CH_CANCEL);
			ch_put_u64(&pending, ((uint64) slot_uses[i] << 32) | (uint32) i);
			free_slot(i);
			http_end_early(req, CURLE_ABORTED_BY_CALLBACK, why);
			http_channel_flush();
			return;
		}
}

/* From PG_CATCH as well: forgets every request; the helper ends them later. */
void
http_channel_abort_all(void)
{
	for (int i = 0; i < slot_top; i++)
		if (slots[i] != NULL)
			free_slot(i);
	in_flight = 0;
	ready_len = 0;
	if (pending.len > 0)
	{
		explicit_bzero(pending.data, pending.len);
		resetStringInfo(&pending);
	}
	abort_needed = true;
}

void
http_channel_trim(void)
{
	appendStringInfoChar(&pending, CH_TRIM);
	http_channel_flush();
}

/* Requests in the helper, and finished ones not yet taken. */
int
http_channel_in_flight(void)
{
	return in_flight + ready_len;
}

/* The helper sees the ring detached and ends. */
void
http_channel_close(void)
{
	if (segment == NULL)
		return;
	http_channel_on = false;
	if (to_helper)
		shm_mq_detach(to_helper);
	if (from_helper)
		shm_mq_detach(from_helper);
	to_helper = from_helper = NULL;
	dsm_detach(segment);
	segment = NULL;
	header = NULL;
	if (helper)
	{
		pfree(helper);
		helper = NULL;
	}
}
