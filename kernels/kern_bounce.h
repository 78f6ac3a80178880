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

    The walk leaves out work whose result no crossing would use, and so
    records what a plain walk records, bit for bit (kern_cpu_test's "plain
    walk"): the antenna field waits for the ray's first crossing and the
    launch basis for its first bounce; the last segment is walked only up
    to its plane crossing, and not at all when it has none; and the last
    interaction is skipped when neither way out of the surface heads for
    the plane (kern_ray_exit_may_cross).

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
    uint64_t seed_mix; /* kern_mix64(seed), for kern_rand_mixed */
    uint32_t max_depth;
    int los, reflection, refraction, surface_offset;
    int diffuse; /* diffuse reflection (off by default, as in Sionna RT) */
    kern_v3 tx;
    kern_antenna_t antenna;
    kern_rot_t rot; /* the orientation of the map */
    kern_grid_t grid;
    /* Diffraction. The first phase (rays 0 .. rays - 1) sets a bit per
       edge its depth-0 rays find (edge_found; NULL: nothing to find); the
       second walks dsamples samples, as indices rays .. rays + dsamples -
       1, over the plan's wedges. */
    uint32_t *edge_found;
    int diffraction_model; /* KERN_UTD_* */
    uint64_t dsamples;
    const kern_wedge_t *wedges;
    const float *wcdf;
    const uint64_t *wdrawn;
    uint32_t wedge_count;
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
    b->seed_mix = kern_mix64(s->seed);
    b->max_depth = s->max_depth;
    b->los = s->los;
    b->reflection = s->reflection;
    b->refraction = s->refraction;
    b->surface_offset = s->surface_offset;
    b->diffuse = s->diffuse_reflection;
    b->diffraction_model = s->diffraction_model;
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

enum { KERN_WALK_SEGMENT, KERN_WALK_BOUNCE, KERN_WALK_DONE, KERN_WALK_DIFFRACT };

/* A ray on its way: its state, the end of its current segment, and its
   departure direction d0 (which a zone record keeps) with the antenna's
   field along it. The field is computed at the ray's first plane crossing
   (have_f), not at its launch: most of the rays that leave the scene
   upwards never cross the plane, and the pattern (two arc tangents and an
   exponential for TR 38.901) was an eighth of a radio map's time. The
   field is a function of d0 alone, so when it is computed changes no bit. */
typedef struct {
    kern_ray_t ray;
    kern_hit_t hit;
    kern_v3 d0;
    float f[2][2];
    uint64_t n;
    int next;   /* KERN_WALK_* */
    int have_f; /* f holds the antenna's field along d0 */
} kern_walk_t;

/* Launches ray n of the trace b (a diffraction sample from n = b->rays on). */
KERN_HD void kern_walk_start(kern_walk_t *w, const kern_bounce_t *b, uint64_t n)
{
    if (n >= b->rays) {
        w->n = n;
        w->next = KERN_WALK_DIFFRACT;
        return;
    }
    kern_ray_start(&w->ray, b->tx, kern_fibonacci_dir(n, b->rays)); /* basis at the first bounce */
    w->d0 = w->ray.dir;
    w->have_f = 0;
    w->n = n;
    w->next = KERN_WALK_SEGMENT;
}

/* Sionna RT's discovery of the wedges (sample_wedge_diffraction_point):
   a depth-0 ray that hits a face looks at the face's edges from a point
   0.1 m off the hit point, tilted 0.05 rad up from the surface along the
   ray's way along it, on the side of the face's winding normal; the edges
   that are silhouettes from there (Mitsuba's test: the faces on either
   side turn opposite ways to the point; a free edge always is) are
   candidates, and the ray's number k = 3 picks one of them uniformly.
   Sets the picked edge's bit in b->edge_found. On a mesh wound inwards
   the point lies inside the solid, and only hits within 0.1 m of an edge
   find it; docs/radio.md says what that means for the maps. */
KERN_HD void kern_wedge_discover(const kern_bounce_t *b, const kern_walk_t *w)
{
    uint32_t tri = w->hit.tri;
    const float *tv = &b->geom.tri_verts[9 * (size_t)tri];
    const float *nf = &b->geom.normals[3 * (size_t)tri];
    kern_v3 n = v3(nf[0], nf[1], nf[2]);
    kern_v3 ki = w->ray.dir;
    kern_v3 tg = v3_sub(ki, v3_scale(n, v3_dot(ki, n)));
    float tl = v3_len(tg);
    if (!(tl > 0.0f))
        return; /* normal incidence: Sionna's tangent is undefined (NaN) */
    kern_v3 p = v3_add(w->ray.org, v3_scale(ki, w->hit.t));
    /* 0.1 (cos(pi/2 - 0.05) n + sin(pi/2 - 0.05) t) */
    kern_v3 vp = v3_add(p, v3_add(v3_scale(n, 0.0049979169f), v3_scale(tg, 0.099875026f / tl)));
    int sil[3], cnt = 0;
    for (int k = 0; k < 3; k++) {
        uint32_t nb = b->geom.tri_nbr[3 * (size_t)tri + k];
        if (nb == UINT32_MAX) {
            sil[k] = 1;
        } else {
            int j = (k + 1) % 3; /* the edge's end vertex, Mitsuba's choice */
            kern_v3 r = v3_sub(v3(tv[3 * j], tv[3 * j + 1], tv[3 * j + 2]), vp);
            const float *no = &b->geom.normals[3 * (size_t)nb];
            float c = mul_rn(v3_dot(r, v3(no[0], no[1], no[2])), kern_signf(v3_dot(r, n)));
            sil[k] = c < 0.0f;
        }
        cnt += sil[k];
    }
    if (cnt == 0)
        return;
    float u = kern_rand_k(b->seed, w->n, 0, 3), acc = 0.0f, wk = 1.0f / (float)cnt;
    int pick = 0;
    for (int k = 0; k < 3; k++) {
        acc += sil[k] ? wk : 0.0f;
        if (k < 2 && u >= acc)
            pick = k + 1;
    }
    uint32_t e = b->geom.tri_edge[3 * (size_t)tri + pick];
    if (e != UINT32_MAX)
        kern_atomic_or32(&b->edge_found[e / 32], 1u << (e % 32));
}

/* Closest hit, through the walk each backend uses. */
KERN_HD void kern_walk_closest(const kern_bounce_t *b, kern_v3 org, kern_v3 dir, float tmax,
                               kern_hit_t *hit)
{
#if defined(__CUDACC__)
    kern_trace_closest(&b->geom.bvh, org, dir, 0.0f, tmax, hit);
#else /* the same hit, bit for bit, through the eight- or four-wide tree */
    kern_trace_closest_wide(&b->geom.bvh, org, dir, 0.0f, tmax, hit);
#endif
}

/* Does anything lie between p and q? Mitsuba's spawn_ray_to, which Sionna
   RT's visibility tests use: the segment stops 100 ulp(1) of its length
   short of q. */
KERN_HD int kern_occluded(const kern_bounce_t *b, kern_v3 p, kern_v3 q)
{
    kern_v3 d = v3_sub(q, p);
    float len = v3_len(d);
    if (!(len > 0.0f))
        return 0;
    kern_hit_t hit;
    kern_walk_closest(b, p, v3_scale(d, 1.0f / len), mul_rn(len, 1.0f - KERN_DIFF_EPS), &hit);
    return hit.tri != UINT32_MAX;
}

/* Diffraction sample m = w->n - b->rays (Sionna RT 2.x's first-order
   diffraction, docs/radio.md): a wedge drawn by length, a point on it, the
   transmitter's view of it, a direction on its Keller cone, and where that
   direction meets the measurement plane, seen from the point. Returns 1
   with the crossing in *x and w->d0 (the departure direction to the
   point) and w->f set, 0 when the sample adds nothing. Its weight is the
   area the sample stands for on the plane, the wedge's length times the
   sampled azimuths over the samples drawn on the wedge
   (kern_diffract_jacobian). */
KERN_HD int kern_diffract_next(kern_walk_t *w, const kern_bounce_t *b, kern_crossing_t *x)
{
    uint64_t m = w->n - b->rays;
    uint32_t iw =
        kern_diffract_pick(b->wcdf, b->wedge_count, kern_rand_k(b->seed, m, KERN_DIFF_STREAM, 0));
    const kern_wedge_t *wd = &b->wedges[iw];
    kern_v3 o = kern_v3_of(wd->o), e = kern_v3_of(wd->e);
    kern_v3 p =
        v3_add(o, v3_scale(e, mul_rn(kern_rand_k(b->seed, m, KERN_DIFF_STREAM, 1), wd->length)));
    kern_v3 ki = v3_sub(p, b->tx);
    float sp = v3_len(ki);
    if (!(sp > KERN_DIFF_MIN_SEGMENT))
        return 0;
    ki = v3_scale(ki, 1.0f / sp);
    kern_v3 ne =
        wd->screen ? v3(0.0f, 0.0f, 0.0f) : v3_norm(v3_add(kern_v3_of(wd->n0), kern_v3_of(wd->nn)));
    kern_v3 po = v3_add(p, v3_scale(ne, KERN_DIFF_VIS_OFFSET));
    if (kern_occluded(b, b->tx, p) || kern_occluded(b, b->tx, po))
        return 0;
    kern_v3 ko = kern_keller_dir(wd, ki, kern_rand_k(b->seed, m, KERN_DIFF_STREAM, 2));
    const kern_grid_t *g = &b->grid;
    if (ko.z == 0.0f)
        return 0;
    float tau = (g->z - p.z) / ko.z;
    if (!(tau > 0.0f))
        return 0;
    kern_v3 q = v3_add(p, v3_scale(ko, tau));
    float fx = (q.x - g->x0) / g->dx, fy = (q.y - g->y0) / g->dy;
    if (!(fx >= 0.0f) || !(fy >= 0.0f) || !(fx < (float)g->nx) || !(fy < (float)g->ny))
        return 0;
    uint32_t ix = (uint32_t)fx, iy = (uint32_t)fy;
    if (ix >= g->nx || iy >= g->ny)
        return 0;
    float s = v3_len(v3_sub(q, p));
    if (!(s > KERN_DIFF_MIN_SEGMENT))
        return 0;
    if (kern_occluded(b, q, p) || kern_occluded(b, q, po))
        return 0;
    kern_ray_t r;
    const kern_mat_t *mat = &b->geom.mats[b->geom.tri_material[wd->tri0]];
    if (!kern_utd_jones(wd, mat, ki, ko, s, sp, b->geom.wavenumber, b->diffraction_model, r.j))
        return 0;
    float jac = kern_diffract_jacobian(wd, b->tx, p, ko, tau);
    float wt = mul_rn(mul_rn(jac, wd->length), wd->ext) / (float)b->wdrawn[iw];
    if (!(wt > 0.0f))
        return 0;
    x->cell = iy * g->nx + ix;
    kern_ray_form(&r, wt, x->m);
    w->d0 = ki;
    kern_antenna_field(&b->antenna, &b->rot, ki, w->f);
    w->have_f = 1;
    x->power = kern_form_power(w->f, x->m);
    x->zone = b->zone_of_cell ? b->zone_of_cell[x->cell] : -1;
    return 1;
}

/* Fills the crossing *x of weight wt in cell x->cell: the ray's form, and
   its power for the antenna's field along d0 (computed at the first
   crossing). */
KERN_HD void kern_walk_cross(kern_walk_t *w, const kern_bounce_t *b, float wt, kern_crossing_t *x)
{
    kern_ray_form(&w->ray, wt, x->m);
    if (!w->have_f) {
        kern_antenna_field(&b->antenna, &b->rot, w->d0, w->f);
        w->have_f = 1;
    }
    x->power = kern_form_power(w->f, x->m);
    x->zone = b->zone_of_cell ? b->zone_of_cell[x->cell] : -1;
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
        if (w->next == KERN_WALK_DIFFRACT) {
            w->next = KERN_WALK_DONE;
            return kern_diffract_next(w, b, x);
        }
        if (w->next == KERN_WALK_BOUNCE) {
            uint32_t tri = w->hit.tri;
            const float *nn = &b->geom.normals[3 * (size_t)tri];
            const kern_mat_t *mat = &b->geom.mats[b->geom.tri_material[tri]];
            uint32_t depth = w->ray.depth;
            kern_v3 nv = v3(nn[0], nn[1], nn[2]);
            /* the diffuse direction's two numbers, only where one can be drawn */
            int diffuse = b->diffuse && mat->s > 0.0f;
            if (depth + 1 >= b->max_depth && !diffuse &&
                !kern_ray_exit_may_cross(&w->ray, w->hit.t, nv, b->reflection, b->refraction,
                                         b->surface_offset, &b->grid)) {
                /* the segment after this interaction is the ray's last, and
                   neither way out of the surface crosses the plane: no event
                   can add anything (a ray off the ground, or up a wall) */
                w->next = KERN_WALK_DONE;
                return 0;
            }
            if (depth == 0) /* kern_ray_launch's basis, which the launch left out */
                kern_sph_basis(w->ray.dir, &w->ray.u, &w->ray.v);
            float u1 = diffuse ? kern_rand_k(b->seed, w->n, depth, 1) : 0.0f;
            float u2 = diffuse ? kern_rand_k(b->seed, w->n, depth, 2) : 0.0f;
            if (!kern_ray_interact_ex(
                    &w->ray, w->hit.t, nv, *mat, kern_rand_mixed(b->seed_mix, w->n, depth), u1, u2,
                    b->reflection, diffuse, b->refraction, b->surface_offset, b->grid.omega)) {
                w->next = KERN_WALK_DONE;
                return 0;
            }
        }
        if (w->ray.depth >= b->max_depth && !(b->edge_found && w->ray.depth == 0)) {
            /* The ray's last segment: it ends here whatever it hits, so the
               hit matters only if it comes before the plane. No crossing,
               no walk; else a walk that stops just past the crossing
               (nextafterf(t, INFINITY), exact in C and CUDA alike: a hit at t blocks
               it, as below). The
               closest hit is the smallest candidate in (0, tmax), and a
               candidate's leaf meets the shorter range too (kern_traverse.h),
               so this walk finds a hit exactly when the unbounded one finds
               its hit at or before t, and the same hit: the same crossings,
               bit for bit. */
            w->next = KERN_WALK_DONE;
            float tc = 0.0f, wt;
            if (!(b->los || w->ray.depth > 0) ||
                !((wt = kern_plane_crossing_at(&w->ray, INFINITY, &b->grid, &x->cell, &tc)) > 0.0f))
                return 0;
            kern_walk_closest(b, w->ray.org, w->ray.dir, nextafterf(tc, INFINITY), &w->hit);
            if (w->hit.tri != UINT32_MAX && w->hit.tri < b->geom.tri_count)
                return 0;
            kern_walk_cross(w, b, wt, x);
            return 1;
        }
        kern_walk_closest(b, w->ray.org, w->ray.dir, INFINITY, &w->hit);
        int miss = w->hit.tri == UINT32_MAX || w->hit.tri >= b->geom.tri_count;
        if (b->edge_found && !miss && w->ray.depth == 0)
            kern_wedge_discover(b, w);
        w->next = miss || w->ray.depth >= b->max_depth ? KERN_WALK_DONE : KERN_WALK_BOUNCE;
        float wt;
        if ((b->los || w->ray.depth > 0) &&
            (wt = kern_plane_crossing(&w->ray, miss ? INFINITY : w->hit.t, &b->grid, &x->cell)) >
                0.0f) {
            kern_walk_cross(w, b, wt, x);
            return 1;
        }
    }
}

#endif
