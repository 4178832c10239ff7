/*
 * worker.h
 *		The background worker and the COMMIT-time wake-up that feeds it.
 */
#ifndef P2P_PREHEAT_WORKER_H
#define P2P_PREHEAT_WORKER_H

extern char *worker_database;
extern char *worker_role;
extern int	worker_safety_poll_s;
extern int	worker_batch;
extern int	worker_retention_s;

/* From _PG_init: the transaction callback always, the worker when preloaded. */
extern void worker_register(void);

/* A job was queued: wake the worker when this transaction commits. */
extern void worker_wake_at_commit(void);

#endif
