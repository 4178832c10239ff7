# Harbor's database role must never become superuser.  Harbor's role owns
# Harbor's tables and may put anything in them: a view in place of a table,
# a trigger, a row-level security policy, each calling a function of its own.
# Every path of ours that reads those tables (the policy sync trigger,
# the worker, preheat_url() called by a superuser, the push trigger, and
# CREATE EXTENSION carrying Harbor 2.12's scope) must run that function as
# Harbor's role or not at all.  The attacker's function logs who it ran as
# and tries ALTER ROLE ... SUPERUSER whenever it runs as anyone else.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use P2PTest;

my $port = $ENV{DRAGONFLY_PORT} or die "DRAGONFLY_PORT is not set";
my $fixture = $ENV{HARBOR_FIXTURE} or die "HARBOR_FIXTURE is not set";

my $node = harbor_node('escalation');
$node->safe_psql('postgres', q{
	CREATE ROLE harbor LOGIN;
	GRANT CREATE, USAGE ON SCHEMA public TO harbor;
	GRANT USAGE ON SCHEMA harbor_fixture TO harbor;
});

sub as_harbor
{
	my ($sql) = @_;
	return $node->psql('postgres', $sql, extra_params => [ '-U', 'harbor' ]);
}

sub harbor_is_superuser
{
	return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'harbor'");
}

# rows the attacker's function logged as another role than harbor
sub ran_as_others
{
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM public.pwn_log WHERE at_user <> 'harbor'");
}

# Harbor 2.12's tables, owned by Harbor's role, with one scope to carry over
my ($rc, $out, $err) = as_harbor(qq{
	SELECT harbor_fixture.create_tables('2.12');
	SELECT harbor_fixture.add_instances('http://127.0.0.1:$port');
	UPDATE p2p_preheat_instance SET auth_mode = 'OAUTH', auth_data = '{"token": "t-secret-1"}' WHERE id = 1;
	INSERT INTO repository (repository_id, name, project_id) VALUES (1, 'library/app', 1);
	INSERT INTO artifact (id, project_id, repository_id, repository_name, digest, type, media_type, manifest_media_type)
	VALUES (1, 1, 1, 'library/app', 'sha256:a1', 'IMAGE', 'm', 'm');
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, enabled, trigger, filters, scope)
	VALUES (1, 'p1', 1, 1, true, '{"type": "event_based"}', '[{"type":"repository","value":"**"}]', 'all_peers');
	CREATE TABLE public.pwn_log (at_user name, sess name, via text);
	CREATE FUNCTION public.pwn(via text) RETURNS boolean LANGUAGE plpgsql AS \$\$
	BEGIN
		INSERT INTO public.pwn_log VALUES (current_user, session_user, via);
		IF current_user <> 'harbor' THEN
			EXECUTE 'ALTER ROLE harbor SUPERUSER';
		END IF;
		RETURN true;
	END \$\$;
	CREATE FUNCTION public.pwn_trigger() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN PERFORM public.pwn(TG_NAME); RETURN NEW; END \$\$;
	-- Harbor's own trigger on its policy table: fires on CREATE EXTENSION's scope carry-over
	CREATE TRIGGER harbor_own BEFORE UPDATE ON p2p_preheat_policy
		FOR EACH ROW EXECUTE FUNCTION public.pwn_trigger();
});
is($rc, 0, "Harbor's role creates its tables") or diag $err;

# CREATE EXTENSION, run by a superuser, updates Harbor's table to carry scope
$node->safe_psql('postgres', 'CREATE EXTENSION p2p_preheat; GRANT p2p_preheat_user TO harbor;');
is($node->safe_psql('postgres', 'SELECT extra_attrs FROM p2p_preheat_policy WHERE id = 1'),
	'{"scope": "all_peers"}', 'CREATE EXTENSION carried the scope');
is($node->safe_psql('postgres', "SELECT count(*) FROM public.pwn_log WHERE via = 'harbor_own'"),
	'1', "Harbor's own trigger ran during CREATE EXTENSION");
is(ran_as_others(), '0', "CREATE EXTENSION ran Harbor's trigger as Harbor's role");
is(harbor_is_superuser(), 'f', 'rolsuper stays false after CREATE EXTENSION');

