/*  cli/cli.c - the subcommand table of `beamfleet`, top-level help, `version`
    and the fleet-file precedence every networked subcommand shares. */

#include "cli.h"
#include "../kernels/kern.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#if defined(BF_HAVE_CUDA)
#define BACKENDS "cpu, cuda"
#else
#define BACKENDS "cpu"
#endif

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command_t;

static const command_t commands[] = {
    {"run", cli_run, "run a job on this host: broker, collector and workers in one command"},
    {"broker", cli_broker, "the broker daemon"},
    {"worker", cli_worker, "one worker per device (or N CPU workers)"},
    {"collector", cli_collector, "the collector daemon: reports and the live stream"},
    {"submit", cli_submit, "submit a job to a running fleet"},
    {"status", cli_status, "workers, jobs, queue and ETA"},
    {"cancel", cli_cancel, "cancel a job's queued and running tasks"},
    {"watch", cli_watch, "print the collector's live result stream as JSON lines"},
    {"keygen", cli_keygen, "write a CURVE key pair with its role"},
    {"solve", cli_solve, "run one scene in this process (no fleet)"},
    {"scenegen", cli_scenegen, "write procedural city scenes"},
    {"version", cli_version, "version, protocol version and compiled backends"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: beamfleet COMMAND [OPTIONS]\n\n"
                 "Boresight optimization over many radio scenes on a fleet of GPU workers.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < BF_ARRAY_LEN(commands); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`beamfleet COMMAND --help` describes each command.\n");
}

int cli_main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(name, "--version"))
        name = "version";
    for (size_t i = 0; i < BF_ARRAY_LEN(commands); i++)
        if (!strcmp(commands[i].name, name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "beamfleet: unknown command '%s' (try beamfleet --help)\n", name);
    return CLI_EXIT_USAGE;
}

int cli_option_other(const char *cmd, int c, const char *help, char *const argv[])
{
    if (c == 'h') {
        fputs(help, stdout);
        return CLI_EXIT_OK;
    }
    if (c == ':')
        fprintf(stderr, "beamfleet %s: option %s needs a value\n", cmd, argv[optind - 1]);
    else
        fprintf(stderr, "beamfleet %s: unknown option '%s' (try --help)\n", cmd, argv[optind - 1]);
    return CLI_EXIT_USAGE;
}

int cli_option_sched(const char *cmd, const char *value, bool *inherit)
{
    if (strcmp(value, "batch") != 0 && strcmp(value, "inherit") != 0) {
        fprintf(stderr, "beamfleet %s: --sched: expected batch or inherit, got '%s'\n", cmd, value);
        return CLI_EXIT_USAGE;
    }
    *inherit = !strcmp(value, "inherit");
    return -1;
}

int cli_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: beamfleet version\n\nPrints the version, the protocol version, the "
               "compiled radio-engine backends and the GPU targets embedded in this binary "
               "(sm_XX machine code, compute_XX PTX).\n");
        return CLI_EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "beamfleet version: unexpected argument '%s' (try --help)\n", argv[1]);
        return CLI_EXIT_USAGE;
    }
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    /* read back from this binary, so it cannot say what was only meant */
    char targets[256];
    if (kern_cuda_targets(NULL, targets, sizeof targets) <= 0)
        bf_strlcpy(targets, "none", sizeof targets);
    printf("beamfleet %s\nprotocol %d\nbackends: %s\ngpu targets: %s\nlibzmq %d.%d.%d\n",
           BF_VERSION, PROTO_VERSION, BACKENDS, targets, major, minor, patch);
    return CLI_EXIT_OK;
}

static bf_security_t *security;

static void drop_security(void)
{
    bf_security_destroy(&security);
}

const bf_security_t *cli_security(void)
{
    return security;
}

void cli_security_drop(void)
{
    bf_security_destroy(&security);
}

int cli_load_fleet(const char *path, bf_fleet_t *fleet)
{
    bf_fleet_defaults(fleet);
    if (!path)
        return CLI_EXIT_OK;
    char err[BF_ERRLEN];
    if (bf_fleet_load(path, fleet, err) != BF_OK) {
        fprintf(stderr, "beamfleet: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (fleet->security_keys && !security) {
        security = bf_security_new(fleet->security_keys, fleet->security_identity, err);
        if (!security) {
            fprintf(stderr, "beamfleet: %s: security: %s\n", path, err);
            bf_fleet_clear(fleet); /* as bf_fleet_load leaves it on failure */
            return CLI_EXIT_USAGE;
        }
        atexit(drop_security);
    }
    return CLI_EXIT_OK;
}
