/*
 * harbor_token.h
 *		The short-lived pull token Harbor gives Dragonfly for the one
 *		repository being preheated, so that private projects preheat without
 *		a long-lived password in Dragonfly's job arguments.
 */
#ifndef P2P_PREHEAT_HARBOR_TOKEN_H
#define P2P_PREHEAT_HARBOR_TOKEN_H

/* Harbor's token_expiration property when it is absent: 30 minutes. */
#define HARBOR_TOKEN_DEFAULT_LIFETIME_S (30 * 60)

/* GUC p2p_preheat.token_private_key_file, defined in p2p_preheat.c */
extern char *harbor_token_private_key_file;

/*
 * A token that lets its bearer pull repository ("<project>/<repo>") for
 * lifetime_s seconds, signed with Harbor core's private key.  Returned in
 * malloc'd memory; free it with harbor_token_free().  On failure returns
 * NULL and sets *error to a palloc'd reason that names the key file and
 * the cause, never key material.  Checks for interrupts first, so call it
 * only where an ERROR is safe (not in a libcurl callback).
 */
extern char *harbor_token_mint(const char *repository, int lifetime_s, char **error);

/* Wipe and free a token from harbor_token_mint(). */
extern void harbor_token_free(char *token);

/*
 * The headers Dragonfly should send for a manifest URL, as JSON text
 * ({"Authorization": "Bearer <token>"}, palloc'd: wipe it with
 * secret_free()), or NULL when no token applies: no key file is set, or
 * the URL is not a manifest URL of registry_url's scheme, host and port.
 * On failure returns NULL and sets *error as harbor_token_mint() does,
 * which it calls.
 */
extern char *harbor_token_headers(const char *manifest_url, const char *registry_url,
								  int lifetime_s, char **error);

#endif
