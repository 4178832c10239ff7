# monitoring/postgres_exporter.yaml in the real postgres_exporter (Debian's
# prometheus-postgres-exporter), scraped over loopback with curl, against a
# cluster with the worker and jobs in every state and executions in every
# status; each metric is checked against the database.  The exporter's role
# gets exactly the README's grants (read from README.md).
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $readme = $ENV{P2P_PREHEAT_README} or die "P2P_PREHEAT_README is not set";
my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $port = $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
my $queries = dirname($readme) . '/monitoring/postgres_exporter.yaml';
my $exporter = '/usr/bin/prometheus-postgres-exporter';
-x $exporter or die "$exporter is missing (Debian package prometheus-postgres-exporter)";
my $run = sprintf('x%d', time());    # URLs unique to this run

my ($grants) = slurp_file($readme) =~ /<!-- monitoring:begin -->\n```sql\n(.*?)```\n<!-- monitoring:end -->/s
  or die 'no monitoring grants in README.md';

my $node = PostgreSQL::Test::Cluster->new('exporter');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'p2p_preheat'
p2p_preheat.database = 'postgres'
p2p_preheat.registry_url = 'https://harbor.example.com'
});
$node->start;
$node->safe_psql('postgres', "\\i $fixture");
$node->safe_psql('postgres', qq{
	SELECT harbor_fixture.create_tables('2.13');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:$port');
	UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
	INSERT INTO repository (repository_id, name, project_id) VALUES
		(1, 'library/$run-ok', 1), (2, 'library/$run-redirect', 1), (3, 'library/$run-jobfail', 1),
		(4, 'library/$run-later', 1), (5, 'library/$run-ratelimit', 1), (6, 'library/$run-cancel-ratelimit', 1);
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	SELECT r.repository_id, 1, r.repository_id, r.name, 'sha256:' || r.repository_id, 'IMAGE', 'm', 'm' FROM repository r;
	INSERT INTO tag (repository_id, artifact_id, name) SELECT repository_id, repository_id, '1.0' FROM repository;
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, filters, trigger, enabled)
	SELECT r.repository_id, split_part(r.name, '-', 2), 1, 1,
		   json_build_array(json_build_object('type', 'repository', 'value', substr(r.name, 9)))::text,
		   '{"type":"manual"}', true
	  FROM repository r;
	CREATE EXTENSION p2p_preheat;
});
$node->safe_psql('postgres', $grants);

# ---- jobs and executions in every state --------------------------------
# first the ones that end: succeeded and failed at the first poll (31 s),
# failed at once (a redirect)
$node->safe_psql('postgres', 'SELECT p2p_preheat.run_policy(id) FROM generate_series(1, 3) id');
$node->poll_query_until('postgres',
	q{SELECT string_agg(status, ',' ORDER BY id) = 'Success,Error,Error' FROM p2p_preheat.execution_status})
  or die 'the first executions did not end';
# then the ones that stay open while we scrape: running (until 31 s from now),
# queued (Dragonfly keeps answering 429), canceled, sending (a slow POST)
$node->safe_psql('postgres', qq{
	SELECT p2p_preheat.run_policy(id) FROM generate_series(4, 6) id;
	SELECT p2p_preheat.cancel(j.id) FROM p2p_preheat.job j WHERE j.url LIKE '%cancel-ratelimit%';
	SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/$run-slow/manifests/slow25000ms');
});
$node->poll_query_until('postgres', q{
	SELECT count(DISTINCT state) = 6 FROM p2p_preheat.job
	 WHERE state <> 'queued' OR attempts > 0})
  or die 'jobs did not reach every state';

# ---- the exporter -------------------------------------------------------
my $listen = PostgreSQL::Test::Cluster::get_free_port();
my $host = $node->host;
my $pgport = $node->port;
my ($exp_out, $exp_err) = ('', '');
my $h = IPC::Run::start(
	[ $exporter, "--web.listen-address=127.0.0.1:$listen", "--extend.query-path=$queries",
	  '--disable-default-metrics', '--disable-settings-metrics', '--log.level=warn' ],
	'>', \$exp_out, '2>', \$exp_err,
	init => sub {
		$ENV{DATA_SOURCE_NAME} = "user=prometheus host=$host port=$pgport dbname=postgres sslmode=disable";
	});
END { $h->kill_kill if $h; }

sub scrape
{
	for (1 .. 100)
	{
		my $body = `curl -sf http://127.0.0.1:$listen/metrics`;
		return $body if $? == 0 && $body =~ /p2p_preheat_/;
		sleep(0.1);
	}
	die "no metrics from the exporter: $exp_err";
}

