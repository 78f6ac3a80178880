/*  bench/loadgen.c - the broker at scale (DESIGN section 7, "broker scale":
    1,000 workers and 1,000,000 queued tasks, bounded memory).

    One process plays N workers (default 1000): N DEALER sockets in one
    ZeroMQ context (ZMQ_MAX_SOCKETS raised, RLIMIT_NOFILE raised to the hard
    limit), each speaking the real protocol through proto/proto.h: READY with
    a worker's capabilities, heartbeats, and a RESULT for every TASK, at once
    or after --delay-ms. A client submits M tasks (default 1,000,000) as one
    job, or as a few jobs when one job document would not fit in
    PROTO_MAX_FRAME. The broker (`beamfleet broker`, fresh state directory,
    started with the soft RLIMIT_NOFILE at 1024 so that it must raise its own)
    and the collector (`beamfleet collector`, reports in the same temporary
    directory; or this process acking every delivery with --collector self)
    are the real programs.

    Order: broker and collector up -> broker RSS idle -> SUBMIT all tasks ->
    RSS with M queued (memory per queued task = delta / M) -> N workers
    connect -> dispatch until every task is final and the collector has
    acknowledged everything (RSS sampled every 200 ms) -> RSS at the end ->
    RSS again after --settle-s idle seconds with the workers still connected.

    Dispatch latency: for every TASK, the time from the moment its worker
    sent the RESULT that gave back the credit this TASK uses to the moment
    the TASK arrived (one monotonic clock, tasks queued all along). It
    includes the broker's durable commit of that RESULT. A worker's first
    TASKs (on the credit of its READY, or in a later round the SUBMIT to idle
    workers) are the fan-out, reported apart: their clock starts at READY or
    at SUBMIT.

    usage: bench_loadgen BEAMFLEET_BIN [--workers N] [--tasks M] [--credit C]
                         [--delay-ms D] [--collector real|self] [--settle-s S]
                         [--rounds R] [--retain-s S] [--keep]

    --rounds R repeats submit -> dispatch -> settle R times on the same broker
    and workers (later rounds submit to idle workers): whether the broker's
    memory returns after a job, or grows with every task ever submitted;
    --retain-s S is passed to the broker (finished jobs are forgotten S s
    after they end; default 3600, so set it below --settle-s to see it). */

#include "../common/bf.h"
#include "../common/bf_config.h"
#include "../proto/proto_link.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define HEARTBEAT_MS 1000 /* the broker's default */
#define STATUS_MS    1000 /* how often the client asks for status */
#define RSS_MS       200  /* how often the broker's memory is sampled */

typedef struct {
    void *sock;
    char name[48];
    int64_t last_send;
    double *offers; /* ring: times credits were offered and not yet used */
    unsigned off_head, off_len;
    bool registered;
    unsigned first_left; /* TASKs still to come on the credit of READY or SUBMIT */
} lworker_t;

typedef struct {
    uint32_t worker;
    uint64_t attempt;
    double due;
    char *task_id, *scene;
} pending_t;

typedef struct {
    /* options */
    const char *bin;
    unsigned nworkers, credit, delay_ms, settle_s, rounds, round;
    uint64_t ntasks;
    bool self_collector, keep;
    /* fleet */
    char dir[64], endpoint[128];
    pid_t broker, collector;
    void *ctx;
    lworker_t *w;
    void *client, *coll;
    int64_t coll_last_send;
    /* jobs */
    char (*job_ids)[16];
    unsigned njobs;
    /* delayed results: a FIFO, due times are increasing */
    pending_t *pend;
    size_t pend_cap, pend_head, pend_len;
    /* figures */
    float *lat;
    size_t nlat, caplat;
    float *first; /* the same for each worker's first TASKs: the fan-out */
    size_t nfirst, capfirst;
    uint64_t tasks_recv, results_sent, retries, aborts, errors_recv, delivered;
    double t_first_task, t_last_result;
    long rss_peak_kb;
} lg_t;

/* ---- helpers ------------------------------------------------------------ */

static long proc_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Open descriptors of pid, and its soft RLIMIT_NOFILE from /proc. */
static void proc_files(pid_t pid, long *open_now, long *soft)
{
    char path[64], line[256];
    *open_now = *soft = -1;
    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Max open files", 14))
            *soft = strtol(line + 14, NULL, 10);
    if (f)
        fclose(f);
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    *open_now = n;
}

static double mib(long kb)
{
    return (double)kb / 1024.0;
}

/* Starts BIN ARGS with its output in log, in its own process group; for the
   broker the soft RLIMIT_NOFILE is put back to 1024 (a common default), so
   that 1000 peers fit only if the broker raises it itself. */
