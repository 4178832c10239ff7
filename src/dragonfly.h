/*
 * dragonfly.h
 *		Dragonfly manager Open API (docs/harbor-and-dragonfly.md, "Dragonfly's
 *		Open API"): the request we send for a job and what each answer means.
 */
#ifndef P2P_PREHEAT_DRAGONFLY_H
#define P2P_PREHEAT_DRAGONFLY_H

#include "utils/jsonb.h"

#include "http.h"

typedef enum DfVerdict
{
	DF_ACCEPTED,				/* POST answered with a job: follow it */
	DF_PENDING,					/* poll: not final yet */
	DF_SUCCEEDED,
	DF_FAILED,					/* final, nothing to retry */
	DF_RETRY					/* transient: try again later */
} DfVerdict;

typedef struct DfAnswer
{
	DfVerdict	verdict;
	int64		job_id;			/* Dragonfly's id, 0 if none */
	char	   *state;			/* Dragonfly's job state, or NULL */
	char	   *error;			/* why it failed or will be retried */
	int			failed_peers;	/* failure_tasks of a finished job */
	Jsonb	   *result;			/* the job object, redacted */
	bool		maybe_sent;		/* a POST that may have reached Dragonfly unanswered */
} DfAnswer;

/* A job whose earlier POST may have reached Dragonfly, looked for in its list. */
typedef struct DfLookup
{
	Jsonb	   *args;			/* what we send as args, without secrets */
	double		not_before;		/* epoch: a job created earlier is an older preheat */
	int64		found_id;		/* out: Dragonfly's job, 0 if not seen */
	char	   *found_state;	/* out */
} DfLookup;

extern char *df_jobs_url(const char *endpoint, int64 job_id);
extern char *df_preheat_body(const char *url, Jsonb *attrs,
							 const char *headers_json,
							 const char *username, const char *password);
extern void df_read_answer(const HttpRequest *req, bool is_poll, DfAnswer *a);

/* GET /oapi/v1/jobs of preheats, newest first, one page. */
extern char *df_list_url(const char *endpoint, int page, int per_page);

/* The args a POST of this job carries, secrets left out: what a lookup matches. */
extern Jsonb *df_lookup_args(const char *url, Jsonb *attrs);

/*
 * Matches one page of the job list against lookups not found yet.  Returns
 * the number of jobs on the page, or -1 with *error set; *oldest is the
 * creation time (epoch) of the page's last job.
 */
extern int	df_match_page(const HttpRequest *req, DfLookup *lk, int n,
						  double *oldest, char **error);

#endif
