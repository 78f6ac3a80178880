/*  bench/radiomap.c - radio map throughput of the CPU backend on a real
    Sionna scene (munich by default): loads the Mitsuba XML, builds the BVH,
    shoots N rays (default 1e6) from a rooftop-ish transmitter with max_depth
    3 over a 10 m grid covering the scene at 1.5 m, and prints rays/s and
    plane crossings/s with all cores (or --threads).

    usage: bench_radiomap [XML] [--backend cpu|cuda] [--rays N] [--depth D] [--threads T] [--repeat
   R] */

#include "kernels/kern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef BF_SHARED_DIR_DEFAULT
#define BF_SHARED_DIR_DEFAULT "../shared"
#endif

int main(int argc, char **argv)
{
    const char *backend = "cpu"; /* --backend cpu|cuda */
    const char *shared = getenv("BF_SHARED_DIR") ? getenv("BF_SHARED_DIR") : BF_SHARED_DIR_DEFAULT;
    char xml[1024];
    snprintf(xml, sizeof xml, "%s/scenes/munich/munich.xml", shared);
    uint64_t rays = 1000000;
    unsigned depth = 3, threads = 0, repeat = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--rays") && i + 1 < argc)
            rays = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--depth") && i + 1 < argc)
            depth = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = (unsigned)atoi(argv[++i]);
        else if (argv[i][0] != '-')
            snprintf(xml, sizeof xml, "%s", argv[i]);
        else {
            fprintf(stderr, "usage: bench_radiomap [XML] [--backend cpu|cuda] [--rays N] [--depth "
                            "D] [--threads T] [--repeat R]\n");
            return 2;
        }
    }
    if (rays == 0 || repeat == 0) {
        fprintf(stderr, "bench_radiomap: --rays and --repeat must be positive\n");
        return 2;
    }
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    char err[BF_ERRLEN] = "";
    kern_scene_t *scene = NULL;
    double t0 = bf_mono_s();
    if (kern_scene_load_xml(xml, 3.5e9, &scene, err) != BF_OK) {
        fprintf(stderr, "bench_radiomap: %s\n", err);
        return 1;
    }
    double t_load = bf_mono_s() - t0;
    kern_tracer_t *tracer = NULL;
    void *ctx = NULL;
    const kern_backend_t *be = strcmp(backend, "cuda") ? kern_backend_cpu() : kern_backend_cuda();
    if (!be) {
        fprintf(stderr, "%s: no CUDA backend (not compiled in, or no device)\n", argv[0]);
        return 77;
    }
    t0 = bf_mono_s();
    if (kern_tracer_new(scene, threads, &tracer, err) != BF_OK ||
        be->ctx_new(kern_tracer_geom(tracer), threads, &ctx, err) != BF_OK) {
        fprintf(stderr, "bench_radiomap: %s\n", err);
        return 1;
    }
    double t_bvh = bf_mono_s() - t0;
    bf_measurement_t meas = {false, false, true, true, {0, 0}, {0, 0}, 1.5, {10, 10}};
    kern_trace_setup_t s;
    memset(&s, 0, sizeof s);
    if (kern_grid_make(scene, &meas, rays, &s.grid, err) != BF_OK) {
        fprintf(stderr, "bench_radiomap: %s\n", err);
        return 1;
    }
    s.rays = rays;
    s.max_depth = depth;
    s.los = s.reflection = s.refraction = 1;
    s.seed = 42;
    s.tx = v3(0, 0, 40);
    s.antenna = kern_antenna_make(KERN_PAT_TR38901, 0);
    s.rot = kern_rotation(0, 10, 0);
    size_t cells = (size_t)s.grid.nx * s.grid.ny;
    double *map = malloc(cells * sizeof *map);
    double best = INFINITY;
    uint64_t crossings = 0;
    for (unsigned r = 0; r < repeat; r++) {
        kern_trace_out_t out = {map, 0, NULL};
        t0 = bf_mono_s();
        if (be->trace(ctx, &s, &out, err) != BF_OK) {
            fprintf(stderr, "bench_radiomap: %s\n", err);
            return 1;
        }
        double dt = bf_mono_s() - t0;
        best = dt < best ? dt : best;
        crossings = out.crossings;
    }
    size_t lit = 0;
    for (size_t c = 0; c < cells; c++)
        lit += map[c] > 0;
    printf("| scene | triangles | rays | depth | threads | grid | load s | bvh s | trace s (best "
           "of %u) | rays/s | "
           "crossings/s | crossings | lit cells |\n",
           repeat);
    printf("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    printf("| %s | %zu | %llu | %u | %u | %ux%u | %.2f | %.2f | %.3f | %.3g | %.3g | %llu | "
           "%zu/%zu |\n",
           scene->name ? scene->name : "scene", scene->triangle_count, (unsigned long long)rays,
           depth, threads, s.grid.nx, s.grid.ny, t_load, t_bvh, best, (double)rays / best,
           (double)crossings / best, (unsigned long long)crossings, lit, cells);
    free(map);
    be->ctx_destroy(&ctx);
    kern_tracer_destroy(&tracer);
    kern_scene_destroy(&scene);
    return 0;
}
