/*  broker/broker_metrics.c - the broker's Prometheus endpoint: per-device
    histograms and per-task timestamps kept by the reactor, a text snapshot
    rendered by the reactor and swapped in under a mutex, and a
    libmicrohttpd server whose thread serves only that snapshot (see
    broker_metrics.h for the contract, docs/architecture.md for the metrics).
    libmicrohttpd is loaded with dlopen when the endpoint starts, never
    linked: see mhd_load. */

#include "broker_metrics.h"

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MIN_PUBLISH_MS 250        /* the reactor renders at most this often */
#define TASK_MAX       (1u << 22) /* tasks with a timestamp; more are not observed */
#define LABEL_MAX      128        /* bytes of one label value */
/* A slow, idle or half-open client must not keep real scrapes out: the
   server polls every connection from one thread without blocking on any
   (epoll where there is one), caps connections overall and per address, and
   closes a connection silent for HTTP_TIMEOUT_S, so the slots a hostile
   client takes come back within seconds. */
#define HTTP_CONNS     32 /* concurrent scrapes */
#define HTTP_PER_IP    8
#define HTTP_TIMEOUT_S 3

static const double dispatch_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,   1,      2.5,   5,    10,    30,   60,  300};
static const double duration_le[] = {0.1, 0.25, 0.5, 1,   2.5,  5,    10,   30,
                                     60,  120,  300, 600, 1800, 3600, 7200, 21600};
#define NB 16 /* buckets of each histogram (both tables have 16) */

typedef struct {
    uint64_t bucket[NB]; /* non-cumulative; rendered cumulative */
    uint64_t count;
    double sum;
} hist_t;

typedef struct {
    char host[LABEL_MAX], device[LABEL_MAX];
    hist_t dispatch, duration;
} devslot_t;

/* A running job: what it still needs to become done or cancelled. */
typedef struct {
    char id[16]; /* "" = empty slot */
    uint64_t remaining;
    bool cancelled;       /* one of its tasks was */
    int64_t submitted_ms; /* 0: before this broker started */
} jobent_t;

typedef struct {
    uint32_t key; /* task index + 1; 0 = empty */
    int32_t slot; /* device it was sent to, -1 none */
    int64_t queued_ms, sent_ms;
} taskent_t;

struct broker_metrics {
    struct MHD_Daemon *httpd;
    unsigned port;
    int64_t started_ms, last_publish;
    /* the snapshot: written by the reactor, read by the HTTP thread */
    pthread_mutex_t lock;
    bool lock_ok;
    char *text;
    size_t text_len;
    /* reactor-only from here */
    devslot_t *devs; /* BROKER_METRICS_MAX_DEVICES + 1 ("other") */
    size_t ndevs;
    int32_t *devtab; /* (host, device) -> slot + 1, open addressing */
    size_t devcap;
    taskent_t *tasks;
    size_t ntasks, taskcap;
    jobent_t *jobs; /* running jobs by id, open addressing */
    size_t njobs, jobcap;
    uint64_t tasks_total, finals[BROKER_FINALS];
    uint64_t jobs_running, jobs_done, jobs_cancelled;
};

/* A label value from untrusted text: valid UTF-8 only (anything else, and
   control characters, become '?'), quotes, backslashes escaped, bounded. */
static void label_clean(char *dst, size_t n, const char *src)
{
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    while (*s && o + 5 < n) {
        unsigned c = *s;
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0;
        for (size_t k = 1; ok && k < len; k++)
            ok = (s[k] & 0xC0) == 0x80;
        if (ok && len == 1 && (c < 0x20 || c == 0x7F))
            ok = false;
        if (!ok) {
            dst[o++] = '?';
            s++;
            continue;
        }
        if (c == '"' || c == '\\')
            dst[o++] = '\\';
        memcpy(dst + o, s, len);
        o += len;
        s += len;
    }
    dst[o] = '\0';
}

/* ---- devices ------------------------------------------------------------------- */

static uint64_t hash_str(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (h ^ 0xFF) * 1099511628211ull;
}

