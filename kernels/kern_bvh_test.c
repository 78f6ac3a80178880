/*  kernels/kern_bvh_test.c - the BVH (kern_bvh.h) and its traversal
    (kern_traverse.h) against brute force over the original triangles: 100k
    random rays on a random triangle soup with degenerate triangles mixed in,
    and on the shared munich scene (BF_SHARED_DIR, default /work/shared);
    watertightness on a closed, subdivided box hit from inside and outside
    with rays aimed exactly at shared vertices and edges; the BVH invariants
    (every triangle in exactly one leaf, child boxes inside their parent's,
    depth within the traversal stack), a pathological input that drives the
    build to its depth cap, and the empty and one-triangle scenes. Exits 77
    (skipped) only when everything else passed and the munich scene is
    missing.

    Built twice: as kern_bvh_test, and as kern_bvh_contract_test with
    multiply-adds contracted wherever the compiler may (-mfma
    -ffp-contract=fast, as nvcc compiles the CUDA backend), where the
    watertight test shows that the traversal does not depend on it. That
    build exits 77 on a CPU without FMA. */

#include "kern_scene.h"
#include "kern_traverse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bf_check.h"
#include "kern_testkit.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    return test_frand(&rng);
}

static kern_v3 rand_dir(void)
{
    return test_rand_dir(&rng);
}

/* A mesh as given to kern_bvh_new, and for the brute force its triangles
   unrolled (9 floats each, original order) with a bounding sphere each
   (cx, cy, cz, r^2). */
typedef struct {
    const float *vtx;
    const uint32_t *idx;
    size_t n;
    float *flat;
    float *sphere;
    float *group; /* the same for each GROUP consecutive triangles */
} mesh_t;

#define GROUP 32

/* Whether the ray o + t dn (dn unit, t > 0) may meet sphere s. Conservative:
   the slack covers float rounding many times over. */
static int may_meet(const float *s, kern_v3 o, const float *dn)
{
    float wx = s[0] - o.x, wy = s[1] - o.y, wz = s[2] - o.z;
    float proj = wx * dn[0] + wy * dn[1] + wz * dn[2];
    float w2 = wx * wx + wy * wy + wz * wz, lim = s[3] + 1e-5f * w2 + 1e-6f;
    return (w2 - proj * proj <= lim) & ((proj >= 0.0f) | (proj * proj <= lim));
}

static void tri_of(const mesh_t *m, size_t i, float tri[9])
{
    for (int k = 0; k < 3; k++)
        memcpy(&tri[3 * k], &m->vtx[3 * (size_t)m->idx[3 * i + k]], 3 * sizeof(float));
}

static mesh_t mesh_make(const float *vtx, const uint32_t *idx, size_t n)
{
    size_t groups = (n + GROUP - 1) / GROUP;
    mesh_t m = {vtx,
                idx,
                n,
                malloc((n ? n : 1) * 9 * sizeof(float)),
                malloc((n ? n : 1) * 4 * sizeof(float)),
                malloc((groups ? groups : 1) * 4 * sizeof(float))};
    if (!m.flat || !m.sphere || !m.group)
        abort();
    for (size_t i = 0; i < n; i++) {
        const float *t = &m.flat[9 * i];
        tri_of(&m, i, &m.flat[9 * i]);
        float *s = &m.sphere[4 * i];
        double r2 = 0.0;
        for (int k = 0; k < 3; k++)
            s[k] = (float)(((double)t[k] + t[3 + k] + t[6 + k]) / 3.0);
        for (int j = 0; j < 3; j++) {
            double dx = t[3 * j] - s[0], dy = t[3 * j + 1] - s[1], dz = t[3 * j + 2] - s[2];
            r2 = fmax(r2, dx * dx + dy * dy + dz * dz);
        }
        s[3] = (float)(r2 * 1.0001 + 1e-6); /* rounded up */
    }
    for (size_t g = 0; g < groups; g++) {
        size_t i0 = g * GROUP, i1 = i0 + GROUP < n ? i0 + GROUP : n;
        double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
        for (size_t i = i0; i < i1; i++)
            for (int k = 0; k < 3; k++) {
                lo[k] = fmin(lo[k], m.sphere[4 * i + k]);
                hi[k] = fmax(hi[k], m.sphere[4 * i + k]);
            }
        float *gs = &m.group[4 * g];
        double r = 0.0;
        for (int k = 0; k < 3; k++)
            gs[k] = (float)(0.5 * (lo[k] + hi[k]));
        for (size_t i = i0; i < i1; i++) {
            const float *s = &m.sphere[4 * i];
            double dx = s[0] - gs[0], dy = s[1] - gs[1], dz = s[2] - gs[2];
            r = fmax(r, sqrt(dx * dx + dy * dy + dz * dz) + sqrt((double)s[3]));
        }
        gs[3] = (float)(r * r * 1.0001 + 1e-6);
    }
    return m;
}

