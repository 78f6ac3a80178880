/*  cli/cli_client.c - the client side of the protocol: `submit`, `status`,
    `cancel`, and the follower that prints live progress for `run` and
    `submit --wait` in the words of the notebook Beamfleet replaces
    ("✓ [7/20] s07: +3.21 dB in 4.2 s (GPU 0)", then Progress/Rate/ETA). */

#include "cli.h"

#include "../proto/proto_link.h"

#include <getopt.h>
#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define REQUEST_TIMEOUT_MS 10000

volatile sig_atomic_t cli_interrupted;

void cli_explain_endpoint(const char *endpoint, char *why, size_t why_len)
{
    char seen[BF_ERRLEN];
    if (bf_endpoint_probe(endpoint, cli_security() != NULL, 1000, seen, sizeof seen))
        bf_strlcpy(why, seen, why_len);
}

struct cli_session {
    char *endpoint;
    void *ctx;
    void *sock;    /* NULL until a request needs it, and after a failure */
    void *monitor; /* its handshake events */
};

cli_session_t *cli_session_new(const char *endpoint)
{
    cli_session_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->endpoint = bf_strdup(endpoint);
    self->ctx = zmq_ctx_new();
    if (!self->endpoint || !self->ctx)
        cli_session_destroy(&self);
    return self;
}

static void session_close(cli_session_t *self)
{
    bf_handshake_monitor_close(self->sock, &self->monitor);
    if (self->sock)
        zmq_close(self->sock);
    self->sock = NULL;
}

void cli_session_destroy(cli_session_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cli_session_t *self = *self_p;
    session_close(self);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    free(self->endpoint);
    free(self);
    *self_p = NULL;
}

static bf_err_t session_open(cli_session_t *self, char *err)
{
    if (self->sock)
        return BF_OK;
    self->sock = zmq_socket(self->ctx, ZMQ_DEALER);
    if (!self->sock)
        return bf_fail(err, BF_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0;
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    bf_err_t rc;
    if (cli_security() && (rc = bf_security_client(cli_security(), self->sock, err)) != BF_OK) {
        session_close(self);
        return rc;
    }
    /* A refused key or a CURVE/plaintext mismatch fails at once, with why. */
    if (!(self->monitor = bf_handshake_monitor(self->ctx, self->sock, err))) {
        session_close(self);
        return BF_EIO;
    }
    if (zmq_connect(self->sock, self->endpoint) != 0) {
        rc = bf_fail(err, BF_EINVAL, "--broker %s: %s", self->endpoint, zmq_strerror(zmq_errno()));
        session_close(self);
        return rc;
    }
    return BF_OK;
}

/* Waits for the reply to the request just sent on self->sock. */
static bf_err_t session_reply(cli_session_t *self, proto_msg_t *reply, int timeout_ms, char *err)
{
    const char *endpoint = self->endpoint;
    int64_t deadline = bf_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - bf_mono_ms();
        if (left <= 0) {
            char why[BF_ERRLEN];
            snprintf(why, sizeof why,
                     "no answer from a broker at %s within %d s: nothing there answered as a "
                     "broker (is one running, and is this its port?)",
                     endpoint, timeout_ms / 1000);
            cli_explain_endpoint(endpoint, why, sizeof why);
            return bf_fail(err, BF_ETIMEDOUT, "%s", why);
        }
        zmq_pollitem_t items[2] = {{self->sock, 0, ZMQ_POLLIN, 0},
                                   {self->monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, (long)left) < 0)
            continue;
        char why[BF_ERRLEN];
        if ((items[1].revents & ZMQ_POLLIN) &&
            bf_handshake_failed(self->monitor, why, sizeof why)) {
            cli_explain_endpoint(endpoint, why, sizeof why);
            return bf_fail(err, BF_EPERM, "%s: %s", endpoint, why);
        }
        if (!(items[0].revents & ZMQ_POLLIN))
            continue;
        bf_err_t rc = proto_recv(self->sock, NULL, NULL, reply, 0, why);
        if (rc == BF_EPROTO) {
            bf_warn("dropping a malformed reply: %s", why);
            continue;
        }
        if (rc != BF_OK)
            return bf_fail(err, rc, "receive from %s failed", endpoint);
        if (reply->type == PROTO_HEARTBEAT) {
            proto_msg_clear(reply);
            continue;
        }
        return BF_OK;
    }
}

