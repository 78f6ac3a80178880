/*  kernels/kern_optimize_test.c - checks the exact orientation evaluation
    and the search (DESIGN 6.5): evaluating an orientation from the zone
    crossings of one trace equals re-tracing the scene at that orientation
    (to 1e-3 dB), the search finds the optimum of an exhaustive 0.5 deg grid
    to 0.05 dB, the objectives and percentiles follow their definitions, and
    the whole boresight task runs on a generated scene (the fields of its
    plain result, maps, thumbnails, cancellation, bad input; its wire form
    is worker_boresight_test's). */

#include "kern.h"
#include "kern_testkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bf_check.h"

#define FREQ 3.5e9

/* A ground and two walls, built in code (kern_testkit.h).
   Rough (for the diffuse reflection): scattering coefficients 0.3 to 0.6,
   XPD 0.2, one wall backscattering. */
static void build_scene(test_scene_t *t, int rough)
{
    kern_material_t m[3] = {test_material(13.1, -0.33, 1.0),  /* medium dry ground */
                            test_material(5.24, -0.63, 0.2),  /* concrete */
                            test_material(3.91, -0.15, 0.1)}; /* brick */
    if (rough) {
        for (int i = 0; i < 3; i++) {
            m[i].scattering_coefficient = 0.3 + 0.15 * i;
            m[i].xpd_coefficient = 0.2;
        }
        m[2].scattering_pattern = KERN_SCATTER_BACKSCATTERING;
        m[2].alpha_r = 3;
        m[2].alpha_i = 2;
        m[2].lambda = 0.6;
    }
    test_scene_init(t, FREQ);
    CHECK(test_scene_rect(t, v3(-300, -300, 0), v3(600, 0, 0), v3(0, 600, 0), m[0]));
    CHECK(test_scene_rect(t, v3(60, -80, 0), v3(0, 160, 0), v3(0, 0, 30), m[1]));
    CHECK(test_scene_rect(t, v3(-80, 55, 0), v3(160, 0, 0), v3(0, 0, 20), m[2]));
}

typedef struct {
    test_scene_t scene;
    kern_tracer_t *tracer;
    void *ctx;
    kern_trace_setup_t ts;
    int32_t *zone_of_cell;
    uint32_t zone_cells;
    kern_zone_data_t zone;
    double *map;
    kern_power_t pw;
} fixture_t;

/* diffuse: the rough scene with the diffuse reflection on; diffract: the
   diffraction on, at the walls' free edges too */
static int fixture_init(fixture_t *f, uint64_t rays, int diffuse, int diffract)
{
    char err[BF_ERRLEN] = "";
    memset(f, 0, sizeof *f);
    build_scene(&f->scene, diffuse);
    if (kern_tracer_new(&f->scene.sc, 2, &f->tracer, err) != BF_OK ||
        kern_backend_cpu()->ctx_new(kern_tracer_geom(f->tracer), 2, &f->ctx, err) != BF_OK) {
        fprintf(stderr, "fixture: %s\n", err);
        return 0;
    }
    kern_trace_setup_t *s = &f->ts;
    s->rays = rays;
    s->max_depth = 2;
    s->los = s->reflection = s->refraction = 1;
    s->diffuse_reflection = diffuse;
    s->diffraction = s->edge_diffraction = diffract;
    s->seed = 7;
    s->tx = v3(0, 0, 15);
    s->antenna = kern_antenna_make(KERN_PAT_TR38901, 0);
    s->rot = kern_rotation(0, 0, 0);
    s->grid.x0 = s->grid.y0 = -100;
    s->grid.dx = s->grid.dy = 5;
    s->grid.z = 1.5f;
    s->grid.nx = s->grid.ny = 40;
    s->grid.omega = (float)(4 * KERN_PI / (double)rays);
    size_t cells = 1600;
    f->zone_of_cell = malloc(cells * sizeof *f->zone_of_cell);
    f->map = malloc(cells * sizeof *f->map);
    for (uint32_t iy = 0; iy < 40; iy++)
        for (uint32_t ix = 0; ix < 40; ix++) {
            double x = -100 + (ix + 0.5) * 5, y = -100 + (iy + 0.5) * 5;
            int in = x > -40 && x < 80 && y > 10 && y < 90;
            f->zone_of_cell[iy * 40 + ix] = in ? (int32_t)f->zone_cells++ : -1;
        }
    s->zone_of_cell = f->zone_of_cell;
    s->zone_cells = f->zone_cells;
    kern_trace_out_t out = {f->map, 0, &f->zone};
    if (kern_backend_cpu()->trace(f->ctx, s, &out, err) != BF_OK) {
        fprintf(stderr, "fixture trace: %s\n", err);
        return 0;
    }
    double lambda = 299792458.0 / FREQ;
    f->pw.scale = 10.0 * (lambda / (4 * KERN_PI)) * (lambda / (4 * KERN_PI)) / 25.0; /* 40 dBm */
    f->pw.floor_dbm = -300;
    return 1;
}

