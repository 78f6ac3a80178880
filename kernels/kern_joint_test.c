/*  kernels/kern_joint_test.c - several transmitters (docs/radio.md): the
    serving power and SINR of two isotropic transmitters in free space
    against Friis and k T B NF in closed form; a symmetric three-sector site
    over a three-fold symmetric zone, whose best joint setting is known by
    symmetry (azimuths 120 deg apart on the zone's mirror axes, equal
    tilts); and two co-located sectors over a long zone, a case built so
    that searching each sector alone (as the single-transmitter optimizer
    would) points both the same way, where the joint search splits them. */

#include "kern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bf_check.h"

#define FREQ      3.5e9
#define C0        299792458.0
#define BOLTZMANN 1.380649e-23

static char root[] = "/tmp/kern_joint_test.XXXXXX";

/* A scene directory without geometry (free space) and the given
   scene.yaml; returns its path (static). */
static const char *scene_dir(const char *name, const char *yaml)
{
    static char dir[512];
    char path[600];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    char err[BF_ERRLEN] = "";
    CHECKF(bf_mkdir_p(dir, err) == BF_OK, "mkdir %s", err);
    snprintf(path, sizeof path, "%s/scene.xml", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("<scene version=\"2.1.0\">\n</scene>\n", f);
        CHECK(fclose(f) == 0);
    }
    snprintf(path, sizeof path, "%s/scene.yaml", dir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(yaml, f);
        CHECK(fclose(f) == 0);
    }
    return dir;
}

static kern_boresight_opts_t opts_of(const bf_job_t *job)
{
    kern_boresight_opts_t o;
    memset(&o, 0, sizeof o);
    o.solver = job->solver;
    o.measurement = job->measurement;
    o.optimizer = job->optimizer;
    o.validation = job->validation;
    o.backend = KERN_BACKEND_CPU;
    o.threads = 2;
    return o;
}

static void job_init(bf_job_t *job, uint64_t rays)
{
    bf_job_defaults(job);
    job->solver.samples_per_tx = rays;
    job->solver.max_depth = 0;
    job->validation.p10_min_dbm = -1000;
    job->validation.p10_max_dbm = 1000;
    job->validation.p90_min_dbm = -1000;
    job->validation.min_percentile_range_db = 0;
}

