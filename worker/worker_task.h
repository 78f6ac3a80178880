/*  worker/worker_task.h - private to the worker: the table of task handlers
    and what a handler is given. A handler runs on the worker's task thread
    and must return promptly once *cancel is set or the deadline passes. */

#ifndef WORKER_TASK_H_INCLUDED
#define WORKER_TASK_H_INCLUDED

#include "../common/bf.h"
#include "../common/bf_config.h"
#include <jansson.h>

typedef struct {
    const char *scene_dir, *scene;
    const bf_job_t *job;
    int64_t deadline_ms; /* bf_mono_ms() limit */
    volatile int *cancel;
    int gpu_id; /* -1 for the CPU */
    bool cpu;
    unsigned threads;
    const char **allow_exec;
    size_t allow_exec_count;
    void (*progress)(void *ud, const char *stage, double fraction);
    void *ud;
} worker_task_ctx_t;

/* Produces the task's result document (status, reason, ...). A non-OK
   return is turned into a result with status error and err as the reason. */
typedef bf_err_t (*worker_handler_fn)(worker_task_ctx_t *ctx, json_t **result, char *err);

bf_err_t worker_exec(worker_task_ctx_t *ctx, json_t **result, char *err);
bf_err_t worker_boresight(worker_task_ctx_t *ctx, json_t **result, char *err);

#endif
