/*  cli/cli_run.c - `beamfleet run JOB.yaml`: the whole fleet on this host in
    one command. It starts a broker, a collector and the workers as child
    processes of this binary (the same code paths as on a cluster, over ipc://
    endpoints in a private temporary directory), submits the job, follows it
    with live progress, prints the summary and stops the children. */

#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN 8

typedef struct {
    pid_t pid;
    const char *what;
} child_t;

/* Starts `beamfleet ARGS...` with stdout and stderr appended to log_path. */
static pid_t spawn_self(char *const args[], const char *log_path)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
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
    execv("/proc/self/exe", args);
    _exit(127);
}

static void stop_children(child_t *children, size_t n)
{
    /* Workers first (they drain), then the collector, then the broker. */
    for (size_t i = n; i-- > 0;) {
        if (children[i].pid <= 0)
            continue;
        kill(children[i].pid, SIGTERM);
        int64_t deadline = bf_mono_ms() + 15000;
        for (;;) {
            int status;
            pid_t r = waitpid(children[i].pid, &status, WNOHANG);
            if (r == children[i].pid || (r < 0 && errno != EINTR))
                break;
            if (bf_mono_ms() > deadline) {
                kill(children[i].pid, SIGKILL);
                waitpid(children[i].pid, &status, 0);
                break;
            }
            usleep(20 * 1000);
        }
        children[i].pid = 0;
    }
}

static void remove_tree(const char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

static void on_signal(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

static const struct option run_options[] = {
    {"workers", required_argument, NULL, 'n'}, {"cpu", no_argument, NULL, 'C'},
    {"out", required_argument, NULL, 'o'},     {"config", required_argument, NULL, 'c'},
    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};

int cli_run(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet run JOB.yaml [--workers N] [--cpu] [--out DIR] [-c FLEET.yaml]\n\n"
        "Runs the job on this host: starts a broker, a collector and one worker per local GPU\n"
        "(or CPU workers with --cpu or when there is no GPU), submits the job, shows a line per\n"
        "result with progress and ETA, prints the summary and exits when every task is final.\n"
        "Reports go to the job's `output` (or DIR); the daemons' logs to OUTPUT/logs/.\n\n"
        "  --workers N   number of CPU workers [1 for boresight jobs, all cores for exec jobs]\n"
        "  --cpu         use the CPU engine even when GPUs are present\n"
        "  --out DIR     report directory, instead of the job's `output`\n";
    const char *config = NULL, *out = NULL;
    long workers = 0;
    bool force_cpu = false;
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
    char tmp[] = "/tmp/beamfleet-run-XXXXXX";
    bool have_tmp = false;
    char *broker_ep = NULL, *publish_ep = NULL, *state = NULL, *logs = NULL, *log_path = NULL;
    char hb[16], live[16], nworkers[16];
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
    char *broker_args[] = {"beamfleet",      "broker", "--bind",     broker_ep, "--state", state,
                           "--heartbeat-ms", hb,       "--liveness", live,      NULL};
    children[nchildren++] = (child_t){spawn_self(broker_args, log_path), "broker"};
    free(log_path);

    log_path = bf_asprintf("%s/collector.log", logs);
    char *collector_args[] = {"beamfleet", "collector",      "--broker", broker_ep,    "--publish",
                              publish_ep,  "--heartbeat-ms", hb,         "--liveness", live,
                              NULL};
    children[nchildren++] = (child_t){spawn_self(collector_args, log_path), "collector"};
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
    worker_args[wa++] = "--heartbeat-ms";
    worker_args[wa++] = hb;
    worker_args[wa++] = "--liveness";
    worker_args[wa++] = live;
    if (force_cpu) {
        worker_args[wa++] = "--gpus";
        worker_args[wa++] = "none";
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
    children[nchildren++] = (child_t){spawn_self(worker_args, log_path), "worker"};
    free(log_path);
    log_path = NULL;

    char job_id[64];
    unsigned total = 0;
    bf_err_t e;
    /* The broker needs a moment to bind its ipc endpoint; a request sent
       before that simply waits in the DEALER until it connects. */
    e = cli_submit_job(broker_ep, &job, job_id, &total, err);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet run: %s (logs in %s)\n", err, logs);
        goto cleanup;
    }
    rc = cli_follow(broker_ep, job_id, total, job.output, 30000);
    if (cli_interrupted)
        fprintf(stderr, "beamfleet run: interrupted\n");
    printf("Logs: %s\n", logs);
cleanup:
    stop_children(children, nchildren);
    if (have_tmp)
        remove_tree(tmp);
    free(broker_ep);
    free(publish_ep);
    free(state);
    free(logs);
    bf_job_clear(&job);
    bf_fleet_clear(&fleet);
    return rc;
}