/* ---- two isotropic transmitters against the closed form ------------------ */
/* b_serves false: b is a neighbour's, interference only (serves: false). */
static void test_two_tx_closed_form(bool b_serves)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "frequency_hz: 3.5e9\n"
             "transmitters:\n"
             "  - {name: a, movable: false, position: [-60, 0, 10], power_dbm: 30,\n"
             "     antenna: {pattern: iso}}\n"
             "  - {name: b, movable: false, serves: %s, position: [60, 0, 10], power_dbm: 24,\n"
             "     antenna: {pattern: iso}}\n"
             "zone: {rect: [-150, -100, 150, 100]}\n"
             "measurement: {center: [0, 0], size: [300, 200], height: 1.5, cell_size: [10, "
             "10]}\n",
             b_serves ? "true" : "false");
    const char *dir = scene_dir(b_serves ? "two" : "two-interferer", yaml);
    bf_job_t job;
    job_init(&job, 4000000);
    job.solver.noise_figure_db = 5;
    job.solver.bandwidth_hz = 2e10; /* noise near the far cells' interference */
    job.optimizer.objective = BF_OBJ_MEAN_SINR_DB;
    kern_boresight_opts_t o = opts_of(&job);
    kern_boresight_result_t r;
    char err[BF_ERRLEN] = "";
    bf_err_t e = kern_boresight(dir, &o, &r, err);
    CHECKF(e == BF_OK, "boresight: %s", err);
    if (e != BF_OK)
        return;
    double lambda = C0 / FREQ;
    double noise = BOLTZMANN * 290.0 * 2e10 * pow(10.0, 0.5);
    CHECKF(fabs(r.noise_dbm - (10 * log10(noise) + 30)) < 1e-9, "noise %g dBm", r.noise_dbm);
    CHECK(r.tx_count == 2 && r.has_sinr && r.zone_cells == 600);
    CHECK(!strcmp(r.txs[0].name, "a") && !strcmp(r.txs[1].name, "b") && !r.txs[0].movable &&
          r.txs[0].serves && r.txs[1].serves == b_serves);
    /* immovable: the optimized setting is the initial one, the maps equal */
    CHECK(r.txs[1].optimized.azimuth_deg == r.txs[1].initial.azimuth_deg);
    double worst_p = 0, worst_s = 0, mean_p = 0, mean_s = 0;
    size_t k = 0, compared = 0;
    for (int iy = 0; iy < 20; iy++)
        for (int ix = 0; ix < 30; ix++, k++) {
            /* what a cell measures: Friis averaged over its area */
            double pa = 0, pb = 0, ra = 1e9, rb = 1e9;
            for (int sy = 0; sy < 16; sy++)
                for (int sx = 0; sx < 16; sx++) {
                    double x = -150 + ix * 10 + (sx + 0.5) * 10 / 16.0;
                    double y = -100 + iy * 10 + (sy + 0.5) * 10 / 16.0;
                    double da = sqrt((x + 60) * (x + 60) + y * y + 8.5 * 8.5);
                    double db = sqrt((x - 60) * (x - 60) + y * y + 8.5 * 8.5);
                    pa += 1.0 * pow(lambda / (4 * KERN_PI * da), 2) / 256;         /* 30 dBm */
                    pb += 0.251188643 * pow(lambda / (4 * KERN_PI * db), 2) / 256; /* 24 dBm */
                    ra = fmin(ra, da);
                    rb = fmin(rb, db);
                }
            double serving = b_serves ? fmax(pa, pb) : pa, other = b_serves ? fmin(pa, pb) : pb;
            double want_p = 10 * log10(serving) + 30,
                   want_s = 10 * log10(serving / (other + noise));
            CHECK(r.zone_sinr_initial[k] == r.zone_sinr_optimized[k]);
            /* a ray tube's estimate of a cell is as good as the count of
               rays that cross it: few at grazing incidence far away */
            double ep = fabs(r.zone_initial[k] - want_p),
                   es = fabs(r.zone_sinr_initial[k] - want_s);
            mean_p += ep / 600;
            mean_s += es / 600;
            if (ra > 100 || rb > 100)
                continue;
            compared++;
            worst_p = fmax(worst_p, ep);
            worst_s = fmax(worst_s, es);
        }
    printf("two transmitters%s: serving power and SINR off the closed form by %.3f and %.3f dB on "
           "average over 600 cells, %.3f and %.3f at worst in the %zu within 100 m of both; mean "
           "SINR %.2f dB\n",
           b_serves ? "" : " (b interference only)", mean_p, mean_s, worst_p, worst_s, compared,
           r.sinr_initial.mean);
    CHECKF(mean_p < 0.1 && mean_s < 0.1 && worst_p < 0.25 && worst_s < 0.25,
           "mean %g / %g, worst %g / %g dB", mean_p, mean_s, worst_p, worst_s);
    CHECK(fabs(r.objective - r.sinr_initial.mean) < 1e-9);
    kern_boresight_result_clear(&r);
}

/* ---- a symmetric three-sector site --------------------------------------- */
/* Azimuth a in [0, 360). */
static double norm360(double a)
{
    a = fmod(a, 360.0);
    return a < 0 ? a + 360.0 : a;
}

