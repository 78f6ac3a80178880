/*  broker/broker_test.c - the broker over real sockets: broker_run in a
    thread on tcp://127.0.0.1:0 with a temporary state directory, and the
    test playing workers, the collector and clients with DEALER sockets
    through proto_send/proto_recv. Covers submit, credit dispatch, results
    and acks, delivery to the collector in seq order with JOB_DONE, error
    retries up to max_attempts, worker loss, GOODBYE, cancel with ABORT, a
    broker restart on the same state directory with a worker that keeps its
    task and one that does not come back, the status document, unknown
    peers, a flood of garbage, and the hostile cases: fault
    attribution, LOST and its authorization, started versus prefetched
    tasks, the credit cap, the state directory lock, the metrics bind rule
    and one job per output directory. Heartbeat interval 100 ms, liveness
    3. */

#include "broker.h"

#include "../common/bf_config.h"
#include "../proto/proto_link.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static int HB_MS; /* bf_test_ms(100), set first thing in main */
#define LIVENESS 3

#include "../common/bf_check.h"
/* A failed REQUIRE ends the current test case: what follows depends on it. */
#define REQUIRE_OUT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);             \
            failures++;                                                                            \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* ---- the broker in a thread ---------------------------------------------- */

typedef struct {
    broker_t *broker;
    pthread_t thread;
    bf_err_t rc;
    char endpoint[256];
} running_t;

static void *run_thread(void *arg)
{
    running_t *r = arg;
    r->rc = broker_run(r->broker);
    return NULL;
}

static bool start_broker_ex(running_t *r, const char *state_dir, bool throwaway)
{
    char err[BF_ERRLEN] = "";
    broker_config_t cfg = {.bind = "tcp://127.0.0.1:0",
                           .state_dir = state_dir,
                           .heartbeat_ms = HB_MS,
                           .liveness = LIVENESS,
                           .throwaway_state = throwaway};
    memset(r, 0, sizeof *r);
    r->broker = broker_new(&cfg, err);
    if (!r->broker) {
        fprintf(stderr, "broker_new: %s\n", err);
        return false;
    }
    bf_strlcpy(r->endpoint, broker_endpoint(r->broker), sizeof r->endpoint);
    if (pthread_create(&r->thread, NULL, run_thread, r) != 0) {
        broker_destroy(&r->broker);
        return false;
    }
    return true;
}

static bool start_broker(running_t *r, const char *state_dir)
{
    return start_broker_ex(r, state_dir, false);
}

static void stop_broker(running_t *r)
{
    if (!r->broker)
        return;
    broker_stop(r->broker);
    pthread_join(r->thread, NULL);
    CHECK(r->rc == BF_OK);
    broker_destroy(&r->broker);
    CHECK(r->broker == NULL);
}

/* ---- peers played by the test -------------------------------------------- */

typedef struct {
    void *sock;
    bool beat; /* sends HEARTBEAT while the test waits on other sockets */
    int64_t last_beat;
} tpeer_t;

#define MAX_TPEERS 16
static tpeer_t *tpeers[MAX_TPEERS];

static void *ctx;

static void tpeer_open(tpeer_t *p, const char *endpoint)
{
    memset(p, 0, sizeof *p);
    p->sock = zmq_socket(ctx, ZMQ_DEALER);
    char id[33];
    bf_uuid(id);
    int zero = 0;
    zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, id, 16);
    zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(p->sock, endpoint);
    for (int i = 0; i < MAX_TPEERS; i++)
        if (!tpeers[i]) {
            tpeers[i] = p;
            break;
        }
}

static void tpeer_close(tpeer_t *p)
{
    for (int i = 0; i < MAX_TPEERS; i++)
        if (tpeers[i] == p)
            tpeers[i] = NULL;
    if (p->sock)
        zmq_close(p->sock);
    p->sock = NULL;
}

static void tsend(tpeer_t *p, proto_msg_t *m)
{
    CHECK(proto_send(p->sock, NULL, 0, m, 0) == BF_OK);
    proto_msg_clear(m);
}

static void beat_all(void)
{
    int64_t now = bf_mono_ms();
    for (int i = 0; i < MAX_TPEERS; i++) {
        tpeer_t *p = tpeers[i];
        if (p && p->beat && now - p->last_beat >= HB_MS / 2) {
            proto_msg_t hb;
            proto_msg_init(&hb, PROTO_HEARTBEAT);
            tsend(p, &hb);
            p->last_beat = now;
        }
    }
}

/* Waits for the next message of type on p (HEARTBEATs skipped; other types
   are a failure unless type is PROTO_NONE, which takes any). */
static bool trecv(tpeer_t *p, proto_type_t type, int timeout_ms, proto_msg_t *out)
{
    int64_t deadline = bf_mono_ms() + bf_test_ms(timeout_ms);
    proto_msg_init(out, PROTO_NONE);
    while (bf_mono_ms() < deadline) {
        beat_all();
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        char err[BF_ERRLEN];
        if (proto_recv(p->sock, NULL, NULL, out, ZMQ_DONTWAIT, err) != BF_OK)
            continue;
        if (out->type == PROTO_HEARTBEAT) {
            proto_msg_clear(out);
            continue;
        }
        if (type != PROTO_NONE && out->type != type) {
            fprintf(stderr, "  expected %s, got %s (%s)\n", proto_type_name(type),
                    proto_type_name(out->type), out->reason ? out->reason : "");
            proto_msg_clear(out);
            return false;
        }
        return true;
    }
    fprintf(stderr, "  timed out waiting for %s\n", proto_type_name(type));
    return false;
}

/* The next TASK on w, its task id copied into id. */
static bool take_task(tpeer_t *w, char id[33])
{
    proto_msg_t m;
    if (!trecv(w, PROTO_TASK, 2000, &m))
        return false;
    bf_strlcpy(id, m.task_id, 33);
    proto_msg_clear(&m);
    return true;
}

/* True when nothing but heartbeats arrives on p for ms. */
static bool tquiet(tpeer_t *p, int ms)
{
    proto_msg_t m;
    int64_t deadline = bf_mono_ms() + bf_test_ms(ms);
    while (bf_mono_ms() < deadline) {
        beat_all();
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        if (proto_recv(p->sock, NULL, NULL, &m, ZMQ_DONTWAIT, NULL) != BF_OK)
            continue;
        proto_type_t t = m.type;
        proto_msg_clear(&m);
        if (t != PROTO_HEARTBEAT) {
            fprintf(stderr, "  unexpected %s\n", proto_type_name(t));
            return false;
        }
    }
    return true;
}

/* True when the broker sends p a HEARTBEAT within ms (it must, when it
   has sent p nothing else for an interval). */
static bool theartbeat(tpeer_t *p, int ms)
{
    proto_msg_t m;
    int64_t deadline = bf_mono_ms() + bf_test_ms(ms);
    while (bf_mono_ms() < deadline) {
        beat_all();
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        if (proto_recv(p->sock, NULL, NULL, &m, ZMQ_DONTWAIT, NULL) != BF_OK)
            continue;
        proto_type_t t = m.type;
        proto_msg_clear(&m);
        if (t == PROTO_HEARTBEAT)
            return true;
    }
    return false;
}

static void worker_ready(tpeer_t *w, const char *name, unsigned credit, json_t *running)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_READY);
    CHECK(proto_msg_set(&m.worker, name) == BF_OK);
    m.credit = credit;
    m.obj =
        json_pack("{s:s, s:i, s:i, s:s, s:s, s:i, s:s, s:s, s:s, s:[s,s], s:[], s:o}", "host", name,
                  "pid", 42, "device_index", -1, "uuid", "", "name", "cpu", "memory_bytes", 1 << 20,
                  "compute_capability", "", "backend", "cpu", "version", BF_VERSION, "tasks",
                  "exec", "boresight", "allow_exec", "running", running ? running : json_array());
    tsend(w, &m);
    w->beat = true;
}

static void worker_result(tpeer_t *w, const char *task_id, unsigned attempt, const char *status,
                          const char *reason, double elapsed)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_RESULT);
    CHECK(proto_msg_set(&m.task_id, task_id) == BF_OK);
    m.attempt = attempt;
    m.obj = json_pack("{s:s, s:s, s:s, s:s, s:i, s:f, s:{s:f}}", "status", status, "reason", reason,
                      "host", "testhost", "device", "cpu", "gpu_id", -1, "elapsed_time", elapsed,
                      "stats", "improvement_mean", 2.5);
    tsend(w, &m);
}

/* An error result that says whose fault it was ("task", "device"). */
static void worker_fault(tpeer_t *w, const char *task_id, unsigned attempt, const char *reason,
                         const char *fault)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_RESULT);
    CHECK(proto_msg_set(&m.task_id, task_id) == BF_OK);
    m.attempt = attempt;
    m.obj = json_pack("{s:s, s:s, s:s, s:s, s:i, s:f}", "status", "error", "reason", reason, "host",
                      "testhost", "device", "cpu", "gpu_id", -1, "elapsed_time", 0.1);
    if (fault)
        json_object_set_new(m.obj, "fault", json_string(fault));
    tsend(w, &m);
}

/* One request on a fresh client socket; the reply (of type) in *rep. */
static bool request(const char *endpoint, proto_msg_t *req, proto_type_t type, proto_msg_t *rep)
{
    tpeer_t c;
    tpeer_open(&c, endpoint);
    tsend(&c, req);
    bool ok = trecv(&c, type, 3000, rep);
    tpeer_close(&c);
    return ok;
}

