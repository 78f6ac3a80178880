/*  bench/radiomap.c - radio map throughput of the CPU backend on a real
    Sionna scene (munich by default): loads the Mitsuba XML, builds the BVH,
    shoots N rays (default 1e6) from a rooftop-ish transmitter with max_depth
    3 over a 10 m grid covering the scene at 1.5 m, and prints rays/s and
    plane crossings/s with all cores (or --threads), and a hash of the map's
    bits, which two builds that trace alike print alike.

    usage: bench_radiomap [XML] [--backend cpu|cuda] [--rays N] [--depth D] [--threads T] [--repeat
   R] */

#include "bench_kit.h"

int main(int argc, char **argv)
{
    bench_opts_t o;
    bench_opts_init(&o);
    unsigned repeat = 3;
    for (int i = 1; i < argc; i++) {
        if (bench_opts_arg(&o, argc, argv, &i))
            continue;
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = (unsigned)atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_radiomap [XML] [--backend cpu|cuda] [--rays N] [--depth "
                            "D] [--threads T] [--repeat R]\n");
            return 2;
        }
    }
    if (o.rays == 0 || repeat == 0) {
        fprintf(stderr, "bench_radiomap: --rays and --repeat must be positive\n");
        return 2;
    }
    const kern_backend_t *be = bench_opts_finish(&o, argv[0]);
    if (!be)
        return 77;
    const char *xml = o.xml;
    uint64_t rays = o.rays;
    unsigned depth = o.depth, threads = o.threads;
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
    uint64_t fnv = 14695981039346656037ull; /* FNV-1a of the map's bytes: equal maps, equal bits */
    for (size_t c = 0; c < cells; c++) {
        lit += map[c] > 0;
        const unsigned char *p = (const unsigned char *)&map[c];
        for (size_t k = 0; k < sizeof map[c]; k++)
            fnv = (fnv ^ p[k]) * 1099511628211ull;
    }
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
    printf("(map FNV-1a %016llx)\n", (unsigned long long)fnv);
    free(map);
    be->ctx_destroy(&ctx);
    kern_tracer_destroy(&tracer);
    kern_scene_destroy(&scene);
    return 0;
}
