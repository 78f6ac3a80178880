/*  worker/worker.c - one worker process (docs/fleet semantics). The socket
    thread (the caller of worker_main) owns the DEALER to the broker: it
    registers (READY with credit and capabilities), keeps heartbeats
    flowing, takes TASKs into a local queue, hands them one at a time to the
    task thread, sends throttled PROGRESS and the RESULT, and keeps every
    result until the broker's ACK, sending them again after each
    (re-)registration. The connection itself (heartbeats, handshake
    failures, a fresh DEALER after a backoff with jitter when the broker
    goes silent) is proto_link_t's, shared with the collector. The task
    thread only runs handlers; the two talk over an inproc PAIR (run / quit
    one way, progress / done the other), so the socket loop never waits for
    a task. An exec task is the exception: its program is a process of its
    own, so the socket thread starts it and polls its pipes and its exit
    together with the DEALER, serving the broker meanwhile (run_inline),
    which spares each short task two thread hand-offs. On SIGTERM (or *cfg->stop) it drains: no new
   tasks, the running one finishes, its result is acknowledged (bounded wait), then GOODBYE. */

#include "worker.h"

#include "../proto/proto_link.h"

#include <errno.h>
#include <poll.h>
#include <math.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_HELD         256   /* tasks held locally (running + prefetched) */
#define MAX_UNACKED      65536 /* results kept for a broker that never acks */
#define DRAIN_ACK_MS     10000 /* drain: wait this long for the last ACKs */
#define STUCK_GRACE_MS   30000 /* a cancelled handler that has not returned by then is stuck */
#define PROGRESS_MIN_MS  250   /* PROGRESS at most 4/s */
#define TASK_PROGRESS_MS 50    /* task thread -> socket thread, same stage */
#define STATS_MS         5000  /* STATS (NVML figures) interval */
#define TEARDOWN_S       5     /* after GOODBYE, the process exits within this */
#define START_LOG_MS     1000  /* an exec task still running by then has its start logged */
/* Adaptive credit: while tasks are short the worker asks for enough of them
   to cover this much work (unless its configuration says otherwise), so
   that its queue outlasts the broker's refill round trip (a few ms on a
   loaded host); what it holds when a job ends is then a few times this
   much work at most, however short or long the tasks. */
#define HOLD_MS    5.0
#define CREDIT_CAP 64 /* the broker's cap on credit (docs/protocol.md section 9) */

/* What the signal handlers raise: the one process-wide mutable state,
   used only when the caller gives no stop flag of its own. Its eventfd is
   polled with the sockets, so that a signal that lands while zmq_poll is
   between its checks does not leave the worker asleep for a tick. */
static bf_wake_t signalled = {0, -1};

static void on_signal(int sig)
{
    (void)sig;
    bf_wake_raise(&signalled);
}

/* Teardown is bounded. Once GOODBYE is sent every result is acknowledged
   (or reported as not), so nothing is lost by leaving: a teardown step that
   blocks (a zmq_ctx_term waiting on a socket, a thread that does not join)
   must not keep a draining worker alive past the supervisor's and the
   operator's patience. SIGALRM names the step it was in and exits with
   the status the worker had. Process mode only (the tests' in-process
   workers give a stop flag and own their process). */
static const char *volatile teardown_step;
static volatile sig_atomic_t teardown_rc;

static void on_teardown_alarm(int sig)
{
    (void)sig;
    static const char head[] = "beamfleet worker: teardown stuck in ";
    static const char tail[] = "; exiting\n";
    const char *step = teardown_step ? teardown_step : "?";
    ssize_t n = write(STDERR_FILENO, head, sizeof head - 1);
    n = write(STDERR_FILENO, step, strlen(step));
    n = write(STDERR_FILENO, tail, sizeof tail - 1);
    (void)n;
    _exit(teardown_rc);
}

static void teardown_at(const char *step)
{
    teardown_step = step;
    /* Fault injection (tests/hostile): this step blocks until SIGALRM ends
       the process, whatever other signal comes meanwhile (the supervisor's
       SIGTERM used to end the pause, and the teardown went on unstuck). */
    if (getenv("BEAMFLEET_FAULT_TEARDOWN") && strcmp(getenv("BEAMFLEET_FAULT_TEARDOWN"), step) == 0)
        for (;;)
            pause();
}

const char *worker_fault(bf_err_t rc)
{
    switch (rc) {
    case BF_EINVAL: /* the scene, the settings or the output of the task */
    case BF_EPERM:  /* a program not allowed, a path that escapes */
    case BF_ENOENT: /* a program or a file of the job that is not there */
    case BF_EPROTO: /* a job spec that does not decode */
        return "task";
    case BF_ECUDA: /* a CUDA error, device out of memory */
        return "device";
    default: /* timeouts, cancels, crashes, host memory, I/O: nobody knows yet */
        return NULL;
    }
}

void worker_name(char *buf, size_t n, const char *prefix, long pid, int device)
{
    char dev[16] = "cpu";
    if (device >= 0)
        snprintf(dev, sizeof dev, "gpu%d", device);
    snprintf(buf, n, "%s:%ld:%s", prefix && *prefix ? prefix : bf_hostname(), pid, dev);
}

worker_handler_fn worker_handler(const char *task)
{
    if (task && !strcmp(task, "exec"))
        return worker_exec;
    if (task && !strcmp(task, "boresight"))
        return worker_boresight;
    return NULL;
}

/* ---- the socket thread <-> task thread wire ------------------------------- */
enum { PAIR_RUN = 1, PAIR_QUIT, PAIR_PROGRESS, PAIR_DONE };

typedef struct {
    int kind;
    void *run; /* run_t of PAIR_RUN / PAIR_DONE */
    double fraction;
    char stage[32];
} pair_msg_t;

/* One attempt, owned by the socket thread except while the task thread
   runs it (between PAIR_RUN and PAIR_DONE); cancel is the one field both
   touch meanwhile. */
typedef struct {
    atomic_int owner; /* who may touch the rest: see hand_over */
    worker_task_ctx_t ctx;
    worker_handler_fn fn;
    const bf_job_t *job; /* the worker's parsed spec of the task's job */
    char *scene_dir;
    volatile int cancel;
    json_t *result;
    bf_err_t rc;
    char err[BF_ERRLEN];
    void *pair; /* the task thread's end, for progress */
    char last_stage[32];
    int64_t last_sent;
} run_t;

