/*  kernels/kern_optimize.c - the orientation search of DESIGN 6.5: turns
    the zone-cell sums a backend evaluates (exactly, from the crossings of
    one trace) into dBm and an objective, and searches azimuth x tilt with a
    coarse grid followed by a pattern search whose step halves down to
    0.1 deg, started from the best few coarse points. Orientations are sent
    to the backend in batches so that it can parallelize across them.
    Several transmitters (sectors): each has the crossings of its own trace;
    a cell is served by the strongest, the others interfere (SINR with
    thermal noise, as Sionna RT's RadioMap), and the joint search moves one
    sector at a time with the others fixed, in rounds (docs/radio.md). */

#include "kern.h"

#include <stdlib.h>
#include <string.h>

#define MAX_BATCH   1024
#define BATCH_BYTES (64u << 20)

double kern_sum_to_dbm(const kern_power_t *pw, double sum)
{
    double p = sum * pw->scale;
    if (!(p > 0.0))
        return pw->floor_dbm;
    return 10.0 * log10(p) + 30.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

double kern_objective(const double *sums, size_t n, const kern_power_t *pw, bf_objective_t obj,
                      double coverage_dbm, double *scratch)
{
    if (n == 0)
        return -INFINITY;
    double acc = 0.0;
    switch (obj) {
    case BF_OBJ_P10_DBM:
        for (size_t i = 0; i < n; i++)
            scratch[i] = kern_sum_to_dbm(pw, sums[i]);
        qsort(scratch, n, sizeof *scratch, cmp_double);
        return bf_percentile(scratch, n, 10.0);
    case BF_OBJ_MEAN_LINEAR:
        for (size_t i = 0; i < n; i++)
            acc += pow(10.0, kern_sum_to_dbm(pw, sums[i]) / 10.0);
        return 10.0 * log10(acc / (double)n);
    case BF_OBJ_COVERAGE:
        for (size_t i = 0; i < n; i++)
            acc += kern_sum_to_dbm(pw, sums[i]) >= coverage_dbm ? 1.0 : 0.0;
        return acc / (double)n;
    case BF_OBJ_MEAN_DBM:
    default:
        for (size_t i = 0; i < n; i++)
            acc += kern_sum_to_dbm(pw, sums[i]);
        return acc / (double)n;
    }
}

#define BOLTZMANN 1.380649e-23
#define NOISE_T   290.0

double kern_noise_w(const bf_solver_t *solver)
{
    return BOLTZMANN * NOISE_T * solver->bandwidth_hz * pow(10.0, solver->noise_figure_db / 10.0);
}

double kern_sinr_db(double serving_w, double interference_w, double noise_w)
{
    if (!(serving_w > 0.0))
        return KERN_SINR_FLOOR_DB;
    double d = interference_w + noise_w;
    if (!(d > 0.0))
        return -KERN_SINR_FLOOR_DB;
    return 10.0 * log10(serving_w / d);
}

static bool sinr_objective(bf_objective_t o)
{
    return o == BF_OBJ_MEAN_SINR_DB || o == BF_OBJ_SINR_COVERAGE;
}

double kern_objective_w(const double *serving_w, const double *interference_w, size_t n,
                        double floor_dbm, double noise_w, const bf_optimizer_t *op, double *scratch)
{
    if (n == 0)
        return -INFINITY;
    double acc = 0.0;
    switch (op->objective) {
    case BF_OBJ_MEAN_SINR_DB:
        for (size_t i = 0; i < n; i++)
            acc += kern_sinr_db(serving_w[i], interference_w[i], noise_w);
        return acc / (double)n;
    case BF_OBJ_SINR_COVERAGE:
        for (size_t i = 0; i < n; i++)
            acc +=
                kern_sinr_db(serving_w[i], interference_w[i], noise_w) >= op->sinr_db ? 1.0 : 0.0;
        return acc / (double)n;
    default: {
        /* watts are sums at scale 1: the same bits as kern_objective's */
        kern_power_t unit = {1.0, floor_dbm};
        return kern_objective(serving_w, n, &unit, op->objective, op->coverage_dbm, scratch);
    }
    }
}

/* Serving and interfering power of each zone cell when this transmitter
   gives own (sums, times scale) and the fixed others their strongest m
   (of those that may serve) and the rest; ties serve this one. One that
   only interferes never serves. */
static void combine(const kern_search_t *s, const double *sums, size_t n, double *serving,
                    double *interf)
{
    for (size_t c = 0; c < n; c++) {
        double own = sums[c] * s->power.scale;
        if (!s->others_max_w) {
            serving[c] = s->interferes_only ? 0.0 : own;
            interf[c] = s->interferes_only ? own : 0.0;
        } else if (!s->interferes_only && own >= s->others_max_w[c]) {
            serving[c] = own;
            interf[c] = s->others_max_w[c] + s->others_rest_w[c];
        } else {
            serving[c] = s->others_max_w[c];
            interf[c] = own + s->others_rest_w[c];
        }
    }
}

bf_err_t kern_evaluate_orients(const kern_search_t *s, const kern_orient_t *o, size_t count,
                               double *obj, uint64_t *evaluations, char *err)
{
    bool multi = s->others_max_w || sinr_objective(s->optimizer->objective);
    size_t zc = s->zone->zone_cells ? s->zone->zone_cells : 1;
    size_t batch = BATCH_BYTES / (zc * sizeof(double));
    if (batch < 1)
        batch = 1;
    if (batch > MAX_BATCH)
        batch = MAX_BATCH;
    if (batch > count)
        batch = count ? count : 1;
    double *sums = malloc(batch * zc * sizeof *sums);
    double *scratch = malloc(zc * sizeof *scratch);
    double *serving = multi ? malloc(zc * sizeof *serving) : NULL;
    double *interf = multi ? malloc(zc * sizeof *interf) : NULL;
    kern_rot_t *rots = malloc(batch * sizeof *rots);
    bf_err_t e = BF_OK;
    if (!sums || !scratch || !rots || (multi && (!serving || !interf))) {
        e = bf_fail(err, BF_ENOMEM, "optimize: out of memory");
        goto done;
    }
    for (size_t at = 0; at < count; at += batch) {
        size_t n = count - at < batch ? count - at : batch;
        for (size_t i = 0; i < n; i++)
            rots[i] = kern_rotation(o[at + i].azimuth_deg, o[at + i].tilt_deg, s->roll_deg);
        e = s->backend->evaluate(s->ctx, s->zone, &s->antenna, rots, n, sums, s->cancel, err);
        if (e != BF_OK)
            goto done;
        for (size_t i = 0; i < n; i++) {
            if (!multi) {
                obj[at + i] =
                    kern_objective(sums + i * zc, s->zone->zone_cells, &s->power,
                                   s->optimizer->objective, s->optimizer->coverage_dbm, scratch);
                continue;
            }
            combine(s, sums + i * zc, s->zone->zone_cells, serving, interf);
            obj[at + i] = kern_objective_w(serving, interf, s->zone->zone_cells, s->power.floor_dbm,
                                           s->noise_w, s->optimizer, scratch);
        }
        if (evaluations)
            *evaluations += n;
    }
done:
    free(sums);
    free(scratch);
    free(serving);
    free(interf);
    free(rots);
    return e;
}

/* Values lo, lo+step, ... within [lo, hi], plus hi itself; a full circle of
   azimuth leaves out the duplicate of lo. Returns the count (<= cap). */
static size_t axis_values(double lo, double hi, double step, int circle, double *out, size_t cap)
{
    size_t n = 0;
    double end = circle ? lo + 360.0 - 1e-9 : hi + 1e-9;
    for (size_t k = 0; n < cap; k++) {
        double v = lo + (double)k * step;
        if (v > end)
            break;
        out[n++] = v;
    }
    if (!circle && n > 0 && n < cap && out[n - 1] < hi - 1e-9)
        out[n++] = hi;
    return n;
}

typedef struct {
    kern_orient_t at;
    double value, step_a, step_t;
    int done;
} walker_t;

static double wrap_az(double a, double lo)
{
    double r = fmod(a - lo, 360.0);
    if (r < 0.0)
        r += 360.0;
    return lo + r;
}

unsigned kern_on_bound(const bf_optimizer_t *op, kern_orient_t o)
{
    /* the search clamps its steps to the ranges, so an optimum held there
       is the bound itself; 1e-9 deg forgives a range given in a decimal
       the search reached by halving */
    const double eps = 1e-9;
    unsigned m = 0;
    if (op->azimuth_deg[1] - op->azimuth_deg[0] < 360.0 - 1e-9) {
        if (fabs(o.azimuth_deg - op->azimuth_deg[0]) <= eps)
            m |= KERN_BOUND_AZIMUTH_MIN;
        if (fabs(o.azimuth_deg - op->azimuth_deg[1]) <= eps)
            m |= KERN_BOUND_AZIMUTH_MAX;
    }
    if (fabs(o.tilt_deg - op->tilt_deg[0]) <= eps)
        m |= KERN_BOUND_TILT_MIN;
    if (fabs(o.tilt_deg - op->tilt_deg[1]) <= eps)
        m |= KERN_BOUND_TILT_MAX;
    return m;
}

const char *kern_bound_name(unsigned i)
{
    static const char *const names[] = {"azimuth_min", "azimuth_max", "tilt_min", "tilt_max"};
    return i < 4 ? names[i] : "?";
}

bf_err_t kern_search(const kern_search_t *s, kern_search_result_t *out, char *err)
{
    const bf_optimizer_t *op = s->optimizer;
    double a0 = op->azimuth_deg[0], a1 = op->azimuth_deg[1];
    double t0 = op->tilt_deg[0], t1 = op->tilt_deg[1];
    if (!(a1 >= a0) || !(t1 >= t0))
        return bf_fail(err, BF_EINVAL, "optimizer: empty azimuth or tilt range");
    int circle = a1 - a0 >= 360.0 - 1e-9;
    double cas = s->coarse_az_step > 0 ? s->coarse_az_step : 10.0;
    double cts = s->coarse_tilt_step > 0 ? s->coarse_tilt_step : 5.0;
    double fin = s->final_step > 0 ? s->final_step : 0.1;
    unsigned starts = s->starts ? s->starts : 3;
    if (starts > 8)
        starts = 8;

    double av[4096], tv[4096];
    size_t na = axis_values(a0, a1, cas, circle, av, 4096),
           nt = axis_values(t0, t1, cts, 0, tv, 4096);
    size_t nc = na * nt;
    kern_orient_t *cand = malloc((nc + 8 * starts) * sizeof *cand);
    double *val = malloc((nc + 8 * starts) * sizeof *val);
    walker_t *w = calloc(starts, sizeof *w);
    bf_err_t e = BF_OK;
    memset(out, 0, sizeof *out);
    if (!cand || !val || !w) {
        e = bf_fail(err, BF_ENOMEM, "optimize: out of memory");
        goto done;
    }
    for (size_t i = 0; i < na; i++)
        for (size_t k = 0; k < nt; k++) {
            cand[i * nt + k].azimuth_deg = av[i];
            cand[i * nt + k].tilt_deg = tv[k];
        }
    e = kern_evaluate_orients(s, cand, nc, val, &out->evaluations, err);
    if (e != BF_OK)
        goto done;
    if (s->progress)
        s->progress(s->progress_ud, 0.5);

    /* The best `starts` coarse points, ties to the lower index. */
    unsigned nw = 0;
    for (unsigned k = 0; k < starts && k < nc; k++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < nc; i++) {
            int taken = 0;
            for (unsigned q = 0; q < nw; q++)
                taken |= w[q].at.azimuth_deg == cand[i].azimuth_deg &&
                         w[q].at.tilt_deg == cand[i].tilt_deg;
            if (!taken && (best == SIZE_MAX || val[i] > val[best]))
                best = i;
        }
        if (best == SIZE_MAX)
            break;
        w[nw].at = cand[best];
        w[nw].value = val[best];
        w[nw].step_a = fin;
        while (w[nw].step_a < cas / 2.0)
            w[nw].step_a *= 2.0;
        w[nw].step_t = fin;
        while (w[nw].step_t < cts / 2.0)
            w[nw].step_t *= 2.0;
        nw++;
    }

    /* Pattern search, all walkers' neighbours in one batch per round. */
    static const int da[8] = {1, -1, 0, 0, 1, 1, -1, -1}, dt[8] = {0, 0, 1, -1, 1, -1, 1, -1};
    for (unsigned round = 0; round < 400; round++) {
        size_t m = 0;
        int owner[64];
        for (unsigned q = 0; q < nw && q < 8; q++) {
            if (w[q].done)
                continue;
            for (int k = 0; k < 8; k++) {
                double a = w[q].at.azimuth_deg + da[k] * w[q].step_a;
                double t = w[q].at.tilt_deg + dt[k] * w[q].step_t;
                if (circle)
                    a = wrap_az(a, a0);
                else
                    a = fmin(fmax(a, a0), a1);
                t = fmin(fmax(t, t0), t1);
                if (a == w[q].at.azimuth_deg && t == w[q].at.tilt_deg)
                    continue;
                cand[m].azimuth_deg = a;
                cand[m].tilt_deg = t;
                owner[m] = (int)q;
                m++;
            }
        }
        if (m == 0)
            break;
        e = kern_evaluate_orients(s, cand, m, val, &out->evaluations, err);
        if (e != BF_OK)
            goto done;
        for (unsigned q = 0; q < nw; q++) {
            if (w[q].done)
                continue;
            size_t best = SIZE_MAX;
            for (size_t i = 0; i < m; i++)
                if (owner[i] == (int)q && (best == SIZE_MAX || val[i] > val[best]))
                    best = i;
            if (best != SIZE_MAX && val[best] > w[q].value) {
                w[q].at = cand[best];
                w[q].value = val[best];
            } else if (w[q].step_a <= fin * 1.0000001 && w[q].step_t <= fin * 1.0000001) {
                w[q].done = 1;
            } else {
                w[q].step_a = fmax(fin, w[q].step_a / 2.0);
                w[q].step_t = fmax(fin, w[q].step_t / 2.0);
            }
        }
        if (s->progress)
            s->progress(s->progress_ud, 0.5 + 0.5 * (1.0 - 1.0 / (1.0 + 0.1 * (round + 1))));
    }
    out->best = w[0].at;
    out->objective = w[0].value;
    for (unsigned q = 1; q < nw; q++)
        if (w[q].value > out->objective) {
            out->best = w[q].at;
            out->objective = w[q].value;
        }
    if (s->progress)
        s->progress(s->progress_ud, 1.0);
done:
    free(cand);
    free(val);
    free(w);
    return e;
}

