/*  collector/collector_test.c - the collector over real sockets, with this
    test playing the broker on a ROUTER at tcp://127.0.0.1:0 and a SUB socket
    listening to the live stream; the collector runs in a thread with 100 ms
    heartbeats. It checks: COLLECT with credit; deliveries (one repeated)
    acknowledged only once their result is in results.jsonl; each result
    published once; JOB_DONE -> summary.json and one results_final_*; COLLECT
    again after ERROR "unknown peer"; a fresh connection after the broker
    falls silent; a malformed frame survived; a new collector on the same
    directories recovering a torn log and acking resent deliveries without
    writing them twice; and a job whose directory cannot be created held
    unacknowledged (while another job goes on) until it can. */

#include "collector.h"
#include "collector_testkit.h"

#include "../proto/proto_link.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "../common/bf_check.h"

static int HEARTBEAT_MS; /* bf_test_ms(100), set first thing in main */

/* ---- the fake broker ------------------------------------------------------------ */

typedef struct {
    void *ctx, *router;
    char endpoint[256];
    uint8_t id[256]; /* routing id of the collector's latest message */
    size_t idlen;
    int64_t last_send;
    int heartbeats; /* HEARTBEATs received from the collector */
} fake_t;

static void fake_send(fake_t *b, proto_msg_t *m)
{
    CHECK(b->idlen > 0);
    if (proto_send(b->router, b->id, b->idlen, m, 0) != BF_OK && m->type != PROTO_HEARTBEAT)
        fprintf(stderr, "fake broker: send failed: %s\n", zmq_strerror(zmq_errno()));
    b->last_send = bf_mono_ms();
}

/* Keeps the collector's broker alive: a HEARTBEAT when one is due. */
static void fake_pump(fake_t *b)
{
    if (b->idlen && bf_mono_ms() - b->last_send >= HEARTBEAT_MS) {
        proto_msg_t hb;
        proto_msg_init(&hb, PROTO_HEARTBEAT);
        fake_send(b, &hb);
    }
}

/* The next message from the collector other than HEARTBEAT, within
   timeout_ms, sending heartbeats meanwhile when alive. BF_ETIMEDOUT if none. */
static bf_err_t fake_recv(fake_t *b, proto_msg_t *m, int timeout_ms, bool alive)
{
    int64_t deadline = bf_mono_ms() + bf_test_ms(timeout_ms);
    for (;;) {
        if (alive)
            fake_pump(b);
        if (bf_mono_ms() >= deadline)
            return BF_ETIMEDOUT;
        zmq_pollitem_t item = {b->router, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 10);
        uint8_t id[256];
        size_t idlen = sizeof id;
        char err[BF_ERRLEN];
        bf_err_t rc = proto_recv(b->router, id, &idlen, m, ZMQ_DONTWAIT, err);
        if (rc == BF_EIO)
            continue;
        if (rc != BF_OK) {
            fprintf(stderr, "fake broker: bad message: %s\n", err);
            failures++;
            continue;
        }
        memcpy(b->id, id, idlen);
        b->idlen = idlen;
        if (m->type == PROTO_HEARTBEAT) {
            b->heartbeats++;
            proto_msg_clear(m);
            continue;
        }
        return BF_OK;
    }
}

/* Waits for a COLLECT; returns whether it came. */
static bool expect_collect(fake_t *b, int timeout_ms, bool alive)
{
    proto_msg_t m;
    if (fake_recv(b, &m, timeout_ms, alive) != BF_OK)
        return false;
    bool ok =
        m.type == PROTO_COLLECT && m.credit == 8 && m.worker && !strcmp(m.worker, "test-collector");
    if (!ok)
        fprintf(stderr, "expected collect, got %s\n", proto_type_name(m.type));
    proto_msg_clear(&m);
    return ok;
}

/* ---- jobs and results ------------------------------------------------------------- */

static char root[64];

static json_t *jobinfo(const char *id, const char *output, const char *state)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:s}", "id", id, "name", id, "output",
                     output, "task", "boresight", "total", 5, "submitted_ms", (json_int_t)1000,
                     "finished_ms", (json_int_t)4000, "state", state);
}

