/*  kernels/kern_traverse.h - closest-hit ray casting through a kern_bvh,
    written once for the host and the device (see kern_hd.h): a stack-based
    walk that visits the nearer child first, a slab test with a precomputed
    inverse direction, and the watertight ray-triangle test of Woop, Benthin
    and Wald (JCGT 2013), which never lets a ray slip through the shared edge
    or vertex of two triangles. Two-sided: either face is hit. */

#ifndef KERN_TRAVERSE_H_INCLUDED
#define KERN_TRAVERSE_H_INCLUDED

#include "kern_bvh.h"
#include "kern_hd.h"

/* tri is the ORIGINAL triangle index, UINT32_MAX for a miss. */
typedef struct {
    float t, u, v;
    uint32_t tri;
} kern_hit_t;

#define KERN_STACK 64

/* The ray set up once for the watertight test: the dominant axis kz of the
   direction becomes z, and the shear (sx, sy, sz) maps the ray onto +z. */
typedef struct {
    int kx, ky, kz;
    float sx, sy, sz;
} kern_watertight_t;

KERN_HD kern_watertight_t kern_watertight_setup(kern_v3 dir)
{
    kern_watertight_t w;
    float ax = fabsf(dir.x), ay = fabsf(dir.y), az = fabsf(dir.z);
    w.kz = ax > ay ? (ax > az ? 0 : 2) : (ay > az ? 1 : 2);
    w.kx = w.kz == 2 ? 0 : w.kz + 1;
    w.ky = w.kx == 2 ? 0 : w.kx + 1;
    if (v3_get(dir, w.kz) < 0.0f) { /* keep the winding: swap kx and ky */
        int t = w.kx;
        w.kx = w.ky;
        w.ky = t;
    }
    float dz = v3_get(dir, w.kz);
    w.sx = v3_get(dir, w.kx) / dz;
    w.sy = v3_get(dir, w.ky) / dz;
    w.sz = 1.0f / dz;
    return w;
}

/* Intersects triangle (a, b, c) in (tmin, t_best); updates the hit. */
KERN_HD int kern_watertight_hit(const kern_watertight_t *w, kern_v3 org, const float *tri,
                                float tmin, kern_hit_t *hit)
{
    kern_v3 A = v3_sub(v3(tri[0], tri[1], tri[2]), org);
    kern_v3 B = v3_sub(v3(tri[3], tri[4], tri[5]), org);
    kern_v3 C = v3_sub(v3(tri[6], tri[7], tri[8]), org);
    float Az = v3_get(A, w->kz), Bz = v3_get(B, w->kz), Cz = v3_get(C, w->kz);
    float Ax = v3_get(A, w->kx) - w->sx * Az, Ay = v3_get(A, w->ky) - w->sy * Az;
    float Bx = v3_get(B, w->kx) - w->sx * Bz, By = v3_get(B, w->ky) - w->sy * Bz;
    float Cx = v3_get(C, w->kx) - w->sx * Cz, Cy = v3_get(C, w->ky) - w->sy * Cz;
    float U = Cx * By - Cy * Bx, V = Ax * Cy - Ay * Cx, W = Bx * Ay - By * Ax;
    if (U == 0.0f || V == 0.0f || W == 0.0f) {
        /* On an edge in float: decide in double, as the paper does, so the
           two triangles sharing the edge agree. */
        double CxBy = (double)Cx * By, CyBx = (double)Cy * Bx;
        double AxCy = (double)Ax * Cy, AyCx = (double)Ay * Cx;
        double BxAy = (double)Bx * Ay, ByAx = (double)By * Ax;
        U = (float)(CxBy - CyBx);
        V = (float)(AxCy - AyCx);
        W = (float)(BxAy - ByAx);
    }
    if ((U < 0.0f || V < 0.0f || W < 0.0f) && (U > 0.0f || V > 0.0f || W > 0.0f))
        return 0;
    float det = U + V + W;
    if (det == 0.0f)
        return 0;
    float T = U * (w->sz * Az) + V * (w->sz * Bz) + W * (w->sz * Cz);
    float inv = 1.0f / det;
    float t = T * inv;
    if (!(t > tmin) || !(t < hit->t))
        return 0;
    hit->t = t;
    hit->u = U * inv;
    hit->v = V * inv;
    return 1;
}

