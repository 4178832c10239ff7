# Pacing against Dragonfly's per-cluster job rate limiter (the stand-in's
# --cluster ID:RATE): the background worker, with the settings a user ships
# with, learns each cluster's job_rate_limit from GET /oapi/v1/clusters/<id>,
# creates every job with few 429s and none counted as an attempt, follows a
# limit changed while jobs are in flight, adapts to 429s when its token may
# not read clusters (to a pace near the limit, also after another client's
# burst), and fails a job for a cluster that does not exist within seconds,
# naming the cluster.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use HTTP::Tiny;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use P2PTest;

# a stand-in of our own: four clusters with their limits, a token that may
# read clusters and one that may only create jobs
my ($port, $log) = own_standin('--token', 't-full', '--token', 't-jobs:job',
	'--cluster', '1:20', '--cluster', '2:20', '--cluster', '3:10', '--cluster', '4:20');

# POSTs of the jobs whose URL contains $marker: (accepted, refused with 429)
sub posts
{
	my ($marker) = @_;
	my ($ok, $limited) = (0, 0);
	open(my $fh, '<', $log) or return (0, 0);
	while (my $line = <$fh>)
	{
		next unless index($line, $marker) >= 0;
		my $l = decode_json($line);
		next unless $l->{route} eq 'POST /oapi/v1/jobs';
		$ok++ if $l->{status} == 200;
		$limited++ if $l->{status} == 429;
	}
	close $fh;
	return ($ok, $limited);
}

my $node = harbor_node('pacing');
harbor_with_instance($node, '2.13', port => $port, token => 't-full');
$node->safe_psql('postgres', qq{
	INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, auth_data, enabled, insecure)
	VALUES (3, 'jobs-only', 'dragonfly', 'http://127.0.0.1:$port', 'OAUTH', '{"token": "t-jobs"}', true, false);
});
$node->poll_query_until('postgres', "SELECT state = 'idle' FROM p2p_preheat.worker_status()")
  or die "worker did not start";

sub queue
{
	my ($instance, $marker, $n, $clusters) = @_;
	$node->safe_psql('postgres', qq{
		SELECT count(p2p_preheat.preheat_url($instance,
				'https://harbor.example.com/v2/library/$marker/manifests/' || i,
				'{"cluster_ids": $clusters}'))
		  FROM generate_series(1, $n) i});
}

sub jobs_where
{
	my ($marker, $cond) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM p2p_preheat.job WHERE url LIKE '%/$marker/%' AND $cond");
}

# Waits until the n jobs whose URL holds /$marker/ are all created in
# Dragonfly, then asserts what every paced run must give: each created
# once, 429s at most a tenth of the POSTs, none failed or counted twice.
sub created_once
{
	my ($marker, $n, $what) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = $n FROM p2p_preheat.job WHERE url LIKE '%/$marker/%' AND state = 'running'")
	  or die "$what: jobs not all created";
	my ($ok, $limited) = posts("/$marker/");
	is($ok, $n, "$what: every job created once");
	ok($limited <= 0.1 * ($ok + $limited),
		"$what: 429s within limits ($limited of " . ($ok + $limited) . ' POSTs)');
	is(jobs_where($marker, "state = 'failed' OR attempts > 1"), '0',
		"$what: no job failed or was counted a second attempt");
	return;
}

sub pace_of
{
	my ($instance, $cluster) = @_;
	my $pace = decode_json($node->safe_psql('postgres',
			'SELECT pace FROM p2p_preheat.worker_status()'));
	my ($e) = grep { $_->{instance} == $instance && $_->{cluster} == $cluster } @$pace;
	return $e // {};
}

# ---- a rate learned from the clusters route; 429s within limits ---------
queue(1, 'learned', 100, '[1, 2]');
created_once('learned', 100, 'two limited clusters, rate learned');
for my $c (1, 2)
{
	my $p = pace_of(1, $c);
	is($p->{source}, 'clusters route', "cluster $c: pace learned from the clusters route");
	is($p->{job_rate_limit}, 20, "cluster $c: its job_rate_limit");
	ok($p->{pace} > 0 && $p->{pace} <= 20, "cluster $c: paced at no more than its limit ($p->{pace})");
}
like($node->safe_psql('postgres', 'SELECT pace FROM p2p_preheat.status WHERE instance_id = 1'),
	qr/"job_rate_limit": 20/, 'the status view shows the pace per cluster');

