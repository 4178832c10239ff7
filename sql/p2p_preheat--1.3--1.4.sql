/* p2p_preheat 1.4: push events and pg_cron schedules carry out Harbor's policies */

\echo Use "ALTER EXTENSION p2p_preheat UPDATE TO '1.4'" to load this file. \quit

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

CREATE FUNCTION p2p_preheat._cron_available()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT to_regprocedure('cron.schedule_in_database(text,text,text,text,text,boolean)') IS NOT NULL
$$;

-- Bring a policy's event cache and pg_cron job in line with the row.
CREATE FUNCTION p2p_preheat._sync_policy(policy_table regclass, policy_id integer)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE c.oid = policy_table);
	pol record;
	kind text;
	repo_pattern text;
	tag_pattern text;
	labels text[] := '{}';
	jobname text := 'p2p_preheat_policy_' || policy_id;
	cron text;
BEGIN
	EXECUTE format(
		'SELECT p.name::text AS name, p.project_id, p.provider_id, p.enabled, p.filters::text AS filters,
				p.trigger::text AS trigger, p.extra_attrs::text AS extra_attrs, i.vendor::text AS vendor
		   FROM %s p LEFT JOIN %I.p2p_preheat_instance i ON i.id = p.provider_id
		  WHERE p.id = $1', policy_table, h)
		INTO pol USING policy_id;
	BEGIN
		kind := (pol.trigger::jsonb)->>'type';
		cron := (pol.trigger::jsonb)->'trigger_setting'->>'cron';
	EXCEPTION WHEN invalid_text_representation THEN
		kind := NULL;
	END;

	-- push events
	DELETE FROM p2p_preheat.event_policy e WHERE e.policy_id = _sync_policy.policy_id;
	IF pol.name IS NOT NULL AND coalesce(pol.enabled, false) AND kind = 'event_based' THEN
		SELECT f.repo_pattern, f.tag_pattern, f.labels INTO repo_pattern, tag_pattern, labels
		  FROM p2p_preheat._parse_filters(pol.filters, format('preheat policy "%s" (id %s)', pol.name, policy_id)) f;
		INSERT INTO p2p_preheat.event_policy (policy_id, project_id, provider_id, repo_pattern, tag_pattern, labels, attrs)
		VALUES (policy_id, pol.project_id, pol.provider_id, repo_pattern, tag_pattern, labels,
				p2p_preheat.validate_extra_attrs(pol.vendor, pol.extra_attrs));
	END IF;

	-- schedules
	IF NOT p2p_preheat._cron_available() THEN
		RETURN;
	END IF;
	IF pol.name IS NOT NULL AND coalesce(pol.enabled, false) AND kind = 'scheduled' THEN
		IF coalesce(cron, '') = '' THEN
			RAISE EXCEPTION 'scheduled preheat policy "%" (id %) has no cron', pol.name, policy_id
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, current_database())'
			USING jobname, p2p_preheat.harbor_cron_to_pg_cron(cron),
				  format('SELECT p2p_preheat.run_policy(%s, %L)', policy_id, 'scheduled');
	ELSE
		EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1' USING jobname;
	END IF;
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat._sync_policy(regclass, integer) FROM PUBLIC;

CREATE FUNCTION p2p_preheat._on_policy_change()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM p2p_preheat._sync_policy(TG_RELID, OLD.id);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR NEW.id <> OLD.id) THEN
		PERFORM p2p_preheat._sync_policy(TG_RELID, NEW.id);
	END IF;
	RETURN NULL;
END
$$;

