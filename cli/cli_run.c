/*  cli/cli_run.c - `beamfleet run JOB.yaml`: the whole fleet on this host in
    one command. It starts a broker, a collector and the workers as child
    processes of this binary (the same code paths as on a cluster, over ipc://
    endpoints in a private temporary directory), submits the job, follows it
    with live progress, prints the summary and stops the children.

    The children go when `run` goes, however it goes: each gets
    PR_SET_PDEATHSIG (SIGTERM: drain), and a janitor process forked first
    watches a pipe from `run`; if the pipe closes before `run` said "done"
    (`run` was killed with SIGKILL), the janitor freezes and kills every
    process of the fleet, the children and all their descendants (task
    trees included), and removes the temporary directory. */

#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_CHILDREN 8
#define JANITOR_MAX  4096 /* processes the janitor can track */

typedef struct {
    pid_t pid;
    const char *what;
    bool told; /* SIGTERM sent: a second one would mean "no draining" */
} child_t;

static void remove_tree(const char *dir);

/* Starts `beamfleet ARGS...` with stdout and stderr appended to log_path.
   It runs the binary by its real path (so ps and top show `beamfleet`) and
   gets SIGTERM when `run` dies. */
static pid_t spawn_self(char *const args[], const char *log_path)
{
    char self[4096];
    if (bf_self_exe(self, sizeof self) != BF_OK)
        bf_strlcpy(self, "/proc/self/exe", sizeof self);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(0); /* `run` is gone already */
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    /* A new process group, so that a Ctrl-C at the terminal reaches only
       `run`, which then drains its children in order. */
    setpgid(0, 0);
    execv(self, args);
    _exit(127);
}

/* ---- the janitor -------------------------------------------------------- */

typedef struct {
    pid_t pid;
    unsigned long long start; /* start time in clock ticks: a reused pid differs */
} proc_id_t;

static bool tracked(const proc_id_t *set, size_t n, pid_t pid)
{
    for (size_t i = 0; i < n; i++)
        if (set[i].pid == pid)
            return true;
    return false;
}

/* Freezes the fleet, grows the set to every process whose parent or process
   group is in it (until nothing new turns up), then kills them all. A
   frozen process cannot fork, so the set cannot grow behind our back. */
static void janitor_sweep(proc_id_t *set, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bf_proc_t ps;
        if (bf_proc_stat(set[i].pid, &ps) && ps.start == set[i].start)
            kill(set[i].pid, SIGSTOP);
        else
            set[i].pid = 0; /* gone, or the pid is someone else's now */
    }
    for (int round = 0; round < 100; round++) {
        size_t before = n;
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d)) && n < JANITOR_MAX) {
            char *end;
            long v = strtol(e->d_name, &end, 10);
            bf_proc_t ps;
            if (*end || v <= 1 || v == getpid() || tracked(set, n, (pid_t)v) ||
                !bf_proc_stat((pid_t)v, &ps))
                continue;
            if ((ps.ppid > 0 && tracked(set, n, ps.ppid)) ||
                (ps.pgid > 1 && tracked(set, n, ps.pgid))) {
                kill((pid_t)v, SIGSTOP);
                set[n++] = (proc_id_t){(pid_t)v, ps.start};
            }
        }
        if (d)
            closedir(d);
        if (n == before)
            break;
    }
    for (size_t i = 0; i < n; i++)
        if (set[i].pid > 0)
            kill(set[i].pid, SIGKILL);
}

/* The janitor's life: reads "+PID\n" per child and "done\n" from the pipe;
   returns at EOF. Never returns to the caller's code (it _exits). */
static void janitor(int fd, const char *tmp)
{
    prctl(PR_SET_NAME, "bf-run-janitor");
    signal(SIGINT, SIG_IGN); /* Ctrl-C and a closing terminal are for `run` */
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    static proc_id_t set[JANITOR_MAX];
    size_t n = 0;
    bool done = false;
    char line[64];
    size_t len = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (c != '\n') {
            if (len < sizeof line - 1)
                line[len++] = c;
            continue;
        }
        line[len] = '\0';
        len = 0;
        bf_proc_t ps;
        if (!strcmp(line, "done"))
            done = true;
        else if (line[0] == '+' && n < JANITOR_MAX && bf_proc_stat((pid_t)atoi(line + 1), &ps))
            set[n++] = (proc_id_t){(pid_t)atoi(line + 1), ps.start};
    }
    if (!done) {
        janitor_sweep(set, n);
        remove_tree(tmp);
    }
    _exit(0);
}

