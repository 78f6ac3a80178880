/*  kernels/kern_cpu_test.c - checks the CPU backend's radio maps against
    closed forms: free space against Friis times the pattern gain (every
    pattern, V and H, several orientations; the error must shrink with more
    rays), a ground of medium_dry_ground against the incoherent two-ray sum
    |direct|^2 + |R|^2 |reflected|^2, a metal wall against its image source
    (and nothing behind it), bit-identical maps for 1, 2 and 3 threads, edge
    cases (max_depth 0, los false, zero rays), and finite, plausible maps on
    the small Sionna scenes of BF_SHARED_DIR. Scenes are built in code. */

#include "kern.h"
#include "kern_testkit.h"
#include "kern_traverse.h"

#include <complex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

#define FREQ 3.5e9
#define EPS0 8.8541878128e-12

static kern_material_t itu(double a, double b, double c, double d, double thick)
{
    kern_material_t m;
    memset(&m, 0, sizeof m);
    double fg = FREQ / 1e9;
    m.thickness = thick;
    m.eta_re = a * pow(fg, b);
    m.eta_im = -c * pow(fg, d) / (EPS0 * 2 * KERN_PI * FREQ);
    return m;
}
#define MEDIUM_DRY_GROUND itu(15, -0.1, 0.035, 1.63, 1.0)
#define METAL             itu(1, 0, 1e7, 0, 0.1)
#define CONCRETE          itu(5.24, 0, 0.0462, 0.7822, 0.2)
#define BRICK             itu(3.91, 0, 0.0238, 0.16, 0.1)

static void scene_init(test_scene_t *t)
{
    test_scene_init(t, FREQ);
}

/* Rectangle p0, p0 + e1, p0 + e1 + e2, p0 + e2 with a new material. */
static void add_rect(test_scene_t *t, kern_v3 p0, kern_v3 e1, kern_v3 e2, kern_material_t mat)
{
    CHECK(test_scene_rect(t, p0, e1, e2, mat));
}

static kern_trace_setup_t setup_default(uint64_t rays, kern_v3 tx, float half, float cell)
{
    kern_trace_setup_t s;
    memset(&s, 0, sizeof s);
    s.rays = rays;
    s.max_depth = 3;
    s.los = s.reflection = s.refraction = 1;
    s.seed = 42;
    s.tx = tx;
    s.antenna = kern_antenna_make(KERN_PAT_ISO, 0);
    s.rot = kern_rotation(0, 0, 0);
    s.grid.x0 = s.grid.y0 = -half;
    s.grid.dx = s.grid.dy = cell;
    s.grid.z = 1.5f;
    s.grid.nx = s.grid.ny = (uint32_t)(2 * half / cell + 0.5f);
    s.grid.omega = (float)(4 * KERN_PI / (double)rays);
    return s;
}

/* Traces and returns the map (caller frees); NULL on error. */
static double *trace(const kern_scene_t *sc, unsigned threads, const kern_trace_setup_t *s,
                     kern_trace_out_t *o, kern_zone_data_t *zone)
{
    char err[BF_ERRLEN] = "";
    kern_tracer_t *tr = NULL;
    void *ctx = NULL;
    const kern_backend_t *be = kern_backend_cpu();
    double *map = calloc((size_t)s->grid.nx * s->grid.ny, sizeof *map);
    if (kern_tracer_new(sc, threads, &tr, err) != BF_OK ||
        be->ctx_new(kern_tracer_geom(tr), threads, &ctx, err)) {
        fprintf(stderr, "setup: %s\n", err);
        free(map);
        kern_tracer_destroy(&tr);
        return NULL;
    }
    kern_trace_out_t out = {map, 0, zone};
    bf_err_t e = be->trace(ctx, s, &out, err);
    if (e != BF_OK) {
        fprintf(stderr, "trace: %s\n", err);
        free(map);
        map = NULL;
    }
    if (o)
        *o = out;
    be->ctx_destroy(&ctx);
    kern_tracer_destroy(&tr);
    return map;
}

static kern_v3 cell_centre(const kern_grid_t *g, uint32_t ix, uint32_t iy)
{
    return v3(g->x0 + (ix + 0.5f) * g->dx, g->y0 + (iy + 0.5f) * g->dy, g->z);
}

/* ---- free space ------------------------------------------------------------ */
/* Mean |dB error| over cells at 50..rmax m horizontal range of the map sum
   against Friis x pattern gain in sum units: C^2 * cell area / r^2. */
