# Harbor 2.16's database upgrade with the extension inside.  Harbor's database
# image finds a PostgreSQL 15 cluster, initialises an 18 one the way it
# initialises every cluster (initdb -U postgres -E UTF-8 with its locale, and
# --no-data-checksums when the old cluster has none, since 18 turns them on
# by default), runs pg_upgrade, and copies pg_hba.conf; postgresql.conf is the
# new image's own.  Here the 15 cluster holds Harbor's tables, the extension,
# policies (one scheduled through pg_cron), jobs in every state and an
# instance whose auth_data Harbor encrypted.  On 18 the extension, its
# settings, the job history and the pg_cron schedules must be intact, the
# worker must finish the unfinished jobs, and a new push must be preheated.
#
# Both servers run with the shipped p2p_preheat settings.  Where a job's
# next poll (31 s after Dragonfly accepted it) must come before the test
# goes on, the test brings that job's due time forward (make_due), as if
# the time had passed: it moves a clock, never a setting.
#
# Runs when the server under test is 18 and PostgreSQL 15 (with the extension
# and pg_cron installed) is at P2P_OLD_BINDIR (default
# /usr/lib/postgresql/15/bin).  Needs the stand-in (DRAGONFLY_PORT,
# DRAGONFLY_LOG) and test/fixtures (P2P_TEST_FIXTURES, HARBOR_FIXTURE).
use strict;
use warnings;
use File::Basename qw(dirname);
use FindBin;
use lib "$FindBin::RealBin/../lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use P2PTest;

my $old_bindir = $ENV{P2P_OLD_BINDIR} // '/usr/lib/postgresql/15/bin';
my $new = PostgreSQL::Test::Cluster->new('pg18');
plan skip_all => 'the upgrade test runs on PostgreSQL 18'
  unless $new->pg_version >= 18;
plan skip_all => "no PostgreSQL 15 at $old_bindir (set P2P_OLD_BINDIR)"
  unless -x "$old_bindir/pg_ctl";
my $old_share = `'$old_bindir/pg_config' --sharedir 2>/dev/null`;
chomp $old_share;
plan skip_all => "p2p_preheat is not installed into the PostgreSQL 15 at $old_bindir"
  unless -f "$old_share/extension/p2p_preheat.control";

my $port = $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $fixtures = $ENV{P2P_TEST_FIXTURES} or die "P2P_TEST_FIXTURES is not set";
my $old_install = dirname($old_bindir);
my $new_bindir = $new->config_data('--bindir');
my $run = sprintf('u%d', time());    # URLs unique to this run

# Harbor's initdb flags.  Harbor's image has en_US.UTF-8; a machine without
# it gets C.UTF-8, the same on both sides, which is all pg_upgrade asks.
my $locale = (grep { /^en_US\.utf-?8$/i } split /\n/, `locale -a`) ? 'en_US.UTF-8' : 'C.UTF-8';
my @harbor_initdb = ('-U', 'postgres', '-E', 'UTF-8', "--lc-collate=$locale", "--lc-ctype=$locale");

# What Harbor's entrypoint adds for the new cluster: no data checksums when
# the old cluster has none (pg_upgrade refuses a mismatch).
sub new_cluster_initdb
{
	my ($old) = @_;
	my $control = `'$old_bindir/pg_controldata' '${\ $old->data_dir}'`;
	$control =~ /Data page checksum version:\s*(\d+)/
	  or die "pg_controldata gave no checksum version";
	return ($1 eq '0') ? (@harbor_initdb, '--no-data-checksums') : @harbor_initdb;
}

# pg_upgrade as Harbor's upgrade.sh runs it (old cluster stopped), from a
# scratch directory; true when it succeeded.
sub pg_upgrade
{
	my ($old, $to) = @_;
	my $cwd = PostgreSQL::Test::Utils::tempdir;
	my $ok = run_log(
		[
			"$new_bindir/pg_upgrade", '--no-sync',
			'--old-datadir' => $old->data_dir, '--new-datadir' => $to->data_dir,
			'--old-bindir' => $old_bindir, '--new-bindir' => $new_bindir,
			'--old-port' => $old->port, '--new-port' => $to->port,
			'--socketdir' => $to->host, '--username' => 'postgres'
		],
		init => sub { chdir $cwd });
	PostgreSQL::Test::Utils::system_log('cp', $old->data_dir . '/pg_hba.conf', $to->data_dir . '/pg_hba.conf')
	  if $ok;
	return $ok;
}

