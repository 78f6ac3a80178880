/*  worker/worker_boresight.c - the boresight task: the radio engine
    (kernels/kern.h, kern_boresight) on the worker's device, the CUDA backend
    on a GPU worker and the CPU backend on a CPU worker, with the engine's
    stages (load, trace, optimize, maps) passed on as progress so `beamfleet
    status` shows where each task is. */

#include "worker.h"

#include "../kernels/kern.h"

#include <string.h>

bf_err_t worker_boresight(worker_task_ctx_t *ctx, json_t **result, char *err)
{
    bool gpu = ctx->dev && !strcmp(ctx->dev->backend, "cuda");
    kern_run_opts_t opts = {
        .backend = gpu ? 2 : 1,
        .threads = ctx->threads,
        .maps_dir = NULL,
        .cancel = ctx->cancel,
    };
    return kern_boresight(ctx->scene_dir, ctx->job, &opts, ctx->progress, ctx->ud, result, err);
}
