/* p2p_preheat 1.1: the preheat job queue and its dispatch to Dragonfly */

\echo Use "ALTER EXTENSION p2p_preheat UPDATE TO '1.1'" to load this file. \quit

-- Where Harbor's tables are: next to the policy table the trigger guards.
CREATE FUNCTION p2p_preheat._harbor_schema()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(
		(SELECT n.nspname
		   FROM p2p_preheat._policy_tables() t
		   JOIN pg_class c ON c.oid = t
		   JOIN pg_namespace n ON n.oid = c.relnamespace
		  LIMIT 1),
		'public')
$$;

-- One row per preheat.  An ordinary logged table: a crash loses nothing.
CREATE TABLE p2p_preheat.job (
	id bigserial PRIMARY KEY,
	policy_id integer,				-- Harbor's p2p_preheat_policy.id; NULL for preheat_url()
	instance_id integer NOT NULL,	-- Harbor's p2p_preheat_instance.id
	url text NOT NULL,				-- the manifest Dragonfly fetches
	attrs jsonb NOT NULL DEFAULT '{}',	-- extra_attrs as validate_extra_attrs() returned it
	state text NOT NULL DEFAULT 'queued'
		CHECK (state IN ('queued', 'sending', 'running', 'succeeded', 'failed', 'canceled')),
	attempts integer NOT NULL DEFAULT 0,
	polls integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	lease_until timestamptz,
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
);

COMMENT ON TABLE p2p_preheat.job IS
'Preheat jobs: queued, sending (claimed), running (accepted by Dragonfly, being followed), then succeeded, failed or canceled';

-- at most one unfinished job per instance, manifest and arguments
CREATE UNIQUE INDEX job_unfinished_identity ON p2p_preheat.job
	(instance_id, url, md5(attrs::text))
	WHERE state IN ('queued', 'sending', 'running');

-- what the dispatcher claims next
CREATE INDEX job_due ON p2p_preheat.job (next_attempt_at)
	WHERE state IN ('queued', 'sending', 'running');

-- A caller's short-lived registry token, kept only until the job is sent.
-- No privilege on it is granted to anyone: only the extension's owner reads it.
CREATE TABLE p2p_preheat.job_secret (
	job_id bigint PRIMARY KEY REFERENCES p2p_preheat.job ON DELETE CASCADE,
	headers jsonb NOT NULL
);
REVOKE ALL ON p2p_preheat.job_secret FROM PUBLIC;

