/*  bench/dispatch.c - how fast the fleet moves work, against the raw relay it
    is built on, in the same run.

    1. Anchor: raw libzmq, one ROUTER hop. A client DEALER keeps a window of
       requests in flight to a ROUTER relay that forwards each to one of N
       worker DEALERs and relays the reply back; frames have the size of a
       real TASK message. Round trips per second.
    2. Beamfleet: the real `beamfleet broker` (durable state in a temporary
       directory) and `beamfleet collector` (writing every report) as
       processes, N no-op workers speaking the real protocol from threads of
       this process, one job of T tasks: submit to the last result written.
       Tasks per second, and the ratio to the anchor.
    3. Worker-loss detection: a no-op worker in a child process holds a task
       and is killed with SIGKILL; the time until the broker hands that task
       to another worker (attempt 2).

    4. Anchor for the fleet's own figure: a Python ProcessPoolExecutor
       (bench/pool_anchor.py noop) running as many in-process no-op
       functions, its results file written every 10 results.

    usage: bench_dispatch --help */

#include "../common/bf.h"
#include "../common/bf_config.h"
#include "../proto/proto_link.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define HEARTBEAT_MS 1000
#define LIVENESS     3

/* ---- raw relay ---------------------------------------------------------- */

typedef struct {
    void *ctx;
    const char *endpoint;
    atomic_int stop;
} raw_t;

static void *raw_worker(void *arg)
{
    raw_t *r = arg;
    void *s = zmq_socket(r->ctx, ZMQ_DEALER);
    int linger = 0, timeout = 100;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_connect(s, r->endpoint);
    zmq_send(s, "W", 1, 0); /* register */
    char buf[65536];
    while (!atomic_load(&r->stop)) {
        int n = zmq_recv(s, buf, sizeof buf, 0);
        if (n < 0)
            continue;
        zmq_send(s, buf, (size_t)(n > (int)sizeof buf ? (int)sizeof buf : n), 0);
    }
    zmq_close(s);
    return NULL;
}

/* The relay: frames from workers are [id, "W"] (register) or [id, payload]
   (a reply: goes to the client); from the client [id, payload] (goes to the
   next worker, round robin). */
static double raw_relay(unsigned nworkers, size_t msg_size, unsigned window, unsigned total)
{
    /* tcp on loopback, as the fleet's own sockets */
    raw_t r = {.ctx = zmq_ctx_new(), .endpoint = "tcp://127.0.0.1:0"};
    void *router = zmq_socket(r.ctx, ZMQ_ROUTER);
    zmq_bind(router, r.endpoint);
    char ep[128];
    size_t eplen = sizeof ep;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &eplen);
    r.endpoint = ep;
    pthread_t threads[64];
    for (unsigned i = 0; i < nworkers; i++)
        pthread_create(&threads[i], NULL, raw_worker, &r);
    uint8_t ids[64][256];
    size_t id_len[64];
    unsigned registered = 0;
    while (registered < nworkers) {
        id_len[registered] = (size_t)zmq_recv(router, ids[registered], 256, 0);
        char tmp[8];
        zmq_recv(router, tmp, sizeof tmp, 0);
        registered++;
    }
    void *client = zmq_socket(r.ctx, ZMQ_DEALER);
    zmq_connect(client, r.endpoint);
    uint8_t client_id[256];
    size_t client_id_len = 0;
    char *payload = calloc(1, msg_size);
    char *buf = malloc(msg_size + 64);
    /* Learn the client's routing id with one hello. */
    zmq_send(client, "C", 1, 0);
    client_id_len = (size_t)zmq_recv(router, client_id, sizeof client_id, 0);
    zmq_recv(router, buf, msg_size + 64, 0);

    unsigned sent = 0, done = 0, next = 0;
    double t0 = bf_mono_s();
    while (sent < window && sent < total) {
        zmq_send(client, payload, msg_size, 0);
        sent++;
    }
    zmq_pollitem_t items[2] = {{router, 0, ZMQ_POLLIN, 0}, {client, 0, ZMQ_POLLIN, 0}};
    while (done < total) {
        zmq_poll(items, 2, 100);
        if (items[0].revents & ZMQ_POLLIN) {
            for (;;) {
                uint8_t from[256];
                int fl = zmq_recv(router, from, sizeof from, ZMQ_DONTWAIT);
                if (fl < 0)
                    break;
                int n = zmq_recv(router, buf, msg_size + 64, 0);
                if ((size_t)fl == client_id_len && !memcmp(from, client_id, (size_t)fl)) {
                    zmq_send(router, ids[next], id_len[next], ZMQ_SNDMORE);
                    zmq_send(router, buf, (size_t)n, 0);
                    next = (next + 1) % nworkers;
                } else {
                    zmq_send(router, client_id, client_id_len, ZMQ_SNDMORE);
                    zmq_send(router, buf, (size_t)n, 0);
                }
            }
        }
        if (items[1].revents & ZMQ_POLLIN) {
            while (zmq_recv(client, buf, msg_size + 64, ZMQ_DONTWAIT) >= 0) {
                done++;
                if (sent < total) {
                    zmq_send(client, payload, msg_size, 0);
                    sent++;
                }
            }
        }
    }
    double rate = total / (bf_mono_s() - t0);
    atomic_store(&r.stop, 1);
    for (unsigned i = 0; i < nworkers; i++)
        pthread_join(threads[i], NULL);
    zmq_close(client);
    zmq_close(router);
    zmq_ctx_term(r.ctx);
    free(payload);
    free(buf);
    return rate;
}