# ---- can pg_upgrade carry any table from this 15 to 18? ---------------------
# Some Debian 15 builds give every column a "pg_attver" option that 18 does
# not know, and pg_upgrade then fails on the first table of any database.
# One table tells: if it cannot be carried, the Harbor database is carried
# by a dump instead (below), and the pg_upgrade path waits for a 15 that can.
my $probe_old = PostgreSQL::Test::Cluster->new('probe15', install_path => $old_install);
$probe_old->init(extra => [@harbor_initdb]);
$probe_old->start;
$probe_old->safe_psql('postgres', 'CREATE TABLE probe (a int); INSERT INTO probe VALUES (1)');
$probe_old->stop;
my $probe_new = PostgreSQL::Test::Cluster->new('probe18');
$probe_new->init(extra => [ new_cluster_initdb($probe_old) ]);
my $use_pg_upgrade = pg_upgrade($probe_old, $probe_new);
diag($use_pg_upgrade
	? 'upgrade path: pg_upgrade (a one-table pg_upgrade from this PostgreSQL 15 works)'
	: 'upgrade path: dump and restore with 18\'s pg_dump (a one-table pg_upgrade from this '
	  . 'PostgreSQL 15 fails; see the probe18 log)');

# ---- Harbor on PostgreSQL 15 ----------------------------------------------
my $server_conf = qq{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'registry'
p2p_preheat.registry_url = 'https://harbor.example.com'
p2p_preheat.secret_key_file = '$fixtures/harbor_secret.key'
};
my $old = PostgreSQL::Test::Cluster->new('harbor15', install_path => $old_install);
$old->init(extra => [@harbor_initdb]);
$old->append_conf('postgresql.conf', $server_conf);
$old->start;
$old->safe_psql('postgres', 'CREATE DATABASE registry');
$old->safe_psql('registry', "\\i $fixture");
$old->safe_psql('registry', qq{
	CREATE EXTENSION pg_cron;
	SELECT harbor_fixture.create_tables('2.13');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:$port');
	CREATE EXTENSION p2p_preheat;
	UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
	-- encrypted by Harbor with the key in test/fixtures/harbor_secret.key
	INSERT INTO p2p_preheat_instance (id, name, vendor, endpoint, auth_mode, auth_data, enabled, insecure)
	VALUES (3, 'encrypted', 'dragonfly', 'http://127.0.0.1:$port', 'OAUTH',
			'<enc-v1>AAECAwQFBgcICQoLDA0ODyxNz9JZDRYK+6uHyw/sRpIwBiFaicqVqSE=', true, false);
	INSERT INTO repository (repository_id, name, project_id) VALUES (1, 'library/$run', 1);
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	VALUES (1, 1, 1, 'library/$run', 'sha256:a1', 'IMAGE', 'm', 'm');
	INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 1, 'v1');
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters, extra_attrs)
	VALUES (1, 'nightly', 1, 1, true, '{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}',
			'[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]',
			'{"scope": "single_peer", "cluster_ids": [1, 2]}'),
		   (2, 'on-push', 1, 3, true, '{"type":"event_based"}',
			'[{"type":"repository","value":"$run"},{"type":"tag","value":"v*"}]', NULL);
	ALTER DATABASE registry SET p2p_preheat.max_in_flight = 4;
});

my $url = sub { "https://harbor.example.com/v2/library/$run/manifests/$_[0]" };
# succeeded and failed: sent and followed to the end
$old->safe_psql('registry', qq{
	SELECT p2p_preheat.run_policy(1);
	SELECT p2p_preheat.preheat_url(1, '${\ $url->('done')}');
	SELECT p2p_preheat.preheat_url(1, '${\ $url->('jobfail')}');
	SELECT p2p_preheat.cancel(p2p_preheat.preheat_url(1, '${\ $url->('canceled')}'));
});
is($old->safe_psql('registry', 'SELECT sent FROM p2p_preheat.preheat_dispatch()'), '3',
	'15: three jobs sent');
