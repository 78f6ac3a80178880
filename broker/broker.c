/*  broker/broker.c - the broker: a single-threaded reactor on one ROUTER
    socket. Each routing id is a peer with a small state machine (unknown ->
    worker or collector -> gone); each task has one (queued -> running ->
    final). Work arriving in one iteration of the loop is applied to memory
    and to the store inside one SQLite transaction, and the replies it causes
    (SUBMITTED, ACK, TASK, ...) are queued and sent only after COMMIT: group
    commit, so nothing is promised before it is durable. A timer pass
    sends heartbeats, expires silent peers (their tasks are requeued) and
    task leases. See docs/architecture.md for the state machines. */

#include "broker.h"
#include "broker_store.h"

#include "../common/bf_config.h"
#include "../proto/proto.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_ID        256  /* routing id bytes */
#define BATCH         256  /* messages applied per transaction */
#define MAX_EVENTS    1000 /* status events per reply */
#define COLLECT_MAX   4096 /* deliveries in flight to the collector */
#define BACKSTOP_MS   5000 /* added to a task's timeout before the broker gives up on it */

typedef enum { PEER_WORKER, PEER_COLLECTOR } peer_kind_t;

typedef struct peer peer_t;
struct peer {
    uint8_t id[MAX_ID];
    size_t id_len;
    peer_kind_t kind;
    char *name;
    json_t *caps;
    char *host, *device; /* for status and failure reasons */
    int64_t gpu_id;
    uint64_t credit;     /* tasks (or deliveries) it may still take */
    int64_t last_recv, last_send;
    uint32_t *held;      /* task indices leased to this worker */
    size_t nheld, capheld;
    uint64_t done;
    double busy_s;       /* sum of task times, for the mean */
    char stage[32];
    double fraction;
    bool dead;           /* reaped at the end of the iteration */
    /* collector only: seqs sent and not yet acked */
    uint64_t *inflight;
    size_t ninflight;
    uint64_t sent_upto;
};

typedef struct {
    uint8_t id[MAX_ID];
    size_t id_len;
    proto_msg_t msg;
} outmsg_t;

struct broker {
    broker_config_t cfg;
    char *bind, *endpoint, *state_dir;
    void *ctx, *router;
    broker_store_t *store;
    volatile sig_atomic_t stop;
    peer_t **peers;
    size_t npeers, cappeers;
    size_t rr; /* round-robin cursor over workers */
    /* tasks and jobs live in the store's memory mirror (broker_store.h) */
    outmsg_t *out;
    size_t nout, capout;
    int64_t started_ms;
    bool in_tx;
    uint64_t bad_messages;
};

/* ---- outgoing messages, sent after commit ------------------------------- */

static proto_msg_t *queue_to(broker_t *b, const uint8_t *id, size_t id_len, proto_type_t type)
{
    if (b->nout == b->capout) {
        size_t cap = b->capout ? 2 * b->capout : 256;
        outmsg_t *p = realloc(b->out, cap * sizeof *p);
        if (!p)
            return NULL;
        b->out = p;
        b->capout = cap;
    }
    outmsg_t *o = &b->out[b->nout++];
    memcpy(o->id, id, id_len);
    o->id_len = id_len;
    proto_msg_init(&o->msg, type);
    return &o->msg;
}

static void flush_out(broker_t *b)
{
    for (size_t i = 0; i < b->nout; i++) {
        outmsg_t *o = &b->out[i];
        if (proto_send(b->router, o->id, o->id_len, &o->msg, ZMQ_DONTWAIT) != BF_OK)
            bf_debug("send %s failed: %s", proto_type_name(o->msg.type),
                     zmq_strerror(zmq_errno()));
        else
            for (size_t k = 0; k < b->npeers; k++)
                if (b->peers[k]->id_len == o->id_len && !memcmp(b->peers[k]->id, o->id, o->id_len))
                    b->peers[k]->last_send = bf_mono_ms();
        proto_msg_clear(&o->msg);
    }
    b->nout = 0;
}

