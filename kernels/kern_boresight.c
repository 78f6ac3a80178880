/*  kernels/kern_boresight.c - the boresight task (DESIGN 6.4-6.5 and the
    RESULT document of docs/protocol.md section 13): loads a scene directory, prepares it for
    tracing (BVH, normals, materials at the scene frequency), traces it once
    at the transmitter's initial orientation while recording the zone
    crossings, validates the initial zone, searches the best azimuth x tilt
    exactly from those crossings, re-traces at the optimum for the final map,
    writes the optional CSV maps and builds the result document. */

#include "kern.h"

#include <stdlib.h>
#include <string.h>

#if !defined(BF_HAVE_CUDA)
/* Without nvcc there is no CUDA backend; kern_cuda.cu defines the real one. */
const kern_backend_t *kern_backend_cuda(void)
{
    return NULL;
}

int kern_cuda_devices(kern_device_t *out, int max)
{
    (void)out;
    (void)max;
    return 0;
}
#endif

#define SPEED_OF_LIGHT 299792458.0
#define MAX_CELLS      (1u << 26)

struct kern_tracer {
    kern_bvh_t *bvh;
    float *normals;
    kern_mat_t *mats;
    kern_geom_t geom;
};

void kern_tracer_destroy(kern_tracer_t **self)
{
    if (!self || !*self)
        return;
    kern_tracer_t *t = *self;
    kern_bvh_destroy(&t->bvh);
    free(t->normals);
    free(t->mats);
    free(t);
    *self = NULL;
}

bf_err_t kern_tracer_new(const kern_scene_t *scene, unsigned threads, kern_tracer_t **out,
                         char *err)
{
    *out = NULL;
    if (!(scene->frequency_hz > 0.0) || !isfinite(scene->frequency_hz))
        return bf_fail(err, BF_EINVAL, "%s: frequency_hz must be positive",
                       scene->dir ? scene->dir : "scene");
    if (scene->triangle_count > KERN_MAX_TRIANGLES || scene->material_count > 65536 ||
        (scene->triangle_count && (!scene->materials || !scene->tri_material)))
        return bf_fail(err, BF_EINVAL, "scene: too many triangles or materials");
    kern_tracer_t *t = calloc(1, sizeof *t);
    if (!t)
        return bf_fail(err, BF_ENOMEM, "tracer: out of memory");
    double lambda = SPEED_OF_LIGHT / scene->frequency_hz;
    size_t nt = scene->triangle_count;
    t->normals = malloc((nt ? nt : 1) * 3 * sizeof *t->normals);
    t->mats = malloc((scene->material_count ? scene->material_count : 1) * sizeof *t->mats);
    if (!t->normals || !t->mats) {
        kern_tracer_destroy(&t);
        return bf_fail(err, BF_ENOMEM, "tracer: out of memory");
    }
    for (size_t i = 0; i < scene->material_count; i++) {
        const kern_material_t *m = &scene->materials[i];
        t->mats[i].eta_re = (float)m->eta_re;
        t->mats[i].eta_im = (float)m->eta_im;
        t->mats[i].kd = (float)(2.0 * KERN_PI * m->thickness / lambda);
        t->mats[i].pad = 0.0f;
    }
    for (size_t i = 0; i < nt; i++) {
        if (scene->tri_material[i] >= scene->material_count) {
            kern_tracer_destroy(&t);
            return bf_fail(err, BF_EINVAL, "scene: triangle %zu has no material", i);
        }
        const float *v = scene->vertices;
        const uint32_t *ix = &scene->indices[3 * i];
        kern_v3 a = v3(v[3 * ix[0]], v[3 * ix[0] + 1], v[3 * ix[0] + 2]);
        kern_v3 b = v3(v[3 * ix[1]], v[3 * ix[1] + 1], v[3 * ix[1] + 2]);
        kern_v3 c = v3(v[3 * ix[2]], v[3 * ix[2] + 1], v[3 * ix[2] + 2]);
        kern_v3 n = kern_tri_normal(a, b, c);
        t->normals[3 * i] = n.x;
        t->normals[3 * i + 1] = n.y;
        t->normals[3 * i + 2] = n.z;
    }
    memset(&t->geom, 0, sizeof t->geom);
    if (nt > 0) {
        bf_err_t e = kern_bvh_new(scene->vertices, scene->indices, nt, threads, &t->bvh, err);
        if (e != BF_OK) {
            kern_tracer_destroy(&t);
            return e;
        }
        t->geom.bvh = kern_bvh_view(t->bvh);
    }
    t->geom.normals = t->normals;
    t->geom.tri_material = scene->tri_material;
    t->geom.mats = t->mats;
    t->geom.tri_count = (uint32_t)nt;
    t->geom.mat_count = (uint32_t)scene->material_count;
    *out = t;
    return BF_OK;
}

