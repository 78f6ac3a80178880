/*  kernels/kern_radio_test.c - checks the per-ray radio math of
    kern_radio.h against independent double-precision references: complex
    arithmetic, the ITU slab coefficients (and energy conservation of a
    lossless slab), rotations, antenna patterns (normalization over the
    sphere, peak gains, polarization), the Fibonacci lattice, the random
    generator, the Jones update at a mirror and the crossing weight; and the
    elementary functions of kern_math.h against glibc's double ones (within
    one unit in the last place of a float, with C's special values). */

#include "kern.h"

#include <complex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

/* Reference slab coefficients in double complex, straight from DESIGN 6.2. */
/* A smooth slab (no diffuse reflection). */
static kern_mat_t slab(float eta_re, float eta_im, float kd)
{
    kern_mat_t m = {.eta_re = eta_re, .eta_im = eta_im, .kd = kd, .alpha_r = 1, .alpha_i = 1};
    return m;
}

static void ref_slab(double complex eta, double kd, double cos_t, double complex out[4])
{
    double sin2 = 1 - cos_t * cos_t;
    double complex s = csqrt(eta - sin2);
    double complex r[2] = {(cos_t - s) / (cos_t + s), (eta * cos_t - s) / (eta * cos_t + s)};
    double complex q = kd * s;
    for (int k = 0; k < 2; k++) {
        double complex e2 = cexp(-2 * I * q), den = 1 - r[k] * r[k] * e2;
        out[k] = r[k] * (1 - e2) / den;
        out[2 + k] = (1 - r[k] * r[k]) * cexp(-I * q) / den;
    }
}

static void test_complex(void)
{
    kern_cf a = cf(3, -4), b = cf(1, 2);
    kern_cf d = cf_div(a, b); /* (3-4i)/(1+2i) = -1 - 2i */
    CHECKF(fabsf(d.re + 1) < 1e-6f && fabsf(d.im + 2) < 1e-6f, "div %g %g", d.re, d.im);
    kern_cf s = cf_sqrt(cf(-4, 0));
    CHECKF(fabsf(s.re) < 1e-6f && fabsf(s.im - 2) < 1e-6f, "sqrt(-4) %g %g", s.re, s.im);
    s = cf_sqrt(cf(3, -4)); /* 2 - i */
    CHECKF(fabsf(s.re - 2) < 1e-6f && fabsf(s.im + 1) < 1e-6f, "sqrt(3-4i) %g %g", s.re, s.im);
    kern_cf big = cf_div(cf(1, 0), cf(3e18f, -4e18f)); /* no overflow */
    CHECKF(isfinite(big.re) && fabs(big.re - 3.0 / 25e18) < 1e-24, "big div %g", big.re);
}

static void test_slab(void)
{
    const double f = 3.5e9, lambda = 299792458.0 / f, eps0 = 8.8541878128e-12;
    struct {
        const char *name;
        double a, b, c, d, thick;
    } mats[] = {{"concrete", 5.24, 0, 0.0462, 0.7822, 0.1},
                {"glass", 6.31, 0, 0.0036, 1.3394, 0.01},
                {"medium_dry_ground", 15, -0.1, 0.035, 1.63, 1.0},
                {"metal", 1, 0, 1e7, 0, 0.1},
                {"wood", 1.99, 0, 0.0047, 1.0718, 0.05}};
    for (size_t i = 0; i < BF_ARRAY_LEN(mats); i++) {
        double fg = f / 1e9, er = mats[i].a * pow(fg, mats[i].b),
               sig = mats[i].c * pow(fg, mats[i].d);
        double complex eta = er - I * sig / (eps0 * 2 * KERN_PI * f);
        kern_mat_t m = slab((float)creal(eta), (float)cimag(eta),
                            (float)(2 * KERN_PI * mats[i].thick / lambda));
        for (double deg = 0; deg < 89.5; deg += 7.5) {
            double ct = cos(deg * KERN_PI / 180);
            double complex ref[4];
            ref_slab(eta, m.kd, ct, ref);
            kern_cf got[4];
            kern_slab_coeffs(m, (float)ct, got);
            for (int k = 0; k < 4; k++) {
                /* float math: relative 1e-4 of the coefficient, absolute 1e-5
                   (phases of q up to ~100 rad lose ~1e-5 in float) */
                double err = cabs((got[k].re + I * got[k].im) - ref[k]);
                CHECKF(err < 1e-4 * cabs(ref[k]) + 2e-5,
                       "%s %g deg coef %d: got %g%+gi want %g%+gi", mats[i].name, deg, k, got[k].re,
                       got[k].im, creal(ref[k]), cimag(ref[k]));
            }
        }
    }
    /* lossless slab: |R|^2 + |T|^2 = 1 for each polarization */
    kern_mat_t lossless = slab(4.0f, 0.0f, 5.3f);
    for (double deg = 0; deg < 89; deg += 11) {
        kern_cf c[4];
        kern_slab_coeffs(lossless, (float)cos(deg * KERN_PI / 180), c);
        for (int k = 0; k < 2; k++)
            CHECKF(fabsf(cf_abs2(c[k]) + cf_abs2(c[2 + k]) - 1.0f) < 1e-5f, "energy %g deg pol %d",
                   deg, k);
    }
    /* metal mirrors everything and transmits nothing */
    kern_mat_t metal = slab(1.0f, -5.1e16f, 25.6f);
    kern_cf c[4];
    kern_slab_coeffs(metal, 0.6f, c);
    CHECKF(fabsf(cf_abs2(c[0]) - 1) < 1e-5f && fabsf(cf_abs2(c[1]) - 1) < 1e-5f, "metal |R|");
    CHECKF(cf_abs2(c[2]) < 1e-12f && cf_abs2(c[3]) < 1e-12f, "metal T");
    /* zero thickness: transparent */
    kern_mat_t thin = slab(5.0f, -0.5f, 0.0f);
    kern_slab_coeffs(thin, 0.8f, c);
    CHECKF(cf_abs2(c[0]) < 1e-12f && fabsf(cf_abs2(c[2]) - 1) < 1e-6f, "thin slab");
}

