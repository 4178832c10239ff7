# Lints every PL/pgSQL function of the extension with plpgsql_check, in a
# database holding Harbor's tables and pg_cron, so that static references
# to cron.* are checked too.  Any error or warning fails the test; where
# dynamic SQL is truly needed, the function carries a plpgsql_check pragma
# with a one-line reason.  Skipped only when the plpgsql_check package is not
# built for this PostgreSQL major (Debian ships it for 15).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";

my $node = PostgreSQL::Test::Cluster->new('lint');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
});
$node->start;

my $available = $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_available_extensions WHERE name = 'plpgsql_check'");
plan skip_all => 'plpgsql_check is not installed for this PostgreSQL major' unless $available;

$node->safe_psql('postgres', "\\i $fixture");
$node->safe_psql('postgres', q{
	SELECT harbor_fixture.create_tables('2.13');
	CREATE EXTENSION pg_cron;
	CREATE EXTENSION p2p_preheat;
	CREATE EXTENSION plpgsql_check;
});

# trigger functions are checked against a table they fire on
my $report = $node->safe_psql('postgres', q{
	WITH f AS (
		SELECT p.oid,
			   CASE WHEN p.prorettype = 'trigger'::regtype
					THEN coalesce((SELECT min(t.tgrelid)::bigint FROM pg_trigger t WHERE t.tgfoid = p.oid), -1)
					ELSE 0 END AS rel
		  FROM pg_proc p
		 WHERE p.pronamespace = 'p2p_preheat'::regnamespace
		   AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql'))
	SELECT f.oid::regprocedure || ': a trigger function on no table here, so it cannot be checked'
	  FROM f WHERE f.rel = -1
	UNION ALL
	SELECT f.oid::regprocedure || ': ' || c.level || ' ' || coalesce(c.sqlstate, '') || ' ' || c.message
		   || coalesce(' (line ' || c.lineno || ')', '') || coalesce(' ' || c.detail, '')
	  FROM (SELECT * FROM f WHERE f.rel <> -1) f, LATERAL plpgsql_check_function_tb(f.oid, f.rel::oid::regclass,
				fatal_errors => false, other_warnings => true, extra_warnings => true,
				performance_warnings => false, security_warnings => true) c
	ORDER BY 1
});
my $functions = $node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_proc WHERE pronamespace = 'p2p_preheat'::regnamespace
	   AND prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')});
ok($functions > 10, "$functions PL/pgSQL functions checked");
is($report, '', 'plpgsql_check reports nothing') or diag $report;

$node->stop;
done_testing();