const kern_geom_t *kern_tracer_geom(const kern_tracer_t *self)
{
    return &self->geom;
}

kern_antenna_t kern_antenna_from_tx(const kern_tx_t *tx)
{
    int pat = tx->pattern == KERN_PATTERN_DIPOLE      ? KERN_PAT_DIPOLE
              : tx->pattern == KERN_PATTERN_HW_DIPOLE ? KERN_PAT_HW_DIPOLE
              : tx->pattern == KERN_PATTERN_TR38901   ? KERN_PAT_TR38901
                                                      : KERN_PAT_ISO;
    int pol = tx->polarization == KERN_POL_H ? 1 : (tx->polarization == KERN_POL_CROSS ? 2 : 0);
    return kern_antenna_make(pat, pol);
}

bf_err_t kern_grid_make(const kern_scene_t *scene, const bf_measurement_t *jm, uint64_t rays,
                        kern_grid_t *g, char *err)
{
    const bf_measurement_t *sm = &scene->measurement;
    double cx = (scene->bbox_min[0] + scene->bbox_max[0]) / 2,
           cy = (scene->bbox_min[1] + scene->bbox_max[1]) / 2;
    double w = scene->bbox_max[0] - scene->bbox_min[0], h = scene->bbox_max[1] - scene->bbox_min[1];
    if (jm->has_center) {
        cx = jm->center[0];
        cy = jm->center[1];
    }
    if (sm->has_center) {
        cx = sm->center[0];
        cy = sm->center[1];
    }
    if (jm->has_size) {
        w = jm->size[0];
        h = jm->size[1];
    }
    if (sm->has_size) {
        w = sm->size[0];
        h = sm->size[1];
    }
    double height = sm->has_height ? sm->height : jm->height;
    double dx = sm->has_cell_size ? sm->cell_size[0] : jm->cell_size[0];
    double dy = sm->has_cell_size ? sm->cell_size[1] : jm->cell_size[1];
    if (!(dx > 0) || !(dy > 0) || !isfinite(dx) || !isfinite(dy) || !isfinite(height) ||
        !isfinite(cx) || !isfinite(cy))
        return bf_fail(err, BF_EINVAL, "measurement: cell_size must be positive and values finite");
    if (!(w > 0) || !(h > 0) || !isfinite(w) || !isfinite(h))
        return bf_fail(err, BF_EINVAL, "measurement: empty grid (size %g x %g m)", w, h);
    double nx = ceil(w / dx - 1e-9), ny = ceil(h / dy - 1e-9);
    if (nx < 1)
        nx = 1;
    if (ny < 1)
        ny = 1;
    if (nx * ny > (double)MAX_CELLS)
        return bf_fail(err, BF_EINVAL, "measurement: %.0f x %.0f cells is more than %u", nx, ny,
                       MAX_CELLS);
    if (rays == 0)
        return bf_fail(err, BF_EINVAL, "solver: samples_per_tx must be at least 1");
    g->x0 = (float)(cx - w / 2);
    g->y0 = (float)(cy - h / 2);
    g->dx = (float)dx;
    g->dy = (float)dy;
    g->z = (float)height;
    g->nx = (uint32_t)nx;
    g->ny = (uint32_t)ny;
    g->omega = (float)(4.0 * KERN_PI / (double)rays);
    return BF_OK;
}

/* ---- the task ---------------------------------------------------------------- */
typedef struct {
    kern_progress_fn fn;
    void *ud;
    const char *stage;
} stage_t;

static void stage_progress(void *ud, double f)
{
    stage_t *s = ud;
    if (s->fn)
        s->fn(s->ud, s->stage, f);
}

static void report(kern_progress_fn fn, void *ud, const char *stage, double f)
{
    if (fn)
        fn(ud, stage, f);
}

static bool cancelled(const kern_run_opts_t *o)
{
    return o && bf_flag_up(o->cancel);
}

