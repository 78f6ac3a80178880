/*  worker/worker_test.c - the worker against a fake broker on real sockets:
    the test plays the broker with a ROUTER on an ephemeral loopback port
    (proto_send / proto_recv, heartbeats every 100 ms) and runs worker_main
    in a thread with a 100 ms heartbeat. It checks registration and caps,
    exec results with their fleet fields, the allow list, a timeout that
    kills the process group, a non-zero exit, ABORT, result re-sending on
    "unknown peer" and after the broker vanishes and comes back on the same
    port (re-READY listing the running task), heartbeats during a 2 s task,
    the drain, and the supervisor (exec of /proc/self/exe, restart of a
    killed worker, SIGTERM passed on). Also the exec handler alone, and the
    device descriptions. Run as `worker_test child --broker EP --device
    cpu|N [--threads T]` it is the program the supervisor re-executes. */

#include "worker.h"

#include "../proto/proto_link.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "../common/bf_check.h"

static int HB_MS; /* bf_test_ms(100), set first thing in main */

static char tmpdir[256];

/* ---- the fake broker ---------------------------------------------------------------- */
#define FB_PEERS 8
typedef struct {
    void *ctx, *router;
    char ep[128];
    uint8_t ids[FB_PEERS][256];
    size_t idlens[FB_PEERS];
    size_t npeers;
    int64_t last_beat;
    int beats_in, progress_in, readys_in;
    uint64_t last_credit; /* of the last READY */
    char last_stage[32];
    char acked[64][64]; /* task ids acked: a repeated RESULT is acked again */
    size_t nacked;
} fb_t;

static bool fb_was_acked(const fb_t *b, const char *task_id)
{
    for (size_t i = 0; task_id && i < b->nacked; i++)
        if (!strcmp(b->acked[i], task_id))
            return true;
    return false;
}

static void fb_bind(fb_t *b, const char *ep)
{
    if (!b->ctx)
        b->ctx = zmq_ctx_new();
    b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(b->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(b->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(b->router, ZMQ_LINGER, &zero, sizeof zero);
    int rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) /* the old listener may still be closing */
        if ((rc = zmq_bind(b->router, ep)) != 0)
            usleep(20000);
    REQUIRE(rc == 0);
    size_t len = sizeof b->ep;
    REQUIRE(zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, b->ep, &len) == 0);
    b->npeers = 0;
}

static void fb_close(fb_t *b)
{
    zmq_close(b->router);
    b->router = NULL;
    b->npeers = 0;
}

static void fb_add_peer(fb_t *b, const uint8_t *id, size_t len)
{
    for (size_t i = 0; i < b->npeers; i++)
        if (b->idlens[i] == len && !memcmp(b->ids[i], id, len))
            return;
    if (b->npeers == FB_PEERS)
        memmove(b->ids, b->ids + 1, sizeof b->ids[0] * --b->npeers);
    memcpy(b->ids[b->npeers], id, len);
    b->idlens[b->npeers++] = len;
}

/* Sends to the newest peer. */
static void fb_send(fb_t *b, proto_msg_t *m)
{
    REQUIRE(b->npeers > 0);
    CHECK(proto_send(b->router, b->ids[b->npeers - 1], b->idlens[b->npeers - 1], m, 0) == BF_OK);
    proto_msg_clear(m);
}

/* Waits up to ms for a message of type, heartbeating every peer meanwhile.
   HEARTBEAT and PROGRESS are counted; anything else unexpected fails. */
static bool fb_expect(fb_t *b, proto_type_t type, int ms, proto_msg_t *out)
{
    int64_t until = bf_mono_ms() + bf_test_ms(ms);
    while (bf_mono_ms() < until) {
        int64_t now = bf_mono_ms();
        if (now - b->last_beat >= HB_MS) {
            for (size_t i = 0; i < b->npeers; i++) {
                proto_msg_t beat;
                proto_msg_init(&beat, PROTO_HEARTBEAT);
                if (proto_send(b->router, b->ids[i], b->idlens[i], &beat, ZMQ_DONTWAIT) != BF_OK) {
                    /* a gone peer */
                }
            }
            b->last_beat = now;
        }
        zmq_pollitem_t it = {b->router, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 20);
        if (!(it.revents & ZMQ_POLLIN))
            continue;
        uint8_t id[256];
        size_t idlen = sizeof id;
        proto_msg_t m;
        char err[BF_ERRLEN];
        if (proto_recv(b->router, id, &idlen, &m, ZMQ_DONTWAIT, err) != BF_OK)
            continue;
        if (m.type == PROTO_READY) {
            fb_add_peer(b, id, idlen);
            b->readys_in++;
            b->last_credit = m.credit;
        }
        if (m.type == type) {
            *out = m;
            return true;
        }
        if (m.type == PROTO_READY) {
            /* a worker that reconnected twice while the broker was away */
        } else if (m.type == PROTO_RESULT && fb_was_acked(b, m.task_id)) {
            proto_msg_t ack;
            proto_msg_init(&ack, PROTO_ACK);
            REQUIRE(proto_msg_set(&ack.task_id, m.task_id) == BF_OK);
            CHECK(proto_send(b->router, id, idlen, &ack, 0) == BF_OK);
            proto_msg_clear(&ack);
        } else if (m.type == PROTO_HEARTBEAT) {
            b->beats_in++;
        } else if (m.type == PROTO_PROGRESS) {
            b->progress_in++;
            bf_strlcpy(b->last_stage, m.stage ? m.stage : "", sizeof b->last_stage);
        } else {
            fprintf(stderr, "fake broker: waiting for %s, got %s (%s)\n", proto_type_name(type),
                    proto_type_name(m.type), m.task_id ? m.task_id : "");
            proto_msg_clear(&m);
            return false;
        }
        proto_msg_clear(&m);
    }
    if (type != PROTO_NONE)
        fprintf(stderr, "fake broker: no %s within %d ms\n", proto_type_name(type), ms);
    return false;
}

/* Pumps heartbeats for ms, failing on anything but HEARTBEAT/PROGRESS. */
static void fb_idle(fb_t *b, int ms)
{
    proto_msg_t m;
    CHECK(!fb_expect(b, PROTO_NONE, ms, &m) || (proto_msg_clear(&m), 0));
}

/* Waits until a PROGRESS at stage has arrived. */
static bool fb_wait_stage(fb_t *b, const char *stage, int ms)
{
    int64_t until = bf_mono_ms() + bf_test_ms(ms);
    while (bf_mono_ms() < until) {
        if (!strcmp(b->last_stage, stage))
            return true;
        proto_msg_t m;
        if (fb_expect(b, PROTO_NONE, 20, &m))
            proto_msg_clear(&m);
    }
    return false;
}

