/*  worker/worker.c - one worker process. The main thread owns the DEALER to
    the broker: it registers (READY with credit and capabilities), keeps
    heartbeats flowing, takes TASKs into a local queue, hands them one at a
    time to the task thread, sends PROGRESS and RESULT, and keeps every
    result until the broker's ACK (re-sending after a reconnect). The task
    thread only runs handlers; it tells the main thread it finished through
    an inproc PAIR socket, so the loop never blocks on a task. */

#include "worker.h"
#include "worker_task.h"

#include "../common/bf_config.h"
#include "../kernels/kern.h"
#include "../proto/proto.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_HELD 1024

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

typedef struct {
    proto_msg_t task; /* the TASK as received */
} held_t;

typedef struct {
    const worker_config_t *cfg;
    char name[256];
    void *ctx, *dealer, *pair_main, *pair_task;
    json_t *caps;
    /* tasks held: [0] may be running */
    held_t held[MAX_HELD];
    size_t nheld;
    bool running;
    /* results sent and not yet acknowledged */
    proto_msg_t *unacked;
    size_t nunacked, capunacked;
    int64_t last_recv, last_send, reconnect_at;
    unsigned backoff_ms;
    /* shared with the task thread */
    pthread_mutex_t mu;
    pthread_t thread;
    bool thread_started;
    volatile int cancel;
    bool aborted;
    char stage[32];
    double fraction;
    bool progress_dirty;
    int64_t last_progress;
    /* the task thread's inputs and output */
    bf_job_t job;
    char *scene_dir;
    int64_t deadline;
    double started;
    json_t *result;
    bf_err_t rc;
    char err[BF_ERRLEN];
    int gpu_id;
    char device[128];
} worker_t;

/* ---- messages ------------------------------------------------------------ */

static bf_err_t send_msg(worker_t *w, const proto_msg_t *m)
{
    bf_err_t rc = proto_send(w->dealer, NULL, 0, m, ZMQ_DONTWAIT);
    if (rc == BF_OK)
        w->last_send = bf_mono_ms();
    return rc;
}

static void send_ready(worker_t *w)
{
    json_t *running = json_array();
    for (size_t i = 0; i < w->nheld; i++)
        json_array_append_new(running, json_string(w->held[i].task.task_id));
    json_object_set_new(w->caps, "running", running);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_READY);
    m.credit = w->cfg->prefetch ? w->cfg->prefetch : 1;
    if (proto_msg_set(&m.worker, w->name) == BF_OK) {
        m.obj = json_incref(w->caps);
        if (send_msg(w, &m) != BF_OK)
            bf_warn("READY not sent: %s", zmq_strerror(zmq_errno()));
    }
    proto_msg_clear(&m);
    /* what the broker has not acknowledged goes again */
    for (size_t i = 0; i < w->nunacked; i++)
        if (send_msg(w, &w->unacked[i]) != BF_OK)
            bf_warn("result not re-sent: %s", zmq_strerror(zmq_errno()));
}

static bf_err_t connect_broker(worker_t *w)
{
    if (w->dealer)
        zmq_close(w->dealer);
    w->dealer = zmq_socket(w->ctx, ZMQ_DEALER);
    if (!w->dealer)
        return BF_EIO;
    char id[33];
    bf_uuid(id);
    int zero = 0;
    zmq_setsockopt(w->dealer, ZMQ_ROUTING_ID, id, 32);
    zmq_setsockopt(w->dealer, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(w->dealer, w->cfg->broker) != 0) {
        bf_error("--broker %s: %s", w->cfg->broker, zmq_strerror(zmq_errno()));
        return BF_EINVAL;
    }
    w->last_recv = bf_mono_ms();
    send_ready(w);
    return BF_OK;
}

/* ---- the task thread ------------------------------------------------------ */

static void on_progress(void *ud, const char *stage, double fraction)
{
    worker_t *w = ud;
    pthread_mutex_lock(&w->mu);
    bf_strlcpy(w->stage, stage, sizeof w->stage);
    w->fraction = fraction;
    w->progress_dirty = true;
    pthread_mutex_unlock(&w->mu);
}

