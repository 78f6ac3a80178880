/*  broker/broker_store.h - private to the broker: jobs, tasks and the
    collector's outbox, kept in memory for speed and in SQLite (WAL) for
    durability. Every change goes to both, inside the transaction the
    reactor opens with broker_store_begin and closes with broker_store_commit;
    broker_store_open rebuilds memory from the database after a restart.
    Tasks are addressed by their index (uint32_t) in the store. */

#ifndef BROKER_STORE_H_INCLUDED
#define BROKER_STORE_H_INCLUDED

#include "../common/bf.h"
#include "../common/bf_config.h"
#include "../proto/proto.h"

typedef struct broker_store broker_store_t;

/* One outbox row for the collector. */
typedef struct {
    uint64_t seq;
    bool job_done;
    char *job_id, *task_id;
    json_t *payload; /* the document, or NULL when raw is set */
    uint8_t *raw;    /* a DELIVER's {"job", "result"} already packed (MessagePack) */
    size_t raw_len;
} broker_delivery_t;

/* Opens state_dir/broker.db. Tasks that were running when the broker
   stopped stay leased until now + grace_ms, for their worker to claim. */
bf_err_t broker_store_open(const char *state_dir, int64_t now, int64_t grace_ms,
                           broker_store_t **out, char *err) BF_MUST_CHECK;
void broker_store_close(broker_store_t **self);

/* For a state that is thrown away after the close (`beamfleet run`'s):
   the close leaves the WAL as it is (no checkpoint into the database, no
   sync of it); commits survive the process being killed, as before, but
   not a crash of the host (synchronous=OFF: no fsync at checkpoints); and
   the database is locked once for the broker's life, not per transaction
   (locking_mode=EXCLUSIVE: no other process reads it meanwhile). */
void broker_store_throwaway(broker_store_t *s);

bf_err_t broker_store_begin(broker_store_t *s) BF_MUST_CHECK;
bf_err_t broker_store_commit(broker_store_t *s) BF_MUST_CHECK;

/* A new job with one queued task per scene; job_id gets 12 hex + NUL and
   *first the index of its first task (task i of the job is *first + i).
   keys (borrowed; NULL or an array of scene_count strings) are the tasks'
   content keys, added to each result as "key". */
bf_err_t broker_store_add_job(broker_store_t *s, const bf_job_t *job, json_t *keys, char job_id[16],
                              uint32_t *first) BF_MUST_CHECK;

/* Leases the next queued task to worker: attempt + 1, lease until now +
   the job's timeout + the backstop. With avoid_key (the worker's fault
   domain: its GPU, or the worker itself for a CPU worker) a task that
   already failed there is passed over while it failed on fewer distinct
   domains than live_keys (the domains alive now): the first of the next
   LEASE_LOOKAHEAD queued tasks that qualifies is taken. So a retry goes
   to a different GPU when there is one, and a sick GPU among healthy ones
   meets different tasks, not the same one again. BF_ENOENT when
   nothing is queued, BF_ESTATE when nothing qualifies for this worker. */
#define LEASE_LOOKAHEAD 64
bf_err_t broker_store_lease(broker_store_t *s, const char *worker, const char *avoid_key,
                            size_t live_keys, int64_t now, uint32_t *task) BF_MUST_CHECK;
/* Fills a TASK message for task t (strings copied; the job's spec as
   obj_raw, a copy of the bytes packed once per job, or as obj, referenced,
   when it cannot be packed). */
bf_err_t broker_store_task_msg(broker_store_t *s, uint32_t t, proto_msg_t *m) BF_MUST_CHECK;

bool broker_store_find_task(broker_store_t *s, const char *task_id, uint32_t *t);
bool broker_store_task_running(broker_store_t *s, uint32_t t);
bool broker_store_task_final(broker_store_t *s, uint32_t t);
const char *broker_store_task_id(broker_store_t *s, uint32_t t);
const char *broker_store_task_scene(broker_store_t *s, uint32_t t);

unsigned broker_store_task_attempt(broker_store_t *s, uint32_t t);
/* True while t is running with no worker since a broker restart. */
bool broker_store_task_orphan(broker_store_t *s, uint32_t t);

/* A worker that re-registered claims running task t: its lease restarts at
   now. BF_ESTATE when t is not running. */
bf_err_t broker_store_task_adopted(broker_store_t *s, uint32_t t, const char *worker,
                                   int64_t now) BF_MUST_CHECK;
/* The worker gave t back without a result (GOODBYE): queued again at the
   head, attempt - 1 (not counted). No-op unless t is running. */
bf_err_t broker_store_task_returned(broker_store_t *s, uint32_t t) BF_MUST_CHECK;
/* Counts one more time t was held, not started, by a worker that died, and
   returns the count (memory only, not reset by a restart's reload: it
   starts at 0 again then). */
unsigned broker_store_task_note_unstarted(broker_store_t *s, uint32_t t);
/* The attempt failed: requeued, or final with status error naming every
   failure when the job's max_attempts are used (a queued task stays
   queued); key is the worker's fault domain (see broker_store_lease),
   fault whose fault it was ("task", "device", or "" / NULL: unattributed),
   kept in the failure record. The final reason reads "failed N times:
   host/device [worker] (reason); ..." and, when unattributed failures
   happened in two or more domains, ends "; failed the same way on N
   devices: task fault". result (len bytes) may be NULL; when the task
   becomes final it is the stored document, as broker_store_task_done
   stores it, with this reason. No-op for a final task. */
