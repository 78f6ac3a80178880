/*  worker/worker.h - the worker: runs tasks from the broker on one device (a
    GPU, or the CPU) as docs/fleet semantics describe. One worker process has
    a socket thread that owns the DEALER (registration, heartbeats, credit,
    progress, results kept until the broker's ACK, reconnection with backoff
    and jitter, drain on SIGTERM) and is never blocked by a task, and a task
    thread that runs handlers one at a time (an exec task's program is
    waited for on the socket thread, in the same poll as the DEALER). A supervisor runs one worker
    process per device and restarts a crashed one. This is the folder's one
    public header: configuration, devices, the handler table's types, the
    two handlers, worker_main and worker_supervise. */

#ifndef WORKER_H_INCLUDED
#define WORKER_H_INCLUDED

#include "../common/bf.h"
#include "../common/bf_config.h"
#include "../common/bf_security.h"

#include <jansson.h>
#include <signal.h>

/* ---- configuration --------------------------------------------------------- */
typedef struct {
    const char *broker;    /* endpoint, e.g. tcp://127.0.0.1:5555 */
    unsigned heartbeat_ms; /* [1000] */
    unsigned liveness;     /* [3] */
    unsigned prefetch;     /* tasks held at once (READY credit) [1] */
    /* While tasks are short the credit rises above prefetch to hold about
       this much work (worker.c, adapt_credit) [0: 5 ms]; < 0: it stays at
       prefetch (tests that count READYs). */
    double hold_ms;
    const char **allow_exec; /* programs (or interpreter scripts) exec tasks may run */
    size_t allow_exec_count;
    const char **interpreters; /* interpreters besides those on PATH (worker_exec.c) */
    size_t interpreter_count;
    int device_index; /* GPU index as the host numbers it, -1 for the CPU */
    bool cpu;         /* a CPU worker (device_index is then ignored) */
    unsigned threads; /* CPU engine threads, 0 = all cores */
    const char *name; /* name prefix [host]; the worker is "name:pid:gpuN" or "name:pid:cpu" */
    /* The worker and the tasks it starts run as SCHED_BATCH (sched(7): no
       preemption on wake-up, the same share of the CPU), unless this is
       set: they keep the policy they were started with. */
    bool sched_inherit;
    /* NULL: worker_main installs SIGTERM/SIGINT handlers that set a flag of
       its own. Otherwise the caller (a test, an embedding program) sets
       *stop non-zero to drain; no handler is installed. */
    volatile sig_atomic_t *stop;
    /* CURVE identity (bf_security.h), borrowed; NULL for plaintext. */
    const bf_security_t *security;
} worker_config_t;

/* ---- devices ---------------------------------------------------------------- */
typedef struct {
    int index;              /* as the host numbers it; -1 for the CPU */
    char uuid[48];          /* GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, "" for the CPU */
    char name[128];         /* "NVIDIA H100 80GB HBM3", or the CPU model */
    uint64_t memory_bytes;  /* device memory, or the host's RAM */
    int cc_major, cc_minor; /* compute capability, 0.0 for the CPU */
    char backend[8];        /* "cuda" | "cpu" */
    char unusable[224];     /* "": usable; else why not (kern_device_t.unusable) */
} worker_device_t;

/* Lists the CUDA devices visible to this process (CUDA's own numbering, as
   CUDA_VISIBLE_DEVICES leaves it) without initializing CUDA here: a
   short-lived forked child asks the CUDA runtime, writes the list to a pipe
   and exits (bounded wait of 20 s). *count is 0 in a build without CUDA or on
   a host without a usable device (that is not an error). A device is
   listed with unusable set when its probe launch failed (the caller must
   not run on it). BF_ECHILD when the child could not be run or said
   nothing sensible. BEAMFLEET_FAULT_GPU=REASON lists one more, unusable
   with REASON (fault injection for the tests). */
bf_err_t worker_device_probe(worker_device_t *out, size_t max, size_t *count,
                             char *err) BF_MUST_CHECK;

/* Describes the CPU as a device: index -1, the model from /proc/cpuinfo,
   the host's memory from sysinfo(2), backend "cpu". */
void worker_device_cpu(worker_device_t *out);