-- A pushed tag, or a tag moved to another image: queue what event-based
-- policies of the project ask for.  Nothing here can fail or slow the push
-- beyond one indexed lookup and the pattern matches.
CREATE FUNCTION p2p_preheat._on_tag()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m record;
	registry text;
	jid bigint;
	eid bigint;
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.artifact_id IS NOT DISTINCT FROM OLD.artifact_id THEN
		RETURN NULL;
	END IF;
	BEGIN
		FOR m IN
			SELECT ep.policy_id, ep.provider_id, ep.attrs, r.name::text AS repo, i.id IS NOT NULL AS instance_found,
				   coalesce(i.enabled, true) AS instance_enabled
			  FROM p2p_preheat._tag_context(TG_TABLE_SCHEMA, NEW.repository_id, NEW.artifact_id) r
			  JOIN p2p_preheat.event_policy ep ON ep.project_id = r.project_id
			  LEFT JOIN p2p_preheat._instance(TG_TABLE_SCHEMA, ep.provider_id) i ON true
			 WHERE r.type = 'IMAGE'
			   AND (ep.repo_pattern IS NULL OR p2p_preheat.doublestar_match(ep.repo_pattern, substr(r.name, length(r.project) + 2)))
			   AND (ep.tag_pattern IS NULL OR p2p_preheat.doublestar_match(ep.tag_pattern, NEW.name))
			   AND (cardinality(ep.labels) = 0 OR cardinality(ep.labels) =
					p2p_preheat._label_count(TG_TABLE_SCHEMA, NEW.artifact_id, ep.labels))
		LOOP
			IF NOT m.instance_found OR NOT m.instance_enabled THEN
				INSERT INTO p2p_preheat.event_error (policy_id, repository_id, artifact_id, tag, error)
				VALUES (m.policy_id, NEW.repository_id, NEW.artifact_id, NEW.name,
						format('preheat instance %s %s', m.provider_id,
							   CASE WHEN m.instance_found THEN 'is disabled' ELSE 'does not exist' END));
				CONTINUE;
			END IF;
			registry := rtrim(coalesce(current_setting('p2p_preheat.registry_url', true), ''), '/');
			IF registry = '' THEN
				RAISE EXCEPTION 'p2p_preheat.registry_url is not set' USING ERRCODE = 'object_not_in_prerequisite_state';
			END IF;
			jid := p2p_preheat._enqueue(m.policy_id, m.provider_id,
				registry || '/v2/' || m.repo || '/manifests/' || NEW.name, m.attrs, NULL);
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

