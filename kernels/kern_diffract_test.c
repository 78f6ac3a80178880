/*  kernels/kern_diffract_test.c - first-order diffraction (kern_diffract.h,
    docs/radio.md "Diffraction") against closed forms computed here, in
    double, independently of the engine's float code:

      * the UTD transition function against the Fresnel integral (its
        power series) and its large-argument expansion;
      * a right-angle perfectly conducting wedge against Kouyoumjian and
        Pathak's diffraction coefficients D_s and D_h;
      * a knife edge (a conducting half plane) against ITU-R P.526's
        knife-edge loss J(nu) over nu = 0.5 .. 6, first the coefficient
        alone, then end to end: a map behind a screen, traced with the
        diffraction pass, against J(nu) cell by cell;
      * the map with diffraction is the same bits on 1 and 2 threads. */

#include "kern.h"
#include "kern_testkit.h"

#include <complex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

#define FREQ 3.5e9
#define C0   299792458.0

/* Fresnel integrals C(z), S(z) = int_0^z cos, sin(pi t^2 / 2) dt by their
   power series (double; fine to 1e-10 for z <= 3.5). */
static void fresnel_cs(double z, double *c, double *s)
{
    double a = M_PI / 2.0 * z * z, cn = z, sn = a * z, cs = 0.0, ss = 0.0;
    for (int n = 0; n < 100; n++) {
        cs += cn / (4 * n + 1);
        ss += sn / (4 * n + 3);
        cn *= -a * a / ((2 * n + 1) * (2 * n + 2));
        sn *= -a * a / ((2 * n + 2) * (2 * n + 3));
        if (fabs(cn) + fabs(sn) < 1e-20)
            break;
    }
    *c = cs;
    *s = ss;
}

/* The UTD transition function F(x) = 2j sqrt(x) e^{jx} int_sqrt(x)^inf
   e^{-j t^2} dt, through C and S (x <= 15) or its asymptotic expansion. */
static double complex f_utd(double x)
{
    if (x > 15.0) {
        double complex r = 1.0, t = 1.0;
        for (int k = 1; k < 6; k++) { /* 1 + j/(2x) - 3/(4x^2) - j 15/(8x^3) + ... */
            t *= I * (2 * k - 1) / (2.0 * x);
            r += t;
        }
        return r;
    }
    double c, s, z = sqrt(x) * sqrt(2.0 / M_PI);
    fresnel_cs(z, &c, &s);
    /* int_a^inf e^{-j t^2} dt = sqrt(pi/2) ((1/2 - C) - j (1/2 - S)), a = z sqrt(pi/2) */
    double complex tail = sqrt(M_PI / 2.0) * ((0.5 - c) - I * (0.5 - s));
    return 2.0 * I * sqrt(x) * cexp(I * x) * tail;
}

/* The series: C and S by direct alternating sums, checked against two
   known values (C(1) = 0.7798934, S(1) = 0.4382591). */
static void test_fresnel_reference(void)
{
    double c, s;
    fresnel_cs(1.0, &c, &s);
    CHECKF(fabs(c - 0.7798934) < 1e-6 && fabs(s - 0.4382591) < 1e-6, "C(1) %.7f S(1) %.7f", c, s);
    fresnel_cs(3.0, &c, &s);
    CHECKF(fabs(c - 0.6057208) < 1e-6 && fabs(s - 0.4963130) < 1e-6, "C(3) %.7f S(3) %.7f", c, s);
}

