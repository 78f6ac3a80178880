/*  worker/worker_boresight_test.c - the boresight handler's two
    conversions and the handler itself. worker_boresight_opts carries every
    setting of a job into the engine's options; worker_boresight_json turns
    a plain result, built here by hand so each value is known, into exactly
    the fields docs/protocol.md section 13 lists for a boresight task (no
    more: the worker adds the fleet fields), thumbnails rounded to 0.1 dB
    with null for a block no ray reached; and worker_boresight runs a
    generated scene on the CPU into a document whose parts agree (arrays
    against stats, thumbnails against nx x ny), reports the four stages,
    and stops with BF_ECANCELED when cancelled. */

#include "worker.h"

#include "../kernels/kern.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bf_check.h"

/* The keys of obj, sorted and comma-joined, into buf. */
static const char *keys_of(const json_t *obj, char *buf, size_t n)
{
    const char *names[64];
    size_t count = 0;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        (void)value;
        if (count < 64)
            names[count++] = key;
    }
    for (size_t i = 1; i < count; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < count && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? "," : "", names[i]);
    return buf;
}

static double num(const json_t *obj, const char *key)
{
    return json_number_value(json_object_get(obj, key));
}

static void test_opts(void)
{
    bf_job_t job;
    bf_job_defaults(&job);
    job.solver.samples_per_tx = 12345;
    job.solver.max_depth = 5;
    job.solver.los = false;
    job.solver.refraction = false;
    job.solver.seed = 99;
    job.solver.floor_dbm = -250;
    job.measurement.has_center = true;
    job.measurement.center[0] = 10;
    job.measurement.center[1] = -20;
    job.measurement.height = 2.5;
    job.measurement.cell_size[0] = 3;
    job.optimizer.objective = BF_OBJ_COVERAGE;
    job.optimizer.azimuth_deg[1] = 180;
    job.optimizer.coverage_dbm = -90;
    job.validation.p10_min_dbm = -200;
    job.validation.min_percentile_range_db = 7;
    kern_boresight_opts_t o;
    memset(&o, 0xab, sizeof o); /* every field must be set */
    worker_boresight_opts(&job, &o);
    CHECK(!memcmp(&o.solver, &job.solver, sizeof o.solver));
    CHECK(!memcmp(&o.measurement, &job.measurement, sizeof o.measurement));
    CHECK(!memcmp(&o.optimizer, &job.optimizer, sizeof o.optimizer));
    CHECK(!memcmp(&o.validation, &job.validation, sizeof o.validation));
    CHECK(o.backend == KERN_BACKEND_AUTO && o.threads == 0 && !o.maps_dir && !o.cancel &&
          !o.progress && !o.progress_ud);
    bf_job_clear(&job);
}

/* A result with known values: 3 zone cells, 2 x 1 thumbnails. */
static void fill_result(kern_boresight_result_t *r, double *zi, double *zo, double *ti, double *to)
{
    memset(r, 0, sizeof *r);
    r->valid = true;
    r->zone_cells = 3;
    zi[0] = -80.5, zi[1] = -70.25, zi[2] = -300;
    zo[0] = -75, zo[1] = -65.125, zo[2] = -90;
    r->zone_initial = zi;
    r->zone_optimized = zo;
    r->initial = (kern_zone_stats_t){-150.25, -80.5, -250.1, -72.3};
    r->optimized = (kern_zone_stats_t){-76.75, -75, -86.97, -67.1};
    r->boresight_initial = (kern_orient_t){45, 5};
    r->boresight_optimized = (kern_orient_t){123.4, -2.5};
    r->objective = -76.75;
    r->evaluations = 4321;
    r->timings.load = 0.5;
    r->timings.trace = 1.25;
    r->timings.optimize = 2;
    r->timings.maps = 0.75;
    r->solver.rays = 1000000;
    r->solver.seed = 42;
    r->solver.max_depth = 3;
    r->solver.crossings = 98765;
    r->solver.zone_crossings = 4567;
    r->solver.backend = "cpu";
    r->thumbnails.nx = 2;
    r->thumbnails.ny = 1;
    r->thumbnails.x0 = -100;
    r->thumbnails.y0 = -50;
    r->thumbnails.dx = 20;
    r->thumbnails.dy = 10;
    ti[0] = -87.34, ti[1] = NAN;
    to[0] = -87.36, to[1] = -60.04;
    r->thumbnails.initial = ti;
    r->thumbnails.optimized = to;
}