/* The slot of (host, device), created on first sight; "other" past the bound. */
static int32_t device_slot(broker_metrics_t *m, const char *host, const char *device)
{
    char h[LABEL_MAX], d[LABEL_MAX];
    label_clean(h, sizeof h, host && *host ? host : "?");
    label_clean(d, sizeof d, device && *device ? device : "?");
    size_t k = hash_str(hash_str(1469598103934665603ull, h), d) & (m->devcap - 1);
    for (int32_t v; (v = m->devtab[k]); k = (k + 1) & (m->devcap - 1))
        if (!strcmp(m->devs[v - 1].host, h) && !strcmp(m->devs[v - 1].device, d))
            return v - 1;
    if (m->ndevs >= BROKER_METRICS_MAX_DEVICES)
        return BROKER_METRICS_MAX_DEVICES; /* "other", set up by new */
    int32_t slot = (int32_t)m->ndevs++;
    memcpy(m->devs[slot].host, h, sizeof h);
    memcpy(m->devs[slot].device, d, sizeof d);
    m->devtab[k] = slot + 1;
    return slot;
}

static void hist_add(hist_t *h, const double *le, double v)
{
    if (!(v >= 0) || !isfinite(v))
        v = 0;
    size_t i = 0;
    while (i < NB && v > le[i])
        i++;
    if (i < NB)
        h->bucket[i]++;
    h->count++;
    h->sum += v;
}

/* ---- tasks: index -> timestamps, linear probing with backward-shift delete -- */

static taskent_t *task_find(broker_metrics_t *m, uint32_t t)
{
    if (!m->taskcap)
        return NULL;
    size_t k = ((uint64_t)t * 11400714819323198485ull >> 20) & (m->taskcap - 1);
    for (; m->tasks[k].key; k = (k + 1) & (m->taskcap - 1))
        if (m->tasks[k].key == t + 1)
            return &m->tasks[k];
    return NULL;
}

static bool task_grow(broker_metrics_t *m)
{
    size_t cap = m->taskcap ? 2 * m->taskcap : 1024;
    taskent_t *tab = calloc(cap, sizeof *tab);
    if (!tab)
        return false;
    for (size_t i = 0; i < m->taskcap; i++) {
        if (!m->tasks[i].key)
            continue;
        size_t k = ((uint64_t)(m->tasks[i].key - 1) * 11400714819323198485ull >> 20) & (cap - 1);
        while (tab[k].key)
            k = (k + 1) & (cap - 1);
        tab[k] = m->tasks[i];
    }
    free(m->tasks);
    m->tasks = tab;
    m->taskcap = cap;
    return true;
}

/* The entry of t, added (zeroed) when missing; NULL when full or out of memory. */
static taskent_t *task_put(broker_metrics_t *m, uint32_t t)
{
    taskent_t *e = task_find(m, t);
    if (e)
        return e;
    if (m->ntasks >= TASK_MAX || (2 * (m->ntasks + 1) > m->taskcap && !task_grow(m)))
        return NULL;
    size_t k = ((uint64_t)t * 11400714819323198485ull >> 20) & (m->taskcap - 1);
    while (m->tasks[k].key)
        k = (k + 1) & (m->taskcap - 1);
    m->tasks[k] = (taskent_t){.key = t + 1, .slot = -1};
    m->ntasks++;
    return &m->tasks[k];
}

static void task_del(broker_metrics_t *m, taskent_t *e)
{
    size_t mask = m->taskcap - 1;
    size_t i = (size_t)(e - m->tasks);
    m->tasks[i].key = 0;
    m->ntasks--;
    /* move later members of the cluster back so lookups never stop early */
    for (size_t j = (i + 1) & mask; m->tasks[j].key; j = (j + 1) & mask) {
        size_t home = ((uint64_t)(m->tasks[j].key - 1) * 11400714819323198485ull >> 20) & mask;
        bool between = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (between)
            continue;
        m->tasks[i] = m->tasks[j];
        m->tasks[j].key = 0;
        i = j;
    }
}

/* ---- observations (reactor thread) ---------------------------------------------- */

/* ---- running jobs: id -> remaining tasks, linear probing, backward-shift delete */

