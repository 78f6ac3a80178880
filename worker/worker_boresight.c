/*  worker/worker_boresight.c - the boresight task: the radio engine
    (kernels/kern.h, kern_boresight) on the worker's device, the CUDA backend
    on a GPU worker and the CPU backend on a CPU worker, with the engine's
    stages (load, trace, optimize, maps) passed on as progress so `beamfleet
    status` shows where each task is. The engine takes plain settings and
    returns a plain result; the job's side (worker_boresight_opts) and the
    wire's side (worker_boresight_json, the RESULT document of
    docs/protocol.md section 13) are here, where `beamfleet solve` uses them
    too, so a fleet result and a solve result cannot drift apart. */

#include "worker.h"

#include "../kernels/kern.h"

#include <math.h>
#include <string.h>

void worker_boresight_opts(const bf_job_t *job, kern_boresight_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->solver = job->solver;
    opts->measurement = job->measurement;
    opts->optimizer = job->optimizer;
    opts->validation = job->validation;
    opts->backend = KERN_BACKEND_AUTO;
}

/* dBm per zone cell; NULL out of memory. */
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

/* A thumbnail's blocks: dBm to 0.1 dB (enough for a picture, a tenth of
   the size), null for a block no ray reached (NAN). NULL out of memory. */
static json_t *thumb_array(const double *dbm, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *v = isfinite(dbm[i]) ? json_real(round(dbm[i] * 10.0) / 10.0) : json_null();
        if (json_array_append_new(a, v) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *stats_json(const kern_boresight_result_t *r)
{
    const kern_zone_stats_t *a = &r->initial, *b = &r->optimized;
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "zone_cells",
                     (json_int_t)r->zone_cells, "initial_mean", a->mean, "initial_median",
                     a->median, "initial_p10", a->p10, "initial_p90", a->p90, "optimized_mean",
                     b->mean, "optimized_median", b->median, "optimized_p10", b->p10,
                     "optimized_p90", b->p90, "improvement_mean", b->mean - a->mean);
}

static json_t *thumbnails_json(const kern_thumbnails_t *t)
{
    size_t n = (size_t)t->nx * t->ny;
    json_t *a = thumb_array(t->initial, n);
    json_t *b = a ? thumb_array(t->optimized, n) : NULL;
    if (!b) {
        json_decref(a);
        return NULL;
    }
    return json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:o, s:o}", "nx", (json_int_t)t->nx, "ny",
                     (json_int_t)t->ny, "x0", t->x0, "y0", t->y0, "dx", t->dx, "dy", t->dy,
                     "initial", a, "optimized", b);
}

/* An orientation for output, to 0.01 deg: the search's final step is
   0.1 deg, and a computed -2.8e-16 is meant as 0 (+ 0.0 drops the sign of a
   rounded -0). docs/radio.md. */
static double deg_out(double deg)
{
    return round(deg * 100.0) / 100.0 + 0.0;
}

/* The names of the bounds in mask (KERN_BOUND_*) as a JSON list, [] for
   none (docs/protocol.md section 13). NULL out of memory. */
