/*  kernels/kern_cuda.cu - the CUDA backend of the radio engine: the same
    ops table as kern_cpu.c (kern.h), over the same ray walk (kern_bounce.h,
    with the physics of kern_radio.h and the BVH traversal of
    kern_traverse.h), which compiles here for the device line for line and
    computes the same bits as on the host (kern_hd.h).

    trace: rays are launched in batches sized to the free device memory; one
    thread per ray walks it (kern_walk_next), adds each plane crossing to the
    map with a double atomicAdd and writes the crossings that fall in the
    zone into the ray's own slots (at most max_depth + 1, one per segment).
    A scan (CUB) over the per-ray counts then compacts the slots in ray
    order, so the zone data arrive on the host in the same order as the
    CPU backend records them. evaluate: one thread per (orientation, zone
    ray) computes the antenna field once and adds f^T M f of each of the
    ray's crossings to its orientation's cell sums.

    The map differs from the CPU's only by the order of its double
    additions (atomics); the zone data are the CPU's, bit for bit. Every
    CUDA call and launch is checked; an error is returned with file, line
    and CUDA's message, never fatal. */

extern "C" {
#include "kern.h"
#include "kern_bounce.h"
}

#include <cub/device/device_scan.cuh>
#include <cuda_runtime.h>

#include <stdlib.h>
#include <string.h>

#define THREADS 128

/* Formats a CUDA failure into err and returns BF_ECUDA. */
static bf_err_t cuda_fail(char *err, cudaError_t e, const char *what, const char *file, int line)
{
    if (e == cudaErrorMemoryAllocation)
        return bf_fail(err, BF_ECUDA, "%s:%d: %s: out of GPU memory (%s)", file, line, what,
                       cudaGetErrorString(e));
    return bf_fail(err, BF_ECUDA, "%s:%d: %s: %s", file, line, what, cudaGetErrorString(e));
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return cuda_fail(err, e_, #call, __FILE__, __LINE__);                                  \
    } while (0)

/* Checks the last launch (and, in debug builds, waits for it). */
#define CK_LAUNCH(name) CK(cudaGetLastError())

/* A device buffer that only grows: reused across traces and evaluations. */
struct dbuf {
    void *ptr;
    size_t bytes;
};

static bf_err_t dbuf_reserve(dbuf *b, size_t bytes, char *err)
{
    if (bytes <= b->bytes)
        return BF_OK;
    if (b->ptr)
        cudaFree(b->ptr);
    b->ptr = NULL;
    b->bytes = 0;
    CK(cudaMalloc(&b->ptr, bytes ? bytes : 16));
    b->bytes = bytes;
    return BF_OK;
}

static void dbuf_free(dbuf *b)
{
    if (b->ptr)
        cudaFree(b->ptr);
    b->ptr = NULL;
    b->bytes = 0;
}

/* What a trace kernel needs, by value: the walk's settings over device
   memory (zone_of_cell NULL when no zone is recorded), the batch, and where
   the crossings go. */
struct trace_params {
    kern_bounce_t b;
    uint64_t base;
    uint32_t batch;
    double *map;
    unsigned long long *crossings;
    uint32_t *zcount;     /* batch: zone crossings of each ray */
    kern_zxing_t *zslots; /* batch * (max_depth + 1) */
    float *zdir;          /* batch * 3: departure directions */
};

struct cuda_ctx {
    kern_geom_t host;
    int device;
    dbuf nodes, tris, tri_ids, normals, tri_material, mats, tri_verts, tri_nbr, tri_edge;
    kern_geom_t dev; /* the same over device pointers */
    /* trace scratch */
    dbuf map, crossings, zone_of_cell, zcount, zslots, zdir, zoff, zroff, zflag, scan_tmp,
        zrays_out, zx_out;
    /* diffraction: the edges found by the first phase, the plan's wedges */
    dbuf found, wedges, wcdf, wdrawn;
    /* evaluation scratch: the zone data cached on the device */
    const kern_zone_data_t *zone_cached;
    size_t zone_cached_count, zone_cached_rays;
    dbuf ez_rays, ez_off, ez_xings, ez_rots, ez_sums;
};

__global__ void trace_kernel(trace_params p)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.batch)
        return;
    kern_walk_t w;
    kern_crossing_t x;
    kern_walk_start(&w, &p.b, p.base + i);
    uint32_t zc = 0;
    unsigned long long crossings = 0;
    kern_zxing_t *slots = p.zslots ? p.zslots + (size_t)i * (p.b.max_depth + 1) : NULL;
    while (kern_walk_next(&w, &p.b, &x)) {
        atomicAdd(&p.map[x.cell], (double)x.power);
        crossings++;
        if (slots && x.zone >= 0 && zc <= p.b.max_depth) {
            slots[zc].cell = (uint32_t)x.zone;
            slots[zc].m[0] = x.m[0];
            slots[zc].m[1] = x.m[1];
            slots[zc].m[2] = x.m[2];
            zc++;
        }
    }
    if (crossings)
        atomicAdd(p.crossings, crossings);
    if (p.zcount) {
        p.zcount[i] = zc;
        p.zdir[3 * i] = w.d0.x;
        p.zdir[3 * i + 1] = w.d0.y;
        p.zdir[3 * i + 2] = w.d0.z;
    }
}