static void fixture_clear(fixture_t *f)
{
    kern_backend_cpu()->ctx_destroy(&f->ctx);
    kern_tracer_destroy(&f->tracer);
    kern_zone_data_clear(&f->zone);
    free(f->zone_of_cell);
    free(f->map);
}

static kern_search_t search_of(fixture_t *f, const bf_optimizer_t *op)
{
    kern_search_t s;
    memset(&s, 0, sizeof s);
    s.backend = kern_backend_cpu();
    s.ctx = f->ctx;
    s.zone = &f->zone;
    s.antenna = f->ts.antenna;
    s.roll_deg = 0;
    s.power = f->pw;
    s.optimizer = op;
    return s;
}

/* The exact evaluation from the zone records against a re-trace at the same
   orientation; with the diffuse reflection too (its Jones matrices are
   linear in the antenna's field, so the records stay exact). */
static void test_exact_vs_retrace(int diffuse, int diffract)
{
    fixture_t f;
    CHECKF(fixture_init(&f, 100000, diffuse, diffract), "fixture");
    printf("fixture%s%s: %u zone cells, %zu zone rays, %zu zone crossings\n",
           diffuse ? " (diffuse)" : "", diffract ? " (diffraction)" : "", f.zone_cells,
           f.zone.ray_count, f.zone.count);
    if (diffract) { /* the diffraction pass adds crossings of its own */
        fixture_t g;
        CHECKF(fixture_init(&g, 100000, diffuse, 0), "fixture");
        CHECKF(f.zone.count > g.zone.count + 1000, "diffraction added %zu zone crossings",
               f.zone.count - g.zone.count);
        fixture_clear(&g);
    }
    CHECKF(f.zone.count > 1000, "enough zone crossings");
    const double orients[4][3] = {{0, 0, 0}, {37.3, 7.1, 0}, {190, -4, 5}, {300.2, 22.5, -12}};
    double *sums = malloc(f.zone_cells * sizeof *sums);
    double *map = malloc(1600 * sizeof *map);
    char err[BF_ERRLEN];
    for (int o = 0; o < 4; o++) {
        kern_rot_t R = kern_rotation(orients[o][0], orients[o][1], orients[o][2]);
        CHECKF(kern_backend_cpu()->evaluate(f.ctx, &f.zone, &f.ts.antenna, &R, 1, sums, NULL,
                                            err) == BF_OK,
               "eval");
        kern_trace_setup_t s = f.ts;
        s.rot = R;
        s.zone_of_cell = NULL;
        kern_trace_out_t out = {map, 0, NULL};
        CHECKF(kern_backend_cpu()->trace(f.ctx, &s, &out, err) == BF_OK, "retrace");
        double worst = 0;
        for (size_t c = 0; c < 1600; c++) {
            int32_t z = f.zone_of_cell[c];
            if (z < 0)
                continue;
            double a = kern_sum_to_dbm(&f.pw, sums[z]), b = kern_sum_to_dbm(&f.pw, map[c]);
            worst = fmax(worst, fabs(a - b));
        }
        printf("orientation %d: exact evaluation vs re-trace, worst cell %.3g dB\n", o, worst);
        CHECKF(worst < 1e-3, "orientation %d: %.3g dB", o, worst);
    }
    free(sums);
    free(map);
    fixture_clear(&f);
}

