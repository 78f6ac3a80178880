/*  kernels/kern_testkit.h - what the engine's tests share: a scene built in
    code from up to KERN_TESTKIT_RECTS axis-aligned rectangles (two triangles
    each, one material each), held in one struct with no allocation, so a
    test can state its geometry in a few lines and get an analytic answer.
    Header-only (static functions), included by tests alone. */

#ifndef KERN_TESTKIT_H_INCLUDED
#define KERN_TESTKIT_H_INCLUDED

#include "kern.h"

#include <string.h>

#define KERN_TESTKIT_RECTS 8

typedef struct {
    kern_scene_t sc;
    float v[KERN_TESTKIT_RECTS * 12];
    uint32_t idx[KERN_TESTKIT_RECTS * 6];
    uint16_t tm[KERN_TESTKIT_RECTS * 2];
    kern_material_t mats[KERN_TESTKIT_RECTS];
} test_scene_t;

/* An empty scene at frequency_hz. */
static inline void test_scene_init(test_scene_t *t, double frequency_hz)
{
    memset(t, 0, sizeof *t);
    t->sc.frequency_hz = frequency_hz;
    t->sc.vertices = t->v;
    t->sc.indices = t->idx;
    t->sc.tri_material = t->tm;
    t->sc.materials = t->mats;
}

/* A material from its complex relative permittivity and thickness (m). */
static inline kern_material_t test_material(double eta_re, double eta_im, double thickness)
{
    kern_material_t m;
    memset(&m, 0, sizeof m);
    m.eta_re = eta_re;
    m.eta_im = eta_im;
    m.thickness = thickness;
    m.alpha_r = m.alpha_i = 1;
    m.lambda = 1.0;
    return m;
}

/* Adds the rectangle p0, p0 + e1, p0 + e1 + e2, p0 + e2 with material mat
   (a material of its own); false when the scene is full. */
static inline bool test_scene_rect(test_scene_t *t, kern_v3 p0, kern_v3 e1, kern_v3 e2,
                                   kern_material_t mat)
{
    size_t q = t->sc.triangle_count / 2, vb = t->sc.vertex_count;
    if (q >= KERN_TESTKIT_RECTS)
        return false;
    kern_v3 p[4] = {p0, v3_add(p0, e1), v3_add(v3_add(p0, e1), e2), v3_add(p0, e2)};
    for (int k = 0; k < 4; k++) {
        t->v[3 * (vb + k)] = p[k].x;
        t->v[3 * (vb + k) + 1] = p[k].y;
        t->v[3 * (vb + k) + 2] = p[k].z;
    }
    static const uint32_t ix[6] = {0, 1, 2, 0, 2, 3};
    for (int k = 0; k < 6; k++)
        t->idx[6 * q + k] = (uint32_t)vb + ix[k];
    t->mats[t->sc.material_count] = mat;
    t->tm[2 * q] = t->tm[2 * q + 1] = (uint16_t)t->sc.material_count;
    t->sc.material_count++;
    t->sc.vertex_count += 4;
    t->sc.triangle_count += 2;
    return true;
}

/* ---- random rays: xorshift64, one sequence per seed on every machine -- */

/* A uniform float in [0, 1) from the generator state *rng. */
static inline float test_frand(uint64_t *rng)
{
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    return (float)(*rng >> 40) / 16777216.0f;
}

/* A uniform random unit direction (rejection sampling in the unit ball). */
static inline kern_v3 test_rand_dir(uint64_t *rng)
{
    for (;;) {
        kern_v3 d = v3(2 * test_frand(rng) - 1, 2 * test_frand(rng) - 1, 2 * test_frand(rng) - 1);
        float l = v3_len(d);
        if (l > 0.1f && l <= 1.0f)
            return v3_scale(d, 1.0f / l);
    }
}

#endif
