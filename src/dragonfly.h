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
} DfAnswer;

extern char *df_jobs_url(const char *endpoint, int64 job_id);
extern char *df_preheat_body(const char *url, Jsonb *attrs,
							 const char *headers_json,
							 const char *username, const char *password);
extern void df_read_answer(const HttpRequest *req, bool is_poll, DfAnswer *a);

#endif
