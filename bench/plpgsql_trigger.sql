-- The extra_attrs rules for Dragonfly written as a PL/pgSQL trigger, the way a
-- DBA would without the extension: the baseline the C trigger is measured
-- against in bench/trigger.sh.  Same checks, same vendor lookup.
CREATE OR REPLACE FUNCTION bench_plpgsql_extra_attrs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	doc jsonb;
	vendor text;
	k text;
	v jsonb;
	scope text;
	e jsonb;
	n int;
	seen bigint[] := '{}';
	known constant text[] := ARRAY['application', 'cluster_ids', 'concurrent_peer_count',
		'concurrent_task_count', 'count', 'filtered_query_params', 'ips', 'percentage',
		'piece_length', 'platform', 'scope', 'tag', 'timeout'];
BEGIN
	IF NEW.extra_attrs IS NULL THEN
		RETURN NEW;
	END IF;
	IF TG_OP = 'UPDATE' AND NEW.extra_attrs::text = OLD.extra_attrs::text
	   AND NEW.provider_id = OLD.provider_id THEN
		RETURN NEW;
	END IF;
	doc := NEW.extra_attrs::jsonb;
	IF jsonb_typeof(doc) = 'null' THEN
		RETURN NEW;
	END IF;
	IF jsonb_typeof(doc) <> 'object' THEN
		RAISE EXCEPTION 'extra_attrs must be an object' USING ERRCODE = 'check_violation';
	END IF;
	SELECT i.vendor INTO vendor FROM p2p_preheat_instance i WHERE i.id = NEW.provider_id;
	IF vendor IS DISTINCT FROM 'dragonfly' THEN
		RETURN NEW;
	END IF;
	scope := doc->>'scope';
	FOR k, v IN SELECT * FROM jsonb_each(doc) LOOP
		IF NOT k = ANY (known) THEN
			RAISE EXCEPTION '%: not a Dragonfly preheat argument', k USING ERRCODE = 'check_violation';
		END IF;
		CASE k
		WHEN 'scope' THEN
			IF jsonb_typeof(v) <> 'string' OR NOT (v #>> '{}') = ANY (ARRAY['single_peer', 'all_peers', 'single_seed_peer', 'all_seed_peers']) THEN
				RAISE EXCEPTION 'scope: not a preheat scope' USING ERRCODE = 'check_violation';
			END IF;
		WHEN 'cluster_ids' THEN
			IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 1000 THEN
				RAISE EXCEPTION 'cluster_ids: not an array' USING ERRCODE = 'check_violation';
			END IF;
			seen := '{}';
			FOR e IN SELECT * FROM jsonb_array_elements(v) LOOP
				IF jsonb_typeof(e) <> 'number' OR (e::text) ~ '[.eE]'
				   OR (e::text)::numeric < 1 OR (e::text)::numeric > 4294967295
				   OR (e::text)::bigint = ANY (seen) THEN
					RAISE EXCEPTION 'cluster_ids: bad cluster id %', e USING ERRCODE = 'check_violation';
				END IF;
				seen := seen || (e::text)::bigint;
			END LOOP;
		WHEN 'platform' THEN
			IF jsonb_typeof(v) <> 'string' OR NOT ((v #>> '{}') = '' OR (v #>> '{}') ~ '^[a-z0-9._-]+/[a-z0-9._-]+(/[a-z0-9._-]+)?$') THEN
				RAISE EXCEPTION 'platform: bad platform' USING ERRCODE = 'check_violation';
			END IF;
		WHEN 'timeout' THEN
			IF NOT (jsonb_typeof(v) = 'string' AND (v #>> '{}') ~ '^([0-9]*(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$')
			   AND NOT (jsonb_typeof(v) = 'number' AND (v::text) !~ '[.eE]' AND (v::text)::numeric > 0) THEN
				RAISE EXCEPTION 'timeout: bad timeout' USING ERRCODE = 'check_violation';
			END IF;
		WHEN 'ips', 'count', 'percentage' THEN
			IF scope IS NULL OR scope NOT LIKE 'all\_%' THEN
				RAISE EXCEPTION '%: needs an all_* scope', k USING ERRCODE = 'check_violation';
			END IF;
		WHEN 'application', 'tag', 'filtered_query_params' THEN
			IF jsonb_typeof(v) <> 'string' THEN
				RAISE EXCEPTION '%: not a string', k USING ERRCODE = 'check_violation';
			END IF;
		ELSE
			n := CASE WHEN jsonb_typeof(v) = 'number' AND (v::text) !~ '[.eE]' THEN (v::text)::numeric ELSE -1 END;
			IF n < 1 THEN
				RAISE EXCEPTION '%: not a whole number', k USING ERRCODE = 'check_violation';
			END IF;
		END CASE;
	END LOOP;
	RETURN NEW;
END
$$;