static json_t *status_doc(const char *endpoint, const char *job_id, uint64_t cursor)
{
    proto_msg_t req, rep;
    proto_msg_init(&req, PROTO_STATUS);
    CHECK(proto_msg_set(&req.job_id, job_id) == BF_OK);
    req.seq = cursor;
    if (!request(endpoint, &req, PROTO_STATUS_REPLY, &rep))
        return NULL;
    json_t *doc = json_incref(rep.obj);
    proto_msg_clear(&rep);
    return doc;
}

/* Polls the broker's status of job_id ("" for the fleet) until ready(doc,
   arg) holds or ms (scaled, bf_test_ms) pass; returns the last document
   (NULL when the broker did not answer), which the caller checks and frees:
   a deadline that passed shows as the check after it failing. */
typedef bool (*status_ready_fn)(const json_t *doc, const void *arg);
static json_t *status_until(const char *endpoint, const char *job_id, status_ready_fn ready,
                            const void *arg, int ms)
{
    int64_t until = bf_mono_ms() + bf_test_ms(ms);
    for (;;) {
        json_t *doc = status_doc(endpoint, job_id, 0);
        if ((doc && ready(doc, arg)) || bf_mono_ms() >= until)
            return doc;
        json_decref(doc);
        usleep(10 * 1000);
    }
}

static json_t *job_in(json_t *doc, const char *job_id)
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

static int64_t jint(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* status_until conditions */
static bool worker_known(const json_t *doc, const void *name)
{
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(doc, "workers"), i, w)
    {
        if (!strcmp(jstr(w, "name"), name))
            return true;
    }
    return false;
}

static bool events_are(const json_t *doc, const void *count)
{
    return json_array_size(json_object_get(doc, "events")) == *(const size_t *)count;
}

static bool first_worker_at(const json_t *doc, const void *stage)
{
    return !strcmp(jstr(json_array_get(json_object_get(doc, "workers"), 0), "task_stage"), stage);
}

static bool job_requeued_all(const json_t *doc, const void *job_id)
{
    json_t *j = job_in((json_t *)doc, job_id);
    return j && jint(j, "running") == 0 && jint(j, "queued") == 30;
}

static bool job_done_and_delivered(const json_t *doc, const void *job_id)
{
    json_t *j = job_in((json_t *)doc, job_id);
    return j && !strcmp(jstr(j, "state"), "done") &&
           jint(json_object_get(doc, "collector"), "outbox") == 0;
}

static bool outbox_is(const json_t *doc, const void *n)
{
    return jint(json_object_get(doc, "collector"), "outbox") == *(const json_int_t *)n;
}

static bool bad_messages_at_least(const json_t *doc, const void *n)
{
    return jint(json_object_get(doc, "broker"), "bad_messages") >= *(const int64_t *)n;
}

/* Submits a job of n scenes named prefix000...; job_id gets the id. */
static bool submit(const char *endpoint, const char *name, int n, unsigned max_attempts,
                   char job_id[16])
{
    bf_job_t job;
    bf_job_defaults(&job);
    job.name = bf_strdup(name);
    job.scenes_root = bf_strdup("/tmp/scenes");
    job.output = bf_asprintf("/tmp/out/%s", name); /* one output per job */
    job.max_attempts = max_attempts;
    job.timeout_s = 60;
    job.scenes = calloc((size_t)n, sizeof *job.scenes);
    for (int i = 0; i < n; i++)
        job.scenes[i] = bf_asprintf("scene%03d", i);
    job.scene_count = (size_t)n;
    proto_msg_t req, rep;
    proto_msg_init(&req, PROTO_SUBMIT);
    req.obj = bf_job_to_json(&job, true);
    bf_job_clear(&job);
    if (!req.obj)
        return false;
    bool ok = request(endpoint, &req, PROTO_SUBMITTED, &rep);
    if (ok) {
        CHECK(rep.total == (uint64_t)n);
        CHECK(rep.job_id && strlen(rep.job_id) == 12 &&
              strspn(rep.job_id, "0123456789abcdef") == 12);
        bf_strlcpy(job_id, rep.job_id ? rep.job_id : "", 16);
    }
    proto_msg_clear(&rep);
    return ok;
}

static void collector_ack(tpeer_t *c, uint64_t seq)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_ACK);
    m.seq = seq;
    tsend(c, &m);
}

/* ACKS of n seqs, and one more element (extra, when not NULL: stolen). */
static void collector_acks(tpeer_t *c, const uint64_t *seqs, size_t n, json_t *extra)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_ACKS);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_integer((json_int_t)seqs[i]));
    if (extra)
        json_array_append_new(list, extra);
    m.obj = json_pack("{s:o}", "seq", list);
    tsend(c, &m);
}

/* ---- cases ----------------------------------------------------------------- */

static char *temp_dir(void)
{
    char tmpl[] = "/tmp/broker_test.XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? bf_strdup(d) : NULL;
}