/* Entry distance of the ray into box [lo, hi], or INFINITY if it misses or
   enters beyond tmax. */
KERN_HD float kern_box_enter(const kern_bvh_node_t *n, kern_v3 org, kern_v3 inv, float tmin,
                             float tmax)
{
    float t0x = (n->lo[0] - org.x) * inv.x, t1x = (n->hi[0] - org.x) * inv.x;
    float t0y = (n->lo[1] - org.y) * inv.y, t1y = (n->hi[1] - org.y) * inv.y;
    float t0z = (n->lo[2] - org.z) * inv.z, t1z = (n->hi[2] - org.z) * inv.z;
    float tn = fmaxf(fmaxf(fminf(t0x, t1x), fminf(t0y, t1y)), fmaxf(fminf(t0z, t1z), tmin));
    float tf = fminf(fminf(fmaxf(t0x, t1x), fmaxf(t0y, t1y)), fminf(fmaxf(t0z, t1z), tmax));
    /* 1 + 2 gamma(3) widening keeps the slab test conservative (Ize 2013). */
    tf *= 1.00000024f;
    return tn <= tf ? tn : INFINITY;
}

KERN_HD float kern_safe_inv(float d)
{
    /* A zero component gives +-inf, which the slab test handles, but 0 * inf
       is NaN when the origin lies on a slab: nudge to a huge finite value. */
    if (fabsf(d) < 1e-30f)
        return d < 0.0f ? -1e30f : 1e30f;
    return 1.0f / d;
}

/* Closest hit of the ray org + t dir, t in (tmin, tmax). Returns 1 on a hit
   and fills *hit (t, barycentrics u, v, original triangle index). */
KERN_HD int kern_trace_closest(const kern_bvh_view_t *bvh, kern_v3 org, kern_v3 dir, float tmin,
                               float tmax, kern_hit_t *hit)
{
    hit->t = tmax;
    hit->tri = UINT32_MAX;
    hit->u = hit->v = 0.0f;
    if (bvh->node_count == 0)
        return 0;
    kern_v3 inv = v3(kern_safe_inv(dir.x), kern_safe_inv(dir.y), kern_safe_inv(dir.z));
    kern_watertight_t w = kern_watertight_setup(dir);
    uint32_t stack[KERN_STACK];
    int sp = 0;
    uint32_t node = 0;
    uint32_t best = UINT32_MAX;
    if (kern_box_enter(&bvh->nodes[0], org, inv, tmin, hit->t) == INFINITY)
        return 0;
    for (;;) {
        const kern_bvh_node_t *n = &bvh->nodes[node];
        if (n->count > 0) {
            for (uint32_t i = n->first; i < n->first + n->count; i++)
                if (kern_watertight_hit(&w, org, &bvh->tris[9 * (size_t)i], tmin, hit))
                    best = i;
        } else {
            uint32_t l = n->first, r = n->first + 1;
            float tl = kern_box_enter(&bvh->nodes[l], org, inv, tmin, hit->t);
            float tr = kern_box_enter(&bvh->nodes[r], org, inv, tmin, hit->t);
            if (tl != INFINITY && tr != INFINITY) {
                uint32_t near_ = tl <= tr ? l : r, far_ = tl <= tr ? r : l;
                if (sp < KERN_STACK)
                    stack[sp++] = far_;
                node = near_;
                continue;
            }
            if (tl != INFINITY) {
                node = l;
                continue;
            }
            if (tr != INFINITY) {
                node = r;
                continue;
            }
        }
        /* pop, skipping nodes now farther than the best hit */
        for (;;) {
            if (sp == 0)
                goto done;
            node = stack[--sp];
            if (kern_box_enter(&bvh->nodes[node], org, inv, tmin, hit->t) != INFINITY)
                break;
        }
    }
done:
    if (best == UINT32_MAX)
        return 0;
    hit->tri = bvh->tri_ids[best];
    return 1;
}

#endif
