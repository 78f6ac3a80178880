/*  tests/fuzz/fuzz_report.c - libFuzzer harness for the collector's report
    writers: the input is a hostile result document, or a set of
    them, as JSON text (or, when it is not JSON, as the MessagePack a worker
    puts on the wire, through proto_msgpack_to_json), and it goes through
    everything the collector does with results: collector_report_open on a
    fresh directory, collector_report_append (results.jsonl, the CSV row,
    results_progress.json), collector_report_finish (results_final, the
    summary, report.html with its plots and thumbnails), and
    collector_html_write on the document as given. Besides "no crash, leak,
    UB, timeout or OOM" (a writer that loops on a number is a timeout), it
    checks that every CSV row has every column and no text cell a
    spreadsheet would take for a formula, that results.jsonl holds one line
    per distinct task, that the summary's powers lie in the trusted range,
    and that report.html is a whole page. An array is a set of results, an
    object with "status" or "scene" is one, any other object is {scene:
    result} (results_final's shape); at most MAX_RESULTS are taken. */

#include "../../collector/collector.h"
#include "../../collector/collector_html.h"
#include "../../proto/proto.h"
#include "fuzz_util.h"

#include <ftw.h>

#define MAX_RESULTS 64

/* Every result object of doc, each given a task_id (its index, or a repeat
   of an earlier one for byte 0's low bit, to exercise de-duplication) and
   the job id, as the collector's loop does. */
