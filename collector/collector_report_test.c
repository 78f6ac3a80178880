/*  collector/collector_report_test.c - the report writers as the collector
    uses them: results appended and readable in every file (JSON with jansson,
    CSV with a strict RFC 4180 reader below), duplicates kept out, a torn log
    tail cut off and the derived files rebuilt after a "crash", a write that
    fails half-way repaired by opening again, the summary's numbers against
    values computed by hand (numpy's linear-interpolation percentile), CSV
    quoting, and a new job in a used directory. */

#include "collector.h"
#include "collector_testkit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/bf_check.h"
#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

/* ---- a strict RFC 4180 reader: rows of fields ----------------------------------- */

typedef struct {
    char ***rows; /* rows[i][j], NULL-terminated per row */
    size_t nrows;
    size_t *ncols;
} csv_t;

static void csv_free(csv_t *t)
{
    for (size_t i = 0; i < t->nrows; i++) {
        for (size_t j = 0; j < t->ncols[i]; j++)
            free(t->rows[i][j]);
        free(t->rows[i]);
    }
    free(t->rows);
    free(t->ncols);
    memset(t, 0, sizeof *t);
}

/* Parses text; false for anything malformed (a stray quote, an unterminated
   quoted field, a last row without its line break). */
static bool csv_parse(const char *text, csv_t *t)
{
    memset(t, 0, sizeof *t);
    const char *p = text;
    while (*p) {
        char **row = NULL;
        size_t ncol = 0;
        for (;;) {
            size_t cap = strlen(p) + 1, n = 0;
            char *f = malloc(cap);
            if (*p == '"') {
                for (p++;; p++) {
                    if (!*p) {
                        free(f);
                        free(row);
                        return false;
                    }
                    if (*p == '"') {
                        if (p[1] != '"')
                            break;
                        p++;
                    }
                    f[n++] = *p;
                }
                p++;
            } else {
                while (*p && *p != ',' && *p != '\n' && *p != '"')
                    f[n++] = *p++;
                if (*p == '"') {
                    free(f);
                    free(row);
                    return false;
                }
            }
            f[n] = '\0';
            row = realloc(row, (ncol + 1) * sizeof *row);
            row[ncol++] = f;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p != '\n') {
                for (size_t j = 0; j < ncol; j++)
                    free(row[j]);
                free(row);
                return false;
            }
            p++;
            break;
        }
        t->rows = realloc(t->rows, (t->nrows + 1) * sizeof *t->rows);
        t->ncols = realloc(t->ncols, (t->nrows + 1) * sizeof *t->ncols);
        t->rows[t->nrows] = row;
        t->ncols[t->nrows++] = ncol;
    }
    return true;
}

/* The cell of column name in row i (row 0 is the header), or NULL. */
static const char *cell(const csv_t *t, size_t i, const char *name)
{
    for (size_t j = 0; j < t->ncols[0]; j++)
        if (!strcmp(t->rows[0][j], name))
            return i < t->nrows && j < t->ncols[i] ? t->rows[i][j] : NULL;
    return NULL;
}

/* ---- helpers -------------------------------------------------------------------- */

static const char *const REASON = "zone, \"quoted\"\nline two";

/* A boresight result: zone powers {-90 - i, -80} initial, + imp optimized. */
static json_t *result(const char *job, int i, const char *status, double imp)
{
    char scene[32], task[40];
    snprintf(scene, sizeof scene, "s%02d", i);
    snprintf(task, sizeof task, "task%02d", i);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:i, s:f, "
                     "s:{s:f, s:i, s:f}, s:{s:f, s:f}, s:{s:f, s:f}, s:[f, f], s:[f, f]}",
                     "job_id", job, "task_id", task, "scene", scene, "status", status, "reason",
                     REASON, "gpu_id", (json_int_t)(i % 2), "host", "h", "device", "cpu", "attempt",
                     1, "elapsed_time", 1.0 + i, "stats", "improvement_mean", imp, "zone_cells", 2,
                     "initial_mean", -85.0 - i / 2.0, "boresight_initial", "azimuth_deg", 0.0,
                     "tilt_deg", 0.0, "boresight_optimized", "azimuth_deg", 12.5, "tilt_deg", 3.25,
                     "zone_power_initial", -90.0 - i, -80.0, "zone_power_optimized",
                     -90.0 - i + imp, -80.0 + imp);
}

/* An exec result: no stats, no boresight. */
static json_t *exec_result(const char *job, int i, const char *status)
{
    char scene[32], task[40];
    snprintf(scene, sizeof scene, "x%02d", i);
    snprintf(task, sizeof task, "xtask%02d", i);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:f}", "job_id", job, "task_id",
                     task, "scene", scene, "status", status, "reason", "", "gpu_id", (json_int_t)-1,
                     "host", "h2", "attempt", 3, "elapsed_time", 0.1);
}

