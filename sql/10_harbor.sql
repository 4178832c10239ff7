/*
 * Harbor's tables belong to Harbor's database role, which is not trusted
 * with more than its own privileges.  So:
 *  - where Harbor's tables are, and whose they are, is recorded once, when
 *    the extension attaches to Harbor's policy table (p2p_preheat.harbor);
 *  - every read or write of Harbor's tables goes through the C functions
 *    below, which check that each table is an ordinary table of the recorded
 *    owner in the recorded schema, and run the query as that owner under a
 *    security-restricted operation (as VACUUM does).  Whatever Harbor's role
 *    puts in its tables (a view, a trigger, a default, an operator, a
 *    function) runs with Harbor's privileges and no more.
 */

CREATE TABLE p2p_preheat.harbor (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	schema_name name NOT NULL,
	owner regrole NOT NULL,
	policy_table regclass NOT NULL,
	attached_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

COMMENT ON TABLE p2p_preheat.harbor IS
'Where Harbor''s tables are and which role owns them; every reader of Harbor''s tables goes by this row';

-- What the extension reads of a policy, its project and its instance (never
-- the instance's credentials: only C reads those).
CREATE TYPE p2p_preheat.harbor_policy AS (
	id integer,
	name text,
	project_id integer,
	project text,
	provider_id integer,
	enabled boolean,
	filters text,
	trigger text,
	extra_attrs text,
	instance_found boolean,
	vendor text,
	instance_enabled boolean
);

CREATE TYPE p2p_preheat.harbor_instance AS (
	id integer,
	vendor text,
	enabled boolean,
	endpoint text
);

CREATE FUNCTION p2p_preheat._harbor_policy(policy_id integer)
RETURNS p2p_preheat.harbor_policy
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_policy'
LANGUAGE C STABLE STRICT;

CREATE FUNCTION p2p_preheat._harbor_policies()
RETURNS SETOF p2p_preheat.harbor_policy
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_policies'
LANGUAGE C STABLE;

CREATE FUNCTION p2p_preheat._harbor_instance(instance_id integer)
RETURNS p2p_preheat.harbor_instance
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_instance'
LANGUAGE C STABLE STRICT;

-- Every tagged artifact of a project of the given types (or only artifact
-- only_artifact), one row per artifact and tag, whose repository (without
-- the project prefix) and tag match the patterns, which carries every label
-- named and, unless below_severity is NULL, whose vulnerability severity as
-- Harbor computes it is below below_severity.
CREATE FUNCTION p2p_preheat._harbor_candidates(project_id integer, repo_pattern text,
	tag_pattern text, labels text[], types text[], below_severity integer, only_artifact integer,
	OUT artifact_id integer, OUT digest text, OUT repository text, OUT tag text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_candidates'
LANGUAGE C STABLE;

-- A project's name and the security settings Harbor's preheat reads.
CREATE FUNCTION p2p_preheat._harbor_project(project_id integer,
	OUT project text, OUT content_trust boolean, OUT prevent_vul boolean, OUT severity text)
RETURNS record
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_project'
LANGUAGE C STABLE STRICT;

-- Harbor 2.12's scope column, per policy that has one.
CREATE FUNCTION p2p_preheat._harbor_scopes(OUT id integer, OUT scope text, OUT extra_attrs text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_scopes'
LANGUAGE C STABLE;

-- Writes one policy's extra_attrs (the scope carried over).
CREATE FUNCTION p2p_preheat._harbor_set_extra_attrs(policy_id integer, extra_attrs text)
RETURNS void
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_set_extra_attrs'
LANGUAGE C VOLATILE STRICT;

-- Harbor's json extra_attrs made text, as Harbor's owner (the rewrite runs
-- Harbor's constraints and index expressions).
CREATE FUNCTION p2p_preheat._harbor_extra_attrs_to_text()
RETURNS void
AS 'MODULE_PATHNAME', 'p2p_preheat_harbor_extra_attrs_to_text'
LANGUAGE C VOLATILE;

-- extra_attrs text as an object to merge into, or NULL when it is not one
CREATE FUNCTION p2p_preheat._as_object(extra_attrs text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'p2p_preheat_as_object'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

/*
 * Harbor 2.12's scope column into extra_attrs, under the name Harbor 2.13+
 * and Dragonfly accept; a scope already in extra_attrs wins.  Read and
 * written as Harbor.  Returns how many policies changed.
 */
CREATE FUNCTION p2p_preheat._carry_scope()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	doc jsonb;
	n bigint := 0;
BEGIN
	FOR s IN SELECT * FROM p2p_preheat._harbor_scopes() LOOP
		doc := p2p_preheat._as_object(s.extra_attrs);
		CONTINUE WHEN doc IS NULL OR doc ? 'scope';
		PERFORM p2p_preheat._harbor_set_extra_attrs(s.id,
			(jsonb_build_object('scope', CASE s.scope WHEN 'single_peer' THEN 'single_seed_peer'
													  ELSE s.scope END) || doc)::text);
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;

/*
 * Harbor 2.12 keeps writing scope after the extension attached, and 2.13's
 * migration drops the column: before any ALTER TABLE, while the column is
 * still there, carry what it holds.  Never fails Harbor's migration.
 */
CREATE FUNCTION p2p_preheat._on_alter_table()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF current_setting('check_function_bodies') = 'off'
	   OR NOT EXISTS (SELECT FROM p2p_preheat.harbor h
					   WHERE (SELECT count(*) FROM pg_attribute a
							   WHERE a.attrelid = h.policy_table AND a.attname IN ('scope', 'extra_attrs')
								 AND NOT a.attisdropped) = 2) THEN
		RETURN;
	END IF;
	BEGIN
		n := p2p_preheat._carry_scope();
		IF n > 0 THEN
			RAISE NOTICE 'p2p_preheat: carried scope into extra_attrs for % policies', n;
		END IF;
	EXCEPTION WHEN OTHERS THEN
		RAISE WARNING 'p2p_preheat could not carry scope into extra_attrs: %', SQLERRM;
	END;
END
$$;

CREATE EVENT TRIGGER p2p_preheat_carry_scope ON ddl_command_start
	WHEN TAG IN ('ALTER TABLE')
	EXECUTE FUNCTION p2p_preheat._on_alter_table();

/*
 * Attaches the extension to Harbor's policy table: records Harbor, adds
 * extra_attrs if missing, carries Harbor 2.12's scope into it, and puts the
 * extension's triggers on Harbor's tables.  Safe to run again.  Every step
 * runs in the caller's transaction, so a lock_timeout leaves nothing behind.
 */
CREATE FUNCTION p2p_preheat.attach(policy_table regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rel record;
	known p2p_preheat.harbor;
	ea_type regtype;
	migrated bigint := 0;
BEGIN
	SELECT c.relkind, c.relpersistence, n.nspname, c.relowner::regrole AS owner
	  INTO rel
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE c.oid = policy_table;
	IF rel.relkind NOT IN ('r', 'p') OR rel.relpersistence = 't' THEN
		RAISE EXCEPTION 'cannot attach p2p_preheat to %: it is not an ordinary table', policy_table
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'Attach to Harbor''s own p2p_preheat_policy table.';
	END IF;
	SELECT * INTO known FROM p2p_preheat.harbor;
	IF known.schema_name IS NOT NULL AND known.schema_name <> rel.nspname
	   AND to_regclass(format('%I.p2p_preheat_policy', known.schema_name)) IS NOT NULL THEN
		RAISE EXCEPTION 'cannot attach p2p_preheat to %: Harbor''s tables are recorded in schema "%"',
			policy_table, known.schema_name
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'One database holds one Harbor; a job must never be sent with another schema''s instance.',
				  HINT = 'Use a database per Harbor, or drop and create the extension to move it.';
	END IF;
	INSERT INTO p2p_preheat.harbor AS h (schema_name, owner, policy_table)
	VALUES (rel.nspname, rel.owner, policy_table)
	ON CONFLICT (singleton) DO UPDATE
		SET schema_name = excluded.schema_name, owner = excluded.owner,
			policy_table = excluded.policy_table, attached_at = clock_timestamp();

	SELECT atttypid::regtype INTO ea_type
	  FROM pg_attribute
	 WHERE attrelid = policy_table AND attname = 'extra_attrs' AND NOT attisdropped;
	IF ea_type IS NULL THEN
		-- text, as Harbor 2.13+ creates it: Harbor's later migration
		-- (ADD COLUMN IF NOT EXISTS extra_attrs text) and its ORM, which
		-- writes '' for "no attributes", keep working.  No default: a
		-- catalog change, no table rewrite.
		EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS extra_attrs text', policy_table);
	ELSIF ea_type IN ('json'::regtype, 'jsonb'::regtype) THEN
		-- The proposal's json: Harbor 2.13+ writes '' for "no attributes",
		-- which json refuses, so every save of such a policy would fail.
		-- text takes whatever json took, and the trigger still validates
		-- it.  json and text are not binary-coercible: this rewrites the
		-- table (one row per policy) under the caller's lock_timeout.
		BEGIN
			PERFORM p2p_preheat._harbor_extra_attrs_to_text();
			RAISE NOTICE 'p2p_preheat: extra_attrs of % is now text (was %), as Harbor 2.13+ creates it',
				policy_table, ea_type;
		EXCEPTION WHEN feature_not_supported OR dependent_objects_still_exist THEN
			RAISE WARNING 'p2p_preheat: extra_attrs of % stays %: %', policy_table, ea_type, SQLERRM
				USING HINT = 'Harbor 2.13+ cannot save a policy without attributes into it; change it to text once what depends on it allows.';
		END;
	ELSIF ea_type NOT IN ('text'::regtype, 'character varying'::regtype) THEN
		RAISE EXCEPTION 'cannot attach p2p_preheat to %: extra_attrs is of type %', policy_table, ea_type
			USING ERRCODE = 'datatype_mismatch',
				  HINT = 'extra_attrs must be text, json, jsonb or varchar.';
	END IF;

	-- Harbor 2.13 drops scope without moving it: move it first
	migrated := p2p_preheat._carry_scope();
	IF migrated > 0 THEN
		RAISE NOTICE 'p2p_preheat: carried scope into extra_attrs for % policies of %', migrated, policy_table;
	END IF;

	-- The triggers are not members of the extension, but go with it.
	EXECUTE format('CREATE OR REPLACE TRIGGER p2p_preheat_extra_attrs
					BEFORE INSERT OR UPDATE ON %s
					FOR EACH ROW EXECUTE FUNCTION p2p_preheat.policy_trigger()', policy_table);
	EXECUTE format('ALTER TRIGGER p2p_preheat_extra_attrs ON %s DEPENDS ON EXTENSION p2p_preheat',
				   policy_table);
	EXECUTE format('CREATE OR REPLACE TRIGGER p2p_preheat_policy_sync
					AFTER INSERT OR UPDATE OR DELETE ON %s
					FOR EACH ROW EXECUTE FUNCTION p2p_preheat._on_policy_change()', policy_table);
	EXECUTE format('ALTER TRIGGER p2p_preheat_policy_sync ON %s DEPENDS ON EXTENSION p2p_preheat',
				   policy_table);
	-- Harbor's three events: push, label added, scan completed (60_events.sql)
	PERFORM p2p_preheat._attach_events(rel.nspname);

	PERFORM p2p_preheat._sync_all_policies();
END
$$;

COMMENT ON FUNCTION p2p_preheat.attach(regclass) IS
'Records Harbor''s tables, adds extra_attrs, carries scope into it and attaches the extension''s triggers';

/*
 * Harbor may create its tables after the extension: attach on creation, in
 * the schema p2p_preheat.harbor_schema names (public unless set) and only
 * there.  A p2p_preheat_policy table anyone creates elsewhere is left alone.
 * pg_restore runs with check_function_bodies off, which Harbor's migrations
 * never do, and its dump carries the triggers itself: attach nothing then.
 */
CREATE FUNCTION p2p_preheat._on_create_table()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
BEGIN
	IF current_setting('check_function_bodies') = 'off' THEN
		RETURN;
	END IF;
	FOR t IN
		SELECT c.oid
		  FROM pg_event_trigger_ddl_commands() d
		  JOIN pg_class c ON c.oid = d.objid
		  JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE d.classid = 'pg_class'::regclass
		   AND c.relname = 'p2p_preheat_policy'
		   AND c.relkind IN ('r', 'p')
		   AND c.relpersistence <> 't'
		   AND n.nspname = p2p_preheat._harbor_schema_setting()
	LOOP
		-- Harbor's own migration must never fail because of this extension
		BEGIN
			PERFORM p2p_preheat.attach(t);
		EXCEPTION WHEN OTHERS THEN
			RAISE WARNING 'p2p_preheat could not attach to %: %', t, SQLERRM
				USING HINT = format('Once the cause is fixed, a superuser runs SELECT p2p_preheat.attach(%L).', t::text);
		END;
	END LOOP;
END
$$;

CREATE FUNCTION p2p_preheat._harbor_schema_setting()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(nullif(current_setting('p2p_preheat.harbor_schema', true), ''), 'public')::name
$$;

CREATE EVENT TRIGGER p2p_preheat_attach ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE')
	EXECUTE FUNCTION p2p_preheat._on_create_table();
