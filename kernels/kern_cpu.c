/*  kernels/kern_cpu.c - the CPU backend of the radio engine: a thin,
    multi-threaded loop over the ray walk of kern_bounce.h, which the CUDA
    backend shares. Rays are cut into fixed chunks of KERN_CHUNK rays,
    independent of the thread count; threads take chunks from a shared
    counter, record each chunk's plane crossings into a slot, and whichever
    thread completes the next chunk in order folds it into the map (double
    sums) and the zone-crossing list. So the map and the zone
    data are bit-identical for one seed whatever the number of threads.
    Orientation batches are evaluated one orientation per task, threads
    taking orientations from an atomic counter. */

#include "kern.h"
#include "kern_bounce.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KERN_CHUNK 4096u

typedef struct {
    uint32_t cell;
    float val;
} contrib_t;

/* The crossings of one chunk, waiting to be folded in chunk order. */
typedef struct {
    contrib_t *c;
    size_t nc, capc;
    kern_zray_t *zr;
    size_t nzr, capzr;
    kern_zxing_t *zx;
    size_t nzx, capzx;
    uint64_t crossings;
    int done;
} slot_t;

typedef struct {
    kern_geom_t geom;
    unsigned threads;
    slot_t *slots; /* scratch, reused across traces */
    size_t slot_count;
} cpu_ctx_t;

typedef struct {
    cpu_ctx_t *ctx;
    const kern_trace_setup_t *s;
    kern_bounce_t bounce; /* what every ray's walk reads */
    kern_trace_out_t *out;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t nchunks, next_chunk, next_reduce, window;
    uint64_t phase1;       /* chunks of rays; those after are diffraction samples' */
    uint64_t total_chunks; /* of both phases, for the progress fraction */
    bf_err_t err;
    double last_progress;
    pthread_t caller; /* progress is reported on the caller's thread only */
} trace_job_t;

static unsigned cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

void kern_zone_data_clear(kern_zone_data_t *zd)
{
    if (!zd)
        return;
    free(zd->rays);
    free(zd->xings);
    memset(zd, 0, sizeof *zd);
}

static bf_err_t cpu_ctx_new(const kern_geom_t *geom, unsigned threads, void **out, char *err)
{
    cpu_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return bf_fail(err, BF_ENOMEM, "cpu backend: out of memory");
    c->geom = *geom;
    c->threads = threads ? threads : cpu_count();
    if (c->threads > 1024)
        c->threads = 1024;
    *out = c;
    return BF_OK;
}

static void cpu_ctx_destroy(void **p)
{
    if (!p || !*p)
        return;
    cpu_ctx_t *c = *p;
    for (size_t i = 0; i < c->slot_count; i++) {
        free(c->slots[i].c);
        free(c->slots[i].zr);
        free(c->slots[i].zx);
    }
    free(c->slots);
    free(c);
    *p = NULL;
}

