# What each answer of Dragonfly means, decided by what retrying can change:
# the registry's refusal of a manifest (a 500 from Dragonfly) fails the job
# at once with Dragonfly's words; Dragonfly's own trouble, 429 and the
# network are retried.  A POST whose answer never came is looked for in
# Dragonfly's job list before it is sent again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::RealBin/../lib";
use P2PTest;

my $port = $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
my $run = sprintf('a%d', time() * 1000);

# preheat_dispatch() alone, in the test's own sessions: no worker
my $node = harbor_node('answers', preload => 0);
harbor_with_instance($node, 'proposal');

sub url { return "https://harbor.example.com/v2/library/$run-$_[0]/manifests/1.0"; }

sub queue
{
	my ($marker, $attrs) = @_;
	return $node->safe_psql('postgres',
		"SELECT p2p_preheat.preheat_url(1, '" . url($marker) . "'" . ($attrs ? ", '$attrs'" : '') . ')');
}

sub job
{
	return $node->safe_psql('postgres',
		"SELECT state || '|' || attempts || '|' || coalesce(last_http_status::text, '') || '|' || coalesce(last_error, '') FROM p2p_preheat.job WHERE id = $_[0]");
}

my %id;
$id{$_} = queue($_) for qw(registry404 registry401 registry500 noplatform fail500 ratelimit);
$id{platform} = queue('noplatform-arm', '{"platform": "linux/arm64"}');
$node->safe_psql('postgres', 'SELECT p2p_preheat.preheat_dispatch()');

is(job($id{registry404}),
	"failed|1|500|the registry refused the manifest (Dragonfly answered HTTP 500: unknown: artifact library/$run-registry404:1.0 not found)",
	'registry 404 through Dragonfly: failed at once, in Dragonfly\'s words');
is(job($id{registry401}),
	"failed|1|500|the registry refused the manifest (Dragonfly answered HTTP 500: unauthorized: unauthorized to access repository: library/$run-registry401, action: pull: unauthorized to access repository: library/$run-registry401, action: pull)",
	'registry 401 through Dragonfly: failed at once');
is(job($id{noplatform}),
	'failed|1|500|the registry refused the manifest (Dragonfly answered HTTP 500: no matching manifest for platform linux/amd64)',
	'no manifest for the platform: failed at once');
is(job($id{platform}),
	'failed|1|500|the registry refused the manifest (Dragonfly answered HTTP 500: no matching manifest for platform linux/arm64)',
	'no manifest for the platform asked for: failed at once');
like(job($id{registry500}), qr/^queued\|1\|500\|Dragonfly answered HTTP 500: received unexpected HTTP status: 500 Internal Server Error$/,
	'the registry\'s own 500: retried');
like(job($id{fail500}), qr/^queued\|1\|500\|Dragonfly answered HTTP 500: failed to get manifest: unexpected status 500$/,
	'a 500 of Dragonfly: retried');
like(job($id{ratelimit}), qr/^queued\|1\|429\|Dragonfly answered HTTP 429: "rate limit exceeded"$/,
	'a 429: retried');
is($node->safe_psql('postgres', "SELECT count(*) FROM p2p_preheat.job WHERE maybe_sent"), '0',
	'no answer above leaves a doubt whether the job was created');

# ---- a POST that timed out: looked for first, sent again if not found ----
$node->safe_psql('postgres', "SELECT p2p_preheat.cancel(id) FROM p2p_preheat.job WHERE open");
my $slow = queue('slow1500ms-timeout');
# the setting under test: a timeout shorter than the stand-in's 1.5 s pause
$node->safe_psql('postgres', "SET p2p_preheat.request_timeout = '300ms'; SELECT p2p_preheat.preheat_dispatch()");
like(job($slow), qr/^queued\|1\|\|could not reach Dragonfly: .*timed out/i, 'the POST timed out');
is($node->safe_psql('postgres', "SELECT maybe_sent FROM p2p_preheat.job WHERE id = $slow"), 't',
	'and is marked as possibly created');
$node->safe_psql('postgres', "UPDATE p2p_preheat.job SET next_attempt_at = now() WHERE id = $slow");
$node->safe_psql('postgres', 'SELECT p2p_preheat.preheat_dispatch()');
# the stand-in drops a request whose client left during its pause: no job there
like(job($slow), qr/^running\|2\|200\|$/, 'not in Dragonfly\'s list: sent again');
like(slurp_file($node->logfile),
	qr/looked in Dragonfly \(instance 1\) for 1 jobs whose POST may have arrived unanswered: 0 found and followed, 0 to wait, 1 to send again/,
	'the lookup is logged');

# ---- the worker died after Dragonfly took the POST: found, not sent again ---
my $lost = queue('lost-answer');
my $body = qq({"type":"preheat","args":{"type":"image","url":") . url('lost-answer') . q("}});
my $answer = `curl -s -X POST -H 'Authorization: Bearer t-secret-1' -H 'Content-Type: application/json' --data '$body' http://127.0.0.1:$port/oapi/v1/jobs`;
my ($df_id) = $answer =~ /"id": ?(\d+)/;
ok($df_id, "the POST that reached Dragonfly: job $df_id");
# as a worker that died while sending it leaves it: claimed by a generation that is gone
$node->safe_psql('postgres',
	"UPDATE p2p_preheat.job SET state = 'sending', claimed_by = 42, lease_until = now() + interval '5 min' WHERE id = $lost");
$node->safe_psql('postgres', 'SELECT p2p_preheat.preheat_dispatch()');
is(job($lost), 'running|0||', 'preheat_dispatch() takes it up at once, though the lease runs 5 more minutes');
is($node->safe_psql('postgres', "SELECT dragonfly_job_id FROM p2p_preheat.job WHERE id = $lost"), $df_id,
	'and follows the job Dragonfly already has');
is(posts_received("$run-lost-answer"), 1, 'no second POST');

# ---- a POST that never reached Dragonfly: no lookup ------------------------
$node->safe_psql('postgres', "UPDATE p2p_preheat_instance SET endpoint = 'http://127.0.0.1:1' WHERE id = 1");
my $refused = queue('refused');
$node->safe_psql('postgres', 'SELECT p2p_preheat.preheat_dispatch()');
like(job($refused), qr/^queued\|1\|\|could not reach Dragonfly/, 'connection refused: retried');
is($node->safe_psql('postgres', "SELECT maybe_sent FROM p2p_preheat.job WHERE id = $refused"), 'f',
	'and known not to have arrived');

# ---- the job list cannot be read: the job waits, it is not sent blind ------
$node->safe_psql('postgres', "UPDATE p2p_preheat.job SET (maybe_sent, next_attempt_at) = (true, now()) WHERE id = $refused");
$node->safe_psql('postgres', 'SELECT p2p_preheat.preheat_dispatch()');
like(job($refused), qr/^queued\|2\|\|could not look in Dragonfly for an earlier POST of this job: could not reach Dragonfly/,
	'a lookup that fails keeps the job waiting');
$node->safe_psql('postgres', "UPDATE p2p_preheat_instance SET endpoint = 'http://127.0.0.1:$port' WHERE id = 1");
$node->safe_psql('postgres', "UPDATE p2p_preheat.job SET next_attempt_at = now() WHERE id = $refused");
$node->safe_psql('postgres', 'SELECT p2p_preheat.preheat_dispatch()');
like(job($refused), qr/^running\|3\|200\|$/, 'then, not found in Dragonfly, it is sent');
is(posts_received("$run-refused"), 1, 'once');

$node->stop;
done_testing();