static size_t job_home(const broker_metrics_t *m, const char *id)
{
    return hash_str(1469598103934665603ull, id) & (m->jobcap - 1);
}

static jobent_t *job_find(broker_metrics_t *m, const char *id)
{
    if (!m->jobcap || !id)
        return NULL;
    for (size_t k = job_home(m, id); m->jobs[k].id[0]; k = (k + 1) & (m->jobcap - 1))
        if (!strcmp(m->jobs[k].id, id))
            return &m->jobs[k];
    return NULL;
}

static jobent_t *job_put(broker_metrics_t *m, const char *id)
{
    if (2 * (m->njobs + 1) > m->jobcap) {
        size_t cap = m->jobcap ? 2 * m->jobcap : 64, oldcap = m->jobcap;
        jobent_t *tab = calloc(cap, sizeof *tab), *old = m->jobs;
        if (!tab)
            return NULL;
        m->jobs = tab;
        m->jobcap = cap;
        for (size_t i = 0; i < oldcap; i++) {
            if (!old[i].id[0])
                continue;
            size_t k = job_home(m, old[i].id);
            while (tab[k].id[0])
                k = (k + 1) & (cap - 1);
            tab[k] = old[i];
        }
        free(old);
    }
    size_t k = job_home(m, id);
    while (m->jobs[k].id[0])
        k = (k + 1) & (m->jobcap - 1);
    memset(&m->jobs[k], 0, sizeof m->jobs[k]);
    bf_strlcpy(m->jobs[k].id, id, sizeof m->jobs[k].id);
    m->njobs++;
    return &m->jobs[k];
}

static void job_del(broker_metrics_t *m, jobent_t *e)
{
    size_t mask = m->jobcap - 1;
    size_t i = (size_t)(e - m->jobs);
    m->jobs[i].id[0] = '\0';
    m->njobs--;
    for (size_t j = (i + 1) & mask; m->jobs[j].id[0]; j = (j + 1) & mask) {
        size_t home = job_home(m, m->jobs[j].id);
        bool between = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (between)
            continue;
        m->jobs[i] = m->jobs[j];
        m->jobs[j].id[0] = '\0';
        i = j;
    }
}

static int final_index(const char *status)
{
    static const char *const names[BROKER_FINALS] = {"success", "failed", "error", "cancelled"};
    for (int i = 0; status && i < BROKER_FINALS; i++)
        if (!strcmp(status, names[i]))
            return i;
    return -1;
}

bf_err_t broker_metrics_load_job(broker_metrics_t *m, const char *job_id, const char *state,
                                 uint64_t total, const uint64_t counts[BROKER_FINALS])
{
    if (!m || !job_id || !*job_id)
        return BF_OK;
    uint64_t final = 0;
    for (int i = 0; i < BROKER_FINALS; i++) {
        m->finals[i] += counts[i];
        final += counts[i];
    }
    m->tasks_total += total;
    if (state && !strcmp(state, "done")) {
        m->jobs_done++;
        return BF_OK;
    }
    if (state && !strcmp(state, "cancelled")) {
        m->jobs_cancelled++;
        return BF_OK;
    }
    jobent_t *e = job_find(m, job_id);
    if (!e && !(e = job_put(m, job_id)))
        return BF_ENOMEM;
    e->remaining = total > final ? total - final : 0;
    e->cancelled = counts[BROKER_FINAL_CANCELLED] > 0;
    m->jobs_running++;
    return BF_OK;
}

void broker_metrics_observe_submit(broker_metrics_t *m, const char *job_id, uint64_t total,
                                   int64_t now_ms)
{
    if (!m || !job_id || !*job_id || job_find(m, job_id))
        return;
    m->tasks_total += total;
    m->jobs_running++;
    jobent_t *e = job_put(m, job_id);
    if (!e) { /* out of memory: this job will not be seen done */
        bf_warn("metrics: out of memory tracking job %s", job_id);
        return;
    }
    e->remaining = total;
    e->submitted_ms = now_ms ? now_ms : 1;
}

