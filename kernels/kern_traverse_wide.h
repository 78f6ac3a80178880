/*  kernels/kern_traverse_wide.h - the host's closest-hit walk through the
    four-wide form of the BVH (kern_bvh_wide_node_t), which returns exactly
    what kern_trace_closest returns on the binary tree: the same triangle,
    the same t, u and v bits. The CPU backend walks every ray with it; the
    CUDA backend keeps the binary walk.

    Why it is the same walk, not merely the same closest distance. The
    binary walk (kern_traverse.h) tests a node's two children against the
    best hit so far, descends into the one with the smaller entry distance
    tn (the first on a tie), stacks the other, and on popping skips a node
    with tn > best * KERN_SLAB_WIDEN. Its box test is monotone: tn does not
    depend on the best hit, and "hit" is "slab test passes and tn <= best *
    WIDEN" (rounding is monotone, so the widened minimum of the far planes
    and the best hit is the minimum of the two widened). A parent's box is
    the exact union of its children's (bounds are minima and maxima of the
    same floats), so per axis its entry distance is the minimum of theirs,
    and a child that passes implies its parent passes. It follows that the
    binary walk visits the leaves in one fixed order, depth first with the
    smaller-tn child first at every node, and visits a leaf exactly when
    the leaf's own box passes against the best hit at that moment. This walk
    keeps that order: a wide node tests its four grandchildren at once,
    orders the two pairs by their parents' tn (the per-axis minimum over the
    pair, the very bits kern_box_hit computes for the parent) and each pair
    by its own tn, stacks them, and checks every one against the best hit
    when it is popped. Leaves are tested triangle by triangle as before, so
    ties between equal distances go to the same triangle.

    The four boxes are tested with SSE2 (part of the x86-64 baseline, so no
    target attributes or run-time dispatch are needed), whose subtract,
    multiply, min, max and compare are the IEEE single-precision operations
    of the scalar kern_box_hit, bit for bit, min and max with the same
    operand order; elsewhere the same arithmetic runs one lane at a time.
    Host only (plain C11). */

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

/* Entry distances of the four lanes of w into tn, of the two pairs (their
   binary parents) into pair[0] (lanes 0-1) and pair[1] (lanes 2-3); returns
   the mask of lanes the ray meets within [tmin, tmax]. */
static inline unsigned kern_wide_box4(const kern_bvh_ray_t *r, const kern_bvh_wide_node_t *w,
                                      float tmin, float tmax, float tn_out[4], float pair[2])
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
    __m128 vmin = _mm_set1_ps(tmin);
    __m128 tn = _mm_max_ps(_mm_max_ps(tnx, tny), _mm_max_ps(tnz, vmin));
    __m128 tf = _mm_mul_ps(_mm_min_ps(_mm_min_ps(fx, fy), _mm_min_ps(fz, _mm_set1_ps(tmax))),
                           _mm_set1_ps(KERN_SLAB_WIDEN));
    unsigned mask = (unsigned)_mm_movemask_ps(_mm_cmple_ps(tn, tf));
    _mm_storeu_ps(tn_out, tn);
    if ((mask & 3u) && (mask & 12u)) {
        /* the pairs' parents: per axis the smaller entry of the two lanes
           (an empty lane enters at +inf) */
        __m128 px = _mm_min_ps(tnx, _mm_shuffle_ps(tnx, tnx, _MM_SHUFFLE(2, 3, 0, 1)));
        __m128 py = _mm_min_ps(tny, _mm_shuffle_ps(tny, tny, _MM_SHUFFLE(2, 3, 0, 1)));
        __m128 pz = _mm_min_ps(tnz, _mm_shuffle_ps(tnz, tnz, _MM_SHUFFLE(2, 3, 0, 1)));
        __m128 p = _mm_max_ps(_mm_max_ps(px, py), _mm_max_ps(pz, vmin));
        pair[0] = _mm_cvtss_f32(p);
        pair[1] = _mm_cvtss_f32(_mm_shuffle_ps(p, p, _MM_SHUFFLE(2, 2, 2, 2)));
    }
    return mask;
