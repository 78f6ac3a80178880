/*  bench/boresight.c - the exact orientation search (DESIGN 6.5) against
    re-tracing the scene for every candidate orientation. Traces a scene once
    at the initial orientation while recording the zone crossings, runs the
    search (coarse grid + pattern search to 0.1 deg) with a recording
    wrapper around the CPU backend's evaluate so the exact candidate list is
    known, then re-traces the scene at an evenly spaced subset of those same
    candidates: the per-candidate re-trace time times the candidate count is
    the cost of a re-tracing search (extrapolated from the measured subset,
    and labelled so), and the objective values from the re-traces are
    compared with the exact ones (the optimum included): identical values
    mean a re-tracing search takes the same decisions and ends at the same
    optimum.

    usage: bench_boresight [XML] [--backend cpu|cuda] [--rays N] [--depth D] [--threads T] [--sample
   K] [--tx X,Y,Z]
   [--cell M] */

#include "bench_kit.h"

/* The backend measured (--backend), and a wrapper of it that records every
   rotation it is asked to evaluate. */
static const kern_backend_t *g_backend;
typedef struct {
    kern_rot_t *rots;
    size_t count, cap;
} recorder_t;
static recorder_t *g_rec; /* bench-only: the ops table has no user pointer */

static bf_err_t rec_evaluate(void *ctx, const kern_zone_data_t *zone, const kern_antenna_t *ant,
                             const kern_rot_t *rots, size_t count, double *sums,
                             volatile int *cancel, char *err)
{
    if (!bf_grow(&g_rec->rots, &g_rec->cap, g_rec->count + count, sizeof *g_rec->rots, 1024))
        return bf_fail(err, BF_ENOMEM, "out of memory");
    memcpy(g_rec->rots + g_rec->count, rots, count * sizeof *rots);
    g_rec->count += count;
    return g_backend->evaluate(ctx, zone, ant, rots, count, sums, cancel, err);
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    bench_opts_init(&o);
    unsigned sample = 8;
    float tx[3] = {0, 0, 40}, cell = 10;
    for (int i = 1; i < argc; i++) {
        if (bench_opts_arg(&o, argc, argv, &i))
            continue;
        if (!strcmp(argv[i], "--tx") && i + 1 < argc) {
            sscanf(argv[++i], "%f,%f,%f", &tx[0], &tx[1], &tx[2]);
        } else if (!strcmp(argv[i], "--cell") && i + 1 < argc) {
            cell = (float)atof(argv[++i]);
        } else if (!strcmp(argv[i], "--sample") && i + 1 < argc) {
            sample = (unsigned)atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_boresight [XML] [--backend cpu|cuda] [--rays N] [--depth "
                            "D] [--threads T] "
                            "[--sample K] [--tx X,Y,Z] [--cell M]\n");
            return 2;
        }
    }
    if (o.rays == 0 || !(cell > 0)) {
        fprintf(stderr, "bench_boresight: --rays and --cell must be positive\n");
        return 2;
    }
    const kern_backend_t *cpu = bench_opts_finish(&o, "bench_boresight");
    if (!cpu)
        return 77;
    const char *xml = o.xml;
    uint64_t rays = o.rays;
    unsigned depth = o.depth, threads = o.threads;
    char err[BF_ERRLEN] = "";
    kern_scene_t *scene = NULL;
    if (kern_scene_load_xml(xml, 3.5e9, &scene, err) != BF_OK) {
        fprintf(stderr, "bench_boresight: %s\n", err);
        return 1;
    }
    kern_tracer_t *tracer = NULL;
    void *ctx = NULL;
    g_backend = cpu;
    if (kern_tracer_new(scene, threads, &tracer, err) != BF_OK ||
        cpu->ctx_new(kern_tracer_geom(tracer), threads, &ctx, err) != BF_OK) {
        fprintf(stderr, "bench_boresight: %s\n", err);
        return 1;
    }
    /* a grid of --cell m over the scene at 1.5 m; the zone: the block 55..80 % of the grid's width
       and 30..70 % of its height */
    bf_measurement_t meas = {false, false, true, true, {0, 0}, {0, 0}, 1.5, {cell, cell}};
    kern_trace_setup_t s;
    memset(&s, 0, sizeof s);
    if (kern_grid_make(scene, &meas, rays, &s.grid, err) != BF_OK) {
        fprintf(stderr, "bench_boresight: %s\n", err);
        return 1;
    }
    size_t cells = (size_t)s.grid.nx * s.grid.ny;
    int32_t *zone_of_cell = malloc(cells * sizeof *zone_of_cell);
    uint32_t zcells = 0;
    for (uint32_t iy = 0; iy < s.grid.ny; iy++)
        for (uint32_t ix = 0; ix < s.grid.nx; ix++) {
            double x = s.grid.x0 + (ix + 0.5) * s.grid.dx, y = s.grid.y0 + (iy + 0.5) * s.grid.dy;
            double u = (x - s.grid.x0) / (s.grid.nx * s.grid.dx),
                   w = (y - s.grid.y0) / (s.grid.ny * s.grid.dy);
            zone_of_cell[(size_t)iy * s.grid.nx + ix] =
                (u > 0.55 && u < 0.8 && w > 0.3 && w < 0.7) ? (int32_t)zcells++ : -1;
        }
    if (zcells == 0) {
        fprintf(stderr, "bench_boresight: the zone has no cell (grid too coarse?)\n");
        return 1;
    }
    s.rays = rays;
    s.max_depth = depth;
    s.los = s.reflection = s.refraction = 1;
    s.seed = 42;
    s.tx = v3(tx[0], tx[1], tx[2]);
    s.antenna = kern_antenna_make(KERN_PAT_TR38901, 0);
    s.rot = kern_rotation(0, 0, 0);
    s.zone_of_cell = zone_of_cell;
    s.zone_cells = zcells;
    double *map = malloc(cells * sizeof *map);
    kern_zone_data_t zone;
    memset(&zone, 0, sizeof zone);
    kern_trace_out_t out = {map, 0, &zone};
    double t0 = bf_mono_s();
    if (cpu->trace(ctx, &s, &out, err) != BF_OK) {
        fprintf(stderr, "bench_boresight: %s\n", err);
        return 1;
    }
    double t_trace0 = bf_mono_s() - t0;

    double lambda = 299792458.0 / 3.5e9;
    kern_power_t pw = {pow(10.0, (44.0 - 30.0) / 10.0) * pow(lambda / (4 * KERN_PI), 2) / 100.0,
                       -300.0};
    bf_optimizer_t op = {BF_OBJ_MEAN_DBM, {0, 360}, {-10, 30}, -100, false, 0};
    recorder_t rec = {NULL, 0, 0};
    g_rec = &rec;
    kern_backend_t recording = *cpu;
    recording.evaluate = rec_evaluate;
    kern_search_t search;
    memset(&search, 0, sizeof search);
    search.backend = &recording;
    search.ctx = ctx;
    search.zone = &zone;
    search.antenna = s.antenna;
    search.power = pw;
    search.optimizer = &op;
    kern_search_result_t res;
    t0 = bf_mono_s();
    if (kern_search(&search, &res, err) != BF_OK) {
        fprintf(stderr, "bench_boresight: %s\n", err);
        return 1;
    }
    double t_search = bf_mono_s() - t0;
    size_t n = rec.count;

    /* re-trace a subset of the same candidates, plus the optimum */
    s.zone_of_cell = NULL;
    double *scratch = malloc(zcells * sizeof *scratch), *zs = malloc(zcells * sizeof *zs);
    double t_retrace = 0, worst = 0;
    size_t measured = 0;
    kern_rot_t best_rot = kern_rotation(res.best.azimuth_deg, res.best.tilt_deg, 0);
    size_t n_retrace =
        sample == 0 || sample > n ? n : sample; /* --sample 0: every candidate, no extrapolation */
    for (size_t k = 0; k <= n_retrace; k++) {
        kern_rot_t R = k < n_retrace ? rec.rots[k * n / n_retrace] : best_rot;
        s.rot = R;
        kern_trace_out_t o = {map, 0, NULL};
        t0 = bf_mono_s();
        if (cpu->trace(ctx, &s, &o, err) != BF_OK) {
            fprintf(stderr, "bench_boresight: %s\n", err);
            return 1;
        }
        for (size_t c = 0; c < cells; c++)
            if (zone_of_cell[c] >= 0)
                zs[zone_of_cell[c]] = map[c];
        double v_retrace = kern_objective(zs, zcells, &pw, op.objective, op.coverage_dbm, scratch);
        t_retrace += bf_mono_s() - t0;
        measured++;
        double v_exact;
        if (cpu->evaluate(ctx, &zone, &s.antenna, &R, 1, zs, NULL, err) != BF_OK) {
            fprintf(stderr, "bench_boresight: %s\n", err);
            return 1;
        }
        v_exact = kern_objective(zs, zcells, &pw, op.objective, op.coverage_dbm, scratch);
        worst = fmax(worst, fabs(v_exact - v_retrace));
        if (k == n_retrace && fabs(v_retrace - res.objective) > worst)
            worst = fabs(v_retrace - res.objective);
    }
    /* measured includes the optimum's re-trace: mean over all of them */
    double per = t_retrace / (double)measured, retrace_total = per * (double)n;
    const char *how = n_retrace < n ? "extrapolated" : "measured";
    printf("| scene | rays | depth | threads | zone cells | zone crossings | candidates | first "
           "trace s "
           "| exact search s | re-trace s per candidate | re-trace search s | speed-up (search) "
           "| speed-up (incl. first trace) | optimum az/tilt | max diff exact vs re-trace dB |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
    printf("| %s | %llu | %u | %u | %u | %zu | %zu | %.3f | %.3f | %.3f (%zu re-traced) | %.1f "
           "(%s) | %.0fx "
           "| %.0fx | %.1f/%.1f | %.2g |\n",
           scene->name ? scene->name : "scene", (unsigned long long)rays, depth, threads, zcells,
           zone.count, n, t_trace0, t_search, per, measured, retrace_total, how,
           retrace_total / t_search, retrace_total / (t_search + t_trace0), res.best.azimuth_deg,
           res.best.tilt_deg, worst);
    printf("same optimum: %s (re-traced objectives equal the exact ones to %.2g dB, so a "
           "re-tracing search takes "
           "the same steps)\n",
           worst < 1e-3 ? "yes" : "NO", worst);
    free(rec.rots);
    free(scratch);
    free(zs);
    free(map);
    free(zone_of_cell);
    kern_zone_data_clear(&zone);
    cpu->ctx_destroy(&ctx);
    kern_tracer_destroy(&tracer);
    kern_scene_destroy(&scene);
    return worst < 1e-3 ? 0 : 1;
}