static void rm_dir(const char *dir)
{
    char *cmd = bf_asprintf("rm -rf '%s'", dir);
    if (cmd && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    free(cmd);
}

static void test_security(const char *dir)
{
    char err[BF_ERRLEN] = "";
    broker_config_t cfg = {.bind = "tcp://0.0.0.0:0", .state_dir = dir};
    broker_t *b = broker_new(&cfg, err);
    CHECK(b == NULL);
    CHECK(strstr(err, "loopback") != NULL);
    cfg.bind = "tcp://10.1.2.3:5555";
    CHECK(broker_new(&cfg, err) == NULL);
    cfg.bind = "tcp://127.0.0.1:0";
    cfg.state_dir = NULL;
    CHECK(broker_new(&cfg, err) == NULL);
    cfg.state_dir = dir;
    b = broker_new(&cfg, err);
    CHECK(b != NULL);
    CHECK(b && strncmp(broker_endpoint(b), "tcp://127.0.0.1:", 16) == 0 &&
          strcmp(broker_endpoint(b), "tcp://127.0.0.1:0") != 0);
    broker_destroy(&b);
    broker_destroy(&b); /* idempotent */
    cfg.bind = "tcp://*:0";
    cfg.insecure = true;
    b = broker_new(&cfg, err);
    CHECK(b != NULL);
    broker_destroy(&b);
    /* The metrics listener follows the bind rule: loopback, keys or insecure. */
    cfg.bind = "tcp://127.0.0.1:0";
    cfg.insecure = false;
    cfg.metrics_listen = "0.0.0.0:0";
    CHECK(broker_new(&cfg, err) == NULL);
    CHECK(strstr(err, "--metrics") && strstr(err, "loopback") && strstr(err, "--insecure"));
    cfg.metrics_listen = "127.0.0.1:0";
    b = broker_new(&cfg, err);
    CHECK(b != NULL);
    /* One state directory, one broker: the second is refused, naming the pid. */
    broker_config_t again = cfg;
    again.metrics_listen = NULL;
    char want[64];
    snprintf(want, sizeof want, "is in use by pid %ld", (long)getpid());
    CHECK(broker_new(&again, err) == NULL);
    CHECK(strstr(err, "state directory") && strstr(err, want));
    broker_destroy(&b);
    b = broker_new(&again, err); /* free again once the first is gone */
    CHECK(b != NULL);
    broker_destroy(&b);
}

/* Fault attribution: a job's own faults never quarantine a
   device, device faults do, and a task failing without attribution on two
   devices is the task's fault. Also: one output directory, one running
   job. */
static void test_faults(const char *dir)
{
    running_t r;
    tpeer_t a = {0}, b2 = {0}, c2 = {0};
    proto_msg_t m, rep;
    char job_id[16] = "", job2[16] = "", job3[16] = "";
    json_t *doc = NULL;
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "typo", 6, 1, job_id));
    /* the same output again while it runs: refused, naming the job */
    {
        bf_job_t job;
        bf_job_defaults(&job);
        job.name = bf_strdup("second");
        job.scenes_root = bf_strdup("/tmp/scenes");
        job.output = bf_strdup("/tmp//out/./typo/"); /* the same directory */
        job.scenes = calloc(1, sizeof *job.scenes);
        job.scenes[0] = bf_strdup("x");
        job.scene_count = 1;
        proto_msg_init(&m, PROTO_SUBMIT);
        m.obj = bf_job_to_json(&job, true);
        bf_job_clear(&job);
        REQUIRE_OUT(request(r.endpoint, &m, PROTO_ERROR, &rep));
        CHECK(rep.code == BF_EEXIST &&
              strstr(rep.reason, "submit: output /tmp//out/./typo/ is in "
                                 "use by job ") &&
              strstr(rep.reason, job_id) && strstr(rep.reason, "'typo' (still running)"));
        proto_msg_clear(&rep);
    }
    /* Six tasks, each the job's own fault on one worker: never quarantined. */
    tpeer_open(&a, r.endpoint);
    worker_ready(&a, "hostF:1:cpu", 1, NULL);
    for (int i = 0; i < 6; i++) {
        REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m));
        worker_fault(&a, m.task_id, (unsigned)m.attempt, "exec program not allowed", "task");
        proto_msg_clear(&m);
        REQUIRE_OUT(trecv(&a, PROTO_ACK, 2000, &m));
        proto_msg_clear(&m);
    }
    REQUIRE_OUT(submit(r.endpoint, "sick", 4, 1, job2));
    REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m)); /* still given work */
    doc = status_doc(r.endpoint, job_id, 0);
    REQUIRE_OUT(doc);
    json_t *w0 = json_array_get(json_object_get(doc, "workers"), 0);
    CHECK(!json_object_get(w0, "quarantined_for_s"));
    json_t *e0 = json_array_get(json_object_get(doc, "events"), 0);
    CHECK(json_array_size(json_object_get(doc, "events")) == 6);
    CHECK(strstr(jstr(e0, "reason"), "(task fault: exec program not allowed)") != NULL);
    json_decref(doc);
    /* The cursor UINT64_MAX asks for the counters alone: no events. */
    doc = status_doc(r.endpoint, job_id, UINT64_MAX);
    REQUIRE_OUT(doc);
    CHECK(json_array_size(json_object_get(doc, "events")) == 0);
    json_decref(doc);
    doc = NULL;
    /* A device-fault streak still quarantines: three different tasks. */
    for (int i = 0; i < 3; i++) {
        if (i > 0)
            REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m));
        worker_fault(&a, m.task_id, (unsigned)m.attempt, "CUDA error 700", "device");
        proto_msg_clear(&m);
        REQUIRE_OUT(trecv(&a, PROTO_ACK, 2000, &m));
        proto_msg_clear(&m);
    }
    CHECK(tquiet(&a, 200)); /* quarantined: the fourth task waits */
    doc = status_doc(r.endpoint, job2, 0);
    REQUIRE_OUT(doc);
    w0 = json_array_get(json_object_get(doc, "workers"), 0);
    CHECK(!strcmp(jstr(w0, "state"), "quarantined"));
    CHECK(strstr(jstr(w0, "quarantine_reason"), "device fault: CUDA error 700") != NULL);
    json_decref(doc);
    doc = NULL;
    tpeer_close(&a);

    /* Unattributed (a crash, say) on two different workers: the task's
       fault; the final reason says so, and neither worker is charged. */
    REQUIRE_OUT(submit(r.endpoint, "crashy", 1, 2, job3));
    tpeer_open(&b2, r.endpoint);
    tpeer_open(&c2, r.endpoint);
    worker_ready(&b2, "hostG:1:cpu", 1, NULL);
    REQUIRE_OUT(trecv(&b2, PROTO_TASK, 2000, &m)); /* the sick job's last task first */
    if (strcmp(m.job_id, job3) != 0) {
        worker_result(&b2, m.task_id, (unsigned)m.attempt, "success", "", 0.1);
        proto_msg_clear(&m);
        REQUIRE_OUT(trecv(&b2, PROTO_ACK, 2000, &m));
        proto_msg_clear(&m);
        REQUIRE_OUT(trecv(&b2, PROTO_TASK, 2000, &m));
    }
    CHECK(!strcmp(m.job_id, job3));
    /* hostH registered (and known to the broker) before hostG fails, so
       that the retry has somewhere else to go */
    worker_ready(&c2, "hostH:1:cpu", 1, NULL);
    json_t *st = status_until(r.endpoint, "", worker_known, "hostH:1:cpu", 2000);
    CHECK(st && worker_known(st, "hostH:1:cpu"));
    json_decref(st);
    worker_fault(&b2, m.task_id, (unsigned)m.attempt, "exit status 139", NULL);
    proto_msg_clear(&m);
    REQUIRE_OUT(trecv(&c2, PROTO_TASK, 2000, &m)); /* the retry avoids hostG */
    CHECK(!strcmp(m.job_id, job3) && m.attempt == 2);
    worker_fault(&c2, m.task_id, (unsigned)m.attempt, "exit status 139", NULL);
    proto_msg_clear(&m);
    REQUIRE_OUT(trecv(&c2, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);
    doc = status_doc(r.endpoint, job3, 0);
    REQUIRE_OUT(doc);
    e0 = json_array_get(json_object_get(doc, "events"), 0);
    CHECK(!strcmp(jstr(e0, "status"), "error"));
    CHECK(!strncmp(jstr(e0, "reason"), "failed 2 times: ", 16));
    CHECK(strstr(jstr(e0, "reason"), "; failed the same way on 2 devices: task fault") != NULL);
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(doc, "workers"), i, w)
    {
        if (strcmp(jstr(w, "name"), "hostF:1:cpu") != 0) /* the quarantined one, closing */
            CHECK(strcmp(jstr(w, "state"), "quarantined") != 0 &&
                  !json_object_get(w, "suspect_failures"));
    }
out:
    json_decref(doc);
    tpeer_close(&a);
    tpeer_close(&b2);
    tpeer_close(&c2);
    stop_broker(&r);
}

/* LOST: a supervisor reports its worker dead; the broker
   requeues at once what it held, the started task as a failed attempt, the
   prefetched one unchanged, and only the worker's own address may say so.
   Credit is capped. */
static void test_lost(const char *dir)
{
    running_t r;
    tpeer_t w = {0}, sup = {0}, other = {0}, w2 = {0}, x = {0};
    proto_msg_t m;
    char job_id[16] = "", t1[33] = "", t2[33] = "";
    json_t *doc = NULL;
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "lost", 30, 2, job_id));
    tpeer_open(&w, r.endpoint);
    worker_ready(&w, "hostL:1:cpu0", 2, NULL);
    REQUIRE_OUT(take_task(&w, t1));
    REQUIRE_OUT(take_task(&w, t2));
    proto_msg_init(&m, PROTO_PROGRESS); /* t1 runs, t2 waits in its queue */
    CHECK(proto_msg_set(&m.task_id, t1) == BF_OK && proto_msg_set(&m.stage, "exec") == BF_OK);
    m.attempt = 1;
    tsend(&w, &m);

    /* From another address (source 127.0.0.2): refused, nothing changes. */
    const char *port = strrchr(r.endpoint, ':');
    char ep[300];
    snprintf(ep, sizeof ep, "tcp://127.0.0.2:0;127.0.0.1%s", port ? port : "");
    tpeer_open(&other, ep);
    proto_msg_init(&m, PROTO_LOST);
    CHECK(proto_msg_set(&m.worker, "hostL:1:cpu0") == BF_OK &&
          proto_msg_set(&m.reason, "killed by signal 9") == BF_OK);
    tsend(&other, &m);
    REQUIRE_OUT(trecv(&other, PROTO_ERROR, 2000, &m));
    CHECK(m.code == BF_EPERM && strstr(m.reason, "only its own supervisor"));
    proto_msg_clear(&m);
    doc = status_doc(r.endpoint, job_id, 0);
    REQUIRE_OUT(doc);
    CHECK(jint(job_in(doc, job_id), "running") == 2);
    json_decref(doc);
    doc = NULL;

    /* A process nobody has (another pid): no reply, no change. */
    tpeer_open(&sup, r.endpoint);
    proto_msg_init(&m, PROTO_LOST);
    CHECK(proto_msg_set(&m.worker, "hostL:2:cpu0") == BF_OK);
    tsend(&sup, &m);
    CHECK(tquiet(&sup, 100));

    /* Its supervisor (same address): requeued at once. The supervisor knows
       it as the GPU worker it started (...:gpu0); it had found no usable
       GPU and registered as ...:cpu0: the same process. */
    proto_msg_init(&m, PROTO_LOST);
    CHECK(proto_msg_set(&m.worker, "hostL:1:gpu0") == BF_OK &&
          proto_msg_set(&m.reason, "killed by signal 9") == BF_OK);
    int64_t t0 = bf_mono_ms();
    tsend(&sup, &m);
    w.beat = true; /* it still beats: only LOST can have killed it */
    doc = status_until(r.endpoint, job_id, job_requeued_all, job_id, 2000);
    int64_t took = doc && job_requeued_all(doc, job_id) ? bf_mono_ms() - t0 : -1;
    json_decref(doc);
    doc = NULL;
    CHECK(took >= 0 && took < HB_MS * LIVENESS);
    printf("  LOST -> requeued in %lld ms (heartbeat expiry: %d ms)\n", (long long)took,
           HB_MS * LIVENESS);
    tpeer_open(&w2, r.endpoint);
    worker_ready(&w2, "hostM:1:cpu0", 2, NULL);
    bool got1 = false, got2 = false;
    for (int k = 0; k < 2; k++) {
        REQUIRE_OUT(trecv(&w2, PROTO_TASK, 2000, &m));
        if (!strcmp(m.task_id, t1)) {
            got1 = true;
            CHECK(m.attempt == 2); /* it had started */
            /* fails again, unattributed, elsewhere: final, the task's fault */
            worker_fault(&w2, t1, 2, "exit status 1", NULL);
        } else if (!strcmp(m.task_id, t2)) {
            got2 = true;
            CHECK(m.attempt == 1); /* never ran: not an attempt */
            worker_result(&w2, t2, 1, "success", "", 0.1);
        }
        proto_msg_clear(&m);
    }
    CHECK(got1 && got2);
    doc = status_until(r.endpoint, job_id, events_are, &(size_t){2}, 2000);
    REQUIRE_OUT(doc);
    CHECK(json_array_size(json_object_get(doc, "events")) == 2);
    size_t i;
    json_t *e;
    bool seen = false;
    json_array_foreach(json_object_get(doc, "events"), i, e)
    {
        if (strcmp(jstr(e, "task_id"), t1) != 0)
            continue;
        seen = true;
        CHECK(strstr(jstr(e, "reason"), "(worker lost: killed by signal 9)") != NULL);
        CHECK(strstr(jstr(e, "reason"), "failed the same way on 2 devices: task fault") != NULL);
    }
    CHECK(seen);
    json_decref(doc);
    doc = NULL;
    /* A READY with credit 2^63 gets CREDIT_BASE (16) tasks, not the queue. */
    tpeer_open(&x, r.endpoint);
    proto_msg_init(&m, PROTO_READY);
    CHECK(proto_msg_set(&m.worker, "greedy:1:cpu") == BF_OK);
    m.credit = UINT64_C(1) << 63;
    m.obj = json_pack("{s:s, s:i, s:s}", "host", "greedy", "device_index", -1, "name", "cpu");
    tsend(&x, &m);
    x.beat = true;
    int got = 0;
    for (int64_t until = bf_mono_ms() + 300; bf_mono_ms() < until;) {
        beat_all();
        zmq_pollitem_t it = {x.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0 || proto_recv(x.sock, NULL, NULL, &m, 0, NULL) != BF_OK)
            continue;
        if (m.type == PROTO_TASK) {
            got++;
            until = bf_mono_ms() + 300; /* until 300 ms pass without one */
        }
        proto_msg_clear(&m);
    }
    CHECK(got == 16);