static void *task_thread(void *arg)
{
    worker_t *w = arg;
    const proto_msg_t *t = &w->held[0].task;
    worker_task_ctx_t ctx = {
        .scene_dir = w->scene_dir,
        .scene = t->scene,
        .job = &w->job,
        .deadline_ms = w->deadline,
        .cancel = &w->cancel,
        .gpu_id = w->gpu_id,
        .cpu = w->cfg->cpu,
        .threads = w->cfg->threads,
        .allow_exec = w->cfg->allow_exec,
        .allow_exec_count = w->cfg->allow_exec_count,
        .progress = on_progress,
        .ud = w,
    };
    worker_handler_fn handler = w->job.task == BF_TASK_EXEC ? worker_exec : worker_boresight;
    w->err[0] = '\0';
    w->result = NULL;
    w->rc = handler(&ctx, &w->result, w->err);
    zmq_send(w->pair_task, "", 0, 0); /* wake the main thread */
    return NULL;
}

/* Starts the first held task, or answers it at once when it cannot run. */
static void start_task(worker_t *w)
{
    proto_msg_t *t = &w->held[0].task;
    char err[BF_ERRLEN] = "";
    bf_job_clear(&w->job);
    free(w->scene_dir);
    w->scene_dir = NULL;
    w->cancel = 0;
    w->aborted = false;
    w->started = bf_mono_s();
    w->stage[0] = '\0';
    w->rc = BF_OK;
    w->result = NULL;
    /* The job spec and the scene name come from the network: checked. */
    if (!t->obj || bf_job_from_json(t->obj, &w->job, err) != BF_OK) {
        w->rc = bf_fail(w->err, BF_EPROTO, "bad job spec: %s", err);
    } else if (!w->job.scenes_root) {
        w->rc = bf_fail(w->err, BF_EPROTO, "bad job spec: no scenes_root");
    } else if (!bf_safe_name(t->scene)) {
        w->rc = bf_fail(w->err, BF_EPERM, "scene name '%.64s' would leave the scene root",
                        t->scene ? t->scene : "");
    } else if (!(w->scene_dir = bf_asprintf("%s/%s", w->job.scenes_root, t->scene))) {
        w->rc = BF_ENOMEM;
    }
    w->running = true;
    if (w->rc != BF_OK) {
        zmq_send(w->pair_task, "", 0, 0);
        return;
    }
    uint64_t timeout = t->timeout_ms ? t->timeout_ms : (uint64_t)(w->job.timeout_s * 1000);
    w->deadline = bf_mono_ms() + (int64_t)timeout;
    if (pthread_create(&w->thread, NULL, task_thread, w) != 0) {
        w->rc = bf_fail(w->err, BF_ENOMEM, "cannot start the task thread");
        zmq_send(w->pair_task, "", 0, 0);
        return;
    }
    w->thread_started = true;
    bf_info("task %s: %s attempt %llu", t->task_id, t->scene, (unsigned long long)t->attempt);
}

