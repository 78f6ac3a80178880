/*  cli/cli_daemons.c - `beamfleet broker`, `beamfleet worker` and
    `beamfleet collector`: flags over the fleet file over the defaults, then
    the library's daemon loop. SIGINT and SIGTERM stop a daemon cleanly (a
    worker drains its running task first). */

#include "cli.h"

#include "../broker/broker.h"
#include "../collector/collector.h"
#include "../worker/worker.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Flags shared by the three daemons. */
enum {
    OPT_HEARTBEAT = 256,
    OPT_LIVENESS,
    OPT_STATE,
    OPT_BIND,
    OPT_INSECURE,
    OPT_PUBLISH,
    OPT_OUT,
    OPT_GPUS,
    OPT_CPU,
    OPT_ALLOW,
    OPT_PREFETCH,
    OPT_THREADS,
    OPT_NAME,
    OPT_DEVICE,
    OPT_METRICS,
    OPT_RETAIN,
    OPT_OUTPUT_ROOT, /* collector */
    OPT_SPOOL,       /* collector */
    OPT_CREDIT,      /* collector */
    OPT_INTERP,      /* worker */
    OPT_THROWAWAY,   /* broker */
    OPT_SCHED,       /* worker */
};

#define ACCEPT(opt) (1u << ((opt)-256))

static const struct option daemon_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"broker", required_argument, NULL, 'b'},
    {"help", no_argument, NULL, 'h'},
    {"heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT},
    {"liveness", required_argument, NULL, OPT_LIVENESS},
    {"state", required_argument, NULL, OPT_STATE},
    {"bind", required_argument, NULL, OPT_BIND},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"publish", required_argument, NULL, OPT_PUBLISH},
    {"out", required_argument, NULL, OPT_OUT},
    {"gpus", required_argument, NULL, OPT_GPUS},
    {"cpu", required_argument, NULL, OPT_CPU},
    {"allow-exec", required_argument, NULL, OPT_ALLOW},
    {"prefetch", required_argument, NULL, OPT_PREFETCH},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"name", required_argument, NULL, OPT_NAME},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"retain-s", required_argument, NULL, OPT_RETAIN},
    {"output-root", required_argument, NULL, OPT_OUTPUT_ROOT},
    {"spool", required_argument, NULL, OPT_SPOOL},
    {"credit", required_argument, NULL, OPT_CREDIT},
    {"interpreter", required_argument, NULL, OPT_INTERP},
    {"throwaway-state", no_argument, NULL, OPT_THROWAWAY},
    {"sched", required_argument, NULL, OPT_SCHED},
    {NULL, 0, NULL, 0}};

typedef struct {
    const char *cmd;  /* for messages */
    unsigned accepts; /* the daemon options this command takes: ACCEPT(OPT_x) bits */
    bf_fleet_t fleet;
    const char *out, *gpus, *name;
    const char *output_root, *spool; /* collector */
    unsigned credit;                 /* collector */
    const char *config;              /* -c FLEET.yaml, handed on to a supervisor's children */
    unsigned cpu_workers, threads;
    int device;          /* --device N: this process is the worker for device N */
    bool device_cpu;     /* --device cpu: this process is one CPU worker */
    bool throwaway;      /* broker --throwaway-state */
    bool sched_inherit;  /* worker --sched inherit */
    const char **allow;  /* flags, then the fleet file's */
    const char **interp; /* --interpreter flags, then worker.interpreters */
    size_t interp_count;
    size_t allow_count;
} daemon_args_t;

static bool parse_uint(const char *cmd, const char *flag, const char *text, unsigned min,
                       unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || !*text || text[0] == '-' || v < min || v > max) {
        fprintf(stderr, "beamfleet %s: %s: expected a whole number in [%u, %u], got '%s'\n", cmd,
                flag, min, max, text);
        return false;
    }
    *out = (unsigned)v;
    return true;
}

static void replace(char **field, const char *value)
{
    free(*field);
    *field = bf_strdup(value);
}

/* Appends a repeatable flag's value to list (n of max used); false, with
   one line, when it is full. */