static void mesh_free(mesh_t *m)
{
    free(m->flat);
    free(m->sphere);
    free(m->group);
}

/* Brute force over the original triangles in their original order, for a
   batch of rays at once: the triangles are walked in chunks that stay in
   cache while every ray of the batch visits them. */
#define BATCH 256
#define CHUNK 1024
typedef struct {
    kern_v3 o[BATCH], d[BATCH];
    kern_hit_t h[BATCH];
    int n;
    int hits, mismatches;
} batch_t;

/* The leaf of each original triangle: node index, filled from the view. */
static uint32_t *leaf_of(const kern_bvh_view_t *v, size_t n)
{
    uint32_t *leaf = malloc((n ? n : 1) * sizeof *leaf);
    if (!leaf)
        abort();
    for (uint32_t i = 0; i < v->node_count; i++)
        for (uint32_t k = 0; v->nodes[i].count > 0 && k < v->nodes[i].count; k++)
            leaf[v->tri_ids[v->nodes[i].first + k]] = i;
    return leaf;
}

/* The closest hit as kern_traverse.h defines it, by brute force over the
   candidates: every triangle in index order (kern_tri_hit keeps the lower
   index among equal distances) whose leaf box the ray meets, with that
   box's entry distance. */
static void brute_batch(const kern_bvh_view_t *v, const mesh_t *m, batch_t *b)
{
    uint32_t *leaf = leaf_of(v, m->n);
    kern_bvh_ray_t r[BATCH];
    float dn[BATCH][3];
    for (int j = 0; j < b->n; j++) {
        r[j] = kern_bvh_ray_setup(b->o[j], b->d[j]);
        b->h[j].t = INFINITY;
        b->h[j].tri = UINT32_MAX;
        double len = sqrt((double)b->d[j].x * b->d[j].x + (double)b->d[j].y * b->d[j].y +
                          (double)b->d[j].z * b->d[j].z);
        dn[j][0] = (float)(b->d[j].x / len), dn[j][1] = (float)(b->d[j].y / len);
        dn[j][2] = (float)(b->d[j].z / len);
    }
    for (size_t c0 = 0; c0 < m->n; c0 += CHUNK) {
        size_t c1 = c0 + CHUNK < m->n ? c0 + CHUNK : m->n;
        for (int j = 0; j < b->n; j++)
            for (size_t g0 = c0; g0 < c1; g0 += GROUP) {
                /* skip what the ray's line cannot reach: whole groups, then
                   single triangles, by their bounding spheres */
                if (!may_meet(&m->group[4 * (g0 / GROUP)], b->o[j], dn[j]))
                    continue;
                size_t g1 = g0 + GROUP < c1 ? g0 + GROUP : c1;
                for (size_t i = g0; i < g1; i++) {
                    uint32_t id = (uint32_t)i;
                    float tn;
                    if (may_meet(&m->sphere[4 * i], b->o[j], dn[j]) &&
                        kern_box_hit(&r[j], &v->nodes[leaf[i]], 0.0f, INFINITY, &tn))
                        kern_tri_hit(&r[j], &m->flat[9 * i], &id, 0.0f, tn, &b->h[j]);
                }
            }
    }
    free(leaf);
}