static void test_rotation(void)
{
    kern_rot_t R = kern_rotation(30, 20, 10);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            double dot = 0;
            for (int j = 0; j < 3; j++)
                dot += R.m[3 * j + i] * R.m[3 * j + k];
            CHECKF(fabs(dot - (i == k)) < 1e-6, "orthonormal %d %d", i, k);
        }
    kern_rot_t down = kern_rotation(0, 10, 0);
    kern_v3 bs = kern_rot_apply(&down, v3(1, 0, 0));
    CHECKF(bs.z < -0.17f && bs.z > -0.18f, "positive tilt points down: z %g", bs.z);
    kern_rot_t east = kern_rotation(90, 0, 0);
    bs = kern_rot_apply(&east, v3(1, 0, 0));
    CHECKF(fabsf(bs.y - 1) < 1e-6f, "azimuth 90 points to +y");
    kern_v3 back = kern_rot_apply_t(&R, kern_rot_apply(&R, v3(0.3f, -0.5f, 0.8f)));
    CHECKF(fabsf(back.x - 0.3f) < 1e-6f && fabsf(back.z - 0.8f) < 1e-6f, "R^T R = 1");
}

/* Integral of |C|^2 over the sphere / 4 pi, midpoint rule. */
static double pattern_power(int pattern)
{
    const int nt = 720, np = 720;
    double acc = 0;
    for (int i = 0; i < nt; i++) {
        double th = (i + 0.5) * KERN_PI / nt;
        for (int k = 0; k < np; k++) {
            double ph = (k + 0.5) * 2 * KERN_PI / np - KERN_PI;
            float c = kern_pattern_amp(pattern, v3((float)(sin(th) * cos(ph)),
                                                   (float)(sin(th) * sin(ph)), (float)cos(th)));
            acc += (double)c * c * sin(th) * (KERN_PI / nt) * (2 * KERN_PI / np);
        }
    }
    return acc / (4 * KERN_PI);
}