void broker_metrics_observe_final(broker_metrics_t *m, const char *job_id, const char *status)
{
    int k = final_index(status);
    if (!m || k < 0)
        return;
    m->finals[k]++;
    jobent_t *e = job_find(m, job_id);
    if (!e)
        return;
    if (k == BROKER_FINAL_CANCELLED)
        e->cancelled = true;
    if (e->remaining && --e->remaining)
        return;
    m->jobs_running--;
    if (e->cancelled)
        m->jobs_cancelled++;
    else
        m->jobs_done++;
    job_del(m, e);
}

static int64_t job_submitted(broker_metrics_t *m, const char *job_id)
{
    const jobent_t *e = job_find(m, job_id);
    return e ? e->submitted_ms : 0;
}

void broker_metrics_observe_queued(broker_metrics_t *m, uint32_t t, bool final, int64_t now_ms)
{
    if (!m)
        return;
    taskent_t *e = final ? task_find(m, t) : task_put(m, t);
    if (e && final)
        task_del(m, e);
    else if (e) {
        e->queued_ms = now_ms;
        e->sent_ms = 0;
        e->slot = -1;
    }
}

void broker_metrics_observe_dispatch(broker_metrics_t *m, uint32_t t, const char *job_id,
                                     uint64_t attempt, const char *host, const char *device,
                                     int64_t now_ms)
{
    if (!m)
        return;
    taskent_t *e = task_find(m, t);
    int64_t since = e && e->queued_ms ? e->queued_ms : attempt == 1 ? job_submitted(m, job_id) : 0;
    int32_t slot = device_slot(m, host, device);
    if (since > 0 && now_ms >= since)
        hist_add(&m->devs[slot].dispatch, dispatch_le, (double)(now_ms - since) / 1e3);
    if (!e)
        e = task_put(m, t);
    if (e) {
        e->queued_ms = 0;
        e->sent_ms = now_ms;
        e->slot = slot;
    }
}

void broker_metrics_observe_result(broker_metrics_t *m, uint32_t t, int64_t now_ms)
{
    if (!m)
        return;
    taskent_t *e = task_find(m, t);
    if (!e)
        return;
    if (e->sent_ms && e->slot >= 0 && now_ms >= e->sent_ms)
        hist_add(&m->devs[e->slot].duration, duration_le, (double)(now_ms - e->sent_ms) / 1e3);
    task_del(m, e);
}

void broker_metrics_sweep(broker_metrics_t *m, bool (*is_final)(void *ud, uint32_t t), void *ud)
{
    if (!m || !is_final)
        return;
    for (size_t i = 0; i < m->taskcap;) {
        taskent_t *e = &m->tasks[i];
        if (e->key && is_final(ud, e->key - 1))
            task_del(m, e); /* a later entry may have moved here: look again */
        else
            i++;
    }
}

json_t *broker_metrics_stats_copy(const json_t *obj)
{
    static const struct {
        const char *key;
        double lo, hi;
    } f[] = {{"gpu_util", 0, 100},
             {"mem_used", 0, 1152921504606846976.0},
             {"mem_total", 0, 1152921504606846976.0},
             {"temperature_c", -100, 200}};
    if (!json_is_object(obj))
        return NULL;
    json_t *c = json_object();
    for (size_t i = 0; c && i < BF_ARRAY_LEN(f); i++) {
        json_t *v = json_object_get(obj, f[i].key);
        double x = json_number_value(v);
        if (!json_is_number(v) || !isfinite(x) || x < f[i].lo || x > f[i].hi ||
            json_object_set_new(c, f[i].key, json_real(x)) != 0) {
            json_decref(c);
            return NULL;
        }
    }
    if (c && json_real_value(json_object_get(c, "mem_used")) >
                 json_real_value(json_object_get(c, "mem_total"))) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* ---- rendering -------------------------------------------------------------------- */

static void family(bf_buf_t *b, const char *name, const char *type, const char *help)
{
    bf_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_render(bf_buf_t *b, const char *name, const devslot_t *d, const hist_t *h,
                        const double *le)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < NB; i++) {
        cum += h->bucket[i];
        bf_buf_printf(b, "%s_bucket{host=\"%s\",device=\"%s\",le=\"%g\"} %llu\n", name, d->host,
                      d->device, le[i], (unsigned long long)cum);
    }
    bf_buf_printf(b, "%s_bucket{host=\"%s\",device=\"%s\",le=\"+Inf\"} %llu\n", name, d->host,
                  d->device, (unsigned long long)h->count);
    bf_buf_printf(b, "%s_sum{host=\"%s\",device=\"%s\"} %.6f\n", name, d->host, d->device, h->sum);
    bf_buf_printf(b, "%s_count{host=\"%s\",device=\"%s\"} %llu\n", name, d->host, d->device,
                  (unsigned long long)h->count);
}