static double free_space_error(uint64_t rays, int pattern, int pol, double az, double tilt,
                               double roll, double rmax)
{
    test_scene_t t;
    scene_init(&t);
    kern_v3 tx = v3(0, 0, 31.5f);
    kern_trace_setup_t s = setup_default(rays, tx, 200, 5);
    s.antenna = kern_antenna_make(pattern, pol);
    s.rot = kern_rotation(az, tilt, roll);
    double *map = trace(&t.sc, 2, &s, NULL, NULL);
    if (!map)
        return INFINITY;
    double acc = 0;
    size_t n = 0;
    for (uint32_t iy = 0; iy < s.grid.ny; iy++)
        for (uint32_t ix = 0; ix < s.grid.nx; ix++) {
            kern_v3 c = cell_centre(&s.grid, ix, iy);
            double rh = hypot(c.x, c.y);
            if (rh < 50 || rh > rmax)
                continue;
            kern_v3 d = v3_sub(c, tx);
            double r2 = v3_dot(d, d);
            double amp = kern_pattern_amp(pattern, kern_rot_apply_t(&s.rot, v3_norm(d)));
            double want = amp * amp * 25.0 / r2;
            double got = map[iy * s.grid.nx + ix];
            acc += fabs(10 * log10((got + 1e-300) / want));
            n++;
        }
    free(map);
    return acc / (double)n;
}

static void test_free_space(void)
{
    const double orients[3][3] = {{0, 0, 0}, {45, 10, 0}, {200, -5, 15}};
    const char *names[4] = {"iso", "dipole", "hw_dipole", "tr38901"};
    for (int p = 0; p < 4; p++)
        for (int pol = 0; pol < 2; pol++)
            for (int o = 0; o < 3; o++) {
                const double * or = orients[o];
                double e6 = free_space_error(1000000, p, pol, or [0], or [1], or [2], 200);
                /* the decrease is measured at 50..100 m, where 1e5 rays still
                   reach every cell (>= 5 rays per cell) */
                double n5 = free_space_error(100000, p, pol, or [0], or [1], or [2], 100);
                double n6 = free_space_error(1000000, p, pol, or [0], or [1], or [2], 100);
                printf("free space %-9s %s orient %d: mean |err| %.3f dB (50-200 m, 1e6 rays); "
                       "50-100 m: %.3f dB "
                       "at 1e5, %.3f dB at 1e6\n",
                       names[p], pol ? "H" : "V", o, e6, n5, n6);
                /* 1e6 rays put 7 (at 200 m) to 300 (at 50 m) rays into a
                   5 m cell: the lattice's counting error is a few percent */
                CHECKF(e6 < 0.5, "%s pol %d orient %d: %.3f dB", names[p], pol, o, e6);
                CHECKF(n6 < 0.7 * n5, "error must shrink with rays: %.3f vs %.3f", n6, n5);
            }
}

/* ---- ground and wall ------------------------------------------------------- */
static double complex ref_r(kern_material_t m, double cos_t, int tm)
{
    double complex eta = m.eta_re + I * m.eta_im;
    double lambda = 299792458.0 / FREQ, kd = 2 * KERN_PI * m.thickness / lambda;
    double complex s = csqrt(eta - (1 - cos_t * cos_t));
    double complex r = tm ? (eta * cos_t - s) / (eta * cos_t + s) : (cos_t - s) / (cos_t + s);
    double complex e2 = cexp(-2 * I * kd * s);
    return r * (1 - e2) / (1 - r * r * e2);
}

