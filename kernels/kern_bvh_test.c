/*  kernels/kern_bvh_test.c - the BVH and its traversal against brute force:
    random triangle soups and a closed, subdivided box hit from inside and
    outside with rays aimed exactly at shared edges and vertices (watertight:
    none may slip through), BVH invariants, and the empty and one-triangle
    scenes. */

#include "kern_traverse.h"

#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) / 16777216.0f;
}

static kern_v3 rand_dir(void)
{
    for (;;) {
        kern_v3 d = v3(2 * frand() - 1, 2 * frand() - 1, 2 * frand() - 1);
        float l = v3_len(d);
        if (l > 0.1f && l <= 1.0f)
            return v3_scale(d, 1.0f / l);
    }
}

/* Brute force over the BVH's own triangle copy (same float data). */
static int brute(const kern_bvh_view_t *v, kern_v3 o, kern_v3 d, kern_hit_t *hit)
{
    kern_watertight_t w = kern_watertight_setup(d);
    hit->t = INFINITY;
    hit->tri = UINT32_MAX;
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < v->tri_count; i++)
        if (kern_watertight_hit(&w, o, &v->tris[9 * (size_t)i], 0.0f, hit))
            best = i;
    if (best != UINT32_MAX)
        hit->tri = v->tri_ids[best];
    return best != UINT32_MAX;
}

static void check_invariants(const kern_bvh_view_t *v)
{
    uint32_t *seen = calloc(v->tri_count + 1, sizeof *seen);
    for (uint32_t n = 0; n < v->node_count; n++) {
        const kern_bvh_node_t *node = &v->nodes[n];
        if (node->count) {
            CHECK(node->first + node->count <= v->tri_count);
            for (uint32_t i = node->first; i < node->first + node->count; i++) {
                seen[i]++;
                for (int k = 0; k < 9; k++)
                    CHECK(v->tris[9 * i + k] >= node->lo[k % 3] &&
                          v->tris[9 * i + k] <= node->hi[k % 3]);
            }
        } else {
            CHECK(node->first + 1 < v->node_count);
            for (int c = 0; c < 2; c++)
                for (int k = 0; k < 3; k++) {
                    CHECK(v->nodes[node->first + c].lo[k] >= node->lo[k]);
                    CHECK(v->nodes[node->first + c].hi[k] <= node->hi[k]);
                }
        }
    }
    for (uint32_t i = 0; i < v->tri_count; i++)
        CHECK(seen[i] == 1);
    free(seen);
}

static void test_soup(size_t n, int rays)
{
    float *vtx = malloc(n * 9 * sizeof *vtx);
    uint32_t *idx = malloc(n * 3 * sizeof *idx);
    for (size_t i = 0; i < n; i++) {
        kern_v3 c = v3(100 * frand() - 50, 100 * frand() - 50, 100 * frand() - 50);
        for (int k = 0; k < 3; k++) {
            kern_v3 p = v3_add(c, v3(8 * frand() - 4, 8 * frand() - 4, 8 * frand() - 4));
            vtx[9 * i + 3 * k] = p.x, vtx[9 * i + 3 * k + 1] = p.y, vtx[9 * i + 3 * k + 2] = p.z;
            idx[3 * i + k] = (uint32_t)(3 * i + k);
        }
    }
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(vtx, idx, n, 1, &b, NULL) == BF_OK);
    kern_bvh_view_t v = kern_bvh_view(b);
    check_invariants(&v);
    int mismatches = 0, hits = 0;
    for (int r = 0; r < rays; r++) {
        kern_v3 o = v3(120 * frand() - 60, 120 * frand() - 60, 120 * frand() - 60);
        kern_v3 d = rand_dir();
        kern_hit_t h1, h2;
        int a = kern_trace_closest(&v, o, d, 0.0f, INFINITY, &h1);
        int c = brute(&v, o, d, &h2);
        hits += a;
        if (a != c || (a && (h1.tri != h2.tri || fabsf(h1.t - h2.t) > 1e-4f * h2.t)))
            mismatches++;
    }
    printf("soup of %zu triangles: %d rays, %d hits, %d mismatches\n", n, rays, hits, mismatches);
    CHECK(mismatches == 0);
    if (n >= 1000)
        CHECK(hits > rays / 10);
    kern_bvh_destroy(&b);
    CHECK(b == NULL);
    free(vtx);
    free(idx);
}