static json_t *load(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return json_load_file(path, 0, NULL);
}

/* Is dir/name byte for byte what jansson prints for what it holds (the
   collector's {scene: result} text, grown result by result, against a
   whole dump)? */
static bool as_dumped(const char *dir, const char *name)
{
    char *text = slurp(dir, name);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    char *again = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
    bool same = again && !strcmp(text, again);
    if (!same)
        fprintf(stderr, "%s/%s differs from its dump:\n%s\n---\n%s\n", dir, name,
                text ? text : "(none)", again ? again : "(none)");
    free(text);
    free(again);
    json_decref(doc);
    return same;
}

static bool read_csv(const char *dir, csv_t *t)
{
    char *text = slurp(dir, "results.csv");
    bool ok = text && csv_parse(text, t);
    free(text);
    return ok;
}

/* ---- the tests ------------------------------------------------------------------ */

static void test_append_and_files(const char *dir)
{
    char err[BF_ERRLEN];
    collector_report_t *r = NULL;
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    CHECK(r && !strcmp(collector_report_dir(r), dir));
    json_t *batch = json_array();
    json_array_append_new(batch, result("jobA", 0, "success", 2.0));
    /* s01 has two transmitters and SINR (docs/protocol.md section 13) */
    json_t *multi = result("jobA", 1, "success", 4.0);
    json_object_set_new(multi, "transmitters",
                        json_pack("[{s:s, s:b, s:{s:f, s:f}, s:{s:f, s:f}}, "
                                  "{s:s, s:b, s:{s:f, s:f}, s:{s:f, s:f}}]",
                                  "name", "a", "movable", 1, "initial", "azimuth_deg", 0.0,
                                  "tilt_deg", 0.0, "optimized", "azimuth_deg", 12.5, "tilt_deg",
                                  3.25, "name", "b-2", "movable", 0, "initial", "azimuth_deg",
                                  240.123, "tilt_deg", -2.0, "optimized", "azimuth_deg", 240.123,
                                  "tilt_deg", -2.0));
    json_object_set_new(json_object_get(multi, "stats"), "optimized_sinr_mean", json_real(12.75));
    json_object_set_new(multi, "optimum_on_bound", json_pack("[s, s]", "azimuth_max", "tilt_max"));
    json_array_append_new(batch, multi);
    json_array_append_new(batch, result("jobA", 2, "failed", 0.0));
    json_array_append_new(batch, result("jobA", 1, "success", 4.0)); /* repeated in the batch */
    CHECK(collector_report_append(r, batch, err) == BF_OK);
    CHECK(json_array_size(batch) == 3); /* what was written */
    json_decref(batch);
    CHECK(collector_report_has(r, "task01") && !collector_report_has(r, "task09"));
    CHECK(collector_report_count(r) == 3);

    /* a duplicate of a logged result is not written again */
    batch = json_array();
    json_array_append_new(batch, result("jobA", 0, "success", 2.0));
    json_array_append_new(batch, exec_result("jobA", 0, "error"));
    CHECK(collector_report_append(r, batch, err) == BF_OK);
    CHECK(json_array_size(batch) == 1);
    json_decref(batch);
    CHECK(collector_report_count(r) == 4);

    /* a result without a task id is refused, nothing written */
    batch = json_pack("[{s:s}]", "scene", "nope");
    CHECK(collector_report_append(r, batch, err) == BF_EINVAL);
    json_decref(batch);
    CHECK(collector_report_count(r) == 4);

    /* every file parses and holds each result once */
    CHECK(jsonl_lines(dir) == 4);
    csv_t t;
    CHECK(read_csv(dir, &t));
    CHECK(t.nrows == 5);
    for (size_t i = 0; i < t.nrows; i++)
        CHECK(t.ncols[i] == COLLECTOR_REPORT_CSV_NCOLUMNS);
    static const char head[] =
        "scene,status,reason,host,gpu_id,device,attempt,elapsed_time,initial_azimuth_deg,"
        "initial_tilt_deg,optimized_azimuth_deg,optimized_tilt_deg,zone_cells,initial_mean_dbm,"
        "initial_median_dbm,initial_p10_dbm,initial_p90_dbm,optimized_mean_dbm,optimized_median_"
        "dbm,optimized_p10_dbm,optimized_p90_dbm,improvement_mean,initial_sinr_mean_db,"
        "optimized_sinr_mean_db,transmitters_initial,transmitters_optimized,optimum_on_bound\n";
    char *text = slurp(dir, "results.csv");
    CHECK(text && !strncmp(text, head, strlen(head)));
    free(text);
    if (t.nrows == 5) {
        /* RFC 4180: the reason with a comma, quotes and a line break survives */
        CHECK(!strcmp(cell(&t, 1, "reason"), REASON));
        CHECK(!strcmp(cell(&t, 1, "scene"), "s00"));
        CHECK(!strcmp(cell(&t, 2, "optimized_azimuth_deg"), "12.5"));
        CHECK(!strcmp(cell(&t, 2, "optimized_tilt_deg"), "3.25"));
        CHECK(!strcmp(cell(&t, 2, "transmitters_initial"), "a:0/0 b-2:240.12/-2"));
        CHECK(!strcmp(cell(&t, 2, "transmitters_optimized"), "a:12.5/3.25 b-2:240.12/-2"));
        CHECK(!strcmp(cell(&t, 2, "optimized_sinr_mean_db"), "12.75"));
        CHECK(!strcmp(cell(&t, 2, "optimum_on_bound"), "azimuth_max;tilt_max") &&
              !strcmp(cell(&t, 1, "optimum_on_bound"), ""));
        CHECK(!strcmp(cell(&t, 2, "initial_sinr_mean_db"), "") &&
              !strcmp(cell(&t, 1, "transmitters_optimized"), ""));
        CHECK(!strcmp(cell(&t, 2, "initial_mean_dbm"), "-85.5"));
        CHECK(!strcmp(cell(&t, 2, "elapsed_time"), "2"));
        CHECK(!strcmp(cell(&t, 2, "gpu_id"), "1"));
        CHECK(!strcmp(cell(&t, 3, "status"), "failed"));
        /* the exec result: fleet fields set, the rest empty */
        CHECK(!strcmp(cell(&t, 4, "scene"), "x00") && !strcmp(cell(&t, 4, "gpu_id"), "-1"));
        CHECK(!strcmp(cell(&t, 4, "elapsed_time"), "0.1"));
        CHECK(!strcmp(cell(&t, 4, "zone_cells"), "") &&
              !strcmp(cell(&t, 4, "improvement_mean"), ""));
        CHECK(!strcmp(cell(&t, 4, "initial_azimuth_deg"), ""));
    }
    csv_free(&t);
    CHECK(collector_report_flush(r, true, err) == BF_OK); /* appends may leave it for later */
    json_t *progress = load(dir, "results_progress.json");
    CHECK(json_object_size(progress) == 4 && json_object_get(progress, "s02") &&
          json_object_get(progress, "x00"));
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(progress, "s00"), "reason")),
                  REASON));
    json_decref(progress);
    collector_report_close(&r);
    CHECK(r == NULL);
    collector_report_close(&r); /* idempotent */
}