static void test_ground(void)
{
    for (int pol = 0; pol < 2; pol++) {
        test_scene_t t;
        scene_init(&t);
        kern_material_t g = MEDIUM_DRY_GROUND;
        add_rect(&t, v3(-3000, -3000, 0), v3(6000, 0, 0), v3(0, 6000, 0), g);
        kern_v3 tx = v3(0, 0, 20);
        kern_trace_setup_t s = setup_default(1000000, tx, 150, 5);
        s.antenna = kern_antenna_make(KERN_PAT_ISO, pol);
        s.max_depth = 1;
        s.refraction = 0; /* reflection with probability 1: no sampling noise */
        double *map = trace(&t.sc, 2, &s, NULL, NULL);
        CHECKF(map != NULL, "ground trace");
        if (!map)
            return;
        double acc = 0;
        size_t n = 0;
        for (uint32_t iy = 0; iy < s.grid.ny; iy++)
            for (uint32_t ix = 0; ix < s.grid.nx; ix++) {
                kern_v3 c = cell_centre(&s.grid, ix, iy);
                double rh = hypot(c.x, c.y);
                if (rh < 30 || rh > 140)
                    continue;
                double r1 = hypot(rh, 20 - 1.5), r2 = hypot(rh, 20 + 1.5);
                /* V (theta-hat) lies in the plane of incidence: TM; H: TE */
                double complex R = ref_r(g, 21.5 / r2, pol == 0);
                double want = 25.0 * (1 / (r1 * r1) + creal(R * conj(R)) / (r2 * r2));
                acc += fabs(10 * log10((map[iy * s.grid.nx + ix] + 1e-300) / want));
                n++;
            }
        printf("ground %s: mean |err| %.3f dB against the two-ray power sum\n", pol ? "H" : "V",
               acc / n);
        CHECKF(acc / n < 0.3, "ground pol %d: %.3f dB", pol, acc / n);
        free(map);
    }
}

static void test_wall(void)
{
    test_scene_t t;
    scene_init(&t);
    add_rect(&t, v3(60, -1000, -1000), v3(0, 2000, 0), v3(0, 0, 2000), METAL);
    kern_v3 tx = v3(0, 0, 20);
    kern_trace_setup_t s = setup_default(1000000, tx, 150, 5);
    s.max_depth = 1;
    double *map = trace(&t.sc, 2, &s, NULL, NULL);
    CHECKF(map != NULL, "wall trace");
    if (!map)
        return;
    double acc = 0;
    size_t n = 0, behind_lit = 0;
    for (uint32_t iy = 0; iy < s.grid.ny; iy++)
        for (uint32_t ix = 0; ix < s.grid.nx; ix++) {
            kern_v3 c = cell_centre(&s.grid, ix, iy);
            double v = map[iy * s.grid.nx + ix];
            if (c.x > 60) {
                behind_lit += v != 0.0;
                continue;
            }
            double rh = hypot(c.x, c.y);
            if (rh < 30 || c.x > 50)
                continue;
            double d1 = hypot(rh, 18.5), d2 = hypot(hypot(120 - c.x, c.y), 18.5);
            double want = 25.0 * (1 / (d1 * d1) + 1 / (d2 * d2)); /* metal: |R| = 1 */
            acc += fabs(10 * log10((v + 1e-300) / want));
            n++;
        }
    printf("metal wall: mean |err| %.3f dB against direct + image source\n", acc / n);
    CHECKF(acc / n < 0.3, "wall: %.3f dB", acc / n);
    CHECKF(behind_lit == 0, "%zu cells behind a metal wall got power", behind_lit);
    free(map);
}

/* ---- determinism and edges -------------------------------------------------- */
/* With diffuse: materials of scattering coefficient 0.5, XPD 0.2 (one of
   them backscattering), and the diffuse reflection on. */