/* Forks the janitor; returns the write end of its pipe (or -1 when it could
   not start: `run` goes on, with PR_SET_PDEATHSIG alone). */
static int janitor_start(const char *tmp, pid_t *janitor_pid)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[1]);
        janitor(fds[0], tmp);
    }
    close(fds[0]);
    *janitor_pid = pid;
    return fds[1];
}

/* Tells the janitor about a child (pid > 0), or that `run` has stopped the
   fleet itself (pid 0): then it exits without touching anything. */
static void janitor_tell(int fd, pid_t pid)
{
    char line[32];
    int n = pid > 0 ? snprintf(line, sizeof line, "+%d\n", (int)pid)
                    : snprintf(line, sizeof line, "done\n");
    if (fd >= 0 && write(fd, line, (size_t)n) != n)
        bf_warn("run: cannot reach the janitor: %s", strerror(errno));
}

/* Waits until path (an ipc socket a child binds) exists, up to ms, so that
   the peers started next connect at once instead of after libzmq's
   reconnect interval (100 ms). False when it did not appear or the child
   exited first (its log says why). */
static bool wait_bound(const char *path, pid_t child, int ms)
{
    struct stat st;
    for (int64_t until = bf_mono_ms() + ms; bf_mono_ms() < until;) {
        if (stat(path, &st) == 0)
            return true;
        if (waitpid(child, NULL, WNOHANG) == child)
            return false;
        usleep(1000); /* once, at start-up: the bind takes a few ms */
    }
    return false;
}

/* Awaits the exit of a child told to stop: on a pidfd (readable once the
   child exits), so the next one is told at once, not at the next tick of a
   sleep; SIGKILL after 15 s. */
static void await_child(child_t *c)
{
    if (c->pid <= 0)
        return;
    int pidfd = -1;
#ifdef SYS_pidfd_open
    pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
#endif
    int64_t deadline = bf_mono_ms() + 15000;
    for (;;) {
        int status;
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid || (r < 0 && errno != EINTR))
            break;
        int64_t left = deadline - bf_mono_ms();
        if (left < 0) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
            break;
        }
        struct pollfd exited = {pidfd, POLLIN, 0};
        if (pidfd < 0 || poll(&exited, 1, left < 20 ? (int)left : 20) < 0)
            usleep(20 * 1000); /* no pidfd (kernel < 5.3): look every 20 ms */
    }
    if (pidfd >= 0)
        close(pidfd);
    c->pid = 0;
}

/* Stops the children. While the job may have work in flight, one after
   the other, workers first: they drain into the broker, which delivers to
   the collector. Once every task is final and the collector has written
   the reports (together), nothing is left to drain: all are told at once
   and their exits overlap (the broker's closing, the workers' goodbyes). */
static void stop_children(child_t *children, size_t n, bool together)
{
    for (size_t i = n; i-- > 0;) {
        if (children[i].pid <= 0)
            continue;
        if (!children[i].told)
            kill(children[i].pid, SIGTERM);
        children[i].told = true;
        if (!together)
            await_child(&children[i]);
    }
    for (size_t i = n; i-- > 0;)
        await_child(&children[i]);
}

/* cli_follow's job_over: every task is final, so the workers have nothing
   left to run; they stop while the collector writes the job's reports. */
static void stop_workers_early(void *ud)
{
    child_t *workers = ud;
    if (workers->pid > 0 && !workers->told && kill(workers->pid, SIGTERM) == 0)
        workers->told = true;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0 && errno != ENOENT)
        bf_debug("run: cannot remove %s: %s", path, strerror(errno));
    return 0; /* the rest goes on */
}

/* rm -rf of dir, in this process (the fork and exec of rm took longer than
   the few files of the fleet's temporary directory). Links are removed,
   never followed. */
static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The job's SUBMIT, made on a thread of its own (the scenes hashed for
   their content keys) while the fleet starts. */
