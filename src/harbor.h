/*
 * harbor.h
 *		The one way to Harbor's tables.
 *
 * Harbor's tables belong to Harbor's database role, which is trusted with
 * its own privileges and no more.  Every query on them goes through here: it
 * checks that each table is an ordinary table of the recorded owner in the
 * recorded schema (p2p_preheat.harbor), then runs as that owner under a
 * security-restricted operation with a pinned search_path, as VACUUM does.
 */
#ifndef P2P_PREHEAT_HARBOR_H
#define P2P_PREHEAT_HARBOR_H

#include "executor/spi.h"
#include "nodes/pg_list.h"

/* GUC, defined in p2p_preheat.c: where Harbor's tables are attached automatically */
extern char *harbor_schema_setting;

/* An instance as the dispatcher needs it; auth_data is a secret. */
typedef struct HarborInstance
{
	int			id;
	char	   *vendor;
	bool		enabled;
	bool		insecure;
	char	   *endpoint;
	char	   *auth_mode;
	char	   *auth_data;
} HarborInstance;

/* An artifact as an event needs it (harbor_event_artifact). */
typedef struct HarborArtifact
{
	int32		artifact_id;
	char	   *repository;		/* with its project: library/app */
	char	   *project;
	int32		project_id;
	char	   *type;
	char	   *digest;
	char	  **labels;			/* once harbor_artifact_labels() read them */
	int			nlabels;
	bool		labels_read;
	char	  **tags;			/* only when asked for */
	int			ntags;
	bool		content_trust;	/* the project's security settings */
	bool		prevent_vul;
	char	   *severity;		/* NULL when unset */
} HarborArtifact;

/*
 * A policy with its project and instance, as queueing reads it (the columns
 * of the SQL type p2p_preheat.harbor_policy).  NULL strings are SQL NULLs;
 * enabled and instance_enabled are NULL when their *_null flag is set.
 */
typedef struct HarborPolicy
{
	int			id;
	char	   *name;
	bool		project_id_null;
	int			project_id;
	char	   *project;
	bool		provider_id_null;
	int			provider_id;
	bool		enabled_null;
	bool		enabled;
	char	   *filters;
	char	   *trigger;
	char	   *extra_attrs;
	bool		instance_found;
	char	   *vendor;
	bool		instance_enabled_null;
	bool		instance_enabled;
} HarborPolicy;

/* An instance without its credentials (p2p_preheat.harbor_instance). */
typedef struct HarborInstanceInfo
{
	int			id;
	char	   *vendor;
	bool		enabled_null;
	bool		enabled;
	char	   *endpoint;
} HarborInstanceInfo;

/*
 * Refuses, with a clear error and hint, a library whose version differs
 * from the extension installed in this database.  Checked once per
 * transaction.
 */
extern void harbor_check_version(void);

/*
 * Instances by id, credentials included, read as Harbor's owner (needs SPI
 * to be connected).  Missing ids are absent from the list.
 */
extern List *harbor_instances(int *ids, int nids);

/*
 * One policy, or one instance, read as Harbor's owner; NULL when there is
 * no such row.  Errors when Harbor is not attached.  Need SPI to be
 * connected; the result is allocated in the caller's memory context.
 */
extern HarborPolicy *harbor_policy(int policy_id);
extern HarborInstanceInfo *harbor_instance(int instance_id);

/*
 * The vendor of a policy's instance for the validation trigger, read as
 * Harbor's owner; NULL when the instance does not exist or Harbor is not
 * attached.  Needs SPI to be connected.
 */
extern char *harbor_instance_vendor(int instance_id);

/*
 * Harbor's token_expiration (in seconds), read as Harbor's owner; default_s
 * when Harbor has not set it.  Needs a transaction.
 */
extern int	harbor_token_lifetime_s(int default_s);

/*
 * An event's artifact, read as Harbor's owner with its tags
 * (with_tags) and its project's security settings; false when it does not
 * exist.  Needs a transaction.
 */
extern bool harbor_event_artifact(int32 artifact_id, bool with_tags, HarborArtifact *a);

/* Reads the labels of an event's artifact into it.  Needs a transaction. */
extern void harbor_artifact_labels(HarborArtifact *a);

/*
 * Harbor's vulnerability severity of an artifact for its preheat filter: 99
 * (blocked) unless its reports' latest scans succeeded.  Needs a transaction.
 */
extern int	harbor_artifact_severity(int32 artifact_id);

#endif
