/*  kernels/kern_traverse_wide_test.c - the four-wide walk of the CPU backend
    (kern_traverse_wide.h) returns exactly what the binary walk
    (kern_trace_closest, kern_traverse.h) returns: the same hit or miss, the
    same triangle and the same bits of t, u and v, on every ray, although
    the two visit the leaves in different orders; and both return the
    closest hit as kern_traverse.h defines it, checked on a share of the
    rays against a brute force that applies the definition itself (every
    candidate triangle tested on its own, the smallest (t, index) chosen
    here), so that a walk that kept the first or the last of equal
    distances fails. Rays: at random from random points and from every
    scene's own vertices; aimed at triangle vertices and edge midpoints
    (shared by two or more triangles, where the watertight test finds
    several hits at one distance); along the axes; with tmin > 0 and finite
    tmax. Meshes: a floor with building floors lying on it (coplanar
    surfaces, and the same triangle stored twice, so that ties at equal t
    are everywhere), random soups with degenerate triangles, and the shared
    Sionna scenes (BF_SHARED_DIR, default /work/shared; munich, etoile,
    florence, simple_street_canyon, ...). Exits 77 (skipped) only when
    everything else passed and no shared scene was found.

    Built twice, like kern_bvh_test: also as
    kern_traverse_wide_contract_test, with multiply-adds contracted wherever
    the compiler may (-mfma -ffp-contract=fast); that build exits 77 on a
    CPU without FMA. */

#include "kern_scene.h"
#include "kern_traverse_wide.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"
#include "kern_testkit.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    return test_frand(&rng);
}

static kern_v3 rand_dir(void)
{
    return test_rand_dir(&rng);
}

typedef struct {
    long rays, hits, differ, brute, brute_ties;
} tally_t;

/* The mesh of the walks' view for the brute force: the triangles in
   original order (9 floats each), the binary leaf of each, and one ray in
   brute_every checked. */
static struct {
    const float *flat;
    const uint32_t *leaf;
    size_t n;
    long brute_every;
} mesh;

/* The closest hit by its definition (kern_traverse.h), with no walk: every
   triangle whose leaf box the ray meets within [tmin, tmax] is tested on
   its own (a fresh best, so kern_tri_hit's own tie rule plays no part),
   and the smallest distance wins, the smallest index among equal ones.
   *ties counts rays where two triangles met the ray at the winning
   distance. */
static int brute(const kern_bvh_view_t *v, kern_v3 o, kern_v3 d, float tmin, float tmax,
                 kern_hit_t *best, long *ties)
{
    kern_bvh_ray_t r = kern_bvh_ray_setup(o, d);
    best->t = tmax;
    best->u = best->v = 0.0f;
    best->tri = UINT32_MAX;
    int tied = 0;
    for (size_t i = 0; i < mesh.n; i++) {
        float tn;
        if (!kern_box_hit(&r, &v->nodes[mesh.leaf[i]], tmin, tmax, &tn))
            continue;
        kern_hit_t h = {INFINITY, 0.0f, 0.0f, UINT32_MAX};
        uint32_t id = (uint32_t)i;
        if (!kern_tri_hit(&r, &mesh.flat[9 * i], &id, tmin, tn, &h) || !(h.t < tmax))
            continue;
        if (h.t < best->t || best->tri == UINT32_MAX) {
            *best = h;
            tied = 0;
        } else if (h.t == best->t) {
            tied = 1; /* index order: the first one stays */
        }
    }
    *ties += tied;
    return best->tri != UINT32_MAX;
}

/* One ray through both walks; counts a difference in any bit, and on one
   ray in mesh.brute_every one from the brute force. */
