/*
 * oci_names.h
 *		What a manifest URL, a repository and a reference may look like, and
 *		whether two URLs name the same origin.
 *
 * Dragonfly fetches whatever URL it is given, with whatever credentials it
 * is given: a URL that leaves the registry, or a name that smuggles a
 * query, a CR/LF or a "..", must be refused before it is queued, and the
 * registry's robot account must only travel with URLs of the registry.
 */
#ifndef P2P_PREHEAT_OCI_NAMES_H
#define P2P_PREHEAT_OCI_NAMES_H

/*
 * True when both URLs parse and have the same scheme, host and port
 * (scheme and host compared without case, 80/443 made explicit).
 */
extern bool p2p_url_same_origin(const char *a, const char *b);

/* True when the URL carries a user name or password (or does not parse). */
extern bool p2p_url_has_userinfo(const char *url);

/*
 * NULL when the name follows the grammar, else the rule it breaks (a
 * static string).
 */
extern const char *p2p_oci_repository_problem(const char *repository);
extern const char *p2p_oci_reference_problem(const char *reference);

/*
 * Refuse (ERROR 22023 naming the field, the value and the rule, with a
 * hint) a repository or reference outside the grammar, or a manifest URL
 * that is not http(s)://host/v2/<repository>/manifests/<reference>, carries
 * user information or names an address the dispatcher refuses.
 */
extern void p2p_check_image_name(const char *repository, const char *reference);
extern void p2p_check_manifest_url(const char *url);

#endif
