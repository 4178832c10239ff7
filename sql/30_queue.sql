/*
 * The job queue, and its contract with the C dispatch engine:
 *  - a job's states are the enum job_state, mirrored once in C (dispatch.h);
 *  - which states are open (not final) is job_state_is_open(), and the
 *    table's generated column "open" and every index predicate use it;
 *  - C claims rows as claimed_job and records answers as job_outcome, both
 *    read and written by column name;
 *  - a trigger announces every job that ends, whoever ended it.
 */

CREATE TYPE p2p_preheat.job_state AS ENUM
	('queued', 'sending', 'running', 'succeeded', 'failed', 'canceled');

COMMENT ON TYPE p2p_preheat.job_state IS
'queued, sending (claimed), running (accepted by Dragonfly, being followed); then succeeded, failed or canceled';

-- The engine's own rule (JOB_STATE_IS_OPEN in src/dispatch.h), in C: the
-- generated column below calls it on every INSERT.
CREATE FUNCTION p2p_preheat.job_state_is_open(state p2p_preheat.job_state)
RETURNS boolean
AS 'MODULE_PATHNAME', 'p2p_preheat_job_state_is_open'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION p2p_preheat.job_state_is_open(p2p_preheat.job_state) IS
'Whether a job in this state is still to be sent or followed (not final)';