static pid_t spawn(char *const argv[], const char *log, bool low_nofile)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        if (!f || dup2(fileno(stderr), STDOUT_FILENO) < 0)
            _exit(127);
        setpgid(0, 0);
        if (low_nofile) {
            struct rlimit rl;
            if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max > 1024) {
                rl.rlim_cur = 1024;
                if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                    _exit(127);
            }
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void stop_child(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static bool child_alive(pid_t pid)
{
    return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

static void *dealer(void *ctx, const char *endpoint)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s)
        return NULL;
    int linger = 0, hwm = 0;
    uint8_t id[16];
    for (size_t i = 0; i < sizeof id; i++)
        id[i] = (uint8_t)(rand() & 0xff);
    id[0] |= 1; /* a routing id must not start with 0 */
    if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s, ZMQ_ROUTING_ID, id, sizeof id) != 0 || zmq_connect(s, endpoint) != 0) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

static bool send_msg(void *s, const proto_msg_t *m)
{
    if (proto_send(s, NULL, 0, m, 0) == BF_OK)
        return true;
    bf_warn("loadgen: send %s failed: %s", proto_type_name(m->type), zmq_strerror(zmq_errno()));
    return false;
}

/* One request, one reply, on a fresh client socket (setup phases only). */
static bool request(lg_t *g, proto_msg_t *q, proto_msg_t *r, int timeout_ms)
{
    void *s = dealer(g->ctx, g->endpoint);
    bool ok = false;
    if (s && send_msg(s, q)) {
        zmq_pollitem_t item = {s, 0, ZMQ_POLLIN, 0};
        ok = zmq_poll(&item, 1, timeout_ms) > 0 && proto_recv(s, NULL, NULL, r, 0, NULL) == BF_OK;
    }
    if (s)
        zmq_close(s);
    return ok;
}

static json_t *status_doc(lg_t *g, int timeout_ms)
{
    proto_msg_t q, r;
    proto_msg_init(&q, PROTO_STATUS);
    q.seq = UINT64_MAX; /* counters only, no events */
    json_t *doc = NULL;
    if (request(g, &q, &r, timeout_ms)) {
        if (r.type == PROTO_STATUS_REPLY)
            doc = json_incref(r.obj);
        proto_msg_clear(&r);
    }
    proto_msg_clear(&q);
    return doc;
}

/* ---- submit ------------------------------------------------------------- */

/* Scene names: base 36, as short as they can be (4 characters for a
   million), so that a million fit in one 8 MiB SUBMIT. */
static char *scene_name(uint64_t i)
{
    char buf[16];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36];
        i /= 36;
    } while (i);
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    for (int k = 0; k < n; k++)
        s[k] = buf[n - 1 - k];
    s[n] = '\0';
    return s;
}

static json_t *job_doc(lg_t *g, unsigned k, uint64_t first, uint64_t count)
{
    bf_job_t job;
    bf_job_defaults(&job);
    job.name = bf_asprintf("loadgen-r%u-%u", g->round, k);
    job.scenes_root = bf_strdup(g->dir);
    job.output = bf_asprintf("%s/out-r%u-%u", g->dir, g->round, k);
    job.task = BF_TASK_EXEC;
    job.exec_command = calloc(3, sizeof(char *));
    job.scenes = calloc(count ? count : 1, sizeof(char *));
    json_t *doc = NULL;
    if (!job.name || !job.scenes_root || !job.output || !job.exec_command || !job.scenes)
        goto done;
    job.exec_command[0] = bf_strdup("/bin/true");
    job.exec_command[1] = bf_strdup("{scene_dir}");
    job.exec_argc = 2;
    for (uint64_t i = 0; i < count; i++) {
        if (!(job.scenes[i] = scene_name(first + i)))
            goto done;
        job.scene_count = (size_t)i + 1;
    }
    doc = bf_job_to_json(&job, true);
done:
    bf_job_clear(&job);
    return doc;
}

