/*  cli/cli_watch.c - `beamfleet watch`: the collector's live stream (PUB,
    MessagePack) as JSON lines on stdout, one event per line, for jq:
        {"event":"result","result":{...}}
        {"event":"job-done","job":{...}}
    A message that does not decode is reported on stderr and skipped. */

#include "cli.h"

#include "../collector/collector.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static void on_signal(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

int cli_watch(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet watch [-c FLEET.yaml] [--publish EP] [--count N]\n"
        "                       [--collector-key NAME]\n\n"
        "Prints the collector's live result stream as JSON lines: {\"event\":\"result\",\n"
        "\"result\":{...}} for every result the collector has written and {\"event\":\n"
        "\"job-done\",\"job\":{...}} when a job's final report is written. Runs until\n"
        "interrupted, or until N events with --count.\n\n"
        "  --publish EP          the collector's stream [collector.publish, "
        "tcp://127.0.0.1:5557]\n"
        "  --count N             exit after N events\n"
        "  --collector-key NAME  with security: the collector's key in the keys directory\n"
        "                        [collector]\n";
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'}, {"publish", required_argument, NULL, 'p'},
        {"count", required_argument, NULL, 'n'},  {"collector-key", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *config = NULL, *publish = NULL, *collector_key = "collector";
    unsigned long count = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:p:n:k:h", options, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'p':
            publish = optarg;
            break;
        case 'k':
            collector_key = optarg;
            break;
        case 'n':
            count = strtoul(optarg, &end, 10);
            if (!*optarg || *end || count == 0 || optarg[0] == '-') {
                fprintf(stderr, "beamfleet watch: --count: expected a positive number, got '%s'\n",
                        optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        default: /* --help, a missing value, an unknown option */
            return cli_option_other("watch", c, help, argv);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "beamfleet watch: unexpected argument '%s' (try --help)\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    bf_fleet_t fleet;
    if (cli_load_fleet(config, &fleet) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    const char *ep = publish ? publish : fleet.collector_publish;
    int rc = CLI_EXIT_FAILURE;
    char err[BF_ERRLEN];
    void *ctx = zmq_ctx_new();
    void *sub = ctx ? zmq_socket(ctx, ZMQ_SUB) : NULL, *monitor = NULL;
    int zero = 0;
    int64_t maxmsg = (int64_t)PROTO_MAX_FRAME + 1024;
    if (!sub || zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(sub, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) != 0) {
        fprintf(stderr, "beamfleet watch: %s\n", zmq_strerror(zmq_errno()));
        goto done;
    }
    if (cli_security() && bf_security_client_of(cli_security(), collector_key, sub, err) != BF_OK) {
        fprintf(stderr, "beamfleet watch: %s\n", err);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    /* A CURVE/plaintext mismatch or a refused key fails at once, with why,
       as it does for submit; a collector that is not running yet is waited
       for. */
    monitor = bf_handshake_monitor(ctx, sub, err);
    if (!monitor) {
        fprintf(stderr, "beamfleet watch: %s\n", err);
        goto done;
    }
    if (zmq_connect(sub, ep) != 0) {
        fprintf(stderr, "beamfleet watch: --publish %s: %s\n", ep, zmq_strerror(zmq_errno()));
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsigned long seen = 0;
    rc = CLI_EXIT_OK;
    while (!cli_interrupted && (!count || seen < count)) {
        zmq_pollitem_t items[2] = {{sub, 0, ZMQ_POLLIN, 0}, {monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 250) <= 0)
            continue;
        char why[BF_ERRLEN];
        if ((items[1].revents & ZMQ_POLLIN) && bf_handshake_failed(monitor, why, sizeof why)) {
            cli_explain_endpoint(ep, why, sizeof why);
            fprintf(stderr, "beamfleet watch: %s: %s\n", ep, why);
            rc = CLI_EXIT_FAILURE;
            break;
        }
        if (!(items[0].revents & ZMQ_POLLIN))
            continue;
        char topic[32];
        json_t *doc = NULL;
        bf_err_t e = collector_stream_recv(sub, topic, sizeof topic, &doc, ZMQ_DONTWAIT, err);
        if (e == BF_EIO)
            continue;
        if (e != BF_OK) {
            fprintf(stderr, "beamfleet watch: skipping a message: %s\n", err);
            continue;
        }
        bool is_result = !strcmp(topic, "result");
        json_t *line = json_pack("{s:s, s:o}", "event", topic, is_result ? "result" : "job", doc);
        char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
        json_decref(line);
        if (!text) {
            fprintf(stderr, "beamfleet watch: out of memory\n");
            rc = CLI_EXIT_FAILURE;
            break;
        }
        if (puts(text) == EOF) { /* the reader went away (| head) */
            free(text);
            break;
        }
        free(text);
        seen++;
    }
done:
    bf_handshake_monitor_close(sub, &monitor);
    if (sub)
        zmq_close(sub);
    if (ctx)
        zmq_ctx_term(ctx);
    bf_fleet_clear(&fleet);
    return rc;
}
