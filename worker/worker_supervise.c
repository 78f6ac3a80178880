/*  worker/worker_supervise.c - the supervisor behind `beamfleet worker`:
    finds the GPUs in a short-lived child (so this process never starts
    CUDA and can fork safely), then runs one worker process per device with
    CUDA_VISIBLE_DEVICES set before anything touches CUDA, or CPU workers
    sharing the cores. A worker that dies is restarted with backoff; SIGTERM
    and SIGINT are passed on and the supervisor exits once all have drained. */

#include "worker.h"

#include "../kernels/kern.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN 64

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* Counts CUDA devices in a child process; 0 without CUDA. */
static int count_gpus(void)
{
    int fd[2];
    if (pipe(fd) != 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        kern_device_t devs[MAX_CHILDREN];
        int n = kern_cuda_devices(devs, MAX_CHILDREN);
        ssize_t w = write(fd[1], &n, sizeof n);
        _exit(w == sizeof n ? 0 : 1);
    }
    close(fd[1]);
    int n = 0;
    if (pid < 0 || read(fd[0], &n, sizeof n) != sizeof n)
        n = 0;
    close(fd[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return n;
}

typedef struct {
    pid_t pid;
    int device; /* -1 for a CPU worker */
    int64_t started, restart_at;
    unsigned backoff_s;
} child_t;

static pid_t start_child(const worker_config_t *base, child_t *c, unsigned threads)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* the child: a fresh worker; CUDA sees only its device */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    worker_config_t cfg = *base;
    if (c->device >= 0) {
        char dev[16];
        snprintf(dev, sizeof dev, "%d", c->device);
        setenv("CUDA_VISIBLE_DEVICES", dev, 1);
        cfg.device_index = c->device;
        cfg.cpu = false;
    } else {
        cfg.device_index = -1;
        cfg.cpu = true;
        cfg.threads = base->threads ? base->threads : threads;
    }
    _exit(worker_main(&cfg));
}

int worker_supervise(const worker_config_t *base, const char *gpus, unsigned cpu_workers)
{
    child_t kids[MAX_CHILDREN];
    size_t n = 0;
    if (!strcmp(gpus, "all")) {
        int count = base->cpu ? 0 : count_gpus();
        for (int i = 0; i < count && n < MAX_CHILDREN; i++)
            kids[n++] = (child_t){.device = i};
    } else if (strcmp(gpus, "none") != 0) {
        char *copy = bf_strdup(gpus), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *end;
            long d = strtol(tok, &end, 10);
            if (*end || d < 0 || d > 1023 || n == MAX_CHILDREN) {
                fprintf(stderr,
                        "beamfleet worker: --gpus: expected all, none or a list like "
                        "0,2; got '%s'\n",
                        gpus);
                free(copy);
                return 2;
            }
            kids[n++] = (child_t){.device = (int)d};
        }
        free(copy);
    }
    if (n == 0) {
        unsigned k = cpu_workers ? cpu_workers : 1;
        for (unsigned i = 0; i < k && n < MAX_CHILDREN; i++)
            kids[n++] = (child_t){.device = -1};
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned cpus = 0;
    for (size_t i = 0; i < n; i++)
        cpus += kids[i].device < 0;
    unsigned threads = cpus ? (unsigned)((cores > 0 ? cores : 1) / cpus) : 0;
    if (cpus && threads == 0)
        threads = 1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (size_t i = 0; i < n; i++) {
        kids[i].pid = start_child(base, &kids[i], threads);
        kids[i].started = bf_mono_ms();
        kids[i].backoff_s = 1;
    }
    bf_info("supervising %zu worker%s", n, n == 1 ? "" : "s");
    bool forwarded = false;
    for (;;) {
        if (stopping && !forwarded) {
            for (size_t i = 0; i < n; i++)
                if (kids[i].pid > 0)
                    kill(kids[i].pid, SIGTERM);
            forwarded = true;
        }
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        int64_t now = bf_mono_ms();
        if (pid > 0) {
            for (size_t i = 0; i < n; i++) {
                if (kids[i].pid != pid)
                    continue;
                kids[i].pid = 0;
                if (stopping)
                    break;
                /* healthy for a minute: the next crash starts the backoff over */
                if (now - kids[i].started > 60000)
                    kids[i].backoff_s = 1;
                kids[i].restart_at = now + 1000 * (int64_t)kids[i].backoff_s;
                bf_warn("worker %d (%s) %s %d; restarting in %u s", (int)pid,
                        kids[i].device >= 0 ? "gpu" : "cpu",
                        WIFSIGNALED(status) ? "killed by signal" : "exited with",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                        kids[i].backoff_s);
                kids[i].backoff_s = kids[i].backoff_s * 2 > 30 ? 30 : kids[i].backoff_s * 2;
            }
        }
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            if (!stopping && kids[i].pid == 0 && now >= kids[i].restart_at) {
                kids[i].pid = start_child(base, &kids[i], threads);
                kids[i].started = now;
            }
            any |= kids[i].pid > 0;
        }
        if (stopping && !any)
            return 0;
        if (pid <= 0)
            usleep(50000);
    }
}