static void test_summary(const char *dir)
{
    char err[BF_ERRLEN];
    collector_report_t *r = NULL;
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    CHECK(r && collector_report_count(r) == 4);
    if (!r)
        return;
    json_t *batch = json_array();
    json_array_append_new(batch, result("jobA", 3, "success", 3.5));
    json_array_append_new(batch, result("jobA", 4, "cancelled", 0.0));
    CHECK(collector_report_append(r, batch, err) == BF_OK);
    json_decref(batch);
    json_t *job = json_pack("{s:s, s:s, s:I, s:I, s:s}", "id", "jobA", "name", "a", "submitted_ms",
                            (json_int_t)1000, "finished_ms", (json_int_t)4500, "state", "done");
    CHECK(collector_report_finish(r, job, err) == BF_OK);
    json_t *sum = load(dir, "summary.json");
    const json_t *counts = json_object_get(sum, "counts");
    CHECK(json_integer_value(json_object_get(counts, "success")) == 3);
    CHECK(json_integer_value(json_object_get(counts, "failed")) == 1);
    CHECK(json_integer_value(json_object_get(counts, "error")) == 1);
    CHECK(json_integer_value(json_object_get(counts, "cancelled")) == 1);
    CHECK(json_integer_value(json_object_get(counts, "total")) == 6);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(sum, "job"), "id")), "jobA"));
    CHECK(NEAR(json_number_value(json_object_get(sum, "total_time_s")), 3.5));
    /* successes s00 (+2), s01 (+4), s03 (+3.5): mean 3.1666.., median 3.5 */
    const json_t *imp = json_object_get(sum, "improvement");
    CHECK(NEAR(json_number_value(json_object_get(imp, "mean")), 9.5 / 3));
    CHECK(json_number_value(json_object_get(imp, "min")) == 2.0);
    CHECK(json_number_value(json_object_get(imp, "max")) == 4.0);
    CHECK(NEAR(json_number_value(json_object_get(imp, "median")), 3.5));
    /* initial zone powers of the successes: -90, -80, -91, -80, -93, -80;
       sorted -93 -91 -90 -80 -80 -80: mean -85.666.., median (-90 - 80)/2 =
       -85, p10 at position 0.5: -93 + 0.5 * 2 = -92 (numpy) */
    const json_t *agg = json_object_get(sum, "aggregate");
    const json_t *init = json_object_get(agg, "initial");
    CHECK(NEAR(json_number_value(json_object_get(init, "mean")), -514.0 / 6));
    CHECK(NEAR(json_number_value(json_object_get(init, "median")), -85.0));
    CHECK(NEAR(json_number_value(json_object_get(init, "p10")), -92.0));
    /* optimized: -88, -78, -87, -76, -89.5, -76.5; sorted -89.5 -88 -87 -78
       -76.5 -76: mean -82.5, median -82.5, p10 -89.5 + 0.5 * 1.5 = -88.75 */
    const json_t *opt = json_object_get(agg, "optimized");
    CHECK(NEAR(json_number_value(json_object_get(opt, "mean")), -82.5));
    CHECK(NEAR(json_number_value(json_object_get(opt, "median")), -82.5));
    CHECK(NEAR(json_number_value(json_object_get(opt, "p10")), -88.75));
    const json_t *aimp = json_object_get(agg, "improvement");
    CHECK(NEAR(json_number_value(json_object_get(aimp, "mean")), -82.5 + 514.0 / 6));
    CHECK(NEAR(json_number_value(json_object_get(aimp, "median")), 2.5));
    CHECK(NEAR(json_number_value(json_object_get(aimp, "p10")), 3.25));
    /* time per GPU over the successes: h/0 has s00 (1 s), h/1 has s01 (2 s)
       and s03 (4 s) */
    const json_t *tpg = json_object_get(sum, "time_per_gpu");
    CHECK(json_object_size(tpg) == 2);
    CHECK(NEAR(json_number_value(json_object_get(tpg, "h/0")), 1.0));
    CHECK(NEAR(json_number_value(json_object_get(tpg, "h/1")), 3.0));
    CHECK(json_integer_value(json_object_get(sum, "zone_cells")) == 6);
    json_decref(sum);
    /* the final file: {scene: result} of every result */
    CHECK(count_files(dir, "results_final_") == 1);
    json_t *summary = collector_report_summary(r, job);
    CHECK(summary && json_object_get(summary, "aggregate"));
    json_decref(summary);
    json_decref(job);
    collector_report_close(&r);

    /* numpy.percentile spot checks */
    double v[] = {1, 2, 3, 4};
    CHECK(NEAR(bf_percentile(v, 4, 10), 1.3));
    CHECK(NEAR(bf_percentile(v, 4, 50), 2.5));
    CHECK(NEAR(bf_percentile(v, 4, 90), 3.7));
    CHECK(NEAR(bf_percentile(v, 4, 100), 4.0));
    CHECK(NEAR(bf_percentile(v, 1, 10), 1.0));
    CHECK(isnan(bf_percentile(v, 0, 10)));
}