/* ---- GPU figures (NVML) ------------------------------------------------------ */
/* One GPU's live figures, sent to the broker as STATS every 5 s. */
typedef struct {
    double gpu_util;              /* percent, 0..100 */
    uint64_t mem_used, mem_total; /* bytes */
    double temperature_c;
} worker_gpu_stats_t;

typedef struct worker_nvml worker_nvml_t;

/* Opens NVML (libnvidia-ml.so.1 loaded with dlopen at run time, or
   $BEAMFLEET_NVML_LIB) for the GPU with this CUDA UUID ("GPU-..."). NULL
   with err (BF_ERRLEN, may be NULL) saying why when there is no NVML, no
   such device or no UUID: the worker then simply sends no figures. */
worker_nvml_t *worker_nvml_new(const char *uuid, char *err);

/* Reads the figures now (a few NVML calls, well under a millisecond).
   BF_EIO with err when NVML fails (the GPU fell off the bus, the driver
   was reloaded). */
bf_err_t worker_nvml_sample(worker_nvml_t *self, worker_gpu_stats_t *out, char *err) BF_MUST_CHECK;

/* The STATS document {gpu_util, mem_used, mem_total, temperature_c}; NULL
   out of memory. */
json_t *worker_gpu_stats_json(const worker_gpu_stats_t *stats);

/* Shuts NVML down and unloads it; NULL-safe, nulls *self_p. */
void worker_nvml_destroy(worker_nvml_t **self_p);

/* ---- task handlers ------------------------------------------------------------ */
struct pollfd;

/* What a handler is given. It runs on the worker's task thread (an exec
   task on the socket thread, see wait), reports progress through
   progress(ud, stage, fraction) and must return promptly once *cancel is
   non-zero (the worker sets it on ABORT and at the deadline). */
typedef struct {
    const char *scene_dir; /* scenes_root/scene, the scene name already checked */
    const char *scene;
    const bf_job_t *job;  /* validated with bf_job_from_json */
    int64_t deadline_ms;  /* bf_mono_ms() limit of this attempt */
    volatile int *cancel; /* non-zero: stop now */
    const worker_device_t *dev;
    unsigned threads;        /* CPU threads, 0 = all cores */
    const char **allow_exec; /* the worker's exec allow list */
    size_t allow_exec_count;
    const char **interpreters; /* besides those found on the worker's PATH */
    size_t interpreter_count;
    void (*progress)(void *ud, const char *stage, double fraction);
    void *ud;
    /* NULL: the exec handler waits for its program with poll(2). Else it
       waits with wait(wait_ud, fds, nfds, timeout_ms), which is poll(2) on
       fds (same return, revents filled) and may meanwhile serve other
       work: the worker runs exec tasks on its socket thread and serves
       the broker's connection there while the program runs. It may return
       0 before timeout_ms with nothing ready; it must not block past
       timeout_ms. */
    int (*wait)(void *wait_ud, struct pollfd *fds, int nfds, int timeout_ms);
    void *wait_ud;
} worker_task_ctx_t;

/* A handler produces the task's result document (at least "status"; the
   worker adds the fleet fields). A non-OK return becomes a result with
   status "error" and err (BF_ERRLEN) as its reason, and the fault that
   worker_fault() gives for the code; BF_ECANCELED after the deadline
   becomes "timeout after N s". A handler's own document may blame only the
   task (fault "task"); any other "fault" in it is dropped. */
typedef bf_err_t (*worker_handler_fn)(worker_task_ctx_t *ctx, json_t **result, char *err);

/* Fault attribution of a failed task (the "fault" field of a result with
   status "error", docs/protocol.md): "task" when the failure was decided by
   the job's own input (BF_EINVAL: a scene that does not load, parse or
   validate, exec output that is not a result, a result too large;
   BF_EPERM: a program not allowed; BF_ENOENT: a program not found;
   BF_EPROTO: a job spec that does not decode), "device" when it points at
   the device (BF_ECUDA: a CUDA error, device out of memory), NULL
   (unattributed) for everything else: timeouts, cancels, crashes, host
   memory, I/O. The broker counts only "device" toward quarantine. */
