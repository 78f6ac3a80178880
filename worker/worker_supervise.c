/*  worker/worker_supervise.c - the supervisor behind `beamfleet worker`:
    finds the GPUs in a short-lived child (worker_device_probe, so this
    process never starts CUDA and forks safely), then runs one worker
    process per device, each a fresh exec of this program (by its real path,
    so ps shows `beamfleet worker`) with CUDA_VISIBLE_DEVICES set before
    anything touches CUDA, or CPU workers sharing the cores. A worker that
    dies is reported to the broker at once (LOST, on the supervisor's own
    DEALER) and restarted with exponential backoff; the supervisor is the
    child subreaper of everything its workers start, so when a worker dies
    the processes its task left (setsid'd ones included) come back to it and
    are killed. A worker that cannot start (refused, cannot be exec'd) is
    given up, and then the supervisor exits non-zero. SIGTERM and SIGINT are
    passed on, and the supervisor returns once every worker has drained. */

#include "worker.h"

#include "../proto/proto_link.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_CHILDREN   256
#define BACKOFF_MIN_S  1
#define BACKOFF_MAX_S  30
#define HEALTHY_MS     60000
#define CHILD_ARGS_MAX 256
#define QUICK_MS       5000 /* a worker that fails within this of its start did not start */
#define QUICK_FAILS    3    /* ... this many times in a row: given up */
#define HUNT_MS        3000 /* after a worker's death, orphans are looked for this long */
#define MAX_ORPHANS    1024 /* children looked at per pass */
#define LOST_LINGER_MS 200  /* a LOST still queued when the supervisor leaves */

/* Signals seen; the handler only counts (the supervisor is a process of its own). */
static volatile sig_atomic_t signals_seen;
/* Written by both handlers and polled by the loop in place of a sleep: a
   signal that came while the loop was busy (reaping, hunting orphans in
   /proc) still wakes the next wait at once. A sleep of its own would
   have slept on the full 50 ms after such a signal. */
static bf_wake_t wake = {0, -1};

static void on_signal(int sig)
{
    (void)sig;
    if (signals_seen < 100)
        signals_seen++;
    bf_wake_raise(&wake);
}

/* SIGCHLD only wakes the loop, so a death is seen at once. */
static void on_child(int sig)
{
    (void)sig;
    bf_wake_raise(&wake);
}

/* Sleeps up to ms, or until a signal came since the last call. */
static void wait_signal(int ms)
{
    if (wake.fd < 0) {
        usleep((useconds_t)ms * 1000); /* a signal cuts it short, unless it came before */
        return;
    }
    struct pollfd pfd = {wake.fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) > 0) {
        uint64_t n;
        ssize_t r = read(wake.fd, &n, sizeof n); /* back to unreadable */
        (void)r;
    }
}

typedef struct {
    pid_t pid;        /* > 0 running, 0 waiting for its restart, -1 finished */
    int device;       /* host GPU index, -1 for a CPU worker */
    char visible[64]; /* CUDA_VISIBLE_DEVICES for it */
    int64_t started, restart_at;
    unsigned backoff_s;
    unsigned quick_fails; /* failed starts in a row */
    bool given_up;
    char why[160]; /* why it was given up */
} child_t;

extern char **environ;

/* What an exec'd worker is started with, made before the fork: the
   supervisor has a ZeroMQ I/O thread, so the child only calls
   async-signal-safe functions until exec. */
typedef struct {
    const char *args[CHILD_ARGS_MAX + 6];
    char **env; /* environ with our CUDA_VISIBLE_DEVICES; the strings are environ's */
    char cvd[96], dbuf[16], tbuf[16];
} launch_t;

/* Fills l for c; false out of memory. */
static bool launch_prepare(launch_t *l, const child_t *c, unsigned threads,
                           char *const child_argv[])
{
    snprintf(l->cvd, sizeof l->cvd, "CUDA_VISIBLE_DEVICES=%s", c->device >= 0 ? c->visible : "");
    snprintf(l->dbuf, sizeof l->dbuf, "%d", c->device);
    snprintf(l->tbuf, sizeof l->tbuf, "%u", threads);
    size_t n = 0;
    while (child_argv[n] && n < CHILD_ARGS_MAX) {
        l->args[n] = child_argv[n];
        n++;
    }
    l->args[n++] = "--device";
    if (c->device >= 0) {
        l->args[n++] = l->dbuf;
    } else {
        l->args[n++] = "cpu";
        l->args[n++] = "--threads";
        l->args[n++] = l->tbuf;
    }
    l->args[n] = NULL;
    size_t ne = 0;
    while (environ && environ[ne])
        ne++;
    if (!(l->env = calloc(ne + 2, sizeof *l->env)))
        return false;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) != 0)
            l->env[k++] = environ[i];
    l->env[k++] = l->cvd;
    l->env[k] = NULL;
    return true;
}