static void test_determinism(int diffuse)
{
    test_scene_t t;
    scene_init(&t);
    kern_material_t conc = CONCRETE, brick = BRICK;
    if (diffuse) {
        conc.scattering_coefficient = brick.scattering_coefficient = 0.5;
        conc.xpd_coefficient = brick.xpd_coefficient = 0.2;
        brick.scattering_pattern = KERN_SCATTER_BACKSCATTERING;
        brick.alpha_r = 4;
        brick.alpha_i = 2;
        brick.lambda = 0.75;
    }
    add_rect(&t, v3(-500, -500, 0), v3(1000, 0, 0), v3(0, 1000, 0), conc);
    add_rect(&t, v3(40, -100, 0), v3(0, 200, 0), v3(0, 0, 30), brick);
    add_rect(&t, v3(-100, 35, 0), v3(200, 0, 0), v3(0, 0, 25), conc);
    kern_trace_setup_t s = setup_default(61111, v3(0, 0, 15), 100, 4);
    s.diffuse_reflection = diffuse;
    s.antenna = kern_antenna_make(KERN_PAT_TR38901, 2);
    s.rot = kern_rotation(30, 5, 0);
    int32_t *zone = malloc((size_t)s.grid.nx * s.grid.ny * sizeof *zone);
    uint32_t zc = 0;
    for (uint32_t i = 0; i < s.grid.nx * s.grid.ny; i++)
        zone[i] = (i % 3 == 0) ? (int32_t)zc++ : -1;
    s.zone_of_cell = zone;
    s.zone_cells = zc;
    double *maps[3];
    kern_zone_data_t zd[3];
    memset(zd, 0, sizeof zd);
    kern_trace_out_t out[3];
    for (int k = 0; k < 3; k++)
        maps[k] = trace(&t.sc, (unsigned)k + 1, &s, &out[k], &zd[k]);
    size_t bytes = (size_t)s.grid.nx * s.grid.ny * sizeof(double);
    CHECKF(maps[0] && maps[1] && maps[2], "traces");
    if (maps[0] && maps[1] && maps[2]) {
        CHECKF(memcmp(maps[0], maps[1], bytes) == 0 && memcmp(maps[0], maps[2], bytes) == 0,
               "maps differ");
        CHECKF(out[0].crossings == out[2].crossings && out[0].crossings > 0, "crossings");
        CHECKF(zd[0].count == zd[1].count && zd[0].count == zd[2].count && zd[0].count > 0,
               "zone counts");
        CHECKF(zd[0].ray_count == zd[2].ray_count &&
                   memcmp(zd[0].xings, zd[2].xings, zd[0].count * sizeof *zd[0].xings) == 0 &&
                   memcmp(zd[0].rays, zd[1].rays, zd[0].ray_count * sizeof *zd[0].rays) == 0,
               "zone data differ");
        size_t reflected = 0;
        for (size_t i = 0; i < zd[0].count; i++)
            reflected += zd[0].xings[i].m[1] != 0.0f;
        CHECKF(reflected > 0, "some zone crossings carry a non-diagonal Jones form");
    }
    for (int k = 0; k < 3; k++) {
        free(maps[k]);
        kern_zone_data_clear(&zd[k]);
    }
    /* another seed changes the refraction/reflection draws */
    s.seed = 43;
    s.zone_of_cell = NULL;
    double *other = trace(&t.sc, 2, &s, NULL, NULL);
    s.seed = 42;
    double *same = trace(&t.sc, 1, &s, NULL, NULL);
    CHECKF(other && same && memcmp(other, same, bytes) != 0, "seed has no effect");
    free(other);
    free(same);
    free(zone);
}

/* ---- the walk's shortcuts (kern_bounce.h) ---------------------------------- */
/* The map of a plain walk, which takes none of kern_walk_next's shortcuts
   (antenna field at the first crossing, basis at the first bounce, the
   last segment walked only up to the plane, the last interaction skipped
   when no way out heads for the plane): every ray launched with its basis
   and field, every segment walked unbounded through the binary tree, every
   interaction computed, the crossings added in ray order as the backend
   folds them. */
static double *plain_walk_map(const kern_geom_t *geom, const kern_trace_setup_t *s)
{
    size_t cells = (size_t)s->grid.nx * s->grid.ny;
    double *map = calloc(cells, sizeof *map);
    if (!map)
        return NULL;
    for (uint64_t n = 0; n < s->rays; n++) {
        kern_ray_t ray;
        float f[2][2], m[3];
        kern_ray_launch(&ray, s->tx, n, s->rays);
        kern_antenna_field(&s->antenna, &s->rot, ray.dir, f);
        for (;;) {
            kern_hit_t hit;
            kern_trace_closest(&geom->bvh, ray.org, ray.dir, 0.0f, INFINITY, &hit);
            int miss = hit.tri == UINT32_MAX || hit.tri >= geom->tri_count;
            uint32_t cell;
            float wt;
            if ((s->los || ray.depth > 0) &&
                (wt = kern_plane_crossing(&ray, miss ? INFINITY : hit.t, &s->grid, &cell)) > 0.0f) {
                kern_ray_form(&ray, wt, m);
                map[cell] += (double)kern_form_power(f, m);
            }
            if (miss || ray.depth >= s->max_depth)
                break;
            const float *nn = &geom->normals[3 * (size_t)hit.tri];
            kern_mat_t mat = geom->mats[geom->tri_material[hit.tri]];
            int diffuse = s->diffuse_reflection && mat.s > 0.0f;
            float u1 = diffuse ? kern_rand_k(s->seed, n, ray.depth, 1) : 0.0f;
            float u2 = diffuse ? kern_rand_k(s->seed, n, ray.depth, 2) : 0.0f;
            if (!kern_ray_interact_ex(&ray, hit.t, v3(nn[0], nn[1], nn[2]), mat,
                                      kern_rand(s->seed, n, ray.depth), u1, u2, s->reflection,
                                      diffuse, s->refraction, s->surface_offset, s->grid.omega))
                break;
        }
    }
    return map;
}