bf_err_t cli_session_request(cli_session_t *self, const proto_msg_t *request, proto_msg_t *reply,
                             int timeout_ms, char *err)
{
    proto_msg_init(reply, PROTO_NONE);
    bf_err_t rc = session_open(self, err);
    if (rc != BF_OK)
        return rc;
    rc = proto_send(self->sock, NULL, 0, request, 0);
    if (rc == BF_EPROTO) /* refused by the encoder: nothing was sent */
        return bf_fail(err, rc, "the %s request does not fit in one message (limit %u MiB)",
                       proto_type_name(request->type), PROTO_MAX_FRAME >> 20);
    if (rc == BF_OK)
        rc = session_reply(self, reply, timeout_ms, err);
    else
        bf_fail(err, rc, "cannot send to %s: %s", self->endpoint, zmq_strerror(zmq_errno()));
    if (rc != BF_OK) {
        session_close(self); /* a late reply must not answer the next request */
        return rc;
    }
    if (reply->type == PROTO_ERROR) {
        rc = bf_fail(err, reply->code ? (bf_err_t)reply->code : BF_EPROTO, "broker: %s",
                     reply->reason ? reply->reason : "error");
        proto_msg_clear(reply);
    }
    return rc;
}

bf_err_t cli_request(const char *endpoint, const proto_msg_t *request, proto_msg_t *reply,
                     int timeout_ms, char *err)
{
    proto_msg_init(reply, PROTO_NONE);
    cli_session_t *s = cli_session_new(endpoint);
    if (!s)
        return bf_fail(err, BF_ENOMEM, "cannot create a ZeroMQ context");
    bf_err_t rc = cli_session_request(s, request, reply, timeout_ms, err);
    cli_session_destroy(&s);
    return rc;
}

bf_err_t cli_submit_prepare(const bf_job_t *job, bool recompute, proto_msg_t *req, char *err)
{
    json_t *keys = NULL, *reuse = NULL;
    proto_msg_init(req, PROTO_SUBMIT);
    bf_err_t rc = cli_reuse_plan(job, recompute, &keys, &reuse, err);
    if (rc != BF_OK)
        return rc;
    req->obj = bf_job_to_json(job, true);
    if (!req->obj || json_object_set_new(req->obj, "keys", keys) != 0 ||
        json_object_set_new(req->obj, "reuse", reuse) != 0) {
        proto_msg_clear(req);
        return bf_fail(err, BF_ENOMEM, "out of memory");
    }
    size_t reused = json_array_size(reuse);
    if (reused)
        fprintf(stderr,
                "beamfleet: %zu of %zu scenes have a finished result in %s for the same "
                "content; they are not run again (--recompute runs them)\n",
                reused, job->scene_count, job->output);
    /* Say what is too big before anything is sent: a job of a million
       scenes, or of very long paths, does not fit in one message. */
    uint8_t *data = NULL;
    size_t size = 0;
    rc = proto_encode(req, &data, &size);
    free(data);
    if (rc == BF_EPROTO) {
        char *text = json_dumps(req->obj, JSON_COMPACT);
        size_t json_len = text ? strlen(text) : 0;
        free(text);
        proto_msg_clear(req);
        return bf_fail(err, BF_EINVAL,
                       "the job document (%zu scenes, %.1f MiB as JSON) does not fit in one "
                       "message (%u MiB at most): split the job (max_scenes, or several scene "
                       "folders)",
                       job->scene_count, (double)json_len / (1 << 20), PROTO_MAX_FRAME >> 20);
    }
    return BF_OK;
}