/* In the child after fork: becomes one worker. Never returns. l is NULL
   for a worker that is not exec'd (child_argv NULL: tests, embedding). */
static void become_worker(const worker_config_t *base, const child_t *c, unsigned threads,
                          const launch_t *l, const char *self, pid_t supervisor)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* the supervisor died: drain */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGCHLD, &dfl, NULL);
    if (getppid() != supervisor)
        _exit(0); /* the supervisor is gone already */
    if (l) {
        if (*self)
            execve(self, (char *const *)l->args, l->env);
        execve("/proc/self/exe", (char *const *)l->args, l->env);
        static const char msg[] = "worker supervisor: cannot exec this program\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    setenv("CUDA_VISIBLE_DEVICES", c->device >= 0 ? c->visible : "", 1);
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

/* One failed start (fork failure, refusal, exec failure, usage error) of
   c; the QUICK_FAILS-th in a row gives it up. */
static void failed_start(child_t *c, const char *why)
{
    if (++c->quick_fails < QUICK_FAILS)
        return;
    c->given_up = true;
    c->pid = -1;
    snprintf(c->why, sizeof c->why, "%s (%u times in a row)", why, c->quick_fails);
}

static void start_child(const worker_config_t *base, child_t *c, unsigned threads,
                        char *const child_argv[], const char *self)
{
    launch_t launch;
    if (child_argv && !launch_prepare(&launch, c, threads, child_argv)) {
        bf_error("cannot start a worker: out of memory");
        c->pid = 0;
        c->started = bf_mono_ms();
        c->restart_at = c->started + 1000 * (int64_t)c->backoff_s;
        failed_start(c, "cannot start: out of memory");
        return;
    }
    fflush(NULL);
    pid_t me = getpid();
    pid_t pid = fork();
    if (pid == 0)
        become_worker(base, c, threads, child_argv ? &launch : NULL, self, me);
    if (child_argv)
        free(launch.env);
    c->started = bf_mono_ms();
    if (pid < 0) {
        char why[128];
        snprintf(why, sizeof why, "cannot fork: %s", strerror(errno));
        bf_error("%s", why);
        c->pid = 0;
        c->restart_at = c->started + 1000 * (int64_t)c->backoff_s;
        failed_start(c, why);
        return;
    }
    c->pid = pid;
    if (c->device >= 0)
        bf_info("worker %d started (gpu%d)", (int)pid, c->device);
    else
        bf_info("worker %d started (cpu)", (int)pid);
}

/* ---- orphans ---------------------------------------------------------------------- */

/* The children of process parent (every thread's, from /proc/P/task/T/
   children; orphans reparented to a subreaper are among them) into out;
   returns how many (at most max), or -1 when the kernel does not list them. */
static int list_children(pid_t parent, pid_t *out, int max)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%ld/task", (long)parent);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    bool listed = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[128];
        snprintf(path, sizeof path, "%s/%.32s/children", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        listed = true;
        long pid;
        while (n < max && fscanf(f, "%ld", &pid) == 1)
            out[n++] = (pid_t)pid;
        fclose(f);
    }
    closedir(d);
    return listed ? n : -1;
}

/* The same by scanning /proc/PID/stat for parent as the parent. */
static int scan_children(pid_t parent, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        bf_proc_t ps;
        pid_t pid = (pid_t)atol(e->d_name);
        if (bf_proc_stat(pid, &ps) && ps.ppid == parent)
            out[n++] = pid;
    }
    closedir(d);
    return n;
}

static int children_of(pid_t parent, pid_t *out, int max)
{
    int n = list_children(parent, out, max);
    return n >= 0 ? n : scan_children(parent, out, max);
}

/* Kills every child that is not one of the workers: what a dead worker's
   tasks left, reparented here (SIGKILL to its process group, unless that is
   ours, the workers' too, and to it). A process still in the group of a
   live worker's running task (a task's `( cmd & )`) is left to that
   worker, which kills the group when the task ends. Returns how many were
   killed. */