/* The backend's map is the plain walk's, bit for bit, over depths 1 to 3,
   with and without the line of sight, the diffuse reflection, refraction
   or reflection alone. simd names the backend's build of the walk: where
   the tree has eight-wide nodes (a CPU with AVX2) the backend walks rays
   in its AVX2 build, and with BF_KERN_SIMD=sse2 in its baseline one
   (kern_cpu.c), while the plain walk here is always the baseline's. */
static void test_plain_walk_with(const char *simd)
{
    test_scene_t t;
    scene_init(&t);
    kern_material_t conc = CONCRETE, brick = BRICK, metal = METAL;
    brick.scattering_coefficient = 0.4;
    brick.xpd_coefficient = 0.2;
    add_rect(&t, v3(-500, -500, 0), v3(1000, 0, 0), v3(0, 1000, 0), conc);
    add_rect(&t, v3(40, -100, 0), v3(0, 200, 0), v3(0, 0, 30), brick);
    add_rect(&t, v3(-100, 35, 0), v3(200, 0, 0), v3(0, 0, 25), conc);
    add_rect(&t, v3(-60, -100, 0), v3(0, 120, 0), v3(0, 0, 12), metal);
    char err[BF_ERRLEN] = "";
    kern_tracer_t *tr = NULL;
    CHECK(kern_tracer_new(&t.sc, 1, &tr, err) == BF_OK);
    if (!tr)
        return;
    for (int v = 0; v < 6; v++) {
        kern_trace_setup_t s = setup_default(40000, v3(3, -2, 15), 100, 4);
        s.max_depth = (uint32_t)(1 + v % 3);
        s.los = v != 1;
        s.diffuse_reflection = v == 2 || v == 5;
        s.reflection = v != 3;
        s.refraction = v != 4;
        s.antenna = kern_antenna_make(KERN_PAT_TR38901, 0);
        s.rot = kern_rotation(30, 5, 0);
        double *want = plain_walk_map(kern_tracer_geom(tr), &s);
        double *got = trace(&t.sc, 2, &s, NULL, NULL);
        size_t cells = (size_t)s.grid.nx * s.grid.ny, lit = 0, differ = 0;
        for (size_t k = 0; want && got && k < cells; k++) {
            lit += want[k] > 0;
            differ += memcmp(&want[k], &got[k], sizeof want[k]) != 0;
        }
        CHECKF(want && got && differ == 0 && lit > cells / 4,
               "%s, variant %d: %zu of %zu cells differ from the plain walk (%zu lit)", simd, v,
               differ, cells, lit);
        free(want);
        free(got);
    }
    kern_tracer_destroy(&tr);
}

static void test_plain_walk(void)
{
    const char *env = getenv("BF_KERN_SIMD");
    char *saved = env ? strdup(env) : NULL;
    test_plain_walk_with(env ? env : "default build");
    setenv("BF_KERN_SIMD", "sse2", 1);
    test_plain_walk_with("BF_KERN_SIMD=sse2");
    if (saved)
        setenv("BF_KERN_SIMD", saved, 1);
    else
        unsetenv("BF_KERN_SIMD");
    free(saved);
}

