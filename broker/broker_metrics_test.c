/*  broker/broker_metrics_test.c - the metrics endpoint over a real socket:
    a broker_metrics_t listening on 127.0.0.1:0, observations with chosen
    timestamps, a publish, and plain HTTP/1.0 requests that read back the
    exact exposition text (histogram buckets, counters, label escaping, the
    device bound), 503 before the first publish, 404 and 405 (with Allow),
    bad listen addresses, the STATS document check, and scrapes racing
    publishes from another thread. */

#include "broker_metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "../common/bf_check.h"

/* One request; returns the whole response (headers and body) or NULL. */
static char *http(unsigned port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    size_t cap = 65536, len = 0;
    char *out = malloc(cap);
    if (!out || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        send(fd, request, strlen(request), MSG_NOSIGNAL) != (ssize_t)strlen(request)) {
        free(out);
        close(fd);
        return NULL;
    }
    for (;;) {
        if (len + 1 == cap) {
            char *p = realloc(out, cap * 2);
            if (!p)
                break;
            out = p;
            cap *= 2;
        }
        ssize_t n = recv(fd, out + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    out[len] = '\0';
    return out;
}

/* The response's status line says code (MHD answers HTTP/1.1). */
static bool status_is(const char *r, int code)
{
    int got = 0;
    return r && sscanf(r, "HTTP/1.%*d %d", &got) == 1 && got == code;
}

static char *get(unsigned port, const char *path)
{
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    return http(port, req);
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && (p = strstr(p, line)); p += n)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\r' || p[n] == '\0'))
            return true;
    return false;
}

static void test_bad_listen(void)
{
    static const struct {
        const char *listen, *expect;
    } bad[] = {
        {"127.0.0.1", "expected HOST:PORT"},
        {":9464", "expected HOST:PORT"},
        {"127.0.0.1:", "expected HOST:PORT"},
        {"127.0.0.1:99999", "port must be 0..65535"},
        {"127.0.0.1:12x", "port must be 0..65535"},
        {"[::1:80", "expected [ADDRESS]:PORT"},
        {"no.such.host.invalid:9464", "--metrics (metrics.listen) 'no.such.host.invalid:9464': "},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(bad); i++) {
        char err[BF_ERRLEN] = "";
        broker_metrics_t *m = broker_metrics_new(bad[i].listen, err);
        CHECKF(!m && strstr(err, bad[i].expect), "%s -> %s", bad[i].listen, err);
        broker_metrics_destroy(&m);
    }
    /* a port already taken */
    char err[BF_ERRLEN] = "";
    broker_metrics_t *a = broker_metrics_new("127.0.0.1:0", err);
    CHECK(a);
    if (a) {
        char ep[64];
        snprintf(ep, sizeof ep, "127.0.0.1:%u", broker_metrics_port(a));
        broker_metrics_t *b = broker_metrics_new(ep, err);
        CHECKF(!b && strstr(err, "cannot serve HTTP there"), "%s", err);
        broker_metrics_destroy(&b);
    }
    broker_metrics_destroy(&a);
    broker_metrics_destroy(&a); /* idempotent */
    CHECK(!a);
}

static void test_stats_copy(void)
{
    json_t *ok =
        json_pack("{s:f, s:I, s:I, s:i, s:s}", "gpu_util", 37.5, "mem_used", (json_int_t)1000,
                  "mem_total", (json_int_t)80000, "temperature_c", 61, "extra", "ignored");
    json_t *c = broker_metrics_stats_copy(ok);
    CHECK(c && json_object_size(c) == 4);
    CHECK(json_real_value(json_object_get(c, "gpu_util")) == 37.5);
    CHECK(json_real_value(json_object_get(c, "mem_total")) == 80000.0);
    CHECK(!json_object_get(c, "extra"));
    json_decref(c);
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"gpu_util\": 101, \"mem_used\": 1, \"mem_total\": 2, \"temperature_c\": 50}",
        "{\"gpu_util\": -1, \"mem_used\": 1, \"mem_total\": 2, \"temperature_c\": 50}",
        "{\"gpu_util\": 1, \"mem_used\": 3, \"mem_total\": 2, \"temperature_c\": 50}",
        "{\"gpu_util\": 1, \"mem_used\": 1, \"mem_total\": 2, \"temperature_c\": \"hot\"}",
        "{\"gpu_util\": 1, \"mem_used\": 1, \"mem_total\": 2, \"temperature_c\": 900}",
        "{\"gpu_util\": 1, \"mem_used\": 1, \"mem_total\": 1e30, \"temperature_c\": 50}",
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(bad); i++) {
        json_t *v = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        json_t *r = broker_metrics_stats_copy(v);
        CHECKF(!r, "accepted %s", bad[i]);
        json_decref(r);
        json_decref(v);
    }
    CHECK(!broker_metrics_stats_copy(NULL));
    json_decref(ok);
}

