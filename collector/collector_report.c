/*  collector/collector_report.c - one job's reports: the durable log
    results.jsonl, the derived results.csv and results_progress.json, and at
    the end results_final_<stamp>.json and summary.json with the statistics
    the notebook printed (numpy's linear-interpolation percentiles). The log
    is written first and is the only source of truth: every other file can be
    rebuilt from it, and is, whenever the directory is opened. JSON numbers
    are written with 17 significant digits so the log loses nothing. */

#include "collector_report.h"
#include "collector_html.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LOG (1u << 30) /* results.jsonl read back at open, bytes */
/* 15 significant digits: every decimal a worker wrote (such as the 0.1-dB
   thumbnail values) reads back as written, "-87.1" and not
   "-87.099999999999994". */
#define JSON_FLAGS (JSON_REAL_PRECISION(15))

struct collector_report {
    char *dir;
    int jsonl_fd, csv_fd;
    json_t *progress; /* {scene: result} */
    json_t *lite;     /* the same without thumbnails, for the JSON reports */
    json_t *ids;      /* {task_id: true}, the de-duplication set */
    json_t *all;      /* results in log order (shares the objects of progress) */
    char *final_name; /* results_final_<stamp>.json once written or found */
    bool broken;      /* a write failed half-way: close and open again */
    /* results_progress.json is rewritten whole: the next rewrite waits
       PROGRESS_SPACING times as long as the last one took, and at least
       PROGRESS_MIN_S, so the rewrites stay a bounded share of the
       collector's time instead of growing with the square of the job (a
       2,000-result file takes about 2 ms; at thousands of results a second
       a rewrite after every batch was the collector's largest cost, and
       spacing by the cost alone still gave it a fifth of a core). A job's
       end forces the last one. */
    bool progress_dirty;
    double progress_next_s;
    /* lite as the JSON reports print it, grown as results arrive: "{\n" +
       lite_text + "\n}" is json_dumps(lite, JSON_INDENT(2) | JSON_FLAGS)
       while lite_entries is lite's size, so a rewrite and the end of a job
       write the reports without dumping every result again (the dump of a
       2,000-result job was most of the collector's work at its end). A
       result that replaces a scene's earlier one makes the text stale
       (lite_entries no longer matches) until the next whole dump. */
    bf_buf_t lite_text;
    size_t lite_entries;
};

#define PROGRESS_SPACING 19  /* wait 19x the last rewrite: rewrites take <= 5 % */
#define PROGRESS_MIN_S   1.0 /* and at most one rewrite a second while results stream */

const char *const collector_report_csv_columns[] = {"scene",
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
                                                    "improvement_mean",
                                                    "initial_sinr_mean_db",
                                                    "optimized_sinr_mean_db",
                                                    "transmitters_initial",
                                                    "transmitters_optimized",
                                                    "optimum_on_bound"};

/* Where each column comes from in a result: a path of up to two keys. */
static const char *const csv_paths[COLLECTOR_REPORT_CSV_NCOLUMNS][2] = {
    {"scene", NULL},
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
    {"stats", "improvement_mean"},
    {"stats", "initial_sinr_mean"},
    {"stats", "optimized_sinr_mean"},
    {"transmitters", "initial"},
    {"transmitters", "optimized"},
    {"optimum_on_bound", NULL}};

/* ---- CSV ------------------------------------------------------------------------ */

/* RFC 4180: quote a field holding a comma, a quote or a line break, and
   double the quotes inside. A text cell that a spreadsheet would read as a
   formula (it begins with = + - @, a tab or a carriage return: scene names,
   reasons, hosts come from the network) is quoted with a ' in front, as
   OWASP's CSV-injection advice and spreadsheet-safe writers do: the cell
   shows as text. Numbers never come here (csv_real, integers). */
static void csv_field(bf_buf_t *b, const char *s)
{
    bool formula = s[0] && strchr("=+-@\t\r", s[0]);
    if (!formula && !strpbrk(s, ",\"\r\n")) {
        bf_buf_puts(b, s);
        return;
    }
    bf_buf_puts(b, formula ? "\"'" : "\"");
    for (const char *c = s; *c; c++) {
        if (*c == '"')
            bf_buf_put(b, "\"", 1);
        bf_buf_put(b, c, 1);
    }
    bf_buf_put(b, "\"", 1);
}

