/*
 * main.c
 *		A stand-in for Dragonfly's manager Open API, so that p2p_preheat's
 *		tests and benchmarks talk real HTTP over loopback to something that
 *		answers like Dragonfly, including the ways Dragonfly fails.
 *
 * Options: --host, --port, --port-file, --token, --inactive-token, --basic,
 * --header, --log-file, --state-file, --success-after, --delay, --clusters, --cluster,
 * --chaos, --lenient-scope, --verbose.  help_text below explains each, with the
 * routes, the fault markers and the log format (--help prints it).
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "standin.h"

static const char help_text[] =
"usage: dragonfly_standin [options]\n"
"\n"
"Dragonfly manager Open API stand-in for p2p_preheat's tests and benchmarks.\n"
"\n"
"options:\n"
"  -h, --help              show this help and exit\n"
"  --host HOST             address to listen on (default 127.0.0.1)\n"
"  --port PORT             0 = pick a free port (default)\n"
"  --port-file FILE        write the chosen port here once listening (atomic)\n"
"  --token TOKEN[:SCOPES]  valid bearer token (repeatable); SCOPES, a comma-separated\n"
"                          list of job and cluster, limits it like the scopes of a\n"
"                          Dragonfly personal access token (403 \"Token doesn't have\n"
"                          permission to access this resource. Required permission:\n"
"                          cluster\" elsewhere); none = every scope\n"
"  --inactive-token TOKEN  bearer token answered 403 \"token is inactive\" (repeatable)\n"
"  --basic USER:PASS       valid Basic credentials (repeatable)\n"
"  --header NAME:VALUE     request header that authenticates (repeatable)\n"
"  --log-file FILE         append a JSON line per request that creates or changes\n"
"                          something (format below)\n"
"  --state-file FILE       keep the jobs across restarts, as Dragonfly's database does:\n"
"                          each job created is appended to FILE as one JSON line\n"
"                          (flushed at once, so kill -9 loses none), and at start the\n"
"                          jobs in FILE are loaded back: GET, the list and\n"
"                          /_standin/jobs know them, ids go on after the highest, and\n"
"                          each job's age (--success-after) runs from its creation by\n"
"                          the wall clock.  A line that does not parse (torn) is\n"
"                          skipped with a warning.  Per-url POST counts (flaky500x<N>,\n"
"                          ratelimit429x<N>), polls and statistics start again at 0.\n"
"  --success-after SECONDS a job is final when polled this long after creation (default 0)\n"
"  --delay SECONDS         pause before answering every API request (not /_standin/)\n"
"  --list-delay SECONDS    pause before answering the job list (GET /oapi/v1/jobs)\n"
"  --clusters ID,ID        known scheduler cluster ids; a job naming another gets 429\n"
"                          like Dragonfly; a job naming none goes to all of these.\n"
"                          Default: any id accepted, a job naming none goes to [1]\n"
"  --cluster ID:RATE       a scheduler cluster with its job_rate_limit (repeatable; 0 =\n"
"                          Dragonfly's default of 10).  Turns on Dragonfly's job rate\n"
"                          limiter: a POST /oapi/v1/jobs naming scheduler_cluster_ids\n"
"                          charges each in turn; the first over its rate (RATE a\n"
"                          second, burst RATE) or unknown answers 429 text/plain\n"
"                          \"rate limit exceeded\", no Retry-After; clusters charged\n"
"                          before it stay charged.  Ids of --clusters count at 10/s.\n"
"  --chaos KIND=PCT,...    for a soak test: that percent of API requests (/oapi/...,\n"
"                          /registry/...) fail at random.  KIND: 500 (POST /oapi/v1/jobs:\n"
"                          as fail500; others {\"message\":\"Internal Server Error\"}),\n"
"                          429 (POST /oapi/v1/jobs only: as ratelimit), drop (connection\n"
"                          closed without an answer), slow (a pause of slowms, default\n"
"                          2000, then the normal answer); slowms=MS sets that pause.\n"
"                          A POST /oapi/v1/jobs hit is logged with \"chaos\":\"<KIND>\".\n"
"                          e.g. --chaos 500=5,drop=2,slow=1\n"
"  --lenient-scope         accept any args.scope string (Dragonfly >= 2.1.66)\n"
"  --verbose               one line per request on stderr\n"
"Without --token, --inactive-token, --basic or --header every request is let in.\n"
"\n"
"routes: GET /healthy, POST /oapi/v1/jobs, GET /oapi/v1/jobs/<id>,\n"
"  GET /oapi/v1/jobs (Dragonfly's list: newest first; type, state, user_id, page,\n"
"  per_page (default 10); Link header; scheduler_clusters null),\n"
"  GET /oapi/v1/clusters/<id> (Dragonfly's cluster object; 404 {\"message\":\"record not\n"
"  found\"} for an unknown id), PATCH /oapi/v1/clusters/<id> (scheduler_cluster_config\n"
"  replaced as a whole, name, bio; a new job_rate_limit applies at once, where Dragonfly\n"
"  takes up to 3 minutes);\n"
"  Kraken's GET /health (200 \"OK\") and POST /registry/notifications (Harbor's Kraken\n"
"  driver: {\"events\":[{\"action\":\"push\",\"target\":{...}}]}; logged, 200 with an\n"
"  empty body; a body that is not such JSON gets 500 text/plain \"decode body: ...\");\n"
"  anything else answers 301 to /console/ like Dragonfly.\n"
"\n"
"fault markers (anywhere in args.url of POST /oapi/v1/jobs):\n"
"  fail500          500 {\"message\":\"failed to get manifest: unexpected status 500\"}\n"
"  flaky500x<N>     that 500 for the first N POSTs of that exact url, then normal\n"
"  registry404      500 {\"message\":\"unknown: artifact <repo>:<ref> not found\"}, Dragonfly\n"
"                   passing on Harbor's answer for a missing tag (<repo>@<digest>)\n"
"  registry401      500 {\"message\":\"unauthorized: unauthorized to access repository:\n"
"                   <repo>, action: pull: unauthorized to access repository: <repo>,\n"
"                   action: pull\"} (Harbor refused Dragonfly's credentials)\n"
"  registry500      500 {\"message\":\"received unexpected HTTP status: 500 Internal Server\n"
"                   Error\"}\n"
"  noplatform       500 {\"message\":\"no matching manifest for platform <args.platform, or\n"
"                   linux/amd64>\"}\n"
"  ratelimit        429 text/plain \"rate limit exceeded\" (no Retry-After) every time\n"
"  ratelimit429x<N> that 429 for the first N POSTs of that exact url, then normal\n"
"  badjson          200 with body \"not json\" (no job created)\n"
"  slow<MS>ms       pause MS milliseconds before answering the POST\n"
"  slowget<MS>ms    pause MS milliseconds before answering each GET of that job\n"
"  jobfail          job created; final state FAILURE (\"pull manifest: 404 not found\")\n"
"  partial          job created; final state SUCCESS with one failure_tasks entry\n"
"  forget           job created; GET /oapi/v1/jobs/<id> answers 404 (as after cleanup)\n"
"  redirect         302 to http://example.invalid/console/\n"
"  drop             close the connection without any answer (after slow<MS>ms)\n"
"\n"
"log line (one per POST /oapi/v1/jobs, PATCH /oapi/v1/clusters/<id> and POST\n"
"/registry/notifications, whatever the outcome; route is \"POST /oapi/v1/jobs\",\n"
"\"PATCH /oapi/v1/clusters/:id\" or \"POST /registry/notifications\"):\n"
"  {\"t\":<arrival, epoch seconds>,\"route\":\"<route>\",\"id\":<job or cluster id|null>,\n"
"   \"status\":<HTTP status, 0 = dropped>,\"body\":<request body; a string if not JSON>,\n"
"   \"auth_kind\":\"bearer|basic|custom|none\"[,\"chaos\":\"500|429|drop|slow\"]}\n"
"\n"
"control endpoints (no auth, not counted): GET /_standin/stats ({\"posts\",\"gets\",\"jobs\",\n"
"  \"healthy\",\"notifications\",\"by_status\":{\"<status>\":n}}), GET /_standin/jobs (id, url,\n"
"  state, polls, posts_for_url of each job), GET /_standin/urls ({url: POSTs}),\n"
"  POST /_standin/reset (forget jobs and counters; ids go on growing; with\n"
"  --state-file the forgetting is recorded there too)\n";

Options		opt = {.host = "127.0.0.1", .chaos_slow_ms = 2000};

static void
usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "dragonfly_standin: %s%s\nTry --help.\n", what, arg);
	exit(2);
}

static double
seconds(const char *v)
{
	char	   *end;
	double		d = strtod(v, &end);

	if (end == v || *end != '\0' || d < 0)
		usage_error("expected a number of seconds, not ", v);
	return d;
}

/* Append one element to a growing array. */
#define PUSH(arr, n, value) do { \
	if (((arr) = realloc((arr), ((n) + 1) * sizeof(*(arr)))) == NULL) abort(); \
	(arr)[(n)++] = (value); } while (0)

