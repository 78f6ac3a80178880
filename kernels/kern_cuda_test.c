/*  kernels/kern_cuda_test.c - the CUDA backend against its CPU twin ("gold",
    as in cuda-samples). Both walk every ray with the same code
    (kern_bounce.h) and the same bits (kern_hd.h, kern_math.h; checked
    without a GPU by kern_contract_test and kern_cuda_ptx_test), so the
    crossing counts are equal, the maps differ only by the order of the
    GPU's double atomics (NMSE at most -60 dB, in practice near -300 dB),
    and the zone records are the CPU's element by element: the same rays in
    the same order, each departure direction and Jones form bit for bit.
    Then orientation sums from the CPU's records and from the GPU's own
    records, each evaluated on the GPU, match the CPU's, and the search on
    the GPU's records finds the CPU's optimum. Runs on the analytic scenes of
    ../shared/scenes (simple_street_canyon also rough, with the diffuse
    reflection) and on munich, etoile and florence. Exits 77 (skipped)
    when there is no CUDA device or no CUDA backend in this build. */

#include "kern.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

/* Element by element, the GPU's zone records against the CPU's: returns
   how many rays or crossings differ (printing the first few). */
static size_t compare_zone(const char *name, const kern_zone_data_t *zc, const kern_zone_data_t *zg)
{
    size_t bad = 0;
    if (zc->ray_count != zg->ray_count || zc->count != zg->count) {
        fprintf(stderr, "  %s: zone rays cpu %zu gpu %zu, crossings cpu %zu gpu %zu\n", name,
                zc->ray_count, zg->ray_count, zc->count, zg->count);
        bad++;
    }
    size_t nr = zc->ray_count < zg->ray_count ? zc->ray_count : zg->ray_count;
    for (size_t r = 0; r < nr; r++) {
        const kern_zray_t *a = &zc->rays[r], *b = &zg->rays[r];
        if (memcmp(a->d, b->d, sizeof a->d) != 0 || a->count != b->count) {
            if (bad < 5)
                fprintf(stderr, "  %s: zone ray %zu: cpu (%a %a %a) x%u gpu (%a %a %a) x%u\n", name,
                        r, a->d[0], a->d[1], a->d[2], a->count, b->d[0], b->d[1], b->d[2],
                        b->count);
            bad++;
        }
    }
    size_t nx = zc->count < zg->count ? zc->count : zg->count;
    for (size_t i = 0; i < nx; i++) {
        const kern_zxing_t *a = &zc->xings[i], *b = &zg->xings[i];
        if (a->cell != b->cell || memcmp(a->m, b->m, sizeof a->m) != 0) {
            if (bad < 5)
                fprintf(stderr,
                        "  %s: zone crossing %zu: cpu cell %u m (%a %a %a) gpu cell %u m (%a "
                        "%a %a)\n",
                        name, i, a->cell, a->m[0], a->m[1], a->m[2], b->cell, b->m[0], b->m[1],
                        b->m[2]);
            bad++;
        }
    }
    return bad;
}

/* Largest relative difference of GPU orientation sums from the CPU's. */
static double worst_rel(const double *sc, const double *sg, size_t n)
{
    double worst = 0;
    for (size_t k = 0; k < n; k++) {
        double r = fabs(sg[k] - sc[k]) / (fabs(sc[k]) + 1e-300);
        if ((sc[k] != 0 || sg[k] != 0) && r > worst)
            worst = r;
    }
    return worst;
}

typedef struct {
    const char *name;
    double tx[3];
    uint64_t rays;
    int rough; /* materials made rough (S 0.5, XPD 0.2), the diffuse reflection on */
} case_t;

