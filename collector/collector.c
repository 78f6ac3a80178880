/*  collector/collector.c - the collector's loop: one DEALER to the broker
    (COLLECT with credit, heartbeats both ways, a fresh connection with
    backoff and jitter when the broker falls silent), deliveries gathered
    into batches, written per job through collector_report, acknowledged
    only after the write is durable, and published on a PUB socket. A batch
    that cannot be written (disk full, read-only) stays in memory
    unacknowledged and is retried every second; the broker holds no more
    than the credit in flight, so memory stays bounded. */

#include "collector.h"
#include "collector_report.h"

#include "../proto/proto.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_JOBS_OPEN 64

typedef struct {
    char *job_id;
    collector_report_t *report;
} open_job_t;

struct collector {
    collector_config_t cfg;
    char *broker, *name, *out_root, *publish_ep;
    void *ctx, *dealer, *pub;
    volatile sig_atomic_t stop;
    int64_t last_recv, last_send, retry_at;
    unsigned backoff_ms;
    open_job_t jobs[MAX_JOBS_OPEN];
    size_t njobs;
    proto_msg_t *pending; /* received, not yet written and acknowledged */
    size_t npending, cappending;
    bool disk_trouble;
};

static bf_err_t send_msg(collector_t *c, proto_msg_t *m)
{
    bf_err_t rc = proto_send(c->dealer, NULL, 0, m, ZMQ_DONTWAIT);
    if (rc == BF_OK)
        c->last_send = bf_mono_ms();
    return rc;
}

static bf_err_t connect_broker(collector_t *c, char *err)
{
    if (c->dealer)
        zmq_close(c->dealer);
    c->dealer = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->dealer)
        return bf_fail(err, BF_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    char id[33];
    bf_uuid(id);
    int zero = 0;
    zmq_setsockopt(c->dealer, ZMQ_ROUTING_ID, id, 32);
    zmq_setsockopt(c->dealer, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(c->dealer, c->broker) != 0)
        return bf_fail(err, BF_EINVAL, "--broker %s: %s", c->broker, zmq_strerror(zmq_errno()));
    proto_msg_t m;
    proto_msg_init(&m, PROTO_COLLECT);
    m.credit = c->cfg.credit;
    bf_err_t rc = proto_msg_set(&m.worker, c->name);
    if (rc == BF_OK)
        rc = send_msg(c, &m);
    proto_msg_clear(&m);
    c->last_recv = bf_mono_ms();
    /* Deliveries held from the old connection will come again. */
    for (size_t i = 0; i < c->npending; i++)
        proto_msg_clear(&c->pending[i]);
    c->npending = 0;
    return rc == BF_OK ? BF_OK : bf_fail(err, rc, "cannot register with %s", c->broker);
}

collector_t *collector_new(const collector_config_t *cfg, char *err)
{
    collector_t *c = calloc(1, sizeof *c);
    if (!c) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    if (!c->cfg.heartbeat_ms)
        c->cfg.heartbeat_ms = 1000;
    if (!c->cfg.liveness)
        c->cfg.liveness = 3;
    if (!c->cfg.credit)
        c->cfg.credit = 256;
    c->broker = bf_strdup(cfg->broker);
    c->name = cfg->name ? bf_strdup(cfg->name) : bf_asprintf("%s:%d", bf_hostname(), (int)getpid());
    c->out_root = bf_strdup(cfg->out_root);
    c->ctx = zmq_ctx_new();
    if (!c->broker || !c->name || !c->ctx) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    if (cfg->publish && *cfg->publish) {
        c->pub = zmq_socket(c->ctx, ZMQ_PUB);
        int zero = 0;
        if (c->pub)
            zmq_setsockopt(c->pub, ZMQ_LINGER, &zero, sizeof zero);
        if (!c->pub || zmq_bind(c->pub, cfg->publish) != 0) {
            bf_fail(err, BF_EIO, "--publish %s: %s", cfg->publish, zmq_strerror(zmq_errno()));
            goto fail;
        }
        char ep[256];
        size_t len = sizeof ep;
        c->publish_ep =
            bf_strdup(zmq_getsockopt(c->pub, ZMQ_LAST_ENDPOINT, ep, &len) == 0 ? ep : cfg->publish);
    }
    return c;
fail:
    collector_destroy(&c);
    return NULL;
}

const char *collector_publish_endpoint(const collector_t *self)
{
    return self->publish_ep;
}

void collector_stop(collector_t *self)
{
    self->stop = 1;
}

