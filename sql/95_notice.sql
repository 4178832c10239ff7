/*
 * CREATE EXTENSION succeeds without the background worker, and nothing else
 * would say so: jobs would then wait in the queue until someone calls
 * preheat_dispatch().  Say it once, at install, with what to change.  It is a
 * WARNING because the server raises client_min_messages to warning while an
 * extension script runs: a NOTICE here would never reach the DBA.
 */
DO $$
DECLARE
	preloaded boolean := EXISTS (
		SELECT FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) l
		 WHERE btrim(l, ' "') ~ '(^|/)p2p_preheat(\.so)?$');
	served text := current_setting('p2p_preheat.database', true);
BEGIN
	IF NOT preloaded THEN
		RAISE WARNING 'p2p_preheat: no background worker dispatches jobs, because p2p_preheat is not in shared_preload_libraries'
			USING DETAIL = 'Queued jobs wait until something calls p2p_preheat.preheat_dispatch().',
				  HINT = format('To turn the worker on, add p2p_preheat to shared_preload_libraries (now %L), set p2p_preheat.database = %L, and restart the server.',
								current_setting('shared_preload_libraries'), current_database());
	ELSIF served IS DISTINCT FROM current_database() THEN
		RAISE WARNING 'p2p_preheat: the background worker dispatches for database "%", not for this one', served
			USING DETAIL = 'Queued jobs here wait until something calls p2p_preheat.preheat_dispatch().',
				  HINT = format('Set p2p_preheat.database = %L and restart the server.', current_database());
	END IF;
END
$$;