/* Compares one scene: returns 0 when it could not run at all. */
static int compare_scene(const kern_backend_t *gpu, const char *shared, const case_t *tc)
{
    char path[1024], err[BF_ERRLEN] = "", label[96];
    snprintf(path, sizeof path, "%s/scenes/%s/%s.xml", shared, tc->name, tc->name);
    snprintf(label, sizeof label, "%s%s", tc->name, tc->rough ? " (rough, diffuse)" : "");
    kern_scene_t *scene = NULL;
    if (kern_scene_load_xml(path, 3.5e9, &scene, err) != BF_OK) {
        fprintf(stderr, "%s: %s\n", label, err);
        failures++;
        return 0;
    }
    memcpy(scene->tx.position, tc->tx, sizeof tc->tx);
    for (size_t i = 0; tc->rough && i < scene->material_count; i++) {
        scene->materials[i].scattering_coefficient = 0.5;
        scene->materials[i].xpd_coefficient = 0.2;
        if (i % 2) { /* and every other one backscattering */
            scene->materials[i].scattering_pattern = KERN_SCATTER_BACKSCATTERING;
            scene->materials[i].alpha_r = 3;
            scene->materials[i].alpha_i = 2;
            scene->materials[i].lambda = 0.6;
        }
    }
    kern_tracer_t *tracer = NULL;
    void *cpu_ctx = NULL, *gpu_ctx = NULL;
    const kern_backend_t *cpu = kern_backend_cpu();
    bf_err_t e = kern_tracer_new(scene, 0, &tracer, err);
    if (e == BF_OK)
        e = cpu->ctx_new(kern_tracer_geom(tracer), 0, &cpu_ctx, err);
    if (e == BF_OK)
        e = gpu->ctx_new(kern_tracer_geom(tracer), 0, &gpu_ctx, err);
    CHECKF(e == BF_OK, "%s: %s", label, err);
    if (e != BF_OK)
        goto done;

    bf_measurement_t meas = {
        .has_cell_size = true, .cell_size = {2, 2}, .has_height = true, .height = 1.5};
    kern_grid_t grid;
    e = kern_grid_make(scene, &meas, tc->rays, &grid, err);
    CHECKF(e == BF_OK, "%s: %s", label, err);
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
    ts.diffuse_reflection = tc->rough;
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
    if (e == BF_OK) {
        e = gpu->trace(gpu_ctx, &ts, &og, err);
        CHECKF(e == BF_OK, "gpu trace: %s", err);
    }
    double t_gpu = bf_mono_s() - t0;
    if (e == BF_OK) {
        /* the same rays: the same crossings, counted exactly */
        CHECKF(og.crossings == oc.crossings, "%s: crossings cpu %llu gpu %llu", label,
               (unsigned long long)oc.crossings, (unsigned long long)og.crossings);
        double num = 0, den = 0;
        size_t shown = 0;
        for (size_t c = 0; c < cells; c++) {
            double d = map_g[c] - map_c[c];
            num += d * d;
            den += map_c[c] * map_c[c];
            if (fabs(d) > 1e-9 * fabs(map_c[c]) + 1e-300 && shown < 5) {
                fprintf(stderr, "  %s: cell %zu cpu %.17g gpu %.17g\n", label, c, map_c[c],
                        map_g[c]);
                shown++;
            }
        }
        double nmse_db = num > 0 ? 10 * log10(num / den) : -400;
        CHECKF(den > 0 && nmse_db <= -60, "%s: GPU vs CPU map NMSE %.1f dB", label, nmse_db);
        size_t zbad = compare_zone(label, &zc, &zg);
        CHECKF(zc.ray_count > 0 && zbad == 0, "%s: %zu zone records differ (of %zu rays)", label,
               zbad, zc.ray_count);
        printf("%-32s rays %9llu  cpu %7.3f s  gpu %7.3f s  (x%.1f)  NMSE %.1f dB  zone rays %zu, "
               "crossings %zu, %zu differ\n",
               label, (unsigned long long)tc->rays, t_cpu, t_gpu, t_cpu / t_gpu, nmse_db,
               zc.ray_count, zc.count, zbad);

        /* Orientation sums: the CPU from its records; the GPU from the
           CPU's records and from its own. Every term is the same float, so
           only the order of the double sums differs. */
        enum { NO = 64 };
        kern_rot_t rots[NO];
        for (int i = 0; i < NO; i++)
            rots[i] = kern_rotation(i * 360.0 / NO, -10 + (i % 8) * 5, 0);
        size_t ns = (size_t)NO * zcells;
        double *sc = calloc(ns, sizeof *sc), *sg = calloc(ns, sizeof *sg),
               *so = calloc(ns, sizeof *so);
        e = cpu->evaluate(cpu_ctx, &zc, &ts.antenna, rots, NO, sc, NULL, err);
        CHECKF(e == BF_OK, "cpu evaluate: %s", err);
        e = gpu->evaluate(gpu_ctx, &zc, &ts.antenna, rots, NO, sg, NULL, err);
        CHECKF(e == BF_OK, "gpu evaluate (cpu records): %s", err);
        e = gpu->evaluate(gpu_ctx, &zg, &ts.antenna, rots, NO, so, NULL, err);
        CHECKF(e == BF_OK, "gpu evaluate (gpu records): %s", err);
        double w1 = worst_rel(sc, sg, ns), w2 = worst_rel(sc, so, ns);
        CHECKF(w1 < 1e-9, "%s: GPU sums from the CPU's records differ by %.3g relative", label, w1);
        CHECKF(w2 < 1e-9, "%s: GPU sums from its own records differ by %.3g relative", label, w2);

        /* The search: on the CPU over the CPU's records, on the GPU over its own. */
        bf_optimizer_t opt = {
            .objective = BF_OBJ_MEAN_DBM, .azimuth_deg = {0, 360}, .tilt_deg = {-10, 30}};
        kern_search_t srch;
        memset(&srch, 0, sizeof srch);
        srch.antenna = ts.antenna;
        srch.power.scale = 1.0;
        srch.power.floor_dbm = -300;
        srch.optimizer = &opt;
        kern_search_result_t rc_, rg_;
        srch.backend = cpu;
        srch.ctx = cpu_ctx;
        srch.zone = &zc;
        e = kern_search(&srch, &rc_, err);
        CHECKF(e == BF_OK, "cpu search: %s", err);
        srch.backend = gpu;
        srch.ctx = gpu_ctx;
        srch.zone = &zg;
        e = kern_search(&srch, &rg_, err);
        CHECKF(e == BF_OK, "gpu search: %s", err);
        printf("%-32s optimum cpu (%.1f, %.1f) %.6f  gpu (%.1f, %.1f) %.6f\n", label,
               rc_.best.azimuth_deg, rc_.best.tilt_deg, rc_.objective, rg_.best.azimuth_deg,
               rg_.best.tilt_deg, rg_.objective);
        CHECKF(fabs(rc_.objective - rg_.objective) < 1e-6,
               "%s: optimum cpu (%.1f, %.1f) %.9f gpu (%.1f, %.1f) %.9f", label,
               rc_.best.azimuth_deg, rc_.best.tilt_deg, rc_.objective, rg_.best.azimuth_deg,
               rg_.best.tilt_deg, rg_.objective);
        free(sc);
        free(sg);
        free(so);
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
    /* every device here ran the probe launch of every kernel */
    kern_device_t devs[16];
    int ndev = kern_devices(devs, 16);
    CHECK(ndev > 0);
    for (int i = 0; i < ndev; i++) {
        CHECKF(!devs[i].unusable[0], "GPU %d (%s): %s", i, devs[i].name, devs[i].unusable);
        printf("GPU %d: %s, sm_%d%d: probe launch ran\n", i, devs[i].name, devs[i].cc_major,
               devs[i].cc_minor);
    }
    const char *shared = getenv("BF_SHARED_DIR");
    if (!shared)
        shared = "../shared";
    const case_t cases[] = {
        {"box", {0, 0, 2.5}, 200000, 0},
        {"simple_street_canyon", {-30, 0, 20}, 1000000, 0},
        {"simple_street_canyon", {-30, 0, 20}, 1000000, 1},
        {"double_reflector", {-10, 0, 3}, 200000, 0},
        {"munich", {0, 0, 40}, 2000000, 0},
        {"etoile", {0, 0, 30}, 2000000, 0},
        {"florence", {0, 0, 40}, 2000000, 0},
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