/* ---- no-op workers speaking the real protocol -------------------------- */

/* --cells N: each result carries zone_power_initial and _optimized of N
   dBm values, as a boresight result of an N-cell zone does (0: none). */
static unsigned result_cells;

/* An array of n dBm values with all their digits, as the engine's are. */
static json_t *zone_array(unsigned n, double base)
{
    json_t *a = json_array();
    for (unsigned i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(base - 1e-3 * i - 1.0 / (3.0 + i)));
    return a;
}

typedef struct {
    const char *endpoint;
    unsigned prefetch;
    atomic_int *stop;
    char name[64];
    atomic_ulong done;
} noop_t;

static void send_or_warn(void *s, const proto_msg_t *m)
{
    if (proto_send(s, NULL, 0, m, 0) != BF_OK)
        bf_warn("noop: send failed: %s", zmq_strerror(zmq_errno()));
}

static void send_ready(void *s, noop_t *w)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_READY);
    if (proto_msg_set(&m.worker, w->name) != BF_OK)
        return;
    m.credit = w->prefetch;
    m.obj = json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:[s], s:[]}", "host", bf_hostname(), "pid",
                      (int)getpid(), "device_index", -1, "name", "noop", "backend", "cpu",
                      "version", BF_VERSION, "tasks", "exec", "running");
    send_or_warn(s, &m);
    proto_msg_clear(&m);
}