/* Submits ntasks in as few jobs as fit in a frame each. */
static bool submit_all(lg_t *g, double *seconds, size_t *bytes)
{
    for (unsigned njobs = 1; njobs <= 64; njobs *= 2) {
        uint64_t per = (g->ntasks + njobs - 1) / njobs;
        bool fits = true;
        *bytes = 0;
        uint8_t **frames = calloc(njobs, sizeof *frames);
        size_t *sizes = calloc(njobs, sizeof *sizes);
        if (!frames || !sizes) {
            free(frames);
            free(sizes);
            return false;
        }
        for (unsigned k = 0; k < njobs && fits; k++) {
            uint64_t first = k * per, count = first + per > g->ntasks ? g->ntasks - first : per;
            proto_msg_t q;
            proto_msg_init(&q, PROTO_SUBMIT);
            q.obj = job_doc(g, k, first, count);
            fits = q.obj && proto_encode(&q, &frames[k], &sizes[k]) == BF_OK;
            *bytes += sizes[k];
            proto_msg_clear(&q);
        }
        if (!fits) {
            for (unsigned k = 0; k < njobs; k++)
                free(frames[k]);
            free(frames);
            free(sizes);
            printf("# %llu tasks do not fit in %u job(s) of %u bytes at most; splitting\n",
                   (unsigned long long)g->ntasks, njobs, PROTO_MAX_FRAME);
            continue;
        }
        g->job_ids = calloc(njobs, sizeof *g->job_ids);
        g->njobs = njobs;
        bool ok = g->job_ids != NULL;
        double t0 = bf_mono_s();
        for (unsigned k = 0; k < njobs && ok; k++) {
            void *s = dealer(g->ctx, g->endpoint);
            proto_msg_t r;
            ok = s && zmq_send(s, frames[k], sizes[k], 0) == (int)sizes[k];
            if (ok) {
                zmq_pollitem_t item = {s, 0, ZMQ_POLLIN, 0};
                ok = zmq_poll(&item, 1, 600000) > 0 &&
                     proto_recv(s, NULL, NULL, &r, 0, NULL) == BF_OK;
                if (ok) {
                    ok = r.type == PROTO_SUBMITTED;
                    if (ok)
                        bf_strlcpy(g->job_ids[k], r.job_id, sizeof g->job_ids[k]);
                    else
                        fprintf(stderr, "loadgen: submit refused: %s\n",
                                r.reason ? r.reason : proto_type_name(r.type));
                    proto_msg_clear(&r);
                }
            }
            if (s)
                zmq_close(s);
        }
        *seconds = bf_mono_s() - t0;
        for (unsigned k = 0; k < njobs; k++)
            free(frames[k]);
        free(frames);
        free(sizes);
        return ok;
    }
    return false;
}

/* ---- the workers -------------------------------------------------------- */

static void offer(lg_t *g, lworker_t *w, double t)
{
    if (w->off_len == g->credit) /* more credit than it holds: keep the newest */
        w->off_head = (w->off_head + 1) % g->credit, w->off_len--;
    w->offers[(w->off_head + w->off_len) % g->credit] = t;
    w->off_len++;
}

static bool send_ready(lg_t *g, lworker_t *w)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_READY);
    bool ok = proto_msg_set(&m.worker, w->name) == BF_OK;
    m.credit = g->credit;
    m.obj = json_pack("{s:s, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:s, s:[s], s:[], s:i, s:[]}",
                      "host", bf_hostname(), "pid", (int)getpid(), "device_index", -1, "uuid", "",
                      "name", "loadgen", "memory_bytes", (json_int_t)1 << 34, "compute_capability",
                      "", "backend", "cpu", "version", BF_VERSION, "tasks", "exec", "allow_exec",
                      "threads", 1, "running");
    ok = ok && m.obj && send_msg(w->sock, &m);
    proto_msg_clear(&m);
    if (!ok)
        return false;
    double now = bf_mono_s();
    w->last_send = bf_mono_ms();
    w->off_head = w->off_len = 0;
    w->first_left = g->credit;
    for (unsigned i = 0; i < g->credit; i++)
        offer(g, w, now);
    w->registered = true;
    return true;
}

static bool send_result(lg_t *g, uint32_t wi, const char *task_id, const char *scene,
                        uint64_t attempt)
{
    lworker_t *w = &g->w[wi];
    proto_msg_t r;
    proto_msg_init(&r, PROTO_RESULT);
    bool ok = proto_msg_set(&r.task_id, task_id) == BF_OK;
    r.attempt = attempt;
    r.obj = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:I, s:f}", "status", "success",
                      "reason", "", "scene", scene ? scene : "", "host", bf_hostname(), "worker",
                      w->name, "gpu_id", -1, "device", "loadgen", "backend", "cpu", "attempt",
                      (json_int_t)attempt, "elapsed_time", g->delay_ms / 1000.0);
    ok = ok && r.obj && send_msg(w->sock, &r);
    proto_msg_clear(&r);
    if (ok) {
        double now = bf_mono_s();
        offer(g, w, now);
        w->last_send = bf_mono_ms();
        g->results_sent++;
        g->t_last_result = now;
    }
    return ok;
}

static bool sample_add(float **v, size_t *n, size_t *cap, double seconds)
{
    if (!bf_grow(v, cap, *n + 1, sizeof **v, 1 << 16))
        return false;
    (*v)[(*n)++] = (float)seconds;
    return true;
}

