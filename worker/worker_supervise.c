/*  worker/worker_supervise.c - the supervisor behind `beamfleet worker`:
    finds the GPUs in a short-lived child (worker_device_probe, so this
    process never starts CUDA and forks safely), then runs one worker
    process per device, each a fresh exec of /proc/self/exe with
    CUDA_VISIBLE_DEVICES set before anything touches CUDA, or CPU workers
    sharing the cores. A worker that dies is restarted with exponential
    backoff; SIGTERM and SIGINT are passed on, and the supervisor returns
    once every worker has drained. */

#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN   256
#define BACKOFF_MIN_S  1
#define BACKOFF_MAX_S  30
#define HEALTHY_MS     60000
#define CHILD_ARGS_MAX 256

/* Signals seen; the handler only counts (the supervisor is a process of its own). */
static volatile sig_atomic_t signals_seen;

static void on_signal(int sig)
{
    (void)sig;
    if (signals_seen < 100)
        signals_seen++;
}

typedef struct {
    pid_t pid;
    int device;       /* host GPU index, -1 for a CPU worker */
    char visible[64]; /* CUDA_VISIBLE_DEVICES for it */
    int64_t started, restart_at;
    unsigned backoff_s;
} child_t;

/* In the child after fork: becomes one worker. Never returns. */
static void become_worker(const worker_config_t *base, const child_t *c, unsigned threads,
                          char *const child_argv[], pid_t supervisor)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* the supervisor died: drain */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    if (getppid() != supervisor)
        _exit(0); /* the supervisor is gone already */
    setenv("CUDA_VISIBLE_DEVICES", c->device >= 0 ? c->visible : "", 1);
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%u", threads);
    if (child_argv) {
        char dbuf[16];
        snprintf(dbuf, sizeof dbuf, "%d", c->device);
        const char *args[CHILD_ARGS_MAX + 5];
        size_t n = 0;
        while (child_argv[n] && n < CHILD_ARGS_MAX) {
            args[n] = child_argv[n];
            n++;
        }
        args[n++] = "--device";
        if (c->device >= 0) {
            args[n++] = dbuf;
        } else {
            args[n++] = "cpu";
            args[n++] = "--threads";
            args[n++] = tbuf;
        }
        args[n] = NULL;
        execv("/proc/self/exe", (char *const *)args);
        fprintf(stderr, "worker supervisor: cannot exec /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    worker_config_t cfg = *base;
    cfg.stop = NULL;
    if (c->device >= 0) {
        cfg.device_index = c->device;
        cfg.cpu = false;
    } else {
        cfg.device_index = -1;
        cfg.cpu = true;
        cfg.threads = threads;
    }
    _exit(worker_main(&cfg));
}

static void start_child(const worker_config_t *base, child_t *c, unsigned threads,
                        char *const child_argv[])
{
    fflush(NULL);
    pid_t self = getpid();
    pid_t pid = fork();
    if (pid == 0)
        become_worker(base, c, threads, child_argv, self);
    c->started = bf_mono_ms();
    if (pid < 0) {
        bf_error("fork: %s", strerror(errno));
        c->pid = 0;
        c->restart_at = c->started + 1000 * (int64_t)c->backoff_s;
        return;
    }
    c->pid = pid;
    if (c->device >= 0)
        bf_info("worker %d started (gpu%d)", (int)pid, c->device);
    else
        bf_info("worker %d started (cpu)", (int)pid);
}

/* The k-th entry of a CUDA_VISIBLE_DEVICES list, or k itself. */
static void visible_name(const char *parent, int k, char *out, size_t n)
{
    snprintf(out, n, "%d", k);
    if (!parent || !*parent)
        return;
    char *copy = bf_strdup(parent), *save = NULL;
    int i = 0;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok;
         tok = strtok_r(NULL, ",", &save), i++)
        if (i == k) {
            bf_strlcpy(out, tok, n);
            break;
        }
    free(copy);
}