/* Ray i with zcount[i] > 0 becomes zone ray zroff[i] with its crossings at
   zoff[i]... in the compacted arrays. */
__global__ void compact_kernel(uint32_t batch, uint32_t max_depth, const uint32_t *zcount,
                               const uint32_t *zoff, const uint32_t *zroff, const float *zdir,
                               const kern_zxing_t *zslots, kern_zray_t *zrays_out,
                               kern_zxing_t *zx_out)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch || zcount[i] == 0)
        return;
    kern_zray_t r;
    r.d[0] = zdir[3 * i];
    r.d[1] = zdir[3 * i + 1];
    r.d[2] = zdir[3 * i + 2];
    r.count = zcount[i];
    zrays_out[zroff[i]] = r;
    for (uint32_t k = 0; k < zcount[i]; k++)
        zx_out[zoff[i] + k] = zslots[(size_t)i * (max_depth + 1) + k];
}

__global__ void flag_kernel(uint32_t batch, const uint32_t *zcount, uint32_t *flag)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < batch)
        flag[i] = zcount[i] > 0;
}

__global__ void evaluate_kernel(const kern_zray_t *rays, const uint32_t *off,
                                const kern_zxing_t *xings, uint32_t ray_count, kern_antenna_t ant,
                                const kern_rot_t *rots, uint32_t count, uint32_t zone_cells,
                                double *sums)
{
    uint64_t k = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (uint64_t)ray_count * count)
        return;
    uint32_t o = (uint32_t)(k / ray_count), r = (uint32_t)(k % ray_count);
    kern_rot_t R = rots[o];
    float f[2][2];
    kern_antenna_field(&ant, &R, v3(rays[r].d[0], rays[r].d[1], rays[r].d[2]), f);
    double *s = sums + (size_t)o * zone_cells;
    const kern_zxing_t *x = xings + off[r];
    for (uint32_t j = 0; j < rays[r].count; j++)
        atomicAdd(&s[x[j].cell], (double)kern_form_power(f, x[j].m));
}

template <typename T> static bf_err_t upload(dbuf *b, const T *src, size_t count, char *err)
{
    bf_err_t rc = dbuf_reserve(b, count * sizeof(T), err);
    if (rc != BF_OK)
        return rc;
    if (count)
        CK(cudaMemcpy(b->ptr, src, count * sizeof(T), cudaMemcpyHostToDevice));
    return BF_OK;
}

static void cuda_ctx_destroy(void **p)
{
    if (!p || !*p)
        return;
    cuda_ctx *c = (cuda_ctx *)*p;
    dbuf *all[] = {&c->nodes,    &c->tris,      &c->tri_ids,   &c->normals,      &c->tri_material,
                   &c->mats,     &c->map,       &c->crossings, &c->zone_of_cell, &c->zcount,
                   &c->zslots,   &c->zdir,      &c->zoff,      &c->zroff,        &c->zflag,
                   &c->scan_tmp, &c->zrays_out, &c->zx_out,    &c->ez_rays,      &c->ez_off,
                   &c->ez_xings, &c->ez_rots,   &c->ez_sums,   &c->tri_verts,    &c->tri_nbr,
                   &c->tri_edge, &c->found,     &c->wedges,    &c->wcdf,         &c->wdrawn};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        dbuf_free(all[i]);
    free(c);
    *p = NULL;
}