static bool on_task(lg_t *g, uint32_t wi, proto_msg_t *m)
{
    lworker_t *w = &g->w[wi];
    double now = bf_mono_s();
    if (!g->tasks_recv)
        g->t_first_task = now;
    g->tasks_recv++;
    if (m->attempt > 1)
        g->retries++;
    if (w->off_len > 0) {
        double offered = w->offers[w->off_head];
        w->off_head = (w->off_head + 1) % g->credit;
        w->off_len--;
        bool first = w->first_left > 0;
        if (first)
            w->first_left--;
        if (!(first ? sample_add(&g->first, &g->nfirst, &g->capfirst, now - offered)
                    : sample_add(&g->lat, &g->nlat, &g->caplat, now - offered)))
            return false;
    }
    if (g->delay_ms == 0)
        return send_result(g, wi, m->task_id, m->scene, m->attempt);
    if (g->pend_len == g->pend_cap) {
        size_t cap = g->pend_cap ? 2 * g->pend_cap : 1024;
        pending_t *p = malloc(cap * sizeof *p);
        if (!p)
            return false;
        for (size_t i = 0; i < g->pend_len; i++)
            p[i] = g->pend[(g->pend_head + i) % g->pend_cap];
        free(g->pend);
        g->pend = p;
        g->pend_cap = cap;
        g->pend_head = 0;
    }
    pending_t *p = &g->pend[(g->pend_head + g->pend_len++) % g->pend_cap];
    *p = (pending_t){.worker = wi, .attempt = m->attempt, .due = now + g->delay_ms / 1000.0};
    p->task_id = m->task_id, m->task_id = NULL;
    p->scene = m->scene, m->scene = NULL;
    return true;
}

static bool send_due(lg_t *g)
{
    double now = bf_mono_s();
    while (g->pend_len > 0 && g->pend[g->pend_head].due <= now) {
        pending_t *p = &g->pend[g->pend_head];
        bool ok = send_result(g, p->worker, p->task_id, p->scene, p->attempt);
        free(p->task_id);
        free(p->scene);
        g->pend_head = (g->pend_head + 1) % g->pend_cap;
        g->pend_len--;
        if (!ok)
            return false;
    }
    return true;
}

/* Everything waiting on worker wi's socket. */
static bool drain_worker(lg_t *g, uint32_t wi)
{
    lworker_t *w = &g->w[wi];
    for (;;) {
        proto_msg_t m;
        char why[BF_ERRLEN];
        if (proto_recv(w->sock, NULL, NULL, &m, ZMQ_DONTWAIT, why) != BF_OK) {
            if (zmq_errno() == EAGAIN)
                return true;
            bf_warn("loadgen: %s: bad message: %s", w->name, why);
            continue;
        }
        bool ok = true;
        switch (m.type) {
        case PROTO_TASK:
            ok = on_task(g, wi, &m);
            break;
        case PROTO_ERROR: /* "unknown peer": register again */
            g->errors_recv++;
            ok = send_ready(g, w);
            break;
        case PROTO_ABORT:
            g->aborts++;
            break;
        default: /* HEARTBEAT, ACK of a RESULT */
            break;
        }
        proto_msg_clear(&m);
        if (!ok)
            return false;
    }
}

/* --collector self: acknowledge every delivery at once. */
static bool drain_collector(lg_t *g)
{
    for (;;) {
        proto_msg_t m;
        if (proto_recv(g->coll, NULL, NULL, &m, ZMQ_DONTWAIT, NULL) != BF_OK)
            return zmq_errno() == EAGAIN;
        bool ok = true;
        if (m.type == PROTO_DELIVER || m.type == PROTO_JOB_DONE) {
            proto_msg_t a;
            proto_msg_init(&a, PROTO_ACK);
            a.seq = m.seq;
            ok = send_msg(g->coll, &a);
            g->coll_last_send = bf_mono_ms();
            g->delivered += m.type == PROTO_DELIVER;
        } else if (m.type == PROTO_ERROR) {
            proto_msg_t c;
            proto_msg_init(&c, PROTO_COLLECT);
            ok = proto_msg_set(&c.worker, "loadgen-collector") == BF_OK;
            c.credit = 4096;
            ok = ok && send_msg(g->coll, &c);
            proto_msg_clear(&c);
        }
        proto_msg_clear(&m);
        if (!ok)
            return false;
    }
}

/* ---- status while dispatching ------------------------------------------- */

typedef struct {
    uint64_t final, total;
    bool all_done;
    long outbox, workers;
} progress_t;