static void test_json(void)
{
    kern_boresight_result_t r;
    double zi[3], zo[3], ti[2], to[2];
    fill_result(&r, zi, zo, ti, to);
    json_t *doc = worker_boresight_json(&r);
    CHECK(doc != NULL);
    if (!doc)
        return;
    char keys[1024];
    /* docs/protocol.md section 13, boresight tasks: these and nothing else */
    CHECKF(!strcmp(keys_of(doc, keys, sizeof keys),
                   "boresight_initial,boresight_optimized,evaluations,objective,optimum_on_bound,"
                   "reason,solver,stats,status,thumbnails,timings,zone_power_initial,"
                   "zone_power_optimized"),
           "%s", keys);
    CHECK(!strcmp(json_string_value(json_object_get(doc, "status")), "success"));
    /* an optimum inside the ranges: an empty list */
    CHECK(json_is_array(json_object_get(doc, "optimum_on_bound")) &&
          json_array_size(json_object_get(doc, "optimum_on_bound")) == 0);
    CHECK(!strcmp(json_string_value(json_object_get(doc, "reason")), ""));
    json_t *zi_j = json_object_get(doc, "zone_power_initial");
    json_t *zo_j = json_object_get(doc, "zone_power_optimized");
    CHECK(json_array_size(zi_j) == 3 && json_array_size(zo_j) == 3);
    for (size_t i = 0; i < 3; i++)
        CHECK(json_is_real(json_array_get(zi_j, i)) &&
              json_real_value(json_array_get(zi_j, i)) == zi[i] &&
              json_real_value(json_array_get(zo_j, i)) == zo[i]);

    json_t *st = json_object_get(doc, "stats");
    CHECKF(!strcmp(keys_of(st, keys, sizeof keys),
                   "improvement_mean,initial_mean,initial_median,initial_p10,initial_p90,"
                   "optimized_mean,optimized_median,optimized_p10,optimized_p90,zone_cells"),
           "%s", keys);
    CHECK(json_is_integer(json_object_get(st, "zone_cells")) && num(st, "zone_cells") == 3);
    CHECK(num(st, "initial_mean") == -150.25 && num(st, "initial_median") == -80.5 &&
          num(st, "initial_p10") == -250.1 && num(st, "initial_p90") == -72.3);
    CHECK(num(st, "optimized_mean") == -76.75 && num(st, "optimized_median") == -75 &&
          num(st, "optimized_p10") == -86.97 && num(st, "optimized_p90") == -67.1);
    CHECK(num(st, "improvement_mean") == -76.75 - -150.25);

    static const char *const orients[] = {"boresight_initial", "boresight_optimized"};
    for (int k = 0; k < 2; k++)
        CHECKF(!strcmp(keys_of(json_object_get(doc, orients[k]), keys, sizeof keys),
                       "azimuth_deg,tilt_deg"),
               "%s: %s", orients[k], keys);
    CHECK(num(json_object_get(doc, "boresight_initial"), "azimuth_deg") == 45 &&
          num(json_object_get(doc, "boresight_initial"), "tilt_deg") == 5);
    CHECK(num(json_object_get(doc, "boresight_optimized"), "azimuth_deg") == 123.4 &&
          num(json_object_get(doc, "boresight_optimized"), "tilt_deg") == -2.5);
    json_decref(doc);
    /* orientations go out to 0.01 deg: a computed -2.8e-16 is 0, not -0 */
    r.boresight_initial.azimuth_deg = 79.10000000000001;
    r.boresight_initial.tilt_deg = -2.775557562e-16;
    r.boresight_optimized.tilt_deg = 12.3449;
    doc = worker_boresight_json(&r);
    CHECK(doc != NULL);
    if (!doc)
        return;
    json_decref(doc);
    /* an optimum on two bounds: their names, in bit order */
    r.on_bound = KERN_BOUND_TILT_MAX | KERN_BOUND_AZIMUTH_MIN;
    doc = worker_boresight_json(&r);
    CHECK(doc != NULL);
    if (!doc)
        return;
    const json_t *ob = json_object_get(doc, "optimum_on_bound");
    CHECK(json_array_size(ob) == 2 &&
          !strcmp(json_string_value(json_array_get(ob, 0)), "azimuth_min") &&
          !strcmp(json_string_value(json_array_get(ob, 1)), "tilt_max"));
    r.on_bound = 0;
    double t0 = num(json_object_get(doc, "boresight_initial"), "tilt_deg");
    CHECKF(t0 == 0 && !signbit(t0), "tilt %g", t0);
    CHECK(num(json_object_get(doc, "boresight_initial"), "azimuth_deg") == 79.1);
    CHECK(num(json_object_get(doc, "boresight_optimized"), "tilt_deg") == 12.34);

    json_t *tm = json_object_get(doc, "timings");
    CHECKF(!strcmp(keys_of(tm, keys, sizeof keys), "load,maps,optimize,trace"), "%s", keys);
    CHECK(num(tm, "load") == 0.5 && num(tm, "trace") == 1.25 && num(tm, "optimize") == 2 &&
          num(tm, "maps") == 0.75);

    json_t *sv = json_object_get(doc, "solver");
    CHECKF(!strcmp(keys_of(sv, keys, sizeof keys),
                   "backend,crossings,max_depth,rays,seed,zone_crossings"),
           "%s", keys);
    CHECK(json_integer_value(json_object_get(sv, "rays")) == 1000000 &&
          json_integer_value(json_object_get(sv, "crossings")) == 98765 &&
          json_integer_value(json_object_get(sv, "zone_crossings")) == 4567 &&
          json_integer_value(json_object_get(sv, "max_depth")) == 3 &&
          json_integer_value(json_object_get(sv, "seed")) == 42 &&
          !strcmp(json_string_value(json_object_get(sv, "backend")), "cpu"));
    CHECK(json_is_integer(json_object_get(doc, "evaluations")) &&
          json_integer_value(json_object_get(doc, "evaluations")) == 4321);
    CHECK(json_is_real(json_object_get(doc, "objective")) && num(doc, "objective") == -76.75);

    json_t *th = json_object_get(doc, "thumbnails");
    CHECKF(!strcmp(keys_of(th, keys, sizeof keys), "dx,dy,initial,nx,ny,optimized,x0,y0"), "%s",
           keys);
    CHECK(json_integer_value(json_object_get(th, "nx")) == 2 &&
          json_integer_value(json_object_get(th, "ny")) == 1 && num(th, "x0") == -100 &&
          num(th, "y0") == -50 && num(th, "dx") == 20 && num(th, "dy") == 10);
    json_t *ti_j = json_object_get(th, "initial"), *to_j = json_object_get(th, "optimized");
    CHECK(json_array_size(ti_j) == 2 && json_array_size(to_j) == 2);
    /* 0.1 dB, null where no ray came */
    CHECK(json_real_value(json_array_get(ti_j, 0)) == -87.3);
    CHECK(json_is_null(json_array_get(ti_j, 1)));
    CHECK(json_real_value(json_array_get(to_j, 0)) == -87.4 &&
          json_real_value(json_array_get(to_j, 1)) == -60.0);
    json_decref(doc);

    /* a zone that failed validation */
    r.valid = false;
    bf_strlcpy(r.reason, "p10 -250.1 dBm below p10_min_dbm -240.0", sizeof r.reason);
    doc = worker_boresight_json(&r);
    CHECK(doc && !strcmp(json_string_value(json_object_get(doc, "status")), "failed") &&
          !strcmp(json_string_value(json_object_get(doc, "reason")), r.reason));
    json_decref(doc);
}

