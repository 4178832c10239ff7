# Scaffolding shared by the TAP tests in test/t: a server with the extension
# preloaded and Harbor's tables from the fixture, and counts of what the
# Dragonfly stand-in received.  A test finds it with
#   use FindBin; use lib "$FindBin::RealBin/../lib"; use P2PTest;
# so neither prove's -I nor PERL5LIB has to name this directory.
package P2PTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Time::HiRes qw(sleep);

our @EXPORT = qw(posts_for posts_received make_due first_poll_after harbor_node harbor_with_instance
  own_standin);

# POSTs the stand-in (its log: DRAGONFLY_LOG) accepted with 200 for URLs
# containing $marker
sub posts_for
{
	my ($marker) = @_;
	return _count_log(sub { index($_[0], $marker) >= 0 && $_[0] =~ /"status": ?200/ });
}

# POSTs to create a job the stand-in received for URLs containing $marker,
# whatever it answered
sub posts_received
{
	my ($marker) = @_;
	return _count_log(
		sub { index($_[0], $marker) >= 0 && index($_[0], '"POST /oapi/v1/jobs"') >= 0 });
}

sub _count_log
{
	my ($match) = @_;
	my $log = $ENV{DRAGONFLY_LOG} or die "DRAGONFLY_LOG is not set";
	open(my $fh, '<', $log) or return 0;
	my $n = 0;
	while (my $line = <$fh>)
	{
		$n++ if $match->($line);
	}
	close $fh;
	return $n;
}

# Brings the next poll or retry of the open jobs matching $where (a condition
# on p2p_preheat.job) forward to now, as if its time had come, and wakes the
# worker as its own timer would.  Tests keep the shipped
# p2p_preheat.poll_schedule (the first poll 31 s after Dragonfly accepts a
# job) and retry_base (1 s): they move a job's clock, never a setting.
sub make_due
{
	my ($node, $db, $where) = @_;
	$node->safe_psql($db, qq{
		UPDATE p2p_preheat.job SET next_attempt_at = now() WHERE open AND ($where);
		SELECT p2p_preheat._wake_worker();
	});
	return;
}

# When the running, never polled jobs matching $where are first polled: the
# distinct seconds from Dragonfly's acceptance (sent_at) to next_attempt_at,
# to 0.1 s, comma-separated ('31.0' with the shipped poll_schedule).
sub first_poll_after
{
	my ($node, $db, $where) = @_;
	return $node->safe_psql($db, qq{
		SELECT string_agg(DISTINCT round(extract(epoch FROM next_attempt_at - sent_at), 1)::text, ',')
		  FROM p2p_preheat.job WHERE state = 'running' AND polls = 0 AND ($where)});
}

# A started server with Harbor's fixture loaded and, in postgresql.conf, only
# what a user must set: the extension preloaded (unless preload => 0), the
# worker's database and the registry's URL.  Anything else a test needs goes
# in conf => '...', with a comment there saying why.
sub harbor_node
{
	my ($name, %opt) = @_;
	my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opt{init} // {} });
	my $preload = ($opt{preload} // 1)
	  ? "shared_preload_libraries = 'p2p_preheat'\np2p_preheat.database = 'postgres'\n"
	  : '';
	$node->append_conf('postgresql.conf',
		$preload . "p2p_preheat.registry_url = 'https://harbor.example.com'\n" . ($opt{conf} // ''));
	$node->start;
	$node->safe_psql('postgres', "\\i $fixture");
	return $node;
}

# Harbor's tables of $version, instance 1 pointing at the stand-in (the
# shared one unless port => ...) with an OAuth token it accepts (token =>
# ..., default t-secret-1), and the extension created
sub harbor_with_instance
{
	my ($node, $version, %opt) = @_;
	my $port = $opt{port} // $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
	my $token = $opt{token} // 't-secret-1';
	$node->safe_psql('postgres', qq{
		SELECT harbor_fixture.create_tables('$version');
		SELECT harbor_fixture.add_instances('http://127.0.0.1:$port');
		CREATE EXTENSION p2p_preheat;
		UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "$token"}' WHERE id = 1;
	});
	return;
}

# A stand-in of the test's own, started with @args (its tokens, clusters,
# faults); returns its port and log file.  It stops when the test ends.
my @own_standins;
sub own_standin
{
	my (@args) = @_;
	my $standin = $ENV{STANDIN} or die "STANDIN is not set";
	my $dir = PostgreSQL::Test::Utils::tempdir;
	my $h = IPC::Run::start(
		[
			$standin, '--host', '127.0.0.1', '--port', '0',
			'--port-file', "$dir/port", '--log-file', "$dir/standin.log", @args
		],
		'>', "$dir/out", '2>&1');
	push @own_standins, $h;
	for (1 .. 100) { last if -s "$dir/port"; sleep(0.05); }
	my $port = -s "$dir/port" ? PostgreSQL::Test::Utils::slurp_file("$dir/port") : '';
	chomp $port;
	die "stand-in did not start" unless $port =~ /^\d+$/;
	return ($port, "$dir/standin.log");
}
END { $_->kill_kill for @own_standins; }

1;
