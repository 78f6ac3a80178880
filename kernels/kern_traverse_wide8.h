/*  kernels/kern_traverse_wide8.h - the host's closest-hit walk through the
    eight-wide form of the BVH (kern_bvh_wide8_node_t) with AVX2; the walk
    of kern_trace_closest_wide4 (kern_traverse_wide.h) with eight boxes per
    step (and tuned for them: no test of the root's box first, the lines of
    met lanes prefetched, one leaf-test site), and the same hits, bit for
    bit, for the same reason: the closest hit is defined by the leaves and
    triangles (kern_traverse.h), the eight-wide tree has the binary tree's
    leaves with their boxes, and a box is skipped only when it enters
    beyond the best hit so far. Included by
    kern_traverse_wide.h, whose kern_trace_closest_wide calls it when the
    view has eight-wide nodes.

    Run-time dispatch. The build stays at the x86-64 baseline (no -mavx2, no
    -march): the walk is one function compiled for AVX2 with
    __attribute__((target("avx2"))), and kern_bvh_new builds the eight-wide
    nodes only where kern_bvh_simd8() says the CPU has AVX2 (and
    BF_KERN_SIMD is not "sse2"). A view without them walks the four-wide
    tree with SSE2, so a CPU without AVX2 never reaches an AVX2 instruction,
    and a test can walk both on one CPU by clearing the view's wide8. AVX2
    here is wider registers only: no FMA (target "avx2" does not enable it,
    so no product can be contracted unless the whole build has -mfma, where
    KERN_NOFUSE of kern_hd.h guards the leaf test as before), and the 256-bit
    subtract, multiply, min, max and compare are the same IEEE
    single-precision operations as the SSE2 ones, operand order included.
    Written by hand for the reason kern_traverse_wide.h gives.

    Why eight lanes pay now: a ray's walk is mostly one descent (on munich
    two thirds of the four-wide steps meet at most one lane), so its cost is
    the tree's depth in dependent node loads, which eight lanes cut by about
    a third (on munich 4.1 eight-wide nodes and 1.2 leaves a ray, with the
    SAH-optimal collapse of kern_bvh.c). */

#ifndef KERN_TRAVERSE_WIDE8_H_INCLUDED
#define KERN_TRAVERSE_WIDE8_H_INCLUDED

#if defined(KERN_WIDE8)
#include <immintrin.h>

/* Trees smaller than this (bytes of wide8 nodes and leaves) are walked
   without prefetching: they fit in half of a 32 KB L1 data cache. */
#define KERN_PREFETCH_MIN_BYTES 16384u

