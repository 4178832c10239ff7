# The pull token Harbor would hand Dragonfly, minted from Harbor core's
# private key (PKCS#1 and PKCS#8 PEM, made here with the openssl CLI) and
# checked by code that is not ours: PyJWT verifies the RS256 signature and
# the claims, and the key id is computed from openssl's DER public key with
# Python's base32.  Also: the key is read again when the file or the setting
# changes; no token for manifests on another host, scheme or port; headers
# from the caller win; an unreadable key fails the job with the file and the
# OS's reason; and no token is left in the server log (debug5,
# log_statement = all, libcurl trace on), a table or pg_stat_activity.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time sleep);

my $port = $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
my $standin_log = $ENV{DRAGONFLY_LOG} or die "DRAGONFLY_LOG is not set";
my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $run = sprintf('tok%d', time() * 1000);    # repository names unique to this run
my $registry = 'https://harbor.example.com';
our $lifetime = 30 * 60;                         # Harbor's token_expiration default, in seconds

# ---- keys, made by openssl, and what an outside verifier expects of them ----
my $dir = PostgreSQL::Test::Utils::tempdir;
system_or_bail('openssl', 'genrsa', '-traditional', '-out', "$dir/pkcs1.pem", '2048');
system_or_bail('openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
	'-out', "$dir/pkcs8.pem");
like(slurp_file("$dir/pkcs1.pem"), qr/^-----BEGIN RSA PRIVATE KEY-----/, 'PKCS#1 key made');
like(slurp_file("$dir/pkcs8.pem"), qr/^-----BEGIN PRIVATE KEY-----/, 'PKCS#8 key made');

sub run_or_die
{
	my ($cmd, $in) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run($cmd, '<', \$in, '>', \$out, '2>', \$err)
	  or die "@$cmd failed: $err";
	return $out;
}

# libtrust's key id, from openssl's DER SubjectPublicKeyInfo and Python's base32
my %kid;
for my $k ('pkcs1', 'pkcs8')
{
	system_or_bail('openssl', 'pkey', '-in', "$dir/$k.pem", '-pubout', '-out', "$dir/$k.pub.pem");
	system_or_bail('openssl', 'pkey', '-in', "$dir/$k.pem", '-pubout', '-outform', 'DER',
		'-out', "$dir/$k.pub.der");
	system_or_bail('openssl', 'dgst', '-sha256', '-binary', '-out', "$dir/$k.sha256", "$dir/$k.pub.der");
	$kid{$k} = run_or_die([ 'python3', '-c', q{
import base64, sys
d = open(sys.argv[1], 'rb').read()[:30]
s = base64.b32encode(d).decode().rstrip('=')
print(':'.join(s[i:i + 4] for i in range(0, len(s), 4)))
}, "$dir/$k.sha256" ], '');
	chomp $kid{$k};
	like($kid{$k}, qr/^[A-Z2-7]{4}(:[A-Z2-7]{4}){11}$/, "$k: expected key id computed");
}
isnt($kid{pkcs1}, $kid{pkcs8}, 'two keys, two key ids');

# PyJWT checks the signature with the public key, alg, iss, aud, exp and nbf,
# and that every registered claim is there; prints header, claims and the
# claims' raw JSON for the finer checks below.
my $verifier = q{
import base64, json, sys, jwt
token = sys.stdin.read().strip()
pub = open(sys.argv[1], 'rb').read()
header = jwt.get_unverified_header(token)
claims = jwt.decode(token, pub, algorithms=['RS256'], audience='harbor-registry',
                    issuer='harbor-token-issuer',
                    options={'require': ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti']})
seg = token.split('.')[1]
raw = json.loads(base64.urlsafe_b64decode(seg + '=' * (-len(seg) % 4)))
print(json.dumps({'header': header, 'claims': claims, 'raw': raw}))
};

sub verify
{
	my ($token, $pub) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'python3', '-c', $verifier, $pub ], '<', \$token, '>', \$out, '2>', \$err);
	return $ok ? decode_json($out) : undef;
}