#else
    const int fx = nx == 0 ? 3 : 0, fy = ny == 1 ? 4 : 1, fz = nz == 2 ? 5 : 2;
    float ax[4], ay[4], az[4];
    unsigned mask = 0;
    for (int i = 0; i < 4; i++) {
        ax[i] = mul_rn(w->box[nx][i] - r->ox, r->ix);
        ay[i] = mul_rn(w->box[ny][i] - r->oy, r->iy);
        az[i] = mul_rn(w->box[nz][i] - r->oz, r->iz);
        float tfx = mul_rn(w->box[fx][i] - r->ox, r->ix);
        float tfy = mul_rn(w->box[fy][i] - r->oy, r->iy);
        float tfz = mul_rn(w->box[fz][i] - r->oz, r->iz);
        float tn = kern_maxf(kern_maxf(ax[i], ay[i]), kern_maxf(az[i], tmin));
        float tf = mul_rn(kern_minf(kern_minf(tfx, tfy), kern_minf(tfz, tmax)), KERN_SLAB_WIDEN);
        tn_out[i] = tn;
        mask |= (unsigned)(tn <= tf) << i;
    }
    if ((mask & 3u) && (mask & 12u))
        for (int p = 0; p < 2; p++) {
            float px = kern_minf(ax[2 * p], ax[2 * p + 1]);
            float py = kern_minf(ay[2 * p], ay[2 * p + 1]);
            float pz = kern_minf(az[2 * p], az[2 * p + 1]);
            pair[p] = kern_maxf(kern_maxf(px, py), kern_maxf(pz, tmin));
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

/* The triangles of wide leaf `leaf`, tested as kern_tri_hit tests them one
   after the other (a hit must be strictly closer than the best so far, so
   the first of equal distances wins): up to four at once in SSE2, with the
   same operations in the same order on each lane; a leaf where some lane
   lies on an edge in float (the double-precision decision of kern_tri_hit)
   or with more than four triangles goes one triangle at a time. */
static inline void kern_wide_leaf(const kern_bvh_ray_t *r, const kern_bvh_view_t *bvh,
                                  uint32_t leaf, float tmin, kern_hit_t *hit, uint32_t *best)
{
    const kern_bvh_wide_leaf_t *l = &bvh->wide_leaves[leaf];
#if defined(KERN_WIDE_SSE)
    if (l->count <= 4) {
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
        unsigned valid = (1u << l->count) - 1u;
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
            __m128 t = _mm_div_ps(T, det);
            __m128 ok = _mm_andnot_ps(_mm_and_ps(neg, pos), _mm_cmpneq_ps(det, zero));
            ok = _mm_and_ps(ok, _mm_and_ps(_mm_cmpgt_ps(t, _mm_set1_ps(tmin)),
                                           _mm_cmplt_ps(t, _mm_set1_ps(hit->t))));
            unsigned m = (unsigned)_mm_movemask_ps(ok) & valid;
            if (!m)
                return;
            float tt[4], uu[4], vv[4], dd[4];
            _mm_storeu_ps(tt, t);
            _mm_storeu_ps(uu, U);
            _mm_storeu_ps(vv, V);
            _mm_storeu_ps(dd, det);
            for (uint32_t i = 0; i < 4; i++)
                if ((m >> i) & 1u && tt[i] < hit->t) {
                    float inv = 1.0f / dd[i];
                    hit->t = tt[i];
                    hit->u = mul_rn(uu[i], inv);
                    hit->v = mul_rn(vv[i], inv);
                    *best = l->first + i;
                }
            return;
        }
    }
#endif
    const float *tri = bvh->tris + 9 * (size_t)l->first;
    for (uint32_t i = 0; i < l->count; i++, tri += 9)
        if (kern_tri_hit(r, tri, tmin, hit))
            *best = l->first + i;
}

/* kern_trace_closest's contract and result, bit for bit, walking bvh->wide
   (the binary walk when the view has no wide nodes). */
static inline int kern_trace_closest_wide(const kern_bvh_view_t *bvh, kern_v3 org, kern_v3 dir,
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
    /* three lanes stacked per level, 30 levels at most (depth cap 60) */
    kern_wide_entry_t stack[3 * (KERN_STACK / 2) + 4];
    int sp = 0;
    uint32_t best = UINT32_MAX;
    uint32_t node = 0;
    for (;;) {
        const kern_bvh_wide_node_t *w = &bvh->wide[node];
        float tn[4], pair[2] = {0.0f, 0.0f};
        unsigned m = kern_wide_box4(&r, w, tmin, hit->t, tn, pair);
        int lane = -1; /* the lane walked next, without a trip through the stack */
        if (m & (m - 1u)) {
            /* the binary walk's order: pairs by their parents' tn, the
               first on a tie; within a pair by the lanes' own tn */
            int a0 = 0, a1 = 1, b0 = 2, b1 = 3;
            if ((m & 3u) == 3u && tn[1] < tn[0])
                a0 = 1, a1 = 0;
            if ((m & 12u) == 12u && tn[3] < tn[2])
                b0 = 3, b1 = 2;
            int order[4] = {a0, a1, b0, b1};
            if ((m & 3u) && (m & 12u) && pair[1] < pair[0]) {
                order[0] = b0, order[1] = b1, order[2] = a0, order[3] = a1;
            }
            /* the rest stacked last to first, so that they pop in order */
            for (int k = 3; k >= 0; k--) {
                int i = order[k];
                if (m & (1u << i)) {
                    if (lane >= 0) {
                        stack[sp].child = w->child[lane];
                        stack[sp].count = w->count[lane];
                        stack[sp].tn = tn[lane];
                        sp++;
                    }
                    lane = i;
                }
            }
        } else if (m) {
            lane = m & 1u ? 0 : (m & 2u ? 1 : (m & 4u ? 2 : 3));
        }
        if (lane >= 0) {
            /* it passed against the best hit of this very moment */
            if (w->count[lane] == 0) {
                node = w->child[lane];
                continue;
            }
            kern_wide_leaf(&r, bvh, w->child[lane], tmin, hit, &best);
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
            kern_wide_leaf(&r, bvh, stack[sp].child, tmin, hit, &best);
        }
    }
done:
    if (best == UINT32_MAX)
        return 0;
    hit->tri = bvh->tri_ids[best];
    return 1;
}

#endif
