-- Attach to Harbor's policy table if Harbor created it already.
SELECT p2p_preheat.attach(c.oid)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = 'p2p_preheat_policy' AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
   AND n.nspname = p2p_preheat._harbor_schema_setting();
