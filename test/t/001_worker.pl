# The background worker against the Dragonfly stand-in: woken at COMMIT and
# never on ROLLBACK, SIGHUP, a slow Dragonfly vs fast shutdown and DROP
# EXTENSION, kill -9 and immediate shutdown in the middle of 5,000 jobs, and
# a standby that only dispatches once promoted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::RealBin/../lib";
use P2PTest;

my $run = sprintf('t%d', time() * 1000);    # URLs unique to this run

sub url
{
	my ($what, $i) = @_;
	return "https://harbor.example.com/v2/library/$run-$what/manifests/$i";
}

my $node = harbor_node('primary', init => { allows_streaming => 1 }, conf => q{
restart_after_crash = on
});
harbor_with_instance($node, 'proposal');

# the worker is there, and shows itself
$node->poll_query_until('postgres',
	"SELECT state IN ('idle', 'dispatching') FROM p2p_preheat.worker_status()")
  or die "worker did not start";
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'p2p_preheat dispatcher'"),
	'1', 'worker visible in pg_stat_activity');

# ---- COMMIT wakes it; ROLLBACK never sends -------------------------------
my $t0 = time();
$node->safe_psql('postgres', "BEGIN; SELECT p2p_preheat.preheat_url(1, '" . url('commit', 1) . "'); COMMIT;");
$node->poll_query_until('postgres',
	"SELECT state IN ('running', 'succeeded') FROM p2p_preheat.job WHERE url = '" . url('commit', 1) . "'")
  or die "committed job not sent";
my $latency = time() - $t0;
ok($latency < 1.0, "committed job sent at once ($latency s, safety poll is 30 s)");

$node->safe_psql('postgres', "BEGIN; SELECT p2p_preheat.preheat_url(1, '" . url('rollback', 1) . "'); ROLLBACK;");
sleep(3);    # time for a POST that should not happen
is(posts_for("$run-rollback"), 0, 'rolled-back job never sent');
is(posts_for("$run-commit"), 1, 'committed job sent once');

# ---- a push to Harbor: the tag trigger queues, the worker sends ---------
$node->safe_psql('postgres', qq{
	INSERT INTO repository (repository_id, name, project_id) VALUES (100, 'library/$run-push', 1);
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	VALUES (100, 1, 100, 'library/$run-push', 'sha256:p1', 'IMAGE', 'm', 'm'),
		   (101, 1, 100, 'library/$run-push', 'sha256:p2', 'IMAGE', 'm', 'm');
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters)
	VALUES (100, 'on-push', 1, 1, true, '{"type":"event_based"}',
			'[{"type":"repository","value":"$run-push"},{"type":"tag","value":"v*"}]');
});
$node->safe_psql('postgres',
	"INSERT INTO tag (repository_id, artifact_id, name) VALUES (100, 100, 'v1'), (100, 100, 'dev')");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM p2p_preheat.job WHERE url LIKE '%$run-push%' AND state = 'succeeded'")
  or die 'pushed tag not preheated';
is(posts_for("$run-push/manifests/v1"), 1, 'pushed tag matching the policy sent once');
is(posts_for("$run-push/manifests/dev"), 0, 'pushed tag not matching the policy never sent');
$node->safe_psql('postgres', "UPDATE tag SET artifact_id = 101 WHERE repository_id = 100 AND name = 'v1'");
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM p2p_preheat.job WHERE url LIKE '%$run-push%' AND state = 'succeeded'")
  or die 're-pointed tag not preheated';
is(posts_for("$run-push/manifests/v1"), 2, 're-pointed tag preheated again');

# ---- SIGHUP changes timeouts and concurrency without a restart -----------
$node->safe_psql('postgres', "ALTER SYSTEM SET p2p_preheat.request_timeout = '200ms'; SELECT pg_reload_conf();");
sleep(0.5);
# The stand-in answers after 1 s: cut off at 200 ms, the POST may have
# arrived, so the worker looks for it in Dragonfly's list before sending again.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT p2p_preheat.preheat_url(1, '" . url('slow1000ms-timeout', 1) . "')");
$node->wait_for_log(qr/looked in Dragonfly \(instance 1\) for \d+ jobs whose POST may have arrived unanswered/,
	$log_offset);
pass('request_timeout reloaded on SIGHUP');
$node->safe_psql('postgres', qq{
	ALTER SYSTEM RESET p2p_preheat.request_timeout;
	ALTER SYSTEM SET p2p_preheat.max_in_flight = 1;
	SELECT pg_reload_conf();
	SELECT p2p_preheat.cancel(id) FROM p2p_preheat.job WHERE url LIKE '%timeout%';
});
sleep(0.5);
# four 300 ms requests, one at a time, take over a second
$t0 = time();
$node->safe_psql('postgres',
	"SELECT p2p_preheat.preheat_url(1, format('" . url('slow300ms-serial', '%s') . "', g)) FROM generate_series(1, 4) g");
$node->poll_query_until('postgres',
	"SELECT bool_and(state IN ('running', 'succeeded')) FROM p2p_preheat.job WHERE url LIKE '%slow300ms-serial%'")
  or die "serial jobs not sent";
my $serial = time() - $t0;
$node->safe_psql('postgres', "ALTER SYSTEM SET p2p_preheat.max_in_flight = 8; SELECT pg_reload_conf();");
sleep(0.5);
$t0 = time();
$node->safe_psql('postgres',
	"SELECT p2p_preheat.preheat_url(1, format('" . url('slow300ms-parallel', '%s') . "', g)) FROM generate_series(1, 4) g");