static void test_transition(void)
{
    double worst = 0.0;
    const double xs[] = {1e-4, 1e-3, 0.01, 0.05, 0.1,  0.3,  0.7,  1.0,  2.0,   3.0, 3.99,
                         4.0,  4.01, 5.0,  7.0,  10.0, 14.0, 20.0, 50.0, 300.0, 1e4};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        double x = xs[i];
        double complex want = f_utd(x);
        kern_cf g = kern_utd_g((float)x);
        double complex got = (g.re + I * g.im) * sqrt(x);
        double err = cabs(got - want) / cabs(want);
        worst = fmax(worst, err);
        CHECKF(err < 2e-4, "F(%g): engine %.6f%+.6fj, reference %.6f%+.6fj", x, creal(got),
               cimag(got), creal(want), cimag(want));
    }
    kern_cf g0 = kern_utd_g(0.0f);
    CHECKF(fabs(g0.re - sqrt(M_PI / 2)) < 1e-6 && fabs(g0.im - sqrt(M_PI / 2)) < 1e-6, "G(0)");
    printf("UTD transition function: worst relative error %.2g over 1e-4 .. 1e4\n", worst);
}

/* Kouyoumjian and Pathak's four terms d1..d4 of a wedge of exterior angle
   n pi at normal incidence (cot((pi -/+ beta) / 2n) F(kL a+/-(beta)), beta
   = phi -/+ phi', with the common factor); D_s = d1 + d2 - d3 - d4 and
   D_h = d1 + d2 + d3 + d4 for a perfect conductor. */
static void kp_terms(double n, double k, double L, double phi, double php, double complex d[4])
{
    double complex pre = -cexp(-I * M_PI / 4) / (2 * n * sqrt(2 * M_PI * k));
    double b[2] = {phi - php, phi + php};
    for (int i = 0; i < 2; i++) {
        double np = round((b[i] + M_PI) / (2 * n * M_PI)),
               nm = round((b[i] - M_PI) / (2 * n * M_PI));
        double ap = 2 * pow(cos((2 * n * M_PI * np - b[i]) / 2), 2);
        double am = 2 * pow(cos((2 * n * M_PI * nm - b[i]) / 2), 2);
        d[2 * i] = pre / tan((M_PI + b[i]) / (2 * n)) * f_utd(k * L * ap);
        d[2 * i + 1] = pre / tan((M_PI - b[i]) / (2 * n)) * f_utd(k * L * am);
    }
}

static double complex kp_d(double n, double k, double L, double phi, double php, int hard)
{
    double complex pre = -cexp(-I * M_PI / 4) / (2 * n * sqrt(2 * M_PI * k));
    double b[2] = {phi - php, phi + php};
    double complex term[2];
    for (int i = 0; i < 2; i++) {
        double np = round((b[i] + M_PI) / (2 * n * M_PI)),
               nm = round((b[i] - M_PI) / (2 * n * M_PI));
        double ap = 2 * pow(cos((2 * n * M_PI * np - b[i]) / 2), 2);
        double am = 2 * pow(cos((2 * n * M_PI * nm - b[i]) / 2), 2);
        term[i] = 1.0 / tan((M_PI + b[i]) / (2 * n)) * f_utd(k * L * ap) +
                  1.0 / tan((M_PI - b[i]) / (2 * n)) * f_utd(k * L * am);
    }
    return pre * (term[0] + (hard ? 1.0 : -1.0) * term[1]);
}

static kern_wedge_t wedge_z(double ext, kern_v3 n0, kern_v3 nn, int screen)
{
    kern_wedge_t w;
    memset(&w, 0, sizeof w);
    w.e[2] = 1.0f;
    w.o[2] = -50.0f;
    w.length = 100.0f;
    w.n0[0] = n0.x, w.n0[1] = n0.y, w.n0[2] = n0.z;
    w.nn[0] = nn.x, w.nn[1] = nn.y, w.nn[2] = nn.z;
    w.ext = (float)ext;
    w.screen = (uint32_t)screen;
    return w;
}

static kern_mat_t metal(void)
{
    kern_mat_t m;
    memset(&m, 0, sizeof m);
    m.eta_re = 1.0f;
    m.eta_im = -1e7f; /* ITU metal: sigma 1e7 S/m, |R| = 1 */
    m.kd = 1.0f;
    m.alpha_r = m.alpha_i = 1;
    return m;
}

