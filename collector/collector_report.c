/*  collector/collector_report.c - one job's reports: the durable log
    results.jsonl, the derived results.csv and results_progress.json, and at
    the end results_final_<stamp>.json and summary.json with the statistics
    the notebook printed (numpy's linear-interpolation percentiles). */

#include "collector_report.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LOG (1u << 30)

struct collector_report {
    char *dir;
    int jsonl_fd, csv_fd;
    json_t *progress; /* {scene: result} */
    json_t *ids;      /* {task_id: true}, the de-duplication set */
    json_t *all;      /* results in log order */
    char *final_name; /* results_final_<stamp>.json once written */
};

static const char *const csv_columns[] = {"scene",
                                          "status",
                                          "reason",
                                          "host",
                                          "gpu_id",
                                          "device",
                                          "attempt",
                                          "elapsed_time",
                                          "initial_azimuth_deg",
                                          "initial_tilt_deg",
                                          "optimized_azimuth_deg",
                                          "optimized_tilt_deg",
                                          "zone_cells",
                                          "initial_mean_dbm",
                                          "initial_median_dbm",
                                          "initial_p10_dbm",
                                          "initial_p90_dbm",
                                          "optimized_mean_dbm",
                                          "optimized_median_dbm",
                                          "optimized_p10_dbm",
                                          "optimized_p90_dbm",
                                          "improvement_mean"};

/* Where each column comes from: a path of up to two keys. */
static const char *const csv_paths[][2] = {{"scene", NULL},
                                           {"status", NULL},
                                           {"reason", NULL},
                                           {"host", NULL},
                                           {"gpu_id", NULL},
                                           {"device", NULL},
                                           {"attempt", NULL},
                                           {"elapsed_time", NULL},
                                           {"boresight_initial", "azimuth_deg"},
                                           {"boresight_initial", "tilt_deg"},
                                           {"boresight_optimized", "azimuth_deg"},
                                           {"boresight_optimized", "tilt_deg"},
                                           {"stats", "zone_cells"},
                                           {"stats", "initial_mean"},
                                           {"stats", "initial_median"},
                                           {"stats", "initial_p10"},
                                           {"stats", "initial_p90"},
                                           {"stats", "optimized_mean"},
                                           {"stats", "optimized_median"},
                                           {"stats", "optimized_p10"},
                                           {"stats", "optimized_p90"},
                                           {"stats", "improvement_mean"}};

/* ---- a growing text buffer ----------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} buf_t;

static void put(buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

/* RFC 4180: quote when needed, double the quotes. */
static void csv_field(buf_t *b, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        puts_(b, s);
        return;
    }
    put(b, "\"", 1);
    for (const char *c = s; *c; c++) {
        if (*c == '"')
            put(b, "\"", 1);
        put(b, c, 1);
    }
    put(b, "\"", 1);
}

static void csv_row(buf_t *b, const json_t *r)
{
    for (size_t c = 0; c < BF_ARRAY_LEN(csv_columns); c++) {
        if (c)
            put(b, ",", 1);
        const json_t *v = json_object_get(r, csv_paths[c][0]);
        if (csv_paths[c][1])
            v = json_object_get(v, csv_paths[c][1]);
        char num[64];
        if (json_is_string(v)) {
            csv_field(b, json_string_value(v));
        } else if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
            puts_(b, num);
        } else if (json_is_real(v)) {
            snprintf(num, sizeof num, "%.6g", json_real_value(v));
            puts_(b, num);
        } else if (json_is_boolean(v)) {
            puts_(b, json_is_true(v) ? "true" : "false");
        }
    }
    put(b, "\n", 1);
}

static void csv_header(buf_t *b)
{
    for (size_t c = 0; c < BF_ARRAY_LEN(csv_columns); c++) {
        if (c)
            put(b, ",", 1);
        puts_(b, csv_columns[c]);
    }
    put(b, "\n", 1);
}

/* ---- open and recover --------------------------------------------------------- */

static char *path_in(const collector_report_t *r, const char *name)
{
    return bf_asprintf("%s/%s", r->dir, name);
}