static void same(const kern_bvh_view_t *v, kern_v3 o, kern_v3 d, float tmin, float tmax, tally_t *t)
{
    kern_hit_t a, b, b4, c;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&b4, 0, sizeof b4);
    kern_bvh_view_t v4 = *v; /* the four-wide walk, where the eight-wide one runs */
    v4.wide8 = NULL;
    v4.wide8_count = 0;
    int ha = kern_trace_closest(v, o, d, tmin, tmax, &a);
    int hb = kern_trace_closest_wide(v, o, d, tmin, tmax, &b);
    int hb4 = kern_trace_closest_wide(&v4, o, d, tmin, tmax, &b4);
    int hc = ha;
    c = a;
    if (mesh.brute_every && t->rays % mesh.brute_every == 0) {
        t->brute++;
        hc = brute(v, o, d, tmin, tmax, &c, &t->brute_ties);
    }
    t->rays++;
    t->hits += ha;
    if (ha != hb || memcmp(&a, &b, sizeof a) != 0 || ha != hb4 || memcmp(&a, &b4, sizeof a) != 0 ||
        ha != hc || memcmp(&a, &c, sizeof a) != 0) {
        if (t->differ < 5)
            fprintf(stderr,
                    "differ: o (%a %a %a) d (%a %a %a) [%g, %g]: binary %d tri %u t %a, wide%s %d "
                    "tri %u t %a, four-wide %d tri %u t %a, definition %d tri %u t %a\n",
                    o.x, o.y, o.z, d.x, d.y, d.z, tmin, tmax, ha, a.tri, a.t, v->wide8 ? "8" : "4",
                    hb, b.tri, b.t, hb4, b4.tri, b4.t, hc, c.tri, c.t);
        t->differ++;
    }
}

static kern_v3 vtx_of(const float *vtx, uint32_t i)
{
    return v3(vtx[3 * (size_t)i], vtx[3 * (size_t)i + 1], vtx[3 * (size_t)i + 2]);
}

/* Every kind of ray over the mesh; returns the tally. */
static tally_t run_mesh(const char *name, const float *vtx, size_t nv, const uint32_t *idx,
                        size_t nt, const float lo[3], const float hi[3], long random_rays)
{
    tally_t t = {0, 0, 0, 0, 0};
    kern_bvh_t *b = NULL;
    CHECK(kern_bvh_new(vtx, idx, nt, 1, &b, NULL) == BF_OK);
    if (!b)
        return t;
    kern_bvh_view_t v = kern_bvh_view(b);
    /* the brute force: about 3*10^8 triangle tests per mesh */
    float *flat = malloc((nt ? nt : 1) * 9 * sizeof *flat);
    uint32_t *leaf = malloc((nt ? nt : 1) * sizeof *leaf);
    CHECK(flat && leaf);
    if (!flat || !leaf)
        abort();
    for (size_t i = 0; i < nt; i++)
        for (int k = 0; k < 3; k++)
            memcpy(&flat[9 * i + 3 * (size_t)k], &vtx[3 * (size_t)idx[3 * i + (size_t)k]],
                   3 * sizeof(float));
    for (uint32_t i = 0; i < v.node_count; i++)
        for (uint32_t k = 0; k < v.nodes[i].count; k++)
            leaf[v.tri_ids[v.nodes[i].first + k]] = i;
    mesh.flat = flat;
    mesh.leaf = leaf;
    mesh.n = nt;
    mesh.brute_every = nt ? 1 + (long)(nt * (size_t)random_rays / 200000000u) : 0;
    CHECK(v.node_count < 2 || v.wide != NULL);
    /* both wide walks on this CPU: the eight-wide form exactly where it runs */
    CHECK((v.wide8 != NULL) == (v.wide != NULL && kern_bvh_simd8()));
    CHECK(v.wide8_count <= v.wide_count);
    CHECK(v.wide_count <= v.node_count / 2 + 1);
    kern_v3 mid = v3(0.5f * (lo[0] + hi[0]), 0.5f * (lo[1] + hi[1]), 0.5f * (lo[2] + hi[2]));
    for (long r = 0; r < random_rays; r++) {
        float p[3];
        for (int k = 0; k < 3; k++)
            p[k] = lo[k] + (hi[k] - lo[k]) * frand();
        kern_v3 o = r % 3 == 0 ? mid : v3(p[0], p[1], p[2]);
        if (r % 3 == 2 && nv) /* from a vertex of the scene, as a bounce leaves a surface */
            o = vtx_of(vtx, (uint32_t)(frand() * (float)nv) % (uint32_t)nv);
        kern_v3 d = rand_dir();
        same(&v, o, d, 0.0f, INFINITY, &t);
        if (r % 8 == 0) /* a window: from tmin to tmax */
            same(&v, o, d, 0.5f + 10.0f * frand(), 20.0f + 200.0f * frand(), &t);
    }
    /* at a vertex and an edge midpoint of triangles, from random points */
    long aimed = random_rays / 4 < (long)nt ? random_rays / 4 : (long)nt;
    for (long r = 0; r < aimed; r++) {
        size_t tri = nt > (size_t)aimed ? (size_t)(frand() * (float)nt) % nt : (size_t)r;
        kern_v3 p0 = vtx_of(vtx, idx[3 * tri]), p1 = vtx_of(vtx, idx[3 * tri + 1]);
        kern_v3 targets[2] = {p0, v3_scale(v3_add(p0, p1), 0.5f)};
        for (int s = 0; s < 2; s++) {
            float p[3];
            for (int k = 0; k < 3; k++)
                p[k] = lo[k] + (hi[k] - lo[k]) * frand();
            kern_v3 o = v3(p[0], p[1], p[2]);
            same(&v, o, v3_sub(targets[s], o), 0.0f, INFINITY, &t);
            same(&v, mid, v3_sub(targets[s], mid), 0.0f, INFINITY, &t);
        }
    }
    /* along the axes (zero direction components) through scene vertices */
    for (long r = 0; r < 3000 && nv; r++) {
        kern_v3 p = vtx_of(vtx, (uint32_t)(frand() * (float)nv) % (uint32_t)nv);
        float o[3] = {p.x, p.y, p.z}, d[3] = {0, 0, 0};
        int a = (int)(r % 3);
        o[a] = r % 2 ? lo[a] - 1.0f : hi[a] + 1.0f;
        d[a] = r % 2 ? 1.0f : -1.0f;
        same(&v, v3(o[0], o[1], o[2]), v3(d[0], d[1], d[2]), 0.0f, INFINITY, &t);
    }
    printf("%s: %zu triangles, %u binary nodes, %u wide nodes, %u wide8 nodes (%zu bytes), %ld "
           "rays, %ld hits, %ld differ; %ld rays by brute force, %ld of them with a tie\n",
           name, nt, v.node_count, v.wide_count, v.wide8_count, kern_bvh_wide_bytes(b), t.rays,
           t.hits, t.differ, t.brute, t.brute_ties);
    CHECK(t.differ == 0);
    mesh.brute_every = 0;
    free(flat);
    free(leaf);
    kern_bvh_destroy(&b);
    return t;
}

