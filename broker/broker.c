/*  broker/broker.c - the broker: a single-threaded reactor on one ROUTER
    socket. Each routing id is a peer with a small state machine (unknown ->
    worker or collector -> dead, reaped at the end of the loop iteration);
    each task has one (queued -> running -> final, in broker_store.c). Work
    arriving in one iteration of the loop is applied to memory and to the
    store inside one SQLite transaction, and the replies it causes
    (SUBMITTED, ACK, TASK, DELIVER, ...) are queued and sent only after
    COMMIT: group commit, so nothing is promised before it is durable. A
    timer pass sends heartbeats, expires silent peers (the tasks they had
    started count a "worker lost" attempt, the ones they only held go back
    unchanged; a LOST from a supervisor does the same at once) and task
    leases. Failures are attributed: a task's own fault never counts against
    a device, an unattributed one only once the task succeeds elsewhere. The
    state directory is locked for the broker's life. See
    docs/architecture.md. */

#include "broker.h"
#include "broker_metrics.h"
#include "broker_store.h"

#include "../common/bf_config.h"
#include "../proto/proto_link.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_ID      256  /* routing id bytes (libzmq allows 255) */
#define BATCH       256  /* messages applied per transaction */
#define MAX_EVENTS  1000 /* status events per reply */
#define COLLECT_MAX 4096 /* deliveries in flight to the collector */
/* Tasks one worker may hold (READY credit is capped here): a worker runs
   one task at a time, so a deep prefetch only takes work away from the
   others; a READY with credit 2^63 gets CREDIT_BASE. A worker whose results
   come in less than HOLD_MS / CREDIT_BASE apart may hold as many as it
   finishes in HOLD_MS, up to CREDIT_MAX: with tasks of tens of
   microseconds, 16 ran out before the broker's refill came (the worker
   idled a third of the time), and 64 of them are still under 5 ms of work
   at a job's end. The same rule as the worker's own (worker.c,
   adapt_credit). */
#define CREDIT_BASE 16
#define CREDIT_MAX  64
#define HOLD_MS     5.0
#define ADOPT_MAX   256 /* tasks a re-registering worker may claim (caps.running) */
/* A held task a dying worker had not reported started goes back without an
   attempt this many times; after that its loss counts (a task that crashes
   its worker before the first PROGRESS gets out). */
#define UNSTARTED_MAX 2
#define BACKSTOP_MS   5000 /* added to timeout + I*L before the broker gives up on a task */
#define SNDHWM        100000

typedef enum { PEER_WORKER, PEER_COLLECTOR } peer_kind_t;

typedef struct peer peer_t;
struct peer {
    uint8_t id[MAX_ID];
    size_t id_len;
    peer_kind_t kind;
    char *name;
    json_t *caps;        /* the capability fields status shows, copied and bounded */
    char *host, *device; /* for status and failure reasons */
    char *fault_key;     /* its fault domain: "host/gpuN", or its name for a CPU worker */
    size_t health;       /* index of its fault domain in broker_t.health */
    uint64_t passed;     /* the dispatch round that found nothing it may take */
    int64_t gpu_id;
    uint64_t credit; /* tasks (or deliveries) it may still take */
    /* a worker: the credit it asked for (at most CREDIT_MAX), and the mean
       time between its results while it had more in hand (ms, 0: not yet
       known) since last_result_s (0: idle since), for its cap (refill) */
    uint64_t asked;
    double result_gap_ms, last_result_s;
    int64_t last_recv, last_send;
    uint32_t *held;   /* task indices leased to this worker */
    uint8_t *started; /* beside held: a PROGRESS came for it (it ran) */
    size_t nheld, capheld;
    size_t unsent;  /* of held, the TASKs queued to it and not sent yet (awaiting a commit) */
    char *key_name; /* the CURVE key it registered with ("" without CURVE) */
    char addr[64];  /* its connection's Peer-Address at READY */
    uint64_t done;
    double busy_s; /* sum of task times, for the mean */
    char stage[32];
    double fraction;
    uint32_t current; /* the task its last PROGRESS was about */
    bool has_current;
    bool dead;            /* reaped at the end of the iteration, never inside a handler */
    json_t *gpu_stats;    /* the last STATS, checked (broker_metrics_stats_copy), or NULL */
    int64_t gpu_stats_ms; /* when it came */
    /* collector only: seqs sent and not yet acked */
    uint64_t *inflight;
    size_t ninflight;
    uint64_t sent_upto;
};

/* Fault attribution per fault domain (a GPU, or a CPU worker): a domain
   that fails QUARANTINE_AFTER different tasks in a row, with no success
   between, gets no tasks for QUARANTINE_MS; then it is on probation (one
   more failure quarantines it again, a success clears it). */
#define QUARANTINE_AFTER 3
#define QUARANTINE_MS    (10 * 60 * 1000)
#define PENDING_MAX      8
typedef struct {
    char *key;
    unsigned streak; /* different tasks failed in a row */
    /* Tasks that failed here without attribution (a timeout, a crash, a
       lost worker) and are not resolved yet: each is charged (streak + 1)
       if the task then succeeds in another domain, and forgotten if it
       fails in another domain too (the task's fault). While pending +
       streak reaches QUARANTINE_AFTER the domain gets no new task, as long
       as another domain can take them. */
    uint32_t pending[PENDING_MAX];
    unsigned npending;
    char recent[QUARANTINE_AFTER][33]; /* the task ids of the streak */
    int64_t quarantined_until;         /* 0 when not quarantined */
    uint64_t quarantines;
    char last_reason[128];
} health_t;

typedef struct {
    uint8_t id[MAX_ID];
    size_t id_len;
    peer_t *peer; /* NULL for a client */
    proto_msg_t msg;
} outmsg_t;

struct broker {
    broker_config_t cfg;
    char *bind, *endpoint, *state_dir;
    void *ctx, *router;
    broker_store_t *store;
    bf_wake_t stop; /* raised by broker_stop, from a signal handler or a thread */
    peer_t **peers;
    size_t npeers, cappeers;
    peer_t **ptab; /* routing id -> peer, open addressing, rebuilt on reap */
    size_t pcap;
    size_t rr; /* round-robin cursor over peers */
    outmsg_t *out;
    size_t nout, capout;
    int64_t started_ms;
    bool in_tx;
    int64_t last_commit; /* bf_mono_ms of the last commit: the next is due COMMIT_GAP_MS later */
    /* BEAMFLEET_FAULT_ACK_HOLD (fault injection, tests/e2e): acknowledged
       outbox rows are deleted only by a transaction made for something
       else, never by the timer, so that a test can kill the broker while
       some wait */
    bool ack_hold;
    /* metrics (broker_metrics.h): NULL when off; the counters are kept anyway */
    broker_metrics_t *metrics;
    uint64_t received, commits;
    uint64_t mcursor; /* final tasks up to this store sequence are in the metrics */
    int64_t msweep_next;
    uint64_t bad_messages, refused_messages;
    bf_security_t *security; /* NULL: plaintext (loopback or insecure) */
    health_t *health;        /* one per fault domain seen, never shrinks */
    uint64_t dispatch_round;
    size_t nhealth, caphealth;
    bf_zap_t *zap;
    int lock_fd; /* STATE/broker.lock, flock()ed for the broker's life */
};

/* ---- outgoing messages, sent after commit ------------------------------- */

static proto_msg_t *queue_to(broker_t *b, const uint8_t *id, size_t id_len, peer_t *peer,
                             proto_type_t type)
{
    if (!bf_grow(&b->out, &b->capout, b->nout + 1, sizeof *b->out, 256))
        return NULL;
    outmsg_t *o = &b->out[b->nout++];
    memcpy(o->id, id, id_len);
    o->id_len = id_len;
    o->peer = peer;
    proto_msg_init(&o->msg, type);
    return &o->msg;
}

static proto_msg_t *queue_peer(broker_t *b, peer_t *p, proto_type_t type)
{
    return queue_to(b, p->id, p->id_len, p, type);
}

static void flush_out(broker_t *b)
{
    int64_t now = bf_mono_ms();
    for (size_t i = 0; i < b->nout; i++) {
        outmsg_t *o = &b->out[i];
        if (o->peer)
            o->peer->unsent = 0;
        if (proto_send(b->router, o->id, o->id_len, &o->msg, ZMQ_DONTWAIT) != BF_OK)
            /* A gone peer (EHOSTUNREACH): a worker's tasks come back when it
               is declared dead, a collector's deliveries when it registers
               again, a client simply asks again. */
            bf_debug("send %s failed: %s", proto_type_name(o->msg.type), zmq_strerror(zmq_errno()));
        else if (o->peer)
            o->peer->last_send = now;
        proto_msg_clear(&o->msg);
    }
    b->nout = 0;
}

static void reply_error(broker_t *b, const uint8_t *id, size_t id_len, bf_err_t code,
                        const char *reason)
{
    proto_msg_t *m = queue_to(b, id, id_len, NULL, PROTO_ERROR);
    if (!m)
        return;
    m->code = (uint64_t)code;
    if (proto_msg_set(&m->reason, reason) != BF_OK)
        m->reason = NULL;
}

/* ---- peers -------------------------------------------------------------- */

static uint64_t id_hash(const uint8_t *id, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ id[i]) * 1099511628211ull;
    return h;
}

static void ptab_insert(peer_t **tab, size_t cap, peer_t *p)
{
    size_t k = id_hash(p->id, p->id_len) & (cap - 1);
    while (tab[k])
        k = (k + 1) & (cap - 1);
    tab[k] = p;
}

/* Rebuilds the routing-id table with room for at least `room` peers. */
static bool ptab_rebuild(broker_t *b, size_t room)
{
    size_t cap = 64;
    while (cap < 2 * room)
        cap *= 2;
    peer_t **tab = calloc(cap, sizeof *tab);
    if (!tab)
        return false;
    for (size_t i = 0; i < b->npeers; i++)
        if (!b->peers[i]->dead)
            ptab_insert(tab, cap, b->peers[i]);
    free(b->ptab);
    b->ptab = tab;
    b->pcap = cap;
    return true;
}

static peer_t *peer_find(broker_t *b, const uint8_t *id, size_t id_len)
{
    if (!b->pcap)
        return NULL;
    size_t k = id_hash(id, id_len) & (b->pcap - 1);
    for (peer_t *p; (p = b->ptab[k]); k = (k + 1) & (b->pcap - 1))
        if (!p->dead && p->id_len == id_len && !memcmp(p->id, id, id_len))
            return p;
    return NULL;
}

static void peer_free(peer_t *p)
{
    free(p->fault_key);
    free(p->name);
    free(p->host);
    free(p->device);
    json_decref(p->caps);
    free(p->held);
    free(p->started);
    free(p->key_name);
    free(p->inflight);
    json_decref(p->gpu_stats);
    free(p);
}