/* x to 12 significant digits, trailing zeros dropped (%g): what the data
   carries. The results come from single-precision sums and double
   reductions; digits past the 12th are rounding noise (79.10000000000001
   is written 79.1). results.jsonl keeps every bit. */
static void csv_real(bf_buf_t *b, double x)
{
    char num[40];
    if (!isfinite(x))
        return; /* an empty cell; JSON cannot carry these either */
    snprintf(num, sizeof num, "%.12g", x);
    bf_buf_puts(b, num);
}

static bool is_degrees(const char *column)
{
    size_t n = strlen(column);
    return n > 4 && !strcmp(column + n - 4, "_deg");
}

/* A result's transmitters (several: docs/protocol.md section 13) at their
   initial or optimized orientation (which) in one cell,
   "name:azimuth/tilt" separated by spaces, to 0.01 deg; empty for a
   result without the list. */
static void csv_transmitters(bf_buf_t *b, const json_t *list, const char *which)
{
    bf_buf_t cell = {0};
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *t = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(t, "name"));
        const json_t *o = json_object_get(t, which);
        double az = json_number_value(json_object_get(o, "azimuth_deg"));
        double tilt = json_number_value(json_object_get(o, "tilt_deg"));
        bf_buf_printf(&cell, "%s%s:%.12g/%.12g", i ? " " : "", name ? name : "?",
                      round(az * 100.0) / 100.0 + 0.0, round(tilt * 100.0) / 100.0 + 0.0);
    }
    if (cell.oom)
        b->oom = true;
    else if (cell.p)
        csv_field(b, cell.p);
    free(cell.p);
}

static void csv_row(bf_buf_t *b, const json_t *r)
{
    for (size_t c = 0; c < COLLECTOR_REPORT_CSV_NCOLUMNS; c++) {
        if (c)
            bf_buf_put(b, ",", 1);
        if (!strcmp(csv_paths[c][0], "transmitters")) {
            csv_transmitters(b, json_object_get(r, "transmitters"), csv_paths[c][1]);
            continue;
        }
        const json_t *v = json_object_get(r, csv_paths[c][0]);
        if (csv_paths[c][1])
            v = json_object_get(v, csv_paths[c][1]);
        char num[32];
        if (json_is_string(v)) {
            csv_field(b, json_string_value(v));
        } else if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
            bf_buf_puts(b, num);
        } else if (json_is_real(v) && is_degrees(collector_report_csv_columns[c])) {
            /* orientations to 0.01 deg, as the worker writes them (docs/radio.md):
               a computed -2.8e-16 is 0 */
            csv_real(b, round(json_real_value(v) * 100.0) / 100.0 + 0.0);
        } else if (json_is_real(v)) {
            csv_real(b, json_real_value(v));
        } else if (json_is_boolean(v)) {
            bf_buf_puts(b, json_is_true(v) ? "true" : "false");
        } else if (json_is_array(v)) { /* a list of names: "tilt_max;azimuth_min" */
            bf_buf_t cell = {0};
            for (size_t i = 0; i < json_array_size(v); i++) {
                const char *n = json_string_value(json_array_get(v, i));
                if (n)
                    bf_buf_printf(&cell, "%s%s", cell.p ? ";" : "", n);
            }
            if (cell.oom)
                b->oom = true;
            else if (cell.p)
                csv_field(b, cell.p);
            free(cell.p);
        }
    }
    bf_buf_put(b, "\n", 1);
}

static void csv_header(bf_buf_t *b)
{
    for (size_t c = 0; c < COLLECTOR_REPORT_CSV_NCOLUMNS; c++) {
        if (c)
            bf_buf_put(b, ",", 1);
        bf_buf_puts(b, collector_report_csv_columns[c]);
    }
    bf_buf_put(b, "\n", 1);
}

/* ---- open and recover --------------------------------------------------------- */

static char *path_in(const collector_report_t *r, const char *name)
{
    return bf_asprintf("%s/%s", r->dir, name);
}

static bf_err_t write_text(const collector_report_t *r, const char *name, const char *text,
                           char *err)
{
    char *path = path_in(r, name);
    bf_err_t rc = path ? bf_write_atomic(path, text, strlen(text), err) : BF_ENOMEM;
    free(path);
    return rc;
}

static bf_err_t write_json(const collector_report_t *r, const char *name, const json_t *doc,
                           char *err)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_FLAGS);
    bf_err_t rc = text ? write_text(r, name, text, err) : BF_ENOMEM;
    free(text);
    return rc;
}

