/*  broker/broker_store.c - jobs, tasks and the outbox in memory and in
    SQLite. Memory holds what the reactor needs on every message (task
    states, the FIFO queue as a ring of 32-bit task indices, an id -> task
    hash, per-job counters; about 64 bytes per task plus its scene name);
    SQLite holds everything, including final results, and is the only thing
    read back after a restart. The database runs in WAL mode with
    synchronous=NORMAL: a committed transaction survives the process being
    killed at any moment (the threat DESIGN section 4 names), and group
    commit by the reactor keeps the cost to one commit per loop iteration. */

#include "broker_store.h"

#include <limits.h>
#include <msgpack.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SCHEMA_VERSION 2
#define RECENT         32 /* finals remembered per job for the rate and ETA */

enum { T_QUEUED = 0, T_RUNNING = 1, T_FINAL = 2 };
enum { S_SUCCESS, S_FAILED, S_ERROR, S_CANCELLED, S_COUNT };
static const char *const status_names[S_COUNT] = {"success", "failed", "error", "cancelled"};

typedef struct {
    char id[33];
    uint8_t state, status;
    bool orphan;       /* running when the broker restarted, no worker yet */
    uint32_t job;      /* index in jobs */
    uint32_t scene;    /* offset of the name in the job's scene blob */
    uint16_t attempt;  /* dispatches so far */
    uint8_t unstarted; /* returned unstarted by a dying worker (memory only) */
    int64_t lease_until;
    int64_t rowid;    /* its row in tasks: updates find it without the id index */
    json_t *failures; /* NULL until the first failure */
} task_t;

typedef struct {
    char id[16];
    char *name, *output, *task;
    json_t *spec; /* what a worker needs: bf_job_to_json(job, false) */
    /* spec packed (MessagePack) once, on the job's first TASK: NULL until
       then, or while it cannot be packed */
    uint8_t *spec_mp;
    size_t spec_mp_len;
    /* the members of its JOBINFO that never change, packed once (see
       job_info_mp): NULL until then */
    uint8_t *info_fixed;
    size_t info_fixed_len;
    json_t *keys; /* the tasks' content keys (array of strings), or NULL */
    char *scenes; /* every scene name, NUL-terminated, back to back */
    size_t scenes_len, scenes_cap;
    uint32_t first, total;
    uint32_t queued, running, final;
    uint32_t counts[S_COUNT];
    char state[12]; /* running, done, cancelled */
    bool cancelled; /* a cancel was asked: the job ends as cancelled */
    int64_t submitted_ms, finished_ms;
    unsigned max_attempts;
    uint64_t timeout_ms;
    int64_t recent[RECENT]; /* wall ms of the latest finals, a ring */
    unsigned nrecent, recent_head;
} job_t;

struct broker_store {
    sqlite3 *db;
    sqlite3_stmt *st_task_state, *st_task_final, *st_outbox, *st_ack, *st_job_state,
        *st_outbox_after, *st_events, *st_begin, *st_commit;
    task_t *tasks;
    size_t ntasks, captasks;
    job_t *jobs;
    size_t njobs, capjobs;
    /* queue: a ring of task indices; may hold final tasks (cancelled while
       queued), which lease() skips */
    uint32_t *q;
    size_t qcap, qhead, qlen;
    uint64_t nqueued; /* tasks in state queued */
    /* id -> index + 1 (0 = empty), open addressing */
    uint32_t *hash;
    size_t hcap;
    /* running tasks, for lease checks */
    uint32_t *run;
    size_t nrun, caprun;
    /* Tasks and jobs keep their index for the broker's life; the arrays
       hold the ones still in memory, from tbase and jbase on
       (broker_store_retire drops the oldest finished jobs). */
    uint32_t tbase, jbase;
    uint64_t final_seq;
    int64_t orphan_deadline;
    int64_t opened_wall_ms;
    uint64_t outbox_rows, outbox_last;
    /* rows acknowledged in memory, deleted at the next transaction
       (broker_store_outbox_ack_later) */
    uint64_t *acked;
    size_t nacked, capacked;
    uint64_t acked_max;
};

#define TASK(s, t) (&(s)->tasks[(t) - (s)->tbase])
#define JOB(s, j)  (&(s)->jobs[(j) - (s)->jbase])

/* The index the next task or job gets. */
static uint32_t next_task(const broker_store_t *s)
{
    return (uint32_t)(s->tbase + s->ntasks);
}

/* ---- small helpers ---------------------------------------------------------- */

static bf_err_t db_fail(broker_store_t *s, char *err, const char *what)
{
    return bf_fail(err, BF_EDB, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

static bf_err_t exec(broker_store_t *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        bf_error("store: %.60s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return BF_EDB;
    }
    return BF_OK;
}

/* Documents (a task's result, a JOB_DONE's JOBINFO) are stored as
   MessagePack BLOBs: a boresight result carries thousands of reals, and
   packing and unpacking them costs a fraction of printing them as JSON text
   (%.17g) and parsing that again for the DELIVER. A document MessagePack
   on the wire may not hold (a string over its bound) is stored as JSON
   text, as a state written before this was; both are read. *buf is what to
   free once the statement has run. */
static bf_err_t bind_doc(sqlite3_stmt *st, int i, const json_t *doc, void **buf)
{
    uint8_t *packed = NULL;
    size_t n = 0;
    if (proto_json_to_msgpack(doc, &packed, &n) == BF_OK && n <= INT_MAX) {
        *buf = packed;
        sqlite3_bind_blob(st, i, packed, (int)n, SQLITE_STATIC);
        return BF_OK;
    }
    free(packed);
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text)
        return BF_ENOMEM;
    *buf = text;
    sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
    return BF_OK;
}

static json_t *column_doc(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_BLOB) {
        const void *p = sqlite3_column_blob(st, i);
        int n = sqlite3_column_bytes(st, i);
        json_t *v = NULL;
        char why[BF_ERRLEN];
        if (!p || proto_msgpack_to_json(p, (size_t)n, &v, why) != BF_OK)
            return NULL;
        return v;
    }
    const char *text = (const char *)sqlite3_column_text(st, i);
    return text ? json_loads(text, 0, NULL) : NULL;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const char *v = (const char *)sqlite3_column_text(st, i);
    return v ? v : "";
}

static uint64_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 1099511628211ull;
    return h;
}

static bool hash_grow(broker_store_t *s)
{
    size_t cap = s->hcap ? 2 * s->hcap : 1024;
    uint32_t *h = calloc(cap, sizeof *h);
    if (!h)
        return false;
    for (size_t i = 0; i < s->ntasks; i++) {
        size_t k = hash_id(s->tasks[i].id) & (cap - 1);
        while (h[k])
            k = (k + 1) & (cap - 1);
        h[k] = (uint32_t)(s->tbase + i) + 1;
    }
    free(s->hash);
    s->hash = h;
    s->hcap = cap;
    return true;
}

/* t must already be counted in ntasks. */
static bool hash_put(broker_store_t *s, uint32_t t)
{
    if (2 * s->ntasks > s->hcap)
        return hash_grow(s); /* the rebuild inserts t too */
    size_t k = hash_id(TASK(s, t)->id) & (s->hcap - 1);
    while (s->hash[k])
        k = (k + 1) & (s->hcap - 1);
    s->hash[k] = t + 1;
    return true;
}

bool broker_store_find_task(broker_store_t *s, const char *task_id, uint32_t *t)
{
    if (!s->hcap || !task_id)
        return false;
    size_t k = hash_id(task_id) & (s->hcap - 1);
    while (s->hash[k]) {
        uint32_t i = s->hash[k] - 1;
        if (!strcmp(TASK(s, i)->id, task_id)) {
            *t = i;
            return true;
        }
        k = (k + 1) & (s->hcap - 1);
    }
    return false;
}

static bool q_reserve(broker_store_t *s, size_t need)
{
    if (need <= s->qcap)
        return true;
    size_t cap = s->qcap ? s->qcap : 1024;
    while (cap < need)
        cap *= 2;
    uint32_t *q = malloc(cap * sizeof *q);
    if (!q)
        return false;
    for (size_t i = 0; i < s->qlen; i++)
        q[i] = s->q[(s->qhead + i) % s->qcap];
    free(s->q);
    s->q = q;
    s->qcap = cap;
    s->qhead = 0;
    return true;
}

static bool q_push_back(broker_store_t *s, uint32_t t)
{
    if (!q_reserve(s, s->qlen + 1))
        return false;
    s->q[(s->qhead + s->qlen++) % s->qcap] = t;
    return true;
}

/* Requeued tasks go first: they are the oldest work. */
static bool q_push_front(broker_store_t *s, uint32_t t)
{
    if (!q_reserve(s, s->qlen + 1))
        return false;
    s->qhead = (s->qhead + s->qcap - 1) % s->qcap;
    s->q[s->qhead] = t;
    s->qlen++;
    return true;
}

/* Drops final tasks from the ring once they are most of it (a cancelled
   job of a million queued tasks must not pin a million slots). */