/* A RESULT kept until the broker's ACK: its frame as proto_encode made it
   (sent again as it is after a re-registration or a duplicate TASK, never
   encoded again) and its task id. Both owned. */
typedef struct {
    char *task_id;
    uint8_t *frame;
    size_t size;
} sent_t;

static void sent_clear(sent_t *s)
{
    free(s->task_id);
    free(s->frame);
    memset(s, 0, sizeof *s);
}

typedef struct {
    worker_config_t cfg;
    unsigned hb, live, prefetch;
    /* The credit the broker was last told (READY): prefetch, or more while
       tasks are short (credit_for); task_ms is the running mean of their
       durations, 0 before the first. */
    unsigned credit;
    double task_ms, hold_ms; /* hold_ms < 0: credit stays at prefetch */
    char name[256];
    worker_device_t dev;
    worker_nvml_t *nvml; /* NULL: no GPU figures (a CPU worker, no NVML) */
    int64_t next_stats;
    json_t *caps;
    /* The job spec of the last task, parsed: the TASKs of one job carry the
       same spec, and converting and parsing it again for each short task
       was a sizeable part of the worker's time. TASKs are received with
       their spec left encoded (proto_link_recv_raw); the same bytes as
       last time are the same spec, checked then. Replaced only while no
       task runs. */
    bf_job_t job;
    uint8_t *job_spec; /* the MessagePack bytes job was parsed from, NULL: none */
    size_t job_spec_len;
    void *zctx, *pair, *pair_task;
    proto_link_t *link; /* the DEALER to the broker, heartbeats, reconnection */
    bool refused;       /* the broker refused our key's role: stop */
    pthread_t thread;
    bool thread_ok;
    /* held[0] is the running task when run != NULL */
    proto_msg_t held[MAX_HELD];
    size_t nheld;
    run_t *run;
    bool inline_run; /* run is an exec task running on this thread (run_inline) */
    bool aborted, timed_out;
    /* An exec task's start is logged only once it has run START_LOG_MS
       (tick): a short one gets its one line from deliver, which names the
       attempt too; a log line is a write(2) and a tenth of such a task's
       time in the worker. */
    bool start_logged;
    int64_t start_log_at;
    double started_s;
    int64_t deadline, cancel_at;
    /* RESULTs sent and not yet acknowledged, as encoded once */
    sent_t *unacked;
    size_t nunacked, capunacked;
    /* progress waiting for its turn */
    bool prog_pending;
    char prog_stage[32], sent_stage[32];
    double prog_fraction;
    int64_t last_progress;
    /* leaving */
    bool draining, restart, abandoned;
    int64_t ack_deadline;
} worker_t;

static bool stop_requested(const worker_t *w)
{
    return w->cfg.stop ? bf_flag_up(w->cfg.stop) : bf_wake_up(&signalled);
}

/* ---- the task thread ---------------------------------------------------------- */

/* Whether a handler's progress report goes out: a new stage, the end, or
   TASK_PROGRESS_MS since the last one; if so, remembers it as the last. */
static bool progress_due(run_t *r, const char *stage, double fraction)
{
    int64_t now = bf_mono_ms();
    bool changed = strncmp(stage, r->last_stage, sizeof r->last_stage - 1) != 0;
    if (!changed && now - r->last_sent < TASK_PROGRESS_MS && fraction < 1.0)
        return false;
    bf_strlcpy(r->last_stage, stage, sizeof r->last_stage);
    r->last_sent = now;
    return true;
}

static void on_progress(void *ud, const char *stage, double fraction)
{
    run_t *r = ud;
    if (!stage)
        stage = "";
    if (!progress_due(r, stage, fraction))
        return;
    pair_msg_t m = {.kind = PAIR_PROGRESS, .fraction = fraction};
    bf_strlcpy(m.stage, stage, sizeof m.stage);
    /* a full pipe drops an update, never blocks the handler */
    zmq_send(r->pair, &m, sizeof m, ZMQ_DONTWAIT);
}

/* Ownership of a run passes between the threads as a pointer in a PAIR
   message. libzmq's pipes are lock-free and promise our code no ordering
   (nor can ThreadSanitizer see any): the hand-over is a release store by
   the giver before the send and an acquire load by the taker after the
   receive, so everything written to the run before is visible after. */
enum { OWNER_SOCKET, OWNER_TASK };
static void hand_over(run_t *r, int to)
{
    atomic_store_explicit(&r->owner, to, memory_order_release);
}
static void take_over(run_t *r)
{
    (void)atomic_load_explicit(&r->owner, memory_order_acquire);
}

static void *task_main(void *arg)
{
    worker_t *w = arg;
    for (;;) {
        pair_msg_t m;
        int n = zmq_recv(w->pair_task, &m, sizeof m, 0);
        if (n < 0 && zmq_errno() == EINTR)
            continue;
        if (n != (int)sizeof m || m.kind == PAIR_QUIT)
            break;
        if (m.kind != PAIR_RUN)
            continue;
        run_t *r = m.run;
        take_over(r);
        r->err[0] = '\0';
        r->result = NULL;
        r->rc = r->fn(&r->ctx, &r->result, r->err);
        pair_msg_t done = {.kind = PAIR_DONE, .run = r};
        hand_over(r, OWNER_SOCKET);
        while (zmq_send(w->pair_task, &done, sizeof done, 0) < 0 && zmq_errno() == EINTR)
            ;
    }
    return NULL;
}

static void run_free(run_t *r)
{
    if (!r)
        return;
    free(r->scene_dir);
    json_decref(r->result);
    free(r);
}

/* ---- sending ------------------------------------------------------------------ */

/* The credit that holds about hold_ms of tasks of mean duration task_ms
   (the running one and as many whole tasks as fit in hold_ms queued): a
   power of two, at least prefetch, at most CREDIT_CAP. */
static unsigned credit_for(unsigned prefetch, double hold_ms, double task_ms)
{
    double want = task_ms > 0 ? 1.0 + floor(hold_ms / task_ms) : CREDIT_CAP;
    unsigned c = 1;
    while (c < want && c < CREDIT_CAP)
        c *= 2;
    return c > prefetch ? c : prefetch;
}

static void send_ready_credit(worker_t *w, bool resend);

static void send_ready(worker_t *w)
{
    send_ready_credit(w, true);
}

