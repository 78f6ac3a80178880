/*  worker/worker.h - the worker: runs tasks from the broker on one device
    (a GPU, or the CPU), with heartbeats that keep flowing while a task runs,
    results kept until the broker acknowledges them, reconnection with
    backoff and jitter, and a drain on SIGTERM. A supervisor starts one
    worker per device and restarts a crashed one. Task kinds are a table of
    handlers: exec (an allowed program) and boresight (the radio engine). */

#ifndef WORKER_H_INCLUDED
#define WORKER_H_INCLUDED

#include "../common/bf.h"

typedef struct {
    const char *broker;      /* endpoint */
    unsigned heartbeat_ms;   /* [1000] */
    unsigned liveness;       /* [3] */
    unsigned prefetch;       /* tasks held at once [1] */
    const char **allow_exec; /* programs exec tasks may run */
    size_t allow_exec_count;
    int device_index; /* GPU index as the host numbers it, -1 for the CPU */
    bool cpu;         /* use the CPU engine */
    unsigned threads; /* CPU engine threads, 0 = all cores */
    const char *name; /* name prefix [host] */
} worker_config_t;

/* Runs one worker until it is told to stop (SIGTERM/SIGINT: drain) and
   returns the process exit code (0 after a clean drain). Installs its own
   signal handlers. */
int worker_main(const worker_config_t *cfg);

/* The supervisor: gpus is "all", "none" or a list "0,2". With GPUs it runs
   one worker per device, each in its own process with CUDA_VISIBLE_DEVICES
   set before CUDA starts; without (or with "none") it runs cpu_workers CPU
   workers [1], sharing the cores. A worker that crashes is restarted with
   backoff (1 s doubling to 30 s, reset after 60 s of health). SIGTERM and
   SIGINT are passed on; returns 0 when every worker has drained, 2 for a
   bad gpus list. */
int worker_supervise(const worker_config_t *base, const char *gpus, unsigned cpu_workers);

#endif