static int kill_orphans(const child_t *kids, int nkids)
{
    pid_t *pids = malloc(2 * MAX_ORPHANS * sizeof *pids);
    if (!pids)
        return 0;
    pid_t *live = pids + MAX_ORPHANS; /* groups of the running tasks */
    int nlive = 0;
    for (int k = 0; k < nkids && nlive < MAX_ORPHANS; k++) {
        if (kids[k].pid <= 0)
            continue;
        int got = children_of(kids[k].pid, live + nlive, MAX_ORPHANS - nlive);
        for (int i = 0; i < got; i++)
            live[nlive + i] = getpgid(live[nlive + i]);
        nlive += got;
    }
    int n = children_of(getpid(), pids, MAX_ORPHANS);
    pid_t own = getpgrp();
    int killed = 0;
    for (int i = 0; i < n; i++) {
        bool spare = pids[i] <= 1;
        for (int k = 0; k < nkids && !spare; k++)
            spare = kids[k].pid == pids[i];
        pid_t pgid = getpgid(pids[i]);
        for (int k = 0; k < nlive && !spare; k++)
            spare = pgid > 1 && live[k] == pgid;
        if (spare)
            continue;
        if (pgid > 1 && pgid != own)
            kill(-pgid, SIGKILL);
        kill(pids[i], SIGKILL);
        killed++;
    }
    free(pids);
    return killed;
}

/* ---- reporting a death -------------------------------------------------------------- */

/* Tells the broker at once that the worker pid (on device) died, how in
   reason; never blocks (a full queue drops it: heartbeats still tell). */
static void send_lost(void *dealer, const worker_config_t *base, pid_t pid, int device,
                      const char *reason)
{
    if (!dealer)
        return;
    char name[256];
    worker_name(name, sizeof name, base->name, (long)pid, device);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_LOST);
    bf_err_t rc = BF_ENOMEM;
    if (proto_msg_set(&m.worker, name) == BF_OK && proto_msg_set(&m.reason, reason) == BF_OK) {
        /* the task's processes die now too: their SIGCHLD may interrupt */
        for (int tries = 0; tries < 5; tries++)
            if ((rc = proto_send(dealer, NULL, 0, &m, ZMQ_DONTWAIT)) == BF_OK ||
                zmq_errno() != EINTR)
                break;
    }
    if (rc == BF_OK)
        bf_info("told the broker: worker %s lost (%s)", name, reason);
    else
        bf_warn("worker %s lost (%s): the broker could not be told now (%s)", name, reason,
                rc == BF_ENOMEM ? "out of memory" : zmq_strerror(zmq_errno()));
    proto_msg_clear(&m);
}

