#!/usr/bin/env bash
# The main job, end to end, on a throwaway cluster: Harbor 2.12's tables,
# CREATE EXTENSION migrating them, the validation trigger refusing what
# Dragonfly would reject, preheats queued the way Harbor would (a duplicate
# folded into one job, an image Dragonfly fails), a push, a manual run and a
# run by pg_cron, dispatched both by preheat_dispatch() and by the
# background worker, and a summary to paste into a ticket.  It waits by
# polling for the final states, never with fixed sleeps.
# Usage: bash scripts/demo.sh   (as root on Debian 12: installs what is missing)
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"

header() { printf '\n== %s\n' "$*"; }

header "0. What the demo needs"
echo "   checking the Debian packages; apt-get installs any that are missing (a few minutes) ..."
# apt's own chatter (debconf's notes about a missing apt-utils) is noise here
ensure_deps 2> >(grep -v '^debconf:' >&2)
echo "   PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'), pg_cron, libcurl, OpenSSL: present"
echo "   building p2p_preheat (make) and installing it into that PostgreSQL (make install) ..."
t0=$(date +%s)
build_and_install
echo "   built and installed in $(($(date +%s) - t0)) s"
echo "   building the Dragonfly stand-in (test/standin) ..."
build_standin

dir=$(make_workdir)
trap 'stop_standin; stop_cluster "$dir"; rm -rf "$dir"' EXIT
cd "$dir"
# a stand-in for Dragonfly's manager on loopback, with an API token
start_standin "$dir" --token demo-token --clusters 1,2
# the settings of the README's Quick start, on a throwaway cluster
start_cluster "$dir" "shared_preload_libraries = 'pg_cron,p2p_preheat'" \
	"cron.database_name = 'registry'" "cron.use_background_workers = on" \
	"p2p_preheat.database = 'registry'" "p2p_preheat.registry_url = 'https://harbor.example.com'"
echo "   a throwaway PostgreSQL cluster in $dir, listening only on its socket"
echo "   the Dragonfly stand-in on http://127.0.0.1:$DRAGONFLY_PORT"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"
export PGDATABASE=registry

sql() { psql -X -q -v ON_ERROR_STOP=1 -v endpoint="http://127.0.0.1:$DRAGONFLY_PORT" "$@"; }
value() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }

# wait_for LABEL SQL: SQL returns "done|what it is waiting for"; prints that
# every 5 s, until done (or 3 minutes).
wait_for() {
	local label=$1 query=$2 start printed=-5 done what now
	start=$(date +%s)
	while :; do
		IFS='|' read -r done what < <(value "$query")
		now=$(($(date +%s) - start))
		if [ "$done" = t ]; then
			printf '   %3d s  %s: done\n' "$now" "$label"
			return 0
		fi
		if [ $((now - printed)) -ge 5 ]; then
			printf '   %3d s  %s\n' "$now" "$what"
			printed=$now
		fi
		[ "$now" -lt 180 ] || { echo "   gave up after 180 s" >&2; return 1; }
		sleep 1
	done
}

psql -X -q -c 'CREATE DATABASE registry' -d postgres

header "1. Harbor 2.12's database, before the extension"
sql <<'SQL'
\set ECHO none
\o /dev/null
\i harbor.sql
SELECT harbor_fixture.create_tables('2.12');
SELECT harbor_fixture.add_instances(:'endpoint');
\o
-- Harbor stores the Dragonfly instance with its API token
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "demo-token"}' WHERE id = 1;
INSERT INTO repository (repository_id, name, project_id) VALUES
	(1, 'library/app', 1), (2, 'library/tools/cli', 1), (3, 'library/db', 1), (4, 'library/tools/old-jobfail', 1);
INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
VALUES (1, 1, 1, 'library/app', 'sha256:a1', 'IMAGE', 'm', 'm'),
	   (2, 1, 2, 'library/tools/cli', 'sha256:c1', 'IMAGE', 'm', 'm'),
	   (3, 1, 3, 'library/db', 'sha256:d1', 'IMAGE', 'm', 'm'),
	   (4, 1, 1, 'library/app', 'sha256:a2', 'IMAGE', 'm', 'm'),
	   (5, 1, 4, 'library/tools/old-jobfail', 'sha256:f1', 'IMAGE', 'm', 'm');
INSERT INTO tag (repository_id, artifact_id, name) VALUES
	(1, 1, '1.0'), (1, 1, 'latest'), (2, 2, 'v1'), (3, 3, '9.6'), (4, 5, 'v0');