out:
    json_decref(doc);
    tpeer_close(&w);
    tpeer_close(&sup);
    tpeer_close(&other);
    tpeer_close(&w2);
    tpeer_close(&x);
    stop_broker(&r);
}

/* Submit, dispatch, results, retries, worker loss, goodbye, delivery. */
static void test_flow(const char *dir)
{
    running_t r;
    tpeer_t a = {0}, bw = {0}, cw = {0}, col = {0}, stranger = {0};
    proto_msg_t m;
    char job_id[16] = "";
    json_t *doc = NULL;
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "flow", 5, 3, job_id));

    /* READY with credit 2 -> two TASKs, in scene order, attempt 1 */
    tpeer_open(&a, r.endpoint);
    worker_ready(&a, "hostA:1:cpu", 2, NULL);
    char t0[33], t1[33], t2[33];
    REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m));
    CHECK(!strcmp(m.scene, "scene000") && m.attempt == 1 && !strcmp(m.job_id, job_id));
    CHECK(m.timeout_ms == 60000);
    CHECK(json_is_object(m.obj) && !json_object_get(m.obj, "scenes"));
    bf_strlcpy(t0, m.task_id, sizeof t0);
    proto_msg_clear(&m);
    REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m));
    CHECK(!strcmp(m.scene, "scene001") && m.attempt == 1);
    bf_strlcpy(t1, m.task_id, sizeof t1);
    proto_msg_clear(&m);
    CHECK(tquiet(&a, 150)); /* no credit left */

    /* RESULT -> ACK, and the credit brings the next TASK */
    worker_result(&a, t0, 1, "success", "", 1.5);
    REQUIRE_OUT(trecv(&a, PROTO_ACK, 2000, &m));
    CHECK(!strcmp(m.task_id, t0));
    proto_msg_clear(&m);
    REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m));
    CHECK(!strcmp(m.scene, "scene002"));
    bf_strlcpy(t2, m.task_id, sizeof t2);
    proto_msg_clear(&m);

    /* A duplicate result (the worker re-sending) is acked and ignored. */
    worker_result(&a, t0, 1, "success", "", 1.5);
    REQUIRE_OUT(trecv(&a, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);

    /* The collector gets the result with its job info; ACK removes it. */
    tpeer_open(&col, r.endpoint);
    proto_msg_init(&m, PROTO_COLLECT);
    CHECK(proto_msg_set(&m.worker, "collector") == BF_OK);
    m.credit = 16;
    tsend(&col, &m);
    col.beat = true;
    REQUIRE_OUT(trecv(&col, PROTO_DELIVER, 2000, &m));
    CHECK(!strcmp(m.task_id, t0) && !strcmp(m.job_id, job_id));
    json_t *res = json_object_get(m.obj, "result"), *ji = json_object_get(m.obj, "job");
    CHECK(!strcmp(jstr(res, "status"), "success") && !strcmp(jstr(res, "scene"), "scene000"));
    CHECK(!strcmp(jstr(res, "task_id"), t0) && jint(res, "attempt") == 1);
    CHECK(!strcmp(jstr(ji, "id"), job_id) && !strcmp(jstr(ji, "name"), "flow"));
    CHECK(!strcmp(jstr(ji, "output"), "/tmp/out/flow") && !strcmp(jstr(ji, "task"), "boresight"));
    CHECK(jint(ji, "total") == 5 && !strcmp(jstr(ji, "state"), "running"));
    uint64_t last_seq = m.seq;
    collector_ack(&col, m.seq);
    proto_msg_clear(&m);

    /* "error" is retried (requeued first, attempt + 1) up to max_attempts,
       then final with every failure in the reason. */
    for (unsigned attempt = 1; attempt <= 3; attempt++) {
        worker_result(&a, t1, attempt, "error", "boom", 0.1);
        REQUIRE_OUT(trecv(&a, PROTO_ACK, 2000, &m));
        proto_msg_clear(&m);
        if (attempt < 3) {
            REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m));
            CHECK(!strcmp(m.task_id, t1) && m.attempt == attempt + 1);
            proto_msg_clear(&m);
        }
    }
    REQUIRE_OUT(trecv(&col, PROTO_DELIVER, 2000, &m));
    res = json_object_get(m.obj, "result");
    CHECK(!strcmp(m.task_id, t1) && m.seq > last_seq);
    CHECK(!strcmp(jstr(res, "status"), "error"));
    CHECK(!strncmp(jstr(res, "reason"), "failed 3 times: testhost/cpu [", 30));
    CHECK(json_array_size(json_object_get(res, "failures")) == 3);
    CHECK(jint(res, "attempt") == 3);
    last_seq = m.seq;
    collector_ack(&col, m.seq);
    proto_msg_clear(&m);
    /* A now holds t2 and, with its credit back, scene003. */
    char t3[33];
    REQUIRE_OUT(trecv(&a, PROTO_TASK, 2000, &m));
    CHECK(!strcmp(m.scene, "scene003"));
    bf_strlcpy(t3, m.task_id, sizeof t3);
    proto_msg_clear(&m);

    /* Unknown peer HEARTBEAT -> ERROR ENOENT. */
    tpeer_open(&stranger, r.endpoint);
    proto_msg_init(&m, PROTO_HEARTBEAT);
    tsend(&stranger, &m);
    REQUIRE_OUT(trecv(&stranger, PROTO_ERROR, 2000, &m));
    CHECK(m.code == BF_ENOENT && strstr(m.reason, "unknown peer"));
    proto_msg_clear(&m);

    /* Worker A goes silent holding t2 (started: it sent PROGRESS) and t3
       (prefetched, never started): both go to B within I*L (plus a
       housekeeping tick), t2 as attempt 2, t3 still as attempt 1. */
    proto_msg_init(&m, PROTO_PROGRESS);
    CHECK(proto_msg_set(&m.task_id, t2) == BF_OK && proto_msg_set(&m.stage, "exec") == BF_OK);
    m.attempt = 1;
    tsend(&a, &m);
    tpeer_open(&bw, r.endpoint);
    worker_ready(&bw, "hostB:2:cpu", 3, NULL);
    REQUIRE_OUT(trecv(&bw, PROTO_TASK, 2000, &m)); /* scene004, queued */
    CHECK(!strcmp(m.scene, "scene004") && m.attempt == 1);
    char t4[33];
    bf_strlcpy(t4, m.task_id, sizeof t4);
    proto_msg_clear(&m);
    a.beat = false;
    int64_t silent_since = bf_mono_ms();
    bool got2 = false, got3 = false;
    for (int k = 0; k < 2; k++) {
        REQUIRE_OUT(trecv(&bw, PROTO_TASK, 2000, &m));
        CHECK(m.attempt == (!strcmp(m.task_id, t2) ? 2u : 1u));
        got2 |= !strcmp(m.task_id, t2);
        got3 |= !strcmp(m.task_id, t3);
        proto_msg_clear(&m);
    }
    int64_t took = bf_mono_ms() - silent_since;
    CHECK(got2 && got3);
    CHECK(took < HB_MS * LIVENESS + 3 * HB_MS);
    tpeer_close(&a);

    /* GOODBYE returns t4 without counting an attempt. */
    worker_result(&bw, t2, 2, "success", "", 2.0);
    worker_result(&bw, t3, 2, "failed", "zone failed validation", 2.0);
    REQUIRE_OUT(trecv(&bw, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);
    REQUIRE_OUT(trecv(&bw, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);
    proto_msg_init(&m, PROTO_GOODBYE);
    tsend(&bw, &m);
    bw.beat = false;
    tpeer_open(&cw, r.endpoint);
    worker_ready(&cw, "hostC:3:cpu", 1, NULL);
    REQUIRE_OUT(trecv(&cw, PROTO_TASK, 2000, &m));
    CHECK(!strcmp(m.task_id, t4) && m.attempt == 1);
    proto_msg_clear(&m);

    /* Status while C runs t4 and reports progress. */
    proto_msg_init(&m, PROTO_PROGRESS);
    CHECK(proto_msg_set(&m.task_id, t4) == BF_OK);
    CHECK(proto_msg_set(&m.stage, "trace") == BF_OK);
    m.attempt = 1;
    m.fraction = 0.5;
    tsend(&cw, &m);
    json_decref(doc); /* PROGRESS and STATUS use two connections: poll */
    doc = status_until(r.endpoint, "", first_worker_at, "trace", 1000);
    REQUIRE_OUT(doc);
    CHECK(first_worker_at(doc, "trace"));
    json_t *br = json_object_get(doc, "broker");
    CHECK(!strcmp(jstr(br, "version"), BF_VERSION) && !strcmp(jstr(br, "state_dir"), dir));
    CHECK(json_is_number(json_object_get(br, "uptime_s")));
    json_t *workers = json_object_get(doc, "workers");
    CHECK(json_array_size(workers) == 1);
    json_t *w0 = json_array_get(workers, 0);
    CHECK(!strcmp(jstr(w0, "name"), "hostC:3:cpu") && !strcmp(jstr(w0, "state"), "busy"));
    CHECK(!strcmp(jstr(w0, "task_scene"), "scene004") && !strcmp(jstr(w0, "backend"), "cpu"));
    CHECK(!strcmp(jstr(w0, "host"), "hostC:3:cpu") && jint(w0, "device_index") == -1);
    CHECK(jint(w0, "credit") == 0 && jint(w0, "memory_bytes") == 1 << 20);
    CHECK(!strcmp(jstr(w0, "task_stage"), "trace"));
    CHECK(json_real_value(json_object_get(w0, "task_fraction")) == 0.5);
    json_t *c = json_object_get(doc, "collector");
    CHECK(json_is_true(json_object_get(c, "connected")));
    CHECK(json_integer_value(json_object_get(doc, "queue")) == 0);
    json_t *j = job_in(doc, job_id);
    CHECK(j && jint(j, "total") == 5 && jint(j, "final") == 4 && jint(j, "running") == 1);
    CHECK(j && jint(j, "queued") == 0 && !strcmp(jstr(j, "state"), "running"));
    json_t *counts = json_object_get(j, "counts");
    CHECK(jint(counts, "success") == 2 && jint(counts, "failed") == 1 &&
          jint(counts, "error") == 1 && jint(counts, "cancelled") == 0);
    CHECK(j && json_real_value(json_object_get(j, "eta_s")) >= 0);
    CHECK(j && json_real_value(json_object_get(j, "rate_per_min")) > 0);
    json_t *events = json_object_get(doc, "events");
    CHECK(json_array_size(events) == 4);
    json_t *e0 = json_array_get(events, 0);
    CHECK(!strcmp(jstr(e0, "task_id"), t0) && !strcmp(jstr(e0, "status"), "success"));
    CHECK(json_real_value(json_object_get(e0, "improvement_mean")) == 2.5);
    CHECK(!strcmp(jstr(e0, "scene"), "scene000") && !strcmp(jstr(e0, "host"), "testhost"));
    /* the members an event shows, and nothing else of the result */
    CHECK(json_object_size(e0) == 12 && jint(e0, "gpu_id") == -1 && jint(e0, "attempt") == 1 &&
          json_is_real(json_object_get(e0, "elapsed_time")) && !strcmp(jstr(e0, "device"), "cpu") &&
          !json_object_get(e0, "stats"));
    uint64_t next = (uint64_t)jint(doc, "next_seq");
    CHECK(next == (uint64_t)jint(json_array_get(events, 3), "seq"));
    json_decref(doc);
    doc = status_doc(r.endpoint, job_id, next);
    CHECK(doc && json_array_size(json_object_get(doc, "events")) == 0);
    CHECK(doc && (uint64_t)jint(doc, "next_seq") == next);
    json_decref(doc);
    doc = NULL;

    /* The last result: DELIVERs in seq order, then JOB_DONE. */
    worker_result(&cw, t4, 1, "success", "", 3.0);
    REQUIRE_OUT(trecv(&cw, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);
    int delivered = 0;
    uint64_t seqs[8];
    size_t nseqs = 0;
    for (;;) {
        REQUIRE_OUT(trecv(&col, PROTO_NONE, 2000, &m));
        CHECK(m.seq > last_seq);
        last_seq = m.seq;
        if (nseqs < 8)
            seqs[nseqs++] = m.seq;
        if (m.type == PROTO_JOB_DONE) {
            ji = json_object_get(m.obj, "job");
            CHECK(!strcmp(jstr(ji, "state"), "done") && jint(ji, "finished_ms") > 0);
            CHECK(jint(json_object_get(ji, "counts"), "success") == 3);
            CHECK(!strcmp(m.job_id, job_id));
            proto_msg_clear(&m);
            break;
        }
        CHECK(m.type == PROTO_DELIVER);
        delivered++;
        proto_msg_clear(&m);
    }
    CHECK(delivered == 3); /* t2, t3, t4 */
    /* ACKS: a list with one bad element is dropped whole; then the first
       row alone (so the bad one, sent before on the same connection, has
       been handled when the outbox holds three), then the rest at once. */
    REQUIRE_OUT(nseqs == 4);
    collector_acks(&col, seqs, 4, json_integer(0));
    collector_acks(&col, seqs, 1, NULL);
    json_int_t three = 3;
    doc = status_until(r.endpoint, "", outbox_is, &three, 2000);
    CHECK(doc && jint(json_object_get(doc, "collector"), "outbox") == 3);
    json_decref(doc);
    collector_acks(&col, seqs + 1, 3, NULL);
    doc = status_until(r.endpoint, "", job_done_and_delivered, job_id, 2000);
    CHECK(doc && jint(json_object_get(doc, "collector"), "outbox") == 0);
    j = job_in(doc, job_id);
    CHECK(j && !strcmp(jstr(j, "state"), "done"));
    w0 = json_array_get(json_object_get(doc, "workers"), 0);
    CHECK(jint(w0, "done") == 1 && json_real_value(json_object_get(w0, "mean_s")) == 3.0);
out:
    json_decref(doc);
    tpeer_close(&a);
    tpeer_close(&bw);
    tpeer_close(&cw);
    tpeer_close(&col);
    tpeer_close(&stranger);
    stop_broker(&r);
}

static void test_cancel(const char *dir)
{
    running_t r;
    tpeer_t w = {0}, col = {0};
    proto_msg_t m, rep;
    char job_id[16] = "";
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "cancel-me", 4, 3, job_id));
    tpeer_open(&w, r.endpoint);
    worker_ready(&w, "hostW:1:cpu", 1, NULL);
    REQUIRE_OUT(trecv(&w, PROTO_TASK, 2000, &m));
    char running[33];
    bf_strlcpy(running, m.task_id, sizeof running);
    proto_msg_clear(&m);

    proto_msg_init(&m, PROTO_CANCEL);
    CHECK(proto_msg_set(&m.job_id, job_id) == BF_OK);
    REQUIRE_OUT(request(r.endpoint, &m, PROTO_CANCELLED, &rep));
    CHECK(rep.total == 4 && !strcmp(rep.job_id, job_id));
    proto_msg_clear(&rep);
    REQUIRE_OUT(trecv(&w, PROTO_ABORT, 2000, &m));
    CHECK(!strcmp(m.task_id, running));
    proto_msg_clear(&m);
    CHECK(tquiet(&w, 200)); /* nothing left to run */

    proto_msg_init(&m, PROTO_CANCEL);
    CHECK(proto_msg_set(&m.job_id, "0123456789ab") == BF_OK);
    REQUIRE_OUT(request(r.endpoint, &m, PROTO_ERROR, &rep));
    CHECK(rep.code == BF_ENOENT);
    proto_msg_clear(&rep);

    /* A late result of the aborted task is acked and ignored. */
    worker_result(&w, running, 1, "success", "", 1.0);
    REQUIRE_OUT(trecv(&w, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);

    tpeer_open(&col, r.endpoint);
    proto_msg_init(&m, PROTO_COLLECT);
    m.credit = 2; /* smaller than what waits: the window refills on ACK */
    tsend(&col, &m);
    col.beat = true;
    int cancelled = 0;
    for (;;) {
        REQUIRE_OUT(trecv(&col, PROTO_NONE, 2000, &m));
        collector_ack(&col, m.seq);
        if (m.type == PROTO_JOB_DONE) {
            CHECK(!strcmp(jstr(json_object_get(m.obj, "job"), "state"), "cancelled"));
            proto_msg_clear(&m);
            break;
        }
        json_t *res = json_object_get(m.obj, "result");
        cancelled += !strcmp(jstr(res, "status"), "cancelled") &&
                     !strcmp(jstr(res, "reason"), "cancelled by user");
        proto_msg_clear(&m);
    }
    CHECK(cancelled == 4);
    /* Idle peers hear from the broker every interval. */
    CHECK(theartbeat(&w, 3 * HB_MS));
    CHECK(theartbeat(&col, 3 * HB_MS));
out:
    tpeer_close(&w);
    tpeer_close(&col);
    stop_broker(&r);
}

/* Restart on the same state directory: jobs, tasks and the outbox come
   back; a worker that re-registers with its task keeps it; the task of one
   that does not come back is requeued after the grace window. */
static void test_restart(const char *dir)
{
    running_t r;
    tpeer_t w1 = {0}, w2 = {0}, w3 = {0}, col = {0};
    proto_msg_t m;
    char job_id[16] = "", ta[33] = "", tb[33] = "", tc[33] = "";
    json_t *doc = NULL;
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "restart", 4, 3, job_id));
    tpeer_open(&w1, r.endpoint);
    worker_ready(&w1, "hostR1:1:cpu", 1, NULL);
    REQUIRE_OUT(take_task(&w1, ta));
    tpeer_open(&w2, r.endpoint);
    worker_ready(&w2, "hostR2:1:cpu", 1, NULL);
    REQUIRE_OUT(take_task(&w2, tb));
    worker_result(&w1, ta, 1, "success", "", 1.0);
    REQUIRE_OUT(trecv(&w1, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);
    REQUIRE_OUT(trecv(&w1, PROTO_TASK, 2000, &m));
    bf_strlcpy(tc, m.task_id, sizeof tc);
    CHECK(!strcmp(m.scene, "scene002"));
    proto_msg_clear(&m);
    tpeer_close(&w1);
    tpeer_close(&w2);
    stop_broker(&r);

    REQUIRE_OUT(start_broker(&r, dir));
    int64_t restarted = bf_mono_ms();
    tpeer_open(&w1, r.endpoint); /* a new connection, as a real worker makes */
    worker_ready(&w1, "hostR1:1:cpu", 1, json_pack("[s]", tc));
    tpeer_open(&w3, r.endpoint);
    worker_ready(&w3, "hostR3:1:cpu", 2, NULL);
    REQUIRE_OUT(trecv(&w3, PROTO_TASK, 2000, &m));
    CHECK(!strcmp(m.scene, "scene003") && m.attempt == 1);
    proto_msg_clear(&m);
    /* tb's worker never comes back: requeued after 2*I*L as a lost attempt */
    REQUIRE_OUT(trecv(&w3, PROTO_TASK, 3000, &m));
    CHECK(!strcmp(m.task_id, tb) && m.attempt == 2);
    CHECK(bf_mono_ms() - restarted >= 2 * HB_MS * LIVENESS - 50);
    proto_msg_clear(&m);
    CHECK(tquiet(&w1, 100)); /* w1 kept tc: no new task, no abort */
    worker_result(&w1, tc, 1, "success", "", 1.0);
    REQUIRE_OUT(trecv(&w1, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);

    doc = status_doc(r.endpoint, job_id, 0);
    REQUIRE_OUT(doc);
    json_t *j = job_in(doc, job_id);
    CHECK(j && jint(j, "total") == 4 && jint(j, "final") == 2 && jint(j, "running") == 2);
    CHECK(json_array_size(json_object_get(doc, "events")) == 2);
    CHECK(jint(json_object_get(doc, "collector"), "outbox") == 2);
    json_decref(doc);
    doc = NULL;

    /* The result from before the restart is still waiting for the collector. */
    tpeer_open(&col, r.endpoint);
    proto_msg_init(&m, PROTO_COLLECT);
    m.credit = 8;
    tsend(&col, &m);
    col.beat = true;
    REQUIRE_OUT(trecv(&col, PROTO_DELIVER, 2000, &m));
    CHECK(!strcmp(m.task_id, ta));
    proto_msg_clear(&m);
    REQUIRE_OUT(trecv(&col, PROTO_DELIVER, 2000, &m));
    CHECK(!strcmp(m.task_id, tc));
    proto_msg_clear(&m);
    /* Not acked: a new collector connection gets them again, in order. */
    tpeer_close(&col);
    tpeer_open(&col, r.endpoint);
    proto_msg_init(&m, PROTO_COLLECT);
    m.credit = 8;
    tsend(&col, &m);
    col.beat = true;
    REQUIRE_OUT(trecv(&col, PROTO_DELIVER, 2000, &m));
    CHECK(!strcmp(m.task_id, ta));
    proto_msg_clear(&m);
out:
    json_decref(doc);
    tpeer_close(&w1);
    tpeer_close(&w2);
    tpeer_close(&w3);
    tpeer_close(&col);
    stop_broker(&r);
}

/* 2000 frames of garbage (random bytes, multi-frame, truncated valid
   messages, wrong versions, an oversize frame): the broker answers STATUS
   afterwards. */
static void test_garbage(const char *dir)
{
    running_t r;
    tpeer_t g = {0};
    json_t *doc = NULL;
    REQUIRE_OUT(start_broker(&r, dir));
    tpeer_open(&g, r.endpoint);
    unsigned seed = 12345;
    uint8_t buf[512];
    proto_msg_t ok;
    proto_msg_init(&ok, PROTO_READY);
    ok.obj = json_pack("{s:s}", "host", "x");
    uint8_t *valid = NULL;
    size_t valid_len = 0;
    CHECK(proto_encode(&ok, &valid, &valid_len) == BF_OK);
    proto_msg_clear(&ok);
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(rand_r(&seed) % sizeof buf);
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rand_r(&seed);
        switch (i % 5) {
        case 0: /* random bytes */
            zmq_send(g.sock, buf, n, 0);
            break;
        case 1: /* multi-frame */
            zmq_send(g.sock, buf, n / 2, ZMQ_SNDMORE);
            zmq_send(g.sock, buf + n / 2, n - n / 2, 0);
            break;
        case 2: /* a valid message cut short or with flipped bytes */
            if (valid) {
                memcpy(buf, valid, valid_len < sizeof buf ? valid_len : sizeof buf);
                size_t len = valid_len < sizeof buf ? valid_len : sizeof buf;
                buf[rand_r(&seed) % len] ^= (uint8_t)(1 + rand_r(&seed) % 255);
                zmq_send(g.sock, buf, (size_t)rand_r(&seed) % (len + 1), 0);
            }
            break;
        case 3: /* msgpack array with a wrong version or type */
            buf[0] = 0x93;
            buf[1] = (uint8_t)(rand_r(&seed) % 4);
            buf[2] = (uint8_t)(rand_r(&seed) % 40);
            buf[3] = 0xc0;
            zmq_send(g.sock, buf, 4, 0);
            break;
        default: /* empty frame */
            zmq_send(g.sock, "", 0, 0);
            break;
        }
    }
    free(valid);
    /* An oversize frame: refused by ZMQ_MAXMSGSIZE (the connection drops). */
    size_t big = PROTO_MAX_FRAME + 4096;
    uint8_t *huge = calloc(1, big);
    if (huge) {
        tpeer_t h;
        tpeer_open(&h, r.endpoint);
        zmq_send(h.sock, huge, big, 0);
        free(huge);
        /* the broker answers (polled while h is open: it lingers 0) */
        doc = status_until(r.endpoint, "", bad_messages_at_least, &(int64_t){1000}, 2000);
        tpeer_close(&h);
    }
    if (!doc)
        doc = status_doc(r.endpoint, "", 0);
    REQUIRE_OUT(doc);
    CHECK(jint(json_object_get(doc, "broker"), "bad_messages") >= 1000);
out:
    json_decref(doc);
    tpeer_close(&g);
    stop_broker(&r);
}

