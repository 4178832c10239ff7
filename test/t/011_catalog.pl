# The extension's catalog, checked two ways:
#  - the README's reference lists every function, view, table and type of the
#    schema with who may use it, and the grants say exactly the same;
#  - an upgraded installation has the same catalog as a fresh one: function
#    definitions, views, columns, constraints, indexes, triggers, types,
#    grants and comments.  The previous release is installed, updated with
#    ALTER EXTENSION UPDATE, and compared.  While 1.0 is the only release, the
#    previous release is a scratch copy of it (make install-test-fixtures
#    installs it as version 0.9 with an empty upgrade script), which proves
#    the harness; a deliberate difference shows that the comparison sees one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";
my $readme = $ENV{P2P_PREHEAT_README} // ($fixture =~ s{test/fixtures/harbor\.sql$}{README.md}r);

my $node = PostgreSQL::Test::Cluster->new('catalog');
$node->init;
$node->start;

sub fresh_db
{
	my ($db, $version) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "\\i $fixture");
	$node->safe_psql($db, "SELECT harbor_fixture.create_tables('2.13')");
	$node->safe_psql($db,
		'CREATE EXTENSION p2p_preheat' . ($version ? " VERSION '$version'" : ''));
}

# who may use each object: the highest of PUBLIC, p2p_preheat_user and
# p2p_preheat_admin that holds EXECUTE (functions) or SELECT (relations)
my $grants_query = q{
	WITH o AS (
		SELECT 'function' AS kind, p.oid::regprocedure::text AS object,
			   CASE WHEN has_function_privilege('public', p.oid, 'EXECUTE') THEN 'PUBLIC'
					WHEN has_function_privilege('p2p_preheat_user', p.oid, 'EXECUTE') THEN 'p2p_preheat_user'
					WHEN has_function_privilege('p2p_preheat_admin', p.oid, 'EXECUTE') THEN 'p2p_preheat_admin'
					ELSE 'owner' END AS who
		  FROM pg_proc p WHERE p.pronamespace = 'p2p_preheat'::regnamespace
		UNION ALL
		SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, c.oid::regclass::text,
			   CASE WHEN has_table_privilege('public', c.oid, 'SELECT') THEN 'PUBLIC'
					WHEN has_table_privilege('p2p_preheat_user', c.oid, 'SELECT') THEN 'p2p_preheat_user'
					WHEN has_table_privilege('p2p_preheat_admin', c.oid, 'SELECT') THEN 'p2p_preheat_admin'
					ELSE 'owner' END
		  FROM pg_class c WHERE c.relnamespace = 'p2p_preheat'::regnamespace AND c.relkind IN ('r', 'v')
		UNION ALL
		SELECT 'type', t.oid::regtype::text, 'PUBLIC'
		  FROM pg_type t WHERE t.typnamespace = 'p2p_preheat'::regnamespace
		   AND t.typtype IN ('e', 'c') AND t.typrelid NOT IN
			   (SELECT oid FROM pg_class WHERE relkind IN ('r', 'v', 'S', 'i')))
	SELECT kind || ' | ' || object || ' | ' || who FROM o ORDER BY 1
};

fresh_db('fresh');
my @catalog = split /\n/, $node->safe_psql('fresh', $grants_query);