static void q_compact(broker_store_t *s)
{
    if (s->qlen <= 2 * s->nqueued + 1024)
        return;
    size_t n = 0;
    for (size_t i = 0; i < s->qlen; i++) {
        uint32_t t = s->q[(s->qhead + i) % s->qcap];
        if (TASK(s, t)->state == T_QUEUED)
            s->q[(s->qhead + n++) % s->qcap] = t;
    }
    s->qlen = n;
}

static bool run_add(broker_store_t *s, uint32_t t)
{
    if (!bf_grow(&s->run, &s->caprun, s->nrun + 1, sizeof *s->run, 64))
        return false;
    s->run[s->nrun++] = t;
    return true;
}

static void run_remove(broker_store_t *s, uint32_t t)
{
    for (size_t i = 0; i < s->nrun; i++)
        if (s->run[i] == t) {
            s->run[i] = s->run[--s->nrun];
            return;
        }
}

static task_t *task_new(broker_store_t *s)
{
    if (next_task(s) >= UINT32_MAX - 1)
        return NULL;
    if (s->ntasks == s->captasks) { /* by half, not double: the campaign's biggest array */
        size_t cap = s->captasks ? s->captasks + s->captasks / 2 : 1024;
        if (!bf_resize(&s->tasks, cap, sizeof *s->tasks))
            return NULL;
        s->captasks = cap;
    }
    task_t *t = &s->tasks[s->ntasks];
    memset(t, 0, sizeof *t);
    return t;
}

static job_t *job_new(broker_store_t *s)
{
    if (!bf_grow(&s->jobs, &s->capjobs, s->njobs + 1, sizeof *s->jobs, 16))
        return NULL;
    job_t *j = &s->jobs[s->njobs];
    memset(j, 0, sizeof *j);
    return j;
}

static void job_free(job_t *j)
{
    free(j->name);
    free(j->output);
    free(j->task);
    free(j->scenes);
    json_decref(j->spec);
    free(j->spec_mp);
    free(j->info_fixed);
    json_decref(j->keys);
}

/* Appends a scene name to the job's blob; its offset goes to *off. */
static bool scene_add(job_t *j, const char *name, uint32_t *off)
{
    size_t n = strlen(name) + 1;
    if (j->scenes_len + n > UINT32_MAX)
        return false;
    if (!bf_grow(&j->scenes, &j->scenes_cap, j->scenes_len + n, 1, 256))
        return false;
    memcpy(j->scenes + j->scenes_len, name, n);
    *off = (uint32_t)j->scenes_len;
    j->scenes_len += n;
    return true;
}

static const char *scene_of(const broker_store_t *s, const task_t *t)
{
    return JOB(s, t->job)->scenes + t->scene;
}

/* A string member, "?" when absent (failures read back from the store). */
static const char *field(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "?";
}

static int status_index(const char *status)
{
    for (int i = 0; i < S_COUNT; i++)
        if (status && !strcmp(status, status_names[i]))
            return i;
    return S_ERROR;
}

/* ---- open, schema, reload ---------------------------------------------------- */

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER);"
    "INSERT OR IGNORE INTO meta VALUES ('schema', 2);"
    "CREATE TABLE IF NOT EXISTS jobs(ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, "
    " name TEXT, output TEXT, task TEXT, spec TEXT, total INTEGER, state TEXT, "
    " submitted_ms INTEGER, finished_ms INTEGER, max_attempts INTEGER, timeout_ms INTEGER, "
    " keys TEXT);"
    "CREATE TABLE IF NOT EXISTS tasks(id TEXT PRIMARY KEY, job_id TEXT, idx INTEGER, "
    " scene TEXT, state INTEGER, attempt INTEGER, worker TEXT, failures TEXT, status TEXT, "
    " result TEXT, final_seq INTEGER);"
    "CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id, idx);"
    /* The events query (final_seq > cursor, of one job or all) walks the
       finals in final_seq order, whichever job it asks for: one index of
       the final tasks only, so that a task becoming final adds one entry
       at its end and touches no other. A state written before (both
       indexes over every task, the job one never used) loses them here;
       an older broker that opens it makes them again, and reads it as
       before. */
    "DROP INDEX IF EXISTS tasks_by_final;"
    "DROP INDEX IF EXISTS tasks_by_job_final;"
    "CREATE INDEX IF NOT EXISTS tasks_finals ON tasks(final_seq) WHERE final_seq IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, job_done INTEGER, "
    " job_id TEXT, task_id TEXT, payload TEXT);";

static bf_err_t prepare(broker_store_t *s, sqlite3_stmt **st, const char *sql, char *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
        return db_fail(s, err, sql);
    return BF_OK;
}

/* Schema 1 -> 2: jobs.keys (the tasks' content keys, a JSON array). */
static const char migrate_1[] = "ALTER TABLE jobs ADD COLUMN keys TEXT;"
                                "UPDATE meta SET value = 2 WHERE key = 'schema';";

static bf_err_t check_version(broker_store_t *s, const char *path, char *err)
{
    sqlite3_stmt *st = NULL;
    bf_err_t rc = prepare(s, &st, "SELECT value FROM meta WHERE key = 'schema'", err);
    if (rc != BF_OK)
        return rc;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    if (v == 1) {
        if (exec(s, migrate_1) != BF_OK)
            return db_fail(s, err, path);
        bf_info("%s: store schema 1 brought to 2 (task content keys)", path);
        v = 2;
    }
    if (v != SCHEMA_VERSION)
        return bf_fail(err, BF_EDB, "%s: store schema version %lld, this broker reads %d", path,
                       (long long)v, SCHEMA_VERSION);
    return BF_OK;
}

static bf_err_t reload_jobs(broker_store_t *s, char *err)
{
    sqlite3_stmt *st = NULL;
    bf_err_t rc = prepare(s, &st,
                          "SELECT id, name, output, task, spec, total, state, submitted_ms, "
                          "finished_ms, max_attempts, timeout_ms, keys FROM jobs ORDER BY ord",
                          err);
    if (rc != BF_OK)
        return rc;
    while (rc == BF_OK && sqlite3_step(st) == SQLITE_ROW) {
        job_t *j = job_new(s);
        if (!j) {
            rc = BF_ENOMEM;
            break;
        }
        bf_strlcpy(j->id, col_text(st, 0), sizeof j->id);
        j->name = bf_strdup(col_text(st, 1));
        j->output = bf_strdup(col_text(st, 2));
        j->task = bf_strdup(col_text(st, 3));
        j->spec = json_loads(col_text(st, 4), 0, NULL);
        j->total = (uint32_t)sqlite3_column_int64(st, 5);
        bf_strlcpy(j->state, col_text(st, 6), sizeof j->state);
        j->submitted_ms = sqlite3_column_int64(st, 7);
        j->finished_ms = sqlite3_column_int64(st, 8);
        j->max_attempts = (unsigned)sqlite3_column_int64(st, 9);
        j->timeout_ms = (uint64_t)sqlite3_column_int64(st, 10);
        if (sqlite3_column_type(st, 11) != SQLITE_NULL)
            j->keys = json_loads(col_text(st, 11), 0, NULL);
        s->njobs++; /* owned by the store from here, freed on close */
        if (!j->name || !j->output || !j->task)
            rc = BF_ENOMEM;
        else if (!j->spec)
            rc = bf_fail(err, BF_EDB, "store: job %s has a corrupt spec", j->id);
        else if (sqlite3_column_type(st, 11) != SQLITE_NULL && json_array_size(j->keys) != j->total)
            rc = bf_fail(err, BF_EDB, "store: job %s has corrupt task keys", j->id);
    }
    sqlite3_finalize(st);
    return rc;
}

static bf_err_t reload_tasks(broker_store_t *s, char *err)
{
    sqlite3_stmt *st = NULL;
    bf_err_t rc = prepare(s, &st,
                          "SELECT id, scene, state, attempt, failures, status, final_seq, rowid "
                          "FROM tasks WHERE job_id = ? ORDER BY idx",
                          err);
    for (size_t jn = 0; rc == BF_OK && jn < s->njobs; jn++) {
        job_t *j = &s->jobs[jn];
        j->first = next_task(s);
        sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
        while (rc == BF_OK && sqlite3_step(st) == SQLITE_ROW) {
            task_t *t = task_new(s);
            if (!t || !scene_add(j, col_text(st, 1), &t->scene)) {
                rc = BF_ENOMEM;
                break;
            }
            bf_strlcpy(t->id, col_text(st, 0), sizeof t->id);
            t->state = (uint8_t)sqlite3_column_int(st, 2);
            t->attempt = (uint16_t)sqlite3_column_int(st, 3);
            t->rowid = sqlite3_column_int64(st, 7);
            t->job = (uint32_t)(s->jbase + jn);
            if (sqlite3_column_type(st, 4) == SQLITE_TEXT)
                t->failures = json_loads(col_text(st, 4), 0, NULL);
            uint32_t idx = next_task(s);
            s->ntasks++;
            if (!hash_put(s, idx)) {
                rc = BF_ENOMEM;
                break;
            }
            if (t->state == T_FINAL) {
                t->status = (uint8_t)status_index(col_text(st, 5));
                j->final++;
                j->counts[t->status]++;
                uint64_t fs = (uint64_t)sqlite3_column_int64(st, 6);
                if (fs > s->final_seq)
                    s->final_seq = fs;
            } else if (t->state == T_RUNNING) {
                t->orphan = true;
                j->running++;
                if (!run_add(s, idx))
                    rc = BF_ENOMEM;
            } else {
                t->state = T_QUEUED;
                j->queued++;
                s->nqueued++;
                if (!q_push_back(s, idx))
                    rc = BF_ENOMEM;
            }
        }
        sqlite3_reset(st);
        if (rc == BF_OK && next_task(s) - j->first != j->total)
            rc = bf_fail(err, BF_EDB, "store: job %s has %zu tasks, expected %u", j->id,
                         (size_t)(next_task(s) - j->first), j->total);
    }
    sqlite3_finalize(st);
    return rc;
}