bf_err_t cli_submit_send(const char *endpoint, proto_msg_t *req, char job_id[64], unsigned *total,
                         char *err)
{
    proto_msg_t rep;
    bf_err_t rc = cli_request(endpoint, req, &rep, 30000, err);
    if (rc != BF_OK)
        return rc;
    if (rep.type != PROTO_SUBMITTED || !rep.job_id) {
        proto_msg_clear(&rep);
        return bf_fail(err, BF_EPROTO, "unexpected reply to submit: %s", proto_type_name(rep.type));
    }
    bf_strlcpy(job_id, rep.job_id, 64);
    *total = (unsigned)rep.total;
    proto_msg_clear(&rep);
    return BF_OK;
}

bf_err_t cli_submit_job(const char *endpoint, const bf_job_t *job, bool recompute, char job_id[64],
                        unsigned *total, char *err)
{
    proto_msg_t req;
    bf_err_t rc = cli_submit_prepare(job, recompute, &req, err);
    if (rc == BF_OK)
        rc = cli_submit_send(endpoint, &req, job_id, total, err);
    proto_msg_clear(&req);
    return rc;
}

/* ---- status ------------------------------------------------------------- */

static bf_err_t fetch_status(cli_session_t *session, const char *job_id, uint64_t cursor,
                             json_t **doc, char *err)
{
    proto_msg_t req, rep;
    proto_msg_init(&req, PROTO_STATUS);
    if (proto_msg_set(&req.job_id, job_id ? job_id : "") != BF_OK)
        return BF_ENOMEM;
    req.seq = cursor;
    bf_err_t rc = cli_session_request(session, &req, &rep, REQUEST_TIMEOUT_MS, err);
    proto_msg_clear(&req);
    if (rc != BF_OK)
        return rc;
    if (rep.type != PROTO_STATUS_REPLY || !json_is_object(rep.obj)) {
        proto_msg_clear(&rep);
        return bf_fail(err, BF_EPROTO, "unexpected reply to status");
    }
    *doc = json_incref(rep.obj);
    proto_msg_clear(&rep);
    return BF_OK;
}

static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

static double jnum(const json_t *obj, const char *key)
{
    return json_number_value(json_object_get(obj, key));
}

static void fmt_duration(double s, char *out, size_t n)
{
    if (!isfinite(s) || s < 0)
        snprintf(out, n, "-");
    else if (s < 120)
        snprintf(out, n, "%.0f s", s);
    else if (s < 7200)
        snprintf(out, n, "%.1f min", s / 60);
    else
        snprintf(out, n, "%.1f h", s / 3600);
}