/* A task that kills its worker before any PROGRESS gets out goes back
   without an attempt twice (it may only have been prefetched), then its
   losses count: it cannot go round the fleet for ever. */
static void test_crasher(const char *dir)
{
    running_t r;
    tpeer_t w = {0}, sup = {0};
    proto_msg_t m;
    char job_id[16] = "";
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "crasher", 1, 2, job_id));
    tpeer_open(&sup, r.endpoint);
    const unsigned want[] = {1, 1, 1, 2};
    for (int round = 0; round < 4; round++) {
        char name[32];
        snprintf(name, sizeof name, "crash:%d:cpu", round);
        tpeer_open(&w, r.endpoint);
        worker_ready(&w, name, 1, NULL);
        REQUIRE_OUT(trecv(&w, PROTO_TASK, 2000, &m));
        CHECK(m.attempt == want[round]);
        proto_msg_clear(&m);
        proto_msg_init(&m, PROTO_LOST);
        CHECK(proto_msg_set(&m.worker, name) == BF_OK &&
              proto_msg_set(&m.reason, "killed by signal 11") == BF_OK);
        tsend(&sup, &m);
        tpeer_close(&w);
    }
    /* attempt 2 was the last (max_attempts 2): final, naming both losses */
    json_t *doc = status_until(r.endpoint, job_id, events_are, &(size_t){1}, 2000);
    json_t *e0 = json_array_get(json_object_get(doc, "events"), 0);
    CHECK(!strcmp(jstr(e0, "status"), "error"));
    CHECK(strstr(jstr(e0, "reason"), "failed 2 times: ") &&
          strstr(jstr(e0, "reason"), "not known to have started"));
    json_decref(doc);