static void
parse_args(int argc, char **argv)
{
	enum { O_HOST = 256, O_PORT, O_PORT_FILE, O_TOKEN, O_INACTIVE, O_BASIC, O_HEADER,
	O_LOG_FILE, O_STATE_FILE, O_SUCCESS_AFTER, O_DELAY, O_LIST_DELAY, O_CLUSTERS, O_CLUSTER, O_CHAOS, O_LENIENT, O_VERBOSE };
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'}, {"host", required_argument, NULL, O_HOST},
		{"port", required_argument, NULL, O_PORT}, {"port-file", required_argument, NULL, O_PORT_FILE},
		{"token", required_argument, NULL, O_TOKEN}, {"inactive-token", required_argument, NULL, O_INACTIVE},
		{"basic", required_argument, NULL, O_BASIC}, {"header", required_argument, NULL, O_HEADER},
		{"log-file", required_argument, NULL, O_LOG_FILE},
		{"state-file", required_argument, NULL, O_STATE_FILE},
		{"success-after", required_argument, NULL, O_SUCCESS_AFTER},
		{"delay", required_argument, NULL, O_DELAY}, {"list-delay", required_argument, NULL, O_LIST_DELAY}, {"clusters", required_argument, NULL, O_CLUSTERS},
		{"cluster", required_argument, NULL, O_CLUSTER}, {"chaos", required_argument, NULL, O_CHAOS},
		{"lenient-scope", no_argument, NULL, O_LENIENT}, {"verbose", no_argument, NULL, O_VERBOSE},
		{NULL, 0, NULL, 0}};
	int			o;
	char	   *end, *p, *save;

	while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1)
	{
		switch (o)
		{
			case 'h':
				fputs(help_text, stdout);
				exit(0);
			case O_HOST:
				opt.host = optarg;
				break;
			case O_PORT:
				opt.port = (int) strtol(optarg, &end, 10);
				if (end == optarg || *end != '\0' || opt.port < 0 || opt.port > 65535)
					usage_error("--port expects 0-65535, not ", optarg);
				break;
			case O_PORT_FILE:
				opt.port_file = optarg;
				break;
			case O_TOKEN:
			case O_INACTIVE:
				{
					Token		t = {optarg, o == O_INACTIVE, 0};

					/* TOKEN:SCOPE,SCOPE, like a Dragonfly personal access token's scopes */
					if (o == O_TOKEN && (p = strrchr(optarg, ':')) != NULL)
						for (*p++ = '\0'; (p = strtok_r(p, ",", &save)) != NULL; p = NULL)
						{
							if (strcmp(p, "job") != 0 && strcmp(p, "cluster") != 0)
								usage_error("--token scopes are job and cluster, not ", p);
							t.scopes |= strcmp(p, "job") == 0 ? SCOPE_JOB : SCOPE_CLUSTER;
						}
					PUSH(opt.tokens, opt.ntokens, t);
				}
				break;
			case O_BASIC:
				if (strchr(optarg, ':') == NULL)
					usage_error("--basic expects USER:PASS, not ", optarg);
				PUSH(opt.basic, opt.nbasic, optarg);
				break;
			case O_HEADER:
				if ((p = strchr(optarg, ':')) == NULL || p == optarg)
					usage_error("--header expects NAME:VALUE, not ", optarg);
				for (*p++ = '\0'; *p == ' '; p++)
					;
				PUSH(opt.headers, opt.nheaders, ((Header) {optarg, p}));
				break;
			case O_LOG_FILE:
				opt.log_file = optarg;
				break;
			case O_STATE_FILE:
				opt.state_file = optarg;
				break;
			case O_SUCCESS_AFTER:
				opt.success_after = seconds(optarg);
				break;
			case O_DELAY:
				opt.delay = seconds(optarg);
				break;
			case O_LIST_DELAY:
				opt.list_delay = seconds(optarg);
				break;
			case O_CLUSTERS:
				for (p = strtok_r(strdup(optarg), ",", &save); p; p = strtok_r(NULL, ",", &save))
				{
					long long	id = strtoll(p, &end, 10);

					if (end == p || *end != '\0' || id <= 0)
						usage_error("--clusters expects comma-separated positive integers, not ", optarg);
					PUSH(opt.clusters, opt.nclusters, id);
				}
				break;
			case O_CLUSTER:
				{
					ClusterLimit l = {strtoll(optarg, &end, 10), 0};

					if (end == optarg || *end != ':' || l.id <= 0 ||
						(l.rate = strtoll(end + 1, &p, 10)) < 0 || p == end + 1 || *p != '\0')
						usage_error("--cluster expects ID:JOB_RATE_LIMIT, not ", optarg);
					PUSH(opt.limits, opt.nlimits, l);
				}
				break;
			case O_CHAOS:
				for (p = strtok_r(strdup(optarg), ",", &save); p; p = strtok_r(NULL, ",", &save))
				{
					static const char *const keys[] = {"", "500", "429", "drop", "slow", "slowms"};
					size_t		k = 1, n = strcspn(p, "=");
					double		v;

					while (k < 6 && (strlen(keys[k]) != n || strncmp(p, keys[k], n) != 0))
						k++;
					if (k == 6 || p[n] != '=' || (v = strtod(p + n + 1, &end)) < 0 || end == p + n + 1 || *end)
						usage_error("--chaos expects KIND=PERCENT,... (500, 429, drop, slow; slowms=MS), not ", optarg);
					if (k == 5)
						opt.chaos_slow_ms = (long long) v;
					else
						opt.chaos[k] = v;
				}
				break;
			case O_LENIENT:
				opt.lenient_scope = true;
				break;
			case O_VERBOSE:
				opt.verbose = true;
				break;
			default:
				usage_error("unknown option", "");
		}
	}
	if (optind < argc)
		usage_error("unexpected argument ", argv[optind]);
	opt.auth_required = opt.ntokens || opt.nbasic || opt.nheaders;
}