static bool progress_of(lg_t *g, json_t *doc, progress_t *p)
{
    *p = (progress_t){.all_done = true};
    unsigned seen = 0;
    size_t i;
    json_t *j;
    json_array_foreach(json_object_get(doc, "jobs"), i, j)
    {
        const char *id = json_string_value(json_object_get(j, "id"));
        for (unsigned k = 0; id && k < g->njobs; k++) {
            if (strcmp(id, g->job_ids[k]))
                continue;
            seen++;
            p->final += (uint64_t)json_integer_value(json_object_get(j, "final"));
            p->total += (uint64_t)json_integer_value(json_object_get(j, "total"));
            const char *st = json_string_value(json_object_get(j, "state"));
            if (!st || !strcmp(st, "running"))
                p->all_done = false;
        }
    }
    p->outbox =
        (long)json_integer_value(json_object_get(json_object_get(doc, "collector"), "outbox"));
    p->workers = (long)json_array_size(json_object_get(doc, "workers"));
    if (seen != g->njobs)
        p->all_done = false;
    p->all_done = p->all_done && p->outbox == 0;
    return true;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double pct(const float *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void heartbeat_all(lg_t *g)
{
    int64_t now = bf_mono_ms();
    proto_msg_t hb;
    proto_msg_init(&hb, PROTO_HEARTBEAT);
    for (unsigned i = 0; i < g->nworkers; i++) {
        if (now - g->w[i].last_send >= HEARTBEAT_MS / 2) {
            if (send_msg(g->w[i].sock, &hb))
                g->w[i].last_send = now;
        }
    }
    if (g->coll && now - g->coll_last_send >= HEARTBEAT_MS / 2 && send_msg(g->coll, &hb))
        g->coll_last_send = now;
}

/* The reactor: every worker socket, the collector's (self) and the status
   client's. Runs until every task is final and acknowledged, then for
   settle_s more seconds when settle is true. */
static bool run_loop(lg_t *g, double settle_s, double limit_s, progress_t *last)
{
    size_t nitems = g->nworkers + 2;
    zmq_pollitem_t *items = calloc(nitems, sizeof *items);
    if (!items)
        return false;
    for (unsigned i = 0; i < g->nworkers; i++)
        items[i] = (zmq_pollitem_t){g->w[i].sock, 0, ZMQ_POLLIN, 0};
    items[g->nworkers] = (zmq_pollitem_t){g->client, 0, ZMQ_POLLIN, 0};
    items[g->nworkers + 1] = (zmq_pollitem_t){g->coll, 0, g->coll ? ZMQ_POLLIN : 0, 0};
    double t0 = bf_mono_s(), next_status = t0, next_rss = t0, next_hb = t0, done_at = 0;
    double next_line = t0 + 10;
    bool waiting_status = false, ok = true;
    while (ok) {
        double now = bf_mono_s();
        if (now - t0 > limit_s) {
            fprintf(stderr, "loadgen: gave up after %.0f s (%llu of %llu final)\n", limit_s,
                    (unsigned long long)last->final, (unsigned long long)g->ntasks);
            ok = false;
            break;
        }
        if (done_at > 0 && now - done_at >= settle_s)
            break;
        long timeout = 20;
        if (g->pend_len > 0) {
            double left = g->pend[g->pend_head].due - now;
            timeout = left <= 0 ? 0 : left < 0.02 ? (long)(left * 1000) + 1 : 20;
        }
        if (zmq_poll(items, (int)nitems, timeout) < 0 && zmq_errno() != EINTR) {
            bf_error("loadgen: zmq_poll: %s", zmq_strerror(zmq_errno()));
            ok = false;
            break;
        }
        for (unsigned i = 0; i < g->nworkers && ok; i++)
            if (items[i].revents & ZMQ_POLLIN)
                ok = drain_worker(g, i);
        if (ok && g->coll && (items[g->nworkers + 1].revents & ZMQ_POLLIN))
            ok = drain_collector(g);
        if (ok)
            ok = send_due(g);
        now = bf_mono_s();
        if (items[g->nworkers].revents & ZMQ_POLLIN) {
            proto_msg_t r;
            if (proto_recv(g->client, NULL, NULL, &r, ZMQ_DONTWAIT, NULL) == BF_OK) {
                if (r.type == PROTO_STATUS_REPLY) {
                    progress_of(g, r.obj, last);
                    if (last->all_done && done_at == 0)
                        done_at = now;
                }
                proto_msg_clear(&r);
            }
            waiting_status = false;
        }
        if (now >= next_status && !waiting_status) {
            proto_msg_t q;
            proto_msg_init(&q, PROTO_STATUS);
            q.seq = UINT64_MAX;
            waiting_status = send_msg(g->client, &q);
            next_status = now + STATUS_MS / 1000.0;
        }
        if (now >= next_rss) {
            long kb = proc_kb(g->broker, "VmRSS");
            if (kb > g->rss_peak_kb)
                g->rss_peak_kb = kb;
            next_rss = now + RSS_MS / 1000.0;
            if (!child_alive(g->broker)) {
                fprintf(stderr, "loadgen: the broker died; see %s/broker.log\n", g->dir);
                ok = false;
            }
        }
        if (now >= next_hb) {
            heartbeat_all(g);
            next_hb = now + 0.1;
        }
        if (now >= next_line && done_at == 0) {
            fprintf(stderr,
                    "# %.0f s: %llu tasks received, %llu of %llu final, outbox %ld, "
                    "broker RSS %.0f MiB\n",
                    now - t0, (unsigned long long)g->tasks_recv, (unsigned long long)last->final,
                    (unsigned long long)g->ntasks, last->outbox, mib(proc_kb(g->broker, "VmRSS")));
            next_line = now + 10;
        }
    }
    free(items);
    return ok;
}

/* ---- main --------------------------------------------------------------- */

static bool raise_nofile(rlim_t *now)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    *now = rl.rlim_cur;
    return true;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_loadgen BEAMFLEET_BIN [--workers N] [--tasks M] [--credit C] "
                    "[--delay-ms D] [--collector real|self] [--settle-s S] [--rounds R] "
                    "[--retain-s S] [--keep]\n");
    return 2;
}

