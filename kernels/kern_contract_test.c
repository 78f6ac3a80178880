/*  kernels/kern_contract_test.c - the CPU and the GPU trace the same bits:
    checked on the host by tracing each scene twice, with the CPU backend
    (kern_cpu.c) and with the same backend compiled the way nvcc compiles
    arithmetic (kern_cpu_contracted.c: -mfma -ffp-contract=fast, so that the
    compiler fuses every a * b + c it may). The maps, the crossing counts,
    the zone records (departure directions, cells, Jones forms) and the
    orientation sums evaluated from each backend's own records must be equal
    bit for bit: on simple_street_canyon, box and double_reflector from
    BF_SHARED_DIR, and on procedural cities (kern_scenegen); on
    simple_street_canyon and one city also with rough materials and the
    diffuse reflection on, and with the diffraction pass. A product left
    unprotected in the shared math would be fused in the second build, as on
    the GPU, and show here as a different ray.

    Exits 77 (skipped) when the contracted build cannot contract (a compiler
    or target without fused multiply-add) or this CPU cannot run it. */

#include "kern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bf_check.h"

/* kern_cpu_contracted.c */
const kern_backend_t *kern_backend_cpu_contracted(void);
void kern_zone_data_clear_contracted(kern_zone_data_t *zd);
int kern_contract_has_fma(void);
float kern_contract_probe(float a, float b, float c);

#define FREQ 3.5e9

/* Why the contracted build cannot show anything here, or NULL when it can. */
static const char *cannot_run(void)
{
#if defined(__x86_64__) || defined(__i386__)
    /* first: on such a CPU no code of the contracted build may run */
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma"))
        return "this CPU has no FMA instructions (see the fma flag in /proc/cpuinfo)";
#endif
    if (!kern_contract_has_fma())
        return "the contracted build has no fused multiply-add (compiler or target without FMA)";
    /* (1 + 2^-12)^2 - (1 + 2^-11) is 2^-24 when fused, 0 when the product
       is rounded first: the compiler really contracts */
    volatile float a = 1.0f + 0x1p-12f, c = -(1.0f + 0x1p-11f);
    if (kern_contract_probe(a, a, c) != 0x1p-24f)
        return "the compiler did not contract a * b + c in the contracted build";
    return NULL;
}