static void test_patterns(void)
{
    CHECKF(fabs(pattern_power(KERN_PAT_ISO) - 1) < 1e-4, "iso power");
    CHECKF(fabs(pattern_power(KERN_PAT_DIPOLE) - 1) < 1e-3, "dipole power %g",
           pattern_power(KERN_PAT_DIPOLE));
    /* 1.643 is the rounded half-wave dipole directivity: 0.2 % */
    CHECKF(fabs(pattern_power(KERN_PAT_HW_DIPOLE) - 1) < 2e-3, "hw power %g",
           pattern_power(KERN_PAT_HW_DIPOLE));
    /* the 3GPP element is not normalized: with its 8 dBi peak it radiates
       about -1.8 dB of an isotropic antenna (0.657) */
    double p = pattern_power(KERN_PAT_TR38901);
    CHECKF(p > 0.64 && p < 0.67, "tr38901 power %g", p);
    CHECKF(fabsf(kern_pattern_amp(KERN_PAT_TR38901, v3(1, 0, 0)) - powf(10, 8.0f / 20)) < 1e-4f,
           "tr38901 peak");
    CHECKF(fabsf(kern_pattern_amp(KERN_PAT_TR38901, v3(-1, 0, 0)) - powf(10, -22.0f / 20)) < 1e-5f,
           "tr38901 back");
    CHECKF(fabsf(kern_pattern_amp(KERN_PAT_DIPOLE, v3(0, 1, 0)) - sqrtf(1.5f)) < 1e-6f,
           "dipole peak");
    CHECKF(kern_pattern_amp(KERN_PAT_HW_DIPOLE, v3(0, 0, 1)) == 0.0f, "hw null");

    /* polarization: V is theta-only, H phi-only at zero orientation; any
       orientation keeps |f|^2 = C^2; cross (coherent, Sionna's default
       precoding) is the sum of its +-45 deg ports over sqrt2; cross
       independent splits C^2 over two ports */
    kern_rot_t I0 = kern_rotation(0, 0, 0);
    kern_antenna_t v = kern_antenna_make(KERN_PAT_DIPOLE, 0),
                   h = kern_antenna_make(KERN_PAT_DIPOLE, 1),
                   x = kern_antenna_make(KERN_PAT_DIPOLE, KERN_ANT_CROSS_INDEPENDENT),
                   xc = kern_antenna_make(KERN_PAT_DIPOLE, KERN_ANT_CROSS);
    kern_v3 d = v3_norm(v3(0.6f, 0.5f, 0.3f));
    float f[2][2];
    kern_antenna_field(&v, &I0, d, f);
    CHECKF(fabsf(f[0][1]) < 1e-6f && f[1][0] == 0 && f[1][1] == 0, "V is theta");
    kern_antenna_field(&h, &I0, d, f);
    CHECKF(fabsf(f[0][0]) < 1e-6f, "H is phi");
    kern_rot_t R = kern_rotation(40, 15, 20);
    kern_v3 dl = kern_rot_apply_t(&R, d);
    float c = kern_pattern_amp(KERN_PAT_DIPOLE, dl);
    kern_antenna_field(&v, &R, d, f);
    CHECKF(fabsf(f[0][0] * f[0][0] + f[0][1] * f[0][1] - c * c) < 1e-5f, "rotated V norm");
    CHECKF(fabsf(f[0][1]) > 0.01f, "roll mixes theta and phi");
    kern_antenna_field(&x, &R, d, f);
    float tot = f[0][0] * f[0][0] + f[0][1] * f[0][1] + f[1][0] * f[1][0] + f[1][1] * f[1][1];
    CHECKF(fabsf(tot - c * c) < 1e-5f, "cross independent total power");
    /* coherent cross: the field is (f(+45) + f(-45)) / sqrt2, the two ports
       of the independent antenna (each scaled 1/sqrt2) simply added */
    float fc[2][2];
    kern_antenna_field(&xc, &R, d, fc);
    CHECKF(xc.ports == 1 && fabsf(fc[0][0] - (f[0][0] + f[1][0])) < 1e-6f &&
               fabsf(fc[0][1] - (f[0][1] + f[1][1])) < 1e-6f && fc[1][0] == 0 && fc[1][1] == 0,
           "coherent cross = sum of the +-45 ports: %g %g vs %g %g", fc[0][0], fc[0][1],
           f[0][0] + f[1][0], f[0][1] + f[1][1]);
    /* a form with a theta/phi cross term tells the two apart: the coherent
       sum carries it, independent ports cancel it */
    float mx[3] = {1.0f, 0.5f, 1.0f};
    float pc = kern_form_power(fc, mx), pi = kern_form_power(f, mx);
    CHECKF(fabsf(pc - pi) > 0.05f * pi, "coherent %g vs independent %g", pc, pi);
    float m[3] = {2.0f, 0.5f, 3.0f};
    CHECKF(fabsf(kern_form_power(f, m) - (2 * (f[0][0] * f[0][0] + f[1][0] * f[1][0]) +
                                          2 * 0.5f * (f[0][0] * f[0][1] + f[1][0] * f[1][1]) +
                                          3 * (f[0][1] * f[0][1] + f[1][1] * f[1][1]))) < 1e-5f,
           "form power");
}

static void test_lattice_rng(void)
{
    const uint64_t n = 100000;
    double sx = 0, sy = 0, sz = 0;
    for (uint64_t i = 0; i < n; i++) {
        kern_v3 d = kern_fibonacci_dir(i, n);
        CHECKF(fabsf(v3_len(d) - 1) < 1e-5f, "unit %llu", (unsigned long long)i);
        sx += d.x;
        sy += d.y;
        sz += d.z;
    }
    CHECKF(fabs(sx / n) < 1e-3 && fabs(sy / n) < 1e-3 && fabs(sz / n) < 1e-6, "lattice balanced");
    kern_v3 first = kern_fibonacci_dir(0, n), last = kern_fibonacci_dir(n - 1, n);
    CHECKF(first.z == 1.0f && last.z == -1.0f, "poles");
    CHECKF(isfinite(kern_fibonacci_dir(0, 1).x), "N = 1");
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < n; i++) {
        float u = kern_rand(42, i, i % 4);
        CHECKF(u >= 0.0f && u < 1.0f, "range");
        s += u;
        s2 += (double)u * u;
    }
    /* mean 0.5 +- 5 sigma (sigma = 0.289/sqrt(n) = 9e-4), variance 1/12 */
    CHECKF(fabs(s / n - 0.5) < 5e-3, "mean %g", s / n);
    CHECKF(fabs(s2 / n - s * s / n / n - 1.0 / 12) < 3e-3, "variance");
    CHECKF(kern_rand(42, 7, 1) == kern_rand(42, 7, 1) &&
               kern_rand(42, 7, 1) != kern_rand(43, 7, 1) &&
               kern_rand(42, 7, 1) != kern_rand(42, 7, 2),
           "counter-based");
    /* the walk's form, with the seed's mix computed once per trace */
    for (uint64_t seed = 0; seed < 4; seed++)
        for (uint64_t i = 0; i < 1000; i++)
            CHECKF(
                kern_rand_mixed(kern_mix64(seed * 0x9e3779b97f4a7c15ULL), i, (uint32_t)(i % 5)) ==
                    kern_rand(seed * 0x9e3779b97f4a7c15ULL, i, (uint32_t)(i % 5)),
                "kern_rand_mixed seed %d ray %d", (int)seed, (int)i);
}

