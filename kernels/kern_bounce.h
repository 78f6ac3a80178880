/*  kernels/kern_bounce.h - one ray's walk through the scene, written once
    for both backends (DESIGN 6.4): launch on the Fibonacci lattice, closest
    hit, plane crossing, event choice at the surface, next segment, until
    the ray leaves the scene, stops, or reaches max_depth interactions. It is
    an iterator, kern_walk_next, that hands each plane crossing to its
    caller, so that the backends keep only what differs between them: how
    rays are split over threads, and where a crossing goes. kern_cpu.c
    appends it to its chunk's buffers; kern_cuda.cu adds it to the map with
    an atomic and writes zone crossings into the ray's slots. The physics is
    kern_radio.h's and kern_traverse.h's, whose arithmetic is the same bits
    on the host and the device (kern_hd.h), so both backends walk every ray
    along the same path and record the same numbers. (The host finds each
    closest hit through the eight- or four-wide tree, kern_traverse_wide.h, which
    returns the binary walk's hit bit for bit.)

    kern_walk_* are valid C11 and CUDA C++ (kern_hd.h); kern_bounce_init is
    host code. */

#ifndef KERN_BOUNCE_H_INCLUDED
#define KERN_BOUNCE_H_INCLUDED

#include "kern.h"
#include "kern_traverse.h"
#if !defined(__CUDACC__)
#include "kern_traverse_wide.h"
#endif

#include <string.h>

/* What the walk of every ray of one trace reads, by value (a CUDA kernel
   takes it as its parameter). Pointers are in the memory of whoever walks:
   host memory for the CPU, device memory for CUDA. */
typedef struct {
    kern_geom_t geom;
    const int32_t *zone_of_cell; /* grid cell -> zone cell or -1; NULL: nothing recorded */
    uint64_t rays, seed;
    uint32_t max_depth;
    int los, reflection, refraction, surface_offset;
    int diffuse; /* diffuse reflection (off by default, as in Sionna RT) */
    kern_v3 tx;
    kern_antenna_t antenna;
    kern_rot_t rot; /* the orientation of the map */
    kern_grid_t grid;
} kern_bounce_t;

/* The trace setup s over the geometry geom, with the zone map zone_of_cell
   (which may differ from s->zone_of_cell: a device copy, or NULL when the
   caller records no zone). */
static inline void kern_bounce_init(kern_bounce_t *b, const kern_geom_t *geom,
                                    const kern_trace_setup_t *s, const int32_t *zone_of_cell)
{
    memset(b, 0, sizeof *b);
    b->geom = *geom;
    b->zone_of_cell = zone_of_cell;
    b->rays = s->rays;
    b->seed = s->seed;
    b->max_depth = s->max_depth;
    b->los = s->los;
    b->reflection = s->reflection;
    b->refraction = s->refraction;
    b->surface_offset = s->surface_offset;
    b->diffuse = s->diffuse_reflection;
    b->tx = s->tx;
    b->antenna = s->antenna;
    b->rot = s->rot;
    b->grid = s->grid;
}

/* One plane crossing of a ray segment inside the grid. */
typedef struct {
    uint32_t cell; /* grid cell */
    int32_t zone;  /* its zone cell; -1 outside the zone or when nothing is recorded */
    float power;   /* f^T M f for the map's orientation: what the cell's sum gets */
    float m[3];    /* weight * Re(J^H J) (kern_ray_form): what a zone record keeps */
} kern_crossing_t;

enum { KERN_WALK_SEGMENT, KERN_WALK_BOUNCE, KERN_WALK_DONE };

/* A ray on its way: its state, the end of its current segment, and its
   departure direction d0 (which a zone record keeps) with the antenna's
   field along it. */
typedef struct {
    kern_ray_t ray;
    kern_hit_t hit;
    kern_v3 d0;
    float f[2][2];
    uint64_t n;
    int next; /* KERN_WALK_* */
} kern_walk_t;

/* Launches ray n of the trace b. */
KERN_HD void kern_walk_start(kern_walk_t *w, const kern_bounce_t *b, uint64_t n)
{
    kern_ray_launch(&w->ray, b->tx, n, b->rays);
    w->d0 = w->ray.dir;
    kern_antenna_field(&b->antenna, &b->rot, w->d0, w->f);
    w->n = n;
    w->next = KERN_WALK_SEGMENT;
}

/* Follows the ray to its next plane crossing, in segment order: fills *x
   and returns 1, or returns 0 once the ray is done (and on every call
   after). A segment counts from the transmitter when b->los, and after
   every interaction; it ends at the closest hit, or never for a miss. */
KERN_HD int kern_walk_next(kern_walk_t *w, const kern_bounce_t *b, kern_crossing_t *x)
{
    for (;;) {
        if (w->next == KERN_WALK_DONE)
            return 0;
        if (w->next == KERN_WALK_BOUNCE) {
            uint32_t tri = w->hit.tri;
            const float *nn = &b->geom.normals[3 * (size_t)tri];
            kern_mat_t mat = b->geom.mats[b->geom.tri_material[tri]];
            uint32_t depth = w->ray.depth;
            /* the diffuse direction's two numbers, only where one can be drawn */
            int diffuse = b->diffuse && mat.s > 0.0f;
            float u1 = diffuse ? kern_rand_k(b->seed, w->n, depth, 1) : 0.0f;
            float u2 = diffuse ? kern_rand_k(b->seed, w->n, depth, 2) : 0.0f;
            if (!kern_ray_interact_ex(&w->ray, w->hit.t, v3(nn[0], nn[1], nn[2]), mat,
                                      kern_rand(b->seed, w->n, depth), u1, u2, b->reflection,
                                      diffuse, b->refraction, b->surface_offset, b->grid.omega)) {
                w->next = KERN_WALK_DONE;
                return 0;
            }
        }
#if defined(__CUDACC__)
        kern_trace_closest(&b->geom.bvh, w->ray.org, w->ray.dir, 0.0f, INFINITY, &w->hit);
#else /* the same hit, bit for bit, through the eight- or four-wide tree */
        kern_trace_closest_wide(&b->geom.bvh, w->ray.org, w->ray.dir, 0.0f, INFINITY, &w->hit);
#endif
        int miss = w->hit.tri == UINT32_MAX || w->hit.tri >= b->geom.tri_count;
        w->next = miss || w->ray.depth >= b->max_depth ? KERN_WALK_DONE : KERN_WALK_BOUNCE;
        float wt;
        if ((b->los || w->ray.depth > 0) &&
            (wt = kern_plane_crossing(&w->ray, miss ? INFINITY : w->hit.t, &b->grid, &x->cell)) >
                0.0f) {
            kern_ray_form(&w->ray, wt, x->m);
            x->power = kern_form_power(w->f, x->m);
            x->zone = b->zone_of_cell ? b->zone_of_cell[x->cell] : -1;
            return 1;
        }
    }
}

#endif
