/*
 * state.c
 *		--state-file: the jobs outlive a restart of the stand-in, as Dragonfly's
 *		jobs outlive a manager restart in its database, so a soak that restarts
 *		the stand-in loses only the requests in flight.
 *
 * The file is a journal, one JSON line per event, appended under state_lock
 * and flushed at once (a kill -9 loses nothing written; no fsync, a crash of
 * the machine is not what the stand-in imitates):
 *   {"id":N,"job":{...},"url":"...","fault":"none|forget|jobfail|partial",
 *    "created":<epoch seconds>,"slowget_ns":N}	a job created
 *   {"reset":N}	POST /_standin/reset: jobs before id N forgotten
 * At start the lines are replayed in order.  A line that does not parse (the
 * torn end of a write cut short) is skipped with a warning; its id, when it
 * can still be read, else the next one, stays taken and answers 404, so no id
 * is given twice.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "standin.h"

static FILE *state;
static const char *state_path;

static void
warn_line(long lineno, const char *why)
{
	fprintf(stderr, "dragonfly_standin: %s:%ld: %s, line skipped\n", state_path, lineno, why);
}

/* One line of the journal, without its newline. */
static void
replay(char *line, size_t len, long lineno)
{
	json_tokener *tok = json_tokener_new();
	json_object *o = json_tokener_parse_ex(tok, line, (int) len);
	json_object *v, *job, *url, *fault, *created, *slowget;
	long long	id = 0;
	bool		whole = json_tokener_get_error(tok) == json_tokener_success &&
		(size_t) json_tokener_get_parse_end(tok) == len;

	json_tokener_free(tok);
	if (whole && json_object_is_type(o, json_type_object) && (v = field(o, "reset")) != NULL &&
		json_object_is_type(v, json_type_int))
		jobs_restore_reset(json_object_get_int64(v));
	else if (whole && json_object_is_type(o, json_type_object) &&
			 json_object_is_type(v = field(o, "id"), json_type_int) && (id = json_object_get_int64(v)) > 0 &&
			 json_object_is_type(job = field(o, "job"), json_type_object) &&
			 json_object_is_type(url = field(o, "url"), json_type_string) &&
			 json_object_is_type(fault = field(o, "fault"), json_type_string) &&
			 (json_object_is_type(created = field(o, "created"), json_type_double) ||
			  json_object_is_type(created, json_type_int)) &&
			 json_object_is_type(slowget = field(o, "slowget_ns"), json_type_int))
	{
		if (!jobs_restore(id, job, json_object_get_string(url), json_object_get_string(fault),
						  json_object_get_double(created), json_object_get_int64(slowget)))
			warn_line(lineno, "job id already taken or unknown fault");
	}
	else
	{
		char		comma = 0;

		/* the id comes first in every job line, so even a torn one may show it */
		if (sscanf(line, "{\"id\":%lld%c", &id, &comma) != 2 || comma != ',')
			id = 0;
		jobs_restore_lost(id);
		warn_line(lineno, whole ? "not a job or reset line" : "not whole JSON (torn?)");
	}
	json_object_put(o);
}

void
state_open(const char *path)
{
	FILE	   *f;
	bool		torn_end = false;

	state_path = path;
	if ((f = fopen(path, "r")) != NULL)
	{
		char	   *line = NULL;
		size_t		cap = 0;
		ssize_t		n;
		long		lineno = 0;

		while ((n = getline(&line, &cap, f)) > 0)
		{
			torn_end = line[n - 1] != '\n';
			if (!torn_end)
				line[--n] = '\0';
			if (n > 0)
				replay(line, (size_t) n, ++lineno);
		}
		if (ferror(f))
		{
			fprintf(stderr, "dragonfly_standin: cannot read %s: %s\n", path, strerror(errno));
			exit(1);
		}
		free(line);
		fclose(f);
	}
	else if (errno != ENOENT)
	{
		fprintf(stderr, "dragonfly_standin: cannot open %s: %s\n", path, strerror(errno));
		exit(1);
	}
	if ((state = fopen(path, "a")) == NULL)
	{
		fprintf(stderr, "dragonfly_standin: cannot open %s for appending: %s\n", path, strerror(errno));
		exit(1);
	}
	/* end a torn last line, so the next one starts a line of its own */
	if (torn_end && (fputc('\n', state) == EOF || fflush(state) != 0))
	{
		fprintf(stderr, "dragonfly_standin: cannot write %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

/* One journal line (caller holds state_lock). */
static void
state_write(json_object *o)
{
	if (fprintf(state, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
															  JSON_C_TO_STRING_NOSLASHESCAPE)) < 0 ||
		fflush(state) != 0)
		fprintf(stderr, "dragonfly_standin: cannot write %s: %s\n", state_path, strerror(errno));
	json_object_put(o);
}

void
state_save_job(long long id, json_object *job, const char *url, const char *fault,
			   double created, int64_t slowget_ns)
{
	json_object *o;

	if (state == NULL)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_int64(id));	/* first: see replay() */
	json_object_object_add(o, "job", json_object_get(job));
	json_object_object_add(o, "url", json_object_new_string(url));
	json_object_object_add(o, "fault", json_object_new_string(fault));
	json_object_object_add(o, "created", json_object_new_double(created));
	json_object_object_add(o, "slowget_ns", json_object_new_int64(slowget_ns));
	state_write(o);
}

void
state_save_reset(long long next_id)
{
	json_object *o;

	if (state == NULL)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "reset", json_object_new_int64(next_id));
	state_write(o);
}