/* Fills kids from gpus; returns -1 (message printed) for a bad list. */
static int plan(const worker_config_t *base, const char *gpus, unsigned cpu_workers, child_t *kids)
{
    int n = 0;
    bool want_gpus = gpus && strcmp(gpus, "none") != 0 && !base->cpu;
    size_t count = 0;
    worker_device_t devs[64];
    if (want_gpus) {
        char err[BF_ERRLEN] = "";
        if (worker_device_probe(devs, BF_ARRAY_LEN(devs), &count, err) != BF_OK)
            bf_warn("%s: assuming no GPU", err);
    }
    const char *parent = getenv("CUDA_VISIBLE_DEVICES");
    if (want_gpus && !strcmp(gpus, "all")) {
        for (size_t i = 0; i < count && n < MAX_CHILDREN; i++, n++) {
            kids[n] = (child_t){.device = (int)i, .backoff_s = BACKOFF_MIN_S};
            visible_name(parent, (int)i, kids[n].visible, sizeof kids[n].visible);
        }
    } else if (want_gpus) {
        char *copy = bf_strdup(gpus), *save = NULL;
        if (!copy)
            return -1;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *end;
            errno = 0;
            long d = strtol(tok, &end, 10);
            bool dup = false;
            for (int k = 0; k < n; k++)
                dup |= kids[k].device == d;
            if (end == tok || *end || errno || d < 0 || d >= (long)count || dup ||
                n == MAX_CHILDREN) {
                if (!(end == tok || *end || errno || d < 0) && d >= (long)count)
                    fprintf(stderr,
                            "beamfleet worker: --gpus %s: GPU %ld not present (%zu found)\n", gpus,
                            d, count);
                else
                    fprintf(stderr,
                            "beamfleet worker: --gpus: expected all, none or a list like 0,2; "
                            "got '%s'\n",
                            gpus);
                free(copy);
                return -1;
            }
            kids[n] = (child_t){.device = (int)d, .backoff_s = BACKOFF_MIN_S};
            visible_name(parent, (int)d, kids[n].visible, sizeof kids[n].visible);
            n++;
        }
        free(copy);
        if (n == 0) {
            fprintf(stderr, "beamfleet worker: --gpus: empty list\n");
            return -1;
        }
    }
    if (n == 0) {
        unsigned k = cpu_workers ? cpu_workers : 1;
        for (unsigned i = 0; i < k && n < MAX_CHILDREN; i++, n++)
            kids[n] = (child_t){.device = -1, .backoff_s = BACKOFF_MIN_S};
    }
    return n;
}

int worker_supervise(const worker_config_t *base, const char *gpus, unsigned cpu_workers,
                     char *const child_argv[])
{
    child_t *kids = calloc(MAX_CHILDREN, sizeof *kids);
    if (!kids)
        return 1;
    int n = plan(base, gpus, cpu_workers, kids);
    if (n < 0) {
        free(kids);
        return 2;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned cpus = 0;
    for (int i = 0; i < n; i++)
        cpus += kids[i].device < 0;
    unsigned threads = base->threads;
    if (!threads && cpus)
        threads = (unsigned)((cores > 0 ? cores : 1) / cpus);
    if (cpus && !threads)
        threads = 1;
    signals_seen = 0;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i < n; i++)
        start_child(base, &kids[i], threads, child_argv);
    bf_info("supervising %d worker%s", n, n == 1 ? "" : "s");
    int forwarded = 0;
    for (;;) {
        int seen = signals_seen;
        if (seen > forwarded) {
            int sig = seen == 1 ? SIGTERM : SIGKILL; /* a second signal: no more waiting */
            for (int i = 0; i < n; i++)
                if (kids[i].pid > 0)
                    kill(kids[i].pid, sig);
            bf_info("%s the workers", sig == SIGTERM ? "draining" : "killing");
            forwarded = seen;
        }
        int status;
        pid_t pid;
        int64_t now = bf_mono_ms();
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < n; i++) {
                child_t *c = &kids[i];
                if (c->pid != pid)
                    continue;
                c->pid = 0;
                bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_REFUSED) {
                    c->pid = -1; /* restarting cannot fix a refused key */
                    bf_error("worker %d was refused by the broker; not restarting it", (int)pid);
                    break;
                }
                if (signals_seen || clean) {
                    c->pid = -1; /* done: drained */
                    bf_info("worker %d exited", (int)pid);
                    break;
                }
                if (now - c->started > HEALTHY_MS)
                    c->backoff_s = BACKOFF_MIN_S;
                c->restart_at = now + 1000 * (int64_t)c->backoff_s;
                if (WIFSIGNALED(status))
                    bf_warn("worker %d killed by signal %d; restarting in %u s", (int)pid,
                            WTERMSIG(status), c->backoff_s);
                else
                    bf_warn("worker %d exited with %d; restarting in %u s", (int)pid,
                            WEXITSTATUS(status), c->backoff_s);
                c->backoff_s = c->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : c->backoff_s * 2;
            }
        }
        bool any = false;
        for (int i = 0; i < n; i++) {
            if (!signals_seen && kids[i].pid == 0 && now >= kids[i].restart_at)
                start_child(base, &kids[i], threads, child_argv);
            any |= kids[i].pid > 0 || (!signals_seen && kids[i].pid == 0);
        }
        if (!any)
            break;
        usleep(50000);
    }
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    free(kids);
    bf_info("every worker has exited");
    return 0;
}