static void render(broker_metrics_t *m, bf_buf_t *b, const broker_metrics_state_t *s, int64_t now)
{
    static const char *const wstate[BROKER_WORKER_STATES] = {"idle", "busy", "draining",
                                                             "quarantined"};
    family(b, "beamfleet_broker_uptime_seconds", "gauge", "Seconds since the broker started.");
    bf_buf_printf(b, "beamfleet_broker_uptime_seconds %.3f\n", (double)(now - m->started_ms) / 1e3);
    family(b, "beamfleet_tasks_queued", "gauge", "Tasks waiting for a worker.");
    bf_buf_printf(b, "beamfleet_tasks_queued %llu\n", (unsigned long long)s->tasks_queued);
    family(b, "beamfleet_tasks_running", "gauge", "Tasks leased to a worker.");
    uint64_t final = 0;
    for (int i = 0; i < BROKER_FINALS; i++)
        final += m->finals[i];
    uint64_t running =
        m->tasks_total > final + s->tasks_queued ? m->tasks_total - final - s->tasks_queued : 0;
    bf_buf_printf(b, "beamfleet_tasks_running %llu\n", (unsigned long long)running);
    family(b, "beamfleet_tasks_final_total", "counter",
           "Tasks that reached a final status, over the life of the store.");
    bf_buf_printf(b,
                  "beamfleet_tasks_final_total{status=\"success\"} %llu\n"
                  "beamfleet_tasks_final_total{status=\"failed\"} %llu\n"
                  "beamfleet_tasks_final_total{status=\"error\"} %llu\n"
                  "beamfleet_tasks_final_total{status=\"cancelled\"} %llu\n",
                  (unsigned long long)m->finals[BROKER_FINAL_SUCCESS],
                  (unsigned long long)m->finals[BROKER_FINAL_FAILED],
                  (unsigned long long)m->finals[BROKER_FINAL_ERROR],
                  (unsigned long long)m->finals[BROKER_FINAL_CANCELLED]);
    family(b, "beamfleet_jobs", "gauge", "Jobs in the store by state.");
    bf_buf_printf(b,
                  "beamfleet_jobs{state=\"running\"} %llu\nbeamfleet_jobs{state=\"done\"} %llu\n"
                  "beamfleet_jobs{state=\"cancelled\"} %llu\n",
                  (unsigned long long)m->jobs_running, (unsigned long long)m->jobs_done,
                  (unsigned long long)m->jobs_cancelled);
    family(b, "beamfleet_workers", "gauge", "Connected workers by state.");
    for (size_t i = 0; i < BROKER_WORKER_STATES; i++)
        bf_buf_printf(b, "beamfleet_workers{state=\"%s\"} %llu\n", wstate[i],
                      (unsigned long long)s->workers[i]);
    family(b, "beamfleet_collectors", "gauge", "Connected collectors (0 or 1).");
    bf_buf_printf(b, "beamfleet_collectors %llu\n", (unsigned long long)s->collectors);
    family(b, "beamfleet_store_commits_total", "counter", "Store transactions committed.");
    bf_buf_printf(b, "beamfleet_store_commits_total %llu\n", (unsigned long long)s->store_commits);
    family(b, "beamfleet_messages_received_total", "counter", "Well-formed messages received.");
    bf_buf_printf(b, "beamfleet_messages_received_total %llu\n",
                  (unsigned long long)s->messages_received);
    family(b, "beamfleet_messages_dropped_total", "counter",
           "Messages dropped: malformed, or unexpected from the sender.");
    bf_buf_printf(b, "beamfleet_messages_dropped_total %llu\n",
                  (unsigned long long)s->messages_dropped);

    size_t nd = m->ndevs;
    bool other = m->devs[BROKER_METRICS_MAX_DEVICES].dispatch.count ||
                 m->devs[BROKER_METRICS_MAX_DEVICES].duration.count;
    family(b, "beamfleet_dispatch_latency_seconds", "histogram",
           "Seconds from queued to sent to a worker, per device.");
    for (size_t i = 0; i < nd; i++)
        hist_render(b, "beamfleet_dispatch_latency_seconds", &m->devs[i], &m->devs[i].dispatch,
                    dispatch_le);
    if (other)
        hist_render(b, "beamfleet_dispatch_latency_seconds", &m->devs[BROKER_METRICS_MAX_DEVICES],
                    &m->devs[BROKER_METRICS_MAX_DEVICES].dispatch, dispatch_le);
    family(b, "beamfleet_task_duration_seconds", "histogram",
           "Seconds from sent to a worker to its result, per device.");
    for (size_t i = 0; i < nd; i++)
        hist_render(b, "beamfleet_task_duration_seconds", &m->devs[i], &m->devs[i].duration,
                    duration_le);
    if (other)
        hist_render(b, "beamfleet_task_duration_seconds", &m->devs[BROKER_METRICS_MAX_DEVICES],
                    &m->devs[BROKER_METRICS_MAX_DEVICES].duration, duration_le);

    static const struct {
        const char *name, *help;
        size_t off;
    } g[] = {
        {"beamfleet_worker_gpu_utilization_percent", "GPU utilization reported by the worker.",
         offsetof(broker_metrics_gpu_t, gpu_util)},
        {"beamfleet_worker_gpu_memory_used_bytes", "GPU memory in use reported by the worker.",
         offsetof(broker_metrics_gpu_t, mem_used)},
        {"beamfleet_worker_gpu_memory_total_bytes", "GPU memory reported by the worker.",
         offsetof(broker_metrics_gpu_t, mem_total)},
        {"beamfleet_worker_gpu_temperature_celsius", "GPU temperature reported by the worker.",
         offsetof(broker_metrics_gpu_t, temperature_c)},
    };
    size_t ng = s->ngpus < BROKER_METRICS_MAX_WORKERS ? s->ngpus : BROKER_METRICS_MAX_WORKERS;
    for (size_t k = 0; k < BF_ARRAY_LEN(g); k++) {
        family(b, g[k].name, "gauge", g[k].help);
        for (size_t i = 0; i < ng; i++) {
            char w[LABEL_MAX * 2], h[LABEL_MAX], d[LABEL_MAX];
            label_clean(w, sizeof w, s->gpus[i].worker);
            label_clean(h, sizeof h, s->gpus[i].host);
            label_clean(d, sizeof d, s->gpus[i].device);
            double v = *(const double *)((const char *)&s->gpus[i] + g[k].off);
            bf_buf_printf(b, "%s{worker=\"%s\",host=\"%s\",device=\"%s\"} %.17g\n", g[k].name, w, h,
                          d, v);
        }
    }
}