is(first_poll_after($old, 'registry', 'true'), '31.0', '15: their first poll due 31 s after they were accepted');
my $finished = 0;
for (1 .. 60)
{
	make_due($old, 'registry', 'true');
	$old->safe_psql('registry', 'SELECT * FROM p2p_preheat.preheat_dispatch()');
	$finished = $old->safe_psql('registry',
		"SELECT count(*) FROM p2p_preheat.job WHERE state IN ('succeeded', 'failed')");
	last if $finished == 3;
	sleep(1);
}
is($finished, 3, '15: three jobs sent and followed to their end');
# running (accepted by Dragonfly, its first poll 31 s later) and queued, both
# for the instance whose credentials Harbor encrypted
$old->safe_psql('registry', qq{
	SELECT p2p_preheat.preheat_url(3, '${\ $url->('running')}');
	SELECT sent FROM p2p_preheat.preheat_dispatch();
	SELECT p2p_preheat.preheat_url(3, '${\ $url->('queued')}');
});
is(first_poll_after($old, 'registry', "url = '${\ $url->('running')}'"), '31.0',
	'15: the running job is due for its first poll 31 s after it was accepted');
is( $old->safe_psql('registry', 'SELECT string_agg(state::text, \',\' ORDER BY id) FROM p2p_preheat.job'),
	'succeeded,succeeded,failed,canceled,running,queued',
	'15: jobs in every state');

# What must come across unchanged.
my %checks = (
	# pg_cron's own version is the new server's after a dump (not after pg_upgrade)
	extensions => q{SELECT extname, CASE extname WHEN 'pg_cron' THEN '' ELSE extversion END
		FROM pg_extension ORDER BY 1},
	policies => 'SELECT id, name, trigger, filters, extra_attrs FROM p2p_preheat_policy ORDER BY id',
	instances => 'SELECT id, name, auth_mode, auth_data FROM p2p_preheat_instance ORDER BY id',
	jobs => 'SELECT id, policy_id, instance_id, url, state, attempts, dragonfly_job_id, dragonfly_state, '
	  . 'last_error, created_at, sent_at, finished_at FROM p2p_preheat.job ORDER BY id',
	executions => 'SELECT * FROM p2p_preheat.execution ORDER BY id',
	sequences => q{SELECT last_value FROM p2p_preheat.job_id_seq},
	cron => 'SELECT jobname, schedule, command, database, active FROM cron.job ORDER BY jobname',
	triggers => 'SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2',
	event_triggers => 'SELECT evtname, evtevent, evtenabled FROM pg_event_trigger ORDER BY 1',
	settings => q{SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s
		JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'registry'},
	grants => q{SELECT rolname FROM pg_roles WHERE rolname LIKE 'p2p\_preheat\_%' ORDER BY 1},
	event_policies => 'SELECT * FROM p2p_preheat.event_policy ORDER BY policy_id');
my %before = map { $_ => $old->safe_psql('registry', $checks{$_}) } keys %checks;
like($before{cron}, qr/^p2p_preheat_policy_1\|0 2 \* \* \*\|SELECT p2p_preheat\.run_policy\(1, 'scheduled'\)\|registry\|t$/,
	'15: the scheduled policy is a pg_cron job');
$old->stop;

