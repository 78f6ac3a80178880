/*  collector/collector.h - the collector daemon: takes every final result
    from the broker, writes a job's reports (DESIGN section 3) so that a kill
    at any moment leaves each file parseable and complete up to the last
    acknowledged result, acknowledges only what is durable, de-duplicates by
    task id, publishes each result on a PUB socket as MessagePack, and writes
    the final report and summary when a job completes. */

#ifndef COLLECTOR_H_INCLUDED
#define COLLECTOR_H_INCLUDED

#include "../common/bf.h"

typedef struct {
    const char *broker;    /* endpoint to connect to */
    const char *out_root;  /* NULL: each job's own `output`; else ROOT/<job name> */
    const char *publish;   /* PUB endpoint to bind, or NULL for none */
    unsigned heartbeat_ms; /* [1000] */
    unsigned liveness;     /* [3] */
    unsigned credit;       /* deliveries in flight [256] */
    const char *name;      /* [host:pid] */
} collector_config_t;

typedef struct collector collector_t;

/* Binds the PUB socket and prepares the connection. NULL with err set when
   the publish endpoint cannot be bound. */
collector_t *collector_new(const collector_config_t *cfg, char *err);

/* Runs until collector_stop(). Disk errors are not fatal: results stay
   unacknowledged (the broker keeps them) and writing is retried. */
bf_err_t collector_run(collector_t *self) BF_MUST_CHECK;

/* Asks collector_run to return; async-signal-safe. */
void collector_stop(collector_t *self);

/* The PUB endpoint actually bound (port 0 resolved), or NULL. */
const char *collector_publish_endpoint(const collector_t *self);

void collector_destroy(collector_t **self_p);

#endif