static peer_t *peer_add(broker_t *b, const uint8_t *id, size_t id_len, peer_kind_t kind)
{
    if (!bf_grow(&b->peers, &b->cappeers, b->npeers + 1, sizeof *b->peers, 16))
        return NULL;
    peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(p->id, id, id_len);
    p->id_len = id_len;
    p->kind = kind;
    p->gpu_id = -1;
    p->health = SIZE_MAX; /* set by READY */
    p->last_recv = p->last_send = bf_mono_ms();
    if (2 * (b->npeers + 1) > b->pcap) {
        b->peers[b->npeers++] = p; /* the rebuild inserts it */
        if (!ptab_rebuild(b, b->npeers)) {
            b->npeers--;
            peer_free(p);
            return NULL;
        }
        return p;
    }
    b->peers[b->npeers++] = p;
    ptab_insert(b->ptab, b->pcap, p);
    return p;
}

static bool peer_hold(peer_t *p, uint32_t task, bool started)
{
    if (p->nheld == p->capheld) { /* held and started share one capacity */
        size_t cap = bf_grow_cap(p->capheld, p->nheld + 1, 4);
        if (!cap || !bf_resize(&p->held, cap, sizeof *p->held) ||
            !bf_resize(&p->started, cap, sizeof *p->started))
            return false;
        p->capheld = cap;
    }
    p->started[p->nheld] = started;
    p->held[p->nheld++] = task;
    return true;
}

/* The tasks worker p may hold now: CREDIT_BASE, or what it finishes in
   HOLD_MS when its results come faster, up to CREDIT_MAX. */
static uint64_t credit_cap(const peer_t *p)
{
    double n = p->result_gap_ms > 0 ? HOLD_MS / p->result_gap_ms : 0;
    return n <= CREDIT_BASE ? CREDIT_BASE : n >= CREDIT_MAX ? CREDIT_MAX : (uint64_t)n;
}

/* Sets p's credit to what it asked for, within its cap, less what it holds. */
static void refill(peer_t *p)
{
    uint64_t cap = credit_cap(p), want = p->asked < cap ? p->asked : cap;
    p->credit = want > p->nheld ? want - p->nheld : 0;
}

/* A result of worker p came in (p no longer holds its task): the gap since
   its last one, while it had more in hand, goes into its mean. */
static void note_result(peer_t *p)
{
    double now = bf_mono_s();
    if (p->last_result_s > 0) {
        double gap = (now - p->last_result_s) * 1000.0;
        p->result_gap_ms = p->result_gap_ms > 0 ? (15 * p->result_gap_ms + gap) / 16 : gap;
    }
    p->last_result_s = p->nheld > 0 ? now : 0; /* idle from here: no gap to count */
}

static bool peer_holds(const peer_t *p, uint32_t task)
{
    for (size_t i = 0; p && i < p->nheld; i++)
        if (p->held[i] == task)
            return true;
    return false;
}

static bool peer_release(peer_t *p, uint32_t task)
{
    for (size_t i = 0; i < p->nheld; i++)
        if (p->held[i] == task) {
            p->nheld--;
            p->held[i] = p->held[p->nheld];
            p->started[i] = p->started[p->nheld];
            return true;
        }
    return false;
}

