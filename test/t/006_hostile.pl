# A hostile Dragonfly: a small HTTP server of this test's own on loopback
# that answers with duplicate-key bait, invalid UTF-8, echoes of the request,
# huge bodies, and that poses as a proxy.  What must hold:
#  - the job body has each key once, ours winning;
#  - the robot account goes only with URLs of p2p_preheat.registry_url;
#  - every stored row stays valid text: pg_dump | pg_restore keeps them all;
#  - a dispatch of 60 jobs with 4 MB answers stays within a stated memory bound;
#  - no secret is stored, logged or traced, even when echoed back;
#  - proxy environment variables are never used.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep);

my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $fixtures = $fixture =~ s{/harbor\.sql$}{}r;
my @secrets = ('t-secret-1', 'robot-secret-9', 'reg-token-8', 'k-custom-5');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $reqlog = "$tmp/requests.log";
my $MB4 = 4 * 1024 * 1024 - 4096;    # just under the old 4 MB cap

# ---- the hostile server -----------------------------------------------
my $listen = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 256,
	ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
my $hport = $listen->sockport;

sub respond
{
	my ($c, $status, $body) = @_;
	print $c "HTTP/1.1 $status X\r\nContent-Type: application/json\r\n"
	  . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n" . $body;
}

sub job_json
{
	my ($id, $state, $extra) = @_;
	return qq({"id": $id, "state": "$state", "type": "preheat"$extra});
}