/* READY with the capabilities and the current credit; resend: also what the
   broker has not acknowledged (after a (re-)connection, not for a credit
   change on a live link). */
static void send_ready_credit(worker_t *w, bool resend)
{
    json_t *running = json_array();
    for (size_t i = 0; running && i < w->nheld; i++)
        json_array_append_new(running, json_string(w->held[i].task_id));
    if (!running || json_object_set_new(w->caps, "running", running) != 0) {
        bf_error("READY: out of memory");
        return;
    }
    proto_msg_t m;
    proto_msg_init(&m, PROTO_READY);
    m.credit = w->credit;
    if (proto_msg_set(&m.worker, w->name) == BF_OK) {
        m.obj = json_incref(w->caps);
        if (proto_link_send(w->link, &m) != BF_OK)
            bf_warn("READY not sent: %s", zmq_strerror(zmq_errno()));
    }
    proto_msg_clear(&m);
    /* what the broker has not acknowledged goes again */
    for (size_t i = 0; resend && i < w->nunacked; i++)
        if (proto_link_send_frame(w->link, w->unacked[i].frame, w->unacked[i].size) != BF_OK)
            bf_warn("result %s not re-sent: %s", w->unacked[i].task_id, zmq_strerror(zmq_errno()));
}

/* ---- results ---------------------------------------------------------------------- */

static void pop_held(worker_t *w, size_t i)
{
    proto_msg_clear(&w->held[i]);
    memmove(&w->held[i], &w->held[i + 1], (w->nheld - i - 1) * sizeof w->held[0]);
    w->nheld--;
}

/* Sets the fleet fields of a result document (docs/protocol.md section 13, "Documents"). */
static void fleet_fields(worker_t *w, const proto_msg_t *task, json_t *res, double elapsed)
{
    json_object_set_new(res, "scene", json_string(task->scene ? task->scene : ""));
    json_object_set_new(res, "task_id", json_string(task->task_id ? task->task_id : ""));
    json_object_set_new(res, "job_id", json_string(task->job_id ? task->job_id : ""));
    json_object_set_new(res, "attempt", json_integer((json_int_t)task->attempt));
    json_object_set_new(res, "host", json_string(bf_hostname()));
    json_object_set_new(res, "worker", json_string(w->name));
    json_object_set_new(res, "gpu_id", json_integer(w->dev.index));
    json_object_set_new(res, "device", json_string(w->dev.index < 0 ? "cpu" : w->dev.name));
    json_object_set_new(res, "backend", json_string(w->dev.backend));
    if (!json_is_number(json_object_get(res, "elapsed_time")))
        json_object_set_new(res, "elapsed_time", json_real(elapsed));
    if (!json_is_string(json_object_get(res, "reason")))
        json_object_set_new(res, "reason", json_string(""));
}

/* {status: error, reason, fault} (fault NULL: unattributed, no field). */
static json_t *error_doc(const char *reason, const char *fault)
{
    json_t *doc = json_object();
    if (!doc)
        return NULL;
    json_t *r = json_string(reason);
    if (!r) /* not UTF-8 */
        r = json_string("(reason is not UTF-8)");
    json_object_set_new(doc, "status", json_string("error"));
    json_object_set_new(doc, "reason", r);
    if (fault)
        json_object_set_new(doc, "fault", json_string(fault));
    return doc;
}

/* Sends the result of task (which the caller still owns) and keeps it until
   the ACK. Takes res. */
static void deliver(worker_t *w, const proto_msg_t *task, json_t *res, double elapsed)
{
    if (!res)
        res = error_doc("out of memory", NULL);
    if (!res) {
        bf_error("task %s: out of memory: no result", task->task_id);
        return;
    }
    const char *status = json_string_value(json_object_get(res, "status"));
    if (!status ||
        (strcmp(status, "success") && strcmp(status, "failed") && strcmp(status, "error"))) {
        char reason[160];
        snprintf(reason, sizeof reason, "the task reported status '%.64s'", status ? status : "");
        json_object_set_new(res, "status", json_string("error"));
        json_object_set_new(res, "reason", json_string(reason));
        json_object_set_new(res, "fault", json_string("task"));
    } else if (strcmp(status, "error") != 0) {
        json_object_del(res, "fault"); /* only a failure has a fault */
    }
    fleet_fields(w, task, res, elapsed);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_RESULT);
    m.attempt = task->attempt;
    m.obj = res;
    if (proto_msg_set(&m.task_id, task->task_id) != BF_OK) {
        proto_msg_clear(&m);
        bf_error("task %s: out of memory: no result", task->task_id);
        return;
    }
    /* Encoded once, here: a result the wire cannot carry (too big) would
       be kept and re-sent forever, so it is replaced by an error that says
       so; what is kept for re-sending is the frame itself. */
    sent_t sent = {NULL, NULL, 0};
    bf_err_t enc = proto_encode(&m, &sent.frame, &sent.size);
    if (enc != BF_OK) {
        char why[192];
        snprintf(why, sizeof why,
                 "the result cannot be sent: %s (the wire takes at most %u MiB, strings of "
                 "64 KiB and 1048576 values)",
                 bf_strerror(enc), PROTO_MAX_FRAME >> 20);
        json_decref(m.obj);
        /* too big or not encodable: decided by what the task produced */
        m.obj = error_doc(why, enc == BF_ENOMEM ? NULL : "task");
        if (m.obj)
            fleet_fields(w, task, m.obj, elapsed);
        enc = m.obj ? proto_encode(&m, &sent.frame, &sent.size) : BF_ENOMEM;
    }
    const char *st = json_string_value(json_object_get(m.obj, "status"));
    const char *reason = json_string_value(json_object_get(m.obj, "reason"));
    bf_info("task %s: %s %s in %.1f s (attempt %llu)%s%.200s", task->task_id,
            task->scene ? task->scene : "", st ? st : "?", elapsed,
            (unsigned long long)task->attempt, reason && *reason ? ": " : "", reason ? reason : "");
    sent.task_id = m.task_id; /* the message's, taken over */
    m.task_id = NULL;
    proto_msg_clear(&m); /* the document is in the frame now */
    if (enc != BF_OK) {
        bf_error("task %s: out of memory: no result", task->task_id);
        sent_clear(&sent);
        return;
    }
    if (w->nunacked == MAX_UNACKED) {
        bf_error("%d results without ACK: forgetting the oldest (%s)", MAX_UNACKED,
                 w->unacked[0].task_id);
        sent_clear(&w->unacked[0]);
        memmove(&w->unacked[0], &w->unacked[1], (w->nunacked - 1) * sizeof *w->unacked);
        w->nunacked--;
    }
    if (!bf_grow(&w->unacked, &w->capunacked, w->nunacked + 1, sizeof *w->unacked, 8)) {
        /* sent once anyway; a lost ACK then costs an attempt */
        if (proto_link_send_frame(w->link, sent.frame, sent.size) != BF_OK)
            bf_warn("result %s not sent", sent.task_id);
        sent_clear(&sent);
        return;
    }
    w->unacked[w->nunacked++] = sent;
    if (proto_link_send_frame(w->link, sent.frame, sent.size) != BF_OK)
        bf_warn("result %s not sent now (%s): it goes again after registering", sent.task_id,
                proto_link_socket(w->link) ? zmq_strerror(zmq_errno()) : "not connected");
}