/* The running task finished: build and send its result, keep it until ACK. */
static void finish_task(worker_t *w)
{
    char buf[1];
    while (zmq_recv(w->pair_main, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
        ;
    if (w->thread_started) {
        pthread_join(w->thread, NULL);
        w->thread_started = false;
    }
    w->running = false;
    proto_msg_t task = w->held[0].task;
    memmove(&w->held[0], &w->held[1], (w->nheld - 1) * sizeof w->held[0]);
    w->nheld--;
    if (w->aborted) { /* the broker no longer wants it */
        json_decref(w->result);
        proto_msg_clear(&task);
        return;
    }
    json_t *res = w->result;
    if (w->rc != BF_OK || !res) {
        json_decref(res);
        res = json_pack("{s:s, s:s}", "status", "error", "reason",
                        w->err[0] ? w->err : bf_strerror(w->rc));
        if (w->rc == BF_ECANCELED && bf_mono_ms() >= w->deadline)
            json_object_set_new(res, "reason",
                                json_sprintf("timeout after %.0f s", w->job.timeout_s));
    }
    double elapsed = bf_mono_s() - w->started;
    json_object_set_new(res, "scene", json_string(task.scene ? task.scene : ""));
    json_object_set_new(res, "task_id", json_string(task.task_id));
    json_object_set_new(res, "job_id", json_string(task.job_id));
    json_object_set_new(res, "attempt", json_integer((json_int_t)task.attempt));
    json_object_set_new(res, "host", json_string(bf_hostname()));
    json_object_set_new(res, "worker", json_string(w->name));
    json_object_set_new(res, "gpu_id", json_integer(w->gpu_id));
    json_object_set_new(res, "device", json_string(w->device));
    json_object_set_new(res, "backend", json_string(w->cfg->cpu ? "cpu" : "cuda"));
    if (!json_is_number(json_object_get(res, "elapsed_time")))
        json_object_set_new(res, "elapsed_time", json_real(elapsed));
    if (!json_is_string(json_object_get(res, "reason")))
        json_object_set_new(res, "reason", json_string(""));
    if (w->nunacked == w->capunacked) {
        size_t cap = w->capunacked ? 2 * w->capunacked : 8;
        proto_msg_t *p = realloc(w->unacked, cap * sizeof *p);
        if (p) {
            w->unacked = p;
            w->capunacked = cap;
        }
    }
    const char *status = json_string_value(json_object_get(res, "status"));
    bf_info("task %s: %s %s in %.1f s%s%s", task.task_id, task.scene, status ? status : "?",
            elapsed, status && strcmp(status, "success") ? ": " : "",
            status && strcmp(status, "success") ? json_string_value(json_object_get(res, "reason"))
                                                : "");
    if (w->nunacked < w->capunacked) {
        proto_msg_t *m = &w->unacked[w->nunacked++];
        proto_msg_init(m, PROTO_RESULT);
        m->task_id = task.task_id;
        task.task_id = NULL;
        m->attempt = task.attempt;
        m->obj = res;
        if (send_msg(w, m) != BF_OK)
            bf_warn("result not sent now (%s); it goes again after reconnecting",
                    zmq_strerror(zmq_errno()));
    } else {
        json_decref(res);
    }
    proto_msg_clear(&task);
}

/* ---- incoming ---------------------------------------------------------------- */

static void on_ack(worker_t *w, const proto_msg_t *m)
{
    for (size_t i = 0; i < w->nunacked; i++)
        if (m->task_id && w->unacked[i].task_id && !strcmp(w->unacked[i].task_id, m->task_id)) {
            proto_msg_clear(&w->unacked[i]);
            memmove(&w->unacked[i], &w->unacked[i + 1], (w->nunacked - i - 1) * sizeof *w->unacked);
            w->nunacked--;
            return;
        }
}

static void on_abort(worker_t *w, const proto_msg_t *m)
{
    for (size_t i = 0; i < w->nheld; i++) {
        if (!m->task_id || strcmp(w->held[i].task.task_id, m->task_id) != 0)
            continue;
        if (i == 0 && w->running) {
            w->aborted = true;
            w->cancel = 1; /* the handler stops; finish_task drops the result */
        } else {
            proto_msg_clear(&w->held[i].task);
            memmove(&w->held[i], &w->held[i + 1], (w->nheld - i - 1) * sizeof w->held[0]);
            w->nheld--;
        }
        bf_info("task %s aborted: %s", m->task_id, m->reason ? m->reason : "");
        return;
    }
}

static void handle(worker_t *w, proto_msg_t *m, bool draining)
{
    switch (m->type) {
    case PROTO_TASK:
        if (draining || w->nheld == MAX_HELD || !m->task_id) {
            /* GOODBYE returns it without costing an attempt */
            proto_msg_clear(m);
            return;
        }
        w->held[w->nheld++].task = *m;
        memset(m, 0, sizeof *m);
        return;
    case PROTO_ACK:
        on_ack(w, m);
        break;
    case PROTO_ABORT:
        on_abort(w, m);
        break;
    case PROTO_ERROR:
        if (m->code == BF_ENOENT) {
            bf_info("the broker does not know us (restarted?): registering again");
            send_ready(w);
        } else {
            bf_warn("broker error: %s", m->reason ? m->reason : "?");
        }
        break;
    default:
        break;
    }
    proto_msg_clear(m);
}

/* ---- the loop ------------------------------------------------------------------ */

static void describe_device(worker_t *w)
{
    const worker_config_t *cfg = w->cfg;
    w->gpu_id = cfg->cpu ? -1 : cfg->device_index;
    kern_device_t dev;
    memset(&dev, 0, sizeof dev);
    bool gpu = !cfg->cpu && kern_cuda_devices(&dev, 1) == 1;
    if (!gpu) {
        bf_strlcpy(w->device, "cpu", sizeof w->device);
        FILE *f = fopen("/proc/cpuinfo", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                char *v = strchr(line, ':') + 2;
                v[strcspn(v, "\n")] = '\0';
                bf_strlcpy(w->device, v, sizeof w->device);
                break;
            }
        if (f)
            fclose(f);
        struct sysinfo si;
        if (sysinfo(&si) == 0)
            dev.memory_bytes = (uint64_t)si.totalram * si.mem_unit;
    } else {
        bf_strlcpy(w->device, dev.name, sizeof w->device);
    }
    json_t *allow = json_array();
    for (size_t i = 0; i < cfg->allow_exec_count; i++)
        json_array_append_new(allow, json_string(cfg->allow_exec[i]));
    char cc[16] = "";
    if (gpu)
        snprintf(cc, sizeof cc, "%d.%d", dev.cc_major, dev.cc_minor);
    w->caps =
        json_pack("{s:s, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:s, s:[s, s], s:o, s:i}", "host",
                  bf_hostname(), "pid", (int)getpid(), "device_index", w->gpu_id, "uuid", dev.uuid,
                  "name", w->device, "memory_bytes", (json_int_t)dev.memory_bytes,
                  "compute_capability", cc, "backend", gpu ? "cuda" : "cpu", "version", BF_VERSION,
                  "tasks", "exec", "boresight", "allow_exec", allow, "threads", (int)cfg->threads);
}

int worker_main(const worker_config_t *cfg)
{
    worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return 1;
    w->cfg = cfg;
    pthread_mutex_init(&w->mu, NULL);
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    describe_device(w);
    if (cfg->name)
        snprintf(w->name, sizeof w->name, "%s:%d:%s", cfg->name, (int)getpid(),
                 w->gpu_id >= 0 ? "gpu" : "cpu");
    else
        snprintf(w->name, sizeof w->name, "%s:%d:%s%d", bf_hostname(), (int)getpid(),
                 w->gpu_id >= 0 ? "gpu" : "cpu", w->gpu_id >= 0 ? w->gpu_id : 0);
    unsigned hb = cfg->heartbeat_ms ? cfg->heartbeat_ms : 1000;
    unsigned live = cfg->liveness ? cfg->liveness : 3;
    int rc = 0;
    w->ctx = zmq_ctx_new();
    w->pair_main = zmq_socket(w->ctx, ZMQ_PAIR);
    w->pair_task = zmq_socket(w->ctx, ZMQ_PAIR);
    char inproc[64];
    snprintf(inproc, sizeof inproc, "inproc://worker-%p", (void *)w);
    if (!w->caps || !w->pair_main || !w->pair_task || zmq_bind(w->pair_main, inproc) != 0 ||
        zmq_connect(w->pair_task, inproc) != 0 || connect_broker(w) != BF_OK) {
        bf_error("worker: cannot start");
        rc = 1;
        goto done;
    }
    bf_info("worker %s on %s (%s), broker %s", w->name, w->device, cfg->cpu ? "cpu" : "cuda",
            cfg->broker);
    int64_t drain_deadline = 0;
    while (true) {
        int64_t now = bf_mono_ms();
        bool draining = stop_requested;
        if (draining && !drain_deadline) {
            drain_deadline = now + 10000 + (w->running ? (w->deadline - now) : 0);
            bf_info("draining: %s", w->running ? "finishing the running task" : "no task running");
        }
        /* done draining: nothing running, every result acknowledged (or the
           broker is not answering in time) */
        if (draining && !w->running && (w->nunacked == 0 || now > drain_deadline))
            break;
        if (!w->running && w->nheld > 0 && !draining)
            start_task(w);
        zmq_pollitem_t items[2] = {{w->dealer, 0, ZMQ_POLLIN, 0}, {w->pair_main, 0, ZMQ_POLLIN, 0}};
        long timeout = (long)hb / 4;
        if (zmq_poll(items, 2, timeout) < 0 && zmq_errno() != EINTR)
            break;
        now = bf_mono_ms();
        if (items[1].revents & ZMQ_POLLIN)
            finish_task(w);
        for (int n = 0; n < 256; n++) {
            proto_msg_t m;
            char why[BF_ERRLEN];
            bf_err_t r = proto_recv(w->dealer, NULL, NULL, &m, ZMQ_DONTWAIT, why);
            if (r == BF_EIO)
                break;
            w->last_recv = now;
            w->backoff_ms = 0;
            if (r != BF_OK) {
                bf_warn("dropping a malformed message: %s", why);
                continue;
            }
            handle(w, &m, draining);
        }
        if (w->running && !w->cancel && now >= w->deadline)
            w->cancel = 1; /* boresight: stop; exec enforces its own deadline too */
        pthread_mutex_lock(&w->mu);
        bool dirty = w->progress_dirty && now - w->last_progress >= 250;
        proto_msg_t pm;
        proto_msg_init(&pm, PROTO_PROGRESS);
        if (dirty && w->running && w->nheld) {
            w->progress_dirty = false;
            w->last_progress = now;
            pm.attempt = w->held[0].task.attempt;
            pm.fraction = w->fraction;
            if (proto_msg_set(&pm.task_id, w->held[0].task.task_id) != BF_OK ||
                proto_msg_set(&pm.stage, w->stage) != BF_OK)
                dirty = false;
        }
        pthread_mutex_unlock(&w->mu);
        if (dirty && w->running && send_msg(w, &pm) != BF_OK)
            bf_debug("progress not sent");
        proto_msg_clear(&pm);
        if (now - w->last_send >= (int64_t)hb) {
            proto_msg_t beat;
            proto_msg_init(&beat, PROTO_HEARTBEAT);
            if (send_msg(w, &beat) != BF_OK)
                w->last_send = now;
        }
        if (now - w->last_recv > (int64_t)hb * live) {
            if (!w->reconnect_at) {
                w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : 250;
                if (w->backoff_ms > 5000)
                    w->backoff_ms = 5000;
                char jit[33];
                bf_uuid(jit);
                w->reconnect_at = now + w->backoff_ms / 2 +
                                  (int64_t)(strtoul(jit + 24, NULL, 16) % (w->backoff_ms / 2 + 1));
                bf_warn("broker silent for %lld ms: reconnecting in %lld ms",
                        (long long)(now - w->last_recv), (long long)(w->reconnect_at - now));
            } else if (now >= w->reconnect_at) {
                w->reconnect_at = 0;
                if (connect_broker(w) != BF_OK)
                    bf_warn("reconnect failed");
            }
        } else {
            w->reconnect_at = 0;
        }
    }
    {
        proto_msg_t bye;
        proto_msg_init(&bye, PROTO_GOODBYE);
        int linger = 1000; /* let the goodbye leave before the socket closes */
        zmq_setsockopt(w->dealer, ZMQ_LINGER, &linger, sizeof linger);
        if (send_msg(w, &bye) != BF_OK)
            bf_warn("goodbye not sent");
        bf_info("worker %s: goodbye", w->name);
    }
done:
    if (w->thread_started) {
        w->cancel = 1;
        pthread_join(w->thread, NULL);
        json_decref(w->result);
    }
    for (size_t i = 0; i < w->nheld; i++)
        proto_msg_clear(&w->held[i].task);
    for (size_t i = 0; i < w->nunacked; i++)
        proto_msg_clear(&w->unacked[i]);
    free(w->unacked);
    bf_job_clear(&w->job);
    free(w->scene_dir);
    json_decref(w->caps);
    if (w->dealer)
        zmq_close(w->dealer);
    if (w->pair_main)
        zmq_close(w->pair_main);
    if (w->pair_task)
        zmq_close(w->pair_task);
    if (w->ctx)
        zmq_ctx_term(w->ctx);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return rc;
}