static void fb_task(fb_t *b, const char *task_id, char *const *argv, double timeout_s)
{
    bf_job_t job;
    bf_job_defaults(&job);
    job.name = bf_strdup("t");
    job.scenes_root = bf_strdup(tmpdir);
    job.output = bf_asprintf("%s/out", tmpdir);
    job.task = BF_TASK_EXEC;
    job.timeout_s = timeout_s;
    size_t n = 0;
    while (argv[n])
        n++;
    job.exec_command = calloc(n + 1, sizeof *job.exec_command);
    for (size_t i = 0; i < n; i++)
        job.exec_command[i] = bf_strdup(argv[i]);
    job.exec_argc = n;
    proto_msg_t m;
    proto_msg_init(&m, PROTO_TASK);
    b->last_stage[0] = '\0'; /* fb_wait_stage waits for this task's */
    REQUIRE(proto_msg_set(&m.task_id, task_id) == BF_OK);
    REQUIRE(proto_msg_set(&m.job_id, "0123456789ab") == BF_OK);
    REQUIRE(proto_msg_set(&m.scene, "scene-a") == BF_OK);
    m.attempt = 2;
    m.timeout_ms = (uint64_t)(timeout_s * 1000);
    m.obj = bf_job_to_json(&job, false);
    REQUIRE(m.obj);
    bf_job_clear(&job);
    fb_send(b, &m);
}

static void fb_sh(fb_t *b, const char *task_id, const char *script, double timeout_s)
{
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    fb_task(b, task_id, argv, timeout_s);
}

static void fb_ack(fb_t *b, const char *task_id)
{
    if (b->nacked < 64)
        bf_strlcpy(b->acked[b->nacked++], task_id, sizeof b->acked[0]);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_ACK);
    REQUIRE(proto_msg_set(&m.task_id, task_id) == BF_OK);
    fb_send(b, &m);
}

static bool expect_result(fb_t *b, const char *task_id, int ms, proto_msg_t *out)
{
    if (!fb_expect(b, PROTO_RESULT, ms, out))
        return false;
    if (!out->task_id || strcmp(out->task_id, task_id) != 0) {
        fprintf(stderr, "RESULT for %s, expected %s\n", out->task_id, task_id);
        proto_msg_clear(out);
        return false;
    }
    return true;
}

static const char *res_str(const proto_msg_t *m, const char *key)
{
    const char *s = json_string_value(json_object_get(m->obj, key));
    return s ? s : "";
}

/* A task that sleeps for beats heartbeat intervals, then succeeds. */
static void fb_sleeper(fb_t *b, const char *task_id, int beats)
{
    char script[96];
    snprintf(script, sizeof script, "sleep %.3f; echo '{\"status\":\"success\"}'",
             beats * HB_MS / 1000.0);
    fb_sh(b, task_id, script, 10 + beats * HB_MS / 1000.0);
}

/* ---- the log ------------------------------------------------------------------------ */

/* The worker runs on a thread of this process: its log is this stderr.
   log_capture sends stderr to a file until log_release, which returns what
   was written (free it) and echoes it to the real stderr. */
static int saved_stderr = -1;
static char log_path[300];