/* ---- running tasks ------------------------------------------------------------------ */

/* Starts held[0], or answers it at once when it cannot run. */
static void flush_progress(worker_t *w, int64_t now);
static void finish_task(worker_t *w, run_t *r);
static void receive(worker_t *w, int64_t now);
static void tick(worker_t *w, int64_t now);

static long tick_ms(const worker_t *w)
{
    long timeout = (long)w->hb / 4;
    if (timeout > 100)
        timeout = 100;
    if (timeout < 5)
        timeout = 5;
    return timeout;
}

/* An exec task's progress, on this thread: what on_progress and on_pair
   do between the threads, without the pair. */
static void inline_progress(void *ud, const char *stage, double fraction)
{
    worker_t *w = ud;
    run_t *r = w->run;
    if (!r)
        return;
    if (!stage)
        stage = "";
    if (!progress_due(r, stage, fraction))
        return;
    bf_strlcpy(w->prog_stage, stage, sizeof w->prog_stage);
    w->prog_fraction = fraction < 0 ? 0 : (fraction > 1 ? 1 : fraction);
    w->prog_pending = true;
}

/* An exec task's wait (worker_task_ctx_t.wait): its pipes and pidfd polled
   together with the DEALER, the broker's messages handled and the timers
   run (heartbeats, the deadline, PROGRESS) while the program runs, as the
   loop does; at most one tick long, so the exec handler sees a cancel or
   the deadline as soon as the loop would.
   One poll(2) on the program's fds and the DEALER's ZMQ_FD, not zmq_poll:
   zmq_poll polls everything once without waiting, then again, and asks
   the socket for ZMQ_EVENTS after each (two system calls apiece), some
   eight system calls per wake-up, and a short task wakes this thread
   three times. ZMQ_FD only signals what arrives after the socket last
   processed its commands, so ZMQ_EVENTS is asked once before waiting (a
   send meanwhile may have taken the signal of a message that waits), and
   the socket is read until it is empty once its fd fires. */
static int inline_wait(void *ud, struct pollfd *fds, int nfds, int timeout_ms)
{
    worker_t *w = ud;
    enum { MAX_FDS = 7 };
    struct pollfd set[MAX_FDS + 1];
    int map[MAX_FDS], n = 0;
    for (int i = 0; i < nfds; i++) {
        fds[i].revents = 0;
        if (fds[i].fd >= 0 && n < MAX_FDS) {
            set[n] = (struct pollfd){fds[i].fd, fds[i].events, 0};
            map[n++] = i;
        }
    }
    int nfd = n;
    long t = tick_ms(w);
    if (timeout_ms >= 0 && timeout_ms < t)
        t = timeout_ms;
    void *dealer = proto_link_socket(w->link);
    int zfd = -1;
    size_t zfd_len = sizeof zfd;
    bool waiting = false; /* a message is there already */
    if (dealer && zmq_getsockopt(dealer, ZMQ_FD, &zfd, &zfd_len) == 0 && zfd >= 0) {
        int events = 0;
        size_t events_len = sizeof events;
        waiting =
            zmq_getsockopt(dealer, ZMQ_EVENTS, &events, &events_len) == 0 && (events & ZMQ_POLLIN);
        if (waiting)
            t = 0; /* look at the fds, then take it */
        set[n++] = (struct pollfd){zfd, POLLIN, 0};
    }
    int rc = poll(set, (nfds_t)n, (int)t);
    if (rc < 0)
        return -1; /* errno: EINTR for a signal */
    int ready = 0;
    for (int k = 0; k < nfd; k++) {
        fds[map[k]].revents = set[k].revents;
        ready += set[k].revents != 0;
    }
    int64_t now = bf_mono_ms();
    if (zfd >= 0 && (waiting || set[nfd].revents))
        receive(w, now); /* until it is empty: ZMQ_FD then fires for the next */
    tick(w, now);
    return ready;
}

/* An exec task runs on this thread: the program is a process of its own,
   and waiting for it here, with the DEALER in the same poll, spares every
   task two hand-offs between threads (run, done) and the wake-ups they
   cost. The broker's messages are served meanwhile (inline_wait). */
static void run_inline(worker_t *w, run_t *r)
{
    r->ctx.progress = inline_progress;
    r->ctx.ud = w;
    r->ctx.wait = inline_wait;
    r->ctx.wait_ud = w;
    w->inline_run = true;
    r->err[0] = '\0';
    r->result = NULL;
    r->rc = r->fn(&r->ctx, &r->result, r->err);
    w->inline_run = false;
    finish_task(w, r);
}