static void test_three_sectors(void)
{
    /* an equilateral triangle around the site, vertices at 90, 210, 330 deg:
       mirror axes every 60 deg from 30 deg */
    const char *yaml =
        "frequency_hz: 3.5e9\n"
        "transmitters:\n"
        "  - {name: s1, position: [0, 0, 30], orientation: {azimuth_deg: 10, tilt_deg: 0}}\n"
        "  - {name: s2, position: [0, 0, 30], orientation: {azimuth_deg: 100, tilt_deg: 0}}\n"
        "  - {name: s3, position: [0, 0, 30], orientation: {azimuth_deg: 250, tilt_deg: 0}}\n"
        "zone: {polygon: [[0, 200], [-173.20508, -100], [173.20508, -100]]}\n"
        "measurement: {center: [0, 0], size: [400, 400], height: 1.5, cell_size: [8, 8]}\n";
    const char *dir = scene_dir("three", yaml);
    bf_job_t job;
    job_init(&job, 100000);
    job.optimizer.objective = BF_OBJ_MEAN_SINR_DB;
    kern_boresight_opts_t o = opts_of(&job);
    kern_boresight_result_t r;
    char err[BF_ERRLEN] = "";
    bf_err_t e = kern_boresight(dir, &o, &r, err);
    CHECKF(e == BF_OK, "boresight: %s", err);
    if (e != BF_OK)
        return;
    double az[3], tilt[3];
    for (int i = 0; i < 3; i++) {
        az[i] = norm360(r.txs[i].optimized.azimuth_deg);
        tilt[i] = r.txs[i].optimized.tilt_deg;
    }
    printf("three sectors: (%.1f, %.1f), (%.1f, %.1f), (%.1f, %.1f); mean SINR %.2f -> %.2f dB, "
           "%llu evaluations, search %.2f s\n",
           az[0], tilt[0], az[1], tilt[1], az[2], tilt[2], r.sinr_initial.mean,
           r.sinr_optimized.mean, (unsigned long long)r.evaluations, r.timings.optimize);
    /* 120 deg apart, each on a mirror axis (30 deg + k 60 deg), equal tilts:
       to within what the square grid of cells and the ray lattice break of
       the symmetry. The objective is flat in tilt near its optimum, so
       there that breaking moves the tilts most (about 1 deg apart with 8 m
       cells); the azimuths land within 0.1 deg. */
    for (int i = 0; i < 3; i++) {
        double off = fmod(az[i] - 30.0 + 3600.0, 60.0);
        CHECKF(fmin(off, 60.0 - off) < 2.0, "sector %d azimuth %.2f off an axis", i, az[i]);
        for (int k = i + 1; k < 3; k++) {
            double d = norm360(az[k] - az[i]);
            CHECKF(fabs(d - 120) < 2.0 || fabs(d - 240) < 2.0, "sectors %d %d %.2f apart", i, k, d);
            CHECKF(fabs(tilt[i] - tilt[k]) < 1.5, "tilts %.2f %.2f", tilt[i], tilt[k]);
        }
    }
    CHECK(r.objective > r.sinr_initial.mean && fabs(r.objective - r.sinr_optimized.mean) < 1e-6);
    double t3 = r.timings.optimize;
    uint64_t e3 = r.evaluations;
    kern_boresight_result_clear(&r);

    /* the same site with one sector (the `transmitter:` form): search time */
    dir =
        scene_dir("one", "frequency_hz: 3.5e9\n"
                         "transmitter: {position: [0, 0, 30], orientation: {azimuth_deg: 10}}\n"
                         "zone: {polygon: [[0, 200], [-173.20508, -100], [173.20508, -100]]}\n"
                         "measurement: {center: [0, 0], size: [400, 400], height: 1.5, cell_size: "
                         "[8, 8]}\n");
    job.optimizer.objective = BF_OBJ_MEAN_DBM;
    o = opts_of(&job);
    e = kern_boresight(dir, &o, &r, err);
    CHECKF(e == BF_OK, "boresight: %s", err);
    if (e != BF_OK)
        return;
    CHECK(r.tx_count == 1 && !r.has_sinr && !r.zone_sinr_initial);
    printf("one sector: search %.2f s, %llu evaluations; three: %.2f s, %llu (%.1fx the time)\n",
           r.timings.optimize, (unsigned long long)r.evaluations, t3, (unsigned long long)e3,
           t3 / r.timings.optimize);
    kern_boresight_result_clear(&r);
}