static const char *task_of(const json_t *result)
{
    const char *id = json_string_value(json_object_get(result, "task_id"));
    return id && *id ? id : NULL;
}

/* Appends the compact JSON text s (n bytes, as json_dumps prints a value
   with JSON_COMPACT) to b laid out as JSON_INDENT(2) prints it at depth:
   a newline and two spaces a level after every opening bracket and comma
   and before every closing one, ": " between key and value, empty
   containers as they are. Strings (their escapes) and numbers are the same
   bytes in both layouts, so they are copied in runs. By hand: jansson
   prints a value only from its tree, and dumping a tree a second time for
   the other layout was a seventh of the collector's time per result. */
static void indent_compact(bf_buf_t *b, const char *s, size_t n, int depth)
{
    static const char spaces[] = "                                ";
    size_t run = 0; /* start of the bytes not yet copied */
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = false;
            continue;
        }
        if (ch == '"') {
            in_str = true;
            continue;
        }
        bool open = ch == '{' || ch == '[', close = ch == '}' || ch == ']';
        if (open && i + 1 < n && s[i + 1] == (ch == '{' ? '}' : ']')) {
            i++; /* {} and [] stay as they are */
            continue;
        }
        if (!open && !close && ch != ',' && ch != ':')
            continue;
        bf_buf_put(b, s + run, i - run + (close ? 0 : 1));
        run = close ? i : i + 1;
        if (ch == ':') {
            bf_buf_put(b, " ", 1);
            continue;
        }
        depth += open ? 1 : close ? -1 : 0;
        bf_buf_put(b, "\n", 1);
        for (size_t left = depth > 0 ? 2 * (size_t)depth : 0; left > 0;) {
            size_t k = left < sizeof spaces - 1 ? left : sizeof spaces - 1;
            bf_buf_put(b, spaces, k);
            left -= k;
        }
    }
    bf_buf_put(b, s + run, n - run);
}

/* Appends scene's entry to lite_text, as the whole dump of {scene: lite}
   prints it less its "{\n" and "\n}": the key, then lite's compact text
   (compact, n bytes: the log's line where lite is the result; NULL: dumped
   here) laid out by indent_compact. */
static void lite_text_add(collector_report_t *r, const char *scene, json_t *lite,
                          const char *compact, size_t n)
{
    json_t *key = json_string(scene);
    char *key_text = key ? json_dumps(key, JSON_ENCODE_ANY | JSON_FLAGS) : NULL;
    char *own = compact ? NULL : json_dumps(lite, JSON_COMPACT | JSON_FLAGS);
    json_decref(key);
    if (!compact) {
        compact = own;
        n = own ? strlen(own) : 0;
    }
    if (key_text && compact) {
        if (r->lite_entries > 0)
            bf_buf_put(&r->lite_text, ",\n", 2);
        bf_buf_put(&r->lite_text, "  ", 2);
        bf_buf_puts(&r->lite_text, key_text);
        bf_buf_put(&r->lite_text, ": ", 2);
        indent_compact(&r->lite_text, compact, n, 1);
    }
    /* stale on failure: the next write dumps lite whole */
    r->lite_entries = key_text && compact && !r->lite_text.oom ? r->lite_entries + 1 : SIZE_MAX;
    free(key_text);
    free(own);
}

/* Keeps result (line: its compact text in the log, n bytes, or NULL). */
static bf_err_t remember(collector_report_t *r, json_t *result, const char *line, size_t n)
{
    const char *id = task_of(result);
    const char *scene = json_string_value(json_object_get(result, "scene"));
    if (!scene || !*scene)
        scene = "?";
    /* The {scene: result} of results_progress.json and results_final leaves
       out the radio-map thumbnails (up to 2 x 64 x 64 numbers each: they are
       in results.jsonl and report.html); a shallow copy shares the rest. */
    bool thumbs = json_object_get(result, "thumbnails") != NULL;
    json_t *lite = thumbs ? json_copy(result) : json_incref(result);
    if (!lite)
        return BF_ENOMEM;
    json_object_del(lite, "thumbnails"); /* a result without them is shared as it is */
    bool current = r->lite_entries == json_object_size(r->lite) && !json_object_get(r->lite, scene);
    if (current) /* the log's line is lite's text where lite is the result */
        lite_text_add(r, scene, lite, thumbs ? NULL : line, n);
    else
        r->lite_entries = SIZE_MAX; /* a scene's entry replaced: stale until a whole dump */
    if (json_object_set_new(r->lite, scene, lite) != 0 || /* takes lite, even on failure */
        (id && json_object_set(r->ids, id, json_true()) != 0) ||
        json_object_set(r->progress, scene, result) != 0 || json_array_append(r->all, result) != 0)
        return BF_ENOMEM;
    return BF_OK;
}