/* Whatever the broker answers on the supervisor's DEALER is not needed. */
static void drain_dealer(void *dealer)
{
    for (int i = 0; dealer && i < 64; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int rc = zmq_msg_recv(&msg, dealer, ZMQ_DONTWAIT);
        zmq_msg_close(&msg);
        if (rc < 0)
            break;
    }
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
        /* all: the usable ones; an unusable GPU is said once and left out
           (none usable: CPU workers, as on a host without a GPU) */
        for (size_t i = 0; i < count && n < MAX_CHILDREN; i++) {
            if (devs[i].unusable[0]) {
                bf_error("GPU %zu (%s) is unusable, no worker for it: %s", i, devs[i].name,
                         devs[i].unusable);
                continue;
            }
            kids[n] = (child_t){.device = (int)i, .backoff_s = BACKOFF_MIN_S};
            visible_name(parent, (int)i, kids[n].visible, sizeof kids[n].visible);
            n++;
        }
        if (n == 0 && count > 0)
            bf_warn("no usable GPU: running %u CPU worker%s", cpu_workers ? cpu_workers : 1,
                    cpu_workers > 1 ? "s" : "");
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
            /* named explicitly: an unusable one is a configuration to fix,
               not a CPU worker in its place */
            if (devs[d].unusable[0]) {
                fprintf(stderr, "beamfleet worker: --gpus %s: GPU %ld (%s) is unusable: %s\n", gpus,
                        d, devs[d].name, devs[d].unusable);
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

/* A worker pid of c ended with status at now: finished, given up, or to be
   restarted. Tells the broker when it died unexpectedly. */
static void child_ended(child_t *c, pid_t pid, int status, int64_t now, void *dealer,
                        const worker_config_t *base)
{
    c->pid = 0;
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    char how[64];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof how, "exited with status %d", code);
    /* a restart (3) delivered its result and said goodbye; a refusal (4)
       never registered: nothing for the broker to requeue */
    if (!clean && code != WORKER_EXIT_RESTART && code != WORKER_EXIT_REFUSED)
        send_lost(dealer, base, pid, c->device, how);
    if (code == WORKER_EXIT_REFUSED) {
        c->pid = -1; /* restarting cannot fix a refused key */
        c->given_up = true;
        snprintf(c->why, sizeof c->why, "worker %d was refused by the broker", (int)pid);
        bf_error("%s; not restarting it", c->why);
        return;
    }
    if (signals_seen || clean) {
        c->pid = -1; /* done: drained */
        bf_info("worker %d exited", (int)pid);
        return;
    }
    bool quick = now - c->started < QUICK_MS;
    if (quick && (code == 2 || code == 126 || code == 127)) {
        char why[96];
        snprintf(why, sizeof why, "worker %d %s at once", (int)pid, how);
        failed_start(c, why);
        if (c->given_up) {
            bf_error("%s; not restarting it", c->why);
            return;
        }
    } else if (!quick) {
        c->quick_fails = 0;
    }
    if (now - c->started > HEALTHY_MS)
        c->backoff_s = BACKOFF_MIN_S;
    c->restart_at = now + 1000 * (int64_t)c->backoff_s;
    bf_warn("worker %d %s; restarting in %u s", (int)pid, how, c->backoff_s);
    c->backoff_s = c->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : c->backoff_s * 2;
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
    /* exec by the real path, so ps shows the program's name, not "exe" */
    char self[4096] = "";
    if (child_argv && bf_self_exe(self, sizeof self) != BF_OK)
        bf_warn("cannot read /proc/self/exe: workers show as 'exe' in ps");
    /* what the workers' tasks leave behind comes back here, not to init */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        bf_warn("PR_SET_CHILD_SUBREAPER: %s: a dead worker's task may outlive it", strerror(errno));
    /* our own line to the broker, for LOST */
    void *zctx = base->broker && *base->broker ? zmq_ctx_new() : NULL;
    void *dealer = NULL;
    if (zctx) {
        char why[BF_ERRLEN];
        if (!(dealer = proto_link_dealer_new(zctx, base->broker, base->security, NULL, why)))
            bf_warn("%s: a worker's death is noticed by heartbeats only", why);
    }
    signals_seen = 0;
    if (wake.fd < 0)
        bf_wake_init(&wake);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct sigaction sc = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
    sigemptyset(&sc.sa_mask);
    sigaction(SIGCHLD, &sc, NULL);
    for (int i = 0; i < n; i++)
        start_child(base, &kids[i], threads, child_argv, self);
    bf_info("supervising %d worker%s", n, n == 1 ? "" : "s");
    int forwarded = 0;
    int64_t hunt_until = 0;
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
        /* workers, and the orphans reparented here */
        for (int reaped = 0; reaped < 4 * MAX_ORPHANS; reaped++) {
            if ((pid = waitpid(-1, &status, WNOHANG)) <= 0)
                break;
            for (int i = 0; i < n; i++)
                if (kids[i].pid == pid) {
                    child_ended(&kids[i], pid, status, now, dealer, base);
                    hunt_until = now + HUNT_MS;
                    break;
                }
        }
        /* a dead worker's task tree: orphans appear as their parents die */
        if (now < hunt_until && kill_orphans(kids, n) > 0)
            hunt_until = now + HUNT_MS;
        drain_dealer(dealer);
        bool any = false;
        for (int i = 0; i < n; i++) {
            if (!signals_seen && kids[i].pid == 0 && now >= kids[i].restart_at)
                start_child(base, &kids[i], threads, child_argv, self);
            any |= kids[i].pid > 0 || (!signals_seen && kids[i].pid == 0);
        }
        if (!any)
            break;
        wait_signal(now < hunt_until ? 20 : 50); /* a signal cuts it short */
    }
    kill_orphans(kids, 0); /* nothing of ours stays behind */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGCHLD, &dfl, NULL);
    if (dealer) {
        int linger = LOST_LINGER_MS; /* a LOST still queued may leave, briefly */
        zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(dealer);
    }
    if (zctx)
        zmq_ctx_term(zctx);
    int given_up = 0;
    char why[sizeof kids[0].why] = "";
    for (int i = 0; i < n; i++)
        if (kids[i].given_up) {
            given_up++;
            bf_strlcpy(why, kids[i].why, sizeof why);
        }
    free(kids);
    if (given_up) {
        /* the last line says why */
        bf_error("worker supervisor: %d of %d worker%s given up, e.g. %s", given_up, n,
                 n == 1 ? "" : "s", why);
        return 1;
    }
    bf_info("every worker has exited");
    return 0;
}
