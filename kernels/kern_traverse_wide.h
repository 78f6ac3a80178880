/*  kernels/kern_traverse_wide.h - the host's closest-hit walk through the
    four-wide form of the BVH (kern_bvh_wide_node_t), which returns exactly
    what kern_trace_closest returns on the binary tree: the same triangle,
    the same t, u and v bits, and the host's entry point to it and to the
    eight-wide AVX2 walk of kern_traverse_wide8.h (kern_trace_closest_wide,
    at the end): the CPU backend walks every ray with the eight-wide one
    where the CPU has AVX2 and with this one elsewhere; the CUDA backend
    keeps the binary walk.

    Why it is the same hit although the walk visits the leaves in another
    order: the closest hit is defined by the leaves and triangles alone
    (kern_traverse.h: the smallest distance, each raised to its leaf's
    entry distance, then the smallest original triangle index), and a box
    is skipped only when its entry distance exceeds the best so far, which
    never happens to a box above the answer. The four-wide tree has the
    binary tree's leaves with the same boxes (kern_bvh.c fills each wide
    node's lanes from the binary nodes below it, by the SAH-optimal
    collapse), so the lanes are visited nearest entry first for speed
    only.
    kern_traverse_wide_test checks the two walks against each other, bit
    for bit, on 1.9 million rays rich in ties.

    The four boxes and up to four triangles are tested with SSE2 (part of the
    x86-64 baseline, so no target attributes or run-time dispatch are
    needed), whose subtract, multiply, min, max and compare are the IEEE
    single-precision operations of the scalar kern_box_hit and kern_tri_hit,
    bit for bit, min and max with the same operand order; elsewhere the same
    arithmetic runs one lane at a time. Written by hand because what it must
    keep, the scalar test's exact operations and their order in every lane,
    is not something a SIMD library or the auto-vectorizer promises (Embree
    computes its own, different bits). Host only (plain C11). */

#ifndef KERN_TRAVERSE_WIDE_H_INCLUDED
#define KERN_TRAVERSE_WIDE_H_INCLUDED

#include "kern_traverse.h"

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define KERN_WIDE_SSE 1
#endif

/* A stacked lane: a wide node (count 0) or a leaf, with its entry distance. */
typedef struct {
    uint32_t child, count;
    float tn;
} kern_wide_entry_t;

/* Of the lanes in mask m (two or more) of a wide node with the given
   child and count arrays and entry distances tn: all but the nearest go on
   the stack, the farthest first so that the nearer pop first; returns the
   nearest, walked next. Shared by the four- and eight-wide walks. */
static inline int kern_wide_push_sorted(unsigned m, const uint32_t *child, const uint32_t *count,
                                        const float *tn, kern_wide_entry_t *stack, int *sp)
{
    int ord[8], n = 0;
    for (unsigned mm = m; mm; mm &= mm - 1u) {
        int i = __builtin_ctz(mm), k = n++;
        for (; k > 0 && tn[ord[k - 1]] < tn[i]; k--)
            ord[k] = ord[k - 1];
        ord[k] = i;
    }
    for (int k = 0; k < n - 1; k++) {
        int i = ord[k];
        stack[*sp].child = child[i];
        stack[*sp].count = count[i];
        stack[*sp].tn = tn[i];
        (*sp)++;
    }
    return ord[n - 1];
}

/* Entry distances of the four lanes of w into tn_out; returns the mask of
   lanes the ray meets within [tmin, tmax]. */