static void start_task(worker_t *w)
{
    proto_msg_t *t = &w->held[0];
    char why[BF_ERRLEN] = "", err[BF_ERRLEN] = "";
    bf_err_t rc = BF_OK;
    run_t *r = calloc(1, sizeof *r);
    if (!r) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto refuse;
    }
    /* the job spec and the scene name come from the network: checked (a
       spec of the same bytes as the last one was checked then) */
    if (w->job_spec && (!t->obj_raw || t->obj_raw_len != w->job_spec_len ||
                        memcmp(t->obj_raw, w->job_spec, w->job_spec_len) != 0)) {
        free(w->job_spec);
        w->job_spec = NULL;
        w->job_spec_len = 0;
        bf_job_clear(&w->job);
    }
    if (!w->job_spec) {
        json_t *spec = NULL;
        if (!t->obj_raw || proto_msgpack_to_json(t->obj_raw, t->obj_raw_len, &spec, why) != BF_OK ||
            bf_job_from_json(spec, &w->job, why) != BF_OK) {
            json_decref(spec);
            bf_job_clear(&w->job);
            rc = bf_fail(err, BF_EPROTO, "bad job spec: %s", why[0] ? why : "missing");
            goto refuse;
        }
        json_decref(spec);
        w->job_spec = t->obj_raw; /* taken from the TASK, which needs it no more */
        w->job_spec_len = t->obj_raw_len;
        t->obj_raw = NULL;
        t->obj_raw_len = 0;
    }
    r->job = &w->job;
    if (!r->job->scenes_root || r->job->scenes_root[0] != '/') {
        rc = bf_fail(err, BF_EPROTO, "bad job spec: no absolute scenes_root");
        goto refuse;
    }
    if (!t->scene || !bf_safe_name(t->scene)) {
        rc = bf_fail(err, BF_EPERM, "bad scene name '%.64s'", t->scene ? t->scene : "");
        goto refuse;
    }
    r->fn = worker_handler(r->job->task == BF_TASK_EXEC ? "exec" : "boresight");
    if (!(r->scene_dir = bf_asprintf("%s/%s", r->job->scenes_root, t->scene))) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto refuse;
    }
    /* A scene that is a link to a folder outside the job's scenes folder
       is refused (DESIGN section 5); one that does not exist is left to the
       handler, which says so. The scene is one safe name: only a link can
       lead out, so only a link has its path resolved (two realpaths, a
       readlink per component, for every task otherwise). */
    struct stat sst;
    if ((lstat(r->scene_dir, &sst) != 0 || S_ISLNK(sst.st_mode)) &&
        !bf_resolves_beneath(r->job->scenes_root, r->scene_dir, NULL) && errno == EXDEV) {
        rc = bf_fail(err, BF_EPERM, "scene '%s' leads out of the scenes folder %s", t->scene,
                     r->job->scenes_root);
        goto refuse;
    }
    double timeout_ms = t->timeout_ms ? (double)t->timeout_ms : r->job->timeout_s * 1000.0;
    if (!(timeout_ms > 0) || timeout_ms > 1e12)
        timeout_ms = 1e12;
    w->started_s = bf_mono_s();
    w->deadline = bf_mono_ms() + (int64_t)timeout_ms;
    w->aborted = w->timed_out = false;
    w->cancel_at = 0;
    w->prog_pending = false;
    w->sent_stage[0] = '\0';
    r->pair = w->pair_task;
    r->ctx = (worker_task_ctx_t){
        .scene_dir = r->scene_dir,
        .scene = t->scene,
        .job = r->job,
        .deadline_ms = w->deadline,
        .cancel = &r->cancel,
        .dev = &w->dev,
        .threads = w->cfg.threads,
        .allow_exec = w->cfg.allow_exec,
        .allow_exec_count = w->cfg.allow_exec_count,
        .interpreters = w->cfg.interpreters,
        .interpreter_count = w->cfg.interpreter_count,
        .progress = on_progress,
        .ud = r,
    };
    /* An exec task's one stage, "exec", is reported by its handler as soon
       as the program runs: it is the stage announced with the start below,
       so that report is no news to this thread and does not wake it for
       every task (a short task would end before the throttle let it out). */
    const char *first = r->job->task == BF_TASK_EXEC ? "exec" : "start";
    bf_strlcpy(r->last_stage, first, sizeof r->last_stage);
    r->last_sent = bf_mono_ms();
    bool inline_exec = r->job->task == BF_TASK_EXEC;
    if (!inline_exec) {
        pair_msg_t m = {.kind = PAIR_RUN, .run = r};
        hand_over(r, OWNER_TASK);
        if (zmq_send(w->pair, &m, sizeof m, 0) != (int)sizeof m) {
            rc = bf_fail(err, BF_EIO, "cannot reach the task thread");
            goto refuse;
        }
    }
    w->run = r;
    /* The broker counts an attempt against a task only once it has
       started, which it learns from a PROGRESS: say so now, past the
       throttle, not when the task's own first stage comes. */
    bf_strlcpy(w->prog_stage, first, sizeof w->prog_stage);
    w->prog_fraction = 0;
    w->prog_pending = true;
    w->last_progress = 0;
    flush_progress(w, bf_mono_ms());
    w->start_logged = !inline_exec;
    w->start_log_at = bf_mono_ms() + START_LOG_MS;
    if (w->start_logged)
        bf_info("task %s: %s attempt %llu", t->task_id, t->scene, (unsigned long long)t->attempt);
    if (inline_exec)
        run_inline(w, r);
    return;
refuse:
    run_free(r);
    deliver(w, t, error_doc(err[0] ? err : bf_strerror(rc), worker_fault(rc)), 0.0);
    pop_held(w, 0);
}

/* Folds a task's duration into the mean and tells the broker a new credit
   when the work it holds (credit x mean) has left [hold_ms / 2, 4 hold_ms]:
   a READY per change, a handful per job, not one for every task whose
   duration wobbles; at most about 4 hold_ms of work waits in a worker
   when a job ends. */
static void adapt_credit(worker_t *w, double ms)
{
    if (w->hold_ms < 0)
        return;
    w->task_ms = w->task_ms > 0 ? (15 * w->task_ms + ms) / 16 : ms;
    double held = w->credit * w->task_ms;
    bool more = held < w->hold_ms / 2 && w->credit < CREDIT_CAP;
    bool less = held > 4 * w->hold_ms && w->credit > w->prefetch;
    if (!(more || less) || w->draining || !proto_link_socket(w->link))
        return;
    unsigned to = credit_for(w->prefetch, w->hold_ms, w->task_ms);
    if (to == w->credit)
        return;
    bf_debug("credit %u -> %u (tasks of %.2f ms)", w->credit, to, w->task_ms);
    w->credit = to;
    send_ready_credit(w, false);
}