static bf_err_t write_progress(collector_report_t *r, char *err)
{
    char *text = json_dumps(r->progress, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    char *path = path_in(r, "results_progress.json");
    bf_err_t rc = text && path ? bf_write_atomic(path, text, strlen(text), err) : BF_ENOMEM;
    free(text);
    free(path);
    return rc;
}

static bf_err_t remember(collector_report_t *r, json_t *result)
{
    const char *id = json_string_value(json_object_get(result, "task_id"));
    const char *scene = json_string_value(json_object_get(result, "scene"));
    if (json_object_set(r->ids, id ? id : "", json_true()) != 0 ||
        json_object_set(r->progress, scene ? scene : "?", result) != 0 ||
        json_array_append(r->all, result) != 0)
        return BF_ENOMEM;
    return BF_OK;
}

/* Moves the reports of an earlier job out of the way, into
   dir/previous-<job id>/, so a new job that reuses an output directory
   starts with empty reports and nothing of the old one is lost. */
static bf_err_t set_aside(const char *dir, const char *old_job, char *err)
{
    char *dest = bf_asprintf("%s/previous-%s", dir, bf_safe_name(old_job) ? old_job : "job");
    if (!dest)
        return BF_ENOMEM;
    bf_err_t rc = bf_mkdir_p(dest, err);
    DIR *d = rc == BF_OK ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        const char *n = e->d_name;
        if (strcmp(n, "results.jsonl") && strcmp(n, "results.csv") &&
            strcmp(n, "results_progress.json") && strcmp(n, "summary.json") &&
            strncmp(n, "results_final_", 14))
            continue;
        char *from = bf_asprintf("%s/%s", dir, n), *to = bf_asprintf("%s/%s", dest, n);
        if (!from || !to || rename(from, to) != 0)
            rc = bf_fail(err, BF_EIO, "%s: cannot set the earlier job's reports aside", dir);
        free(from);
        free(to);
    }
    if (d)
        closedir(d);
    if (rc == BF_OK)
        bf_info("%s: reports of the earlier job %s moved to %s", dir, old_job, dest);
    free(dest);
    return rc;
}