/* Source at angle php and observer at phi, both from face 0 (the +x half
   of y = 0, outward normal +y) through the outside, in the plane z = 0. */
static void utd_case(const kern_wedge_t *w, double php, double phi, double sp, double s,
                     kern_cf J[2][2], double k, int model)
{
    kern_v3 src = v3((float)(sp * cos(php)), (float)(sp * sin(php)), 0.0f);
    kern_v3 obs = v3((float)(s * cos(phi)), (float)(s * sin(phi)), 0.0f);
    kern_v3 ki = v3_norm(v3_scale(src, -1.0f)), ko = v3_norm(obs);
    kern_mat_t m = metal();
    CHECK(kern_utd_jones(w, &m, ki, ko, (float)s, (float)sp, (float)k, model, J));
}

static void test_right_angle_wedge(int model)
{
    /* faces y = 0 (x > 0, normal +y) and x = 0 (y < 0, normal -x): inside
       pi/2, exterior 3 pi/2, n = 1.5 */
    kern_wedge_t w = wedge_z(1.5 * M_PI, v3(0, 1, 0), v3(-1, 0, 0), 0);
    double k = 2 * M_PI * FREQ / C0, sp = 80.0, s = 40.0;
    double L = s * sp / (s + sp);
    /* the source lights face 0 only (phi' < 90 deg), as a street corner
       seen from the street: the n-face is in its shadow */
    const double cases[][2] = {{30, 60},  {30, 140}, {30, 200}, {30, 250},
                               {45, 100}, {60, 230}, {20, 185}, {80, 120}};
    double worst = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double php = cases[i][0] * M_PI / 180, phi = cases[i][1] * M_PI / 180;
        kern_cf J[2][2];
        utd_case(&w, php, phi, sp, s, J, k, model);
        double sf = 1.0 / sqrt(s * sp * (s + sp));
        double complex d[4];
        kp_terms(1.5, k, L, phi, php, d);
        /* E across the edge (phi-hat): Kouyoumjian-Pathak's D_s. E along
           the edge (theta-hat): d1 - d2 + d3 - d4, Sionna RT's combination
           with R_n = -I for an n-face in shadow (docs/radio.md); KP's D_s
           there is d1 + d2 - d3 - d4. */
        double ds = cabs(kp_d(1.5, k, L, phi, php, 0)) * sf;
        double dth = cabs(d[0] - d[1] + d[2] - d[3]) * sf;
        double dph = ds;
        if (model == KERN_UTD_LUEBBERS) { /* the textbook: D_s along, D_h across */
            dth = ds;
            dph = cabs(kp_d(1.5, k, L, phi, php, 1)) * sf;
        }
        double jt = sqrt(cf_abs2(J[0][0])), jp = sqrt(cf_abs2(J[1][1]));
        double cross = sqrt(cf_abs2(J[0][1]) + cf_abs2(J[1][0]));
        double et = fabs(20 * log10(jt / dth)), ep = fabs(20 * log10(jp / dph));
        worst = fmax(worst, fmax(et, ep));
        CHECKF(et < 0.05 && ep < 0.05 && cross < 1e-3 * (jt + jp),
               "%s: wedge phi' %g phi %g: |J_phi| %.4g vs %.4g, |J_theta| %.4g vs %.4g, cross "
               "%.2g",
               model ? "luebbers" : "sionna", cases[i][0], cases[i][1], jp, dph, jt, dth, cross);
    }
    printf("right-angle conducting wedge vs the Kouyoumjian-Pathak terms (%s): worst %.3g dB "
           "over 8 angle pairs\n",
           model ? "luebbers: D_s, D_h" : "sionna", worst);
}

/* ITU-R P.526 knife-edge loss J(nu) [dB], from the Fresnel integrals. */
static double p526_j(double nu)
{
    double c, s;
    fresnel_cs(nu, &c, &s);
    return -20 * log10(sqrt((1 - c - s) * (1 - c - s) + (c - s) * (c - s)) / 2);
}