/* NULL objects: every observe is a no-op, publish is BF_OK. */
static void test_null(void)
{
    broker_metrics_observe_submit(NULL, "j", 1, 1);
    broker_metrics_observe_final(NULL, "j", "success");
    uint64_t counts[BROKER_FINALS] = {0};
    CHECK(broker_metrics_load_job(NULL, "j", "running", 1, counts) == BF_OK);
    broker_metrics_observe_queued(NULL, 1, false, 1);
    broker_metrics_observe_dispatch(NULL, 1, "j", 1, "h", "d", 1);
    broker_metrics_observe_result(NULL, 1, 1);
    broker_metrics_state_t st = {0};
    CHECK(broker_metrics_publish(NULL, &st) == BF_OK);
    CHECK(!broker_metrics_due(NULL, 1));
    CHECK(broker_metrics_port(NULL) == 0);
    broker_metrics_destroy(NULL);
}

static void test_serve(void)
{
    char err[BF_ERRLEN] = "";
    broker_metrics_t *m = broker_metrics_new("127.0.0.1:0", err);
    CHECKF(m, "%s", err);
    if (!m)
        return;
    unsigned port = broker_metrics_port(m);
    CHECK(port > 0);
    char *r = get(port, "/metrics");
    CHECKF(r && status_is(r, 503), "%s", r ? r : "(no answer)");
    free(r);
    CHECK(broker_metrics_due(m, 1));

    /* job j1 submitted at 1000 ms: task 0 sent 500 ms later to h1/gpu0, its
       result 2.5 s after that; task 1 sent at 1040 ms to h1/gpu0 (40 ms),
       requeued at 5000, sent again (attempt 2) at 5100 to h2/cpu, result at
       5150; task 2 queued before a "restart" (unknown) and never observed. */
    /* the store at start: old1 done (3 success), old2 running (1 success, 1
       error, 2 to go), old3 cancelled (2 cancelled) */
    static const uint64_t c1[BROKER_FINALS] = {3, 0, 0, 0}, c2[BROKER_FINALS] = {1, 0, 1, 0},
                          c3[BROKER_FINALS] = {0, 0, 0, 2};
    CHECK(broker_metrics_load_job(m, "old1", "done", 3, c1) == BF_OK);
    CHECK(broker_metrics_load_job(m, "old2", "running", 4, c2) == BF_OK);
    CHECK(broker_metrics_load_job(m, "old3", "cancelled", 2, c3) == BF_OK);
    broker_metrics_observe_submit(m, "j1", 5, 1000);
    broker_metrics_observe_submit(m, "j1", 5, 1200); /* a repeat is ignored */
    /* old2's last two: one success, one cancelled -> the job is cancelled */
    broker_metrics_observe_final(m, "old2", "success");
    broker_metrics_observe_final(m, "old2", "cancelled");
    broker_metrics_observe_final(m, "j1", "success");
    broker_metrics_observe_final(m, "j1", "bogus"); /* not a status: ignored */
    broker_metrics_observe_dispatch(m, 0, "j1", 1, "h1", "gpu0", 1500);
    broker_metrics_observe_result(m, 0, 4000);
    broker_metrics_observe_dispatch(m, 1, "j1", 1, "h1", "gpu0", 1040);
    broker_metrics_observe_queued(m, 1, false, 5000);
    broker_metrics_observe_dispatch(m, 1, "j1", 2, "h2", "cpu", 5100);
    broker_metrics_observe_result(m, 1, 5150);
    broker_metrics_observe_dispatch(m, 2, "j0", 1, "h2", "cpu", 5200);
    broker_metrics_observe_result(m, 2, 9000);       /* sent known: duration 3.8 s */
    broker_metrics_observe_result(m, 77, 9000);      /* unknown: ignored */
    broker_metrics_observe_queued(m, 3, true, 9000); /* final, never sent: nothing */
    broker_metrics_observe_dispatch(m, 4, "j1", 1, "we\"ird\\host\n", "gpu\xff", 9100);

    broker_metrics_gpu_t gpus[] = {
        {"h1:12:gpu0", "h1", "gpu0", 87.0, 1073741824.0, 85899345920.0, 64.0}};
    broker_metrics_state_t st = {.tasks_queued = 2,
                                 .workers = {1, 2, 0, 0},
                                 .collectors = 1,
                                 .store_commits = 99,
                                 .messages_received = 1234,
                                 .messages_dropped = 5,
                                 .gpus = gpus,
                                 .ngpus = 1};
    CHECK(broker_metrics_publish(m, &st) == BF_OK);
    CHECK(!broker_metrics_due(m, bf_mono_ms()));
    r = get(port, "/metrics");
    CHECKF(r && status_is(r, 200), "%s", r ? r : "(no answer)");
    CHECK(r && strstr(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    static const char *const lines[] = {
        "# TYPE beamfleet_tasks_queued gauge",
        /* 14 tasks, 10 final, 2 queued: 2 running */
        "beamfleet_tasks_queued 2",
        "beamfleet_tasks_running 2",
        "# TYPE beamfleet_tasks_final_total counter",
        "beamfleet_tasks_final_total{status=\"success\"} 6",
        "beamfleet_tasks_final_total{status=\"failed\"} 0",
        "beamfleet_tasks_final_total{status=\"error\"} 1",
        "beamfleet_tasks_final_total{status=\"cancelled\"} 3",
        "beamfleet_jobs{state=\"running\"} 1",
        "beamfleet_jobs{state=\"done\"} 1",
        "beamfleet_jobs{state=\"cancelled\"} 2",
        "beamfleet_workers{state=\"idle\"} 1",
        "beamfleet_workers{state=\"busy\"} 2",
        "beamfleet_workers{state=\"draining\"} 0",
        "beamfleet_workers{state=\"quarantined\"} 0",
        "beamfleet_collectors 1",
        "beamfleet_store_commits_total 99",
        "beamfleet_messages_received_total 1234",
        "beamfleet_messages_dropped_total 5",
        "# TYPE beamfleet_dispatch_latency_seconds histogram",
        /* h1/gpu0: 0.5 s and 0.04 s */
        "beamfleet_dispatch_latency_seconds_bucket{host=\"h1\",device=\"gpu0\",le=\"0.025\"} 0",
        "beamfleet_dispatch_latency_seconds_bucket{host=\"h1\",device=\"gpu0\",le=\"0.05\"} 1",
        "beamfleet_dispatch_latency_seconds_bucket{host=\"h1\",device=\"gpu0\",le=\"0.25\"} 1",
        "beamfleet_dispatch_latency_seconds_bucket{host=\"h1\",device=\"gpu0\",le=\"0.5\"} 2",
        "beamfleet_dispatch_latency_seconds_bucket{host=\"h1\",device=\"gpu0\",le=\"+Inf\"} 2",
        "beamfleet_dispatch_latency_seconds_count{host=\"h1\",device=\"gpu0\"} 2",
        "beamfleet_dispatch_latency_seconds_sum{host=\"h1\",device=\"gpu0\"} 0.540000",
        /* h2/cpu: the requeued task, 0.1 s; task 2 (job unknown) not observed */
        "beamfleet_dispatch_latency_seconds_bucket{host=\"h2\",device=\"cpu\",le=\"0.1\"} 1",
        "beamfleet_dispatch_latency_seconds_count{host=\"h2\",device=\"cpu\"} 1",
        /* durations: h1/gpu0 2.5 s (task 1's first attempt got no result);
           h2/cpu 0.05 and 3.8 s */
        "beamfleet_task_duration_seconds_bucket{host=\"h1\",device=\"gpu0\",le=\"1\"} 0",
        "beamfleet_task_duration_seconds_bucket{host=\"h1\",device=\"gpu0\",le=\"2.5\"} 1",
        "beamfleet_task_duration_seconds_count{host=\"h1\",device=\"gpu0\"} 1",
        "beamfleet_task_duration_seconds_bucket{host=\"h2\",device=\"cpu\",le=\"0.1\"} 1",
        "beamfleet_task_duration_seconds_bucket{host=\"h2\",device=\"cpu\",le=\"2.5\"} 1",
        "beamfleet_task_duration_seconds_bucket{host=\"h2\",device=\"cpu\",le=\"5\"} 2",
        "beamfleet_task_duration_seconds_sum{host=\"h2\",device=\"cpu\"} 3.850000",
        /* untrusted labels: escaped, control characters and bad UTF-8 as '?' */
        "beamfleet_dispatch_latency_seconds_count{host=\"we\\\"ird\\\\host?\",device=\"gpu?\"} 1",
        "beamfleet_worker_gpu_utilization_percent{worker=\"h1:12:gpu0\",host=\"h1\",device="
        "\"gpu0\"} 87",
        "beamfleet_worker_gpu_memory_used_bytes{worker=\"h1:12:gpu0\",host=\"h1\",device="
        "\"gpu0\"} 1073741824",
        "beamfleet_worker_gpu_memory_total_bytes{worker=\"h1:12:gpu0\",host=\"h1\",device="
        "\"gpu0\"} 85899345920",
        "beamfleet_worker_gpu_temperature_celsius{worker=\"h1:12:gpu0\",host=\"h1\",device="
        "\"gpu0\"} 64",
    };
    for (size_t i = 0; r && i < BF_ARRAY_LEN(lines); i++)
        CHECKF(has_line(r, lines[i]), "missing: %s", lines[i]);
    CHECK(r && !strstr(r, "device=\"other\"")); /* under the bound */
    free(r);

    /* HEAD: headers only */
    r = http(port, "HEAD /metrics HTTP/1.0\r\n\r\n");
    CHECK(r && status_is(r, 200) && !strstr(r, "beamfleet_tasks_queued"));
    free(r);
    r = get(port, "/");
    CHECKF(r && status_is(r, 404), "%s", r ? r : "(no answer)");
    free(r);
    r = get(port, "/metrics/../etc/passwd");
    CHECK(r && status_is(r, 404));
    free(r);
    r = http(port, "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    CHECKF(r && status_is(r, 405) && strstr(r, "Allow: GET, HEAD"), "%s", r ? r : "(no answer)");
    free(r);
    r = http(port, "garbage\r\n\r\n"); /* refused or closed, and the server lives on */
    CHECKF(!r || !*r || strstr(r, " 400 "), "%s", r);
    free(r);
    r = get(port, "/metrics");
    CHECK(r && status_is(r, 200));
    free(r);
    /* headers past the 8 KiB a connection may use: refused, not buffered */
    char *big = malloc(20000);
    if (big) {
        int n = snprintf(big, 20000, "GET /metrics HTTP/1.0\r\nX-Pad: ");
        memset(big + n, 'a', 20000 - (size_t)n - 5);
        memcpy(big + 20000 - 5, "\r\n\r\n", 5);
        r = http(port, big);
        CHECKF(!r || !status_is(r, 200), "a 20 KB header was served");
        free(r);
        free(big);
    }

    /* the device bound: 1100 more devices, the rest counted as "other" */
    for (unsigned i = 0; i < 1100; i++) {
        char host[32];
        snprintf(host, sizeof host, "node%u", i);
        broker_metrics_observe_dispatch(m, 1000 + i, "j1", 1, host, "gpu0", 9500);
    }
    CHECK(broker_metrics_publish(m, &st) == BF_OK);
    r = get(port, "/metrics");
    /* 3 devices before, so node1020 is the 1024th and node1021 the first other */
    CHECK(r && strstr(r, "host=\"node1020\""));
    CHECK(r && !strstr(r, "host=\"node1021\""));
    CHECKF(r && has_line(r, "beamfleet_dispatch_latency_seconds_count{host=\"other\",device="
                            "\"other\"} 79"),
           "other count");
    free(r);
    broker_metrics_destroy(&m);
    CHECK(!m);
}

/* Scrapes on this thread while another publishes as fast as it can. */
typedef struct {
    broker_metrics_t *m;
    atomic_int stop;
    unsigned publishes;
} racer_t;

static void *publisher(void *arg)
{
    racer_t *rc = arg;
    broker_metrics_state_t st = {0};
    while (!atomic_load(&rc->stop)) {
        st.tasks_queued = rc->publishes;
        broker_metrics_observe_dispatch(rc->m, rc->publishes % 50, "j", 1, "h", "d", 1);
        if (broker_metrics_publish(rc->m, &st) == BF_OK)
            rc->publishes++;
    }
    return NULL;
}

static void test_race(void)
{
    racer_t rc = {.m = broker_metrics_new("127.0.0.1:0", NULL)};
    CHECK(rc.m);
    if (!rc.m)
        return;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, publisher, &rc) == 0);
    int ok = 0;
    for (int i = 0; i < 200; i++) {
        char *r = get(broker_metrics_port(rc.m), "/metrics");
        if (r && (status_is(r, 503) ||
                  (status_is(r, 200) && strstr(r, "beamfleet_messages_dropped_total"))))
            ok++;
        free(r);
    }
    atomic_store(&rc.stop, 1);
    pthread_join(th, NULL);
    CHECKF(ok == 200, "%d of 200 scrapes whole", ok);
    CHECK(rc.publishes > 0);
    printf("race: 200 scrapes during %u publishes\n", rc.publishes);
    broker_metrics_destroy(&rc.m);
}

int main(void)
{
    test_null();
    test_bad_listen();
    test_stats_copy();
    test_serve();
    test_race();
    if (failures)
        fprintf(stderr, "broker_metrics_test: %d failures\n", failures);
    else
        printf("broker_metrics_test: ok\n");
    return failures ? 1 : 0;
}