static void test_search_vs_exhaustive(void)
{
    fixture_t f;
    CHECKF(fixture_init(&f, 30000, 0, 0), "fixture");
    bf_optimizer_t op = {BF_OBJ_MEAN_DBM, {0, 120}, {-10, 30}, -100, false, 0};
    kern_search_t s = search_of(&f, &op);
    kern_search_result_t r;
    char err[BF_ERRLEN] = "";
    CHECKF(kern_search(&s, &r, err) == BF_OK, "search: %s", err);
    /* exhaustive 0.5 deg grid */
    size_t na = 241, nt = 81, n = na * nt;
    kern_orient_t *o = malloc(n * sizeof *o);
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < na; i++)
        for (size_t k = 0; k < nt; k++) {
            o[i * nt + k].azimuth_deg = 0.5 * (double)i;
            o[i * nt + k].tilt_deg = -10 + 0.5 * (double)k;
        }
    uint64_t evals = 0;
    CHECKF(kern_evaluate_orients(&s, o, n, v, &evals, err) == BF_OK && evals == n, "exhaustive");
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    printf("search: %.4f dBm at az %.1f tilt %.1f in %llu evaluations; exhaustive 0.5 deg: %.4f "
           "dBm at az %.1f "
           "tilt %.1f in %zu\n",
           r.objective, r.best.azimuth_deg, r.best.tilt_deg, (unsigned long long)r.evaluations,
           v[best], o[best].azimuth_deg, o[best].tilt_deg, n);
    CHECKF(r.objective >= v[best] - 0.05, "search %.4f vs exhaustive %.4f", r.objective, v[best]);
    CHECKF(r.evaluations > 100 && r.evaluations < 2000, "evaluations %llu",
           (unsigned long long)r.evaluations);
    CHECKF(r.best.azimuth_deg >= 0 && r.best.azimuth_deg <= 120 && r.best.tilt_deg >= -10 &&
               r.best.tilt_deg <= 30,
           "within the ranges");
    /* the reported objective is the evaluation at the reported orientation */
    double again;
    CHECKF(kern_evaluate_orients(&s, &r.best, 1, &again, NULL, err) == BF_OK &&
               again == r.objective,
           "consistent");
    /* every objective runs; a full circle wraps */
    bf_optimizer_t full = {BF_OBJ_P10_DBM, {0, 360}, {-10, 30}, -100, false, 0};
    for (int obj = 0; obj < 4; obj++) {
        full.objective = (bf_objective_t)obj;
        kern_search_t s2 = search_of(&f, &full);
        CHECKF(kern_search(&s2, &r, err) == BF_OK && isfinite(r.objective), "objective %d", obj);
        CHECKF(r.best.azimuth_deg >= 0 && r.best.azimuth_deg < 360, "wrapped azimuth %g",
               r.best.azimuth_deg);
    }
    bf_optimizer_t bad = {BF_OBJ_MEAN_DBM, {10, 0}, {-10, 30}, -100, false, 0};
    kern_search_t s3 = search_of(&f, &bad);
    CHECKF(kern_search(&s3, &r, err) == BF_EINVAL, "empty range refused");
    free(o);
    free(v);
    fixture_clear(&f);
}

