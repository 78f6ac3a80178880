/*  kernels/kern_traverse.h - closest-hit ray casting through a kern_bvh,
    written once for the host and the device (see kern_hd.h): a stack-based
    walk that visits the nearer child first, a slab test with a precomputed
    inverse direction, and the watertight ray-triangle test of Woop, Benthin
    and Wald (JCGT 2013), which never lets a ray slip through the shared edge
    or vertex of two triangles. Two-sided: either face is hit. No recursion,
    no allocation: the stack is a fixed array of KERN_STACK entries, and
    kern_bvh_new() caps the tree depth below it. The CUDA backend walks
    this; the CPU backend walks an eight- or four-wide tree with the same
    leaves (kern_traverse_wide.h).
    The closest hit is defined without reference to any walk order. A
    candidate is a triangle the ray meets (kern_tri_hit) in a leaf whose
    box the ray meets (kern_box_hit against tmax alone); its distance is
    the computed t raised to the leaf's entry distance tn where rounding
    put it in front of the box (grazing rays: the watertight test's t can
    lie a few ulps before the slab test's tn). The hit is the candidate
    with the smallest such t in (tmin, tmax), and among equal t the
    smallest original triangle index. Why any walk order finds it: a box
    above a leaf has, per axis, a near plane no nearer than the leaf's
    (bounds are minima and maxima of the same floats, rounding is
    monotone), so its tn is at most the leaf's; a walk skips a box only
    when tn exceeds the best distance so far (times KERN_SLAB_WIDEN), and
    the best so far is never below the answer's distance, which is at least
    its leaf's tn. So the answer's leaf is always visited, and the answer is
    taken there, whatever was visited before. Both walks (this one, and
    kern_traverse_wide.h's over a tree with the same leaves) and both
    backends thus agree bit for bit without keeping one order;
    kern_bvh_test checks this walk against brute force over the
    candidates, kern_traverse_wide_test the two walks against each other.

    Everything here is valid C11 and CUDA C++; min/max are kern_minf and
    kern_maxf (kern_hd.h), comparisons, because fminf/fmaxf are library
    calls on the host unless finite math is assumed. Every product is mul_rn
    (kern_hd.h): an edge function computed with a fused multiply-add is no
    longer the exact negative of its twin in the neighbouring triangle, and
    rays slip through the shared edge; so the host and the device round each
    product on its own, and trace the same hits. */

#ifndef KERN_TRAVERSE_H_INCLUDED
#define KERN_TRAVERSE_H_INCLUDED

#include "kern_bvh.h"
#include "kern_hd.h"

/* tri is the ORIGINAL triangle index, UINT32_MAX for a miss. u, v are the
   barycentric weights of v0 and v1 of that triangle (v2 gets 1 - u - v). */
typedef struct {
    float t, u, v;
    uint32_t tri;
} kern_hit_t;

#define KERN_STACK 64

/* 1 + 2 gamma(3) (Ize 2013): widening the far slab distance by this keeps the
   float slab test conservative, so rounding never culls a box the ray
   touches. */
#define KERN_SLAB_WIDEN 1.00000024f

/* A ray prepared once for the slab and the watertight tests: the origin,
   the inverse direction, per axis the near plane of every box (nx, ny, nz:
   0 for lo, 4 for hi, as float offsets into a node), the dominant axis kz of
   the direction with kx, ky the other two, the shear (sx, sy, sz) that maps
   the direction onto +z, and the origin in that permuted order (px, py,
   pz). Public so that tests can run the triangle test alone. */
typedef struct {
    float ox, oy, oz;
    float ix, iy, iz;
    int nx, ny, nz;
    int kx, ky, kz;
    float sx, sy, sz;
    float px, py, pz; /* the origin's kx, ky, kz components */
} kern_bvh_ray_t;

KERN_HD float kern_safe_inv(float d)
{
    /* A zero component would give +-inf, and 0 * inf is NaN when the origin
       lies on a slab plane: use a huge finite value of the same sign. */
    if (fabsf(d) < 1e-30f)
        return d < 0.0f ? -1e30f : 1e30f;
    return 1.0f / d;
}