/* The {scene: result} of results_progress.json and results_final (free
   it): from lite_text while it is current, else dumped whole, which makes
   lite_text current again. NULL out of memory. */
static char *by_scene_text(collector_report_t *r)
{
    size_t n = json_object_size(r->lite);
    if (r->lite_entries == n && n == 0)
        return bf_strdup("{}");
    if (r->lite_entries == n) { /* copied, not formatted: megabytes through printf took 8 ms */
        size_t len = r->lite_text.len;
        char *text = len < SIZE_MAX - 5 ? malloc(len + 5) : NULL;
        if (text) {
            memcpy(text, "{\n", 2);
            memcpy(text + 2, r->lite_text.p, len);
            memcpy(text + 2 + len, "\n}", 3); /* with the NUL */
        }
        return text;
    }
    char *text = json_dumps(r->lite, JSON_INDENT(2) | JSON_FLAGS);
    size_t len = text ? strlen(text) : 0;
    free(r->lite_text.p);
    r->lite_text = (bf_buf_t){0};
    r->lite_entries = text && n == 0 ? 0 : SIZE_MAX;
    if (n > 0 && len >= 4) {
        bf_buf_put(&r->lite_text, text + 2, len - 4);
        if (!r->lite_text.oom)
            r->lite_entries = n;
    }
    return text;
}

static bf_err_t write_by_scene(collector_report_t *r, const char *name, char *err)
{
    char *text = by_scene_text(r);
    bf_err_t rc = text ? write_text(r, name, text, err) : bf_fail(err, BF_ENOMEM, "out of memory");
    free(text);
    return rc;
}

static bool is_report_file(const char *n)
{
    return !strcmp(n, "results.jsonl") || !strcmp(n, "results.csv") ||
           !strcmp(n, "results_progress.json") || !strcmp(n, "summary.json") ||
           !strcmp(n, "report.html") || !strcmp(n, "thumbnails") ||
           !strncmp(n, "results_final_", 14);
}

/* Moves the reports of an earlier job out of the way, into a fresh
   dir/previous-<job id>[-N]/, so a new job that reuses an output directory
   starts with empty reports and nothing of the old one is lost. */
