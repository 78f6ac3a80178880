/*  broker/broker.h - the broker daemon: one ROUTER endpoint that every
    worker, collector and client connects to (docs/protocol.md), jobs and
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
} broker_config_t;

typedef struct broker broker_t;

/* Opens (or creates) the store and binds. NULL on failure with err set: a
   refused non-loopback bind, an unusable state directory, a bind error. */
broker_t *broker_new(const broker_config_t *cfg, char *err);

/* Runs the reactor until broker_stop(). BF_EDB when the store fails (the
   broker stops rather than promise what it cannot keep). */
bf_err_t broker_run(broker_t *self) BF_MUST_CHECK;

/* Asks broker_run to return; async-signal-safe. */
void broker_stop(broker_t *self);

/* The endpoint actually bound (a tcp port 0 resolved). */
const char *broker_endpoint(const broker_t *self);

/* Closes the socket and the store; NULL-safe; nulls *self_p. */
void broker_destroy(broker_t **self_p);

#endif