bool broker_metrics_due(const broker_metrics_t *m, int64_t now_ms)
{
    return m && (!m->last_publish || now_ms - m->last_publish >= MIN_PUBLISH_MS);
}

bf_err_t broker_metrics_publish(broker_metrics_t *m, const broker_metrics_state_t *state)
{
    if (!m || !state)
        return BF_OK;
    int64_t now = bf_mono_ms();
    bf_buf_t b = {0};
    render(m, &b, state, now);
    if (b.oom) {
        free(b.p);
        return BF_ENOMEM;
    }
    m->last_publish = now ? now : 1;
    pthread_mutex_lock(&m->lock);
    char *old = m->text;
    m->text = b.p;
    m->text_len = b.len;
    pthread_mutex_unlock(&m->lock);
    free(old);
    return BF_OK;
}

/* ---- libmicrohttpd, loaded on first use ----------------------------------------------- */

/* Why dlopen: linking libmicrohttpd pulls GnuTLS and nine more libraries
   (p11-kit, idn2, unistring, tasn1, nettle, hogweed, gmp, ffi, ...) into
   every beamfleet process, and their loading and constructors cost each
   start ~1.45 ms of CPU (perf stat on an empty main: 1.82 ms with -lzmq
   alone, 3.27 ms with -lmicrohttpd too; `beamfleet nosuch` took 5.6 ms
   linked, 3.7 ms without it), yet only this endpoint uses it, and only when
   a metrics port is set.
   <microhttpd.h> stays the header: its types, constants and prototypes
   (the pointers below have the functions' own types); only the link goes.
   BF_MHD_SONAME is the SONAME of the library the build found (CMake reads
   it). The library stays loaded for the life of the process. */