# ---- a server that dispatches only when told to -----------------------------
my $node = PostgreSQL::Test::Cluster->new('token');
$node->init;
$node->append_conf('postgresql.conf', qq{
p2p_preheat.registry_url = '$registry'
p2p_preheat.token_private_key_file = '$dir/key.pem'
p2p_preheat.http_debug = on
log_min_messages = debug5
log_statement = all
});
PostgreSQL::Test::Utils::append_to_file("$dir/key.pem", slurp_file("$dir/pkcs1.pem"));
$node->start;
$node->safe_psql('postgres', "\\i $fixture");
$node->safe_psql('postgres', qq{
	SELECT harbor_fixture.create_tables('2.13');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:$port');
	UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, filters)
	VALUES (1, 'private', 1, 1, true, '[{"type":"repository","value":"**"}]');
	CREATE EXTENSION p2p_preheat;
});

# One session throughout: its cached key must follow the file and the setting.
my $session = $node->background_psql('postgres');

# Queue a job with SQL $queue and dispatch it; returns the job id.
sub dispatch
{
	my ($queue) = @_;
	my $id = $session->query_safe($queue);
	$id =~ s/\s+//g;
	$session->query_safe('SELECT p2p_preheat.preheat_dispatch()');
	return $id;
}

# The Authorization values the stand-in saw for repository $repo, and how many
# of its log lines mention $repo; waits for the line to reach the log.
sub sent_auth
{
	my ($repo) = @_;
	my $path = join('\\\\?/', map { quotemeta } split(m{/}, "$run-$repo"));    # '/' may be escaped
	my $re = qr/$path\\?\/manifests/;
	for (1 .. 100)
	{
		my (@auth, $lines);
		if (open(my $fh, '<', $standin_log))
		{
			while (my $line = <$fh>)
			{
				next unless $line =~ $re;
				$lines++;
				push @auth, $1 while $line =~ /\\?"Authorization\\?"\s*:\s*\\?"([^"\\]*)/g;
			}
			close $fh;
		}
		return (\@auth, $lines) if $lines;
		sleep(0.05);
	}
	return ([], 0);
}

sub job
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT state || '|' || coalesce(last_error, '') FROM p2p_preheat.job WHERE id = $id");
}

my @tokens;