static void *noop_worker(void *arg)
{
    noop_t *w = arg;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, w->endpoint);
    send_ready(s, w);
    json_t *zone0 = result_cells ? zone_array(result_cells, -90.0) : NULL;
    json_t *zone1 = result_cells ? zone_array(result_cells, -80.0) : NULL;
    int64_t last_sent = bf_mono_ms();
    while (!atomic_load(w->stop)) {
        zmq_pollitem_t item = {s, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 100);
        if (bf_mono_ms() - last_sent >= HEARTBEAT_MS) {
            proto_msg_t hb;
            proto_msg_init(&hb, PROTO_HEARTBEAT);
            send_or_warn(s, &hb);
            last_sent = bf_mono_ms();
        }
        if (!(item.revents & ZMQ_POLLIN))
            continue;
        for (;;) {
            proto_msg_t m;
            if (proto_recv(s, NULL, NULL, &m, ZMQ_DONTWAIT, NULL) != BF_OK)
                break;
            if (m.type == PROTO_TASK) {
                proto_msg_t r;
                proto_msg_init(&r, PROTO_RESULT);
                if (proto_msg_set(&r.task_id, m.task_id) == BF_OK) {
                    r.attempt = m.attempt;
                    r.obj =
                        json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:I, s:f}", "status",
                                  "success", "reason", "", "scene", m.scene ? m.scene : "", "host",
                                  bf_hostname(), "gpu_id", -1, "device", "noop", "worker", w->name,
                                  "attempt", (json_int_t)m.attempt, "elapsed_time", 0.0);
                    if (zone0 && r.obj) {
                        json_object_set(r.obj, "zone_power_initial", zone0);
                        json_object_set(r.obj, "zone_power_optimized", zone1);
                    }
                    send_or_warn(s, &r);
                    last_sent = bf_mono_ms();
                    atomic_fetch_add(&w->done, 1);
                }
                proto_msg_clear(&r);
            } else if (m.type == PROTO_ERROR) {
                send_ready(s, w);
            }
            proto_msg_clear(&m);
        }
    }
    json_decref(zone0);
    json_decref(zone1);
    proto_msg_t bye;
    proto_msg_init(&bye, PROTO_GOODBYE);
    send_or_warn(s, &bye);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

/* ---- helpers ------------------------------------------------------------ */

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        setpgid(0, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* The broker's status document on DEALER s, or NULL. */
static json_t *status_on(void *s, const char *job_id)
{
    proto_msg_t q, r;
    proto_msg_init(&q, PROTO_STATUS);
    q.seq = UINT64_MAX; /* no events: only the counters */
    json_t *doc = NULL;
    if (proto_msg_set(&q.job_id, job_id) == BF_OK && proto_send(s, NULL, 0, &q, 0) == BF_OK) {
        zmq_pollitem_t item = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 2000) > 0 && proto_recv(s, NULL, NULL, &r, 0, NULL) == BF_OK) {
            if (r.type == PROTO_STATUS_REPLY)
                doc = json_incref(r.obj);
            proto_msg_clear(&r);
        }
    }
    proto_msg_clear(&q);
    return doc;
}

/* A DEALER to endpoint in ctx (linger 0), or NULL. */
static void *dealer_to(void *ctx, const char *endpoint)
{
    void *s = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    int linger = 0;
    if (s && (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
              zmq_connect(s, endpoint) != 0)) {
        zmq_close(s);
        s = NULL;
    }
    return s;
}

/* One status request on a connection of its own. */
static json_t *status(const char *endpoint, const char *job_id)
{
    void *ctx = zmq_ctx_new();
    void *s = dealer_to(ctx, endpoint);
    json_t *doc = s ? status_on(s, job_id) : NULL;
    if (s)
        zmq_close(s);
    if (ctx)
        zmq_ctx_term(ctx);
    return doc;
}

static json_t *find_job(json_t *doc, const char *job_id)
{
    size_t i;
    json_t *j;
    json_array_foreach(json_object_get(doc, "jobs"), i, j)
    {
        if (!strcmp(json_string_value(json_object_get(j, "id")), job_id))
            return j;
    }
    return NULL;
}