static void reply_error(broker_t *b, const uint8_t *id, size_t id_len, bf_err_t code,
                        const char *reason)
{
    proto_msg_t *m = queue_to(b, id, id_len, PROTO_ERROR);
    if (!m)
        return;
    m->code = (uint64_t)code;
    if (proto_msg_set(&m->reason, reason) != BF_OK)
        m->reason = NULL;
}

/* ---- peers -------------------------------------------------------------- */

static peer_t *peer_find(broker_t *b, const uint8_t *id, size_t id_len)
{
    for (size_t i = 0; i < b->npeers; i++)
        if (!b->peers[i]->dead && b->peers[i]->id_len == id_len &&
            !memcmp(b->peers[i]->id, id, id_len))
            return b->peers[i];
    return NULL;
}

static peer_t *peer_add(broker_t *b, const uint8_t *id, size_t id_len, peer_kind_t kind)
{
    if (b->npeers == b->cappeers) {
        size_t cap = b->cappeers ? 2 * b->cappeers : 16;
        peer_t **p = realloc(b->peers, cap * sizeof *p);
        if (!p)
            return NULL;
        b->peers = p;
        b->cappeers = cap;
    }
    peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(p->id, id, id_len);
    p->id_len = id_len;
    p->kind = kind;
    p->gpu_id = -1;
    p->last_recv = p->last_send = bf_mono_ms();
    b->peers[b->npeers++] = p;
    return p;
}

static void peer_free(peer_t *p)
{
    free(p->name);
    free(p->host);
    free(p->device);
    json_decref(p->caps);
    free(p->held);
    free(p->inflight);
    free(p);
}

static bool peer_hold(peer_t *p, uint32_t task)
{
    if (p->nheld == p->capheld) {
        size_t cap = p->capheld ? 2 * p->capheld : 4;
        uint32_t *h = realloc(p->held, cap * sizeof *h);
        if (!h)
            return false;
        p->held = h;
        p->capheld = cap;
    }
    p->held[p->nheld++] = task;
    return true;
}

static bool peer_release(peer_t *p, uint32_t task)
{
    for (size_t i = 0; i < p->nheld; i++)
        if (p->held[i] == task) {
            p->held[i] = p->held[--p->nheld];
            return true;
        }
    return false;
}

static peer_t *holder_of(broker_t *b, uint32_t task)
{
    for (size_t i = 0; i < b->npeers; i++) {
        peer_t *p = b->peers[i];
        if (p->kind == PEER_WORKER && !p->dead)
            for (size_t k = 0; k < p->nheld; k++)
                if (p->held[k] == task)
                    return p;
    }
    return NULL;
}

static peer_t *collector(broker_t *b)
{
    for (size_t i = 0; i < b->npeers; i++)
        if (b->peers[i]->kind == PEER_COLLECTOR && !b->peers[i]->dead)
            return b->peers[i];
    return NULL;
}

/* ---- the store, in a transaction per iteration ------------------------- */

static bf_err_t tx(broker_t *b)
{
    if (b->in_tx)
        return BF_OK;
    bf_err_t rc = broker_store_begin(b->store);
    if (rc == BF_OK)
        b->in_tx = true;
    return rc;
}

/* ---- task outcomes ------------------------------------------------------ */

/* The task failed on this attempt (error result, lost worker, timeout):
   requeue it, or make it final with status error when attempts are used up.
   result may be NULL (nothing came back). */
static bf_err_t task_failed(broker_t *b, uint32_t t, const char *host, const char *device,
                            const char *worker, const char *reason, json_t *result)
{
    bf_err_t rc = tx(b);
    if (rc != BF_OK)
        return rc;
    return broker_store_task_failed(b->store, t, host, device, worker, reason, result);
}

/* ---- message handlers ----------------------------------------------------- */