-- three policies, with Harbor 2.12's scope column; "nightly" runs every
-- minute here so that pg_cron runs it during the demo
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, filters, trigger, enabled, scope) VALUES
	(1, 'on-push', 1, 1, '[{"type":"repository","value":"app"},{"type":"tag","value":"v*"}]',
	 '{"type":"event_based","trigger_setting":{"cron":""}}', true, 'single_peer'),
	(2, 'nightly', 1, 1, '[{"type":"repository","value":"{app,db}"},{"type":"tag","value":"**"}]',
	 '{"type":"scheduled","trigger_setting":{"cron":"0 * * * * *"}}', true, 'all_peers'),
	(3, 'tools', 1, 1, '[{"type":"repository","value":"tools/**"}]',
	 '{"type":"manual","trigger_setting":{"cron":""}}', true, NULL);
\pset footer off
\echo Images (repository:tag):
SELECT r.name || ':' || t.name AS image FROM tag t JOIN repository r USING (repository_id) ORDER BY 1;
\echo Policies, with the scope column Harbor 2.12 has and 2.13 drops:
SELECT id, name, filters, trigger::jsonb->>'type' AS trigger, scope FROM p2p_preheat_policy ORDER BY id;
SQL

header "2. CREATE EXTENSION: the migration"
sql <<'SQL'
\pset footer off
\set ECHO queries
CREATE EXTENSION pg_cron;
CREATE EXTENSION p2p_preheat;
\set ECHO none
\echo extra_attrs was added, and each scope carried into it:
SELECT id, name, scope, extra_attrs FROM p2p_preheat_policy ORDER BY id;
\echo The scheduled policy is now a pg_cron job, its 6-field Harbor cron in the 5 fields of pg_cron:
SELECT jobname, schedule, command FROM cron.job;
SQL
wait_for "the background worker runs" \
	"SELECT pid IS NOT NULL AND state = 'idle', 'worker_status(): ' || state FROM p2p_preheat.worker_status()"

header "3. The trigger refuses what Dragonfly would reject or silently misread"
sql -v ON_ERROR_STOP=0 <<'SQL'
\set VERBOSITY default
\set SHOW_CONTEXT never
\set ECHO queries
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "clusterids": [1, 2]}' WHERE id = 3;
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "single_peer", "count": 5}' WHERE id = 3;
UPDATE p2p_preheat_policy SET extra_attrs = '{"scope": "all_peers", "cluster_ids": [1, 2], "timeout": "30m"}' WHERE id = 3;
SQL

header "4. The document as Dragonfly will receive it"
sql <<'SQL'
\pset footer off
\set ECHO queries
SELECT extra_attrs AS stored, p2p_preheat.validate_extra_attrs('dragonfly', extra_attrs) AS sent_to_dragonfly
  FROM p2p_preheat_policy WHERE id = 3;
SQL

header "5. Dispatch from SQL: preheat_dispatch(), with a duplicate request folded"
echo "   Harbor asks twice for tools/cli:v1. Both calls return the same job. preheat_dispatch() then"
echo "   sends it within the caller's transaction, before the worker could see it."
sql <<'SQL'
\pset footer off
\set ECHO queries
BEGIN;
SELECT p2p_preheat.preheat(3, 'library/tools/cli', 'v1') AS first_request,
       p2p_preheat.preheat(3, 'library/tools/cli', 'v1') AS same_request_again;
SELECT sent, polled, succeeded, failed, retried FROM p2p_preheat.preheat_dispatch();
COMMIT;
\set ECHO none
SELECT id AS job, state, dragonfly_job_id, next_attempt_at - sent_at AS next_check_after
  FROM p2p_preheat.job WHERE policy_id = 3;
SQL
echo "   Dragonfly updates a job about 31 s after creating it, so that is when it is checked next."

header "6. Dispatch by the worker: a push"
echo "   Tags v2.0 and dev are pushed to library/app. Only v2.0 matches the on-push policy (tag v*)."
echo "   The worker is woken at COMMIT."
sql <<'SQL'
\set ECHO queries
INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 4, 'v2.0'), (1, 4, 'dev');
SQL
wait_for "the worker sent it" \
	"SELECT bool_and(state <> 'queued'), 'push job: ' || string_agg(state::text, ',') FROM p2p_preheat.job WHERE policy_id = 1"
