# The Debian package and the PGXN metadata.  scripts/build_deb.sh builds
# postgresql-<major>-p2p-preheat with pg_buildext (dpkg-buildpackage -us -uc,
# about 10 s); dpkg then installs it into a clean root that holds a copy of
# this PostgreSQL without any p2p_preheat file, and a cluster started from
# that root loads the packaged library and runs CREATE EXTENSION.  Nothing is
# installed on the machine itself.  META.json is checked against the rules of
# the PGXN meta spec 1.0.0 that apply to it.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $readme = $ENV{P2P_PREHEAT_README} or die "P2P_PREHEAT_README is not set";
my $repo = dirname($readme);
my $pg_config = $ENV{PG_CONFIG} || 'pg_config';
# Debian's packaging tools build for the majors Debian packages (15 on
# Debian 12); PostgreSQL 18 here is a source build with no Debian package.
my ($major) = `$pg_config --version` =~ /PostgreSQL (\d+)/;
plan skip_all => "Debian 12 packages PostgreSQL 15, not $major: no postgresql-$major-p2p-preheat to build"
  unless -d "/usr/lib/postgresql/$major/lib/pgxs" && `$pg_config --bindir` =~ m{^/usr/lib/postgresql/};
my $tmp = PostgreSQL::Test::Utils::tempdir();

# ---- build ------------------------------------------------------------------
my ($out, $err);
my $built = IPC::Run::run([ 'bash', "$repo/scripts/build_deb.sh", "$tmp/dist" ], '>', \$out, '2>', \$err);
ok($built, 'scripts/build_deb.sh builds the package') or diag("$out\n$err");
note($out);
my ($deb) = glob("$tmp/dist/postgresql-*-p2p-preheat_*.deb");
ok($deb, 'a postgresql-<major>-p2p-preheat package');

my $fields = `dpkg-deb -f '$deb' Package Version Depends`;
like($fields, qr/^Package: postgresql-$major-p2p-preheat$/m, "named for PostgreSQL $major");
chomp(my $ext_version = `sed -n "s/^default_version = '\\(.*\\)'/\\1/p" '$repo/p2p_preheat.control'`);
like($fields, qr/^Version: \Q$ext_version\E$/m, 'versioned as the extension');
like($fields, qr/^Depends: .*postgresql-$major\b.*libcurl4/m, 'depending on its server and libcurl');

# ---- install into a clean root ------------------------------------------------
my $root = "$tmp/root";
my $bindir = `'$pg_config' --bindir`;
chomp $bindir;
(my $prefix = $bindir) =~ s{/usr/lib/postgresql/$major/bin$}{} or die "unexpected bindir $bindir";
make_path("$root/usr/lib/postgresql", "$root/usr/share/postgresql", "$root/var/lib/dpkg/updates",
	"$root/var/lib/dpkg/info");
system('cp', '-a', "$prefix/usr/lib/postgresql/$major", "$root/usr/lib/postgresql/") == 0 or die;
system('cp', '-a', "$prefix/usr/share/postgresql/$major", "$root/usr/share/postgresql/") == 0 or die;
system("rm -rf $root/usr/lib/postgresql/$major/lib/p2p_preheat* $root/usr/lib/postgresql/$major/lib/bitcode/p2p_preheat* "
	  . "$root/usr/share/postgresql/$major/extension/p2p_preheat*") == 0
  or die;
open(my $fh, '>', "$root/var/lib/dpkg/status") or die;
close $fh;
ok(!-e "$root/usr/lib/postgresql/$major/lib/p2p_preheat.so", 'the root holds PostgreSQL without p2p_preheat');

# --force-depends: the root's dpkg database knows no other package
my $installed = IPC::Run::run(
	[ 'dpkg', "--root=$root", '--force-not-root', '--force-depends', '--log=/dev/null', '-i', $deb ],
	'>', \$out, '2>', \$err);
ok($installed, 'dpkg installs the package') or diag("$out\n$err");
my $files = `dpkg --root='$root' -L postgresql-$major-p2p-preheat`;
for my $f ("/usr/lib/postgresql/$major/lib/p2p_preheat.so",
	"/usr/share/postgresql/$major/extension/p2p_preheat.control",
	"/usr/share/postgresql/$major/extension/p2p_preheat--$ext_version.sql")
{
	like($files, qr/^\Q$f\E$/m, "the package owns $f");
	ok(-f "$root$f", "and it is installed");
}

# ---- a cluster from that root: the worker and CREATE EXTENSION ---------------
my $node = PostgreSQL::Test::Cluster->new('deb', install_path => "$root/usr/lib/postgresql/$major");
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'p2p_preheat'\np2p_preheat.database = 'postgres'\n");
$node->start;
is($node->safe_psql('postgres', q{CREATE EXTENSION p2p_preheat;
	SELECT extversion FROM pg_extension WHERE extname = 'p2p_preheat'}), $ext_version, 'CREATE EXTENSION works');
is($node->safe_psql('postgres', q{SELECT p2p_preheat.validate_extra_attrs('dragonfly', '{"scope":"single_peer"}'::json)}),
	'{"scope": "single_seed_peer"}', 'the packaged library answers');
$node->poll_query_until('postgres', 'SELECT pid IS NOT NULL FROM p2p_preheat.worker_status()')
  or die 'the worker did not start';
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'p2p_preheat dispatcher'}),
	'1', 'its background worker runs');
my $sharedir = $node->safe_psql('postgres',
	q{SELECT setting FROM pg_config() WHERE name = 'SHAREDIR'});
is($sharedir, "$root/usr/share/postgresql/$major", 'from the root the package was installed into');
$node->stop;

# ---- META.json (PGXN) ----------------------------------------------------------
my $meta = decode_json(slurp_file("$repo/META.json"));
my $semver = qr/^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;
is(join(',', grep { !exists $meta->{$_} } qw(name version abstract maintainer license provides meta-spec)),
	'', 'META.json has every mandatory field');
is($meta->{'meta-spec'}{version}, '1.0.0', 'it follows meta spec 1.0.0');
like($meta->{version}, $semver, 'its version is a semantic version');
is($meta->{version}, "$ext_version.0", 'that of the extension');
my $p = $meta->{provides}{p2p_preheat};
ok($p && -f "$repo/$p->{file}" && -f "$repo/$p->{docfile}", 'it provides p2p_preheat, naming files that exist');
is($p->{version}, $meta->{version}, 'at the same version');
like($meta->{license},
	qr/^(agpl_3|apache_1_1|apache_2_0|artistic_1|artistic_2|bsd|freebsd|gfdl_1_2|gfdl_1_3|gpl_1|gpl_2|gpl_3|lgpl_2_1|lgpl_3_0|mit|mozilla_1_0|mozilla_1_1|openssl|perl_5|postgresql|qpl_1_0|ssleay|sun|zlib|open_source|restricted|unrestricted|unknown)$/,
	'its license is one the spec names');
like($meta->{prereqs}{runtime}{requires}{PostgreSQL}, $semver, 'it requires a PostgreSQL version');
like($meta->{release_status}, qr/^(stable|testing|unstable)$/, 'a release status the spec knows');

done_testing();