const char *worker_fault(bf_err_t rc);

/* The longest exec result line taken (the last line of the task's stdout):
   a notebook-style result with 3,000 zone cells is about 121 kB. */
#define WORKER_RESULT_MAX (16u << 20)

/* The exec task (DESIGN section 3): refuses (BF_EPERM, "exec not allowed:
   PROG") unless the program, or for an interpreter the script argv[1], is
   in the allow list (the string as given, or both resolved to the same
   absolute path). A program is an interpreter only by its resolved path:
   the real path of argv[0] as PATH finds it must be the real path of one of
   the known interpreters (python, python3, python3.N, sh, bash, dash, perl,
   ruby, node, Rscript, julia, pypy3) found anywhere on the worker's PATH;
   a file merely named python3 is not one. A program that cannot be found
   or executed is BF_ENOENT / BF_EPERM (the task's fault). It substitutes
   {scene_dir}, {scene}, {output}; runs the program it checked (by the path
   found) in its own process group with CUDA_VISIBLE_DEVICES (the device, ""
   for the CPU), BEAMFLEET_SCENE and BEAMFLEET_GPU_ID set. The result is the
   last non-empty line of stdout written by the time the program's main
   process exits (what its background children still write, or hold open,
   does not count: once the main process is gone the group is killed); it
   must be a JSON object with a string "status" and at most
   WORKER_RESULT_MAX bytes, else BF_EINVAL says exactly why. A non-zero
   exit gives a result with status "error" and the tail of stderr (up to 4
   KiB) as reason. At the deadline it kills the group (SIGTERM, SIGKILL
   after 2 s) and returns BF_ETIMEDOUT "timeout after N s"; *cancel the
   same way, BF_ECANCELED. The forking thread must live as long as the task
   may run: the program gets SIGKILL when it exits (PR_SET_PDEATHSIG). Every
   wait (for output, for the exit, for the kill) goes through ctx->wait
   when it is set. */
bf_err_t worker_exec(worker_task_ctx_t *ctx, json_t **result, char *err) BF_MUST_CHECK;

/* The boresight task: kern_boresight() (kernels/kern.h) on the worker's
   device (the CUDA backend on a GPU worker, the CPU backend on a CPU
   worker), its stages reported as progress, its result turned into the
   document by worker_boresight_json. */
bf_err_t worker_boresight(worker_task_ctx_t *ctx, json_t **result, char *err) BF_MUST_CHECK;

/* The job option sionna_check (worker_sionna_check.c): when the job has
   one, runs its program on the scene as an exec task (the allow list, the
   deadline, the cancel flag of ctx) at the scene's orientation and at the
   one in res's boresight_optimized, and adds "sionna_check" to res: NMSE of
   the zone maps in dB and both engines' gains, or {"error": why}. It never
   fails the task. */
void worker_sionna_check(worker_task_ctx_t *ctx, json_t *res);

/* The engine's types (kernels/kern.h), named here so that this header
   does not pull the engine in. */
typedef struct kern_boresight_opts kern_boresight_opts_t;
typedef struct kern_boresight_result kern_boresight_result_t;

/* Fills *opts for kern_boresight from a job: its solver, measurement,
   optimizer and validation settings, and the defaults for the rest
   (KERN_BACKEND_AUTO, all cores, no maps, no cancel flag, no progress)
   for the caller to change. The worker and `beamfleet solve` both use it. */
void worker_boresight_opts(const bf_job_t *job, kern_boresight_opts_t *opts);

/* The boresight part of the RESULT document (docs/protocol.md section 13)
   for what kern_boresight found: status ("success", or "failed" when the
   initial zone failed validation), reason, zone_power_initial,
   zone_power_optimized, stats, boresight_initial, boresight_optimized,
   timings, solver, evaluations, objective and thumbnails (dBm rounded to
   0.1 dB, null for a block no ray reached). The fleet fields are the
   worker's to add. The one conversion, shared by the worker and `beamfleet
   solve`. A new document owned by the caller; NULL when out of memory. */
json_t *worker_boresight_json(const kern_boresight_result_t *result);

/* The handler for a task kind name ("exec", "boresight"), or NULL. */
worker_handler_fn worker_handler(const char *task);