/* Traces chunk c into slot sl: rays [c * KERN_CHUNK, ...) for c below
   phase1, else the diffraction samples [(c - phase1) * KERN_CHUNK, ...)
   (walk indices from b->rays on); every crossing for the map, and those
   in the zone with their ray's departure direction. 0 on allocation
   failure. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
static inline int
trace_chunk_body(const kern_bounce_t *b, uint64_t chunk, uint64_t phase1, slot_t *sl)
{
    uint64_t lo, hi;
    if (chunk < phase1) {
        lo = chunk * KERN_CHUNK;
        hi = lo + KERN_CHUNK < b->rays ? lo + KERN_CHUNK : b->rays;
    } else {
        lo = b->rays + (chunk - phase1) * KERN_CHUNK;
        hi = lo + KERN_CHUNK < b->rays + b->dsamples ? lo + KERN_CHUNK : b->rays + b->dsamples;
    }
    sl->nc = sl->nzr = sl->nzx = 0;
    sl->crossings = 0;
    for (uint64_t n = lo; n < hi; n++) {
        kern_walk_t w;
        kern_crossing_t x;
        size_t zr = SIZE_MAX; /* this ray's zone record, once it has one */
        kern_walk_start(&w, b, n);
        while (kern_walk_next(&w, b, &x)) {
            if (!bf_grow(&sl->c, &sl->capc, sl->nc + 1, sizeof *sl->c, 1024))
                return 0;
            sl->c[sl->nc].cell = x.cell;
            sl->c[sl->nc].val = x.power;
            sl->nc++;
            sl->crossings++;
            if (x.zone < 0)
                continue;
            if (zr == SIZE_MAX) {
                if (!bf_grow(&sl->zr, &sl->capzr, sl->nzr + 1, sizeof *sl->zr, 1024))
                    return 0;
                zr = sl->nzr++;
                sl->zr[zr].d[0] = w.d0.x;
                sl->zr[zr].d[1] = w.d0.y;
                sl->zr[zr].d[2] = w.d0.z;
                sl->zr[zr].count = 0;
            }
            if (!bf_grow(&sl->zx, &sl->capzx, sl->nzx + 1, sizeof *sl->zx, 1024))
                return 0;
            kern_zxing_t *z = &sl->zx[sl->nzx++];
            z->cell = (uint32_t)x.zone;
            z->m[0] = x.m[0];
            z->m[1] = x.m[1];
            z->m[2] = x.m[2];
            sl->zr[zr].count++;
        }
    }
    return 1;
}

/* trace_chunk_body for any x86-64 CPU, and, where the tree has eight-wide
   nodes (built only where the CPU has AVX2, kern_bvh_simd8), compiled for
   AVX2 with the ray's walk flattened into it: its scalar float and double
   arithmetic then takes the three-operand VEX encoding, without the
   register copies of the two-operand one, and the walk's calls into the
   AVX2 closest-hit walk (kern_traverse_wide8.h) no longer come from code
   in the legacy SSE encoding. The same IEEE operations in the same order
   (target "avx2" brings no fused multiply-add), so the same bits:
   kern_cpu_test's plain walk checks both builds. */
#if defined(KERN_WIDE8)
__attribute__((target("avx2"), flatten)) static int
trace_chunk_avx2(const kern_bounce_t *b, uint64_t chunk, uint64_t phase1, slot_t *sl)
{
    return trace_chunk_body(b, chunk, phase1, sl);
}
#endif
static int trace_chunk(const kern_bounce_t *b, uint64_t chunk, uint64_t phase1, slot_t *sl)
{
#if defined(KERN_WIDE8)
    if (b->geom.bvh.wide8)
        return trace_chunk_avx2(b, chunk, phase1, sl);
#endif
    return trace_chunk_body(b, chunk, phase1, sl);
}

/* Folds slot sl into the outputs; called under the job lock, in chunk order. */
static int reduce_slot(trace_job_t *j, slot_t *sl)
{
    double *map = j->out->map;
    for (size_t i = 0; i < sl->nc; i++)
        map[sl->c[i].cell] += (double)sl->c[i].val;
    j->out->crossings += sl->crossings;
    kern_zone_data_t *z = j->out->zone;
    if (z && sl->nzr) {
        if (!bf_grow(&z->rays, &z->ray_cap, z->ray_count + sl->nzr, sizeof *z->rays, 1024) ||
            !bf_grow(&z->xings, &z->cap, z->count + sl->nzx, sizeof *z->xings, 1024))
            return 0;
        memcpy(z->rays + z->ray_count, sl->zr, sl->nzr * sizeof *sl->zr);
        memcpy(z->xings + z->count, sl->zx, sl->nzx * sizeof *sl->zx);
        z->ray_count += sl->nzr;
        z->count += sl->nzx;
    }
    return 1;
}