/* ---- joint against one at a time ------------------------------------------ */
/* What the engine holds after its trace stage, built from the public
   pieces: the scene, each transmitter's zone crossings. */
typedef struct {
    kern_scene_t *scene;
    kern_tracer_t *tracer;
    void *ctx;
    kern_grid_t grid;
    int32_t *zone_of_cell;
    uint32_t zone_cells;
    double *map;
    kern_zone_data_t zone[KERN_MAX_TX];
    kern_antenna_t ant[KERN_MAX_TX];
    double roll[KERN_MAX_TX], scale[KERN_MAX_TX];
    bool movable[KERN_MAX_TX];
    kern_orient_t init[KERN_MAX_TX];
} fixture_t;

static int fixture_init(fixture_t *f, const char *dir, const bf_job_t *job)
{
    char err[BF_ERRLEN] = "";
    memset(f, 0, sizeof *f);
    const kern_backend_t *be = kern_backend_cpu();
    if (kern_scene_load(dir, &f->scene, err) != BF_OK ||
        kern_grid_make(f->scene, &job->measurement, job->solver.samples_per_tx, &f->grid, err) !=
            BF_OK ||
        kern_tracer_new(f->scene, 2, &f->tracer, err) != BF_OK ||
        be->ctx_new(kern_tracer_geom(f->tracer), 2, &f->ctx, err) != BF_OK) {
        fprintf(stderr, "fixture: %s\n", err);
        return 0;
    }
    size_t cells = (size_t)f->grid.nx * f->grid.ny;
    f->zone_of_cell = malloc(cells * sizeof *f->zone_of_cell);
    f->map = malloc(cells * sizeof *f->map);
    if (!f->zone_of_cell || !f->map)
        return 0;
    for (uint32_t iy = 0; iy < f->grid.ny; iy++)
        for (uint32_t ix = 0; ix < f->grid.nx; ix++) {
            double x = (double)f->grid.x0 + (ix + 0.5) * (double)f->grid.dx;
            double y = (double)f->grid.y0 + (iy + 0.5) * (double)f->grid.dy;
            f->zone_of_cell[(size_t)iy * f->grid.nx + ix] =
                kern_scene_in_zone(f->scene, x, y) ? (int32_t)f->zone_cells++ : -1;
        }
    double lambda = C0 / f->scene->frequency_hz;
    for (size_t i = 0; i < f->scene->tx_count; i++) {
        const kern_tx_t *tx = &f->scene->txs[i];
        kern_trace_setup_t ts;
        memset(&ts, 0, sizeof ts);
        ts.rays = job->solver.samples_per_tx;
        ts.max_depth = job->solver.max_depth;
        ts.los = ts.reflection = ts.refraction = 1;
        ts.seed = job->solver.seed;
        ts.tx = v3((float)tx->position[0], (float)tx->position[1], (float)tx->position[2]);
        ts.antenna = f->ant[i] = kern_antenna_from_tx(tx);
        ts.rot = kern_rotation(tx->azimuth_deg, tx->tilt_deg, tx->roll_deg);
        ts.grid = f->grid;
        ts.zone_of_cell = f->zone_of_cell;
        ts.zone_cells = f->zone_cells;
        kern_trace_out_t out = {f->map, 0, &f->zone[i]};
        if (be->trace(f->ctx, &ts, &out, err) != BF_OK) {
            fprintf(stderr, "fixture: %s\n", err);
            return 0;
        }
        f->roll[i] = tx->roll_deg;
        f->movable[i] = tx->movable;
        f->init[i] = (kern_orient_t){tx->azimuth_deg, tx->tilt_deg};
        f->scale[i] = pow(10.0, (tx->power_dbm - 30.0) / 10.0) * pow(lambda / (4 * KERN_PI), 2) /
                      ((double)f->grid.dx * f->grid.dy);
    }
    return 1;
}

