/*
 * kraken.c
 *		Uber Kraken's two endpoints that Harbor's Kraken driver calls: GET
 *		/health, and POST /registry/notifications with a registry
 *		notification, {"events":[{"id":..,"timestamp":..,"action":"push",
 *		"target":{"mediaType":..,"digest":..,"repository":..,"url":..,
 *		"tag":..}}]}.  Kraken answers 200 with no body and preheats in the
 *		background; here the notification is logged so a test can read
 *		what Harbor's path would have sent.
 */
#include <stdio.h>

#include "standin.h"

#define ROUTE "POST /registry/notifications"

enum MHD_Result
kraken_notify(Call *c)
{
	Req		   *r = c->r;
	const char *why;
	char		err[512];
	unsigned	code;
	bool		parsed;

	r->t = wall_seconds();
	pthread_mutex_lock(&state_lock);
	stats.notifications++;
	pthread_mutex_unlock(&state_lock);
	code = check_auth(c, 0, &r->auth_kind, &why);
	parsed = parse_body(r, err, sizeof(err));
	if (code != 0)
		return log_request(r, ROUTE, 0, code), reply_message(c, code, "message", why);
	if (r->chaos == CHAOS_DROP)
		return log_request(r, ROUTE, 0, 0), MHD_NO;
	if (r->chaos == CHAOS_500)
		return log_request(r, ROUTE, 0, 500), reply(c, 500, "Internal Server Error", TEXT_CT);
	/* Kraken's handler fails a body it cannot decode with a 500 */
	if (!parsed || !json_object_is_type(field(r->jbody, "events"), json_type_array))
	{
		char		msg[600];

		snprintf(msg, sizeof(msg), "decode body: %s", r->jbody ? "events: not a list" : err);
		return log_request(r, ROUTE, 0, 500), reply(c, 500, msg, TEXT_CT);
	}
	log_request(r, ROUTE, 0, 200);
	return reply(c, 200, "", TEXT_CT);
}