static inline unsigned kern_wide_box4(const kern_bvh_ray_t *r, const kern_bvh_wide_node_t *w,
                                      float tmin, float tmax, float tn_out[4])
{
    const int nx = r->nx ? 3 : 0, ny = r->ny ? 4 : 1, nz = r->nz ? 5 : 2;
#if defined(KERN_WIDE_SSE)
    __m128 ox = _mm_set1_ps(r->ox), oy = _mm_set1_ps(r->oy), oz = _mm_set1_ps(r->oz);
    __m128 ix = _mm_set1_ps(r->ix), iy = _mm_set1_ps(r->iy), iz = _mm_set1_ps(r->iz);
    __m128 tnx = _mm_mul_ps(_mm_sub_ps(_mm_load_ps(w->box[nx]), ox), ix);
    __m128 fx = _mm_mul_ps(_mm_sub_ps(_mm_load_ps(w->box[nx == 0 ? 3 : 0]), ox), ix);
    __m128 tny = _mm_mul_ps(_mm_sub_ps(_mm_load_ps(w->box[ny]), oy), iy);
    __m128 fy = _mm_mul_ps(_mm_sub_ps(_mm_load_ps(w->box[ny == 1 ? 4 : 1]), oy), iy);
    __m128 tnz = _mm_mul_ps(_mm_sub_ps(_mm_load_ps(w->box[nz]), oz), iz);
    __m128 fz = _mm_mul_ps(_mm_sub_ps(_mm_load_ps(w->box[nz == 2 ? 5 : 2]), oz), iz);
    __m128 tn = _mm_max_ps(_mm_max_ps(tnx, tny), _mm_max_ps(tnz, _mm_set1_ps(tmin)));
    __m128 tf = _mm_mul_ps(_mm_min_ps(_mm_min_ps(fx, fy), _mm_min_ps(fz, _mm_set1_ps(tmax))),
                           _mm_set1_ps(KERN_SLAB_WIDEN));
    _mm_storeu_ps(tn_out, tn);
    return (unsigned)_mm_movemask_ps(_mm_cmple_ps(tn, tf));
#else
    const int fx = nx == 0 ? 3 : 0, fy = ny == 1 ? 4 : 1, fz = nz == 2 ? 5 : 2;
    unsigned mask = 0;
    for (int i = 0; i < 4; i++) {
        float tnx = mul_rn(w->box[nx][i] - r->ox, r->ix);
        float tny = mul_rn(w->box[ny][i] - r->oy, r->iy);
        float tnz = mul_rn(w->box[nz][i] - r->oz, r->iz);
        float tfx = mul_rn(w->box[fx][i] - r->ox, r->ix);
        float tfy = mul_rn(w->box[fy][i] - r->oy, r->iy);
        float tfz = mul_rn(w->box[fz][i] - r->oz, r->iz);
        float tn = kern_maxf(kern_maxf(tnx, tny), kern_maxf(tnz, tmin));
        float tf = mul_rn(kern_minf(kern_minf(tfx, tfy), kern_minf(tfz, tmax)), KERN_SLAB_WIDEN);
        tn_out[i] = tn;
        mask |= (unsigned)(tn <= tf) << i;
    }
    return mask;
#endif
}

#if defined(KERN_WIDE_SSE)
/* mul_rn on four lanes: hidden from contraction into a multiply-add where
   the build allows FMA (kern_hd.h) */
static inline __m128 kern_mul4(__m128 a, __m128 b)
{
    __m128 p = _mm_mul_ps(a, b);
    KERN_NOFUSE(p);
    return p;
}
#endif