static void test_jones(void)
{
    kern_ray_t ray;
    kern_ray_launch(&ray, v3(0, 0, 10), 1234, 5000);
    float m[3];
    kern_ray_form(&ray, 2.0f, m);
    CHECKF(m[0] == 2.0f && m[1] == 0.0f && m[2] == 2.0f, "identity form");
    /* a metal mirror at z = 0 */
    ray.dir = v3_norm(v3(0.5f, 0.2f, -1.0f));
    kern_sph_basis(ray.dir, &ray.u, &ray.v);
    kern_v3 din = ray.dir;
    float t = 10.0f / -din.z;
    kern_mat_t metal = slab(1.0f, -5.1e16f, 25.6f);
    kern_ray_t tight = ray;
    int ok = kern_ray_interact(&ray, t, v3(0, 0, 1), metal, 0.99f, 1, 1, KERN_OFFSET_SIONNA);
    CHECKF(ok && ray.depth == 1, "interacts");
    CHECKF(fabsf(ray.dir.x - din.x) < 1e-6f && fabsf(ray.dir.z + din.z) < 1e-6f,
           "specular direction");
    /* Mitsuba's offset: (1 + max|p_i|) * 1500 * 2^-24 along the normal */
    kern_v3 hp = v3_add(tight.org, v3_scale(din, t));
    double want_off = (1.0 + fmax(fabs(hp.x), fmax(fabs(hp.y), fabs(hp.z)))) * 1500.0 / 16777216.0;
    CHECKF(fabs(ray.org.z - want_off) < 1e-7 + 1e-6 * want_off,
           "Sionna offset to the incoming side: %g, want %g", ray.org.z, want_off);
    CHECKF(kern_ray_interact(&tight, t, v3(0, 0, 1), metal, 0.99f, 1, 1, KERN_OFFSET_TIGHT),
           "tight interacts");
    CHECKF(tight.org.z > 0.0f && tight.org.z < 1e-3f && tight.org.z < ray.org.z / 4,
           "tight offset: %g", tight.org.z);
    /* a refraction leaves on the far side, by the same rule, at city coordinates */
    kern_ray_t thru;
    kern_ray_launch(&thru, v3(200, 0, 10), 0, 1);
    thru.dir = v3(-1, 0, 0);
    kern_sph_basis(thru.dir, &thru.u, &thru.v);
    CHECKF(kern_ray_interact(&thru, 10.0f, v3(1, 0, 0), slab(5.24f, -0.63f, 2.6f), 0.5f, 0, 1,
                             KERN_OFFSET_SIONNA),
           "refracts");
    CHECKF(fabs(thru.org.x - (190.0 - 191.0 * 1500.0 / 16777216.0)) < 2e-5,
           "Sionna offset through the wall at 190 m: %.6f (1.7 cm)", thru.org.x);
    kern_ray_form(&ray, 1.0f, m);
    CHECKF(fabsf(m[0] - 1) < 1e-4f && fabsf(m[2] - 1) < 1e-4f && fabsf(m[1]) < 1e-4f,
           "mirror keeps power %g %g %g", m[0], m[1], m[2]);
    CHECKF(fabsf(v3_dot(ray.u, ray.dir)) < 1e-6f && fabsf(v3_dot(ray.v, ray.dir)) < 1e-6f &&
               fabsf(v3_dot(ray.u, ray.v)) < 1e-6f,
           "basis perpendicular");
    /* refraction only allowed through metal: nothing passes, the ray stops */
    kern_ray_launch(&ray, v3(0, 0, 10), 4000, 5000);
    CHECKF(!kern_ray_interact(&ray, 5.0f, v3(0, 0, 1), metal, 0.5f, 0, 1, KERN_OFFSET_SIONNA),
           "metal stops refraction");
    /* a lossy slab with both events: expected power (p * |c|^2/p summed) is |R|^2 + |T|^2 */
    kern_mat_t conc = slab(5.24f, -0.63f, 2.6f);
    kern_cf c[4];
    kern_slab_coeffs(conc, 1.0f, c);
    double acc = 0;
    const int n = 4000;
    for (int i = 0; i < n; i++) {
        kern_ray_launch(&ray, v3(0, 0, 10), 0, 1);
        ray.dir = v3(0, 0, -1); /* straight down */
        kern_sph_basis(ray.dir, &ray.u, &ray.v);
        kern_ray_interact(&ray, 10.0f, v3(0, 0, 1), conc, (i + 0.5f) / n, 1, 1, KERN_OFFSET_SIONNA);
        kern_ray_form(&ray, 1.0f, m);
        acc += m[0];
    }
    /* normal incidence: |R_TE| = |R_TM|, |T_TE| = |T_TM|; the stratified
       u01 makes the estimate exact up to 1/n */
    double want = cf_abs2(c[0]) + cf_abs2(c[2]);
    CHECKF(fabs(acc / n - want) < 2e-3 * want, "unbiased event choice %g vs %g", acc / n, want);
}