-- One row per preheat.  An ordinary logged table: a crash loses nothing.
CREATE TABLE p2p_preheat.job (
	id bigserial PRIMARY KEY,
	policy_id integer,				-- Harbor's p2p_preheat_policy.id; NULL for preheat_url()
	instance_id integer NOT NULL,	-- Harbor's p2p_preheat_instance.id
	url text NOT NULL,				-- the manifest Dragonfly fetches
	attrs jsonb NOT NULL DEFAULT '{}',	-- extra_attrs as validate_extra_attrs() returned it
	state p2p_preheat.job_state NOT NULL DEFAULT 'queued',
	open boolean NOT NULL GENERATED ALWAYS AS (p2p_preheat.job_state_is_open(state)) STORED,
	attempts integer NOT NULL DEFAULT 0,
	polls integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	lease_until timestamptz,
	claimed_by bigint,				-- the worker generation that claimed it (see _worker_generation())
	maybe_sent boolean NOT NULL DEFAULT false,	-- a POST may have reached Dragonfly unanswered
	dragonfly_job_id bigint,
	dragonfly_state text,
	last_http_status integer,
	last_error text,
	failed_peers integer,
	result jsonb,					-- Dragonfly's job object, without args.password and args.headers
	created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	sent_at timestamptz,
	finished_at timestamptz,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
-- room on each page, so that a claim's lease (no indexed column changes)
-- is a HOT update that touches no index: a claim writes every row of a
-- page it takes, so a page needs room for a new version of each (with 80,
-- three claims in four moved their row to another page and wrote every
-- index, and the table grew)
WITH (fillfactor = 50);

COMMENT ON TABLE p2p_preheat.job IS
'Preheat jobs: queued, sending (claimed), running (accepted by Dragonfly, being followed), then succeeded, failed or canceled';

-- at most one open job per instance, manifest and arguments; URLs compared
-- byte by byte (equality is the same in every deterministic collation, and
-- the database's own may cost a strcoll() per comparison on every INSERT)
CREATE UNIQUE INDEX job_open_identity
	ON p2p_preheat.job (instance_id, url COLLATE "C", md5(attrs::text))
	WHERE open;

-- what the dispatcher claims next
CREATE INDEX job_due ON p2p_preheat.job (next_attempt_at) WHERE open;

-- what retention deletes next
CREATE INDEX job_finished ON p2p_preheat.job (finished_at) WHERE NOT open;

-- A caller's short-lived registry token, kept only until the job is sent.
-- Only the extension's owner reads it.
CREATE TABLE p2p_preheat.job_secret (
	job_id bigint PRIMARY KEY REFERENCES p2p_preheat.job ON DELETE CASCADE,
	headers jsonb NOT NULL
);

-- What callers may name: OCI distribution names, and manifest URLs without
-- user information.  Refusals are 22023 with the rule, the value and a hint.
CREATE FUNCTION p2p_preheat._check_image_name(repository text, reference text)
RETURNS void
AS 'MODULE_PATHNAME', 'p2p_preheat_check_image_name'
LANGUAGE C IMMUTABLE;

CREATE FUNCTION p2p_preheat._check_manifest_url(url text)
RETURNS void
AS 'MODULE_PATHNAME', 'p2p_preheat_check_manifest_url'
LANGUAGE C IMMUTABLE;

/*
 * The running worker's generation: a number no other start of the worker,
 * on this server or any other, has had; NULL while no worker runs.  A claim
 * made by any other generation belongs to a worker that is gone.
 */
CREATE FUNCTION p2p_preheat._worker_generation()
RETURNS bigint
AS 'MODULE_PATHNAME', 'p2p_preheat_worker_generation'
LANGUAGE C VOLATILE;

-- Sets the worker's latch when this transaction commits; nothing on rollback.
CREATE FUNCTION p2p_preheat._wake_worker()
RETURNS void
AS 'MODULE_PATHNAME', 'p2p_preheat_wake_worker'
LANGUAGE C VOLATILE;

/*
 * Queues one job per distinct URL for an instance and its arguments, or
 * reuses the open identical job; returns the job of every URL.  The one
 * place where jobs are created and deduplicated (src/enqueue.c), with one
 * INSERT for all the URLs.
 */
CREATE FUNCTION p2p_preheat._enqueue(policy_id integer, instance_id integer, urls text[],
	attrs jsonb, OUT url text, OUT job_id bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'p2p_preheat_enqueue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

/*
 * The policy a run or a preheat may use, with its project and instance, or
 * the reason it may not.  The one place these checks live (src/enqueue.c):
 * preheat() makes them in C, run_policy() through this.
 */
CREATE FUNCTION p2p_preheat._runnable_policy(policy_id integer)
RETURNS p2p_preheat.harbor_policy
AS 'MODULE_PATHNAME', 'p2p_preheat_runnable_policy'
LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp;

-- p2p_preheat.registry_url without its trailing slash, or the reason it is missing.
CREATE FUNCTION p2p_preheat._registry_url()
RETURNS text
AS 'MODULE_PATHNAME', 'p2p_preheat_registry_url'
LANGUAGE C STABLE;

/*
 * Queueing costs about what its INSERT costs: preheat(), its set form and
 * preheat_url() are C (src/enqueue.c) with statements prepared once per
 * backend.
 */
CREATE FUNCTION p2p_preheat.preheat(policy_id integer, repository text, reference text,
									headers jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'p2p_preheat_preheat'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION p2p_preheat.preheat(integer, text, text, jsonb) IS
'Queues a preheat of <registry_url>/v2/<project>/<repository>/manifests/<reference> as the policy says; returns the job id (an open identical job if there is one)';

CREATE FUNCTION p2p_preheat.preheat(policy_id integer, repositories text[], "references" text[],
									headers jsonb DEFAULT NULL)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'p2p_preheat_preheat_set'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 100;

COMMENT ON FUNCTION p2p_preheat.preheat(integer, text[], text[], jsonb) IS
'Queues a preheat of each image repositories[i]:references[i] as the policy says, in one INSERT; returns one job id per element, in order (an image named twice gets the same job)';

CREATE FUNCTION p2p_preheat.preheat_url(instance_id integer, url text,
										extra_attrs jsonb DEFAULT '{}')
RETURNS bigint
AS 'MODULE_PATHNAME', 'p2p_preheat_preheat_url'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION p2p_preheat.preheat_url(integer, text, jsonb) IS
'Queues a preheat of any image manifest URL on a preheat instance; returns the job id';

CREATE FUNCTION p2p_preheat.cancel(job bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j p2p_preheat.job;
BEGIN
	SELECT * INTO j FROM p2p_preheat.job WHERE id = cancel.job FOR UPDATE;
	IF j.id IS NULL THEN
		RAISE EXCEPTION 'preheat job % does not exist', cancel.job USING ERRCODE = 'no_data_found';
	END IF;
	IF NOT j.open THEN
		RETURN false;			-- already final
	END IF;
	UPDATE p2p_preheat.job
	   SET state = 'canceled', finished_at = clock_timestamp(), lease_until = NULL,
		   updated_at = clock_timestamp(),
		   last_error = CASE WHEN j.state = 'running'
				THEN 'canceled; Dragonfly keeps running its job ' || j.dragonfly_job_id
				ELSE 'canceled before it was sent' END
	 WHERE id = cancel.job;
	DELETE FROM p2p_preheat.job_secret WHERE job_id = cancel.job;
	RETURN true;
END
$$;

COMMENT ON FUNCTION p2p_preheat.cancel(bigint) IS
'Cancels a job that is not final; true if it was canceled now, false if it had already ended';

-- The C engine's side of the contract ------------------------------------

-- A claimed job, with what sending it needs from the queue.
CREATE TYPE p2p_preheat.claimed_job AS (
	id bigint,
	state p2p_preheat.job_state,
	url text,
	attrs jsonb,
	instance_id integer,
	policy_id integer,
	dragonfly_job_id bigint,
	attempts integer,
	polls integer,
	sent_at timestamptz,
	created_at timestamptz,
	maybe_sent boolean,		-- look for it in Dragonfly before sending it again
	headers text			-- the caller's token, if any (job_secret)
);

/*
 * Claims due open jobs.  With a lease (the worker), claimed jobs are marked
 * with the worker's generation so that they stay claimed after this
 * transaction commits; without one (preheat_dispatch()), the caller's row
 * locks are the claim.  A claim is void once its lease ends or as soon as
 * the worker that made it is gone (crash, restart, failover): no wait.
 * A job found still 'sending' was claimed and never recorded: its POST may
 * have reached Dragonfly.  Two statements, not one with both branches: each
 * keeps a plan that reaches the claimed rows through the primary key, never
 * by scanning the table.
 */
CREATE FUNCTION p2p_preheat._claim(max_jobs integer, lease interval)
RETURNS SETOF p2p_preheat.claimed_job
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	gen bigint := p2p_preheat._worker_generation();
BEGIN
	IF lease IS NULL THEN
		RETURN QUERY
		SELECT j.id, j.state, j.url, j.attrs, j.instance_id, j.policy_id, j.dragonfly_job_id,
			   j.attempts, j.polls, j.sent_at, j.created_at,
			   j.maybe_sent OR j.state = 'sending',
			   (SELECT s.headers::text FROM p2p_preheat.job_secret s WHERE s.job_id = j.id)
		  FROM p2p_preheat.job j
		 WHERE j.open
		   AND j.next_attempt_at <= clock_timestamp()
		   AND (j.lease_until IS NULL OR j.lease_until < clock_timestamp()
				OR (j.claimed_by IS NOT NULL AND j.claimed_by IS DISTINCT FROM gen))
		 ORDER BY j.next_attempt_at
		 LIMIT max_jobs
		 FOR UPDATE OF j SKIP LOCKED;
	ELSE
		RETURN QUERY
		WITH leased AS (
			UPDATE p2p_preheat.job j
			   SET state = CASE WHEN j.state = 'running' THEN 'running'::p2p_preheat.job_state
								ELSE 'sending' END,
				   maybe_sent = j.maybe_sent OR j.state = 'sending',
				   claimed_by = gen,
				   lease_until = clock_timestamp() + lease,
				   updated_at = clock_timestamp()
			 WHERE j.id = ANY (ARRAY(
					SELECT c.id FROM p2p_preheat.job c
					 WHERE c.open
					   AND c.next_attempt_at <= clock_timestamp()
					   AND (c.lease_until IS NULL OR c.lease_until < clock_timestamp()
							OR (c.claimed_by IS NOT NULL AND c.claimed_by IS DISTINCT FROM gen))
					 ORDER BY c.next_attempt_at
					 LIMIT max_jobs
					 FOR UPDATE SKIP LOCKED))
			RETURNING j.*)
		SELECT l.id, l.state, l.url, l.attrs, l.instance_id, l.policy_id, l.dragonfly_job_id,
			   l.attempts, l.polls, l.sent_at, l.created_at, l.maybe_sent,
			   (SELECT s.headers::text FROM p2p_preheat.job_secret s WHERE s.job_id = l.id)
		  FROM leased l;
	END IF;
END
$$;

-- What one answer (or its absence) means for a job.
CREATE TYPE p2p_preheat.job_outcome AS (
	id bigint,
	state text,						-- a job_state label
	attempts integer,
	polls integer,
	next_attempt_at timestamptz,	-- NULL: unchanged
	sent_at timestamptz,			-- NULL: unchanged
	dragonfly_job_id bigint,		-- NULL: unchanged
	dragonfly_state text,			-- NULL: unchanged
	http_status integer,
	error text,
	failed_peers integer,
	result jsonb,					-- NULL: unchanged
	maybe_sent boolean				-- a POST without an answer: look before sending again
);

-- Records a batch of outcomes; returns how many jobs it changed.  PL/pgSQL,
-- so that its plan is kept between calls, as the claim's is.
CREATE FUNCTION p2p_preheat._record(outcomes p2p_preheat.job_outcome[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
-- a custom plan would hold the whole outcome array (answers included) as a
-- constant, in each of a session's first five calls
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	changed bigint;
BEGIN
	WITH u AS (
		UPDATE p2p_preheat.job j
		   SET state = o.state::p2p_preheat.job_state, attempts = o.attempts, polls = o.polls,
			   next_attempt_at = coalesce(o.next_attempt_at, j.next_attempt_at),
			   sent_at = coalesce(o.sent_at, j.sent_at),
			   dragonfly_job_id = coalesce(o.dragonfly_job_id, j.dragonfly_job_id),
			   dragonfly_state = coalesce(o.dragonfly_state, j.dragonfly_state),
			   last_http_status = o.http_status,
			   last_error = o.error,
			   failed_peers = CASE WHEN NOT p2p_preheat.job_state_is_open(o.state::p2p_preheat.job_state) THEN o.failed_peers END,
			   result = coalesce(o.result, j.result),
			   finished_at = CASE WHEN NOT p2p_preheat.job_state_is_open(o.state::p2p_preheat.job_state) THEN clock_timestamp() END,
			   lease_until = NULL, claimed_by = NULL,
			   maybe_sent = coalesce(o.maybe_sent, false),
			   updated_at = clock_timestamp()
		  FROM unnest(outcomes) o
		 WHERE j.id = o.id AND j.open
		RETURNING j.id, j.state),
	d AS (
		-- a caller's token is kept only until the job is sent
		DELETE FROM p2p_preheat.job_secret s USING u
		 WHERE s.job_id = u.id AND u.state <> 'queued')
	SELECT count(*) INTO changed FROM u;
	RETURN changed;
END
$$;

-- Claimed jobs that were never answered go back to the queue; those whose
-- POST was under way (maybe_sent) are looked for in Dragonfly before the next.
CREATE FUNCTION p2p_preheat._release(ids bigint[], maybe_sent bigint[])
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE p2p_preheat.job
	   SET state = CASE WHEN state = 'sending' THEN 'queued'::p2p_preheat.job_state ELSE state END,
		   maybe_sent = job.maybe_sent OR (state = 'sending' AND id = ANY (_release.maybe_sent)),
		   lease_until = NULL, claimed_by = NULL, updated_at = clock_timestamp()
	 WHERE id = ANY (ids) AND state IN ('sending', 'running')
$$;

-- Seconds until the next open job is due; NULL when none is (greatest()
-- would turn that NULL into 0: an idle worker would claim in a loop).
CREATE FUNCTION p2p_preheat._next_due()
RETURNS float8
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN d.due IS NOT NULL
				THEN greatest(0, extract(epoch FROM d.due - clock_timestamp()))::float8 END
	  FROM (SELECT min(next_attempt_at) AS due FROM p2p_preheat.job WHERE open) d
$$;

-- LISTEN p2p_preheat: a small payload for every job that ends, and for
-- every execution whose last job just ended, whoever ended it.
CREATE FUNCTION p2p_preheat._on_job_end()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM pg_notify('p2p_preheat', json_build_object('job', NEW.id, 'state', NEW.state,
		'policy', NEW.policy_id, 'instance', NEW.instance_id)::text);
	PERFORM pg_notify('p2p_preheat', json_build_object('execution', s.id, 'policy', s.policy_id,
		'status', s.status)::text)
	   FROM p2p_preheat.execution_status s
	  WHERE s.id IN (SELECT ej.execution_id FROM p2p_preheat.execution_job ej WHERE ej.job_id = NEW.id)
		AND s.status NOT IN ('Pending', 'Running');
	RETURN NULL;
END
$$;

CREATE TRIGGER job_end AFTER UPDATE OF state ON p2p_preheat.job
	FOR EACH ROW WHEN (OLD.open AND NOT NEW.open)
	EXECUTE FUNCTION p2p_preheat._on_job_end();