static bool parse_u64(const char *flag, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-' || x < lo || x > hi) {
        fprintf(stderr, "bench_loadgen: %s: expected an integer in %llu..%llu, got '%s'\n", flag,
                (unsigned long long)lo, (unsigned long long)hi, v);
        return false;
    }
    *out = x;
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return usage();
    lg_t g = {.bin = argv[1],
              .nworkers = 1000,
              .credit = 1,
              .ntasks = 1000000,
              .settle_s = 5,
              .rounds = 1};
    char retain[24] = "3600"; /* the broker's --retain-s */
    for (int i = 2; i < argc; i++) {
        uint64_t v;
        const char *f = argv[i];
        if (!strcmp(f, "--keep")) {
            g.keep = true;
            continue;
        }
        if (i + 1 >= argc)
            return usage();
        const char *a = argv[++i];
        if (!strcmp(f, "--workers") && parse_u64(f, a, 1, 100000, &v))
            g.nworkers = (unsigned)v;
        else if (!strcmp(f, "--tasks") && parse_u64(f, a, 1, 10000000, &v))
            g.ntasks = v;
        else if (!strcmp(f, "--credit") && parse_u64(f, a, 1, 1024, &v))
            g.credit = (unsigned)v;
        else if (!strcmp(f, "--delay-ms") && parse_u64(f, a, 0, 3600000, &v))
            g.delay_ms = (unsigned)v;
        else if (!strcmp(f, "--rounds") && parse_u64(f, a, 1, 100, &v))
            g.rounds = (unsigned)v;
        else if (!strcmp(f, "--settle-s") && parse_u64(f, a, 0, 3600, &v))
            g.settle_s = (unsigned)v;
        else if (!strcmp(f, "--retain-s") && parse_u64(f, a, 1, 86400, &v))
            snprintf(retain, sizeof retain, "%llu", (unsigned long long)v);
        else if (!strcmp(f, "--collector") && (!strcmp(a, "real") || !strcmp(a, "self")))
            g.self_collector = !strcmp(a, "self");
        else {
            if (strcmp(f, "--workers") && strcmp(f, "--tasks") && strcmp(f, "--credit") &&
                strcmp(f, "--delay-ms") && strcmp(f, "--settle-s") && strcmp(f, "--rounds") &&
                strcmp(f, "--retain-s"))
                fprintf(stderr, "bench_loadgen: unknown flag or value '%s %s'\n", f, a);
            return usage();
        }
    }
    bf_log_set_level(BF_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)getpid() ^ (unsigned)bf_mono_ms());
    rlim_t nofile = 0;
    if (!raise_nofile(&nofile) || nofile < (rlim_t)g.nworkers * 3 + 64) {
        fprintf(stderr, "bench_loadgen: RLIMIT_NOFILE %llu is too low for %u workers\n",
                (unsigned long long)nofile, g.nworkers);
        return 1;
    }

    snprintf(g.dir, sizeof g.dir, "/tmp/bf-loadgen-XXXXXX");
    if (!mkdtemp(g.dir)) {
        perror("bench_loadgen: mkdtemp");
        return 1;
    }
    int port = 20000 + (int)(getpid() % 20000);
    snprintf(g.endpoint, sizeof g.endpoint, "tcp://127.0.0.1:%d", port);
    char *state = bf_asprintf("%s/state", g.dir), *blog = bf_asprintf("%s/broker.log", g.dir),
         *clog = bf_asprintf("%s/collector.log", g.dir);
    char *bargv[] = {(char *)g.bin, "broker",     "--bind", g.endpoint, "--state",
                     state,         "--retain-s", retain,   NULL};
    char *cargv[] = {(char *)g.bin, "collector",         "--broker", g.endpoint,
                     "--publish",   "tcp://127.0.0.1:0", NULL};
    int rc = 1;
    g.broker = spawn(bargv, blog, true);
    if (!g.self_collector)
        g.collector = spawn(cargv, clog, false);

    g.ctx = zmq_ctx_new();
    if (!g.ctx || zmq_ctx_set(g.ctx, ZMQ_MAX_SOCKETS, (int)g.nworkers + 64) != 0) {
        fprintf(stderr, "bench_loadgen: zmq context: %s\n", zmq_strerror(zmq_errno()));
        goto out;
    }
    json_t *doc = NULL;
    for (int i = 0; i < 100 && !doc; i++)
        doc = status_doc(&g, 200);
    if (!doc) {
        fprintf(stderr, "bench_loadgen: the broker does not answer; see %s\n", blog);
        goto out;
    }
    json_decref(doc);
    if (g.self_collector) {
        if (!(g.coll = dealer(g.ctx, g.endpoint)))
            goto out;
        proto_msg_t c;
        proto_msg_init(&c, PROTO_COLLECT);
        bool ok = proto_msg_set(&c.worker, "loadgen-collector") == BF_OK;
        c.credit = 4096;
        ok = ok && send_msg(g.coll, &c);
        proto_msg_clear(&c);
        if (!ok)
            goto out;
        g.coll_last_send = bf_mono_ms();
    }
    usleep(500000); /* the collector registered, the broker settled */

    printf("# bench_loadgen: %u workers (credit %u, result after %u ms), %u round(s) of %llu "
           "tasks, collector %s, %ld cores, RLIMIT_NOFILE %llu\n",
           g.nworkers, g.credit, g.delay_ms, g.rounds, (unsigned long long)g.ntasks,
           g.self_collector ? "self (acks at once)" : "real", sysconf(_SC_NPROCESSORS_ONLN),
           (unsigned long long)nofile);
    fflush(stdout);
    rc = 0;
    for (g.round = 1; g.round <= g.rounds && rc == 0; g.round++) {
        /* Each round: SUBMIT (workers idle or not yet there), dispatch,
           settle. Figures are per round; RSS is the broker's, cumulative. */
        g.tasks_recv = g.results_sent = g.retries = g.aborts = g.errors_recv = g.delivered = 0;
        g.nlat = g.nfirst = 0;
        g.t_first_task = g.t_last_result = 0;
        g.rss_peak_kb = 0;
        free(g.job_ids);
        g.job_ids = NULL;
        long rss_before = proc_kb(g.broker, "VmRSS");
        double submit_s = 0;
        size_t submit_bytes = 0;
        if (!submit_all(&g, &submit_s, &submit_bytes)) {
            fprintf(stderr, "bench_loadgen: submit failed; see %s\n", blog);
            rc = 1;
            break;
        }
        usleep(g.w ? 0 : 500000);
        long rss_queued = proc_kb(g.broker, "VmRSS"), hwm_submit = proc_kb(g.broker, "VmHWM");
        printf("round %u: submit: %llu tasks in %u job(s), %zu bytes, %.2f s (durable)\n", g.round,
               (unsigned long long)g.ntasks, g.njobs, submit_bytes, submit_s);
        if (!g.w)
            printf("round %u: broker RSS idle %.1f MiB, with %llu queued %.1f MiB (VmHWM %.1f "
                   "MiB after submit): %.0f bytes per queued task\n",
                   g.round, mib(rss_before), (unsigned long long)g.ntasks, mib(rss_queued),
                   mib(hwm_submit), (double)(rss_queued - rss_before) * 1024.0 / (double)g.ntasks);
        fflush(stdout);

        double t_join = bf_mono_s();
        if (!g.w) { /* N workers join */
            g.w = calloc(g.nworkers, sizeof *g.w);
            if (!g.w || !(g.client = dealer(g.ctx, g.endpoint))) {
                rc = 1;
                break;
            }
            for (unsigned i = 0; i < g.nworkers && rc == 0; i++) {
                lworker_t *w = &g.w[i];
                snprintf(w->name, sizeof w->name, "%s:%d:lg%u", bf_hostname(), (int)getpid(), i);
                w->offers = calloc(g.credit, sizeof *w->offers);
                if (!w->offers || !(w->sock = dealer(g.ctx, g.endpoint))) {
                    fprintf(stderr, "bench_loadgen: worker %u: %s\n", i, zmq_strerror(zmq_errno()));
                    rc = 1;
                } else if (!send_ready(&g, w)) {
                    rc = 1;
                }
            }
            if (rc)
                break;
        } else { /* idle workers' credit was offered before this submit */
            for (unsigned i = 0; i < g.nworkers; i++) {
                for (unsigned k = 0; k < g.w[i].off_len; k++)
                    g.w[i].offers[(g.w[i].off_head + k) % g.credit] = t_join;
                g.w[i].first_left = g.w[i].off_len;
            }
        }
        progress_t last = {0};
        double limit = 600.0 + (double)g.ntasks / 200.0;
        bool ok = run_loop(&g, 0, limit, &last);
        double t_end = bf_mono_s();
        long rss_end = proc_kb(g.broker, "VmRSS");
        if (!ok) {
            rc = 1;
            break;
        }
        /* Idle with every worker still connected and heartbeating. */
        progress_t after = last;
        ok = run_loop(&g, g.settle_s, g.settle_s + 60, &after);
        long rss_settled = proc_kb(g.broker, "VmRSS"), hwm = proc_kb(g.broker, "VmHWM");
        if (g.rss_peak_kb < rss_end)
            g.rss_peak_kb = rss_end;

        double span = g.t_last_result - g.t_first_task;
        printf("round %u: dispatch: %llu tasks received (%llu retries, %llu aborts, %llu "
               "unknown-peer errors), %llu results sent, %ld workers registered at the end\n",
               g.round, (unsigned long long)g.tasks_recv, (unsigned long long)g.retries,
               (unsigned long long)g.aborts, (unsigned long long)g.errors_recv,
               (unsigned long long)g.results_sent, last.workers);
        printf("round %u: throughput: %.0f tasks/s first TASK to last RESULT (%.1f s); %.0f "
               "tasks/s from the workers' start to every task final and acknowledged by the "
               "collector (%.1f s)\n",
               g.round, span > 0 ? (double)g.results_sent / span : 0, span,
               (double)g.ntasks / (t_end - t_join), t_end - t_join);
        qsort(g.lat, g.nlat, sizeof *g.lat, cmp_float);
        qsort(g.first, g.nfirst, sizeof *g.first, cmp_float);
        printf("round %u: dispatch latency (credit given back by a RESULT -> next TASK received, "
               "%zu samples): p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n",
               g.round, g.nlat, pct(g.lat, g.nlat, 50) * 1e3, pct(g.lat, g.nlat, 99) * 1e3,
               pct(g.lat, g.nlat, 99.9) * 1e3, g.nlat ? g.lat[g.nlat - 1] * 1e3 : 0);
        printf("round %u: fan-out (READY, or SUBMIT to idle workers -> first TASK, %zu samples): "
               "p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
               g.round, g.nfirst, pct(g.first, g.nfirst, 50) * 1e3,
               pct(g.first, g.nfirst, 99) * 1e3, g.nfirst ? g.first[g.nfirst - 1] * 1e3 : 0);
        printf("round %u: broker RSS: before submit %.1f MiB, after submit %.1f MiB, peak while "
               "dispatching %.1f MiB, at the end %.1f MiB, after %u s idle %.1f MiB (growth "
               "%+.1f MiB), VmHWM %.1f MiB\n",
               g.round, mib(rss_before), mib(rss_queued), mib(g.rss_peak_kb), mib(rss_end),
               g.settle_s, mib(rss_settled), mib(rss_settled - rss_end), mib(hwm));
        long fds, soft;
        proc_files(g.broker, &fds, &soft);
        printf("round %u: broker open files %ld, its soft RLIMIT_NOFILE %ld (started at 1024)\n",
               g.round, fds, soft);
        if (g.self_collector)
            printf("round %u: collector (self): %llu deliveries acknowledged\n", g.round,
                   (unsigned long long)g.delivered);
        bool complete = last.all_done && last.final == g.ntasks && last.total == g.ntasks;
        printf("round %u: result: %s (%llu of %llu final)\n", g.round,
               complete && ok ? "complete" : "INCOMPLETE", (unsigned long long)last.final,
               (unsigned long long)g.ntasks);
        fflush(stdout);
        rc = complete && ok ? 0 : 1;
    }