void collector_destroy(collector_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    collector_t *c = *self_p;
    for (size_t i = 0; i < c->njobs; i++) {
        collector_report_close(&c->jobs[i].report);
        free(c->jobs[i].job_id);
    }
    for (size_t i = 0; i < c->npending; i++)
        proto_msg_clear(&c->pending[i]);
    free(c->pending);
    if (c->dealer)
        zmq_close(c->dealer);
    if (c->pub)
        zmq_close(c->pub);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c->broker);
    free(c->name);
    free(c->out_root);
    free(c->publish_ep);
    free(c);
    *self_p = NULL;
}

/* The report of a job, opened (and recovered) on first use. */
static collector_report_t *job_report(collector_t *c, const char *job_id, const json_t *job,
                                      char *err)
{
    for (size_t i = 0; i < c->njobs; i++)
        if (!strcmp(c->jobs[i].job_id, job_id))
            return c->jobs[i].report;
    const char *output = json_string_value(json_object_get(job, "output"));
    const char *name = json_string_value(json_object_get(job, "name"));
    char *dir = NULL;
    if (c->out_root)
        dir = bf_safe_name(name) ? bf_asprintf("%s/%s", c->out_root, name) : NULL;
    else if (output && output[0] == '/')
        dir = bf_strdup(output);
    if (!dir) {
        bf_fail(err, BF_EINVAL, "job %s: no usable output directory", job_id);
        return NULL;
    }
    collector_report_t *r = NULL;
    bf_err_t rc = collector_report_open(dir, job_id, &r, err);
    free(dir);
    if (rc != BF_OK)
        return NULL;
    if (c->njobs == MAX_JOBS_OPEN) { /* close the oldest; it reopens if needed */
        collector_report_close(&c->jobs[0].report);
        free(c->jobs[0].job_id);
        memmove(&c->jobs[0], &c->jobs[1], (MAX_JOBS_OPEN - 1) * sizeof c->jobs[0]);
        c->njobs--;
    }
    c->jobs[c->njobs].job_id = bf_strdup(job_id);
    c->jobs[c->njobs].report = r;
    c->njobs++;
    return r;
}

static void publish(collector_t *c, const char *topic, const json_t *doc)
{
    if (!c->pub)
        return;
    uint8_t *data;
    size_t size;
    if (proto_json_to_msgpack(doc, &data, &size) != BF_OK)
        return;
    zmq_send(c->pub, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->pub, data, size, ZMQ_DONTWAIT);
    free(data);
}

static void ack(collector_t *c, uint64_t seq)
{
    proto_msg_t m;
    proto_msg_init(&m, PROTO_ACK);
    m.seq = seq;
    if (send_msg(c, &m) != BF_OK)
        bf_warn("ack %llu not sent: %s", (unsigned long long)seq, zmq_strerror(zmq_errno()));
}

/* Writes the pending deliveries: per job, new results appended in one go;
   then acknowledged in order. Stops at the first job that cannot be
   written, leaving it and what follows pending. */
static void write_pending(collector_t *c)
{
    size_t done = 0;
    char err[BF_ERRLEN] = "";
    while (done < c->npending) {
        proto_msg_t *first = &c->pending[done];
        json_t *job = json_object_get(first->obj, "job");
        collector_report_t *r = job_report(c, first->job_id, job, err);
        if (!r)
            break;
        if (first->type == PROTO_JOB_DONE) {
            if (collector_report_finish(r, job, err) != BF_OK)
                break;
            ack(c, first->seq);
            publish(c, "job-done", job);
            bf_info("job %s done: reports in %s", first->job_id,
                    json_string_value(json_object_get(job, "output")));
            done++;
            continue;
        }
        /* the run of deliveries of this job */
        size_t end = done;
        json_t *batch = json_array();
        while (end < c->npending && c->pending[end].type == PROTO_DELIVER &&
               !strcmp(c->pending[end].job_id, first->job_id)) {
            json_t *res = json_object_get(c->pending[end].obj, "result");
            const char *tid = c->pending[end].task_id;
            bool dup = collector_report_has(r, tid);
            for (size_t k = 0; !dup && k < json_array_size(batch); k++)
                dup = !strcmp(
                    json_string_value(json_object_get(json_array_get(batch, k), "task_id")) ?: "",
                    tid ? tid : "");
            if (json_is_object(res) && !dup)
                json_array_append(batch, res);
            end++;
        }
        bf_err_t rc = collector_report_append(r, batch, err);
        if (rc != BF_OK) {
            json_decref(batch);
            break;
        }
        for (size_t k = done; k < end; k++)
            ack(c, c->pending[k].seq);
        size_t i;
        json_t *res;
        json_array_foreach(batch, i, res) publish(c, "result", res);
        json_decref(batch);
        done = end;
    }
    if (done < c->npending) {
        if (!c->disk_trouble)
            bf_error("cannot write reports, keeping %zu results unacknowledged and retrying: %s",
                     c->npending - done, err);
        c->disk_trouble = true;
        c->retry_at = bf_mono_ms() + 1000;
    } else if (c->disk_trouble) {
        bf_info("reports writable again");
        c->disk_trouble = false;
    }
    for (size_t i = 0; i < done; i++)
        proto_msg_clear(&c->pending[i]);
    memmove(c->pending, c->pending + done, (c->npending - done) * sizeof *c->pending);
    c->npending -= done;
}