typedef struct {
    double mean, median, p10, p90;
} zstats_t;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

static zstats_t stats_of(const double *dbm, size_t n, double *scratch)
{
    zstats_t z = {0, 0, 0, 0};
    if (n == 0)
        return z;
    double acc = 0;
    for (size_t i = 0; i < n; i++) {
        scratch[i] = dbm[i];
        acc += dbm[i];
    }
    qsort(scratch, n, sizeof *scratch, cmp_d);
    z.mean = acc / (double)n;
    z.median = bf_percentile(scratch, n, 50.0);
    z.p10 = bf_percentile(scratch, n, 10.0);
    z.p90 = bf_percentile(scratch, n, 90.0);
    return z;
}

static bf_err_t write_map(const char *dir, const char *name, const kern_grid_t *g,
                          const double *map, const kern_power_t *pw, char *err)
{
    char *path = bf_asprintf("%s/%s", dir, name);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!path || !f) {
        if (f)
            fclose(f);
        free(buf);
        free(path);
        return bf_fail(err, BF_ENOMEM, "maps: out of memory");
    }
    fputs("x,y,dbm\n", f);
    for (uint32_t iy = 0; iy < g->ny; iy++)
        for (uint32_t ix = 0; ix < g->nx; ix++)
            fprintf(f, "%.6g,%.6g,%.4f\n", (double)g->x0 + (ix + 0.5) * (double)g->dx,
                    (double)g->y0 + (iy + 0.5) * (double)g->dy,
                    kern_sum_to_dbm(pw, map[(size_t)iy * g->nx + ix]));
    bf_err_t e = BF_OK;
    if (fclose(f) != 0 || !buf)
        e = bf_fail(err, BF_ENOMEM, "maps: out of memory");
    else
        e = bf_write_atomic(path, buf, len, err);
    free(buf);
    free(path);
    return e;
}

static json_t *stats_json(const zstats_t *a, const zstats_t *b, size_t cells)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "zone_cells",
                     (json_int_t)cells, "initial_mean", a->mean, "initial_median", a->median,
                     "initial_p10", a->p10, "initial_p90", a->p90, "optimized_mean", b->mean,
                     "optimized_median", b->median, "optimized_p10", b->p10, "optimized_p90",
                     b->p90, "improvement_mean", b->mean - a->mean);
}

static json_t *dbm_array(const double *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_real(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* The "thumbnails" field: both maps block-averaged (in linear power) down
   to at most KERN_THUMB_MAX cells per axis, in dBm rounded to 0.1 dB, null
   where no ray reached a block; row-major, y increasing. Block (bx, by)
   covers the cells [bx*fx, (bx+1)*fx) x [by*fy, (by+1)*fy) of the grid
   (fewer at the far edges), so x0, y0 are the grid's and dx, dy are fx, fy
   cells wide. NULL on allocation failure. */
static json_t *thumb_map(const kern_grid_t *g, const double *map, const kern_power_t *pw,
                         uint32_t fx, uint32_t fy, uint32_t tnx, uint32_t tny)
{
    json_t *a = json_array();
    for (uint32_t by = 0; a && by < tny; by++)
        for (uint32_t bx = 0; bx < tnx; bx++) {
            double sum = 0;
            size_t n = 0;
            for (uint32_t iy = by * fy; iy < (by + 1) * fy && iy < g->ny; iy++)
                for (uint32_t ix = bx * fx; ix < (bx + 1) * fx && ix < g->nx; ix++, n++)
                    sum += map[(size_t)iy * g->nx + ix];
            double p = n ? sum / (double)n * pw->scale : 0.0;
            json_t *v = p > 0.0 && isfinite(p)
                            ? json_real(round((10.0 * log10(p) + 30.0) * 10.0) / 10.0)
                            : json_null();
            if (json_array_append_new(a, v) != 0) {
                json_decref(a);
                return NULL;
            }
        }
    return a;
}

static json_t *thumbnails_json(const kern_grid_t *g, const double *map0, const double *map1,
                               const kern_power_t *pw)
{
    uint32_t fx = (g->nx + KERN_THUMB_MAX - 1) / KERN_THUMB_MAX;
    uint32_t fy = (g->ny + KERN_THUMB_MAX - 1) / KERN_THUMB_MAX;
    uint32_t tnx = (g->nx + fx - 1) / fx, tny = (g->ny + fy - 1) / fy;
    json_t *a = thumb_map(g, map0, pw, fx, fy, tnx, tny);
    json_t *b = a ? thumb_map(g, map1, pw, fx, fy, tnx, tny) : NULL;
    if (!b) {
        json_decref(a);
        return NULL;
    }
    return json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:o, s:o}", "nx", (json_int_t)tnx, "ny",
                     (json_int_t)tny, "x0", (double)g->x0, "y0", (double)g->y0, "dx",
                     (double)g->dx * fx, "dy", (double)g->dy * fy, "initial", a, "optimized", b);
}