static bf_err_t reload(broker_store_t *s, int64_t now, int64_t grace_ms, char *err)
{
    bf_err_t rc = reload_jobs(s, err);
    if (rc == BF_OK)
        rc = reload_tasks(s, err);
    if (rc != BF_OK)
        return rc;
    s->orphan_deadline = now + grace_ms;
    sqlite3_stmt *st = NULL;
    if ((rc = prepare(s, &st, "SELECT count(*), coalesce(max(seq), 0) FROM outbox", err)) != BF_OK)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        s->outbox_rows = (uint64_t)sqlite3_column_int64(st, 0);
        s->outbox_last = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (s->njobs)
        bf_info("store: %zu jobs, %zu tasks (%llu queued, %zu were running), %llu results to "
                "deliver",
                s->njobs, s->ntasks, (unsigned long long)s->nqueued, s->nrun,
                (unsigned long long)s->outbox_rows);
    return BF_OK;
}

bf_err_t broker_store_open(const char *state_dir, int64_t now, int64_t grace_ms,
                           broker_store_t **out, char *err)
{
    *out = NULL;
    broker_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    s->opened_wall_ms = bf_wall_ms();
    char *path = bf_asprintf("%s/broker.db", state_dir);
    bf_err_t rc = BF_OK;
    /* A state that is new must not look like one that was lost: say which. */
    struct stat st;
    bool existed = path && stat(path, &st) == 0, empty = existed && st.st_size == 0;
    if (!path || sqlite3_open(path, &s->db) != SQLITE_OK) {
        rc = bf_fail(err, BF_EDB, "--state %s: cannot open %s: %s", state_dir,
                     path ? path : "broker.db", s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (exec(s, schema) != BF_OK) {
        rc = db_fail(s, err, path);
        goto fail;
    }
    if ((rc = check_version(s, path, err)) != BF_OK)
        goto fail;
    if ((rc = prepare(s, &s->st_task_state,
                      "UPDATE tasks SET state = ?2, attempt = ?3, worker = ?4, failures = ?5 "
                      "WHERE rowid = ?1",
                      err)) != BF_OK ||
        (rc = prepare(s, &s->st_task_final,
                      "UPDATE tasks SET state = 2, attempt = ?2, status = ?3, result = ?4, "
                      "final_seq = ?5, failures = ?6 WHERE rowid = ?1",
                      err)) != BF_OK ||
        (rc = prepare(s, &s->st_outbox,
                      "INSERT INTO outbox(job_done, job_id, task_id, payload) VALUES (?, ?, ?, ?)",
                      err)) != BF_OK ||
        (rc = prepare(s, &s->st_ack, "DELETE FROM outbox WHERE seq = ?", err)) != BF_OK ||
        (rc = prepare(s, &s->st_job_state,
                      "UPDATE jobs SET state = ?2, finished_ms = ?3 WHERE id = ?1", err)) !=
            BF_OK ||
        (rc = prepare(s, &s->st_outbox_after,
                      "SELECT o.seq, o.job_done, o.job_id, o.task_id, "
                      "coalesce(o.payload, t.result) FROM outbox o LEFT JOIN tasks t ON "
                      "o.job_done = 0 AND t.id = o.task_id WHERE o.seq > ? ORDER BY o.seq "
                      "LIMIT ?",
                      err)) != BF_OK ||
        (rc = prepare(s, &s->st_begin, "BEGIN", err)) != BF_OK ||
        (rc = prepare(s, &s->st_commit, "COMMIT", err)) != BF_OK ||
        (rc = prepare(s, &s->st_events,
                      "SELECT final_seq, job_id, id, scene, result FROM tasks WHERE final_seq > ?1 "
                      "AND (?2 = '' OR job_id = ?2) ORDER BY final_seq LIMIT ?3",
                      err)) != BF_OK)
        goto fail;
    if ((rc = reload(s, now, grace_ms, err)) != BF_OK)
        goto fail;
    if (!existed)
        bf_info("state database %s is new: starting an empty state", path);
    else if (empty && s->njobs == 0)
        bf_warn("WARNING: state database %s was empty (0 bytes): starting a new, empty state; "
                "if this broker had jobs before, they are lost (restore the file from a backup)",
                path);
    free(path);
    *out = s;
    return BF_OK;
fail:
    if (rc == BF_ENOMEM)
        bf_fail(err, BF_ENOMEM, "store: out of memory reading %s", path ? path : state_dir);
    free(path);
    broker_store_close(&s);
    return rc;
}

void broker_store_close(broker_store_t **self)
{
    if (!self || !*self)
        return;
    broker_store_t *s = *self;
    sqlite3_finalize(s->st_task_state);
    sqlite3_finalize(s->st_task_final);
    sqlite3_finalize(s->st_outbox);
    sqlite3_finalize(s->st_job_state);
    sqlite3_finalize(s->st_outbox_after);
    sqlite3_finalize(s->st_events);
    sqlite3_finalize(s->st_begin);
    sqlite3_finalize(s->st_commit);
    /* rows acknowledged in memory: deleted now rather than delivered again
       (best effort: a failure only means a delivery the collector skips) */
    if (s->nacked && s->st_ack && s->db &&
        sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK) {
        if (broker_store_outbox_flush(s) == BF_OK)
            sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    }
    sqlite3_finalize(s->st_ack);
    if (s->db)
        sqlite3_close(s->db); /* an open transaction is rolled back */
    for (size_t i = 0; i < s->ntasks; i++)
        json_decref(s->tasks[i].failures);
    for (size_t i = 0; i < s->njobs; i++)
        job_free(&s->jobs[i]);
    free(s->tasks);
    free(s->jobs);
    free(s->q);
    free(s->hash);
    free(s->run);
    free(s->acked);
    free(s);
    *self = NULL;
}

void broker_store_throwaway(broker_store_t *s)
{
    if (!s || !s->db)
        return;
    if (sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL) != SQLITE_OK ||
        sqlite3_exec(s->db, "PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE;", NULL, NULL,
                     NULL) != SQLITE_OK)
        bf_debug("the store stays as durable as ever: %s", sqlite3_errmsg(s->db));
}

/* BEGIN and COMMIT run once per reactor turn: prepared once, not parsed
   again each time as sqlite3_exec would. */
static bf_err_t step_once(broker_store_t *s, sqlite3_stmt *st, const char *what)
{
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r != SQLITE_DONE) {
        bf_error("store: %s: %s", what, sqlite3_errmsg(s->db));
        return BF_EDB;
    }
    return BF_OK;
}

bf_err_t broker_store_begin(broker_store_t *s)
{
    return step_once(s, s->st_begin, "BEGIN");
}

bf_err_t broker_store_commit(broker_store_t *s)
{
    return step_once(s, s->st_commit, "COMMIT");
}

/* ---- jobs ----------------------------------------------------------------- */

static json_t *job_info(const job_t *j)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:{s:I, s:I, s:I, s:I}}", "id",
                     j->id, "name", j->name, "output", j->output, "task", j->task, "total",
                     (json_int_t)j->total, "submitted_ms", (json_int_t)j->submitted_ms,
                     "finished_ms", (json_int_t)j->finished_ms, "state", j->state, "counts",
                     "success", (json_int_t)j->counts[S_SUCCESS], "failed",
                     (json_int_t)j->counts[S_FAILED], "error", (json_int_t)j->counts[S_ERROR],
                     "cancelled", (json_int_t)j->counts[S_CANCELLED]);
}

/* JOBINFO packed (MessagePack), the same bytes as packing job_info(j), for
   the DELIVERs of a turn, without building the tree each time: the members
   that never change (id, name, output, task, total, submitted_ms) are packed
   once per job through proto_json_to_msgpack (which checks the strings as
   it checks every document), finished_ms, state and counts are appended as
   they are now. *out is the caller's to free. BF_ENOMEM, or BF_EINVAL when
   the job's strings cannot go out packed (the caller sends the tree). */