out:
    tpeer_close(&w);
    tpeer_close(&sup);
    stop_broker(&r);
}

/* A state directory of schema 1 (before content keys): the broker brings
   it to 2 (jobs.keys) and serves its job. Then SUBMITs whose keys or reuse
   do not fit the job are refused, naming the field. */
static void test_schema_1(const char *dir)
{
    char *path = bf_asprintf("%s/broker.db", dir);
    sqlite3 *db = NULL;
    REQUIRE(path && sqlite3_open(path, &db) == SQLITE_OK);
    const char *v1 =
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER);"
        "INSERT INTO meta VALUES ('schema', 1);"
        "CREATE TABLE jobs(ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, name TEXT, "
        " output TEXT, task TEXT, spec TEXT, total INTEGER, state TEXT, submitted_ms INTEGER, "
        " finished_ms INTEGER, max_attempts INTEGER, timeout_ms INTEGER);"
        "CREATE TABLE tasks(id TEXT PRIMARY KEY, job_id TEXT, idx INTEGER, scene TEXT, "
        " state INTEGER, attempt INTEGER, worker TEXT, failures TEXT, status TEXT, result TEXT, "
        " final_seq INTEGER);"
        "CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, job_done INTEGER, "
        " job_id TEXT, task_id TEXT, payload TEXT);"
        "INSERT INTO jobs(id, name, output, task, spec, total, state, submitted_ms, finished_ms, "
        " max_attempts, timeout_ms) VALUES ('0123456789ab', 'old', '/tmp/out/old', 'exec', "
        " '{\"task\":\"exec\",\"exec\":{\"command\":[\"/bin/true\"]}}', 2, 'running', "
        " 1, 0, 3, 60000);"
        "INSERT INTO tasks VALUES ('00000000000000000000000000000001', '0123456789ab', 0, "
        " 's0', 0, 0, '', NULL, NULL, NULL, NULL);"
        /* a result of that time, as JSON text, not yet delivered */
        "INSERT INTO tasks VALUES ('00000000000000000000000000000002', '0123456789ab', 1, "
        " 's1', 2, 1, 'w', NULL, 'success', '{\"status\":\"success\",\"scene\":\"s1\","
        "\"elapsed_time\":0.25,\"zone_power_initial\":[-90.5,-80.25]}', 1);"
        "INSERT INTO outbox(job_done, job_id, task_id, payload) VALUES (0, '0123456789ab', "
        " '00000000000000000000000000000002', NULL);";
    CHECK(sqlite3_exec(db, v1, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    running_t r;
    json_t *doc = NULL;
    char job_id[16] = "";
    REQUIRE_OUT(start_broker(&r, dir));
    doc = status_doc(r.endpoint, "", 0);
    json_t *j = job_in(doc, "0123456789ab");
    CHECK(j && jint(j, "total") == 2 && jint(j, "queued") == 1 && jint(j, "final") == 1);
    json_t *ev = json_array_get(json_object_get(doc, "events"), 0);
    CHECK(ev && !strcmp(jstr(ev, "scene"), "s1") && !strcmp(jstr(ev, "status"), "success"));
    json_decref(doc);
    doc = NULL;
    /* the old JSON text result reaches the collector as any other */
    tpeer_t col = {0};
    proto_msg_t m;
    tpeer_open(&col, r.endpoint);
    proto_msg_init(&m, PROTO_COLLECT);
    CHECK(proto_msg_set(&m.worker, "collector") == BF_OK);
    m.credit = 4;
    tsend(&col, &m);
    if (trecv(&col, PROTO_DELIVER, 2000, &m)) {
        json_t *res = json_object_get(m.obj, "result");
        CHECK(!strcmp(jstr(res, "scene"), "s1") &&
              json_real_value(json_array_get(json_object_get(res, "zone_power_initial"), 1)) ==
                  -80.25);
        proto_msg_clear(&m);
    } else {
        CHECK(!"a DELIVER of the schema-1 result");
    }
    tpeer_close(&col);
    REQUIRE_OUT(submit(r.endpoint, "after", 2, 1, job_id));
    /* keys and reuse that do not fit the job: ERROR naming the field */
    static const struct {
        const char *extra, *want;
    } bad[] = {
        {"{\"keys\": [\"00\", \"01\"]}", "'keys': not an array of 1 keys"},
        {"{\"keys\": [\"0123456789abcdef0123456789ABCDEF\"]}", "'keys[0]': not 32 hex"},
        {"{\"reuse\": []}", "'reuse': given without 'keys'"},
        {"{\"keys\": [\"0123456789abcdef0123456789abcdef\"], \"reuse\": [{\"index\": 1, "
         "\"result\": {}}]}",
         "'reuse[0]': index: not a task"},
        {"{\"keys\": [\"0123456789abcdef0123456789abcdef\"], \"reuse\": [{\"index\": 0, "
         "\"result\": {\"status\": \"error\", \"scene\": \"x0\"}}]}",
         "'reuse[0]': result: not a finished result"},
        {"{\"keys\": [\"0123456789abcdef0123456789abcdef\"], \"reuse\": [{\"index\": 0, "
         "\"result\": {\"status\": \"success\", \"scene\": \"x0\", \"key\": "
         "\"ffffffffffffffffffffffffffffffff\"}}]}",
         "'reuse[0]': result: computed from something else"},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(bad); i++) {
        bf_job_t job;
        bf_job_defaults(&job);
        job.name = bf_strdup("bad");
        job.scenes_root = bf_strdup("/tmp/scenes");
        job.output = bf_strdup("/tmp/out/bad");
        job.scenes = calloc(1, sizeof *job.scenes);
        job.scenes[0] = bf_strdup("x0");
        job.scene_count = 1;
        proto_msg_t req, rep;
        proto_msg_init(&req, PROTO_SUBMIT);
        req.obj = bf_job_to_json(&job, true);
        bf_job_clear(&job);
        json_t *extra = json_loads(bad[i].extra, 0, NULL);
        CHECK(extra && json_object_update(req.obj, extra) == 0);
        json_decref(extra);
        if (request(r.endpoint, &req, PROTO_ERROR, &rep)) {
            CHECK(rep.code == BF_EINVAL && rep.reason && strstr(rep.reason, bad[i].want));
            if (!rep.reason || !strstr(rep.reason, bad[i].want))
                fprintf(stderr, "want '%s' in '%s'\n", bad[i].want, rep.reason ? rep.reason : "");
            proto_msg_clear(&rep);
        } else {
            CHECK(!"an ERROR for bad keys or reuse");
        }
    }
    stop_broker(&r);
    sqlite3_stmt *st = NULL;
    REQUIRE_OUT(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema'", -1, &st, NULL) ==
          SQLITE_OK);
    CHECK(st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
out:
    json_decref(doc);
    free(path);
}

/* Size of dir/name, -1 when it does not exist. */
static long long file_size(const char *dir, const char *name)
{
    char *path = bf_asprintf("%s/%s", dir, name);
    struct stat st;
    long long n = path && stat(path, &st) == 0 ? (long long)st.st_size : -1;
    free(path);
    return n;
}

/* A throwaway state (`beamfleet run`'s) is closed without the checkpoint:
   the last transactions stay in the WAL, where a broker restarted on the
   directory still finds them; a normal close checkpoints and removes the
   WAL. Meanwhile the database is the broker's alone (locked once). */
static void test_throwaway(const char *dir)
{
    running_t r;
    char job_id[16] = "";
    json_t *doc = NULL;
    REQUIRE_OUT(start_broker_ex(&r, dir, true));
    REQUIRE_OUT(submit(r.endpoint, "throwaway", 50, 3, job_id));
    /* locked for the broker's life: nobody else reads it meanwhile */
    char *path = bf_asprintf("%s/broker.db", dir);
    sqlite3 *db = NULL;
    REQUIRE_OUT(path && sqlite3_open(path, &db) == SQLITE_OK);
    free(path);
    CHECK(sqlite3_exec(db, "SELECT count(*) FROM tasks", NULL, NULL, NULL) == SQLITE_BUSY);
    sqlite3_close(db);
    stop_broker(&r);
    CHECK(file_size(dir, "broker.db-wal") > 0);

    REQUIRE_OUT(start_broker(&r, dir));
    doc = status_doc(r.endpoint, job_id, 0);
    REQUIRE_OUT(doc);
    json_t *j = job_in(doc, job_id);
    CHECK(j && jint(j, "total") == 50 && jint(j, "queued") == 50);
    stop_broker(&r);
    CHECK(file_size(dir, "broker.db-wal") <= 0);
out:
    json_decref(doc);
    stop_broker(&r);
}

/* Holds the TASKs that come to w until none has come for 300 ms; answers
   every one of the first `answer` at once (after sleep_us), then no more.
   Returns the number w received and did not answer. */
static int credit_hold(tpeer_t *w, int answer, unsigned sleep_us)
{
    int got = 0, answered = 0;
    proto_msg_t m;
    for (int64_t until = bf_mono_ms() + bf_test_ms(300); bf_mono_ms() < until;) {
        beat_all();
        zmq_pollitem_t it = {w->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0 || proto_recv(w->sock, NULL, NULL, &m, 0, NULL) != BF_OK)
            continue;
        if (m.type == PROTO_TASK) {
            got++;
            until = bf_mono_ms() + bf_test_ms(300);
            if (answered < answer) {
                if (sleep_us)
                    usleep(sleep_us);
                worker_result(w, m.task_id, (unsigned)m.attempt, "success", "", 0.0);
                answered++;
            }
        }
        proto_msg_clear(&m);
    }
    return got - answered;
}

/* The credit cap follows the tasks' length: a worker asking for 64 holds
   16 while its results come milliseconds apart, and more (up to 64, what
   it finishes in 5 ms) while they come faster. */
static void test_credit_cap(const char *dir)
{
    running_t r;
    tpeer_t fast = {0}, slow = {0};
    char job_id[16] = "";
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "credit", 1000, 3, job_id));
    tpeer_open(&slow, r.endpoint);
    worker_ready(&slow, "slow:1:cpu", 64, NULL);
    int held = credit_hold(&slow, 40, 3000);
    CHECKF(held == 16, "results 3 ms apart: %d tasks held", held);
    tpeer_close(&slow);
    tpeer_open(&fast, r.endpoint);
    worker_ready(&fast, "fast:1:cpu", 64, NULL);
    held = credit_hold(&fast, 600, 0);
    /* instrumented builds take longer than 5 ms / 16 per result themselves */
    if (bf_test_ms(100) == 100)
        CHECKF(held > 16 && held <= 64, "results at once: %d tasks held", held);
    else
        CHECKF(held >= 16 && held <= 64, "results at once: %d tasks held", held);
out:
    tpeer_close(&fast);
    tpeer_close(&slow);
    stop_broker(&r);
}

