# The worker's HTTP process ("p2p_preheat http"), with shipped settings:
# it runs beside the worker, holds no database, and carries the worker's
# transfers.  When it ends in the middle of a run, the worker carries on in
# its own process: nothing is lost, a POST that may have arrived is looked
# up in Dragonfly before it is sent again, and the log says so once.  A
# server without a free background worker slot for it gets one log line
# with the fix, and jobs are sent all the same.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::RealBin/../lib";
use P2PTest;

my $run = sprintf('h%d', time() * 1000);

my $node = harbor_node('httpproc');
harbor_with_instance($node, 'proposal');
$node->poll_query_until('postgres', "SELECT state = 'idle' FROM p2p_preheat.worker_status()")
  or die 'worker did not start';

is( $node->safe_psql('postgres',
		"SELECT count(*), bool_and(datname IS NULL) FROM pg_stat_activity WHERE backend_type = 'p2p_preheat http'"),
	'1|t', 'the worker has an HTTP process, connected to no database');

sub wait_accepted
{
	my ($marker, $n) = @_;
	my $t0 = time();
	while (time() - $t0 < 90)
	{
		my $got = $node->safe_psql('postgres',
			"SELECT count(*) FROM p2p_preheat.job WHERE url LIKE '%$marker/%' "
			  . "AND state IN ('running', 'succeeded') AND dragonfly_job_id IS NOT NULL");
		return 1 if $got == $n;
		sleep(0.2);
	}
	return 0;
}

# ---- transfers go through it ------------------------------------------
my $hpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'p2p_preheat http'");
# its CPU time in clock ticks (user + system); idle, it uses none
sub cpu_ticks
{
	my @f = split ' ', (split /\) /, slurp_file("/proc/$_[0]/stat"))[1];
	return $f[11] + $f[12];
}
my $hcpu0 = cpu_ticks($hpid);
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/$run-a/manifests/%s', g))) FROM generate_series(1, 2000) g"
);
ok(wait_accepted("$run-a", 2000), '2,000 jobs accepted by Dragonfly');
is(posts_for("$run-a/"), 2000, 'each POSTed once');
my $hcpu = cpu_ticks($hpid) - $hcpu0;
ok($hcpu > 0, "the HTTP process did the work (its CPU time over the 2,000 jobs: $hcpu ticks)");

# ---- requests waiting for a connection ------------------------------------
# The HTTP process holds more requests than max_in_flight; those beyond it
# wait for a connection, and a request's timeout starts only when it has
# one.  One connection, a 1 s timeout and answers that take 600 ms: the
# fourth waits 1.8 s, and is not cut off for it.  (These two settings are
# the case under test: each is reset after it.)
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET p2p_preheat.max_in_flight = 1;
	ALTER SYSTEM SET p2p_preheat.request_timeout = 1000;
	SELECT pg_reload_conf();
});
sleep(0.5);
my $t0 = time();
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/$run-slow600ms/manifests/%s', g))) FROM generate_series(1, 4) g"
);
ok(wait_accepted("$run-slow600ms", 4), 'four slow jobs on one connection: all accepted');
my $took = time() - $t0;
ok($took > 2.3, sprintf('one at a time (%.2f s)', $took));
is(posts_received("$run-slow600ms/"), 4, 'each POSTed once: none timed out while it waited for the connection');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM p2p_preheat.job WHERE url LIKE '%$run-slow600ms/%' AND (attempts <> 1 OR last_error IS NOT NULL)"),
	'0', 'no job had a failed attempt');
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET p2p_preheat.max_in_flight;
	ALTER SYSTEM RESET p2p_preheat.request_timeout;
	SELECT pg_reload_conf();
});

# ---- it ends in the middle of a run --------------------------------------
my $wpid = $node->safe_psql('postgres', 'SELECT pid FROM p2p_preheat.worker_status()');
my $log_offset = -s $node->logfile;
# answers that take 300 ms: transfers are in the HTTP process when it ends
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/$run-slow300ms/manifests/%s', g))) FROM generate_series(1, 600) g"
);
$node->poll_query_until('postgres',
	"SELECT count(*) > 50 FROM p2p_preheat.job WHERE url LIKE '%$run-slow300ms/%' AND state = 'running'")
  or die 'jobs not moving';
kill 'TERM', $hpid;
ok(wait_accepted("$run-slow300ms", 600), 'HTTP process ended mid-run: all 600 jobs accepted by Dragonfly');
my $dups = posts_for("$run-slow300ms/") - 600;
diag("HTTP process ended mid-run: $dups duplicate POSTs");
ok($dups >= 0 && $dups <= 64, "$dups duplicate POSTs (at most the requests on the wire)");
is($node->safe_psql('postgres', 'SELECT pid FROM p2p_preheat.worker_status()'),
	$wpid, 'the worker carried on (not restarted)');
my $log = substr(slurp_file($node->logfile), $log_offset);
my @ended = $log =~ /HTTP process ended; the worker sends from its own process until it restarts/g;
is(scalar @ended, 1, 'the log says so once');
like($log, qr/looked in Dragonfly \(instance 1\) for \d+ jobs whose POST may have arrived/,
	'the POSTs it had in flight were looked up in Dragonfly first');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM p2p_preheat.job WHERE url LIKE '%$run-slow300ms/%' AND (state IN ('queued', 'sending') OR maybe_sent OR state = 'failed')"),
	'0', 'no job left behind, none failed');

# the worker sends from its own process until it restarts
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/$run-b/manifests/%s', g))) FROM generate_series(1, 200) g"
);
ok(wait_accepted("$run-b", 200), 'later jobs are sent by the worker itself');
is(posts_for("$run-b/"), 200, 'each POSTed once');

# ---- no free background worker slot ----------------------------------------
# The logical replication launcher and the worker take the two slots.
$node->append_conf('postgresql.conf', "max_worker_processes = 2\n");
$node->restart;
$node->poll_query_until('postgres', "SELECT state = 'idle' FROM p2p_preheat.worker_status()")
  or die 'worker did not start';
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'p2p_preheat http'"),
	'0', 'no slot: no HTTP process');
$log = slurp_file($node->logfile);
my @noslot = $log =~ /no background worker slot is free for its HTTP process/g;
is(scalar @noslot, 1, 'one log line says so');
like($log, qr/HINT:  Raise max_worker_processes by one/, 'with the fix');
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/$run-c/manifests/%s', g))) FROM generate_series(1, 500) g"
);
ok(wait_accepted("$run-c", 500), 'jobs are sent all the same');
is(posts_for("$run-c/"), 500, 'each POSTed once');

$node->stop;
done_testing();