/* Submits a no-op job of ntasks scenes; returns the job id in out. */
static bool submit(const char *endpoint, const char *dir, unsigned ntasks, char out[64],
                   size_t *task_msg_size)
{
    bf_job_t job;
    bf_job_defaults(&job);
    job.name = bf_strdup("bench-dispatch");
    job.scenes_root = bf_strdup(dir);
    job.output = bf_asprintf("%s/out", dir);
    job.task = BF_TASK_EXEC;
    job.exec_command = calloc(3, sizeof(char *));
    job.exec_command[0] = bf_strdup("/bin/true");
    job.exec_command[1] = bf_strdup("{scene_dir}");
    job.exec_argc = 2;
    job.scenes = calloc(ntasks, sizeof(char *));
    for (unsigned i = 0; i < ntasks; i++)
        job.scenes[i] = bf_asprintf("scene_%07u", i);
    job.scene_count = ntasks;

    /* The size of one TASK frame of this job, for the raw anchor. */
    proto_msg_t t;
    proto_msg_init(&t, PROTO_TASK);
    bool ok = proto_msg_set(&t.job_id, "0123456789ab") == BF_OK &&
              proto_msg_set(&t.task_id, "0123456789abcdef0123456789abcdef") == BF_OK &&
              proto_msg_set(&t.scene, "scene_0000000") == BF_OK;
    t.obj = bf_job_to_json(&job, false);
    uint8_t *bytes = NULL;
    if (ok && proto_encode(&t, &bytes, task_msg_size) == BF_OK)
        free(bytes);
    proto_msg_clear(&t);

    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, endpoint);
    proto_msg_t q, r;
    proto_msg_init(&q, PROTO_SUBMIT);
    q.obj = bf_job_to_json(&job, true);
    ok = false;
    if (proto_send(s, NULL, 0, &q, 0) == BF_OK) {
        zmq_pollitem_t item = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 60000) > 0 && proto_recv(s, NULL, NULL, &r, 0, NULL) == BF_OK) {
            if (r.type == PROTO_SUBMITTED) {
                bf_strlcpy(out, r.job_id, 64);
                ok = true;
            }
            proto_msg_clear(&r);
        }
    }
    proto_msg_clear(&q);
    zmq_close(s);
    zmq_ctx_term(ctx);
    bf_job_clear(&job);
    return ok;
}

typedef struct {
    pid_t broker, collector;
    char endpoint[128];
    char dir[64];
} fleet_t;

/* A TCP port on 127.0.0.1 that nothing uses now (the kernel's choice), or
   fallback: a fixed port range collided with other tests' ephemeral ports. */
static int free_port(int fallback)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = fallback;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static bool fleet_start(fleet_t *f, const char *bin, int port)
{
    port = free_port(port);
    snprintf(f->dir, sizeof f->dir, "/tmp/bf-bench-XXXXXX");
    if (!mkdtemp(f->dir))
        return false;
    snprintf(f->endpoint, sizeof f->endpoint, "tcp://127.0.0.1:%d", port);
    char *state = bf_asprintf("%s/state", f->dir), *log = bf_asprintf("%s/log", f->dir);
    char *b[] = {(char *)bin, "broker", "--bind", f->endpoint, "--state", state, NULL};
    f->broker = spawn(b, log);
    char *c[] = {(char *)bin, "collector",         "--broker", f->endpoint,
                 "--publish", "tcp://127.0.0.1:0", NULL};
    f->collector = spawn(c, log);
    free(state);
    free(log);
    return true;
}

static void fleet_stop(fleet_t *f)
{
    stop(f->collector);
    stop(f->broker);
    char *cmd = bf_asprintf("rm -rf %s", f->dir);
    if (cmd && system(cmd) != 0)
        bf_warn("could not remove %s", f->dir);
    free(cmd);
}

