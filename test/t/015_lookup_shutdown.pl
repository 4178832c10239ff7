# A worker asked to stop while it reads Dragonfly's job list (looking for a
# POST that may have arrived unanswered) stops within seconds, not after the
# list's request timeout, and the job it was looking for stays queued, still
# marked for a lookup, for the next worker.  Shipped settings throughout.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::RealBin/../lib";
use P2PTest;

# Dragonfly's job list takes a minute to answer here
my ($port, $log) = own_standin('--token', 't-secret-1', '--list-delay', '60');
my $node = harbor_node('lookup_shutdown');
harbor_with_instance($node, 'proposal', port => $port);
$node->poll_query_until('postgres', "SELECT state = 'idle' FROM p2p_preheat.worker_status()")
  or die 'worker did not start';

# a job whose earlier POST may have reached Dragonfly: the worker looks first
my $id = $node->safe_psql('postgres', q{
	BEGIN;
	SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/app/manifests/1');
	UPDATE p2p_preheat.job SET maybe_sent = true WHERE id = currval('p2p_preheat.job_id_seq') RETURNING id;
	COMMIT;});
($id) = $id =~ /(\d+)\s*$/;
$node->safe_psql('postgres', 'SELECT p2p_preheat._wake_worker()');
$node->poll_query_until('postgres',
	"SELECT state = 'sending' AND claimed_by IS NOT NULL FROM p2p_preheat.job WHERE id = $id")
  or die 'worker did not take the job';
sleep(1);

my $t0 = time();
$node->stop('fast');
my $took = time() - $t0;
ok($took < 10, sprintf('fast shutdown during a lookup took %.1f s (the list answers after 60 s, '
	  . 'the request timeout is 30 s)', $took));

$node->start;
is( $node->safe_psql('postgres',
		"SELECT maybe_sent AND dragonfly_job_id IS NULL AND state IN ('queued', 'sending') FROM p2p_preheat.job WHERE id = $id"),
	't', 'after the restart the job is still to be looked up');
open(my $fh, '<', $log) or die "no stand-in log: $!";
my $posts = grep { index($_, '"POST /oapi/v1/jobs"') >= 0 } <$fh>;
close $fh;
is($posts, 0, 'and it was never sent again while its first POST may have arrived');
$node->stop('immediate');
done_testing();