/* Compares the BVH with brute force on every ray of the batch and empties
   it. Brute force tests the triangles in index order and kern_tri_hit keeps
   the lower index among equal distances, so it finds the closest hit as
   kern_traverse.h defines it: the walk must return it bit for bit (the
   triangle, t, u and v), ties between coplanar or duplicated triangles
   included. */
static void batch_run(const kern_bvh_view_t *v, const mesh_t *m, batch_t *b)
{
    brute_batch(v, m, b);
    for (int j = 0; j < b->n; j++) {
        kern_hit_t h1, h2 = b->h[j];
        int hit = kern_trace_closest(v, b->o[j], b->d[j], 0.0f, INFINITY, &h1);
        int ref = h2.tri != UINT32_MAX;
        b->hits += hit;
        if (hit != ref ||
            (hit && (h1.tri != h2.tri || memcmp(&h1.t, &h2.t, sizeof h1.t) ||
                     memcmp(&h1.u, &h2.u, sizeof h1.u) || memcmp(&h1.v, &h2.v, sizeof h1.v)))) {
            if (b->mismatches < 5)
                fprintf(stderr, "mismatch: bvh %d t=%a tri=%u, brute %d t=%a tri=%u\n", hit, h1.t,
                        h1.tri, ref, h2.t, h2.tri);
            b->mismatches++;
        }
    }
    b->n = 0;
}

static void batch_add(const kern_bvh_view_t *v, const mesh_t *m, batch_t *b, kern_v3 o, kern_v3 d)
{
    b->o[b->n] = o;
    b->d[b->n] = d;
    if (++b->n == BATCH)
        batch_run(v, m, b);
}

static int node_depth(const kern_bvh_view_t *v, uint32_t n)
{
    if (v->nodes[n].count > 0)
        return 0;
    int a = node_depth(v, v->nodes[n].first), b = node_depth(v, v->nodes[n].first + 1);
    return 1 + (a > b ? a : b);
}

/* Every triangle in exactly one leaf, inside the leaf's box; every inner
   node's children inside it; every node reachable once; tris/tri_ids agree
   with the mesh; depth leaves room on the traversal stack. */
static void check_invariants(const kern_bvh_view_t *v, const mesh_t *m)
{
    CHECK(v->tri_count == m->n);
    if (v->tri_count == 0) {
        CHECK(v->node_count == 0);
        return;
    }
    uint32_t *seen = calloc(v->tri_count, sizeof *seen);
    uint32_t *reached = calloc(v->node_count, sizeof *reached);
    uint32_t *id_seen = calloc(v->tri_count, sizeof *id_seen);
    reached[0] = 1;
    int bad = 0;
    for (uint32_t n = 0; n < v->node_count; n++) {
        const kern_bvh_node_t *node = &v->nodes[n];
        if (node->count) {
            bad += node->first + node->count > v->tri_count || node->count > KERN_BVH_LEAF;
            for (uint32_t i = node->first; i < node->first + node->count && i < v->tri_count; i++) {
                seen[i]++;
                for (int k = 0; k < 9; k++)
                    bad += !(v->tris[9 * (size_t)i + k] >= node->lo[k % 3] &&
                             v->tris[9 * (size_t)i + k] <= node->hi[k % 3]);
            }
        } else {
            if (node->first + 1 >= v->node_count || node->first <= n) {
                bad++;
                continue;
            }
            for (int c = 0; c < 2; c++) {
                reached[node->first + c]++;
                for (int k = 0; k < 3; k++)
                    bad += !(v->nodes[node->first + c].lo[k] >= node->lo[k] &&
                             v->nodes[node->first + c].hi[k] <= node->hi[k]);
            }
        }
    }
    for (uint32_t n = 0; n < v->node_count; n++)
        bad += reached[n] != 1;
    for (uint32_t i = 0; i < v->tri_count; i++) {
        bad += seen[i] != 1;
        uint32_t id = v->tri_ids[i];
        if (id >= m->n) {
            bad++;
            continue;
        }
        id_seen[id]++;
        float tri[9];
        tri_of(m, id, tri);
        bad += memcmp(tri, &v->tris[9 * (size_t)i], sizeof tri) != 0;
    }
    for (uint32_t i = 0; i < v->tri_count; i++)
        bad += id_seen[i] != 1;
    CHECK(bad == 0);
    if (bad == 0)
        CHECK(node_depth(v, 0) < KERN_STACK);
    free(seen);
    free(reached);
    free(id_seen);
}