# The README's reference: rows of | `object` | kind | who | ... | between markers
open(my $fh, '<', $readme) or die "cannot read $readme: $!";
my $in = 0;
my @documented;
while (my $line = <$fh>)
{
	$in = 1, next if $line =~ /<!-- catalog:begin -->/;
	$in = 0 if $line =~ /<!-- catalog:end -->/;
	next unless $in;
	next unless $line =~ /^\|\s*`([^`]+)`\s*\|\s*(\w+)\s*\|\s*`?([\w]+)`?\s*\|/;
	push @documented, "$2 | $1 | $3";
}
close $fh;
@documented = sort @documented;
is_deeply(\@documented, \@catalog,
	"the README's reference lists every object with exactly its grants")
  or diag join("\n", "in the catalog:", @catalog, '', 'in the README:', @documented);

# A snapshot of everything an upgrade must reproduce, one line per fact.
my $snapshot = q{
	SELECT x FROM (
		SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid)
			   || ' acl=' || coalesce(p.proacl::text, '') || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') AS x
		  FROM pg_proc p WHERE p.pronamespace = 'p2p_preheat'::regnamespace AND p.prokind <> 'a'
		UNION ALL
		SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, '')
			   || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
			   || CASE WHEN c.relkind = 'v' THEN ' ' || pg_get_viewdef(c.oid) ELSE '' END
		  FROM pg_class c WHERE c.relnamespace = 'p2p_preheat'::regnamespace
		UNION ALL
		SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
			   || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
			   || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
			   || CASE WHEN a.attgenerated <> '' THEN ' generated' ELSE '' END
			   || ' comment=' || coalesce(col_description(a.attrelid, a.attnum), '')
		  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		 WHERE c.relnamespace = 'p2p_preheat'::regnamespace AND c.relkind IN ('r', 'v', 'c')
		   AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
		  FROM pg_constraint WHERE connamespace = 'p2p_preheat'::regnamespace
		UNION ALL
		SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
		 WHERE c.relnamespace = 'p2p_preheat'::regnamespace
		UNION ALL
		SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
		 WHERE c.relnamespace = 'p2p_preheat'::regnamespace AND NOT t.tgisinternal
		UNION ALL
		SELECT 'enum ' || enumtypid::regtype || ' ' || string_agg(enumlabel, ',' ORDER BY enumsortorder)
		  FROM pg_enum WHERE enumtypid IN (SELECT oid FROM pg_type WHERE typnamespace = 'p2p_preheat'::regnamespace)
		 GROUP BY enumtypid
		UNION ALL
		SELECT 'type ' || t.oid::regtype || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '')
		  FROM pg_type t WHERE t.typnamespace = 'p2p_preheat'::regnamespace AND t.typtype IN ('e', 'c')
		UNION ALL
		SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc || ' ' || coalesce(evttags::text, '')
		  FROM pg_event_trigger WHERE evtname LIKE 'p2p\_preheat%'
		UNION ALL
		SELECT 'config ' || unnest(extconfig)::regclass FROM pg_extension WHERE extname = 'p2p_preheat'
		UNION ALL
		SELECT 'role ' || rolname FROM pg_roles WHERE rolname LIKE 'p2p\_preheat\_%'
	) s ORDER BY x
};
my $fresh = $node->safe_psql('fresh', $snapshot);
ok(length($fresh) > 10000, 'the snapshot covers the whole catalog');

# Previous releases: each one whose frozen script the repository ships in
# sql/ (none yet), and the scratch 0.9 while 1.0 is the only release.
my $repo = $readme =~ s{/README\.md$}{}r;
my @released = map { m{p2p_preheat--([0-9.]+)\.sql$} ? $1 : () } glob("$repo/sql/p2p_preheat--*.sql");
my $available = $node->safe_psql('postgres',
	"SELECT string_agg(version, ',') FROM pg_available_extension_versions WHERE name = 'p2p_preheat'");
my %have = map { $_ => 1 } split /,/, $available;
my $previous = join(',', grep { $have{$_} } (@released, '0.9'));
SKIP:
{
	skip 'no previous release installed (make install-test-fixtures installs the scratch one)', 3
	  unless $previous;
	for my $v (split /,/, $previous)
	{
		my $db = 'from_' . ($v =~ s/\W/_/gr);
		fresh_db($db, $v);
		$node->safe_psql($db, 'ALTER EXTENSION p2p_preheat UPDATE');
		my $upgraded = $node->safe_psql($db, $snapshot);
		is($upgraded, $fresh, "$v upgraded has the catalog of a fresh install")
		  or diag `diff <(echo "$fresh") <(echo "$upgraded") | head -40`;
		# the comparison sees a difference when there is one
		$node->safe_psql($db, 'GRANT SELECT ON p2p_preheat.job_secret TO p2p_preheat_user');
		isnt($node->safe_psql($db, $snapshot), $fresh, 'a changed grant is seen');
		$node->safe_psql($db, "COMMENT ON TABLE p2p_preheat.job IS 'changed'");
		isnt($node->safe_psql($db, $snapshot), $fresh, 'a changed comment is seen');
	}
}

$node->stop;
done_testing();