-- The pushed tag's repository, project and artifact type (schema chosen at run time).
CREATE FUNCTION p2p_preheat._tag_context(schema name, repository_id integer, artifact_id integer,
	OUT name text, OUT project text, OUT project_id integer, OUT type text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY EXECUTE format(
		'SELECT r.name::text, pr.name::text, r.project_id, a.type::text
		   FROM %1$I.repository r
		   JOIN %1$I.project pr ON pr.project_id = r.project_id
		   JOIN %1$I.artifact a ON a.id = $2
		  WHERE r.repository_id = $1', schema)
		USING repository_id, artifact_id;
END
$$;

CREATE FUNCTION p2p_preheat._instance(schema name, instance_id integer,
	OUT id integer, OUT enabled boolean)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY EXECUTE format('SELECT id, enabled FROM %I.p2p_preheat_instance WHERE id = $1', schema)
		USING instance_id;
END
$$;

CREATE FUNCTION p2p_preheat._label_count(schema name, artifact_id integer, labels text[])
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n integer;
BEGIN
	EXECUTE format('SELECT count(DISTINCT l.name)::int FROM %1$I.label_reference lr
					  JOIN %1$I.harbor_label l ON l.id = lr.label_id
					 WHERE lr.artifact_id = $1 AND l.name = ANY ($2)', schema)
		INTO n USING artifact_id, labels;
	RETURN n;
END
$$;

-- Attach the push and schedule triggers next to the validation trigger.
CREATE FUNCTION p2p_preheat._attach_events(policy_table regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE c.oid = policy_table);
	tag regclass := to_regclass(format('%I.tag', h));
	p record;
BEGIN
	EXECUTE format('CREATE OR REPLACE TRIGGER p2p_preheat_policy_sync
					AFTER INSERT OR UPDATE OR DELETE ON %s
					FOR EACH ROW EXECUTE FUNCTION p2p_preheat._on_policy_change()', policy_table);
	EXECUTE format('ALTER TRIGGER p2p_preheat_policy_sync ON %s DEPENDS ON EXTENSION p2p_preheat', policy_table);
	IF tag IS NOT NULL THEN
		EXECUTE format('CREATE OR REPLACE TRIGGER p2p_preheat_push
						AFTER INSERT OR UPDATE OF artifact_id ON %s
						FOR EACH ROW EXECUTE FUNCTION p2p_preheat._on_tag()', tag);
		EXECUTE format('ALTER TRIGGER p2p_preheat_push ON %s DEPENDS ON EXTENSION p2p_preheat', tag);
	END IF;
	FOR p IN EXECUTE format('SELECT id FROM %s', policy_table) LOOP
		BEGIN
			PERFORM p2p_preheat._sync_policy(policy_table, p.id);
		EXCEPTION WHEN OTHERS THEN
			-- a stored policy that cannot be scheduled must not stop the install
			RAISE WARNING 'p2p_preheat: policy %: %', p.id, SQLERRM;
		END;
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat._attach_events(regclass) FROM PUBLIC;

-- attach() now also attaches the push and schedule triggers
CREATE OR REPLACE FUNCTION p2p_preheat._attach_all_events()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
BEGIN
	FOR t IN SELECT * FROM p2p_preheat._policy_tables() LOOP
		PERFORM p2p_preheat._attach_events(t);
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat._attach_all_events() FROM PUBLIC;

CREATE FUNCTION p2p_preheat._policy_exists(policy_id integer)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
	found boolean;
BEGIN
	FOR t IN SELECT * FROM p2p_preheat._policy_tables() LOOP
		EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE id = $1)', t) INTO found USING policy_id;
		IF found THEN
			RETURN true;
		END IF;
	END LOOP;
	RETURN false;
END
$$;

-- Repair drift between policies and pg_cron; returns how many cron jobs changed.
CREATE FUNCTION p2p_preheat.sync_schedules()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
	p record;
	before text[];
	after text[];
BEGIN
	IF NOT p2p_preheat._cron_available() THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Without pg_cron, call p2p_preheat.run_policy(id, ''scheduled'') from any scheduler.';
	END IF;
	SELECT coalesce(array_agg(concat_ws('|', jobname, schedule, command, active)), '{}') INTO before
	  FROM cron.job WHERE jobname LIKE 'p2p\_preheat\_policy\_%';
	-- jobs whose policy is gone
	PERFORM cron.unschedule(jobid) FROM cron.job
	 WHERE jobname LIKE 'p2p\_preheat\_policy\_%'
	   AND NOT p2p_preheat._policy_exists(substr(jobname, 20)::int);
	FOR t IN SELECT * FROM p2p_preheat._policy_tables() LOOP
		FOR p IN EXECUTE format('SELECT id FROM %s', t) LOOP
			PERFORM p2p_preheat._sync_policy(t, p.id);
		END LOOP;
	END LOOP;
	SELECT coalesce(array_agg(concat_ws('|', jobname, schedule, command, active)), '{}') INTO after
	  FROM cron.job WHERE jobname LIKE 'p2p\_preheat\_policy\_%';
	RETURN (SELECT count(DISTINCT split_part(x, '|', 1))
			  FROM ((SELECT unnest(before) EXCEPT SELECT unnest(after))
					UNION ALL
					(SELECT unnest(after) EXCEPT SELECT unnest(before))) d(x));
END
$$;
REVOKE ALL ON FUNCTION p2p_preheat.sync_schedules() FROM PUBLIC;

COMMENT ON FUNCTION p2p_preheat.sync_schedules() IS
'Makes pg_cron''s jobs match the scheduled policies again; returns how many jobs changed';

-- Harbor creating its policy table later also gets the push and schedule triggers.
CREATE OR REPLACE FUNCTION p2p_preheat._on_create_table()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
BEGIN
	FOR t IN
		SELECT c.oid
		  FROM pg_event_trigger_ddl_commands() d
		  JOIN pg_class c ON c.oid = d.objid
		 WHERE d.classid = 'pg_class'::regclass
		   AND c.relname = 'p2p_preheat_policy'
		   AND c.relkind IN ('r', 'p')
		   AND c.relpersistence <> 't'
	LOOP
		PERFORM p2p_preheat.attach(t);
		PERFORM p2p_preheat._attach_events(t);
	END LOOP;
END
$$;

SELECT p2p_preheat._attach_all_events();