typedef struct {
    const bf_job_t *job;
    bool recompute;
    proto_msg_t *submit;
    bf_err_t rc;
    char err[BF_ERRLEN];
} prepare_t;

static void *prepare_main(void *arg)
{
    prepare_t *p = arg;
    p->rc = cli_submit_prepare(p->job, p->recompute, p->submit, p->err);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

static const struct option run_options[] = {
    {"workers", required_argument, NULL, 'n'}, {"cpu", no_argument, NULL, 'C'},
    {"out", required_argument, NULL, 'o'},     {"config", required_argument, NULL, 'c'},
    {"recompute", no_argument, NULL, 'R'},     {"sched", required_argument, NULL, 'S'},
    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};

int cli_run(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet run JOB.yaml [--workers N] [--cpu] [--out DIR] [-c FLEET.yaml]\n"
        "                     [--recompute] [--sched batch|inherit]\n\n"
        "Runs the job on this host: starts a broker, a collector and one worker per local GPU\n"
        "(or CPU workers with --cpu or when there is no GPU), submits the job, shows a line per\n"
        "result with progress and ETA, prints the summary and exits when every task is final.\n"
        "Reports go to the job's `output` (or DIR); the daemons' logs to OUTPUT/logs/.\n\n"
        "  --workers N   number of CPU workers [1 for boresight jobs, all cores for exec jobs]\n"
        "  --cpu         use the CPU engine even when GPUs are present\n"
        "  --out DIR     report directory, instead of the job's `output`\n"
        "  --recompute   run every scene, even one with a finished result in the report\n"
        "                directory for the same content (by default that result is reused)\n"
        "  --sched batch|inherit  the fleet and the tasks run as SCHED_BATCH (no preemption\n"
        "                on wake-up, the same share of the CPU), or keep the policy this\n"
        "                command was started with [batch]\n";
    const char *config = NULL, *out = NULL;
    long workers = 0;
    bool force_cpu = false, recompute = false, sched_inherit = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:n:o:h", run_options, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'n':
            errno = 0;
            workers = strtol(optarg, &end, 10);
            if (errno || *end || workers < 1 || workers > 256) {
                fprintf(stderr, "beamfleet run: --workers: expected 1..256, got '%s'\n", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'C':
            force_cpu = true;
            break;
        case 'o':
            out = optarg;
            break;
        case 'R':
            recompute = true;
            break;
        case 'S': {
            int r = cli_option_sched("run", optarg, &sched_inherit);
            if (r >= 0)
                return r;
            break;
        }
        default: /* --help, a missing value, an unknown option */
            return cli_option_other("run", c, help, argv);
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "beamfleet run: expected one JOB.yaml (try --help)\n");
        return CLI_EXIT_USAGE;
    }
    bf_fleet_t fleet;
    if (cli_load_fleet(config, &fleet) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (cli_security()) {
        /* The fleet of `run` lives on this host, over ipc:// in a private
           directory: its sockets stay plaintext whatever the fleet file says. */
        bf_info("run: the fleet file's security does not apply to this local fleet");
        cli_security_drop();
    }
    char err[BF_ERRLEN];
    bf_job_t job;
    if (bf_job_load(argv[optind], &job, err) != BF_OK) {
        fprintf(stderr, "beamfleet run: %s\n", err);
        bf_fleet_clear(&fleet);
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_FAILURE;
    child_t children[MAX_CHILDREN] = {{0}};
    size_t nchildren = 0;
    proto_msg_t submit; /* the job's SUBMIT, made while the fleet starts */
    proto_msg_init(&submit, PROTO_SUBMIT);
    prepare_t prepare = {.rc = BF_OK};
    pthread_t preparer;
    bool preparing = false;
    /* $TMPDIR as usual, unless its ipc:// paths would pass the 107 bytes a
       socket address holds: then /tmp */
    char tmp[96];
    const char *tmpdir = getenv("TMPDIR");
    if (!tmpdir || tmpdir[0] != '/' ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/beamfleet-run-XXXXXX", tmpdir) >= sizeof tmp)
        bf_strlcpy(tmp, "/tmp/beamfleet-run-XXXXXX", sizeof tmp);
    bool have_tmp = false;
    int janitor_fd = -1;
    pid_t janitor_pid = 0;
    char *broker_ep = NULL, *publish_ep = NULL, *state = NULL, *logs = NULL, *log_path = NULL;
    void *stream_ctx = NULL, *stream = NULL;
    char hb[16], live[16], nworkers[16], prefetch[16];
    if (out) {
        char *abs = realpath(out, NULL);
        if (!abs && bf_mkdir_p(out, err) == BF_OK)
            abs = realpath(out, NULL);
        if (!abs) {
            fprintf(stderr, "beamfleet run: --out %s: %s\n", out, strerror(errno));
            rc = CLI_EXIT_USAGE;
            goto cleanup;
        }
        free(job.output);
        job.output = abs;
    }
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "beamfleet run: mkdtemp: %s\n", strerror(errno));
        goto cleanup;
    }
    have_tmp = true;
    /* The whole fleet runs batch work on this host: the broker, the
       collector and the janitor inherit the policy from here (the workers
       set it themselves, worker/README.md). With the workers alone batch,
       2,000 exec tasks of 1 ms on 2 cores took 1.973 s of CPU; with the
       rest too 1.942 s (medians of 10, alternating). */
    if (!sched_inherit)
        bf_sched_batch("run's fleet");
    janitor_fd = janitor_start(tmp, &janitor_pid);
    if (janitor_fd < 0)
        bf_warn("run: no janitor (%s): if `run` is killed, its fleet stops on SIGTERM only",
                strerror(errno));
    broker_ep = bf_asprintf("ipc://%s/broker", tmp);
    publish_ep = bf_asprintf("ipc://%s/publish", tmp);
    state = bf_asprintf("%s/state", tmp);
    logs = bf_asprintf("%s/logs", job.output);
    if (!broker_ep || !publish_ep || !state || !logs)
        goto cleanup;
    if (bf_mkdir_p(logs, err) != BF_OK) {
        fprintf(stderr, "beamfleet run: %s\n", err);
        goto cleanup;
    }
    snprintf(hb, sizeof hb, "%u", fleet.heartbeat_interval_ms);
    snprintf(live, sizeof live, "%u", fleet.heartbeat_liveness);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    log_path = bf_asprintf("%s/broker.log", logs);
    char *broker_args[] = {
        "beamfleet",      "broker", "--bind",     broker_ep, "--state",           state,
        "--heartbeat-ms", hb,       "--liveness", live,      "--throwaway-state", NULL};
    children[nchildren++] = (child_t){spawn_self(broker_args, log_path), "broker", false};
    janitor_tell(janitor_fd, children[nchildren - 1].pid);
    free(log_path);
    log_path = NULL;
    /* The scenes are hashed (their content keys, bf_task_keys) on a thread
       of their own while the broker loads its state and the collector and
       the workers start: the collector and the workers start as soon as
       the broker has bound, not once every scene is hashed. */
    prepare = (prepare_t){.job = &job, .recompute = recompute, .submit = &submit};
    preparing = pthread_create(&preparer, NULL, prepare_main, &prepare) == 0;
    if (!preparing)
        prepare_main(&prepare);
    log_path = bf_asprintf("%s/broker", tmp);
    if (log_path && !wait_bound(log_path, children[0].pid, 10000))
        bf_warn("run: the broker has not bound %s yet (see %s/broker.log)", broker_ep, logs);
    free(log_path);

    log_path = bf_asprintf("%s/collector.log", logs);
    char *collector_args[] = {"beamfleet", "collector",      "--broker", broker_ep,    "--publish",
                              publish_ep,  "--heartbeat-ms", hb,         "--liveness", live,
                              NULL};
    children[nchildren++] = (child_t){spawn_self(collector_args, log_path), "collector", false};
    janitor_tell(janitor_fd, children[nchildren - 1].pid);
    free(log_path);

    /* Workers: one per GPU through the supervisor, or CPU workers. `run`
       allows the job's own exec program on its own host. */
    if (workers == 0)
        workers = job.task == BF_TASK_EXEC ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    snprintf(nworkers, sizeof nworkers, "%ld", workers);
    char *worker_args[24];
    size_t wa = 0;
    worker_args[wa++] = "beamfleet";
    worker_args[wa++] = "worker";
    worker_args[wa++] = "--broker";
    worker_args[wa++] = broker_ep;
    /* Exec tasks are often short: a worker holding the next one starts it
       while its last result is on its way to the broker and back. */
    unsigned credit = fleet.prefetch ? fleet.prefetch : 1;
    if (job.task == BF_TASK_EXEC && credit < 2)
        credit = 2;
    snprintf(prefetch, sizeof prefetch, "%u", credit);
    worker_args[wa++] = "--prefetch";
    worker_args[wa++] = prefetch;
    worker_args[wa++] = "--heartbeat-ms";
    worker_args[wa++] = hb;
    worker_args[wa++] = "--liveness";
    worker_args[wa++] = live;
    if (force_cpu) {
        worker_args[wa++] = "--gpus";
        worker_args[wa++] = "none";
    }
    if (sched_inherit) {
        worker_args[wa++] = "--sched";
        worker_args[wa++] = "inherit";
    }
    worker_args[wa++] = "--cpu";
    worker_args[wa++] = nworkers;
    if (job.task == BF_TASK_EXEC && job.exec_argc > 0) {
        worker_args[wa++] = "--allow-exec";
        worker_args[wa++] = job.exec_command[0];
        if (job.exec_argc > 1) {
            worker_args[wa++] = "--allow-exec";
            worker_args[wa++] = job.exec_command[1];
        }
    }
    worker_args[wa] = NULL;
    log_path = bf_asprintf("%s/worker.log", logs);
    children[nchildren++] = (child_t){spawn_self(worker_args, log_path), "worker", false};
    janitor_tell(janitor_fd, children[nchildren - 1].pid);
    free(log_path);
    log_path = NULL;

    if (preparing) {
        pthread_join(preparer, NULL);
        preparing = false;
    }
    if (prepare.rc != BF_OK) {
        fprintf(stderr, "beamfleet run: %s\n", prepare.err);
        goto cleanup;
    }

    char job_id[64];
    unsigned total = 0;
    bf_err_t e;
    /* The broker needs a moment to bind its ipc endpoint; a request sent
       before that simply waits in the DEALER until it connects. */
    /* The collector's stream wakes the follower when a result is written
       (subscribed before the job exists, so the first one is not missed).
       The collector binds its stream a few ms after it starts: retried
       every 2 ms, the subscription is in place within 2 ms of that, well
       before the collector has registered with the broker and a worker has
       started (at 10 ms, a one-task job's result could be published before
       it, and the follower saw it only at its 250 ms poll). */
    stream_ctx = zmq_ctx_new();
    stream = stream_ctx ? zmq_socket(stream_ctx, ZMQ_SUB) : NULL;
    int linger = 0, ivl = 2;
    if (stream &&
        (zmq_setsockopt(stream, ZMQ_LINGER, &linger, sizeof linger) ||
         zmq_setsockopt(stream, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) ||
         zmq_setsockopt(stream, ZMQ_SUBSCRIBE, "", 0) || zmq_connect(stream, publish_ep))) {
        bf_warn("run: no result stream (%s): progress every 250 ms", zmq_strerror(zmq_errno()));
        zmq_close(stream);
        stream = NULL;
    }
    e = cli_submit_send(broker_ep, &submit, job_id, &total, err);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet run: %s (logs in %s)\n", err, logs);
        goto cleanup;
    }
    rc = cli_follow(broker_ep, stream, job_id, total, job.output, 30000, stop_workers_early,
                    &children[nchildren - 1]);
    if (cli_interrupted)
        fprintf(stderr, "beamfleet run: interrupted\n");
    printf("Logs: %s\n", logs);
cleanup:
    if (preparing)
        pthread_join(preparer, NULL);
    proto_msg_clear(&submit);
    if (stream)
        zmq_close(stream);
    if (stream_ctx)
        zmq_ctx_term(stream_ctx);
    stop_children(children, nchildren, rc == CLI_EXIT_OK && !cli_interrupted);
    if (have_tmp)
        remove_tree(tmp);
    if (janitor_fd >= 0) {
        janitor_tell(janitor_fd, 0);
        close(janitor_fd);
        waitpid(janitor_pid, NULL, 0);
    }
    free(broker_ep);
    free(publish_ep);
    free(state);
    free(logs);
    bf_job_clear(&job);
    bf_fleet_clear(&fleet);
    return rc;
}
