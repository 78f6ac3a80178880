/*  broker/broker.h - the broker daemon: one ROUTER endpoint that every
    worker, collector and client connects to (docs/architecture.md), jobs and
    tasks in a durable SQLite store, credit-based dispatch, task leases,
    two-way heartbeats, requeue with an attempt counter, and results relayed
    to the collector and retained until it acknowledges them. A restart on the
    same state directory continues where the last run stopped. */

#ifndef BROKER_H_INCLUDED
#define BROKER_H_INCLUDED

#include "../common/bf.h"

typedef struct {
    const char *bind;      /* ZeroMQ endpoint, e.g. tcp://127.0.0.1:5555 */
    const char *state_dir; /* created if missing; holds broker.db */
    unsigned heartbeat_ms; /* interval [1000] */
    unsigned liveness;     /* intervals of silence before a peer is dead [3] */
    bool insecure;         /* allow a non-loopback bind without CURVE */
    /* A finished job whose results are all delivered is forgotten (memory
       and database) this long after it ended, so a long-lived broker's
       memory is bounded by its recent jobs [3600]. */
    unsigned retain_s;
    /* CURVE (bf_security.h): both set, or both NULL for plaintext. The
       identity must be the key named broker; the ZAP handler admits the
       *.public keys of security_keys with their roles. */
    const char *security_keys, *security_identity;
    /* Prometheus endpoint "HOST:PORT" (broker_metrics.h), NULL for none. */
    const char *metrics_listen;
    /* Whoever started the broker removes state_dir once it exits (`beamfleet
       run`): a clean stop then leaves the last transactions in the WAL
       instead of copying them into the database and syncing it first (a
       restart on the directory still reads them); nothing is synced to
       disk (a commit survives the broker being killed, not the host
       crashing); and no other process may read the database meanwhile
       (broker_store_throwaway). */
    bool throwaway_state;
} broker_config_t;

typedef struct broker broker_t;

/* Opens (or creates) state_dir/broker.db, rebuilds the queue, counters and
   leases from it (tasks that were running stay leased for 2*I*L ms for
   their worker to claim), and binds. cfg is copied. NULL on failure with
   err (BF_ERRLEN, may be NULL) set: a non-loopback bind without insecure
   (loopback = tcp://127.x, tcp://localhost, tcp://[::1], ipc://, inproc://),
   an unusable state directory or store, a bind error. */
broker_t *broker_new(const broker_config_t *cfg, char *err);

/* Runs the reactor on the calling thread until broker_stop() (from a
   signal handler or another thread: it returns within the turn it is in).
   BF_OK after a stop,
   BF_EDB when the store fails (the broker stops rather than promise what it
   cannot keep), BF_EIO when the socket fails. */
bf_err_t broker_run(broker_t *self) BF_MUST_CHECK;

/* Asks broker_run to return, waking it (bf_wake_t); async-signal-safe. */
void broker_stop(broker_t *self);

/* The endpoint actually bound (tcp://127.0.0.1:0 resolved to the port the
   system chose); owned by self. */
const char *broker_endpoint(const broker_t *self);

/* Closes the socket and the store; NULL-safe; nulls *self_p. */
void broker_destroy(broker_t **self_p);

#endif