static json_t *results_of(const json_t *doc, bool repeat)
{
    json_t *out = json_array();
    if (!out)
        return NULL;
    const json_t *one =
        json_is_object(doc) && (json_object_get(doc, "status") || json_object_get(doc, "scene"))
            ? doc
            : NULL;
    size_t n = one ? 1 : json_is_array(doc) ? json_array_size(doc) : json_object_size(doc);
    void *it = json_is_object(doc) && !one ? json_object_iter((json_t *)doc) : NULL;
    for (size_t i = 0; i < n && json_array_size(out) < MAX_RESULTS; i++) {
        const json_t *r = one                  ? one
                          : json_is_array(doc) ? json_array_get(doc, i)
                                               : json_object_iter_value(it);
        if (it)
            it = json_object_iter_next((json_t *)doc, it);
        if (!json_is_object(r))
            continue;
        json_t *copy = json_deep_copy(r);
        char id[32];
        snprintf(id, sizeof id, "task%zu", repeat ? i / 2 : i);
        if (!copy || json_object_set_new(copy, "task_id", json_string(id)) != 0 ||
            json_object_set_new(copy, "job_id", json_string("fuzzjob")) != 0 ||
            json_array_append_new(out, copy) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* The cells of one RFC 4180 line at *p (advanced past it); -1 when torn. */
static int csv_cells(const char **p, bool *formula)
{
    const char *s = *p;
    int cells = 1;
    bool start = true;
    while (*s && *s != '\n') {
        if (start && *s == '"') {
            if (s[1] == '=' || s[1] == '+' || s[1] == '-' || s[1] == '@' || s[1] == '\t' ||
                s[1] == '\r')
                *formula = true;
            for (s++;; s++) {
                if (!*s)
                    return -1;
                if (*s == '"' && s[1] == '"')
                    s++;
                else if (*s == '"')
                    break;
            }
            s++;
            start = false;
            continue;
        }
        if (start && (*s == '=' || *s == '+' || *s == '@' || *s == '\t' || *s == '\r'))
            *formula = true;
        if (start && *s == '-' && !(s[1] >= '0' && s[1] <= '9'))
            *formula = true; /* a negative number is fine, "-cmd" is not */
        if (*s == ',') {
            cells++;
            start = true;
        } else {
            start = false;
        }
        s++;
    }
    *p = *s ? s + 1 : s;
    return cells;
}

static char *slurp(const char *dir, const char *name)
{
    char path[1100], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return bf_read_file(path, 1u << 28, &text, &len, NULL) == BF_OK ? text : NULL;
}

static void check_reports(const char *dir, size_t distinct)
{
    char *csv = slurp(dir, "results.csv");
    FUZZ_ASSERT(csv, "no results.csv");
    const char *p = csv;
    size_t rows = 0;
    for (; *p; rows++) {
        bool formula = false;
        int n = csv_cells(&p, &formula);
        FUZZ_ASSERT(n == COLLECTOR_REPORT_CSV_NCOLUMNS, "CSV row %zu has %d cells", rows, n);
        FUZZ_ASSERT(!formula, "CSV row %zu has a cell that starts a formula", rows);
    }
    FUZZ_ASSERT(rows == distinct + 1, "%zu CSV rows for %zu results", rows, distinct);
    free(csv);
    char *jsonl = slurp(dir, "results.jsonl");
    size_t lines = 0;
    for (const char *q = jsonl ? jsonl : ""; (q = strchr(q, '\n')); q++)
        lines++;
    FUZZ_ASSERT(lines == distinct, "%zu log lines for %zu results", lines, distinct);
    free(jsonl);
    char *html = slurp(dir, "report.html");
    size_t hl = html ? strlen(html) : 0;
    FUZZ_ASSERT(hl > 8 && !strcmp(html + hl - 8, "</html>\n"), "report.html is not whole");
    free(html);
    char path[1100];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_t *sum = json_load_file(path, 0, NULL);
    FUZZ_ASSERT(sum, "summary.json does not parse");
    const json_t *agg = json_object_get(sum, "aggregate");
    static const char *const which[2] = {"initial", "optimized"},
                             *keys[3] = {"mean", "median", "p10"};
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 3; k++) {
            const json_t *v = json_object_get(json_object_get(agg, which[m]), keys[k]);
            double x = json_number_value(v);
            FUZZ_ASSERT(json_is_null(v) || (x >= COLLECTOR_DBM_MIN && x <= COLLECTOR_DBM_MAX),
                        "summary %s.%s = %g outside the trusted range", which[m], keys[k], x);
        }
    json_decref(sum);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag;
    if (ftw->level > 0)
        (void)remove(path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        bf_log_set_level(BF_LOG_ERROR); /* the writers' warnings are expected here */
        quiet = true;
    }
    if (size < 1)
        return 0;
    bool repeat = data[0] & 1;
    json_t *doc = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!doc) {
        char why[BF_ERRLEN];
        if (proto_msgpack_to_json(data + 1, size - 1, &doc, why) != BF_OK)
            return 0;
    }
    char dir[1024];
    fuzz_path(dir, sizeof dir, "report");
    fuzz_mkdir("report");
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); /* a fresh directory each time */

    json_t *results = results_of(doc, repeat);
    char err[BF_ERRLEN] = "";
    collector_report_t *r = NULL;
    if (!results || collector_report_open(dir, "fuzzjob", &r, err) != BF_OK)
        FUZZ_NOTE("not opened: %s", results ? err : "out of memory");
    if (r) {
        json_t *batch = json_deep_copy(results);
        bf_err_t rc = batch ? collector_report_append(r, batch, err) : BF_ENOMEM;
        FUZZ_ASSERT(rc == BF_OK || rc == BF_ENOMEM, "append: %s", err);
        size_t distinct = json_array_size(batch);
        json_t *job =
            json_pack("{s:s, s:s, s:s}", "id", "fuzzjob", "name", "fuzz", "state", "done");
        if (rc == BF_OK && job) {
            rc = collector_report_finish(r, job, err);
            FUZZ_ASSERT(rc == BF_OK || rc == BF_ENOMEM, "finish: %s", err);
            if (rc == BF_OK)
                check_reports(dir, distinct);
            FUZZ_NOTE("%zu distinct results written and checked", distinct);
        }
        json_decref(job);
        json_decref(batch);
        collector_report_close(&r);
    }
    /* The page straight from the document as given: an array, {scene:
       result}, or anything else (no results), with a hostile "summary". */
    json_t *summary = json_is_object(doc) ? json_object_get(doc, "summary") : NULL;
    bf_err_t rc = collector_html_write(dir, summary, doc, err);
    FUZZ_ASSERT(rc == BF_OK || rc == BF_ENOMEM, "collector_html_write: %s", err);
    json_decref(results);
    json_decref(doc);
    return 0;
}