bf_err_t collector_report_open(const char *dir, const char *job_id, collector_report_t **out,
                               char *err)
{
    *out = NULL;
    collector_report_t *r = calloc(1, sizeof *r);
    if (!r)
        return BF_ENOMEM;
    r->jsonl_fd = r->csv_fd = -1;
    r->dir = bf_strdup(dir);
    r->progress = json_object();
    r->ids = json_object();
    r->all = json_array();
    bf_err_t rc = BF_OK;
    char *jsonl = NULL, *csv = NULL, *text = NULL;
    if (!r->dir || !r->progress || !r->ids || !r->all) {
        rc = BF_ENOMEM;
        goto fail;
    }
    if ((rc = bf_mkdir_p(dir, err)) != BF_OK)
        goto fail;
    jsonl = path_in(r, "results.jsonl");
    csv = path_in(r, "results.csv");
    if (!jsonl || !csv) {
        rc = BF_ENOMEM;
        goto fail;
    }
    size_t len = 0;
    rc = bf_read_file(jsonl, MAX_LOG, &text, &len, err);
    if (rc == BF_OK && len > 0) {
        /* the log of another job: set it aside and start anew */
        char *nl = memchr(text, '\n', len);
        if (nl) {
            *nl = '\0';
            json_t *first = json_loads(text, 0, NULL);
            *nl = '\n';
            const char *old = json_string_value(json_object_get(first, "job_id"));
            if (old && job_id && strcmp(old, job_id) != 0) {
                char old_id[64];
                bf_strlcpy(old_id, old, sizeof old_id);
                rc = set_aside(dir, old_id, err);
                free(text);
                text = NULL;
                len = 0;
                if (rc != BF_OK) {
                    json_decref(first);
                    goto fail;
                }
            }
            json_decref(first);
        }
    }
    if (rc == BF_ENOENT) {
        rc = BF_OK;
        len = 0;
    } else if (rc != BF_OK) {
        goto fail;
    }
    /* Replay the log; a line without its newline was torn by a crash and
       was never acknowledged: cut it off. */
    size_t good = 0;
    for (size_t at = 0; at < len;) {
        char *nl = memchr(text + at, '\n', len - at);
        if (!nl)
            break;
        *nl = '\0';
        json_error_t jerr;
        json_t *res = json_loads(text + at, 0, &jerr);
        if (!res) {
            rc = bf_fail(err, BF_EIO, "%s: line at byte %zu is not JSON: %s", jsonl, at, jerr.text);
            goto fail;
        }
        rc = remember(r, res);
        json_decref(res);
        if (rc != BF_OK)
            goto fail;
        at = (size_t)(nl - text) + 1;
        good = at;
    }
    if (good < len) {
        bf_warn("%s: cutting a torn last line (%zu bytes)", jsonl, len - good);
        if (truncate(jsonl, (off_t)good) != 0) {
            rc = bf_fail(err, BF_EIO, "%s: truncate: %s", jsonl, strerror(errno));
            goto fail;
        }
    }
    /* Derived files, rewritten from the log. */
    buf_t b = {0};
    csv_header(&b);
    size_t i;
    json_t *res;
    json_array_foreach(r->all, i, res) csv_row(&b, res);
    if (b.oom) {
        free(b.p);
        rc = BF_ENOMEM;
        goto fail;
    }
    rc = bf_write_atomic(csv, b.p, b.len, err);
    free(b.p);
    if (rc != BF_OK || (rc = write_progress(r, err)) != BF_OK)
        goto fail;
    r->jsonl_fd = open(jsonl, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    r->csv_fd = open(csv, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (r->jsonl_fd < 0 || r->csv_fd < 0) {
        rc = bf_fail(err, errno == ENOSPC ? BF_ENOSPC : BF_EIO, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    /* An earlier results_final_* of this job is rewritten, not doubled. */
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "results_final_", 14) && strstr(e->d_name, ".json")) {
            free(r->final_name);
            r->final_name = bf_strdup(e->d_name);
        }
    if (d)
        closedir(d);
    free(text);
    free(jsonl);
    free(csv);
    *out = r;
    return BF_OK;
fail:
    free(text);
    free(jsonl);
    free(csv);
    collector_report_close(&r);
    return rc;
}

void collector_report_close(collector_report_t **self)
{
    if (!self || !*self)
        return;
    collector_report_t *r = *self;
    if (r->jsonl_fd >= 0)
        close(r->jsonl_fd);
    if (r->csv_fd >= 0)
        close(r->csv_fd);
    json_decref(r->progress);
    json_decref(r->ids);
    json_decref(r->all);
    free(r->dir);
    free(r->final_name);
    free(r);
    *self = NULL;
}

bool collector_report_has(const collector_report_t *r, const char *task_id)
{
    return task_id && json_object_get(r->ids, task_id) != NULL;
}

size_t collector_report_count(const collector_report_t *r)
{
    return json_array_size(r->all);
}

bf_err_t collector_report_append(collector_report_t *r, json_t *results, char *err)
{
    buf_t lines = {0}, rows = {0};
    size_t i;
    json_t *res;
    json_array_foreach(results, i, res)
    {
        char *line = json_dumps(res, JSON_COMPACT | JSON_REAL_PRECISION(10));
        if (!line) {
            lines.oom = true;
            break;
        }
        puts_(&lines, line);
        put(&lines, "\n", 1);
        free(line);
        csv_row(&rows, res);
    }
    bf_err_t rc = BF_OK;
    if (lines.oom || rows.oom)
        rc = BF_ENOMEM;
    /* The log first: once it holds a line, recovery can rebuild the rest. */
    if (rc == BF_OK && lines.len)
        rc = bf_append_sync(r->jsonl_fd, lines.p, lines.len, err);
    if (rc == BF_OK) {
        json_array_foreach(results, i, res)
        {
            if ((rc = remember(r, res)) != BF_OK)
                break;
        }
    }
    if (rc == BF_OK && rows.len)
        rc = bf_append_sync(r->csv_fd, rows.p, rows.len, err);
    if (rc == BF_OK)
        rc = write_progress(r, err);
    free(lines.p);
    free(rows.p);
    return rc;
}

/* ---- statistics --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile with linear interpolation, of sorted values. */
static double percentile(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    double pos = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

typedef struct {
    double *v;
    size_t n, cap;
} vec_t;

static bool vec_push(vec_t *a, double x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        double *p = realloc(a->v, cap * sizeof *p);
        if (!p)
            return false;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return true;
}

static json_t *num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static double mean(const vec_t *a)
{
    double s = 0;
    for (size_t i = 0; i < a->n; i++)
        s += a->v[i];
    return a->n ? s / (double)a->n : NAN;
}

static json_t *dist(vec_t *a)
{
    qsort(a->v, a->n, sizeof *a->v, cmp_double);
    return json_pack("{s:o, s:o, s:o}", "mean", num(mean(a)), "median",
                     num(percentile(a->v, a->n, 50)), "p10", num(percentile(a->v, a->n, 10)));
}

json_t *collector_report_summary(const collector_report_t *r, const json_t *job)
{
    static const char *const statuses[] = {"success", "failed", "error", "cancelled"};
    json_int_t counts[4] = {0};
    vec_t imp = {0}, init = {0}, opt = {0};
    json_t *per_gpu = json_object(), *gpu_n = json_object();
    size_t i;
    json_t *res;
    bool oom = false;
    json_array_foreach(r->all, i, res)
    {
        const char *st = json_string_value(json_object_get(res, "status"));
        for (int k = 0; k < 4; k++)
            if (st && !strcmp(st, statuses[k]))
                counts[k]++;
        if (!st || strcmp(st, "success") != 0)
            continue;
        json_t *im = json_object_get(json_object_get(res, "stats"), "improvement_mean");
        if (json_is_number(im))
            oom |= !vec_push(&imp, json_number_value(im));
        size_t k;
        json_t *v;
        json_array_foreach(json_object_get(res, "zone_power_initial"), k, v) oom |=
            !vec_push(&init, json_number_value(v));
        json_array_foreach(json_object_get(res, "zone_power_optimized"), k, v) oom |=
            !vec_push(&opt, json_number_value(v));
        char key[300];
        const char *host = json_string_value(json_object_get(res, "host"));
        snprintf(key, sizeof key, "%s/%lld", host ? host : "?",
                 (long long)json_integer_value(json_object_get(res, "gpu_id")));
        double t = json_number_value(json_object_get(res, "elapsed_time"));
        json_object_set_new(per_gpu, key,
                            json_real(json_number_value(json_object_get(per_gpu, key)) + t));
        json_object_set_new(gpu_n, key,
                            json_integer(json_integer_value(json_object_get(gpu_n, key)) + 1));
    }
    const char *key;
    json_t *v;
    json_object_foreach(per_gpu, key, v)
    {
        json_int_t n = json_integer_value(json_object_get(gpu_n, key));
        json_real_set(v, n ? json_real_value(v) / (double)n : 0);
    }
    json_decref(gpu_n);
    json_int_t total = counts[0] + counts[1] + counts[2] + counts[3];
    double imp_mean = mean(&imp);
    qsort(imp.v, imp.n, sizeof *imp.v, cmp_double);
    json_t *improvement = json_pack(
        "{s:o, s:o, s:o, s:o}", "mean", num(imp_mean), "min", num(imp.n ? imp.v[0] : NAN), "max",
        num(imp.n ? imp.v[imp.n - 1] : NAN), "median", num(percentile(imp.v, imp.n, 50)));
    double im = mean(&init), om = mean(&opt);
    json_t *agg_init = dist(&init), *agg_opt = dist(&opt);
    json_t *agg_imp = json_pack("{s:o, s:o, s:o}", "mean", num(om - im), "median",
                                num(json_number_value(json_object_get(agg_opt, "median")) -
                                    json_number_value(json_object_get(agg_init, "median"))),
                                "p10",
                                num(json_number_value(json_object_get(agg_opt, "p10")) -
                                    json_number_value(json_object_get(agg_init, "p10"))));
    double total_time = NAN;
    json_int_t sub = json_integer_value(json_object_get(job, "submitted_ms"));
    json_int_t fin = json_integer_value(json_object_get(job, "finished_ms"));
    if (sub > 0 && fin >= sub)
        total_time = (double)(fin - sub) / 1000.0;
    json_t *doc = json_pack(
        "{s:O, s:{s:I, s:I, s:I, s:I, s:I}, s:o, s:o, s:{s:o, s:o, s:o}, "
        "s:o, s:I}",
        "job", job ? (json_t *)job : json_null(), "counts", "success", counts[0], "failed",
        counts[1], "error", counts[2], "cancelled", counts[3], "total", total, "total_time_s",
        num(total_time), "improvement", improvement, "aggregate", "initial", agg_init, "optimized",
        agg_opt, "improvement", agg_imp, "time_per_gpu", per_gpu, "zone_cells", (json_int_t)init.n);
    free(imp.v);
    free(init.v);
    free(opt.v);
    if (oom) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

bf_err_t collector_report_finish(collector_report_t *r, const json_t *job, char *err)
{
    if (!r->final_name) {
        char stamp[16];
        bf_timestamp(stamp);
        r->final_name = bf_asprintf("results_final_%s.json", stamp);
        if (!r->final_name)
            return BF_ENOMEM;
    }
    char *final_path = path_in(r, r->final_name);
    char *summary_path = path_in(r, "summary.json");
    char *final_text = json_dumps(r->progress, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_t *summary = collector_report_summary(r, job);
    char *summary_text =
        summary ? json_dumps(summary, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) : NULL;
    bf_err_t rc = BF_ENOMEM;
    if (final_path && summary_path && final_text && summary_text) {
        rc = bf_write_atomic(final_path, final_text, strlen(final_text), err);
        if (rc == BF_OK)
            rc = bf_write_atomic(summary_path, summary_text, strlen(summary_text), err);
    }
    json_decref(summary);
    free(final_path);
    free(summary_path);
    free(final_text);
    free(summary_text);
    return rc;
}