static void test_recovery(const char *dir)
{
    char err[BF_ERRLEN], path[512];
    collector_report_t *r = NULL;
    /* a crash mid-append: a torn line at the end of the log, and derived
       files that lag behind (an empty CSV, a stale progress file) */
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "a");
    fputs("{\"job_id\": \"jobA\", \"task_id\": \"task05\", \"sce", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/results.csv", dir);
    f = fopen(path, "w");
    fclose(f);
    snprintf(path, sizeof path, "%s/results_progress.json", dir);
    f = fopen(path, "w");
    fputs("{}", f);
    fclose(f);
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    CHECK(r && collector_report_count(r) == 6 && !collector_report_has(r, "task05"));
    CHECK(jsonl_lines(dir) == 6);
    csv_t t;
    CHECK(read_csv(dir, &t) && t.nrows == 7);
    csv_free(&t);
    json_t *progress = load(dir, "results_progress.json");
    CHECK(json_object_size(progress) == 6);
    json_decref(progress);
    /* appending after recovery, and the final file keeps its name */
    json_t *batch = json_array();
    json_array_append_new(batch, result("jobA", 5, "success", 1.0));
    CHECK(collector_report_append(r, batch, err) == BF_OK);
    json_decref(batch);
    CHECK(collector_report_count(r) == 7 && jsonl_lines(dir) == 7);
    json_t *job = json_pack("{s:s}", "id", "jobA");
    CHECK(collector_report_finish(r, job, err) == BF_OK);
    json_decref(job);
    CHECK(count_files(dir, "results_final_") == 1);
    json_t *sum = load(dir, "summary.json");
    CHECK(json_is_null(json_object_get(sum, "total_time_s")));
    json_decref(sum);
    collector_report_close(&r);

    /* a write that fails half-way (the progress file cannot be replaced):
       the log holds the result, the report refuses more until opened again,
       and opening again rebuilds the rest */
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    unlink(path);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/x");
    f = fopen(path, "w"); /* a non-empty directory cannot be renamed over */
    if (f)
        fclose(f);
    batch = json_array();
    json_array_append_new(batch, result("jobA", 6, "success", 1.0));
    CHECK(r && collector_report_append(r, batch, err) != BF_OK);
    json_decref(batch);
    batch = json_array();
    json_array_append_new(batch, result("jobA", 7, "success", 1.0));
    CHECK(r && collector_report_append(r, batch, err) == BF_ESTATE);
    json_decref(batch);
    collector_report_close(&r);
    CHECK(collector_report_open(dir, "jobA", &r, err) != BF_OK && r == NULL); /* still blocked */
    unlink(path);
    *strrchr(path, '/') = '\0';
    CHECK(rmdir(path) == 0);
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    CHECK(r && collector_report_count(r) == 8 && collector_report_has(r, "task06"));
    batch = json_array();
    json_array_append_new(batch, result("jobA", 6, "success", 1.0));
    CHECK(r && collector_report_append(r, batch, err) == BF_OK && json_array_size(batch) == 0);
    json_decref(batch);
    CHECK(jsonl_lines(dir) == 8);
    CHECK(read_csv(dir, &t) && t.nrows == 9);
    csv_free(&t);
    collector_report_close(&r);

    /* a damaged line in the middle is skipped, not fatal */
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    f = fopen(path, "a");
    fputs("not json\n", f);
    fclose(f);
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    CHECK(r && collector_report_count(r) == 8);
    collector_report_close(&r);
}