/* ---- several transmitters ------------------------------------------------ */

/* The single-transmitter search of transmitter i, with the others' zone
   powers (NULL: alone). */
static kern_search_t sector_search(const kern_joint_t *j, size_t i, const double *omax,
                                   const double *orest)
{
    kern_search_t s;
    memset(&s, 0, sizeof s);
    s.backend = j->backend;
    s.ctx = j->ctx;
    s.zone = &j->zones[i];
    s.antenna = j->antennas[i];
    s.roll_deg = j->roll_deg[i];
    s.power.scale = j->scale[i];
    s.power.floor_dbm = j->floor_dbm;
    s.optimizer = j->optimizer;
    s.coarse_az_step = j->coarse_az_step;
    s.coarse_tilt_step = j->coarse_tilt_step;
    s.final_step = j->final_step;
    s.others_max_w = omax;
    s.others_rest_w = orest;
    s.interferes_only = j->serves && !j->serves[i];
    s.noise_w = j->noise_w;
    s.cancel = j->cancel;
    return s;
}

bf_err_t kern_joint_zone_w(const kern_joint_t *j, size_t i, kern_orient_t o, double *w,
                           uint64_t *evaluations, char *err)
{
    kern_rot_t rot = kern_rotation(o.azimuth_deg, o.tilt_deg, j->roll_deg[i]);
    bf_err_t e =
        j->backend->evaluate(j->ctx, &j->zones[i], &j->antennas[i], &rot, 1, w, j->cancel, err);
    if (e != BF_OK)
        return e;
    for (size_t c = 0; c < j->zones[i].zone_cells; c++)
        w[c] *= j->scale[i];
    if (evaluations)
        *evaluations += 1;
    return BF_OK;
}

