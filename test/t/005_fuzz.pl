# Fuzz run of the extra_attrs validator: 100,000 generated documents through
# validate_extra_attrs() and extra_attrs_problems(); the server must survive
# and only the documented SQLSTATEs (22P02, 23514) may come back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $count = $ENV{FUZZ_DOCS} // 100000;
my $gen = $ENV{FUZZ_GENERATOR} or die "FUZZ_GENERATOR is not set";
my $node = PostgreSQL::Test::Cluster->new('fuzz');
$node->init;
$node->start;
my $docs = $node->basedir . '/docs.b64';
system_or_bail("python3 $gen $count > $docs");

$node->safe_psql('postgres', qq{
	CREATE EXTENSION p2p_preheat;
	CREATE TABLE docs (b text);
	COPY docs FROM '$docs';
	CREATE TABLE outcome (vendor text, sqlstate text, n int);
});
my $t0 = time();
$node->safe_psql('postgres', q{
	DO $$
	DECLARE d text; v text; st text;
	BEGIN
		FOR d IN SELECT convert_from(decode(b, 'base64'), 'UTF8') FROM docs LOOP
			FOREACH v IN ARRAY ARRAY['dragonfly', 'kraken'] LOOP
				BEGIN
					PERFORM p2p_preheat.validate_extra_attrs(v, d);
					st := 'ok';
				EXCEPTION WHEN OTHERS THEN
					st := SQLSTATE;
				END;
				INSERT INTO outcome VALUES (v, st, 1);
			END LOOP;
			-- every problem at once must never raise, whatever the document
			PERFORM count(*) FROM p2p_preheat.extra_attrs_problems('dragonfly', d);
		END LOOP;
	END $$;
});
my $secs = time() - $t0;
my $summary = $node->safe_psql('postgres',
	"SELECT string_agg(vendor || ' ' || sqlstate || ' ' || n, ', ' ORDER BY vendor, sqlstate)
	   FROM (SELECT vendor, sqlstate, sum(n) AS n FROM outcome GROUP BY 1, 2) s");
diag(sprintf('%d documents, twice each plus extra_attrs_problems(), in %.1f s: %s', $count, $secs, $summary));
is($node->safe_psql('postgres', 'SELECT sum(n) FROM outcome'), 2 * $count, 'every document checked');
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT sqlstate, ',') FROM outcome WHERE sqlstate NOT IN ('ok', '22P02', '23514')"),
	'', 'only documented SQLSTATEs');
unlike(slurp_file($node->logfile), qr/server process .* was terminated|PANIC/, 'no backend crashed');
$node->stop;
done_testing();