static void print_status(const json_t *doc)
{
    const json_t *workers = json_object_get(doc, "workers");
    printf("WORKERS (%zu)\n", json_array_size(workers));
    printf("  %-28s %-16s %-28s %-11s %-22s %6s %8s\n", "NAME", "HOST", "DEVICE", "STATE", "SCENE",
           "DONE", "MEAN");
    size_t i;
    const json_t *w;
    json_array_foreach(workers, i, w)
    {
        char scene[64];
        const char *sc = jstr(w, "task_scene");
        if (*sc)
            snprintf(scene, sizeof scene, "%.40s:%s", sc, jstr(w, "task_stage"));
        else
            snprintf(scene, sizeof scene, "-");
        /* the device with its memory and, for a GPU, compute capability
           (uuid and the rest are in --json) */
        char device[96];
        double gib = jnum(w, "memory_bytes") / (1024.0 * 1024.0 * 1024.0);
        const char *cc = jstr(w, "compute_capability");
        if (*cc)
            snprintf(device, sizeof device, "%.60s %.0fG cc %s", jstr(w, "device"), gib, cc);
        else
            snprintf(device, sizeof device, "%.60s %.0fG", jstr(w, "device"), gib);
        printf("  %-28.28s %-16.16s %-28.28s %-11.11s %-22.22s %6lld %7.1fs\n", jstr(w, "name"),
               jstr(w, "host"), device, jstr(w, "state"), scene,
               (long long)json_integer_value(json_object_get(w, "done")), jnum(w, "mean_s"));
        if (!strcmp(jstr(w, "state"), "quarantined"))
            printf("  %-28s quarantined for %.0f s more: %.100s\n", "",
                   jnum(w, "quarantined_for_s"), jstr(w, "quarantine_reason"));
        /* live GPU figures, when the worker sends them (NVML) */
        const json_t *gpu = json_object_get(w, "gpu");
        if (json_is_object(gpu))
            printf("  %-28s gpu %3.0f%% busy, memory %.1f / %.1f GiB, %.0f C\n", "",
                   jnum(gpu, "gpu_util"), jnum(gpu, "mem_used") / (1024.0 * 1024.0 * 1024.0),
                   jnum(gpu, "mem_total") / (1024.0 * 1024.0 * 1024.0), jnum(gpu, "temperature_c"));
    }
    const json_t *col = json_object_get(doc, "collector");
    printf("COLLECTOR %s, %lld results not yet written\n",
           json_is_true(json_object_get(col, "connected")) ? "connected" : "NOT connected",
           (long long)json_integer_value(json_object_get(col, "outbox")));
    printf("QUEUE %lld tasks\n", (long long)json_integer_value(json_object_get(doc, "queue")));
    const json_t *jobs = json_object_get(doc, "jobs");
    printf("JOBS (%zu)\n", json_array_size(jobs));
    printf("  %-13s %-20s %-9s %7s %7s %7s %7s %7s %10s\n", "ID", "NAME", "STATE", "TOTAL",
           "QUEUED", "RUNNING", "FINAL", "ERRORS", "ETA");
    const json_t *j;
    json_array_foreach(jobs, i, j)
    {
        char eta[32];
        fmt_duration(jnum(j, "eta_s"), eta, sizeof eta);
        const json_t *counts = json_object_get(j, "counts");
        printf("  %-13s %-20.20s %-9s %7lld %7lld %7lld %7lld %7lld %10s\n", jstr(j, "id"),
               jstr(j, "name"), jstr(j, "state"),
               (long long)json_integer_value(json_object_get(j, "total")),
               (long long)json_integer_value(json_object_get(j, "queued")),
               (long long)json_integer_value(json_object_get(j, "running")),
               (long long)json_integer_value(json_object_get(j, "final")),
               (long long)json_integer_value(json_object_get(counts, "error")), eta);
    }
}

static const struct option client_options[] = {{"config", required_argument, NULL, 'c'},
                                               {"broker", required_argument, NULL, 'b'},
                                               {"wait", no_argument, NULL, 'w'},
                                               {"json", no_argument, NULL, 'j'},
                                               {"recompute", no_argument, NULL, 'R'},
                                               {"help", no_argument, NULL, 'h'},
                                               {NULL, 0, NULL, 0}};

/* Parses the options the client commands share; returns -1 to go on, or an
   exit code. */