# ---- to PostgreSQL 18, as Harbor's entrypoint does it ---------------------
$new->init(extra => [ new_cluster_initdb($old) ]);
$new->append_conf('postgresql.conf', $server_conf);
if ($use_pg_upgrade)
{
	ok(pg_upgrade($old, $new), 'pg_upgrade 15 -> 18');
}
else
{
	# The same data by 18's pg_dump in plain format, without the pg_attver
	# column options 18 rejects (they are this 15 build's own bookkeeping,
	# not Harbor's data), into the new cluster initialised as above.
	$old->start;
	my $dir = PostgreSQL::Test::Utils::tempdir;
	$new->start;
	$new->command_ok(
		[ "$new_bindir/pg_dumpall", '--globals-only', '--no-role-passwords',
		  '--host' => $old->host, '--port' => $old->port, '--username' => 'postgres',
		  '--file' => "$dir/globals.sql" ],
		'pg_dumpall --globals-only');
	$new->command_ok(
		[ "$new_bindir/pg_dump", '--create', '--format' => 'plain',
		  '--host' => $old->host, '--port' => $old->port, '--username' => 'postgres',
		  '--file' => "$dir/registry.sql", 'registry' ],
		'pg_dump registry');
	my $attver = 0;
	open(my $in, '<', "$dir/registry.sql") or die $!;
	open(my $out, '>', "$dir/restore.sql") or die $!;
	while (my $line = <$in>)
	{
		if ($line =~ /^ALTER TABLE ONLY .* ALTER COLUMN .* SET \(pg_attver=\d+\);$/)
		{
			$attver++;
			next;
		}
		$attver++ if $line =~ s/(SET \([^)]*?)(?:pg_attver=\d+, |, pg_attver=\d+)/$1/;
		# Debian's pg_cron for 15 lives where it was created; pg_cron 1.6
		# as built for 18 insists on pg_catalog, and picks it itself
		$line =~ s/^(CREATE EXTENSION IF NOT EXISTS pg_cron) WITH SCHEMA \S+;$/$1;/;
		print $out $line;
	}
	close $in;
	close $out;
	note("left out $attver pg_attver column options");
	# the globals hold the bootstrap role, which exists already: that one error is expected
	run_log([ "$new_bindir/psql", '-X', '--quiet', '--host' => $new->host, '--port' => $new->port,
			  '--username' => 'postgres', '--dbname' => 'postgres', '--file' => "$dir/globals.sql" ]);
	$new->command_ok(
		[ "$new_bindir/psql", '-X', '--set' => 'ON_ERROR_STOP=1', '--quiet',
		  '--host' => $new->host, '--port' => $new->port, '--username' => 'postgres',
		  '--dbname' => 'postgres', '--file' => "$dir/restore.sql" ],
		'the dump restores into 18');
	$new->stop;
	$old->stop;
}

# ---- on 18: everything came across ----------------------------------------
# First without the worker, so the jobs are seen exactly as 15 left them.
$new->start;
is($new->safe_psql('postgres', 'SHOW server_version_num') >= 180000 ? 1 : 0, 1, 'the server is 18');
for my $what (sort keys %checks)
{
	is($new->safe_psql('registry', $checks{$what}), $before{$what}, "18: $what unchanged");
}

# Then as Harbor's new image would run it: the worker on.  The running
# job's first poll is due as if its 31 s had passed during the upgrade.
make_due($new, 'registry', "url = '${\ $url->('running')}'");
$new->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_cron,p2p_preheat'
p2p_preheat.database = 'registry'
});
$new->restart;
$new->poll_query_until('registry',
	"SELECT count(*) = 2 FROM p2p_preheat.job WHERE url IN ('${\ $url->('running')}', '${\ $url->('queued')}')"
	  . " AND state = 'succeeded'")
  or die 'the worker did not finish the unfinished jobs';
pass('18: the worker finished the queued and the running job (encrypted credentials)');

is(posts_for("$run/manifests/running"), 1, '18: the running job was followed, not sent again');

# a push after the upgrade
$new->safe_psql('registry', q{
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	VALUES (2, 1, 1, 'library/} . $run . q{', 'sha256:a2', 'IMAGE', 'm', 'm');
	INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 2, 'v2');
});
$new->poll_query_until('registry',
	"SELECT count(*) = 1 FROM p2p_preheat.job WHERE url = '${\ $url->('v2')}' AND state = 'running'")
  or die 'the push on 18 was not sent';
is(first_poll_after($new, 'registry', "url = '${\ $url->('v2')}'"), '31.0',
	'18: the new push\'s job is due for its first poll 31 s after it was accepted');
make_due($new, 'registry', "url = '${\ $url->('v2')}'");
$new->poll_query_until('registry',
	"SELECT count(*) = 1 FROM p2p_preheat.job WHERE url = '${\ $url->('v2')}' AND state = 'succeeded'")
  or die 'the push on 18 was not preheated';
pass('18: a new push is preheated');
is( $new->safe_psql('registry',
		"SELECT jobname, schedule FROM cron.job WHERE jobname = 'p2p_preheat_policy_1'"),
	'p2p_preheat_policy_1|0 2 * * *', '18: pg_cron still holds the schedule');

$new->stop;
done_testing();