/* ---- diffuse reflection ------------------------------------------------------ */
/* Every scattering pattern integrates to 1 over the hemisphere, for several
   incidence angles: midpoint rule in cos theta_o and phi_o. */
static void test_scatter_patterns(void)
{
    struct {
        int pattern, ar, ai;
        float lam;
    } pats[] = {{KERN_SCAT_LAMBERTIAN, 1, 1, 1.0f},     {KERN_SCAT_BACKSCATTERING, 1, 1, 1.0f},
                {KERN_SCAT_BACKSCATTERING, 4, 1, 1.0f}, {KERN_SCAT_BACKSCATTERING, 20, 30, 0.7f},
                {KERN_SCAT_BACKSCATTERING, 3, 6, 0.4f}, {KERN_SCAT_BACKSCATTERING, 7, 2, 0.0f}};
    kern_v3 n = v3(0, 0, 1);
    for (size_t k = 0; k < sizeof pats / sizeof pats[0]; k++) {
        kern_mat_t m = slab(1, 0, 0);
        m.s = 1.0f;
        m.pattern = pats[k].pattern;
        m.alpha_r = pats[k].ar;
        m.alpha_i = pats[k].ai;
        m.lam = pats[k].lam;
        for (double deg = 0; deg < 89; deg += 22.0) {
            double th = deg * KERN_PI / 180;
            kern_v3 ki = v3((float)sin(th), 0, (float)-cos(th));
            const int nz = 400, np = 400;
            double acc = 0;
            for (int i = 0; i < nz; i++)
                for (int j = 0; j < np; j++) {
                    double z = (i + 0.5) / nz, ph = 2 * KERN_PI * (j + 0.5) / np,
                           r = sqrt(1 - z * z);
                    kern_v3 ko = v3((float)(r * cos(ph)), (float)(r * sin(ph)), (float)z);
                    acc += kern_scatter_pattern(&m, ki, ko, n);
                }
            acc *= 2 * KERN_PI / ((double)nz * np);
            CHECKF(fabs(acc - 1) < 5e-3, "pattern %d (%d, %d, %.1f) at %g deg integrates to %g",
                   pats[k].pattern, pats[k].ar, pats[k].ai, (double)pats[k].lam, deg, acc);
        }
    }
}

/* Values of Sionna RT 2.2's LambertianPattern, DirectivePattern(alpha_r)
   and BackscatteringPattern(alpha_r, alpha_i, lambda_) for k_i = (sin
   th_i, 0, -cos th_i), k_o at (theta_o, phi_o), normal +z. */
static void test_scatter_vs_sionna(void)
{
    const struct {
        int pattern, ar, ai;
        float lam;
        double thi, tho, pho, want;
    } c[] = {{KERN_SCAT_LAMBERTIAN, 1, 1, 1.0f, 0.35, 0.6, 1.1, 0.262712479},
             {KERN_SCAT_BACKSCATTERING, 4, 1, 1.0f, 0.7, 0.3, 0.2, 0.380410522},
             {KERN_SCAT_BACKSCATTERING, 10, 1, 1.0f, 0.35, 0.35, 3.14159, 0.251359344},
             {KERN_SCAT_BACKSCATTERING, 20, 30, 0.7f, 1.05, 0.9, 3.3, 0.431040943},
             {KERN_SCAT_BACKSCATTERING, 3, 6, 0.4f, 0.7, 0.6, 0.0, 0.211151689},
             {KERN_SCAT_BACKSCATTERING, 7, 2, 0.0f, 0.0, 0.5, 1.0, 0.240459219}};
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        kern_mat_t m = slab(1, 0, 0);
        m.s = 1.0f;
        m.pattern = c[k].pattern;
        m.alpha_r = c[k].ar;
        m.alpha_i = c[k].ai;
        m.lam = c[k].lam;
        kern_v3 ki = v3((float)sin(c[k].thi), 0, (float)-cos(c[k].thi));
        kern_v3 ko = v3((float)(sin(c[k].tho) * cos(c[k].pho)),
                        (float)(sin(c[k].tho) * sin(c[k].pho)), (float)cos(c[k].tho));
        double got = kern_scatter_pattern(&m, ki, ko, v3(0, 0, 1));
        CHECKF(fabs(got / c[k].want - 1) < 1e-4, "pattern %zu: %.9g, Sionna %.9g", k, got,
               c[k].want);
    }
}

/* Energy per interaction, per polarization: on a lossless slab (|R|^2 +
   |T|^2 = 1 for TE and for TM), the expected outgoing power times the
   outgoing tube's solid angle, over the event choice (u01 stratified) and
   the diffuse direction (u1, u2 stratified), splits into specular (1 - S^2)
   |R|^2, diffuse S^2 |R|^2 and transmitted |T|^2, and their sum is the
   incident power: reflected + scattered + transmitted = incident. Also for
   a lossy slab the three shares are Sionna's, and the diffuse share of a
   theta-hat polarized wave on metal (R_TE = R_TM) crosses to phi-hat by
   K_x. */