static void deliver(fake_t *b, const char *job_id, const char *output, uint64_t seq, int task)
{
    char task_id[40], scene[32];
    snprintf(task_id, sizeof task_id, "%s-task%d", job_id, task);
    snprintf(scene, sizeof scene, "scene%d", task);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_DELIVER);
    m.seq = seq;
    CHECK(proto_msg_set(&m.job_id, job_id) == BF_OK);
    CHECK(proto_msg_set(&m.task_id, task_id) == BF_OK);
    /* the result as a worker sends it, minus task_id: the collector takes
       that from the message */
    m.obj = json_pack("{s:o, s:{s:s, s:s, s:s, s:s, s:i, s:s, s:i, s:f, s:{s:f}, s:[f, f], "
                      "s:[f, f]}}",
                      "job", jobinfo(job_id, output, "running"), "result", "scene", scene, "status",
                      "success", "reason", "", "host", "h", "gpu_id", task % 2, "device", "cpu",
                      "attempt", 1, "elapsed_time", 0.5 * task, "stats", "improvement_mean",
                      1.0 * task, "zone_power_initial", -90.0, -80.0, "zone_power_optimized",
                      -89.0 + task, -79.0 + task);
    fake_send(b, &m);
    proto_msg_clear(&m);
}

static void job_done(fake_t *b, const char *job_id, const char *output, uint64_t seq)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_JOB_DONE);
    m.seq = seq;
    CHECK(proto_msg_set(&m.job_id, job_id) == BF_OK);
    m.obj = json_pack("{s:o}", "job", jobinfo(job_id, output, "done"));
    fake_send(b, &m);
    proto_msg_clear(&m);
}

static bool log_has(const char *dir, const char *job_id, int task)
{
    char needle[80];
    snprintf(needle, sizeof needle, "\"task_id\":\"%s-task%d\"", job_id, task);
    char *text = slurp(dir, "results.jsonl");
    bool has = text && strstr(text, needle);
    free(text);
    return has;
}

static int csv_rows(const char *dir)
{
    char *text = slurp(dir, "results.csv");
    int n = 0;
    for (char *p = text; p && *p; p++)
        n += *p == '\n';
    free(text);
    return text ? n - 1 : -1;
}

/* Collects ACKs until every seq in want (0-terminated) came or timeout;
   for a DELIVER seq, its result must already be in the log (task[seq]). */
static bool expect_acks(fake_t *b, const uint64_t *want, const char *job_id, const char *dir,
                        const int *task_of_seq, int timeout_ms)
{
    size_t n = 0, got = 0;
    while (want[n])
        n++;
    bool seen[64] = {false};
    int64_t deadline = bf_mono_ms() + bf_test_ms(timeout_ms);
    while (got < n) {
        int left = (int)(deadline - bf_mono_ms());
        proto_msg_t m;
        if (left <= 0 || fake_recv(b, &m, left, true) != BF_OK)
            break;
        /* one ACK, or an ACKS listing what one write made durable */
        uint64_t acked[64];
        size_t nacked = 0;
        if (m.type == PROTO_ACK && m.seq < 64) {
            acked[nacked++] = m.seq;
        } else if (m.type == PROTO_ACKS) {
            size_t i;
            const json_t *v;
            json_array_foreach(json_object_get(m.obj, "seq"), i, v)
            {
                json_int_t seq = json_integer_value(v);
                CHECK(json_is_integer(v) && seq > 0 && seq < 64 && nacked < 64);
                if (json_is_integer(v) && seq > 0 && seq < 64 && nacked < 64)
                    acked[nacked++] = (uint64_t)seq;
            }
        }
        for (size_t k = 0; k < nacked; k++) {
            uint64_t seq = acked[k];
            for (size_t i = 0; i < n; i++)
                if (want[i] == seq && !seen[seq]) {
                    seen[seq] = true;
                    got++;
                    if (task_of_seq && task_of_seq[seq] > 0)
                        CHECK(log_has(dir, job_id, task_of_seq[seq]));
                }
        }
        if ((m.type != PROTO_ACK || m.seq >= 64) && m.type != PROTO_ACKS) {
            fprintf(stderr, "unexpected %s (seq %llu)\n", proto_type_name(m.type),
                    (unsigned long long)m.seq);
            failures++;
        }
        proto_msg_clear(&m);
    }
    return got == n;
}