static bf_err_t job_info_mp(job_t *j, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!j->info_fixed) {
        json_t *fixed =
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "id", j->id, "name", j->name, "output",
                      j->output, "task", j->task, "total", (json_int_t)j->total, "submitted_ms",
                      (json_int_t)j->submitted_ms);
        uint8_t *mp = NULL;
        size_t n = 0;
        bf_err_t rc = fixed ? proto_json_to_msgpack(fixed, &mp, &n) : BF_ENOMEM;
        json_decref(fixed);
        if (rc == BF_OK && (n < 1 || mp[0] != 0x86)) /* a fixmap of 6, always */
            rc = BF_EINVAL;
        if (rc != BF_OK) {
            free(mp);
            return rc == BF_ENOMEM ? rc : BF_EINVAL;
        }
        memmove(mp, mp + 1, n - 1); /* without its map header: 9 members in all */
        j->info_fixed = mp;
        j->info_fixed_len = n - 1;
    }
    static const char *const names[S_COUNT] = {"success", "failed", "error", "cancelled"};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* integers as proto packs them: unsigned when not negative */
#define PACK_KEY(k) (msgpack_pack_str(&pk, strlen(k)) || msgpack_pack_str_body(&pk, k, strlen(k)))
    int bad = msgpack_pack_map(&pk, 9) ||
              msgpack_sbuffer_write(&sb, (const char *)j->info_fixed, j->info_fixed_len) ||
              PACK_KEY("finished_ms") ||
              (j->finished_ms >= 0 ? msgpack_pack_uint64(&pk, (uint64_t)j->finished_ms)
                                   : msgpack_pack_int64(&pk, j->finished_ms)) ||
              PACK_KEY("state") || PACK_KEY(j->state) || PACK_KEY("counts") ||
              msgpack_pack_map(&pk, S_COUNT);
    for (int i = 0; i < S_COUNT && !bad; i++)
        bad = PACK_KEY(names[i]) || msgpack_pack_uint64(&pk, j->counts[i]);
#undef PACK_KEY
    if (bad) {
        msgpack_sbuffer_destroy(&sb);
        return BF_ENOMEM;
    }
    *out = (uint8_t *)sb.data;
    *len = sb.size;
    return BF_OK;
}

static bf_err_t outbox_add(broker_store_t *s, bool job_done, const char *job_id,
                           const char *task_id, json_t *payload)
{
    sqlite3_stmt *st = s->st_outbox;
    void *buf = NULL;
    if (payload && bind_doc(st, 4, payload, &buf) != BF_OK)
        return BF_ENOMEM;
    if (!payload)
        sqlite3_bind_null(st, 4);
    sqlite3_bind_int(st, 1, job_done);
    sqlite3_bind_text(st, 2, job_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, task_id ? task_id : "", -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    free(buf);
    if (r != SQLITE_DONE) {
        bf_error("store: outbox: %s", sqlite3_errmsg(s->db));
        return BF_EDB;
    }
    s->outbox_rows++;
    s->outbox_last = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return BF_OK;
}

static bf_err_t job_maybe_done(broker_store_t *s, job_t *j)
{
    if (strcmp(j->state, "running") != 0 || j->final < j->total)
        return BF_OK;
    bf_strlcpy(j->state, j->cancelled ? "cancelled" : "done", sizeof j->state);
    j->finished_ms = bf_wall_ms();
    sqlite3_stmt *st = s->st_job_state;
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->finished_ms);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r != SQLITE_DONE) {
        bf_error("store: job %s: %s", j->id, sqlite3_errmsg(s->db));
        return BF_EDB;
    }
    json_t *payload = json_pack("{s:o}", "job", job_info(j));
    bf_err_t rc = payload ? outbox_add(s, true, j->id, NULL, payload) : BF_ENOMEM;
    json_decref(payload);
    bf_info("job %s %s: %u success, %u failed, %u error, %u cancelled", j->id, j->state,
            j->counts[S_SUCCESS], j->counts[S_FAILED], j->counts[S_ERROR], j->counts[S_CANCELLED]);
    return rc;
}

bf_err_t broker_store_add_job(broker_store_t *s, const bf_job_t *job, json_t *keys, char job_id[16],
                              uint32_t *first)
{
    if (job->scene_count == 0 || job->scene_count > UINT32_MAX - (uint64_t)next_task(s) - 2)
        return BF_EINVAL;
    char uuid[33];
    bf_uuid(uuid);
    memcpy(job_id, uuid, 12);
    job_id[12] = '\0';
    job_t *j = job_new(s);
    if (!j)
        return BF_ENOMEM;
    bf_strlcpy(j->id, job_id, sizeof j->id);
    j->name = bf_strdup(job->name ? job->name : "");
    j->output = bf_strdup(job->output ? job->output : "");
    j->task = bf_strdup(job->task == BF_TASK_EXEC ? "exec" : "boresight");
    j->spec = bf_job_to_json(job, false);
    j->total = (uint32_t)job->scene_count;
    j->first = next_task(s);
    j->max_attempts = job->max_attempts ? job->max_attempts : 1;
    j->timeout_ms = (uint64_t)(job->timeout_s * 1000.0);
    j->submitted_ms = bf_wall_ms();
    bf_strlcpy(j->state, "running", sizeof j->state);
    j->keys = json_incref(keys);
    *first = j->first;
    char *spec = j->spec ? json_dumps(j->spec, JSON_COMPACT) : NULL;
    char *keys_text = keys ? json_dumps(keys, JSON_COMPACT) : NULL;
    if (!j->name || !j->output || !j->task || !spec || (keys && !keys_text)) {
        free(spec);
        free(keys_text);
        job_free(j);
        return BF_ENOMEM;
    }
    s->njobs++; /* from here on the job is the store's; an error stops the broker before COMMIT */
    sqlite3_stmt *st = NULL;
    bf_err_t rc = BF_OK;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO jobs(id, name, output, task, spec, total, state, "
                           "submitted_ms, finished_ms, max_attempts, timeout_ms, keys) VALUES "
                           "(?, ?, ?, ?, ?, ?, 'running', ?, 0, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK) {
        free(spec);
        free(keys_text);
        return BF_EDB;
    }
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, j->output, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, j->task, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, spec, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, j->total);
    sqlite3_bind_int64(st, 7, j->submitted_ms);
    sqlite3_bind_int64(st, 8, j->max_attempts);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)j->timeout_ms);
    if (keys_text)
        sqlite3_bind_text(st, 10, keys_text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 10);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = BF_EDB;
    sqlite3_finalize(st);
    free(spec);
    free(keys_text);
    st = NULL;
    if (rc == BF_OK && sqlite3_prepare_v2(s->db,
                                          "INSERT INTO tasks(id, job_id, idx, scene, state, "
                                          "attempt) VALUES (?, ?, ?, ?, 0, 0)",
                                          -1, &st, NULL) != SQLITE_OK)
        rc = BF_EDB;
    char ids[64][33]; /* drawn 64 at a time: one getrandom each, not one per task */
    for (size_t i = 0; rc == BF_OK && i < job->scene_count; i++) {
        task_t *t = task_new(s);
        if (!t || !scene_add(j, job->scenes[i], &t->scene)) {
            rc = BF_ENOMEM;
            break;
        }
        if (i % 64 == 0)
            bf_uuids(ids[0], sizeof ids[0], job->scene_count - i < 64 ? job->scene_count - i : 64);
        memcpy(t->id, ids[i % 64], sizeof ids[0]);
        t->job = (uint32_t)(s->jbase + s->njobs - 1);
        sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, j->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)i);
        sqlite3_bind_text(st, 4, job->scenes[i], -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = BF_EDB;
        t->rowid = sqlite3_last_insert_rowid(s->db);
        sqlite3_reset(st);
        uint32_t idx = next_task(s);
        s->ntasks++;
        if (rc == BF_OK && (!hash_put(s, idx) || !q_push_back(s, idx)))
            rc = BF_ENOMEM;
        j->queued++;
        s->nqueued++;
    }
    sqlite3_finalize(st);
    if (rc == BF_EDB)
        bf_error("store: job %s: %s", j->id, sqlite3_errmsg(s->db));
    return rc;
}

/* ---- tasks ------------------------------------------------------------------- */

