/*  collector/collector.h - the collector daemon, the folder's one public
    header: it takes every final result from the broker (COLLECT with credit,
    DELIVER / JOB_DONE, heartbeats, a fresh connection with backoff and jitter
    when the broker falls silent), writes each job's reports (DESIGN section
    3; collector_report.h, included here) so that a kill at any moment leaves
    every file parseable and complete up to the last acknowledged result,
    acknowledges only what is durable, de-duplicates by task id, publishes
    each result on a PUB socket as MessagePack and writes the final report and
    summary when a job completes.

    The live stream (PUB, two frames per message): "result" | msgpack(result)
    for every result written, "job-done" | msgpack(JOBINFO) when a job's final
    report is written. collector_stream_recv() reads it from a SUB socket. */

#ifndef COLLECTOR_H_INCLUDED
#define COLLECTOR_H_INCLUDED

#include "../common/bf.h"
#include "../common/bf_security.h"
#include "collector_report.h"

#include <jansson.h>

typedef struct {
    const char *broker;   /* endpoint to connect to (required) */
    const char *out_root; /* NULL: each job's own `output`; else ROOT/<job name> */
    /* NULL: a job's `output` may be anywhere (absolute). Else an absolute,
       resolved directory a job's reports must stay inside: an output whose
       existing part resolves (symlinks followed) outside it, or that holds a
       `..` component, is not used; its reports go to
       OUTPUT_ROOT/<job name> (<job id> for a name that is not a safe path
       component) instead, with one warning line. With out_root as well,
       out_root decides and must lie inside output_root (the CLI checks). */
    const char *output_root;
    /* Where the results of a job whose reports cannot be written are kept
       (SPOOL/<job id>.jsonl, append + fdatasync) once such results fill
       half of the credit, so they can be acknowledged and the broker's
       delivery window stays open for the other jobs; retried with backoff
       (1 s doubling to 30 s) and replayed into the job's reports, exactly
       once, when they can be written. Locked (flock): one collector each.
       NULL: such results are held unacknowledged in memory (at most
       2 x credit), which stops the other jobs' deliveries once a failing job
       holds `credit` of them. */
    const char *spool_dir;
    const char *publish;   /* PUB endpoint to bind ("tcp://127.0.0.1:0" allowed), or NULL */
    bool insecure;         /* allow a non-loopback publish endpoint without CURVE */
    unsigned heartbeat_ms; /* heartbeat interval [1000] */
    unsigned liveness;     /* intervals of silence before the broker is dead [3] */
    unsigned credit;       /* deliveries in flight [256] */
    const char *name;      /* [host:pid] */
    /* CURVE identity (bf_security.h), borrowed for the collector's life;
       NULL for plaintext. With it the PUB stream is a CURVE server too. */
    const bf_security_t *security;
} collector_config_t;

typedef struct collector collector_t;

/* Copies cfg and binds the PUB socket; nothing is connected yet. NULL with
   err (BF_ERRLEN) set when cfg has no broker, the publish endpoint cannot
   be bound, or it is not loopback while there is neither security nor
   insecure (bf_bind_allowed, DESIGN section 5: the same rule as the
   broker's bind). */
collector_t *collector_new(const collector_config_t *cfg, char *err);

/* Connects, registers and runs until collector_stop(). Disk errors are not
   fatal: the results stay unacknowledged in memory (at most `credit` of them;
   the broker keeps them too) and writing is retried every second. Returns
   BF_OK after a stop, BF_EIO when the ZeroMQ context fails. Call it from one
   thread at a time. */
bf_err_t collector_run(collector_t *self) BF_MUST_CHECK;

/* Asks collector_run to return, waking it (bf_wake_t): within the turn it
   is in; safe from a signal handler and from another thread. */
void collector_stop(collector_t *self);

/* The PUB endpoint actually bound (port 0 resolved), or NULL without one. */
const char *collector_publish_endpoint(const collector_t *self);

/* Subscriptions registered on the stream now (each subscriber's topics;
   `beamfleet watch` has one). Each is also logged ("stream: subscribed to
   ..."): once one shows, what is published next reaches it. Safe from any
   thread. */
long collector_stream_subscriptions(const collector_t *self);

/* NULL-safe and idempotent; nulls *self_p. Not while collector_run runs. */
void collector_destroy(collector_t **self_p);

/* Receives one message of the live stream from a SUB socket: its topic
   ("result" or "job-done", copied into topic of topic_size bytes) and its
   document as JSON (*doc, owned by the caller). flags as for zmq_recv
   (ZMQ_DONTWAIT). BF_EIO when nothing could be received (errno as zmq set
   it: EAGAIN), BF_EPROTO for a message of the wrong shape or bad
   MessagePack (the message is consumed, err says why). */
bf_err_t collector_stream_recv(void *sub, char *topic, size_t topic_size, json_t **doc, int flags,
                               char *err) BF_MUST_CHECK;

#endif
