/*  worker/worker_boresight.c - the boresight task: the radio engine
    (kernels/kern.h) on the worker's device, with its stages reported as
    progress so `beamfleet status` shows where each task is. */

#include "worker_task.h"

#include "../kernels/kern.h"

bf_err_t worker_boresight(worker_task_ctx_t *ctx, json_t **result, char *err)
{
    kern_run_opts_t opts = {
        .backend = ctx->cpu ? 1 : 0,
        .threads = ctx->threads,
        .maps_dir = NULL,
        .cancel = ctx->cancel,
    };
    return kern_boresight(ctx->scene_dir, ctx->job, &opts, ctx->progress, ctx->ud, result, err);
}
