/*  bench/raycast.c - closest-hit ray casting of our BVH (kern_bvh.h) against
    Embree 3 on a real Sionna scene (munich by default), single-threaded, on
    the same rays in the same run, with both of our walks: the binary one
    (kern_traverse.h, what the CUDA backend runs) and the wide one
    (kern_trace_closest_wide, what the CPU backend runs: eight-wide with
    AVX2 where the CPU has it, four-wide with SSE2 elsewhere or with
    BF_KERN_SIMD=sse2; the line under the table says which). Half of the rays
    leave a fixed transmitter at (0, 0, 30), half start at random points inside
    the scene's bounding box; all directions are uniform on the sphere. Both
    acceleration structures are built on one thread (Embree: RTC_SCENE_FLAG_NONE,
    RTC_BUILD_QUALITY_HIGH, one triangle geometry, rtcIntersect1). The two
    engines take turns on blocks of rays, so that load from other processes
    hits all alike. Prints build times, Mrays/s of each (best of --repeat
    passes), the ratios to Embree, the wide nodes' extra memory, and how
    often ours and Embree agree on hit/miss and distance (1e-4 relative, or 4
    float ulps of the scene's largest coordinate); exits 1 when they agree on
    fewer than 99.9% of the rays, or when the two walks of ours differ in a
    single bit (triangle, t, u, v) on any ray.

    usage: bench_raycast [XML] [--rays N] [--repeat R] [--seed S] */

#include "kernels/kern_scene.h"
#include "kernels/kern_traverse_wide.h"

#include <embree3/rtcore.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 8192 /* rays per alternation between the two engines */

#ifndef BF_SHARED_DIR_DEFAULT
#define BF_SHARED_DIR_DEFAULT "../shared"
#endif

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_unit(uint64_t *s)
{
    return (float)(rng_next(s) >> 40) / 16777216.0f;
}

static kern_v3 rng_dir(uint64_t *s)
{
    float z = 2.0f * rng_unit(s) - 1.0f, phi = 6.2831853f * rng_unit(s);
    float r = sqrtf(fmaxf(0.0f, 1.0f - z * z));
    return v3(r * cosf(phi), r * sinf(phi), z);
}

static void on_embree_error(void *user, enum RTCError code, const char *msg)
{
    (void)user;
    fprintf(stderr, "bench_raycast: embree error %d: %s\n", (int)code, msg ? msg : "");
}