static void test_objectives(void)
{
    double sorted[4] = {1, 2, 3, 4};
    CHECKF(fabs(bf_percentile(sorted, 4, 10) - 1.3) < 1e-12, "p10 numpy-style");
    CHECKF(fabs(bf_percentile(sorted, 4, 50) - 2.5) < 1e-12, "median");
    CHECKF(bf_percentile(sorted, 1, 90) == 1, "single");
    kern_power_t pw = {1e-3, -300}; /* sum 1 -> 1 mW -> 0 dBm */
    CHECKF(fabs(kern_sum_to_dbm(&pw, 1.0)) < 1e-12 && kern_sum_to_dbm(&pw, 0.0) == -300,
           "sum to dBm");
    double sums[3] = {1.0, 10.0, 0.0}, scratch[3];
    CHECKF(fabs(kern_objective(sums, 3, &pw, BF_OBJ_MEAN_DBM, 0, scratch) - (0 + 10 - 300) / 3.0) <
               1e-9,
           "mean");
    CHECKF(fabs(kern_objective(sums, 3, &pw, BF_OBJ_MEAN_LINEAR, 0, scratch) -
                10 * log10(11.0 / 3)) < 1e-6,
           "mean linear");
    CHECKF(fabs(kern_objective(sums, 3, &pw, BF_OBJ_COVERAGE, 5, scratch) - 1.0 / 3) < 1e-12,
           "coverage");
    CHECKF(fabs(kern_objective(sums, 3, &pw, BF_OBJ_P10_DBM, 0, scratch) - (-300 + 0.2 * 300)) <
               1e-9,
           "p10");
}

/* ---- the whole task on a generated scene ------------------------------------ */
static void on_progress(void *ud, const char *stage, double f)
{
    int *seen = ud;
    if (!strcmp(stage, "load"))
        seen[0] = 1;
    else if (!strcmp(stage, "trace"))
        seen[1] = 1;
    else if (!strcmp(stage, "optimize"))
        seen[2] = 1;
    else if (!strcmp(stage, "maps"))
        seen[3] = 1;
    if (f < 0 || f > 1)
        seen[4] = 1;
}

/* The engine's settings from a job, as the worker fills them. */
static kern_boresight_opts_t opts_of(const bf_job_t *job, const char *maps)
{
    kern_boresight_opts_t o;
    memset(&o, 0, sizeof o);
    o.solver = job->solver;
    o.measurement = job->measurement;
    o.optimizer = job->optimizer;
    o.validation = job->validation;
    o.backend = KERN_BACKEND_CPU;
    o.threads = 2;
    o.maps_dir = maps;
    return o;
}

/* The thumbnails are block means of the CSV map: every block is a number
   (dBm, NAN only where no ray came) and there are ceil(n / fx) per axis. */
static void check_thumbnails(const kern_thumbnails_t *t)
{
    CHECKF(t->nx >= 1 && t->nx <= KERN_THUMB_MAX && t->ny >= 1 && t->ny <= KERN_THUMB_MAX &&
               t->dx > 0 && t->dy > 0 && t->initial && t->optimized,
           "thumbnails %ux%u", t->nx, t->ny);
    size_t finite = 0;
    for (size_t i = 0; i < (size_t)t->nx * t->ny; i++) {
        CHECKF(isnan(t->initial[i]) || (t->initial[i] > -400 && t->initial[i] < 100),
               "thumbnail value %g", t->initial[i]);
        finite += isfinite(t->initial[i]) && isfinite(t->optimized[i]);
    }
    CHECKF(finite > 0, "thumbnails have values");
}