/* Random triangles of size up to `size` in a 100^3 cube, every 50th one
   degenerate (a point, or three collinear vertices). */
static void test_soup(size_t n, int rays)
{
    float *vtx = malloc(n * 9 * sizeof *vtx);
    uint32_t *idx = malloc(n * 3 * sizeof *idx);
    for (size_t i = 0; i < n; i++) {
        kern_v3 c = v3(100 * frand() - 50, 100 * frand() - 50, 100 * frand() - 50);
        kern_v3 e = v3(8 * frand() - 4, 8 * frand() - 4, 8 * frand() - 4);
        for (int k = 0; k < 3; k++) {
            kern_v3 p = v3_add(c, v3(8 * frand() - 4, 8 * frand() - 4, 8 * frand() - 4));
            if (i % 50 == 7)
                p = c; /* a point */
            else if (i % 50 == 23)
                p = v3_add(c, v3_scale(e, (float)k)); /* a segment */
            vtx[9 * i + 3 * k] = p.x, vtx[9 * i + 3 * k + 1] = p.y, vtx[9 * i + 3 * k + 2] = p.z;
            idx[3 * i + k] = (uint32_t)(3 * i + k);
        }
    }
    mesh_t m = mesh_make(vtx, idx, n);
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(vtx, idx, n, 1, &b, NULL) == BF_OK);
    kern_bvh_view_t v = kern_bvh_view(b);
    check_invariants(&v, &m);
    CHECK(kern_bvh_bytes(b) >= n * (9 * sizeof(float) + sizeof(uint32_t)));
    static batch_t bt;
    memset(&bt, 0, sizeof bt);
    for (int r = 0; r < rays; r++) {
        kern_v3 o = v3(120 * frand() - 60, 120 * frand() - 60, 120 * frand() - 60);
        batch_add(&v, &m, &bt, o, rand_dir());
    }
    batch_run(&v, &m, &bt);
    printf("soup of %zu triangles: %d rays, %d hits, %d mismatches\n", n, rays, bt.hits,
           bt.mismatches);
    CHECK(bt.mismatches == 0);
    if (n >= 1000)
        CHECK(bt.hits > rays / 10);
    kern_bvh_destroy(&b);
    CHECK(b == NULL);
    mesh_free(&m);
    free(vtx);
    free(idx);
}

/* Triangles at geometrically growing distances: lopsided splits, a tree
   deeper than a balanced one, still correct and within the stack. */