# The one token sent for $repo, checked with $key's public key.
sub check_token
{
	my ($repo, $key, $t0, $t1) = @_;
	my ($auth, $lines) = sent_auth($repo);
	my %uniq = map { $_ => 1 } @$auth;
	is(scalar(keys %uniq), 1, "$repo: one Authorization header sent");
	my ($bearer) = keys %uniq;
	like($bearer // '', qr/^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/,
		"$repo: a Bearer JWT");
	my $token = ($bearer // '') =~ s/^Bearer //r;
	push @tokens, $token;

	my $v = verify($token, "$dir/$key.pub.pem");
	ok($v, "$repo: PyJWT verifies the RS256 signature with the $key public key, iss, aud, exp, nbf")
	  or return;
	my ($h, $c, $raw) = ($v->{header}, $v->{claims}, $v->{raw});
	is_deeply([ sort keys %$h ], [ 'alg', 'kid', 'typ' ], "$repo: header has alg, kid, typ");
	is($h->{alg}, 'RS256', "$repo: alg RS256");
	is($h->{typ}, 'JWT', "$repo: typ JWT");
	is($h->{kid}, $kid{$key}, "$repo: kid is libtrust's id of the $key key");
	is_deeply([ sort keys %$raw ], [qw(access aud exp iat iss jti nbf sub)], "$repo: exactly Harbor's claims");
	is($c->{iss}, 'harbor-token-issuer', "$repo: iss");
	is($c->{sub}, 'distributor', "$repo: sub");
	is($raw->{aud}, 'harbor-registry', "$repo: aud is the plain string harbor-registry");
	ok(!ref($raw->{aud}), "$repo: aud is not an array");
	is($c->{exp} - $c->{iat}, $lifetime, "$repo: exp - iat is the lifetime");
	is($c->{nbf}, $c->{iat}, "$repo: nbf = iat");
	ok($c->{iat} >= int($t0) - 1 && $c->{iat} <= $t1 + 1, "$repo: iat is the time of dispatch");
	like($c->{jti}, qr/^[A-Za-z0-9]{16}$/, "$repo: jti is 16 letters and digits");
	is_deeply($c->{access},
		[ { type => 'repository', name => "library/$run-$repo", actions => ['pull'] } ],
		"$repo: pull access to the one repository");
	return $v;
}

# ---- PKCS#1 key ---------------------------------------------------------------
my $t0 = time();
my $id = dispatch("SELECT p2p_preheat.preheat(1, '$run-pkcs1', '1.0')");
my $t1 = time();
is(job($id), 'running|', 'job with a minted token accepted by Dragonfly');
my $first = check_token('pkcs1', 'pkcs1', $t0, $t1);
ok(!verify($tokens[-1], "$dir/pkcs8.pub.pem"), 'the verifier refuses the token with another public key');

# a second job gets a token of its own
dispatch("SELECT p2p_preheat.preheat(1, '$run-again', '1.0')");
my $again = check_token('again', 'pkcs1', $t0, time());
isnt($again->{claims}{jti}, $first->{claims}{jti}, 'each token has its own jti') if $again && $first;

# a repository below the project's top level
dispatch("SELECT p2p_preheat.preheat(1, '$run-deep/er', '1.0')");
check_token('deep/er', 'pkcs1', $t0, time());

# Harbor's token_expiration (minutes, in its properties table) sets the lifetime
$node->safe_psql('postgres', "INSERT INTO properties (k, v) VALUES ('token_expiration', '5')");
{
	local $lifetime = 5 * 60;
	dispatch("SELECT p2p_preheat.preheat(1, '$run-expiry', '1.0')");
	check_token('expiry', 'pkcs1', $t0, time());
}
$node->safe_psql('postgres', "DELETE FROM properties WHERE k = 'token_expiration'");

# ---- the same file rewritten with a PKCS#8 key: read again, same session ------
open(my $fh, '>', "$dir/key.pem") or die;
print $fh slurp_file("$dir/pkcs8.pem");
close $fh;
$t0 = time();
dispatch("SELECT p2p_preheat.preheat(1, '$run-pkcs8', '1.0')");
check_token('pkcs8', 'pkcs8', $t0, time());
ok(!verify($tokens[-1], "$dir/pkcs1.pub.pem"), 'signed with the new key, not the cached one');

# ---- the setting changed on SIGHUP: read again ------------------------------
sub set_key_file
{
	my ($path) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET p2p_preheat.token_private_key_file = '$path'; SELECT pg_reload_conf();");
	for (1 .. 100)
	{
		my $now = $session->query_safe('SHOW p2p_preheat.token_private_key_file');
		return if $now =~ /\Q$path\E/;
		sleep(0.05);
	}
	die "session did not see token_private_key_file = $path";
}
set_key_file("$dir/pkcs1.pem");
$t0 = time();
dispatch("SELECT p2p_preheat.preheat(1, '$run-reloaded', '1.0')");
check_token('reloaded', 'pkcs1', $t0, time());

# ---- no token for manifests elsewhere -----------------------------------------
for my $case ([ 'otherhost', 'https://mirror.example.com' ],
	[ 'otherport', 'https://harbor.example.com:8443' ],
	[ 'otherscheme', 'http://harbor.example.com' ])
{
	my ($name, $base) = @$case;
	$id = dispatch("SELECT p2p_preheat.preheat_url(1, '$base/v2/library/$run-$name/manifests/1.0')");
	is(job($id), 'running|', "$name: job sent");
	my ($auth, $lines) = sent_auth($name);
	ok($lines > 0 && @$auth == 0, "$name: no Authorization header sent to Dragonfly for $base");
}
# the default port written out is the same origin
dispatch("SELECT p2p_preheat.preheat_url(1, 'HTTPS://Harbor.Example.com:443/v2/library/$run-sameport/manifests/1.0')");
check_token('sameport', 'pkcs1', $t0, time());

# ---- headers from the caller win ----------------------------------------------
$id = dispatch(qq{SELECT p2p_preheat.preheat(1, '$run-caller', '1.0', '{"Authorization": "Bearer from-caller"}')});
is(job($id), 'running|', 'caller\'s job sent');
my ($auth) = sent_auth('caller');
is_deeply($auth, ['Bearer from-caller'], 'the caller\'s header is sent, no minted token');

# ---- a key that cannot be read fails the job, saying which file and why -------
PostgreSQL::Test::Utils::append_to_file("$dir/locked.pem", slurp_file("$dir/pkcs1.pem"));
chmod 0000, "$dir/locked.pem";
set_key_file("$dir/locked.pem");
$id = dispatch("SELECT p2p_preheat.preheat(1, '$run-locked', '1.0')");
is( job($id),
	qq{failed|could not open p2p_preheat.token_private_key_file "$dir/locked.pem": Permission denied},
	'unreadable key: the job fails naming the file and the OS reason');

set_key_file("$dir/missing.pem");
$id = dispatch("SELECT p2p_preheat.preheat(1, '$run-missing', '1.0')");
is( job($id),
	qq{failed|could not open p2p_preheat.token_private_key_file "$dir/missing.pem": No such file or directory},
	'missing key: the job fails naming the file and the OS reason');

PostgreSQL::Test::Utils::append_to_file("$dir/garbage.pem", "not a key\n");
set_key_file("$dir/garbage.pem");
$id = dispatch("SELECT p2p_preheat.preheat(1, '$run-garbage', '1.0')");
is( job($id),
	qq{failed|p2p_preheat.token_private_key_file "$dir/garbage.pem" is not a PEM file; it should hold Harbor core's private key},
	'not a key: the job fails naming the file');

PostgreSQL::Test::Utils::append_to_file("$dir/bad.pem",
	"-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n");
set_key_file("$dir/bad.pem");
$id = dispatch("SELECT p2p_preheat.preheat(1, '$run-badpem', '1.0')");
like( job($id),
	qr/^failed\|p2p_preheat.token_private_key_file "\Q$dir\E\/bad.pem" holds no unencrypted PEM private key: \S/,
	'a broken PEM key: the job fails naming the file and OpenSSL\'s reason');

system_or_bail('openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
	'-aes-256-cbc', '-pass', 'pass:p2p-test', '-out', "$dir/encrypted.pem");
set_key_file("$dir/encrypted.pem");
$id = dispatch("SELECT p2p_preheat.preheat(1, '$run-encrypted', '1.0')");
is( job($id),
	qq{failed|p2p_preheat.token_private_key_file "$dir/encrypted.pem" is encrypted; Harbor core's private key is read unencrypted},
	'an encrypted key is refused, not prompted for');

system_or_bail('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
	'-out', "$dir/ec.pem");
set_key_file("$dir/ec.pem");
$id = dispatch("SELECT p2p_preheat.preheat(1, '$run-eckey', '1.0')");
like(job($id), qr/^failed\|.*"\Q$dir\E\/ec.pem" does not hold an RSA key/, 'an EC key is refused');

for my $name ('locked', 'missing', 'garbage', 'badpem', 'encrypted', 'eckey')
{
	my $lines = 0;
	if (open(my $lf, '<', $standin_log))
	{
		$lines = grep { /\Q$run-$name\E\\?\/manifests/ } <$lf>;
		close $lf;
	}
	is($lines, 0, "$name: nothing sent to Dragonfly");
}

# ---- no token anywhere it could be read back ----------------------------------
my $tables = $session->query_safe(q{
	SELECT string_agg(t, E'\n') FROM (
		SELECT j::text FROM p2p_preheat.job j UNION ALL
		SELECT e::text FROM p2p_preheat.execution e UNION ALL
		SELECT s::text FROM p2p_preheat.job_secret s UNION ALL
		SELECT a::text FROM pg_stat_activity a) x(t)});
$session->quit;
$node->stop;
my $log = slurp_file($node->logfile);
like($log, qr/p2p_preheat http > Authorization: \[redacted\]/, 'libcurl trace was on');
is(scalar(@tokens), 7, 'seven tokens seen');
for my $i (0 .. $#tokens)
{
	my $sig = (split /\./, $tokens[$i])[2] // 'none';
	ok(length($sig) > 300, "token $i has an RSA-2048 signature");
	ok(index($log, $sig) < 0, "token $i is not in the server log");
	ok(index($tables, $sig) < 0, "token $i is not in a table or pg_stat_activity");
}

done_testing();