/* The task thread answered PAIR_DONE for the running task. */
static void finish_task(worker_t *w, run_t *r)
{
    if (r != w->run) /* cannot happen: one run at a time */
        return;
    w->run = NULL;
    double elapsed = bf_mono_s() - w->started_s;
    adapt_credit(w, elapsed * 1000.0);
    proto_msg_t task = w->held[0];
    memmove(&w->held[0], &w->held[1], (w->nheld - 1) * sizeof w->held[0]);
    w->nheld--;
    if (w->aborted) { /* the broker no longer wants it */
        bf_info("task %s: aborted after %.1f s", task.task_id, elapsed);
    } else {
        json_t *res = NULL;
        if (r->rc == BF_OK && json_is_object(r->result)) {
            res = r->result;
            r->result = NULL;
            /* a task may blame itself, never the device */
            const char *fault = json_string_value(json_object_get(res, "fault"));
            if (!fault || strcmp(fault, "task") != 0)
                json_object_del(res, "fault");
        } else if (r->rc == BF_ECANCELED && w->timed_out) {
            char why[64];
            snprintf(why, sizeof why, "timeout after %g s", r->job->timeout_s);
            res = error_doc(why, NULL);
        } else if (r->rc == BF_OK) {
            res = error_doc("the task produced no result", NULL);
        } else {
            res = error_doc(r->err[0] ? r->err : bf_strerror(r->rc), worker_fault(r->rc));
        }
        if (r->rc == BF_ECUDA) {
            bf_warn("CUDA failed: the worker restarts once this result is delivered");
            w->restart = true;
        }
        deliver(w, &task, res, elapsed);
    }
    proto_msg_clear(&task);
    run_free(r);
}

/* The running handler did not return long after it was told to stop: give
   its result up as an error, leave the thread behind and restart. */
static void abandon_task(worker_t *w)
{
    bf_error("task %s: the handler does not stop; restarting the worker", w->held[0].task_id);
    if (!w->aborted) {
        char why[128];
        snprintf(why, sizeof why, "timeout after %g s (the task would not stop)",
                 w->run->job->timeout_s);
        deliver(w, &w->held[0], error_doc(why, NULL), bf_mono_s() - w->started_s);
    }
    pop_held(w, 0);
    w->run = NULL; /* still in the task thread's hands: leaked on purpose */
    w->abandoned = w->restart = true;
}