# The attack of the security review: the instance table becomes a view
($rc, $out, $err) = as_harbor(q{
	ALTER TABLE p2p_preheat_instance RENAME TO p2p_preheat_instance_real;
	CREATE VIEW p2p_preheat_instance AS
		SELECT * FROM p2p_preheat_instance_real WHERE public.pwn('view');
});
is($rc, 0, 'the instance table is now a view');
($rc, $out, $err) = as_harbor("UPDATE p2p_preheat_policy SET enabled = enabled WHERE name = 'p1'");
like($err, qr/is not one of Harbor's tables/, 'the policy sync trigger refuses the view');
is(ran_as_others(), '0', 'through the policy sync trigger: never as another role');
is(harbor_is_superuser(), 'f', 'rolsuper stays false after the policy update');

# preheat_url(), called by a superuser, reads the instance
($rc, $out, $err) = $node->psql('postgres',
	"SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/app/manifests/1')");
like($err, qr/is not one of Harbor's tables/, 'preheat_url() refuses the view');
is(ran_as_others(), '0', 'through preheat_url(): never as another role');

# The superuser writing a policy: the validation trigger reads the instance's vendor
($rc, $out, $err) = $node->psql('postgres',
	"UPDATE p2p_preheat_policy SET extra_attrs = '{\"scope\": \"all_seed_peers\"}' WHERE id = 1");
is(ran_as_others(), '0', 'through the validation trigger under a superuser: never as another role');

# The worker: a job is queued, then the table is swapped before the worker claims it
as_harbor(q{
	DROP VIEW p2p_preheat_instance;
	ALTER TABLE p2p_preheat_instance_real RENAME TO p2p_preheat_instance;
});
my $offset = -s $node->logfile;
($rc, $out, $err) = as_harbor(q{
	BEGIN;
	SELECT p2p_preheat.preheat(1, 'app', 'worker-1');
	ALTER TABLE p2p_preheat_instance RENAME TO p2p_preheat_instance_real;
	CREATE VIEW p2p_preheat_instance AS
		SELECT * FROM p2p_preheat_instance_real WHERE public.pwn('worker');
	COMMIT;
});
is($rc, 0, 'a job is queued and the instance table swapped in one transaction') or diag $err;
ok($node->wait_for_log(qr/is not one of Harbor's tables/, $offset),
	'the worker refuses the view');
is(ran_as_others(), '0', 'through the worker: never as another role');
is($node->safe_psql('postgres', "SELECT state FROM p2p_preheat.job WHERE url LIKE '%worker-1'"),
	'queued', 'the job waits, unsent');

# The push trigger reads repository, project, artifact and labels
as_harbor(q{
	DROP VIEW p2p_preheat_instance;
	ALTER TABLE p2p_preheat_instance_real RENAME TO p2p_preheat_instance;
	ALTER TABLE repository RENAME TO repository_real;
	CREATE VIEW repository AS SELECT * FROM repository_real WHERE public.pwn('push');
});
($rc, $out, $err) = as_harbor("INSERT INTO tag (repository_id, artifact_id, name) VALUES (1, 1, 'pushed')");
is($rc, 0, 'the push itself commits');
like($node->safe_psql('postgres', 'SELECT error FROM p2p_preheat.event_error ORDER BY id DESC LIMIT 1'),
	qr/is not one of Harbor's tables/, 'the push trigger refuses the view and records why');
is(ran_as_others(), '0', 'through the push trigger: never as another role');
as_harbor(q{
	DROP VIEW repository;
	ALTER TABLE repository_real RENAME TO repository;
});

# A table that stays Harbor's ordinary table but calls the attacker's function
# through row-level security: it runs, as Harbor's role only.
($rc, $out, $err) = as_harbor(q{
	ALTER TABLE p2p_preheat_instance ENABLE ROW LEVEL SECURITY;
	ALTER TABLE p2p_preheat_instance FORCE ROW LEVEL SECURITY;
	CREATE POLICY spy ON p2p_preheat_instance USING (public.pwn('rls'));
});
is($rc, 0, 'row-level security with the function');
my $before = $node->safe_psql('postgres', "SELECT count(*) FROM public.pwn_log WHERE via = 'rls'");
$node->safe_psql('postgres',
	"SELECT p2p_preheat.preheat_url(1, 'https://harbor.example.com/v2/library/app/manifests/rls')");
$node->poll_query_until('postgres',
	"SELECT state IN ('running', 'succeeded') FROM p2p_preheat.job WHERE url LIKE '%/rls'")
  or die 'the worker did not send the job through row-level security';
ok($node->safe_psql('postgres', "SELECT count(*) FROM public.pwn_log WHERE via = 'rls'") > $before,
	"the policy's function ran");
is(ran_as_others(), '0', 'row-level security functions run as Harbor only, from superuser calls and the worker');
is(harbor_is_superuser(), 'f', 'rolsuper stays false at the end');

# CREATE EXTENSION on the proposal's json column converts it to text: the
# rewrite re-checks Harbor's constraints on the column, so a CHECK of Harbor's runs, as
# Harbor only.
$node->safe_psql('postgres', 'CREATE DATABASE jsondb OWNER harbor');
$node->safe_psql('jsondb', "\\i $fixture");
$node->safe_psql('jsondb', 'GRANT CREATE, USAGE ON SCHEMA public TO harbor; GRANT USAGE ON SCHEMA harbor_fixture TO harbor');
($rc, $out, $err) = $node->psql('jsondb', q{
	SELECT harbor_fixture.create_tables('proposal');
	CREATE TABLE public.pwn_log (at_user name, sess name, via text);
	CREATE FUNCTION public.pwn(via text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.pwn_log VALUES (current_user, session_user, via);
		IF current_user <> 'harbor' THEN
			EXECUTE 'ALTER ROLE harbor SUPERUSER';
		END IF;
		RETURN true;
	END $$;
	INSERT INTO p2p_preheat_policy (id, name, project_id, provider_id, extra_attrs)
	VALUES (1, 'p1', 1, 1, '{}');
	ALTER TABLE p2p_preheat_policy ADD CONSTRAINT spy CHECK (public.pwn('check ' || coalesce(extra_attrs::text, '')));
}, extra_params => [ '-U', 'harbor' ]);
is($rc, 0, "Harbor's json table with a CHECK of its own") or diag $err;
my $checks = $node->safe_psql('jsondb', "SELECT count(*) FROM public.pwn_log");
$node->safe_psql('jsondb', 'CREATE EXTENSION p2p_preheat');
is($node->safe_psql('jsondb', "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'p2p_preheat_policy'::regclass AND attname = 'extra_attrs'"),
	'text', 'CREATE EXTENSION converted extra_attrs to text');
ok($node->safe_psql('jsondb', "SELECT count(*) FROM public.pwn_log") > $checks,
	"the rewrite ran Harbor's CHECK");
is($node->safe_psql('jsondb', "SELECT count(*) FROM public.pwn_log WHERE at_user <> 'harbor'"),
	'0', "the conversion ran Harbor's CHECK as Harbor's role");
is(harbor_is_superuser(), 'f', 'rolsuper stays false after the conversion');

$node->stop;
done_testing();
