/*  bench/bench_kit.h - what the radio-engine benchmarks share: their common
    flags ([XML] --backend cpu|cuda --rays N --depth D --threads T, the
    shared munich scene by default), the thread count, and the backend by
    name. Header-only, for the benchmarks of this folder alone. */

#ifndef BENCH_KIT_H_INCLUDED
#define BENCH_KIT_H_INCLUDED

#include "kernels/kern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef BF_SHARED_DIR_DEFAULT
#define BF_SHARED_DIR_DEFAULT "../shared"
#endif

typedef struct {
    char xml[1024];      /* the Mitsuba scene [munich from $BF_SHARED_DIR] */
    const char *backend; /* "cpu" or "cuda" [cpu] */
    uint64_t rays;       /* [1e6] */
    unsigned depth;      /* [3] */
    unsigned threads;    /* [all cores] */
} bench_opts_t;

static inline void bench_opts_init(bench_opts_t *o)
{
    const char *shared = getenv("BF_SHARED_DIR") ? getenv("BF_SHARED_DIR") : BF_SHARED_DIR_DEFAULT;
    snprintf(o->xml, sizeof o->xml, "%s/scenes/munich/munich.xml", shared);
    o->backend = "cpu";
    o->rays = 1000000;
    o->depth = 3;
    o->threads = 0;
}

/* Takes argv[*i] (and its value, advancing *i) when it is one of the common
   flags or the positional XML; false when it is not ours. */
static inline bool bench_opts_arg(bench_opts_t *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    bool value = *i + 1 < argc;
    if (!strcmp(a, "--backend") && value)
        o->backend = argv[++*i];
    else if (!strcmp(a, "--rays") && value)
        o->rays = strtoull(argv[++*i], NULL, 10);
    else if (!strcmp(a, "--depth") && value)
        o->depth = (unsigned)atoi(argv[++*i]);
    else if (!strcmp(a, "--threads") && value)
        o->threads = (unsigned)atoi(argv[++*i]);
    else if (a[0] != '-')
        snprintf(o->xml, sizeof o->xml, "%s", a);
    else
        return false;
    return true;
}

/* Fills in the thread count (all cores) and returns the backend named by
   --backend, or NULL (with a line on stderr) when it is not there. */
static inline const kern_backend_t *bench_opts_finish(bench_opts_t *o, const char *prog)
{
    if (o->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->threads = n > 0 ? (unsigned)n : 1;
    }
    const kern_backend_t *be =
        strcmp(o->backend, "cuda") ? kern_backend_cpu() : kern_backend_cuda();
    if (!be)
        fprintf(stderr, "%s: no CUDA backend (not compiled in, or no device)\n", prog);
    return be;
}

#endif
