# Production concerns against a real server: no secret anywhere with
# log_min_messages = debug5, log_statement = all and libcurl's trace on;
# LISTEN p2p_preheat sees jobs and executions end; pg_dump/pg_restore into
# a fresh cluster keeps the configuration and the job history.
#
# The server runs with the shipped p2p_preheat settings.  What it sets is
# what a user sets (the extension preloaded, the worker's database, the
# registry's URL, the secret key and robot account files) and what makes a
# leak observable: libcurl's trace (http_debug), every message down to
# debug5, every statement logged, with log_parameter_max_length = 0 as
# README asks of anyone who logs statements.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use P2PTest;

my $port = $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $fixtures = $fixture =~ s{/harbor\.sql$}{}r;
# every secret this test uses; none may appear anywhere
my @secrets = ('t-encrypted-7', 'robot-secret-9', 'reg-token-8', 'p2p-preheat-key!');

my $node = PostgreSQL::Test::Cluster->new('ops');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'p2p_preheat'
p2p_preheat.database = 'postgres'
p2p_preheat.registry_url = 'https://harbor.example.com'
p2p_preheat.secret_key_file = '$fixtures/harbor_secret.key'
p2p_preheat.registry_credentials_file = '$fixtures/registry_robot.json'
p2p_preheat.http_debug = on
log_min_messages = debug5
log_statement = all
log_parameter_max_length = 0
});
$node->start;
$node->safe_psql('postgres', "\\i $fixture");
# the instance's token is stored encrypted (<enc-v1>), as Harbor does
$node->safe_psql('postgres', qq{
	SELECT harbor_fixture.create_tables('2.13');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:$port');
	UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH',
		auth_data = '<enc-v1>AAECAwQFBgcICQoLDA0ODyxNz9JZDRYK+6uHyw/sRpIwBiFaicqVqSE=' WHERE id = 1;
	INSERT INTO repository (repository_id, name, project_id) VALUES (1, 'library/ops-app', 1);
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	VALUES (1, 1, 1, 'library/ops-app', 'sha256:o1', 'IMAGE', 'm', 'm');
	INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 1, '1.0');
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, filters, extra_attrs)
	VALUES (1, 'p', 1, 1, true, '[{"type":"repository","value":"**"}]', '{"scope": "all_peers"}');
	CREATE EXTENSION p2p_preheat;
});

# the caller's registry token reaches preheat() from a file, never as SQL text
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN p2p_preheat');
my $tokfile = "$fixtures/../../caller_token.json";
open(my $fh, '>', $tokfile) or die;
print $fh '{"Authorization": "Bearer reg-token-8"}';
close $fh;
$node->safe_psql('postgres', "SELECT p2p_preheat.preheat(1, 'ops-app', '1.0', pg_read_file('$tokfile')::jsonb)");
$node->safe_psql('postgres', "SELECT p2p_preheat.run_policy(1)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 AND bool_and(state = 'running') FROM p2p_preheat.job")
  or die 'job was not accepted';
# The shipped schedule first polls 31 s after Dragonfly accepts a job.  The
# test does not wait for it: it moves the job's due time, not the setting.
is(first_poll_after($node, 'postgres', 'true'), '31.0', 'first poll due 31 s after the job was accepted');
make_due($node, 'postgres', 'true');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 AND bool_and(state = 'succeeded') FROM p2p_preheat.job")
  or die 'job did not finish';
unlink $tokfile;

$listener->quit;

# ---- no secret anywhere ---------------------------------------------------
my $log = slurp_file($node->logfile);
like($log, qr/p2p_preheat http > Authorization: \[redacted\]/, 'libcurl trace logged, Authorization redacted');
my $tables = $node->safe_psql('postgres', q{
	SELECT string_agg(t::text, E'\n') FROM (
		SELECT j::text FROM p2p_preheat.job j UNION ALL
		SELECT e::text FROM p2p_preheat.execution e UNION ALL
		SELECT s::text FROM p2p_preheat.job_secret s UNION ALL
		SELECT x::text FROM p2p_preheat.event_error x UNION ALL
		SELECT a::text FROM pg_stat_activity a) t(t)});
for my $s (@secrets)
{
	ok(index($log, $s) < 0, "server log at debug5 does not contain '$s'");
	ok(index($tables, $s) < 0, "tables and pg_stat_activity do not contain '$s'");
}

# ---- NOTIFY p2p_preheat ----------------------------------------------------
$listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN p2p_preheat');
$node->safe_psql('postgres', "INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 1, '2.0')");
$node->safe_psql('postgres', "SELECT p2p_preheat.run_policy(1)");
# as above: each accepted job's first poll brought forward to now
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM p2p_preheat.job WHERE state NOT IN ('running', 'succeeded', 'failed')")
  or die 'jobs were not sent';
make_due($node, 'postgres', "state = 'running'");
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM p2p_preheat.job WHERE state NOT IN ('succeeded', 'failed')")
  or die 'jobs did not finish';
sleep(1);
my $got = $listener->query_safe('SELECT 1');
$listener->quit;
like($got, qr/Asynchronous notification "p2p_preheat" with payload "\{"job" : \d+, "state" : "succeeded"/,
	'LISTEN p2p_preheat hears a job end');
like($got, qr/"execution" : \d+, "policy" : 1, "status" : "Success"/, 'and an execution end');

# ---- pg_dump / pg_restore into a fresh cluster -------------------------
my $dump = $node->basedir . '/registry.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('postgres'), '-f', $dump ], 'pg_dump');
my $fresh = PostgreSQL::Test::Cluster->new('restored');
$fresh->init;
$fresh->start;
$fresh->safe_psql('postgres', 'CREATE DATABASE registry');
$fresh->command_ok([ 'pg_restore', '--exit-on-error', '-d', $fresh->connstr('registry'), $dump ],
	'pg_restore into a fresh cluster');
is( $fresh->safe_psql('registry', 'SELECT count(*) FROM p2p_preheat.job'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM p2p_preheat.job'), 'job history restored');
is( $fresh->safe_psql('registry', 'SELECT count(*) FROM p2p_preheat.execution'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM p2p_preheat.execution'), 'executions restored');
is($fresh->safe_psql('registry', "SELECT extra_attrs FROM p2p_preheat_policy WHERE id = 1"),
	'{"scope": "all_peers"}', 'Harbor\'s extra_attrs restored');
my ($rc, $out, $err) = $fresh->psql('registry',
	q{INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, extra_attrs) VALUES (2, 'x', 1, 1, '{"scope": "nowhere"}')});
like($err, qr/is not a preheat scope/, 'the validation trigger works after restore');
my $max = $fresh->safe_psql('registry', 'SELECT max(id) FROM p2p_preheat.job');
is( $fresh->safe_psql('registry',
		"SET p2p_preheat.registry_url = 'https://harbor.example.com'; SELECT p2p_preheat.preheat(1, 'ops-app', '3.0') > $max"),
	't', 'new jobs continue the restored sequence');

$fresh->stop;
$node->stop;
done_testing();