static void on_ready(broker_t *b, const uint8_t *id, size_t id_len, peer_t *p, proto_msg_t *m)
{
    if (p && p->kind != PEER_WORKER) {
        reply_error(b, id, id_len, BF_ESTATE, "this connection is a collector");
        return;
    }
    if (!p && !(p = peer_add(b, id, id_len, PEER_WORKER)))
        return;
    free(p->name);
    p->name = bf_strdup(m->worker && *m->worker ? m->worker : "worker");
    json_decref(p->caps);
    p->caps = m->obj ? json_incref(m->obj) : json_object();
    const char *host = json_string_value(json_object_get(p->caps, "host"));
    const char *dev = json_string_value(json_object_get(p->caps, "name"));
    free(p->host);
    free(p->device);
    p->host = bf_strdup(host ? host : "?");
    p->device = bf_strdup(dev ? dev : "?");
    json_t *gi = json_object_get(p->caps, "device_index");
    p->gpu_id = json_is_integer(gi) ? json_integer_value(gi) : -1;
    uint64_t credit = m->credit > 1024 ? 1024 : m->credit;
    /* Re-adopt the tasks it says it still runs (after a broker restart or a
       reconnect); they keep their attempt. */
    size_t i;
    json_t *tid;
    json_array_foreach(json_object_get(p->caps, "running"), i, tid)
    {
        const char *s = json_string_value(tid);
        uint32_t t;
        if (s && broker_store_find_task(b->store, s, &t) && broker_store_task_running(b->store, t)) {
            peer_t *old = holder_of(b, t);
            if (old && old != p)
                peer_release(old, t);
            if (old != p && peer_hold(p, t)) {
                broker_store_task_adopted(b->store, t, p->name);
                if (credit > 0)
                    credit--;
            }
        }
    }
    p->credit = credit;
    bf_info("worker %s ready (%s, %s, credit %llu)", p->name, p->host, p->device,
            (unsigned long long)p->credit);
}

static void on_collect(broker_t *b, const uint8_t *id, size_t id_len, peer_t *p, proto_msg_t *m)
{
    if (p && p->kind != PEER_COLLECTOR) {
        reply_error(b, id, id_len, BF_ESTATE, "this connection is a worker");
        return;
    }
    /* One collector at a time: a new one replaces the old. */
    peer_t *old = collector(b);
    if (old && old != p)
        old->dead = true;
    if (!p && !(p = peer_add(b, id, id_len, PEER_COLLECTOR)))
        return;
    free(p->name);
    p->name = bf_strdup(m->worker && *m->worker ? m->worker : "collector");
    p->credit = m->credit == 0 ? 1 : (m->credit > COLLECT_MAX ? COLLECT_MAX : m->credit);
    free(p->inflight);
    p->inflight = calloc(p->credit, sizeof *p->inflight);
    p->ninflight = 0;
    p->sent_upto = 0; /* everything unacked goes again */
    if (!p->inflight)
        p->dead = true;
    bf_info("collector %s registered (credit %llu)", p->name, (unsigned long long)p->credit);
}

static void on_progress(broker_t *b, peer_t *p, proto_msg_t *m)
{
    (void)b;
    bf_strlcpy(p->stage, m->stage ? m->stage : "", sizeof p->stage);
    p->fraction = m->fraction;
}

