/*  cli/cli_tools.c - the commands that need no fleet: `solve` (one scene in
    this process, the same result a worker produces) and `scenegen`
    (procedural city scenes in the Sionna format). */

#include "cli.h"

#include "../kernels/kern.h"
#include "../worker/worker.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

static void print_progress(void *ud, const char *stage, double fraction)
{
    (void)ud;
    if (fraction <= 0.0)
        fprintf(stderr, "solve: %s\n", stage);
}

int cli_solve(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet solve SCENE_DIR [-j JOB.yaml] [--out FILE.json] [--maps DIR]\n"
        "                       [--threads N] [--cpu]\n\n"
        "Runs the boresight task on one scene in this process, without a fleet, and prints the\n"
        "result document (the same a worker produces). Solver, measurement, optimizer and\n"
        "validation settings come from the job file, else from the defaults.\n\n"
        "  --out FILE.json  write the result there instead of printing it\n"
        "  --maps DIR       also write DIR/initial.csv and DIR/optimized.csv (x,y,dbm per cell)\n"
        "  --threads N      CPU threads [all cores]\n"
        "  --cpu            use the CPU engine even when a GPU is present\n";
    static const struct option options[] = {{"job", required_argument, NULL, 'j'},
                                            {"out", required_argument, NULL, 'o'},
                                            {"maps", required_argument, NULL, 'm'},
                                            {"threads", required_argument, NULL, 't'},
                                            {"cpu", no_argument, NULL, 'C'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *job_path = NULL, *out = NULL, *maps = NULL;
    long threads = 0;
    bool cpu = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:o:m:t:h", options, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'j':
            job_path = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'm':
            maps = optarg;
            break;
        case 't':
            errno = 0;
            threads = strtol(optarg, &end, 10);
            if (errno || *end || threads < 1 || threads > 4096) {
                fprintf(stderr, "beamfleet solve: --threads: expected 1..4096, got '%s'\n", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'C':
            cpu = true;
            break;
        default: /* --help, a missing value, an unknown option */
            return cli_option_other("solve", c, help, argv);
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "beamfleet solve: expected one SCENE_DIR (try --help)\n");
        return CLI_EXIT_USAGE;
    }
    const char *scene_dir = argv[optind];
    char err[BF_ERRLEN] = "";
    bf_job_t job;
    if (job_path) {
        if (bf_job_load(job_path, &job, err) != BF_OK) {
            fprintf(stderr, "beamfleet solve: %s\n", err);
            return CLI_EXIT_USAGE;
        }
    } else {
        bf_job_defaults(&job);
    }
    if (maps && bf_mkdir_p(maps, err) != BF_OK) {
        fprintf(stderr, "beamfleet solve: --maps %s: %s\n", maps, err);
        bf_job_clear(&job);
        return CLI_EXIT_USAGE;
    }
    /* the worker's own conversions, job to settings and result to document */
    kern_boresight_opts_t opts;
    worker_boresight_opts(&job, &opts);
    bf_job_clear(&job);
    opts.backend = cpu ? KERN_BACKEND_CPU : KERN_BACKEND_AUTO;
    opts.threads = (unsigned)threads;
    opts.maps_dir = maps;
    opts.progress = print_progress;
    kern_boresight_result_t found;
    double t0 = bf_mono_s();
    bf_err_t e = kern_boresight(scene_dir, &opts, &found, err);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet solve: %s\n", err[0] ? err : bf_strerror(e));
        return e == BF_EINVAL || e == BF_ENOENT ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    json_t *result = worker_boresight_json(&found);
    kern_boresight_result_clear(&found);
    if (!result) {
        fprintf(stderr, "beamfleet solve: %s\n", bf_strerror(BF_ENOMEM));
        return CLI_EXIT_FAILURE;
    }
    char *scene_copy = bf_strdup(scene_dir);
    json_object_set_new(result, "scene", json_string(scene_copy ? basename(scene_copy) : ""));
    free(scene_copy);
    json_object_set_new(result, "elapsed_time", json_real(bf_mono_s() - t0));
    char *text = json_dumps(result, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    int rc = CLI_EXIT_OK;
    if (!text) {
        rc = CLI_EXIT_FAILURE;
    } else if (out) {
        size_t len = strlen(text);
        text[len] = '\n';
        if (bf_write_atomic(out, text, len + 1, err) != BF_OK) {
            fprintf(stderr, "beamfleet solve: --out %s: %s\n", out, err);
            rc = CLI_EXIT_FAILURE;
        }
        text[len] = '\0';
        const json_t *stats = json_object_get(result, "stats");
        printf("%s: %s, improvement %+.2f dB (wrote %s)\n",
               json_string_value(json_object_get(result, "scene")),
               json_string_value(json_object_get(result, "status")),
               json_number_value(json_object_get(stats, "improvement_mean")), out);
    } else {
        puts(text);
    }
    free(text);
    json_decref(result);
    return rc;
}

int cli_scenegen(int argc, char **argv)
{
    static const char help[] =
        "usage: beamfleet scenegen --out DIR [--count N] [--seed S]\n\n"
        "Writes N procedural city scenes (street grid, buildings with ITU materials, a ground\n"
        "plane, and a scene.yaml with a rooftop transmitter and a zone) into DIR/city_000, ...\n"
        "in the Sionna RT format. The same seed gives the same scenes.\n\n"
        "  --count N   [16]    --seed S   [1]\n";
    static const struct option options[] = {{"out", required_argument, NULL, 'o'},
                                            {"count", required_argument, NULL, 'n'},
                                            {"seed", required_argument, NULL, 's'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *out = NULL;
    unsigned long count = 16;
    unsigned long long seed = 1;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:n:s:h", options, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'n':
            errno = 0;
            count = strtoul(optarg, &end, 10);
            if (errno || *end || optarg[0] == '-' || count < 1 || count > 100000) {
                fprintf(stderr, "beamfleet scenegen: --count: expected 1..100000, got '%s'\n",
                        optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 's':
            errno = 0;
            seed = strtoull(optarg, &end, 10);
            if (errno || *end || optarg[0] == '-') {
                fprintf(stderr, "beamfleet scenegen: --seed: expected a whole number, got '%s'\n",
                        optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        default: /* --help, a missing value, an unknown option */
            return cli_option_other("scenegen", c, help, argv);
        }
    }
    if (!out || optind != argc) {
        fprintf(stderr, "beamfleet scenegen: --out DIR is required (try --help)\n");
        return CLI_EXIT_USAGE;
    }
    char err[BF_ERRLEN] = "";
    bf_err_t e = kern_scenegen(out, (unsigned)count, (uint64_t)seed, err);
    if (e != BF_OK) {
        fprintf(stderr, "beamfleet scenegen: %s\n", err[0] ? err : bf_strerror(e));
        return CLI_EXIT_FAILURE;
    }
    printf("wrote %lu scenes to %s\n", count, out);
    return CLI_EXIT_OK;
}
