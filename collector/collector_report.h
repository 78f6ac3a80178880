/*  collector/collector_report.h - private to the collector: one job's report
    directory. results.jsonl is the durable log (append + fdatasync);
    results.csv and results_progress.json are derived from it and rebuilt
    from it when a job is opened again after a crash, so no file can disagree
    with the log for long and no scene can appear twice. */

#ifndef COLLECTOR_REPORT_H_INCLUDED
#define COLLECTOR_REPORT_H_INCLUDED

#include "../common/bf.h"
#include <jansson.h>

typedef struct collector_report collector_report_t;

/* Opens (creating) dir for job_id and recovers what is there: a torn last
   line of results.jsonl is cut off, and results.csv and
   results_progress.json are rewritten from the log. Reports of another job
   in the same directory are moved to dir/previous-<its id>/ first. */
bf_err_t collector_report_open(const char *dir, const char *job_id, collector_report_t **out,
                               char *err) BF_MUST_CHECK;
void collector_report_close(collector_report_t **self);

/* True when the task's result is already in the log. */
bool collector_report_has(const collector_report_t *r, const char *task_id);

/* Appends results (an array of result objects, not yet in the log) to
   results.jsonl and results.csv, each synced, then rewrites
   results_progress.json. On failure nothing is acknowledged by the caller;
   a partially appended log is repaired by the next open. */
bf_err_t collector_report_append(collector_report_t *r, json_t *results, char *err) BF_MUST_CHECK;

/* Writes results_final_<stamp>.json (reusing the name of an earlier one)
   and summary.json for the job described by job (JOBINFO). */
bf_err_t collector_report_finish(collector_report_t *r, const json_t *job, char *err) BF_MUST_CHECK;

/* Number of results in the log. */
size_t collector_report_count(const collector_report_t *r);

/* The summary document of the results so far (counts, improvement,
   aggregate initial/optimized statistics, time per GPU). */
json_t *collector_report_summary(const collector_report_t *r, const json_t *job);

#endif