bf_err_t broker_store_task_failed(broker_store_t *s, uint32_t t, const char *host,
                                  const char *device, const char *worker, const char *key,
                                  const char *fault, const char *reason, const uint8_t *result,
                                  size_t len) BF_MUST_CHECK;
/* The failures of task t so far, [{host, device, worker, key, attempt,
   fault, reason}], borrowed; NULL when none. */
const json_t *broker_store_task_failures(broker_store_t *s, uint32_t t);
/* Whether a job with the same output directory (compared after lexical
   normalization: "//", "/./", "x/..", a trailing "/") is running, or done
   with results or its JOB_DONE not yet acknowledged by the collector; if so
   its id and name (truncated to name_len) are copied out. */
bool broker_store_output_busy(broker_store_t *s, const char *output, char job_id[16], char *name,
                              size_t name_len);
/* Final with this result: the bytes (len) of a MessagePack map that
   proto_msgpack_check took, stored as they came with the bookkeeping
   members scene, task_id, job_id, attempt, status (failed when failed,
   else success), key (when the job has keys) and failures (when there were
   some) put in by proto_msgpack_patch, never made into a tree; appended to
   the outbox, and JOB_DONE after it when it was the job's last task. A
   final task stays as it is (exactly once). */
bf_err_t broker_store_task_done(broker_store_t *s, uint32_t t, const uint8_t *result, size_t len,
                                bool failed) BF_MUST_CHECK;
/* The same for a result held as a tree (one a job reuses), its status
   (failed or else success) read from it. */
bf_err_t broker_store_task_done_tree(broker_store_t *s, uint32_t t,
                                     const json_t *result) BF_MUST_CHECK;
/* Every non-final task of the job becomes final, status cancelled; the
   indices of those that were running are returned (free them). BF_ENOENT
   for an unknown job. */
bf_err_t broker_store_cancel_job(broker_store_t *s, const char *job_id, uint64_t *count,
                                 uint32_t **running, size_t *nrunning) BF_MUST_CHECK;
/* Running tasks whose lease ended before now: past the job's timeout plus
   backstop_ms, or orphans past the restart grace window (free *late). */
bf_err_t broker_store_expired(broker_store_t *s, int64_t now, int64_t backstop_ms, uint32_t **late,
                              size_t *nlate) BF_MUST_CHECK;

uint64_t broker_store_queued(const broker_store_t *s);
/* Outbox rows not acknowledged (rows acknowledged later count as gone). */
uint64_t broker_store_outbox_count(broker_store_t *s);
/* Outbox rows with seq > after, at most max, oldest first. Rows
   acknowledged later and not yet deleted may be among them: the caller
   flushes those first (broker_store_outbox_flush) when after is below
   broker_store_outbox_flush_above. */
bf_err_t broker_store_outbox_after(broker_store_t *s, uint64_t after, size_t max,
                                   broker_delivery_t **out, size_t *n) BF_MUST_CHECK;
void broker_store_deliveries_free(broker_delivery_t *d, size_t n);
/* Removes the row (an unknown seq is fine), inside the caller's
   transaction; the rows acknowledged later go first. */
bf_err_t broker_store_outbox_ack(broker_store_t *s, uint64_t seq) BF_MUST_CHECK;
/* Acknowledges row seq, which the caller knows exists and is not
   acknowledged yet (it was delivered and is in the collector's window), in
   memory only: it no longer counts, and its DELETE waits for the next
   transaction (broker_store_outbox_flush). A crash before then delivers the
   row again, which the collector acknowledges without writing it twice.
   This spares a transaction per turn that only acknowledges. false when
   out of memory (then ack it now). */
bool broker_store_outbox_ack_later(broker_store_t *s, uint64_t seq);
/* The rows acknowledged later, deleted now, inside the caller's
   transaction. BF_EDB. */
bf_err_t broker_store_outbox_flush(broker_store_t *s) BF_MUST_CHECK;
/* How many rows wait for flush, and the highest of their seqs (0: none). */
size_t broker_store_outbox_unflushed(const broker_store_t *s);
uint64_t broker_store_outbox_flush_above(const broker_store_t *s);

/* Retention: the jobs at the head of the store (oldest first) that may be
   retired: finished (done or cancelled) at least retain_ms ago, with every
   outbox row acknowledged (so nothing of them is still owed to anyone). */
size_t broker_store_retirable(const broker_store_t *s, int64_t now_wall_ms, int64_t retain_ms);
/* Removes the first k jobs and their tasks from memory and from the
   database (inside the caller's transaction). Task and job indices of the
   others do not change. A retired job is unknown from then on (status,
   cancel). BF_EDB, BF_ENOMEM. */
bf_err_t broker_store_retire(broker_store_t *s, size_t k) BF_MUST_CHECK;

/* Status pieces (docs/architecture.md): the jobs array, and the events after
   cursor (job_id "" for all jobs) with the next cursor. */
json_t *broker_store_jobs_doc(broker_store_t *s);
json_t *broker_store_events(broker_store_t *s, const char *job_id, uint64_t cursor, size_t max,
                            uint64_t *next);

#endif