__attribute__((target("avx2"))) static int kern_trace_closest_wide8(const kern_bvh_view_t *bvh,
                                                                    kern_v3 org, kern_v3 dir,
                                                                    float tmin, float tmax,
                                                                    kern_hit_t *hit)
{
    hit->t = tmax;
    hit->tri = UINT32_MAX;
    hit->u = hit->v = 0.0f;
    if (bvh->node_count == 0 || bvh->tri_count == 0)
        return 0;
    kern_bvh_ray_t r = kern_bvh_ray_setup(org, dir);
    /* No test of the binary root's box first (the four-wide walk and the
       binary one make it): a ray that misses it misses every lane of wide
       node 0 (their boxes lie inside it, rounding is monotone), and the
       test cost more on munich's rays, nearly all of which meet the
       scene's box, than it saved. */
    hit->tri = 0; /* (tmax, 0): no hit at tmax comes before it */
    /* box rows of the near and far planes per axis (lo 0-2, hi 3-5) */
    const int nx = r.nx ? 3 : 0, ny = r.ny ? 4 : 1, nz = r.nz ? 5 : 2;
    const int fx = nx == 0 ? 3 : 0, fy = ny == 1 ? 4 : 1, fz = nz == 2 ? 5 : 2;
    const __m256 ox = _mm256_set1_ps(r.ox), oy = _mm256_set1_ps(r.oy), oz = _mm256_set1_ps(r.oz);
    const __m256 ix = _mm256_set1_ps(r.ix), iy = _mm256_set1_ps(r.iy), iz = _mm256_set1_ps(r.iz);
    const __m256 vmin = _mm256_set1_ps(tmin), widen = _mm256_set1_ps(KERN_SLAB_WIDEN);
    /* at most seven lanes stacked per level, one level per binary level at
       most (depth cap 60) */
    kern_wide_entry_t stack[7 * KERN_STACK + 8];
    int sp = 0, found = 0;
    /* The prefetch below only pays where the tree does not already sit in
       L1: a tree of a few kilobytes (simple_street_canyon's 74 triangles,
       5.7 KB) stays there after the first rays, and its loop and loads
       were about 1 % of that scene's instructions. */
    const int prefetch = (uint64_t)bvh->wide8_count * sizeof(kern_bvh_wide8_node_t) +
                             (uint64_t)bvh->wide_leaf_count * sizeof(kern_bvh_wide_leaf_t) >
                         KERN_PREFETCH_MIN_BYTES;
    /* The entry at hand, a wide node (count 0) or a leaf with its entry
       distance: a leaf met in a node and one popped from the stack go
       through the one leaf test below, so that the leaf test is inlined
       once (inlined twice, the loop kept its stack pointer and the ray's
       constants in memory). */
    uint32_t child = 0, count = 0;
    float ctn = tmin;
    for (;;) {
        if (count == 0) {
            const kern_bvh_wide8_node_t *w = &bvh->wide8[child];
            __m256 tnx = _mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(w->box[nx]), ox), ix);
            __m256 tny = _mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(w->box[ny]), oy), iy);
            __m256 tnz = _mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(w->box[nz]), oz), iz);
            __m256 tfx = _mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(w->box[fx]), ox), ix);
            __m256 tfy = _mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(w->box[fy]), oy), iy);
            __m256 tfz = _mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(w->box[fz]), oz), iz);
            __m256 tn = _mm256_max_ps(_mm256_max_ps(tnx, tny), _mm256_max_ps(tnz, vmin));
            __m256 tf = _mm256_mul_ps(
                _mm256_min_ps(_mm256_min_ps(tfx, tfy), _mm256_min_ps(tfz, _mm256_set1_ps(hit->t))),
                widen);
            unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(tn, tf, _CMP_LE_OS));
            if (m) {
                float tv[8];
                _mm256_storeu_ps(tv, tn);
                /* Where two or more lanes are met, start the lines of all
                   of them now (a node's four, a leaf's three): the nearest
                   one's loads then no longer wait for the ordering below,
                   and the others, stacked, are in L1 when popped. The walk
                   stalls mostly on such loads, one dependent node after
                   another. On munich (wide/Embree, medians of five
                   alternating runs) the prefetch took the walk from 0.81
                   to 0.82-0.83, the nearest lane's lines included. */
                for (unsigned mm = prefetch && (m & (m - 1u)) ? m : 0u; mm; mm &= mm - 1u) {
                    int i = __builtin_ctz(mm);
                    const char *p = w->count[i] ? (const char *)&bvh->wide_leaves[w->child[i]]
                                                : (const char *)&bvh->wide8[w->child[i]];
                    _mm_prefetch(p, _MM_HINT_T0);
                    _mm_prefetch(p + 64, _MM_HINT_T0);
                    _mm_prefetch(p + 128, _MM_HINT_T0);
                    if (!w->count[i])
                        _mm_prefetch(p + 192, _MM_HINT_T0);
                }
                int lane; /* the lane walked next, without a trip through the stack */
                const unsigned m2 = m & (m - 1u); /* m without its lowest lane */
                if (!m2) {
                    lane = __builtin_ctz(m);
                } else if (!(m2 & (m2 - 1u))) {
                    /* two lanes, the commonest case after one (on munich a
                       quarter of the steps): the nearer next, the farther
                       stacked, without the sort's loops */
                    int a = __builtin_ctz(m), b = __builtin_ctz(m2);
                    int near = tv[b] < tv[a] ? b : a, far = a + b - near;
                    stack[sp].child = w->child[far];
                    stack[sp].count = w->count[far];
                    stack[sp].tn = tv[far];
                    sp++;
                    lane = near;
                } else {
                    /* nearest entry first */
                    lane = kern_wide_push_sorted(m, w->child, w->count, tv, stack, &sp);
                }
                child = w->child[lane];
                count = w->count[lane];
                ctn = tv[lane];
                continue;
            }
        } else {
            found |= kern_wide_leaf(&r, bvh, child, count, tmin, ctn, hit);
        }
        /* pop, skipping lanes that start beyond the best hit so far */
        do {
            if (sp == 0)
                goto done;
            sp--;
        } while (!(stack[sp].tn <= mul_rn(hit->t, KERN_SLAB_WIDEN)));
        child = stack[sp].child;
        count = stack[sp].count;
        ctn = stack[sp].tn;
    }
done:
    if (!found)
        hit->tri = UINT32_MAX;
    return found;
}

#endif
#endif