int main(int argc, char **argv)
{
    const char *shared = getenv("BF_SHARED_DIR") ? getenv("BF_SHARED_DIR") : BF_SHARED_DIR_DEFAULT;
    char xml[1024];
    snprintf(xml, sizeof xml, "%s/scenes/munich/munich.xml", shared);
    size_t n = 2000000;
    unsigned repeat = 3;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rays") && i + 1 < argc)
            n = (size_t)strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] != '-')
            snprintf(xml, sizeof xml, "%s", argv[i]);
        else {
            fprintf(stderr, "usage: bench_raycast [XML] [--rays N] [--repeat R] [--seed S]\n");
            return 2;
        }
    }
    if (n == 0 || n > 100000000 || repeat == 0) {
        fprintf(stderr, "bench_raycast: --rays must be in 1..1e8 and --repeat positive\n");
        return 2;
    }

    char err[BF_ERRLEN] = "";
    kern_scene_t *scene = NULL;
    if (kern_scene_load_xml(xml, 3.5e9, &scene, err) != BF_OK) {
        fprintf(stderr, "bench_raycast: %s\n", err);
        return 1;
    }
    size_t nt = scene->triangle_count, nv = scene->vertex_count;

    /* ours */
    kern_bvh_t *bvh = NULL;
    double t0 = bf_mono_s();
    if (kern_bvh_new(scene->vertices, scene->indices, nt, 1, &bvh, err) != BF_OK) {
        fprintf(stderr, "bench_raycast: %s\n", err);
        return 1;
    }
    double build_ours = bf_mono_s() - t0;
    kern_bvh_view_t view = kern_bvh_view(bvh);

    /* Embree: one triangle geometry, high quality, one build thread */
    RTCDevice dev = rtcNewDevice("threads=1");
    if (!dev) {
        fprintf(stderr, "bench_raycast: rtcNewDevice failed\n");
        return 1;
    }
    rtcSetDeviceErrorFunction(dev, on_embree_error, NULL);
    t0 = bf_mono_s();
    RTCScene rs = rtcNewScene(dev);
    rtcSetSceneFlags(rs, RTC_SCENE_FLAG_NONE);
    rtcSetSceneBuildQuality(rs, RTC_BUILD_QUALITY_HIGH);
    RTCGeometry geom = rtcNewGeometry(dev, RTC_GEOMETRY_TYPE_TRIANGLE);
    rtcSetGeometryBuildQuality(geom, RTC_BUILD_QUALITY_HIGH);
    float *ev = rtcSetNewGeometryBuffer(geom, RTC_BUFFER_TYPE_VERTEX, 0, RTC_FORMAT_FLOAT3,
                                        3 * sizeof(float), nv);
    uint32_t *ei = rtcSetNewGeometryBuffer(geom, RTC_BUFFER_TYPE_INDEX, 0, RTC_FORMAT_UINT3,
                                           3 * sizeof(uint32_t), nt);
    if (!ev || !ei) {
        fprintf(stderr, "bench_raycast: embree buffers failed\n");
        return 1;
    }
    memcpy(ev, scene->vertices, nv * 3 * sizeof(float));
    memcpy(ei, scene->indices, nt * 3 * sizeof(uint32_t));
    rtcCommitGeometry(geom);
    rtcAttachGeometry(rs, geom);
    rtcReleaseGeometry(geom);
    rtcCommitScene(rs);
    double build_embree = bf_mono_s() - t0;

    /* the rays */
    float *org = malloc(n * 3 * sizeof *org), *dir = malloc(n * 3 * sizeof *dir);
    float *t_ours = malloc(n * sizeof *t_ours), *t_emb = malloc(n * sizeof *t_emb);
    kern_hit_t *h_bin = malloc(n * sizeof *h_bin), *h_wide = malloc(n * sizeof *h_wide);
    if (!org || !dir || !t_ours || !t_emb || !h_bin || !h_wide) {
        fprintf(stderr, "bench_raycast: out of memory for %zu rays\n", n);
        return 1;
    }
    uint64_t rs_state = seed;
    for (size_t i = 0; i < n; i++) {
        kern_v3 o = v3(0, 0, 30);
        if (i % 2) {
            float p[3];
            for (int k = 0; k < 3; k++)
                p[k] = (float)(scene->bbox_min[k] +
                               (scene->bbox_max[k] - scene->bbox_min[k]) * rng_unit(&rs_state));
            o = v3(p[0], p[1], p[2]);
        }
        kern_v3 d = rng_dir(&rs_state);
        org[3 * i] = o.x, org[3 * i + 1] = o.y, org[3 * i + 2] = o.z;
        dir[3 * i] = d.x, dir[3 * i + 1] = d.y, dir[3 * i + 2] = d.z;
    }

    /* The two engines alternate on blocks of rays, so that a load change on
       a shared machine hits both alike; each pass sums its block times. */
    double best_ours = INFINITY, best_emb = INFINITY, best_wide = INFINITY;
    size_t hits_ours = 0, hits_emb = 0;
    struct RTCIntersectContext ctx;
    rtcInitIntersectContext(&ctx);
    for (unsigned r = 0; r < repeat; r++) {
        double sum_ours = 0.0, sum_emb = 0.0, sum_wide = 0.0;
        hits_ours = hits_emb = 0;
        for (size_t b0 = 0; b0 < n; b0 += BLOCK) {
            size_t b1 = b0 + BLOCK < n ? b0 + BLOCK : n;
            t0 = bf_mono_s();
            for (size_t i = b0; i < b1; i++) {
                kern_hit_t h;
                kern_v3 o = v3(org[3 * i], org[3 * i + 1], org[3 * i + 2]);
                kern_v3 d = v3(dir[3 * i], dir[3 * i + 1], dir[3 * i + 2]);
                int hit = kern_trace_closest(&view, o, d, 0.0f, INFINITY, &h);
                hits_ours += (size_t)hit;
                t_ours[i] = hit ? h.t : INFINITY;
                h_bin[i] = h;
            }
            double tw = bf_mono_s();
            for (size_t i = b0; i < b1; i++) {
                kern_v3 o = v3(org[3 * i], org[3 * i + 1], org[3 * i + 2]);
                kern_v3 d = v3(dir[3 * i], dir[3 * i + 1], dir[3 * i + 2]);
                kern_trace_closest_wide(&view, o, d, 0.0f, INFINITY, &h_wide[i]);
            }
            double t1 = bf_mono_s();
            for (size_t i = b0; i < b1; i++) {
                struct RTCRayHit rh;
                rh.ray.org_x = org[3 * i];
                rh.ray.org_y = org[3 * i + 1];
                rh.ray.org_z = org[3 * i + 2];
                rh.ray.dir_x = dir[3 * i];
                rh.ray.dir_y = dir[3 * i + 1];
                rh.ray.dir_z = dir[3 * i + 2];
                rh.ray.tnear = 0.0f;
                rh.ray.tfar = INFINITY;
                rh.ray.time = 0.0f;
                rh.ray.mask = 0xffffffffu;
                rh.ray.id = 0;
                rh.ray.flags = 0;
                rh.hit.geomID = RTC_INVALID_GEOMETRY_ID;
                rh.hit.instID[0] = RTC_INVALID_GEOMETRY_ID;
                rtcIntersect1(rs, &ctx, &rh);
                int hit = rh.hit.geomID != RTC_INVALID_GEOMETRY_ID;
                hits_emb += (size_t)hit;
                t_emb[i] = hit ? rh.ray.tfar : INFINITY;
            }
            double t2 = bf_mono_s();
            sum_ours += tw - t0;
            sum_wide += t1 - tw;
            sum_emb += t2 - t1;
        }
        best_wide = sum_wide < best_wide ? sum_wide : best_wide;
        best_ours = sum_ours < best_ours ? sum_ours : best_ours;
        best_emb = sum_emb < best_emb ? sum_emb : best_emb;
    }

    /* distances agree to 1e-4 relative, or to 4 float ulps of the scene's
       largest coordinate: both engines compute in float, and a ray that
       starts next to a wall at 800 m cannot resolve a 0.03 m hit better */
    double big = 0.0;
    for (int k = 0; k < 3; k++)
        big = fmax(big, fmax(fabs(scene->bbox_min[k]), fabs(scene->bbox_max[k])));
    float atol = (float)(4.0 * FLT_EPSILON * big);
    size_t agree = 0, only_ours = 0, only_emb = 0;
    for (size_t i = 0; i < n; i++) {
        if (t_ours[i] == INFINITY || t_emb[i] == INFINITY) {
            agree += t_ours[i] == t_emb[i];
            only_ours += t_ours[i] != INFINITY && t_emb[i] == INFINITY;
            only_emb += t_ours[i] == INFINITY && t_emb[i] != INFINITY;
        } else {
            agree += fabsf(t_ours[i] - t_emb[i]) <= fmaxf(1e-4f * t_emb[i], atol);
        }
    }
    /* the wide walk must be the binary walk, bit for bit */
    size_t differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += memcmp(&h_bin[i], &h_wide[i], sizeof h_bin[i]) != 0;
    double mr_ours = (double)n / best_ours / 1e6, mr_emb = (double)n / best_emb / 1e6;
    double mr_wide = (double)n / best_wide / 1e6;
    double agree_frac = (double)agree / (double)n;
    printf("| scene | triangles | rays | hit %% | build ours s | build Embree s | binary Mrays/s | "
           "wide Mrays/s | Embree Mrays/s | binary/Embree | wide/Embree | agreement |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    printf("| %s | %zu | %zu | %.1f | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f | %.4f%% |\n",
           scene->name ? scene->name : "scene", nt, n, 100.0 * (double)hits_ours / (double)n,
           build_ours, build_embree, mr_ours, mr_wide, mr_emb, mr_ours / mr_emb, mr_wide / mr_emb,
           100.0 * agree_frac);
    printf("(single thread, best of %u; BVH %zu nodes, %.2f MiB; wide: %s, %zu four-wide and %zu "
           "eight-wide nodes, +%.2f MiB; "
           "wide vs binary: %zu rays differ; Embree hits %.1f%%; disagree: "
           "%zu hit only by ours, %zu only by Embree, %zu at another distance)\n",
           repeat, (size_t)view.node_count, (double)kern_bvh_bytes(bvh) / (1024.0 * 1024.0),
           view.wide8 ? "eight-wide AVX2" : "four-wide SSE2", (size_t)view.wide_count,
           (size_t)view.wide8_count, (double)kern_bvh_wide_bytes(bvh) / (1024.0 * 1024.0), differ,
           100.0 * (double)hits_emb / (double)n, only_ours, only_emb,
           n - agree - only_ours - only_emb);

    free(org);
    free(dir);
    free(t_ours);
    free(t_emb);
    free(h_bin);
    free(h_wide);
    rtcReleaseScene(rs);
    rtcReleaseDevice(dev);
    kern_bvh_destroy(&bvh);
    kern_scene_destroy(&scene);
    if (differ) {
        fprintf(stderr, "bench_raycast: the wide walk differs from the binary one on %zu rays\n",
                differ);
        return 1;
    }
    if (agree_frac < 0.999) {
        fprintf(stderr, "bench_raycast: ours and Embree agree on only %.4f%% of the rays\n",
                100.0 * agree_frac);
        return 1;
    }
    return 0;
}