/* Traces scene from tx over grid with both builds and compares all outputs. */
static void compare(const char *name, const kern_scene_t *scene, kern_v3 tx,
                    const kern_grid_t *grid, const int32_t *zone_of_cell, uint32_t zone_cells,
                    uint64_t rays, int diffuse)
{
    char err[BF_ERRLEN] = "";
    const kern_backend_t *be[2] = {kern_backend_cpu(), kern_backend_cpu_contracted()};
    kern_tracer_t *tracer = NULL;
    void *ctx[2] = {NULL, NULL};
    size_t cells = (size_t)grid->nx * grid->ny;
    double *map[2] = {calloc(cells, sizeof(double)), calloc(cells, sizeof(double))};
    kern_zone_data_t zone[2];
    memset(zone, 0, sizeof zone);
    kern_trace_out_t out[2] = {{map[0], 0, &zone[0]}, {map[1], 0, &zone[1]}};
    bf_err_t e = map[0] && map[1] ? kern_tracer_new(scene, 2, &tracer, err) : BF_ENOMEM;
    for (int k = 0; k < 2 && e == BF_OK; k++)
        e = be[k]->ctx_new(kern_tracer_geom(tracer), 2, &ctx[k], err);
    CHECKF(e == BF_OK, "%s: %s", name, err);

    kern_trace_setup_t s;
    memset(&s, 0, sizeof s);
    s.rays = rays;
    s.max_depth = 3;
    s.los = s.reflection = s.refraction = 1;
    s.diffuse_reflection = diffuse & 1;
    s.diffraction = s.edge_diffraction = (diffuse & 2) != 0; /* flag 2: the diffraction pass */
    s.seed = 42;
    s.tx = tx;
    s.antenna = kern_antenna_make(KERN_PAT_TR38901, 2);
    s.rot = kern_rotation(30, 5, 0);
    s.grid = *grid;
    s.zone_of_cell = zone_of_cell;
    s.zone_cells = zone_cells;
    for (int k = 0; k < 2 && e == BF_OK; k++) {
        e = be[k]->trace(ctx[k], &s, &out[k], err);
        CHECKF(e == BF_OK, "%s: trace %d: %s", name, k, err);
    }
    if (e == BF_OK) {
        size_t cells_bad = 0;
        for (size_t c = 0; c < cells; c++)
            if (memcmp(&map[0][c], &map[1][c], sizeof(double)) != 0 && cells_bad++ < 5)
                fprintf(stderr, "  %s: cell %zu normal %.17g contracted %.17g\n", name, c,
                        map[0][c], map[1][c]);
        const kern_zone_data_t *z0 = &zone[0], *z1 = &zone[1];
        size_t nr = z0->ray_count < z1->ray_count ? z0->ray_count : z1->ray_count;
        size_t nx = z0->count < z1->count ? z0->count : z1->count;
        size_t rays_bad = 0, xings_bad = 0;
        for (size_t r = 0; r < nr; r++)
            if (memcmp(&z0->rays[r], &z1->rays[r], sizeof z0->rays[r]) != 0 && rays_bad++ < 5)
                fprintf(stderr,
                        "  %s: zone ray %zu normal (%.9g %.9g %.9g) x%u contracted (%.9g %.9g "
                        "%.9g) x%u\n",
                        name, r, z0->rays[r].d[0], z0->rays[r].d[1], z0->rays[r].d[2],
                        z0->rays[r].count, z1->rays[r].d[0], z1->rays[r].d[1], z1->rays[r].d[2],
                        z1->rays[r].count);
        for (size_t i = 0; i < nx; i++)
            if (memcmp(&z0->xings[i], &z1->xings[i], sizeof z0->xings[i]) != 0 && xings_bad++ < 5)
                fprintf(stderr,
                        "  %s: zone crossing %zu normal cell %u m %.9g contracted cell %u "
                        "m %.9g\n",
                        name, i, z0->xings[i].cell, z0->xings[i].m[0], z1->xings[i].cell,
                        z1->xings[i].m[0]);
        printf("%-24s rays %8llu  crossings %9llu/%llu  zone rays %zu/%zu  zone crossings "
               "%zu/%zu  differing: %zu cells, %zu zone rays, %zu zone crossings\n",
               name, (unsigned long long)rays, (unsigned long long)out[0].crossings,
               (unsigned long long)out[1].crossings, z0->ray_count, z1->ray_count, z0->count,
               z1->count, cells_bad, rays_bad, xings_bad);
        CHECKF(out[0].crossings > 0 && z0->count > 0, "%s: the trace crossed the zone", name);
        CHECKF(cells_bad == 0 && out[0].crossings == out[1].crossings,
               "%s: maps differ in %zu cells", name, cells_bad);
        CHECKF(z0->ray_count == z1->ray_count && z0->count == z1->count && rays_bad == 0 &&
                   xings_bad == 0,
               "%s: zone records differ", name);

        /* each backend evaluates orientations from its own records */
        enum { NO = 24 };
        kern_rot_t rots[NO];
        for (int i = 0; i < NO; i++)
            rots[i] = kern_rotation(i * 15.0, -10 + (i % 5) * 8, i % 3 ? 0 : 10);
        double *sums[2] = {calloc((size_t)NO * zone_cells, sizeof(double)),
                           calloc((size_t)NO * zone_cells, sizeof(double))};
        for (int k = 0; k < 2; k++) {
            e = be[k]->evaluate(ctx[k], &zone[k], &s.antenna, rots, NO, sums[k], NULL, err);
            CHECKF(e == BF_OK, "%s: evaluate %d: %s", name, k, err);
        }
        size_t sums_bad = 0;
        for (size_t i = 0; i < (size_t)NO * zone_cells; i++)
            if (memcmp(&sums[0][i], &sums[1][i], sizeof(double)) != 0 && sums_bad++ < 5)
                fprintf(stderr, "  %s: sum %zu normal %.17g contracted %.17g\n", name, i,
                        sums[0][i], sums[1][i]);
        CHECKF(sums_bad == 0, "%s: %zu orientation sums differ", name, sums_bad);
        free(sums[0]);
        free(sums[1]);
    }
    kern_zone_data_clear(&zone[0]);
    kern_zone_data_clear_contracted(&zone[1]);
    for (int k = 0; k < 2; k++)
        if (ctx[k])
            be[k]->ctx_destroy(&ctx[k]);
    kern_tracer_destroy(&tracer);
    free(map[0]);
    free(map[1]);
}

/* The grid of a scene with 2 m cells at 1.5 m and as zone the middle third
   of it, or the scene's own zone when it has one. Returns the zone's cell
   count; *zone_of_cell is the caller's to free. */
static uint32_t grid_and_zone(const kern_scene_t *scene, uint64_t rays, kern_grid_t *grid,
                              int32_t **zone_of_cell)
{
    char err[BF_ERRLEN] = "";
    bf_measurement_t meas = {
        .has_cell_size = true, .cell_size = {2, 2}, .has_height = true, .height = 1.5};
    *zone_of_cell = NULL;
    if (kern_grid_make(scene, &meas, rays, grid, err) != BF_OK) {
        CHECKF(0, "grid: %s", err);
        return 0;
    }
    size_t cells = (size_t)grid->nx * grid->ny;
    int32_t *z = malloc(cells * sizeof *z);
    if (!z)
        return 0;
    uint32_t n = 0;
    for (uint32_t iy = 0; iy < grid->ny; iy++)
        for (uint32_t ix = 0; ix < grid->nx; ix++) {
            double x = grid->x0 + (ix + 0.5) * grid->dx, y = grid->y0 + (iy + 0.5) * grid->dy;
            bool in = scene->zone_points ? kern_scene_in_zone(scene, x, y)
                                         : (ix >= grid->nx / 3 && ix < 2 * grid->nx / 3 &&
                                            iy >= grid->ny / 3 && iy < 2 * grid->ny / 3);
            z[(size_t)iy * grid->nx + ix] = in ? (int32_t)n++ : -1;
        }
    *zone_of_cell = z;
    return n;
}