# name and labels (without the exporter's own "server" label) => value
sub parse
{
	my %m;
	for (split /\n/, shift)
	{
		next unless /^(p2p_preheat_\w+|pg_exporter_\w+)(?:\{(.*)\})? (\S+)$/;
		my ($name, $labels, $value) = ($1, $2 // '', $3);
		my @l = grep { !/^server=/ } ($labels =~ /(\w+="(?:[^"\\]|\\.)*")/g);
		$m{ $name . '{' . join(',', sort @l) . '}' } = $value;
	}
	return \%m;
}

# States move (a retry, a slow POST timing out): scrape and read the database
# until both agree, a few times at most.
my $jobs_sql = q{
	SELECT string_agg(format('p2p_preheat_jobs_count{instance_id="1",state="%s"} %s', s, count), E'\n' ORDER BY s)
	  FROM (SELECT s::text AS s, (SELECT count(*) FROM p2p_preheat.job j WHERE j.state = s) AS count
			  FROM unnest(enum_range(NULL::p2p_preheat.job_state)) s) x};
sub metric_lines
{
	my ($m, $prefix) = @_;
	return join("\n", map { "$_ $m->{$_}" } sort grep { /^\Q$prefix\E\{/ } keys %$m);
}
sub executions
{
	my ($m) = @_;
	return join(',', map { "$_=" . ($m->{"p2p_preheat_executions_count{status=\"$_\"}"} // 'missing') }
		qw(Pending Running Success Error Stopped));
}
my ($m, $db);
for my $try (1 .. 10)
{
	$m = parse(scrape());
	$db = $node->safe_psql('postgres', $jobs_sql);
	last if metric_lines($m, 'p2p_preheat_jobs_count') eq $db
	  && executions($m) eq 'Pending=1,Running=1,Success=1,Error=2,Stopped=1';
	sleep(0.5);
}
my $got = metric_lines($m, 'p2p_preheat_jobs_count');
is($got, $db, 'jobs per instance and state: every state, as the table has them');
ok(!grep({ / 0$/ } split /\n/, $got), 'and every state has a job here');
is(executions($m), 'Pending=1,Running=1,Success=1,Error=2,Stopped=1', 'executions per status');

my ($age, $open) = split /\|/, $node->safe_psql('postgres',
	q{SELECT extract(epoch FROM oldest_queued_age), queued + sending + running FROM p2p_preheat.status});
my $mage = $m->{'p2p_preheat_queue_oldest_queued_age_seconds{instance_id="1"}'};
ok(defined $mage && $mage > 0 && abs($mage - $age) < 5, "oldest queued age ($mage s, the database says $age s)");
is($m->{'p2p_preheat_queue_open_jobs{instance_id="1"}'}, $open, 'open jobs');
my $overdue = $m->{'p2p_preheat_queue_overdue_seconds{instance_id="1"}'};
ok(defined $overdue && $overdue < 60, "overdue stays small while the worker runs ($overdue s)");

my ($err_at) = $node->safe_psql('postgres',
	q{SELECT extract(epoch FROM last_error_at) FROM p2p_preheat.status});
my @last = grep { /^p2p_preheat_last_error_timestamp_seconds/ } keys %$m;
is(scalar(@last), 1, 'one last-error series per instance');
like($last[0], qr/error="[^"]*pull manifest: N not found[^"]*",instance_id="1"/,
	'it carries the last failure, Dragonfly\'s reason, numbers as N');
ok(abs($m->{ $last[0] } - $err_at) < 1, 'and its time');

is($m->{'p2p_preheat_worker_up{}'}, '1', 'the worker is up');
my $sent = $node->safe_psql('postgres', 'SELECT sent FROM p2p_preheat.worker_status()');
ok($m->{'p2p_preheat_worker_sent{}'} >= 3 && $m->{'p2p_preheat_worker_sent{}'} <= $sent,
	"the sent counter (jobs Dragonfly accepted) ($m->{'p2p_preheat_worker_sent{}'}, now $sent)");
ok($m->{'p2p_preheat_worker_retried{}'} >= 1, 'and its retries (Dragonfly answering 429)');
like(join(' ', grep { /^p2p_preheat_worker_state_info/ } keys %$m),
	qr/^p2p_preheat_worker_state_info\{state="(idle|claiming|dispatching|purging)"\}$/, 'its state, as one info series');
my @load = grep { /^pg_exporter_user_queries_load_error\{/ } keys %$m;
is(join(' ', map { $m->{$_} } @load), '0', 'the exporter loaded the queries file without error');
is($m->{'pg_exporter_last_scrape_error{}'}, '0', 'and ran every query without error');

# the worker gone (the server restarted without the preload): up is 0 and
# the state says why
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->restart;
$m = parse(scrape());
is($m->{'p2p_preheat_worker_up{}'}, '0', 'without the worker, up is 0');
ok(exists $m->{'p2p_preheat_worker_state_info{state="not running: p2p_preheat is not in shared_preload_libraries"}'},
	'and the state says why');

$h->kill_kill;
undef $h;
$node->stop;
done_testing();