#ifndef BF_MHD_SONAME
#error "BF_MHD_SONAME (libmicrohttpd's SONAME) comes from CMake (CMakeLists.txt)"
#endif

static struct {
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
    __typeof__(MHD_get_daemon_info) *get_daemon_info;
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_destroy_response) *destroy_response;
} mhd;
static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;
static char mhd_why[BF_ERRLEN]; /* "" when mhd is filled in */

static void mhd_open(void)
{
    void *lib = dlopen(BF_MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(mhd_why, sizeof mhd_why, "%s", why ? why : "not found");
        return;
    }
    static const struct {
        const char *name;
        size_t off;
    } syms[] = {
        {"MHD_start_daemon", offsetof(__typeof__(mhd), start_daemon)},
        {"MHD_stop_daemon", offsetof(__typeof__(mhd), stop_daemon)},
        {"MHD_get_daemon_info", offsetof(__typeof__(mhd), get_daemon_info)},
        {"MHD_create_response_from_buffer", offsetof(__typeof__(mhd), create_response_from_buffer)},
        {"MHD_add_response_header", offsetof(__typeof__(mhd), add_response_header)},
        {"MHD_queue_response", offsetof(__typeof__(mhd), queue_response)},
        {"MHD_destroy_response", offsetof(__typeof__(mhd), destroy_response)},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(syms); i++) {
        void *f = dlsym(lib, syms[i].name);
        if (!f) {
            snprintf(mhd_why, sizeof mhd_why, "%s missing from the library", syms[i].name);
            memset(&mhd, 0, sizeof mhd);
            dlclose(lib);
            return;
        }
        /* POSIX guarantees a function pointer round-trips through void * */
        memcpy((char *)&mhd + syms[i].off, &f, sizeof f);
    }
}

/* Loads the library once per process (thread-safe); BF_OK, or BF_EUNSUPP
   with why pointing at dlerror()'s text or the missing symbol. */
static bf_err_t mhd_load(const char **why)
{
    pthread_once(&mhd_once, mhd_open);
    *why = mhd_why;
    return mhd_why[0] ? BF_EUNSUPP : BF_OK;
}

/* ---- the HTTP thread ------------------------------------------------------------------ */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, char *body, size_t len,
                             const char *type, bool allow)
{
    struct MHD_Response *r = mhd.create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    enum MHD_Result ok = mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES && allow)
        ok = mhd.add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (ok == MHD_YES)
        ok = mhd.queue_response(c, code, r);
    mhd.destroy_response(r);
    return ok;
}