static json_t *bounds_json(unsigned mask)
{
    json_t *a = json_array();
    for (unsigned i = 0; a && i < 4; i++)
        if ((mask & (1u << i)) && json_array_append_new(a, json_string(kern_bound_name(i))) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Every transmitter's orientations, in scene.yaml order. NULL out of memory. */
static json_t *transmitters_json(const kern_boresight_result_t *r)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->tx_count; i++) {
        const kern_orient_t *p = &r->txs[i].initial, *q = &r->txs[i].optimized;
        json_t *t =
            json_pack("{s:s, s:b, s:b, s:{s:f, s:f}, s:{s:f, s:f}, s:o}", "name", r->txs[i].name,
                      "movable", r->txs[i].movable, "serves", r->txs[i].serves, "initial",
                      "azimuth_deg", deg_out(p->azimuth_deg), "tilt_deg", deg_out(p->tilt_deg),
                      "optimized", "azimuth_deg", deg_out(q->azimuth_deg), "tilt_deg",
                      deg_out(q->tilt_deg), "optimum_on_bound", bounds_json(r->txs[i].on_bound));
        if (json_array_append_new(a, t) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* What several transmitters or a SINR objective add (docs/protocol.md
   section 13): the transmitters, SINR per zone cell, its statistics in
   stats, the noise power. A single transmitter's result without SINR is
   left as it was. */
static json_t *add_multi(json_t *doc, const kern_boresight_result_t *r)
{
    if (!doc)
        return NULL;
    bool ok = true;
    if (r->tx_count > 1)
        ok = json_object_set_new(doc, "transmitters", transmitters_json(r)) == 0;
    if (ok && r->has_sinr) {
        const kern_zone_stats_t *a = &r->sinr_initial, *b = &r->sinr_optimized;
        json_t *stats = json_object_get(doc, "stats");
        ok = json_object_set_new(doc, "sinr_initial",
                                 dbm_array(r->zone_sinr_initial, r->zone_cells)) == 0 &&
             json_object_set_new(doc, "sinr_optimized",
                                 dbm_array(r->zone_sinr_optimized, r->zone_cells)) == 0 &&
             json_object_set_new(doc, "noise_dbm", json_real(r->noise_dbm)) == 0 &&
             json_object_set_new(stats, "initial_sinr_mean", json_real(a->mean)) == 0 &&
             json_object_set_new(stats, "initial_sinr_median", json_real(a->median)) == 0 &&
             json_object_set_new(stats, "initial_sinr_p10", json_real(a->p10)) == 0 &&
             json_object_set_new(stats, "initial_sinr_p90", json_real(a->p90)) == 0 &&
             json_object_set_new(stats, "optimized_sinr_mean", json_real(b->mean)) == 0 &&
             json_object_set_new(stats, "optimized_sinr_median", json_real(b->median)) == 0 &&
             json_object_set_new(stats, "optimized_sinr_p10", json_real(b->p10)) == 0 &&
             json_object_set_new(stats, "optimized_sinr_p90", json_real(b->p90)) == 0;
    }
    if (!ok) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

json_t *worker_boresight_json(const kern_boresight_result_t *r)
{
    /* json_pack takes each "o" (NULL included: it then fails and frees the
       rest), so a sub-document that could not be built fails the whole */
    return add_multi(
        json_pack(
            "{s:s, s:s, s:o, s:o, s:o, s:{s:f, s:f}, s:{s:f, s:f}, s:{s:f, s:f, s:f, s:f}, "
            "s:{s:I, s:I, s:I, s:I, s:I, s:s}, s:I, s:f, s:o, s:o}",
            "status", r->valid ? "success" : "failed", "reason", r->reason, "zone_power_initial",
            dbm_array(r->zone_initial, r->zone_cells), "zone_power_optimized",
            dbm_array(r->zone_optimized, r->zone_cells), "stats", stats_json(r),
            "boresight_initial", "azimuth_deg", deg_out(r->boresight_initial.azimuth_deg),
            "tilt_deg", deg_out(r->boresight_initial.tilt_deg), "boresight_optimized",
            "azimuth_deg", deg_out(r->boresight_optimized.azimuth_deg), "tilt_deg",
            deg_out(r->boresight_optimized.tilt_deg), "timings", "load", r->timings.load, "trace",
            r->timings.trace, "optimize", r->timings.optimize, "maps", r->timings.maps, "solver",
            "rays", (json_int_t)r->solver.rays, "crossings", (json_int_t)r->solver.crossings,
            "zone_crossings", (json_int_t)r->solver.zone_crossings, "max_depth",
            (json_int_t)r->solver.max_depth, "seed", (json_int_t)r->solver.seed, "backend",
            r->solver.backend ? r->solver.backend : "", "evaluations", (json_int_t)r->evaluations,
            "objective", r->objective, "thumbnails", thumbnails_json(&r->thumbnails),
            "optimum_on_bound", bounds_json(r->on_bound)),
        r);
}

bf_err_t worker_boresight(worker_task_ctx_t *ctx, json_t **result, char *err)
{
    *result = NULL;
    if (!ctx->job)
        return bf_fail(err, BF_EINVAL, "boresight: no scene or job");
    kern_boresight_opts_t opts;
    worker_boresight_opts(ctx->job, &opts);
    bool gpu = ctx->dev && !strcmp(ctx->dev->backend, "cuda");
    opts.backend = gpu ? KERN_BACKEND_CUDA : KERN_BACKEND_CPU;
    opts.threads = ctx->threads;
    opts.cancel = ctx->cancel;
    opts.progress = ctx->progress;
    opts.progress_ud = ctx->ud;
    kern_boresight_result_t found;
    bf_err_t e = kern_boresight(ctx->scene_dir, &opts, &found, err);
    if (e != BF_OK)
        return e;
    *result = worker_boresight_json(&found);
    kern_boresight_result_clear(&found);
    if (!*result)
        return bf_fail(err, BF_ENOMEM, "boresight: cannot build the result document");
    worker_sionna_check(ctx, *result);
    return BF_OK;
}
