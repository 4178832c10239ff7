# DROP DATABASE of the worker's database: the worker steps aside instead of
# blocking the drop, then waits quietly instead of crash-looping.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('dropdb');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'p2p_preheat'
p2p_preheat.database = 'harbor'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE harbor; CREATE EXTENSION p2p_preheat');
$node->safe_psql('harbor', 'CREATE EXTENSION p2p_preheat');
$node->poll_query_until('harbor',
	"SELECT pid IS NOT NULL AND state NOT LIKE 'waiting: database%' FROM p2p_preheat.worker_status()")
  or die 'worker did not start';

my $t0 = time();
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE harbor');
my $took = time() - $t0;
is($rc, 0, 'DROP DATABASE of the worker\'s database succeeds') or diag($err);
ok($took < 4, sprintf('and does not wait on the worker (%.2f s)', $took));

my $from = -s $node->logfile;
$node->poll_query_until('postgres',
	"SELECT state LIKE 'waiting: database \"harbor\" does not exist; create it%' FROM p2p_preheat.worker_status()")
  or die 'worker_status() does not name the missing database';
pass('worker_status() names the missing database and the fix');
sleep(10);
# every line the server wrote, but the test's own statements
my @lines = grep { /\S/ && !/002_drop_database\.pl/ } split /\n/, substr(slurp_file($node->logfile), $from);
ok(@lines <= 3, scalar(@lines) . ' log lines in the 10 s after the drop (no crash loop)') or diag(join("\n", @lines));
like(join("\n", @lines), qr/p2p_preheat worker is waiting: database "harbor" does not exist/,
	'the worker says once that it waits for its database');

$node->stop;
done_testing();