out:
    fflush(stdout);
    for (unsigned i = 0; g.w && i < g.nworkers; i++) {
        if (g.w[i].sock) {
            proto_msg_t bye;
            proto_msg_init(&bye, PROTO_GOODBYE);
            if (proto_send(g.w[i].sock, NULL, 0, &bye, ZMQ_DONTWAIT) != BF_OK)
                bf_debug("goodbye: %s", zmq_strerror(zmq_errno()));
            zmq_close(g.w[i].sock);
        }
        free(g.w[i].offers);
    }
    free(g.w);
    if (g.client)
        zmq_close(g.client);
    if (g.coll)
        zmq_close(g.coll);
    if (g.ctx)
        zmq_ctx_term(g.ctx);
    for (size_t i = 0; i < g.pend_len; i++) {
        free(g.pend[(g.pend_head + i) % g.pend_cap].task_id);
        free(g.pend[(g.pend_head + i) % g.pend_cap].scene);
    }
    free(g.pend);
    free(g.lat);
    free(g.first);
    free(g.job_ids);
    stop_child(g.collector);
    stop_child(g.broker);
    if (rc != 0 || g.keep) {
        printf("# files kept in %s\n", g.dir);
    } else {
        char *cmd = bf_asprintf("rm -rf '%s'", g.dir);
        if (cmd && system(cmd) != 0)
            bf_warn("could not remove %s", g.dir);
        free(cmd);
    }
    free(state);
    free(blog);
    free(clog);
    return rc;
}