static void test_edges(void)
{
    test_scene_t empty, ground;
    scene_init(&empty);
    scene_init(&ground);
    add_rect(&ground, v3(-500, -500, 0), v3(1000, 0, 0), v3(0, 1000, 0), MEDIUM_DRY_GROUND);
    kern_trace_setup_t s = setup_default(50000, v3(3, -2, 12), 60, 3);
    s.antenna = kern_antenna_make(KERN_PAT_DIPOLE, 1);
    s.max_depth = 0; /* direct only: a ground below the plane changes nothing */
    double *a = trace(&empty.sc, 2, &s, NULL, NULL), *b = trace(&ground.sc, 3, &s, NULL, NULL);
    size_t bytes = (size_t)s.grid.nx * s.grid.ny * sizeof(double);
    CHECKF(a && b && memcmp(a, b, bytes) == 0, "max_depth 0 over a ground equals free space");
    s.max_depth = 3;
    double *c = trace(&ground.sc, 2, &s, NULL, NULL);
    double sa = 0, sc = 0;
    for (size_t i = 0; c && a && i < bytes / sizeof(double); i++) {
        sa += a[i];
        sc += c[i];
    }
    CHECKF(c && sc > sa, "reflections add power: %g vs %g", sc, sa);
    free(a);
    free(b);
    free(c);

    s.los = 0;
    kern_trace_out_t out;
    double *d = trace(&empty.sc, 1, &s, &out, NULL);
    int zero = d != NULL;
    for (size_t i = 0; d && i < bytes / sizeof(double); i++)
        zero &= d[i] == 0.0;
    CHECKF(zero && out.crossings == 0, "los false in free space: nothing");
    free(d);
    d = trace(&ground.sc, 1, &s, &out, NULL);
    CHECKF(d && out.crossings > 0, "los false keeps reflected crossings");
    free(d);

    s.los = 1;
    s.rays = 1;
    s.grid.omega = (float)(4 * KERN_PI);
    d = trace(&ground.sc, 1, &s, &out, NULL);
    CHECKF(d != NULL, "one ray");
    free(d);

    /* zero rays and an empty grid are refused */
    char err[BF_ERRLEN] = "";
    kern_tracer_t *tr = NULL;
    void *ctx = NULL;
    const kern_backend_t *be = kern_backend_cpu();
    CHECKF(kern_tracer_new(&ground.sc, 1, &tr, err) == BF_OK &&
               be->ctx_new(kern_tracer_geom(tr), 1, &ctx, err) == 0,
           "ctx");
    double map[1];
    kern_trace_out_t o = {map, 0, NULL};
    s.rays = 0;
    CHECKF(be->trace(ctx, &s, &o, err) == BF_EINVAL, "zero rays");
    s.rays = 10;
    s.grid.nx = 0;
    CHECKF(be->trace(ctx, &s, &o, err) == BF_EINVAL, "empty grid");
    volatile int cancel = 1;
    s.grid.nx = s.grid.ny = 1;
    s.cancel = &cancel;
    CHECKF(be->trace(ctx, &s, &o, err) == BF_ECANCELED, "cancel");
    be->ctx_destroy(&ctx);
    CHECKF(ctx == NULL, "destroy nulls");
    be->ctx_destroy(&ctx);
    kern_tracer_destroy(&tr);
    kern_tracer_destroy(&tr);
    kern_scene_t bad = ground.sc;
    bad.frequency_hz = 0;
    CHECKF(kern_tracer_new(&bad, 1, &tr, err) == BF_EINVAL && tr == NULL, "bad frequency");
}