/* broker_stop from another thread (as from a signal handler that lands
   while zmq_poll is between its checks) wakes the reactor in its sleep: an
   idle broker whose heartbeat interval is a minute, which sleeps 15 s at a
   time, returns at once. */
/* A result goes through the broker as the bytes it came in: its members
   are stored and delivered byte for byte (a float32 stays a float32, a
   uint16 stays a uint16, the order stays), only the broker's own members
   put in. A document a tree could not hold is refused as before (a
   duplicate key deep inside): never stored, never delivered. */
static void test_passthrough(const char *dir)
{
    running_t r;
    tpeer_t a = {0}, col = {0};
    proto_msg_t m;
    char job_id[16] = "", t0[33] = "", t1[33] = "";
    json_t *doc = NULL;
    REQUIRE_OUT(start_broker(&r, dir));
    REQUIRE_OUT(submit(r.endpoint, "pass", 2, 3, job_id));
    tpeer_open(&a, r.endpoint);
    worker_ready(&a, "hostA:1:cpu", 2, NULL);
    REQUIRE_OUT(take_task(&a, t0));
    REQUIRE_OUT(take_task(&a, t1));

    /* {"zone": [0.5f, 1.5f], "n": uint16 5, "status": "success", "attempt": 9} */
    static const uint8_t zone[] = "\x92\xca\x3f\x00\x00\x00\xca\x3f\xc0\x00\x00";
    static const uint8_t n5[] = "\xcd\x00\x05";
    static const uint8_t sent[] = "\x84\xa4zone\x92\xca\x3f\x00\x00\x00\xca\x3f\xc0\x00\x00"
                                  "\xa1n\xcd\x00\x05\xa6status\xa7success\xa7"
                                  "attempt\x09";
    proto_msg_init(&m, PROTO_RESULT);
    CHECK(proto_msg_set(&m.task_id, t0) == BF_OK);
    m.attempt = 1;
    m.obj_raw = malloc(sizeof sent - 1);
    REQUIRE_OUT(m.obj_raw);
    memcpy(m.obj_raw, sent, sizeof sent - 1);
    m.obj_raw_len = sizeof sent - 1;
    tsend(&a, &m);
    REQUIRE_OUT(trecv(&a, PROTO_ACK, 2000, &m));
    proto_msg_clear(&m);

    /* the same frame with "stats": {"a": 1, "a": 2} added: refused whole */
    json_t *bad = json_pack("{s:s}", "status", "success");
    uint8_t *packed;
    size_t plen;
    REQUIRE_OUT(proto_json_to_msgpack(bad, &packed, &plen) == BF_OK && packed[0] == 0x81);
    json_decref(bad);
    static const uint8_t dup[] = "\xa5stats\x82\xa1"
                                 "a\x01\xa1"
                                 "a\x02";
    proto_msg_init(&m, PROTO_RESULT);
    CHECK(proto_msg_set(&m.task_id, t1) == BF_OK);
    m.attempt = 1;
    m.obj_raw = malloc(plen + sizeof dup - 1);
    REQUIRE_OUT(m.obj_raw);
    memcpy(m.obj_raw, packed, plen);
    memcpy(m.obj_raw + plen, dup, sizeof dup - 1);
    m.obj_raw[0] = 0x82;
    m.obj_raw_len = plen + sizeof dup - 1;
    free(packed);
    tsend(&a, &m);
    CHECK(tquiet(&a, 200)); /* no ACK: dropped as malformed */
    doc = status_until(r.endpoint, "", bad_messages_at_least, &(int64_t){1}, 2000);
    CHECK(doc && jint(json_object_get(doc, "broker"), "bad_messages") == 1);

    /* The collector's DELIVER, read as bytes. */
    tpeer_open(&col, r.endpoint);
    proto_msg_init(&m, PROTO_COLLECT);
    CHECK(proto_msg_set(&m.worker, "collector") == BF_OK);
    m.credit = 16;
    tsend(&col, &m);
    zmq_pollitem_t it = {col.sock, 0, ZMQ_POLLIN, 0};
    bool got = false;
    for (int64_t end = bf_mono_ms() + bf_test_ms(2000); !got && bf_mono_ms() < end;) {
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        REQUIRE_OUT(proto_recv_origin_keep(col.sock, NULL, NULL, &m, ZMQ_DONTWAIT, NULL,
                                           PROTO_ALL_TYPES, NULL) == BF_OK);
        got = m.type == PROTO_DELIVER;
        if (!got)
            proto_msg_clear(&m);
    }
    REQUIRE_OUT(got);
    CHECK(!strcmp(m.task_id, t0));
    static const char *const outer[] = {"result"};
    const uint8_t *res;
    size_t res_len;
    REQUIRE_OUT(proto_msgpack_members(m.obj_raw, m.obj_raw_len, outer, 1, &res, &res_len) && res);
    static const char *const inner[] = {"zone", "n", "status", "attempt", "task_id"};
    const uint8_t *at[5];
    size_t len[5];
    REQUIRE_OUT(proto_msgpack_members(res, res_len, inner, 5, at, len));
    CHECK(len[0] == sizeof zone - 1 && !memcmp(at[0], zone, len[0]));
    CHECK(len[1] == sizeof n5 - 1 && !memcmp(at[1], n5, len[1]));
    CHECK(at[0] < at[1] && res[0] == 0x87); /* kept first, in order; 3 + 4 put in */
    CHECK(len[2] == 8 && !memcmp(at[2], "\xa7success", 8));
    CHECK(len[3] == 1 && at[3][0] == 0x01); /* the broker's attempt, not the worker's 9 */
    json_t *tid = NULL;
    CHECK(at[4] && proto_msgpack_to_json(at[4], len[4], &tid, NULL) == BF_OK &&
          !strcmp(json_string_value(tid), t0));
    json_decref(tid);
    proto_msg_clear(&m);
out:
    json_decref(doc);
    tpeer_close(&a);
    tpeer_close(&col);
    stop_broker(&r);
}