static bf_err_t set_aside(const char *dir, const char *old_job, char *err)
{
    const char *tag = bf_safe_name(old_job) ? old_job : "job";
    char *dest = NULL;
    for (int n = 1; n < 1000 && !dest; n++) {
        dest = n == 1 ? bf_asprintf("%s/previous-%s", dir, tag)
                      : bf_asprintf("%s/previous-%s-%d", dir, tag, n);
        if (!dest)
            return BF_ENOMEM;
        struct stat st;
        if (lstat(dest, &st) == 0) {
            free(dest);
            dest = NULL;
        }
    }
    if (!dest)
        return bf_fail(err, BF_EEXIST, "%s: too many previous-%s directories", dir, tag);
    bf_err_t rc = bf_mkdir_p(dest, err);
    DIR *d = rc == BF_OK ? opendir(dir) : NULL;
    if (rc == BF_OK && !d)
        rc = bf_fail(err, BF_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while (d && rc == BF_OK && (e = readdir(d))) {
        if (!is_report_file(e->d_name))
            continue;
        char *from = bf_asprintf("%s/%s", dir, e->d_name);
        char *to = bf_asprintf("%s/%s", dest, e->d_name);
        if (!from || !to)
            rc = BF_ENOMEM;
        else if (rename(from, to) != 0)
            rc = bf_fail(err, errno == EROFS || errno == EACCES ? BF_EPERM : BF_EIO,
                         "%s: cannot move the earlier job's reports aside: %s", from,
                         strerror(errno));
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

/* The job the log at text belongs to (from its first complete line), or "". */
static void log_job(const char *text, size_t len, char *out, size_t outlen)
{
    out[0] = '\0';
    const char *nl = memchr(text, '\n', len);
    if (!nl)
        return;
    json_t *first = json_loadb(text, (size_t)(nl - text), 0, NULL);
    const char *id = json_string_value(json_object_get(first, "job_id"));
    if (id)
        bf_strlcpy(out, id, outlen);
    json_decref(first);
}

/* Replays the log into r; returns the length of its complete lines. */
static bf_err_t replay(collector_report_t *r, const char *path, const char *text, size_t len,
                       size_t *good)
{
    *good = 0;
    size_t skipped = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        if (!nl)
            break;
        json_error_t jerr;
        json_t *res = json_loadb(text + at, (size_t)(nl - (text + at)), 0, &jerr);
        if (json_is_object(res)) {
            const char *id = task_of(res);
            bf_err_t rc = id && collector_report_has(r, id) ? BF_OK : remember(r, res, NULL, 0);
            if (rc != BF_OK) {
                json_decref(res);
                return rc;
            }
        } else if (nl > text + at) {
            /* Only a bug or a damaged disk gets here: keep going, say so. */
            if (skipped++ < 5)
                bf_warn("%s: skipping the line at byte %zu: %s", path, at,
                        res ? "not an object" : jerr.text);
        }
        json_decref(res);
        at = (size_t)(nl - text) + 1;
        *good = at;
    }
    return BF_OK;
}

bf_err_t collector_report_open(const char *dir, const char *job_id, collector_report_t **out,
                               char *err)
{
    *out = NULL;
    collector_report_t *r = calloc(1, sizeof *r);
    if (!r)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    r->jsonl_fd = r->csv_fd = -1;
    r->dir = bf_strdup(dir);
    r->progress = json_object();
    r->lite = json_object();
    r->ids = json_object();
    r->all = json_array();
    bf_err_t rc = BF_OK;
    char *jsonl = NULL, *csv = NULL, *text = NULL;
    bf_buf_t b = {0};
    if (!r->dir || !r->progress || !r->lite || !r->ids || !r->all) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = bf_mkdir_p(dir, err)) != BF_OK)
        goto fail;
    jsonl = path_in(r, "results.jsonl");
    csv = path_in(r, "results.csv");
    if (!jsonl || !csv) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    size_t len = 0;
    rc = bf_read_file(jsonl, MAX_LOG, &text, &len, err);
    if (rc == BF_ENOENT) {
        rc = BF_OK;
        len = 0;
    } else if (rc != BF_OK) {
        goto fail;
    }
    char old[128];
    log_job(text ? text : "", len, old, sizeof old);
    if (old[0] && job_id && strcmp(old, job_id) != 0) {
        /* the log of another job: set its reports aside and start anew */
        if ((rc = set_aside(dir, old, err)) != BF_OK)
            goto fail;
        len = 0;
    }
    /* A line without its newline was torn by a crash and never acknowledged:
       cut it off. */
    size_t good = 0;
    if ((rc = replay(r, jsonl, text ? text : "", len, &good)) != BF_OK)
        goto fail;
    if (good < len) {
        bf_warn("%s: cutting a torn last line (%zu bytes)", jsonl, len - good);
        if (truncate(jsonl, (off_t)good) != 0) {
            rc = bf_fail(err, errno == EROFS || errno == EACCES ? BF_EPERM : BF_EIO,
                         "%s: truncate: %s", jsonl, strerror(errno));
            goto fail;
        }
    }
    /* The derived files, rewritten from the log. */
    csv_header(&b);
    size_t i;
    json_t *res;
    json_array_foreach(r->all, i, res)
    {
        csv_row(&b, res);
    }
    if (b.oom) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = bf_write_atomic(csv, b.p, b.len, err)) != BF_OK ||
        (rc = write_by_scene(r, "results_progress.json", err)) != BF_OK)
        goto fail;
    r->jsonl_fd = open(jsonl, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (r->jsonl_fd >= 0)
        r->csv_fd = open(csv, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (r->jsonl_fd < 0 || r->csv_fd < 0) {
        rc = bf_fail(err,
                     errno == ENOSPC                     ? BF_ENOSPC
                     : errno == EROFS || errno == EACCES ? BF_EPERM
                                                         : BF_EIO,
                     "%s: %s", dir, strerror(errno));
        goto fail;
    }
    /* An earlier results_final_* of this job is rewritten, not doubled. */
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (!strncmp(e->d_name, "results_final_", 14) && n > 5 &&
            !strcmp(e->d_name + n - 5, ".json")) {
            free(r->final_name);
            r->final_name = bf_strdup(e->d_name);
        }
    }
    if (d)
        closedir(d);
    free(b.p);
    free(text);
    free(jsonl);
    free(csv);
    *out = r;
    return BF_OK;
fail:
    free(b.p);
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
    json_decref(r->lite);
    free(r->lite_text.p);
    json_decref(r->ids);
    json_decref(r->all);
    free(r->dir);
    free(r->final_name);
    free(r);
    *self = NULL;
}