sub serve
{
	my %mode;
	my $next = 100;
	$SIG{PIPE} = 'IGNORE';
	my $json = JSON::PP->new->canonical;
	while (my $c = $listen->accept)
	{
		binmode $c;
		my ($head, $body) = ('', '');
		while (my $line = <$c>)
		{
			$head .= $line;
			last if $line eq "\r\n";
		}
		my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
		read($c, $body, $len) if $len;
		open(my $log, '>>', $reqlog) or die;
		binmode $log;
		print $log "=== REQUEST\n$head$body\n";
		close $log;
		my ($method, $target) = $head =~ /^(\S+) (\S+)/;
		if ($target =~ m{^http://})
		{
			respond($c, 502, '{"message": "I am a proxy"}');
		}
		elsif ($method eq 'POST')
		{
			my ($m) = $body =~ m{/hostile/([a-z0-9-]+)/manifests};
			$m //= 'ok';
			if ($m eq 'badutf8-refuse') { respond($c, 400, qq({"message": "bad \xff\xfe\xc3 bytes"})) }
			elsif ($m eq 'cut-refuse') { respond($c, 400, '{"message": "' . ('a' x 299) . ("\xc3\xa9" x 10) . '"}') }
			elsif ($m eq 'cut-raw') { respond($c, 400, "not json \xff\xfe" . ("\xe2\x82\xac" x 200)) }
			elsif ($m eq 'badutf8-location')
			{
				print $c "HTTP/1.1 302 Found\r\nLocation: http://x/\xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
			}
			elsif ($m eq 'echo-body') { respond($c, 400, $json->encode({ message => $body })) }
			elsif ($m eq 'echo-head') { respond($c, 400, $json->encode({ message => $head })) }
			elsif ($m eq 'echo-raw') { respond($c, 500, "echo: $head$body") }
			elsif ($m eq 'echo-ok') { respond($c, 200, "echo: $head$body") }
			elsif ($m eq 'big-post') { respond($c, 200, job_json($next++, 'PENDING', ', "pad": "' . ('x' x $MB4) . '"')) }
			else
			{
				$mode{$next} = $m;
				respond($c, 200, job_json($next++, 'PENDING', ''));
			}
		}
		elsif ($target =~ m{/oapi/v1/jobs/(\d+)})
		{
			my $id = $1;
			my $m = $mode{$id} // 'ok';
			if ($m eq 'badutf8-result')
			{
				respond($c, 200, job_json($id, 'SUCCESS', qq(, "result": {"note": "\xc3\x28 \xff\xfe", "\xff": 1})));
			}
			elsif ($m eq 'badutf8-fail')
			{
				respond($c, 200, job_json($id, 'FAILURE',
					qq(, "result": {"job_states": [{"error": "e\xff) . ("\xc3\xa9" x 200)
					  . qq(", "results": [{"failure_tasks": [{"hostname": "h\xff) . ("\xc3\xa9" x 100)
					  . qq(", "ip": "\xfe", "description": ") . ("\xe2\x82\xac" x 100) . qq("}]}]}]})));
			}
			elsif ($m eq 'echo-poll')
			{
				respond($c, 200, job_json($id, 'SUCCESS',
					', "args": {"password": "robot-secret-9", "headers": {"Authorization": "Bearer reg-token-8"}},'
					  . ' "result": ' . $json->encode({ echo => $head, note => 'robot-secret-9 and reg-token-8' })));
			}
			elsif ($m eq 'big-poll') { respond($c, 200, job_json($id, 'SUCCESS', ', "pad": "' . ('x' x $MB4) . '"')) }
			elsif ($m eq 'wide-poll')
			{
				# just under 256 kB of tiny numbers: the largest parse per byte
				respond($c, 200, job_json($id, 'SUCCESS', ', "pad": [' . join(',', (1) x 127000) . ']'));
			}
			else { respond($c, 200, job_json($id, 'SUCCESS', ', "result": {}')) }
		}
		else { respond($c, 404, '{"message": "no"}') }
		close $c;
	}
	exit 0;
}

my $server = fork();
die "fork: $!" unless defined $server;
serve() if $server == 0;
close $listen;
END { kill 'TERM', $server if $server; }

sub requests
{
	open(my $fh, '<', $reqlog) or return ();
	binmode $fh;
	local $/;
	my $all = <$fh>;
	close $fh;
	return split /^=== REQUEST\n/m, $all;
}

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<', $f) or die "$f: $!";
	binmode $fh;
	local $/;
	my $s = <$fh>;
	close $fh;
	return $s;
}

# ---- the server: no worker, so each dispatch is ours to run -----------
# The shipped p2p_preheat settings, but for what a user sets (the registry's
# URL and robot account) and what makes a leak observable: libcurl's trace
# (http_debug) and the DEBUG1 line each job's outcome is logged with.
# log_statement = none is the server's own default again:
# PostgreSQL::Test::Cluster sets it to all, and this test passes a caller's
# token as SQL text where Harbor would bind it.
my $node = PostgreSQL::Test::Cluster->new('hostile');
$node->init;
$node->append_conf('postgresql.conf', qq{
p2p_preheat.registry_url = 'http://harbor.test'
p2p_preheat.registry_credentials_file = '$fixtures/registry_robot.json'
p2p_preheat.http_debug = on
log_min_messages = debug1
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE hostile');
$node->safe_psql('hostile', "\\i $fixture");
$node->safe_psql('hostile', qq{
	SELECT harbor_fixture.create_tables('2.13');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:$hport');
	CREATE EXTENSION p2p_preheat;
	UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
	INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, auth_data, enabled, insecure)
	VALUES (3, 'custom', 'dragonfly', 'http://127.0.0.1:$hport', 'CUSTOM', '{"Api-Key": "k-custom-5"}', true, false),
		   (4, 'nobody', 'dragonfly', 'http://127.0.0.1:1', 'NONE', NULL, true, false);
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, extra_attrs) VALUES (1, 'p', 1, 1, true, NULL);
	-- Dispatches until every job has ended.  The shipped poll_schedule and
	-- retry_base stay: between rounds each open job's next poll (31 s after
	-- acceptance) or retry (a back-off from 1 s) is brought forward to now,
	-- as if that time had passed.
	CREATE FUNCTION dispatch_all() RETURNS void LANGUAGE plpgsql AS \$\$
	DECLARE deadline timestamptz := clock_timestamp() + interval '60 s';
	BEGIN
		LOOP
			PERFORM p2p_preheat.preheat_dispatch();
			EXIT WHEN NOT EXISTS (SELECT FROM p2p_preheat.job WHERE open)
				OR clock_timestamp() > deadline;
			UPDATE p2p_preheat.job SET next_attempt_at = clock_timestamp()
			 WHERE open AND next_attempt_at > clock_timestamp();
			PERFORM pg_sleep(0.05);
		END LOOP;
	END \$\$;
});

sub url { my ($mode, $n, $host) = @_; $host //= 'http://harbor.test'; return "$host/v2/hostile/$mode/manifests/" . ($n // 1); }

# ---- 1. each key once, ours winning ------------------------------------
$node->safe_psql('hostile', "INSERT INTO p2p_preheat.job (instance_id, url, attrs) VALUES (1, '"
	  . url('dupkeys') . q{', '{"url": "http://evil.test/v2/x/manifests/1", "type": "file", "scope": "all_seed_peers"}')});
# ---- 2. the robot account only with the registry's URLs ----------------
my %origin = (
	'http://harbor.test' => 1, 'HTTP://Harbor.Test:80' => 1, 'http://harbor.test:8080' => 0,
	'https://harbor.test' => 0, 'http://elsewhere.test' => 0, 'http://harbor.test.evil.test' => 0);
for my $host (sort keys %origin)
{
	$node->safe_psql('hostile', "SELECT p2p_preheat.preheat_url(1, '" . url('origin', 1, $host) . "')");
}
# one round first: the accepted jobs wait for the shipped first poll
$node->safe_psql('hostile', 'SELECT p2p_preheat.preheat_dispatch()');
is( $node->safe_psql('hostile', q{
	SELECT count(*) || ' ' || string_agg(DISTINCT round(extract(epoch FROM next_attempt_at - sent_at), 1)::text, ',')
	  FROM p2p_preheat.job WHERE state = 'running' AND polls = 0}),
	'7 31.0', 'the seven accepted jobs are first polled 31 s after acceptance');
$node->safe_psql('hostile', 'SELECT dispatch_all()');

my ($dup) = grep { m{/v2/hostile/dupkeys/} } requests();
ok($dup, 'dupkeys job was sent');
my ($dupbody) = $dup =~ /\r\n\r\n(.*)$/s;
my $nurl = () = $dupbody =~ /"url":/g;
my $ntype = () = $dupbody =~ /"type":"image"|"type":"file"/g;
is($nurl, 1, 'args.url appears once');
is($ntype, 1, 'args.type appears once');
my $args = decode_json($dupbody)->{args};
is($args->{url}, url('dupkeys'), 'our url wins');
is($args->{type}, 'image', 'our type wins');
is($args->{scope}, 'all_seed_peers', 'other attrs kept');

for my $host (sort keys %origin)
{
	my $u = url('origin', 1, $host);
	my ($r) = grep { index($_, "\"url\":\"$u\"") >= 0 } requests();
	ok($r, "sent $u");
	my $has = ($r // '') =~ /robot-secret-9/ ? 1 : 0;
	is($has, $origin{$host}, "robot password " . ($origin{$host} ? 'sent' : 'withheld') . " for $host");
}

# ---- 3. invalid UTF-8 and cut characters never reach a row -------------
for my $m (qw(badutf8-refuse cut-refuse cut-raw badutf8-location badutf8-result badutf8-fail))
{
	$node->safe_psql('hostile', "SELECT p2p_preheat.preheat_url(1, '" . url($m) . "')");
}
$node->safe_psql('hostile', 'SELECT dispatch_all()');
is( $node->safe_psql('hostile', q{
	SELECT count(*) FROM p2p_preheat.job
	 WHERE url ~ '/(badutf8|cut)-' AND state IN ('succeeded', 'failed')}),
	'6', 'hostile UTF-8 jobs settled');
like($node->safe_psql('hostile', "SELECT last_error FROM p2p_preheat.job WHERE url = '" . url('badutf8-refuse') . "'"),
	qr/bad \x{fffd}|bad \xef\xbf\xbd/, 'invalid bytes replaced by U+FFFD');
my $dump = "$tmp/hostile.dump";
$node->command_ok(['pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('hostile')], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(['pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump],
	'pg_restore keeps every row');
my $rows = q{SELECT count(*), md5(string_agg(id || last_error || coalesce(result::text, '') || coalesce(dragonfly_state, ''), ',' ORDER BY id))
	FROM p2p_preheat.job WHERE last_error IS NOT NULL OR result IS NOT NULL};
is($node->safe_psql('restored', $rows), $node->safe_psql('hostile', $rows), 'every row restored identical');

# ---- 5. secrets stay secret, even when echoed back ----------------------
# preheat() carries the caller's registry token, as Harbor passes it
$node->safe_psql('hostile', "SELECT p2p_preheat.preheat(1, 'hostile/$_', '1', '{\"Authorization\": \"Bearer reg-token-8\"}')")
  for qw(echo-body echo-head echo-raw echo-ok echo-poll);
$node->safe_psql('hostile', "SELECT p2p_preheat.preheat_url(3, '" . url($_, 3) . "')") for qw(echo-head echo-raw);
# one round first: a 500 is retried after the shipped back-off (0.5-1 s at
# the first attempt)
$node->safe_psql('hostile', 'SELECT p2p_preheat.preheat_dispatch()');
is( $node->safe_psql('hostile', q{
	SELECT count(*) FROM p2p_preheat.job
	 WHERE url ~ '/echo-raw/' AND state = 'queued' AND attempts = 1
	   AND extract(epoch FROM next_attempt_at - updated_at) BETWEEN 0.4 AND 1.0}),
	'2', 'a 500 is retried after the shipped back-off');
$node->safe_psql('hostile', 'SELECT dispatch_all()');
# the echoes did reach us: the server saw the secrets, so scrubbing was needed
ok((grep { /robot-secret-9/ && m{/echo-body/} } requests()), 'echo server got the robot password');
ok((grep { /k-custom-5/ } requests()), 'echo server got the CUSTOM header');
is( $node->safe_psql('hostile', q{SELECT count(*) FROM p2p_preheat.job WHERE url ~ '/echo-' AND last_error ~ '\[redacted\]'}),
	'6', 'echoed secrets replaced in last_error');
is( $node->safe_psql('hostile', q{SELECT result->'result'->>'note' FROM p2p_preheat.job WHERE url ~ '/echo-poll/'}),
	'[redacted] and [redacted]', 'secrets Dragonfly echoes in a job object replaced');
my $stored = $node->safe_psql('hostile', 'SELECT string_agg(j::text, E\'\n\') FROM p2p_preheat.job j');
my $log = slurp($node->logfile);
for my $s (@secrets)
{
	unlike($stored, qr/\Q$s\E/, "$s not stored");
	unlike($log, qr/\Q$s\E/, "$s not in the server log");
}
like($log, qr/Api-Key: \[redacted\]|Api-Key:\s*\[redacted\]/i, 'http_debug shows the CUSTOM header, without its value');

# ---- 4. memory: 60 jobs, 4 MB answers each ------------------------------
sub peak_kb
{
	my ($sql) = @_;
	my $status = $node->safe_psql('hostile',
		"$sql; SELECT pg_read_file('/proc/' || pg_backend_pid() || '/status')");
	my ($hwm) = $status =~ /VmHWM:\s+(\d+) kB/ or die "no VmHWM in $status";
	return $hwm;
}
# The bound: what an idle backend of this server holds (shared memory it
# touches included), plus five times p2p_preheat.answer_memory (16 MB).
# The peak is the wide-poll dispatch's record step.  Its memory contexts at
# the first row written (PostgreSQL 15), with K the outcome array (the job
# objects kept: 9 of 1.5 MB, 13.7 MB; K is at most answer_memory):
#  - the answers held: the answers' text and the outcome array that took
#    the place of the job objects (17 MB: about answer_memory);
#  - K: PL/pgSQL's expanded copy of _record's argument;
#  - 1.3 K: the hash join's table of the outcomes (every row carries a whole
#    job object, so it outgrows hash_mem);
#  - up to 10 MB: what parsing one wide answer took, freed but kept by malloc.
# That is about 3.3 times answer_memory and 10 MB; measured 58-65 MB over
# idle on 15.  (The record statements are planned generically: a custom
# plan, which plan_cache_mode = auto makes for a backend's first five runs,
# held the outcome array as a constant four more times, and the peak was
# 100-118 MB over idle.)
# Without the cap, 60 such answers took a backend to 0.8-1.8 GB.
my $idle_kb = peak_kb('SELECT 1');
my $bound_kb = $idle_kb + 5 * 16 * 1024;
note "idle backend: $idle_kb kB; bound: $bound_kb kB";
sub sixty
{
	my ($m) = @_;
	$node->safe_psql('hostile', "SELECT p2p_preheat.preheat_url(1, 'http://harbor.test/v2/hostile/$m/manifests/' || i) FROM generate_series(1, 60) i");
}
sixty('big-post');
my $hwm = peak_kb('SELECT p2p_preheat.preheat_dispatch(60)');
cmp_ok($hwm, '<', $bound_kb, "60 answers of 4 MB to POST: peak RSS $hwm kB");
like($node->safe_psql('hostile', "SELECT min(last_error) FROM p2p_preheat.job WHERE url ~ '/big-post/'"),
	qr/max_answer_size/, 'oversized answers dropped, to be retried');

for my $m ('big-poll', 'wide-poll')
{
	$node->safe_psql('hostile', "UPDATE p2p_preheat.job SET state = 'canceled' WHERE state IN ('queued', 'sending', 'running')");
	sixty($m);
	$node->safe_psql('hostile', 'SELECT p2p_preheat.preheat_dispatch(60)');
	is($node->safe_psql('hostile', "SELECT count(*) FROM p2p_preheat.job WHERE url ~ '/$m/' AND state = 'running'"),
		'60', "$m: 60 jobs running");
	# their first poll brought forward, as if its 31 s had passed
	$node->safe_psql('hostile', 'UPDATE p2p_preheat.job SET next_attempt_at = now() WHERE state = \'running\'');
	$hwm = peak_kb('SELECT p2p_preheat.preheat_dispatch(60)');
	cmp_ok($hwm, '<', $bound_kb, "$m: 60 polls answered with large job objects: peak RSS $hwm kB");
}
# the wide answers fit max_answer_size: some are kept, the rest wait for memory
like($node->safe_psql('hostile', "SELECT count(*) FILTER (WHERE state = 'succeeded') || ' ' || count(*) FROM p2p_preheat.job WHERE url ~ '/wide-poll/'"),
	qr/^[1-9]\d* 60$/, 'wide answers within the bound were kept');

# ---- 6. proxy variables are ignored --------------------------------------
# The server restarts with every proxy variable pointing at the hostile
# server, which answers requests meant for others as a proxy would.
$node->stop;
$ENV{$_} = "http://127.0.0.1:$hport" for qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY);
$node->start;
$node->safe_psql('hostile', "SELECT p2p_preheat.preheat_url(4, '" . url('proxied') . "')");
$node->safe_psql('hostile', "SELECT p2p_preheat.preheat_dispatch()");
is(scalar(grep { m{^POST http://} } requests()), 0, 'no request went through the environment proxy');
like($node->safe_psql('hostile', "SELECT last_error FROM p2p_preheat.job WHERE url = '" . url('proxied') . "'"),
	qr/could not reach Dragonfly/, 'the endpoint itself was tried');

delete $ENV{$_} for qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY);
$node->stop;
done_testing();