static void test_stop(const char *dir)
{
    int hb = HB_MS;
    HB_MS = 60000;
    running_t r;
    bool started = start_broker(&r, dir);
    HB_MS = hb;
    REQUIRE(started);
    usleep(300 * 1000); /* asleep in its poll by now */
    int64_t t0 = bf_mono_ms();
    broker_stop(r.broker);
    pthread_join(r.thread, NULL);
    int64_t took = bf_mono_ms() - t0;
    CHECKF(took < 2000, "broker_run returned %lld ms after broker_stop", (long long)took);
    CHECK(r.rc == BF_OK);
    broker_destroy(&r.broker);
}

int main(void)
{
    HB_MS = bf_test_ms(100);
    bf_log_set_tag("broker_test");
    if (!getenv("BEAMFLEET_LOG"))
        bf_log_set_level(BF_LOG_ERROR);
    ctx = zmq_ctx_new();
    char *d1 = temp_dir(), *d2 = temp_dir(), *d3 = temp_dir(), *d4 = temp_dir(), *d5 = temp_dir();
    char *d6 = temp_dir(), *d7 = temp_dir(), *d8 = temp_dir(), *d9 = temp_dir();
    char *d10 = temp_dir(), *d11 = temp_dir(), *d12 = temp_dir(), *d13 = temp_dir();
    if (!ctx || !d1 || !d2 || !d3 || !d4 || !d5 || !d6 || !d7 || !d8 || !d9 || !d10 || !d11 ||
        !d12 || !d13) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    struct {
        const char *name;
        void (*fn)(const char *);
        const char *dir;
    } cases[] = {{"security", test_security, d1},
                 {"flow", test_flow, d2},
                 {"cancel", test_cancel, d3},
                 {"restart", test_restart, d4},
                 {"garbage", test_garbage, d5},
                 {"faults", test_faults, d6},
                 {"lost", test_lost, d7},
                 {"crasher", test_crasher, d8},
                 {"schema_1", test_schema_1, d9},
                 {"throwaway", test_throwaway, d10},
                 {"credit_cap", test_credit_cap, d11},
                 {"stop", test_stop, d12},
                 {"passthrough", test_passthrough, d13}};
    for (size_t i = 0; i < BF_ARRAY_LEN(cases); i++) {
        int before = failures;
        double t = bf_mono_s();
        cases[i].fn(cases[i].dir);
        printf("%-10s %s (%.2f s)\n", cases[i].name, failures == before ? "ok" : "FAILED",
               bf_mono_s() - t);
    }
    zmq_ctx_term(ctx);
    const char *dirs[] = {d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13};
    for (size_t i = 0; i < BF_ARRAY_LEN(dirs); i++) {
        rm_dir(dirs[i]);
        free((char *)dirs[i]);
    }
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all broker tests passed\n");
    return 0;
}