static double fleet_rate(const char *bin, int port, unsigned nworkers, unsigned prefetch,
                         unsigned ntasks, size_t *task_size)
{
    fleet_t f;
    if (!fleet_start(&f, bin, port))
        return 0;
    atomic_int stop_flag = 0;
    noop_t *workers = calloc(nworkers, sizeof *workers);
    pthread_t *threads = calloc(nworkers, sizeof *threads);
    for (unsigned i = 0; i < nworkers; i++) {
        workers[i] = (noop_t){.endpoint = f.endpoint, .prefetch = prefetch, .stop = &stop_flag};
        snprintf(workers[i].name, sizeof workers[i].name, "noop-%u", i);
        pthread_create(&threads[i], NULL, noop_worker, &workers[i]);
    }
    /* Wait until every worker is registered: 10 s at most, and not at all
       once the broker or the collector has exited (a wrong binary). */
    bool up = false;
    char why[256] = "";
    for (double t = bf_mono_s(); !up && bf_mono_s() - t < 10;) {
        if (waitpid(f.broker, NULL, WNOHANG) == f.broker) {
            f.broker = 0;
            snprintf(why, sizeof why, "`%s broker` exited at once", bin);
            break;
        }
        if (waitpid(f.collector, NULL, WNOHANG) == f.collector) {
            f.collector = 0;
            snprintf(why, sizeof why, "`%s collector` exited at once", bin);
            break;
        }
        json_t *doc = status(f.endpoint, "");
        size_t n = doc ? json_array_size(json_object_get(doc, "workers")) : 0;
        json_decref(doc);
        up = n == nworkers;
        if (!up)
            usleep(50000);
    }
    if (!up && !why[0])
        snprintf(why, sizeof why, "the broker at %s did not answer with %u workers in 10 s",
                 f.endpoint, nworkers);
    char job_id[64];
    double rate = 0;
    double t0 = bf_mono_s();
    if (!up) {
        char *log = bf_asprintf("%s/log", f.dir);
        FILE *lf = log ? fopen(log, "r") : NULL;
        fprintf(stderr, "bench_dispatch: %s; is %s the beamfleet binary? Its log:\n", why, bin);
        char line[512];
        while (lf && fgets(line, sizeof line, lf))
            fputs(line, stderr);
        if (lf)
            fclose(lf);
        free(log);
    } else if (!submit(f.endpoint, f.dir, ntasks, job_id, task_size)) {
        fprintf(stderr, "bench_dispatch: the broker did not accept the job\n");
    } else {
        /* Polled every 2 ms over one connection: a context, a connection
           and a handshake per request (as before) cost the broker and the
           machine more than the job's own messages. */
        void *pctx = zmq_ctx_new();
        void *poller = dealer_to(pctx, f.endpoint);
        for (;;) {
            json_t *doc = poller ? status_on(poller, job_id) : status(f.endpoint, job_id);
            json_t *job = doc ? find_job(doc, job_id) : NULL;
            bool done =
                job && strcmp(json_string_value(json_object_get(job, "state")), "running") &&
                json_integer_value(json_object_get(json_object_get(doc, "collector"), "outbox")) ==
                    0;
            json_decref(doc);
            if (done)
                break;
            if (bf_mono_s() - t0 > 600) {
                bf_error("bench: job did not finish in 600 s");
                break;
            }
            usleep(2000);
        }
        rate = ntasks / (bf_mono_s() - t0);
        if (poller)
            zmq_close(poller);
        if (pctx)
            zmq_ctx_term(pctx);
    }
    atomic_store(&stop_flag, 1);
    for (unsigned i = 0; i < nworkers; i++)
        pthread_join(threads[i], NULL);
    free(workers);
    free(threads);
    fleet_stop(&f);
    return rate;
}

/* A worker in a child process takes one task and never answers; we kill it
   and time how long until the task is leased again. */