static bf_err_t cuda_ctx_new(const kern_geom_t *geom, unsigned threads, void **out, char *err)
{
    (void)threads;
    *out = NULL;
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!c)
        return bf_fail(err, BF_ENOMEM, "cuda backend: out of memory");
    c->host = *geom;
    bf_err_t rc = BF_OK;
    cudaError_t e = cudaGetDevice(&c->device);
    if (e != cudaSuccess)
        rc = cuda_fail(err, e, "cudaGetDevice", __FILE__, __LINE__);
    const kern_bvh_view_t *v = &geom->bvh;
    if (rc == BF_OK)
        rc = upload(&c->nodes, v->nodes, v->node_count, err);
    if (rc == BF_OK)
        rc = upload(&c->tris, v->tris, (size_t)v->tri_count * 9, err);
    if (rc == BF_OK)
        rc = upload(&c->tri_ids, v->tri_ids, v->tri_count, err);
    if (rc == BF_OK)
        rc = upload(&c->normals, geom->normals, (size_t)geom->tri_count * 3, err);
    if (rc == BF_OK)
        rc = upload(&c->tri_material, geom->tri_material, geom->tri_count, err);
    if (rc == BF_OK)
        rc = upload(&c->mats, geom->mats, geom->mat_count ? geom->mat_count : 0, err);
    if (rc == BF_OK && geom->tri_verts)
        rc = upload(&c->tri_verts, geom->tri_verts, (size_t)geom->tri_count * 9, err);
    if (rc == BF_OK && geom->tri_nbr)
        rc = upload(&c->tri_nbr, geom->tri_nbr, (size_t)geom->tri_count * 3, err);
    if (rc == BF_OK && geom->tri_edge)
        rc = upload(&c->tri_edge, geom->tri_edge, (size_t)geom->tri_count * 3, err);
    if (rc != BF_OK) {
        void *p = c;
        cuda_ctx_destroy(&p);
        return rc;
    }
    c->dev = *geom;
    c->dev.bvh.nodes = (const kern_bvh_node_t *)c->nodes.ptr;
    c->dev.bvh.tris = (const float *)c->tris.ptr;
    c->dev.bvh.tri_ids = (const uint32_t *)c->tri_ids.ptr;
    c->dev.bvh.wide = NULL; /* host-only; the kernel walks the binary nodes */
    c->dev.bvh.wide_count = 0;
    c->dev.normals = (const float *)c->normals.ptr;
    c->dev.tri_material = (const uint16_t *)c->tri_material.ptr;
    c->dev.mats = (const kern_mat_t *)c->mats.ptr;
    c->dev.tri_verts = (const float *)c->tri_verts.ptr;
    c->dev.tri_nbr = (const uint32_t *)c->tri_nbr.ptr;
    c->dev.tri_edge = (const uint32_t *)c->tri_edge.ptr;
    c->dev.edges = NULL; /* host-only: the plan reads c->host's */
    *out = c;
    return BF_OK;
}

/* Appends n elements to a host array (bf_grow). */
static bf_err_t host_append(void **buf, size_t *count, size_t *cap, const void *src, size_t n,
                            size_t size, char *err)
{
    if (!bf_grow(buf, cap, *count + n, size, 1024))
        return bf_fail(err, BF_ENOMEM, "cuda trace: out of host memory for zone crossings");
    memcpy((char *)*buf + *count * size, src, n * size);
    *count += n;
    return BF_OK;
}

/* Bytes of device scratch one ray of a batch needs. */
static size_t bytes_per_ray(uint32_t max_depth, bool zone)
{
    if (!zone)
        return 0;
    return (size_t)(max_depth + 1) * sizeof(kern_zxing_t) * 2 /* slots + compacted */ +
           3 * sizeof(float) + 4 * sizeof(uint32_t) + sizeof(kern_zray_t);
}

/* Launches the walks first .. first + count - 1 of p in batches of at
   most `batch`, and appends their zone crossings to out->zone in walk
   order; progress counts walks out of total. */