static void *trace_thread(void *arg)
{
    trace_job_t *j = arg;
    const kern_trace_setup_t *s = j->s;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->err != BF_OK)
            break;
        if (bf_flag_up(s->cancel)) {
            j->err = BF_ECANCELED;
            break;
        }
        if (j->next_chunk >= j->nchunks)
            break;
        uint64_t c = j->next_chunk;
        if (c - j->next_reduce >= j->window) { /* slot still holds an unfolded chunk */
            pthread_cond_wait(&j->cv, &j->mu);
            continue;
        }
        j->next_chunk++;
        slot_t *sl = &j->ctx->slots[c % j->window];
        pthread_mutex_unlock(&j->mu);
        int ok = trace_chunk(&j->bounce, c, j->phase1, sl);
        pthread_mutex_lock(&j->mu);
        if (!ok) {
            j->err = BF_ENOMEM;
            break;
        }
        sl->done = 1;
        while (j->next_reduce < j->nchunks && j->ctx->slots[j->next_reduce % j->window].done) {
            slot_t *r = &j->ctx->slots[j->next_reduce % j->window];
            if (!reduce_slot(j, r)) {
                j->err = BF_ENOMEM;
                break;
            }
            r->done = 0;
            j->next_reduce++;
        }
        double frac = (double)j->next_reduce / (double)j->total_chunks;
        if (s->progress && pthread_equal(pthread_self(), j->caller) &&
            (frac - j->last_progress >= 0.01 || j->next_reduce == j->total_chunks)) {
            j->last_progress = frac;
            s->progress(s->progress_ud, frac);
        }
        pthread_cond_broadcast(&j->cv);
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* Runs chunks j->next_chunk .. j->nchunks - 1 on `threads` threads, the
   caller's included, and folds them in order. */
static void run_phase(trace_job_t *j, unsigned threads)
{
    pthread_t tid[1024];
    unsigned started = 0;
    for (unsigned t = 1; t < threads; t++) {
        if (pthread_create(&tid[started], NULL, trace_thread, j) != 0)
            break; /* fewer threads: same result, only slower */
        started++;
    }
    trace_thread(j);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
}

static bf_err_t cpu_trace(void *vctx, const kern_trace_setup_t *s, kern_trace_out_t *out, char *err)
{
    cpu_ctx_t *ctx = vctx;
    if (!s || !out || !out->map || s->rays == 0 || s->grid.nx == 0 || s->grid.ny == 0)
        return bf_fail(err, BF_EINVAL, "cpu trace: no rays or empty grid");
    memset(out->map, 0, (size_t)s->grid.nx * s->grid.ny * sizeof *out->map);
    out->crossings = 0;
    if (out->zone) {
        kern_zone_data_clear(out->zone);
        out->zone->zone_cells = s->zone_cells;
    }
    trace_job_t j;
    memset(&j, 0, sizeof j);
    j.ctx = ctx;
    j.s = s;
    j.out = out;
    kern_bounce_init(&j.bounce, &ctx->geom, s, out->zone ? s->zone_of_cell : NULL);
    j.caller = pthread_self();
    j.nchunks = (s->rays + KERN_CHUNK - 1) / KERN_CHUNK;
    unsigned threads = ctx->threads;
    if (threads > j.nchunks)
        threads = (unsigned)j.nchunks;
    j.window = 4u * threads + 4u;
    if (ctx->slot_count < j.window) {
        if (!bf_resize(&ctx->slots, j.window, sizeof *ctx->slots))
            return bf_fail(err, BF_ENOMEM, "cpu trace: out of memory");
        memset(ctx->slots + ctx->slot_count, 0, (j.window - ctx->slot_count) * sizeof *ctx->slots);
        ctx->slot_count = j.window;
    }
    for (size_t i = 0; i < ctx->slot_count; i++)
        ctx->slots[i].done = 0;
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    /* Diffraction: the first phase records which edges the transmitter's
       rays find, the plan makes the wedges of them, the second phase walks
       the samples after the rays, in the same chunk order. */
    uint32_t *found = NULL;
    kern_dplan_t plan;
    memset(&plan, 0, sizeof plan);
    int diffract = s->diffraction && s->max_depth > 0 && ctx->geom.edge_count > 0;
    if (diffract) {
        found = calloc(((size_t)ctx->geom.edge_count + 31) / 32, sizeof *found);
        if (!found)
            j.err = BF_ENOMEM;
        j.bounce.edge_found = found;
    }
    j.phase1 = j.nchunks;
    j.total_chunks = diffract ? 2 * j.nchunks : j.nchunks;
    if (j.err == BF_OK)
        run_phase(&j, threads);
    if (diffract && j.err == BF_OK) {
        j.bounce.edge_found = NULL;
        bf_err_t e = kern_dplan_make(&ctx->geom, found, s, &plan, err);
        if (e != BF_OK) {
            j.err = e;
        } else if (plan.count > 0) {
            j.bounce.dsamples = plan.samples;
            j.bounce.wedges = plan.wedges;
            j.bounce.wcdf = plan.cdf;
            j.bounce.wdrawn = plan.drawn;
            j.bounce.wedge_count = plan.count;
            j.nchunks = j.phase1 + (plan.samples + KERN_CHUNK - 1) / KERN_CHUNK;
            j.total_chunks = j.nchunks;
            run_phase(&j, threads);
        }
    }
    free(found);
    kern_dplan_clear(&plan);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    if (j.err == BF_ECANCELED)
        return bf_fail(err, BF_ECANCELED, "trace cancelled");
    if (j.err == BF_ENOMEM)
        return bf_fail(err, j.err, "cpu trace: out of memory");
    if (j.err != BF_OK)
        return j.err; /* err already says why */
    return BF_OK;
}