/* Published messages within timeout_ms: counts of "result" and "job-done". */
static void drain_stream(fake_t *b, void *sub, int timeout_ms, int *results, int *done,
                         json_t *scenes)
{
    int64_t deadline = bf_mono_ms() + bf_test_ms(timeout_ms);
    while (bf_mono_ms() < deadline) {
        fake_pump(b);
        zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 20);
        char topic[32];
        json_t *doc = NULL;
        char err[BF_ERRLEN];
        bf_err_t rc = collector_stream_recv(sub, topic, sizeof topic, &doc, ZMQ_DONTWAIT, err);
        if (rc == BF_EIO)
            continue;
        CHECK(rc == BF_OK);
        if (rc == BF_OK && !strcmp(topic, "result")) {
            (*results)++;
            const char *s = json_string_value(json_object_get(doc, "scene"));
            CHECK(s && json_string_value(json_object_get(doc, "task_id")));
            if (s && scenes)
                json_object_set_new(scenes, s, json_true());
        } else if (rc == BF_OK && !strcmp(topic, "job-done")) {
            (*done)++;
            CHECK(json_string_value(json_object_get(doc, "id")));
        }
        json_decref(doc);
    }
}

/* ---- the collector in a thread ---------------------------------------------------- */

typedef struct {
    const char *spool; /* the spool directory, or NULL */
    collector_t *c;
    pthread_t thread;
    bf_err_t rc;
    void *sub;
} running_t;

static void *run_thread(void *arg)
{
    running_t *r = arg;
    r->rc = collector_run(r->c);
    return NULL;
}

static bool start(running_t *r, fake_t *b, void *ctx)
{
    collector_config_t cfg = {.broker = b->endpoint,
                              .publish = "tcp://127.0.0.1:0",
                              .heartbeat_ms = HEARTBEAT_MS,
                              .liveness = 3,
                              .credit = 8,
                              .name = "test-collector",
                              .spool_dir = r->spool};
    char err[BF_ERRLEN];
    r->c = collector_new(&cfg, err);
    if (!r->c) {
        fprintf(stderr, "collector_new: %s\n", err);
        return false;
    }
    const char *ep = collector_publish_endpoint(r->c);
    CHECK(ep && strncmp(ep, "tcp://127.0.0.1:", 16) == 0 && strcmp(ep, "tcp://127.0.0.1:0"));
    r->sub = zmq_socket(ctx, ZMQ_SUB);
    int zero = 0;
    zmq_setsockopt(r->sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(r->sub, ZMQ_SUBSCRIBE, "", 0);
    CHECK(ep && zmq_connect(r->sub, ep) == 0);
    return pthread_create(&r->thread, NULL, run_thread, r) == 0;
}

static void stop(running_t *r)
{
    collector_stop(r->c);
    pthread_join(r->thread, NULL);
    CHECK(r->rc == BF_OK);
    collector_destroy(&r->c);
    CHECK(r->c == NULL);
    zmq_close(r->sub);
}

/* ---- the test --------------------------------------------------------------------- */

/* Waits until the collector has registered r's subscription (its XPUB
   passes it up), pumping the fake broker meanwhile. */
static bool subscribed(running_t *r, fake_t *b, int ms)
{
    int64_t until = bf_mono_ms() + bf_test_ms(ms);
    while (collector_stream_subscriptions(r->c) < 1) {
        if (bf_mono_ms() >= until)
            return false;
        fake_pump(b);
        usleep(5 * 1000);
    }
    return true;
}

/* collector_stop from another thread (as from a signal handler that lands
   while zmq_poll is between its checks) wakes collector_run in its sleep:
   with a heartbeat interval of a minute (15 s polls) it returns at once.
   Its broker is a ROUTER nobody reads. */
static void test_stop(void *ctx)
{
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    char ep[128];
    size_t len = sizeof ep;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    REQUIRE(zmq_bind(router, "tcp://127.0.0.1:0") == 0 &&
            zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &len) == 0);
    collector_config_t cfg = {.broker = ep,
                              .publish = "tcp://127.0.0.1:0",
                              .heartbeat_ms = 60000,
                              .liveness = 3,
                              .credit = 8,
                              .name = "stop-test"};
    char err[BF_ERRLEN];
    running_t r = {0};
    r.c = collector_new(&cfg, err);
    REQUIRE(r.c);
    REQUIRE(pthread_create(&r.thread, NULL, run_thread, &r) == 0);
    usleep(300 * 1000); /* asleep in its poll by now */
    int64_t t0 = bf_mono_ms();
    collector_stop(r.c);
    pthread_join(r.thread, NULL);
    int64_t took = bf_mono_ms() - t0;
    CHECKF(took < 2000, "collector_run returned %lld ms after collector_stop", (long long)took);
    CHECK(r.rc == BF_OK);
    collector_destroy(&r.c);
    zmq_close(router);
}

