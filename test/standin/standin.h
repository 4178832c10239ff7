/*
 * standin.h
 *		What the parts of the Dragonfly stand-in share: the options, the
 *		request being answered, and the calls between server.c (HTTP), jobs.c
 *		(the job API), clusters.c (scheduler clusters), kraken.c (Kraken's
 *		notifications), state.c (--state-file) and main.c (command line).
 */
#ifndef STANDIN_H
#define STANDIN_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>
#include <microhttpd.h>

#define JSON_CT "application/json; charset=utf-8"
#define TEXT_CT "text/plain; charset=utf-8"

/* Personal access token scopes (none given = every scope, like Dragonfly) */
#define SCOPE_JOB		1
#define SCOPE_CLUSTER	2

typedef struct Token
{
	const char *value;
	bool		inactive;
	unsigned	scopes;
} Token;

typedef struct Header
{
	const char *name;
	const char *value;
} Header;

typedef struct ClusterLimit
{
	long long	id;
	long long	rate;			/* job_rate_limit; 0 = Dragonfly's default */
} ClusterLimit;

typedef struct Options
{
	const char *host;
	int			port;
	const char *port_file;
	const char *log_file;
	const char *state_file;
	Token	   *tokens;
	int			ntokens;
	const char **basic;			/* "user:pass" */
	int			nbasic;
	Header	   *headers;
	int			nheaders;
	double		success_after;
	double		delay;
	double		list_delay;		/* --list-delay: before the job list */
	long long  *clusters;		/* --clusters: known ids */
	int			nclusters;
	ClusterLimit *limits;		/* --cluster: ids with a job rate limit */
	int			nlimits;
	double		chaos[5];		/* --chaos: percent of API requests, by Chaos */
	long long	chaos_slow_ms;
	bool		lenient_scope;
	bool		verbose;
	bool		auth_required;
} Options;

extern Options opt;

/* What --chaos did to a request */
typedef enum Chaos
{
	CHAOS_NONE, CHAOS_500, CHAOS_429, CHAOS_DROP, CHAOS_SLOW
} Chaos;

/* One request; kept across pauses in the connection's slot. */
typedef struct Call Call;
typedef enum MHD_Result (*Step) (Call *c);

typedef struct Req
{
	char	   *body;
	size_t		len;
	bool		too_big;
	bool		suspended;
	Step		next;			/* what runs when a pause ends */
	bool		rolled;			/* --chaos has chosen (chaos) */
	Chaos		chaos;
	/* POST /oapi/v1/jobs */
	double		t;				/* arrival, seconds since the epoch */
	const char *auth_kind;
	json_object *jbody;
	char	   *bad_body;		/* printable copy of a body that is not JSON */
	long long	url_posts;		/* POSTs so far of this args.url */
	char	   *pending;		/* a 200 answer prepared before a pause */
} Req;

struct Call
{
	struct MHD_Connection *con;
	const char *url;
	const char *method;
	Req		   *r;
	bool		control;		/* /_standin/: not in the statistics */
};

/* Counters of /_standin/stats, under state_lock */
typedef struct Stats
{
	long long	posts;
	long long	gets;
	long long	healthy;
	long long	notifications;	/* Kraken's POST /registry/notifications */
} Stats;

/* server.c */
extern pthread_mutex_t state_lock;
extern Stats stats;
double		wall_seconds(void);
int64_t		mono_ns(void);
unsigned	check_auth(Call *c, unsigned scope, const char **kind, const char **why);
enum MHD_Result reply(Call *c, unsigned status, const char *body, const char *ctype);
enum MHD_Result reply_text(Call *c, unsigned status, char *text, const char *name, const char *value);
enum MHD_Result reply_message(Call *c, unsigned status, const char *key, const char *msg);
enum MHD_Result reply_redirect(Call *c, unsigned status, const char *location);
enum MHD_Result reply_pending(Call *c);
char	   *json_text(json_object *o);
long long	count(json_object **counts, const char *key);
bool		parse_body(Req *r, char *err, size_t errlen);
enum MHD_Result pause_then(Call *c, int64_t ns, Step next);
void		log_request(const Req *r, const char *route, long long id, unsigned status);
int			server_run(int listen_fd, int port);

/* jobs.c */
json_object *field(json_object *o, const char *key);
json_object *rfc3339_now(void);
enum MHD_Result post_job(Call *c);
enum MHD_Result get_job(Call *c, const char *sid);
enum MHD_Result list_jobs(Call *c);
long long	jobs_count(void);
json_object *jobs_summary(void);
json_object *jobs_urls(void);
void		jobs_reset(void);
void		jobs_restore_lost(long long id);
void		jobs_restore_reset(long long next);
bool		jobs_restore(long long id, json_object *obj, const char *url, const char *fault,
						 double created, int64_t slowget_ns);

/* clusters.c (the first three under state_lock) */
void		clusters_init(void);
bool		clusters_admit(json_object *ids);
void		clusters_default(json_object *ids);
enum MHD_Result cluster_route(Call *c, const char *sid);

/* state.c (the saves under state_lock) */
void		state_open(const char *path);
void		state_save_job(long long id, json_object *job, const char *url, const char *fault,
						   double created, int64_t slowget_ns);
void		state_save_reset(long long next_id);

/* kraken.c */
enum MHD_Result kraken_notify(Call *c);

#endif