const char *collector_report_dir(const collector_report_t *r)
{
    return r->dir;
}

bool collector_report_has(const collector_report_t *r, const char *task_id)
{
    return task_id && json_object_get(r->ids, task_id) != NULL;
}

size_t collector_report_count(const collector_report_t *r)
{
    return json_array_size(r->all);
}

/* Drops from results what is already in the log or repeated in the batch. */
static bf_err_t dedup(const collector_report_t *r, json_t *results, char *err)
{
    json_t *seen = json_object();
    if (!seen)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    bf_err_t rc = BF_OK;
    for (size_t i = 0; i < json_array_size(results);) {
        json_t *res = json_array_get(results, i);
        const char *id = task_of(res);
        if (!json_is_object(res) || !id) {
            rc = bf_fail(err, BF_EINVAL, "a result without a task_id");
            break;
        }
        if (collector_report_has(r, id) || json_object_get(seen, id)) {
            json_array_remove(results, i);
            continue;
        }
        if (json_object_set(seen, id, json_true()) != 0) {
            rc = bf_fail(err, BF_ENOMEM, "out of memory");
            break;
        }
        i++;
    }
    json_decref(seen);
    return rc;
}

bf_err_t collector_report_flush(collector_report_t *r, bool force, char *err)
{
    if (r->broken)
        return bf_fail(err, BF_ESTATE, "%s: an earlier write failed; open the report again",
                       r->dir);
    if (!r->progress_dirty || (!force && bf_mono_s() < r->progress_next_s))
        return BF_OK;
    double t0 = bf_mono_s();
    bf_err_t rc = write_by_scene(r, "results_progress.json", err);
    if (rc != BF_OK) {
        r->broken = true; /* an open rebuilds it from the log */
        return rc;
    }
    double t1 = bf_mono_s();
    r->progress_dirty = false;
    double wait = PROGRESS_SPACING * (t1 - t0);
    r->progress_next_s = t1 + (wait > PROGRESS_MIN_S ? wait : PROGRESS_MIN_S);
    return BF_OK;
}

bf_err_t collector_report_append(collector_report_t *r, json_t *results, char *err)
{
    if (r->broken)
        return bf_fail(err, BF_ESTATE, "%s: an earlier write failed; open the report again",
                       r->dir);
    if (!json_is_array(results))
        return bf_fail(err, BF_EINVAL, "results: not an array");
    bf_err_t rc = dedup(r, results, err);
    if (rc != BF_OK || json_array_size(results) == 0)
        return rc;
    bf_buf_t lines = {0}, rows = {0};
    size_t i, nres = json_array_size(results);
    size_t *ends = calloc(nres, sizeof *ends); /* where each result's line ends */
    json_t *res;
    json_array_foreach(results, i, res)
    {
        char *line = ends ? json_dumps(res, JSON_COMPACT | JSON_FLAGS) : NULL;
        if (!line) {
            lines.oom = true;
            break;
        }
        bf_buf_puts(&lines, line);
        ends[i] = lines.len;
        bf_buf_put(&lines, "\n", 1);
        free(line);
        csv_row(&rows, res);
    }
    if (lines.oom || rows.oom) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto done;
    }
    /* The log first: once it holds a line, an open can rebuild the rest. A
       failed append may have left part of a line: take it back if we can
       (the next open cuts it off if we cannot). */
    struct stat st;
    off_t before = fstat(r->jsonl_fd, &st) == 0 ? st.st_size : -1;
    r->broken = true;
    if ((rc = bf_append_sync(r->jsonl_fd, lines.p, lines.len, err)) != BF_OK) {
        if (before >= 0 && ftruncate(r->jsonl_fd, before) != 0)
            bf_debug("%s: cannot take back a partial append: %s", r->dir, strerror(errno));
        goto done;
    }
    json_array_foreach(results, i, res)
    {
        size_t start = i ? ends[i - 1] + 1 : 0;
        if ((rc = remember(r, res, lines.p + start, ends[i] - start)) != BF_OK) {
            bf_fail(err, rc, "out of memory");
            goto done;
        }
    }
    /* The CSV is derived: an open rebuilds it from the log, so a crash
       cannot leave it behind what was acknowledged. It is made durable
       once, when the job ends (collector_report_finish), not per batch. */
    if ((rc = bf_append(r->csv_fd, rows.p, rows.len, err)) != BF_OK)
        goto done;
    r->broken = false;
    r->progress_dirty = true;
    rc = collector_report_flush(r, false, err);