/* Per zone cell, over the transmitters other than skip (SIZE_MAX: none
   skipped): the strongest power of those that may serve (the first of
   equals; all when serves is NULL) in max, and the sum of the rest, in
   transmitter order, in rest. */
static void aggregate(const double *w, const bool *serves, size_t count, size_t n, size_t skip,
                      double *max, double *rest)
{
    for (size_t c = 0; c < n; c++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < count; i++)
            if (i != skip && (!serves || serves[i]) &&
                (best == SIZE_MAX || w[i * n + c] > w[best * n + c]))
                best = i;
        double r = 0.0;
        for (size_t i = 0; i < count; i++)
            if (i != skip && i != best)
                r += w[i * n + c];
        max[c] = best == SIZE_MAX ? 0.0 : w[best * n + c];
        rest[c] = r;
    }
}

/* What the joint search holds: every transmitter's zone powers at its
   current orientation and the per-cell aggregates. */
typedef struct {
    size_t n;
    double *w;       /* count * n */
    double *a, *b;   /* n: max and rest */
    double *scratch; /* n */
} joint_buf_t;

static void joint_buf_free(joint_buf_t *b)
{
    free(b->w);
    free(b->a);
    free(b->b);
    free(b->scratch);
}

static bf_err_t joint_buf_new(const kern_joint_t *j, joint_buf_t *b, char *err)
{
    memset(b, 0, sizeof *b);
    b->n = j->zones[0].zone_cells;
    for (size_t i = 1; i < j->count; i++)
        if (j->zones[i].zone_cells != b->n)
            return bf_fail(err, BF_EINVAL, "joint search: transmitters with different zones");
    size_t n = b->n ? b->n : 1;
    b->w = malloc(j->count * n * sizeof *b->w);
    b->a = malloc(n * sizeof *b->a);
    b->b = malloc(n * sizeof *b->b);
    b->scratch = malloc(n * sizeof *b->scratch);
    if (!b->w || !b->a || !b->b || !b->scratch) {
        joint_buf_free(b);
        return bf_fail(err, BF_ENOMEM, "joint search: out of memory");
    }
    return BF_OK;
}

