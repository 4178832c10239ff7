# Recovery that does not wait for a lease: with the settings the README
# ships (lease 300 s), kill -9 of the worker in the middle of 3,000 jobs
# leaves nothing stranded.  The jobs the dead worker had claimed go back at
# once, and those whose POST may have reached Dragonfly are looked up in
# Dragonfly's job list before anything is sent again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::RealBin/../lib";
use P2PTest;

my $run = sprintf('r%d', time() * 1000);

my $node = harbor_node('recovery', conf => q{
restart_after_crash = on
});
harbor_with_instance($node, 'proposal');
is($node->safe_psql('postgres', 'SHOW p2p_preheat.lease'), '5min', 'the shipped lease');
$node->poll_query_until('postgres', "SELECT state = 'idle' FROM p2p_preheat.worker_status()")
  or die 'worker did not start';

# Answers that take 100 ms keep the run going for seconds (3,000 jobs over
# 64 connections), so the kill lands while the worker is sending: at full
# speed the run can end before the test has read the worker's pid.
my $url = "https://harbor.example.com/v2/library/$run-slow100ms-kill/manifests/%s";
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('$url', g))) FROM generate_series(1, 3000) g");
$node->poll_query_until('postgres',
	"SELECT count(*) > 300 FROM p2p_preheat.job WHERE url LIKE '%$run-slow100ms-kill/%' AND state = 'running'")
  or die 'jobs not moving';
my $pid = $node->safe_psql('postgres', 'SELECT pid FROM p2p_preheat.worker_status()');
kill 'KILL', $pid;
my $t0 = time();
my $ok = 0;
while (time() - $t0 < 60)
{
	my $n = eval {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM p2p_preheat.job WHERE url LIKE '%$run-slow100ms-kill/%' "
			  . "AND state IN ('running', 'succeeded') AND dragonfly_job_id IS NOT NULL");
	} // 0;
	if ($n == 3000) { $ok = 1; last; }
	sleep(0.2);
}
my $took = time() - $t0;
ok($ok && $took < 30, sprintf('kill -9: all 3,000 jobs accepted by Dragonfly %.1f s after the kill (lease 5 min)', $took));
my $sent = posts_for("$run-slow100ms-kill/");
my $dups = $sent - 3000;
diag("kill -9 of 3,000: $dups duplicate POSTs");
ok($dups >= 0 && $dups <= 64, "kill -9: $dups duplicate POSTs (at most the requests in flight)");
like(slurp_file($node->logfile), qr/looked in Dragonfly \(instance 1\) for \d+ jobs whose POST may have arrived/,
	'jobs the dead worker was sending were looked up in Dragonfly first');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM p2p_preheat.job WHERE url LIKE '%$run-slow100ms-kill/%' AND (claimed_by IS NOT NULL AND state = 'sending' OR maybe_sent)"),
	'0', 'no job left claimed by the dead worker');

# ---- preheat_dispatch() never takes what the living worker holds ----------
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/$run-slow1500ms/manifests/%s', g))) FROM generate_series(1, 20) g");
$node->poll_query_until('postgres', "SELECT jobs_in_flight > 0 FROM p2p_preheat.worker_status()")
  or die 'slow jobs not in flight';
my $r = $node->safe_psql('postgres', 'SELECT sent FROM p2p_preheat.preheat_dispatch()');
is($r, '0', 'preheat_dispatch() leaves the live worker\'s claims alone');
$node->poll_query_until('postgres',
	"SELECT count(*) = 20 FROM p2p_preheat.job WHERE url LIKE '%$run-slow1500ms/%' AND state = 'running'")
  or die 'slow jobs not sent';
is(posts_for("$run-slow1500ms/"), 20, 'each sent once');

# ---- a fast stop returns claims; those in flight are looked up ------------
$node->safe_psql('postgres',
	"SELECT count(p2p_preheat.preheat_url(1, format('https://harbor.example.com/v2/library/$run-slow3000ms-stop/manifests/%s', g))) FROM generate_series(1, 10) g");
$node->poll_query_until('postgres', "SELECT jobs_in_flight > 0 FROM p2p_preheat.worker_status()")
  or die 'stop jobs not in flight';
$node->stop('fast');
$node->start;
$node->poll_query_until('postgres',
	"SELECT count(*) = 10 FROM p2p_preheat.job WHERE url LIKE '%$run-slow3000ms-stop/%' AND state = 'running'")
  or die 'stop jobs not sent after restart';
is(posts_for("$run-slow3000ms-stop/"), 10, 'requests cut off by a fast stop: found in Dragonfly, not sent again');

$node->stop;
done_testing();