/* The count triangles of wide leaf `leaf` (count from the lane that
   points to it, so the leaf's own lines are all triangle data), tested as
   kern_tri_hit tests them (the order (t, index) against the best so far):
   up to four at once in SSE2, with the same operations in the same order
   on each lane; a leaf where some lane lies on an edge in float (the
   double-precision decision of kern_tri_hit) goes one triangle at a time
   through kern_tri_hit, on the same coordinates, and one of more than four
   triangles through kern_tri_hit from tris. Returns 1 when the best hit
   changed. Always inlined, so that the eight-wide walk compiles it with the
   AVX encoding of the same SSE operations: called there as a function
   compiled for SSE2 (legacy encoding, upper register halves dirty) it made
   the whole walk 1.6 times slower on an AMD EPYC. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
static inline int
kern_wide_leaf(const kern_bvh_ray_t *r, const kern_bvh_view_t *bvh, uint32_t leaf, uint32_t count,
               float tmin, float tn, kern_hit_t *hit)
{
    const kern_bvh_wide_leaf_t *l = &bvh->wide_leaves[leaf];
    if (count > 4) {
        const uint32_t first = l->id[0];
        const float *tri = bvh->tris + 9 * (size_t)first;
        int found = 0;
        for (uint32_t i = 0; i < count; i++, tri += 9)
            found |= kern_tri_hit(r, tri, &bvh->tri_ids[first + i], tmin, tn, hit);
        return found;
    }
#if defined(KERN_WIDE_SSE)
    {
        const __m128 px = _mm_set1_ps(r->px), py = _mm_set1_ps(r->py), pz = _mm_set1_ps(r->pz);
        const __m128 sx = _mm_set1_ps(r->sx), sy = _mm_set1_ps(r->sy);
        __m128 Az = _mm_sub_ps(_mm_load_ps(l->v[r->kz]), pz);
        __m128 Bz = _mm_sub_ps(_mm_load_ps(l->v[3 + r->kz]), pz);
        __m128 Cz = _mm_sub_ps(_mm_load_ps(l->v[6 + r->kz]), pz);
        __m128 Ax = _mm_sub_ps(_mm_sub_ps(_mm_load_ps(l->v[r->kx]), px), kern_mul4(sx, Az));
        __m128 Ay = _mm_sub_ps(_mm_sub_ps(_mm_load_ps(l->v[r->ky]), py), kern_mul4(sy, Az));
        __m128 Bx = _mm_sub_ps(_mm_sub_ps(_mm_load_ps(l->v[3 + r->kx]), px), kern_mul4(sx, Bz));
        __m128 By = _mm_sub_ps(_mm_sub_ps(_mm_load_ps(l->v[3 + r->ky]), py), kern_mul4(sy, Bz));
        __m128 Cx = _mm_sub_ps(_mm_sub_ps(_mm_load_ps(l->v[6 + r->kx]), px), kern_mul4(sx, Cz));
        __m128 Cy = _mm_sub_ps(_mm_sub_ps(_mm_load_ps(l->v[6 + r->ky]), py), kern_mul4(sy, Cz));
        __m128 U = _mm_sub_ps(kern_mul4(Cx, By), kern_mul4(Cy, Bx));
        __m128 V = _mm_sub_ps(kern_mul4(Ax, Cy), kern_mul4(Ay, Cx));
        __m128 W = _mm_sub_ps(kern_mul4(Bx, Ay), kern_mul4(By, Ax));
        const __m128 zero = _mm_setzero_ps();
        unsigned valid = (1u << count) - 1u;
        unsigned on_edge = (unsigned)_mm_movemask_ps(_mm_or_ps(
            _mm_or_ps(_mm_cmpeq_ps(U, zero), _mm_cmpeq_ps(V, zero)), _mm_cmpeq_ps(W, zero)));
        if (!(on_edge & valid)) {
            __m128 neg = _mm_or_ps(_mm_or_ps(_mm_cmplt_ps(U, zero), _mm_cmplt_ps(V, zero)),
                                   _mm_cmplt_ps(W, zero));
            __m128 pos = _mm_or_ps(_mm_or_ps(_mm_cmpgt_ps(U, zero), _mm_cmpgt_ps(V, zero)),
                                   _mm_cmpgt_ps(W, zero));
            __m128 det = _mm_add_ps(_mm_add_ps(U, V), W);
            __m128 T = kern_mul4(
                _mm_set1_ps(r->sz),
                _mm_add_ps(_mm_add_ps(kern_mul4(U, Az), kern_mul4(V, Bz)), kern_mul4(W, Cz)));
            __m128 t0 = _mm_div_ps(T, det);
            /* raised to the leaf's entry distance, as kern_tri_hit: t > tn ? t : tn */
            __m128 t = _mm_max_ps(t0, _mm_set1_ps(tn));
            __m128 ok = _mm_andnot_ps(_mm_and_ps(neg, pos), _mm_cmpneq_ps(det, zero));
            ok = _mm_and_ps(ok, _mm_and_ps(_mm_cmpgt_ps(t0, _mm_set1_ps(tmin)),
                                           _mm_cmple_ps(t, _mm_set1_ps(hit->t))));
            unsigned m = (unsigned)_mm_movemask_ps(ok) & valid;
            if (!m)
                return 0;
            float tt[4], uu[4], vv[4], dd[4];
            _mm_storeu_ps(tt, t);
            _mm_storeu_ps(uu, U);
            _mm_storeu_ps(vv, V);
            _mm_storeu_ps(dd, det);
            int found = 0;
            /* the met lanes only, in lane order: mostly one, and a loop
               over all four lanes with a branch on each mispredicted */
            for (unsigned mm = m; mm; mm &= mm - 1u) {
                uint32_t i = (uint32_t)__builtin_ctz(mm);
                if (!(tt[i] <= hit->t))
                    continue;
                uint32_t id = l->id[i];
                if (tt[i] == hit->t && !(id < hit->tri))
                    continue;
                float inv = 1.0f / dd[i];
                hit->t = tt[i];
                hit->u = mul_rn(uu[i], inv);
                hit->v = mul_rn(vv[i], inv);
                hit->tri = id;
                found = 1;
            }
            return found;
        }
    }