CREATE FUNCTION p2p_preheat._enqueue(policy_id integer, instance_id integer, url text,
									 attrs jsonb, headers jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	jid bigint;
BEGIN
	IF headers IS NOT NULL AND (jsonb_typeof(headers) <> 'object'
		OR EXISTS (SELECT FROM jsonb_each(headers) h WHERE jsonb_typeof(h.value) <> 'string')) THEN
		RAISE EXCEPTION 'headers must be a JSON object of strings'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass {"Authorization": "Bearer <registry token>"}.';
	END IF;
	LOOP
		INSERT INTO p2p_preheat.job AS j (policy_id, instance_id, url, attrs)
		VALUES (_enqueue.policy_id, _enqueue.instance_id, _enqueue.url, _enqueue.attrs)
		ON CONFLICT (instance_id, url, md5(attrs::text))
			WHERE state IN ('queued', 'sending', 'running')
			DO NOTHING
		RETURNING j.id INTO jid;
		IF jid IS NULL THEN
			-- an identical job is not finished yet: that one is the answer
			SELECT j.id INTO jid FROM p2p_preheat.job j
			 WHERE j.instance_id = _enqueue.instance_id AND j.url = _enqueue.url
			   AND md5(j.attrs::text) = md5(_enqueue.attrs::text)
			   AND j.state IN ('queued', 'sending', 'running');
		END IF;
		EXIT WHEN jid IS NOT NULL;
	END LOOP;
	IF headers IS NOT NULL AND headers <> '{}' THEN
		-- the newest token wins while the job has not been sent
		INSERT INTO p2p_preheat.job_secret AS s (job_id, headers)
		SELECT jid, _enqueue.headers
		 WHERE EXISTS (SELECT FROM p2p_preheat.job j WHERE j.id = jid AND j.state IN ('queued', 'sending'))
		ON CONFLICT (job_id) DO UPDATE SET headers = excluded.headers;
	END IF;
	RETURN jid;
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat._enqueue(integer, integer, text, jsonb, jsonb) FROM PUBLIC;

CREATE FUNCTION p2p_preheat.preheat(policy_id integer, repository text, reference text,
									headers jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h name := p2p_preheat._harbor_schema();
	pol record;
	registry text := coalesce(current_setting('p2p_preheat.registry_url', true), '');
	repo text;
BEGIN
	EXECUTE format(
		'SELECT p.provider_id, p.extra_attrs::text AS extra_attrs, i.vendor::text AS vendor,
				pr.name::text AS project
		   FROM %1$I.p2p_preheat_policy p
		   LEFT JOIN %1$I.p2p_preheat_instance i ON i.id = p.provider_id
		   LEFT JOIN %1$I.project pr ON pr.project_id = p.project_id
		  WHERE p.id = $1', h)
		INTO pol USING policy_id;
	IF pol IS NULL OR pol.provider_id IS NULL THEN
		RAISE EXCEPTION 'preheat policy % does not exist', policy_id
			USING ERRCODE = 'no_data_found';
	END IF;
	IF pol.project IS NULL THEN
		RAISE EXCEPTION 'the project of preheat policy % does not exist', policy_id
			USING ERRCODE = 'no_data_found';
	END IF;
	IF registry = '' THEN
		RAISE EXCEPTION 'p2p_preheat.registry_url is not set'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'A superuser sets it to Harbor''s external URL: ALTER SYSTEM SET p2p_preheat.registry_url = ''https://harbor.example.com''.';
	END IF;
	IF coalesce(repository, '') = '' OR coalesce(reference, '') = '' THEN
		RAISE EXCEPTION 'repository and reference must not be empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- Harbor names repositories "<project>/<repo>"; accept either form
	repo := CASE WHEN repository LIKE pol.project || '/%' THEN repository
				 ELSE pol.project || '/' || repository END;
	RETURN p2p_preheat._enqueue(policy_id, pol.provider_id,
		rtrim(registry, '/') || '/v2/' || repo || '/manifests/' || reference,
		p2p_preheat.validate_extra_attrs(pol.vendor, pol.extra_attrs), headers);
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat.preheat(integer, text, text, jsonb) FROM PUBLIC;

COMMENT ON FUNCTION p2p_preheat.preheat(integer, text, text, jsonb) IS
'Queues a preheat of <registry_url>/v2/<project>/<repository>/manifests/<reference> as the policy says; returns the job id (an unfinished identical job if there is one)';

CREATE FUNCTION p2p_preheat.preheat_url(instance_id integer, url text,
										extra_attrs jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	vendor text;
BEGIN
	EXECUTE format('SELECT vendor::text FROM %I.p2p_preheat_instance WHERE id = $1',
				   p2p_preheat._harbor_schema())
		INTO vendor USING instance_id;
	IF vendor IS NULL THEN
		RAISE EXCEPTION 'preheat instance % does not exist', instance_id
			USING ERRCODE = 'no_data_found';
	END IF;
	IF url IS NULL OR url !~* '^https?://[^/]+/v2/.+/manifests/[^/]+$' THEN
		RAISE EXCEPTION 'url % is not an image manifest URL', url
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Dragonfly needs http(s)://<registry>/v2/<repository>/manifests/<reference>.';
	END IF;
	RETURN p2p_preheat._enqueue(NULL, instance_id, url,
		p2p_preheat.validate_extra_attrs(vendor, coalesce(extra_attrs, '{}')::text), NULL);
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat.preheat_url(integer, text, jsonb) FROM PUBLIC;

CREATE FUNCTION p2p_preheat.cancel(job bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	was text;
BEGIN
	SELECT j.state INTO was FROM p2p_preheat.job j WHERE j.id = cancel.job FOR UPDATE;
	IF was IS NULL THEN
		RAISE EXCEPTION 'preheat job % does not exist', cancel.job USING ERRCODE = 'no_data_found';
	END IF;
	IF was NOT IN ('queued', 'sending', 'running') THEN
		RETURN false;			-- already final
	END IF;
	UPDATE p2p_preheat.job
	   SET state = 'canceled', finished_at = clock_timestamp(), lease_until = NULL,
		   updated_at = clock_timestamp(),
		   last_error = CASE WHEN was = 'running'
				THEN 'canceled; Dragonfly keeps running its job ' || dragonfly_job_id
				ELSE 'canceled before it was sent' END
	 WHERE id = cancel.job;
	DELETE FROM p2p_preheat.job_secret WHERE job_id = cancel.job;
	RETURN true;
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat.cancel(bigint) FROM PUBLIC;

COMMENT ON FUNCTION p2p_preheat.cancel(bigint) IS
'Cancels a job that is not final; true if it was canceled now, false if it had already ended';

CREATE FUNCTION p2p_preheat.preheat_dispatch(max_jobs integer DEFAULT 1000,
	OUT sent bigint, OUT polled bigint, OUT succeeded bigint, OUT failed bigint,
	OUT retried bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'p2p_preheat_dispatch'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION p2p_preheat.preheat_dispatch(integer) FROM PUBLIC;

COMMENT ON FUNCTION p2p_preheat.preheat_dispatch(integer) IS
'Sends due queued jobs to Dragonfly, polls due running ones and records the answers; returns counts';