/* A 200 m floor of 2 m squares; on it, in the middle, "building floors":
   the same squares stored again (exact duplicates), squares of another
   size on the same plane, and stacked floors at 3 m intervals, each
   duplicated. Ties at equal t everywhere. */
static void test_coplanar(void)
{
    enum { K = 100 };
    size_t cap_v = 4 * (size_t)(K + 1) * (K + 1) + 10000, cap_t = 8 * (size_t)K * K + 10000;
    float *vtx = malloc(cap_v * 3 * sizeof *vtx);
    uint32_t *idx = malloc(cap_t * 3 * sizeof *idx);
    size_t nv = 0, ni = 0;
    for (int i = 0; i <= K; i++)
        for (int j = 0; j <= K; j++) {
            float p[3] = {-100.0f + 2.0f * (float)i, -100.0f + 2.0f * (float)j, 0.0f};
            memcpy(&vtx[3 * nv++], p, sizeof p);
        }
    for (int copy = 0; copy < 2; copy++)
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++) {
                if (copy && (i < 30 || i > 70 || j < 30 || j > 70))
                    continue;
                uint32_t a = (uint32_t)(i * (K + 1) + j), b = a + 1, c = a + K + 1, d = c + 1;
                uint32_t q[6] = {a, b, d, a, d, c};
                memcpy(&idx[ni], q, sizeof q);
                ni += 6;
            }
    /* 3 m squares on the ground plane, and floors at 3, 6, 9 m, twice each */
    for (int level = 0; level < 4; level++)
        for (int rep = 0; rep < (level ? 2 : 1); rep++)
            for (int i = 0; i < 10; i++)
                for (int j = 0; j < 10; j++) {
                    uint32_t base = (uint32_t)nv;
                    float x = -15.0f + 3.0f * (float)i, y = -15.0f + 3.0f * (float)j,
                          z = 3.0f * (float)level;
                    float p[12] = {x, y, z, x + 3, y, z, x, y + 3, z, x + 3, y + 3, z};
                    memcpy(&vtx[3 * nv], p, sizeof p);
                    nv += 4;
                    uint32_t q[6] = {base, base + 1, base + 3, base, base + 3, base + 2};
                    memcpy(&idx[ni], q, sizeof q);
                    ni += 6;
                }
    float lo[3] = {-100, -100, -5}, hi[3] = {100, 100, 20};
    tally_t t = run_mesh("coplanar floors", vtx, nv, idx, ni / 3, lo, hi, 200000);
    CHECK(t.hits > t.rays / 4);
    CHECK(t.brute_ties > t.brute / 20); /* the tie rule was put to the test */
    free(vtx);
    free(idx);
}

