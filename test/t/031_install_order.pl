# What CREATE EXTENSION tells a DBA, and the order of the two extensions:
# without the preload (or with the worker serving another database) it says
# so in a WARNING with what to change; with it, it is silent.  pg_cron created
# after p2p_preheat gives the scheduled policies their cron jobs at once,
# without sync_schedules().
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";

sub harbor
{
	my ($node, $db) = @_;
	$node->safe_psql($db, "\\i $fixture");
	$node->safe_psql($db, q{
		SELECT harbor_fixture.create_tables('2.13');
		SELECT harbor_fixture.add_instances();
		INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, filters, trigger, enabled) VALUES
			(1, 'nightly', 1, 1, '[]', '{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}', true),
			(2, 'weekly', 1, 1, '[]', '{"type":"scheduled","trigger_setting":{"cron":"0 30 4 * * 0"}}', true),
			(3, 'off', 1, 1, '[]', '{"type":"scheduled","trigger_setting":{"cron":"0 0 3 * * *"}}', false);
	});
}

# ---- no preload: a WARNING that says how to turn the worker on -------------
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->start;
harbor($bare, 'postgres');
my ($rc, $out, $err) = $bare->psql('postgres', 'CREATE EXTENSION p2p_preheat');
is($rc, 0, 'CREATE EXTENSION succeeds without the preload');
like($err, qr/WARNING:  p2p_preheat: no background worker dispatches jobs, because p2p_preheat is not in shared_preload_libraries/,
	'and says that no worker will dispatch');
$bare->psql('postgres', 'DROP EXTENSION p2p_preheat');
($rc, $out, $err) = $bare->psql('postgres', '\set VERBOSITY verbose' . "\nCREATE EXTENSION p2p_preheat");
like($err, qr/HINT:  To turn the worker on, add p2p_preheat to shared_preload_libraries \(now ''\), set p2p_preheat.database = 'postgres', and restart the server\./,
	'its hint names the setting, the database and the restart');
like($err, qr/DETAIL:  Queued jobs wait until something calls p2p_preheat.preheat_dispatch\(\)\./,
	'its detail says what happens meanwhile');
is($bare->safe_psql('postgres', 'SELECT pid IS NULL FROM p2p_preheat.worker_status()'), 't',
	'worker_status() agrees');
$bare->stop;

# ---- preloaded: silent where the worker serves, a WARNING elsewhere -------
my $node = PostgreSQL::Test::Cluster->new('preloaded');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_cron, p2p_preheat'
cron.database_name = 'postgres'
p2p_preheat.database = 'postgres'
});
$node->start;
harbor($node, 'postgres');
($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION p2p_preheat');
is($rc, 0, 'CREATE EXTENSION with the preload');
is($err, '', 'is silent');

$node->safe_psql('postgres', 'CREATE DATABASE other');
harbor($node, 'other');
($rc, $out, $err) = $node->psql('other', 'CREATE EXTENSION p2p_preheat');
like($err, qr/WARNING:  p2p_preheat: the background worker dispatches for database "postgres", not for this one/,
	'in a database the worker does not serve, a WARNING says so');

# ---- pg_cron second: the event trigger schedules the policies -------------
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'}), '0',
	'pg_cron is not there yet');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
is( $node->safe_psql('postgres', "SELECT string_agg(jobname || ' ' || schedule, ', ' ORDER BY jobname) FROM cron.job"),
	'p2p_preheat_policy_1 0 2 * * *, p2p_preheat_policy_2 30 4 * * 0',
	'CREATE EXTENSION pg_cron gives each enabled scheduled policy its job');
is($node->safe_psql('postgres', 'SELECT p2p_preheat.sync_schedules()'), '0',
	'sync_schedules() has nothing left to do');

$node->stop;
done_testing();