static bool push_flag(const char *cmd, const char *flag, const char **list, size_t *n, size_t max,
                      const char *value)
{
    if (*n == max) {
        fprintf(stderr, "beamfleet %s: %s: at most %zu programs\n", cmd, flag, max);
        return false;
    }
    list[(*n)++] = value;
    return true;
}

/* The flags' values, then the fleet file's, as one NULL-terminated array
   that borrows the strings (free the array only); NULL out of memory. */
static const char **merge_lists(const char *const *flags, size_t nflags, char *const *fleet,
                                size_t nfleet, size_t *count)
{
    const char **all = calloc(nflags + nfleet + 1, sizeof *all);
    *count = all ? nflags + nfleet : 0;
    for (size_t i = 0; all && i < nflags; i++)
        all[i] = flags[i];
    for (size_t i = 0; all && i < nfleet; i++)
        all[nflags + i] = fleet[i];
    return all;
}

/* Returns -1 to go on, else an exit code. */
static int parse_daemon(int argc, char **argv, daemon_args_t *a, const char *help)
{
    const char *config = NULL, *broker = NULL, *bind = NULL, *state = NULL, *publish = NULL;
    const char *metrics = NULL;
    unsigned heartbeat = 0, liveness = 0, prefetch = 0, retain = 0;
    bool insecure = false;
    const char *allow_flags[64], *interp_flags[16];
    size_t ninterp = 0;
    size_t nallow = 0;
    int c;
    optind = 1;
    opterr = 0;
    a->device = -1;
    while ((c = getopt_long(argc, argv, ":c:b:h", daemon_options, NULL)) != -1) {
        if (c >= 256 && !(a->accepts & ACCEPT(c))) {
            fprintf(stderr, "beamfleet %s: option '%s' is not for this command (try --help)\n",
                    a->cmd, argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'b':
            broker = optarg;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_EXIT_OK;
        case OPT_HEARTBEAT:
            if (!parse_uint(a->cmd, "--heartbeat-ms", optarg, 10, 60000, &heartbeat))
                return CLI_EXIT_USAGE;
            break;
        case OPT_RETAIN:
            if (!parse_uint(a->cmd, "--retain-s", optarg, 1, 365u * 86400, &retain))
                return CLI_EXIT_USAGE;
            break;
        case OPT_LIVENESS:
            if (!parse_uint(a->cmd, "--liveness", optarg, 1, 100, &liveness))
                return CLI_EXIT_USAGE;
            break;
        case OPT_STATE:
            state = optarg;
            break;
        case OPT_BIND:
            bind = optarg;
            break;
        case OPT_INSECURE:
            insecure = true;
            break;
        case OPT_METRICS:
            metrics = optarg;
            break;
        case OPT_PUBLISH:
            publish = optarg;
            break;
        case OPT_OUT:
            a->out = optarg;
            break;
        case OPT_THROWAWAY:
            a->throwaway = true;
            break;
        case OPT_OUTPUT_ROOT:
            a->output_root = optarg;
            break;
        case OPT_SPOOL:
            a->spool = optarg;
            break;
        case OPT_CREDIT:
            if (!parse_uint(a->cmd, "--credit", optarg, 1, 4096, &a->credit))
                return CLI_EXIT_USAGE;
            break;
        case OPT_GPUS:
            a->gpus = optarg;
            break;
        case OPT_CPU:
            if (!parse_uint(a->cmd, "--cpu", optarg, 0, 1024, &a->cpu_workers))
                return CLI_EXIT_USAGE;
            break;
        case OPT_ALLOW:
            if (!push_flag(a->cmd, "--allow-exec", allow_flags, &nallow, BF_ARRAY_LEN(allow_flags),
                           optarg))
                return CLI_EXIT_USAGE;
            break;
        case OPT_INTERP:
            if (!push_flag(a->cmd, "--interpreter", interp_flags, &ninterp,
                           BF_ARRAY_LEN(interp_flags), optarg))
                return CLI_EXIT_USAGE;
            break;
        case OPT_PREFETCH:
            if (!parse_uint(a->cmd, "--prefetch", optarg, 1, 1024, &prefetch))
                return CLI_EXIT_USAGE;
            break;
        case OPT_THREADS:
            if (!parse_uint(a->cmd, "--threads", optarg, 1, 4096, &a->threads))
                return CLI_EXIT_USAGE;
            break;
        case OPT_NAME:
            a->name = optarg;
            break;
        case OPT_DEVICE: {
            unsigned d;
            if (!strcmp(optarg, "cpu")) { /* a supervisor's CPU worker */
                a->device = -1;
                a->device_cpu = true;
                break;
            }
            if (!parse_uint(a->cmd, "--device", optarg, 0, 1023, &d))
                return CLI_EXIT_USAGE;
            a->device = (int)d;
            break;
        }
        case OPT_SCHED: {
            int rc = cli_option_sched(a->cmd, optarg, &a->sched_inherit);
            if (rc >= 0)
                return rc;
            break;
        }
        case ':':
            fprintf(stderr, "beamfleet %s: option %s needs a value\n", a->cmd, argv[optind - 1]);
            return CLI_EXIT_USAGE;
        default:
            fprintf(stderr, "beamfleet %s: unknown option '%s' (try --help)\n", a->cmd,
                    argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "beamfleet %s: unexpected argument '%s' (try --help)\n", a->cmd,
                argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (cli_load_fleet(config, &a->fleet) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    a->config = config;
    if (broker)
        replace(&a->fleet.broker_endpoint, broker);
    if (bind)
        replace(&a->fleet.broker_bind, bind);
    if (state)
        replace(&a->fleet.broker_state, state);
    if (publish)
        replace(&a->fleet.collector_publish, publish);
    if (insecure)
        a->fleet.insecure = true;
    if (metrics)
        replace(&a->fleet.metrics_listen, metrics);
    if (heartbeat)
        a->fleet.heartbeat_interval_ms = heartbeat;
    if (retain)
        a->fleet.retain_s = retain;
    if (liveness)
        a->fleet.heartbeat_liveness = liveness;
    if (prefetch)
        a->fleet.prefetch = prefetch;
    a->allow = merge_lists(allow_flags, nallow, a->fleet.allow_exec, a->fleet.allow_exec_count,
                           &a->allow_count);
    a->interp = merge_lists(interp_flags, ninterp, a->fleet.interpreters,
                            a->fleet.interpreter_count, &a->interp_count);
    return a->allow && a->interp ? -1 : CLI_EXIT_FAILURE;
}

static void daemon_args_clear(daemon_args_t *a)
{
    free(a->allow);
    a->allow = NULL;
    free(a->interp);
    a->interp = NULL;
    bf_fleet_clear(&a->fleet);
}

/* ---- signals ------------------------------------------------------------ */

static broker_t *running_broker;
static collector_t *running_collector;

static void on_stop_signal(int sig)
{
    (void)sig;
    if (running_broker)
        broker_stop(running_broker);
    if (running_collector)
        collector_stop(running_collector);
}

static void install_stop_handlers(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- broker ------------------------------------------------------------- */

int cli_broker(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet broker [-c FLEET.yaml] [--bind EP] [--state DIR] [--insecure]\n"
        "                        [--heartbeat-ms MS] [--liveness N] [--metrics HOST:PORT]\n"
        "                        [--retain-s S] [--throwaway-state]\n\n"
        "The broker: one ROUTER endpoint every worker, collector and client connects to. Jobs,\n"
        "tasks and undelivered results are kept in DIR (SQLite); a restart on the same DIR\n"
        "continues where it stopped. A bind that is not loopback needs CURVE keys (security: in\n"
        "the fleet file) or --insecure (broker.insecure: true).\n\n"
        "  --bind EP          [broker.bind, tcp://127.0.0.1:5555]\n"
        "  --state DIR        [broker.state, ./beamfleet-state]\n"
        "  --retain-s S       forget a finished, delivered job S seconds after it ended\n"
        "                     [broker.retain_s, 3600]\n"
        "  --metrics HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
        "                     [metrics.listen; none]\n"
        "  --heartbeat-ms MS  heartbeat interval [1000]; --liveness N  intervals before a peer "
        "is dead [3]\n"
        "  --throwaway-state  DIR is removed after the broker exits (`beamfleet run`): nothing\n"
        "                     is synced to disk, no other process may read the database\n";
    daemon_args_t a = {.cmd = "broker"};
    /* option codes accepted, as OPT_x - 256 + 'A' */
    a.accepts = ACCEPT(OPT_HEARTBEAT) | ACCEPT(OPT_LIVENESS) | ACCEPT(OPT_STATE) |
                ACCEPT(OPT_BIND) | ACCEPT(OPT_INSECURE) | ACCEPT(OPT_METRICS) | ACCEPT(OPT_RETAIN) |
                ACCEPT(OPT_THROWAWAY);
    int rc = parse_daemon(argc, argv, &a, help);
    if (rc >= 0) {
        daemon_args_clear(&a);
        return rc;
    }
    bf_log_set_tag("broker");
    /* One descriptor per connected peer: a thousand workers do not fit in
       the usual soft limit of 1024, so take all the hard limit allows. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        rlim_t was = nofile.rlim_cur;
        nofile.rlim_cur = nofile.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &nofile) != 0)
            bf_warn("cannot raise the open-file limit from %llu: %s", (unsigned long long)was,
                    strerror(errno));
    }
    char err[BF_ERRLEN] = "";
    broker_config_t cfg = {
        .bind = a.fleet.broker_bind,
        .state_dir = a.fleet.broker_state,
        .heartbeat_ms = a.fleet.heartbeat_interval_ms,
        .liveness = a.fleet.heartbeat_liveness,
        .insecure = a.fleet.insecure,
        .retain_s = a.fleet.retain_s,
        .security_keys = a.fleet.security_keys,
        .security_identity = a.fleet.security_identity,
        .metrics_listen = a.fleet.metrics_listen,
        .throwaway_state = a.throwaway,
    };
    broker_t *broker = broker_new(&cfg, err);
    if (!broker) {
        fprintf(stderr, "beamfleet broker: %s\n", err);
        daemon_args_clear(&a);
        return CLI_EXIT_USAGE;
    }
    running_broker = broker;
    install_stop_handlers();
    bf_info("serving on %s, state in %s", broker_endpoint(broker), cfg.state_dir);
    bf_err_t e = broker_run(broker);
    running_broker = NULL;
    broker_destroy(&broker);
    daemon_args_clear(&a);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet broker: %s\n", bf_strerror(e));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* ---- collector ---------------------------------------------------------- */

int cli_collector(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet collector [-c FLEET.yaml] [--broker EP] [--out ROOT]\n"
        "                           [--output-root DIR] [--publish EP] [--insecure]\n"
        "                           [--spool DIR] [--credit N] [--heartbeat-ms MS]\n"
        "                           [--liveness N]\n\n"
        "The collector: receives every final result from the broker, writes the reports\n"
        "(results_progress.json, results.csv, results.jsonl, results_final_*.json, summary.json)\n"
        "durably before acknowledging, and publishes each result on a PUB socket (MessagePack).\n"
        "A job's reports go to its `output` directory, or to ROOT/<job name> with --out.\n"
        "With --output-root DIR (collector.output_root) a job's `output` must resolve inside\n"
        "DIR (symlinks followed, no ..): a job whose output is outside gets DIR/<job name>.\n"
        "The results of a job whose reports cannot be written wait in the spool\n"
        "(acknowledged, retried with backoff) while the other jobs' reports go on.\n\n"
        "  --publish EP   [collector.publish, tcp://127.0.0.1:5557]; an address that is not\n"
        "                 loopback needs CURVE keys (security:) or --insecure\n"
        "  --spool DIR    [$XDG_STATE_HOME/beamfleet/collector-spool/<broker endpoint>,\n"
        "                 or the same under ~/.local/state]\n"
        "  --credit N     deliveries in flight [256]\n";
    daemon_args_t a = {.cmd = "collector"};
    a.accepts = ACCEPT(OPT_HEARTBEAT) | ACCEPT(OPT_LIVENESS) | ACCEPT(OPT_OUT) |
                ACCEPT(OPT_PUBLISH) | ACCEPT(OPT_NAME) | ACCEPT(OPT_INSECURE) |
                ACCEPT(OPT_OUTPUT_ROOT) | ACCEPT(OPT_SPOOL) | ACCEPT(OPT_CREDIT);
    int rc = parse_daemon(argc, argv, &a, help);
    if (rc >= 0) {
        daemon_args_clear(&a);
        return rc;
    }
    bf_log_set_tag("collector");
    char err[BF_ERRLEN] = "";
    /* both roots resolved once: the collector compares resolved paths */
    const char *roots[2] = {a.out, a.output_root ? a.output_root : a.fleet.collector_output_root};
    static const char *const flags[2] = {"--out", "--output-root"};
    char *real[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        if (!roots[i])
            continue;
        err[0] = '\0';
        if (bf_mkdir_p(roots[i], err) != BF_OK || !(real[i] = realpath(roots[i], NULL))) {
            fprintf(stderr, "beamfleet collector: %s %s: %s\n", flags[i], roots[i],
                    err[0] ? err : strerror(errno));
            free(real[0]);
            daemon_args_clear(&a);
            return CLI_EXIT_USAGE;
        }
    }
    /* The default spool is per broker: only a collector of the same fleet
       takes up what an earlier one left there. */
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    char fleet_tag[128];
    bf_strlcpy(fleet_tag, a.fleet.broker_endpoint ? a.fleet.broker_endpoint : "", sizeof fleet_tag);
    for (char *t = fleet_tag; *t; t++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-", *t))
            *t = '_';
    char *spool = a.spool ? bf_strdup(a.spool)
                  : xdg && xdg[0] == '/'
                      ? bf_asprintf("%s/beamfleet/collector-spool/%s", xdg, fleet_tag)
                  : home && home[0] == '/'
                      ? bf_asprintf("%s/.local/state/beamfleet/collector-spool/%s", home, fleet_tag)
                      : NULL;
    collector_config_t cfg = {
        .broker = a.fleet.broker_endpoint,
        .out_root = real[0],
        .output_root = real[1],
        .spool_dir = spool,
        .publish = a.fleet.collector_publish,
        .insecure = a.fleet.insecure,
        .heartbeat_ms = a.fleet.heartbeat_interval_ms,
        .liveness = a.fleet.heartbeat_liveness,
        .credit = a.credit ? a.credit : 256,
        .name = a.name,
        .security = cli_security(),
    };
    collector_t *collector = collector_new(&cfg, err);
    if (!collector && spool && !a.spool && strstr(err, "spool")) {
        /* the default spool is busy (another collector of this user) or
           cannot be made: run as before, holding such results in memory */
        bf_warn("%s: running without a spool (--spool DIR to give one)", err);
        cfg.spool_dir = NULL;
        collector = collector_new(&cfg, err);
    }
    if (!collector) {
        fprintf(stderr, "beamfleet collector: %s\n", err);
        free(real[0]);
        free(real[1]);
        free(spool);
        daemon_args_clear(&a);
        return CLI_EXIT_USAGE;
    }
    running_collector = collector;
    install_stop_handlers();
    bf_err_t e = collector_run(collector);
    running_collector = NULL;
    collector_destroy(&collector);
    free(real[0]);
    free(real[1]);
    free(spool);
    daemon_args_clear(&a);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet collector: %s\n", bf_strerror(e));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* ---- worker ------------------------------------------------------------- */

int cli_worker(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet worker [-c FLEET.yaml] [--broker EP] [--gpus all|0,2|none] [--cpu N]\n"
        "                        [--allow-exec PROGRAM]... [--interpreter PATH]...\n"
        "                        [--prefetch N] [--threads N] [--sched batch|inherit]\n"
        "                        [--name NAME] [--heartbeat-ms MS] [--liveness N]\n\n"
        "Runs tasks from the broker: one worker process per listed GPU (a supervisor starts\n"
        "them with CUDA_VISIBLE_DEVICES set and restarts a crashed one), or N CPU workers.\n"
        "With --gpus all (the default) and no GPU present, it runs --cpu N CPU workers [1].\n"
        "Exec tasks run only programs named by --allow-exec or worker.allow_exec; an\n"
        "interpreter (python3, sh, ...) found on PATH or given with --interpreter\n"
        "(worker.interpreters) runs only an allowed script.\n"
        "SIGTERM drains: the running task finishes, then each worker says goodbye.\n\n"
        "  --prefetch N   tasks a worker may hold at once [worker.prefetch, 1]\n"
        "  --threads N    CPU engine threads per worker [cores / workers]\n"
        "  --sched batch|inherit  the workers and their tasks run as SCHED_BATCH (no\n"
        "                 preemption on wake-up, the same share of the CPU), or keep the\n"
        "                 policy this command was started with [batch]\n";
    daemon_args_t a = {.cmd = "worker"};
    a.accepts = ACCEPT(OPT_HEARTBEAT) | ACCEPT(OPT_LIVENESS) | ACCEPT(OPT_GPUS) | ACCEPT(OPT_CPU) |
                ACCEPT(OPT_ALLOW) | ACCEPT(OPT_PREFETCH) | ACCEPT(OPT_THREADS) | ACCEPT(OPT_NAME) |
                ACCEPT(OPT_DEVICE) | ACCEPT(OPT_INTERP) | ACCEPT(OPT_SCHED);
    int rc = parse_daemon(argc, argv, &a, help);
    if (rc >= 0) {
        daemon_args_clear(&a);
        return rc;
    }
    bf_log_set_tag("worker");
    worker_config_t cfg = {
        .broker = a.fleet.broker_endpoint,
        .heartbeat_ms = a.fleet.heartbeat_interval_ms,
        .liveness = a.fleet.heartbeat_liveness,
        .prefetch = a.fleet.prefetch,
        .allow_exec = a.allow,
        .allow_exec_count = a.allow_count,
        .interpreters = a.interp,
        .interpreter_count = a.interp_count,
        .device_index = a.device,
        .cpu = a.device_cpu,
        .threads = a.threads,
        .name = a.name,
        .sched_inherit = a.sched_inherit,
        .security = cli_security(),
    };
    if (a.device >= 0 || a.device_cpu) {
        /* --device N|cpu: this process is one worker (a supervisor's child) */
        rc = worker_main(&cfg);
    } else {
        /* The supervisor re-runs this command for each worker with
           --device N (or --device cpu --threads T) appended; the fleet file
           is already folded into the flags, so the children need no -c. */
        char hb[16], live[16], prefetch[16];
        snprintf(hb, sizeof hb, "%u", cfg.heartbeat_ms);
        snprintf(live, sizeof live, "%u", cfg.liveness);
        snprintf(prefetch, sizeof prefetch, "%u", cfg.prefetch ? cfg.prefetch : 1);
        size_t n = 0, cap = 18 + 2 * a.allow_count + 2 * a.interp_count;
        char **child = calloc(cap, sizeof *child);
        if (!child) {
            daemon_args_clear(&a);
            return CLI_EXIT_FAILURE;
        }
        child[n++] = "beamfleet";
        child[n++] = "worker";
        if (a.config && cfg.security) { /* the children load the same identity */
            child[n++] = "-c";
            child[n++] = (char *)a.config;
        }
        child[n++] = "--broker";
        child[n++] = (char *)cfg.broker;
        child[n++] = "--heartbeat-ms";
        child[n++] = hb;
        child[n++] = "--liveness";
        child[n++] = live;
        child[n++] = "--prefetch";
        child[n++] = prefetch;
        for (size_t i = 0; i < a.allow_count; i++) {
            child[n++] = "--allow-exec";
            child[n++] = (char *)a.allow[i];
        }
        for (size_t i = 0; i < a.interp_count; i++) {
            child[n++] = "--interpreter";
            child[n++] = (char *)a.interp[i];
        }
        if (a.name) {
            child[n++] = "--name";
            child[n++] = (char *)a.name;
        }
        if (a.sched_inherit) {
            child[n++] = "--sched";
            child[n++] = "inherit";
        }
        child[n] = NULL;
        rc = worker_supervise(&cfg, a.gpus ? a.gpus : "all", a.cpu_workers, child);
        free(child);
    }
    daemon_args_clear(&a);
    return rc;
}