static bf_err_t write_state(broker_store_t *s, const task_t *t, const char *worker)
{
    sqlite3_stmt *st = s->st_task_state;
    char *failures = t->failures ? json_dumps(t->failures, JSON_COMPACT) : NULL;
    if (t->failures && !failures)
        return BF_ENOMEM;
    sqlite3_bind_int64(st, 1, t->rowid);
    sqlite3_bind_int(st, 2, t->state);
    sqlite3_bind_int(st, 3, t->attempt);
    sqlite3_bind_text(st, 4, worker ? worker : "", -1, SQLITE_STATIC);
    if (failures)
        sqlite3_bind_text(st, 5, failures, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    free(failures);
    if (r != SQLITE_DONE) {
        bf_error("store: task %s: %s", t->id, sqlite3_errmsg(s->db));
        return BF_EDB;
    }
    return BF_OK;
}

/* running -> queued, at the head of the queue (the oldest work). */
static bool requeue(broker_store_t *s, uint32_t t)
{
    task_t *tk = TASK(s, t);
    job_t *j = JOB(s, tk->job);
    if (tk->state != T_RUNNING)
        return true;
    tk->state = T_QUEUED;
    tk->orphan = false;
    j->running--;
    j->queued++;
    s->nqueued++;
    run_remove(s, t);
    return q_push_front(s, t);
}

/* Whether task tk already failed on the fault domain key, and on how many
   distinct domains it failed. */
static bool failed_on(const task_t *tk, const char *key, size_t *distinct)
{
    *distinct = 0;
    if (!key || !tk->failures)
        return false;
    size_t i;
    bool hit = false;
    json_t *f;
    json_array_foreach(tk->failures, i, f)
    {
        const char *k = field(f, "key");
        hit = hit || !strcmp(k, key);
        size_t j;
        json_t *g;
        bool seen = false;
        json_array_foreach(tk->failures, j, g)
        {
            if (j >= i)
                break;
            seen = seen || !strcmp(field(g, "key"), k);
        }
        *distinct += !seen;
    }
    return hit;
}

bf_err_t broker_store_lease(broker_store_t *s, const char *worker, const char *avoid_key,
                            size_t live_keys, int64_t now, uint32_t *task)
{
    /* Tasks cancelled while queued are dropped from the head; then the
       first of the next LEASE_LOOKAHEAD queued tasks that did not fail on
       this fault domain is taken out, keeping the others in order. */
    while (s->qlen > 0 && TASK(s, s->q[s->qhead])->state != T_QUEUED) {
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qlen--;
    }
    if (s->qlen == 0)
        return BF_ENOENT;
    /* Queue order, passing over a task that failed here while some live
       domain has not tried it yet. */
    size_t pick = SIZE_MAX;
    for (size_t i = 0; i < s->qlen && i < LEASE_LOOKAHEAD && pick == SIZE_MAX; i++) {
        const task_t *c = TASK(s, s->q[(s->qhead + i) % s->qcap]);
        size_t distinct;
        if (c->state == T_QUEUED && (!failed_on(c, avoid_key, &distinct) || distinct >= live_keys))
            pick = i;
    }
    if (pick == SIZE_MAX)
        return BF_ESTATE;
    uint32_t t = s->q[(s->qhead + pick) % s->qcap];
    for (size_t i = pick; i > 0; i--) /* close the gap from the head side */
        s->q[(s->qhead + i) % s->qcap] = s->q[(s->qhead + i - 1) % s->qcap];
    s->qhead = (s->qhead + 1) % s->qcap;
    s->qlen--;
    task_t *tk = TASK(s, t);
    job_t *j = JOB(s, tk->job);
    tk->state = T_RUNNING;
    tk->attempt++;
    tk->orphan = false;
    tk->lease_until = now + (int64_t)j->timeout_ms;
    j->queued--;
    s->nqueued--;
    j->running++;
    if (!run_add(s, t))
        return BF_ENOMEM;
    *task = t;
    return write_state(s, tk, worker);
}

bf_err_t broker_store_task_msg(broker_store_t *s, uint32_t t, proto_msg_t *m)
{
    task_t *tk = TASK(s, t);
    job_t *j = JOB(s, tk->job);
    if (proto_msg_set(&m->job_id, j->id) != BF_OK || proto_msg_set(&m->task_id, tk->id) != BF_OK ||
        proto_msg_set(&m->scene, scene_of(s, tk)) != BF_OK)
        return BF_ENOMEM;
    m->attempt = tk->attempt;
    m->timeout_ms = j->timeout_ms;
    /* Every TASK of a job carries the same spec: it is packed once and each
       TASK gets a copy of the bytes, instead of the encoder walking the
       tree again per dispatch. A spec that cannot be packed goes as the
       tree, for the encoder to refuse as before. */
    if (!j->spec_mp) {
        uint8_t *mp = NULL;
        size_t n = 0;
        if (proto_json_to_msgpack(j->spec, &mp, &n) == BF_OK) {
            j->spec_mp = mp;
            j->spec_mp_len = n;
        } else {
            free(mp);
        }
    }
    if (!j->spec_mp) {
        m->obj = json_incref(j->spec);
        return BF_OK;
    }
    if (!(m->obj_raw = malloc(j->spec_mp_len)))
        return BF_ENOMEM;
    memcpy(m->obj_raw, j->spec_mp, j->spec_mp_len);
    m->obj_raw_len = j->spec_mp_len;
    return BF_OK;
}

/* A table sized for n entries, rebuilt from the tasks in memory. */
static bool hash_rebuild(broker_store_t *s)
{
    size_t cap = 1024;
    while (cap < 2 * s->ntasks + 1)
        cap *= 2;
    free(s->hash);
    s->hash = NULL;
    s->hcap = cap / 2; /* hash_grow doubles it */
    return hash_grow(s);
}

size_t broker_store_retirable(const broker_store_t *s, int64_t now_wall_ms, int64_t retain_ms)
{
    if (s->outbox_rows) /* everything delivered and acknowledged first */
        return 0;
    size_t k = 0;
    while (k < s->njobs) {
        const job_t *j = &s->jobs[k];
        if (!strcmp(j->state, "running") || j->final < j->total || j->finished_ms <= 0 ||
            now_wall_ms - j->finished_ms < retain_ms)
            break;
        k++;
    }
    return k;
}

bf_err_t broker_store_retire(broker_store_t *s, size_t k)
{
    if (k == 0 || k > s->njobs)
        return BF_OK;
    sqlite3_stmt *dt = NULL, *dj = NULL;
    char err[BF_ERRLEN];
    bf_err_t rc = prepare(s, &dt, "DELETE FROM tasks WHERE job_id = ?", err);
    if (rc == BF_OK)
        rc = prepare(s, &dj, "DELETE FROM jobs WHERE id = ?", err);
    for (size_t i = 0; rc == BF_OK && i < k; i++) {
        sqlite3_bind_text(dt, 1, s->jobs[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_text(dj, 1, s->jobs[i].id, -1, SQLITE_STATIC);
        if (sqlite3_step(dt) != SQLITE_DONE || sqlite3_step(dj) != SQLITE_DONE)
            rc = db_fail(s, err, "retire");
        sqlite3_reset(dt);
        sqlite3_reset(dj);
    }
    sqlite3_finalize(dt);
    sqlite3_finalize(dj);
    if (rc != BF_OK) {
        bf_error("%s", err);
        return BF_EDB;
    }
    /* Memory: the tasks before cut are final and nobody holds them (a
       running task keeps its job running); the queue may still name some
       (cancelled while queued). */
    uint32_t cut = k < s->njobs ? s->jobs[k].first : next_task(s);
    size_t n = 0;
    for (size_t i = 0; i < s->qlen; i++) {
        uint32_t t = s->q[(s->qhead + i) % s->qcap];
        if (t >= cut)
            s->q[(s->qhead + n++) % s->qcap] = t;
    }
    s->qlen = n;
    for (uint32_t t = s->tbase; t < cut; t++)
        json_decref(TASK(s, t)->failures);
    for (size_t i = 0; i < k; i++)
        job_free(&s->jobs[i]);
    size_t drop = cut - s->tbase;
    memmove(s->tasks, s->tasks + drop, (s->ntasks - drop) * sizeof *s->tasks);
    s->ntasks -= drop;
    s->tbase = cut;
    memmove(s->jobs, s->jobs + k, (s->njobs - k) * sizeof *s->jobs);
    s->njobs -= k;
    s->jbase += (uint32_t)k;
    /* Give the memory back: a big array shrinks with the jobs it held. */
    if (s->captasks > 4096 && s->ntasks < s->captasks / 4) {
        size_t cap = s->ntasks + s->ntasks / 2 + 1024;
        if (bf_resize(&s->tasks, cap, sizeof *s->tasks))
            s->captasks = cap;
    }
    if (!hash_rebuild(s))
        return BF_ENOMEM;
    bf_info("store: retired %zu finished job%s (%zu tasks), %zu jobs and %zu tasks remain", k,
            k == 1 ? "" : "s", drop, s->njobs, s->ntasks);
    return BF_OK;
}

bool broker_store_task_running(broker_store_t *s, uint32_t t)
{
    return TASK(s, t)->state == T_RUNNING;
}

bool broker_store_task_final(broker_store_t *s, uint32_t t)
{
    if (t < s->tbase) /* retired: it was final */
        return true;
    return TASK(s, t)->state == T_FINAL;
}

const char *broker_store_task_id(broker_store_t *s, uint32_t t)
{
    return TASK(s, t)->id;
}

const char *broker_store_task_scene(broker_store_t *s, uint32_t t)
{
    return scene_of(s, TASK(s, t));
}

unsigned broker_store_task_attempt(broker_store_t *s, uint32_t t)
{
    return TASK(s, t)->attempt;
}

bf_err_t broker_store_task_adopted(broker_store_t *s, uint32_t t, const char *worker, int64_t now)
{
    task_t *tk = TASK(s, t);
    if (tk->state != T_RUNNING)
        return BF_ESTATE;
    tk->orphan = false;
    tk->lease_until = now + (int64_t)JOB(s, tk->job)->timeout_ms;
    return write_state(s, tk, worker);
}

unsigned broker_store_task_note_unstarted(broker_store_t *s, uint32_t t)
{
    task_t *tk = TASK(s, t);
    if (tk->unstarted < UINT8_MAX)
        tk->unstarted++;
    return tk->unstarted;
}

bf_err_t broker_store_task_returned(broker_store_t *s, uint32_t t)
{
    task_t *tk = TASK(s, t);
    if (tk->state != T_RUNNING)
        return BF_OK;
    if (tk->attempt > 0)
        tk->attempt--;
    if (!requeue(s, t))
        return BF_ENOMEM;
    return write_state(s, tk, NULL);
}

/* Remembers one final in the job's recent window (for the rate). */
static void job_note_final(job_t *j, int64_t wall)
{
    j->recent[(j->recent_head + j->nrecent) % RECENT] = wall;
    if (j->nrecent < RECENT)
        j->nrecent++;
    else
        j->recent_head = (j->recent_head + 1) % RECENT;
}

/* The stored form of a final result: the bytes of mp (a checked map; an
   empty one when NULL) with set's members put in (proto_msgpack_patch),
   into *blob. Only when a member of set cannot go packed (a reason longer
   than a document's string may be) is the whole made a tree and stored as
   JSON text (*text), as column_doc reads it. */
static bf_err_t final_doc(const uint8_t *mp, size_t len, const json_t *set, uint8_t **blob,
                          size_t *blob_len, char **text)
{
    static const uint8_t empty[] = {0x80};
    if (!mp)
        mp = empty, len = sizeof empty;
    bf_err_t rc = proto_msgpack_patch(mp, len, set, blob, blob_len);
    if (rc != BF_EPROTO)
        return rc;
    json_t *doc = NULL;
    if ((rc = proto_msgpack_to_json(mp, len, &doc, NULL)) == BF_OK &&
        json_object_update(doc, (json_t *)set) == 0)
        *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return *text ? BF_OK : BF_ENOMEM;
}

/* Makes t final with status and its result (mp, len bytes; NULL for none)
   with set's members (the reason of an error or a cancellation; may be
   NULL) and the fleet's bookkeeping ones put in, records it, appends it
   to the outbox and maybe ends the job. */
static bf_err_t finalize(broker_store_t *s, uint32_t t, const uint8_t *mp, size_t len,
                         const json_t *set, int status)
{
    task_t *tk = TASK(s, t);
    job_t *j = JOB(s, tk->job);
    if (tk->state == T_FINAL)
        return BF_OK; /* exactly once */
    if (tk->state == T_RUNNING) {
        j->running--;
        run_remove(s, t);
    } else {
        j->queued--; /* the ring entry is skipped by lease() */
        s->nqueued--;
    }
    tk->state = T_FINAL;
    tk->status = (uint8_t)status;
    j->final++;
    j->counts[status]++;
    if (status != S_CANCELLED)
        job_note_final(j, bf_wall_ms());
    /* what the result was computed from: a later job may take it */
    json_t *key = j->keys ? json_array_get(j->keys, t - j->first) : NULL;
    json_t *fields = set ? json_copy((json_t *)set) : json_object();
    if (!fields || json_object_set_new(fields, "scene", json_string(scene_of(s, tk))) ||
        json_object_set_new(fields, "task_id", json_string(tk->id)) ||
        json_object_set_new(fields, "job_id", json_string(j->id)) ||
        json_object_set_new(fields, "attempt", json_integer(tk->attempt)) ||
        json_object_set_new(fields, "status", json_string(status_names[status])) ||
        (key && json_object_set(fields, "key", key)) ||
        (tk->failures && json_object_set(fields, "failures", tk->failures))) {
        json_decref(fields);
        return BF_ENOMEM;
    }
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    char *text = NULL;
    char *failures = tk->failures ? json_dumps(tk->failures, JSON_COMPACT) : NULL;
    bf_err_t rc = final_doc(mp, len, fields, &blob, &blob_len, &text);
    json_decref(fields);
    if (rc != BF_OK || (tk->failures && !failures) || blob_len > INT_MAX) {
        free(blob);
        free(text);
        free(failures);
        return rc != BF_OK ? rc : BF_ENOMEM;
    }
    sqlite3_stmt *st = s->st_task_final;
    if (blob)
        sqlite3_bind_blob(st, 4, blob, (int)blob_len, SQLITE_STATIC);
    else
        sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 1, tk->rowid);
    sqlite3_bind_int(st, 2, tk->attempt);
    sqlite3_bind_text(st, 3, status_names[status], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)++s->final_seq);
    if (failures)
        sqlite3_bind_text(st, 6, failures, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free(blob);
    free(text);
    free(failures);
    if (r != SQLITE_DONE) {
        bf_error("store: final %s: %s", tk->id, sqlite3_errmsg(s->db));
        return BF_EDB;
    }
    /* The outbox row points at the task; DELIVER is built from its result
       when it is sent, so the result is written once. */
    rc = outbox_add(s, false, j->id, tk->id, NULL);
    if (rc == BF_OK)
        rc = job_maybe_done(s, j);
    return rc;
}

bf_err_t broker_store_task_done(broker_store_t *s, uint32_t t, const uint8_t *result, size_t len,
                                bool failed)
{
    return finalize(s, t, result, len, NULL, failed ? S_FAILED : S_SUCCESS);
}

bf_err_t broker_store_task_done_tree(broker_store_t *s, uint32_t t, const json_t *result)
{
    const char *status = json_string_value(json_object_get(result, "status"));
    uint8_t *mp = NULL;
    size_t len = 0;
    /* a reused result is a piece of a SUBMIT that came packed: it packs
       again, only memory can fail */
    if (json_is_object(result) && proto_json_to_msgpack(result, &mp, &len) != BF_OK)
        return BF_ENOMEM;
    bf_err_t rc =
        finalize(s, t, mp, len, NULL, status && !strcmp(status, "failed") ? S_FAILED : S_SUCCESS);
    free(mp);
    return rc;
}

/* Whether a failure record names whose fault it was (records written
   before attribution existed have no "fault": unattributed). */
static bool attributed(const json_t *f)
{
    const char *v = json_string_value(json_object_get(f, "fault"));
    return v && *v;
}

/* How many distinct fault domains task tk failed in without attribution. */
static size_t unattributed_domains(const task_t *tk)
{
    size_t n = 0, i;
    json_t *f;
    json_array_foreach(tk->failures, i, f)
    {
        if (attributed(f))
            continue;
        bool seen = false;
        size_t k;
        json_t *g;
        json_array_foreach(tk->failures, k, g)
        {
            if (k >= i)
                break;
            seen = seen || (!attributed(g) && !strcmp(field(g, "key"), field(f, "key")));
        }
        n += !seen;
    }
    return n;
}

const json_t *broker_store_task_failures(broker_store_t *s, uint32_t t)
{
    return TASK(s, t)->failures;
}

bf_err_t broker_store_task_failed(broker_store_t *s, uint32_t t, const char *host,
                                  const char *device, const char *worker, const char *key,
                                  const char *fault, const char *reason, const uint8_t *result,
                                  size_t len)
{
    task_t *tk = TASK(s, t);
    if (tk->state == T_FINAL)
        return BF_OK;
    job_t *j = JOB(s, tk->job);
    if (!tk->failures && !(tk->failures = json_array()))
        return BF_ENOMEM;
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "host", host ? host : "?",
                          "device", device ? device : "?", "worker", worker ? worker : "?", "key",
                          key ? key : (worker ? worker : "?"), "attempt", (json_int_t)tk->attempt,
                          "fault", fault ? fault : "", "reason", reason ? reason : "?");
    if (!f || json_array_append_new(tk->failures, f) != 0)
        return BF_ENOMEM;
    if (tk->attempt < j->max_attempts) {
        if (!requeue(s, t)) /* a queued task (a late error result) stays where it is */
            return BF_ENOMEM;
        return write_state(s, tk, NULL);
    }
    /* Final: the reason names every place it failed, and the verdict
       when it failed the same (unattributed) way in several domains. */
    char verdict[96] = "";
    size_t same = unattributed_domains(tk);
    if (same >= 2)
        snprintf(verdict, sizeof verdict, "; failed the same way on %zu devices: task fault", same);
    char buf[2048];
    size_t room = sizeof buf - strlen(verdict); /* the verdict always fits */
    size_t nf = json_array_size(tk->failures);
    size_t n = (size_t)snprintf(buf, room, "failed %zu time%s: ", nf, nf == 1 ? "" : "s");
    size_t i;
    json_t *e;
    json_array_foreach(tk->failures, i, e)
    {
        if (n >= room - 1)
            break;
        n += (size_t)snprintf(buf + n, room - n, "%s%.100s/%.100s [%.100s] (%.200s)", i ? "; " : "",
                              field(e, "host"), field(e, "device"), field(e, "worker"),
                              field(e, "reason"));
    }
    if (n > room - 1)
        n = room - 1;
    memcpy(buf + n, verdict, strlen(verdict) + 1);
    json_t *set = json_pack("{s:s}", "reason", buf);
    if (!set)
        return BF_ENOMEM;
    bf_err_t rc = finalize(s, t, result, len, set, S_ERROR);
    json_decref(set);
    return rc;
}

/* A lexical normal form of a path: no empty or "." components, ".." takes
   the previous one away, no trailing "/" (bounded by n; longer paths are
   cut, which only makes two long paths compare by their first n bytes). */
static void path_norm(const char *in, char *out, size_t n)
{
    size_t len = 0;
    bool abs = in[0] == '/';
    if (abs && n > 1)
        out[len++] = '/';
    const char *p = in;
    while (*p && len + 1 < n) {
        while (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t c = end ? (size_t)(end - p) : strlen(p);
        if (c == 0)
            break;
        if (c == 1 && p[0] == '.') {
            /* nothing */
        } else if (c == 2 && p[0] == '.' && p[1] == '.' && len > (abs ? 1u : 0u)) {
            while (len > (abs ? 1u : 0u) && out[len - 1] != '/')
                len--;
            if (len > (abs ? 1u : 0u))
                len--; /* the '/' before it */
        } else {
            if (len > (abs ? 1u : 0u) && len + 1 < n)
                out[len++] = '/';
            for (size_t i = 0; i < c && len + 1 < n; i++)
                out[len++] = p[i];
        }
        p += c;
    }
    out[len < n ? len : n - 1] = '\0';
}

/* Whether the collector still has rows of job j to take (results or its
   JOB_DONE). */
static bool job_undelivered(broker_store_t *s, const job_t *j)
{
    if (s->outbox_rows == 0)
        return false;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT seq FROM outbox WHERE job_id = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return true; /* cannot tell: assume it is */
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    bool any = false;
    while (!any && sqlite3_step(st) == SQLITE_ROW) {
        /* a row acknowledged in memory is delivered, whatever the table says */
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        any = true;
        for (size_t i = 0; any && i < s->nacked; i++)
            any = s->acked[i] != seq;
    }
    sqlite3_finalize(st);
    return any;
}

bool broker_store_output_busy(broker_store_t *s, const char *output, char job_id[16], char *name,
                              size_t name_len)
{
    char want[4096], have[4096];
    if (!output || !*output)
        return false;
    path_norm(output, want, sizeof want);
    for (size_t i = 0; i < s->njobs; i++) {
        const job_t *j = &s->jobs[i];
        path_norm(j->output ? j->output : "", have, sizeof have);
        if (strcmp(want, have) != 0)
            continue;
        if (!strcmp(j->state, "running") || job_undelivered(s, j)) {
            bf_strlcpy(job_id, j->id, 16);
            bf_strlcpy(name, j->name ? j->name : "", name_len);
            return true;
        }
    }
    return false;
}

static job_t *job_by_id(broker_store_t *s, const char *job_id)
{
    for (size_t i = 0; job_id && i < s->njobs; i++)
        if (!strcmp(s->jobs[i].id, job_id))
            return &s->jobs[i];
    return NULL;
}

bf_err_t broker_store_cancel_job(broker_store_t *s, const char *job_id, uint64_t *count,
                                 uint32_t **running, size_t *nrunning)
{
    *count = 0;
    *running = NULL;
    *nrunning = 0;
    job_t *j = job_by_id(s, job_id);
    if (!j)
        return BF_ENOENT;
    uint32_t *run = malloc((j->running + 1) * sizeof *run);
    if (!run)
        return BF_ENOMEM;
    bf_err_t rc = BF_OK;
    size_t nr = 0;
    if (!strcmp(j->state, "running"))
        j->cancelled = true;
    for (uint32_t t = j->first; rc == BF_OK && t < j->first + j->total; t++) {
        task_t *tk = TASK(s, t);
        if (tk->state == T_FINAL)
            continue;
        if (tk->state == T_RUNNING)
            run[nr++] = t;
        json_t *set = json_pack("{s:s}", "reason", "cancelled by user");
        if (!set) {
            rc = BF_ENOMEM;
            break;
        }
        rc = finalize(s, t, NULL, 0, set, S_CANCELLED);
        json_decref(set);
        (*count)++;
    }
    q_compact(s);
    *running = run;
    *nrunning = nr;
    return rc;
}

static bool lease_over(const broker_store_t *s, const task_t *tk, int64_t now, int64_t backstop_ms)
{
    return tk->orphan ? now > s->orphan_deadline : now > tk->lease_until + backstop_ms;
}

bf_err_t broker_store_expired(broker_store_t *s, int64_t now, int64_t backstop_ms, uint32_t **late,
                              size_t *nlate)
{
    *late = NULL;
    *nlate = 0;
    size_t n = 0;
    for (size_t i = 0; i < s->nrun; i++)
        n += lease_over(s, TASK(s, s->run[i]), now, backstop_ms);
    if (!n)
        return BF_OK;
    uint32_t *l = malloc(n * sizeof *l);
    if (!l)
        return BF_ENOMEM;
    n = 0;
    for (size_t i = 0; i < s->nrun; i++)
        if (lease_over(s, TASK(s, s->run[i]), now, backstop_ms))
            l[n++] = s->run[i];
    *late = l;
    *nlate = n;
    return BF_OK;
}

bool broker_store_task_orphan(broker_store_t *s, uint32_t t)
{
    return TASK(s, t)->orphan;
}

/* ---- counts, outbox, status ------------------------------------------------ */

uint64_t broker_store_queued(const broker_store_t *s)
{
    return s->nqueued;
}

uint64_t broker_store_outbox_count(broker_store_t *s)
{
    return s->outbox_rows;
}

bf_err_t broker_store_outbox_after(broker_store_t *s, uint64_t after, size_t max,
                                   broker_delivery_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (max == 0 || s->outbox_rows == 0 || after >= s->outbox_last)
        return BF_OK;
    /* no more than the rows there are (acknowledged in memory included):
       the collector's window is far larger than a turn's deliveries */
    if (max > s->outbox_rows + s->nacked)
        max = (size_t)(s->outbox_rows + s->nacked);
    broker_delivery_t *d = calloc(max, sizeof *d);
    if (!d)
        return BF_ENOMEM;
    sqlite3_stmt *st = s->st_outbox_after;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    size_t k = 0;
    bf_err_t rc = BF_OK;
    /* JOBINFO as of now, shared by a run of one job's rows: packed, and as
       a tree only for a row that needs one (a result stored as JSON text) */
    uint8_t *info_mp = NULL;
    size_t info_len = 0;
    json_t *info = NULL;
    job_t *info_j = NULL;
    const char *info_job = NULL;
    while (k < max && sqlite3_step(st) == SQLITE_ROW) {
        d[k].seq = (uint64_t)sqlite3_column_int64(st, 0);
        d[k].job_done = sqlite3_column_int(st, 1) != 0;
        d[k].job_id = bf_strdup(col_text(st, 2));
        d[k].task_id = bf_strdup(col_text(st, 3));
        json_t *doc = NULL;
        if (!d[k].job_done && d[k].job_id) {
            /* {"job": JOBINFO as of now, "result": the final result} */
            if (!info_job || strcmp(info_job, d[k].job_id) != 0) {
                json_decref(info);
                info = NULL;
                free(info_mp);
                info_mp = NULL;
                info_j = job_by_id(s, d[k].job_id);
                info_job = d[k].job_id;
                bf_err_t r = info_j ? job_info_mp(info_j, &info_mp, &info_len) : BF_EINVAL;
                if (r == BF_ENOMEM) {
                    rc = r;
                    k++; /* freed with the others */
                    break;
                }
                if (r != BF_OK) { /* a retired job, or strings that cannot go packed */
                    info = info_j ? job_info(info_j) : json_pack("{s:s}", "id", d[k].job_id);
                    if (info && proto_json_to_msgpack(info, &info_mp, &info_len) != BF_OK)
                        info_mp = NULL;
                }
            }
            /* A result stored as MessagePack goes out as the bytes it is,
               behind the packed JOBINFO: the same frame as packing the tree
               would make, without unpacking and packing it again. */
            if (info_mp && sqlite3_column_type(st, 4) == SQLITE_BLOB) {
                static const uint8_t head[] = {0x82, 0xa3, 'j', 'o', 'b'};
                static const uint8_t mid[] = {0xa6, 'r', 'e', 's', 'u', 'l', 't'};
                const void *blob = sqlite3_column_blob(st, 4);
                size_t n = (size_t)sqlite3_column_bytes(st, 4);
                uint8_t *raw = blob && n ? malloc(sizeof head + info_len + sizeof mid + n) : NULL;
                if (raw) {
                    uint8_t *p = raw;
                    memcpy(p, head, sizeof head);
                    memcpy(p += sizeof head, info_mp, info_len);
                    memcpy(p += info_len, mid, sizeof mid);
                    memcpy(p += sizeof mid, blob, n);
                    d[k].raw = raw;
                    d[k].raw_len = sizeof head + info_len + sizeof mid + n;
                }
            }
            if (!d[k].raw) {
                if (!info)
                    info = info_j ? job_info(info_j) : json_pack("{s:s}", "id", d[k].job_id);
                doc = column_doc(st, 4);
                doc = json_pack("{s:o, s:o}", "job", info ? json_incref(info) : json_object(),
                                "result", doc ? doc : json_object());
            }
        } else {
            doc = column_doc(st, 4);
        }
        d[k].payload = d[k].raw ? NULL : doc ? doc : json_object();
        k++;
        if (!d[k - 1].job_id || !d[k - 1].task_id || (!d[k - 1].payload && !d[k - 1].raw)) {
            rc = BF_ENOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    json_decref(info);
    free(info_mp);
    if (rc != BF_OK) {
        broker_store_deliveries_free(d, k);
        return rc;
    }
    *out = d;
    *n = k;
    return BF_OK;
}

void broker_store_deliveries_free(broker_delivery_t *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++) {
        free(d[i].job_id);
        free(d[i].task_id);
        json_decref(d[i].payload);
        free(d[i].raw);
    }
    free(d);
}

bool broker_store_outbox_ack_later(broker_store_t *s, uint64_t seq)
{
    if (!bf_grow(&s->acked, &s->capacked, s->nacked + 1, sizeof *s->acked, 64))
        return false;
    s->acked[s->nacked++] = seq;
    if (seq > s->acked_max)
        s->acked_max = seq;
    if (s->outbox_rows)
        s->outbox_rows--;
    return true;
}

size_t broker_store_outbox_unflushed(const broker_store_t *s)
{
    return s->nacked;
}

uint64_t broker_store_outbox_flush_above(const broker_store_t *s)
{
    return s->nacked ? s->acked_max : 0;
}

/* One DELETE; *gone is whether the row was there. */
static bf_err_t outbox_delete(broker_store_t *s, uint64_t seq, bool *gone)
{
    sqlite3_bind_int64(s->st_ack, 1, (sqlite3_int64)seq);
    int r = sqlite3_step(s->st_ack);
    *gone = r == SQLITE_DONE && sqlite3_changes(s->db) > 0;
    sqlite3_reset(s->st_ack);
    if (r != SQLITE_DONE) {
        bf_error("store: ack %llu: %s", (unsigned long long)seq, sqlite3_errmsg(s->db));
        return BF_EDB;
    }
    return BF_OK;
}

bf_err_t broker_store_outbox_flush(broker_store_t *s)
{
    for (size_t i = 0; i < s->nacked; i++) {
        bool gone;
        if (outbox_delete(s, s->acked[i], &gone) != BF_OK) {
            /* the broker stops on it; what is left stays to be delivered */
            memmove(s->acked, s->acked + i, (s->nacked - i) * sizeof *s->acked);
            s->nacked -= i;
            return BF_EDB;
        }
    }
    s->nacked = 0;
    s->acked_max = 0;
    return BF_OK;
}

bf_err_t broker_store_outbox_ack(broker_store_t *s, uint64_t seq)
{
    /* first the rows acknowledged in memory, so that a row among them is
       not counted twice */
    if (s->nacked && broker_store_outbox_flush(s) != BF_OK)
        return BF_EDB;
    bool gone = false;
    if (outbox_delete(s, seq, &gone) != BF_OK)
        return BF_EDB;
    if (gone && s->outbox_rows)
        s->outbox_rows--;
    return BF_OK;
}

/* Finals per second over the job's recent window: the last RECENT finals,
   or everything since the job (or this broker) started when fewer. */
static double job_rate(const broker_store_t *s, const job_t *j, int64_t now)
{
    if (j->nrecent == 0)
        return 0;
    int64_t since =
        j->nrecent == RECENT
            ? j->recent[j->recent_head]
            : (j->submitted_ms > s->opened_wall_ms ? j->submitted_ms : s->opened_wall_ms);
    double span = (double)(now - since) / 1e3;
    return span > 0.001 ? j->nrecent / span : 0;
}

json_t *broker_store_jobs_doc(broker_store_t *s)
{
    json_t *jobs = json_array();
    int64_t now = bf_wall_ms();
    for (size_t i = 0; jobs && i < s->njobs; i++) {
        job_t *j = &s->jobs[i];
        json_t *doc = job_info(j);
        if (!doc)
            continue;
        double elapsed = (double)((j->finished_ms ? j->finished_ms : now) - j->submitted_ms) / 1e3;
        bool running = !strcmp(j->state, "running");
        double rate = running ? job_rate(s, j, now) : (elapsed > 0 ? j->final / elapsed : 0);
        double eta = !running ? 0.0 : rate > 0 ? (j->total - j->final) / rate : -1.0;
        json_object_set_new(doc, "queued", json_integer(j->queued));
        json_object_set_new(doc, "running", json_integer(j->running));
        json_object_set_new(doc, "final", json_integer(j->final));
        json_object_set_new(doc, "elapsed_s", json_real(elapsed));
        json_object_set_new(doc, "rate_per_min", json_real(rate * 60));
        json_object_set_new(doc, "eta_s", json_real(eta));
        json_array_append_new(jobs, doc);
    }
    return jobs;
}

/* The members of a result an event shows, then "stats" (only for its
   improvement_mean). */
static const char *const event_keep[] = {"status",           "reason", "attempt", "elapsed_time",
                                         "gpu_id",           "host",   "device",  "worker",
                                         "optimum_on_bound", "stats"};
enum { EVENT_KEEP = BF_ARRAY_LEN(event_keep) - 1 };

/* Copies the members an event shows from a result stored as MessagePack
   into ev, converting only those (proto_msgpack_pick): the rest (a
   boresight result's zone power arrays, thousands of reals) is never made
   into a tree. false when the blob is malformed (the caller then reads it
   whole, as it reads JSON text). */
static bool event_fields_mp(json_t *ev, const uint8_t *p, size_t n)
{
    json_t *v[EVENT_KEEP + 1];
    if (proto_msgpack_pick(p, n, event_keep, EVENT_KEEP + 1, v, NULL) != BF_OK)
        return false;
    for (size_t j = 0; j < EVENT_KEEP; j++)
        if (v[j])
            json_object_set_new(ev, event_keep[j], v[j]);
    json_t *imp = json_object_get(v[EVENT_KEEP], "improvement_mean");
    if (json_is_number(imp))
        json_object_set(ev, "improvement_mean", imp);
    json_decref(v[EVENT_KEEP]);
    return true;
}

/* The same from a result read whole (JSON text of a schema-1 state). */
static void event_fields_tree(json_t *ev, const json_t *r)
{
    for (size_t k = 0; r && k < EVENT_KEEP; k++) {
        json_t *v = json_object_get(r, event_keep[k]);
        if (v)
            json_object_set(ev, event_keep[k], v);
    }
    json_t *imp = json_object_get(json_object_get(r, "stats"), "improvement_mean");
    if (json_is_number(imp))
        json_object_set(ev, "improvement_mean", imp);
}

json_t *broker_store_events(broker_store_t *s, const char *job_id, uint64_t cursor, size_t max,
                            uint64_t *next)
{
    json_t *events = json_array();
    *next = cursor > s->final_seq ? s->final_seq : cursor;
    if (!events || cursor >= s->final_seq || max == 0)
        return events; /* nothing after the cursor (and UINT64_MAX, "none", is no -1 in SQL) */
    sqlite3_stmt *st = s->st_events;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)cursor);
    sqlite3_bind_text(st, 2, job_id ? job_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)max);
    while (sqlite3_step(st) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        json_t *ev =
            json_pack("{s:I, s:s, s:s, s:s}", "seq", (json_int_t)seq, "job_id", col_text(st, 1),
                      "task_id", col_text(st, 2), "scene", col_text(st, 3));
        const void *blob =
            sqlite3_column_type(st, 4) == SQLITE_BLOB ? sqlite3_column_blob(st, 4) : NULL;
        if (ev && !(blob && event_fields_mp(ev, blob, (size_t)sqlite3_column_bytes(st, 4)))) {
            json_t *r = column_doc(st, 4);
            event_fields_tree(ev, r);
            json_decref(r);
        }
        if (ev)
            json_array_append_new(events, ev);
        *next = seq;
    }
    sqlite3_reset(st);
    return events;
}
