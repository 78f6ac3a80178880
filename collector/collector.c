/*  collector/collector.c - the collector's loop: one link to the broker
    (proto_link_t, as the worker's: COLLECT with credit, heartbeats both
    ways, a fresh connection with backoff and jitter when the broker falls
    silent, COLLECT again when the broker has forgotten us), deliveries drained from the socket into
   one batch, written per job through collector_report, acknowledged only after the write is
   durable, and published on a PUB socket. A job whose reports cannot be written (disk full,
   read-only, no access) keeps its deliveries in memory unacknowledged and is retried every second,
   without holding up the other jobs; the broker has at most `credit` deliveries in flight, and
    anything beyond twice that is dropped and asked for again, so memory
    stays bounded. With a spool directory, such a job's deliveries are
    appended to SPOOL/<job id>.jsonl and acknowledged instead, so that the
    broker's delivery window (served strictly in order) stays open for the
    other jobs; the spool is replayed into the job's reports with backoff.
    Where a job's reports go is decided here too: its `output`, kept inside
    the output root when one is set, and claimed with a marker file so that
    two unfinished jobs never share one directory. */

#include "collector.h"

#include "../common/bf_config.h"
#include "../proto/proto_link.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_JOBS_OPEN 64   /* reports kept open; the least recent is closed */
#define RETRY_MS      1000 /* a failed write is tried again after this */
#define DRAIN_MAX     4096 /* messages taken from the socket per loop turn */
#define CREDIT_MAX    4096 /* deliveries in flight, at most (as the broker) */
/* Results that trickle in one at a time are written together: a delivery
   waits GATHER_MS for others, so one append, one fdatasync and one ACKS
   serve them all instead of one each. Meanwhile the loop sleeps: what
   comes waits in the socket and is drained when the window closes, so
   the loop wakes twice per batch, not once per delivery (a wake-up,
   zmq_poll and the turn's housekeeping were most of the collector's time
   per result). A batch is written at once when GATHER_MAX wait or a
   JOB_DONE came by the time the window opened. It only delays the
   acknowledgement, never the broker (whose window is credit deliveries)
   nor the workers. 8 ms, not 4: an fdatasync of results.jsonl costs about
   130 us of CPU here (the inode's block and a flush go to the disk too),
   and 2,000 exec tasks of 1 ms on 2 cores took 277 of them; with 8 ms the
   whole run took 1.828 s of CPU instead of 1.926 s (medians of 8,
   alternating), and a result waits at most 4 ms longer. */
#define GATHER_MS  8
#define GATHER_MAX 64
/* A batch this large says results stream in faster than they are written:
   the next is written as soon as it is there, without the window (whose
   sleep then left the collector idle half the time while the broker's
   outbox grew); the write itself gathers the next batch meanwhile. */
#define GATHER_STREAM 32
/* A spooled job is retried after 1 s, the wait doubling to this. */
#define SPOOL_RETRY_MAX_MS 30000
#define SPOOL_MAX          (1u << 30) /* bytes of a spool file read back */
#define SPOOL_FILES_MAX    100000     /* spool files taken up at start */
#define PATH_PARTS_MAX     4096       /* components of an output path */
/* The claim of a report directory: {"job_id", "done"}. */
#define CLAIM_FILE ".beamfleet-job"

typedef struct {
    char *job_id;
    collector_report_t *report;
} open_job_t;

typedef struct {
    proto_msg_t m;
    bool done;
} pending_t;

/* A job finished this turn: its JOBINFO, and its report, out of jobs[] (a
   later message opens the job again). */
typedef struct {
    json_t *job;
    collector_report_t *report;
} finished_t;

struct collector {
    collector_config_t cfg;
    char *broker, *name, *out_root, *output_root, *spool_dir, *publish_ep;
    json_t *held;   /* {job id: {"next": mono ms, "backoff": ms, "error"}}: jobs in the spool */
    int spool_lock; /* flock'ed SPOOL/.lock: one collector per spool, or -1 */
    void *ctx, *pub;
    proto_link_t *link;        /* the DEALER to the broker, heartbeats, reconnection */
    bf_zap_t *zap;             /* admits subscribers to a CURVE PUB stream */
    bf_wake_t stop;            /* raised by collector_stop, from a signal handler or a thread */
    atomic_long subscriptions; /* registered on pub: subscribes less unsubscribes */
    uint64_t sub_logged;       /* (un)subscriptions seen, for the log's rate */
    int64_t retry_at;
    open_job_t jobs[MAX_JOBS_OPEN]; /* least recently used first */
    size_t njobs;
    pending_t *pending; /* received, not yet written and acknowledged */
    size_t npending, cappending;
    uint64_t *acks; /* written (durable), to acknowledge at the end of the turn */
    size_t nacks, capacks;
    finished_t *finished; /* the jobs finished this turn (end_finished) */
    size_t nfinished, capfinished;
    int64_t gather_until; /* write what is pending by then (GATHER_MS) */
    bool gather_now;      /* a JOB_DONE is pending: write at once */
    bool streaming;       /* the last batch was large: results stream, no window */
    /* the last JOBINFO converted, and its MessagePack bytes (delivery_doc) */
    json_t *job_tree;
    uint8_t *job_raw;
    size_t job_raw_len;
    bool resend;  /* something was dropped: register again once drained */
    bool trouble; /* the last write failed */
    char trouble_text[BF_ERRLEN];
};

/* ---- socket ----------------------------------------------------------------- */

static void publish(collector_t *c, const char *topic, const json_t *doc);
static void end_finished(collector_t *c, bool announce);

static void send_simple(collector_t *c, proto_type_t type, uint64_t seq)
{
    proto_msg_t m;
    proto_msg_init(&m, type);
    m.seq = seq;
    m.credit = c->cfg.credit;
    bf_err_t rc = type == PROTO_COLLECT ? proto_msg_set(&m.worker, c->name) : BF_OK;
    if (rc == BF_OK)
        rc = proto_link_send(c->link, &m);
    /* A heartbeat that cannot go out (no connection yet) is of no matter. */
    if (rc != BF_OK && type != PROTO_HEARTBEAT)
        bf_warn("%s %llu not sent: %s", proto_type_name(type), (unsigned long long)seq,
                zmq_strerror(zmq_errno()));
    proto_msg_clear(&m);
}

/* Outbox row seq is durable here: acknowledged at the end of this turn,
   together with the rest of the turn's writes (flush_acks). */
static void ack_later(collector_t *c, uint64_t seq)
{
    if (!bf_grow(&c->acks, &c->capacks, c->nacks + 1, sizeof *c->acks, 64)) {
        send_simple(c, PROTO_ACK, seq); /* no room to wait: at once */
        return;
    }
    c->acks[c->nacks++] = seq;
}