sql <<'SQL'
\pset footer off
SELECT id AS job, policy_id, state, substring(url FROM '/v2/(.*)$') AS image, attrs FROM p2p_preheat.job WHERE policy_id = 1;
SQL

header "7. A manual run: policy \"tools\""
echo "   It matches tools/cli:v1, whose job is already open (reused, not sent twice), and"
echo "   tools/old-jobfail:v0, an image Dragonfly cannot pull. The stand-in fails every URL that"
echo "   contains \"jobfail\", the way Dragonfly reports a manifest it cannot fetch."
sql <<'SQL'
\pset footer off
\set ECHO queries
SELECT p2p_preheat.run_policy(3) AS execution \gset
\echo execution :execution
\set ECHO none
SELECT execution_id AS execution, job_id AS job, substring(url FROM '/v2/(.*)$') AS image, state
  FROM p2p_preheat.execution_detail WHERE execution_id = :execution ORDER BY job_id;
SQL

header "8. A scheduled run: pg_cron runs policy \"nightly\""
wait_for "pg_cron ran it" \
	"SELECT EXISTS (SELECT FROM p2p_preheat.execution WHERE trigger = 'scheduled'),
	        format('waiting for pg_cron''s next run at %s (in %s s)', to_char(date_trunc('minute', clock_timestamp()) + interval '1 minute', 'HH24:MI:SS'),
	               ceil(extract(epoch FROM date_trunc('minute', clock_timestamp()) + interval '1 minute' - clock_timestamp())))"
sql <<'SQL'
\pset footer off
SELECT status, return_message, start_time::time(0) AS started FROM cron.job_run_details ORDER BY runid LIMIT 1;
\echo Back to 02:00 every night, as Harbor would save it; the cron job follows:
\set ECHO queries
UPDATE p2p_preheat_policy SET trigger = '{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}' WHERE id = 2;
\set ECHO none
SELECT jobname, schedule FROM cron.job;
SQL

header "9. Waiting for Dragonfly: polling until every job is final"
sql <<'SQL'
\pset footer off
\echo Every execution is Running until Dragonfly is asked again, at next_check_at:
SELECT id, trigger, status, jobs, running, next_check_at::time(0) FROM p2p_preheat.execution_status ORDER BY id;
SQL
wait_for "every job is final" \
	"SELECT count(*) FILTER (WHERE open) = 0,
	        format('%s of %s jobs open; next check in %s s (execution_status.next_check_at)',
	               count(*) FILTER (WHERE open), count(*),
	               coalesce(ceil(extract(epoch FROM min(next_attempt_at) FILTER (WHERE open) - clock_timestamp()))::text, '-'))
	   FROM p2p_preheat.job"

header "10. Summary"
sql <<'SQL'
\pset footer off
\pset border 2
\pset title 'p2p_preheat demo'
SELECT now()::timestamp(0) AS at, current_setting('server_version') AS postgresql,
       (SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat') AS p2p_preheat,
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_cron') AS pg_cron;
\pset title 'Executions'
SELECT e.id, p.name AS policy, e.trigger, e.status, e.jobs, e.succeeded, e.failed,
       round(extract(epoch FROM e.ended_at - e.started_at)::numeric) AS seconds
  FROM p2p_preheat.execution_status e JOIN p2p_preheat_policy p ON p.id = e.policy_id ORDER BY e.id;
\pset title 'Jobs'
SELECT j.id, substring(j.url FROM '/v2/(.*)$') AS image, j.attrs->>'scope' AS scope, j.state,
       j.dragonfly_job_id AS dragonfly_job, j.attempts, j.polls,
       round(extract(epoch FROM j.finished_at - j.created_at)::numeric) AS seconds
  FROM p2p_preheat.job j ORDER BY j.id;
\pset title 'Failures (execution_detail)'
SELECT d.execution_id AS execution, d.job_id AS job, substring(d.url FROM '/v2/(.*)$') AS image, d.last_error AS reason
  FROM p2p_preheat.execution_detail d WHERE d.state = 'failed' ORDER BY d.job_id;
\pset title 'Per instance (p2p_preheat.status)'
SELECT instance_id, queued, running, succeeded, failed, last_error FROM p2p_preheat.status;
\pset title 'Background worker (worker_status())'
SELECT state, sent, polled, succeeded, failed, retried, wakeups FROM p2p_preheat.worker_status();
SQL
echo
echo "The throwaway cluster and the stand-in are removed on exit."