#endif
    int found = 0;
    for (uint32_t i = 0; i < count; i++) {
        float tri[9];
        for (int j = 0; j < 9; j++)
            tri[j] = l->v[j][i];
        found |= kern_tri_hit(r, tri, &l->id[i], tmin, tn, hit);
    }
    return found;
}

/* kern_trace_closest's contract and result, bit for bit, walking bvh->wide
   (the binary walk when the view has no wide nodes). */
static inline int kern_trace_closest_wide4(const kern_bvh_view_t *bvh, kern_v3 org, kern_v3 dir,
                                           float tmin, float tmax, kern_hit_t *hit)
{
    if (!bvh->wide)
        return kern_trace_closest(bvh, org, dir, tmin, tmax, hit);
    hit->t = tmax;
    hit->tri = UINT32_MAX;
    hit->u = hit->v = 0.0f;
    if (bvh->node_count == 0 || bvh->tri_count == 0)
        return 0;
    kern_bvh_ray_t r = kern_bvh_ray_setup(org, dir);
    float t_root;
    if (!kern_box_hit(&r, &bvh->nodes[0], tmin, hit->t, &t_root))
        return 0;
    hit->tri = 0; /* (tmax, 0): no hit at tmax comes before it */
    /* at most three lanes stacked per wide level, one level per binary
       level at most (depth cap 60) */
    kern_wide_entry_t stack[3 * KERN_STACK + 4];
    int sp = 0, found = 0;
    uint32_t node = 0;
    for (;;) {
        const kern_bvh_wide_node_t *w = &bvh->wide[node];
        float tn[4];
        unsigned m = kern_wide_box4(&r, w, tmin, hit->t, tn);
        int lane = -1; /* the lane walked next, without a trip through the stack */
        if (m & (m - 1u)) {
            /* nearest entry first */
            lane = kern_wide_push_sorted(m, w->child, w->count, tn, stack, &sp);
        } else if (m) {
            lane = __builtin_ctz(m);
        }
        if (lane >= 0) {
            if (w->count[lane] == 0) {
                node = w->child[lane];
                continue;
            }
            found |= kern_wide_leaf(&r, bvh, w->child[lane], w->count[lane], tmin, tn[lane], hit);
        }
        /* pop, skipping lanes that start beyond the best hit so far, and
           testing leaves in place */
        for (;;) {
            if (sp == 0)
                goto done;
            sp--;
            if (!(stack[sp].tn <= mul_rn(hit->t, KERN_SLAB_WIDEN)))
                continue;
            if (stack[sp].count == 0) {
                node = stack[sp].child;
                break;
            }
            found |=
                kern_wide_leaf(&r, bvh, stack[sp].child, stack[sp].count, tmin, stack[sp].tn, hit);
        }
    }
done:
    if (!found)
        hit->tri = UINT32_MAX;
    return found;
}

#include "kern_traverse_wide8.h"

/* The host's closest hit: kern_trace_closest's contract and result, bit for
   bit, through the eight-wide tree with AVX2 where the view has one (built
   only where the CPU has AVX2: kern_bvh_simd8), else through the four-wide
   tree with SSE2, else the binary walk. */
static inline int kern_trace_closest_wide(const kern_bvh_view_t *bvh, kern_v3 org, kern_v3 dir,
                                          float tmin, float tmax, kern_hit_t *hit)
{
#if defined(KERN_WIDE8)
    if (bvh->wide8)
        return kern_trace_closest_wide8(bvh, org, dir, tmin, tmax, hit);
#endif
    return kern_trace_closest_wide4(bvh, org, dir, tmin, tmax, hit);
}

#endif