static void energy_shares(kern_mat_t mat, double deg, double share[3][2])
{
    const float omega = 1e-3f; /* the incident tube's solid angle */
    const int nu = 2000, nd = 24;
    double th = deg * KERN_PI / 180;
    kern_v3 din = v3((float)(0.8 * sin(th)), (float)(0.6 * sin(th)), (float)-cos(th));
    memset(share, 0, 3 * 2 * sizeof share[0][0]);
    for (int i = 0; i < nu; i++) {
        float u01 = (i + 0.5f) / (float)nu;
        int nn = 1;
        for (int k = 0; k < nn * nn; k++) {
            kern_ray_t ray;
            kern_ray_launch(&ray, v3(0, 0, 10), 0, 1);
            ray.dir = din;
            kern_sph_basis(ray.dir, &ray.u, &ray.v);
            if (deg > 0) { /* TE, TM: u = d x n normalized */
                kern_v3 sv = v3_norm(v3_cross(din, v3(0, 0, 1)));
                ray.u = sv;
                ray.v = v3_cross(sv, din);
            }
            float u1 = ((k % nd) + 0.5f) / (float)nd, u2 = ((k / nd) + 0.5f) / (float)nd;
            if (!kern_ray_interact_ex(&ray, 10.0f, v3(0, 0, 1), mat, u01, u1, u2, 1, 1, 1,
                                      KERN_OFFSET_SIONNA, omega))
                break;
            int ev = ray.omega > 0.0f ? 1 : (ray.dir.z > 0.0f ? 0 : 2);
            if (ev == 1 && nn == 1) { /* a diffuse stratum: average over the directions */
                nn = nd;
                k = -1;
                continue;
            }
            double w = (ev == 1 ? ray.omega : omega) / omega / (double)nu / (double)(nn * nn);
            for (int c = 0; c < 2; c++)
                share[ev][c] += w * (cf_abs2(ray.j[0][c]) + cf_abs2(ray.j[1][c]));
        }
    }
}

static void test_diffuse_energy(void)
{
    for (int lossy = 0; lossy < 2; lossy++)
        for (double deg = 0; deg < 85; deg += 20) {
            kern_mat_t m = lossy ? slab(5.24f, -0.63f, 2.6f) : slab(4.0f, 0.0f, 5.3f);
            m.s = 0.6f;
            m.kx = 0.3f;
            kern_cf c[4];
            kern_slab_coeffs(m, (float)cos(deg * KERN_PI / 180), c);
            double sh[3][2];
            energy_shares(m, deg, sh);
            for (int pol = 0; pol < 2; pol++) {
                double r = cf_abs2(c[pol]), t = cf_abs2(c[2 + pol]), s2 = 0.36;
                double want[3] = {(1 - s2) * r, s2 * r, t};
                const char *name[3] = {"specular", "diffuse", "transmitted"};
                for (int e = 0; e < 3; e++)
                    CHECKF(fabs(sh[e][pol] - want[e]) < 3e-3,
                           "%s %s at %g deg, %s: %.5f, want %.5f", lossy ? "lossy" : "lossless",
                           pol ? "TM" : "TE", deg, name[e], sh[e][pol], want[e]);
                double sum = sh[0][pol] + sh[1][pol] + sh[2][pol];
                if (!lossy)
                    CHECKF(fabs(sum - 1) < 3e-3 && fabs(r + t - 1) < 1e-5,
                           "lossless %s at %g deg: reflected + scattered + transmitted = %.5f",
                           pol ? "TM" : "TE", deg, sum);
            }
        }
    /* XPD: a theta-hat wave at normal incidence on metal, diffuse only */
    kern_mat_t metal = slab(1.0f, -5.1e16f, 25.6f);
    metal.s = 1.0f;
    metal.kx = 0.25f;
    const int nd = 64;
    double co = 0, cross = 0;
    for (int k = 0; k < nd * nd; k++) {
        kern_ray_t ray;
        kern_ray_launch(&ray, v3(0, 0, 10), 0, 1);
        ray.dir = v3_norm(v3(0.3f, 0.1f, -1.0f));
        kern_sph_basis(ray.dir, &ray.u, &ray.v);
        CHECK(kern_ray_interact_ex(&ray, 10.0f, v3(0, 0, 1), metal, 0.5f, ((k % nd) + 0.5f) / nd,
                                   ((k / nd) + 0.5f) / nd, 1, 1, 1, KERN_OFFSET_SIONNA, 1.0f));
        kern_v3 th, ph; /* the field of the theta-hat input, on the scattered theta/phi */
        kern_sph_basis(ray.dir, &th, &ph);
        CHECKF(fabsf(v3_dot(ray.u, th) - 1) < 1e-5f && fabsf(v3_dot(ray.v, ph) - 1) < 1e-5f,
               "the scattered basis is theta-hat, phi-hat");
        co += cf_abs2(ray.j[0][0]);
        cross += cf_abs2(ray.j[1][0]);
    }
    CHECKF(fabs(cross / (co + cross) - 0.25) < 2e-3, "XPD share %g, want 0.25",
           cross / (co + cross));
    /* without S the event choice and the Jones chain are those of kern_ray_interact, bit for bit */
    kern_mat_t conc = slab(5.24f, -0.63f, 2.6f);
    for (int i = 0; i < 64; i++) {
        kern_ray_t a, b;
        kern_ray_launch(&a, v3(0, 0, 10), (uint64_t)i * 37, 5000);
        b = a;
        kern_ray_interact(&a, 5.0f, v3(0, 0.3f, 0.95393920f), conc, (i + 0.5f) / 64, 1, 1,
                          KERN_OFFSET_SIONNA);
        kern_ray_interact_ex(&b, 5.0f, v3(0, 0.3f, 0.95393920f), conc, (i + 0.5f) / 64, 0.3f, 0.7f,
                             1, 1, 1, KERN_OFFSET_SIONNA, 1e-3f);
        CHECKF(!memcmp(&a, &b, sizeof a), "S = 0: the diffuse switch changes nothing (%d)", i);
    }
}