static void test_new_job(const char *dir)
{
    char err[BF_ERRLEN], path[600];
    collector_report_t *r = NULL;
    /* a new job in the same directory: the old reports are set aside */
    CHECK(collector_report_open(dir, "jobB", &r, err) == BF_OK);
    CHECK(r && collector_report_count(r) == 0);
    snprintf(path, sizeof path, "%s/previous-jobA/results.jsonl", dir);
    CHECK(access(path, F_OK) == 0);
    snprintf(path, sizeof path, "%s/previous-jobA/summary.json", dir);
    CHECK(access(path, F_OK) == 0);
    CHECK(count_files(dir, "results_final_") == 0);
    json_t *batch = json_array();
    json_array_append_new(batch, result("jobB", 0, "success", 1.0));
    CHECK(r && collector_report_append(r, batch, err) == BF_OK);
    json_decref(batch);
    collector_report_close(&r);
    /* and back to jobA (say a late duplicate): set aside again, not clobbered */
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    snprintf(path, sizeof path, "%s/previous-jobB/results.jsonl", dir);
    CHECK(access(path, F_OK) == 0);
    batch = json_array();
    json_array_append_new(batch, result("jobA", 9, "success", 1.0));
    CHECK(r && collector_report_append(r, batch, err) == BF_OK);
    json_decref(batch);
    collector_report_close(&r);
    CHECK(collector_report_open(dir, "jobB", &r, err) == BF_OK);
    snprintf(path, sizeof path, "%s/previous-jobA-2/results.jsonl", dir);
    CHECK(access(path, F_OK) == 0);
    collector_report_close(&r);

    /* a place that cannot be a directory */
    snprintf(path, sizeof path, "%s/previous-jobA/results.jsonl/sub", dir);
    CHECK(collector_report_open(path, "jobC", &r, err) != BF_OK && r == NULL);
}

/* ---- hostile results ------------------------------------------------- */

/* A success with the zone powers given as JSON text. */
static json_t *odd(const char *job, const char *scene, const char *zinit, const char *zopt,
                   double imp, double secs)
{
    json_t *r =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:f, s:{s:f, s:f}}", "job_id", job, "task_id",
                  scene, "scene", scene, "status", "success", "host", "h", "gpu_id", 0,
                  "elapsed_time", secs, "stats", "improvement_mean", imp, "initial_mean", -80.5);
    json_object_set_new(r, "zone_power_initial", json_loads(zinit, 0, NULL));
    json_object_set_new(r, "zone_power_optimized", json_loads(zopt, 0, NULL));
    return r;
}