/* ---- the Sionna scenes ------------------------------------------------------ */
static void test_shared_scenes(void)
{
    const char *dir = getenv("BF_SHARED_DIR");
    if (!dir) {
        printf("shared scenes: BF_SHARED_DIR not set, skipped\n");
        return;
    }
    const char *names[] = {"simple_street_canyon", "box",
                           "floor_wall",           "double_reflector",
                           "simple_reflector",     "box_one_screen",
                           "triple_reflector",     "simple_wedge"};
    for (size_t i = 0; i < BF_ARRAY_LEN(names); i++) {
        char path[1024], err[BF_ERRLEN] = "";
        snprintf(path, sizeof path, "%s/scenes/%s/%s.xml", dir, names[i], names[i]);
        kern_scene_t *sc = NULL;
        bf_err_t e = kern_scene_load_xml(path, FREQ, &sc, err);
        CHECKF(e == BF_OK, "%s: %s", path, err);
        if (e != BF_OK)
            continue;
        double ex = fmax(sc->bbox_max[0] - sc->bbox_min[0], sc->bbox_max[1] - sc->bbox_min[1]);
        double cx = (sc->bbox_min[0] + sc->bbox_max[0]) / 2,
               cy = (sc->bbox_min[1] + sc->bbox_max[1]) / 2;
        kern_v3 tx = v3((float)(cx + 0.13 * ex), (float)(cy - 0.07 * ex),
                        (float)(sc->bbox_max[2] + 0.3 * ex + 1));
        float half = (float)(0.75 * ex + 2), cell = half / 25;
        kern_trace_setup_t s = setup_default(200000, tx, half, cell);
        s.grid.x0 += (float)cx;
        s.grid.y0 += (float)cy;
        s.grid.z = (float)(sc->bbox_min[2] + 0.3 * (sc->bbox_max[2] - sc->bbox_min[2]) + 0.5);
        kern_trace_out_t out;
        double *map = trace(sc, 2, &s, &out, NULL);
        CHECKF(map != NULL, "%s trace", names[i]);
        size_t lit = 0, n = (size_t)s.grid.nx * s.grid.ny, implausible = 0;
        double lambda = 299792458.0 / FREQ;
        for (size_t k = 0; map && k < n; k++) {
            CHECKF(isfinite(map[k]) && map[k] >= 0, "%s cell %zu: %g", names[i], k, map[k]);
            lit += map[k] > 0;
            /* gain at most 6 dB (a few coherent-free paths) above free
               space at the cell's nearest point to the transmitter */
            kern_v3 c = cell_centre(&s.grid, (uint32_t)(k % s.grid.nx), (uint32_t)(k / s.grid.nx));
            double dx = fmax(fabs(c.x - tx.x) - cell / 2, 0),
                   dy = fmax(fabs(c.y - tx.y) - cell / 2, 0);
            double r2 = dx * dx + dy * dy + (tx.z - c.z) * (tx.z - c.z);
            double g = map[k] * (lambda / (4 * KERN_PI)) * (lambda / (4 * KERN_PI)) / (cell * cell);
            implausible += g > 4.0 * (lambda / (4 * KERN_PI)) * (lambda / (4 * KERN_PI)) / r2;
        }
        printf("%s: %zu triangles, %llu crossings, %zu/%zu cells lit, %zu implausible\n", names[i],
               sc->triangle_count, (unsigned long long)out.crossings, lit, n, implausible);
        /* The boxes are closed metal boxes cut by the plane: inside stays
           dark and the box shadows much of the rest, so ask less of them. */
        CHECKF(lit > n / (strncmp(names[i], "box", 3) ? 4 : 8), "%s: only %zu of %zu cells lit",
               names[i], lit, n);
        CHECKF(implausible == 0, "%s: %zu cells above 4x free space", names[i], implausible);
        free(map);
        kern_scene_destroy(&sc);
    }
}

/* ---- surface offset (docs/radio.md) --------------------------------------- */
/* A wall modelled as two faces 5 mm apart, seen through with refraction
   only and max_depth 1: Sionna's offset (1.7 cm at x = 190 m) steps over
   the second face, so the rays go on and light the plane behind the wall;
   the tight offset stops them on the second face, their second interaction. */
static void test_double_wall(void)
{
    double behind[2] = {0, 0};
    for (int tight = 0; tight < 2; tight++) {
        test_scene_t t;
        scene_init(&t);
        add_rect(&t, v3(190, -100, -10), v3(0, 200, 0), v3(0, 0, 60), CONCRETE);
        add_rect(&t, v3(190.005f, -100, -10), v3(0, 200, 0), v3(0, 0, 60), CONCRETE);
        kern_trace_setup_t s = setup_default(200000, v3(150, 0, 15), 250, 10);
        s.max_depth = 1;
        s.reflection = 0;
        s.surface_offset = tight ? KERN_OFFSET_TIGHT : KERN_OFFSET_SIONNA;
        double *map = trace(&t.sc, 2, &s, NULL, NULL);
        CHECKF(map != NULL, "double wall trace");
        if (!map)
            return;
        for (uint32_t iy = 0; iy < s.grid.ny; iy++)
            for (uint32_t ix = 0; ix < s.grid.nx; ix++)
                if (cell_centre(&s.grid, ix, iy).x > 195 &&
                    fabsf(cell_centre(&s.grid, ix, iy).y) < 50)
                    behind[tight] += map[iy * s.grid.nx + ix];
        free(map);
    }
    printf("double wall: behind it %.3g (sionna offset), %.3g (tight)\n", behind[0], behind[1]);
    CHECKF(behind[0] > 0, "Sionna's offset steps over a 5 mm double wall");
    CHECKF(behind[1] == 0, "the tight offset stops on its second face: %g", behind[1]);
}

/* ---- diffuse reflection ------------------------------------------------------ */
/* The diffuse map density of an isotropic source at height h above a
   Lambertian plate (z = 0, |x|, |y| <= half) of scattering coefficient S
   and |R| = 1, at P = (px, py, zm), diffuse reflection only:
   g(P) = S^2 int dA_Q (h / r_TQ^3) (zm / (pi r_QP^3)) (incident density
   cos theta_i / r^2, pattern cos theta_o / pi, spreading 1 / r^2). On the
   axis of an infinite plate it is 2 S^2 / (h + zm)^2 in closed form, twice
   the image source's |R|^2 / (h + zm)^2. Polar quadrature around P's foot,
   rho = zm tan(t). */