/* A closed box from z = 0 to 10, each face split into a k x k grid of quads
   (2 triangles each). Rays from the centre aimed at grid vertices and edge
   midpoints must all hit. */
static void test_watertight(void)
{
    enum { K = 7 };
    float vtx[6 * (K + 1) * (K + 1) * 3];
    uint32_t idx[6 * K * K * 6];
    size_t nv = 0, ni = 0;
    for (int f = 0; f < 6; f++) {
        int axis = f / 2;
        float side = f % 2 ? 10.0f : -10.0f;
        size_t base = nv;
        for (int i = 0; i <= K; i++)
            for (int j = 0; j <= K; j++) {
                float p[3];
                p[axis] = side;
                p[(axis + 1) % 3] = -10.0f + 20.0f * i / K;
                p[(axis + 2) % 3] = -10.0f + 20.0f * j / K;
                memcpy(&vtx[3 * nv++], p, sizeof p);
            }
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++) {
                uint32_t a = (uint32_t)(base + i * (K + 1) + j), b = a + 1, c = a + K + 1,
                         d = c + 1;
                uint32_t q[6] = {a, b, d, a, d, c};
                memcpy(&idx[ni], q, sizeof q);
                ni += 6;
            }
    }
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(vtx, idx, ni / 3, 1, &b, NULL) == BF_OK);
    kern_bvh_view_t v = kern_bvh_view(b);
    int misses = 0, total = 0;
    for (size_t i = 0; i < nv; i++) {
        kern_v3 target = v3(vtx[3 * i], vtx[3 * i + 1], vtx[3 * i + 2]);
        for (int s = 0; s < 4; s++) {
            /* vertices, and points on the grid's edges */
            kern_v3 o =
                s == 0 ? v3(0, 0, 0) : v3(frand() * 4 - 2, frand() * 4 - 2, frand() * 4 - 2);
            kern_hit_t h;
            total++;
            if (!kern_trace_closest(&v, o, v3_norm(v3_sub(target, o)), 0.0f, INFINITY, &h))
                misses++;
        }
    }
    for (int r = 0; r < 20000; r++) {
        kern_hit_t h;
        total++;
        if (!kern_trace_closest(&v, v3(0.5f, -0.25f, 0.125f), rand_dir(), 0.0f, INFINITY, &h))
            misses++;
    }
    printf("closed box: %d rays from inside, %d escaped\n", total, misses);
    CHECK(misses == 0);
    kern_bvh_destroy(&b);
}

static void test_small(void)
{
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(NULL, NULL, 0, 1, &b, NULL) == BF_OK);
    kern_bvh_view_t v = kern_bvh_view(b);
    kern_hit_t h;
    CHECK(v.tri_count == 0 && !kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 0, INFINITY, &h));
    CHECK(h.tri == UINT32_MAX);
    kern_bvh_destroy(&b);
    kern_bvh_destroy(&b); /* idempotent */
    float tri[9] = {5, -1, -1, 5, 1, -1, 5, 0, 1};
    uint32_t idx[3] = {0, 1, 2};
    CHECK(kern_bvh_new(tri, idx, 1, 1, &b, NULL) == BF_OK);
    v = kern_bvh_view(b);
    CHECK(kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 0, INFINITY, &h) && h.tri == 0 &&
          fabsf(h.t - 5) < 1e-5f);
    CHECK(kern_trace_closest(&v, v3(10, 0, 0), v3(-1, 0, 0), 0, INFINITY, &h)); /* back face */
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(1, 0, 0), 0, 4.0f, &h));      /* tmax */
    CHECK(!kern_trace_closest(&v, v3(0, 0, 0), v3(-1, 0, 0), 0, INFINITY, &h));
    kern_bvh_destroy(&b);
}

int main(void)
{
    test_small();
    test_soup(1, 2000);
    test_soup(1000, 20000);
    test_soup(30000, 3000);
    test_watertight();
    if (failures) {
        fprintf(stderr, "kern_bvh_test: %d checks failed\n", failures);
        return 1;
    }
    printf("kern_bvh_test: all checks passed\n");
    return 0;
}
