/*  cli/cli_keys.c - `beamfleet keygen`: a CURVE key pair with its role, the
    files the fleet file's `security: {keys, identity}` points at. */

#include "cli.h"

#include <getopt.h>
#include <string.h>

int cli_keygen(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet keygen --out DIR NAME [--role worker|collector|client|admin|broker]\n"
        "                        [--force]\n\n"
        "Writes DIR/NAME.public and DIR/NAME.secret (mode 0600): a CURVE key pair and its role.\n"
        "DIR is the fleet's trust list: the broker admits exactly the keys of DIR/*.public, each\n"
        "with its role (a worker key cannot submit or cancel), and everyone trusts\n"
        "DIR/broker.public. Make the broker's key first: `beamfleet keygen --out DIR broker\n"
        "--role broker`. Copy only NAME.secret (and broker.public) to the host that uses it.\n\n"
        "  --role ROLE  [worker]; the key named broker must have role broker\n"
        "  --force      replace an existing key of that name\n";
    static const struct option options[] = {{"out", required_argument, NULL, 'o'},
                                            {"role", required_argument, NULL, 'r'},
                                            {"force", no_argument, NULL, 'f'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *dir = NULL, *role_name = NULL;
    bool force = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:r:fh", options, NULL)) != -1) {
        switch (c) {
        case 'o':
            dir = optarg;
            break;
        case 'r':
            role_name = optarg;
            break;
        case 'f':
            force = true;
            break;
        default: /* --help, a missing value, an unknown option */
            return cli_option_other("keygen", c, help, argv);
        }
    }
    if (!dir) {
        fprintf(stderr, "beamfleet keygen: --out DIR is required (try --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "beamfleet keygen: expected one key NAME, got %d arguments\n",
                argc - optind);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[optind];
    bf_role_t role = BF_ROLE_WORKER;
    if (role_name && !bf_role_parse(role_name, &role)) {
        fprintf(stderr,
                "beamfleet keygen: --role %s: expected worker, collector, client, admin or "
                "broker\n",
                role_name);
        return CLI_EXIT_USAGE;
    }
    if (!role_name && !strcmp(name, "broker"))
        role = BF_ROLE_BROKER;
    if ((role == BF_ROLE_BROKER) != !strcmp(name, "broker")) {
        fprintf(stderr, "beamfleet keygen: --role %s: only the key named broker has role broker\n",
                bf_role_name(role));
        return CLI_EXIT_USAGE;
    }
    char err[BF_ERRLEN];
    bf_err_t e = bf_keygen(dir, name, role, force, err);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet keygen: %s\n", err);
        return e == BF_EINVAL || e == BF_EEXIST ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    printf("%s/%s.public\n%s/%s.secret\n", dir, name, dir, name);
    return CLI_EXIT_OK;
}