/* The live worker holding task, trying the likely one first. */
static peer_t *holder_of(broker_t *b, uint32_t task, peer_t *likely)
{
    if (likely && !likely->dead && peer_holds(likely, task))
        return likely;
    for (size_t i = 0; i < b->npeers; i++) {
        peer_t *p = b->peers[i];
        if (p->kind == PEER_WORKER && !p->dead && peer_holds(p, task))
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

/* ---- the store, in one transaction per iteration ------------------------ */

static bf_err_t tx(broker_t *b)
{
    if (b->in_tx)
        return BF_OK;
    bf_err_t rc = broker_store_begin(b->store);
    if (rc == BF_OK)
        b->in_tx = true;
    return rc;
}

/* The health record of fault domain key, made on first sight; NULL when
   out of memory. */
static health_t *health_of(broker_t *b, const char *key)
{
    for (size_t i = 0; i < b->nhealth; i++)
        if (!strcmp(b->health[i].key, key))
            return &b->health[i];
    if (!bf_grow(&b->health, &b->caphealth, b->nhealth + 1, sizeof *b->health, 16))
        return NULL;
    health_t *h = &b->health[b->nhealth];
    memset(h, 0, sizeof *h);
    if (!(h->key = bf_strdup(key)))
        return NULL;
    b->nhealth++;
    return h;
}

/* "host/gpuN" for a GPU, the worker's own name for a CPU worker. */
static char *fault_key(const char *host, int64_t gpu_id, const char *worker)
{
    return gpu_id >= 0 ? bf_asprintf("%s/gpu%lld", host, (long long)gpu_id) : bf_strdup(worker);
}

static bool quarantined(const broker_t *b, const peer_t *p, int64_t now)
{
    return p->health < b->nhealth && b->health[p->health].quarantined_until > now;
}

static void note_success(broker_t *b, const char *key)
{
    for (size_t i = 0; key && i < b->nhealth; i++)
        if (!strcmp(b->health[i].key, key)) {
            b->health[i].streak = 0;
            b->health[i].quarantined_until = 0;
        }
}

static void note_failure(broker_t *b, const char *key, const char *task_id, const char *reason)
{
    health_t *h = key ? health_of(b, key) : NULL;
    if (!h)
        return;
    for (unsigned i = 0; i < h->streak && i < QUARANTINE_AFTER; i++)
        if (!strcmp(h->recent[i], task_id))
            return; /* the same task again: not a different failure */
    bf_strlcpy(h->recent[h->streak % QUARANTINE_AFTER], task_id, sizeof h->recent[0]);
    bf_strlcpy(h->last_reason, reason ? reason : "", sizeof h->last_reason);
    if (++h->streak < QUARANTINE_AFTER)
        return;
    int64_t now = bf_mono_ms();
    h->quarantined_until = now + QUARANTINE_MS;
    h->quarantines++;
    h->streak = QUARANTINE_AFTER - 1; /* probation: one more failure and it is back */
    bf_warn("quarantined %s for %d s: %d different tasks failed in a row (last: %s)", key,
            QUARANTINE_MS / 1000, QUARANTINE_AFTER, h->last_reason);
}

/* ---- fault attribution ----------------------------------------------------

   A failed attempt is the task's fault (the worker says fault "task": a
   program not allowed, a scene that does not parse, output that is not a
   result), the device's (fault "device": a CUDA error), or unattributed (a
   timeout, a non-zero exit, a crash, a lost worker). Only device faults
   count toward quarantine at once. An unattributed failure is suspect: it
   is charged to its domain when the same task later succeeds in another
   domain, and nobody is charged when the task fails in a second domain too
   (it fails the same way everywhere: the task's fault). The evidence is the
   task's own failure list in the store (bounded by max_attempts, durable);
   each domain keeps the few tasks it awaits a verdict on. */

typedef enum { FAULT_NONE, FAULT_TASK, FAULT_DEVICE } fault_t;

static const char *fault_name(fault_t f)
{
    return f == FAULT_TASK ? "task" : f == FAULT_DEVICE ? "device" : "";
}

/* A result's own attribution (untrusted: anything else is unattributed). */
static fault_t fault_of(const json_t *result)
{
    const char *f = json_string_value(json_object_get(result, "fault"));
    return !f                     ? FAULT_NONE
           : !strcmp(f, "task")   ? FAULT_TASK
           : !strcmp(f, "device") ? FAULT_DEVICE
                                  : FAULT_NONE;
}

/* The one domain task t failed in without attribution, or NULL when it
   failed so nowhere or in two or more domains (*domains says how many);
   *reason the first such failure's reason. Borrowed from the store. */
static const char *suspect_domain(broker_t *b, uint32_t t, size_t *domains, const char **reason)
{
    const json_t *failures = broker_store_task_failures(b->store, t);
    const char *one = NULL;
    *domains = 0;
    *reason = "";
    size_t i;
    const json_t *f;
    json_array_foreach(failures, i, f)
    {
        const char *fault = json_string_value(json_object_get(f, "fault"));
        const char *key = json_string_value(json_object_get(f, "key"));
        if ((fault && *fault) || !key)
            continue;
        if (!one) {
            one = key;
            *domains = 1;
            const char *r = json_string_value(json_object_get(f, "reason"));
            *reason = r ? r : "";
        } else if (strcmp(one, key) != 0) {
            *domains = 2; /* two are enough for a verdict */
            return NULL;
        }
    }
    return one;
}

static void pending_add(broker_t *b, const char *key, uint32_t t)
{
    health_t *h = key ? health_of(b, key) : NULL;
    if (!h)
        return;
    for (unsigned i = 0; i < h->npending; i++)
        if (h->pending[i] == t)
            return;
    if (h->npending < PENDING_MAX) /* beyond: still charged later, just not held back for */
        h->pending[h->npending++] = t;
}

static void pending_remove(broker_t *b, const char *key, uint32_t t)
{
    for (size_t k = 0; key && k < b->nhealth; k++) {
        health_t *h = &b->health[k];
        if (strcmp(h->key, key) != 0)
            continue;
        for (unsigned i = 0; i < h->npending; i++)
            if (h->pending[i] == t) {
                h->pending[i] = h->pending[--h->npending];
                return;
            }
    }
}

/* Whether domain h has so many unresolved suspect failures that, were they
   all charged, it would be quarantined (tasks that became final meanwhile,
   cancelled or out of attempts, are dropped: their verdict never comes). */
static bool suspended(broker_t *b, health_t *h)
{
    for (unsigned i = 0; i < h->npending;)
        if (broker_store_task_final(b->store, h->pending[i]))
            h->pending[i] = h->pending[--h->npending];
        else
            i++;
    return h->npending > 0 && h->streak + h->npending >= QUARANTINE_AFTER;
}

/* Task t succeeded (or failed validation) in domain key: a suspect failure
   in one other domain is now that domain's fault. */
static void resolve_success(broker_t *b, uint32_t t, const char *key)
{
    size_t domains;
    const char *reason;
    const char *other = suspect_domain(b, t, &domains, &reason);
    if (!other)
        return;
    char *charged = bf_strdup(other); /* note_failure may grow the health table */
    if (!charged)
        return;
    pending_remove(b, charged, t);
    if (strcmp(charged, key) != 0) {
        bf_info("task %s succeeded in %s after failing in %s (%s): charged to %s",
                broker_store_task_id(b->store, t), key, charged, reason, charged);
        note_failure(b, charged, broker_store_task_id(b->store, t), reason);
    }
    free(charged);
}

/* The task failed on this attempt (error result, lost worker, lease over):
   requeue it, or make it final with status error when attempts are used
   up. The stored reason says whose fault it was. result may be NULL
   (nothing came back). */
static bf_err_t task_failed(broker_t *b, uint32_t t, const char *host, const char *device,
                            const char *worker, const char *key, fault_t fault, const char *reason,
                            const uint8_t *result, size_t len)
{
    bf_err_t rc = tx(b);
    if (rc != BF_OK)
        return rc;
    const char *task_id = broker_store_task_id(b->store, t);
    char *why = NULL;
    if (fault == FAULT_TASK) {
        why = bf_asprintf("task fault: %s", reason);
    } else if (fault == FAULT_DEVICE) {
        why = bf_asprintf("device fault: %s", reason);
        note_failure(b, key, task_id, why);
    } else {
        why = bf_strdup(reason);
        size_t domains;
        const char *unused;
        const char *before = suspect_domain(b, t, &domains, &unused);
        if (!before && domains == 0)
            pending_add(b, key, t); /* the first suspicion */
        else if (before && key && strcmp(before, key) != 0) {
            bf_info("task %s failed in %s and %s: the task's fault, no device charged", task_id,
                    before, key);
            pending_remove(b, before, t);
        }
    }
    if (!why)
        return BF_ENOMEM;
    broker_metrics_observe_queued(b->metrics, t, false, bf_mono_ms()); /* final: swept */
    rc = broker_store_task_failed(b->store, t, host, device, worker, key, fault_name(fault), why,
                                  result, len);
    free(why);
    return rc;
}

static void send_abort(broker_t *b, peer_t *w, uint32_t t, const char *reason)
{
    proto_msg_t *ab = queue_peer(b, w, PROTO_ABORT);
    if (ab && (proto_msg_set(&ab->task_id, broker_store_task_id(b->store, t)) != BF_OK ||
               proto_msg_set(&ab->reason, reason) != BF_OK))
        bf_warn("abort: out of memory");
}

/* ---- message handlers: one small function per action --------------------- */

/* A bounded copy of a capability string (untrusted). */
static char *cap_str(const json_t *caps, const char *key, const char *dflt)
{
    const char *v = json_string_value(json_object_get(caps, key));
    char buf[256];
    bf_strlcpy(buf, v && *v ? v : dflt, sizeof buf);
    return bf_strdup(buf);
}

/* The capability fields status reports, and nothing more: a worker cannot
   make the broker keep megabytes per connection. */
static json_t *caps_copy(const json_t *caps)
{
    static const char *const strs[] = {"host",   "name", "uuid", "backend", "compute_capability",
                                       "version"};
    json_t *c = json_object();
    for (size_t i = 0; c && i < BF_ARRAY_LEN(strs); i++) {
        char *v = cap_str(caps, strs[i], "");
        json_object_set_new(c, strs[i], json_string(v ? v : ""));
        free(v);
    }
    const json_t *mem = json_object_get(caps, "memory_bytes");
    if (c)
        json_object_set_new(c, "memory_bytes",
                            json_integer(json_is_integer(mem) ? json_integer_value(mem) : 0));
    return c;
}

static void on_ready(broker_t *b, const uint8_t *id, size_t id_len, peer_t *p,
                     const proto_origin_t *o, proto_msg_t *m)
{
    if (p && p->kind != PEER_WORKER) {
        reply_error(b, id, id_len, BF_ESTATE, "this connection is the collector");
        return;
    }
    if (!p && !(p = peer_add(b, id, id_len, PEER_WORKER)))
        return;
    char name[256];
    bf_strlcpy(name, m->worker && *m->worker ? m->worker : "worker", sizeof name);
    free(p->name);
    p->name = bf_strdup(name);
    json_decref(p->caps);
    p->caps = caps_copy(m->obj);
    free(p->host);
    free(p->device);
    p->host = cap_str(m->obj, "host", "?");
    p->device = cap_str(m->obj, "name", "?");
    json_t *gi = json_object_get(m->obj, "device_index");
    p->gpu_id = json_is_integer(gi) ? json_integer_value(gi) : -1;
    free(p->fault_key);
    p->fault_key = p->name && p->host ? fault_key(p->host, p->gpu_id, p->name) : NULL;
    health_t *h = p->fault_key ? health_of(b, p->fault_key) : NULL;
    p->health = h ? (size_t)(h - b->health) : SIZE_MAX;
    /* who may report its death (LOST): the same key, or the same address */
    free(p->key_name);
    p->key_name = bf_strdup(o->key);
    bf_strlcpy(p->addr, o->addr, sizeof p->addr);
    if (!p->name || !p->caps || !p->host || !p->device || !h || !p->key_name) {
        p->dead = true;
        return;
    }
    /* Re-adopt the tasks it says it still runs (after a broker restart or a
       reconnect); they keep their attempt and get a fresh lease. */
    size_t i;
    json_t *tid;
    int64_t now = bf_mono_ms();
    json_array_foreach(json_object_get(m->obj, "running"), i, tid)
    {
        uint32_t t;
        if (i >= ADOPT_MAX || !broker_store_find_task(b->store, json_string_value(tid), &t) ||
            !broker_store_task_running(b->store, t) || peer_holds(p, t))
            continue;
        peer_t *old = holder_of(b, t, NULL);
        if (old && strcmp(old->name, p->name) != 0) {
            /* requeued and dispatched elsewhere meanwhile: that one keeps it */
            send_abort(b, p, t, "the task was given to another worker");
            continue;
        }
        if (old) /* its previous connection */
            peer_release(old, t);
        /* it said it runs it: counted as started, as before the restart */
        if (tx(b) != BF_OK || !peer_hold(p, t, true) ||
            broker_store_task_adopted(b->store, t, p->name, now) != BF_OK) {
            bf_warn("worker %s: could not take back task %s", p->name, json_string_value(tid));
            continue;
        }
        bf_info("worker %s keeps task %s (%s)", p->name, json_string_value(tid),
                broker_store_task_scene(b->store, t));
    }
    p->asked = m->credit > CREDIT_MAX ? CREDIT_MAX : m->credit;
    uint64_t cap = credit_cap(p);
    if (m->credit > cap)
        bf_info("worker %s asked for credit %llu: capped at %llu", p->name,
                (unsigned long long)m->credit, (unsigned long long)cap);
    refill(p);
    bf_info("worker %s ready (%s, %s, credit %llu, holding %zu)", p->name, p->host, p->device,
            (unsigned long long)p->credit, p->nheld);
}

static void on_collect(broker_t *b, const uint8_t *id, size_t id_len, peer_t *p, proto_msg_t *m)
{
    if (p && p->kind != PEER_COLLECTOR) {
        reply_error(b, id, id_len, BF_ESTATE, "this connection is a worker");
        return;
    }
    /* One collector at a time: a new one replaces the old. */
    peer_t *old = collector(b);
    if (old && old != p) {
        bf_info("collector %s replaced", old->name);
        old->dead = true;
    }
    if (!p && !(p = peer_add(b, id, id_len, PEER_COLLECTOR)))
        return;
    char name[256];
    bf_strlcpy(name, m->worker && *m->worker ? m->worker : "collector", sizeof name);
    free(p->name);
    p->name = bf_strdup(name);
    p->credit = m->credit == 0 ? 1 : (m->credit > COLLECT_MAX ? COLLECT_MAX : m->credit);
    free(p->inflight);
    p->inflight = calloc(p->credit, sizeof *p->inflight);
    p->ninflight = 0;
    p->sent_upto = 0; /* everything unacked goes again, in seq order */
    if (!p->inflight || !p->name)
        p->dead = true;
    bf_info("collector %s registered (credit %llu)", name, (unsigned long long)p->credit);
}

/* The metrics label of a worker's device: gpuN, or cpu. */
static const char *device_label(const peer_t *p, char *buf, size_t n)
{
    if (p->gpu_id >= 0)
        snprintf(buf, n, "gpu%lld", (long long)p->gpu_id);
    else
        bf_strlcpy(buf, "cpu", n);
    return buf;
}

/* GPU figures (untrusted): kept only when every field is a number in range. */
static void on_stats(broker_t *b, peer_t *p, proto_msg_t *m)
{
    json_t *c = broker_metrics_stats_copy(m->obj);
    if (!c) {
        if (++b->bad_messages <= 10 || b->bad_messages % 1000 == 0)
            bf_warn("worker %s: bad stats document (%llu bad messages so far)", p->name,
                    (unsigned long long)b->bad_messages);
        return;
    }
    json_decref(p->gpu_stats);
    p->gpu_stats = c;
    p->gpu_stats_ms = bf_mono_ms();
}

/* A worker's GPU figures, while they are fresh (three STATS intervals). */
static const json_t *gpu_stats(const peer_t *p, int64_t now)
{
    return p->gpu_stats && now - p->gpu_stats_ms <= 15000 ? p->gpu_stats : NULL;
}

static void on_progress(broker_t *b, peer_t *p, proto_msg_t *m)
{
    uint32_t t;
    if (broker_store_find_task(b->store, m->task_id, &t) && peer_holds(p, t)) {
        p->current = t;
        p->has_current = true;
        for (size_t i = 0; i < p->nheld; i++)
            if (p->held[i] == t)
                p->started[i] = 1; /* it ran: its loss costs an attempt */
    }
    bf_strlcpy(p->stage, m->stage ? m->stage : "", sizeof p->stage);
    p->fraction = m->fraction >= 0 && m->fraction <= 1 ? m->fraction : 0;
}

/* Applies a result to task t (not final): final, or a failed attempt. res
   holds the members the broker reads (result_keys), doc (len bytes) the
   result as it came, which is what is stored. */
static bf_err_t apply_result(broker_t *b, uint32_t t, peer_t *who, const json_t *res,
                             const uint8_t *doc, size_t len)
{
    const char *status = json_string_value(json_object_get(res, "status"));
    bf_err_t rc = tx(b);
    if (rc != BF_OK)
        return rc;
    const char *host = json_string_value(json_object_get(res, "host"));
    const char *wname = json_string_value(json_object_get(res, "worker"));
    json_t *gid = json_object_get(res, "gpu_id");
    /* The fault domain: the connection's own when it is a registered
       worker, else what the (re-sent) result says about where it ran. */
    char *key =
        who ? bf_strdup(who->fault_key)
            : fault_key(host ? host : "?", json_is_integer(gid) ? json_integer_value(gid) : -1,
                        wname ? wname : "?");
    if (!key)
        return BF_ENOMEM;
    if (status && (!strcmp(status, "success") || !strcmp(status, "failed"))) {
        note_success(b, key); /* a zone that fails validation is not the GPU's fault */
        resolve_success(b, t, key);
        free(key);
        return broker_store_task_done(b->store, t, doc, len, !strcmp(status, "failed"));
    }
    const char *reason = json_string_value(json_object_get(res, "reason"));
    const char *dev = json_string_value(json_object_get(res, "device"));
    fault_t fault = fault_of(res);
    if (!status || strcmp(status, "error") != 0) {
        reason = "result without a valid status";
        fault = FAULT_TASK; /* what the program printed is not a result */
    }
    rc = task_failed(b, t, host ? host : (who ? who->host : "?"),
                     dev ? dev : (who ? who->device : "?"), wname ? wname : (who ? who->name : "?"),
                     key, fault, reason && *reason ? reason : "error", doc, len);
    free(key);
    return rc;
}

/* The members of a result the broker reads; the rest it stores and passes
   on as the bytes they came in (proto_msgpack_pick converts only these). */
static const char *const result_keys[] = {"status", "host",   "worker", "gpu_id",
                                          "reason", "device", "fault",  "elapsed_time"};

/* res: the members of m's result that apply_result reads, as a tree. */
static bf_err_t result_members(const proto_msg_t *m, json_t **res)
{
    json_t *v[BF_ARRAY_LEN(result_keys)];
    *res = NULL;
    bf_err_t rc = proto_msgpack_pick(m->obj_raw, m->obj_raw_len, result_keys,
                                     BF_ARRAY_LEN(result_keys), v, NULL);
    if (rc != BF_OK)
        return rc; /* checked when it came: only out of memory */
    json_t *o = json_object();
    for (size_t k = 0; k < BF_ARRAY_LEN(result_keys); k++)
        if (v[k] && (!o || json_object_set_new(o, result_keys[k], v[k]) != 0))
            rc = BF_ENOMEM;
    if (!o || rc != BF_OK) {
        json_decref(o);
        return BF_ENOMEM;
    }
    *res = o;
    return BF_OK;
}

static bf_err_t on_result(broker_t *b, const uint8_t *id, size_t id_len, peer_t *p, proto_msg_t *m)
{
    uint32_t t;
    bf_err_t rc = BF_OK;
    if (broker_store_find_task(b->store, m->task_id, &t)) {
        peer_t *holder = holder_of(b, t, p);
        if (holder) {
            peer_release(holder, t);
            note_result(holder);
            refill(holder);
            holder->stage[0] = '\0';
            holder->fraction = 0;
        }
        if (!broker_store_task_final(b->store, t)) {
            broker_metrics_observe_result(b->metrics, t, bf_mono_ms());
            /* First result wins, whatever its attempt or sender; a different
               worker still running the task (it was requeued while this
               result was on its way) is told to stop. */
            if (holder && p && holder != p && strcmp(holder->name, p->name) != 0)
                send_abort(b, holder, t, "another attempt finished first");
            peer_t *who = p ? p : holder;
            json_t *res;
            if ((rc = result_members(m, &res)) != BF_OK)
                return rc;
            double elapsed = json_number_value(json_object_get(res, "elapsed_time"));
            if (who) {
                who->done++;
                who->busy_s += elapsed > 0 && elapsed < 1e9 ? elapsed : 0;
            }
            rc = apply_result(b, t, who, res, m->obj_raw, m->obj_raw_len);
            json_decref(res);
        }
    }
    /* Acked once durable (the queue is flushed after commit); an unknown or
       already final task is acked too, so the worker can forget it. */
    proto_msg_t *ack = queue_to(b, id, id_len, p, PROTO_ACK);
    if (ack && proto_msg_set(&ack->task_id, m->task_id) != BF_OK)
        ack->task_id = NULL;
    return rc;
}

/* SUBMIT's "keys": NULL, or an array of n task content keys. */
static bool keys_ok(const json_t *keys, size_t n, char *err)
{
    if (!keys)
        return true;
    if (!json_is_array(keys) || json_array_size(keys) != n) {
        bf_fail(err, BF_EINVAL, "submit: field 'keys': not an array of %zu keys (one per scene)",
                n);
        return false;
    }
    size_t i;
    const json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (!bf_task_key_valid(json_string_value(k))) {
            bf_fail(err, BF_EINVAL, "submit: field 'keys[%zu]': not %d hex digits", i, BF_KEY_LEN);
            return false;
        }
    }
    return true;
}

/* SUBMIT's "reuse": NULL, or an array of {index, result} for tasks of the
   new job that an earlier result stands for (finished: success or failed,
   of the same scene and the same key). */
static bool reuse_ok(const json_t *reuse, const bf_job_t *job, const json_t *keys, char *err)
{
    if (!reuse)
        return true;
    if (!json_is_array(reuse) || !keys) {
        bf_fail(err, BF_EINVAL, "submit: field 'reuse': %s",
                keys ? "not an array" : "given without 'keys'");
        return false;
    }
    bool *seen = calloc(job->scene_count, sizeof *seen);
    if (!seen) {
        bf_fail(err, BF_ENOMEM, "submit: out of memory");
        return false;
    }
    bool ok = true;
    size_t i;
    const json_t *r;
    json_array_foreach(reuse, i, r)
    {
        json_t *idx = json_object_get(r, "index"), *res = json_object_get(r, "result");
        json_int_t k = json_integer_value(idx);
        const char *status = json_string_value(json_object_get(res, "status"));
        const char *scene = json_string_value(json_object_get(res, "scene"));
        const char *key = json_string_value(json_object_get(res, "key"));
        const char *why = NULL;
        if (!json_is_integer(idx) || k < 0 || (size_t)k >= job->scene_count)
            why = "index: not a task of the job";
        else if (seen[k])
            why = "index: given twice";
        else if (!json_is_object(res) || !status ||
                 (strcmp(status, "success") != 0 && strcmp(status, "failed") != 0))
            why = "result: not a finished result (status success or failed)";
        else if (!scene || strcmp(scene, job->scenes[k]) != 0)
            why = "result: of another scene";
        else if (!key || strcmp(key, json_string_value(json_array_get(keys, (size_t)k))) != 0)
            why = "result: computed from something else (its key differs)";
        if (why) {
            bf_fail(err, BF_EINVAL, "submit: field 'reuse[%zu]': %s", i, why);
            ok = false;
            break;
        }
        seen[k] = true;
    }
    free(seen);
    return ok;
}

/* Makes the tasks that reuse lists final at once with their earlier
   results, marked "reused" with the job they came from ("origin_job"). */
static bf_err_t apply_reuse(broker_t *b, const json_t *reuse, uint32_t first)
{
    size_t i;
    const json_t *r;
    json_array_foreach(reuse, i, r)
    {
        json_t *res = json_deep_copy(json_object_get(r, "result"));
        const char *origin = json_string_value(json_object_get(res, "origin_job"));
        if (!origin) /* a result of a result keeps the job that computed it */
            origin = json_string_value(json_object_get(res, "job_id"));
        if (!res || json_object_set_new(res, "origin_job", json_string(origin ? origin : "")) ||
            json_object_set_new(res, "reused", json_true())) {
            json_decref(res);
            return BF_ENOMEM;
        }
        json_object_del(res, "failures"); /* the earlier job's attempts */
        uint32_t t = first + (uint32_t)json_integer_value(json_object_get(r, "index"));
        bf_err_t rc = broker_store_task_done_tree(b->store, t, res);
        json_decref(res);
        if (rc != BF_OK)
            return rc;
    }
    return BF_OK;
}

static bf_err_t on_submit(broker_t *b, const uint8_t *id, size_t id_len, proto_msg_t *m)
{
    bf_job_t job;
    char err[BF_ERRLEN] = "";
    /* keys and reuse travel beside the job document, not in it: they are
       not part of what a worker is sent */
    json_t *keys = json_incref(json_object_get(m->obj, "keys"));
    json_t *reuse = json_incref(json_object_get(m->obj, "reuse"));
    json_object_del(m->obj, "keys");
    json_object_del(m->obj, "reuse");
    if (!m->obj || bf_job_from_json(m->obj, &job, err) != BF_OK) {
        reply_error(b, id, id_len, BF_EINVAL, err[0] ? err : "submit: bad job document");
        json_decref(keys);
        json_decref(reuse);
        return BF_OK;
    }
    if (job.scene_count == 0 || !keys_ok(keys, job.scene_count, err) ||
        !reuse_ok(reuse, &job, keys, err)) {
        reply_error(b, id, id_len, BF_EINVAL,
                    job.scene_count ? err : "submit: the job has no scenes");
        bf_job_clear(&job);
        json_decref(keys);
        json_decref(reuse);
        return BF_OK;
    }
    /* Two running jobs writing one output directory would overwrite each
       other's summary.json and report.html. */
    char busy_id[16], busy_name[128];
    if (broker_store_output_busy(b->store, job.output, busy_id, busy_name, sizeof busy_name)) {
        char why[1024];
        snprintf(why, sizeof why,
                 "submit: output %.600s is in use by job %.15s '%.120s' (still running); choose "
                 "another "
                 "output or wait",
                 job.output, busy_id, busy_name);
        bf_info("%s", why);
        bf_job_clear(&job);
        reply_error(b, id, id_len, BF_EEXIST, why);
        return BF_OK;
    }
    bf_err_t rc = tx(b);
    char job_id[16];
    uint32_t first = 0;
    if (rc == BF_OK)
        rc = broker_store_add_job(b->store, &job, keys, job_id, &first);
    if (rc == BF_OK && reuse)
        rc = apply_reuse(b, reuse, first);
    if (rc == BF_OK) {
        proto_msg_t *r = queue_to(b, id, id_len, NULL, PROTO_SUBMITTED);
        if (r && proto_msg_set(&r->job_id, job_id) == BF_OK)
            r->total = job.scene_count;
        broker_metrics_observe_submit(b->metrics, job_id, job.scene_count, bf_mono_ms());
        size_t reused = json_array_size(reuse);
        char also[64] = "";
        if (reused)
            snprintf(also, sizeof also, " (%zu of them reused from earlier results)", reused);
        bf_info("job %s '%s': %zu %s tasks%s", job_id, job.name, job.scene_count,
                job.task == BF_TASK_EXEC ? "exec" : "boresight", also);
    }
    bf_job_clear(&job);
    json_decref(keys);
    json_decref(reuse);
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
    const char *job_id = m->job_id ? m->job_id : "";
    rc = broker_store_cancel_job(b->store, job_id, &count, &running, &nrunning);
    if (rc == BF_ENOENT) {
        char reason[128];
        snprintf(reason, sizeof reason, "no such job '%.40s'", job_id);
        reply_error(b, id, id_len, BF_ENOENT, reason);
        return BF_OK;
    }
    for (size_t i = 0; rc == BF_OK && i < nrunning; i++) {
        peer_t *h = holder_of(b, running[i], NULL);
        if (!h)
            continue;
        peer_release(h, running[i]);
        refill(h);
        send_abort(b, h, running[i], "cancelled by user");
    }
    free(running);
    if (rc != BF_OK)
        return rc;
    proto_msg_t *r = queue_to(b, id, id_len, NULL, PROTO_CANCELLED);
    if (r && proto_msg_set(&r->job_id, job_id) == BF_OK)
        r->total = count;
    bf_info("job %s cancelled: %llu tasks", job_id, (unsigned long long)count);
    return BF_OK;
}

static json_t *cap_get(const peer_t *p, const char *key)
{
    json_t *v = json_object_get(p->caps, key);
    return v ? json_incref(v) : json_string("");
}

static json_t *worker_doc(broker_t *b, const peer_t *p)
{
    json_t *w = json_object();
    if (!w)
        return NULL;
    const char *scene = "";
    if (p->has_current && peer_holds(p, p->current))
        scene = broker_store_task_scene(b->store, p->current);
    else if (p->nheld)
        scene = broker_store_task_scene(b->store, p->held[0]);
    json_object_set_new(w, "name", json_string(p->name));
    json_object_set_new(w, "host", json_string(p->host));
    json_object_set_new(w, "device", json_string(p->device));
    json_object_set_new(w, "device_index", json_integer(p->gpu_id));
    json_object_set_new(w, "backend", cap_get(p, "backend"));
    json_object_set_new(w, "uuid", cap_get(p, "uuid"));
    json_object_set_new(w, "memory_bytes", cap_get(p, "memory_bytes"));
    json_object_set_new(w, "compute_capability", cap_get(p, "compute_capability"));
    int64_t now = bf_mono_ms();
    bool q = quarantined(b, p, now);
    json_object_set_new(w, "state", json_string(p->nheld ? "busy" : q ? "quarantined" : "idle"));
    json_object_set_new(w, "fault_domain", json_string(p->fault_key ? p->fault_key : ""));
    if (p->health < b->nhealth && b->health[p->health].npending)
        json_object_set_new(w, "suspect_failures",
                            json_integer((json_int_t)b->health[p->health].npending));
    if (q) {
        const health_t *h = &b->health[p->health];
        json_object_set_new(w, "quarantined_for_s",
                            json_real((double)(h->quarantined_until - now) / 1000.0));
        json_object_set_new(w, "quarantine_reason", json_string(h->last_reason));
    }
    json_object_set_new(w, "task_scene", json_string(scene));
    json_object_set_new(w, "task_stage", json_string(p->nheld ? p->stage : ""));
    json_object_set_new(w, "task_fraction", json_real(p->nheld ? p->fraction : 0.0));
    json_object_set_new(w, "running", json_integer((json_int_t)p->nheld));
    json_object_set_new(w, "done", json_integer((json_int_t)p->done));
    json_object_set_new(w, "mean_s", json_real(p->done ? p->busy_s / (double)p->done : 0.0));
    json_object_set_new(w, "credit", json_integer((json_int_t)p->credit));
    const json_t *gpu = gpu_stats(p, bf_mono_ms());
    if (gpu)
        json_object_set_new(w, "gpu", json_deep_copy(gpu));
    return w;
}

static void on_status(broker_t *b, const uint8_t *id, size_t id_len, proto_msg_t *m)
{
    json_t *doc = json_object();
    json_t *workers = json_array();
    if (!doc || !workers) {
        json_decref(doc);
        json_decref(workers);
        reply_error(b, id, id_len, BF_ENOMEM, "status: out of memory");
        return;
    }
    for (size_t i = 0; i < b->npeers; i++)
        if (b->peers[i]->kind == PEER_WORKER && !b->peers[i]->dead)
            json_array_append_new(workers, worker_doc(b, b->peers[i]));
    peer_t *c = collector(b);
    json_object_set_new(doc, "broker",
                        json_pack("{s:s, s:f, s:s, s:s, s:I}", "version", BF_VERSION, "uptime_s",
                                  (double)(bf_mono_ms() - b->started_ms) / 1000.0, "state_dir",
                                  b->state_dir, "endpoint", b->endpoint, "bad_messages",
                                  (json_int_t)b->bad_messages));
    json_object_set_new(doc, "workers", workers);
    json_object_set_new(doc, "collector",
                        json_pack("{s:b, s:I, s:I}", "connected", c != NULL, "unacked",
                                  (json_int_t)(c ? c->ninflight : 0), "outbox",
                                  (json_int_t)broker_store_outbox_count(b->store)));
    json_object_set_new(doc, "queue", json_integer((json_int_t)broker_store_queued(b->store)));
    json_object_set_new(doc, "jobs", broker_store_jobs_doc(b->store));
    uint64_t next = m->seq;
    json_object_set_new(
        doc, "events",
        broker_store_events(b->store, m->job_id ? m->job_id : "", m->seq, MAX_EVENTS, &next));
    json_object_set_new(doc, "next_seq", json_integer((json_int_t)next));
    proto_msg_t *r = queue_to(b, id, id_len, NULL, PROTO_STATUS_REPLY);
    if (r)
        r->obj = doc;
    else
        json_decref(doc);
}

/* Outbox row seq is durable at the collector (p, or NULL for a connection
   declared dead meanwhile): it leaves the window and the outbox. */
static bf_err_t ack_seq(broker_t *b, peer_t *p, uint64_t seq)
{
    for (size_t i = 0; p && i < p->ninflight; i++)
        if (p->inflight[i] == seq) {
            p->inflight[i] = p->inflight[--p->ninflight];
            /* A row of the window exists and is not acknowledged yet: its
               DELETE goes with the next transaction the broker makes anyway
               (at the latest on the next timer tick), not in one of its
               own. A crash before then delivers it again; the collector
               has it and acknowledges it without writing it twice. */
            if (broker_store_outbox_ack_later(b->store, seq))
                return BF_OK;
            break;
        }
    bf_err_t rc = tx(b);
    return rc == BF_OK ? broker_store_outbox_ack(b->store, seq) : rc;
}

/* ACKS: obj = {"seq": [seq, ...]}, what one write of the collector made
   durable. A malformed one is dropped whole (nothing of it is applied). */
static bf_err_t on_acks(broker_t *b, peer_t *p, proto_msg_t *m)
{
    const json_t *seqs = json_object_get(m->obj, "seq");
    size_t n = json_array_size(seqs), i;
    const json_t *v;
    bool ok = json_is_array(seqs) && n <= PROTO_MAX_ACKS;
    json_array_foreach(seqs, i, v)
    {
        ok = ok && json_is_integer(v) && json_integer_value(v) > 0;
    }
    if (!ok) {
        if (++b->bad_messages <= 10 || b->bad_messages % 1000 == 0)
            bf_warn("dropping an ACKS without a list of at most %u seqs (%llu bad messages so far)",
                    PROTO_MAX_ACKS, (unsigned long long)b->bad_messages);
        return BF_OK;
    }
    bf_err_t rc = BF_OK;
    json_array_foreach(seqs, i, v)
    {
        if ((rc = ack_seq(b, p, (uint64_t)json_integer_value(v))) != BF_OK)
            break;
    }
    return rc;
}

/* Worker p is gone (silent for I*L, or reported dead by its supervisor):
   each task it had started (a PROGRESS came) is a failed, unattributed
   attempt with reason why; each it only held (prefetched, never run) goes
   back to the head of the queue with its attempt unchanged. */
static bf_err_t peer_lost(broker_t *b, peer_t *p, const char *why)
{
    p->dead = true;
    bf_err_t rc = BF_OK;
    size_t started = 0;
    for (size_t k = 0; rc == BF_OK && k < p->nheld; k++) {
        if (p->started[k]) {
            started++;
            rc = task_failed(b, p->held[k], p->host, p->device, p->name, p->fault_key, FAULT_NONE,
                             why, NULL, 0);
        } else if (broker_store_task_note_unstarted(b->store, p->held[k]) > UNSTARTED_MAX) {
            /* Its PROGRESS may never have got out: a task that kills its
               worker at once must not go round the fleet for ever. */
            started++;
            char again[300];
            snprintf(again, sizeof again,
                     "%.200s (it held the task, not known to have started; returned so %d "
                     "times before)",
                     why, UNSTARTED_MAX);
            rc = task_failed(b, p->held[k], p->host, p->device, p->name, p->fault_key, FAULT_NONE,
                             again, NULL, 0);
        } else if ((rc = tx(b)) == BF_OK) {
            rc = broker_store_task_returned(b->store, p->held[k]);
            broker_metrics_observe_queued(b->metrics, p->held[k], false, bf_mono_ms());
        }
    }
    if (p->kind == PEER_WORKER && p->nheld)
        bf_info("worker %s: %zu started tasks requeued as failed attempts, %zu not started "
                "returned unchanged",
                p->name, started, p->nheld - started);
    p->nheld = 0;
    return rc;
}

/* May the sender (origin o) report worker p dead? Under CURVE its key must
   be the one p registered with (a supervisor shares its workers' key; the
   role was checked before); in plaintext its address must be p's (both ""
   over ipc). Anyone else could otherwise requeue every worker's tasks. */
static bool may_report(const broker_t *b, const peer_t *p, const proto_origin_t *o)
{
    if (b->security)
        return p->key_name && o->key[0] && !strcmp(p->key_name, o->key);
    return !strcmp(p->addr, o->addr);
}

/* Whether worker name a ("PREFIX:pid:device") names the process of b: the
   same name, or the same PREFIX:pid: (a GPU worker that found no usable
   GPU calls itself ...:cpu, while its supervisor knows it as ...:gpuN). */
static bool same_worker(const char *a, const char *b)
{
    const char *ca = strrchr(a, ':'), *cb = strrchr(b, ':');
    return !strcmp(a, b) || (ca && cb && ca > a && ca - a == cb - b && !strncmp(a, b, ca - a + 1));
}

/* LOST{worker, reason}: a supervisor saw its child worker die on this host;
   every connection registered as that worker process is dead now, exactly as
   if its heartbeats had stopped. No reply, unless refused. */
static bf_err_t on_lost(broker_t *b, const uint8_t *id, size_t id_len, const proto_origin_t *o,
                        proto_msg_t *m)
{
    const char *name = m->worker ? m->worker : "";
    char why[256];
    snprintf(why, sizeof why, "worker lost: %.200s",
             m->reason && *m->reason ? m->reason : "its supervisor saw it die");
    size_t found = 0, refused = 0;
    bf_err_t rc = BF_OK;
    for (size_t i = 0; rc == BF_OK && i < b->npeers && *name; i++) {
        peer_t *p = b->peers[i];
        if (p->dead || p->kind != PEER_WORKER || !p->name || !same_worker(p->name, name))
            continue;
        if (!may_report(b, p, o)) {
            refused++;
            continue;
        }
        found++;
        bf_warn("worker %s lost: %s (reported by its supervisor, %zu tasks)", p->name,
                m->reason && *m->reason ? m->reason : "died", p->nheld);
        rc = peer_lost(b, p, why);
    }
    if (refused && !found) {
        if (++b->refused_messages <= 10 || b->refused_messages % 1000 == 0)
            bf_warn("refused lost for worker '%.200s' from '%s' (%llu refused so far)", name,
                    o->key[0] ? o->key : o->addr, (unsigned long long)b->refused_messages);
        char msg[BF_ERRLEN];
        snprintf(msg, sizeof msg,
                 "lost: worker '%.200s' was registered from another %s; only its own "
                 "supervisor may report it",
                 name, b->security ? "key" : "address");
        reply_error(b, id, id_len, BF_EPERM, msg);
    } else if (!found) {
        bf_debug("lost: no worker named '%.200s' (already gone)", name);
    }
    return rc;
}

static bf_err_t on_goodbye(broker_t *b, peer_t *p)
{
    if (p->kind == PEER_WORKER && p->nheld) {
        bf_err_t rc = tx(b);
        for (size_t i = 0; rc == BF_OK && i < p->nheld; i++) {
            rc = broker_store_task_returned(b->store, p->held[i]);
            broker_metrics_observe_queued(b->metrics, p->held[i], false, bf_mono_ms());
        }
        if (rc != BF_OK)
            return rc;
    }
    bf_info("%s %s said goodbye (%zu tasks returned)",
            p->kind == PEER_WORKER ? "worker" : "collector", p->name, p->nheld);
    p->nheld = 0;
    p->dead = true;
    return BF_OK;
}

/* Applies one message; an error return (the store failed) stops the broker. */
/* What each role may send (DESIGN section 5): a worker key cannot submit or
   cancel, a client key cannot pose as a worker or collector. BF_ROLE_NONE
   (security off) and admin may send anything. */
static bool role_allows(bf_role_t role, proto_type_t type)
{
    const unsigned W = 1u << BF_ROLE_WORKER, C = 1u << BF_ROLE_COLLECTOR, U = 1u << BF_ROLE_CLIENT;
    unsigned who;
    switch (type) {
    case PROTO_READY:
    case PROTO_PROGRESS:
    case PROTO_RESULT:
    case PROTO_STATS:
    case PROTO_LOST:
        who = W;
        break;
    case PROTO_COLLECT:
    case PROTO_ACK:
    case PROTO_ACKS:
        who = C;
        break;
    case PROTO_GOODBYE:
        who = W | C;
        break;
    case PROTO_SUBMIT:
    case PROTO_CANCEL:
        who = U;
        break;
    default: /* STATUS, HEARTBEAT, and what handle() refuses anyway */
        who = W | C | U;
        break;
    }
    return role == BF_ROLE_NONE || role == BF_ROLE_ADMIN || (who & (1u << role));
}

static bf_err_t handle(broker_t *b, const uint8_t *id, size_t id_len, const proto_origin_t *o,
                       proto_msg_t *m)
{
    bf_role_t role = o->role;
    const char *key = o->key;
    if (!role_allows(role, m->type)) {
        if (++b->refused_messages <= 10 || b->refused_messages % 1000 == 0)
            bf_warn("refused %s from key '%s' (role %s; %llu refused so far)",
                    proto_type_name(m->type), key, bf_role_name(role),
                    (unsigned long long)b->refused_messages);
        char why[BF_ERRLEN];
        snprintf(why, sizeof why, "key '%s' (role %s) may not send %s", key, bf_role_name(role),
                 proto_type_name(m->type));
        reply_error(b, id, id_len, BF_EPERM, why);
        return BF_OK;
    }
    peer_t *p = peer_find(b, id, id_len);
    if (p)
        p->last_recv = bf_mono_ms();
    switch (m->type) {
    case PROTO_READY:
        on_ready(b, id, id_len, p, o, m);
        return BF_OK;
    case PROTO_LOST: /* from a supervisor: not a registered peer */
        return on_lost(b, id, id_len, o, m);
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
    case PROTO_RESULT: /* accepted from anyone: a worker re-sends after reconnecting */
        return on_result(b, id, id_len, p && p->kind == PEER_WORKER ? p : NULL, m);
    case PROTO_ACK:
        /* A collector's ACK (durable: the row may go) is applied even from
           a connection declared dead meanwhile: a collector that spent
           longer than I*L writing a huge final report must not be sent that
           job again, and again. */
        if (!p && (!m->task_id || !*m->task_id))
            return ack_seq(b, NULL, m->seq);
        break;
    case PROTO_ACKS: /* the same */
        if (!p)
            return on_acks(b, NULL, m);
        break;
    default:
        break;
    }
    if (!p) {
        reply_error(b, id, id_len, BF_ENOENT, "unknown peer");
        return BF_OK;
    }
    switch (m->type) {
    case PROTO_HEARTBEAT:
        return BF_OK;
    case PROTO_PROGRESS:
        if (p->kind == PEER_WORKER)
            on_progress(b, p, m);
        return BF_OK;
    case PROTO_STATS:
        if (p->kind == PEER_WORKER)
            on_stats(b, p, m);
        return BF_OK;
    case PROTO_ACK:
        if (p->kind == PEER_COLLECTOR)
            return ack_seq(b, p, m->seq);
        return BF_OK;
    case PROTO_ACKS:
        if (p->kind == PEER_COLLECTOR)
            return on_acks(b, p, m);
        return BF_OK;
    case PROTO_GOODBYE:
        return on_goodbye(b, p);
    default:
        if (++b->bad_messages <= 10 || b->bad_messages % 1000 == 0)
            bf_warn("unexpected %s from %s (%llu bad messages so far)", proto_type_name(m->type),
                    p->name, (unsigned long long)b->bad_messages);
        return BF_OK;
    }
}

/* ---- timers: heartbeats, dead peers, leases; dispatch, delivery -------- */

/* How long a peer may be silent: L heartbeat intervals, less a quarter of
   one. A peer that dies just after a message is then noticed within L·I of
   its death, measured worst case (the timer below wakes at each peer's
   deadline), while a live peer, which speaks at least every I, has L - 1
   intervals and more of slack. */
static int64_t silence_limit(const broker_t *b)
{
    int64_t i = b->cfg.heartbeat_ms;
    return i * b->cfg.liveness - i / 4;
}

/* The earliest moment a live peer becomes silent too long, or INT64_MAX. */
static int64_t next_expiry(const broker_t *b)
{
    int64_t at = INT64_MAX, limit = silence_limit(b);
    for (size_t i = 0; i < b->npeers; i++)
        if (!b->peers[i]->dead && b->peers[i]->last_recv + limit + 1 < at)
            at = b->peers[i]->last_recv + limit + 1;
    return at;
}

static bf_err_t expire(broker_t *b, int64_t now)
{
    int64_t dead_after = silence_limit(b);
    for (size_t i = 0; i < b->npeers; i++) {
        peer_t *p = b->peers[i];
        if (p->dead || now - p->last_recv <= dead_after)
            continue;
        bf_warn("%s %s lost (silent for %lld ms, %zu tasks)",
                p->kind == PEER_WORKER ? "worker" : "collector", p->name,
                (long long)(now - p->last_recv), p->nheld);
        bf_err_t rc = peer_lost(b, p, "worker lost");
        if (rc != BF_OK)
            return rc;
    }
    /* Leases: tasks past their backstop, and tasks that were running when
       the broker restarted and whose worker has not come back. */
    uint32_t *late = NULL;
    size_t nlate = 0;
    bf_err_t rc =
        broker_store_expired(b->store, now, (int64_t)BACKSTOP_MS + dead_after, &late, &nlate);
    for (size_t i = 0; rc == BF_OK && i < nlate; i++) {
        bool orphan = broker_store_task_orphan(b->store, late[i]);
        peer_t *h = holder_of(b, late[i], NULL);
        if (h) {
            peer_release(h, late[i]);
            refill(h);
            send_abort(b, h, late[i], "task lease expired");
        }
        bf_warn("task %s (%s): %s", broker_store_task_id(b->store, late[i]),
                broker_store_task_scene(b->store, late[i]),
                orphan ? "its worker did not come back after the broker restarted"
                       : "lease expired");
        rc =
            task_failed(b, late[i], h ? h->host : "?", h ? h->device : "?", h ? h->name : "?",
                        h ? h->fault_key : NULL, FAULT_NONE,
                        orphan ? "worker lost" : "task lease expired (no result in time)", NULL, 0);
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
    if (j == b->npeers)
        return;
    b->npeers = j;
    if (b->rr >= j)
        b->rr = 0;
    if (!ptab_rebuild(b, j ? j : 1)) {
        /* keep the old table's size: clear it and re-insert the live ones */
        memset(b->ptab, 0, b->pcap * sizeof *b->ptab);
        for (size_t i = 0; i < b->npeers; i++)
            ptab_insert(b->ptab, b->pcap, b->peers[i]);
    }
}

/* Credit-based and fair: one task at a time to the next worker with credit
   (round robin), tasks in FIFO order (job submission, then scene order;
   requeued tasks first). */
static bf_err_t dispatch(broker_t *b)
{
    if (broker_store_queued(b->store) == 0)
        return BF_OK;
    /* Fault domains that can take work now (one per live worker that is
       not quarantined, a close count: two workers rarely share a GPU), and
       a fresh round: a worker for which nothing qualifies is passed over
       until the next call. */
    int64_t now = bf_mono_ms();
    size_t live = 0, unsuspended = 0;
    for (size_t k = 0; k < b->npeers; k++) {
        const peer_t *p = b->peers[k];
        bool up = p->kind == PEER_WORKER && !p->dead && !quarantined(b, p, now);
        live += up;
        unsuspended += up && !suspended(b, &b->health[p->health]);
    }
    /* A domain awaiting verdicts on enough suspect failures to be
       quarantined waits for them while another domain can work; alone,
       it goes on (nobody else could clear or convict it). */
    bool hold_suspects = unsuspended > 0;
    uint64_t round = ++b->dispatch_round;
    while (broker_store_queued(b->store) > 0 && b->npeers > 0) {
        peer_t *w = NULL;
        for (size_t k = 0; k < b->npeers; k++) {
            peer_t *p = b->peers[(b->rr + k) % b->npeers];
            if (p->kind == PEER_WORKER && !p->dead && p->credit > 0 && p->passed != round &&
                !quarantined(b, p, now) &&
                !(hold_suspects && suspended(b, &b->health[p->health]))) {
                w = p;
                b->rr = (b->rr + k + 1) % b->npeers;
                break;
            }
        }
        if (!w)
            return BF_OK;
        bf_err_t rc = tx(b);
        uint32_t t;
        if (rc == BF_OK)
            rc = broker_store_lease(b->store, w->name, w->fault_key, live, now, &t);
        if (rc == BF_ESTATE) { /* every task in reach failed on its GPU before */
            w->passed = round;
            continue;
        }
        if (rc != BF_OK)
            return rc == BF_ENOENT ? BF_OK : rc;
        if (!peer_hold(w, t, false))
            return BF_ENOMEM;
        w->credit--;
        if (w->nheld == 1) { /* it was idle: no stale stage on show */
            w->stage[0] = '\0';
            w->fraction = 0;
        }
        proto_msg_t *m = queue_peer(b, w, PROTO_TASK);
        if (!m)
            return BF_ENOMEM;
        w->unsent++;
        if ((rc = broker_store_task_msg(b->store, t, m)) != BF_OK)
            return rc;
        char dev[32];
        broker_metrics_observe_dispatch(b->metrics, t, m->job_id, m->attempt, w->host,
                                        device_label(w, dev, sizeof dev), bf_mono_ms());
    }
    return BF_OK;
}

static bf_err_t deliver(broker_t *b)
{
    peer_t *c = collector(b);
    if (!c || c->ninflight >= c->credit)
        return BF_OK;
    size_t want = (size_t)c->credit - c->ninflight;
    broker_delivery_t *d = NULL;
    size_t n = 0;
    bf_err_t rc = BF_OK;
    /* delivering from the start again (a collector that registered): the
       rows acknowledged in memory go first, or they would go again */
    if (c->sent_upto < broker_store_outbox_flush_above(b->store) &&
        ((rc = tx(b)) != BF_OK || (rc = broker_store_outbox_flush(b->store)) != BF_OK))
        return rc;
    rc = broker_store_outbox_after(b->store, c->sent_upto, want, &d, &n);
    for (size_t i = 0; rc == BF_OK && i < n; i++) {
        proto_msg_t *m = queue_peer(b, c, d[i].job_done ? PROTO_JOB_DONE : PROTO_DELIVER);
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
        m->obj_raw = d[i].raw;
        m->obj_raw_len = d[i].raw_len;
        d[i].raw = NULL;
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
            queue_peer(b, p, PROTO_HEARTBEAT);
    }
}

/* ---- metrics: a snapshot for the HTTP thread, at most every 250 ms -------- */

static bool task_is_final(void *ud, uint32_t t)
{
    return broker_store_task_final(ud, t);
}

/* The metrics' jobs and final counts: once from the store at start, then
   each task that became final since (the store's final sequence). */
static bf_err_t metrics_load(broker_t *b)
{
    json_t *jobs = broker_store_jobs_doc(b->store);
    json_decref(broker_store_events(b->store, "", UINT64_MAX, 0, &b->mcursor));
    if (!jobs)
        return BF_ENOMEM;
    size_t i;
    json_t *j;
    bf_err_t rc = BF_OK;
    json_array_foreach(jobs, i, j)
    {
        static const char *const names[BROKER_FINALS] = {"success", "failed", "error", "cancelled"};
        const json_t *c = json_object_get(j, "counts");
        uint64_t counts[BROKER_FINALS];
        for (int k = 0; k < BROKER_FINALS; k++)
            counts[k] = (uint64_t)json_integer_value(json_object_get(c, names[k]));
        if (rc == BF_OK)
            rc = broker_metrics_load_job(b->metrics, json_string_value(json_object_get(j, "id")),
                                         json_string_value(json_object_get(j, "state")),
                                         (uint64_t)json_integer_value(json_object_get(j, "total")),
                                         counts);
    }
    json_decref(jobs);
    return rc;
}

static void metrics_finals(broker_t *b)
{
    for (;;) {
        uint64_t next = b->mcursor;
        json_t *events = broker_store_events(b->store, "", b->mcursor, MAX_EVENTS, &next);
        size_t i, n = json_array_size(events);
        json_t *e;
        json_array_foreach(events, i, e)
        {
            broker_metrics_observe_final(b->metrics,
                                         json_string_value(json_object_get(e, "job_id")),
                                         json_string_value(json_object_get(e, "status")));
        }
        json_decref(events);
        if (!events || next <= b->mcursor)
            return;
        b->mcursor = next;
        if (n < MAX_EVENTS)
            return;
    }
}

static void metrics_publish(broker_t *b, int64_t now)
{
    if (!broker_metrics_due(b->metrics, now))
        return;
    if (now >= b->msweep_next) { /* timestamps of tasks that ended without a result */
        broker_metrics_sweep(b->metrics, task_is_final, b->store);
        b->msweep_next = now + 60000;
    }
    metrics_finals(b);
    broker_metrics_state_t st = {.tasks_queued = broker_store_queued(b->store)};
    st.store_commits = b->commits;
    st.messages_received = b->received;
    st.messages_dropped = b->bad_messages + b->refused_messages;
    broker_metrics_gpu_t *gpus = calloc(b->npeers ? b->npeers : 1, sizeof *gpus);
    char(*devs)[32] = calloc(b->npeers ? b->npeers : 1, sizeof *devs);
    for (size_t i = 0; i < b->npeers; i++) {
        peer_t *p = b->peers[i];
        if (p->dead)
            continue;
        if (p->kind == PEER_COLLECTOR) {
            st.collectors++;
            continue;
        }
        /* the states status shows (worker_doc) */
        st.workers[p->nheld                 ? BROKER_WORKER_BUSY
                   : quarantined(b, p, now) ? BROKER_WORKER_QUARANTINED
                                            : BROKER_WORKER_IDLE]++;
        const json_t *g = gpu_stats(p, now);
        if (!g || !gpus || !devs)
            continue;
        broker_metrics_gpu_t *o = &gpus[st.ngpus++];
        o->worker = p->name;
        o->host = p->host;
        o->device = device_label(p, devs[i], sizeof devs[i]);
        o->gpu_util = json_real_value(json_object_get(g, "gpu_util"));
        o->mem_used = json_real_value(json_object_get(g, "mem_used"));
        o->mem_total = json_real_value(json_object_get(g, "mem_total"));
        o->temperature_c = json_real_value(json_object_get(g, "temperature_c"));
    }
    st.gpus = gpus;
    if (broker_metrics_publish(b->metrics, &st) != BF_OK)
        bf_warn("metrics: out of memory; the last snapshot stays");
    free(gpus);
    free(devs);
}

/* ---- life cycle --------------------------------------------------------- */

/* One state directory, one broker: an exclusive flock() on STATE/broker.lock
   (which holds the holder's pid), kept until the descriptor closes, so a
   broker killed with SIGKILL frees it too. */
static bf_err_t lock_state(broker_t *b, const char *dir, char *err)
{
    char *path = bf_asprintf("%s/broker.lock", dir);
    if (!path)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    long pid = 0;
    char why[BF_ERRLEN];
    bf_err_t rc = bf_lock_file(path, &b->lock_fd, &pid, why);
    if (rc == BF_EEXIST && pid > 0)
        bf_fail(err, rc, "state directory %s is in use by pid %ld (%s)", dir, pid, path);
    else if (rc == BF_EEXIST)
        bf_fail(err, rc, "state directory %s is in use by another broker (%s)", dir, path);
    else if (rc != BF_OK)
        bf_fail(err, rc, "--state %s: %s", dir, why);
    free(path);
    return rc;
}

broker_t *broker_new(const broker_config_t *cfg, char *err)
{
    if (!cfg || !cfg->bind || !cfg->state_dir || !*cfg->bind || !*cfg->state_dir) {
        bf_fail(err, BF_EINVAL, "broker: a bind endpoint and a state directory are required");
        return NULL;
    }
    bool curve = cfg->security_keys && cfg->security_identity;
    /* Every listening socket follows the same rule (DESIGN section 5). */
    if (bf_bind_allowed("--bind", cfg->bind, curve, cfg->insecure, err) != BF_OK ||
        (cfg->metrics_listen && bf_bind_allowed("--metrics (metrics.listen)", cfg->metrics_listen,
                                                curve, cfg->insecure, err) != BF_OK))
        return NULL;
    /* A malformed listen address is a usage error: said before anything
       is opened or logged. */
    if (cfg->metrics_listen && broker_metrics_check_listen(cfg->metrics_listen, err) != BF_OK)
        return NULL;
    broker_t *b = calloc(1, sizeof *b);
    if (!b) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    b->lock_fd = -1;
    bf_wake_init(&b->stop);
    b->cfg = *cfg;
    if (!b->cfg.heartbeat_ms)
        b->cfg.heartbeat_ms = 1000;
    if (!b->cfg.liveness)
        b->cfg.liveness = 3;
    if (!b->cfg.retain_s)
        b->cfg.retain_s = 3600;
    b->bind = bf_strdup(cfg->bind);
    b->state_dir = bf_strdup(cfg->state_dir);
    b->cfg.bind = b->bind;
    b->cfg.state_dir = b->state_dir;
    b->started_ms = bf_mono_ms();
    b->ack_hold = getenv("BEAMFLEET_FAULT_ACK_HOLD") != NULL;
    if (!b->bind || !b->state_dir) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    if (bf_mkdir_p(cfg->state_dir, err) != BF_OK || lock_state(b, cfg->state_dir, err) != BF_OK)
        goto fail;
    if (broker_store_open(cfg->state_dir, bf_mono_ms(),
                          2 * (int64_t)b->cfg.heartbeat_ms * b->cfg.liveness, &b->store,
                          err) != BF_OK)
        goto fail;
    if (cfg->throwaway_state)
        broker_store_throwaway(b->store);
    b->ctx = zmq_ctx_new();
    b->router = b->ctx ? zmq_socket(b->ctx, ZMQ_ROUTER) : NULL;
    if (!b->router) {
        bf_fail(err, BF_EIO, "zmq: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (curve) {
        b->security = bf_security_new(cfg->security_keys, cfg->security_identity, err);
        if (!b->security)
            goto fail;
        if (bf_security_role(b->security) != BF_ROLE_BROKER) {
            bf_fail(err, BF_EINVAL, "security.identity %s: the broker needs the key named broker",
                    cfg->security_identity);
            goto fail;
        }
        b->zap = bf_zap_new(b->ctx, cfg->security_keys, err);
        if (!b->zap || bf_security_server(b->security, b->router, err) != BF_OK)
            goto fail;
    }
    int one = 1, zero = 0, hwm = SNDHWM;
    int zmtp_ivl = (int)b->cfg.heartbeat_ms,
        zmtp_timeout = (int)(2 * b->cfg.heartbeat_ms * b->cfg.liveness);
    int64_t maxmsg = (int64_t)PROTO_MAX_FRAME + 1024;
    if (zmq_setsockopt(b->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(b->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(b->router, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(b->router, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        /* ZMTP pings close a TCP connection whose peer vanished (a cut
           link) in 2*I*L instead of the kernel's retransmission timeout
           (~15 min), so a lost host does not hold a descriptor that long */
        zmq_setsockopt(b->router, ZMQ_HEARTBEAT_IVL, &zmtp_ivl, sizeof zmtp_ivl) != 0 ||
        zmq_setsockopt(b->router, ZMQ_HEARTBEAT_TIMEOUT, &zmtp_timeout, sizeof zmtp_timeout) != 0) {
        bf_fail(err, BF_EIO, "zmq_setsockopt: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_bind(b->router, cfg->bind) != 0) {
        bf_fail(err, BF_EIO, "--bind %s: %s", cfg->bind, zmq_strerror(zmq_errno()));
        goto fail;
    }
    char ep[512];
    size_t eplen = sizeof ep;
    b->endpoint =
        bf_strdup(zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, ep, &eplen) == 0 ? ep : cfg->bind);
    if (!b->endpoint) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    if (cfg->metrics_listen) {
        char why[BF_ERRLEN] = "";
        if (!(b->metrics = broker_metrics_new(cfg->metrics_listen, why))) {
            bf_fail(err, BF_EINVAL, "%s", why);
            goto fail;
        }
        if (metrics_load(b) != BF_OK) {
            bf_fail(err, BF_ENOMEM, "metrics: out of memory reading the store");
            goto fail;
        }
        const char *colon = strrchr(cfg->metrics_listen, ':'); /* there is one: it parsed */
        bf_info("metrics at http://%.*s:%u/metrics", (int)(colon - cfg->metrics_listen),
                cfg->metrics_listen, broker_metrics_port(b->metrics));
    }
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
    if (self)
        bf_wake_raise(&self->stop);
}

void broker_destroy(broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_t *b = *self_p;
    broker_metrics_destroy(&b->metrics); /* joins the HTTP thread first */
    for (size_t i = 0; i < b->npeers; i++)
        peer_free(b->peers[i]);
    free(b->peers);
    free(b->ptab);
    for (size_t i = 0; i < b->nout; i++)
        proto_msg_clear(&b->out[i].msg);
    free(b->out);
    if (b->router)
        zmq_close(b->router);
    bf_zap_destroy(&b->zap);
    bf_security_destroy(&b->security);
    for (size_t i = 0; i < b->nhealth; i++)
        free(b->health[i].key);
    free(b->health);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    broker_store_close(&b->store);
    if (b->lock_fd >= 0)
        close(b->lock_fd); /* releases the lock, after the store is closed */
    free(b->bind);
    free(b->endpoint);
    free(b->state_dir);
    bf_wake_close(&b->stop);
    free(b);
    *self_p = NULL;
}

/* A batch that took longer than a heartbeat interval (a huge SUBMIT) left
   the peers' heartbeats unread in the socket: that deaf time does not
   count as their silence. */
static void forgive_deafness(broker_t *b, int64_t from, int64_t to)
{
    if (to - from <= (int64_t)b->cfg.heartbeat_ms)
        return;
    bf_warn("one loop iteration took %lld ms", (long long)(to - from));
    for (size_t i = 0; i < b->npeers; i++) {
        peer_t *p = b->peers[i];
        p->last_recv = p->last_recv + (to - from) < to ? p->last_recv + (to - from) : to;
    }
}

/* Forgets the oldest finished, delivered jobs once retain_s has passed. */
static bf_err_t retire(broker_t *b)
{
    size_t k = broker_store_retirable(b->store, bf_wall_ms(), (int64_t)b->cfg.retain_s * 1000);
    if (k == 0)
        return BF_OK;
    bf_err_t rc = tx(b);
    return rc == BF_OK ? broker_store_retire(b->store, k) : rc;
}

/* While messages stream in, a transaction stays open this long at most
   for the next ones to join it (broker_run). 4 ms, not 2: with 2,000 exec
   tasks of 1 ms on 2 workers the run took 1.730 s of CPU instead of
   1.748 s (medians of 8, alternating) and no-op dispatch was unchanged;
   a worker running short commits at once anyway (worker_waits), as does
   a message after a quiet spell. */
#define COMMIT_GAP_MS 4

/* A RESULT's document, kept as the bytes it came in to be stored and
   delivered as it came, is checked as a tree would be (what reaches the
   collector must convert); the reason of a refusal reads as
   proto_decode's. */
static bf_err_t check_result(proto_msg_t *m, char *why)
{
    char detail[BF_ERRLEN] = "";
    bf_err_t rc = m->type == PROTO_RESULT && m->obj_raw
                      ? proto_msgpack_check(m->obj_raw, m->obj_raw_len, detail)
                      : BF_OK;
    if (rc != BF_OK) {
        bf_fail(why, rc, "%s: field obj: %s", proto_type_name(m->type), detail);
        proto_msg_clear(m);
    }
    return rc;
}

/* Reads up to BATCH messages and applies them; BF_OK or a store failure. */
static bf_err_t read_batch(broker_t *b)
{
    bf_err_t rc = BF_OK;
    for (int n = 0; n < BATCH && rc == BF_OK; n++) {
        uint8_t id[MAX_ID];
        size_t id_len = sizeof id;
        proto_msg_t m;
        char why[BF_ERRLEN] = "";
        proto_origin_t origin;
        bf_err_t r = proto_recv_origin_keep(b->router, id, &id_len, &m, ZMQ_DONTWAIT, &origin,
                                            PROTO_BIT(PROTO_RESULT), why);
        if (r == BF_EIO)
            break; /* nothing more (EAGAIN) */
        if (r == BF_OK)
            r = check_result(&m, why);
        if (r != BF_OK) {
            /* The first few, then one in a thousand: a flood of garbage
               must not become a flood of log lines. */
            if (++b->bad_messages <= 10 || b->bad_messages % 1000 == 0)
                bf_warn("dropping a malformed message (%llu so far): %s",
                        (unsigned long long)b->bad_messages, why);
            continue;
        }
        if (id_len == 0 || id_len > MAX_ID) {
            proto_msg_clear(&m);
            continue;
        }
        b->received++;
        rc = handle(b, id, id_len, &origin, &m);
        proto_msg_clear(&m);
    }
    return rc;
}

/* Is a worker running short of tasks while new ones for it wait for the
   commit? It holds fewer than three quarters of what it asked for (held + credit)
   once the unsent ones are left out: then the commit goes now, not when
   the transaction is COMMIT_GAP_MS old. */
static bool worker_waits(const broker_t *b)
{
    for (size_t i = 0; i < b->npeers; i++) {
        const peer_t *p = b->peers[i];
        size_t sent = p->nheld > p->unsent ? p->nheld - p->unsent : 0;
        if (p->unsent > 0 && !p->dead && 4 * sent < 3 * (p->nheld + p->credit))
            return true;
    }
    return false;
}

/* Commits the open transaction, with the acknowledgements applied in
   memory since the last one; BF_OK when none is open. */
static bf_err_t commit(broker_t *b, int64_t now)
{
    if (!b->in_tx)
        return BF_OK;
    bf_err_t rc = BF_OK;
    if (broker_store_outbox_unflushed(b->store))
        rc = broker_store_outbox_flush(b->store); /* the acks wait for no more */
    if (rc == BF_OK && (rc = broker_store_commit(b->store)) == BF_OK)
        b->commits++;
    b->in_tx = false;
    b->last_commit = now;
    return rc;
}

bf_err_t broker_run(broker_t *b)
{
    /* Housekeeping (heartbeats, expiry, leases) runs every I/4, and also
       at the moment a peer's silence runs out: the poll timeout is the time
       left to the earlier of the two, or to the open transaction's commit. */
    int64_t tick = b->cfg.heartbeat_ms / 4 > 0 ? b->cfg.heartbeat_ms / 4 : 1;
    int64_t next_timer = bf_mono_ms();
    bf_err_t rc = BF_OK;
    while (!bf_wake_up(&b->stop)) {
        int64_t now = bf_mono_ms(), wake = next_timer, expiry = next_expiry(b);
        if (expiry < wake)
            wake = expiry;
        if (b->in_tx && b->last_commit + COMMIT_GAP_MS < wake)
            wake = b->last_commit + COMMIT_GAP_MS;
        long timeout = wake > now ? (long)(wake - now) : 0;
        /* the router, the ZAP socket if any, the stop's eventfd if any */
        zmq_pollitem_t items[3] = {{b->router, 0, ZMQ_POLLIN, 0}};
        int nitems = 1, zap_item = -1;
        if (b->zap) {
            zap_item = nitems;
            items[nitems++] = (zmq_pollitem_t){bf_zap_socket(b->zap), 0, ZMQ_POLLIN, 0};
        }
        if (b->stop.fd >= 0)
            items[nitems++] = (zmq_pollitem_t){NULL, b->stop.fd, ZMQ_POLLIN, 0};
        if (zmq_poll(items, nitems, timeout) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            bf_error("zmq_poll: %s", zmq_strerror(zmq_errno()));
            return BF_EIO;
        }
        if (zap_item >= 0 && (items[zap_item].revents & ZMQ_POLLIN))
            bf_zap_handle(b->zap);
        if (items[0].revents & ZMQ_POLLIN) {
            int64_t t0 = bf_mono_ms();
            rc = read_batch(b);
            forgive_deafness(b, t0, bf_mono_ms());
        }
        now = bf_mono_ms();
        if (rc == BF_OK && now < next_timer && now >= expiry)
            rc = expire(b, now); /* a peer's silence ran out between ticks */
        if (rc == BF_OK && now >= next_timer) {
            rc = expire(b, now);
            if (rc == BF_OK)
                rc = retire(b);
            /* acknowledgements no other transaction took: this tick's */
            if (rc == BF_OK && !b->ack_hold && broker_store_outbox_unflushed(b->store))
                rc = tx(b);
            heartbeats(b, now);
            metrics_publish(b, now);
            next_timer = now + tick;
        }
        int64_t t1 = bf_mono_ms();
        if (rc == BF_OK)
            rc = dispatch(b);
        if (rc == BF_OK)
            rc = deliver(b);
        /* Group commit across turns: while messages stream in (results
           from many workers, a collector's acknowledgements), at most one
           commit per COMMIT_GAP_MS takes all they changed, unless a worker
           is about to run dry; a message after a quiet spell commits at
           once. What was queued to send (ACKs, TASKs, DELIVERs, replies)
           goes only after the commit. */
        if (rc == BF_OK && b->in_tx) {
            now = bf_mono_ms();
            if (now >= b->last_commit + COMMIT_GAP_MS || worker_waits(b))
                rc = commit(b, now);
        }
        if (rc != BF_OK)
            break;
        if (!b->in_tx) {
            flush_out(b);
            forgive_deafness(b, t1, bf_mono_ms()); /* a huge COMMIT */
            reap(b);                               /* nothing queued refers to a peer now */
        }
    }
    if (rc == BF_OK && (rc = commit(b, bf_mono_ms())) == BF_OK) /* stopped while one waited */
        flush_out(b);
    if (rc != BF_OK) {
        bf_error("stopping: the store failed (%s); nothing after the last commit was "
                 "promised",
                 bf_strerror(rc));
        return BF_EDB;
    }
    return BF_OK;
}