static void fixture_clear(fixture_t *f)
{
    kern_backend_cpu()->ctx_destroy(&f->ctx);
    kern_tracer_destroy(&f->tracer);
    for (size_t i = 0; i < KERN_MAX_TX; i++)
        kern_zone_data_clear(&f->zone[i]);
    kern_scene_destroy(&f->scene);
    free(f->zone_of_cell);
    free(f->map);
}

static kern_joint_t joint_of(fixture_t *f, const bf_job_t *job)
{
    kern_joint_t j;
    memset(&j, 0, sizeof j);
    j.backend = kern_backend_cpu();
    j.ctx = f->ctx;
    j.count = f->scene->tx_count;
    j.zones = f->zone;
    j.antennas = f->ant;
    j.roll_deg = f->roll;
    j.scale = f->scale;
    j.movable = f->movable;
    j.floor_dbm = job->solver.floor_dbm;
    j.noise_w = kern_noise_w(&job->solver);
    j.optimizer = &job->optimizer;
    return j;
}

static void test_joint_beats_one_at_a_time(void)
{
    /* two identical sectors on one mast over a long street: alone, each is
       best pointing the same way (ties keep the first candidate), which
       makes them each other's interference everywhere */
    const char *dir = scene_dir(
        "street", "frequency_hz: 3.5e9\n"
                  "transmitters:\n"
                  "  - {name: east, position: [0, 0, 30], orientation: {azimuth_deg: 45}}\n"
                  "  - {name: west, position: [0, 0, 30], orientation: {azimuth_deg: 90}}\n"
                  "zone: {rect: [-150, -20, 150, 20]}\n"
                  "measurement: {center: [0, 0], size: [300, 40], height: 1.5, cell_size: [5, "
                  "5]}\n");
    bf_job_t job;
    job_init(&job, 150000);
    job.optimizer.objective = BF_OBJ_MEAN_SINR_DB;
    fixture_t f;
    if (!fixture_init(&f, dir, &job)) {
        failures++;
        fixture_clear(&f);
        return;
    }
    kern_joint_t j = joint_of(&f, &job);
    j.final_step = 0.4; /* enough here, and quicker */
    char err[BF_ERRLEN] = "";
    kern_joint_result_t alone, joint, one_round;
    j.one_at_a_time = true;
    CHECKF(kern_joint_search(&j, f.init, &alone, err) == BF_OK, "%s", err);
    j.one_at_a_time = false;
    j.rounds = 1;
    CHECKF(kern_joint_search(&j, f.init, &one_round, err) == BF_OK, "%s", err);
    j.rounds = 0;
    double t0 = bf_mono_s();
    CHECKF(kern_joint_search(&j, f.init, &joint, err) == BF_OK, "%s", err);
    double tj = bf_mono_s() - t0;
    double v0 = 0;
    CHECK(kern_joint_objective(&j, f.init, &v0, NULL, err) == BF_OK);
    printf("street: initial %.2f dB; one at a time (%.1f, %.1f) / (%.1f, %.1f): %.2f dB; one "
           "round %.2f dB; joint (%.1f, %.1f) / (%.1f, %.1f): %.2f dB in %u rounds, %llu "
           "evaluations, %.2f s\n",
           v0, alone.best[0].azimuth_deg, alone.best[0].tilt_deg, alone.best[1].azimuth_deg,
           alone.best[1].tilt_deg, alone.objective, one_round.objective, joint.best[0].azimuth_deg,
           joint.best[0].tilt_deg, joint.best[1].azimuth_deg, joint.best[1].tilt_deg,
           joint.objective, joint.rounds, (unsigned long long)joint.evaluations, tj);
    /* alone, both the same; jointly, back to back along the street */
    CHECK(alone.best[0].azimuth_deg == alone.best[1].azimuth_deg &&
          alone.best[0].tilt_deg == alone.best[1].tilt_deg);
    CHECKF(joint.objective > alone.objective + 10.0, "joint %.2f vs alone %.2f", joint.objective,
           alone.objective);
    double d = norm360(joint.best[1].azimuth_deg - joint.best[0].azimuth_deg);
    CHECKF(fabs(d - 180.0) < 5.0, "joint azimuths %.1f apart", d);
    for (int i = 0; i < 2; i++) {
        double a = norm360(joint.best[i].azimuth_deg);
        CHECKF(fmin(a, 360 - a) < 5.0 || fabs(a - 180) < 5.0, "sector %d at %.1f", i, a);
    }
    CHECK(joint.objective >= one_round.objective && joint.objective >= v0);
    /* the joint objective of what it found is what it reports */
    double check = 0;
    CHECK(kern_joint_objective(&j, joint.best, &check, NULL, err) == BF_OK &&
          fabs(check - joint.objective) < 1e-9);
    /* a sector that may not move stays */
    f.movable[1] = false;
    kern_joint_result_t pinned;
    CHECK(kern_joint_search(&j, f.init, &pinned, err) == BF_OK);
    CHECK(pinned.best[1].azimuth_deg == 90 && pinned.best[1].tilt_deg == 0);
    CHECK(pinned.objective > v0);
    /* deterministic */
    f.movable[1] = true;
    kern_joint_result_t again;
    CHECK(kern_joint_search(&j, f.init, &again, err) == BF_OK);
    CHECK(!memcmp(again.best, joint.best, sizeof again.best) &&
          again.objective == joint.objective && again.evaluations == joint.evaluations);
    fixture_clear(&f);
}

