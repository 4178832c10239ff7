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
$node->safe_psql('postgres', 'CREATE DATABASE harbor');
$node->safe_psql('harbor', 'CREATE EXTENSION p2p_preheat');
$node->poll_query_until('harbor', "SELECT state = 'idle' FROM p2p_preheat.worker_status()")
  or die 'worker did not start';

my $t0 = time();
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE harbor');
my $took = time() - $t0;
is($rc, 0, 'DROP DATABASE of the worker\'s database succeeds') or diag($err);
ok($took < 4, sprintf('and does not wait on the worker (%.2f s)', $took));

sleep(4);
my $log = slurp_file($node->logfile);
my $fatals = () = $log =~ /FATAL:  database "harbor" does not exist/g;
ok($fatals <= 1, "no crash loop on the missing database ($fatals FATAL lines)");
like($log, qr/database "harbor" does not exist; waiting for it/, 'the worker waits for its database');

$node->stop;
done_testing();