static void test_deep(void)
{
    enum { N = 300 };
    static float vtx[N * 9];
    static uint32_t idx[N * 3];
    for (int i = 0; i < N; i++) {
        float x = powf(1.25f, (float)(i % 100)) * (1.0f + (float)(i / 100));
        float tri[9] = {x, -1, -1, x, 1, -1, x, 0, 1};
        memcpy(&vtx[9 * i], tri, sizeof tri);
        for (int k = 0; k < 3; k++)
            idx[3 * i + k] = (uint32_t)(3 * i + k);
    }
    mesh_t m = mesh_make(vtx, idx, N);
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(vtx, idx, N, 1, &b, NULL) == BF_OK);
    kern_bvh_view_t v = kern_bvh_view(b);
    uint32_t *seen = calloc(N, sizeof *seen);
    int bad = 0;
    for (uint32_t n = 0; n < v.node_count; n++)
        for (uint32_t i = 0; i < v.nodes[n].count; i++)
            bad += v.nodes[n].first + i >= N || seen[v.nodes[n].first + i]++ != 0;
    CHECK(bad == 0);
    CHECK(node_depth(&v, 0) < KERN_STACK);
    free(seen);
    static batch_t bt;
    memset(&bt, 0, sizeof bt);
    for (int r = 0; r < 3000; r++) {
        kern_v3 o = v3(-5.0f + 10.0f * frand(), 0.4f * frand() - 0.2f, 0.4f * frand() - 0.2f);
        kern_v3 d = v3_norm(v3(r % 2 ? 1.0f : -1.0f, 0.01f * frand(), 0.01f * frand()));
        batch_add(&v, &m, &bt, o, d);
    }
    batch_run(&v, &m, &bt);
    printf("geometric series of %d triangles: depth %d, %d hits, %d mismatches\n", N,
           node_depth(&v, 0), bt.hits, bt.mismatches);
    CHECK(bt.mismatches == 0 && bt.hits > 100);
    kern_bvh_destroy(&b);
    mesh_free(&m);
}

/* A closed box [-10, 10]^3, each face split into a K x K grid of quads (two
   triangles each). Rays aimed exactly at grid vertices and edge midpoints,
   from inside and from outside, must all hit; so must random rays from
   inside. */
static void test_watertight(void)
{
    enum { K = 7 };
    static float vtx[6 * (K + 1) * (K + 1) * 3];
    static uint32_t idx[6 * K * K * 6];
    size_t nv = 0, ni = 0;
    for (int f = 0; f < 6; f++) {
        int axis = f / 2;
        float side = f % 2 ? 10.0f : -10.0f;
        size_t base = nv;
        for (int i = 0; i <= K; i++)
            for (int j = 0; j <= K; j++) {
                float p[3];
                p[axis] = side;
                p[(axis + 1) % 3] = -10.0f + 20.0f * (float)i / K;
                p[(axis + 2) % 3] = -10.0f + 20.0f * (float)j / K;
                memcpy(&vtx[3 * nv++], p, sizeof p);
            }
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++) {
                uint32_t a = (uint32_t)(base + (size_t)i * (K + 1) + (size_t)j), b = a + 1,
                         c = a + K + 1, d = c + 1;
                uint32_t q[6] = {a, b, d, a, d, c};
                memcpy(&idx[ni], q, sizeof q);
                ni += 6;
            }
    }
    mesh_t m = mesh_make(vtx, idx, ni / 3);
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(vtx, idx, ni / 3, 1, &b, NULL) == BF_OK);
    kern_bvh_view_t v = kern_bvh_view(b);
    check_invariants(&v, &m);
    int misses = 0, total = 0;
    for (size_t t = 0; t < ni; t += 3) {
        /* a vertex of this triangle, and the midpoint of one of its edges */
        kern_v3 p0 = v3(vtx[3 * idx[t]], vtx[3 * idx[t] + 1], vtx[3 * idx[t] + 2]);
        kern_v3 p1 = v3(vtx[3 * idx[t + 1]], vtx[3 * idx[t + 1] + 1], vtx[3 * idx[t + 1] + 2]);
        kern_v3 targets[2] = {p0, v3_scale(v3_add(p0, p1), 0.5f)};
        for (int s = 0; s < 2; s++)
            for (int k = 0; k < 4; k++) {
                kern_v3 o;
                if (k == 0)
                    o = v3(0, 0, 0);
                else if (k == 1)
                    o = v3(frand() * 16 - 8, frand() * 16 - 8, frand() * 16 - 8);
                else {
                    /* outside, on the line through the target and a point q
                       strictly inside: by convexity the ray enters the box
                       right at the target, never merely grazing it */
                    kern_v3 q = v3(frand() * 16 - 8, frand() * 16 - 8, frand() * 16 - 8);
                    o = v3_sub(targets[s], v3_scale(v3_norm(v3_sub(q, targets[s])), 30.0f));
                }
                kern_v3 d = v3_sub(targets[s], o);
                kern_hit_t h;
                total++;
                if (!kern_trace_closest(&v, o, d, 0.0f, INFINITY, &h)) {
                    if (misses < 5)
                        fprintf(stderr, "escaped: from (%g %g %g) to (%g %g %g)\n", o.x, o.y, o.z,
                                targets[s].x, targets[s].y, targets[s].z);
                    misses++;
                }
            }
    }
    for (int r = 0; r < 20000; r++) {
        kern_hit_t h;
        total++;
        if (!kern_trace_closest(&v, v3(0.5f, -0.25f, 0.125f), rand_dir(), 0.0f, INFINITY, &h))
            misses++;
    }
    /* axis-aligned rays (zero direction components) through the inner grid
       vertices of the faces */
    for (int i = 1; i < K; i++)
        for (int a = 0; a < 3; a++) {
            float c = -10.0f + 20.0f * (float)i / K;
            float o[3] = {0, 0, 0}, d[3] = {0, 0, 0};
            o[(a + 1) % 3] = c;
            o[(a + 2) % 3] = c;
            d[a] = i % 2 ? 1.0f : -1.0f;
            kern_hit_t h;
            total++;
            if (!kern_trace_closest(&v, v3(o[0], o[1], o[2]), v3(d[0], d[1], d[2]), 0.0f, INFINITY,
                                    &h) ||
                fabsf(h.t - 10.0f) > 1e-4f)
                misses++;
        }
    printf("closed box of %zu triangles: %d rays at vertices, edges and at random, %d escaped\n",
           ni / 3, total, misses);
    CHECK(misses == 0);
    kern_bvh_destroy(&b);
    mesh_free(&m);
}