static bf_err_t on_result(broker_t *b, const uint8_t *id, size_t id_len, peer_t *p,
                          proto_msg_t *m)
{
    uint32_t t;
    bf_err_t rc = BF_OK;
    if (m->task_id && broker_store_find_task(b->store, m->task_id, &t)) {
        peer_t *holder = holder_of(b, t);
        if (holder) {
            peer_release(holder, t);
            holder->credit++;
            holder->stage[0] = '\0';
        }
        if (!broker_store_task_final(b->store, t)) {
            json_t *res = m->obj;
            const char *status = json_string_value(json_object_get(res, "status"));
            double elapsed = json_number_value(json_object_get(res, "elapsed_time"));
            peer_t *who = holder ? holder : p;
            if (who) {
                who->done++;
                who->busy_s += elapsed > 0 ? elapsed : 0;
            }
            if ((rc = tx(b)) != BF_OK)
                return rc;
            if (status && !strcmp(status, "error")) {
                const char *reason = json_string_value(json_object_get(res, "reason"));
                const char *host = json_string_value(json_object_get(res, "host"));
                const char *dev = json_string_value(json_object_get(res, "device"));
                const char *wname = json_string_value(json_object_get(res, "worker"));
                rc = task_failed(b, t, host ? host : (who ? who->host : "?"),
                                 dev ? dev : (who ? who->device : "?"),
                                 wname ? wname : (who ? who->name : "?"), reason ? reason : "error",
                                 res);
            } else if (status && (!strcmp(status, "success") || !strcmp(status, "failed"))) {
                rc = broker_store_task_done(b->store, t, res);
            } else {
                rc = task_failed(b, t, who ? who->host : "?", who ? who->device : "?",
                                 who ? who->name : "?", "result without a valid status", res);
            }
            if (rc != BF_OK)
                return rc;
        }
    }
    /* Acked once durable (the queue is flushed after commit); an unknown or
       already final task is acked too, so the worker can forget it. */
    proto_msg_t *ack = queue_to(b, id, id_len, PROTO_ACK);
    if (ack && proto_msg_set(&ack->task_id, m->task_id) != BF_OK)
        ack->task_id = NULL;
    return rc;
}

static bf_err_t on_submit(broker_t *b, const uint8_t *id, size_t id_len, proto_msg_t *m)
{
    bf_job_t job;
    char err[BF_ERRLEN] = "";
    if (!m->obj || bf_job_from_json(m->obj, &job, err) != BF_OK) {
        reply_error(b, id, id_len, BF_EINVAL, err[0] ? err : "submit: bad job document");
        return BF_OK;
    }
    if (job.scene_count == 0) {
        bf_job_clear(&job);
        reply_error(b, id, id_len, BF_EINVAL, "submit: the job has no scenes");
        return BF_OK;
    }
    bf_err_t rc = tx(b);
    char job_id[16];
    if (rc == BF_OK)
        rc = broker_store_add_job(b->store, &job, job_id);
    if (rc == BF_OK) {
        proto_msg_t *r = queue_to(b, id, id_len, PROTO_SUBMITTED);
        if (r && proto_msg_set(&r->job_id, job_id) == BF_OK)
            r->total = job.scene_count;
        bf_info("job %s '%s': %zu %s tasks", job_id, job.name, job.scene_count,
                job.task == BF_TASK_EXEC ? "exec" : "boresight");
    }
    bf_job_clear(&job);
    return rc;
}

static bf_err_t on_cancel(broker_t *b, const uint8_t *id, size_t id_len, proto_msg_t *m)
{
    bf_err_t rc = tx(b);
    if (rc != BF_OK)
        return rc;
    uint32_t *running = NULL;
    size_t nrunning = 0;
    uint64_t count = 0;
    rc = broker_store_cancel_job(b->store, m->job_id ? m->job_id : "", &count, &running,
                                 &nrunning);
    if (rc == BF_ENOENT) {
        char reason[128];
        snprintf(reason, sizeof reason, "no such job '%.40s'", m->job_id ? m->job_id : "");
        reply_error(b, id, id_len, BF_ENOENT, reason);
        return BF_OK;
    }
    if (rc != BF_OK)
        return rc;
    for (size_t i = 0; i < nrunning; i++) {
        peer_t *h = holder_of(b, running[i]);
        if (!h)
            continue;
        peer_release(h, running[i]);
        h->credit++;
        proto_msg_t *ab = queue_to(b, h->id, h->id_len, PROTO_ABORT);
        if (ab) {
            if (proto_msg_set(&ab->task_id, broker_store_task_id(b->store, running[i])) != BF_OK ||
                proto_msg_set(&ab->reason, "cancelled by user") != BF_OK)
                bf_warn("abort: out of memory");
        }
    }
    free(running);
    proto_msg_t *r = queue_to(b, id, id_len, PROTO_CANCELLED);
    if (r && proto_msg_set(&r->job_id, m->job_id) == BF_OK)
        r->total = count;
    bf_info("job %s cancelled: %llu tasks", m->job_id, (unsigned long long)count);
    return BF_OK;
}