static int parse_client(int argc, char **argv, const char *help, bf_fleet_t *fleet, bool *wait,
                        bool *as_json, bool *recompute)
{
    const char *config = NULL, *broker = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:b:h", client_options, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'b':
            broker = optarg;
            break;
        case 'w':
            if (!wait)
                goto bad;
            *wait = true;
            break;
        case 'j':
            if (!as_json)
                goto bad;
            *as_json = true;
            break;
        case 'R':
            if (!recompute)
                goto bad;
            *recompute = true;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_EXIT_OK;
        case ':':
            fprintf(stderr, "beamfleet %s: option %s needs a value\n", argv[0], argv[optind - 1]);
            return CLI_EXIT_USAGE;
        default:
        bad:
            fprintf(stderr, "beamfleet %s: unknown option '%s' (try --help)\n", argv[0],
                    argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    if (cli_load_fleet(config, fleet) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (broker) {
        free(fleet->broker_endpoint);
        fleet->broker_endpoint = bf_strdup(broker);
    }
    return -1;
}

int cli_status(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet status [-c FLEET.yaml] [--broker EP] [--json]\n\n"
        "Shows every worker (host, device, state, current scene, tasks done, mean time), the\n"
        "collector, the queue and each job with its ETA. --json prints the broker's status\n"
        "document as it is (see docs/protocol.md).\n";
    bf_fleet_t fleet;
    bool as_json = false;
    int rc = parse_client(argc, argv, help, &fleet, NULL, &as_json, NULL);
    if (rc >= 0)
        return rc;
    if (optind != argc) {
        fprintf(stderr, "beamfleet status: unexpected argument '%s'\n", argv[optind]);
        bf_fleet_clear(&fleet);
        return CLI_EXIT_USAGE;
    }
    char err[BF_ERRLEN];
    json_t *doc = NULL;
    cli_session_t *session = cli_session_new(fleet.broker_endpoint);
    bf_err_t e = session ? fetch_status(session, "", 0, &doc, err)
                         : bf_fail(err, BF_ENOMEM, "cannot create a ZeroMQ context");
    cli_session_destroy(&session);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet status: %s\n", err);
        bf_fleet_clear(&fleet);
        return CLI_EXIT_FAILURE;
    }
    json_object_del(doc, "events");
    if (as_json) {
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        putchar('\n');
    } else {
        print_status(doc);
    }
    json_decref(doc);
    bf_fleet_clear(&fleet);
    return CLI_EXIT_OK;
}

int cli_cancel(int argc, char **argv)
{
    static const char help[] = "usage: beamfleet cancel JOB_ID [-c FLEET.yaml] [--broker EP]\n\n"
                               "Cancels the job's queued and running tasks; each becomes final "
                               "with status\n'cancelled' in the reports.\n";
    bf_fleet_t fleet;
    int rc = parse_client(argc, argv, help, &fleet, NULL, NULL, NULL);
    if (rc >= 0)
        return rc;
    if (optind != argc - 1) {
        fprintf(stderr, "beamfleet cancel: expected one JOB_ID (try --help)\n");
        bf_fleet_clear(&fleet);
        return CLI_EXIT_USAGE;
    }
    proto_msg_t req, rep;
    proto_msg_init(&req, PROTO_CANCEL);
    char err[BF_ERRLEN];
    bf_err_t e = proto_msg_set(&req.job_id, argv[optind]);
    if (e == BF_OK)
        e = cli_request(fleet.broker_endpoint, &req, &rep, REQUEST_TIMEOUT_MS, err);
    else
        bf_fail(err, e, "%s", bf_strerror(e));
    proto_msg_clear(&req);
    bf_fleet_clear(&fleet);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet cancel: %s\n", err);
        return e == BF_ENOENT ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    printf("cancelled %llu tasks of job %s\n", (unsigned long long)rep.total, argv[optind]);
    proto_msg_clear(&rep);
    return CLI_EXIT_OK;
}

int cli_submit(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet submit JOB.yaml [-c FLEET.yaml] [--broker EP] [--wait] [--recompute]\n\n"
        "Submits the job (its scenes must be visible to the workers at the same path, and its\n"
        "output directory to the collector) and prints the job id. --wait then follows the job\n"
        "like `beamfleet run`: a line per result, progress and ETA, and the summary.\n"
        "A scene whose content key (its files, the job's settings, the engine) matches a\n"
        "finished result in the output directory is not run again: that result is reused.\n"
        "--recompute runs every scene.\n";
    bf_fleet_t fleet;
    bool wait = false, recompute = false;
    int rc = parse_client(argc, argv, help, &fleet, &wait, NULL, &recompute);
    if (rc >= 0)
        return rc;
    if (optind != argc - 1) {
        fprintf(stderr, "beamfleet submit: expected one JOB.yaml (try --help)\n");
        bf_fleet_clear(&fleet);
        return CLI_EXIT_USAGE;
    }
    char err[BF_ERRLEN];
    bf_job_t job;
    if (bf_job_load(argv[optind], &job, err) != BF_OK) {
        fprintf(stderr, "beamfleet submit: %s\n", err);
        bf_fleet_clear(&fleet);
        return CLI_EXIT_USAGE;
    }
    char job_id[64];
    unsigned total = 0;
    if (cli_submit_job(fleet.broker_endpoint, &job, recompute, job_id, &total, err) != BF_OK) {
        fprintf(stderr, "beamfleet submit: %s\n", err);
        bf_job_clear(&job);
        bf_fleet_clear(&fleet);
        return CLI_EXIT_FAILURE;
    }
    printf("%s\n", job_id);
    fflush(stdout);
    rc = CLI_EXIT_OK;
    if (wait)
        rc = cli_follow(fleet.broker_endpoint, NULL, job_id, total, job.output, 60000, NULL, NULL);
    bf_job_clear(&job);
    bf_fleet_clear(&fleet);
    return rc;
}

/* ---- follow ------------------------------------------------------------- */

typedef struct {
    unsigned total, done, success, failed, error, cancelled;
    double *improvements;
    size_t n_improvements, cap_improvements;
    double started;
    bool tty;      /* stdout is a terminal: one live progress line, redrawn */
    bool drawn;    /* the live line is on screen now */
    char last[96]; /* the latest result, for the live line */
} follow_t;

/* Erases the live line so that a result line can take its place. */
static void clear_live(follow_t *f)
{
    if (f->tty && f->drawn)
        fputs("\r\033[K", stdout);
    f->drawn = false;
}

/* The live line on a terminal: done/total, running, rate, ETA, last result. */
static void draw_live(follow_t *f, long long running)
{
    if (!f->tty)
        return;
    double elapsed = bf_mono_s() - f->started;
    double rate = elapsed > 0 ? f->done / elapsed : 0;
    char eta[32] = "--";
    if (rate > 0 && f->done < f->total) {
        long s = (long)((f->total - f->done) / rate + 0.5);
        snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    }
    clear_live(f);
    printf("[%u/%u] %3.0f%% | running %lld | %.1f scenes/min | ETA %s%s%s", f->done, f->total,
           f->total ? 100.0 * f->done / f->total : 100.0, running, rate * 60, eta,
           f->last[0] ? " | last: " : "", f->last);
    f->drawn = true;
    fflush(stdout);
}

/* " - optimum on the search bound: tilt_max" for a result whose optimum
   sits on a bound of the optimizer's ranges (docs/protocol.md section
   13), "" otherwise. */
static const char *bound_note(const json_t *ev, char *buf, size_t cap)
{
    const json_t *b = json_object_get(ev, "optimum_on_bound");
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < json_array_size(b) && n < cap; i++) {
        const char *s = json_string_value(json_array_get(b, i));
        if (s)
            n += (size_t)snprintf(buf + n, cap - n, "%s%.32s",
                                  n ? ", " : " - optimum on the search bound: ", s);
    }
    return buf;
}