static void test_crossing(void)
{
    kern_grid_t g = {-10, -10, 5, 5, 1.5f, 0.01f, 4, 4};
    kern_ray_t ray;
    kern_ray_launch(&ray, v3(0, 0, 11.5f), 0, 1);
    ray.dir = v3_norm(v3(0.3f, 0.1f, -1.0f));
    uint32_t cell = 99;
    float w = kern_plane_crossing(&ray, INFINITY, &g, &cell);
    /* crosses at (3, 1): cell ix = 2, iy = 2 */
    CHECKF(cell == 2 * 4 + 2 && fabsf(w - 0.01f / -ray.dir.z) < 1e-7f, "cell %u w %g", cell, w);
    CHECKF(kern_plane_crossing(&ray, 5.0f, &g, &cell) == 0.0f, "hit before the plane");
    ray.dir = v3(0, 0, 1);
    CHECKF(kern_plane_crossing(&ray, INFINITY, &g, &cell) == 0.0f, "going away");
    ray.dir = v3_norm(v3(3, 0, -1));
    CHECKF(kern_plane_crossing(&ray, INFINITY, &g, &cell) == 0.0f, "outside the grid");
}

/* kern_ray_exit_may_cross, which lets a ray skip its last interaction,
   against the interaction itself: where it says no, neither the reflected
   nor the refracted ray (forced by u01, on both offset rules) crosses the
   plane anywhere; and it does say no often (rays off the ground, up walls),
   and yes where a ray does cross. */
static void test_exit_may_cross(void)
{
    kern_grid_t g = {-1e4f, -1e4f, 10, 10, 1.5f, 0.01f, 2000, 2000};
    kern_mat_t mats[2] = {slab(5.24f, -0.63f, 2.6f), slab(1.0f, -1e7f, 100.0f)};
    int no = 0, yes = 0, bad = 0;
    for (uint64_t i = 0; i < 200000; i++) {
        /* a hit on the ground (z = 0) or on a wall, from a random origin */
        kern_v3 org = v3(40 * kern_rand_k(7, i, 0, 0) - 20, 40 * kern_rand_k(7, i, 0, 1) - 20,
                         20 * kern_rand_k(7, i, 0, 2) - 2);
        kern_v3 n =
            i % 3 == 0
                ? v3(0, 0, i % 2 ? 1.0f : -1.0f)
                : v3_norm(v3(kern_rand_k(7, i, 0, 3) - 0.5f, kern_rand_k(7, i, 0, 4) - 0.5f, 0.0f));
        kern_v3 dir = kern_fibonacci_dir(i % 4999, 5000);
        if (fabsf(v3_dot(dir, n)) < 1e-3f)
            continue;
        float t = 1.0f + 30 * kern_rand_k(7, i, 0, 5);
        int offset = (int)(i % 2);
        kern_ray_t ray;
        kern_ray_launch(&ray, org, 0, 1);
        ray.dir = dir;
        int may = kern_ray_exit_may_cross(&ray, t, n, 1, 1, offset, &g);
        int crosses = 0;
        for (int ev = 0; ev < 2; ev++) {
            kern_ray_t r = ray;
            float u01 = ev == 0 ? 0.0f : 0.99999994f; /* reflection, else refraction */
            if (kern_ray_interact(&r, t, n, mats[i % 2], u01, ev == 0, ev == 1, offset)) {
                uint32_t cell;
                crosses |= kern_plane_crossing(&r, INFINITY, &g, &cell) > 0.0f;
            }
        }
        bad += !may && crosses;
        no += !may;
        yes += may && crosses;
    }
    CHECKF(bad == 0, "%d rays cross the plane after exit_may_cross said no", bad);
    CHECKF(no > 20000 && yes > 20000, "no %d, yes and crosses %d", no, yes);
}

/* |got - ref| in units in the last place of ref rounded to float. */
static double ulps(float got, double ref)
{
    float r = fabsf((float)ref);
    double ulp = (double)nextafterf(r, INFINITY) - (double)r;
    return fabs((double)got - ref) / ulp;
}

static uint64_t lcg = 0x9E3779B97F4A7C15ull;
static double urand(void) /* uniform in [0, 1) */
{
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg >> 11) * (1.0 / 9007199254740992.0);
}