static json_t *worker_doc(const peer_t *p, broker_t *b)
{
    json_t *w = json_pack("{s:s, s:s, s:s, s:I, s:O, s:O, s:O, s:O, s:s, s:I, s:f, s:I}", "name",
                          p->name ? p->name : "", "host", p->host ? p->host : "", "device",
                          p->device ? p->device : "", "device_index", (json_int_t)p->gpu_id,
                          "backend", json_object_get(p->caps, "backend") ?: json_null(), "uuid",
                          json_object_get(p->caps, "uuid") ?: json_null(), "memory_bytes",
                          json_object_get(p->caps, "memory_bytes") ?: json_null(),
                          "compute_capability",
                          json_object_get(p->caps, "compute_capability") ?: json_null(), "state",
                          p->nheld ? "busy" : "idle", "done", (json_int_t)p->done, "mean_s",
                          p->done ? p->busy_s / (double)p->done : 0.0, "credit",
                          (json_int_t)p->credit);
    if (!w)
        return NULL;
    const char *scene = "";
    if (p->nheld)
        scene = broker_store_task_scene(b->store, p->held[0]);
    json_object_set_new(w, "task_scene", json_string(scene));
    json_object_set_new(w, "task_stage", json_string(p->nheld ? p->stage : ""));
    json_object_set_new(w, "task_fraction", json_real(p->nheld ? p->fraction : 0.0));
    return w;
}

static void on_status(broker_t *b, const uint8_t *id, size_t id_len, proto_msg_t *m)
{
    json_t *doc = json_object();
    json_t *workers = json_array();
    for (size_t i = 0; i < b->npeers; i++)
        if (b->peers[i]->kind == PEER_WORKER && !b->peers[i]->dead)
            json_array_append_new(workers, worker_doc(b->peers[i], b));
    peer_t *c = collector(b);
    json_object_set_new(doc, "broker",
                        json_pack("{s:s, s:f, s:s, s:I}", "version", BF_VERSION, "uptime_s",
                                  (double)(bf_mono_ms() - b->started_ms) / 1000.0, "state_dir",
                                  b->state_dir, "bad_messages", (json_int_t)b->bad_messages));
    json_object_set_new(doc, "workers", workers);
    json_object_set_new(doc, "collector",
                        json_pack("{s:b, s:I, s:I}", "connected", c != NULL, "unacked",
                                  (json_int_t)(c ? c->ninflight : 0), "outbox",
                                  (json_int_t)broker_store_outbox_count(b->store)));
    json_object_set_new(doc, "queue", json_integer((json_int_t)broker_store_queued(b->store)));
    json_object_set_new(doc, "jobs", broker_store_jobs_doc(b->store));
    uint64_t next = m->seq;
    json_object_set_new(doc, "events",
                        broker_store_events(b->store, m->job_id ? m->job_id : "", m->seq,
                                            MAX_EVENTS, &next));
    json_object_set_new(doc, "next_seq", json_integer((json_int_t)next));
    proto_msg_t *r = queue_to(b, id, id_len, PROTO_STATUS_REPLY);
    if (r)
        r->obj = doc;
    else
        json_decref(doc);
}

static void on_ack(broker_t *b, peer_t *p, proto_msg_t *m)
{
    for (size_t i = 0; i < p->ninflight; i++)
        if (p->inflight[i] == m->seq) {
            p->inflight[i] = p->inflight[--p->ninflight];
            break;
        }
    if (tx(b) == BF_OK)
        broker_store_outbox_ack(b->store, m->seq);
}

static void on_goodbye(broker_t *b, peer_t *p)
{
    if (p->kind == PEER_WORKER) {
        if (tx(b) != BF_OK)
            return;
        for (size_t i = 0; i < p->nheld; i++)
            broker_store_task_returned(b->store, p->held[i]);
        bf_info("worker %s said goodbye (%zu tasks returned)", p->name, p->nheld);
        p->nheld = 0;
    }
    p->dead = true;
}