static void test_boresight(void)
{
    char tmpl[] = "/tmp/kern_optimize_test.XXXXXX", err[BF_ERRLEN] = "";
    char *root = mkdtemp(tmpl);
    CHECKF(root != NULL, "mkdtemp");
    if (!root)
        return;
    bf_err_t e = kern_scenegen(root, 1, 5, err);
    CHECKF(e == BF_OK, "scenegen: %s", err);
    if (e != BF_OK)
        return;
    char scene[600], maps[600];
    snprintf(scene, sizeof scene, "%s/city_000", root);
    snprintf(maps, sizeof maps, "%s/maps", root);
    CHECKF(bf_mkdir_p(maps, err) == BF_OK, "mkdir");
    bf_job_t job;
    bf_job_defaults(&job);
    job.solver.samples_per_tx = 200000;
    job.solver.max_depth = 2;
    job.validation.p10_min_dbm = -1000;
    job.validation.p10_max_dbm = 1000;
    job.validation.p90_min_dbm = -1000;
    job.validation.min_percentile_range_db = 0;
    kern_boresight_opts_t opts = opts_of(&job, maps);
    int seen[5] = {0};
    opts.progress = on_progress;
    opts.progress_ud = seen;
    kern_boresight_result_t res;
    e = kern_boresight(scene, &opts, &res, err);
    CHECKF(e == BF_OK, "boresight: %s", err);
    if (e == BF_OK) {
        CHECKF(res.valid && !res.reason[0], "valid");
        size_t cells = res.zone_cells;
        CHECKF(cells > 0 && res.zone_initial && res.zone_optimized, "zone arrays");
        double mi = 0, mo = 0;
        for (size_t i = 0; i < cells; i++) {
            mi += res.zone_initial[i];
            mo += res.zone_optimized[i];
        }
        mi /= (double)cells;
        mo /= (double)cells;
        double imp = res.optimized.mean - res.initial.mean;
        CHECKF(fabs(res.initial.mean - mi) < 1e-9 && fabs(res.optimized.mean - mo) < 1e-9,
               "means match arrays");
        CHECKF(res.initial.p10 <= res.initial.median && res.initial.median <= res.initial.p90,
               "percentiles in order");
        CHECKF(imp >= -1e-9, "improvement %g", imp);
        /* the exact objective (mean_dbm) equals the re-traced optimized mean */
        CHECKF(fabs(res.objective - mo) < 1e-3, "objective vs re-trace");
        CHECKF(res.solver.rays == 200000 && res.solver.max_depth == 2 &&
                   res.solver.seed == job.solver.seed && res.solver.crossings > 0 &&
                   res.solver.zone_crossings > 0 && !strcmp(res.solver.backend, "cpu"),
               "solver");
        CHECKF(res.evaluations > 100, "evaluations");
        CHECKF(res.timings.load > 0 && res.timings.trace > 0 && res.timings.optimize > 0 &&
                   res.timings.maps > 0,
               "timings");
        CHECKF(res.boresight_optimized.tilt_deg >= job.optimizer.tilt_deg[0] &&
                   res.boresight_optimized.tilt_deg <= job.optimizer.tilt_deg[1],
               "boresight within the optimizer's range");
        check_thumbnails(&res.thumbnails);
        CHECKF(seen[0] && seen[1] && seen[2] && seen[3] && !seen[4], "progress stages");
        printf("boresight: %zu zone cells, initial %.2f dBm -> optimized %.2f dBm (%+.2f dB)\n",
               cells, mi, mo, imp);
        kern_boresight_result_clear(&res);
        kern_boresight_result_clear(&res); /* idempotent */
        CHECKF(!res.zone_initial && !res.thumbnails.initial && res.zone_cells == 0, "cleared");
        for (int k = 0; k < 2; k++) {
            char path[700], *text = NULL;
            size_t len = 0;
            snprintf(path, sizeof path, "%s/%s", maps, k ? "optimized.csv" : "initial.csv");
            CHECKF(bf_read_file(path, 1u << 28, &text, &len, err) == BF_OK &&
                       !strncmp(text, "x,y,dbm\n", 8),
                   "%s", path);
            free(text);
            unlink(path);
        }
    }
    /* a zone that fails validation: not valid, threshold named, still searched */
    job.validation.p10_max_dbm = -1000;
    opts = opts_of(&job, NULL);
    e = kern_boresight(scene, &opts, &res, err);
    CHECKF(e == BF_OK && !res.valid && strstr(res.reason, "p10_max_dbm") && res.evaluations > 100 &&
               res.zone_optimized,
           "failed validation");
    kern_boresight_result_clear(&res);
    volatile int cancel = 1;
    kern_boresight_opts_t copts = opts_of(&job, NULL);
    copts.cancel = &cancel;
    CHECKF(kern_boresight(scene, &copts, &res, err) == BF_ECANCELED && !res.zone_initial &&
               !res.thumbnails.initial,
           "cancel");
#ifndef BF_HAVE_CUDA
    kern_boresight_opts_t gpu = opts_of(&job, NULL);
    gpu.backend = KERN_BACKEND_CUDA;
    CHECKF(kern_boresight(scene, &gpu, &res, err) == BF_EUNSUPP, "cuda not compiled");
    kern_device_t devs[4];
    CHECKF(kern_devices(devs, 4) == 0, "no devices without CUDA");
#endif
    kern_boresight_opts_t bad = opts_of(&job, NULL);
    bad.backend = (kern_backend_kind_t)7;
    CHECKF(kern_boresight(scene, &bad, &res, err) == BF_EINVAL, "unknown backend");
    CHECKF(kern_boresight("/nonexistent/scene", &opts, &res, err) == BF_EINVAL && !res.zone_initial,
           "bad scene");
    bf_job_clear(&job);
    unlink(maps);
    rmdir(maps);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
}