static void run_scene(const char *name, const kern_scene_t *scene, kern_v3 tx, uint64_t rays,
                      int diffuse)
{
    kern_grid_t grid;
    int32_t *zone = NULL;
    uint32_t zc = grid_and_zone(scene, rays, &grid, &zone);
    if (zone)
        compare(name, scene, tx, &grid, zone, zc, rays, diffuse);
    free(zone);
}

/* Makes every material rough (the diffuse reflection, docs/radio.md):
   scattering coefficients 0.3 to 0.7, XPD 0.2, every other material
   backscattering. */
static void roughen(kern_scene_t *scene)
{
    for (size_t i = 0; i < scene->material_count; i++) {
        kern_material_t *m = &scene->materials[i];
        m->scattering_coefficient = 0.3 + 0.1 * (double)(i % 5);
        m->xpd_coefficient = 0.2;
        m->scattering_pattern = i % 2 ? KERN_SCATTER_BACKSCATTERING : KERN_SCATTER_LAMBERTIAN;
        m->alpha_r = 3;
        m->alpha_i = 2;
        m->lambda = 0.6;
    }
}

static void shared_scenes(void)
{
    const char *dir = getenv("BF_SHARED_DIR");
    if (!dir)
        dir = "../shared";
    const struct {
        const char *name;
        float tx[3];
        uint64_t rays;
    } cases[] = {{"simple_street_canyon", {-30, 0, 20}, 1000000},
                 {"box", {0, 0, 2.5f}, 200000},
                 {"double_reflector", {-10, 0, 3}, 200000}};
    for (size_t i = 0; i < BF_ARRAY_LEN(cases); i++) {
        char path[1024], err[BF_ERRLEN] = "";
        snprintf(path, sizeof path, "%s/scenes/%s/%s.xml", dir, cases[i].name, cases[i].name);
        kern_scene_t *scene = NULL;
        bf_err_t e = kern_scene_load_xml(path, FREQ, &scene, err);
        CHECKF(e == BF_OK, "%s: %s", path, err);
        if (e != BF_OK)
            continue;
        kern_v3 tx = v3(cases[i].tx[0], cases[i].tx[1], cases[i].tx[2]);
        run_scene(cases[i].name, scene, tx, cases[i].rays, 0);
        if (i == 0) /* with the diffraction pass (kern_diffract.h) */
            run_scene("simple_street_canyon (diffraction)", scene, tx, 300000, 2);
        if (i == 0) { /* and rough, with the diffuse reflection */
            roughen(scene);
            run_scene("simple_street_canyon (rough, diffuse)", scene, tx, 300000, 1);
        }
        kern_scene_destroy(&scene);
    }
}

static void procedural_scenes(void)
{
    char tmp[] = "/tmp/kern_contract_test.XXXXXX", err[BF_ERRLEN] = "";
    if (!mkdtemp(tmp)) {
        CHECKF(0, "mkdtemp");
        return;
    }
    enum { CITIES = 3 };
    bf_err_t e = kern_scenegen(tmp, CITIES, 7, err);
    CHECKF(e == BF_OK, "scenegen: %s", err);
    for (unsigned i = 0; i < CITIES && e == BF_OK; i++) {
        char dir[1200], name[32];
        snprintf(dir, sizeof dir, "%s/city_%03u", tmp, i);
        snprintf(name, sizeof name, "city_%03u", i);
        kern_scene_t *scene = NULL;
        bf_err_t le = kern_scene_load(dir, &scene, err);
        CHECKF(le == BF_OK, "%s: %s", dir, err);
        if (le != BF_OK)
            continue;
        const double *p = scene->tx.position;
        run_scene(name, scene, v3((float)p[0], (float)p[1], (float)p[2]), 300000, 0);
        if (i == 1)
            run_scene("city_001 (diffraction)", scene, v3((float)p[0], (float)p[1], (float)p[2]),
                      300000, 2);
        if (i == 0) {
            roughen(scene);
            run_scene("city_000 (rough, diffuse)", scene, v3((float)p[0], (float)p[1], (float)p[2]),
                      300000, 1);
        }
        kern_scene_destroy(&scene);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "kern_contract_test: could not remove %s\n", tmp);
}

int main(void)
{
    const char *why = cannot_run();
    if (why) {
        printf("kern_contract_test: skipped: %s\n", why);
        return 77;
    }
    shared_scenes();
    procedural_scenes();
    if (failures) {
        fprintf(stderr,
                "kern_contract_test: %d checks failed: the shared math is not the same "
                "bits with multiply-adds contracted (as nvcc compiles it)\n",
                failures);
        return 1;
    }
    printf("kern_contract_test: the contracted build traces the same bits\n");
    return 0;
}
