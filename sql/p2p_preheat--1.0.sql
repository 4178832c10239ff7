/* p2p_preheat 1.0: extra_attrs on Harbor's policy table, and its validation */

\echo Use "CREATE EXTENSION p2p_preheat" to load this file. \quit

-- Checking documents is for everyone; privileged functions revoke EXECUTE.
GRANT USAGE ON SCHEMA p2p_preheat TO PUBLIC;

-- The rules, callable without a table ------------------------------------

CREATE FUNCTION p2p_preheat.validate_extra_attrs(vendor text, extra_attrs json)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'p2p_preheat_validate_extra_attrs'
LANGUAGE C STABLE PARALLEL SAFE;

-- Harbor 2.13 keeps extra_attrs as text: same rules, text may not parse
CREATE FUNCTION p2p_preheat.validate_extra_attrs(vendor text, extra_attrs text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'p2p_preheat_validate_extra_attrs'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION p2p_preheat.validate_extra_attrs(text, json) IS
'Returns extra_attrs as it will be sent to the provider, or raises the error the policy trigger would raise';

CREATE FUNCTION p2p_preheat.extra_attrs_problems(vendor text, extra_attrs json,
	OUT path text, OUT problem text, OUT hint text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'p2p_preheat_extra_attrs_problems'
LANGUAGE C STABLE PARALLEL SAFE ROWS 1;

CREATE FUNCTION p2p_preheat.extra_attrs_problems(vendor text, extra_attrs text,
	OUT path text, OUT problem text, OUT hint text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'p2p_preheat_extra_attrs_problems'
LANGUAGE C STABLE PARALLEL SAFE ROWS 1;

COMMENT ON FUNCTION p2p_preheat.extra_attrs_problems(text, json) IS
'Every problem of an extra_attrs document at once, as (path, problem, hint) rows; no rows when valid';

-- extra_attrs text as an object to merge into, or NULL when it is not one
CREATE FUNCTION p2p_preheat._as_object(extra_attrs text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'p2p_preheat_as_object'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- The trigger and its attachment to Harbor's table -----------------------

CREATE FUNCTION p2p_preheat.policy_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'p2p_preheat_policy_trigger'
LANGUAGE C;

/*
 * Adds extra_attrs json if missing, carries Harbor 2.12's scope into it, and
 * puts the validation trigger on the table.  Safe to run again.  Every step
 * runs in the caller's transaction, so a lock_timeout leaves nothing behind.
 */
CREATE FUNCTION p2p_preheat.attach(policy_table regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ea_type regtype;
	migrated bigint;
BEGIN
	SELECT atttypid::regtype INTO ea_type
	  FROM pg_attribute
	 WHERE attrelid = policy_table AND attname = 'extra_attrs' AND NOT attisdropped;

	IF ea_type IS NULL THEN
		-- no default: a catalog change, no table rewrite
		EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS extra_attrs json', policy_table);
		ea_type := 'json';
	ELSIF ea_type NOT IN ('json'::regtype, 'jsonb'::regtype, 'text'::regtype,
						  'character varying'::regtype) THEN
		RAISE EXCEPTION 'cannot attach p2p_preheat to %: extra_attrs is of type %', policy_table, ea_type
			USING ERRCODE = 'datatype_mismatch',
				  HINT = 'extra_attrs must be json, jsonb, text or varchar.';
	END IF;

	-- Harbor 2.13 drops scope without moving it: move it first.
	IF EXISTS (SELECT FROM pg_attribute
				WHERE attrelid = policy_table AND attname = 'scope' AND NOT attisdropped) THEN
		EXECUTE format(
			$q$UPDATE %1$s
				  SET extra_attrs = CAST((jsonb_build_object('scope', scope)
										  || p2p_preheat._as_object(extra_attrs::text))::text AS %2$s)
				WHERE scope IS NOT NULL AND scope <> ''
				  AND NOT p2p_preheat._as_object(extra_attrs::text) ? 'scope'$q$,
			policy_table, ea_type);
		GET DIAGNOSTICS migrated = ROW_COUNT;
		IF migrated > 0 THEN
			RAISE NOTICE 'p2p_preheat: carried scope into extra_attrs for % policies of %', migrated, policy_table;
		END IF;
	END IF;

	EXECUTE format('CREATE OR REPLACE TRIGGER p2p_preheat_extra_attrs
					BEFORE INSERT OR UPDATE ON %s
					FOR EACH ROW EXECUTE FUNCTION p2p_preheat.policy_trigger()', policy_table);
	-- not a member of the extension, but dropped with it
	EXECUTE format('ALTER TRIGGER p2p_preheat_extra_attrs ON %s DEPENDS ON EXTENSION p2p_preheat',
				   policy_table);
END
$$;

REVOKE ALL ON FUNCTION p2p_preheat.attach(regclass) FROM PUBLIC;

COMMENT ON FUNCTION p2p_preheat.attach(regclass) IS
'Adds extra_attrs json to a Harbor p2p_preheat_policy table, carries scope into it and attaches the validation trigger';

-- Harbor may create its tables after the extension: attach on creation.
CREATE FUNCTION p2p_preheat._on_create_table()
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
	END LOOP;
END
$$;

REVOKE ALL ON FUNCTION p2p_preheat._on_create_table() FROM PUBLIC;

CREATE EVENT TRIGGER p2p_preheat_attach ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE')
	EXECUTE FUNCTION p2p_preheat._on_create_table();

-- Harbor's policy tables: those carrying the validation trigger.  Every
-- function that needs "Harbor's tables" starts here.
CREATE FUNCTION p2p_preheat._policy_tables()
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT tgrelid::regclass FROM pg_trigger
	 WHERE tgfoid = 'p2p_preheat.policy_trigger()'::regprocedure
	 ORDER BY tgrelid
$$;

-- Policies that were stored before the rules existed ---------------------

CREATE FUNCTION p2p_preheat._invalid_policies(
	OUT policy_table regclass, OUT policy_id integer, OUT policy_name text,
	OUT vendor text, OUT path text, OUT problem text, OUT hint text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
	inst regclass;
BEGIN
	FOR t IN SELECT * FROM p2p_preheat._policy_tables() LOOP
		inst := to_regclass(format('%I.p2p_preheat_instance',
			(SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			  WHERE c.oid = t)));
		RETURN QUERY EXECUTE format(
			$q$SELECT %1$L::regclass, p.id, p.name::text, i.vendor, x.path, x.problem, x.hint
				 FROM %1$s p
				 LEFT JOIN (SELECT id, vendor::text FROM %2$s) i ON i.id = p.provider_id
				 CROSS JOIN LATERAL p2p_preheat.extra_attrs_problems(i.vendor, p.extra_attrs::text) x
				ORDER BY p.id$q$,
			t, coalesce(inst::text, '(SELECT NULL::int AS id, NULL::text AS vendor)'));
	END LOOP;
END
$$;

CREATE VIEW p2p_preheat.invalid_policies AS
	SELECT * FROM p2p_preheat._invalid_policies();

COMMENT ON VIEW p2p_preheat.invalid_policies IS
'Stored policies whose extra_attrs break the rules, one row per problem';

-- Attach to every Harbor policy table already there.
DO $$
DECLARE
	t regclass;
BEGIN
	FOR t IN
		SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE c.relname = 'p2p_preheat_policy' AND c.relkind IN ('r', 'p')
		   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'p2p_preheat')
		   AND c.relpersistence <> 't'
	LOOP
		PERFORM p2p_preheat.attach(t);
	END LOOP;
END
$$;