static void on_pair(worker_t *w)
{
    for (;;) {
        pair_msg_t m;
        int n = zmq_recv(w->pair, &m, sizeof m, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        if (n != (int)sizeof m)
            continue;
        if (m.kind == PAIR_PROGRESS && w->run) {
            m.stage[sizeof m.stage - 1] = '\0';
            bf_strlcpy(w->prog_stage, m.stage, sizeof w->prog_stage);
            w->prog_fraction = m.fraction < 0 ? 0 : (m.fraction > 1 ? 1 : m.fraction);
            w->prog_pending = true;
        } else if (m.kind == PAIR_DONE) {
            if (w->abandoned)
                continue;
            take_over(m.run);
            finish_task(w, m.run);
        }
    }
}

static void flush_progress(worker_t *w, int64_t now)
{
    if (!w->prog_pending || !w->run || now - w->last_progress < PROGRESS_MIN_MS)
        return;
    proto_msg_t m;
    proto_msg_init(&m, PROTO_PROGRESS);
    m.attempt = w->held[0].attempt;
    m.fraction = w->prog_fraction;
    if (proto_msg_set(&m.task_id, w->held[0].task_id) == BF_OK &&
        proto_msg_set(&m.stage, w->prog_stage) == BF_OK && proto_link_send(w->link, &m) == BF_OK) {
        w->prog_pending = false;
        w->last_progress = now;
        bf_strlcpy(w->sent_stage, w->prog_stage, sizeof w->sent_stage);
    }
    proto_msg_clear(&m);
}

/* ---- incoming ---------------------------------------------------------------------- */

static size_t find_held(const worker_t *w, const char *task_id)
{
    for (size_t i = 0; task_id && i < w->nheld; i++)
        if (w->held[i].task_id && !strcmp(w->held[i].task_id, task_id))
            return i;
    return (size_t)-1;
}

static size_t find_unacked(const worker_t *w, const char *task_id)
{
    for (size_t i = 0; task_id && i < w->nunacked; i++)
        if (!strcmp(w->unacked[i].task_id, task_id))
            return i;
    return (size_t)-1;
}

static void on_task(worker_t *w, proto_msg_t *m)
{
    if (!m->task_id || !*m->task_id) {
        bf_warn("TASK without a task id: dropped");
        return;
    }
    if (w->draining) { /* GOODBYE gives it back without costing an attempt */
        bf_info("task %s: not taken, draining", m->task_id);
        return;
    }
    size_t u = find_unacked(w, m->task_id);
    if (u != (size_t)-1) { /* finished already: the result settles it */
        if (proto_link_send_frame(w->link, w->unacked[u].frame, w->unacked[u].size) != BF_OK)
            bf_warn("result %s not re-sent", m->task_id);
        return;
    }
    if (find_held(w, m->task_id) != (size_t)-1)
        return; /* a duplicate of one we hold */
    if (w->nheld == MAX_HELD) {
        bf_warn("task %s: already holding %d tasks: dropped", m->task_id, MAX_HELD);
        return;
    }
    w->held[w->nheld++] = *m;
    memset(m, 0, sizeof *m);
}

static void on_ack(worker_t *w, const proto_msg_t *m)
{
    size_t i = find_unacked(w, m->task_id);
    if (i == (size_t)-1)
        return;
    sent_clear(&w->unacked[i]);
    memmove(&w->unacked[i], &w->unacked[i + 1], (w->nunacked - i - 1) * sizeof *w->unacked);
    w->nunacked--;
}

static void on_abort(worker_t *w, const proto_msg_t *m)
{
    size_t i = find_held(w, m->task_id);
    if (i == (size_t)-1)
        return;
    bf_info("task %s: abort (%s)", m->task_id, m->reason ? m->reason : "");
    if (i == 0 && w->run) {
        w->aborted = true;
        bf_flag_raise(&w->run->cancel); /* the handler stops; finish_task drops its result */
        if (!w->cancel_at)
            w->cancel_at = bf_mono_ms();
    } else {
        pop_held(w, i);
    }
}

static void handle(worker_t *w, proto_msg_t *m)
{
    switch (m->type) {
    case PROTO_TASK:
        on_task(w, m);
        break;
    case PROTO_ACK:
        on_ack(w, m);
        break;
    case PROTO_ABORT:
        on_abort(w, m);
        break;
    case PROTO_ERROR:
        if (m->code == BF_ENOENT && !w->refused) {
            bf_info("the broker does not know this worker (restarted?): registering again");
            send_ready(w);
        } else if (m->code == BF_EPERM && !w->refused) {
            /* Our key's role does not allow a worker: a configuration
               error that retrying cannot fix. */
            bf_error("the broker refused this worker: %.300s; stopping",
                     m->reason ? m->reason : "not allowed");
            w->refused = true;
        } else if (!w->refused) {
            bf_warn("broker error %llu: %.200s", (unsigned long long)m->code,
                    m->reason ? m->reason : "");
        }
        break;
    case PROTO_HEARTBEAT:
        break;
    default:
        bf_debug("ignoring %s from the broker", proto_type_name(m->type));
        break;
    }
    proto_msg_clear(m);
}

static void receive(worker_t *w, int64_t now)
{
    for (int n = 0; n < 256; n++) {
        proto_msg_t m;
        bf_err_t r = proto_link_recv_raw(w->link, &m, now); /* a TASK's spec: see start_task */
        if (r == BF_EIO)
            return;
        if (r == BF_OK) /* a malformed one was dropped and logged */
            handle(w, &m);
    }
}

/* ---- set-up ------------------------------------------------------------------------- */

static void find_device(worker_t *w)
{
    const worker_config_t *cfg = &w->cfg;
    worker_device_cpu(&w->dev);
    if (cfg->cpu || cfg->device_index < 0)
        return;
    if (!getenv("CUDA_VISIBLE_DEVICES")) {
        char idx[16];
        snprintf(idx, sizeof idx, "%d", cfg->device_index);
        setenv("CUDA_VISIBLE_DEVICES", idx, 1);
    }
    worker_device_t devs[16];
    size_t n = 0;
    char err[BF_ERRLEN] = "";
    if (worker_device_probe(devs, BF_ARRAY_LEN(devs), &n, err) != BF_OK)
        bf_warn("%s", err);
    if (n == 0) {
        bf_warn("GPU %d: no usable CUDA device here: running as a CPU worker", cfg->device_index);
        return;
    }
    /* CUDA_VISIBLE_DEVICES normally leaves exactly this GPU */
    size_t pick = n == 1 ? 0 : ((size_t)cfg->device_index < n ? (size_t)cfg->device_index : 0);
    if (devs[pick].unusable[0]) {
        bf_warn("GPU %d (%s) is unusable: %s: running as a CPU worker", cfg->device_index,
                devs[pick].name, devs[pick].unusable);
        return;
    }
    w->dev = devs[pick];
    w->dev.index = cfg->device_index;
}

static json_t *make_caps(const worker_t *w)
{
    json_t *allow = json_array();
    for (size_t i = 0; allow && i < w->cfg.allow_exec_count; i++)
        if (w->cfg.allow_exec[i])
            json_array_append_new(allow, json_string(w->cfg.allow_exec[i]));
    char cc[16] = "";
    if (w->dev.index >= 0)
        snprintf(cc, sizeof cc, "%d.%d", w->dev.cc_major, w->dev.cc_minor);
    if (!allow)
        return NULL;
    return json_pack("{s:s, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:s, s:[s, s], s:o, s:[], s:i}",
                     "host", bf_hostname(), "pid", (int)getpid(), "device_index", w->dev.index,
                     "uuid", w->dev.uuid, "name", w->dev.name, "memory_bytes",
                     (json_int_t)w->dev.memory_bytes, "compute_capability", cc, "backend",
                     w->dev.backend, "version", BF_VERSION, "tasks", "exec", "boresight",
                     "allow_exec", allow, "running", "threads", (int)w->cfg.threads);
}

/* ---- the loop ------------------------------------------------------------------------- */

/* GPU figures every STATS_MS while NVML answers; its first failure ends them. */
static void send_stats(worker_t *w, int64_t now)
{
    w->next_stats = now + STATS_MS;
    worker_gpu_stats_t g;
    char why[BF_ERRLEN] = "";
    if (worker_nvml_sample(w->nvml, &g, why) != BF_OK) {
        bf_warn("%s: no more GPU figures for the broker", why);
        worker_nvml_destroy(&w->nvml);
        return;
    }
    proto_msg_t m;
    proto_msg_init(&m, PROTO_STATS);
    m.obj = worker_gpu_stats_json(&g);
    if (m.obj && proto_link_send(w->link, &m) != BF_OK)
        bf_debug("STATS not sent: %s", zmq_strerror(zmq_errno()));
    proto_msg_clear(&m);
}

static void tick(worker_t *w, int64_t now)
{
    /* the deadline: the handler is told to stop (exec also stops itself) */
    if (w->run && !bf_flag_up(&w->run->cancel) && now >= w->deadline) {
        w->timed_out = true;
        bf_flag_raise(&w->run->cancel);
        w->cancel_at = now;
    }
    /* an exec task on this thread stops itself (its group is killed) */
    if (w->run && !w->inline_run && w->cancel_at && now - w->cancel_at > STUCK_GRACE_MS)
        abandon_task(w);
    if (w->run && !w->start_logged && now >= w->start_log_at) {
        w->start_logged = true;
        bf_info("task %s: %s attempt %llu", w->held[0].task_id, w->held[0].scene,
                (unsigned long long)w->held[0].attempt);
    }
    flush_progress(w, now);
    if (w->nvml && proto_link_socket(w->link) && now >= w->next_stats)
        send_stats(w, now);
    /* heartbeats, and a fresh DEALER after a backoff when the broker is
       silent: on it, what the broker has not acknowledged goes again */
    if (proto_link_tick(w->link, now) == PROTO_LINK_CONNECTED)
        send_ready(w);
}

static void start_drain(worker_t *w, const char *why)
{
    if (w->draining)
        return;
    w->draining = true;
    /* prefetched tasks go back with GOODBYE */
    while (w->nheld > (w->run ? 1u : 0u))
        pop_held(w, w->nheld - 1);
    bf_info("draining (%s): %s", why, w->run ? "finishing the running task" : "no task running");
}

static int loop(worker_t *w)
{
    for (;;) {
        int64_t now = bf_mono_ms();
        if (stop_requested(w))
            start_drain(w, "stop requested");
        if (w->restart)
            start_drain(w, "restart");
        if (w->refused)
            break;
        if (w->draining && !w->run) {
            if (!w->ack_deadline)
                w->ack_deadline = now + DRAIN_ACK_MS;
            if (w->nunacked == 0 || now >= w->ack_deadline)
                break;
        }
        if (!w->run && w->nheld > 0 && !w->draining) {
            start_task(w);
            continue; /* it may have been answered at once */
        }
        void *dealer = proto_link_socket(w->link);
        zmq_pollitem_t items[3] = {{w->pair, 0, ZMQ_POLLIN, 0}};
        int nitems = 1;
        /* readable once a signal asks to stop (and then for good: not
           polled once draining, which the next turn starts) */
        if (!w->cfg.stop && !w->draining && signalled.fd >= 0)
            items[nitems++] = (zmq_pollitem_t){NULL, signalled.fd, ZMQ_POLLIN, 0};
        if (dealer)
            items[nitems++] = (zmq_pollitem_t){dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, nitems, tick_ms(w)) < 0 && zmq_errno() != EINTR) {
            bf_error("zmq_poll: %s", zmq_strerror(zmq_errno()));
            return 1;
        }
        now = bf_mono_ms();
        on_pair(w);
        receive(w, now);
        tick(w, now);
    }
    void *dealer = proto_link_socket(w->link);
    if (dealer) {
        proto_msg_t bye;
        proto_msg_init(&bye, PROTO_GOODBYE);
        int linger = 1000; /* let the goodbye leave before the socket closes */
        zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
        if (proto_link_send(w->link, &bye) != BF_OK)
            bf_warn("goodbye not sent");
    }
    if (w->nunacked)
        bf_warn("leaving with %zu results the broker has not acknowledged", w->nunacked);
    bf_info("worker %s: goodbye", w->name);
    if (w->refused)
        return WORKER_EXIT_REFUSED;
    return w->restart ? WORKER_EXIT_RESTART : 0;
}

