/*
 * p2p_preheat.c
 *		Module entry point: settings shared by every part of the extension.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include <limits.h>
#include "utils/guc.h"

#include "dispatch.h"
#include "extra_attrs.h"
#include "harbor.h"
#include "harbor_auth.h"
#include "harbor_token.h"
#include "http.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* read from SQL only (p2p_preheat._database_runs_policies()) */
static int	run_policies = 0;
static const struct config_enum_entry run_policies_options[] = {
	{"database", 0, false},
	{"harbor", 1, false},
	{NULL, 0, false}
};

/*
 * p2p_preheat.registry_url: empty (not set) or an absolute http(s) URL, so
 * that a URL without a scheme is refused where it is typed, not by
 * Dragonfly for every job.
 */
static bool
check_registry_url(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	const char *host;

	if (v == NULL || v[0] == '\0')
		return true;
	if (pg_strncasecmp(v, "http://", 7) == 0)
		host = v + 7;
	else if (pg_strncasecmp(v, "https://", 8) == 0)
		host = v + 8;
	else
	{
		GUC_check_errdetail("p2p_preheat.registry_url must be an absolute http or https URL, not \"%s\".", v);
		GUC_check_errhint("Set Harbor's external URL with its scheme, such as 'https://harbor.example.com'.");
		return false;
	}
	if (host[0] == '\0' || host[0] == '/' || strpbrk(v, " \t\r\n?#") != NULL)
	{
		GUC_check_errdetail("p2p_preheat.registry_url must be a URL with a host and without spaces, "
							"a query or a fragment, not \"%s\".", v);
		GUC_check_errhint("Set Harbor's external URL, such as 'https://harbor.example.com'.");
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	DefineCustomBoolVariable("p2p_preheat.allow_unknown_attrs",
							 "Lets extra_attrs keys through that this version does not know.",
							 "For Dragonfly releases newer than p2p_preheat; "
							 "unknown keys are otherwise refused because Dragonfly ignores them silently.",
							 &ea_allow_unknown_attrs,
							 false,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.max_extra_attrs_size",
							"Largest extra_attrs document accepted.",
							NULL,
							&ea_max_size_kb,
							64, 1, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	/* where Harbor's tables are */
	DefineCustomStringVariable("p2p_preheat.harbor_schema",
							   "Schema in which Harbor's tables are attached to automatically.",
							   "A p2p_preheat_policy table created in any other schema is left alone; "
							   "a superuser may attach one with p2p_preheat.attach().",
							   &harbor_schema_setting, "public",
							   PGC_SUSET, 0, NULL, NULL, NULL);

	/* where Dragonfly fetches images from, and how it logs in there */
	DefineCustomStringVariable("p2p_preheat.registry_url",
							   "Harbor's external URL, as Dragonfly reaches it.",
							   "Manifest URLs are built as <registry_url>/v2/<project>/<repository>/manifests/<tag>.",
							   &dispatch_registry_url, "",
							   PGC_SUSET, 0, check_registry_url, NULL, NULL);
	DefineCustomStringVariable("p2p_preheat.registry_credentials_file",
							   "File holding {\"username\": ..., \"password\": ...} of a registry robot account.",
							   "Read by the server; sent to Dragonfly as args.username and args.password, "
							   "only for manifest URLs with the scheme, host and port of p2p_preheat.registry_url.",
							   &registry_credentials_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("p2p_preheat.secret_key_file",
							   "Harbor's secret key file, to decrypt auth_data stored as <enc-v1>.",
							   NULL,
							   &harbor_secret_key_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("p2p_preheat.token_private_key_file",
							   "Harbor core's private key (PEM), to sign a pull token for each preheat.",
							   "A job without headers from its caller, for a manifest on p2p_preheat.registry_url, "
							   "sends Dragonfly a short-lived token that can pull its one repository, as Harbor does.",
							   &harbor_token_private_key_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	/* HTTP */
	DefineCustomIntVariable("p2p_preheat.max_in_flight",
							"Most HTTP requests to Dragonfly in flight at once.",
							NULL, &http_max_in_flight, 64, 1, 10000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.connect_timeout",
							"Time allowed to connect to Dragonfly.",
							NULL, &http_connect_timeout_ms, 5000, 1, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.request_timeout",
							"Time allowed for a whole request to Dragonfly.",
							NULL, &http_request_timeout_ms, 30000, 1, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("p2p_preheat.ca_file",
							   "CA bundle to verify Dragonfly's TLS certificate with (empty: the system's).",
							   NULL, &http_ca_file, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomEnumVariable("p2p_preheat.run_policies",
							 "Who runs Harbor's preheat policies: the database, or Harbor's job service.",
							 "One runner per policy, so that no image is preheated twice.",
							 &run_policies, 0, run_policies_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("p2p_preheat.allow_link_local",
							 "Lets instance endpoints resolve to link-local, cloud metadata and unspecified addresses.",
							 "Checked at connect time: 169.254.0.0/16, fe80::/10, 100.100.100.200, fd00:ec2::254, "
							 "0.0.0.0/8, :: and IPv6 forms carrying a refused IPv4 address.",
							 &http_allow_link_local, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("p2p_preheat.proxy",
							   "HTTP proxy for requests to Dragonfly (empty: none).",
							   "Proxy environment variables (http_proxy, no_proxy, ...) are never used.",
							   &http_proxy, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.max_answer_size",
							"Largest answer read from Dragonfly; a larger one is dropped and retried.",
							NULL, &http_max_answer_kb, 256, 16, 64 * 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.answer_memory",
							"Most memory the answers of one dispatch may hold at once.",
							"Answers past it are dropped and retried later.",
							&http_answer_memory_kb, 16 * 1024, 1024, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomBoolVariable("p2p_preheat.http_debug",
							 "Logs libcurl's trace of every request, with credential headers redacted.",
							 NULL, &http_debug, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.retention",
							"How long final jobs and executions are kept before purge() deletes them.",
							NULL, &worker_retention_s, 30 * 86400, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	/* retries and following jobs */
	DefineCustomIntVariable("p2p_preheat.max_attempts",
							"Attempts to create a job before it fails, for transient errors.",
							NULL, &dispatch_max_attempts, 8, 1, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.retry_base",
							"First retry delay; doubled each attempt, with jitter.",
							NULL, &dispatch_retry_base_ms, 1000, 1, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.retry_max",
							"Longest retry delay.",
							NULL, &dispatch_retry_max_ms, 300000, 1, 86400000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("p2p_preheat.poll_schedule",
							   "Seconds after a job's creation to ask Dragonfly for its state; the last value repeats.",
							   "The default follows the instants Dragonfly updates a job: 30, 90, 210, 450 s, then every 300 s.",
							   &dispatch_poll_schedule, "31,91,211,451,300",
							   PGC_SUSET, 0,
							   dispatch_check_poll_schedule, dispatch_assign_poll_schedule, NULL);
	DefineCustomIntVariable("p2p_preheat.give_up_after",
							"Time after which a job Dragonfly has not finished is failed.",
							"Dragonfly itself fails a job after about 62.5 minutes.",
							&dispatch_give_up_after_s, 3900, 1, 86400 * 7,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.lease",
							"How long a claimed job stays out of other dispatchers' reach.",
							NULL, &dispatch_lease_s, 300, 1, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);

	/* the background worker */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("p2p_preheat.database",
								   "Database the background worker dispatches for (Harbor's).",
								   NULL, &worker_database, "postgres",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomStringVariable("p2p_preheat.worker_role",
								   "Role the background worker runs as (empty: the bootstrap superuser).",
								   NULL, &worker_role, "",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}
	DefineCustomIntVariable("p2p_preheat.safety_poll_interval",
							"How often the idle worker looks for jobs written without waking it.",
							NULL, &worker_safety_poll_s, 30, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.worker_batch",
							"Most jobs the worker claims in one transaction.",
							NULL, &worker_batch, 1000, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("p2p_preheat");
	worker_register();
}