static enum MHD_Result text_reply(struct MHD_Connection *c, unsigned code, const char *msg,
                                  bool allow)
{
    char *body = bf_strdup(msg);
    if (!body)
        return MHD_NO;
    return reply(c, code, body, strlen(body), "text/plain; charset=utf-8", allow);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    broker_metrics_t *m = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return text_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n", true);
    if (strcmp(url, "/metrics") != 0)
        return text_reply(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n", false);
    pthread_mutex_lock(&m->lock);
    size_t len = m->text_len;
    char *body = m->text ? malloc(len ? len : 1) : NULL;
    if (body)
        memcpy(body, m->text, len);
    bool ready = m->text != NULL;
    pthread_mutex_unlock(&m->lock);
    if (!ready)
        return text_reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n", false);
    if (!body)
        return MHD_NO;
    return reply(c, MHD_HTTP_OK, body, len, "text/plain; version=0.0.4; charset=utf-8", false);
}

/* ---- life cycle ------------------------------------------------------------------------ */

/* "HOST:PORT" or "[V6]:PORT" -> a socket address (numeric host or a name). */
static bf_err_t parse_listen(const char *listen, struct sockaddr_storage *sa, char *err)
{
    char host[256], port[16];
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || colon == listen || !colon[1] || strlen(colon + 1) >= sizeof port ||
        (size_t)(colon - listen) >= sizeof host)
        return bf_fail(err, BF_EINVAL, "--metrics (metrics.listen) '%.200s': expected HOST:PORT",
                       listen ? listen : "");
    size_t hl = (size_t)(colon - listen);
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (host[0] == '[') {
        if (hl < 3 || host[hl - 1] != ']')
            return bf_fail(err, BF_EINVAL,
                           "--metrics (metrics.listen) '%.200s': expected [ADDRESS]:PORT", listen);
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    strcpy(port, colon + 1);
    char *end;
    long pn = strtol(port, &end, 10);
    if (*end || pn < 0 || pn > 65535)
        return bf_fail(err, BF_EINVAL, "--metrics (metrics.listen) '%.200s': port must be 0..65535",
                       listen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res)
        return bf_fail(err, BF_EINVAL, "--metrics (metrics.listen) '%.200s': %s", listen,
                       rc ? gai_strerror(rc) : "no address");
    memset(sa, 0, sizeof *sa);
    memcpy(sa, res->ai_addr, res->ai_addrlen <= sizeof *sa ? res->ai_addrlen : sizeof *sa);
    freeaddrinfo(res);
    return BF_OK;
}

bf_err_t broker_metrics_check_listen(const char *listen, char *err)
{
    struct sockaddr_storage sa;
    return parse_listen(listen, &sa, err);
}

broker_metrics_t *broker_metrics_new(const char *listen, char *err)
{
    struct sockaddr_storage sa;
    if (parse_listen(listen, &sa, err) != BF_OK)
        return NULL;
    broker_metrics_t *m = calloc(1, sizeof *m);
    if (!m) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    m->started_ms = bf_mono_ms();
    m->devcap = 4096; /* > 2 * BROKER_METRICS_MAX_DEVICES: probes stay short */
    m->devs = calloc(BROKER_METRICS_MAX_DEVICES + 1, sizeof *m->devs);
    m->devtab = calloc(m->devcap, sizeof *m->devtab);
    if (!m->devs || !m->devtab || pthread_mutex_init(&m->lock, NULL) != 0) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    m->lock_ok = true;
    strcpy(m->devs[BROKER_METRICS_MAX_DEVICES].host, "other");
    strcpy(m->devs[BROKER_METRICS_MAX_DEVICES].device, "other");
    const char *why;
    if (mhd_load(&why) != BF_OK) {
        bf_fail(err, BF_EUNSUPP,
                "--metrics (metrics.listen) '%.200s': cannot load " BF_MHD_SONAME
                " for the HTTP endpoint (%.300s)",
                listen, why);
        goto fail;
    }
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD;
    if (sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    m->httpd = mhd.start_daemon(
        flags, 0, NULL, NULL, answer, m, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)HTTP_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, MHD_OPTION_END);
    if (!m->httpd) {
        bf_fail(err, BF_EIO, "--metrics (metrics.listen) '%.200s': cannot serve HTTP there (%s)",
                listen, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *info = mhd.get_daemon_info(m->httpd, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : 0;
    return m;
fail:
    broker_metrics_destroy(&m);
    return NULL;
}

unsigned broker_metrics_port(const broker_metrics_t *m)
{
    return m ? m->port : 0;
}

void broker_metrics_destroy(broker_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_metrics_t *m = *self_p;
    if (m->httpd)
        mhd.stop_daemon(m->httpd); /* joins the HTTP thread */
    if (m->lock_ok)
        pthread_mutex_destroy(&m->lock);
    free(m->text);
    free(m->devs);
    free(m->devtab);
    free(m->tasks);
    free(m->jobs);
    free(m);
    *self_p = NULL;
}