/* Applies one message; BF_EDB (only) stops the broker. */
static bf_err_t handle(broker_t *b, const uint8_t *id, size_t id_len, proto_msg_t *m)
{
    peer_t *p = peer_find(b, id, id_len);
    if (p)
        p->last_recv = bf_mono_ms();
    switch (m->type) {
    case PROTO_READY:
        on_ready(b, id, id_len, p, m);
        return BF_OK;
    case PROTO_COLLECT:
        on_collect(b, id, id_len, p, m);
        return BF_OK;
    case PROTO_SUBMIT:
        return on_submit(b, id, id_len, m);
    case PROTO_STATUS:
        on_status(b, id, id_len, m);
        return BF_OK;
    case PROTO_CANCEL:
        return on_cancel(b, id, id_len, m);
    case PROTO_RESULT:
        return on_result(b, id, id_len, p && p->kind == PEER_WORKER ? p : NULL, m);
    default:
        break;
    }
    if (!p) {
        reply_error(b, id, id_len, BF_ENOENT, "unknown peer");
        return BF_OK;
    }
    switch (m->type) {
    case PROTO_HEARTBEAT:
        break;
    case PROTO_PROGRESS:
        if (p->kind == PEER_WORKER)
            on_progress(b, p, m);
        break;
    case PROTO_ACK:
        if (p->kind == PEER_COLLECTOR)
            on_ack(b, p, m);
        break;
    case PROTO_GOODBYE:
        on_goodbye(b, p);
        break;
    default:
        b->bad_messages++;
        bf_debug("unexpected %s from %s", proto_type_name(m->type), p->name);
        break;
    }
    return BF_OK;
}

/* ---- timers: heartbeats, dead peers, leases, dispatch, delivery -------- */

static bf_err_t expire(broker_t *b, int64_t now)
{
    int64_t dead_after = (int64_t)b->cfg.heartbeat_ms * b->cfg.liveness;
    for (size_t i = 0; i < b->npeers; i++) {
        peer_t *p = b->peers[i];
        if (p->dead || now - p->last_recv <= dead_after)
            continue;
        bf_warn("%s %s lost (silent for %lld ms)", p->kind == PEER_WORKER ? "worker" : "collector",
                p->name, (long long)(now - p->last_recv));
        p->dead = true;
        for (size_t k = 0; k < p->nheld; k++) {
            bf_err_t rc = task_failed(b, p->held[k], p->host, p->device, p->name, "worker lost",
                                      NULL);
            if (rc != BF_OK)
                return rc;
        }
        p->nheld = 0;
    }
    /* Leases: tasks past their backstop, and tasks that were running when
       the broker restarted and whose worker has not come back. */
    uint32_t *late = NULL;
    size_t nlate = 0;
    bf_err_t rc = broker_store_expired(b->store, now, (int64_t)BACKSTOP_MS + dead_after, &late,
                                       &nlate);
    for (size_t i = 0; rc == BF_OK && i < nlate; i++) {
        peer_t *h = holder_of(b, late[i]);
        if (h)
            peer_release(h, late[i]);
        rc = task_failed(b, late[i], h ? h->host : "?", h ? h->device : "?", h ? h->name : "?",
                         h ? "task lease expired" : "worker lost (not back after a broker restart)",
                         NULL);
    }
    free(late);
    return rc;
}

static void reap(broker_t *b)
{
    size_t j = 0;
    for (size_t i = 0; i < b->npeers; i++) {
        if (b->peers[i]->dead)
            peer_free(b->peers[i]);
        else
            b->peers[j++] = b->peers[i];
    }
    b->npeers = j;
}