KERN_HD kern_bvh_ray_t kern_bvh_ray_setup(kern_v3 org, kern_v3 dir)
{
    kern_bvh_ray_t r;
    r.ox = org.x;
    r.oy = org.y;
    r.oz = org.z;
    r.ix = kern_safe_inv(dir.x);
    r.iy = kern_safe_inv(dir.y);
    r.iz = kern_safe_inv(dir.z);
    r.nx = r.ix < 0.0f ? 4 : 0;
    r.ny = r.iy < 0.0f ? 4 : 0;
    r.nz = r.iz < 0.0f ? 4 : 0;
    float ax = fabsf(dir.x), ay = fabsf(dir.y), az = fabsf(dir.z);
    r.kz = ax > ay ? (ax > az ? 0 : 2) : (ay > az ? 1 : 2);
    r.kx = r.kz == 2 ? 0 : r.kz + 1;
    r.ky = r.kx == 2 ? 0 : r.kx + 1;
    float dz = v3_get(dir, r.kz);
    if (dz < 0.0f) { /* keep the winding: swap kx and ky */
        int t = r.kx;
        r.kx = r.ky;
        r.ky = t;
    }
    /* one division: the shear only has to be the same for every triangle,
       not exact, for the test to stay watertight */
    r.sz = 1.0f / dz;
    r.sx = mul_rn(v3_get(dir, r.kx), r.sz);
    r.sy = mul_rn(v3_get(dir, r.ky), r.sz);
    r.px = v3_get(org, r.kx);
    r.py = v3_get(org, r.ky);
    r.pz = v3_get(org, r.kz);
    return r;
}

/* Whether the ray meets a node's box within [tmin, tmax]; the entry
   distance goes to *t_enter. */
KERN_HD int kern_box_hit(const kern_bvh_ray_t *r, const kern_bvh_node_t *n, float tmin, float tmax,
                         float *t_enter)
{
    const float *b = (const float *)(const void *)n; /* lo at 0..2, hi at 4..6 */
    float tnx = mul_rn(b[r->nx] - r->ox, r->ix), tfx = mul_rn(b[4 - r->nx] - r->ox, r->ix);
    float tny = mul_rn(b[1 + r->ny] - r->oy, r->iy), tfy = mul_rn(b[5 - r->ny] - r->oy, r->iy);
    float tnz = mul_rn(b[2 + r->nz] - r->oz, r->iz), tfz = mul_rn(b[6 - r->nz] - r->oz, r->iz);
    float tn = kern_maxf(kern_maxf(tnx, tny), kern_maxf(tnz, tmin));
    float tf = mul_rn(kern_minf(kern_minf(tfx, tfy), kern_minf(tfz, tmax)), KERN_SLAB_WIDEN);
    *t_enter = tn;
    return tn <= tf;
}

/* Intersects the triangle tri (9 floats) whose original index is *id, in
   the leaf the ray enters at tn (kern_box_hit's entry distance of that
   leaf's box, which is at least tmin). The hit's distance is the computed
   one raised to tn where rounding put it in front of the leaf's box: so it
   is never below the entry distance of any box above the triangle, which
   is what lets every walk order find the same closest hit (above). On a
   hit with t > tmin that comes before the best so far, (hit->t, hit->tri),
   in the order (t, index), stores t, u, v and *id in *hit and returns 1.
   *id is read only on a hit. A caller whose range ends at tmax (exclusive)
   starts from hit->t = tmax and hit->tri = 0, which no hit at tmax comes
   before. */
KERN_HD int kern_tri_hit(const kern_bvh_ray_t *r, const float *tri, const uint32_t *id, float tmin,
                         float tn, kern_hit_t *hit)
{
    const int kx = r->kx, ky = r->ky, kz = r->kz;
    const float px = r->px, py = r->py, pz = r->pz;
    float Az = tri[kz] - pz, Bz = tri[3 + kz] - pz, Cz = tri[6 + kz] - pz;
    float Ax = (tri[kx] - px) - mul_rn(r->sx, Az), Ay = (tri[ky] - py) - mul_rn(r->sy, Az);
    float Bx = (tri[3 + kx] - px) - mul_rn(r->sx, Bz), By = (tri[3 + ky] - py) - mul_rn(r->sy, Bz);
    float Cx = (tri[6 + kx] - px) - mul_rn(r->sx, Cz), Cy = (tri[6 + ky] - py) - mul_rn(r->sy, Cz);
    float U = mul_rn(Cx, By) - mul_rn(Cy, Bx), V = mul_rn(Ax, Cy) - mul_rn(Ay, Cx),
          W = mul_rn(Bx, Ay) - mul_rn(By, Ax);
    if ((U == 0.0f) | (V == 0.0f) | (W == 0.0f)) {
        /* On an edge in float: decide in double, as the paper does, so the
           two triangles sharing the edge agree (products of floats are
           exact in double). */
        U = (float)(dmul_rn(Cx, By) - dmul_rn(Cy, Bx));
        V = (float)(dmul_rn(Ax, Cy) - dmul_rn(Ay, Cx));
        W = (float)(dmul_rn(Bx, Ay) - dmul_rn(By, Ax));
    }
    /* | and & on purpose: one branch instead of six */
    if (((U < 0.0f) | (V < 0.0f) | (W < 0.0f)) & ((U > 0.0f) | (V > 0.0f) | (W > 0.0f)))
        return 0;
    float det = U + V + W;
    if (det == 0.0f)
        return 0;
    float T = mul_rn(r->sz, mul_rn(U, Az) + mul_rn(V, Bz) + mul_rn(W, Cz));
    float t = T / det;
    if (!(t > tmin))
        return 0;
    t = t > tn ? t : tn;
    if (!(t <= hit->t))
        return 0;
    uint32_t i = *id;
    if (t == hit->t && !(i < hit->tri)) /* a tie: the lower index wins */
        return 0;
    float inv = 1.0f / det;
    hit->t = t;
    hit->u = mul_rn(U, inv);
    hit->v = mul_rn(V, inv);
    hit->tri = i;
    return 1;
}