$node->poll_query_until('postgres',
	"SELECT bool_and(state IN ('running', 'succeeded')) FROM p2p_preheat.job WHERE url LIKE '%slow300ms-parallel%'")
  or die "parallel jobs not sent";
my $parallel = time() - $t0;
ok($serial > 1.1 && $parallel < 0.9,
	sprintf('max_in_flight reloaded: 1 -> %.2f s, 8 -> %.2f s', $serial, $parallel));
$node->safe_psql('postgres', "ALTER SYSTEM RESET p2p_preheat.max_in_flight; SELECT pg_reload_conf();");

# ---- a slow Dragonfly delays neither a fast shutdown nor DROP EXTENSION ---
$node->safe_psql('postgres',
	"SELECT p2p_preheat.preheat_url(1, format('" . url('slow8000ms-stop', '%s') . "', g)) FROM generate_series(1, 10) g");
$node->poll_query_until('postgres', "SELECT jobs_in_flight = 10 FROM p2p_preheat.worker_status()")
  or die "slow jobs not in flight";
$t0 = time();
$node->stop('fast');
my $stop = time() - $t0;
ok($stop < 3, sprintf('fast shutdown with slow requests in flight took %.2f s', $stop));
like(slurp_file($node->logfile), qr/returned 10 claimed jobs to the queue/,
	'jobs in flight at shutdown went back to the queue');
$node->start;

$node->poll_query_until('postgres', "SELECT jobs_in_flight = 10 FROM p2p_preheat.worker_status()")
  or die "slow jobs not in flight again";
$t0 = time();
$node->safe_psql('postgres', 'DROP EXTENSION p2p_preheat');
my $drop = time() - $t0;
ok($drop < 3, sprintf('DROP EXTENSION with slow requests in flight took %.2f s', $drop));
sleep(1);
my ($rc, $out, $err) = $node->psql('postgres', "SELECT 1");
is($rc, 0, 'server healthy after DROP EXTENSION under load');
$node->safe_psql('postgres', 'CREATE EXTENSION p2p_preheat');
$node->poll_query_until('postgres',
	"SELECT state IN ('idle', 'dispatching') FROM p2p_preheat.worker_status()")
  or die "worker not idling after the extension came back";
pass('worker idles, not crash-loops, while its tables are gone, and resumes');

# ---- kill -9 in the middle of 5,000 jobs ---------------------------------
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('" . url('crash', '%s') . "', g))) FROM generate_series(1, 5000) g");
$node->poll_query_until('postgres', "SELECT count(*) > 500 FROM p2p_preheat.job WHERE url LIKE '%-crash/%' AND state <> 'queued'")
  or die "crash jobs not moving";
my $pid = $node->safe_psql('postgres', 'SELECT pid FROM p2p_preheat.worker_status()');
kill 'KILL', $pid;
$node->poll_query_until('postgres', 'SELECT 1', '1');    # crash recovery done
$node->poll_query_until('postgres',
	"SELECT count(*) = 5000 FROM p2p_preheat.job WHERE url LIKE '%-crash/%' AND state = 'succeeded'", 't')
  or die "jobs lost after kill -9";
pass('kill -9: all 5,000 jobs succeeded');
my $dups = posts_for("$run-crash/") - 5000;
ok($dups >= 0 && $dups <= 256, "kill -9: $dups duplicate POSTs, bounded by the jobs in flight");

# ---- immediate shutdown in the middle of 5,000 jobs ----------------------
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('" . url('immediate', '%s') . "', g))) FROM generate_series(1, 5000) g");
$node->poll_query_until('postgres', "SELECT count(*) > 500 FROM p2p_preheat.job WHERE url LIKE '%-immediate/%' AND state <> 'queued'")
  or die "immediate jobs not moving";
$node->stop('immediate');
$node->start;
$node->poll_query_until('postgres',
	"SELECT count(*) = 5000 FROM p2p_preheat.job WHERE url LIKE '%-immediate/%' AND state = 'succeeded'", 't')
  or die "jobs lost after immediate shutdown";
pass('immediate shutdown: all 5,000 jobs succeeded');
$dups = posts_for("$run-immediate/") - 5000;
ok($dups >= 0 && $dups <= 256, "immediate shutdown: $dups duplicate POSTs");

# ---- a standby does nothing until promoted -------------------------------
$node->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b1', has_streaming => 1);
$standby->start;
# due in a few seconds: queued on the primary, which stops before then
$node->safe_psql('postgres', qq{
	INSERT INTO p2p_preheat.job (instance_id, url, next_attempt_at)
	SELECT 1, format('} . url('standby', '%s') . qq{', g), clock_timestamp() + interval '4 s'
	  FROM generate_series(1, 20) g;
});
$node->wait_for_catchup($standby);
$node->stop('immediate');
is( $standby->safe_psql('postgres', "SELECT coalesce(pid, 0) FROM p2p_preheat.worker_status()"),
	'0', 'no worker on the standby while in recovery');
sleep(5);
is(posts_for("$run-standby"), 0, 'standby sent nothing while in recovery');
$standby->promote;
$standby->poll_query_until('postgres',
	"SELECT count(*) = 20 FROM p2p_preheat.job WHERE url LIKE '%-standby/%' AND state = 'succeeded'", 't')
  or die "promoted standby did not finish the queue";
pass('promoted standby finished the queue');
is(posts_for("$run-standby"), 20, 'each queued job sent once after promotion');

$standby->stop;
done_testing();
