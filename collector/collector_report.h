/*  collector/collector_report.h - one job's report directory (DESIGN section
    3), used by the collector loop and, through collector.h, by the CLI and
    the tests. results.jsonl is the durable log (append + fdatasync); results.csv
    and results_progress.json are derived from it and rebuilt from it whenever
    a job's directory is opened again (after a crash or a failed write), so no
    file disagrees with the log for long and no task appears twice. At the end
    of a job results_final_<stamp>.json and summary.json are written
    atomically. Results are kept in memory as jansson objects while the report
    is open (fine to about 10^5 results per job). */

#ifndef COLLECTOR_REPORT_H_INCLUDED
#define COLLECTOR_REPORT_H_INCLUDED

#include "../common/bf.h"
#include "collector_html.h" /* the trusted ranges and collector_clip */
#include <jansson.h>

typedef struct collector_report collector_report_t;

/* The CSV columns, in order (22 of them; a result without the field gets an
   empty cell). */
extern const char *const collector_report_csv_columns[];
#define COLLECTOR_REPORT_CSV_NCOLUMNS 27

/* Opens (mkdir -p) dir for job_id and recovers what is there: a torn last
   line of results.jsonl is cut off (truncated to its last newline), a line
   that is not JSON is skipped with a warning, the de-duplication set is
   rebuilt, and results.csv and results_progress.json are rewritten from the
   log atomically. Reports of another job found in dir (the log's first line
   names a different job_id) are moved to dir/previous-<that id>/ first.
   Errors: BF_ENOSPC, BF_EPERM (read-only, no access), BF_EIO, BF_ENOMEM, each
   with a one-line detail in err. *out is NULL on failure. */
bf_err_t collector_report_open(const char *dir, const char *job_id, collector_report_t **out,
                               char *err) BF_MUST_CHECK;
/* NULL-safe and idempotent; nulls *self. */
void collector_report_close(collector_report_t **self);

/* The directory this report writes to. */
const char *collector_report_dir(const collector_report_t *r);

/* True when the result of task_id is already in the log. */
bool collector_report_has(const collector_report_t *r, const char *task_id);

/* Number of results in the log. */
size_t collector_report_count(const collector_report_t *r);

/* Appends results (a JSON array of result objects, each with a non-empty
   string "task_id") to results.jsonl (one line each, fdatasync), then to
   results.csv (fdatasync), then rewrites results_progress.json. Results whose
   task_id is already in the log, or repeated in the array, are removed from
   the array first, so on success the array holds exactly what was written
   (possibly nothing). BF_EINVAL (nothing written) when an element is not an
   object with a task_id. On any other failure the report is marked broken:
   the caller must close it and open it again (which repairs a partially
   written log and rebuilds the derived files) before writing more; further
   appends return BF_ESTATE. results_progress.json is rewritten at once
   unless the last rewrite took 10 ms or more and ended less than 4 times
   that long ago (a large job): then it is left for collector_report_flush, and the log and
   results.csv are already complete (a failure to rewrite it marks the
   report broken, as above). */
bf_err_t collector_report_append(collector_report_t *r, json_t *results, char *err) BF_MUST_CHECK;

/* Rewrites results_progress.json if appends since the last rewrite left it
   behind: when its spacing has passed, or at once with force. The
   collector calls it when its queue is empty; collector_report_finish
   forces it. A failure marks the report broken; BF_ESTATE on a broken
   report. */
bf_err_t collector_report_flush(collector_report_t *r, bool force, char *err) BF_MUST_CHECK;

/* Writes results_final_<YYYYmmdd_HHMMSS>.json ({scene: result}; the name of an
   earlier one in dir is reused, so a job has one) and summary.json for the
   job described by job (JOBINFO), both atomically. */
bf_err_t collector_report_finish(collector_report_t *r, const json_t *job, char *err) BF_MUST_CHECK;

/* The summary document of the results so far: {"job": job, "counts":
   {success, failed, error, cancelled, total}, "total_time_s" (finished_ms -
   submitted_ms, null when unknown), "improvement": {mean, min, max, median}
   of the successes' stats.improvement_mean, "aggregate": {initial,
   optimized, improvement: {mean, median, p10}} over the concatenated zone
   powers of the successes (numpy's linear-interpolation percentile),
   "time_per_gpu": {"host/gpu_id": mean elapsed_time of the successes},
   "zone_cells": n, "zone_cells_clipped": cells outside [COLLECTOR_DBM_MIN,
   COLLECTOR_DBM_MAX] (clipped to it before the statistics)}. Improvements
   and times are clipped the same way (COLLECTOR_DB_SPAN,
   COLLECTOR_TIME_MAX_S). Statistics without data are null. NULL on allocation
   failure. The caller owns the result. */
json_t *collector_report_summary(const collector_report_t *r, const json_t *job);

#endif