# ---- the limit changed (PATCH) while jobs are in flight ------------------
queue(1, 'patched', 150, '[4]');
$node->poll_query_until('postgres',
	"SELECT count(*) >= 40 FROM p2p_preheat.job WHERE url LIKE '%/patched/%' AND state = 'running'")
  or die 'jobs for cluster 4 not created';
like($node->safe_psql('postgres', 'SELECT backlog FROM p2p_preheat.status WHERE instance_id = 1'),
	qr/"4": \d+/, 'the status view shows the backlog of cluster 4');
my $res = HTTP::Tiny->new->request('PATCH', "http://127.0.0.1:$port/oapi/v1/clusters/4",
	{
		headers => { 'Authorization' => 'Bearer t-full', 'Content-Type' => 'application/json' },
		content => '{"scheduler_cluster_config": {"job_rate_limit": 10}}'
	});
is($res->{status}, 200, 'cluster 4 limited to 10 jobs/s while jobs are in flight');
created_once('patched', 150, 'across the change of limit');
is(pace_of(1, 4)->{job_rate_limit}, 10, 'the new limit learned again from the clusters route');

# ---- an unknown cluster, told by the clusters route ----------------------
my $t0 = time();
queue(1, 'unknown-route', 1, '[1, 99]');
$node->poll_query_until('postgres',
	"SELECT state = 'failed' FROM p2p_preheat.job WHERE url LIKE '%/unknown-route/%'")
  or die 'job for an unknown cluster did not fail';
my $took = time() - $t0;
ok($took < 10, "job for an unknown cluster failed within seconds ($took s)");
like($node->safe_psql('postgres', "SELECT last_error FROM p2p_preheat.job WHERE url LIKE '%/unknown-route/%'"),
	qr/scheduler cluster 99 does not exist .*404/, 'its error names the cluster');

# ---- no cluster scope: adapt to 429s, and tell an unknown cluster --------
$t0 = time();
queue(3, 'adaptive', 60, '[3]');
queue(3, 'unknown-429', 1, '[98]');
$node->poll_query_until('postgres',
	"SELECT state = 'failed' FROM p2p_preheat.job WHERE url LIKE '%/unknown-429/%'")
  or die 'job for an unknown cluster did not fail without the clusters route';
$took = time() - $t0;
ok($took < 30, "without the clusters route, job for an unknown cluster failed within seconds ($took s)");
like($node->safe_psql('postgres', "SELECT last_error FROM p2p_preheat.job WHERE url LIKE '%/unknown-429/%'"),
	qr/scheduler cluster 98 with HTTP 429/, 'its error names the cluster');
created_once('adaptive', 60, 'without the clusters route');
is(pace_of(3, 3)->{source}, 'adapting to 429s', 'the pace of cluster 3 adapts to 429s');

# ---- adapting: near the limit, also after another client used it up ------
# The limiter lets through no more than its rate plus one second's burst,
# so the limit measured from 429s is not above it (but for the clock's
# jitter); a pace far under it would mean the 429s of another client's
# burst held ours back for good.
queue(3, 'shared', 400, '[2]');
$node->poll_query_until('postgres',
	"SELECT count(*) >= 60 FROM p2p_preheat.job WHERE url LIKE '%/shared/%' AND state = 'running'")
  or die 'jobs for cluster 2 not created';
my $other = HTTP::Tiny->new;
my $burst = 0;
for my $i (1 .. 20)
{
	my $r = $other->request('POST', "http://127.0.0.1:$port/oapi/v1/jobs",
		{
			headers => { 'Authorization' => 'Bearer t-full', 'Content-Type' => 'application/json' },
			content => encode_json({
				type => 'preheat', scheduler_cluster_ids => [2],
				args => { type => 'image', url => "https://harbor.example.com/v2/library/other/manifests/$i" } })
		});
	$burst++ if $r->{status} == 200;
}
ok($burst > 0, "another client created $burst jobs on cluster 2 meanwhile");
created_once('shared', 400, 'sharing the limit with another client');
my $p = pace_of(3, 2);
is($p->{source}, 'adapting to 429s', 'the pace of cluster 2 adapts to 429s');
ok(defined $p->{job_rate_limit} && $p->{job_rate_limit} >= 0.5 * 20 && $p->{job_rate_limit} <= 1.25 * 20,
	'the limit measured from 429s is near cluster 2\'s 20 jobs/s (' . ($p->{job_rate_limit} // 'null') . ')');
ok($p->{pace} >= 0.5 * 20, "the pace is not held far under it after the burst ($p->{pace})");

$node->stop;
done_testing();