static int write_hostile(void *arg)
{
    const char *dir = arg;
    char err[BF_ERRLEN] = "";
    collector_report_t *r = NULL;
    if (collector_report_open(dir, "jobH", &r, err) != BF_OK)
        return 2;
    json_t *big = json_array();
    for (int i = 0; i < 100000; i++) /* (10^6 in collector_html_test: the files here cost) */
        json_array_append_new(big, json_real(i % 2 ? -1e300 : 1e16));
    char *bigtext = json_dumps(big, JSON_COMPACT);
    json_decref(big);
    json_t *batch = json_pack(
        "[o, o, o, o, o]", odd("jobH", "dark", "[-1e300, -1e300]", "[-90, -80]", 1e300, 2),
        odd("jobH", "narrow", "[1e16, 10000000000000002]", "[1e16, 10000000000000002]", 1e16, 1e16),
        odd("jobH", "ends", "[1e308, -1e308, -0.0, 9223372036854775807]",
            "[-9223372036854775808, 1.7976931348623157e308]", -1e308, 1e308),
        odd("jobH", "strings", "[\"-80\", {}, null, [], true]", "\"-70\"", 0, 0),
        odd("jobH", "big", bigtext, bigtext, 0, 1));
    free(bigtext);
    json_t *job = json_pack("{s:s, s:s, s:I, s:I}", "id", "jobH", "name", "h", "submitted_ms",
                            (json_int_t)INT64_MIN, "finished_ms", (json_int_t)INT64_MAX);
    bf_err_t rc = batch ? collector_report_append(r, batch, err) : BF_ENOMEM;
    if (rc == BF_OK)
        rc = collector_report_finish(r, job, err);
    if (rc != BF_OK)
        fprintf(stderr, "  %s\n", err);
    json_decref(batch);
    json_decref(job);
    collector_report_close(&r);
    return rc == BF_OK ? 0 : 1;
}

/* Huge, tiny, narrow and wrongly typed numbers: every writer finishes
   quickly, the statistics stay inside the trusted range and count what they
   clipped, numbers stay numbers in the CSV. */
static void test_hostile_numbers(const char *root)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hostile", root);
    CHECK(finishes_within(30, write_hostile, dir));
    json_t *sum = load(dir, "summary.json");
    CHECK(sum);
    const json_t *agg = json_object_get(sum, "aggregate");
    for (int m = 0; m < 2; m++) {
        const json_t *d = json_object_get(agg, m ? "optimized" : "initial");
        const char *keys[3] = {"mean", "median", "p10"};
        for (int k = 0; k < 3; k++) {
            double x = json_number_value(json_object_get(d, keys[k]));
            CHECKF(json_is_number(json_object_get(d, keys[k])) && x >= COLLECTOR_DBM_MIN &&
                       x <= COLLECTOR_DBM_MAX,
                   "%s.%s = %g", m ? "optimized" : "initial", keys[k], x);
        }
    }
    /* clipped: dark 2, narrow 4, ends 3 + 2 (-0.0 is fine), "big" 2 x 10^5 */
    CHECKF(json_integer_value(json_object_get(sum, "zone_cells_clipped")) == 200011,
           "zone_cells_clipped %lld",
           (long long)json_integer_value(json_object_get(sum, "zone_cells_clipped")));
    const json_t *imp = json_object_get(sum, "improvement");
    CHECK(json_number_value(json_object_get(imp, "max")) == COLLECTOR_DB_SPAN);
    CHECK(json_number_value(json_object_get(imp, "min")) == -COLLECTOR_DB_SPAN);
    CHECK(json_number_value(json_object_get(sum, "total_time_s")) > 1e16); /* no overflow */
    CHECK(json_number_value(json_object_get(json_object_get(sum, "time_per_gpu"), "h/0")) <=
          COLLECTOR_TIME_MAX_S);
    json_decref(sum);
    csv_t t;
    CHECK(read_csv(dir, &t) && t.nrows == 6);
    for (size_t i = 1; i < t.nrows; i++) {
        const char *s = cell(&t, i, "scene"), *e = cell(&t, i, "elapsed_time");
        if (s && !strcmp(s, "ends"))
            CHECKF(e && strtod(e, NULL) == 1e308, "elapsed %s", e ? e : "(none)");
        CHECK(cell(&t, i, "initial_mean_dbm") && !strcmp(cell(&t, i, "initial_mean_dbm"), "-80.5"));
    }
    csv_free(&t);
    char *html = slurp(dir, "report.html");
    CHECK(html && strstr(html, "drawn at the edge") && strstr(html, "</html>"));
    free(html);
}

/* Text cells a spreadsheet would run as formulas get a ' in front (inside
   the quotes); numbers, negative ones included, stay numbers. */