/* A random soup with degenerate triangles, small enough and big enough. */
static void test_soup(size_t n)
{
    float *vtx = malloc(n * 9 * sizeof *vtx);
    uint32_t *idx = malloc(n * 3 * sizeof *idx);
    for (size_t i = 0; i < n; i++) {
        float c[3] = {frand() * 20 - 10, frand() * 20 - 10, frand() * 20 - 10};
        for (int k = 0; k < 3; k++)
            for (int a = 0; a < 3; a++)
                vtx[9 * i + 3 * k + a] =
                    i % 17 == 0 && k == 2 ? vtx[9 * i + a] : c[a] + frand() * 2 - 1;
        for (int k = 0; k < 3; k++)
            idx[3 * i + k] = (uint32_t)(3 * i + (size_t)k);
    }
    float lo[3] = {-12, -12, -12}, hi[3] = {12, 12, 12};
    char name[64];
    snprintf(name, sizeof name, "soup of %zu", n);
    run_mesh(name, vtx, 3 * n, idx, n, lo, hi, n < 100 ? 20000 : 100000);
    free(vtx);
    free(idx);
}

/* The shared Sionna scenes that are present; returns how many ran. */
static int test_shared(void)
{
    const char *shared = getenv("BF_SHARED_DIR") ? getenv("BF_SHARED_DIR") : "/work/shared";
    static const char *const names[] = {"munich",    "etoile",
                                        "florence",  "simple_street_canyon",
                                        "box",       "simple_street_canyon_with_cars",
                                        "floor_wall"};
    int ran = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char xml[1024], err[BF_ERRLEN] = "";
        snprintf(xml, sizeof xml, "%s/scenes/%s/%s.xml", shared, names[i], names[i]);
        FILE *f = fopen(xml, "r");
        if (!f)
            continue;
        fclose(f);
        kern_scene_t *scene = NULL;
        if (kern_scene_load_xml(xml, 3.5e9, &scene, err) != BF_OK) {
            fprintf(stderr, "%s: %s\n", names[i], err);
            CHECK(!"a shared scene loads");
            continue;
        }
        float lo[3], hi[3];
        for (int k = 0; k < 3; k++) {
            lo[k] = (float)scene->bbox_min[k];
            hi[k] = (float)scene->bbox_max[k];
        }
        run_mesh(names[i], scene->vertices, scene->vertex_count, scene->indices,
                 scene->triangle_count, lo, hi, i == 0 ? 300000 : 100000);
        kern_scene_destroy(&scene);
        ran++;
    }
    return ran;
}

int main(void)
{
#if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) {
        printf(
            "kern_traverse_wide_test: skipped: built with FMA instructions, this CPU has none\n");
        return 77;
    }
#endif
    /* the dispatch: BF_KERN_SIMD=sse2 rules the AVX2 walk out; the rest of
       the test runs with the environment as it came */
    const char *simd = getenv("BF_KERN_SIMD");
    char *saved = simd ? strdup(simd) : NULL;
    setenv("BF_KERN_SIMD", "sse2", 1);
    CHECK(kern_bvh_simd8() == 0);
    if (saved)
        setenv("BF_KERN_SIMD", saved, 1);
    else
        unsetenv("BF_KERN_SIMD");
    free(saved);
#if defined(KERN_WIDE8)
    __builtin_cpu_init();
    if (!simd || strcmp(simd, "sse2") != 0)
        CHECK(kern_bvh_simd8() == (__builtin_cpu_supports("avx2") ? 1 : 0));
#endif
    printf("kern_traverse_wide_test: %s\n",
           kern_bvh_simd8() ? "eight-wide (AVX2) and four-wide (SSE2) walks"
                            : "four-wide (SSE2) walk only (no AVX2 here, or BF_KERN_SIMD=sse2)");
    test_soup(1);
    test_soup(7);
    test_soup(20000);
    test_coplanar();
    int ran = test_shared();
    if (failures) {
        fprintf(stderr, "kern_traverse_wide_test: %d checks failed\n", failures);
        return 1;
    }
    if (!ran)
        return 77;
    printf("kern_traverse_wide_test: all checks passed\n");
    return 0;
}