/* kern_on_bound: the bounds an orientation sits on; none for an azimuth
   range of a full circle. */
static void test_on_bound(void)
{
    bf_optimizer_t op;
    memset(&op, 0, sizeof op);
    op.azimuth_deg[0] = 0, op.azimuth_deg[1] = 360;
    op.tilt_deg[0] = -10, op.tilt_deg[1] = 30;
    CHECK(kern_on_bound(&op, (kern_orient_t){100, 30}) == KERN_BOUND_TILT_MAX);
    CHECK(kern_on_bound(&op, (kern_orient_t){0, -10}) == KERN_BOUND_TILT_MIN);
    CHECK(kern_on_bound(&op, (kern_orient_t){360, 29.9}) == 0);
    op.azimuth_deg[0] = 90, op.azimuth_deg[1] = 180;
    CHECK(kern_on_bound(&op, (kern_orient_t){90, 5}) == KERN_BOUND_AZIMUTH_MIN);
    CHECK(kern_on_bound(&op, (kern_orient_t){180, 30}) ==
          (KERN_BOUND_AZIMUTH_MAX | KERN_BOUND_TILT_MAX));
    CHECK(kern_on_bound(&op, (kern_orient_t){120, 12.5}) == 0);
    CHECK(!strcmp(kern_bound_name(0), "azimuth_min") && !strcmp(kern_bound_name(3), "tilt_max"));
    /* the search itself: a tilt range that stops short of the best tilt
       ends on its bound */
    fixture_t f;
    CHECKF(fixture_init(&f, 30000, 0, 0), "fixture");
    bf_optimizer_t nar = {.objective = BF_OBJ_MEAN_DBM,
                          .azimuth_deg = {0, 360},
                          .tilt_deg = {-10, -8},
                          .coverage_dbm = -100};
    kern_search_t s = search_of(&f, &nar);
    kern_search_result_t r;
    char err[BF_ERRLEN];
    CHECKF(kern_search(&s, &r, err) == BF_OK, "%s", err);
    printf("tilt range [-10, -8]: optimum (%.1f, %.1f), bounds %u\n", r.best.azimuth_deg,
           r.best.tilt_deg, kern_on_bound(&nar, r.best));
    CHECK(kern_on_bound(&nar, r.best) == KERN_BOUND_TILT_MAX);
    fixture_clear(&f);
}

int main(void)
{
    test_on_bound();
    test_objectives();
    test_exact_vs_retrace(0, 0);
    test_exact_vs_retrace(1, 0);
    test_exact_vs_retrace(0, 1);
    test_search_vs_exhaustive();
    test_boresight();
    if (failures) {
        fprintf(stderr, "kern_optimize_test: %d failures\n", failures);
        return 1;
    }
    printf("kern_optimize_test: ok\n");
    return 0;
}