static int
open_listener(int *port_out)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	char		portstr[16];
	int			rc;

	snprintf(portstr, sizeof(portstr), "%d", opt.port);
	if ((rc = getaddrinfo(opt.host, portstr, &hints, &res)) != 0)
	{
		fprintf(stderr, "dragonfly_standin: %s: %s\n", opt.host, gai_strerror(rc));
		exit(1);
	}
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
	{
		int			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		int			one = 1;
		struct sockaddr_storage ss;
		socklen_t	sl = sizeof(ss);

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0 &&
			getsockname(fd, (struct sockaddr *) &ss, &sl) == 0)
		{
			*port_out = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port :
							  ((struct sockaddr_in6 *) &ss)->sin6_port);
			freeaddrinfo(res);
			return fd;
		}
		close(fd);
	}
	fprintf(stderr, "dragonfly_standin: cannot listen on %s:%d: %s\n", opt.host, opt.port, strerror(errno));
	exit(1);
}

int
main(int argc, char **argv)
{
	sigset_t	sigs;
	int			fd, port;

	parse_args(argc, argv);
	clusters_init();
	if (opt.state_file)
		state_open(opt.state_file);	/* before listening: no 404 for a job it knew */

	/* signals go to sigwait() in server_run(), never to the worker threads */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	fd = open_listener(&port);
	if (opt.port_file)
	{
		/* under a temporary name, then renamed: a reader never sees half */
		char		tmp[4096];
		FILE	   *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp.%d", opt.port_file, (int) getpid());
		if ((f = fopen(tmp, "w")) == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 ||
			rename(tmp, opt.port_file) != 0)
		{
			fprintf(stderr, "dragonfly_standin: cannot write %s: %s\n", opt.port_file, strerror(errno));
			return 1;
		}
	}
	return server_run(fd, port);
}