static bf_err_t dispatch(broker_t *b)
{
    for (;;) {
        if (broker_store_queued(b->store) == 0)
            return BF_OK;
        /* next worker with credit, round robin */
        peer_t *w = NULL;
        for (size_t k = 0; k < b->npeers; k++) {
            peer_t *p = b->peers[(b->rr + k) % b->npeers];
            if (p->kind == PEER_WORKER && !p->dead && p->credit > 0) {
                w = p;
                b->rr = (b->rr + k + 1) % b->npeers;
                break;
            }
        }
        if (!w)
            return BF_OK;
        bf_err_t rc = tx(b);
        if (rc != BF_OK)
            return rc;
        uint32_t t;
        rc = broker_store_lease(b->store, w->name, bf_mono_ms(), &t);
        if (rc != BF_OK)
            return rc == BF_ENOENT ? BF_OK : rc;
        if (!peer_hold(w, t))
            return BF_ENOMEM;
        w->credit--;
        proto_msg_t *m = queue_to(b, w->id, w->id_len, PROTO_TASK);
        if (!m)
            return BF_ENOMEM;
        rc = broker_store_task_msg(b->store, t, m);
        if (rc != BF_OK)
            return rc;
    }
}

static bf_err_t deliver(broker_t *b)
{
    peer_t *c = collector(b);
    if (!c || c->ninflight >= c->credit)
        return BF_OK;
    size_t want = (size_t)c->credit - c->ninflight;
    broker_delivery_t *d = NULL;
    size_t n = 0;
    bf_err_t rc = broker_store_outbox_after(b->store, c->sent_upto, want, &d, &n);
    for (size_t i = 0; rc == BF_OK && i < n; i++) {
        proto_msg_t *m = queue_to(b, c->id, c->id_len, d[i].job_done ? PROTO_JOB_DONE : PROTO_DELIVER);
        if (!m) {
            rc = BF_ENOMEM;
            break;
        }
        m->seq = d[i].seq;
        m->job_id = d[i].job_id;
        d[i].job_id = NULL;
        m->task_id = d[i].task_id;
        d[i].task_id = NULL;
        m->obj = d[i].payload;
        d[i].payload = NULL;
        c->inflight[c->ninflight++] = d[i].seq;
        c->sent_upto = d[i].seq;
    }
    broker_store_deliveries_free(d, n);
    return rc;
}

static void heartbeats(broker_t *b, int64_t now)
{
    for (size_t i = 0; i < b->npeers; i++) {
        peer_t *p = b->peers[i];
        if (!p->dead && now - p->last_send >= (int64_t)b->cfg.heartbeat_ms)
            queue_to(b, p->id, p->id_len, PROTO_HEARTBEAT);
    }
}

/* ---- life cycle --------------------------------------------------------- */

static bool loopback_endpoint(const char *ep)
{
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9))
        return true;
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    const char *h = ep + 6;
    return !strncmp(h, "127.", 4) || !strncmp(h, "localhost:", 10) || !strncmp(h, "[::1]:", 6);
}

