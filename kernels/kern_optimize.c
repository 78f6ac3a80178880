/*  kernels/kern_optimize.c - the orientation search of DESIGN 6.5: turns
    the zone-cell sums a backend evaluates (exactly, from the crossings of
    one trace) into dBm and an objective, and searches azimuth x tilt with a
    coarse grid followed by a pattern search whose step halves down to
    0.1 deg, started from the best few coarse points. Orientations are sent
    to the backend in batches so that it can parallelize across them. */

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

bf_err_t kern_evaluate_orients(const kern_search_t *s, const kern_orient_t *o, size_t count,
                               double *obj, uint64_t *evaluations, char *err)
{
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
    kern_rot_t *rots = malloc(batch * sizeof *rots);
    bf_err_t e = BF_OK;
    if (!sums || !scratch || !rots) {
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
        for (size_t i = 0; i < n; i++)
            obj[at + i] =
                kern_objective(sums + i * zc, s->zone->zone_cells, &s->power,
                               s->optimizer->objective, s->optimizer->coverage_dbm, scratch);
        if (evaluations)
            *evaluations += n;
    }
done:
    free(sums);
    free(scratch);
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