static void log_capture(void)
{
    snprintf(log_path, sizeof log_path, "%s/captured.log", tmpdir);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(saved_stderr >= 0 && fd >= 0 && dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* Not inlined: GCC's dangling-pointer check would take the text for the
   local whose address bf_read_file was given. */
__attribute__((noinline)) static char *log_release(void)
{
    fflush(stderr);
    REQUIRE(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    char *text = NULL;
    size_t len = 0;
    REQUIRE(bf_read_file(log_path, 1 << 20, &text, &len, NULL) == BF_OK);
    fputs(text, stderr);
    return text;
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Whether a line of text starts with head (after its time stamp and
   level) and goes on to hold tail. */
static bool line_has(const char *text, const char *head, const char *tail)
{
    const char *at = strstr(text, head);
    if (!at)
        return false;
    const char *end = strchr(at, '\n');
    const char *t = strstr(at, tail);
    return t && (!end || t < end);
}

/* ---- process groups ---------------------------------------------------------------- */

static pid_t read_pid(const char *path, int ms)
{
    int64_t until = bf_mono_ms() + bf_test_ms(ms);
    while (bf_mono_ms() < until) {
        FILE *f = fopen(path, "r");
        long pid = 0;
        if (f) {
            int got = fscanf(f, "%ld", &pid);
            fclose(f);
            if (got == 1 && pid > 0)
                return (pid_t)pid;
        }
        usleep(10000);
    }
    return -1;
}

/* True once no process of group pgid is left (orphans are ours to reap:
   this process is a child subreaper). Call only while no exec task runs. */
static bool group_dead(pid_t pgid, int ms)
{
    int64_t until = bf_mono_ms() + bf_test_ms(ms);
    while (bf_mono_ms() < until) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (kill(-pgid, 0) != 0 && errno == ESRCH)
            return true;
        usleep(20000);
    }
    return false;
}

/* ---- the worker under test ------------------------------------------------------------ */
typedef struct {
    worker_config_t cfg;
    const char *allow[2];
    volatile sig_atomic_t stop;
    int rc;
    pthread_t th;
} wrun_t;

static void *wthread(void *arg)
{
    wrun_t *r = arg;
    r->rc = worker_main(&r->cfg);
    return NULL;
}

/* A worker on its own thread against ep; hold_ms as worker_config_t's
   (< 0 in every test but the credit one, so that READYs come only when a
   test expects them). */
static void worker_start_sched(wrun_t *r, const char *ep, double hold_ms, bool sched_inherit)
{
    memset(r, 0, sizeof *r);
    r->allow[0] = "/bin/sh";
    r->cfg = (worker_config_t){.broker = ep,
                               .heartbeat_ms = HB_MS,
                               .liveness = 3,
                               .prefetch = 1,
                               .hold_ms = hold_ms,
                               .allow_exec = r->allow,
                               .allow_exec_count = 1,
                               .device_index = -1,
                               .cpu = true,
                               .threads = 1,
                               .name = "testhost",
                               .sched_inherit = sched_inherit,
                               .stop = &r->stop};
    r->rc = -1;
    REQUIRE(pthread_create(&r->th, NULL, wthread, r) == 0);
}

static void worker_start_hold(wrun_t *r, const char *ep, double hold_ms)
{
    worker_start_sched(r, ep, hold_ms, false);
}

static void worker_start(wrun_t *r, const char *ep)
{
    worker_start_hold(r, ep, -1);
}

/* A draining worker's GOODBYE, then its thread's end (exit code 0) and the
   fake broker's. */
static void fb_goodbye(fb_t *b, wrun_t *w)
{
    proto_msg_t m;
    REQUIRE(fb_expect(b, PROTO_GOODBYE, 3000, &m));
    proto_msg_clear(&m);
    pthread_join(w->th, NULL);
    CHECK(w->rc == 0);
    fb_close(b);
    zmq_ctx_term(b->ctx);
}

/* ---- the tests -------------------------------------------------------------------------- */

static void test_devices(void)
{
    worker_device_t cpu;
    worker_device_cpu(&cpu);
    CHECK(cpu.index == -1);
    CHECK(cpu.name[0] != '\0');
    CHECK(cpu.memory_bytes > 0);
    CHECK(!strcmp(cpu.backend, "cpu"));
    worker_device_t devs[8];
    size_t n = 99;
    char err[BF_ERRLEN] = "";
    CHECK(worker_device_probe(devs, 8, &n, err) == BF_OK);
    CHECK(n <= 8);
    for (size_t i = 0; i < n && i < 8; i++) {
        CHECK(!strncmp(devs[i].uuid, "GPU-", 4) && strlen(devs[i].uuid) == 40);
        CHECK(!strcmp(devs[i].backend, "cuda") && devs[i].memory_bytes > 0);
        CHECK(devs[i].index == (int)i && devs[i].cc_major > 0);
    }
    CHECK(worker_handler("exec") == worker_exec);
    CHECK(worker_handler("boresight") == worker_boresight);
    CHECK(worker_handler("rm") == NULL);
}

static void progress_nop(void *ud, const char *stage, double fraction)
{
    (void)ud;
    (void)stage;
    (void)fraction;
}

static void test_exec_results(worker_task_ctx_t *ctx, bf_job_t *job);
static void test_exec_interpreters(worker_task_ctx_t *ctx, bf_job_t *job, const char *script);

/* The exec handler alone: the interpreter rule, substitution, bad output, cancel. */
static void test_exec_handler(void)
{
    char script[300], outdir[300];
    snprintf(script, sizeof script, "%s/task.sh", tmpdir);
    snprintf(outdir, sizeof outdir, "%s/out", tmpdir);
    FILE *f = fopen(script, "w");
    REQUIRE(f);
    fprintf(f, "echo progress line\necho '{\"status\":\"success\",\"args\":\"'$1,$2'\"}'\n");
    fclose(f);
    bf_job_t job;
    bf_job_defaults(&job);
    job.task = BF_TASK_EXEC;
    job.output = outdir;
    const char *allow[] = {script};
    volatile int cancel = 0;
    worker_device_t dev;
    worker_device_cpu(&dev);
    worker_task_ctx_t ctx = {.scene_dir = "/scenes/s1",
                             .scene = "s1",
                             .job = &job,
                             .deadline_ms = bf_mono_ms() + 10000,
                             .cancel = &cancel,
                             .dev = &dev,
                             .allow_exec = allow,
                             .allow_exec_count = 1,
                             .progress = progress_nop};
    char err[BF_ERRLEN] = "";
    json_t *res = NULL;
    /* an interpreter running an allowed script */
    char *ok[] = {"sh", script, "{scene_dir}/x", "{output}-{scene}", NULL};
    job.exec_command = ok;
    job.exec_argc = 4;
    CHECK(worker_exec(&ctx, &res, err) == BF_OK);
    CHECK(!strcmp(json_string_value(json_object_get(res, "status")), "success"));
    char want[700];
    snprintf(want, sizeof want, "/scenes/s1/x,%s-s1", outdir);
    CHECK(!strcmp(json_string_value(json_object_get(res, "args")), want));
    json_decref(res);
    res = NULL;
    /* argv[1] counts only for interpreters */
    char *bad[] = {"/bin/cat", script, NULL};
    job.exec_command = bad;
    job.exec_argc = 2;
    CHECK(worker_exec(&ctx, &res, err) == BF_EPERM && !res);
    CHECK(!strcmp(err, "exec not allowed: /bin/cat"));
    /* the last line must be a JSON object with a status */
    const char *allow_sh[] = {"/bin/sh"};
    ctx.allow_exec = allow_sh;
    char *garbage[] = {"/bin/sh", "-c", "echo '{\"status\":\"success\"}'; echo not json", NULL};
    job.exec_command = garbage;
    job.exec_argc = 3;
    CHECK(worker_exec(&ctx, &res, err) == BF_EINVAL && !res);
    CHECK(strstr(err, "last line of stdout is not JSON: ") == err);
    CHECK(strstr(err, "(\"not json\")") != NULL);
    CHECK(!strcmp(worker_fault(BF_EINVAL), "task"));
    test_exec_results(&ctx, &job);
    test_exec_interpreters(&ctx, &job, script);
    ctx.allow_exec = allow_sh; /* the helpers pointed it at their own lists */
    ctx.allow_exec_count = 1;
    ctx.deadline_ms = bf_mono_ms() + 10000;
    /* a cancel kills the group at once */
    char pidfile[300], cmd[400];
    snprintf(pidfile, sizeof pidfile, "%s/cancel.pid", tmpdir);
    snprintf(cmd, sizeof cmd, "echo $$ > %s; sleep 30", pidfile);
    char *slow[] = {"/bin/sh", "-c", cmd, NULL};
    job.exec_command = slow;
    job.exec_argc = 3;
    cancel = 1;
    int64_t t0 = bf_mono_ms();
    CHECK(worker_exec(&ctx, &res, err) == BF_ECANCELED && !res);
    CHECK(bf_mono_ms() - t0 < bf_test_ms(2500));
    job.exec_command = NULL;
    job.exec_argc = 0;
    job.output = NULL;
    bf_job_clear(&job);
}

/* Fault attribution: what the job decided is the task's, CUDA the device's,
   the rest nobody's yet. */
static void test_faults(void)
{
    CHECK(!strcmp(worker_fault(BF_EINVAL), "task"));
    CHECK(!strcmp(worker_fault(BF_EPERM), "task"));
    CHECK(!strcmp(worker_fault(BF_ENOENT), "task"));
    CHECK(!strcmp(worker_fault(BF_EPROTO), "task"));
    CHECK(!strcmp(worker_fault(BF_ECUDA), "device"));
    static const bf_err_t none[] = {BF_OK,     BF_ETIMEDOUT, BF_ECANCELED, BF_ECHILD,
                                    BF_ENOMEM, BF_EIO,       BF_EUNSUPP};
    for (size_t i = 0; i < BF_ARRAY_LEN(none); i++)
        CHECK(worker_fault(none[i]) == NULL);
    char name[64];
    worker_name(name, sizeof name, "node3", 42, 1);
    CHECK(!strcmp(name, "node3:42:gpu1"));
    worker_name(name, sizeof name, NULL, 7, -1);
    char want[300];
    snprintf(want, sizeof want, "%s:7:cpu", bf_hostname());
    CHECK(!strcmp(name, want));
}

/* Runs /bin/sh -c script through the exec handler (allowed: /bin/sh). */
static bf_err_t exec_sh(worker_task_ctx_t *ctx, bf_job_t *job, const char *script, json_t **res,
                        char *err)
{
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    const char *allow[] = {"/bin/sh"};
    ctx->allow_exec = allow;
    ctx->allow_exec_count = 1;
    ctx->deadline_ms = bf_mono_ms() + 20000;
    job->exec_command = argv;
    job->exec_argc = 3;
    *res = NULL;
    err[0] = '\0';
    bf_err_t rc = worker_exec(ctx, res, err);
    job->exec_command = NULL;
    job->exec_argc = 0;
    return rc;
}

/* Result lines: their size limit, why one is refused, a background child
   that keeps stdout open. */
static void test_exec_results(worker_task_ctx_t *ctx, bf_job_t *job)
{
    char err[BF_ERRLEN], script[512];
    json_t *res = NULL;
    /* a 121 kB result line (a notebook-style result with 3,000 zone cells) */
    snprintf(script, sizeof script,
             "echo noise; printf '{\"status\":\"success\",\"pad\":\"'; "
             "head -c 121000 /dev/zero | tr '\\0' x; printf '\"}\\n\\n'");
    CHECK(exec_sh(ctx, job, script, &res, err) == BF_OK);
    CHECK(json_string_length(json_object_get(res, "pad")) == 121000);
    json_decref(res);
    /* exactly WORKER_RESULT_MAX bytes is taken; one more is refused saying so */
    for (int over = 0; over < 2; over++) {
        size_t pad =
            WORKER_RESULT_MAX + (size_t)over - strlen("{\"status\":\"success\",\"pad\":\"\"}");
        snprintf(script, sizeof script,
                 "printf '{\"status\":\"success\",\"pad\":\"'; "
                 "head -c %zu /dev/zero | tr '\\0' x; printf '\"}\\n'",
                 pad);
        bf_err_t rc = exec_sh(ctx, job, script, &res, err);
        if (!over) {
            CHECK(rc == BF_OK && json_string_length(json_object_get(res, "pad")) == pad);
        } else {
            CHECK(rc == BF_EINVAL && !res);
            char want[128];
            snprintf(want, sizeof want, "result line of %u bytes exceeds the 16 MiB limit",
                     WORKER_RESULT_MAX + 1);
            CHECK(!strcmp(err, want));
            if (strcmp(err, want))
                fprintf(stderr, "got: %s\n", err);
        }
        json_decref(res);
    }
    /* the task gets stdin from /dev/null, stdout and stderr, and no other
       descriptor of the worker's, not even one the worker inherited without
       close-on-exec (ls sees its own directory as the fourth; dash keeps a
       copy of stdin as 10) */
    int stray = open("/dev/null", O_RDONLY);
    snprintf(script, sizeof script,
             "echo '{\"status\":\"success\",\"fds\":'$(ls /proc/self/fd | grep -vx 10 | wc -l)',"
             "\"stdin\":\"'$(readlink /proc/self/fd/0)'\"}'");
    CHECK(exec_sh(ctx, job, script, &res, err) == BF_OK);
    CHECKF(json_integer_value(json_object_get(res, "fds")) == 4, "the task has %lld fds",
           (long long)json_integer_value(json_object_get(res, "fds")));
    CHECK(!strcmp(json_string_value(json_object_get(res, "stdin")) ?: "", "/dev/null"));
    json_decref(res);
    if (stray >= 0)
        close(stray);
    /* why a line is not a result: exactly, and never more than an excerpt */
    static const struct {
        const char *script, *want;
    } bad[] = {
        {"echo '[1]'", "result is a JSON array, not an object"},
        {"echo '\"s\"'", "result is a JSON string, not an object"},
        {"echo '{\"x\":1}'", "result has no string `status`"},
        {"echo '{\"status\":3}'", "result has no string `status`"},
        {"echo; echo '  '", "the task wrote no result line on stdout"},
        {"echo '{\"status\": nope, \"secret\": "
         "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}'",
         "last line of stdout is not JSON: "},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(bad); i++) {
        CHECK(exec_sh(ctx, job, bad[i].script, &res, err) == BF_EINVAL && !res);
        CHECK(strstr(err, bad[i].want) == err);
        if (strstr(err, bad[i].want) != err)
            fprintf(stderr, "%s: got '%s'\n", bad[i].script, err);
    }
    CHECK(strstr(err, "at column 15") != NULL);
    if (!strstr(err, "at column 15"))
        fprintf(stderr, "got: %s\n", err);
    CHECK(strstr(err, "0123456789012345678901234567890123456789") == NULL); /* an excerpt only */
    CHECK(strlen(err) < 300);
    /* a background child holds stdout open: the result is what was written
       when the main process exited, at once, and the child is gone */
    char pidfile[300];
    snprintf(pidfile, sizeof pidfile, "%s/bg.pid", tmpdir);
    snprintf(script, sizeof script, "sleep 60 & echo $! > %s; echo '{\"status\":\"success\"}'",
             pidfile);
    int64_t t0 = bf_mono_ms();
    CHECK(exec_sh(ctx, job, script, &res, err) == BF_OK);
    CHECK(!strcmp(json_string_value(json_object_get(res, "status")), "success"));
    CHECK(bf_mono_ms() - t0 < bf_test_ms(1500));
    json_decref(res);
    pid_t bg = read_pid(pidfile, 100);
    CHECK(bg > 0 && group_dead(bg, 2000));
}

/* The interpreter rule: an interpreter counts by its resolved path only. */
static void test_exec_interpreters(worker_task_ctx_t *ctx, bf_job_t *job, const char *script)
{
    char err[BF_ERRLEN], fake[300], copy[300], cmd[PATH_MAX + 400], marker[300];
    json_t *res = NULL;
    const char *allow[] = {script};
    snprintf(fake, sizeof fake, "%s/python3", tmpdir);
    snprintf(copy, sizeof copy, "%s/sh", tmpdir);
    snprintf(marker, sizeof marker, "%s/fake-ran", tmpdir);
    FILE *f = fopen(fake, "w");
    REQUIRE(f);
    fprintf(f, "#!/bin/sh\ntouch %s\necho '{\"status\":\"success\"}'\n", marker);
    fclose(f);
    REQUIRE(chmod(fake, 0755) == 0);
    char real_sh[PATH_MAX];
    REQUIRE(realpath("/bin/sh", real_sh));
    snprintf(cmd, sizeof cmd, "cp %s %s", real_sh, copy);
    REQUIRE(system(cmd) == 0);
    const char *progs[] = {fake, copy};
    for (size_t i = 0; i < BF_ARRAY_LEN(progs); i++) {
        char *argv[] = {(char *)progs[i], (char *)script, NULL};
        job->exec_command = argv;
        job->exec_argc = 2;
        ctx->allow_exec = allow;
        ctx->allow_exec_count = 1;
        ctx->deadline_ms = bf_mono_ms() + 10000;
        CHECK(worker_exec(ctx, &res, err) == BF_EPERM && !res);
        char want[400];
        snprintf(want, sizeof want, "exec not allowed: %s", progs[i]);
        CHECK(!strcmp(err, want));
    }
    CHECK(access(marker, F_OK) != 0); /* it never ran */
    /* the copy of sh, outside PATH, given to the worker as an interpreter
       (--interpreter, worker.interpreters): it runs the allowed script, and
       only that */
    {
        const char *interp[] = {copy};
        char *argv[] = {copy, (char *)script, NULL};
        job->exec_command = argv;
        job->exec_argc = 2;
        ctx->interpreters = interp;
        ctx->interpreter_count = 1;
        ctx->deadline_ms = bf_mono_ms() + 10000;
        CHECKF(worker_exec(ctx, &res, err) == BF_OK, "%s", err);
        json_decref(res);
        res = NULL;
        char *other[] = {copy, "-c", "echo '{\"status\":\"success\"}'", NULL};
        job->exec_command = other;
        job->exec_argc = 3;
        CHECK(worker_exec(ctx, &res, err) == BF_EPERM && !res);
        ctx->interpreters = NULL;
        ctx->interpreter_count = 0;
    }
    /* the host's own interpreter, by name or by path, still runs the script */
    const char *real[] = {"sh", "/bin/sh", real_sh};
    for (size_t i = 0; i < BF_ARRAY_LEN(real); i++) {
        char *argv[] = {(char *)real[i], (char *)script, NULL};
        job->exec_command = argv;
        job->exec_argc = 2;
        ctx->deadline_ms = bf_mono_ms() + 10000;
        CHECK(worker_exec(ctx, &res, err) == BF_OK);
        json_decref(res);
        res = NULL;
    }
    /* a program that is allowed but not there, or not executable: the task's */
    const char *gone[] = {"/nonexistent/prog", script};
    for (size_t i = 0; i < BF_ARRAY_LEN(gone); i++) {
        char *argv[] = {(char *)gone[i], NULL};
        const char *allow_gone[] = {gone[i]};
        job->exec_command = argv;
        job->exec_argc = 1;
        ctx->allow_exec = allow_gone;
        bf_err_t rc = worker_exec(ctx, &res, err);
        CHECK(rc == BF_ENOENT && !res && !strcmp(worker_fault(rc), "task"));
        CHECK(strstr(err, "cannot run ") == err);
    }
    /* an executable file the kernel cannot run (no "#!", not ELF): execve
       itself fails in the child, and its errno reaches the worker (through
       the worker's memory under CLONE_VM, no pipe): the task's fault, not a
       program that ran and exited 127 */
    static char junk[300]; /* static: ctx keeps pointing at the lists */
    static const char *allow_junk[1], *allow_ok[1] = {"/bin/sh"};
    snprintf(junk, sizeof junk, "%s/junk-program", tmpdir);
    allow_junk[0] = junk;
    FILE *jf = fopen(junk, "w");
    REQUIRE(jf != NULL);
    fputs("\x01\x02 not a program\n", jf);
    fclose(jf);
    REQUIRE(chmod(junk, 0755) == 0);
    char *jargv[] = {junk, NULL};
    job->exec_command = jargv;
    job->exec_argc = 1;
    ctx->allow_exec = allow_junk;
    for (int i = 0; i < 3; i++) { /* the errno of one task is not the next one's */
        bf_err_t rc = worker_exec(ctx, &res, err);
        CHECKF(rc == BF_EINVAL && !res && strstr(err, "cannot run ") == err &&
                   strstr(err, strerror(ENOEXEC)),
               "got %s: %s", bf_strerror(rc), err);
        json_decref(res);
        res = NULL;
        if (i == 1) { /* a program that runs, between two that do not */
            char *ok[] = {"/bin/sh", "-c", "echo '{\"status\":\"success\"}'", NULL};
            job->exec_command = ok;
            job->exec_argc = 3;
            ctx->allow_exec = allow_ok;
            CHECK(worker_exec(ctx, &res, err) == BF_OK && res);
            json_decref(res);
            res = NULL;
            job->exec_command = jargv;
            job->exec_argc = 1;
            ctx->allow_exec = allow_junk;
        }
    }
    job->exec_command = NULL;
    job->exec_argc = 0;
}

static void test_fleet(void)
{
    fb_t b = {0};
    fb_bind(&b, "tcp://127.0.0.1:0");
    char ep[128];
    bf_strlcpy(ep, b.ep, sizeof ep);
    wrun_t w;
    worker_start(&w, ep);
    proto_msg_t m;

    /* READY with the capabilities */
    REQUIRE(fb_expect(&b, PROTO_READY, 5000, &m));
    CHECK(m.credit == 1);
    char name[256];
    bf_strlcpy(name, m.worker ? m.worker : "", sizeof name);
    CHECK(!strncmp(name, "testhost:", 9) && strstr(name, ":cpu") != NULL);
    CHECK(!strcmp(res_str(&m, "backend"), "cpu"));
    CHECK(!strcmp(res_str(&m, "host"), bf_hostname()));
    CHECK(json_integer_value(json_object_get(m.obj, "device_index")) == -1);
    CHECK(json_integer_value(json_object_get(m.obj, "pid")) == getpid());
    CHECK(json_integer_value(json_object_get(m.obj, "memory_bytes")) > 0);
    CHECK(!strcmp(res_str(&m, "version"), BF_VERSION));
    CHECK(!strcmp(res_str(&m, "compute_capability"), ""));
    CHECK(json_array_size(json_object_get(m.obj, "tasks")) == 2);
    CHECK(!strcmp(json_string_value(json_array_get(json_object_get(m.obj, "allow_exec"), 0)),
                  "/bin/sh"));
    CHECK(json_is_array(json_object_get(m.obj, "running")) &&
          json_array_size(json_object_get(m.obj, "running")) == 0);
    proto_msg_clear(&m);

    /* a successful exec: the program's document plus the fleet fields */
    fb_sh(&b, "t-ok",
          "echo noise; echo \"{\\\"status\\\":\\\"success\\\",\\\"x\\\":1,"
          "\\\"env\\\":\\\"$BEAMFLEET_SCENE/$BEAMFLEET_GPU_ID/$CUDA_VISIBLE_DEVICES\\\","
          "\\\"dir\\\":\\\"{scene_dir}\\\"}\"",
          10);
    REQUIRE(expect_result(&b, "t-ok", 5000, &m));
    CHECK(m.attempt == 2);
    CHECK(!strcmp(res_str(&m, "status"), "success"));
    CHECK(json_integer_value(json_object_get(m.obj, "x")) == 1);
    CHECK(!strcmp(res_str(&m, "env"), "scene-a/-1/"));
    char dir[400];
    snprintf(dir, sizeof dir, "%s/scene-a", tmpdir);
    CHECK(!strcmp(res_str(&m, "dir"), dir));
    CHECK(!strcmp(res_str(&m, "scene"), "scene-a"));
    CHECK(!strcmp(res_str(&m, "task_id"), "t-ok"));
    CHECK(!strcmp(res_str(&m, "job_id"), "0123456789ab"));
    CHECK(!strcmp(res_str(&m, "host"), bf_hostname()));
    CHECK(!strcmp(res_str(&m, "worker"), name));
    CHECK(!strcmp(res_str(&m, "device"), "cpu"));
    CHECK(!strcmp(res_str(&m, "backend"), "cpu"));
    CHECK(!strcmp(res_str(&m, "reason"), ""));
    CHECK(json_integer_value(json_object_get(m.obj, "gpu_id")) == -1);
    CHECK(json_integer_value(json_object_get(m.obj, "attempt")) == 2);
    CHECK(json_is_number(json_object_get(m.obj, "elapsed_time")));
    proto_msg_clear(&m);
    fb_ack(&b, "t-ok");

    /* The worker keeps the last job spec by its bytes: a spec of the same
       length that differs in one byte is another job (never the one
       cached), the same bytes again are served from the cache, and a spec
       that is not a job is refused as one even after a good one. */
    static const char *const specs[][2] = {
        {"t-spec-1", "echo '{\"status\":\"success\",\"n\":1}'"},
        {"t-spec-2", "echo '{\"status\":\"success\",\"n\":2}'"},
        {"t-spec-2b", "echo '{\"status\":\"success\",\"n\":2}'"},
        {"t-spec-1b", "echo '{\"status\":\"success\",\"n\":1}'"},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(specs); i++) {
        fb_sh(&b, specs[i][0], specs[i][1], 10);
        REQUIRE(expect_result(&b, specs[i][0], 5000, &m));
        json_int_t want = strstr(specs[i][1], "\"n\":1") ? 1 : 2;
        CHECKF(json_integer_value(json_object_get(m.obj, "n")) == want, "%s: n %lld, want %lld",
               specs[i][0], (long long)json_integer_value(json_object_get(m.obj, "n")),
               (long long)want);
        proto_msg_clear(&m);
        fb_ack(&b, specs[i][0]);
    }
    {
        proto_msg_t t;
        proto_msg_init(&t, PROTO_TASK);
        REQUIRE(proto_msg_set(&t.task_id, "t-not-a-job") == BF_OK);
        REQUIRE(proto_msg_set(&t.scene, "scene-a") == BF_OK);
        t.obj = json_pack("{s:s}", "task", "no such task");
        REQUIRE(t.obj);
        fb_send(&b, &t);
        REQUIRE(expect_result(&b, "t-not-a-job", 5000, &m));
        CHECK(!strcmp(res_str(&m, "status"), "error"));
        CHECKF(strstr(res_str(&m, "reason"), "bad job spec") != NULL, "reason: %s",
               res_str(&m, "reason"));
        proto_msg_clear(&m);
        fb_ack(&b, "t-not-a-job");
    }

    /* a program that is not allowed */
    char *echo[] = {"/bin/echo", "{\"status\":\"success\"}", NULL};
    fb_task(&b, "t-deny", echo, 10);
    REQUIRE(expect_result(&b, "t-deny", 5000, &m));
    CHECK(!strcmp(res_str(&m, "status"), "error"));
    CHECK(!strcmp(res_str(&m, "reason"), "exec not allowed: /bin/echo"));
    CHECK(!strcmp(res_str(&m, "fault"), "task"));
    proto_msg_clear(&m);
    fb_ack(&b, "t-deny");

    /* a bad scene name from the network */
    {
        proto_msg_t t;
        proto_msg_init(&t, PROTO_TASK);
        REQUIRE(proto_msg_set(&t.task_id, "t-escape") == BF_OK);
        REQUIRE(proto_msg_set(&t.scene, "..") == BF_OK);
        bf_job_t job;
        bf_job_defaults(&job);
        job.name = bf_strdup("t");
        job.scenes_root = bf_strdup(tmpdir);
        job.output = bf_strdup(tmpdir);
        t.obj = bf_job_to_json(&job, false);
        bf_job_clear(&job);
        fb_send(&b, &t);
        REQUIRE(expect_result(&b, "t-escape", 5000, &m));
        CHECK(!strcmp(res_str(&m, "status"), "error"));
        CHECK(strstr(res_str(&m, "reason"), "bad scene name") != NULL);
        CHECK(!strcmp(res_str(&m, "fault"), "task"));
        proto_msg_clear(&m);
        fb_ack(&b, "t-escape");
    }

    /* a non-zero exit: the tail of stderr */
    fb_sh(&b, "t-exit", "echo first line >&2; echo boom happened >&2; exit 3", 10);
    REQUIRE(expect_result(&b, "t-exit", 5000, &m));
    CHECK(!strcmp(res_str(&m, "status"), "error"));
    CHECK(strstr(res_str(&m, "reason"), "exit status 3") != NULL);
    CHECK(strstr(res_str(&m, "reason"), "boom happened") != NULL);
    CHECK(!json_object_get(m.obj, "fault")); /* a crash: not attributed */
    proto_msg_clear(&m);
    fb_ack(&b, "t-exit");

    /* output that is not a result, and a status that is not one: the task's
       fault; a program cannot blame the device, nor fault a success */
    static const struct {
        const char *id, *script, *status, *fault, *reason;
    } faults[] = {
        {"t-garbage", "echo '[1,2]'", "error", "task", "result is a JSON array, not an object"},
        {"t-weird", "echo '{\"status\":\"great\"}'", "error", "task",
         "the task reported status 'great'"},
        {"t-blame", "echo '{\"status\":\"error\",\"reason\":\"x\",\"fault\":\"device\"}'", "error",
         "", "x"},
        {"t-self", "echo '{\"status\":\"error\",\"reason\":\"y\",\"fault\":\"task\"}'", "error",
         "task", "y"},
        {"t-okfault", "echo '{\"status\":\"success\",\"fault\":\"task\"}'", "success", "", ""},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(faults); i++) {
        fb_sh(&b, faults[i].id, faults[i].script, 10);
        REQUIRE(expect_result(&b, faults[i].id, 5000, &m));
        CHECK(!strcmp(res_str(&m, "status"), faults[i].status));
        CHECK(!strcmp(res_str(&m, "fault"), faults[i].fault));
        CHECK(!strcmp(res_str(&m, "reason"), faults[i].reason));
        if (strcmp(res_str(&m, "reason"), faults[i].reason))
            fprintf(stderr, "%s: reason '%s'\n", faults[i].id, res_str(&m, "reason"));
        proto_msg_clear(&m);
        fb_ack(&b, faults[i].id);
    }

    /* An exec task's log: a short one is one line, with its attempt; one
       still running after a second has its start logged then too. */
    log_capture();
    fb_sh(&b, "t-log-short", "echo '{\"status\":\"success\"}'", 10);
    REQUIRE(expect_result(&b, "t-log-short", 5000, &m));
    proto_msg_clear(&m);
    fb_ack(&b, "t-log-short");
    fb_sh(&b, "t-log-long", "sleep 1.6; echo '{\"status\":\"success\"}'", 10);
    REQUIRE(expect_result(&b, "t-log-long", 5000, &m));
    proto_msg_clear(&m);
    fb_ack(&b, "t-log-long");
    char *log = log_release();
    CHECK(count_lines(log, "task t-log-short:") == 1);
    CHECK(line_has(log, "task t-log-short: scene-a success in ", " s (attempt 2)"));
    CHECK(count_lines(log, "task t-log-long:") == 2);
    CHECK(strstr(log, "task t-log-long: scene-a attempt 2\n") != NULL);
    CHECK(strstr(log, "task t-log-long: scene-a success in 1.") != NULL);
    free(log);

    /* a timeout kills the whole process group */
    char pidfile[300], cmd[600];
    snprintf(pidfile, sizeof pidfile, "%s/timeout.pid", tmpdir);
    snprintf(cmd, sizeof cmd, "echo $$ > %s; sleep 30 & sleep 30", pidfile);
    int64_t t0 = bf_mono_ms();
    fb_sh(&b, "t-slow", cmd, 1);
    REQUIRE(expect_result(&b, "t-slow", 5000, &m));
    int64_t took = bf_mono_ms() - t0;
    CHECK(took >= 900 && took < 1000 + bf_test_ms(2500));
    CHECK(!strcmp(res_str(&m, "status"), "error"));
    CHECK(!strcmp(res_str(&m, "reason"), "timeout after 1 s"));
    CHECK(!json_object_get(m.obj, "fault")); /* a timeout: not attributed */
    proto_msg_clear(&m);
    fb_ack(&b, "t-slow");
    pid_t pg = read_pid(pidfile, 100);
    CHECK(pg > 0 && group_dead(pg, 3000));

    /* ABORT kills the running task, which then gives no result */
    snprintf(pidfile, sizeof pidfile, "%s/abort.pid", tmpdir);
    snprintf(cmd, sizeof cmd, "echo $$ > %s; sleep 30 & sleep 30", pidfile);
    fb_sh(&b, "t-abort", cmd, 60);
    CHECK(fb_wait_stage(&b, "exec", 3000));
    pg = read_pid(pidfile, 3000);
    CHECK(pg > 0);
    proto_msg_t ab;
    proto_msg_init(&ab, PROTO_ABORT);
    REQUIRE(proto_msg_set(&ab.task_id, "t-abort") == BF_OK);
    fb_send(&b, &ab);
    fb_sh(&b, "t-after", "echo '{\"status\":\"failed\",\"reason\":\"zone\"}'", 10);
    REQUIRE(expect_result(&b, "t-after", 5000, &m)); /* not t-abort */
    CHECK(!strcmp(res_str(&m, "status"), "failed"));
    CHECK(!strcmp(res_str(&m, "reason"), "zone"));
    proto_msg_clear(&m);
    fb_ack(&b, "t-after");
    CHECK(pg > 0 && group_dead(pg, 3000));

    /* heartbeats flow during a task of 20 intervals; an unacked result goes
       again after "unknown peer" and re-registration */
    b.beats_in = 0;
    fb_sleeper(&b, "t-2s", 20);
    REQUIRE(expect_result(&b, "t-2s", 5000, &m));
    CHECK(b.beats_in >= 12);
    proto_msg_clear(&m);
    proto_msg_t e;
    proto_msg_init(&e, PROTO_ERROR);
    e.code = BF_ENOENT;
    REQUIRE(proto_msg_set(&e.reason, "unknown peer") == BF_OK);
    fb_send(&b, &e);
    REQUIRE(fb_expect(&b, PROTO_READY, 3000, &m));
    CHECK(json_array_size(json_object_get(m.obj, "running")) == 0);
    proto_msg_clear(&m);
    REQUIRE(expect_result(&b, "t-2s", 3000, &m));
    CHECK(!strcmp(res_str(&m, "status"), "success"));
    proto_msg_clear(&m);
    fb_ack(&b, "t-2s");

    /* the broker goes away during a task and comes back on the same port:
       re-READY listing the running task, then its result */
    fb_sleeper(&b, "t-gone", 30); /* outlives the gap */
    CHECK(fb_wait_stage(&b, "exec", 3000));
    fb_close(&b);
    usleep((useconds_t)(7 * HB_MS) * 1000); /* > 3 heartbeats of silence */
    fb_bind(&b, ep);
    REQUIRE(fb_expect(&b, PROTO_READY, 5000, &m));
    json_t *running = json_object_get(m.obj, "running");
    CHECK(json_array_size(running) == 1 &&
          !strcmp(json_string_value(json_array_get(running, 0)), "t-gone"));
    CHECK(!strcmp(m.worker, name));
    proto_msg_clear(&m);
    REQUIRE(expect_result(&b, "t-gone", 5000, &m));
    proto_msg_clear(&m);
    /* not acked; gone again: after the next registration it comes again */
    fb_close(&b);
    usleep((useconds_t)(7 * HB_MS) * 1000);
    fb_bind(&b, ep);
    REQUIRE(fb_expect(&b, PROTO_READY, 8000, &m));
    CHECK(json_array_size(json_object_get(m.obj, "running")) == 0);
    proto_msg_clear(&m);
    REQUIRE(expect_result(&b, "t-gone", 3000, &m));
    CHECK(!strcmp(res_str(&m, "status"), "success"));
    proto_msg_clear(&m);
    fb_ack(&b, "t-gone");
    fb_idle(&b, 300);

    /* drain: the running task finishes, its result is acked, GOODBYE */
    fb_sleeper(&b, "t-drain", 6);
    CHECK(fb_wait_stage(&b, "exec", 3000));
    bf_flag_raise(&w.stop);
    fb_sh(&b, "t-late", "echo '{\"status\":\"success\"}'", 10); /* not taken */
    REQUIRE(expect_result(&b, "t-drain", 5000, &m));
    proto_msg_clear(&m);
    fb_ack(&b, "t-drain");
    fb_goodbye(&b, &w);
}

/* Adaptive credit: tasks far shorter than the work a worker is to hold
   raise its credit (one READY, to the broker's cap of 64) and no READY
   per task follows; tasks longer than it leave the credit at prefetch. */
static void credit_run(double hold_ms, const char *script, int tasks, int *readys, uint64_t *credit)
{
    fb_t b = {0};
    fb_bind(&b, "tcp://127.0.0.1:0");
    wrun_t w;
    worker_start_hold(&w, b.ep, hold_ms);
    proto_msg_t m;
    REQUIRE(fb_expect(&b, PROTO_READY, 5000, &m));
    CHECK(m.credit == 1);
    proto_msg_clear(&m);
    b.readys_in = 0;
    for (int i = 0; i < tasks; i++) {
        char id[32];
        snprintf(id, sizeof id, "t-credit-%d", i);
        fb_sh(&b, id, script, 10);
        REQUIRE(expect_result(&b, id, 5000, &m));
        CHECK(!strcmp(res_str(&m, "status"), "success"));
        proto_msg_clear(&m);
        fb_ack(&b, id);
    }
    fb_idle(&b, 100);
    *readys = b.readys_in;
    *credit = b.last_credit;
    bf_flag_raise(&w.stop);
    fb_goodbye(&b, &w);
}

static void test_credit(void)
{
    int readys;
    uint64_t credit;
    credit_run(60000, "echo '{\"status\":\"success\"}'", 6, &readys, &credit);
    CHECKF(readys == 1 && credit == 64, "short tasks: %d READYs, credit %llu", readys,
           (unsigned long long)credit);
    credit_run(1, "sleep 0.02; echo '{\"status\":\"success\"}'", 4, &readys, &credit);
    CHECKF(readys == 0, "long tasks: %d READYs (credit %llu)", readys, (unsigned long long)credit);
}

/* The scheduling policy a task of a worker runs under (sched(7): 0
   SCHED_OTHER, 3 SCHED_BATCH), as the task's own process reads it from
   /proc (field 41 of stat); -1 when there is no result. */
static int task_policy(bool inherit)
{
    fb_t b = {0};
    fb_bind(&b, "tcp://127.0.0.1:0");
    wrun_t w;
    worker_start_sched(&w, b.ep, -1, inherit);
    proto_msg_t m;
    REQUIRE(fb_expect(&b, PROTO_READY, 5000, &m));
    proto_msg_clear(&m);
    fb_sh(&b, "t-policy",
          "echo \"{\\\"status\\\":\\\"success\\\",\\\"policy\\\":$(cut -d' ' -f41 "
          "/proc/self/stat)}\"",
          10);
    int policy = -1;
    if (expect_result(&b, "t-policy", 5000, &m)) {
        if (json_is_integer(json_object_get(m.obj, "policy")))
            policy = (int)json_integer_value(json_object_get(m.obj, "policy"));
        proto_msg_clear(&m);
    }
    fb_ack(&b, "t-policy");
    bf_flag_raise(&w.stop);
    fb_goodbye(&b, &w);
    return policy;
}

/* A worker's tasks run as SCHED_BATCH; with sched_inherit, under the
   policy the worker was started with (this test's). */
static void test_sched(void)
{
    int mine = sched_getscheduler(0);
    int batch = task_policy(false), inherited = task_policy(true);
    CHECKF(batch == SCHED_BATCH, "a task's policy %d, expected SCHED_BATCH (%d)", batch,
           SCHED_BATCH);
    CHECKF(inherited == mine, "with sched_inherit a task's policy %d, expected this test's %d",
           inherited, mine);
}

/* The supervisor: two CPU workers by exec of this program, a killed one
   comes back, SIGTERM drains them all. */
/* A supervisor of two CPU workers (this binary's `child` mode) against the
   fake broker at ep, in a child process that dies with this one. */
static pid_t start_supervisor(const char *ep)
{
    pid_t sup = fork();
    REQUIRE(sup >= 0);
    if (sup == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char *argv[] = {"worker_test", "child", "--broker", (char *)ep, NULL};
        worker_config_t cfg = {.broker = ep, .device_index = -1};
        _exit(worker_supervise(&cfg, "none", 2, argv));
    }
    return sup;
}

static void test_supervisor(void)
{
    fb_t b = {0};
    fb_bind(&b, "tcp://127.0.0.1:0");
    char ep[128];
    bf_strlcpy(ep, b.ep, sizeof ep);
    pid_t sup = start_supervisor(ep);
    proto_msg_t m;
    long pids[3] = {0};
    for (int i = 0; i < 2; i++) {
        REQUIRE(fb_expect(&b, PROTO_READY, 8000, &m));
        pids[i] = (long)json_integer_value(json_object_get(m.obj, "pid"));
        CHECK(json_integer_value(json_object_get(m.obj, "threads")) >= 1);
        proto_msg_clear(&m);
    }
    CHECK(pids[0] > 0 && pids[1] > 0 && pids[0] != pids[1]);
    /* exec'd by its real path: ps shows this program's name, not "exe" */
    char path[64], comm[32] = "", self[4096];
    snprintf(path, sizeof path, "/proc/%ld/comm", pids[0]);
    FILE *f = fopen(path, "r");
    CHECK(f && fgets(comm, sizeof comm, f));
    if (f)
        fclose(f);
    comm[strcspn(comm, "\n")] = '\0';
    CHECK(bf_self_exe(self, sizeof self) == BF_OK && self[0] == '/');
    const char *base = strrchr(self, '/') + 1;
    CHECK(!strncmp(comm, base, 15) && strcmp(comm, "exe") != 0);
    CHECK(kill((pid_t)pids[0], SIGKILL) == 0);
    int64_t t0 = bf_mono_ms();
    /* the death is reported at once, by the worker's name */
    REQUIRE(fb_expect(&b, PROTO_LOST, 2000, &m));
    CHECK(bf_mono_ms() - t0 < bf_test_ms(500));
    char lost[300];
    snprintf(lost, sizeof lost, "%s:%ld:cpu", bf_hostname(), pids[0]);
    CHECK(m.worker && !strcmp(m.worker, lost));
    CHECK(m.reason && !strcmp(m.reason, "killed by signal 9"));
    proto_msg_clear(&m);
    REQUIRE(fb_expect(&b, PROTO_READY, 5000, &m)); /* restarted after 1 s */
    pids[2] = (long)json_integer_value(json_object_get(m.obj, "pid"));
    proto_msg_clear(&m);
    CHECK(bf_mono_ms() - t0 >= 800);
    CHECK(pids[2] > 0 && pids[2] != pids[0] && pids[2] != pids[1]);
    CHECK(kill(sup, SIGTERM) == 0);
    for (int i = 0; i < 2; i++) {
        CHECK(fb_expect(&b, PROTO_GOODBYE, 5000, &m));
        proto_msg_clear(&m);
    }
    int status = 0;
    CHECK(waitpid(sup, &status, 0) == sup);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* every worker refused by the broker: the supervisor exits 1 */
    sup = start_supervisor(ep);
    int64_t ready_until = bf_mono_ms() + bf_test_ms(8000);
    for (int i = 0; i < 2 && bf_mono_ms() < ready_until;) {
        if (!fb_expect(&b, PROTO_READY, 200, &m))
            continue; /* the first one's GOODBYE may come between */
        i++;
        proto_msg_clear(&m);
        proto_msg_t e;
        proto_msg_init(&e, PROTO_ERROR);
        e.code = BF_EPERM;
        REQUIRE(proto_msg_set(&e.reason, "key 'x' (role client) may not send ready") == BF_OK);
        fb_send(&b, &e);
    }
    int64_t until = bf_mono_ms() + bf_test_ms(10000);
    pid_t got = 0;
    while (got == 0 && bf_mono_ms() < until) {
        if (fb_expect(&b, PROTO_GOODBYE, 50, &m)) /* a refused worker says goodbye */
            proto_msg_clear(&m);
        got = waitpid(sup, &status, WNOHANG);
    }
    CHECK(got == sup && WIFEXITED(status) && WEXITSTATUS(status) == 1);
    /* a bad list is a usage error */
    worker_config_t cfg = {.broker = ep, .device_index = -1};
    CHECK(worker_supervise(&cfg, "0,x", 1, NULL) == 2);
    fb_close(&b);
    zmq_ctx_term(b.ctx);
}

/* `worker_test child --broker EP --device cpu|N [--threads T]`: what the
   supervisor execs, mapped to worker_main as the CLI does. */
static int child_main(int argc, char **argv)
{
    worker_config_t cfg = {.heartbeat_ms = HB_MS, .liveness = 3, .device_index = -1};
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--broker"))
            cfg.broker = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            cfg.threads = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--device") && !strcmp(argv[i + 1], "cpu"))
            cfg.cpu = true;
        else if (!strcmp(argv[i], "--device"))
            cfg.device_index = atoi(argv[i + 1]);
        else
            return 2;
    }
    bf_log_set_tag("worker-child");
    return worker_main(&cfg);
}

int main(int argc, char **argv)
{
    HB_MS = bf_test_ms(100);
    if (argc > 1 && !strcmp(argv[1], "child"))
        return child_main(argc, argv);
    bf_log_set_tag("worker_test");
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/worker_test.XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    int64_t t0 = bf_mono_ms();
    test_devices();
    test_faults();
    test_exec_handler();
    test_fleet();
    test_credit();
    test_sched();
    /* ThreadSanitizer cannot follow a fork of a threaded process into code
       that starts threads again (the supervisor's children): make test-tsan
       sets BF_TEST_NO_FORK and leaves that part to the other builds. */
    if (!getenv("BF_TEST_NO_FORK"))
        test_supervisor();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    fprintf(stderr, "worker_test: %s in %.1f s\n", failures ? "FAILED" : "ok",
            (double)(bf_mono_ms() - t0) / 1000.0);
    return failures ? 1 : 0;
}
