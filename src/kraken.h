/*
 * kraken.h
 *		Kraken as Harbor's Kraken driver drives it: one registry notification
 *		per image, POSTed to <endpoint>/registry/notifications, done at once.
 */
#ifndef P2P_PREHEAT_KRAKEN_H
#define P2P_PREHEAT_KRAKEN_H

#include "utils/jsonb.h"

#include "dragonfly.h"
#include "http.h"

extern bool kraken_vendor(const char *vendor);
extern char *kraken_notify_url(const char *endpoint);

/*
 * The notification for the manifest at url (<registry>/v2/<repository>/
 * manifests/<tag>); the digest comes from attrs ("digest", set when the job
 * was queued) or from a reference that is a digest.  NULL and *error when
 * the job names no digest or the url is not a manifest url.
 */
extern char *kraken_notification(const char *url, Jsonb *attrs, char **error);

/* A 2xx means the preheat is done: no job to follow, as in Harbor's driver. */
extern void kraken_read_answer(const HttpRequest *req, DfAnswer *a);

#endif
