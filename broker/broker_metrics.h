/*  broker/broker_metrics.h - private to the broker: the Prometheus metrics
    endpoint (text exposition format 0.0.4, docs/architecture.md lists every
    metric). The reactor owns a broker_metrics_t: it records observations
    (dispatch latency, task duration, both per device) and, at most once per
    timer pass, publishes a snapshot of its gauges; publishing renders the
    whole text and swaps it in under a mutex. libmicrohttpd answers on its
    own thread and only ever copies the last published text: no reactor state
    is read from the HTTP thread. Only GET (and HEAD) /metrics is served (404
    for other paths, 405 for other methods), with a connection limit and a
    timeout. Every observe_* function is a no-op on a NULL object, so the
    broker calls them unconditionally and metrics off costs nothing. */

#ifndef BROKER_METRICS_H_INCLUDED
#define BROKER_METRICS_H_INCLUDED

#include "../common/bf.h"

#include <jansson.h>

#define BROKER_METRICS_MAX_DEVICES 1024 /* label sets per histogram; the rest is "other" */
#define BROKER_METRICS_MAX_WORKERS 1024 /* per-worker GPU series */

/* Worker states, in the order of broker_metrics_state_t.workers. */
typedef enum {
    BROKER_WORKER_IDLE,
    BROKER_WORKER_BUSY,
    BROKER_WORKER_DRAINING,
    BROKER_WORKER_QUARANTINED,
    BROKER_WORKER_STATES
} broker_worker_state_t;

/* One worker's last GPU figures (from its STATS message). */
typedef struct {
    const char *worker, *host, *device; /* borrowed for the publish call */
    double gpu_util;                    /* percent, 0..100 */
    double mem_used, mem_total;         /* bytes */
    double temperature_c;
} broker_metrics_gpu_t;

/* Final task statuses, in the order of the counts arrays below. */
typedef enum {
    BROKER_FINAL_SUCCESS,
    BROKER_FINAL_FAILED,
    BROKER_FINAL_ERROR,
    BROKER_FINAL_CANCELLED,
    BROKER_FINALS
} broker_final_t;

/* What the reactor knows at one instant; strings and arrays are borrowed for
   the duration of broker_metrics_publish. Jobs, final tasks and running
   tasks are the metrics object's own bookkeeping (load_job, observe_submit,
   observe_final); running = tasks of all jobs - final - queued. */
typedef struct {
    uint64_t tasks_queued;
    uint64_t workers[BROKER_WORKER_STATES];
    uint64_t collectors;
    uint64_t store_commits, messages_received, messages_dropped;
    const broker_metrics_gpu_t *gpus;
    size_t ngpus;
} broker_metrics_state_t;

typedef struct broker_metrics broker_metrics_t;

/* Starts the HTTP server on listen ("HOST:PORT", "[V6]:PORT"; port 0 lets
   the system choose, see broker_metrics_port). NULL on failure with err
   (BF_ERRLEN, may be NULL) naming what (a malformed address, a bind error,
   libmicrohttpd that cannot be loaded: the first call loads it with dlopen,
   once per process, out of memory). Until the first publish /metrics
   answers 503. */
broker_metrics_t *broker_metrics_new(const char *listen, char *err);

/* Checks listen as broker_metrics_new would parse it, without serving:
   BF_OK, or BF_EINVAL with err naming what is wrong. */
bf_err_t broker_metrics_check_listen(const char *listen, char *err) BF_MUST_CHECK;

/* Stops the server (waits for the HTTP thread) and frees; NULL-safe, nulls
 *self_p. */
void broker_metrics_destroy(broker_metrics_t **self_p);

/* The TCP port actually bound. */
unsigned broker_metrics_port(const broker_metrics_t *self);

/* A job the store held when the broker started: state "running", "done" or
   "cancelled", total tasks, and its final tasks by status. BF_ENOMEM. */
bf_err_t broker_metrics_load_job(broker_metrics_t *self, const char *job_id, const char *state,
                                 uint64_t total,
                                 const uint64_t counts[BROKER_FINALS]) BF_MUST_CHECK;

/* A job of total tasks was accepted at now_ms (bf_mono_ms): its tasks are
   queued from then (dispatch latency counts from it). */
void broker_metrics_observe_submit(broker_metrics_t *self, const char *job_id, uint64_t total,
                                   int64_t now_ms);

/* A task of job_id became final with status ("success", ...); when it was
   the job's last, the job is done, or cancelled when any of its tasks was.
   Each final task must be observed exactly once (the broker follows the
   store's final sequence). */
void broker_metrics_observe_final(broker_metrics_t *self, const char *job_id, const char *status);

/* Task t went back to the queue at now_ms (a failed attempt, a worker
   lost or gone), or became final without a result (final true: forgotten). */
void broker_metrics_observe_queued(broker_metrics_t *self, uint32_t t, bool final, int64_t now_ms);

/* Task t (attempt, of job_id) was sent to the worker on host/device at
   now_ms: observes the dispatch latency when the time it was queued is
   known (tasks queued before a broker restart are not observed). The
   broker must call it before the job's tasks are all observed final. */
void broker_metrics_observe_dispatch(broker_metrics_t *self, uint32_t t, const char *job_id,
                                     uint64_t attempt, const char *host, const char *device,
                                     int64_t now_ms);

/* The result of task t arrived at now_ms: observes the task duration
   (sent -> result) under the device it was sent to, and forgets t. */
void broker_metrics_observe_result(broker_metrics_t *self, uint32_t t, int64_t now_ms);

/* Forgets the timestamps of tasks that is_final(ud, t) says are final
   (they ended without a result: error after the last attempt, cancelled
   while running). The reactor calls it now and then; O(tasks remembered). */
void broker_metrics_sweep(broker_metrics_t *self, bool (*is_final)(void *ud, uint32_t t), void *ud);

/* True when a publish is due: never published, or the last one is at least
   250 ms old (the reactor builds the state only then). False for NULL. */
bool broker_metrics_due(const broker_metrics_t *self, int64_t now_ms);

/* Renders the text from state, the histograms and the uptime, and makes it
   the one the HTTP thread serves. BF_ENOMEM leaves the previous text. */
bf_err_t broker_metrics_publish(broker_metrics_t *self,
                                const broker_metrics_state_t *state) BF_MUST_CHECK;

/* Copies a worker's STATS document into a fresh bounded object
   {gpu_util, mem_used, mem_total, temperature_c}; NULL when obj is not a
   map of finite numbers in range (gpu_util 0..100, memory 0..2^60 bytes,
   used <= total, temperature -100..200). Pure, for the reactor and tests. */
json_t *broker_metrics_stats_copy(const json_t *obj);

#endif