static void test_small(void)
{
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(NULL, NULL, 0, 1, &b, NULL) == BF_OK);
    kern_bvh_view_t v = kern_bvh_view(b);
    kern_hit_t h;
    CHECK(v.tri_count == 0 && v.node_count == 0);
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 0, INFINITY, &h));
    CHECK(h.tri == UINT32_MAX);
    kern_bvh_destroy(&b);
    kern_bvh_destroy(&b); /* idempotent */
    kern_bvh_destroy(NULL);
    char err[BF_ERRLEN] = "";
    CHECK(kern_bvh_new(NULL, NULL, 3, 1, &b, err) == BF_EINVAL && b == NULL && err[0]);

    float tri[9] = {5, -1, -1, 5, 1, -1, 5, 0, 1};
    uint32_t idx[3] = {0, 1, 2};
    CHECK(kern_bvh_new(tri, idx, 1, 1, &b, NULL) == BF_OK);
    v = kern_bvh_view(b);
    CHECK(v.node_count == 1 && v.tri_count == 1 && v.tri_ids[0] == 0);
    CHECK(kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 0, INFINITY, &h) && h.tri == 0 &&
          fabsf(h.t - 5) < 1e-5f);
    /* barycentrics: the hit point is u v0 + v v1 + (1 - u - v) v2 */
    CHECK(fabsf(h.u * -1 + h.v * 1 + (1 - h.u - h.v) * 0) < 1e-5f);
    CHECK(fabsf(h.u * -1 + h.v * -1 + (1 - h.u - h.v) * 1) < 1e-5f);
    CHECK(kern_trace_closest(&v, v3(0, 0, 0), v3(2, 0, 0), 0, INFINITY, &h) &&
          fabsf(h.t - 2.5f) < 1e-5f); /* t in units of |dir| */
    CHECK(kern_trace_closest(&v, v3(10, 0, 0), v3(-1, 0, 0), 0, INFINITY, &h)); /* back face */
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 0, 4.0f, &h));      /* tmax */
    CHECK(h.tri == UINT32_MAX && h.t == 4.0f);
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 6.0f, INFINITY, &h)); /* tmin */
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(-1, 0, 0), 0, INFINITY, &h));
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(0, 0, 0), 0, INFINITY, &h)); /* no direction */
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 5.0f, 5.0f, &h));  /* empty range */
    kern_bvh_destroy(&b);

    /* one degenerate triangle: built, never hit */
    float line[9] = {5, -1, 0, 5, 0, 0, 5, 1, 0};
    CHECK(kern_bvh_new(line, idx, 1, 1, &b, NULL) == BF_OK);
    v = kern_bvh_view(b);
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 0, INFINITY, &h));
    kern_bvh_destroy(&b);
}