/* ---- the handler on a generated scene ---------------------------------------- */
/* Several transmitters: the list of their orientations, SINR per zone
   cell and its statistics come on top of the single-transmitter fields. */
static void test_json_multi(void)
{
    kern_boresight_result_t r;
    double zi[3], zo[3], ti[2], to[2], si[3] = {1.5, -3, -300}, so[3] = {20.25, 10, 4};
    fill_result(&r, zi, zo, ti, to);
    r.tx_count = 2;
    snprintf(r.txs[0].name, sizeof r.txs[0].name, "alpha");
    snprintf(r.txs[1].name, sizeof r.txs[1].name, "beta");
    r.txs[0].movable = true;
    r.txs[0].serves = true;
    r.txs[0].initial = r.boresight_initial;
    r.txs[0].optimized = r.boresight_optimized;
    r.txs[1].initial = (kern_orient_t){120, 3};
    r.txs[1].optimized = (kern_orient_t){120, 3};
    r.txs[0].on_bound = KERN_BOUND_TILT_MIN;
    r.has_sinr = true;
    r.noise_dbm = -113.5;
    r.zone_sinr_initial = si;
    r.zone_sinr_optimized = so;
    r.sinr_initial = (kern_zone_stats_t){-100.5, 1.5, -240, 1};
    r.sinr_optimized = (kern_zone_stats_t){11.4, 10, 5.2, 18};
    json_t *doc = worker_boresight_json(&r);
    CHECK(doc != NULL);
    if (!doc)
        return;
    char keys[1024];
    CHECKF(!strcmp(keys_of(doc, keys, sizeof keys),
                   "boresight_initial,boresight_optimized,evaluations,noise_dbm,objective,"
                   "optimum_on_bound,reason,sinr_initial,sinr_optimized,solver,stats,status,"
                   "thumbnails,timings,transmitters,zone_power_initial,zone_power_optimized"),
           "%s", keys);
    const json_t *tx = json_object_get(doc, "transmitters");
    CHECK(json_array_size(tx) == 2);
    const json_t *b = json_array_get(tx, 1);
    CHECK(!strcmp(json_string_value(json_object_get(b, "name")), "beta") &&
          json_is_false(json_object_get(b, "movable")) &&
          json_is_false(json_object_get(b, "serves")) &&
          json_is_true(json_object_get(json_array_get(tx, 0), "serves")) &&
          num(json_object_get(b, "optimized"), "azimuth_deg") == 120 &&
          num(json_object_get(b, "initial"), "tilt_deg") == 3);
    CHECK(num(json_object_get(json_array_get(tx, 0), "optimized"), "azimuth_deg") == 123.4);
    const json_t *b0 = json_object_get(json_array_get(tx, 0), "optimum_on_bound");
    CHECK(json_array_size(b0) == 1 &&
          !strcmp(json_string_value(json_array_get(b0, 0)), "tilt_min") &&
          json_array_size(json_object_get(b, "optimum_on_bound")) == 0);
    CHECK(json_array_size(json_object_get(doc, "sinr_optimized")) == 3 &&
          json_number_value(json_array_get(json_object_get(doc, "sinr_optimized"), 0)) == 20.25);
    const json_t *st = json_object_get(doc, "stats");
    CHECK(num(st, "optimized_sinr_mean") == 11.4 && num(st, "initial_sinr_p10") == -240 &&
          num(st, "optimized_mean") == -76.75 && num(doc, "noise_dbm") == -113.5);
    json_decref(doc);
}

