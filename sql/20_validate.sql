/*
 * The rules for extra_attrs, callable without a table, and the trigger that
 * applies them to Harbor's policy table whichever client writes it.
 */

CREATE FUNCTION p2p_preheat.validate_extra_attrs(vendor text, extra_attrs json)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'p2p_preheat_validate_extra_attrs'
LANGUAGE C STABLE PARALLEL SAFE;

-- Harbor 2.13+ keeps extra_attrs as text: same rules, and text may not parse
CREATE FUNCTION p2p_preheat.validate_extra_attrs(vendor text, extra_attrs text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'p2p_preheat_validate_extra_attrs'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION p2p_preheat.validate_extra_attrs(text, json) IS
'Returns extra_attrs as it will be sent to the provider, or raises the error the policy trigger would raise';
COMMENT ON FUNCTION p2p_preheat.validate_extra_attrs(text, text) IS
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
COMMENT ON FUNCTION p2p_preheat.extra_attrs_problems(text, text) IS
'Every problem of an extra_attrs document at once, as (path, problem, hint) rows; no rows when valid';

-- The validation trigger (attached by attach()).  It runs as whoever writes
-- the policy; the instance's vendor is read as Harbor's table owner.
CREATE FUNCTION p2p_preheat.policy_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'p2p_preheat_policy_trigger'
LANGUAGE C;

COMMENT ON FUNCTION p2p_preheat.policy_trigger() IS
'BEFORE INSERT OR UPDATE trigger on Harbor''s p2p_preheat_policy: refuses extra_attrs that break the rules';

-- Policies stored before the rules existed, or written with the trigger off.
CREATE FUNCTION p2p_preheat._invalid_policies(
	OUT policy_id integer, OUT policy_name text,
	OUT vendor text, OUT path text, OUT problem text, OUT hint text)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT p.id, p.name, p.vendor, x.path, x.problem, x.hint
	  FROM p2p_preheat._harbor_policies() p
	 CROSS JOIN LATERAL p2p_preheat.extra_attrs_problems(p.vendor, p.extra_attrs) x
	 ORDER BY p.id
$$;

CREATE VIEW p2p_preheat.invalid_policies AS
	SELECT * FROM p2p_preheat._invalid_policies();

COMMENT ON VIEW p2p_preheat.invalid_policies IS
'Stored policies whose extra_attrs break the rules, one row per problem';