/* Returns 0 when munich is missing (skipped), 1 when it ran. */
static int test_munich(int rays)
{
    const char *shared = getenv("BF_SHARED_DIR") ? getenv("BF_SHARED_DIR") : "/work/shared";
    char xml[1024];
    snprintf(xml, sizeof xml, "%s/scenes/munich/munich.xml", shared);
    if (access(xml, R_OK) != 0) {
        printf("munich: %s not found, skipped\n", xml);
        return 0;
    }
    char err[BF_ERRLEN] = "";
    kern_scene_t *scene = NULL;
    bf_err_t rc = kern_scene_load_xml(xml, 3.5e9, &scene, err);
    CHECK(rc == BF_OK);
    if (rc != BF_OK) {
        fprintf(stderr, "munich: %s\n", err);
        return 1;
    }
    if (scene->triangle_count == 0 || scene->triangle_count > 1000000) {
        CHECK(!"munich has a plausible triangle count");
        kern_scene_destroy(&scene);
        return 1;
    }
    mesh_t m = mesh_make(scene->vertices, scene->indices, scene->triangle_count);
    kern_bvh_t *b = NULL;
    double t0 = bf_mono_s();
    CHECK(kern_bvh_new(scene->vertices, scene->indices, scene->triangle_count, 1, &b, err) ==
          BF_OK);
    double t_build = bf_mono_s() - t0;
    kern_bvh_view_t v = kern_bvh_view(b);
    check_invariants(&v, &m);
    static batch_t bt;
    memset(&bt, 0, sizeof bt);
    for (int r = 0; r < rays; r++) {
        kern_v3 o = v3(0, 0, 30);
        if (r % 2) {
            float p[3];
            for (int k = 0; k < 3; k++)
                p[k] = (float)(scene->bbox_min[k] +
                               (scene->bbox_max[k] - scene->bbox_min[k]) * frand());
            o = v3(p[0], p[1], p[2]);
        }
        batch_add(&v, &m, &bt, o, rand_dir());
    }
    batch_run(&v, &m, &bt);
    printf("munich: %zu triangles, build %.3f s, depth %d, %d rays, %d hits, %d mismatches\n",
           scene->triangle_count, t_build, node_depth(&v, 0), rays, bt.hits, bt.mismatches);
    CHECK(bt.mismatches == 0);
    CHECK(bt.hits > rays / 10);
    kern_bvh_destroy(&b);
    mesh_free(&m);
    kern_scene_destroy(&scene);
    return 1;
}

int main(void)
{
#if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) {
        printf("kern_bvh_test: skipped: built with FMA instructions, this CPU has none\n");
        return 77;
    }
#endif
    test_small();
    test_soup(1, 2000);
    test_soup(5000, 100000);
    test_deep();
    test_watertight();
    int ran = test_munich(100000);
    if (failures) {
        fprintf(stderr, "kern_bvh_test: %d checks failed\n", failures);
        return 1;
    }
    if (!ran)
        return 77;
    printf("kern_bvh_test: all checks passed\n");
    return 0;
}