/* ---- batch evaluation ------------------------------------------------------ */
typedef struct {
    const kern_zone_data_t *zone;
    const kern_antenna_t *ant;
    const kern_rot_t *rots;
    size_t count;
    double *sums;
    volatile int *cancel;
    atomic_size_t next;
    atomic_int cancelled;
} eval_job_t;

static void eval_one(const kern_zone_data_t *z, const kern_antenna_t *ant, const kern_rot_t *R,
                     double *sums)
{
    memset(sums, 0, (size_t)z->zone_cells * sizeof *sums);
    const kern_zxing_t *x = z->xings;
    for (size_t r = 0; r < z->ray_count; r++) {
        const kern_zray_t *ray = &z->rays[r];
        float f[2][2];
        kern_antenna_field(ant, R, v3(ray->d[0], ray->d[1], ray->d[2]), f);
        for (uint32_t k = 0; k < ray->count; k++, x++)
            sums[x->cell] += (double)kern_form_power(f, x->m);
    }
}

static void *eval_thread(void *arg)
{
    eval_job_t *j = arg;
    for (;;) {
        if (bf_flag_up(j->cancel)) {
            atomic_store(&j->cancelled, 1);
            break;
        }
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->count)
            break;
        eval_one(j->zone, j->ant, &j->rots[i], j->sums + i * (size_t)j->zone->zone_cells);
    }
    return NULL;
}

static bf_err_t cpu_evaluate(void *vctx, const kern_zone_data_t *zone, const kern_antenna_t *ant,
                             const kern_rot_t *rots, size_t count, double *sums,
                             volatile int *cancel, char *err)
{
    cpu_ctx_t *ctx = vctx;
    if (!zone || !ant || (count && (!rots || !sums)))
        return bf_fail(err, BF_EINVAL, "cpu evaluate: bad arguments");
    eval_job_t j;
    memset(&j, 0, sizeof j);
    j.zone = zone;
    j.ant = ant;
    j.rots = rots;
    j.count = count;
    j.sums = sums;
    j.cancel = cancel;
    atomic_init(&j.next, 0);
    atomic_init(&j.cancelled, 0);
    unsigned threads = ctx->threads;
    if (threads > count)
        threads = (unsigned)(count ? count : 1);
    pthread_t tid[1024];
    unsigned started = 0;
    for (unsigned t = 1; t < threads; t++) {
        if (pthread_create(&tid[started], NULL, eval_thread, &j) != 0)
            break;
        started++;
    }
    eval_thread(&j);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    if (atomic_load(&j.cancelled))
        return bf_fail(err, BF_ECANCELED, "evaluation cancelled");
    return BF_OK;
}

static const kern_backend_t cpu_backend = {
    .name = "cpu",
    .ctx_new = cpu_ctx_new,
    .ctx_destroy = cpu_ctx_destroy,
    .trace = cpu_trace,
    .evaluate = cpu_evaluate,
};

const kern_backend_t *kern_backend_cpu(void)
{
    return &cpu_backend;
}