static void test_knife_edge_coefficient(int model)
{
    /* a half plane: face 0 = the +x half of y = 0 seen from +y, the n-face
       its other side */
    kern_wedge_t w = wedge_z(2 * M_PI, v3(0, 1, 0), v3(0, -1, 0), 1);
    double k = 2 * M_PI * FREQ / C0, lambda = C0 / FREQ, d1 = 200.0, d2 = 100.0;
    double worst = 0.0;
    for (double nu = 0.5; nu <= 4.01; nu += 0.25) {
        /* source on the far side at height h1 below the edge line's plane:
           geometry in the xy plane, the edge at the origin, the screen the
           +x axis; the line of sight passes a distance h below the edge */
        double h = nu / sqrt(2 / lambda * (1 / d1 + 1 / d2));
        /* source at (-(d1 h)/(d1+d2)... ): put source at (x1, -d1) and
           observer at (x2, d2) with the direct line passing x = h at y=0 */
        double x1 = h, x2 = h; /* direct line parallel to y at x = h > 0: through the screen */
        kern_v3 src = v3((float)x1, (float)-d1, 0.0f), obs = v3((float)x2, (float)d2, 0.0f);
        double sp = sqrt(x1 * x1 + d1 * d1), s = sqrt(x2 * x2 + d2 * d2);
        kern_v3 ki = v3_norm(v3_scale(src, -1.0f)), ko = v3_norm(obs);
        /* the source sees face -y: orient face 0 towards it */
        kern_wedge_t wd = w;
        wd.n0[1] = -1.0f;
        wd.nn[1] = 1.0f;
        wd.e[2] = -1.0f; /* n0 x e = (+1, 0, 0): into the screen */
        kern_mat_t m = metal();
        kern_cf J[2][2];
        CHECK(kern_utd_jones(&wd, &m, ki, ko, (float)s, (float)sp, (float)k, model, J));
        double r = d1 + d2; /* free-space path */
        double ls = -20 * log10(sqrt(cf_abs2(J[0][0])) * r);
        double lh = -20 * log10(sqrt(cf_abs2(J[1][1])) * r);
        double want = p526_j(nu);
        double mean = 0.5 * (ls + lh);
        worst = fmax(worst, fabs(mean - want));
        CHECKF(fabs(mean - want) < 0.5 && fabs(ls - want) < 1.5 && fabs(lh - want) < 1.5,
               "knife edge nu %.1f: UTD soft %.2f hard %.2f dB, P.526 J %.2f dB", nu, ls, lh, want);
    }
    printf("knife edge (UTD %s, conducting half plane) vs P.526 J(nu), nu 0.5..4: worst %.2f dB "
           "(mean of the two polarizations)\n",
           model ? "luebbers" : "sionna", worst);
}

/* End to end: a conducting screen x = 0, y in [-150, 150], z -100 to 12 m,
   a transmitter 200 m in front of it at 10 m, the measurement plane behind
   it at 9 m; only the diffraction pass contributes (LOS, reflection and
   refraction off), edge diffraction on (a screen's edges are free). Each
   cell on the x axis behind the screen against P.526. */