/* Closest hit of the ray org + t dir, t in (tmin, tmax), the smallest
   triangle index among equal t (above); dir need not be normalized (t is in
   units of |dir|). Returns 1 on a hit and fills *hit; on a miss returns 0
   with hit->tri = UINT32_MAX and hit->t = tmax. */
KERN_HD int kern_trace_closest(const kern_bvh_view_t *bvh, kern_v3 org, kern_v3 dir, float tmin,
                               float tmax, kern_hit_t *hit)
{
    hit->t = tmax;
    hit->tri = UINT32_MAX;
    hit->u = hit->v = 0.0f;
    if (bvh->node_count == 0 || bvh->tri_count == 0)
        return 0;
    kern_bvh_ray_t r = kern_bvh_ray_setup(org, dir);
    const kern_bvh_node_t *nodes = bvh->nodes;
    uint32_t stack_node[KERN_STACK + 1]; /* + 1: a slot to write a discarded push */
    float stack_t[KERN_STACK + 1];
    int sp = 0, found = 0;
    float t_root;
    if (!kern_box_hit(&r, &nodes[0], tmin, hit->t, &t_root))
        return 0;
    hit->tri = 0; /* (tmax, 0): no hit at tmax comes before it */
    uint32_t first = nodes[0].first, count = nodes[0].count;
    float tn = t_root; /* the entry distance of the node at hand */
    for (;;) {
        if (count > 0) {
            const float *tri = bvh->tris + 9 * (size_t)first;
            for (uint32_t i = 0; i < count; i++, tri += 9)
                found |= kern_tri_hit(&r, tri, &bvh->tri_ids[first + i], tmin, tn, hit);
        } else {
            /* the children's own first/count ride along, so the next step
               needs no reload. Branches on the two hit flags, not selects:
               their speculation overlaps the next node's loads, which
               measured faster on the host than branch-free code. */
            const kern_bvh_node_t *c = &nodes[first];
            uint32_t f0 = c[0].first, f1 = c[1].first, n0 = c[0].count, n1 = c[1].count;
            float tl, tr;
            int hl = kern_box_hit(&r, &c[0], tmin, hit->t, &tl);
            int hr = kern_box_hit(&r, &c[1], tmin, hit->t, &tr);
            if (hl & hr) { /* the nearer next, the other on the stack */
                int swap = tr < tl;
                stack_node[sp] = swap ? first : first + 1;
                stack_t[sp] = swap ? tl : tr;
                sp += sp < KERN_STACK;
                count = swap ? n1 : n0;
                first = swap ? f1 : f0;
                tn = swap ? tr : tl;
                continue;
            }
            if (hl | hr) {
                count = hr ? n1 : n0;
                first = hr ? f1 : f0;
                tn = hr ? tr : tl;
                continue;
            }
        }
        /* pop, skipping nodes that start beyond the best hit so far */
        for (;;) {
            if (sp == 0)
                goto done;
            sp--;
            if (stack_t[sp] <= mul_rn(hit->t, KERN_SLAB_WIDEN)) {
                first = nodes[stack_node[sp]].first;
                count = nodes[stack_node[sp]].count;
                tn = stack_t[sp];
                break;
            }
        }
    }
done:
    if (!found)
        hit->tri = UINT32_MAX;
    return found;
}

#endif