static bf_err_t run_batches(cuda_ctx *c, trace_params *p, const kern_trace_setup_t *s,
                            kern_trace_out_t *out, bool zone, uint64_t first, uint64_t count,
                            uint64_t batch, uint64_t total, char *err)
{
    bf_err_t rc;
    kern_zray_t *hrays = NULL;
    kern_zxing_t *hx = NULL;
    for (uint64_t base = first; base < first + count; base += batch) {
        if (bf_flag_up(s->cancel))
            return bf_fail(err, BF_ECANCELED, "trace cancelled");
        uint32_t n = (uint32_t)(first + count - base < batch ? first + count - base : batch);
        p->base = base;
        p->batch = n;
        trace_kernel<<<(n + THREADS - 1) / THREADS, THREADS>>>(*p);
        CK_LAUNCH("trace_kernel");
        if (zone) {
            size_t scan_bytes = c->scan_tmp.bytes;
            CK(cub::DeviceScan::ExclusiveSum(c->scan_tmp.ptr, scan_bytes, p->zcount,
                                             (uint32_t *)c->zoff.ptr, (int)n));
            flag_kernel<<<(n + THREADS - 1) / THREADS, THREADS>>>(n, p->zcount,
                                                                  (uint32_t *)c->zflag.ptr);
            CK_LAUNCH("flag_kernel");
            CK(cub::DeviceScan::ExclusiveSum(c->scan_tmp.ptr, scan_bytes, (uint32_t *)c->zflag.ptr,
                                             (uint32_t *)c->zroff.ptr, (int)n));
            uint32_t last_count, last_off, last_flag, last_roff;
            CK(cudaMemcpy(&last_count, p->zcount + n - 1, 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(&last_off, (uint32_t *)c->zoff.ptr + n - 1, 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(&last_flag, (uint32_t *)c->zflag.ptr + n - 1, 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(&last_roff, (uint32_t *)c->zroff.ptr + n - 1, 4, cudaMemcpyDeviceToHost));
            size_t nx = (size_t)last_off + last_count, nr = (size_t)last_roff + last_flag;
            compact_kernel<<<(n + THREADS - 1) / THREADS, THREADS>>>(
                n, s->max_depth, p->zcount, (uint32_t *)c->zoff.ptr, (uint32_t *)c->zroff.ptr,
                p->zdir, p->zslots, (kern_zray_t *)c->zrays_out.ptr, (kern_zxing_t *)c->zx_out.ptr);
            CK_LAUNCH("compact_kernel");
            if (nr) {
                kern_zone_data_t *z = out->zone;
                hrays = (kern_zray_t *)malloc(nr * sizeof *hrays);
                hx = (kern_zxing_t *)malloc(nx * sizeof *hx);
                if (!hrays || !hx) {
                    free(hrays);
                    free(hx);
                    return bf_fail(err, BF_ENOMEM, "cuda trace: out of host memory");
                }
                cudaError_t e1 =
                    cudaMemcpy(hrays, c->zrays_out.ptr, nr * sizeof *hrays, cudaMemcpyDeviceToHost);
                cudaError_t e2 = e1 == cudaSuccess ? cudaMemcpy(hx, c->zx_out.ptr, nx * sizeof *hx,
                                                                cudaMemcpyDeviceToHost)
                                                   : e1;
                if (e2 != cudaSuccess) {
                    free(hrays);
                    free(hx);
                    return cuda_fail(err, e2, "cudaMemcpy(zone crossings)", __FILE__, __LINE__);
                }
                rc = host_append((void **)&z->rays, &z->ray_count, &z->ray_cap, hrays, nr,
                                 sizeof *hrays, err);
                if (rc == BF_OK)
                    rc = host_append((void **)&z->xings, &z->count, &z->cap, hx, nx, sizeof *hx,
                                     err);
                free(hrays);
                free(hx);
                hrays = NULL;
                hx = NULL;
                if (rc != BF_OK)
                    return rc;
            }
        }
        if (s->progress)
            s->progress(s->progress_ud, (double)(base + n) / (double)total);
    }
    return BF_OK;
}

static bf_err_t cuda_trace(void *vctx, const kern_trace_setup_t *s, kern_trace_out_t *out,
                           char *err)
{
    cuda_ctx *c = (cuda_ctx *)vctx;
    if (!s || !out || !out->map || s->rays == 0 || s->grid.nx == 0 || s->grid.ny == 0)
        return bf_fail(err, BF_EINVAL, "cuda trace: no rays or empty grid");
    size_t cells = (size_t)s->grid.nx * s->grid.ny;
    const bool zone = s->zone_of_cell != NULL && out->zone != NULL;
    bf_err_t rc;
    out->crossings = 0;
    if (out->zone) {
        kern_zone_data_clear(out->zone);
        out->zone->zone_cells = s->zone_cells;
    }
    if ((rc = dbuf_reserve(&c->map, cells * sizeof(double), err)) != BF_OK ||
        (rc = dbuf_reserve(&c->crossings, sizeof(unsigned long long), err)) != BF_OK)
        return rc;
    CK(cudaMemset(c->map.ptr, 0, cells * sizeof(double)));
    CK(cudaMemset(c->crossings.ptr, 0, sizeof(unsigned long long)));
    if (zone && (rc = upload(&c->zone_of_cell, s->zone_of_cell, cells, err)) != BF_OK)
        return rc;

    /* Batch size: half of the free memory, at most 2^24 rays per launch. */
    uint64_t batch = s->rays < (1u << 24) ? s->rays : (1u << 24);
    size_t per_ray = bytes_per_ray(s->max_depth, zone);
    if (per_ray) {
        size_t free_b = 0, total_b = 0;
        CK(cudaMemGetInfo(&free_b, &total_b));
        uint64_t fit = (free_b / 2) / per_ray;
        if (fit < 1024)
            return bf_fail(err, BF_ECUDA, "cuda trace: out of GPU memory (%zu MiB free, %zu B/ray)",
                           free_b >> 20, per_ray);
        if (batch > fit)
            batch = fit;
        size_t b = (size_t)batch;
        if ((rc = dbuf_reserve(&c->zcount, b * sizeof(uint32_t), err)) != BF_OK ||
            (rc = dbuf_reserve(&c->zflag, b * sizeof(uint32_t), err)) != BF_OK ||
            (rc = dbuf_reserve(&c->zoff, b * sizeof(uint32_t), err)) != BF_OK ||
            (rc = dbuf_reserve(&c->zroff, b * sizeof(uint32_t), err)) != BF_OK ||
            (rc = dbuf_reserve(&c->zdir, b * 3 * sizeof(float), err)) != BF_OK ||
            (rc = dbuf_reserve(&c->zslots, b * (s->max_depth + 1) * sizeof(kern_zxing_t), err)) !=
                BF_OK ||
            (rc = dbuf_reserve(&c->zx_out, b * (s->max_depth + 1) * sizeof(kern_zxing_t), err)) !=
                BF_OK ||
            (rc = dbuf_reserve(&c->zrays_out, b * sizeof(kern_zray_t), err)) != BF_OK)
            return rc;
        size_t scan_bytes = 0;
        CK(cub::DeviceScan::ExclusiveSum(NULL, scan_bytes, (uint32_t *)c->zcount.ptr,
                                         (uint32_t *)c->zoff.ptr, (int)b));
        if ((rc = dbuf_reserve(&c->scan_tmp, scan_bytes, err)) != BF_OK)
            return rc;
    }

    trace_params p;
    memset(&p, 0, sizeof p);
    kern_bounce_init(&p.b, &c->dev, s, zone ? (const int32_t *)c->zone_of_cell.ptr : NULL);
    p.map = (double *)c->map.ptr;
    p.crossings = (unsigned long long *)c->crossings.ptr;
    if (zone) {
        p.zcount = (uint32_t *)c->zcount.ptr;
        p.zslots = (kern_zxing_t *)c->zslots.ptr;
        p.zdir = (float *)c->zdir.ptr;
    }
    /* Diffraction: the first phase finds the edges (a bit each), the plan
       makes the wedges of them on the host, the second phase walks the
       samples as indices rays .. rays + samples - 1 (kern_bounce.h). */
    const bool diffract = s->diffraction && s->max_depth > 0 && c->host.edge_count > 0;
    size_t found_words = ((size_t)c->host.edge_count + 31) / 32;
    if (diffract) {
        if ((rc = dbuf_reserve(&c->found, found_words * sizeof(uint32_t), err)) != BF_OK)
            return rc;
        CK(cudaMemset(c->found.ptr, 0, found_words * sizeof(uint32_t)));
        p.b.edge_found = (uint32_t *)c->found.ptr;
    }
    uint64_t total = diffract ? 2 * s->rays : s->rays;
    if ((rc = run_batches(c, &p, s, out, zone, 0, s->rays, batch, total, err)) != BF_OK)
        return rc;
    if (diffract) {
        uint32_t *found = (uint32_t *)calloc(found_words, sizeof *found);
        if (!found)
            return bf_fail(err, BF_ENOMEM, "cuda trace: out of host memory");
        cudaError_t e =
            cudaMemcpy(found, c->found.ptr, found_words * sizeof *found, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) {
            free(found);
            return cuda_fail(err, e, "cudaMemcpy(edges found)", __FILE__, __LINE__);
        }
        kern_dplan_t plan;
        rc = kern_dplan_make(&c->host, found, s, &plan, err);
        free(found);
        if (rc != BF_OK)
            return rc;
        if (plan.count > 0) {
            rc = upload(&c->wedges, plan.wedges, plan.count, err);
            if (rc == BF_OK)
                rc = upload(&c->wcdf, plan.cdf, plan.count, err);
            if (rc == BF_OK)
                rc = upload(&c->wdrawn, plan.drawn, plan.count, err);
            p.b.edge_found = NULL;
            p.b.dsamples = plan.samples;
            p.b.wedges = (const kern_wedge_t *)c->wedges.ptr;
            p.b.wcdf = (const float *)c->wcdf.ptr;
            p.b.wdrawn = (const uint64_t *)c->wdrawn.ptr;
            p.b.wedge_count = plan.count;
            if (rc == BF_OK)
                rc = run_batches(c, &p, s, out, zone, s->rays, plan.samples, batch,
                                 s->rays + plan.samples, err);
        }
        kern_dplan_clear(&plan);
        if (rc != BF_OK)
            return rc;
    }
    CK(cudaDeviceSynchronize());
    unsigned long long crossings = 0;
    CK(cudaMemcpy(out->map, c->map.ptr, cells * sizeof(double), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&crossings, c->crossings.ptr, sizeof crossings, cudaMemcpyDeviceToHost));
    out->crossings = crossings;
    return BF_OK;
}

static bf_err_t cuda_evaluate(void *vctx, const kern_zone_data_t *zone, const kern_antenna_t *ant,
                              const kern_rot_t *rots, size_t count, double *sums,
                              volatile int *cancel, char *err)
{
    cuda_ctx *c = (cuda_ctx *)vctx;
    if (!zone || !ant || (count && (!rots || !sums)))
        return bf_fail(err, BF_EINVAL, "cuda evaluate: bad arguments");
    if (count == 0)
        return BF_OK;
    bf_err_t rc;
    size_t zc = zone->zone_cells;
    if (zone->ray_count == 0 || zc == 0) {
        memset(sums, 0, count * zc * sizeof *sums);
        return BF_OK;
    }
    /* The zone data are immutable between traces: upload them once. */
    if (c->zone_cached != zone || c->zone_cached_count != zone->count ||
        c->zone_cached_rays != zone->ray_count) {
        uint32_t *off = (uint32_t *)malloc(zone->ray_count * sizeof *off);
        if (!off)
            return bf_fail(err, BF_ENOMEM, "cuda evaluate: out of host memory");
        uint32_t acc = 0;
        for (size_t r = 0; r < zone->ray_count; r++) {
            off[r] = acc;
            acc += zone->rays[r].count;
        }
        rc = upload(&c->ez_rays, zone->rays, zone->ray_count, err);
        if (rc == BF_OK)
            rc = upload(&c->ez_off, off, zone->ray_count, err);
        if (rc == BF_OK)
            rc = upload(&c->ez_xings, zone->xings, zone->count, err);
        free(off);
        if (rc != BF_OK)
            return rc;
        c->zone_cached = zone;
        c->zone_cached_count = zone->count;
        c->zone_cached_rays = zone->ray_count;
    }
    /* Orientations in chunks whose sums fit comfortably on the device. */
    size_t chunk = (64u << 20) / (zc * sizeof(double));
    if (chunk < 1)
        chunk = 1;
    if (chunk > 4096)
        chunk = 4096;
    for (size_t first = 0; first < count; first += chunk) {
        if (bf_flag_up(cancel))
            return bf_fail(err, BF_ECANCELED, "evaluation cancelled");
        size_t n = count - first < chunk ? count - first : chunk;
        if ((rc = upload(&c->ez_rots, rots + first, n, err)) != BF_OK ||
            (rc = dbuf_reserve(&c->ez_sums, n * zc * sizeof(double), err)) != BF_OK)
            return rc;
        CK(cudaMemset(c->ez_sums.ptr, 0, n * zc * sizeof(double)));
        uint64_t threads = (uint64_t)zone->ray_count * n;
        uint64_t blocks = (threads + THREADS - 1) / THREADS;
        if (blocks > 0x7fffffffu)
            return bf_fail(err, BF_EINVAL, "cuda evaluate: too many zone rays x orientations");
        evaluate_kernel<<<(unsigned)blocks, THREADS>>>(
            (const kern_zray_t *)c->ez_rays.ptr, (const uint32_t *)c->ez_off.ptr,
            (const kern_zxing_t *)c->ez_xings.ptr, (uint32_t)zone->ray_count, *ant,
            (const kern_rot_t *)c->ez_rots.ptr, (uint32_t)n, (uint32_t)zc,
            (double *)c->ez_sums.ptr);
        CK_LAUNCH("evaluate_kernel");
        CK(cudaMemcpy(sums + first * zc, c->ez_sums.ptr, n * zc * sizeof(double),
                      cudaMemcpyDeviceToHost));
    }
    return BF_OK;
}

/* The devices entry: every device the runtime lists and can describe. */
/* A GPU counts as usable only once every kernel has run on it: a launch of
   each with no work (so that its image is loaded, JIT-compiled from the PTX
   if it must be), then a synchronize. Fills why ("" when all ran). Runs in
   the discovery child, whose CUDA context goes with it. */
static void probe_device(int index, const kern_device_t *d, char *why, size_t n)
{
    why[0] = '\0';
    cudaError_t e = cudaSetDevice(index);
    if (e == cudaSuccess) {
        trace_params tp;
        memset(&tp, 0, sizeof tp); /* batch 0: every thread returns at once */
        trace_kernel<<<1, 32>>>(tp);
        compact_kernel<<<1, 32>>>(0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        flag_kernel<<<1, 32>>>(0, NULL, NULL);
        kern_antenna_t ant;
        memset(&ant, 0, sizeof ant);
        evaluate_kernel<<<1, 32>>>(NULL, NULL, NULL, 0, ant, NULL, 0, 0, NULL);
        e = cudaGetLastError();
        if (e == cudaSuccess)
            e = cudaDeviceSynchronize();
    }
    if (e == cudaSuccess)
        return;
    int driver = 0;
    cudaDriverGetVersion(&driver);
    char built[96];
    if (kern_cuda_targets(NULL, built, sizeof built) <= 0)
        bf_strlcpy(built, "?", sizeof built);
    int w = snprintf(why, n,
                     "a probe launch failed: %s (%s); the GPU is sm_%d%d, this binary carries %s, "
                     "the driver supports CUDA %d.%d and the toolkit was %d.%d",
                     cudaGetErrorName(e), cudaGetErrorString(e), d->cc_major, d->cc_minor, built,
                     driver / 1000, driver % 1000 / 10, CUDART_VERSION / 1000,
                     CUDART_VERSION % 1000 / 10);
    if (w < 0 || (size_t)w >= n) /* cut short: still one line */
        bf_strlcpy(why + n - 4, "...", 4);
    cudaGetLastError();
}

static int cuda_devices(kern_device_t *out, int max)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int k = 0;
    for (int i = 0; i < n && k < max; i++) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
            cudaGetLastError();
            continue;
        }
        kern_device_t *d = &out[k++];
        memset(d, 0, sizeof *d);
        d->index = i;
        bf_strlcpy(d->name, prop.name, sizeof d->name);
        d->memory_bytes = prop.totalGlobalMem;
        d->cc_major = prop.major;
        d->cc_minor = prop.minor;
        const unsigned char *u = (const unsigned char *)prop.uuid.bytes;
        snprintf(d->uuid, sizeof d->uuid,
                 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                 u[14], u[15]);
        probe_device(i, d, d->unusable, sizeof d->unusable);
    }
    return k;
}

static const kern_backend_t cuda_backend = {
    "cuda", cuda_ctx_new, cuda_ctx_destroy, cuda_trace, cuda_evaluate, cuda_devices,
};

extern "C" const kern_backend_t *kern_backend_cuda(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError(); /* clear the error of a machine without a driver */
        return NULL;
    }
    return &cuda_backend;
}