static void test_csv_formulas(const char *root)
{
    char dir[512], err[BF_ERRLEN] = "";
    snprintf(dir, sizeof dir, "%s/formulas", root);
    collector_report_t *r = NULL;
    CHECK(collector_report_open(dir, "jobF", &r, err) == BF_OK);
    if (!r)
        return;
    static const char *const evil[][4] = {
        /* scene, reason, host, device */
        {"=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3"},
        {"\tx", "\rreason", "h", "=1"},
        {"-scene", "=", "plain, host", "cpu"},
        {"safe", "a=b", "h-1", "gpu0"}};
    json_t *batch = json_array();
    for (size_t i = 0; i < BF_ARRAY_LEN(evil); i++) {
        char task[16];
        snprintf(task, sizeof task, "t%zu", i);
        json_array_append_new(
            batch, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:f, s:{s:f, s:f}}",
                             "job_id", "jobF", "task_id", task, "scene", evil[i][0], "status",
                             "success", "reason", evil[i][1], "host", evil[i][2], "device",
                             evil[i][3], "gpu_id", (json_int_t)-1, "elapsed_time", -0.5, "stats",
                             "initial_mean", -80.5, "improvement_mean", -3.25));
    }
    CHECKF(collector_report_append(r, batch, err) == BF_OK, "%s", err);
    json_decref(batch);
    collector_report_close(&r);
    csv_t t;
    CHECK(read_csv(dir, &t) && t.nrows == 1 + BF_ARRAY_LEN(evil));
    static const char *const cols[4] = {"scene", "reason", "host", "device"};
    for (size_t i = 0; i < BF_ARRAY_LEN(evil) && i + 1 < t.nrows; i++) {
        for (int c = 0; c < 4; c++) {
            const char *got = cell(&t, i + 1, cols[c]), *want = evil[i][c];
            bool formula = want[0] && strchr("=+-@\t\r", want[0]);
            CHECKF(got && (formula ? got[0] == '\'' && !strcmp(got + 1, want) : !strcmp(got, want)),
                   "row %zu %s: [%s]", i, cols[c], got ? got : "(none)");
        }
        CHECK(!strcmp(cell(&t, i + 1, "initial_mean_dbm"), "-80.5"));
        CHECK(!strcmp(cell(&t, i + 1, "improvement_mean"), "-3.25"));
        CHECK(!strcmp(cell(&t, i + 1, "gpu_id"), "-1"));
        CHECK(!strcmp(cell(&t, i + 1, "elapsed_time"), "-0.5"));
    }
    csv_free(&t);
    char *text = slurp(dir, "results.csv");
    /* the quote is inside the quoted cell: what spreadsheet-safe writers do */
    CHECK(text && strstr(text, "\n\"'=HYPERLINK(\"\"http://x\"\")\",success,\"'+cmd|"));
    free(text);
}

/* CSV numbers carry 12 significant digits, orientations 0.01 deg: no
   79.10000000000001, no -2.775557562e-16 (docs/radio.md). */
static void test_csv_rounding(const char *root)
{
    char dir[512], err[BF_ERRLEN] = "";
    snprintf(dir, sizeof dir, "%s/rounding", root);
    collector_report_t *r = NULL;
    CHECK(collector_report_open(dir, "jobR", &r, err) == BF_OK);
    if (!r)
        return;
    json_t *batch = json_pack(
        "[{s:s, s:s, s:s, s:s, s:f, s:{s:f, s:f}, s:{s:f, s:f}, s:{s:f, s:f}}]", "job_id", "jobR",
        "task_id", "t0", "scene", "s", "status", "success", "elapsed_time", 0.1 + 0.2,
        "boresight_initial", "azimuth_deg", 79.10000000000001, "tilt_deg", -2.775557562e-16,
        "boresight_optimized", "azimuth_deg", 359.996, "tilt_deg", 12.344999, "stats",
        "initial_mean", -85.12345678901234, "improvement_mean", 1e-300);
    CHECKF(collector_report_append(r, batch, err) == BF_OK, "%s", err);
    json_decref(batch);
    collector_report_close(&r);
    csv_t t;
    CHECK(read_csv(dir, &t) && t.nrows == 2);
    if (t.nrows == 2) {
        static const char *const want[][2] = {
            {"elapsed_time", "0.3"},         {"initial_azimuth_deg", "79.1"},
            {"initial_tilt_deg", "0"},       {"optimized_azimuth_deg", "360"},
            {"optimized_tilt_deg", "12.34"}, {"initial_mean_dbm", "-85.123456789"},
            {"improvement_mean", "1e-300"}};
        for (size_t i = 0; i < BF_ARRAY_LEN(want); i++)
            CHECKF(!strcmp(cell(&t, 1, want[i][0]), want[i][1]), "%s: %s, want %s", want[i][0],
                   cell(&t, 1, want[i][0]), want[i][1]);
    }
    csv_free(&t);
}