/* The objectives in watts follow their definitions. */
static void test_objective_w(void)
{
    double serving[4] = {1e-6, 1e-9, 0.0, 1e-8}, interf[4] = {1e-9, 1e-9, 1e-9, 0.0};
    double scratch[4], noise = 1e-9;
    bf_optimizer_t op = {BF_OBJ_MEAN_SINR_DB, {0, 360}, {-10, 30}, -100, true, 3};
    double want = (10 * log10(1e-6 / 2e-9) + 10 * log10(0.5) + KERN_SINR_FLOOR_DB + 10) / 4;
    CHECK(fabs(kern_objective_w(serving, interf, 4, -300, noise, &op, scratch) - want) < 1e-9);
    op.objective = BF_OBJ_SINR_COVERAGE; /* >= 3 dB: 27 dB and 10 dB */
    CHECK(kern_objective_w(serving, interf, 4, -300, noise, &op, scratch) == 0.5);
    op.objective = BF_OBJ_MEAN_DBM; /* serving power only */
    CHECK(fabs(kern_objective_w(serving, interf, 4, -300, noise, &op, scratch) -
               (-30 - 60 - 300 - 50) / 4.0) < 1e-9);
    kern_power_t pw = {2.5, -300};
    double sums[3] = {1e-3, 0, 4e-7}, w[3];
    for (int i = 0; i < 3; i++)
        w[i] = sums[i] * pw.scale;
    for (bf_objective_t ob = BF_OBJ_MEAN_DBM; ob <= BF_OBJ_COVERAGE; ob++) {
        op.objective = ob;
        CHECK(kern_objective_w(w, interf, 3, -300, noise, &op, scratch) ==
              kern_objective(sums, 3, &pw, ob, op.coverage_dbm, scratch));
    }
    bf_solver_t s = {.noise_figure_db = 7, .bandwidth_hz = 20e6};
    CHECK(fabs(10 * log10(kern_noise_w(&s)) + 30 - (-173.975 + 7 + 73.0103)) < 0.01);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *only = getenv("KERN_JOINT_TEST_ONLY"); /* a part, for timing */
    if (!only || !strcmp(only, "objective"))
        test_objective_w();
    if (!only || !strcmp(only, "two")) {
        test_two_tx_closed_form(true);
        test_two_tx_closed_form(false);
    }
    if (!only || !strcmp(only, "street"))
        test_joint_beats_one_at_a_time();
    if (!only || !strcmp(only, "three"))
        test_three_sectors();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    if (failures) {
        fprintf(stderr, "kern_joint_test: %d checks failed\n", failures);
        return 1;
    }
    printf("kern_joint_test: all checks passed\n");
    return 0;
}