done:
    free(ends);
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

typedef struct {
    double *v;
    size_t n, cap;
} vec_t;

static bool vec_push(vec_t *a, double x)
{
    if (!bf_grow(&a->v, &a->cap, a->n + 1, sizeof *a->v, 256))
        return false;
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

/* Appends the numbers of the JSON array powers to a, clipped to the trusted
   dBm range; counts the clipped ones in *clipped. */
static bool push_powers(vec_t *a, const json_t *powers, json_int_t *clipped)
{
    bool ok = true;
    size_t k;
    const json_t *v;
    json_array_foreach(powers, k, v)
    {
        if (!json_is_number(v))
            continue;
        bool out = false;
        ok &= vec_push(
            a, collector_clip(json_number_value(v), COLLECTOR_DBM_MIN, COLLECTOR_DBM_MAX, &out));
        *clipped += out;
    }
    return ok;
}

/* mean, median, p10 of a (sorted in place). */
static void dist(vec_t *a, double out[3])
{
    out[0] = mean(a);
    if (a->n) /* qsort's pointer must not be NULL, even for no elements */
        qsort(a->v, a->n, sizeof *a->v, cmp_double);
    out[1] = bf_percentile(a->v, a->n, 50);
    out[2] = bf_percentile(a->v, a->n, 10);
}

static json_t *dist_json(const double d[3])
{
    return json_pack("{s:o, s:o, s:o}", "mean", num(d[0]), "median", num(d[1]), "p10", num(d[2]));
}

/* Sums and counts of elapsed_time per "host/gpu_id", in first-seen order. */
static bool add_time(json_t *per_gpu, const json_t *res)
{
    char key[300];
    const char *host = json_string_value(json_object_get(res, "host"));
    const json_t *gpu = json_object_get(res, "gpu_id");
    snprintf(key, sizeof key, "%s/%lld", host ? host : "?",
             json_is_integer(gpu) ? (long long)json_integer_value(gpu) : -1LL);
    const json_t *t = json_object_get(res, "elapsed_time");
    if (!json_is_number(t))
        return true;
    double secs = collector_clip(json_number_value(t), 0, COLLECTOR_TIME_MAX_S, NULL);
    json_t *acc = json_object_get(per_gpu, key);
    if (!acc) {
        acc = json_pack("[f, i]", 0.0, 0);
        if (!acc || json_object_set_new(per_gpu, key, acc) != 0)
            return false;
    }
    return json_real_set(json_array_get(acc, 0), json_real_value(json_array_get(acc, 0)) + secs) ==
               0 &&
           json_integer_set(json_array_get(acc, 1),
                            json_integer_value(json_array_get(acc, 1)) + 1) == 0;
}

json_t *collector_report_summary(const collector_report_t *r, const json_t *job)
{
    static const char *const statuses[] = {"success", "failed", "error", "cancelled"};
    json_int_t counts[4] = {0}, clipped_cells = 0;
    vec_t imp = {0}, init = {0}, opt = {0};
    json_t *per_gpu = json_object(), *time_per_gpu = json_object(), *doc = NULL;
    bool ok = per_gpu && time_per_gpu;
    const char *scene;
    json_t *res;
    /* Over {scene: result}, like results_final and the notebook. */
    json_object_foreach(r->progress, scene, res)
    {
        const char *st = json_string_value(json_object_get(res, "status"));
        for (int k = 0; k < 4; k++)
            if (st && !strcmp(st, statuses[k]))
                counts[k]++;
        if (!st || strcmp(st, "success") != 0)
            continue;
        json_t *im = json_object_get(json_object_get(res, "stats"), "improvement_mean");
        if (json_is_number(im))
            ok &= vec_push(&imp, collector_clip(json_number_value(im), -COLLECTOR_DB_SPAN,
                                                COLLECTOR_DB_SPAN, NULL));
        ok &= push_powers(&init, json_object_get(res, "zone_power_initial"), &clipped_cells);
        ok &= push_powers(&opt, json_object_get(res, "zone_power_optimized"), &clipped_cells);
        ok &= add_time(per_gpu, res);
    }
    const char *key;
    json_t *acc;
    json_object_foreach(per_gpu, key, acc)
    {
        json_int_t n = json_integer_value(json_array_get(acc, 1));
        ok &= json_object_set_new(
                  time_per_gpu, key,
                  num(n ? json_real_value(json_array_get(acc, 0)) / (double)n : NAN)) == 0;
    }
    double imp_mean = mean(&imp);
    if (imp.n)
        qsort(imp.v, imp.n, sizeof *imp.v, cmp_double);
    double di[3], dop[3];
    dist(&init, di);
    dist(&opt, dop);
    double dimp[3] = {dop[0] - di[0], dop[1] - di[1], dop[2] - di[2]};
    double total_time = NAN;
    const json_t *sub = json_object_get(job, "submitted_ms");
    const json_t *fin = json_object_get(job, "finished_ms");
    if (json_is_integer(sub) && json_is_integer(fin) &&
        json_integer_value(fin) >= json_integer_value(sub))
        total_time = /* in double: the difference of two int64 may not fit one */
            ((double)json_integer_value(fin) - (double)json_integer_value(sub)) / 1000.0;
    json_int_t total = counts[0] + counts[1] + counts[2] + counts[3];
    if (ok)
        doc = json_pack(
            "{s:O, s:{s:I, s:I, s:I, s:I, s:I}, s:o, s:{s:o, s:o, s:o, s:o}, s:{s:o, s:o, s:o}, "
            "s:O, s:I, s:I}",
            "job", job ? (json_t *)job : json_null(), "counts", "success", counts[0], "failed",
            counts[1], "error", counts[2], "cancelled", counts[3], "total", total, "total_time_s",
            num(total_time), "improvement", "mean", num(imp_mean), "min",
            num(imp.n ? imp.v[0] : NAN), "max", num(imp.n ? imp.v[imp.n - 1] : NAN), "median",
            num(bf_percentile(imp.v, imp.n, 50)), "aggregate", "initial", dist_json(di),
            "optimized", dist_json(dop), "improvement", dist_json(dimp), "time_per_gpu",
            time_per_gpu, "zone_cells", (json_int_t)init.n, "zone_cells_clipped", clipped_cells);
    json_decref(per_gpu);
    json_decref(time_per_gpu);
    free(imp.v);
    free(init.v);
    free(opt.v);
    return doc;
}

bf_err_t collector_report_finish(collector_report_t *r, const json_t *job, char *err)
{
    if (r->broken)
        return bf_fail(err, BF_ESTATE, "%s: an earlier write failed; open the report again",
                       r->dir);
    /* results_progress.json and results_final hold the same {scene:
       result}: made once for both (for a big job a whole dump takes a good
       part of a second; by_scene_text mostly has it already) */
    char *by_scene = by_scene_text(r);
    if (!by_scene)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    if (r->progress_dirty) {
        bf_err_t prc = write_text(r, "results_progress.json", by_scene, err);
        if (prc != BF_OK) {
            free(by_scene);
            r->broken = true; /* an open rebuilds it from the log */
            return prc;
        }
        r->progress_dirty = false;
    }
    /* the rows appended since the open, durable before JOB_DONE is acked */
    if (fdatasync(r->csv_fd) != 0) {
        free(by_scene);
        r->broken = true;
        return bf_fail(err, errno == ENOSPC ? BF_ENOSPC : BF_EIO, "%s/results.csv: fdatasync: %s",
                       r->dir, strerror(errno));
    }
    if (!r->final_name) {
        char stamp[16];
        bf_timestamp(stamp);
        r->final_name = bf_asprintf("results_final_%s.json", stamp);
        if (!r->final_name) {
            free(by_scene);
            return bf_fail(err, BF_ENOMEM, "out of memory");
        }
    }
    json_t *summary = collector_report_summary(r, job);
    bf_err_t rc = summary ? write_text(r, r->final_name, by_scene, err)
                          : bf_fail(err, BF_ENOMEM, "out of memory");
    free(by_scene);
    if (rc == BF_OK)
        rc = write_json(r, "summary.json", summary, err);
    if (rc == BF_OK) {
        /* report.html is for people: without it the job's reports are
           still complete, so a failure is a warning, not a failed job */
        char herr[BF_ERRLEN] = "";
        if (collector_html_write(r->dir, summary, r->progress, herr) != BF_OK)
            bf_warn("%s: report.html not written: %s", r->dir, herr);
    }
    json_decref(summary);
    return rc;
}