static void print_event(follow_t *f, const json_t *ev)
{
    char note[160];
    clear_live(f);
    f->done++;
    const char *status = jstr(ev, "status");
    const char *scene = jstr(ev, "scene");
    long long gpu = json_integer_value(json_object_get(ev, "gpu_id"));
    char where[64];
    if (gpu >= 0 && json_object_get(ev, "gpu_id"))
        snprintf(where, sizeof where, "GPU %lld", gpu);
    else
        snprintf(where, sizeof where, "CPU");
    const json_t *imp = json_object_get(ev, "improvement_mean");
    if (!strcmp(status, "success")) {
        f->success++;
        if (json_is_number(imp)) {
            double v = json_number_value(imp);
            if (bf_grow(&f->improvements, &f->cap_improvements, f->n_improvements + 1,
                        sizeof *f->improvements, 64))
                f->improvements[f->n_improvements++] = v;
            printf("✓ [%u/%u] %s: %+.2f dB in %.1f s (%s)%s\n", f->done, f->total, scene, v,
                   jnum(ev, "elapsed_time"), where, bound_note(ev, note, sizeof note));
            snprintf(f->last, sizeof f->last, "%.40s %+.2f dB", scene, v);
        } else {
            printf("✓ [%u/%u] %s: success in %.1f s (%s)\n", f->done, f->total, scene,
                   jnum(ev, "elapsed_time"), where);
        }
    } else {
        if (!strcmp(status, "failed"))
            f->failed++;
        else if (!strcmp(status, "cancelled"))
            f->cancelled++;
        else
            f->error++;
        printf("✗ [%u/%u] %s: %s - %.50s\n", f->done, f->total, scene, status, jstr(ev, "reason"));
        snprintf(f->last, sizeof f->last, "%.40s %s", scene, status);
    }
    if (f->tty) /* the live line says the rest */
        return;
    double elapsed = bf_mono_s() - f->started;
    double rate = elapsed > 0 ? f->done / elapsed : 0;
    double eta = rate > 0 ? (f->total - f->done) / rate : 0;
    printf("   Progress: %.0f%% | Rate: %.1f scenes/min | ETA: %.1f min\n",
           f->total ? 100.0 * f->done / f->total : 100.0, rate * 60, eta / 60);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_summary(follow_t *f, const char *output)
{
    double total = bf_mono_s() - f->started;
    printf("\n================================================================================\n"
           "SUMMARY\n"
           "================================================================================\n");
    printf("Total time:     %.1f minutes (%.0f seconds)\n", total / 60, total);
    printf("Successful:     %u/%u\n", f->success, f->total);
    printf("Failed zones:   %u\n", f->failed);
    printf("Errors:         %u\n", f->error);
    if (f->cancelled)
        printf("Cancelled:      %u\n", f->cancelled);
    if (f->n_improvements > 0) {
        double sum = 0;
        for (size_t i = 0; i < f->n_improvements; i++)
            sum += f->improvements[i];
        qsort(f->improvements, f->n_improvements, sizeof(double), cmp_double);
        printf("\nImprovement Statistics:\n  Mean:   %+.2f dB\n  Min:    %+.2f dB\n  Max:    "
               "%+.2f dB\n",
               sum / f->n_improvements, f->improvements[0], f->improvements[f->n_improvements - 1]);
    }
    if (output) {
        char *pattern = bf_asprintf("%s/results_final_*.json", output);
        glob_t g;
        if (pattern && glob(pattern, 0, NULL, &g) == 0) {
            printf("\nResults saved to: %s\n", g.gl_pathv[g.gl_pathc - 1]);
            globfree(&g);
        } else {
            printf("\nReports in: %s\n", output);
        }
        free(pattern);
    }
    fflush(stdout);
}

/* Waits for news: at most ms, or until the collector's stream (wake) says
   something was written, taking every message queued; without wake, sleeps.
   The broker's status is asked again soon after something was written, so
   a result shows when it is durable, not at the next tick; but not sooner
   than gap_ms after the last request (since): FOLLOW_GAP_MS while tasks
   run, so that a job writing thousands of results a second costs the
   broker tens of status requests a second, not one per batch the collector
   writes; FOLLOW_END_GAP_MS once no task is queued any more, when only the
   tasks the workers hold and the collector's last writes are awaited and
   the wait is the user's. */
#define FOLLOW_GAP_MS     20
#define FOLLOW_END_GAP_MS 2

static void wait_for_news(void *wake, int ms, int64_t since, int gap_ms)
{
    if (!wake) {
        usleep((useconds_t)ms * 1000);
        return;
    }
    zmq_pollitem_t item = {wake, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, ms) <= 0)
        return;
    int64_t gap = since + gap_ms - bf_mono_ms();
    if (gap > 0)
        usleep((useconds_t)gap * 1000);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (zmq_msg_recv(&msg, wake, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&msg);
}

int cli_follow(const char *endpoint, void *wake, const char *job_id, unsigned total,
               const char *output, int give_up_ms, void (*job_over)(void *ud), void *ud)
{
    follow_t f = {.total = total, .started = bf_mono_s(), .tty = isatty(STDOUT_FILENO) == 1};
    uint64_t cursor = 0;
    int64_t last_answer = bf_mono_ms();
    bool over = false;
    int rc = CLI_EXIT_OK;
    cli_session_t *session = cli_session_new(endpoint);
    if (!session) {
        fprintf(stderr, "beamfleet: cannot create a ZeroMQ context\n");
        return CLI_EXIT_FAILURE;
    }
    printf("================================================================================\n"
           "PARALLEL SCENE OPTIMIZATION\n"
           "================================================================================\n"
           "Job %s: %u scenes\n--------------------------------------------------------------"
           "------------------\n",
           job_id, total);
    fflush(stdout);
    while (!cli_interrupted) {
        char err[BF_ERRLEN];
        json_t *doc = NULL;
        int64_t asked = bf_mono_ms();
        if (fetch_status(session, job_id, cursor, &doc, err) != BF_OK) {
            if (bf_mono_ms() - last_answer > give_up_ms) {
                fprintf(stderr, "beamfleet: giving up: %s\n", err);
                rc = CLI_EXIT_FAILURE;
                break;
            }
            usleep(500 * 1000);
            continue;
        }
        last_answer = bf_mono_ms();
        size_t i;
        const json_t *ev;
        json_array_foreach(json_object_get(doc, "events"), i, ev)
        {
            if (!strcmp(jstr(ev, "job_id"), job_id))
                print_event(&f, ev);
        }
        fflush(stdout); /* the lines of one answer together: one write, not two per result */
        json_int_t next = json_integer_value(json_object_get(doc, "next_seq"));
        if (next > 0)
            cursor = (uint64_t)next;
        const json_t *job = NULL, *j;
        json_array_foreach(json_object_get(doc, "jobs"), i, j)
        {
            if (!strcmp(jstr(j, "id"), job_id))
                job = j;
        }
        if (!job) {
            fprintf(stderr, "beamfleet: the broker no longer knows job %s\n", job_id);
            json_decref(doc);
            rc = CLI_EXIT_FAILURE;
            break;
        }
        bool more_events = json_array_size(json_object_get(doc, "events")) >= 1000;
        /* every task dispatched: the last results come within the tasks
           the workers hold, and the job's end is the user's wait */
        bool tail = json_integer_value(json_object_get(job, "queued")) == 0;
        draw_live(&f, json_integer_value(json_object_get(job, "running")));
        if (strcmp(jstr(job, "state"), "running") != 0 && !over) {
            over = true;
            if (job_over)
                job_over(ud);
        }
        /* The job is over for the user once the collector has written every
           result (the broker's outbox is empty). */
        const json_t *col = json_object_get(doc, "collector");
        bool written = json_integer_value(json_object_get(col, "outbox")) == 0;
        json_decref(doc);
        if (over && written && !more_events)
            break;
        if (!more_events) {
            bool ending = over || tail; /* every task final: none queued either */
            wait_for_news(wake, over ? 10 : 250, asked, ending ? FOLLOW_END_GAP_MS : FOLLOW_GAP_MS);
        }
    }
    cli_session_destroy(&session);
    clear_live(&f);
    if (cli_interrupted)
        rc = CLI_EXIT_FAILURE;
    if (rc == CLI_EXIT_OK)
        print_summary(&f, output);
    free(f.improvements);
    return rc;
}
