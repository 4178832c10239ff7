/*
 * Harbor's event-based policies (a push queues what they ask for) and its
 * scheduled policies (mirrored as pg_cron jobs).  A trigger on the policy
 * table keeps both in step with every change to a policy.
 */

-- Event-based policies, parsed once when saved, for matching on every push.
CREATE TABLE p2p_preheat.event_policy (
	policy_id integer PRIMARY KEY,
	project_id integer NOT NULL,
	provider_id integer NOT NULL,
	repo_pattern text,
	tag_pattern text,
	labels text[] NOT NULL DEFAULT '{}',
	attrs jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX event_policy_project ON p2p_preheat.event_policy (project_id);

COMMENT ON TABLE p2p_preheat.event_policy IS
'Enabled event-based policies, parsed when saved, matched against every push';

-- What went wrong on a push: recorded here, never raised into Harbor's push.
CREATE TABLE p2p_preheat.event_error (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT clock_timestamp(),
	policy_id integer,
	repository_id integer,
	artifact_id integer,
	tag text,
	sqlstate text,
	error text NOT NULL
);

COMMENT ON TABLE p2p_preheat.event_error IS
'Problems met while queueing preheats for pushed tags (bad filters, missing instance, ...); the push itself always commits';

-- Harbor's 6-field cron (seconds first) as pg_cron's 5 fields.
CREATE FUNCTION p2p_preheat.harbor_cron_to_pg_cron(cron text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	f text[] := regexp_split_to_array(btrim(cron), '\s+');
BEGIN
	IF cardinality(f) = 5 THEN
		RETURN array_to_string(array_replace(f, '?', '*'), ' ');
	END IF;
	IF cardinality(f) <> 6 THEN
		RAISE EXCEPTION 'cron "%" has % fields; Harbor''s cron has 6 (seconds first)', cron, cardinality(f)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example "0 0 2 * * *" runs at 02:00 every day.';
	END IF;
	IF f[1] NOT IN ('0', '00') THEN
		RAISE EXCEPTION 'cron "%" runs at second "%", which pg_cron cannot express', cron, f[1]
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'pg_cron runs at minute granularity: put 0 in the seconds field.';
	END IF;
	RETURN array_to_string(array_replace(f[2:6], '?', '*'), ' ');
END
$$;

COMMENT ON FUNCTION p2p_preheat.harbor_cron_to_pg_cron(text) IS
'Harbor''s 6-field cron (seconds first) as pg_cron''s 5 fields; refuses what pg_cron cannot express';

CREATE FUNCTION p2p_preheat._cron_available()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT to_regprocedure('cron.schedule_in_database(text,text,text,text,text,boolean)') IS NOT NULL
$$;

-- Brings one policy's event cache and pg_cron job in line with its row.
CREATE FUNCTION p2p_preheat._sync_policy(policy_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pol p2p_preheat.harbor_policy := p2p_preheat._harbor_policy(policy_id);
	kind text;
	cron text;
	f record;
	cron_job text := 'p2p_preheat_policy_' || policy_id;
BEGIN
	BEGIN
		kind := (pol.trigger::jsonb)->>'type';
		cron := (pol.trigger::jsonb)->'trigger_setting'->>'cron';
	EXCEPTION WHEN invalid_text_representation THEN
		kind := NULL;
	END;

	-- push events
	DELETE FROM p2p_preheat.event_policy e WHERE e.policy_id = _sync_policy.policy_id;
	IF pol.id IS NOT NULL AND coalesce(pol.enabled, false) AND kind = 'event_based' THEN
		f := p2p_preheat._parse_filters(pol.filters, format('preheat policy "%s" (id %s)', pol.name, policy_id));
		INSERT INTO p2p_preheat.event_policy (policy_id, project_id, provider_id, repo_pattern,
											  tag_pattern, labels, attrs)
		VALUES (policy_id, pol.project_id, pol.provider_id, f.repo_pattern, f.tag_pattern, f.labels,
				p2p_preheat.validate_extra_attrs(pol.vendor, pol.extra_attrs));
	END IF;

	-- schedules
	IF NOT p2p_preheat._cron_available() THEN
		RETURN;
	END IF;
	IF pol.id IS NOT NULL AND coalesce(pol.enabled, false) AND kind = 'scheduled' THEN
		IF coalesce(cron, '') = '' THEN
			RAISE EXCEPTION 'scheduled preheat policy "%" (id %) has no cron', pol.name, policy_id
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		PERFORM cron.schedule_in_database(cron_job, p2p_preheat.harbor_cron_to_pg_cron(cron),
			format('SELECT p2p_preheat.run_policy(%s, %L)', policy_id, 'scheduled'),
			current_database());
	ELSE
		PERFORM cron.unschedule(j.jobid) FROM cron.job j WHERE j.jobname = cron_job;
	END IF;
END
$$;

-- Every policy, as on install; a policy that cannot be synced is reported
-- and does not stop the others.
CREATE FUNCTION p2p_preheat._sync_all_policies()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids integer[];
	id integer;
BEGIN
	BEGIN
		ids := ARRAY(SELECT p.id FROM p2p_preheat._harbor_policies() p);
	EXCEPTION WHEN OTHERS THEN
		RAISE WARNING 'p2p_preheat: could not read Harbor''s policies: %', SQLERRM;
		RETURN;
	END;
	FOREACH id IN ARRAY ids LOOP
		BEGIN
			PERFORM p2p_preheat._sync_policy(id);
		EXCEPTION WHEN OTHERS THEN
			RAISE WARNING 'p2p_preheat: policy %: %', id, SQLERRM;
		END;
	END LOOP;
END
$$;

CREATE FUNCTION p2p_preheat._on_policy_change()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM p2p_preheat._sync_policy(OLD.id);
	END IF;
	IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id <> OLD.id) THEN
		PERFORM p2p_preheat._sync_policy(NEW.id);
	END IF;
	RETURN NULL;
END
$$;

/*
 * A pushed tag, or a tag moved to another image: queue what event-based
 * policies of the project ask for.  Nothing here can fail the push: a
 * problem is written to event_error.
 */
CREATE FUNCTION p2p_preheat._on_tag()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m record;
	inst p2p_preheat.harbor_instance;
	jid bigint;
	eid bigint;
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.artifact_id IS NOT DISTINCT FROM OLD.artifact_id THEN
		RETURN NULL;
	END IF;
	BEGIN
		FOR m IN
			SELECT ep.policy_id, ep.provider_id, ep.attrs, a.repository
			  FROM p2p_preheat._harbor_artifact(NEW.repository_id, NEW.artifact_id) a
			  JOIN p2p_preheat.event_policy ep ON ep.project_id = a.project_id
			 WHERE a.type = 'IMAGE'
			   AND (ep.repo_pattern IS NULL OR
					p2p_preheat.doublestar_match(ep.repo_pattern, substr(a.repository, length(a.project) + 2)))
			   AND (ep.tag_pattern IS NULL OR p2p_preheat.doublestar_match(ep.tag_pattern, NEW.name))
			   AND ep.labels <@ a.labels
		LOOP
			inst := p2p_preheat._harbor_instance(m.provider_id);
			IF inst.id IS NULL OR NOT coalesce(inst.enabled, true) THEN
				INSERT INTO p2p_preheat.event_error (policy_id, repository_id, artifact_id, tag, error)
				VALUES (m.policy_id, NEW.repository_id, NEW.artifact_id, NEW.name,
						format('preheat instance %s %s', m.provider_id,
							   CASE WHEN inst.id IS NULL THEN 'does not exist' ELSE 'is disabled' END));
				CONTINUE;
			END IF;
			SELECT e.job_id INTO jid
			  FROM p2p_preheat._enqueue(m.policy_id, m.provider_id,
					ARRAY[p2p_preheat._registry_url() || '/v2/' || m.repository || '/manifests/' || NEW.name],
					m.attrs) e;
			INSERT INTO p2p_preheat.execution (policy_id, trigger, candidates)
			VALUES (m.policy_id, 'event_based', 1) RETURNING id INTO eid;
			INSERT INTO p2p_preheat.execution_job (execution_id, job_id, artifact_id, tag)
			VALUES (eid, jid, NEW.artifact_id, NEW.name);
		END LOOP;
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO p2p_preheat.event_error (repository_id, artifact_id, tag, sqlstate, error)
		VALUES (NEW.repository_id, NEW.artifact_id, NEW.name, SQLSTATE, SQLERRM);
	END;
	RETURN NULL;
END
$$;

-- Repairs drift between policies and pg_cron; returns how many cron jobs changed.
CREATE FUNCTION p2p_preheat.sync_schedules()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	before text[];
	after text[];
BEGIN
	IF NOT p2p_preheat._cron_available() THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Without pg_cron, call p2p_preheat.run_policy(id, ''scheduled'') from any scheduler.';
	END IF;
	SELECT coalesce(array_agg(concat_ws('|', j.jobname, j.schedule, j.command, j.active)), '{}') INTO before
	  FROM cron.job j WHERE j.jobname LIKE 'p2p\_preheat\_policy\_%';
	-- jobs whose policy is gone
	PERFORM cron.unschedule(j.jobid) FROM cron.job j
	 WHERE j.jobname LIKE 'p2p\_preheat\_policy\_%'
	   AND substr(j.jobname, 20) NOT IN (SELECT p.id::text FROM p2p_preheat._harbor_policies() p);
	PERFORM p2p_preheat._sync_all_policies();
	SELECT coalesce(array_agg(concat_ws('|', j.jobname, j.schedule, j.command, j.active)), '{}') INTO after
	  FROM cron.job j WHERE j.jobname LIKE 'p2p\_preheat\_policy\_%';
	RETURN (SELECT count(DISTINCT split_part(x, '|', 1))
			  FROM ((SELECT unnest(before) EXCEPT SELECT unnest(after))
					UNION ALL
					(SELECT unnest(after) EXCEPT SELECT unnest(before))) d(x));
END
$$;

COMMENT ON FUNCTION p2p_preheat.sync_schedules() IS
'Makes pg_cron''s jobs match the scheduled policies again; returns how many jobs changed';

-- pg_cron created after this extension: scheduled policies get their jobs.
CREATE FUNCTION p2p_preheat._on_create_extension()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p2p_preheat._cron_available() AND EXISTS (SELECT FROM p2p_preheat.harbor)
	   AND current_setting('check_function_bodies') <> 'off' THEN
		PERFORM p2p_preheat.sync_schedules();
	END IF;
END
$$;

CREATE EVENT TRIGGER p2p_preheat_cron_created ON ddl_command_end
	WHEN TAG IN ('CREATE EXTENSION')
	EXECUTE FUNCTION p2p_preheat._on_create_extension();