static void on_progress(void *ud, const char *stage, double f)
{
    int *seen = ud;
    static const char *const stages[] = {"load", "trace", "optimize", "maps"};
    for (int k = 0; k < 4; k++)
        if (!strcmp(stage, stages[k]))
            seen[k] = 1;
    if (f < 0 || f > 1)
        seen[4] = 1;
}

static double mean_of(const json_t *a)
{
    double s = 0;
    for (size_t i = 0; i < json_array_size(a); i++)
        s += json_real_value(json_array_get(a, i));
    return json_array_size(a) ? s / (double)json_array_size(a) : 0;
}

static void test_handler(void)
{
    char tmpl[] = "/tmp/worker_boresight_test.XXXXXX", err[BF_ERRLEN] = "";
    char *root = mkdtemp(tmpl);
    CHECK(root != NULL);
    if (!root)
        return;
    bf_err_t e = kern_scenegen(root, 1, 3, err);
    CHECKF(e == BF_OK, "scenegen: %s", err);
    char scene[600];
    snprintf(scene, sizeof scene, "%s/city_000", root);
    bf_job_t job;
    bf_job_defaults(&job);
    job.solver.samples_per_tx = 100000;
    job.solver.max_depth = 2;
    job.validation.p10_min_dbm = -1000;
    job.validation.p10_max_dbm = 1000;
    job.validation.p90_min_dbm = -1000;
    job.validation.min_percentile_range_db = 0;
    worker_device_t dev;
    worker_device_cpu(&dev);
    volatile int cancel = 0;
    int seen[5] = {0};
    worker_task_ctx_t ctx = {.scene_dir = scene,
                             .scene = "city_000",
                             .job = &job,
                             .deadline_ms = bf_mono_ms() + 600000,
                             .cancel = &cancel,
                             .dev = &dev,
                             .threads = 2,
                             .progress = on_progress,
                             .ud = seen};
    json_t *res = NULL;
    if (e == BF_OK) {
        e = worker_boresight(&ctx, &res, err);
        CHECKF(e == BF_OK && res, "boresight: %s", err);
    }
    if (res) {
        CHECK(!strcmp(json_string_value(json_object_get(res, "status")), "success"));
        json_t *st = json_object_get(res, "stats");
        size_t cells = (size_t)json_integer_value(json_object_get(st, "zone_cells"));
        json_t *zi = json_object_get(res, "zone_power_initial");
        json_t *zo = json_object_get(res, "zone_power_optimized");
        CHECK(cells > 0 && json_array_size(zi) == cells && json_array_size(zo) == cells);
        CHECK(fabs(num(st, "initial_mean") - mean_of(zi)) < 1e-9 &&
              fabs(num(st, "optimized_mean") - mean_of(zo)) < 1e-9);
        CHECK(fabs(num(st, "improvement_mean") -
                   (num(st, "optimized_mean") - num(st, "initial_mean"))) < 1e-12);
        json_t *sv = json_object_get(res, "solver");
        CHECK(json_integer_value(json_object_get(sv, "rays")) == 100000 &&
              json_integer_value(json_object_get(sv, "max_depth")) == 2 &&
              json_integer_value(json_object_get(sv, "seed")) == (json_int_t)job.solver.seed &&
              !strcmp(json_string_value(json_object_get(sv, "backend")), "cpu"));
        json_t *th = json_object_get(res, "thumbnails");
        size_t n = (size_t)(json_integer_value(json_object_get(th, "nx")) *
                            json_integer_value(json_object_get(th, "ny")));
        CHECK(n > 0 && json_array_size(json_object_get(th, "initial")) == n &&
              json_array_size(json_object_get(th, "optimized")) == n);
        CHECK(seen[0] && seen[1] && seen[2] && seen[3] && !seen[4]);
        json_decref(res);
        res = NULL;
    }
    cancel = 1;
    CHECK(worker_boresight(&ctx, &res, err) == BF_ECANCELED && !res);
    cancel = 0;
    ctx.scene_dir = "/nonexistent/scene";
    CHECK(worker_boresight(&ctx, &res, err) == BF_EINVAL && !res);
    CHECK(!strcmp(worker_fault(BF_EINVAL), "task"));
    bf_job_clear(&job);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
}

int main(void)
{
    test_opts();
    test_json();
    test_json_multi();
    test_handler();
    if (failures) {
        fprintf(stderr, "worker_boresight_test: %d failures\n", failures);
        return 1;
    }
    printf("worker_boresight_test: ok\n");
    return 0;
}