/* One ACKS for what this turn wrote (an ACK for a single row), at most
   PROTO_MAX_ACKS seqs a message: a collector writing thousands of results
   a second sends the broker tens of acknowledgements a second, not one
   per row. A row whose acknowledgement is lost comes again and is
   de-duplicated by task id. */
static void flush_acks(collector_t *c)
{
    for (size_t i = 0; i < c->nacks;) {
        size_t n = c->nacks - i < PROTO_MAX_ACKS ? c->nacks - i : PROTO_MAX_ACKS;
        if (n == 1) {
            send_simple(c, PROTO_ACK, c->acks[i]);
            i++;
            continue;
        }
        json_t *seqs = json_array();
        for (size_t k = 0; seqs && k < n; k++)
            if (json_array_append_new(seqs, json_integer((json_int_t)c->acks[i + k])) != 0) {
                json_decref(seqs);
                seqs = NULL;
            }
        proto_msg_t m;
        proto_msg_init(&m, PROTO_ACKS);
        m.obj = seqs ? json_pack("{s:o}", "seq", seqs) : NULL;
        bf_err_t rc = m.obj ? proto_link_send(c->link, &m) : BF_ENOMEM;
        if (rc != BF_OK)
            bf_warn("ACKS of %zu rows not sent (%s): they come again", n,
                    rc == BF_ENOMEM ? "out of memory" : zmq_strerror(zmq_errno()));
        proto_msg_clear(&m);
        i += n;
    }
    c->nacks = 0;
    end_finished(c, true);
}

static void drop_pending(collector_t *c)
{
    for (size_t i = 0; i < c->npending; i++)
        proto_msg_clear(&c->pending[i].m);
    c->npending = 0;
}

/* The connection is gone (or closing): what it delivered and we did not
   ack comes again on the next one. */
static void disconnect(collector_t *c)
{
    proto_link_disconnect(c->link);
    drop_pending(c);
    c->resend = false;
}

/* ---- paths ---------------------------------------------------------------- */

/* True when path has a "." or ".." component. */
static bool has_dot_parts(const char *path)
{
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return true;
        p += n;
    }
    return false;
}

/* The absolute path as the kernel will see it: realpath of its longest
   existing prefix (every symlink followed) + the rest as written, which
   cannot hold a link since it does not exist. NULL for a path that is not
   absolute or has a "." or ".." part, or without memory. */
static char *resolve_path(const char *path)
{
    if (!path || path[0] != '/' || has_dot_parts(path))
        return NULL;
    char *head = bf_strdup(path);
    if (!head)
        return NULL;
    size_t len = strlen(head);
    while (len > 1 && head[len - 1] == '/')
        head[--len] = '\0';
    char *real = NULL;
    for (int i = 0; i < PATH_PARTS_MAX && !(real = realpath(head, NULL)); i++) {
        char *slash = strrchr(head, '/');
        if (!slash || (errno != ENOENT && errno != ENOTDIR))
            break; /* EACCES, ELOOP...: not ours to guess through */
        slash[slash == head ? 1 : 0] = '\0';
    }
    const char *rest = path + strlen(head);
    while (*rest == '/')
        rest++;
    char *out = NULL;
    if (real) {
        size_t rl = strlen(rest);
        while (rl && rest[rl - 1] == '/')
            rl--;
        out = !rl ? bf_strdup(real)
                  : bf_asprintf("%s%s%.*s", real, strcmp(real, "/") ? "/" : "", (int)rl, rest);
    }
    free(real);
    free(head);
    return out;
}

/* ---- life cycle ------------------------------------------------------------- */

/* One collector per spool: two would replay the same files at once. */
static bf_err_t lock_spool(collector_t *c, char *err)
{
    bf_err_t rc = bf_mkdir_p(c->spool_dir, err);
    char *path = rc == BF_OK ? bf_asprintf("%s/.lock", c->spool_dir) : NULL;
    if (rc == BF_OK && !path)
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
    if (rc == BF_OK && (rc = bf_lock_file(path, &c->spool_lock, NULL, err)) == BF_EEXIST)
        bf_fail(err, rc, "spool %s: in use by another collector", c->spool_dir);
    free(path);
    return rc;
}

