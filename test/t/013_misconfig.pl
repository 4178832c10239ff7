# Misconfiguration is quiet and clear: a missing database, a missing role, a
# missing extension or Harbor tables, and a key file the server cannot read
# each give one log line and a state in worker_status() that names the
# problem and its fix; the worker backs off and never crash-loops.  Every
# log line in a window is counted, not only FATALs.  Bad settings and a
# misspelt vendor are refused where they are typed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";

# log lines written from byte $from on
sub lines_since
{
	my ($node, $from) = @_;
	my $log = slurp_file($node->logfile);
	# the test's own statements and settings are not the worker's noise
	return grep { /\S/ && !/^\s/ && !/013_misconfig\.pl|received SIGHUP|parameter ".*" changed/ }
	  split /\n/, substr($log, $from);
}

sub log_size { return -s $_[0]->logfile; }

sub state { return $_[0]->safe_psql($_[1] // 'postgres', 'SELECT state FROM p2p_preheat.worker_status()'); }

# ---- a database that does not exist ---------------------------------------
my $node = PostgreSQL::Test::Cluster->new('misconfig');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'p2p_preheat'
p2p_preheat.database = 'regsitry'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION p2p_preheat');
$node->poll_query_until('postgres',
	"SELECT state LIKE 'waiting: database \"regsitry\" does not exist; create it%' FROM p2p_preheat.worker_status()")
  or die 'no state for the missing database: ' . state($node);
pass('worker_status() names the missing database and the fix');
my $from = log_size($node);
sleep(12);
my @lines = lines_since($node, $from);
is(scalar(@lines), 0, 'then nothing in the log for 12 s') or diag(join("\n", @lines));
my @all = grep { /regsitry|p2p_preheat|background worker/ } lines_since($node, 0);
ok(@all <= 4, scalar(@all) . ' log lines in all about the missing database (FATAL, exit, one explanation)')
  or diag(join("\n", @all));
is(scalar(grep { /exited with exit code 1/ } @all), 1, 'one exit, no crash loop');

$node->safe_psql('postgres', 'CREATE DATABASE regsitry');
$node->poll_query_until('postgres',
	"SELECT state LIKE 'waiting: extension p2p_preheat is not installed in database \"regsitry\"%' FROM p2p_preheat.worker_status()")
  or die 'worker did not connect once the database exists: ' . state($node);
pass('once the database exists the worker connects, and names the next problem');

# ---- Harbor's tables missing: one line, a state, no noise -----------------
$from = log_size($node);
$node->safe_psql('regsitry', 'CREATE EXTENSION p2p_preheat');
$node->poll_query_until('regsitry',
	"SELECT state LIKE 'waiting: this database holds no Harbor tables that p2p_preheat is attached to; %' FROM p2p_preheat.worker_status()")
  or die 'no state for missing Harbor tables: ' . state($node, 'regsitry');
pass('worker_status() says Harbor\'s tables are missing: ' . state($node, 'regsitry'));
sleep(12);
@lines = grep { /p2p_preheat/ } lines_since($node, $from);
ok(@lines <= 2, scalar(@lines) . ' log lines in 12 s with Harbor\'s tables missing (solved, waiting)') or diag(join("\n", @lines));

$node->safe_psql('regsitry', "\\i $fixture");
$node->safe_psql('regsitry', "SELECT harbor_fixture.create_tables('proposal')");
$node->safe_psql('regsitry', "SELECT p2p_preheat.attach('public.p2p_preheat_policy')") if
  $node->safe_psql('regsitry', "SELECT count(*) FROM p2p_preheat.harbor") eq '0';
$node->safe_psql('regsitry', "SELECT harbor_fixture.add_instances('http://127.0.0.1:1')");
$node->safe_psql('regsitry', "SELECT p2p_preheat.preheat_url(1, 'https://h.example.com/v2/a/b/manifests/1')");
$node->poll_query_until('regsitry', "SELECT state NOT LIKE 'waiting:%' FROM p2p_preheat.worker_status()")
  or die 'worker still waiting once the tables exist: ' . state($node, 'regsitry');
pass('the tables attached and a job queued: the worker resumes');
$node->safe_psql('regsitry', 'SELECT p2p_preheat.cancel(id) FROM p2p_preheat.job');

# ---- a key file the server cannot read ------------------------------------
$from = log_size($node);
$node->safe_psql('postgres', qq{
	ALTER SYSTEM SET p2p_preheat.registry_credentials_file = '/nonexistent/robot.json';
	SELECT pg_reload_conf();
});
$node->poll_query_until('regsitry',
	"SELECT state = 'waiting: could not open p2p_preheat.registry_credentials_file \"/nonexistent/robot.json\": "
	  . "No such file or directory; make the file readable by the server''s operating system user, "
	  . "or correct the setting and reload' FROM p2p_preheat.worker_status()")
  or die 'no state for the unreadable file: ' . state($node, 'regsitry');
pass('worker_status() names the file, the reason and the fix');
$node->safe_psql('regsitry', "SELECT p2p_preheat.preheat_url(1, 'https://h.example.com/v2/a/b/manifests/2')");
sleep(12);
@lines = grep { /p2p_preheat/ } lines_since($node, $from);
ok(@lines <= 1, scalar(@lines) . ' log line in 12 s with the file missing') or diag(join("\n", @lines));
is($node->safe_psql('regsitry', "SELECT state FROM p2p_preheat.job WHERE url LIKE '%/2'"), 'queued',
	'the queued job waits instead of failing');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET p2p_preheat.registry_credentials_file; SELECT pg_reload_conf()');
$node->safe_psql('regsitry', 'SELECT p2p_preheat.cancel(id) FROM p2p_preheat.job');
$node->stop;

# ---- a role that does not exist --------------------------------------------
$node->append_conf('postgresql.conf', qq{
p2p_preheat.database = 'postgres'
p2p_preheat.worker_role = 'nosuchrole'
});
$node->start;
$node->poll_query_until('postgres',
	"SELECT state LIKE 'waiting: role \"nosuchrole\" (p2p_preheat.worker_role) does not exist; create it%' FROM p2p_preheat.worker_status()")
  or die 'no state for the missing role: ' . state($node);
pass('worker_status() names the missing role and the fix');
$from = log_size($node);
sleep(12);
@lines = lines_since($node, $from);
is(scalar(@lines), 0, 'then nothing in the log for 12 s') or diag(join("\n", @lines));
$node->safe_psql('postgres', 'CREATE ROLE nosuchrole NOLOGIN');
$node->poll_query_until('postgres',
	"SELECT state LIKE 'waiting: role \"nosuchrole\" (p2p_preheat.worker_role) may not log in; ALTER ROLE nosuchrole LOGIN' FROM p2p_preheat.worker_status()")
  or die 'no state for a role without LOGIN: ' . state($node);
pass('a role without LOGIN is named too');
$node->safe_psql('postgres', 'ALTER ROLE nosuchrole LOGIN SUPERUSER');
$node->poll_query_until('postgres', "SELECT state NOT LIKE 'waiting: role%' FROM p2p_preheat.worker_status()")
  or die 'worker did not connect once the role exists: ' . state($node);
pass('once the role can log in, the worker connects');

# ---- refused where typed ----------------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres', "SET p2p_preheat.registry_url = 'harbor.example.com'");
like($err, qr/invalid value for parameter "p2p_preheat.registry_url".*\n.*DETAIL:  p2p_preheat.registry_url must be an absolute http or https URL, not "harbor.example.com"/,
	'a registry_url without a scheme is refused');
($rc, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET p2p_preheat.registry_url = 'https://'");
like($err, qr/must be a URL with a host/, 'a registry_url without a host is refused');
is($node->psql('postgres', "SET p2p_preheat.registry_url = 'https://harbor.example.com/'"), 0,
	'an absolute https URL is accepted');
($rc, $out, $err) = $node->psql('postgres', q{SELECT p2p_preheat.validate_extra_attrs('dragonfy', '{"scope": "all_peers"}')});
like($err, qr/ERROR:  invalid extra_attrs: unknown vendor "dragonfy"; the known vendors are dragonfly and kraken/,
	'a misspelt vendor is an error that lists the known ones');
is( $node->safe_psql('postgres', q{SELECT problem FROM p2p_preheat.extra_attrs_problems('dragonfy', '{}')}),
	'unknown vendor "dragonfy"; the known vendors are dragonfly and kraken',
	'extra_attrs_problems() says the same');
is($node->safe_psql('postgres', q{SELECT p2p_preheat.validate_extra_attrs('Kraken', '{"a": 1}')}), '{"a": 1}',
	'kraken is known');

$node->stop;
done_testing();
