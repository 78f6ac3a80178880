/*  kernels/kern_boresight.c - the boresight task (DESIGN 6.4-6.5): loads a
    scene directory, prepares it for tracing (BVH, normals, materials at the
    scene frequency), traces it once at the transmitter's initial orientation
    while recording the zone crossings, validates the initial zone, searches
    the best azimuth x tilt exactly from those crossings, re-traces at the
    optimum for the final map, writes the optional CSV maps and reduces both
    maps to thumbnails. What it finds is a plain kern_boresight_result_t; the
    worker turns that into the RESULT document. */

#include "kern.h"

#include <stdlib.h>
#include <string.h>

#define SPEED_OF_LIGHT 299792458.0
#define MAX_CELLS      (1u << 26)

struct kern_tracer {
    kern_bvh_t *bvh;
    float *normals;
    kern_edge_t *edges; /* that can diffract */
    float *tri_verts;
    uint32_t *tri_nbr, *tri_edge;
    kern_mat_t *mats;
    kern_geom_t geom;
};

void kern_tracer_destroy(kern_tracer_t **self)
{
    if (!self || !*self)
        return;
    kern_tracer_t *t = *self;
    kern_bvh_destroy(&t->bvh);
    free(t->edges);
    free(t->tri_verts);
    free(t->tri_nbr);
    free(t->tri_edge);
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
        t->mats[i].s = (float)m->scattering_coefficient;
        t->mats[i].kx = (float)m->xpd_coefficient;
        t->mats[i].lam = (float)m->lambda;
        t->mats[i].pattern = m->scattering_pattern == KERN_SCATTER_LAMBERTIAN
                                 ? KERN_SCAT_LAMBERTIAN
                                 : KERN_SCAT_BACKSCATTERING;
        t->mats[i].alpha_r = m->alpha_r;
        t->mats[i].alpha_i = m->alpha_i;
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
    t->geom.wavenumber = (float)(2.0 * KERN_PI / lambda);
    t->tri_verts = malloc((nt ? nt : 1) * 9 * sizeof *t->tri_verts);
    t->tri_nbr = malloc((nt ? nt : 1) * 3 * sizeof *t->tri_nbr);
    t->tri_edge = malloc((nt ? nt : 1) * 3 * sizeof *t->tri_edge);
    if (!t->tri_verts || !t->tri_nbr || !t->tri_edge) {
        kern_tracer_destroy(&t);
        return bf_fail(err, BF_ENOMEM, "tracer: out of memory");
    }
    for (size_t i = 0; i < nt; i++)
        for (int k = 0; k < 3; k++)
            memcpy(&t->tri_verts[9 * i + 3 * k],
                   &scene->vertices[3 * (size_t)scene->indices[3 * i + k]], 3 * sizeof(float));
    bf_err_t e = kern_edges_find(scene, t->normals, &t->edges, &t->geom.edge_count, t->tri_edge,
                                 t->tri_nbr, err);
    if (e != BF_OK) {
        kern_tracer_destroy(&t);
        return e;
    }
    t->geom.edges = t->edges;
    t->geom.tri_verts = t->tri_verts;
    t->geom.tri_nbr = t->tri_nbr;
    t->geom.tri_edge = t->tri_edge;
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
    int pol = tx->polarization == KERN_POL_H                   ? KERN_ANT_H
              : tx->polarization == KERN_POL_CROSS             ? KERN_ANT_CROSS
              : tx->polarization == KERN_POL_CROSS_INDEPENDENT ? KERN_ANT_CROSS_INDEPENDENT
                                                               : KERN_ANT_V;
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
/* A stage's progress as the backends' per-call callback sees it. */
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

/* What one run holds from stage to stage; run_clear frees it. */
typedef struct {
    const kern_boresight_opts_t *opts;
    kern_boresight_result_t *out; /* filled stage by stage */
    const kern_backend_t *be;
    stage_t stage; /* the running stage, for the backends' progress */
    kern_scene_t *scene;
    kern_tracer_t *tracer;
    void *ctx; /* the backend's, for this scene */
    kern_grid_t grid;
    size_t cells;          /* grid.nx * grid.ny */
    int32_t *zone_of_cell; /* per grid cell: its zone cell, or -1 */
    uint32_t zone_cells;
    /* One transmitter: crossing sums at the initial and optimized
       orientations, pw taking them to watts. Several: each cell's serving
       power [W] (pw's scale 1), the others' in imap0/imap1, each
       transmitter's sums in tmap0/tmap1 (its scale[i]). */
    double *map0, *map1;
    double *imap0, *imap1;
    size_t ntx;
    double *tmap0[KERN_MAX_TX], *tmap1[KERN_MAX_TX];
    double scale[KERN_MAX_TX];
    double noise_w;
    double *scratch;                    /* zone_cells doubles to sort */
    kern_zone_data_t zone[KERN_MAX_TX]; /* the zone crossings of each initial trace */
    kern_trace_setup_t ts[KERN_MAX_TX]; /* trace settings, at the initial orientation */
    kern_power_t pw;
} run_t;

static void run_clear(run_t *r)
{
    if (r->be)
        r->be->ctx_destroy(&r->ctx);
    kern_tracer_destroy(&r->tracer);
    kern_scene_destroy(&r->scene);
    for (size_t i = 0; i < KERN_MAX_TX; i++) {
        kern_zone_data_clear(&r->zone[i]);
        free(r->tmap0[i]);
        free(r->tmap1[i]);
    }
    free(r->zone_of_cell);
    free(r->map0);
    free(r->map1);
    free(r->imap0);
    free(r->imap1);
    free(r->scratch);
    memset(r, 0, sizeof *r);
}

static void report(run_t *r, const char *stage, double f)
{
    r->stage.stage = stage;
    if (r->stage.fn)
        r->stage.fn(r->stage.ud, stage, f);
}

/* BF_ECANCELED once the caller has asked to stop, checked between stages. */
static bf_err_t check_cancel(const run_t *r, char *err)
{
    return bf_flag_up(r->opts->cancel) ? bf_fail(err, BF_ECANCELED, "cancelled") : BF_OK;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

static kern_zone_stats_t stats_of(const double *dbm, size_t n, double *scratch)
{
    kern_zone_stats_t z = {0, 0, 0, 0};
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

/* The dBm of each zone cell of a map, in zone cell order. */
static void zone_dbm(const run_t *r, const double *map, double *dbm)
{
    for (size_t c = 0; c < r->cells; c++)
        if (r->zone_of_cell[c] >= 0)
            dbm[r->zone_of_cell[c]] = kern_sum_to_dbm(&r->pw, map[c]);
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

/* One thumbnail (kern_thumbnails_t): the blocks of fx x fy cells of map,
   averaged in linear power, in dBm; NAN where no ray reached a block. */
static void thumb_map(const kern_grid_t *g, const double *map, const kern_power_t *pw, uint32_t fx,
                      uint32_t fy, uint32_t tnx, uint32_t tny, double *dbm)
{
    for (uint32_t by = 0; by < tny; by++)
        for (uint32_t bx = 0; bx < tnx; bx++) {
            double sum = 0;
            size_t n = 0;
            for (uint32_t iy = by * fy; iy < (by + 1) * fy && iy < g->ny; iy++)
                for (uint32_t ix = bx * fx; ix < (bx + 1) * fx && ix < g->nx; ix++, n++)
                    sum += map[(size_t)iy * g->nx + ix];
            double p = n ? sum / (double)n * pw->scale : 0.0;
            dbm[(size_t)by * tnx + bx] = p > 0.0 && isfinite(p) ? 10.0 * log10(p) + 30.0 : NAN;
        }
}

/* The backend kind asks for; KERN_BACKEND_CPU touches no device. */
static bf_err_t pick_backend(kern_backend_kind_t kind, const kern_backend_t **be, char *err)
{
    *be = kern_backend_cpu();
    if (kind != KERN_BACKEND_AUTO && kind != KERN_BACKEND_CPU && kind != KERN_BACKEND_CUDA)
        return bf_fail(err, BF_EINVAL, "boresight: unknown backend %d", (int)kind);
    if (kind != KERN_BACKEND_CPU) {
        const kern_backend_t *gpu = kern_backend_cuda();
        if (gpu)
            *be = gpu;
        else if (kind == KERN_BACKEND_CUDA)
            return bf_fail(err, BF_EUNSUPP,
                           "boresight: no CUDA backend (not compiled in, or no usable device)");
    }
    return BF_OK;
}

/* Numbers the grid cells whose centre lies in the zone and allocates the
   maps and the zone arrays. */
static bf_err_t index_zone(run_t *r, const char *scene_dir, char *err)
{
    const kern_grid_t *g = &r->grid;
    r->cells = (size_t)g->nx * g->ny;
    r->zone_of_cell = malloc(r->cells * sizeof *r->zone_of_cell);
    r->map0 = malloc(r->cells * sizeof *r->map0);
    r->map1 = malloc(r->cells * sizeof *r->map1);
    if (!r->zone_of_cell || !r->map0 || !r->map1)
        return bf_fail(err, BF_ENOMEM, "boresight: out of memory for %zu cells", r->cells);
    r->ntx = r->scene->tx_count;
    if (r->ntx > 1) {
        r->imap0 = malloc(r->cells * sizeof *r->imap0);
        r->imap1 = malloc(r->cells * sizeof *r->imap1);
        if (!r->imap0 || !r->imap1)
            return bf_fail(err, BF_ENOMEM, "boresight: out of memory for %zu cells", r->cells);
        for (size_t i = 0; i < r->ntx; i++) {
            r->tmap0[i] = malloc(r->cells * sizeof *r->tmap0[i]);
            r->tmap1[i] = malloc(r->cells * sizeof *r->tmap1[i]);
            if (!r->tmap0[i] || !r->tmap1[i])
                return bf_fail(err, BF_ENOMEM, "boresight: out of memory for %zu cells", r->cells);
        }
    }
    uint32_t zcells = 0;
    for (uint32_t iy = 0; iy < g->ny; iy++)
        for (uint32_t ix = 0; ix < g->nx; ix++) {
            double x = (double)g->x0 + (ix + 0.5) * (double)g->dx;
            double y = (double)g->y0 + (iy + 0.5) * (double)g->dy;
            r->zone_of_cell[(size_t)iy * g->nx + ix] =
                kern_scene_in_zone(r->scene, x, y) ? (int32_t)zcells++ : -1;
        }
    if (zcells == 0)
        return bf_fail(err, BF_EINVAL, "%s: the zone contains no measurement cell centre",
                       scene_dir);
    r->zone_cells = zcells;
    r->out->zone_cells = zcells;
    r->out->zone_initial = malloc(zcells * sizeof *r->out->zone_initial);
    r->out->zone_optimized = malloc(zcells * sizeof *r->out->zone_optimized);
    r->scratch = malloc(zcells * sizeof *r->scratch);
    r->out->has_sinr = r->ntx > 1 || r->opts->optimizer.objective == BF_OBJ_MEAN_SINR_DB ||
                       r->opts->optimizer.objective == BF_OBJ_SINR_COVERAGE;
    if (r->out->has_sinr) {
        r->out->zone_sinr_initial = malloc(zcells * sizeof *r->out->zone_sinr_initial);
        r->out->zone_sinr_optimized = malloc(zcells * sizeof *r->out->zone_sinr_optimized);
        if (!r->out->zone_sinr_initial || !r->out->zone_sinr_optimized)
            return bf_fail(err, BF_ENOMEM, "boresight: out of memory");
    }
    if (!r->out->zone_initial || !r->out->zone_optimized || !r->scratch)
        return bf_fail(err, BF_ENOMEM, "boresight: out of memory");
    return BF_OK;
}

/* Stage "load": the scene, its grid and zone cells, the tracer and the
   backend's context (the CPU's under KERN_BACKEND_AUTO when the device's
   cannot be made). */
static bf_err_t load(run_t *r, const char *scene_dir, char *err)
{
    const kern_boresight_opts_t *o = r->opts;
    double t0 = bf_mono_s();
    report(r, "load", 0.0);
    bf_err_t e = kern_scene_load(scene_dir, &r->scene, err);
    if (e != BF_OK)
        return e == BF_ENOMEM || e == BF_ECANCELED ? e : BF_EINVAL;
    e = kern_grid_make(r->scene, &o->measurement, o->solver.samples_per_tx, &r->grid, err);
    if (e == BF_OK)
        e = index_zone(r, scene_dir, err);
    if (e == BF_OK)
        e = kern_tracer_new(r->scene, o->threads, &r->tracer, err);
    if (e != BF_OK)
        return e;
    e = r->be->ctx_new(kern_tracer_geom(r->tracer), o->threads, &r->ctx, err);
    if (e != BF_OK && o->backend == KERN_BACKEND_AUTO && r->be != kern_backend_cpu()) {
        r->be = kern_backend_cpu(); /* auto: no usable device, run on the CPU */
        e = r->be->ctx_new(kern_tracer_geom(r->tracer), o->threads, &r->ctx, err);
    }
    if (e != BF_OK)
        return e;
    r->out->solver.backend = r->be->name;
    r->out->timings.load = bf_mono_s() - t0;
    report(r, "load", 1.0);
    return check_cancel(r, err);
}

/* Watts per sum of transmitter tx: P_tx (lambda / 4 pi)^2 over the cell area. */
static double scale_of(const run_t *r, const kern_tx_t *tx)
{
    double lambda = SPEED_OF_LIGHT / r->scene->frequency_hz;
    return pow(10.0, (tx->power_dbm - 30.0) / 10.0) * (lambda / (4 * KERN_PI)) *
           (lambda / (4 * KERN_PI)) / ((double)r->grid.dx * r->grid.dy);
}

/* Several transmitters: each cell's serving power and the sum of the
   others' [W] from each one's sums (tmap) (kern_optimize.c's rule: the
   strongest serves, the first of equals). */
static void combine_maps(const run_t *r, double *const *tmap, double *serving, double *interf)
{
    const kern_tx_t *tx = r->scene->txs;
    for (size_t c = 0; c < r->cells; c++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < r->ntx; i++)
            if (tx[i].serves &&
                (best == SIZE_MAX || tmap[i][c] * r->scale[i] > tmap[best][c] * r->scale[best]))
                best = i;
        double rest = 0.0;
        for (size_t i = 0; i < r->ntx; i++)
            if (i != best)
                rest += tmap[i][c] * r->scale[i];
        serving[c] = best == SIZE_MAX ? 0.0 : tmap[best][c] * r->scale[best];
        interf[c] = rest;
    }
}

/* SINR [dB] of each zone cell, in zone cell order. */
static void zone_sinr(const run_t *r, const double *map, const double *imap, double *sinr)
{
    for (size_t c = 0; c < r->cells; c++)
        if (r->zone_of_cell[c] >= 0)
            sinr[r->zone_of_cell[c]] = imap ? kern_sinr_db(map[c], imap[c], r->noise_w)
                                            : kern_sinr_db(map[c] * r->pw.scale, 0.0, r->noise_w);
}

/* Stage "trace": one trace per transmitter at its initial orientation,
   recording the zone crossings, and the initial zone's dBm and
   statistics. */
static bf_err_t trace_initial(run_t *r, char *err)
{
    const kern_boresight_opts_t *o = r->opts;
    kern_boresight_result_t *out = r->out;
    double t0 = bf_mono_s();
    report(r, "trace", 0.0);
    out->solver.crossings = 0;
    out->solver.zone_crossings = 0;
    for (size_t i = 0; i < r->ntx; i++) {
        const kern_tx_t *tx = &r->scene->txs[i];
        kern_trace_setup_t *ts = &r->ts[i];
        memset(ts, 0, sizeof *ts);
        ts->rays = o->solver.samples_per_tx;
        ts->max_depth = o->solver.max_depth;
        ts->los = o->solver.los;
        ts->reflection = o->solver.specular_reflection;
        ts->refraction = o->solver.refraction;
        ts->diffuse_reflection = o->solver.diffuse_reflection;
        ts->diffraction = o->solver.diffraction;
        ts->edge_diffraction = o->solver.edge_diffraction;
        ts->diffraction_model = o->solver.diffraction_model == BF_DIFFRACTION_LUEBBERS
                                    ? KERN_UTD_LUEBBERS
                                    : KERN_UTD_SIONNA;
        ts->surface_offset =
            o->solver.surface_offset == BF_OFFSET_TIGHT ? KERN_OFFSET_TIGHT : KERN_OFFSET_SIONNA;
        ts->seed = o->solver.seed;
        ts->tx = v3((float)tx->position[0], (float)tx->position[1], (float)tx->position[2]);
        ts->antenna = kern_antenna_from_tx(tx);
        ts->rot = kern_rotation(tx->azimuth_deg, tx->tilt_deg, tx->roll_deg);
        ts->grid = r->grid;
        ts->zone_of_cell = r->zone_of_cell;
        ts->zone_cells = r->zone_cells;
        ts->cancel = o->cancel;
        ts->progress = stage_progress;
        ts->progress_ud = &r->stage;
        kern_trace_out_t to = {r->ntx > 1 ? r->tmap0[i] : r->map0, 0, &r->zone[i]};
        bf_err_t e = r->be->trace(r->ctx, ts, &to, err);
        if (e != BF_OK)
            return e;
        out->solver.crossings += to.crossings;
        out->solver.zone_crossings += r->zone[i].count;
        r->scale[i] = scale_of(r, tx);
        out->txs[i].movable = tx->movable;
        out->txs[i].serves = tx->serves;
        bf_strlcpy(out->txs[i].name, tx->name, sizeof out->txs[i].name);
        out->txs[i].initial = (kern_orient_t){tx->azimuth_deg, tx->tilt_deg};
    }
    out->tx_count = r->ntx;
    out->timings.trace = bf_mono_s() - t0;
    out->solver.rays = o->solver.samples_per_tx;
    out->solver.max_depth = o->solver.max_depth;
    out->solver.seed = o->solver.seed;

    r->pw.scale = r->ntx > 1 ? 1.0 : r->scale[0];
    r->pw.floor_dbm = o->solver.floor_dbm;
    r->noise_w = kern_noise_w(&o->solver);
    out->noise_dbm = 10.0 * log10(r->noise_w) + 30.0;
    if (r->ntx > 1)
        combine_maps(r, r->tmap0, r->map0, r->imap0);
    zone_dbm(r, r->map0, out->zone_initial);
    out->initial = stats_of(out->zone_initial, r->zone_cells, r->scratch);
    if (out->has_sinr) {
        zone_sinr(r, r->map0, r->imap0, out->zone_sinr_initial);
        out->sinr_initial = stats_of(out->zone_sinr_initial, r->zone_cells, r->scratch);
    }
    return check_cancel(r, err);
}

/* Validation of the initial zone (DESIGN section 3); reason is empty on pass. */
static bool validate(const bf_validation_t *v, const kern_zone_stats_t *z, char *reason, size_t cap)
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

/* Stage "optimize": the search over azimuth x tilt, exact from the recorded
   crossings. The initial orientation stays unless the search beats it. */
static bf_err_t optimize(run_t *r, char *err)
{
    const kern_boresight_opts_t *o = r->opts;
    kern_boresight_result_t *out = r->out;
    double t0 = bf_mono_s();
    kern_orient_t init = {r->scene->tx.azimuth_deg, r->scene->tx.tilt_deg};
    report(r, "optimize", 0.0);
    kern_search_t search;
    memset(&search, 0, sizeof search);
    search.backend = r->be;
    search.ctx = r->ctx;
    search.zone = &r->zone[0];
    search.antenna = r->ts[0].antenna;
    search.roll_deg = r->scene->tx.roll_deg;
    search.power = r->pw;
    search.optimizer = &o->optimizer;
    search.noise_w = r->noise_w;
    search.cancel = o->cancel;
    search.progress = stage_progress;
    search.progress_ud = &r->stage;
    double obj0 = 0.0;
    uint64_t evals0 = 0;
    bf_err_t e = kern_evaluate_orients(&search, &init, 1, &obj0, &evals0, err);
    if (e != BF_OK)
        return e;
    kern_search_result_t found;
    e = kern_search(&search, &found, err);
    if (e != BF_OK)
        return e;
    bool better = found.objective > obj0;
    out->boresight_initial = init;
    out->boresight_optimized = better ? found.best : init;
    out->objective = better ? found.objective : obj0;
    out->evaluations = found.evaluations + evals0;
    out->txs[0].optimized = out->boresight_optimized;
    out->on_bound = out->txs[0].on_bound = kern_on_bound(&o->optimizer, out->boresight_optimized);
    out->timings.optimize = bf_mono_s() - t0;
    return check_cancel(r, err);
}

/* Stage "optimize" with several transmitters: the joint search over the
   movable ones (kern_joint_search), each exact from its own crossings. The
   initial setting stays unless the search beats it. */
static bf_err_t optimize_joint(run_t *r, char *err)
{
    const kern_boresight_opts_t *o = r->opts;
    kern_boresight_result_t *out = r->out;
    double t0 = bf_mono_s();
    report(r, "optimize", 0.0);
    kern_antenna_t ant[KERN_MAX_TX];
    double roll[KERN_MAX_TX];
    bool movable[KERN_MAX_TX], serves[KERN_MAX_TX];
    kern_orient_t init[KERN_MAX_TX];
    for (size_t i = 0; i < r->ntx; i++) {
        ant[i] = r->ts[i].antenna;
        roll[i] = r->scene->txs[i].roll_deg;
        movable[i] = r->scene->txs[i].movable;
        serves[i] = r->scene->txs[i].serves;
        init[i] = out->txs[i].initial;
    }
    kern_joint_t j;
    memset(&j, 0, sizeof j);
    j.backend = r->be;
    j.ctx = r->ctx;
    j.count = r->ntx;
    j.zones = r->zone;
    j.antennas = ant;
    j.roll_deg = roll;
    j.scale = r->scale;
    j.movable = movable;
    j.serves = serves;
    j.floor_dbm = o->solver.floor_dbm;
    j.noise_w = r->noise_w;
    j.optimizer = &o->optimizer;
    j.cancel = o->cancel;
    j.progress = stage_progress;
    j.progress_ud = &r->stage;
    double obj0 = 0.0;
    uint64_t evals0 = 0;
    bf_err_t e = kern_joint_objective(&j, init, &obj0, &evals0, err);
    kern_joint_result_t found;
    if (e == BF_OK)
        e = kern_joint_search(&j, init, &found, err);
    if (e != BF_OK)
        return e;
    bool better = found.objective > obj0;
    for (size_t i = 0; i < r->ntx; i++) {
        out->txs[i].optimized = better ? found.best[i] : init[i];
        out->txs[i].on_bound =
            r->scene->txs[i].movable ? kern_on_bound(&o->optimizer, out->txs[i].optimized) : 0;
    }
    out->boresight_initial = init[0];
    out->boresight_optimized = out->txs[0].optimized;
    out->on_bound = out->txs[0].on_bound;
    out->objective = better ? found.objective : obj0;
    out->evaluations = found.evaluations + evals0;
    out->timings.optimize = bf_mono_s() - t0;
    return check_cancel(r, err);
}

/* Stage "maps": the full map at the optimum (a re-trace: the paths are the
   same, only the antenna field changes), the optimized zone's dBm and
   statistics, and the CSV files when asked for. */
static bf_err_t final_maps(run_t *r, char *err)
{
    const kern_boresight_opts_t *o = r->opts;
    kern_boresight_result_t *out = r->out;
    kern_orient_t best = out->boresight_optimized, init = out->boresight_initial;
    double t0 = bf_mono_s();
    report(r, "maps", 0.0);
    for (size_t i = 0; i < r->ntx; i++) {
        double *m0 = r->ntx > 1 ? r->tmap0[i] : r->map0, *m1 = r->ntx > 1 ? r->tmap1[i] : r->map1;
        best = out->txs[i].optimized;
        init = out->txs[i].initial;
        if (best.azimuth_deg == init.azimuth_deg && best.tilt_deg == init.tilt_deg) {
            memcpy(m1, m0, r->cells * sizeof *m1);
        } else {
            r->ts[i].rot =
                kern_rotation(best.azimuth_deg, best.tilt_deg, r->scene->txs[i].roll_deg);
            r->ts[i].zone_of_cell = NULL;
            kern_trace_out_t t1 = {m1, 0, NULL};
            bf_err_t e = r->be->trace(r->ctx, &r->ts[i], &t1, err);
            if (e != BF_OK)
                return e;
        }
    }
    if (r->ntx > 1)
        combine_maps(r, r->tmap1, r->map1, r->imap1);
    zone_dbm(r, r->map1, out->zone_optimized);
    out->optimized = stats_of(out->zone_optimized, r->zone_cells, r->scratch);
    if (out->has_sinr) {
        zone_sinr(r, r->map1, r->imap1, out->zone_sinr_optimized);
        out->sinr_optimized = stats_of(out->zone_sinr_optimized, r->zone_cells, r->scratch);
    }
    if (o->maps_dir) {
        bf_err_t e = write_map(o->maps_dir, "initial.csv", &r->grid, r->map0, &r->pw, err);
        if (e == BF_OK)
            e = write_map(o->maps_dir, "optimized.csv", &r->grid, r->map1, &r->pw, err);
        if (e != BF_OK)
            return e;
    }
    out->timings.maps = bf_mono_s() - t0;
    report(r, "maps", 1.0);
    return BF_OK;
}

/* Both maps reduced to at most KERN_THUMB_MAX blocks per axis. */
static bf_err_t thumbnails(run_t *r, char *err)
{
    const kern_grid_t *g = &r->grid;
    kern_thumbnails_t *t = &r->out->thumbnails;
    uint32_t fx = (g->nx + KERN_THUMB_MAX - 1) / KERN_THUMB_MAX;
    uint32_t fy = (g->ny + KERN_THUMB_MAX - 1) / KERN_THUMB_MAX;
    t->nx = (g->nx + fx - 1) / fx;
    t->ny = (g->ny + fy - 1) / fy;
    t->x0 = (double)g->x0;
    t->y0 = (double)g->y0;
    t->dx = (double)g->dx * fx;
    t->dy = (double)g->dy * fy;
    size_t n = (size_t)t->nx * t->ny;
    t->initial = malloc(n * sizeof *t->initial);
    t->optimized = malloc(n * sizeof *t->optimized);
    if (!t->initial || !t->optimized)
        return bf_fail(err, BF_ENOMEM, "boresight: out of memory for the thumbnails");
    thumb_map(g, r->map0, &r->pw, fx, fy, t->nx, t->ny, t->initial);
    thumb_map(g, r->map1, &r->pw, fx, fy, t->nx, t->ny, t->optimized);
    return BF_OK;
}

bf_err_t kern_boresight(const char *scene_dir, const kern_boresight_opts_t *opts,
                        kern_boresight_result_t *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (!scene_dir || !opts)
        return bf_fail(err, BF_EINVAL, "boresight: no scene or options");
    run_t r;
    memset(&r, 0, sizeof r);
    r.opts = opts;
    r.out = out;
    r.stage = (stage_t){opts->progress, opts->progress_ud, "load"};

    bf_err_t e = pick_backend(opts->backend, &r.be, err);
    if (e == BF_OK)
        e = load(&r, scene_dir, err);
    if (e == BF_OK)
        e = trace_initial(&r, err);
    if (e == BF_OK)
        out->valid = validate(&opts->validation, &out->initial, out->reason, sizeof out->reason);
    if (e == BF_OK)
        e = r.ntx > 1 ? optimize_joint(&r, err) : optimize(&r, err);
    if (e == BF_OK)
        e = final_maps(&r, err);
    if (e == BF_OK)
        e = thumbnails(&r, err);

    if (e == BF_ECANCELED && err && !err[0])
        bf_fail(err, BF_ECANCELED, "cancelled");
    run_clear(&r);
    if (e != BF_OK)
        kern_boresight_result_clear(out);
    return e;
}

void kern_boresight_result_clear(kern_boresight_result_t *result)
{
    if (!result)
        return;
    free(result->zone_initial);
    free(result->zone_optimized);
    free(result->zone_sinr_initial);
    free(result->zone_sinr_optimized);
    free(result->thumbnails.initial);
    free(result->thumbnails.optimized);
    memset(result, 0, sizeof *result);
}