/* The joint objective of what b->w holds. */
static double joint_value(const kern_joint_t *j, joint_buf_t *b)
{
    aggregate(b->w, j->serves, j->count, b->n, SIZE_MAX, b->a, b->b);
    return kern_objective_w(b->a, b->b, b->n, j->floor_dbm, j->noise_w, j->optimizer, b->scratch);
}

bf_err_t kern_joint_objective(const kern_joint_t *j, const kern_orient_t *o, double *value,
                              uint64_t *evaluations, char *err)
{
    joint_buf_t b;
    bf_err_t e = joint_buf_new(j, &b, err);
    for (size_t i = 0; e == BF_OK && i < j->count; i++)
        e = kern_joint_zone_w(j, i, o[i], b.w + i * b.n, evaluations, err);
    if (e == BF_OK)
        *value = joint_value(j, &b);
    joint_buf_free(&b);
    return e;
}

bf_err_t kern_joint_search(const kern_joint_t *j, const kern_orient_t *init,
                           kern_joint_result_t *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (j->count < 1 || j->count > KERN_MAX_TX)
        return bf_fail(err, BF_EINVAL, "joint search: %zu transmitters", j->count);
    joint_buf_t b;
    bf_err_t e = joint_buf_new(j, &b, err);
    if (e != BF_OK)
        return e;
    size_t movable = 0;
    for (size_t i = 0; i < j->count; i++) {
        out->best[i] = init[i];
        movable += j->movable[i];
    }
    unsigned rounds = j->rounds ? j->rounds : 6;
    if (j->one_at_a_time || movable <= 1)
        rounds = 1;
    for (size_t i = 0; e == BF_OK && i < j->count; i++)
        e = kern_joint_zone_w(j, i, init[i], b.w + i * b.n, &out->evaluations, err);
    if (e != BF_OK)
        goto done;
    size_t step = 0;
    for (unsigned round = 0; round < rounds; round++) {
        bool raised = false;
        out->rounds = round + 1;
        for (size_t s = 0; s < j->count; s++) {
            if (!j->movable[s])
                continue;
            kern_search_t ss;
            if (j->one_at_a_time) {
                ss = sector_search(j, s, NULL, NULL);
            } else {
                aggregate(b.w, j->serves, j->count, b.n, s, b.a, b.b);
                ss = sector_search(j, s, b.a, b.b);
            }
            /* the current orientation's value, computed as the search
               computes its candidates' */
            double now = 0.0;
            kern_search_result_t found;
            e = kern_evaluate_orients(&ss, &out->best[s], 1, &now, &out->evaluations, err);
            if (e == BF_OK)
                e = kern_search(&ss, &found, err);
            if (e != BF_OK)
                goto done;
            out->evaluations += found.evaluations;
            if (found.objective > now + 1e-12 * fmax(1.0, fabs(now))) {
                out->best[s] = found.best;
                e = kern_joint_zone_w(j, s, found.best, b.w + s * b.n, &out->evaluations, err);
                if (e != BF_OK)
                    goto done;
                raised = true;
            }
            step++;
            if (j->progress)
                j->progress(j->progress_ud,
                            fmin(0.99, (double)step / (double)(movable ? movable * rounds : 1)));
        }
        if (!raised)
            break;
    }
    out->objective = joint_value(j, &b);
    if (j->progress)
        j->progress(j->progress_ud, 1.0);
done:
    joint_buf_free(&b);
    return e;
}