/* Validation of the initial zone (DESIGN section 3); reason is empty on pass. */
static bool validate(const bf_validation_t *v, const zstats_t *z, char *reason, size_t cap)
{
    if (z->p10 < v->p10_min_dbm)
        snprintf(reason, cap, "p10 %.1f dBm below p10_min_dbm %.1f", z->p10, v->p10_min_dbm);
    else if (z->p10 > v->p10_max_dbm)
        snprintf(reason, cap, "p10 %.1f dBm above p10_max_dbm %.1f", z->p10, v->p10_max_dbm);
    else if (z->p90 < v->p90_min_dbm)
        snprintf(reason, cap, "p90 %.1f dBm below p90_min_dbm %.1f", z->p90, v->p90_min_dbm);
    else if (z->p90 - z->p10 < v->min_percentile_range_db)
        snprintf(reason, cap, "p90-p10 range %.1f dB below min_percentile_range_db %.1f",
                 z->p90 - z->p10, v->min_percentile_range_db);
    else {
        reason[0] = '\0';
        return true;
    }
    return false;
}

bf_err_t kern_boresight(const char *scene_dir, const bf_job_t *job, const kern_run_opts_t *opts,
                        kern_progress_fn progress, void *ud, json_t **result, char *err)
{
    kern_run_opts_t dflt = {0, 0, NULL, NULL};
    if (!opts)
        opts = &dflt;
    *result = NULL;
    if (!scene_dir || !job)
        return bf_fail(err, BF_EINVAL, "boresight: no scene or job");
    const kern_backend_t *be = kern_backend_cpu();
    if (opts->backend != 0 && opts->backend != 1 && opts->backend != 2)
        return bf_fail(err, BF_EINVAL, "boresight: unknown backend %d", opts->backend);
    if (opts->backend != 1) {
        const kern_backend_t *gpu = kern_backend_cuda();
        if (gpu)
            be = gpu;
        else if (opts->backend == 2)
            return bf_fail(err, BF_EUNSUPP,
                           "boresight: no CUDA backend (not compiled in, or no usable device)");
    }

    kern_scene_t *scene = NULL;
    kern_tracer_t *tracer = NULL;
    void *ctx = NULL;
    int32_t *zone_of_cell = NULL;
    double *map0 = NULL, *map1 = NULL, *z0 = NULL, *z1 = NULL, *scratch = NULL;
    kern_zone_data_t zone;
    memset(&zone, 0, sizeof zone);
    json_t *doc = NULL;
    bf_err_t e = BF_OK;
    double t_load = bf_mono_s(), t_trace = 0, t_opt = 0, t_maps = 0;

    report(progress, ud, "load", 0.0);
    e = kern_scene_load(scene_dir, &scene, err);
    if (e != BF_OK) {
        if (e != BF_ENOMEM && e != BF_ECANCELED)
            e = BF_EINVAL;
        goto done;
    }
    kern_grid_t grid;
    e = kern_grid_make(scene, &job->measurement, job->solver.samples_per_tx, &grid, err);
    if (e != BF_OK)
        goto done;
    size_t cells = (size_t)grid.nx * grid.ny;
    zone_of_cell = malloc(cells * sizeof *zone_of_cell);
    map0 = malloc(cells * sizeof *map0);
    map1 = malloc(cells * sizeof *map1);
    if (!zone_of_cell || !map0 || !map1) {
        e = bf_fail(err, BF_ENOMEM, "boresight: out of memory for %zu cells", cells);
        goto done;
    }
    uint32_t zcells = 0;
    for (uint32_t iy = 0; iy < grid.ny; iy++)
        for (uint32_t ix = 0; ix < grid.nx; ix++) {
            double x = (double)grid.x0 + (ix + 0.5) * (double)grid.dx;
            double y = (double)grid.y0 + (iy + 0.5) * (double)grid.dy;
            zone_of_cell[(size_t)iy * grid.nx + ix] =
                kern_scene_in_zone(scene, x, y) ? (int32_t)zcells++ : -1;
        }
    if (zcells == 0) {
        e = bf_fail(err, BF_EINVAL, "%s: the zone contains no measurement cell centre", scene_dir);
        goto done;
    }
    z0 = malloc(zcells * sizeof *z0);
    z1 = malloc(zcells * sizeof *z1);
    scratch = malloc(zcells * sizeof *scratch);
    if (!z0 || !z1 || !scratch) {
        e = bf_fail(err, BF_ENOMEM, "boresight: out of memory");
        goto done;
    }
    e = kern_tracer_new(scene, opts->threads, &tracer, err);
    if (e != BF_OK)
        goto done;
    e = be->ctx_new(kern_tracer_geom(tracer), opts->threads, &ctx, err);
    if (e != BF_OK && opts->backend == 0 && be != kern_backend_cpu()) {
        be = kern_backend_cpu(); /* auto: no usable device, run on the CPU */
        e = be->ctx_new(kern_tracer_geom(tracer), opts->threads, &ctx, err);
    }
    if (e != BF_OK)
        goto done;
    t_load = bf_mono_s() - t_load;
    report(progress, ud, "load", 1.0);
    if (cancelled(opts)) {
        e = bf_fail(err, BF_ECANCELED, "cancelled");
        goto done;
    }

    /* trace once at the initial orientation, recording the zone crossings */
    double t0 = bf_mono_s();
    stage_t st = {progress, ud, "trace"};
    kern_trace_setup_t ts;
    memset(&ts, 0, sizeof ts);
    ts.rays = job->solver.samples_per_tx;
    ts.max_depth = job->solver.max_depth;
    ts.los = job->solver.los;
    ts.reflection = job->solver.specular_reflection;
    ts.refraction = job->solver.refraction;
    ts.seed = job->solver.seed;
    ts.tx = v3((float)scene->tx.position[0], (float)scene->tx.position[1],
               (float)scene->tx.position[2]);
    ts.antenna = kern_antenna_from_tx(&scene->tx);
    ts.rot = kern_rotation(scene->tx.azimuth_deg, scene->tx.tilt_deg, scene->tx.roll_deg);
    ts.grid = grid;
    ts.zone_of_cell = zone_of_cell;
    ts.zone_cells = zcells;
    ts.cancel = opts->cancel;
    ts.progress = stage_progress;
    ts.progress_ud = &st;
    kern_trace_out_t to = {map0, 0, &zone};
    report(progress, ud, "trace", 0.0);
    e = be->trace(ctx, &ts, &to, err);
    if (e != BF_OK)
        goto done;
    t_trace = bf_mono_s() - t0;
    uint64_t crossings0 = to.crossings;

    double lambda = SPEED_OF_LIGHT / scene->frequency_hz;
    kern_power_t pw;
    pw.scale = pow(10.0, (scene->tx.power_dbm - 30.0) / 10.0) * (lambda / (4 * KERN_PI)) *
               (lambda / (4 * KERN_PI)) / ((double)grid.dx * grid.dy);
    pw.floor_dbm = job->solver.floor_dbm;
    for (size_t c = 0; c < cells; c++)
        if (zone_of_cell[c] >= 0)
            z0[zone_of_cell[c]] = kern_sum_to_dbm(&pw, map0[c]);
    zstats_t s0 = stats_of(z0, zcells, scratch);
    char reason[256];
    bool valid = validate(&job->validation, &s0, reason, sizeof reason);
    if (cancelled(opts)) {
        e = bf_fail(err, BF_ECANCELED, "cancelled");
        goto done;
    }

    /* optimize from the recorded crossings */
    t0 = bf_mono_s();
    kern_orient_t init = {scene->tx.azimuth_deg, scene->tx.tilt_deg};
    kern_search_result_t sr;
    memset(&sr, 0, sizeof sr);
    sr.best = init;
    stage_t so = {progress, ud, "optimize"};
    report(progress, ud, "optimize", 0.0);
    kern_search_t search;
    memset(&search, 0, sizeof search);
    search.backend = be;
    search.ctx = ctx;
    search.zone = &zone;
    search.antenna = ts.antenna;
    search.roll_deg = scene->tx.roll_deg;
    search.power = pw;
    search.optimizer = &job->optimizer;
    search.cancel = opts->cancel;
    search.progress = stage_progress;
    search.progress_ud = &so;
    double obj0 = 0.0;
    e = kern_evaluate_orients(&search, &init, 1, &obj0, &sr.evaluations, err);
    if (e != BF_OK)
        goto done;
    sr.objective = obj0;
    {
        kern_search_result_t found;
        e = kern_search(&search, &found, err);
        if (e != BF_OK)
            goto done;
        found.evaluations += sr.evaluations;
        /* keep the initial orientation unless the search beats it */
        if (found.objective > obj0)
            sr = found;
        else
            sr.evaluations = found.evaluations;
    }
    t_opt = bf_mono_s() - t0;
    if (cancelled(opts)) {
        e = bf_fail(err, BF_ECANCELED, "cancelled");
        goto done;
    }

    /* maps: the full map at the optimum (a re-trace: the paths are the same,
       only the antenna field changes), and the CSV files */
    t0 = bf_mono_s();
    stage_t sm = {progress, ud, "maps"};
    report(progress, ud, "maps", 0.0);
    if (sr.best.azimuth_deg == init.azimuth_deg && sr.best.tilt_deg == init.tilt_deg) {
        memcpy(map1, map0, cells * sizeof *map1);
    } else {
        ts.rot = kern_rotation(sr.best.azimuth_deg, sr.best.tilt_deg, scene->tx.roll_deg);
        ts.zone_of_cell = NULL;
        ts.progress_ud = &sm;
        kern_trace_out_t t1 = {map1, 0, NULL};
        e = be->trace(ctx, &ts, &t1, err);
        if (e != BF_OK)
            goto done;
    }
    for (size_t c = 0; c < cells; c++)
        if (zone_of_cell[c] >= 0)
            z1[zone_of_cell[c]] = kern_sum_to_dbm(&pw, map1[c]);
    zstats_t s1 = stats_of(z1, zcells, scratch);
    if (opts->maps_dir) {
        e = write_map(opts->maps_dir, "initial.csv", &grid, map0, &pw, err);
        if (e == BF_OK)
            e = write_map(opts->maps_dir, "optimized.csv", &grid, map1, &pw, err);
        if (e != BF_OK)
            goto done;
    }
    t_maps = bf_mono_s() - t0;
    report(progress, ud, "maps", 1.0);

    doc = json_pack("{s:s, s:s, s:o, s:o, s:o, s:{s:f, s:f}, s:{s:f, s:f}, s:{s:f, s:f, s:f, s:f}, "
                    "s:{s:I, s:I, s:I, s:I, s:I, s:s}, s:I, s:f, s:o}",
                    "status", valid ? "success" : "failed", "reason", reason, "zone_power_initial",
                    dbm_array(z0, zcells), "zone_power_optimized", dbm_array(z1, zcells), "stats",
                    stats_json(&s0, &s1, zcells), "boresight_initial", "azimuth_deg",
                    init.azimuth_deg, "tilt_deg", init.tilt_deg, "boresight_optimized",
                    "azimuth_deg", sr.best.azimuth_deg, "tilt_deg", sr.best.tilt_deg, "timings",
                    "load", t_load, "trace", t_trace, "optimize", t_opt, "maps", t_maps, "solver",
                    "rays", (json_int_t)job->solver.samples_per_tx, "crossings",
                    (json_int_t)crossings0, "zone_crossings", (json_int_t)zone.count, "max_depth",
                    (json_int_t)job->solver.max_depth, "seed", (json_int_t)job->solver.seed,
                    "backend", be->name, "evaluations", (json_int_t)sr.evaluations, "objective",
                    sr.objective, "thumbnails", thumbnails_json(&grid, map0, map1, &pw));
    if (!doc) {
        e = bf_fail(err, BF_ENOMEM, "boresight: cannot build the result document");
        goto done;
    }
    *result = doc;
done:
    if (e == BF_ECANCELED && err && !err[0])
        bf_fail(err, BF_ECANCELED, "cancelled");
    be->ctx_destroy(&ctx);
    kern_tracer_destroy(&tracer);
    kern_scene_destroy(&scene);
    kern_zone_data_clear(&zone);
    free(zone_of_cell);
    free(map0);
    free(map1);
    free(z0);
    free(z1);
    free(scratch);
    return e;
}