static double detection_time(const char *bin, int port)
{
    fleet_t f;
    if (!fleet_start(&f, bin, port))
        return -1;
    pid_t child = fork();
    if (child == 0) {
        void *ctx = zmq_ctx_new();
        void *s = zmq_socket(ctx, ZMQ_DEALER);
        zmq_connect(s, f.endpoint);
        noop_t w = {.prefetch = 1};
        snprintf(w.name, sizeof w.name, "victim");
        send_ready(s, &w);
        for (;;) { /* hold the task, heartbeat forever */
            proto_msg_t hb;
            proto_msg_init(&hb, PROTO_HEARTBEAT);
            send_or_warn(s, &hb);
            proto_msg_t m;
            while (proto_recv(s, NULL, NULL, &m, ZMQ_DONTWAIT, NULL) == BF_OK)
                proto_msg_clear(&m);
            usleep(HEARTBEAT_MS * 1000 / 2);
        }
    }
    usleep(300000);
    char job_id[64];
    size_t ignored;
    double detect = -1;
    if (submit(f.endpoint, f.dir, 1, job_id, &ignored)) {
        /* wait until the victim runs it */
        for (int i = 0; i < 200; i++) {
            json_t *doc = status(f.endpoint, job_id);
            json_t *job = doc ? find_job(doc, job_id) : NULL;
            long running = job ? (long)json_integer_value(json_object_get(job, "running")) : 0;
            json_decref(doc);
            if (running == 1)
                break;
            usleep(10000);
        }
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        double t0 = bf_mono_s();
        while (bf_mono_s() - t0 < 30) {
            json_t *doc = status(f.endpoint, job_id);
            json_t *job = doc ? find_job(doc, job_id) : NULL;
            long queued = job ? (long)json_integer_value(json_object_get(job, "queued")) : 0;
            json_decref(doc);
            if (queued == 1) {
                detect = bf_mono_s() - t0;
                break;
            }
            usleep(5000);
        }
    } else {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    fleet_stop(&f);
    return detect;
}

static void usage(FILE *to)
{
    fprintf(to, "usage: bench_dispatch BEAMFLEET_BIN [--tasks T] [--workers 1,2,8] [--prefetch P]\n"
                "                      [--repeat R] [--warmup W] [--pool SCRIPT | --no-pool]\n"
                "                      [--no-detect] [--cells N]\n\n"
                "No-op tasks through the real broker (durable) and collector, N no-op workers\n"
                "in threads; per worker count W warm-up runs, then R measured runs (median and\n"
                "min-max), against a raw ROUTER relay and a Python ProcessPoolExecutor running\n"
                "the same number of in-process no-op functions (SCRIPT: bench/pool_anchor.py).\n"
                "--cells N: each result carries two zone arrays of N dBm values, as a boresight\n"
                "result of an N-cell zone does.\n");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v); 0 when n is 0. */
static double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The pool's in-process no-op rate (tasks/s), or 0 when it could not run. */
static double pool_rate(const char *script, unsigned nworkers, unsigned ntasks)
{
    char *cmd = bf_asprintf("python3 '%s' noop --tasks %u --workers %u 2>/dev/null", script, ntasks,
                            nworkers);
    FILE *p = cmd ? popen(cmd, "r") : NULL;
    free(cmd);
    if (!p)
        return 0;
    char line[512] = "";
    double rate = 0;
    while (fgets(line, sizeof line, p)) {
        const char *at = strstr(line, "\"tasks_per_s\":");
        if (at)
            rate = strtod(at + strlen("\"tasks_per_s\":"), NULL);
    }
    pclose(p);
    return rate;
}

/* Parses "1,2,8" into counts (at most max, each 1..64); the number read, 0
   when the list is bad. */
static size_t parse_counts(const char *s, unsigned *counts, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v < 1 || v > 64 || (*end && *end != ','))
            return 0;
        counts[n++] = (unsigned)v;
        s = *end ? end + 1 : end;
    }
    return *s ? 0 : n;
}

