/*  collector/collector_report_test.c - the report writers as the collector
    uses them: results appended and readable in every file, duplicates kept
    out, a torn log tail cut off and the derived files rebuilt after a
    "crash", the summary's numbers against values computed by hand (numpy's
    percentile), CSV quoting, and a new job in a used directory. */

#include "collector_report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static json_t *result(const char *job, int i, const char *status, double imp)
{
    char scene[32], task[40];
    snprintf(scene, sizeof scene, "s%02d", i);
    snprintf(task, sizeof task, "task%02d", i);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:f, s:{s:f, s:i}, "
                     "s:[f, f], s:[f, f]}",
                     "job_id", job, "task_id", task, "scene", scene, "status", status, "reason",
                     "zone, \"quoted\"\nline two", "gpu_id", (json_int_t)(i % 2), "host", "h",
                     "attempt", 1, "elapsed_time", 1.0 + i, "stats", "improvement_mean", imp,
                     "zone_cells", 2, "zone_power_initial", -90.0 - i, -80.0,
                     "zone_power_optimized", -90.0 - i + imp, -80.0 + imp);
}

static char *slurp(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = NULL;
    size_t len;
    return bf_read_file(path, 1 << 24, &text, &len, NULL) == BF_OK ? text : NULL;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; p && *p; p++)
        n += *p == '\n';
    return n;
}

int main(void)
{
    char dir[] = "/tmp/collector-report-test-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char err[BF_ERRLEN];
    collector_report_t *r = NULL;
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    json_t *batch = json_array();
    json_array_append_new(batch, result("jobA", 0, "success", 2.0));
    json_array_append_new(batch, result("jobA", 1, "success", 4.0));
    json_array_append_new(batch, result("jobA", 2, "failed", 0.0));
    CHECK(collector_report_append(r, batch, err) == BF_OK);
    json_decref(batch);
    CHECK(collector_report_has(r, "task01") && !collector_report_has(r, "task09"));
    CHECK(collector_report_count(r) == 3);

    /* every file parses and holds each scene once */
    char *jsonl = slurp(dir, "results.jsonl"), *csv = slurp(dir, "results.csv");
    CHECK(count_lines(jsonl) == 3);
    static const char head[] = "scene,status,reason,host,gpu_id,device,attempt,elapsed_time,";
    CHECK(csv && !strncmp(csv, head, strlen(head)));
    /* RFC 4180: the reason with a comma, quotes and a newline is quoted */
    CHECK(csv && strstr(csv, "\"zone, \"\"quoted\"\"\nline two\""));
    char path[512];
    snprintf(path, sizeof path, "%s/results_progress.json", dir);
    json_t *progress = json_load_file(path, 0, NULL);
    CHECK(json_object_size(progress) == 3 && json_object_get(progress, "s02"));
    json_decref(progress);
    free(jsonl);
    free(csv);

    /* summary: counts, improvement over successes, numpy percentiles */
    json_t *job = json_pack("{s:s, s:I, s:I}", "id", "jobA", "submitted_ms", (json_int_t)1000,
                            "finished_ms", (json_int_t)4500);
    CHECK(collector_report_finish(r, job, err) == BF_OK);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_t *sum = json_load_file(path, 0, NULL);
    CHECK(json_integer_value(json_object_get(json_object_get(sum, "counts"), "success")) == 2);
    CHECK(json_integer_value(json_object_get(json_object_get(sum, "counts"), "failed")) == 1);
    CHECK(fabs(json_number_value(json_object_get(sum, "total_time_s")) - 3.5) < 1e-9);
    json_t *imp = json_object_get(sum, "improvement");
    CHECK(fabs(json_number_value(json_object_get(imp, "mean")) - 3.0) < 1e-9);
    CHECK(json_number_value(json_object_get(imp, "min")) == 2.0);
    CHECK(json_number_value(json_object_get(imp, "max")) == 4.0);
    /* initial zone powers of the successes: -90, -80, -91, -80 -> sorted
       -91 -90 -80 -80: mean -85.25, median -85, p10 = -91 + 0.3 * 1 = -90.7 */
    json_t *init = json_object_get(json_object_get(sum, "aggregate"), "initial");
    CHECK(fabs(json_number_value(json_object_get(init, "mean")) + 85.25) < 1e-9);
    CHECK(fabs(json_number_value(json_object_get(init, "median")) + 85.0) < 1e-9);
    CHECK(fabs(json_number_value(json_object_get(init, "p10")) + 90.7) < 1e-9);
    json_decref(sum);
    collector_report_close(&r);
    CHECK(r == NULL);

    /* a crash mid-append: a torn line at the end of the log */
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "a");
    fputs("{\"job_id\": \"jobA\", \"task_id\": \"task03\", \"sce", f);
    fclose(f);
    CHECK(collector_report_open(dir, "jobA", &r, err) == BF_OK);
    CHECK(collector_report_count(r) == 3 && !collector_report_has(r, "task03"));
    jsonl = slurp(dir, "results.jsonl");
    csv = slurp(dir, "results.csv");
    CHECK(jsonl && jsonl[strlen(jsonl) - 1] == '\n' && count_lines(jsonl) == 3);
    CHECK(csv && strstr(csv, "s02,failed"));
    free(jsonl);
    free(csv);
    /* appending after recovery */
    batch = json_array();
    json_array_append_new(batch, result("jobA", 3, "success", 1.0));
    CHECK(collector_report_append(r, batch, err) == BF_OK);
    json_decref(batch);
    CHECK(collector_report_count(r) == 4);
    CHECK(collector_report_finish(r, job, err) == BF_OK); /* rewrites the same final file */
    collector_report_close(&r);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls %s | grep -c '^results_final_') -eq 1", dir);
    CHECK(system(cmd) == 0);

    /* a new job in the same directory: the old reports are set aside */
    CHECK(collector_report_open(dir, "jobB", &r, err) == BF_OK);
    CHECK(collector_report_count(r) == 0);
    snprintf(cmd, sizeof cmd, "test -f %s/previous-jobA/results.jsonl", dir);
    CHECK(system(cmd) == 0);
    collector_report_close(&r);

    /* an unwritable place */
    CHECK(collector_report_open("/proc/version/x", "jobC", &r, err) != BF_OK && r == NULL);

    json_decref(job);
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
