/*
 * harbor_auth.h
 *		Credentials as Harbor stores them, turned into what Dragonfly and the
 *		registry need.  Nothing here puts a secret into an error message.
 */
#ifndef P2P_PREHEAT_HARBOR_AUTH_H
#define P2P_PREHEAT_HARBOR_AUTH_H

extern char *harbor_secret_key_file;
extern char *registry_credentials_file;

/*
 * The header line ("Authorization: Bearer ...") for an instance's auth_mode
 * and auth_data, or NULL for NONE.  On failure returns NULL and sets *error
 * to a secret-free reason.
 */
extern char *instance_auth_header(const char *auth_mode, const char *auth_data,
								  const char **error);

/* Robot account for the registry, from registry_credentials_file. */
extern bool registry_credentials(char **username, char **password,
								 const char **error);

/* Wipe and free a palloc'd secret. */
extern void secret_free(char *s);

#endif