int main(int argc, char **argv)
{
    const char *bin = NULL, *pool = BF_BENCH_DIR "/pool_anchor.py";
    unsigned ntasks = 20000, prefetch = 64, repeat = 5, warmup = 1;
    unsigned counts[16] = {1, 2, 8};
    size_t ncounts = 3;
    bool detect_too = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-pool")) {
            pool = NULL;
        } else if (!strcmp(a, "--no-detect")) {
            detect_too = false;
        } else if (a[0] == '-' && !has_value) {
            fprintf(stderr, "bench_dispatch: %s needs a value\n", a);
            return 2;
        } else if (!strcmp(a, "--tasks")) {
            ntasks = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--cells")) {
            result_cells = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--prefetch")) {
            prefetch = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--repeat")) {
            repeat = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--warmup")) {
            warmup = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--pool")) {
            pool = argv[++i];
        } else if (!strcmp(a, "--workers")) {
            if (!(ncounts = parse_counts(argv[++i], counts, BF_ARRAY_LEN(counts)))) {
                fprintf(stderr, "bench_dispatch: --workers wants a list like 1,2,8 (1..64)\n");
                return 2;
            }
        } else if (a[0] == '-' || bin) {
            fprintf(stderr, "bench_dispatch: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            bin = a;
        }
    }
    if (!bin) {
        usage(stderr);
        return 2;
    }
    struct stat st;
    if (stat(bin, &st) != 0 || !S_ISREG(st.st_mode) || access(bin, X_OK) != 0) {
        fprintf(stderr, "bench_dispatch: %s is not an executable file (the beamfleet binary)\n",
                bin);
        return 2;
    }
    if (ntasks == 0 || repeat == 0 || repeat > 100 || warmup > 100) {
        fprintf(stderr, "bench_dispatch: --tasks and --repeat must be at least 1\n");
        return 2;
    }
    bf_log_set_level(BF_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    int port = 20000 + (int)(getpid() % 20000);
    printf("# bench_dispatch: %u no-op tasks, prefetch %u, heartbeat %d ms, %ld cores, "
           "%u warm-up + %u runs each (median, min-max)\n",
           ntasks, prefetch, HEARTBEAT_MS, sysconf(_SC_NPROCESSORS_ONLN), warmup, repeat);
    printf("| workers | beamfleet (tasks/s) | Python pool, in-process (tasks/s) | fleet/pool | "
           "raw ROUTER relay (round trips/s) |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
    double *ours = calloc(repeat, sizeof *ours), *theirs = calloc(repeat, sizeof *theirs);
    for (size_t i = 0; i < ncounts; i++) {
        size_t task_size = 512;
        for (unsigned r = 0; r < warmup; r++) {
            if (fleet_rate(bin, port++, counts[i], prefetch, ntasks, &task_size) <= 0)
                return 1; /* fleet_rate said why */
            if (pool)
                (void)pool_rate(pool, counts[i], ntasks);
        }
        /* Interleaved, so that the machine's noise falls on both alike. */
        for (unsigned r = 0; r < repeat; r++) {
            ours[r] = fleet_rate(bin, port++, counts[i], prefetch, ntasks, &task_size);
            if (ours[r] <= 0)
                return 1;
            theirs[r] = pool ? pool_rate(pool, counts[i], ntasks) : 0;
        }
        double raw = raw_relay(counts[i], task_size, counts[i] * prefetch, ntasks * 5);
        double mo = median(ours, repeat), mt = median(theirs, repeat);
        char pool_s[96] = "n/a", ratio_s[32] = "n/a";
        if (mt > 0) {
            snprintf(pool_s, sizeof pool_s, "%.0f (%.0f-%.0f)", mt, theirs[0], theirs[repeat - 1]);
            snprintf(ratio_s, sizeof ratio_s, "%.2f", mo / mt);
        }
        printf("| %u | %.0f (%.0f-%.0f) | %s | %s | %.0f |\n", counts[i], mo, ours[0],
               ours[repeat - 1], pool_s, ratio_s, raw);
        fflush(stdout);
    }
    free(ours);
    free(theirs);
    if (detect_too) {
        double detect = detection_time(bin, port++);
        printf("\nworker SIGKILL -> task requeued: %.2f s (heartbeat %d ms x liveness %d)\n",
               detect, HEARTBEAT_MS, LIVENESS);
    }
    return 0;
}