collector_t *collector_new(const collector_config_t *cfg, char *err)
{
    if (!cfg || !cfg->broker || !*cfg->broker) {
        bf_fail(err, BF_EINVAL, "collector: no broker endpoint");
        return NULL;
    }
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
    if (c->cfg.credit > CREDIT_MAX)
        c->cfg.credit = CREDIT_MAX;
    bf_wake_init(&c->stop);
    atomic_init(&c->subscriptions, 0);
    c->spool_lock = -1;
    c->broker = bf_strdup(cfg->broker);
    c->name = cfg->name && *cfg->name ? bf_strdup(cfg->name)
                                      : bf_asprintf("%s:%d", bf_hostname(), (int)getpid());
    c->out_root = cfg->out_root && *cfg->out_root ? bf_strdup(cfg->out_root) : NULL;
    c->output_root = cfg->output_root && *cfg->output_root ? bf_strdup(cfg->output_root) : NULL;
    c->spool_dir = cfg->spool_dir && *cfg->spool_dir ? bf_strdup(cfg->spool_dir) : NULL;
    c->held = json_object();
    c->cappending = 2 * (size_t)c->cfg.credit;
    c->pending = calloc(c->cappending, sizeof *c->pending);
    c->ctx = zmq_ctx_new();
    if (!c->broker || !c->name || !c->pending || !c->ctx || !c->held ||
        (cfg->out_root && *cfg->out_root && !c->out_root) ||
        (cfg->output_root && *cfg->output_root && !c->output_root) ||
        (cfg->spool_dir && *cfg->spool_dir && !c->spool_dir)) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    c->cfg.broker = c->broker;
    c->cfg.name = c->name;
    c->cfg.out_root = c->out_root;
    c->cfg.output_root = c->output_root;
    c->cfg.spool_dir = c->spool_dir;
    c->cfg.publish = NULL;
    if (!(c->link = proto_link_new(c->ctx, c->broker, cfg->security, c->cfg.heartbeat_ms,
                                   c->cfg.liveness, err)))
        goto fail;
    if (c->out_root && c->output_root && !bf_path_inside(c->output_root, c->out_root)) {
        bf_fail(err, BF_EINVAL, "--out %s is not inside the output root %s", c->out_root,
                c->output_root);
        goto fail;
    }
    /* DESIGN section 5: the broker's rule for every listening socket */
    if (cfg->publish && *cfg->publish &&
        bf_bind_allowed("--publish (collector.publish)", cfg->publish, cfg->security != NULL,
                        cfg->insecure, err) != BF_OK)
        goto fail;
    if (c->spool_dir && lock_spool(c, err) != BF_OK)
        goto fail;
    if (cfg->publish && *cfg->publish) {
        /* XPUB, verbose both ways, so that every subscription reaches us
           once libzmq has registered it: a subscriber (a test, a service)
           can learn that the stream reaches it instead of sleeping. */
        c->pub = zmq_socket(c->ctx, ZMQ_XPUB);
        int zero = 0, one = 1;
        if (c->pub && (zmq_setsockopt(c->pub, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
                       zmq_setsockopt(c->pub, ZMQ_XPUB_VERBOSER, &one, sizeof one) != 0)) {
            bf_fail(err, BF_EIO, "publish %s: %s", cfg->publish, zmq_strerror(zmq_errno()));
            goto fail;
        }
        /* With CURVE the stream is encrypted too and only listed keys may
           subscribe (`beamfleet watch -c FLEET.yaml`). */
        if (c->pub && cfg->security) {
            c->zap = bf_zap_new(c->ctx, bf_security_dir(cfg->security), err);
            if (!c->zap || bf_security_server(cfg->security, c->pub, err) != BF_OK)
                goto fail;
        }
        if (!c->pub || zmq_bind(c->pub, cfg->publish) != 0) {
            bf_fail(err, BF_EIO, "publish %s: %s", cfg->publish, zmq_strerror(zmq_errno()));
            goto fail;
        }
        char ep[256];
        size_t len = sizeof ep;
        c->publish_ep =
            bf_strdup(zmq_getsockopt(c->pub, ZMQ_LAST_ENDPOINT, ep, &len) == 0 ? ep : cfg->publish);
        if (!c->publish_ep) {
            bf_fail(err, BF_ENOMEM, "out of memory");
            goto fail;
        }
    }
    return c;
fail:
    collector_destroy(&c);
    return NULL;
}

const char *collector_publish_endpoint(const collector_t *self)
{
    return self ? self->publish_ep : NULL;
}

void collector_stop(collector_t *self)
{
    if (self)
        bf_wake_raise(&self->stop);
}

static void close_job(collector_t *c, size_t i)
{
    collector_report_close(&c->jobs[i].report);
    free(c->jobs[i].job_id);
    memmove(&c->jobs[i], &c->jobs[i + 1], (c->njobs - i - 1) * sizeof c->jobs[0]);
    c->njobs--;
}

/* The jobs finished this turn, once their JOB_DONEs are acknowledged:
   "job-done" published when announce (a client it wakes finds the broker's
   outbox empty), and the report closed (freeing a large job's results, 110
   ms at 20,000, must not hold the acknowledgement back). */
static void end_finished(collector_t *c, bool announce)
{
    for (size_t i = 0; i < c->nfinished; i++) {
        if (announce)
            publish(c, "job-done", c->finished[i].job);
        json_decref(c->finished[i].job);
        collector_report_close(&c->finished[i].report);
    }
    c->nfinished = 0;
}

void collector_destroy(collector_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    collector_t *c = *self_p;
    while (c->njobs)
        close_job(c, c->njobs - 1);
    end_finished(c, false);
    free(c->finished);
    json_decref(c->job_tree);
    free(c->job_raw);
    if (c->pending)
        drop_pending(c);
    free(c->pending);
    free(c->acks);
    proto_link_destroy(&c->link);
    if (c->pub)
        zmq_close(c->pub);
    bf_zap_destroy(&c->zap);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c->broker);
    free(c->name);
    free(c->out_root);
    free(c->output_root);
    free(c->spool_dir);
    json_decref(c->held);
    if (c->spool_lock >= 0)
        close(c->spool_lock);
    free(c->publish_ep);
    bf_wake_close(&c->stop);
    free(c);
    *self_p = NULL;
}

/* ---- reports ---------------------------------------------------------------- */

/* The job that claimed dir (CLAIM_FILE): its id into id ("" when nobody),
   and whether its final report was written. */
static void read_claim(const char *dir, char *id, size_t n, bool *done)
{
    id[0] = '\0';
    *done = false;
    char *path = bf_asprintf("%s/" CLAIM_FILE, dir), *text = NULL;
    size_t len = 0;
    if (path && bf_read_file(path, 4096, &text, &len, NULL) == BF_OK) {
        json_t *doc = json_loadb(text, len, 0, NULL);
        const char *s = json_string_value(json_object_get(doc, "job_id"));
        bf_strlcpy(id, s ? s : "", n);
        *done = json_is_true(json_object_get(doc, "done"));
        json_decref(doc);
    }
    free(text);
    free(path);
}

static bf_err_t write_claim(const char *dir, const char *job_id, bool done, char *err)
{
    json_t *doc = json_pack("{s:s, s:b}", "job_id", job_id, "done", done);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    char *path = bf_asprintf("%s/" CLAIM_FILE, dir);
    bf_err_t rc = text && path ? bf_mkdir_p(dir, err) : bf_fail(err, BF_ENOMEM, "out of memory");
    if (rc == BF_OK)
        rc = bf_write_atomic(path, text, strlen(text), err);
    json_decref(doc);
    free(text);
    free(path);
    return rc;
}

/* Claims dir for job_id and returns where its reports go: dir itself when
   it is free, ours, or claimed by a job whose final report is written (a
   re-run: collector_report_open sets the old reports aside), else
   dir/<job id>/ (a second unfinished job given the same output), which
   stays this job's once used. *dirp is replaced. */
static bf_err_t claim_dir(const char *job_id, char **dirp, char *err)
{
    char owner[128];
    bool done;
    char *own = bf_safe_name(job_id) ? bf_asprintf("%s/%s", *dirp, job_id) : NULL;
    if (own) {
        read_claim(own, owner, sizeof owner, &done);
        if (!strcmp(owner, job_id)) {
            free(*dirp);
            *dirp = own;
            return BF_OK;
        }
    }
    read_claim(*dirp, owner, sizeof owner, &done);
    if (!owner[0] || !strcmp(owner, job_id) || done || !own) {
        free(own);
        if (owner[0] && strcmp(owner, job_id) && !done)
            bf_warn("job %s: %s is in use by the unfinished job %s, and the job id is no "
                    "directory name: writing there anyway",
                    job_id, *dirp, owner);
        return !strcmp(owner, job_id) ? BF_OK : write_claim(*dirp, job_id, false, err);
    }
    bf_warn("job %s: %s is in use by the unfinished job %s: this job's reports go to %s", job_id,
            *dirp, owner, own);
    free(*dirp);
    *dirp = own;
    return write_claim(own, job_id, false, err);
}

/* Where a job's reports go: ROOT/<job name> (or ROOT/<job id> for a name
   that is not a safe path component) with out_root; else the job's
   absolute output directory, or OUTPUT_ROOT/<name> when an output root is
   set and the output does not resolve inside it; then claimed (claim_dir). */
