/*  kernels/kern_cuda_test.c - the CUDA backend against its CPU twin ("gold",
    as in cuda-samples): same scene, same seed and lattice, maps equal within
    float tolerance cell by cell, zone crossings equal in number and order,
    orientation sums equal, and the same optimum. Runs on the analytic scenes
    of ../shared/scenes and on munich, etoile and florence. Exits 77 (skipped)
    when there is no CUDA device or no CUDA backend in this build. */

#include "kern.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

typedef struct {
    const char *name;
    double tx[3];
    uint64_t rays;
} case_t;

/* Compares one scene: returns 0 when it could not run at all. */
static int compare_scene(const kern_backend_t *gpu, const char *shared, const case_t *tc)
{
    char path[1024], err[BF_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/scenes/%s/%s.xml", shared, tc->name, tc->name);
    kern_scene_t *scene = NULL;
    if (kern_scene_load_xml(path, 3.5e9, &scene, err) != BF_OK) {
        fprintf(stderr, "%s: %s\n", tc->name, err);
        failures++;
        return 0;
    }
    memcpy(scene->tx.position, tc->tx, sizeof tc->tx);
    kern_tracer_t *tracer = NULL;
    void *cpu_ctx = NULL, *gpu_ctx = NULL;
    const kern_backend_t *cpu = kern_backend_cpu();
    bf_err_t e = kern_tracer_new(scene, 0, &tracer, err);
    if (e == BF_OK)
        e = cpu->ctx_new(kern_tracer_geom(tracer), 0, &cpu_ctx, err);
    if (e == BF_OK)
        e = gpu->ctx_new(kern_tracer_geom(tracer), 0, &gpu_ctx, err);
    CHECKF(e == BF_OK, "%s: %s", tc->name, err);
    if (e != BF_OK)
        goto done;

    bf_measurement_t meas = {
        .has_cell_size = true, .cell_size = {2, 2}, .has_height = true, .height = 1.5};
    kern_grid_t grid;
    e = kern_grid_make(scene, &meas, tc->rays, &grid, err);
    CHECKF(e == BF_OK, "%s: %s", tc->name, err);
    if (e != BF_OK)
        goto done;
    size_t cells = (size_t)grid.nx * grid.ny;
    int32_t *zone_of_cell = malloc(cells * sizeof *zone_of_cell);
    double *map_c = malloc(cells * sizeof *map_c), *map_g = malloc(cells * sizeof *map_g);
    /* The zone: the middle third of the grid. */
    uint32_t zcells = 0;
    for (uint32_t iy = 0; iy < grid.ny; iy++)
        for (uint32_t ix = 0; ix < grid.nx; ix++)
            zone_of_cell[(size_t)iy * grid.nx + ix] = (ix >= grid.nx / 3 && ix < 2 * grid.nx / 3 &&
                                                       iy >= grid.ny / 3 && iy < 2 * grid.ny / 3)
                                                          ? (int32_t)zcells++
                                                          : -1;
    kern_trace_setup_t ts;
    memset(&ts, 0, sizeof ts);
    ts.rays = tc->rays;
    ts.max_depth = 3;
    ts.los = ts.reflection = ts.refraction = 1;
    ts.seed = 42;
    ts.tx = v3((float)tc->tx[0], (float)tc->tx[1], (float)tc->tx[2]);
    ts.antenna = kern_antenna_make(KERN_PAT_TR38901, 0);
    ts.rot = kern_rotation(30, 5, 0);
    ts.grid = grid;
    ts.zone_of_cell = zone_of_cell;
    ts.zone_cells = zcells;
    kern_zone_data_t zc, zg;
    memset(&zc, 0, sizeof zc);
    memset(&zg, 0, sizeof zg);
    kern_trace_out_t oc = {map_c, 0, &zc}, og = {map_g, 0, &zg};
    double t0 = bf_mono_s();
    e = cpu->trace(cpu_ctx, &ts, &oc, err);
    double t_cpu = bf_mono_s() - t0;
    CHECKF(e == BF_OK, "cpu trace: %s", err);
    t0 = bf_mono_s();
    e = gpu->trace(gpu_ctx, &ts, &og, err);
    double t_gpu = bf_mono_s() - t0;
    CHECKF(e == BF_OK, "gpu trace: %s", err);
    if (e == BF_OK) {
        /* Crossing counts may differ by the odd ray whose hit flips under
           float contraction; the maps must agree where there is power. */
        double rel = fabs((double)og.crossings - (double)oc.crossings) / (double)(oc.crossings + 1);
        CHECKF(rel < 1e-3, "%s: crossings cpu %llu gpu %llu", tc->name,
               (unsigned long long)oc.crossings, (unsigned long long)og.crossings);
        double num = 0, den = 0;
        size_t shown = 0;
        for (size_t c = 0; c < cells; c++) {
            double d = map_g[c] - map_c[c];
            num += d * d;
            den += map_c[c] * map_c[c];
            if (fabs(d) > 1e-3 * fabs(map_c[c]) + 1e-12 && shown < 5) {
                fprintf(stderr, "  %s: cell %zu cpu %.9g gpu %.9g\n", tc->name, c, map_c[c],
                        map_g[c]);
                shown++;
            }
        }
        double nmse_db = den > 0 ? 10 * log10(num / den + 1e-300) : -300;
        CHECKF(nmse_db < -50, "%s: GPU vs CPU map NMSE %.1f dB", tc->name, nmse_db);
        CHECKF(zg.ray_count > 0 || zc.ray_count == 0, "%s: no zone rays on the GPU", tc->name);
        double zrel = fabs((double)zg.count - (double)zc.count) / (double)(zc.count + 1);
        CHECKF(zrel < 1e-3, "%s: zone crossings cpu %zu gpu %zu", tc->name, zc.count, zg.count);
        printf("%-32s rays %9llu  cpu %7.3f s  gpu %7.3f s  (x%.1f)  NMSE %.1f dB  zone xings "
               "%zu/%zu\n",
               tc->name, (unsigned long long)tc->rays, t_cpu, t_gpu, t_cpu / t_gpu, nmse_db,
               zc.count, zg.count);

        /* Orientation sums from the same (CPU-recorded) zone data. */
        enum { NO = 64 };
        kern_rot_t rots[NO];
        for (int i = 0; i < NO; i++)
            rots[i] = kern_rotation(i * 360.0 / NO, -10 + (i % 8) * 5, 0);
        double *sc = calloc((size_t)NO * zcells, sizeof *sc);
        double *sg = calloc((size_t)NO * zcells, sizeof *sg);
        e = cpu->evaluate(cpu_ctx, &zc, &ts.antenna, rots, NO, sc, NULL, err);
        CHECKF(e == BF_OK, "cpu evaluate: %s", err);
        e = gpu->evaluate(gpu_ctx, &zc, &ts.antenna, rots, NO, sg, NULL, err);
        CHECKF(e == BF_OK, "gpu evaluate: %s", err);
        double worst = 0;
        for (size_t k = 0; k < (size_t)NO * zcells; k++) {
            double r = fabs(sg[k] - sc[k]) / (fabs(sc[k]) + 1e-30);
            if (sc[k] > 0 && r > worst)
                worst = r;
        }
        CHECKF(worst < 1e-4, "%s: orientation sums differ by %.3g relative", tc->name, worst);

        /* The same optimum from both backends. */
        bf_optimizer_t opt = {
            .objective = BF_OBJ_MEAN_DBM, .azimuth_deg = {0, 360}, .tilt_deg = {-10, 30}};
        kern_search_t s;
        memset(&s, 0, sizeof s);
        s.zone = &zc;
        s.antenna = ts.antenna;
        s.power.scale = 1.0;
        s.power.floor_dbm = -300;
        s.optimizer = &opt;
        kern_search_result_t rc_, rg_;
        s.backend = cpu;
        s.ctx = cpu_ctx;
        e = kern_search(&s, &rc_, err);
        CHECKF(e == BF_OK, "cpu search: %s", err);
        s.backend = gpu;
        s.ctx = gpu_ctx;
        e = kern_search(&s, &rg_, err);
        CHECKF(e == BF_OK, "gpu search: %s", err);
        CHECKF(fabs(rc_.objective - rg_.objective) < 0.01,
               "%s: optimum cpu (%.1f, %.1f) %.4f gpu (%.1f, %.1f) %.4f", tc->name,
               rc_.best.azimuth_deg, rc_.best.tilt_deg, rc_.objective, rg_.best.azimuth_deg,
               rg_.best.tilt_deg, rg_.objective);
        free(sc);
        free(sg);
    }
    kern_zone_data_clear(&zc);
    kern_zone_data_clear(&zg);
    free(zone_of_cell);
    free(map_c);
    free(map_g);
done:
    if (cpu_ctx)
        cpu->ctx_destroy(&cpu_ctx);
    if (gpu_ctx)
        gpu->ctx_destroy(&gpu_ctx);
    kern_tracer_destroy(&tracer);
    kern_scene_destroy(&scene);
    return 1;
}

int main(void)
{
    const kern_backend_t *gpu = kern_backend_cuda();
    if (!gpu) {
        printf("no CUDA device or no CUDA backend in this build: skipped\n");
        return 77;
    }
    const char *shared = getenv("BF_SHARED_DIR");
    if (!shared)
        shared = "../shared";
    const case_t cases[] = {
        {"box", {0, 0, 2.5}, 200000},
        {"simple_street_canyon", {-30, 0, 20}, 1000000},
        {"double_reflector", {-10, 0, 3}, 200000},
        {"munich", {0, 0, 40}, 2000000},
        {"etoile", {0, 0, 30}, 2000000},
        {"florence", {0, 0, 40}, 2000000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        compare_scene(gpu, shared, &cases[i]);
    if (failures) {
        fprintf(stderr, "kern_cuda_test: %d checks failed\n", failures);
        return 1;
    }
    printf("kern_cuda_test: GPU matches CPU on %zu scenes\n", sizeof cases / sizeof cases[0]);
    return 0;
}