static double lambert_plate(double h, double px, double py, double zm, double half)
{
    const int nt = 600, np = 96;
    double tmax = atan(4 * half / zm), acc = 0;
    for (int i = 0; i < nt; i++) {
        double t = (i + 0.5) * tmax / nt, rho = zm * tan(t), drho = zm / (cos(t) * cos(t));
        double rqp = sqrt(rho * rho + zm * zm);
        for (int j = 0; j < np; j++) {
            double ph = 2 * KERN_PI * (j + 0.5) / np;
            double qx = px + rho * cos(ph), qy = py + rho * sin(ph);
            if (fabs(qx) > half || fabs(qy) > half)
                continue;
            double rtq = sqrt(qx * qx + qy * qy + h * h);
            acc += rho * drho * (h / (rtq * rtq * rtq)) * (zm / (KERN_PI * rqp * rqp * rqp));
        }
    }
    return acc * (tmax / nt) * (2 * KERN_PI / np);
}

static void test_lambertian_plate(void)
{
    const double h = 10, zm = 1.5, half = 400;
    double axis = lambert_plate(h, 0, 0, zm, 1e5), want = 2 / ((h + zm) * (h + zm));
    CHECKF(fabs(axis / want - 1) < 1e-3, "the quadrature on the axis: %g, closed form %g", axis,
           want);
    test_scene_t t;
    scene_init(&t);
    kern_material_t metal = METAL;
    metal.scattering_coefficient = 1.0; /* all of the reflection is diffuse */
    add_rect(&t, v3(-half, -half, 0), v3(2 * half, 0, 0), v3(0, 2 * half, 0), metal);
    kern_trace_setup_t s = setup_default(4000000, v3(0, 0, (float)h), 13, 2);
    s.los = 0;
    s.reflection = 0;
    s.max_depth = 1;
    s.diffuse_reflection = 1;
    double *map = trace(&t.sc, 2, &s, NULL, NULL);
    CHECKF(map != NULL, "plate trace");
    if (!map)
        return;
    /* cells at 0, 4 and 10 m from the axis: the cell average by 3x3 points */
    const uint32_t cells[3][2] = {{6, 6}, {8, 6}, {11, 6}};
    for (int k = 0; k < 3; k++) {
        uint32_t ix = cells[k][0], iy = cells[k][1];
        kern_v3 c = cell_centre(&s.grid, ix, iy);
        double ref = 0;
        for (int a = -1; a <= 1; a++)
            for (int b = -1; b <= 1; b++)
                ref += lambert_plate(h, c.x + a * s.grid.dx / 3, c.y + b * s.grid.dy / 3, zm, half);
        ref *= s.grid.dx * s.grid.dy / 9;
        double got = map[iy * s.grid.nx + ix];
        printf(
            "lambertian plate: cell at %.0f m from the axis: %.4g, closed form %.4g (%+.2f dB)\n",
            (double)c.x, got, ref, 10 * log10(got / ref));
        CHECKF(fabs(10 * log10(got / ref)) < 0.15, "lambertian plate at %.0f m: %g vs %g",
               (double)c.x, got, ref);
    }
    /* diffuse off: the same plate gives nothing (no specular share left) */
    s.diffuse_reflection = 0;
    s.rays = 100000;
    s.grid.omega = (float)(4 * KERN_PI / 100000.0);
    double *none = trace(&t.sc, 2, &s, NULL, NULL);
    double tot = 0;
    for (uint32_t i = 0; none && i < s.grid.nx * s.grid.ny; i++)
        tot += none[i];
    CHECKF(none && tot == 0.0, "S = 1 without diffuse reflection: an empty map (%g)", tot);
    free(none);
    free(map);
}

int main(void)
{
    test_free_space();
    test_ground();
    test_wall();
    test_determinism(0);
    test_determinism(1);
    test_plain_walk();
    test_edges();
    test_shared_scenes();
    test_double_wall();
    test_lambertian_plate();
    if (failures) {
        fprintf(stderr, "kern_cpu_test: %d failures\n", failures);
        return 1;
    }
    printf("kern_cpu_test: ok\n");
    return 0;
}