broker_t *broker_new(const broker_config_t *cfg, char *err)
{
    if (!cfg->bind || !cfg->state_dir) {
        bf_fail(err, BF_EINVAL, "broker: bind endpoint and state directory are required");
        return NULL;
    }
    if (!loopback_endpoint(cfg->bind) && !cfg->insecure) {
        bf_fail(err, BF_EPERM,
                "--bind %s: not a loopback address; without CURVE keys this needs --insecure "
                "(broker.insecure: true)",
                cfg->bind);
        return NULL;
    }
    broker_t *b = calloc(1, sizeof *b);
    if (!b) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    if (!b->cfg.heartbeat_ms)
        b->cfg.heartbeat_ms = 1000;
    if (!b->cfg.liveness)
        b->cfg.liveness = 3;
    b->bind = bf_strdup(cfg->bind);
    b->state_dir = bf_strdup(cfg->state_dir);
    b->started_ms = bf_mono_ms();
    if (!b->bind || !b->state_dir || bf_mkdir_p(cfg->state_dir, err) != BF_OK)
        goto fail;
    if (broker_store_open(cfg->state_dir, bf_mono_ms(),
                          2 * (int64_t)b->cfg.heartbeat_ms * b->cfg.liveness, &b->store,
                          err) != BF_OK)
        goto fail;
    b->ctx = zmq_ctx_new();
    b->router = b->ctx ? zmq_socket(b->ctx, ZMQ_ROUTER) : NULL;
    if (!b->router) {
        bf_fail(err, BF_EIO, "zmq: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int one = 1, zero = 0;
    int64_t maxmsg = (int64_t)PROTO_MAX_FRAME + 1024;
    zmq_setsockopt(b->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(b->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(b->router, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(b->router, cfg->bind) != 0) {
        bf_fail(err, BF_EIO, "--bind %s: %s", cfg->bind, zmq_strerror(zmq_errno()));
        goto fail;
    }
    char ep[256];
    size_t eplen = sizeof ep;
    if (zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, ep, &eplen) == 0)
        b->endpoint = bf_strdup(ep);
    else
        b->endpoint = bf_strdup(cfg->bind);
    return b;
fail:
    broker_destroy(&b);
    return NULL;
}

const char *broker_endpoint(const broker_t *self)
{
    return self->endpoint;
}

void broker_stop(broker_t *self)
{
    self->stop = 1;
}

void broker_destroy(broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_t *b = *self_p;
    for (size_t i = 0; i < b->npeers; i++)
        peer_free(b->peers[i]);
    free(b->peers);
    for (size_t i = 0; i < b->nout; i++)
        proto_msg_clear(&b->out[i].msg);
    free(b->out);
    if (b->router)
        zmq_close(b->router);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    broker_store_close(&b->store);
    free(b->bind);
    free(b->endpoint);
    free(b->state_dir);
    free(b);
    *self_p = NULL;
}

bf_err_t broker_run(broker_t *b)
{
    int64_t next_timer = bf_mono_ms();
    while (!b->stop) {
        int64_t now = bf_mono_ms();
        long timeout = next_timer > now ? (long)(next_timer - now) : 0;
        zmq_pollitem_t item = {b->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, timeout) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            bf_error("zmq_poll: %s", zmq_strerror(zmq_errno()));
            return BF_EIO;
        }
        bf_err_t rc = BF_OK;
        for (int n = 0; n < BATCH && rc == BF_OK; n++) {
            uint8_t id[MAX_ID];
            size_t id_len = sizeof id;
            proto_msg_t m;
            char why[BF_ERRLEN] = "";
            bf_err_t r = proto_recv(b->router, id, &id_len, &m, ZMQ_DONTWAIT, why);
            if (r == BF_EIO)
                break; /* nothing more (EAGAIN) */
            if (r != BF_OK) {
                /* Log the first few, then one in a thousand: a flood of
                   garbage must not become a flood of log lines. */
                if (++b->bad_messages <= 10 || b->bad_messages % 1000 == 0)
                    bf_warn("dropping a malformed message (%llu so far): %s",
                            (unsigned long long)b->bad_messages, why);
                if (r == BF_EPROTO && id_len > 0 && id_len <= MAX_ID && strstr(why, "version"))
                    reply_error(b, id, id_len, BF_EPROTO, why);
                continue;
            }
            rc = handle(b, id, id_len, &m);
            proto_msg_clear(&m);
        }
        now = bf_mono_ms();
        if (rc == BF_OK && now >= next_timer) {
            rc = expire(b, now);
            heartbeats(b, now);
            next_timer = now + (b->cfg.heartbeat_ms / 4 > 0 ? b->cfg.heartbeat_ms / 4 : 1);
        }
        if (rc == BF_OK)
            rc = dispatch(b);
        if (rc == BF_OK)
            rc = deliver(b);
        if (rc == BF_OK && b->in_tx)
            rc = broker_store_commit(b->store);
        b->in_tx = false;
        if (rc != BF_OK) {
            bf_error("stopping: the store failed (%s); nothing after the last commit was "
                     "promised",
                     bf_strerror(rc));
            return BF_EDB;
        }
        flush_out(b);
        reap(b);
    }
    return BF_OK;
}