int worker_main(const worker_config_t *cfg)
{
    if (!cfg || !cfg->broker || !*cfg->broker) {
        bf_error("worker: no broker endpoint");
        return 1;
    }
    worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return 1;
    w->cfg = *cfg;
    w->hb = cfg->heartbeat_ms ? cfg->heartbeat_ms : 1000;
    w->live = cfg->liveness ? cfg->liveness : 3;
    w->prefetch = cfg->prefetch ? cfg->prefetch : 1;
    w->credit = w->prefetch;
    w->hold_ms = cfg->hold_ms == 0 ? HOLD_MS : cfg->hold_ms;
    /* A worker runs batch work: it and its tasks (which inherit the policy)
       run as SCHED_BATCH, so that a thread of the fleet woken by a message,
       or a task's process woken by its pipe, waits for the next tick instead
       of preempting the task running on that core (7 % less time end to
       end with 2,000 short exec tasks on 2 cores, docs/benchmarks.md). Set
       first, on the thread every other one of the worker's (libzmq's, the
       task thread) is started from: a policy is a thread's, and is
       inherited by the threads and processes it starts. */
    if (!cfg->sched_inherit)
        bf_sched_batch("the worker and its tasks");
    if (!cfg->stop) {
        if (signalled.fd < 0)
            bf_wake_init(&signalled); /* once a process: a restarted loop keeps it */
        struct sigaction sa = {.sa_handler = on_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
    }
    find_device(w);
    if (w->dev.index >= 0) {
        char why[BF_ERRLEN] = "";
        if (!(w->nvml = worker_nvml_new(w->dev.uuid, why)))
            bf_info("no GPU figures for the broker: %s", why);
    }
    worker_name(w->name, sizeof w->name, cfg->name, (long)getpid(), w->dev.index);
    int rc = 1;
    char inproc[64];
    snprintf(inproc, sizeof inproc, "inproc://worker-%p", (void *)w);
    w->caps = make_caps(w);
    w->zctx = zmq_ctx_new();
    if (w->zctx) {
        w->pair = zmq_socket(w->zctx, ZMQ_PAIR);
        w->pair_task = zmq_socket(w->zctx, ZMQ_PAIR);
    }
    if (!w->caps || !w->pair || !w->pair_task || zmq_bind(w->pair, inproc) != 0 ||
        zmq_connect(w->pair_task, inproc) != 0) {
        bf_error("worker: cannot start: %s", w->caps ? zmq_strerror(zmq_errno()) : "no memory");
        goto done;
    }
    if (pthread_create(&w->thread, NULL, task_main, w) != 0) {
        bf_error("worker: cannot start the task thread");
        goto done;
    }
    w->thread_ok = true;
    /* the first connection: a bad endpoint or bad keys stop the worker here */
    char why[BF_ERRLEN];
    if (!(w->link = proto_link_new(w->zctx, cfg->broker, cfg->security, w->hb, w->live, why)) ||
        proto_link_connect(w->link, why) != BF_OK) {
        bf_error("%s", why);
        goto done;
    }
    send_ready(w);
    bf_info("worker %s on %s (%s), broker %s", w->name, w->dev.name, w->dev.backend, cfg->broker);
    rc = loop(w);
    if (!cfg->stop) {
        teardown_rc = rc;
        struct sigaction sa = {.sa_handler = on_teardown_alarm};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGALRM, &sa, NULL);
        alarm(TEARDOWN_S);
    }
done:
    if (w->abandoned) {
        /* a handler still runs on the task thread; its sockets keep the
           context alive, so leave everything to the process's exit */
        proto_link_disconnect(w->link);
        return rc;
    }
    if (w->thread_ok) {
        if (w->run)
            bf_flag_raise(&w->run->cancel);
        pair_msg_t quit = {.kind = PAIR_QUIT};
        /* a run in progress ends (cancelled) before the thread reads QUIT */
        teardown_at("the task thread's join");
        zmq_send(w->pair, &quit, sizeof quit, 0);
        pthread_join(w->thread, NULL);
    }
    run_free(w->run);
    for (size_t i = 0; i < w->nheld; i++)
        proto_msg_clear(&w->held[i]);
    for (size_t i = 0; i < w->nunacked; i++)
        sent_clear(&w->unacked[i]);
    free(w->unacked);
    bf_job_clear(&w->job);
    free(w->job_spec);
    json_decref(w->caps);
    teardown_at("NVML's shutdown");
    worker_nvml_destroy(&w->nvml);
    teardown_at("the link's close");
    proto_link_destroy(&w->link);
    if (w->pair)
        zmq_close(w->pair);
    if (w->pair_task)
        zmq_close(w->pair_task);
    teardown_at("zmq_ctx_term");
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    free(w);
    teardown_at("the process's exit"); /* atexit handlers: CUDA's, NVML's */
    return rc;
}