/* ---- running -------------------------------------------------------------------- */
/* A worker's name as the broker knows it: "PREFIX:pid:gpuN" for GPU N (the
   host's numbering), "PREFIX:pid:cpu" for device < 0; PREFIX is prefix, or
   this host's name when prefix is NULL or "". Written into buf (n bytes). */
void worker_name(char *buf, size_t n, const char *prefix, long pid, int device);

/* Exit code of worker_main asking its supervisor for a fresh process (a
   task that would not stop, or a CUDA failure that may have left the
   context unusable); the result was delivered first. */
#define WORKER_EXIT_RESTART 3
/* Exit code of worker_main when the broker refused this worker (its CURVE
   key's role is not worker or admin): a configuration error, not restarted. */
#define WORKER_EXIT_REFUSED 4

/* Runs one worker until it is told to stop (SIGTERM/SIGINT, or *cfg->stop):
   then it takes no more tasks, finishes the running one, delivers its
   result and waits (at most 10 s) for the ACK, says GOODBYE and returns 0.
   Returns 1 when it cannot start (bad endpoint), WORKER_EXIT_RESTART as
   above. A GPU worker (cpu false, device_index >= 0) whose
   CUDA_VISIBLE_DEVICES is unset sets it to device_index before anything
   touches CUDA; with no usable GPU it runs as a CPU worker (logged). */
int worker_main(const worker_config_t *cfg);

/* The supervisor behind `beamfleet worker`. gpus is "all", "none" or a
   list "0,2" (indices below the number of visible GPUs). It finds the GPUs
   in a short-lived child (it never initializes CUDA itself), then runs one
   worker process per GPU, or, when no GPU is selected ("none", or "all" on
   a host without one), cpu_workers CPU workers [1] sharing the cores
   (base->threads each, or cores / workers).

   Each worker is started with fork + exec of /proc/self/exe with
   child_argv (NULL-terminated; argv[0] first, e.g. {"beamfleet", "worker",
   "--broker", EP, ...the options the supervisor was given..., NULL})
   followed by
       "--device", "N"                          for GPU N, or
       "--device", "cpu", "--threads", "T"      for a CPU worker,
   with CUDA_VISIBLE_DEVICES set to that GPU (or "") in its environment
   before exec. The program must map "--device N" / "--device cpu" to
   worker_main with device_index N / cpu true. With child_argv NULL the
   child is a plain fork that calls worker_main (for tests and embedding).

   The program is exec'd by its real path (bf_self_exe; /proc/self/exe
   only when that cannot be read), so ps shows it by name.

   A worker that dies, or exits non-zero, is restarted with backoff (1 s
   doubling to 30 s, back to 1 s after 60 s of health); one that exits 0 by
   itself has drained and is not restarted. A worker that dies unexpectedly
   (a signal, a non-zero exit) is reported to base->broker at once with
   LOST (its worker_name, and how it died) over the supervisor's own DEALER
   (base->security), so the broker requeues its task without waiting for
   heartbeats; the send never blocks. The supervisor is a child subreaper
   (PR_SET_CHILD_SUBREAPER): whatever a worker's tasks leave behind (a
   dead worker's task tree, setsid'd processes included) is reparented to
   it and killed (SIGKILL to the process's group, unless that is the
   supervisor's own, and to the process), so a task's processes die with
   their worker whatever killed it. The supervisor therefore kills every
   child of its own that is not one of its workers: call it from a process
   that has no other children.

   A worker refused by the broker (WORKER_EXIT_REFUSED), one that cannot be
   exec'd (exit 126/127) or stops at once with a usage error (exit 2) three
   times in a row, or one that cannot be forked three times in a row, is
   given up. SIGTERM/SIGINT are passed on to every worker (a second one
   sends SIGKILL); each worker dies with SIGTERM if the supervisor dies.
   Returns 0 once every worker has exited (drained, or stopped by a
   signal), 1 when a worker was given up (a one-line reason logged last) or
   out of memory, 2 for a bad gpus list (message on stderr). */
int worker_supervise(const worker_config_t *base, const char *gpus, unsigned cpu_workers,
                     char *const child_argv[]);

#endif