int main(void)
{
    HEARTBEAT_MS = bf_test_ms(100);
    bf_log_set_level(BF_LOG_ERROR);
    bf_strlcpy(root, "/tmp/collector-test-XXXXXX", sizeof root);
    if (!mkdtemp(root))
        return 1;
    char dirJ[128], dirK[160], blocker[128];
    snprintf(dirJ, sizeof dirJ, "%s/jobJ", root);
    snprintf(blocker, sizeof blocker, "%s/blocker", root);
    snprintf(dirK, sizeof dirK, "%s/out", blocker);

    fake_t b = {0};
    b.ctx = zmq_ctx_new();
    b.router = zmq_socket(b.ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(b.router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(b.router, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(b.router, "tcp://127.0.0.1:0") != 0)
        return 1;
    size_t len = sizeof b.endpoint;
    zmq_getsockopt(b.router, ZMQ_LAST_ENDPOINT, b.endpoint, &len);

    test_stop(b.ctx);

    /* bad configuration */
    char err[BF_ERRLEN];
    collector_config_t bad = {.broker = NULL};
    CHECK(collector_new(&bad, err) == NULL);
    bad = (collector_config_t){.broker = b.endpoint, .publish = "nonsense://x"};
    CHECK(collector_new(&bad, err) == NULL);
    /* the broker's bind rule: not loopback needs keys or insecure */
    bad = (collector_config_t){.broker = b.endpoint, .publish = "tcp://0.0.0.0:0"};
    CHECK(collector_new(&bad, err) == NULL && strstr(err, "not a loopback address") &&
          strstr(err, "--insecure") && !strchr(err, '\n'));
    bad.insecure = true;
    collector_t *open_pub = collector_new(&bad, err);
    CHECKF(open_pub, "%s", err);
    collector_destroy(&open_pub);

    /* 1. registration, deliveries with a repeat, ACK after durability */
    running_t r1 = {0};
    CHECK(start(&r1, &b, b.ctx));
    CHECK(expect_collect(&b, 3000, true));
    CHECK(subscribed(&r1, &b, 3000)); /* before anything is published */
    const int task_of_seq[64] = {0, 1, 2, 3, 2, 0, 4, 0, 1, 5};
    deliver(&b, "jobJ", dirJ, 1, 1);
    deliver(&b, "jobJ", dirJ, 2, 2);
    deliver(&b, "jobJ", dirJ, 3, 3);
    deliver(&b, "jobJ", dirJ, 4, 2); /* the same task again */
    CHECK(expect_acks(&b, (const uint64_t[]){1, 2, 3, 4, 0}, "jobJ", dirJ, task_of_seq, 3000));
    CHECK(jsonl_lines(dirJ) == 3);
    CHECK(csv_rows(dirJ) == 3);
    char path[256];
    snprintf(path, sizeof path, "%s/results_progress.json", dirJ);
    /* results_progress.json catches up on the collector's next quiet turn,
       after the ACKs: wait for it (pumping), do not race it */
    json_t *progress = NULL;
    for (int64_t by = bf_mono_ms() + bf_test_ms(3000); bf_mono_ms() < by; usleep(10 * 1000)) {
        json_decref(progress);
        progress = json_load_file(path, 0, NULL);
        if (json_object_size(progress) == 3)
            break;
        fake_pump(&b);
    }
    CHECK(json_object_size(progress) == 3 && json_object_get(progress, "scene3"));
    json_decref(progress);
    int results = 0, done = 0;
    json_t *scenes = json_object();
    drain_stream(&b, r1.sub, 500, &results, &done, scenes);
    CHECK(results == 3 && done == 0 && json_object_size(scenes) == 3);
    json_decref(scenes);
    /* it beats once an interval while connected (nothing else is due) */
    for (int64_t by = bf_mono_ms() + 3 * HEARTBEAT_MS; !b.heartbeats && bf_mono_ms() < by;) {
        proto_msg_t m;
        if (fake_recv(&b, &m, 10, true) == BF_OK) {
            CHECKF(0, "unexpected message type %d", (int)m.type);
            proto_msg_clear(&m);
        }
    }
    CHECK(b.heartbeats > 0);

    /* 2. the job ends: summary and one final file, published */
    job_done(&b, "jobJ", dirJ, 5);
    CHECK(expect_acks(&b, (const uint64_t[]){5, 0}, NULL, NULL, NULL, 3000));
    snprintf(path, sizeof path, "%s/summary.json", dirJ);
    json_t *sum = json_load_file(path, 0, NULL);
    CHECK(json_integer_value(json_object_get(json_object_get(sum, "counts"), "success")) == 3);
    CHECK(json_number_value(json_object_get(sum, "total_time_s")) == 3.0);
    CHECK(json_number_value(json_object_get(json_object_get(sum, "improvement"), "mean")) == 2.0);
    json_decref(sum);
    CHECK(count_files(dirJ, "results_final_") == 1);
    results = done = 0;
    drain_stream(&b, r1.sub, 300, &results, &done, NULL);
    CHECK(results == 0 && done == 1);

    /* 3. "unknown peer": COLLECT again on the same connection */
    uint8_t old_id[256];
    size_t old_len = b.idlen;
    memcpy(old_id, b.id, b.idlen);
    proto_msg_t e;
    proto_msg_init(&e, PROTO_ERROR);
    e.code = BF_ENOENT;
    CHECK(proto_msg_set(&e.reason, "unknown peer") == BF_OK);
    fake_send(&b, &e);
    proto_msg_clear(&e);
    CHECK(expect_collect(&b, 2000, true));
    CHECK(b.idlen == old_len && !memcmp(b.id, old_id, old_len));

    /* 3b. a DELIVER whose result cannot be converted (not UTF-8) is dropped
       unacknowledged, though its JOBINFO is the same bytes as the last one's
       (whose tree the collector keeps); the next one of that job is written */
    char dirM[128];
    snprintf(dirM, sizeof dirM, "%s/jobM", root);
    deliver(&b, "jobM", dirM, 6, 1);
    CHECK(expect_acks(&b, (const uint64_t[]){6, 0}, "jobM", dirM,
                      (const int[]){0, 0, 0, 0, 0, 0, 1}, 3000));
    json_t *info = jobinfo("jobM", dirM, "running");
    uint8_t *info_mp = NULL;
    size_t info_len = 0;
    CHECK(info && proto_json_to_msgpack(info, &info_mp, &info_len) == BF_OK);
    json_decref(info);
    static const uint8_t bad_result[] = "\xa6result\x82\xa5scene\xa6scene2\xa6status\xa2\xff\xfe";
    proto_msg_t bad_msg;
    proto_msg_init(&bad_msg, PROTO_DELIVER);
    bad_msg.seq = 7;
    CHECK(proto_msg_set(&bad_msg.job_id, "jobM") == BF_OK);
    CHECK(proto_msg_set(&bad_msg.task_id, "jobM-task2") == BF_OK);
    bad_msg.obj_raw = malloc(5 + info_len + sizeof bad_result - 1);
    if (bad_msg.obj_raw && info_mp) {
        memcpy(bad_msg.obj_raw, "\x82\xa3job", 5);
        memcpy(bad_msg.obj_raw + 5, info_mp, info_len);
        memcpy(bad_msg.obj_raw + 5 + info_len, bad_result, sizeof bad_result - 1);
        bad_msg.obj_raw_len = 5 + info_len + sizeof bad_result - 1;
        fake_send(&b, &bad_msg);
    }
    proto_msg_clear(&bad_msg);
    free(info_mp);
    CHECK(!expect_acks(&b, (const uint64_t[]){7, 0}, NULL, NULL, NULL, 300));
    deliver(&b, "jobM", dirM, 8, 3);
    CHECK(expect_acks(&b, (const uint64_t[]){8, 0}, "jobM", dirM,
                      (const int[]){0, 0, 0, 0, 0, 0, 0, 0, 3}, 3000));
    CHECK(log_has(dirM, "jobM", 1) && !log_has(dirM, "jobM", 2) && log_has(dirM, "jobM", 3));

    /* 4. garbage from the "broker" is dropped, the collector carries on */
    zmq_send(b.router, b.id, b.idlen, ZMQ_SNDMORE);
    zmq_send(b.router, "\xc1garbage", 8, 0);

    /* 5. the broker falls silent: a fresh connection (new routing id) after
       3 intervals plus backoff */
    int64_t t0 = bf_mono_ms();
    CHECK(expect_collect(&b, 3000, false));
    int64_t took = bf_mono_ms() - t0;
    CHECK(took >= 3 * HEARTBEAT_MS && took < 20 * HEARTBEAT_MS);
    CHECK(b.idlen != old_len || memcmp(b.id, old_id, old_len) != 0);
    stop(&r1);

    /* 6. a crash left a torn line; a new collector recovers it, and the
       resent deliveries are acked without being written twice */
    snprintf(path, sizeof path, "%s/results.jsonl", dirJ);
    FILE *f = fopen(path, "a");
    fputs("{\"task_id\":\"jobJ-task9\",\"sce", f);
    fclose(f);
    running_t r2 = {0};
    CHECK(start(&r2, &b, b.ctx));
    CHECK(expect_collect(&b, 3000, true));
    CHECK(subscribed(&r2, &b, 3000));
    for (uint64_t s = 1; s <= 4; s++)
        deliver(&b, "jobJ", dirJ, s, task_of_seq[s]);
    job_done(&b, "jobJ", dirJ, 5);
    deliver(&b, "jobJ", dirJ, 6, 4);
    CHECK(
        expect_acks(&b, (const uint64_t[]){1, 2, 3, 4, 5, 6, 0}, "jobJ", dirJ, task_of_seq, 3000));
    CHECK(jsonl_lines(dirJ) == 4);
    CHECK(csv_rows(dirJ) == 4);
    CHECK(count_files(dirJ, "results_final_") == 1);
    job_done(&b, "jobJ", dirJ, 7);
    CHECK(expect_acks(&b, (const uint64_t[]){7, 0}, NULL, NULL, NULL, 3000));
    CHECK(count_files(dirJ, "results_final_") == 1);
    snprintf(path, sizeof path, "%s/summary.json", dirJ);
    sum = json_load_file(path, 0, NULL);
    CHECK(json_integer_value(json_object_get(json_object_get(sum, "counts"), "total")) == 4);
    json_decref(sum);
    results = done = 0;
    drain_stream(&b, r2.sub, 300, &results, &done, NULL);
    CHECK(results == 1 && done == 2); /* only task 4 is new */

    /* 7. a job whose directory cannot be made (its parent is a file): no
       ACK, the other job goes on, and the ACK comes once it can be made */
    f = fopen(blocker, "w");
    fclose(f);
    deliver(&b, "jobK", dirK, 8, 1);
    proto_msg_t m;
    bf_err_t rc = fake_recv(&b, &m, 700, true);
    CHECKF(rc == BF_ETIMEDOUT, "got %s seq %llu", proto_type_name(m.type),
           (unsigned long long)m.seq);
    if (rc == BF_OK)
        proto_msg_clear(&m);
    deliver(&b, "jobJ", dirJ, 9, 5);
    CHECK(expect_acks(&b, (const uint64_t[]){9, 0}, "jobJ", dirJ, task_of_seq, 3000));
    CHECK(unlink(blocker) == 0 && mkdir(blocker, 0755) == 0);
    CHECK(expect_acks(&b, (const uint64_t[]){8, 0}, "jobK", dirK, task_of_seq, 3000));
    CHECK(jsonl_lines(dirK) == 1 && jsonl_lines(dirJ) == 5);
    stop(&r2);

    /* 8. the same with a spool: the blocked job's deliveries and its
       JOB_DONE are spooled and ACKed at once, more of them than the credit
       (8), so the broker's window stays open for the other job; once the
       directory can be made they are written, each once, with the final
       report. A second collector on the same spool is refused. */
    char spool[128], blocker2[128], dirL[160];
    snprintf(spool, sizeof spool, "%s/spool", root);
    snprintf(blocker2, sizeof blocker2, "%s/blocker2", root);
    snprintf(dirL, sizeof dirL, "%s/out", blocker2);
    f = fopen(blocker2, "w");
    fclose(f);
    running_t r3 = {.spool = spool};
    CHECK(start(&r3, &b, b.ctx));
    CHECK(expect_collect(&b, 3000, true));
    collector_config_t twin = {.broker = b.endpoint, .spool_dir = spool};
    CHECK(collector_new(&twin, err) == NULL && strstr(err, "in use by another collector"));
    for (int t = 1; t <= 12; t++)
        deliver(&b, "jobL", dirL, 20 + (uint64_t)t, t);
    deliver(&b, "jobL", dirL, 33, 3); /* a repeat */
    job_done(&b, "jobL", dirL, 34);
    uint64_t want[16];
    for (int k = 0; k < 14; k++)
        want[k] = 21 + (uint64_t)k;
    want[14] = 0;
    CHECK(expect_acks(&b, want, "jobL", dirL, NULL, 3000));
    deliver(&b, "jobJ", dirJ, 35, 6);
    CHECK(expect_acks(&b, (const uint64_t[]){35, 0}, NULL, NULL, NULL, 3000));
    CHECK(jsonl_lines(dirJ) == 6);
    snprintf(path, sizeof path, "%s/jobL.jsonl", spool);
    CHECK(access(path, F_OK) == 0);
    CHECK(unlink(blocker2) == 0 && mkdir(blocker2, 0755) == 0);
    int64_t deadline = bf_mono_ms() + bf_test_ms(5000);
    while (bf_mono_ms() < deadline && access(path, F_OK) == 0) {
        fake_pump(&b);
        usleep(50 * 1000);
    }
    CHECK(access(path, F_OK) != 0);
    CHECK(jsonl_lines(dirL) == 12 && csv_rows(dirL) == 12 &&
          count_files(dirL, "summary.json") == 1);

    /* 4. Deliveries that trickle in, 1 ms apart, are gathered (GATHER_MS)
       into one write: one ACKS lists all three, each written before it.
       Three tries, so that one stalled sender does not fail it; without
       the gathering each would be written and acknowledged alone. */
    bool gathered = false;
    for (int k = 0; k < 3 && !gathered; k++) {
        uint64_t seq0 = 40 + 3 * (uint64_t)k;
        int task0 = 7 + 3 * k;
        for (int i = 0; i < 3; i++) {
            if (i)
                usleep(1000);
            deliver(&b, "jobJ", dirJ, seq0 + (uint64_t)i, task0 + i);
        }
        proto_msg_t am;
        size_t acked = 0;
        for (int got = 0; got < 3 && fake_recv(&b, &am, 3000, true) == BF_OK;) {
            size_t n = am.type == PROTO_ACKS ? json_array_size(json_object_get(am.obj, "seq")) : 1;
            if (!acked)
                gathered = am.type == PROTO_ACKS && n == 3;
            acked++;
            got += (int)n;
            proto_msg_clear(&am);
        }
        for (int i = 0; i < 3; i++)
            CHECK(log_has(dirJ, "jobJ", task0 + i));
    }
    CHECK(gathered);
    stop(&r3);

    zmq_close(b.router);
    zmq_ctx_term(b.ctx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0)
        return 1;
    if (failures) {
        fprintf(stderr, "collector_test: %d checks failed\n", failures);
        return 1;
    }
    printf("collector_test: all checks passed\n");
    return 0;
}