/* Appends batch (taken) to r, then writes the reports: the progress JSON
   (flush) or, with finish, the job's final ones. */
static void append_and_write(collector_report_t *r, json_t *batch, bool finish)
{
    char err[BF_ERRLEN];
    CHECK(collector_report_append(r, batch, err) == BF_OK);
    json_decref(batch);
    CHECK((finish ? collector_report_finish(r, NULL, err) : collector_report_flush(r, true, err)) ==
          BF_OK);
}

/* results_progress.json and results_final are the {scene: result} text
   the collector grows result by result: byte for byte a whole dump,
   also after a scene's result is replaced (the text is made whole again
   and grows from there). */
static void test_by_scene_text(const char *root)
{
    char err[BF_ERRLEN], dir[512];
    snprintf(dir, sizeof dir, "%s/by-scene", root);
    collector_report_t *r = NULL;
    CHECK(collector_report_open(dir, "jobB", &r, err) == BF_OK);
    if (!r)
        return;
    json_t *batch = json_array();
    for (int i = 0; i < 4; i++)
        json_array_append_new(batch, result("jobB", i, "success", 2.0 + i));
    json_array_append_new(batch, exec_result("jobB", 0, "error"));
    append_and_write(r, batch, false);
    CHECK(as_dumped(dir, "results_progress.json"));
    json_t *again = result("jobB", 2, "success", 1.5);
    json_object_set_new(again, "task_id", json_string("task02-b"));
    append_and_write(r, json_pack("[o, o]", again, exec_result("jobB", 1, "success")), false);
    CHECK(as_dumped(dir, "results_progress.json"));
    append_and_write(r, json_pack("[o]", exec_result("jobB", 2, "failed")), true);
    CHECK(as_dumped(dir, "results_progress.json"));
    /* what a worker may put in a result: brackets, commas, colons, quotes
       and escapes inside strings (the grown text re-lays the log's compact
       line), empty and nested containers, extreme reals, a scene name that
       needs escaping, and thumbnails (left out, so dumped) */
    json_t *odd = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:{}, s:[], s:[{s:[[], {}, [i, i, f]]}, {}], s:n, s:b, "
        "s:f, s:f, s:I, s:{s:{s:{s:s}}}}",
        "job_id", "jobB", "task_id", "odd-1", "scene", "q\"{[,:]}\\ \u00e9\u2603\t\x01", "status",
        "success", "reason", "\"}],\\\"{:", "empty_obj", "empty_arr", "nested", "k", 1, -2,
        3.5e-300, "nothing", "flag", 1, "tiny", -1.25e-300, "huge", 1.5e300, "big",
        (json_int_t)-9007199254740993LL, "deep", "a", "b", "c", "d\n\"e\"");
    json_t *thumbed = exec_result("jobB", 3, "success");
    json_object_set_new(thumbed, "thumbnails", json_pack("{s:[i, i]}", "initial", 1, 2));
    append_and_write(r, json_pack("[o, o]", odd, thumbed), false);
    CHECK(as_dumped(dir, "results_progress.json"));
    append_and_write(r, json_pack("[o]", exec_result("jobB", 4, "success")), true);
    CHECK(as_dumped(dir, "results_progress.json"));
    json_t *progress = load(dir, "results_progress.json");
    CHECK(json_object_size(progress) == 10 &&
          json_is_object(json_object_get(progress, "q\"{[,:]}\\ \u00e9\u2603\t\x01")) &&
          !json_object_get(json_object_get(progress, "x03"), "thumbnails"));
    CHECK(
        json_object_size(progress) == 10 &&
        json_real_value(json_object_get(json_object_get(json_object_get(progress, "s02"), "stats"),
                                        "improvement_mean")) == 1.5);
    json_decref(progress);
    CHECK(count_files(dir, "results_final_") == 1);
    collector_report_close(&r);
}

int main(void)
{
    bf_log_set_level(BF_LOG_ERROR);
    char dir[] = "/tmp/collector-report-test-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    test_append_and_files(dir);
    test_summary(dir);
    test_recovery(dir);
    test_new_job(dir);
    test_hostile_numbers(dir);
    test_csv_formulas(dir);
    test_csv_rounding(dir);
    test_by_scene_text(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    if (failures) {
        fprintf(stderr, "collector_report_test: %d checks failed\n", failures);
        return 1;
    }
    printf("collector_report_test: all checks passed\n");
    return 0;
}