static void test_elementary(void)
{
    const int n = 400000;
    double e_sin = 0, e_cos = 0, e_exp = 0, e_atan2 = 0, e_hyp = 0;
    for (int i = 0; i < n; i++) {
        /* arguments up to 2^25 in magnitude, denser near 0 */
        float x = (float)((2 * urand() - 1) * pow(2.0, 25 * urand() - 10));
        float s, c;
        kern_sincosf(x, &s, &c);
        e_sin = fmax(e_sin, ulps(s, sin((double)x)));
        e_cos = fmax(e_cos, ulps(c, cos((double)x)));
        float a = (float)(-104 + 193 * urand());
        e_exp = fmax(e_exp, a > -87 ? ulps(kern_expf(a), exp((double)a))
                                    : fabs(kern_expf(a) - exp((double)a)) / 0x1p-149);
        float y = (float)((2 * urand() - 1) * pow(10.0, 6 * urand() - 3)),
              z = (float)((2 * urand() - 1) * pow(10.0, 6 * urand() - 3));
        e_atan2 = fmax(e_atan2, ulps(kern_atan2f(y, z), atan2((double)y, (double)z)));
        e_hyp = fmax(e_hyp, ulps(kern_hypotf(y, z), hypot((double)y, (double)z)));
    }
    printf("kern_math: max error in float ulps over %d arguments: sin %.4f cos %.4f exp %.4f "
           "atan2 %.4f hypot %.4f\n",
           n, e_sin, e_cos, e_exp, e_atan2, e_hyp);
    CHECKF(e_sin <= 1 && e_cos <= 1, "sincosf: %g %g ulps", e_sin, e_cos);
    CHECKF(e_exp <= 1, "expf: %g ulps", e_exp);
    CHECKF(e_atan2 <= 1 && e_hyp <= 1, "atan2f %g hypotf %g ulps", e_atan2, e_hyp);

    float s, c;
    kern_sincosf(0.0f, &s, &c);
    CHECKF(s == 0.0f && c == 1.0f, "sincos(0) = (%g, %g)", s, c);
    kern_sincosf(-0.0f, &s, &c);
    CHECKF(s == 0.0f && signbit(s) && c == 1.0f, "sin(-0) is -0");
    kern_sincosf(NAN, &s, &c);
    CHECKF(isnan(s) && isnan(c), "sincos(nan)");
    kern_sincosf(INFINITY, &s, &c);
    CHECKF(isnan(s) && isnan(c), "sincos(inf)");
    kern_sincosf(3e30f, &s, &c); /* far beyond the exact reduction: still bounded */
    CHECKF(fabsf(s) <= 1 && fabsf(c) <= 1, "sincos(3e30) = (%g, %g)", s, c);
    CHECKF(kern_expf(0) == 1.0f && kern_expf(-200) == 0.0f && kern_expf(100) == INFINITY &&
               kern_expf(-INFINITY) == 0.0f && kern_expf(INFINITY) == INFINITY &&
               isnan(kern_expf(NAN)),
           "expf special values");
    CHECKF(kern_expf(-1e10f) == 0.0f, "expf of a metal slab's phase");
    const float zs[2] = {0.0f, -0.0f};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++)
            CHECKF(kern_atan2f(zs[i], zs[k]) == atan2f(zs[i], zs[k]) &&
                       signbit(kern_atan2f(zs[i], zs[k])) == signbit(atan2f(zs[i], zs[k])),
                   "atan2f(%g, %g)", zs[i], zs[k]);
    CHECKF(kern_atan2f(1, -INFINITY) == atan2f(1, -INFINITY) &&
               kern_atan2f(INFINITY, INFINITY) == atan2f(INFINITY, INFINITY) &&
               isnan(kern_atan2f(NAN, 1)),
           "atan2f infinities");
    CHECKF(kern_hypotf(3e38f, 3e38f) == INFINITY && kern_hypotf(3, 4) == 5.0f, "hypotf");

    /* the lattice against glibc's double sin and cos */
    double e_dir = 0;
    const uint64_t count = 10000000019ull;
    for (int i = 0; i < 200000; i++) {
        uint64_t k = i < 100000 ? (uint64_t)i : (uint64_t)(urand() * (double)count);
        kern_v3 d = kern_fibonacci_dir(k, count);
        double x = (double)k * 0.61803398874989484820;
        x -= floor(x);
        double zz = 1.0 - 2.0 * ((double)k / (double)(count - 1));
        double r = sqrt(fmax(0.0, 1.0 - zz * zz));
        e_dir = fmax(
            e_dir, fmax(ulps(d.x, r * cos(2 * KERN_PI * x)), ulps(d.y, r * sin(2 * KERN_PI * x))));
    }
    printf("kern_fibonacci_dir: max error %.4f float ulps against glibc's cos and sin\n", e_dir);
    CHECKF(e_dir <= 1, "lattice direction off by %g ulps", e_dir);
}

int main(void)
{
    test_elementary();
    test_complex();
    test_slab();
    test_rotation();
    test_patterns();
    test_lattice_rng();
    test_jones();
    test_scatter_patterns();
    test_scatter_vs_sionna();
    test_diffuse_energy();
    test_crossing();
    test_exit_may_cross();
    if (failures) {
        fprintf(stderr, "kern_radio_test: %d failures\n", failures);
        return 1;
    }
    printf("kern_radio_test: ok\n");
    return 0;
}
