/*
 * loadgen.c
 *		Keep-alive POST /oapi/v1/jobs load generator, to measure how many
 *		requests a second the Dragonfly stand-in can take (its ceiling, so
 *		benchmarks know the dispatcher is what they measure).
 *
 * Usage: loadgen URL TOKEN TOTAL CONCURRENCY
 *
 * URL is the jobs endpoint (http://127.0.0.1:PORT/oapi/v1/jobs); a URL
 * without "/oapi/" gets "/oapi/v1/jobs" appended.  TOKEN is sent as
 * "Authorization: Bearer TOKEN" unless it is empty.  CONCURRENCY requests are
 * kept in flight over as many keep-alive connections (libcurl multi, HTTP/1.1,
 * no "Expect: 100-continue"); each body is a realistic preheat request with
 * its own manifest URL.  Anything but a 200 counts as an error.  Prints
 * "requests=N seconds=S rate=R/s errors=E" and exits 1 if there were errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

typedef struct Slot
{
	CURL	   *easy;
	char		body[1024];
} Slot;

static size_t
discard(char *p, size_t size, size_t n, void *ud)
{
	(void) p;
	(void) ud;
	return size * n;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* the body p2p_preheat's dispatcher sends, with a distinct manifest URL */
static void
fill_body(Slot *s, long n)
{
	int			len;

	len = snprintf(s->body, sizeof(s->body),
				   "{\"type\":\"preheat\",\"scheduler_cluster_ids\":[1],"
				   "\"args\":{\"type\":\"image\","
				   "\"url\":\"https://harbor.example.com/v2/library/app-%ld/manifests/sha256:%064lx\","
				   "\"scope\":\"single_seed_peer\",\"platform\":\"linux/amd64\","
				   "\"concurrent_peer_count\":500,\"timeout\":1800000000000,"
				   "\"headers\":{\"Authorization\":\"Basic cm9ib3QkcHJlaGVhdDpzZWNyZXQ=\"},"
				   "\"username\":\"robot$preheat\",\"password\":\"secret\"}}",
				   n % 1000, (unsigned long) n);
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long) len);
}

int
main(int argc, char **argv)
{
	const char *token;
	char	   *url;
	long		total,
				conc,
				started = 0,
				done = 0,
				errors = 0,
				i;
	Slot	   *slots;
	CURLM	   *multi;
	struct curl_slist *headers = NULL;
	double		t0,
				secs;
	int			running = 0;

	if (argc != 5)
	{
		fprintf(stderr, "usage: %s URL TOKEN TOTAL CONCURRENCY\n", argv[0]);
		return 2;
	}
	token = argv[2];
	total = atol(argv[3]);
	conc = atol(argv[4]);
	if (total <= 0 || conc <= 0)
	{
		fprintf(stderr, "loadgen: TOTAL and CONCURRENCY must be positive\n");
		return 2;
	}
	if (conc > total)
		conc = total;
	url = malloc(strlen(argv[1]) + 16);
	strcpy(url, argv[1]);
	if (strstr(url, "/oapi/") == NULL)
	{
		size_t		n = strlen(url);

		while (n > 0 && url[n - 1] == '/')
			url[--n] = '\0';
		strcat(url, "/oapi/v1/jobs");
	}

	curl_global_init(CURL_GLOBAL_DEFAULT);
	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Expect:");
	if (token[0])
	{
		char	   *h = malloc(strlen(token) + 32);

		sprintf(h, "Authorization: Bearer %s", token);
		headers = curl_slist_append(headers, h);
		free(h);
	}
	multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, conc);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_NOTHING);
	slots = calloc((size_t) conc, sizeof(Slot));

	t0 = now_s();
	for (i = 0; i < conc; i++)
	{
		CURL	   *e = curl_easy_init();

		slots[i].easy = e;
		curl_easy_setopt(e, CURLOPT_URL, url);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
		curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
		curl_easy_setopt(e, CURLOPT_PRIVATE, &slots[i]);
		fill_body(&slots[i], started++);
		curl_multi_add_handle(multi, e);
	}

	while (done < total)
	{
		CURLMsg    *msg;
		int			left;

		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			Slot	   *s;
			long		code = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &s);
			curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
			if (msg->data.result != CURLE_OK || code != 200)
			{
				if (errors < 5 && msg->data.result != CURLE_OK)
					fprintf(stderr, "loadgen: %s\n", curl_easy_strerror(msg->data.result));
				else if (errors < 5)
					fprintf(stderr, "loadgen: HTTP %ld\n", code);
				errors++;
			}
			done++;
			curl_multi_remove_handle(multi, s->easy);
			if (started < total)
			{
				fill_body(s, started++);
				curl_multi_add_handle(multi, s->easy);
			}
		}
		if (done < total)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
	secs = now_s() - t0;

	printf("requests=%ld seconds=%.3f rate=%.0f/s errors=%ld\n",
		   done, secs, secs > 0 ? done / secs : 0.0, errors);
	for (i = 0; i < conc; i++)
		curl_easy_cleanup(slots[i].easy);
	curl_multi_cleanup(multi);
	curl_slist_free_all(headers);
	curl_global_cleanup();
	free(slots);
	free(url);
	return errors ? 1 : 0;
}