static void test_knife_edge_map(void)
{
    test_scene_t t;
    test_scene_init(&t, FREQ);
    kern_material_t mt = test_material(1.0, -1e7 / (2 * M_PI * FREQ * 8.8541878128e-12), 0.01);
    CHECK(test_scene_rect(&t, v3(0, -150, -100), v3(0, 300, 0), v3(0, 0, 112), mt));
    char err[BF_ERRLEN] = "";
    kern_tracer_t *tr = NULL;
    void *ctx = NULL;
    REQUIRE(kern_tracer_new(&t.sc, 2, &tr, err) == BF_OK);
    REQUIRE(kern_backend_cpu()->ctx_new(kern_tracer_geom(tr), 2, &ctx, err) == BF_OK);
    kern_trace_setup_t s;
    memset(&s, 0, sizeof s);
    s.rays = 4000000;
    s.max_depth = 1;
    s.diffraction = s.edge_diffraction = 1;
    s.seed = 3;
    s.tx = v3(-200, 0, 10);
    s.antenna = kern_antenna_make(KERN_PAT_ISO, KERN_ANT_V);
    s.rot = kern_rotation(0, 0, 0);
    s.grid.x0 = 40;
    s.grid.y0 = -10;
    s.grid.dx = 10;
    s.grid.dy = 20;
    s.grid.nx = 8;
    s.grid.ny = 1;
    s.grid.z = 9.0f;
    s.grid.omega = (float)(4 * M_PI / (double)s.rays);
    double map[8], map1[8];
    kern_trace_out_t out = {map, 0, NULL};
    REQUIRE(kern_backend_cpu()->trace(ctx, &s, &out, err) == BF_OK);
    double lambda = C0 / FREQ, worst = 0.0, ratio = 0.0;
    for (int i = 0; i < 8; i++) {
        double x = 40 + 10 * (i + 0.5);
        /* path gain against free space over the direct distance */
        double d1 = 200.0, d2 = x, r = sqrt((d1 + d2) * (d1 + d2) + 1.0);
        double h = 12.0 - (10.0 + (9.0 - 10.0) * d1 / (d1 + d2)); /* edge above the line */
        double nu = h * sqrt(2 / lambda * (1 / d1 + 1 / d2));
        double got = -10 * log10(map[i] / (20.0 * 10.0) * r * r); /* sum / cell area = |E|^2 */
        double want = p526_j(nu);
        worst = fmax(worst, fabs(got - want));
        ratio += pow(10, (want - got) / 10) / 8;
        /* about 100 samples per cell: each cell to 2 dB, their mean to 0.5 */
        CHECKF(fabs(got - want) < 2.0,
               "screen map, x = %.0f m: nu %.2f, engine %.2f dB, P.526 %.2f dB", x, nu, got, want);
    }
    CHECKF(fabs(10 * log10(ratio)) < 0.5, "screen map: mean power %.2f dB off P.526",
           10 * log10(ratio));
    printf("knife-edge map (4e6 samples) vs P.526 over 8 cells behind the screen: worst %.2f dB, "
           "mean %+.2f dB\n",
           worst, 10 * log10(ratio));
    /* the same bits on one thread */
    void *ctx1 = NULL;
    REQUIRE(kern_backend_cpu()->ctx_new(kern_tracer_geom(tr), 1, &ctx1, err) == BF_OK);
    kern_trace_out_t out1 = {map1, 0, NULL};
    REQUIRE(kern_backend_cpu()->trace(ctx1, &s, &out1, err) == BF_OK);
    CHECKF(memcmp(map, map1, sizeof map) == 0 && out.crossings == out1.crossings,
           "diffraction map differs between 2 threads and 1");
    /* and nothing without the option */
    s.diffraction = 0;
    REQUIRE(kern_backend_cpu()->trace(ctx1, &s, &out1, err) == BF_OK);
    CHECKF(out1.crossings == 0, "diffraction off: %llu crossings",
           (unsigned long long)out1.crossings);
    kern_backend_cpu()->ctx_destroy(&ctx1);
    kern_backend_cpu()->ctx_destroy(&ctx);
    kern_tracer_destroy(&tr);
}

int main(void)
{
    test_fresnel_reference();
    test_transition();
    test_right_angle_wedge(KERN_UTD_SIONNA);
    test_right_angle_wedge(KERN_UTD_LUEBBERS);
    test_knife_edge_coefficient(KERN_UTD_SIONNA);
    test_knife_edge_coefficient(KERN_UTD_LUEBBERS);
    test_knife_edge_map();
    if (failures) {
        fprintf(stderr, "kern_diffract_test: %d failures\n", failures);
        return 1;
    }
    printf("kern_diffract_test: ok\n");
    return 0;
}
