# Scheduled policies mirrored as pg_cron jobs (the real pg_cron): created on
# save, moved on edit, removed on disable and delete, repaired by
# sync_schedules(), refused when pg_cron cannot express the cron, and run
# by pg_cron itself.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,p2p_preheat'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
p2p_preheat.database = 'postgres'
p2p_preheat.registry_url = 'https://harbor.example.com'
});
$node->start;
$node->safe_psql('postgres', "\\i $fixture");
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	SELECT harbor_fixture.create_tables('2.13');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:9');
	INSERT INTO repository (repository_id, name, project_id) VALUES (1, 'library/app', 1);
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	VALUES (1, 1, 1, 'library/app', 'sha256:a1', 'IMAGE', 'm', 'm');
	INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 1, '1.0'), (1, 1, '1.1');
	CREATE EXTENSION p2p_preheat;
});

sub cron_job
{
	return $node->safe_psql('postgres',
		"SELECT schedule || ' | ' || command FROM cron.job WHERE jobname = 'p2p_preheat_policy_1'");
}

$node->safe_psql('postgres', q{
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters)
	VALUES (1, 'nightly', 1, 1, true, '{"type":"scheduled","trigger_setting":{"cron":"0 0 2 * * *"}}',
			'[{"type":"repository","value":"**"},{"type":"tag","value":"**"}]');
});
is(cron_job(), q{0 2 * * * | SELECT p2p_preheat.run_policy(1, 'scheduled')},
	'saving a scheduled policy creates its pg_cron job');

$node->safe_psql('postgres',
	q{UPDATE p2p_preheat_policy SET trigger = '{"type":"scheduled","trigger_setting":{"cron":"0 30 3 * * 1-5"}}' WHERE id = 1});
is(cron_job(), q{30 3 * * 1-5 | SELECT p2p_preheat.run_policy(1, 'scheduled')}, 'editing the cron moves the job');

my ($rc, $out, $err) = $node->psql('postgres',
	q{UPDATE p2p_preheat_policy SET trigger = '{"type":"scheduled","trigger_setting":{"cron":"*/10 * * * * *"}}' WHERE id = 1});
like($err, qr/which pg_cron cannot express/, 'a cron pg_cron cannot express is refused at save time');
is(cron_job(), q{30 3 * * 1-5 | SELECT p2p_preheat.run_policy(1, 'scheduled')}, 'and the job is unchanged');

$node->safe_psql('postgres', 'UPDATE p2p_preheat_policy SET enabled = false WHERE id = 1');
is(cron_job(), '', 'disabling removes the job');
$node->safe_psql('postgres', 'UPDATE p2p_preheat_policy SET enabled = true WHERE id = 1');
is(cron_job(), q{30 3 * * 1-5 | SELECT p2p_preheat.run_policy(1, 'scheduled')}, 'enabling brings it back');

# drift: someone removed the job, and left one for a policy that is gone
$node->safe_psql('postgres', q{
	SELECT cron.unschedule('p2p_preheat_policy_1');
	SELECT cron.schedule('p2p_preheat_policy_42', '0 1 * * *', 'SELECT 1');
});
is($node->safe_psql('postgres', 'SELECT p2p_preheat.sync_schedules()'), '2', 'sync_schedules() repairs both');
is(cron_job(), q{30 3 * * 1-5 | SELECT p2p_preheat.run_policy(1, 'scheduled')}, 'the job is back');
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE jobname = 'p2p_preheat_policy_42'"),
	'0', 'the orphan is gone');
is($node->safe_psql('postgres', 'SELECT p2p_preheat.sync_schedules()'), '0', 'a second sync changes nothing');

# pg_cron itself runs the policy: every minute, so the next minute boundary
$node->safe_psql('postgres',
	q{UPDATE p2p_preheat_policy SET trigger = '{"type":"scheduled","trigger_setting":{"cron":"0 * * * * *"}}' WHERE id = 1});
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM p2p_preheat.execution WHERE policy_id = 1 AND trigger = 'scheduled'")
  or die 'pg_cron did not run the policy';
is( $node->safe_psql('postgres',
		"SELECT candidates FROM p2p_preheat.execution WHERE trigger = 'scheduled' ORDER BY id LIMIT 1"),
	'2', 'the scheduled run queued a job per tag');
like($node->safe_psql('postgres',
		"SELECT status FROM cron.job_run_details ORDER BY runid LIMIT 1"), qr/succeeded/, 'pg_cron reports success');

$node->safe_psql('postgres', 'DELETE FROM p2p_preheat_policy WHERE id = 1');
is(cron_job(), '', 'deleting the policy removes the job');

$node->stop;
done_testing();
