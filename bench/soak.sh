#!/usr/bin/env bash
# A long soak of the background worker against a misbehaving Dragonfly: the
# stand-in fails 5% of POSTs with a 500, drops 2% of requests and slows 1%
# (--chaos 500=5,drop=2,slow=1), and is restarted every 2 minutes, keeping its
# jobs in a state file as Dragonfly's manager keeps them in its database (a
# restart loses only the requests in flight); pushes to Harbor, scheduled
# policy runs and purges go on throughout.  Then a drain.
# Reports jobs stuck (open and overdue), the worker's private memory
# (RssAnon) over time, server log lines per minute, and the share of each
# final state.
# Usage: bench/soak.sh [minutes]   (at least 10 for a real soak)
set -euo pipefail
source "$(dirname "$0")/../test/lib/common.sh"
minutes=${1:-10}

ensure_deps
build_and_install
build_standin
dir=$(make_workdir)
trap 'stop_standin; stop_cluster "$dir"; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
standin() {
	stop_standin
	"$STANDIN" --host 127.0.0.1 --port "$port" --log-file "$dir/standin.log" \
		--state-file "$dir/standin.state" --token soak-token --chaos 500=5,drop=2,slow=1 \
		>>"$dir/standin.out" 2>&1 &
	STANDIN_PID=$!
	for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthy" && return 0; sleep 0.05; done
	echo "stand-in did not start" >&2
	return 1
}
standin
start_cluster "$dir" "shared_preload_libraries = 'p2p_preheat'" "p2p_preheat.database = 'postgres'" \
	"p2p_preheat.registry_url = 'https://harbor.example.com'" "p2p_preheat.poll_schedule = '5'" \
	"p2p_preheat.retention = '1min'" "log_line_prefix = '%m [%p] %a '"
cp "$REPO/test/fixtures/harbor.sql" "$dir/"
cd "$dir"
psql -qX -v ON_ERROR_STOP=1 -d postgres -v endpoint="http://127.0.0.1:$port" <<'SQL' >/dev/null
\i harbor.sql
SELECT harbor_fixture.create_tables('proposal');
SELECT harbor_fixture.add_instances(:'endpoint');
UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "soak-token"}' WHERE id = 1;
CREATE EXTENSION p2p_preheat;
INSERT INTO repository (repository_id, name, project_id) VALUES (100, 'library/soak', 1);
INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters)
VALUES (100, 'on-push', 1, 1, true, '{"type":"event_based"}',
		'[{"type":"repository","value":"soak"},{"type":"tag","value":"**"}]'),
	   (101, 'scheduled', 1, 1, true, '{"type":"manual"}',
		'[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]');
-- every job that ends, kept here because purges delete the jobs themselves
CREATE TABLE soak_final (state text, error text);
CREATE FUNCTION public.soak_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.soak_final VALUES (NEW.state, NEW.last_error); RETURN NULL; END $$;
CREATE TRIGGER soak_final AFTER UPDATE OF state ON p2p_preheat.job
	FOR EACH ROW WHEN (OLD.open AND NOT NEW.open) EXECUTE FUNCTION public.soak_final();
SQL
pid=$(psql -qXAt -d postgres -c "SELECT pid FROM p2p_preheat.worker_status()")
rss() { awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0; }
logfile="$dir/server.log"

echo "minute  RssAnon_kB  server_log_lines  jobs_by_state"
t_end=$(($(date +%s) + minutes * 60))
next_restart=$(($(date +%s) + 120))
i=0
lines0=$(wc -l <"$logfile")
minute_end=$(($(date +%s) + 60))
m=0
while [ "$(date +%s)" -lt "$t_end" ]; do
	i=$((i + 1))
	# a push: a new artifact and tag every second
	psql -qX -d postgres -c "INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
		VALUES ($((1000 + i)), 1, 100, 'library/soak', 'sha256:s$i', 'IMAGE', 'm', 'm');
		INSERT INTO tag (repository_id, artifact_id, name) VALUES (100, $((1000 + i)), 't$i');" >/dev/null
	# a scheduled run every 30 s, a purge every 20 s
	[ $((i % 30)) -eq 0 ] && psql -qX -d postgres -c "SELECT p2p_preheat.run_policy(101, 'scheduled')" >/dev/null
	[ $((i % 20)) -eq 0 ] && psql -qX -d postgres -c "SELECT p2p_preheat.purge()" >/dev/null
	if [ "$(date +%s)" -ge "$next_restart" ]; then
		standin
		next_restart=$(($(date +%s) + 120))
	fi
	if [ "$(date +%s)" -ge "$minute_end" ]; then
		m=$((m + 1))
		lines1=$(wc -l <"$logfile")
		printf '%6d  %10s  %16d  %s\n' "$m" "$(rss)" $((lines1 - lines0)) \
			"$(psql -qXAt -d postgres -c "SELECT string_agg(state || '=' || n, ' ' ORDER BY state) FROM (SELECT state, count(*) n FROM p2p_preheat.job GROUP BY 1) s")"
		lines0=$lines1
		minute_end=$(($(date +%s) + 60))
	fi
	sleep 1
done

# drain: whatever is still open must end within the retry and poll budget
echo "drain (up to 10 minutes)..."
for _ in $(seq 1 600); do
	[ "$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE open AND next_attempt_at < now() - interval '2 min'")" = 0 ] &&
		[ "$(psql -qXAt -d postgres -c "SELECT count(*) FROM p2p_preheat.job WHERE state IN ('queued', 'sending')")" = 0 ] && break
	sleep 1
done
psql -qXAt -d postgres -c "SELECT 'stuck jobs (open, overdue by more than 2 minutes): ' || count(*) FROM p2p_preheat.job
	WHERE open AND next_attempt_at < now() - interval '2 min'"
psql -qXAt -d postgres -c "SELECT 'final states of ' || max(tot) || ' jobs: ' || string_agg(state || ' ' || round(100.0 * n / tot, 1) || '%', ', ' ORDER BY state)
	FROM (SELECT state, count(*) n, sum(count(*)) OVER () tot FROM soak_final GROUP BY 1) s"
psql -qXAt -d postgres -c "SELECT '  failed: ' || left(error, 90) || ' x' || count(*) FROM soak_final
	WHERE state = 'failed' GROUP BY left(error, 90) ORDER BY count(*) DESC LIMIT 5"
echo "worker RssAnon at the end: $(rss) kB; worker pid $pid $( [ -d /proc/$pid ] && echo 'still the same process' || echo 'RESTARTED during the soak')"