static char *job_dir(const collector_t *c, const char *job_id, const json_t *job, char *err)
{
    const char *output = json_string_value(json_object_get(job, "output"));
    const char *name = json_string_value(json_object_get(job, "name"));
    const char *leaf = bf_safe_name(name) ? name : bf_safe_name(job_id) ? job_id : NULL;
    char *dir = NULL;
    if (c->out_root || c->output_root) {
        char *real = c->out_root ? NULL : resolve_path(output);
        if (real && bf_path_inside(c->output_root, real)) {
            dir = real;
        } else if (!leaf) {
            free(real);
            bf_fail(err, BF_EINVAL, "job %s: no usable name for a directory", job_id);
            return NULL;
        } else {
            const char *root = c->out_root ? c->out_root : c->output_root;
            if (!c->out_root)
                bf_warn("job %s: output %s is outside the output root %s (or not a plain "
                        "absolute path): its reports go to %s/%s",
                        job_id, output ? output : "(none)", root, root, leaf);
            free(real);
            dir = bf_asprintf("%s/%s", root, leaf);
        }
    } else if (output && output[0] == '/') {
        dir = bf_strdup(output);
    } else {
        bf_fail(err, BF_EINVAL, "job %s: output %s is not an absolute directory", job_id,
                output ? output : "(none)");
        return NULL;
    }
    if (!dir) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    if (claim_dir(job_id, &dir, err) != BF_OK) {
        free(dir);
        return NULL;
    }
    return dir;
}

/* The report of a job, opened (and so recovered) on first use; the most
   recently used job moves to the end. */
