# The README's Quick start, run as written: its fenced blocks between the
# quickstart markers are read from README.md here, so the two cannot drift.
#   sh   each line runs with bash in a clean copy of the source tree; DESTDIR
#        keeps "make install" out of the system (the suite installed the same
#        build already), and the files it installs are checked;
#   ini  appended to postgresql.conf; the restart the README asks for follows;
#   sql  run by psql in Harbor's database, as a superuser, stopping on error.
# Harbor's database comes from the fixture: tables, a Dragonfly instance (the
# stand-in), a manual policy 1 and a scheduled policy 2.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $readme = $ENV{P2P_PREHEAT_README} or die "P2P_PREHEAT_README is not set";
my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $port = $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
my $pg_config = $ENV{PG_CONFIG} || 'pg_config';
my $repo = dirname($readme);

my $text = slurp_file($readme);
my ($quick) = $text =~ /<!-- quickstart:begin -->\n(.*?)<!-- quickstart:end -->/s
  or die 'no quickstart markers in README.md';
my @blocks;
while ($quick =~ /^```(\w+)\n(.*?)^```$/msg)
{
	push @blocks, { lang => $1, body => $2 };
}
is(join(' ', map { $_->{lang} } @blocks), 'sh ini sql sql', 'the Quick start has its four blocks, in order');

# ---- 1. build and install ---------------------------------------------------
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $src = "$tmp/src";
my $destdir = "$tmp/root";
# the source as a user has it (the test's own scratch space may lie inside it)
system("mkdir -p '$src' && tar -C '$repo' --exclude=./tmp_check --exclude=./.git -cf - . | tar -C '$src' -xf -") == 0
  or die "cannot copy $repo";
system("rm -rf '$src/.git' && make -s -C '$src' clean PG_CONFIG='$pg_config' >/dev/null 2>&1") == 0
  or die 'make clean failed';
{
	local $ENV{PG_CONFIG} = $pg_config;
	local $ENV{DESTDIR} = $destdir;
	for my $line (split /\n/, $blocks[0]{body})
	{
		next if $line =~ /^\s*(#.*)?$/;
		my ($out, $err);
		my $ok = IPC::Run::run([ 'bash', '-ec', "cd '$src' && $line" ], '>', \$out, '2>', \$err);
		ok($ok, "\"$line\" runs as written") or diag($err);
	}
}
my ($pkglib, $share) = map { chomp(my $d = `'$pg_config' --$_`); $d } qw(pkglibdir sharedir);
ok(-f "$destdir$pkglib/p2p_preheat.so", 'make install installs the library');
ok(-f "$destdir$share/extension/p2p_preheat.control", 'and the control file');
ok(-f "$destdir$share/extension/p2p_preheat--1.0.sql", 'and the install script');

# ---- Harbor's database, before anything of ours ---------------------------
my $node = PostgreSQL::Test::Cluster->new('quickstart');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE registry');
$node->safe_psql('registry', "\\i $fixture");
$node->safe_psql('registry', qq{
	CREATE ROLE harbor LOGIN;
	SELECT harbor_fixture.create_tables('2.13');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:$port');
	UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
	INSERT INTO repository (repository_id, name, project_id) VALUES (1, 'library/quickstart', 1);
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	VALUES (1, 1, 1, 'library/quickstart', 'sha256:q1', 'IMAGE', 'm', 'm');
	INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 1, '1.0'), (1, 1, '1.1');
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, filters, trigger, enabled) VALUES
		(1, 'now', 1, 1, '[{"type":"repository","value":"**"}]', '{"type":"manual"}', true),
		(2, 'nightly', 1, 1, '[{"type":"repository","value":"**"}]',
		 '{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}', true);
});

# ---- 2 and 3. postgresql.conf, then the restart ---------------------------
$node->append_conf('postgresql.conf', $blocks[1]{body});
$node->restart;

# ---- 4. both extensions ----------------------------------------------------
my ($rc, $out, $err) = $node->psql('registry', $blocks[2]{body}, on_error_stop => 1);
is($rc, 0, 'step 4 runs as written') or diag($err);
unlike($err, qr/NOTICE|WARNING|ERROR/, 'with the preload in place, CREATE EXTENSION has nothing to warn about');
like($out, qr/^\d+\|(idle|claiming|recording|dispatching|purging)$/m, 'worker_status() shows the worker running, with its pid');
is($node->safe_psql('registry', "SELECT schedule || ' ' || command FROM cron.job"),
	q{0 2 * * * SELECT p2p_preheat.run_policy(2, 'scheduled')}, 'the scheduled policy has its pg_cron job');
is($node->safe_psql('registry', q{SELECT pg_has_role('harbor', 'p2p_preheat_user', 'MEMBER')}),
	't', "Harbor's user may queue preheats");

# ---- 5. a run, and what it says while Dragonfly works ---------------------
($rc, $out, $err) = $node->psql('registry', $blocks[3]{body}, on_error_stop => 1);
is($rc, 0, 'step 5 runs as written') or diag($err);
like($out, qr/^1\|(Pending|Running)\|2\|/m, 'the execution is listed with its two jobs');
$node->poll_query_until('registry',
	"SELECT running = 2 FROM p2p_preheat.execution_status WHERE id = 1")
  or die 'the worker did not send the jobs';
is( $node->safe_psql('registry', q{
		SELECT e.status || ' ' || round(extract(epoch FROM e.next_check_at - min(j.sent_at)))
		  FROM p2p_preheat.execution_status e
		  JOIN p2p_preheat.execution_job ej ON ej.execution_id = e.id
		  JOIN p2p_preheat.job j ON j.id = ej.job_id
		 WHERE e.id = 1 GROUP BY e.status, e.next_check_at}),
	'Running 31', 'Running, and next_check_at says when Dragonfly is asked: 31 s after sending');
$node->poll_query_until('registry', "SELECT status = 'Success' FROM p2p_preheat.execution_status WHERE id = 1")
  or die 'the execution did not succeed';
is($node->safe_psql('registry', 'SELECT next_check_at IS NULL FROM p2p_preheat.execution_status WHERE id = 1'),
	't', 'once final, nothing is left to check');

$node->stop;
done_testing();