static bool keep(collector_t *c, proto_msg_t *m)
{
    if (c->npending == c->cappending) {
        size_t cap = c->cappending ? 2 * c->cappending : 64;
        proto_msg_t *p = realloc(c->pending, cap * sizeof *p);
        if (!p)
            return false;
        c->pending = p;
        c->cappending = cap;
    }
    c->pending[c->npending++] = *m;
    memset(m, 0, sizeof *m);
    return true;
}

bf_err_t collector_run(collector_t *c)
{
    char err[BF_ERRLEN];
    if (connect_broker(c, err) != BF_OK) {
        bf_error("%s", err);
        return BF_EIO;
    }
    bf_info("collecting from %s%s%s", c->broker, c->publish_ep ? ", publishing on " : "",
            c->publish_ep ? c->publish_ep : "");
    int64_t reconnect_at = 0;
    while (!c->stop) {
        int64_t now = bf_mono_ms();
        long timeout = (long)c->cfg.heartbeat_ms / 4;
        zmq_pollitem_t item = {c->dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, timeout) < 0 && zmq_errno() != EINTR)
            return BF_EIO;
        now = bf_mono_ms();
        bool got = false;
        for (int n = 0; n < 4096; n++) {
            proto_msg_t m;
            char why[BF_ERRLEN];
            bf_err_t rc = proto_recv(c->dealer, NULL, NULL, &m, ZMQ_DONTWAIT, why);
            if (rc == BF_EIO)
                break;
            c->last_recv = now;
            c->backoff_ms = 0;
            if (rc != BF_OK) {
                bf_warn("dropping a malformed message: %s", why);
                continue;
            }
            if ((m.type == PROTO_DELIVER || m.type == PROTO_JOB_DONE) && m.job_id &&
                json_is_object(m.obj)) {
                if (keep(c, &m))
                    got = true;
            } else if (m.type == PROTO_ERROR) {
                /* the broker restarted and forgot us: register again */
                proto_msg_t reg;
                proto_msg_init(&reg, PROTO_COLLECT);
                reg.credit = c->cfg.credit;
                if (proto_msg_set(&reg.worker, c->name) == BF_OK && send_msg(c, &reg) != BF_OK)
                    bf_warn("cannot register again");
                proto_msg_clear(&reg);
            }
            proto_msg_clear(&m);
        }
        if ((got && !c->disk_trouble) || (c->disk_trouble && now >= c->retry_at))
            write_pending(c);
        if (now - c->last_send >= (int64_t)c->cfg.heartbeat_ms) {
            proto_msg_t hb;
            proto_msg_init(&hb, PROTO_HEARTBEAT);
            if (send_msg(c, &hb) != BF_OK)
                c->last_send = now; /* try again next interval */
        }
        if (now - c->last_recv > (int64_t)c->cfg.heartbeat_ms * c->cfg.liveness) {
            if (!reconnect_at) {
                /* back off exponentially with jitter: 250 ms .. 5 s */
                c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 250;
                if (c->backoff_ms > 5000)
                    c->backoff_ms = 5000;
                char jit[33];
                bf_uuid(jit);
                reconnect_at = now + c->backoff_ms / 2 +
                               (int64_t)(strtoul(jit + 24, NULL, 16) % (c->backoff_ms / 2 + 1));
                bf_warn("broker silent for %lld ms, reconnecting in %lld ms",
                        (long long)(now - c->last_recv), (long long)(reconnect_at - now));
            } else if (now >= reconnect_at) {
                reconnect_at = 0;
                if (connect_broker(c, err) != BF_OK)
                    bf_warn("%s", err);
            }
        } else {
            reconnect_at = 0;
        }
    }
    /* Write what we have; unacknowledged results come again next time. */
    if (c->npending)
        write_pending(c);
    return BF_OK;
}