static collector_report_t *job_report(collector_t *c, const char *job_id, const json_t *job,
                                      char *err)
{
    for (size_t i = 0; i < c->njobs; i++) {
        if (strcmp(c->jobs[i].job_id, job_id) != 0)
            continue;
        open_job_t j = c->jobs[i];
        memmove(&c->jobs[i], &c->jobs[i + 1], (c->njobs - i - 1) * sizeof j);
        c->jobs[c->njobs - 1] = j;
        return j.report;
    }
    char *dir = job_dir(c, job_id, job, err);
    if (!dir)
        return NULL;
    collector_report_t *r = NULL;
    bf_err_t rc = collector_report_open(dir, job_id, &r, err);
    if (rc == BF_OK)
        bf_info("job %s: reports in %s (%zu results so far)", job_id, dir,
                collector_report_count(r));
    free(dir);
    if (rc != BF_OK)
        return NULL;
    char *id = bf_strdup(job_id);
    if (!id) {
        collector_report_close(&r);
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    if (c->njobs == MAX_JOBS_OPEN)
        close_job(c, 0);
    c->jobs[c->njobs++] = (open_job_t){id, r};
    return r;
}

static void forget_job(collector_t *c, const char *job_id)
{
    for (size_t i = 0; i < c->njobs; i++)
        if (!strcmp(c->jobs[i].job_id, job_id)) {
            close_job(c, i);
            return;
        }
}

/* As forget_job for a job that finished (job: its JOBINFO), whose end
   waits for this turn's acknowledgements (end_finished); at once when
   there is no room to keep it. */
static void retire_job(collector_t *c, const char *job_id, const json_t *job)
{
    size_t i = 0;
    while (i < c->njobs && strcmp(c->jobs[i].job_id, job_id) != 0)
        i++;
    if (!bf_grow(&c->finished, &c->capfinished, c->nfinished + 1, sizeof *c->finished, 4)) {
        publish(c, "job-done", job);
        forget_job(c, job_id);
        return;
    }
    c->finished[c->nfinished++] = (finished_t){json_incref((json_t *)job), NULL};
    if (i < c->njobs) {
        c->finished[c->nfinished - 1].report = c->jobs[i].report;
        c->jobs[i].report = NULL;
        close_job(c, i); /* the report is no longer in it: only the entry goes */
    }
}

/* Reads the (un)subscriptions the XPUB passes up: each is registered by
   the time it arrives here, so what is published next reaches it. Logged
   (the end-to-end tests wait for that line) and counted. */
static void read_subscriptions(collector_t *c)
{
    for (int n = 0; n < DRAIN_MAX; n++) {
        unsigned char buf[256];
        int len = zmq_recv(c->pub, buf, sizeof buf, ZMQ_DONTWAIT);
        if (len < 0)
            return;
        if (len < 1 || (buf[0] != 0 && buf[0] != 1))
            continue;
        /* the topic, printable, cut to fit (zmq_recv says the whole length) */
        char topic[64] = "everything";
        if (len > 1) {
            size_t tn = (size_t)len - 1; /* topic is shorter than buf: one bound serves */
            tn = tn < sizeof topic - 1 ? tn : sizeof topic - 1;
            for (size_t k = 0; k < tn; k++)
                topic[k] = buf[1 + k] >= 0x20 && buf[1 + k] < 0x7f ? (char)buf[1 + k] : '?';
            topic[tn] = '\0';
        }
        long now = atomic_fetch_add(&c->subscriptions, buf[0] ? 1 : -1) + (buf[0] ? 1 : -1);
        /* the first hundred, then one in a thousand: a subscriber that
           churns must not flood the log */
        if (c->sub_logged++ < 100 || c->sub_logged % 1000 == 0)
            bf_info("stream: %s %s (%ld subscriptions)",
                    buf[0] ? "subscribed to" : "unsubscribed from", topic, now);
    }
}

long collector_stream_subscriptions(const collector_t *self)
{
    return self ? atomic_load(&((collector_t *)self)->subscriptions) : 0;
}

/* Nothing is packed while no one subscribes (the XPUB would drop it); the
   loop reads the subscriptions libzmq has registered before each write. */
static void publish(collector_t *c, const char *topic, const json_t *doc)
{
    if (!c->pub || atomic_load(&c->subscriptions) <= 0)
        return;
    uint8_t *data = NULL;
    size_t size = 0;
    if (proto_json_to_msgpack(doc, &data, &size) != BF_OK) {
        bf_warn("cannot publish a %s: not representable as MessagePack", topic);
        return;
    }
    if (zmq_send(c->pub, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send(c->pub, data, size, ZMQ_DONTWAIT);
    free(data);
}

/* Writes the deliveries of one job found from pending[first] on (up to that
   job's next JOB_DONE) as one batch; acks and publishes them on success. */
static bf_err_t write_deliveries(collector_t *c, size_t first, collector_report_t *r, char *err)
{
    const char *job_id = c->pending[first].m.job_id;
    json_t *batch = json_array();
    if (!batch)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    size_t end = first;
    for (; end < c->npending; end++) {
        pending_t *p = &c->pending[end];
        if (p->done || strcmp(p->m.job_id, job_id) != 0)
            continue;
        if (p->m.type == PROTO_JOB_DONE)
            break;
        if (json_array_append(batch, json_object_get(p->m.obj, "result")) != 0) {
            json_decref(batch);
            return bf_fail(err, BF_ENOMEM, "out of memory");
        }
    }
    bf_err_t rc = collector_report_append(r, batch, err);
    if (rc == BF_OK) {
        for (size_t k = first; k < end; k++) {
            pending_t *p = &c->pending[k];
            if (p->done || strcmp(p->m.job_id, job_id) != 0)
                continue;
            ack_later(c, p->m.seq);
            p->done = true;
        }
        size_t i;
        json_t *res;
        json_array_foreach(batch, i, res)
        {
            publish(c, "result", res);
        }
    }
    json_decref(batch);
    return rc;
}

static const char *job_state(const json_t *job)
{
    const char *s = json_string_value(json_object_get(job, "state"));
    return s ? s : "done";
}

/* JOB_DONE: the final report and summary, then the claim marked done (a
   later job may take the directory over) and the job's results out of
   memory. The caller acknowledges. */
static bf_err_t finish_job(collector_t *c, const char *job_id, collector_report_t *r,
                           const json_t *job, char *err)
{
    bf_err_t rc = collector_report_finish(r, job, err);
    if (rc != BF_OK)
        return rc;
    char why[BF_ERRLEN];
    if (write_claim(collector_report_dir(r), job_id, true, why) != BF_OK)
        bf_warn("job %s: %s", job_id, why);
    bf_info("job %s %s: final report in %s", job_id, job_state(job), collector_report_dir(r));
    retire_job(c, job_id,
               job); /* "job-done" after the acknowledgement; a later message reopens it */
    return BF_OK;
}

/* ---- the spool: a job whose reports cannot be written ------------------------ */

static char *spool_path(const collector_t *c, const char *job_id)
{
    return bf_asprintf("%s/%s.jsonl", c->spool_dir, job_id);
}

/* Appends every pending message of the job of pending[first] to its spool
   file, one line each ({"done": JOB_DONE?, "obj": the message's document}),
   with fdatasync; then acknowledges them. A failed append is taken back. */
static bf_err_t spool_job(collector_t *c, size_t first, char *err)
{
    const char *job_id = c->pending[first].m.job_id;
    if (!c->spool_dir || !bf_safe_name(job_id))
        return bf_fail(err, BF_EINVAL, "no spool for job %s", job_id);
    bf_buf_t b = {0};
    for (size_t k = first; k < c->npending; k++) {
        pending_t *p = &c->pending[k];
        if (p->done || strcmp(p->m.job_id, job_id) != 0)
            continue;
        json_t *line =
            json_pack("{s:b, s:O}", "done", p->m.type == PROTO_JOB_DONE, "obj", p->m.obj);
        char *text = line ? json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        json_decref(line);
        if (!text) {
            free(b.p);
            return bf_fail(err, BF_ENOMEM, "out of memory");
        }
        bf_buf_puts(&b, text);
        bf_buf_put(&b, "\n", 1);
        free(text);
    }
    char *path = spool_path(c, job_id);
    bf_err_t rc =
        b.oom || !path ? bf_fail(err, BF_ENOMEM, "out of memory") : bf_mkdir_p(c->spool_dir, err);
    int fd = rc == BF_OK ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    if (rc == BF_OK && fd < 0)
        rc = bf_fail(err, BF_EIO, "%s: %s", path, strerror(errno));
    if (rc == BF_OK) {
        struct stat st;
        off_t before = fstat(fd, &st) == 0 ? st.st_size : -1;
        rc = bf_append_sync(fd, b.p, b.len, err);
        if (rc != BF_OK && before >= 0 && ftruncate(fd, before) != 0)
            bf_debug("%s: cannot take back a partial append: %s", path, strerror(errno));
    }
    if (fd >= 0)
        close(fd);
    free(path);
    free(b.p);
    if (rc != BF_OK)
        return rc;
    for (size_t k = first; k < c->npending; k++) {
        pending_t *p = &c->pending[k];
        if (p->done || strcmp(p->m.job_id, job_id) != 0)
            continue;
        ack_later(c, p->m.seq);
        p->done = true;
    }
    return BF_OK;
}

/* Puts job_id in the held set (the spool drains it) due at next. */
static void hold(collector_t *c, const char *job_id, int64_t next, int64_t backoff,
                 const char *error)
{
    json_t *h = json_pack("{s:I, s:I, s:s}", "next", (json_int_t)next, "backoff",
                          (json_int_t)backoff, "error", error ? error : "");
    if (!h || json_object_set_new(c->held, job_id, h) != 0)
        bf_error("job %s: out of memory keeping its spool in mind", job_id);
}

/* Writes the results of one spool line batch; publishes what was new. */
static bf_err_t spool_write(collector_t *c, const char *job_id, const json_t *job, json_t *batch,
                            bool done, char *err)
{
    collector_report_t *r = job_report(c, job_id, job, err);
    if (!r)
        return BF_EIO;
    bf_err_t rc = json_array_size(batch) ? collector_report_append(r, batch, err) : BF_OK;
    size_t i;
    json_t *res;
    json_array_foreach(batch, i, res)
    {
        if (rc == BF_OK)
            publish(c, "result", res);
    }
    json_array_clear(batch);
    if (rc == BF_OK && done)
        rc = finish_job(c, job_id, r, job, err);
    else if (rc != BF_OK)
        forget_job(c, job_id); /* the retry reopens (repairs) it */
    return rc;
}

/* Replays SPOOL/<job id>.jsonl into the job's reports, in order, and
   removes the file once everything in it is written. De-duplication by
   task id makes a replay that failed half-way safe to repeat. */
static bf_err_t spool_replay(collector_t *c, const char *job_id, char *err)
{
    char *path = spool_path(c, job_id), *text = NULL;
    size_t len = 0;
    if (!path)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    bf_err_t rc = bf_read_file(path, SPOOL_MAX, &text, &len, err);
    if (rc == BF_ENOENT) {
        free(path);
        return BF_OK;
    }
    json_t *batch = json_array(), *job = NULL;
    if (rc == BF_OK && !batch)
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
    /* a line without its newline was torn by a kill and never acknowledged */
    for (size_t at = 0; rc == BF_OK && at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        if (!nl)
            break;
        json_t *line = json_loadb(text + at, (size_t)(nl - (text + at)), 0, NULL);
        at = (size_t)(nl - text) + 1;
        json_t *obj = json_object_get(line, "obj");
        json_t *j = json_object_get(obj, "job");
        if (!json_is_object(j)) {
            json_decref(line);
            continue;
        }
        json_decref(job);
        job = json_incref(j);
        bool done = json_is_true(json_object_get(line, "done"));
        json_t *res = json_object_get(obj, "result");
        if (!done && json_is_object(res) && json_array_append(batch, res) != 0)
            rc = bf_fail(err, BF_ENOMEM, "out of memory");
        if (rc == BF_OK && done)
            rc = spool_write(c, job_id, job, batch, true, err);
        json_decref(line);
    }
    if (rc == BF_OK && json_array_size(batch))
        rc = spool_write(c, job_id, job, batch, false, err);
    if (rc == BF_OK && unlink(path) != 0 && errno != ENOENT)
        rc = bf_fail(err, BF_EIO, "%s: %s", path, strerror(errno));
    json_decref(batch);
    json_decref(job);
    free(text);
    free(path);
    return rc;
}

/* Retries each held job whose time has come: written, it leaves the spool;
   not, it waits twice as long (1 s .. 30 s). One log line per new error. */
static void drain_spool(collector_t *c, int64_t now)
{
    const char *job_id;
    json_t *h;
    void *tmp;
    json_object_foreach_safe(c->held, tmp, job_id, h)
    {
        if (now < json_integer_value(json_object_get(h, "next")))
            continue;
        char err[BF_ERRLEN] = "";
        if (spool_replay(c, job_id, err) == BF_OK) {
            bf_info("job %s: its held results are written; reports up to date", job_id);
            json_object_del(c->held, job_id);
            continue;
        }
        int64_t backoff = json_integer_value(json_object_get(h, "backoff")) * 2;
        backoff = backoff < RETRY_MS             ? RETRY_MS
                  : backoff > SPOOL_RETRY_MAX_MS ? SPOOL_RETRY_MAX_MS
                                                 : backoff;
        const char *last = json_string_value(json_object_get(h, "error"));
        if (!last || strcmp(last, err) != 0)
            bf_error("job %s: reports still cannot be written (results kept in the spool, "
                     "retrying every %lld s at most): %s",
                     job_id, (long long)SPOOL_RETRY_MAX_MS / 1000, err);
        hold(c, job_id, now + backoff, backoff, err);
    }
}

/* At start: every spool file left by an earlier run is a held job, due
   now; a torn last line (a kill mid-append, never acknowledged) is cut. */
static void spool_adopt(collector_t *c)
{
    DIR *d = c->spool_dir ? opendir(c->spool_dir) : NULL;
    struct dirent *e;
    for (size_t n = 0; d && n < SPOOL_FILES_MAX && (e = readdir(d)); n++) {
        size_t len = strlen(e->d_name);
        if (len <= 6 || strcmp(e->d_name + len - 6, ".jsonl") != 0)
            continue;
        char id[256];
        snprintf(id, sizeof id, "%.*s", (int)(len - 6), e->d_name);
        if (!bf_safe_name(id))
            continue;
        char *path = spool_path(c, id), *text = NULL;
        size_t tl = 0;
        if (path && bf_read_file(path, SPOOL_MAX, &text, &tl, NULL) == BF_OK && tl &&
            text[tl - 1] != '\n') {
            const char *nl = memrchr(text, '\n', tl);
            if (truncate(path, nl ? (off_t)(nl - text) + 1 : 0) != 0)
                bf_warn("%s: cannot cut a torn last line: %s", path, strerror(errno));
        }
        free(text);
        free(path);
        bf_info("job %s: results held in the spool %s from an earlier run", id, c->spool_dir);
        hold(c, id, 0, 0, "");
    }
    if (d)
        closedir(d);
}

/* Brings every open job's results_progress.json up to date (a big job's
   rewrites are spaced out while results stream in). */
static void flush_reports(collector_t *c)
{
    for (size_t i = 0; i < c->njobs; i++) {
        char err[BF_ERRLEN];
        if (collector_report_flush(c->jobs[i].report, false, err) != BF_OK) {
            /* closed: the next delivery for it opens it again, which
               rebuilds the file from the log */
            bf_warn("%s", err);
            close_job(c, i--);
        }
    }
}

/* Unacknowledged, the deliveries of jobs that cannot be written take up the
   broker's window (credit, sent strictly in seq order). Once they fill half
   of it, each such job goes to the spool (acknowledged, retried with
   backoff), so the other jobs' deliveries keep coming; below that they stay
   here and in the broker's outbox, the durable place, as before. failed is
   {job id: error}; returns how many jobs stay failed, the first of them in
   first_err. */
static size_t spool_failed(collector_t *c, json_t *failed, char *first_err)
{
    size_t unacked = 0, threshold = c->cfg.credit / 2 ? c->cfg.credit / 2 : 1;
    for (size_t i = 0; i < c->npending; i++)
        unacked += !c->pending[i].done;
    if (unacked < threshold)
        return json_object_size(failed);
    const char *job_id;
    json_t *why;
    void *tmp;
    json_object_foreach_safe(failed, tmp, job_id, why)
    {
        size_t first = 0;
        while (first < c->npending &&
               (c->pending[first].done || strcmp(c->pending[first].m.job_id, job_id) != 0))
            first++;
        char err[BF_ERRLEN];
        if (first == c->npending || spool_job(c, first, err) != BF_OK)
            continue; /* stays here, unacknowledged */
        bf_error("job %s: cannot write reports (%s): its results are kept in %s/%s.jsonl and "
                 "retried with backoff; the other jobs go on",
                 job_id, json_string_value(why), c->spool_dir, job_id);
        hold(c, job_id, bf_mono_ms() + RETRY_MS, RETRY_MS, json_string_value(why));
        json_object_del(failed, job_id);
    }
    void *it = json_object_iter(failed);
    if (it)
        snprintf(first_err, BF_ERRLEN, "job %s: %s", json_object_iter_key(it),
                 json_string_value(json_object_iter_value(it)));
    return json_object_size(failed);
}

/* Writes what is pending, job by job; a job that cannot be written stays
   pending (with its report closed, so the retry opens and repairs it), or
   goes to the spool (spool_failed), and the others go on. */
static void write_pending(collector_t *c)
{
    json_t *failed = json_object(); /* job ids that failed this turn */
    char err[BF_ERRLEN] = "", first_err[BF_ERRLEN] = "";
    size_t nfailed = 0;
    if (!failed) {
        c->trouble = true;
        c->retry_at = bf_mono_ms() + RETRY_MS;
        return;
    }
    for (size_t i = 0; i < c->npending; i++) {
        pending_t *p = &c->pending[i];
        if (p->done || json_object_get(failed, p->m.job_id))
            continue;
        /* A job with results in the spool adds to it: the spool is replayed
           in order, so nothing of the job overtakes what waits there. */
        bool held = json_object_get(c->held, p->m.job_id) != NULL;
        bf_err_t rc = held ? spool_job(c, i, err) : BF_ENOMEM;
        collector_report_t *r = NULL;
        const json_t *job = json_object_get(p->m.obj, "job");
        if (!held)
            r = job_report(c, p->m.job_id, job, err);
        if (r && p->m.type == PROTO_JOB_DONE) {
            rc = finish_job(c, p->m.job_id, r, job, err);
            if (rc == BF_OK) {
                ack_later(c, p->m.seq);
                p->done = true;
            }
        } else if (r) {
            rc = write_deliveries(c, i, r, err);
        }
        if (rc == BF_OK)
            continue;
        if (r)
            forget_job(c, p->m.job_id);
        json_object_set_new(failed, p->m.job_id, json_string(err));
        if (!nfailed++)
            snprintf(first_err, sizeof first_err, "job %s: %s", p->m.job_id, err);
    }
    if (nfailed && c->spool_dir)
        nfailed = spool_failed(c, failed, first_err);
    json_decref(failed);
    size_t kept = 0;
    for (size_t i = 0; i < c->npending; i++) {
        if (c->pending[i].done)
            proto_msg_clear(&c->pending[i].m);
        else
            c->pending[kept++] = c->pending[i];
    }
    c->npending = kept;
    if (nfailed) {
        if (!c->trouble || strcmp(first_err, c->trouble_text) != 0)
            bf_error("cannot write reports (%zu results held, not acknowledged, retrying every "
                     "second): %s",
                     kept, first_err);
        bf_strlcpy(c->trouble_text, first_err, sizeof c->trouble_text);
        c->trouble = true;
        c->retry_at = bf_mono_ms() + RETRY_MS;
    } else if (c->trouble) {
        bf_info("%s", json_object_size(c->held) ? "no results held in memory any more (the spool "
                                                  "has the rest)"
                                                : "reports writable again");
        c->trouble = false;
        c->trouble_text[0] = '\0';
    }
    if (!kept && c->resend) {
        /* We dropped deliveries for lack of room: have them sent again. */
        c->resend = false;
        send_simple(c, PROTO_COLLECT, 0);
    }
}

/* Checks a DELIVER / JOB_DONE from the broker; the result carries the
   message's task_id and job_id, which the de-duplication relies on. */
static bool valid_delivery(proto_msg_t *m)
{
    if (!m->job_id || !*m->job_id || !json_is_object(json_object_get(m->obj, "job")))
        return false;
    if (m->type == PROTO_JOB_DONE)
        return true;
    json_t *res = json_object_get(m->obj, "result");
    if (!m->task_id || !*m->task_id || !json_is_object(res))
        return false;
    return json_object_set_new(res, "task_id", json_string(m->task_id)) == 0 &&
           json_object_set_new(res, "job_id", json_string(m->job_id)) == 0;
}

/* The document of a DELIVER or JOB_DONE received with obj left encoded
   ({"job": JOBINFO, "result": RESULT}) as trees in m->obj. The broker packs
   one JOBINFO for a run of a job's rows, so a DELIVER's is mostly the same
   bytes as the last one's: then the tree made for those serves again, and
   only the result is converted (the JOBINFO's tree, made and freed for
   every result, was a tenth of the collector's time). Other members are
   left out. False, with why, when a member cannot be converted: the
   message is dropped as a malformed one is. */
static bool delivery_doc(collector_t *c, proto_msg_t *m, char *why)
{
    static const char *const keys[] = {"job", "result"};
    const uint8_t *at[2];
    size_t len[2];
    json_t *job = NULL, *res = NULL, *doc = json_object();
    if (!doc || !proto_msgpack_members(m->obj_raw, m->obj_raw_len, keys, 2, at, len))
        at[0] = at[1] = NULL; /* no map, no members: valid_delivery drops it */
    bool ok = doc != NULL;
    if (ok && at[0] && c->job_tree && len[0] == c->job_raw_len &&
        !memcmp(at[0], c->job_raw, len[0])) {
        job = json_incref(c->job_tree);
    } else if (ok && at[0] && (ok = proto_msgpack_to_json(at[0], len[0], &job, why) == BF_OK)) {
        uint8_t *copy = malloc(len[0]);
        json_decref(c->job_tree);
        free(c->job_raw);
        c->job_tree = copy ? json_incref(job) : NULL;
        c->job_raw = copy ? memcpy(copy, at[0], len[0]) : NULL;
        c->job_raw_len = copy ? len[0] : 0;
    }
    if (ok && job)
        ok = json_object_set_new(doc, "job", job) == 0;
    if (ok && at[1] && m->type == PROTO_DELIVER)
        ok = proto_msgpack_to_json(at[1], len[1], &res, why) == BF_OK &&
             json_object_set_new(doc, "result", res) == 0;
    if (!ok && !*why)
        bf_strlcpy(why, "out of memory", BF_ERRLEN);
    free(m->obj_raw);
    m->obj_raw = NULL;
    m->obj_raw_len = 0;
    m->obj = ok ? doc : NULL;
    if (!ok)
        json_decref(doc);
    return ok;
}

static void on_message(collector_t *c, proto_msg_t *m)
{
    switch (m->type) {
    case PROTO_DELIVER:
    case PROTO_JOB_DONE:
        if (!valid_delivery(m)) {
            /* acked so it cannot block the outbox; it could not be written */
            bf_warn("dropping a malformed %s (seq %llu)", proto_type_name(m->type),
                    (unsigned long long)m->seq);
            ack_later(c, m->seq);
            return;
        }
        if (c->npending == c->cappending) {
            c->resend = true;
            return;
        }
        c->pending[c->npending++] = (pending_t){*m, false};
        if (m->type == PROTO_JOB_DONE)
            c->gather_now = true;
        memset(m, 0, sizeof *m);
        return;
    case PROTO_ERROR:
        if (m->code == BF_ENOENT) {
            /* the broker restarted or forgot us: register again */
            bf_info("broker does not know us (%s): registering again", m->reason ? m->reason : "");
            send_simple(c, PROTO_COLLECT, 0);
        } else {
            bf_warn("broker error %llu: %s", (unsigned long long)m->code,
                    m->reason ? m->reason : "");
        }
        return;
    default:
        return; /* HEARTBEAT, or nothing for us */
    }
}

/* ---- the loop ---------------------------------------------------------------- */

bf_err_t collector_run(collector_t *c)
{
    /* the first connection: a bad endpoint or bad keys stop the collector here */
    char err[BF_ERRLEN];
    if (proto_link_connect(c->link, err) != BF_OK) {
        bf_error("%s", err);
        disconnect(c);
        return BF_EIO;
    }
    send_simple(c, PROTO_COLLECT, 0);
    bf_info("collecting from %s as %s%s%s", c->broker, c->name,
            c->publish_ep ? ", publishing on " : "", c->publish_ep ? c->publish_ep : "");
    spool_adopt(c);
    long tick = (long)(c->cfg.heartbeat_ms / 4 ? c->cfg.heartbeat_ms / 4 : 1);
    while (!bf_wake_up(&c->stop)) {
        /* The ZAP socket first, so that polling it never depends on
           whether a dealer exists right now. */
        void *dealer = proto_link_socket(c->link);
        zmq_pollitem_t items[4] = {{c->zap ? bf_zap_socket(c->zap) : NULL, 0, ZMQ_POLLIN, 0}};
        int nitems = c->zap ? 1 : 0;
        if (c->stop.fd >= 0) /* readable once collector_stop is called */
            items[nitems++] = (zmq_pollitem_t){NULL, c->stop.fd, ZMQ_POLLIN, 0};
        if (dealer)
            items[nitems++] = (zmq_pollitem_t){dealer, 0, ZMQ_POLLIN, 0};
        int pub_item = c->pub ? nitems : -1;
        if (c->pub)
            items[nitems++] = (zmq_pollitem_t){c->pub, 0, ZMQ_POLLIN, 0};
        long wait = tick;
        if (c->gather_until) { /* deliveries gathering: wake to write them */
            int64_t left = c->gather_until - bf_mono_ms();
            wait = left <= 0 ? 0 : (left < tick ? (long)left : tick);
            if (wait > 0 && !c->gather_now && c->npending < GATHER_MAX) {
                /* asleep until the window closes (GATHER_MS): the ZAP
                   socket and the subscriptions wait as long */
                struct timespec ts = {0, wait * 1000000L};
                nanosleep(&ts, NULL);
                wait = 0;
            }
        }
        if (zmq_poll(items, nitems, wait) < 0 && zmq_errno() != EINTR) {
            bf_error("zmq_poll: %s", zmq_strerror(zmq_errno()));
            return BF_EIO;
        }
        if (c->zap)
            bf_zap_handle(c->zap);
        if (pub_item >= 0 && (items[pub_item].revents & ZMQ_POLLIN))
            read_subscriptions(c);
        int64_t now = bf_mono_ms();
        size_t before = c->npending;
        for (int n = 0; n < DRAIN_MAX; n++) {
            proto_msg_t m;
            bf_err_t rc = proto_link_recv_raw(c->link, &m, now);
            if (rc == BF_EIO)
                break;
            if (rc != BF_OK) /* malformed: dropped and logged */
                continue;
            char why[BF_ERRLEN] = "";
            if (m.obj_raw && (m.type == PROTO_DELIVER || m.type == PROTO_JOB_DONE) &&
                !delivery_doc(c, &m, why)) {
                bf_warn("dropping a malformed %s: %s", proto_type_name(m.type), why);
                proto_msg_clear(&m);
                continue;
            }
            on_message(c, &m);
            proto_msg_clear(&m);
        }
        if (c->npending > before && !c->trouble && !c->gather_until)
            c->gather_until = now + (c->streaming ? 0 : GATHER_MS); /* the first of a batch */
        if (c->npending &&
            (c->trouble ? now >= c->retry_at
                        : c->gather_until && (now >= c->gather_until || c->gather_now ||
                                              c->npending >= GATHER_MAX))) {
            c->gather_until = 0;
            c->gather_now = false;
            c->streaming = c->npending >= GATHER_STREAM;
            if (c->pub) /* a subscription registered since the poll gets this batch */
                read_subscriptions(c);
            write_pending(c);
        }
        if (!c->npending || c->trouble) { /* nothing gathering (dropped, or retried later) */
            c->gather_until = 0;
            c->gather_now = false;
        }
        if (c->npending == before && !c->trouble && !c->gather_until) /* quiet: catch up */
            flush_reports(c);
        if (json_object_size(c->held))
            drain_spool(c, now);
        flush_acks(c);
        /* heartbeats, and a fresh connection after backoff + jitter when
           the broker is silent: register on it again */
        proto_link_event_t ev = proto_link_tick(c->link, now);
        if (ev == PROTO_LINK_LOST)
            disconnect(c);
        else if (ev == PROTO_LINK_CONNECTED)
            send_simple(c, PROTO_COLLECT, 0);
    }
    /* Write what we hold; what is not acked in time comes again next run. */
    if (c->npending && !c->trouble) {
        if (c->pub)
            read_subscriptions(c);
        write_pending(c);
    }
    flush_acks(c);
    disconnect(c);
    return BF_OK;
}

/* ---- the live stream ----------------------------------------------------------- */

bf_err_t collector_stream_recv(void *sub, char *topic, size_t topic_size, json_t **doc, int flags,
                               char *err)
{
    *doc = NULL;
    if (topic_size)
        topic[0] = '\0';
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, sub, flags) < 0) {
        zmq_msg_close(&part);
        return BF_EIO;
    }
    bf_err_t rc = BF_OK;
    size_t n = zmq_msg_size(&part);
    if (!zmq_msg_more(&part)) {
        rc = bf_fail(err, BF_EPROTO, "stream: a message of one frame");
    } else if (n == 0 || n >= topic_size || memchr(zmq_msg_data(&part), '\0', n)) {
        rc = bf_fail(err, BF_EPROTO, "stream: bad topic of %zu bytes", n);
    } else {
        memcpy(topic, zmq_msg_data(&part), n);
        topic[n] = '\0';
    }
    bool more = zmq_msg_more(&part);
    if (more) {
        /* the document: the second and last frame */
        if (zmq_msg_recv(&part, sub, 0) < 0) {
            zmq_msg_close(&part);
            return rc == BF_OK ? bf_fail(err, BF_EIO, "stream: %s", zmq_strerror(zmq_errno())) : rc;
        }
        if (rc == BF_OK && zmq_msg_more(&part))
            rc = bf_fail(err, BF_EPROTO, "stream: more than two frames");
        if (rc == BF_OK && zmq_msg_size(&part) > PROTO_MAX_FRAME)
            rc = bf_fail(err, BF_EPROTO, "stream: document of %zu bytes", zmq_msg_size(&part));
        if (rc == BF_OK)
            rc = proto_msgpack_to_json(zmq_msg_data(&part), zmq_msg_size(&part), doc, err);
        more = zmq_msg_more(&part);
    }
    while (more && zmq_msg_recv(&part, sub, 0) >= 0)
        more = zmq_msg_more(&part);
    zmq_msg_close(&part);
    if (rc != BF_OK) {
        json_decref(*doc);
        *doc = NULL;
        if (topic_size)
            topic[0] = '\0';
    }
    return rc;
}
