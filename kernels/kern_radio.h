/*  kernels/kern_radio.h - all per-ray radio physics of the shooting-and-
    bouncing-rays engine (DESIGN 6.2-6.5), written once for the host and the
    device: float complex numbers, the ITU slab coefficients, the antenna
    patterns with polarization and orientation, the Fibonacci launch lattice,
    a counter-based random generator, the ray state with its 2x2 Jones chain,
    the event choice at an interaction (specular, diffuse with the scattering
    patterns, refraction) and the plane-crossing contribution.
    kern_bounce.h walks a ray through them for both backends (kern_cpu.c,
    kern_cuda.cu), and the two compute the same bits: every product is
    mul_rn/dmul_rn (never fused into a multiply-add, kern_hd.h) and every
    elementary function on a ray's path comes from kern_math.h (never from
    glibc or CUDA's libdevice, which differ in the last bit). Valid C11 and
    CUDA C++ (see kern_hd.h): no compound literals, no host-only calls. */

#ifndef KERN_RADIO_H_INCLUDED
#define KERN_RADIO_H_INCLUDED

#include "kern_hd.h"
#include "kern_math.h"

#define KERN_PI    3.14159265358979323846
#define KERN_PIF   3.14159265358979323846f
#define KERN_PI_2F 1.57079632679489662f /* pi / 2 */

/* ---- complex numbers (float) ------------------------------------------ */
typedef struct {
    float re, im;
} kern_cf;

KERN_HD kern_cf cf(float re, float im)
{
    kern_cf r;
    r.re = re;
    r.im = im;
    return r;
}
KERN_HD kern_cf cf_add(kern_cf a, kern_cf b)
{
    return cf(a.re + b.re, a.im + b.im);
}
KERN_HD kern_cf cf_sub(kern_cf a, kern_cf b)
{
    return cf(a.re - b.re, a.im - b.im);
}
KERN_HD kern_cf cf_mul(kern_cf a, kern_cf b)
{
    return cf(mul_rn(a.re, b.re) - mul_rn(a.im, b.im), mul_rn(a.re, b.im) + mul_rn(a.im, b.re));
}
KERN_HD kern_cf cf_scale(kern_cf a, float s)
{
    return cf(mul_rn(a.re, s), mul_rn(a.im, s));
}
KERN_HD float cf_abs2(kern_cf a)
{
    return mul_rn(a.re, a.re) + mul_rn(a.im, a.im);
}
/* Smith's division: no overflow for the huge permittivity of metal (|eta|
   ~ 1e16, whose square would be close to the float range). */
KERN_HD kern_cf cf_div(kern_cf a, kern_cf b)
{
    if (fabsf(b.re) >= fabsf(b.im)) {
        if (b.re == 0.0f)
            return cf(0.0f, 0.0f);
        float r = b.im / b.re, den = b.re + mul_rn(b.im, r);
        return cf((a.re + mul_rn(a.im, r)) / den, (a.im - mul_rn(a.re, r)) / den);
    }
    float r = b.re / b.im, den = mul_rn(b.re, r) + b.im;
    return cf((mul_rn(a.re, r) + a.im) / den, (mul_rn(a.im, r) - a.re) / den);
}
/* Principal square root (real part >= 0). */
KERN_HD kern_cf cf_sqrt(kern_cf z)
{
    float m = kern_hypotf(z.re, z.im);
    float re = sqrtf(kern_maxf(mul_rn(0.5f, m + z.re), 0.0f));
    float im = sqrtf(kern_maxf(mul_rn(0.5f, m - z.re), 0.0f));
    return cf(re, z.im < 0.0f ? -im : im);
}

/* ---- materials (DESIGN 6.2) ------------------------------------------- */
/* One material as the tracer needs it: eta = eta_re + j eta_im and
   kd = 2 pi thickness / lambda (so that q = kd * s); the diffuse reflection
   (Sionna RT's model, docs/radio.md): scattering coefficient s (S, 0: a
   smooth surface), cross-polarization discrimination kx (K_x) and the
   scattering pattern (KERN_SCAT_*) with its lobe exponents alpha_r, alpha_i
   and the share lam of the lobe around the specular direction. */
enum { KERN_SCAT_LAMBERTIAN = 0, KERN_SCAT_BACKSCATTERING = 1 };

typedef struct {
    float eta_re, eta_im, kd, s;
    float kx, lam;
    int32_t pattern, alpha_r, alpha_i;
} kern_mat_t;

/* Slab coefficients at incidence cosine cos_t (0..1): out[0] = R_TE,
   out[1] = R_TM, out[2] = T_TE, out[3] = T_TM. */
KERN_FLATTEN KERN_HD void kern_slab_coeffs(kern_mat_t mat, float cos_t, kern_cf out[4])
{
    float sin2 = kern_maxf(1.0f - mul_rn(cos_t, cos_t), 0.0f);
    kern_cf s = cf_sqrt(cf(mat.eta_re - sin2, mat.eta_im));
    kern_cf c = cf(cos_t, 0.0f);
    kern_cf ec = cf(mul_rn(mat.eta_re, cos_t), mul_rn(mat.eta_im, cos_t));
    kern_cf r[2];
    r[0] = cf_div(cf_sub(c, s), cf_add(c, s));
    r[1] = cf_div(cf_sub(ec, s), cf_add(ec, s));
    /* e1 = exp(-j q), e2 = exp(-2 j q); Im(s) <= 0 makes them decay. For
       metal the magnitude underflows to 0: R = r, T = 0, as it should. */
    float qr = mul_rn(mat.kd, s.re), qi = mul_rn(mat.kd, s.im);
    float mag = kern_expf(qi), sq = 0.0f, cq = 0.0f;
    if (mag > 0.0f) /* the phase only where the slab lets anything through */
        kern_sincosf(qr, &sq, &cq);
    kern_cf e1 = mag > 0.0f ? cf(mul_rn(mag, cq), -mul_rn(mag, sq)) : cf(0.0f, 0.0f);
    kern_cf e2 = cf_mul(e1, e1);
    kern_cf one = cf(1.0f, 0.0f);
    for (int k = 0; k < 2; k++) {
        kern_cf r2 = cf_mul(r[k], r[k]);
        kern_cf den = cf_sub(one, cf_mul(r2, e2));
        if (cf_abs2(den) < 1e-30f) { /* lossless grazing resonance: a mirror */
            out[k] = r[k];
            out[2 + k] = cf(0.0f, 0.0f);
            continue;
        }
        out[k] = cf_div(cf_mul(r[k], cf_sub(one, e2)), den);
        out[2 + k] = cf_div(cf_mul(cf_sub(one, r2), e1), den);
    }
}

/* ---- orientation and antenna (DESIGN 6.3) ------------------------------ */
/* A rotation matrix, row-major: world = R * local. */
typedef struct {
    float m[9];
} kern_rot_t;

/* R = Rz(azimuth) * Ry(tilt) * Rx(roll); with this Ry a positive tilt turns
   the boresight (+x) towards -z, i.e. down. Called on the host only (both
   backends receive the matrix), so the libm cos and sin are fine here. */
KERN_HD kern_rot_t kern_rotation(double azimuth_deg, double tilt_deg, double roll_deg)
{
    double a = dmul_rn(azimuth_deg, KERN_PI / 180.0), t = dmul_rn(tilt_deg, KERN_PI / 180.0),
           r = dmul_rn(roll_deg, KERN_PI / 180.0);
    double ca = cos(a), sa = sin(a), ct = cos(t), st = sin(t), cr = cos(r), sr = sin(r);
    double cast = dmul_rn(ca, st), sast = dmul_rn(sa, st);
    kern_rot_t R;
    R.m[0] = (float)dmul_rn(ca, ct);
    R.m[1] = (float)(dmul_rn(cast, sr) - dmul_rn(sa, cr));
    R.m[2] = (float)(dmul_rn(cast, cr) + dmul_rn(sa, sr));
    R.m[3] = (float)dmul_rn(sa, ct);
    R.m[4] = (float)(dmul_rn(sast, sr) + dmul_rn(ca, cr));
    R.m[5] = (float)(dmul_rn(sast, cr) - dmul_rn(ca, sr));
    R.m[6] = (float)(-st);
    R.m[7] = (float)dmul_rn(ct, sr);
    R.m[8] = (float)dmul_rn(ct, cr);
    return R;
}
KERN_HD kern_v3 kern_rot_apply(const kern_rot_t *R, kern_v3 a)
{
    return v3(mul_rn(R->m[0], a.x) + mul_rn(R->m[1], a.y) + mul_rn(R->m[2], a.z),
              mul_rn(R->m[3], a.x) + mul_rn(R->m[4], a.y) + mul_rn(R->m[5], a.z),
              mul_rn(R->m[6], a.x) + mul_rn(R->m[7], a.y) + mul_rn(R->m[8], a.z));
}
KERN_HD kern_v3 kern_rot_apply_t(const kern_rot_t *R, kern_v3 a)
{
    return v3(mul_rn(R->m[0], a.x) + mul_rn(R->m[3], a.y) + mul_rn(R->m[6], a.z),
              mul_rn(R->m[1], a.x) + mul_rn(R->m[4], a.y) + mul_rn(R->m[7], a.z),
              mul_rn(R->m[2], a.x) + mul_rn(R->m[5], a.y) + mul_rn(R->m[8], a.z));
}

/* Spherical unit vectors theta-hat and phi-hat of a unit direction. At the
   poles phi is taken as 0; every user goes through this one function, so
   the convention is consistent. */
KERN_HD void kern_sph_basis(kern_v3 d, kern_v3 *th, kern_v3 *ph)
{
    float rho = sqrtf(mul_rn(d.x, d.x) + mul_rn(d.y, d.y));
    float cp = 1.0f, sp = 0.0f;
    if (rho > 1e-12f) {
        cp = d.x / rho;
        sp = d.y / rho;
    }
    *th = v3(mul_rn(d.z, cp), mul_rn(d.z, sp), -rho);
    *ph = v3(-sp, cp, 0.0f);
}

enum { KERN_PAT_ISO = 0, KERN_PAT_DIPOLE = 1, KERN_PAT_HW_DIPOLE = 2, KERN_PAT_TR38901 = 3 };

/* Antenna: pattern plus up to two ports of linear polarization. Each port
   radiates amplitude `scale` * C(theta, phi) along cos(slant) theta-hat +
   sin(slant) phi-hat of the local frame, and the ports' powers add.
   V: one port, slant 0; H: one port, slant 90 deg.
   Cross (KERN_ANT_CROSS), as Sionna RT's PlanarArray(polarization="cross")
   with its default precoding: ports at +45 and -45 deg fed coherently with
   weights 1/sqrt2 each, so their fields add before the power is taken:
   (C (c45 th + s45 ph) + C (c45 th - s45 ph)) / sqrt2 = C th. That is one
   port, slant 0, at full power: the +-45 deg horizontal components cancel.
   Cross independent (KERN_ANT_CROSS_INDEPENDENT): the same two ports carry
   independent signals, each half the power (scale 1/sqrt2); no cross term,
   their powers add. docs/radio.md compares the two. */
enum { KERN_ANT_V = 0, KERN_ANT_H = 1, KERN_ANT_CROSS = 2, KERN_ANT_CROSS_INDEPENDENT = 3 };

typedef struct {
    int pattern, ports;
    float slant_cos[2], slant_sin[2], scale;
} kern_antenna_t;

KERN_HD kern_antenna_t kern_antenna_make(int pattern, int polarization /* KERN_ANT_* */)
{
    kern_antenna_t a;
    int indep = polarization == KERN_ANT_CROSS_INDEPENDENT;
    a.pattern = pattern;
    a.ports = indep ? 2 : 1;
    a.scale = indep ? 0.70710678f : 1.0f;
    a.slant_cos[0] = polarization == KERN_ANT_H ? 0.0f : (indep ? 0.70710678f : 1.0f);
    a.slant_sin[0] = polarization == KERN_ANT_H ? 1.0f : (indep ? 0.70710678f : 0.0f);
    a.slant_cos[1] = 0.70710678f;
    a.slant_sin[1] = -0.70710678f;
    return a;
}

/* Field amplitude C of the pattern for a unit direction in the antenna's
   local frame (theta from +z, phi from +x). */
KERN_HD float kern_pattern_amp(int pattern, kern_v3 dl)
{
    float st = sqrtf(mul_rn(dl.x, dl.x) + mul_rn(dl.y, dl.y));
    switch (pattern) {
    case KERN_PAT_DIPOLE:
        return mul_rn(1.22474487f, st);
    case KERN_PAT_HW_DIPOLE: {
        float ct = kern_minf(kern_maxf(dl.z, -1.0f), 1.0f);
        return st > 1e-6f ? mul_rn(1.28179561f, fabsf(kern_cosf(mul_rn(KERN_PI_2F, ct)) / st))
                          : 0.0f;
    }
    case KERN_PAT_TR38901: {
        /* theta - 90 deg is minus the elevation, atan2(z, st): no unit
           length needed, and no arc cosine */
        float el = mul_rn(kern_atan2f(dl.z, st), 180.0f / KERN_PIF);
        float ph = mul_rn(kern_atan2f(dl.y, dl.x), 180.0f / KERN_PIF); /* already in -180..180 */
        float v = el / 65.0f, h = ph / 65.0f;
        float av = mul_rn(mul_rn(12.0f, v), v);
        float ah = mul_rn(mul_rn(12.0f, h), h);
        float a = -kern_minf(kern_minf(av, 30.0f) + kern_minf(ah, 30.0f), 30.0f) + 8.0f;
        return kern_expf(mul_rn(a, 0.11512925f)); /* sqrt(10^(A/10)) = e^(A ln10 / 20) */
    }
    default:
        return 1.0f;
    }
}

/* The antenna's field per port in the WORLD theta-hat/phi-hat basis of the
   world direction d (unit), for orientation R: f[p][0] = theta component,
   f[p][1] = phi component. Real, because the patterns are real and a
   rotation mixes the two linear components with real weights. */
KERN_HD void kern_antenna_field(const kern_antenna_t *ant, const kern_rot_t *R, kern_v3 d,
                                float f[2][2])
{
    kern_v3 dl = kern_rot_apply_t(R, d);
    float c = mul_rn(kern_pattern_amp(ant->pattern, dl), ant->scale);
    kern_v3 thw, phw, thl, phl;
    kern_sph_basis(d, &thw, &phw);
    kern_sph_basis(dl, &thl, &phl);
    kern_v3 thw_l = kern_rot_apply_t(R, thw), phw_l = kern_rot_apply_t(R, phw);
    float q00 = v3_dot(thl, thw_l), q01 = v3_dot(phl, thw_l);
    float q10 = v3_dot(thl, phw_l), q11 = v3_dot(phl, phw_l);
    for (int p = 0; p < 2; p++) {
        float a = mul_rn(c, ant->slant_cos[p]), b = mul_rn(c, ant->slant_sin[p]);
        f[p][0] = p < ant->ports ? mul_rn(q00, a) + mul_rn(q01, b) : 0.0f;
        f[p][1] = p < ant->ports ? mul_rn(q10, a) + mul_rn(q11, b) : 0.0f;
    }
}

/* Power a plane crossing delivers for the antenna field f, from its real
   symmetric form m = (m00, m01, m11) (see kern_ray_form): sum over ports of
   f^T M f. */
KERN_HD float kern_form_power(const float f[2][2], const float m[3])
{
    float s = 0.0f;
    for (int p = 0; p < 2; p++)
        s += mul_rn(mul_rn(m[0], f[p][0]), f[p][0]) +
             mul_rn(mul_rn(mul_rn(2.0f, m[1]), f[p][0]), f[p][1]) +
             mul_rn(mul_rn(m[2], f[p][1]), f[p][1]);
    return s;
}

/* ---- launch lattice and random numbers (DESIGN 6.4) -------------------- */
/* Direction n of an N-point Fibonacci lattice, fixed in world coordinates.
   The fractional part is taken in double: n reaches 1e10. The azimuth's
   sine and cosine come from kern_sincos_turn, so the direction has the
   same bits on the host and the device (the zone records store it). */
KERN_HD kern_v3 kern_fibonacci_dir(uint64_t n, uint64_t count)
{
    double x = dmul_rn((double)n, 0.61803398874989484820); /* n / golden ratio */
    x -= floor(x);
    double y = count > 1 ? (double)n / (double)(count - 1) : 0.5;
    double z = 1.0 - dmul_rn(2.0, y);
    double r2 = 1.0 - dmul_rn(z, z), r = sqrt(r2 > 0.0 ? r2 : 0.0);
    double s, c;
    kern_sincos_turn(x, &s, &c);
    return v3((float)dmul_rn(r, c), (float)dmul_rn(r, s), (float)z);
}

/* SplitMix64 finalizer. */
KERN_HD uint64_t kern_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* kern_rand with the seed's mix, kern_mix64(seed), given: a trace computes
   it once (kern_bounce_t.seed_mix) instead of once per interaction. */
KERN_HD float kern_rand_mixed(uint64_t seed_mix, uint64_t ray, uint32_t bounce)
{
    uint64_t h = kern_mix64(seed_mix ^ kern_mix64(ray * 64u + bounce));
    return mul_rn((float)(h >> 40), 1.0f / 16777216.0f);
}
/* Uniform in [0, 1) from (seed, ray, bounce) alone: counter-based, so a
   ray's events do not depend on which thread or chunk traced it. */
KERN_HD float kern_rand(uint64_t seed, uint64_t ray, uint32_t bounce)
{
    return kern_rand_mixed(kern_mix64(seed), ray, bounce);
}

/* The k-th uniform number in [0, 1) of (seed, ray, bounce); k = 0 is
   kern_rand's. The diffuse reflection draws its direction from k = 1, 2. */
KERN_HD float kern_rand_k(uint64_t seed, uint64_t ray, uint32_t bounce, uint32_t k)
{
    uint64_t h = kern_mix64(kern_mix64(seed) ^ kern_mix64(ray * 64u + bounce) ^
                            ((uint64_t)k * 0xd1b54a32d192ed03ULL));
    return mul_rn((float)(h >> 40), 1.0f / 16777216.0f);
}

/* ---- the ray and its Jones chain ---------------------------------------- */
/* The field a ray carries for a unit input along the departure direction's
   world theta-hat (column 0) or phi-hat (column 1) is
   j[0][k] * u + j[1][k] * v, with (u, v) an orthonormal basis perpendicular
   to dir: the departure theta/phi basis, then the TE/TM basis of the last
   interaction. The field for an antenna field f is J f. The 1/sqrt(p) of the
   event choices is folded into J. omega is the solid angle of the ray's
   tube: 0 for the launch lattice's (the grid's omega), 2 pi after a diffuse
   reflection (the inverse of its direction's density, as Sionna RT). */
typedef struct {
    kern_v3 org, dir, u, v;
    kern_cf j[2][2];
    uint32_t depth; /* interactions so far */
    float omega;    /* 0: the lattice's, kern_grid_t.omega */
} kern_ray_t;

/* The ray from tx along the unit direction dir with the identity Jones
   chain, but without its basis: u, v are kern_sph_basis(dir), which its
   first interaction needs and a ray that never meets anything does not
   (kern_bounce.h sets them there). */
KERN_HD void kern_ray_start(kern_ray_t *ray, kern_v3 tx, kern_v3 dir)
{
    ray->org = tx;
    ray->dir = dir;
    ray->j[0][0] = cf(1.0f, 0.0f);
    ray->j[0][1] = cf(0.0f, 0.0f);
    ray->j[1][0] = cf(0.0f, 0.0f);
    ray->j[1][1] = cf(1.0f, 0.0f);
    ray->depth = 0;
    ray->omega = 0.0f;
}

/* Ray n of the count-ray launch lattice from tx, basis included. */
KERN_HD void kern_ray_launch(kern_ray_t *ray, kern_v3 tx, uint64_t n, uint64_t count)
{
    kern_ray_start(ray, tx, kern_fibonacci_dir(n, count));
    kern_sph_basis(ray->dir, &ray->u, &ray->v);
}

/* Weight w times the real part of J^H J, as (m00, m01, m11). The power of
   the crossing for a field f is f^H (J^H J) f; for a real f (every linear
   polarization: V, H, and each port of cross) the imaginary part of the
   Hermitian J^H J is antisymmetric and cancels in f^T Im(J^H J) f, so the
   three real numbers are all an orientation needs. */
KERN_HD void kern_ray_form(const kern_ray_t *ray, float w, float m[3])
{
    const kern_cf(*j)[2] = ray->j;
    m[0] = mul_rn(w, cf_abs2(j[0][0]) + cf_abs2(j[1][0]));
    m[2] = mul_rn(w, cf_abs2(j[0][1]) + cf_abs2(j[1][1]));
    m[1] = mul_rn(w, mul_rn(j[0][0].re, j[0][1].re) + mul_rn(j[0][0].im, j[0][1].im) +
                         mul_rn(j[1][0].re, j[1][1].re) + mul_rn(j[1][0].im, j[1][1].im));
}

/* The measurement plane and its cells: cell (ix, iy) covers
   [x0 + ix dx, x0 + (ix+1) dx) x [y0 + iy dy, ...); index iy * nx + ix. */
typedef struct {
    float x0, y0, dx, dy, z, omega; /* omega = 4 pi / N, the tube solid angle */
    uint32_t nx, ny;
} kern_grid_t;

/* Does the ray's current segment, which ends at tmax (INFINITY for the last,
   unbounded one), cross the plane? Then *cell is the cell it crosses, *t
   the distance to it, and the return value is its weight Omega / |cos
   theta| (theta to the plane normal); 0 (*cell and *t untouched) when it
   does not cross inside the grid. */
KERN_HD float kern_plane_crossing_at(const kern_ray_t *ray, float tmax, const kern_grid_t *g,
                                     uint32_t *cell, float *t_out)
{
    float dz = ray->dir.z;
    if (dz == 0.0f)
        return 0.0f;
    float t = (g->z - ray->org.z) / dz;
    if (!(t > 0.0f) || !(t < tmax))
        return 0.0f;
    float fx = (ray->org.x + mul_rn(t, ray->dir.x) - g->x0) / g->dx;
    float fy = (ray->org.y + mul_rn(t, ray->dir.y) - g->y0) / g->dy;
    if (!(fx >= 0.0f) || !(fy >= 0.0f) || !(fx < (float)g->nx) || !(fy < (float)g->ny))
        return 0.0f;
    uint32_t ix = (uint32_t)fx, iy = (uint32_t)fy;
    if (ix >= g->nx || iy >= g->ny)
        return 0.0f;
    *cell = iy * g->nx + ix;
    *t_out = t;
    return (ray->omega > 0.0f ? ray->omega : g->omega) / fabsf(dz);
}
KERN_HD float kern_plane_crossing(const kern_ray_t *ray, float tmax, const kern_grid_t *g,
                                  uint32_t *cell)
{
    float t;
    return kern_plane_crossing_at(ray, tmax, g, cell, &t);
}

/* x^k for a small integer k >= 0, by repeated products. */
KERN_HD float kern_ipowf(float x, int k)
{
    float r = 1.0f;
    for (int i = 0; i < k; i++)
        r = mul_rn(r, x);
    return r;
}

/* The scattering pattern f_s of material mat (Sionna RT's, Degli-Esposti
   2007) for the incident direction ki and the scattered direction ko (unit
   vectors, world), with n the unit normal on the side of the reflection
   (ki . n < 0). Its integral over the hemisphere of ko is 1. Lambertian:
   |cos theta_o| / pi. Backscattering: lam ((1 + ks.ko)/2)^alpha_r +
   (1 - lam) ((1 - ki.ko)/2)^alpha_i, ks the specular direction, divided by
   its integral F (closed form: sums over j of the binomials of alpha with
   I_j = 2 pi/(j+1) for even j, cos theta_i K_n 2 pi/(j+1) for odd j = 2n+1,
   K_n = sum_{m<=n} C(2m,m) sin^2m theta_i / 4^m). Directive is
   backscattering with lam = 1 (kern_scene.c sets it so). */
KERN_HD float kern_scatter_pattern(const kern_mat_t *mat, kern_v3 ki, kern_v3 ko, kern_v3 n)
{
    float cos_o = v3_dot(ko, n);
    if (mat->pattern != KERN_SCAT_BACKSCATTERING)
        return mul_rn(fabsf(cos_o), (float)(1.0 / KERN_PI));
    float cos_i = kern_minf(-v3_dot(ki, n), 1.0f);
    kern_v3 ks = v3_sub(ki, v3_scale(n, mul_rn(2.0f, v3_dot(ki, n))));
    float vr = kern_ipowf(mul_rn(0.5f, 1.0f + v3_dot(ks, ko)), mat->alpha_r);
    float vi = kern_ipowf(mul_rn(0.5f, 1.0f - v3_dot(ki, ko)), mat->alpha_i);
    float w = mul_rn(mat->lam, vr) + mul_rn(1.0f - mat->lam, vi);
    float sin2 = kern_maxf(1.0f - mul_rn(cos_i, cos_i), 0.0f);
    int amax = mat->alpha_r > mat->alpha_i ? mat->alpha_r : mat->alpha_i;
    float fr = 0.0f, fi = 0.0f, kn = 0.0f, cn = 1.0f, s2n = 1.0f; /* cn = C(2n,n)/4^n */
    float br = 1.0f, bi = 1.0f;                                   /* C(alpha, j) */
    for (int j = 0; j <= amax; j++) {
        float ij;
        if (j % 2 == 0) {
            ij = (float)(2.0 * KERN_PI) / (float)(j + 1);
        } else {
            int m = (j - 1) / 2;
            if (m > 0) {
                cn = mul_rn(cn, (float)(2 * m - 1) / (float)(2 * m));
                s2n = mul_rn(s2n, sin2);
            }
            kn += mul_rn(cn, s2n);
            ij = mul_rn(mul_rn(cos_i, kn), (float)(2.0 * KERN_PI) / (float)(j + 1));
        }
        if (j > 0) { /* times (alpha - j + 1) / j; never a division by a constant
                        j, which a compiler turns into an unannotated product */
            float rj = 1.0f / (float)j;
            br = mul_rn(mul_rn(br, (float)(mat->alpha_r - j + 1)), rj);
            bi = mul_rn(mul_rn(bi, (float)(mat->alpha_i - j + 1)), rj);
        }
        if (j <= mat->alpha_r)
            fr += mul_rn(ij, br);
        if (j <= mat->alpha_i)
            fi += mul_rn(ij, bi);
    }
    fr = mul_rn(fr, kern_ipowf(0.5f, mat->alpha_r));
    fi = mul_rn(fi, kern_ipowf(0.5f, mat->alpha_i));
    float f = mul_rn(mat->lam, fr) + mul_rn(1.0f - mat->lam, fi);
    return f > 0.0f ? w / f : 0.0f;
}

/* Interaction of the ray with a surface hit at distance t, geometric normal
   n (unit, either side), material mat; u01 is the ray's random number for
   this bounce; allow_r / allow_d / allow_t enable specular reflection,
   diffuse reflection and refraction. Chooses one event with probability
   proportional to its power, as Sionna RT: with r = |R_TE|^2+|R_TM|^2,
   t = |T_TE|^2+|T_TM|^2 and the material's scattering coefficient S,
   specular r (1 - S^2), diffuse r S^2, refraction t. Specular and
   refraction apply diag(R) sqrt(1 - S^2) or diag(T) (divided by sqrt(p)) to
   the Jones chain in the TE/TM basis. Diffuse (only when allow_d and S > 0)
   draws ko uniformly on the hemisphere from u1 (its cosine) and u2 (its
   azimuth, in turns), and gives the field S sqrt(f_s omega) / sqrt(p) times
   the specularly reflected field diag(R) e, carried over from the incident
   theta-hat/phi-hat basis to the scattered one through the XPD rotation
   [sqrt(1-K_x) -sqrt(K_x); sqrt(K_x) sqrt(1-K_x)]; omega is the incident
   tube's solid angle (the ray's, or omega_grid for a lattice ray), and the
   scattered ray's becomes 2 pi. Its power is Sionna's, S^2 f_s omega
   |R e|^2 / p, for every incident field e; it stays linear in e, so the
   orientation search remains exact (docs/radio.md). The ray moves off the
   surface by the offset rule `offset` (KERN_OFFSET_*). Returns 0 when the
   ray stops (no event possible or allowed). With S = 0 every number is
   what it was before the diffuse reflection existed. */
enum { KERN_OFFSET_SIONNA = 0, KERN_OFFSET_TIGHT = 1 };

/* How far a ray leaving the surface at p restarts from it, along the normal
   to the outgoing side. KERN_OFFSET_SIONNA: Mitsuba's
   Interaction::offset_p, (1 + max|p_i|) * RayEpsilon with RayEpsilon =
   1500 * 2^-24 = 8.94e-5 (about 1.8 cm at 200 m), which Sionna RT's
   solvers use; it steps over the second face of walls modelled as two
   faces closer than that. KERN_OFFSET_TIGHT: 1e-4 + 4e-7 |p|, just above
   float rounding at city coordinates (0.2 mm at 200 m), which counts
   that second face as an interaction of its own. docs/radio.md. */
KERN_HD float kern_offset_eps(kern_v3 p, int offset)
{
    float mag = kern_maxf(fabsf(p.x), kern_maxf(fabsf(p.y), fabsf(p.z)));
    return offset == KERN_OFFSET_TIGHT ? 1e-4f + mul_rn(4e-7f, mag)
                                       : mul_rn(1.0f + mag, 1500.0f / 16777216.0f);
}

KERN_HD int kern_ray_interact_ex(kern_ray_t *ray, float t, kern_v3 n, kern_mat_t mat, float u01,
                                 float u1, float u2, int allow_r, int allow_d, int allow_t,
                                 int offset, float omega_grid)
{
    kern_v3 p = v3_add(ray->org, v3_scale(ray->dir, t));
    float dn = v3_dot(ray->dir, n);
    if (dn > 0.0f) { /* two-sided: the normal faces the incoming ray */
        n = v3_scale(n, -1.0f);
        dn = -dn;
    }
    float cos_t = kern_minf(-dn, 1.0f);
    /* The geometry of both ways out, before the coefficients and whatever
       the event: none of it depends on them, so it can run alongside
       their long chain of dependent roots, divisions and polynomials
       (kern_slab_coeffs), and the event, as good as random, then only
       selects. One normalization more per interaction, and still 0.5 %
       faster on simple_street_canyon. Each direction is the expression
       the choice used to compute, so the same bits.
       TE = normalize(d x n); at normal incidence any perpendicular does. */
    kern_v3 s = v3_cross(ray->dir, n);
    float sl = v3_len(s);
    s = sl > 1e-6f ? v3_scale(s, 1.0f / sl) : ray->u;
    kern_v3 pin = v3_cross(s, ray->dir);
    float q00 = v3_dot(ray->u, s), q01 = v3_dot(ray->v, s);
    float q10 = v3_dot(ray->u, pin), q11 = v3_dot(ray->v, pin);
    kern_v3 dref = v3_norm(v3_sub(ray->dir, v3_scale(n, mul_rn(2.0f, dn))));
    kern_v3 dtra = v3_norm(ray->dir);
    kern_v3 pref = v3_cross(s, dref);
    float eps = kern_offset_eps(p, offset);
    kern_cf c[4];
    kern_slab_coeffs(mat, cos_t, c);
    float pr = allow_r ? cf_abs2(c[0]) + cf_abs2(c[1]) : 0.0f;
    float pt = allow_t ? cf_abs2(c[2]) + cf_abs2(c[3]) : 0.0f;
    float pd = 0.0f, s2 = 0.0f;
    if (mat.s > 0.0f) {
        s2 = mul_rn(mat.s, mat.s);
        float r = cf_abs2(c[0]) + cf_abs2(c[1]);
        pr = allow_r ? mul_rn(r, 1.0f - s2) : 0.0f;
        pd = allow_d ? mul_rn(r, s2) : 0.0f;
    }
    float tot = pr + pd + pt;
    if (!(tot > 0.0f))
        return 0;
    float x = mul_rn(u01, tot);
    int refl = x < pr;
    int diff = !refl && x < pr + pd;
    float prob = (refl ? pr : (diff ? pd : pt)) / tot;
    if (!(prob > 0.0f))
        return 0;
    float sc = 1.0f / sqrtf(prob);
    if (refl && mat.s > 0.0f)
        sc = mul_rn(sc, sqrtf(1.0f - s2));
    kern_cf cte = cf_scale(refl || diff ? c[0] : c[2], sc);
    kern_cf ctm = cf_scale(refl || diff ? c[1] : c[3], sc);

    if (diff) {
        /* ko = sqrt(1 - u1^2) (cos phi s + sin phi (n x s)) + u1 n, phi = 2 pi u2 */
        double sp, cp;
        kern_sincos_turn((double)u2, &sp, &cp);
        float rr = sqrtf(kern_maxf(1.0f - mul_rn(u1, u1), 0.0f));
        kern_v3 b2 = v3_cross(n, s);
        kern_v3 ko = v3_norm(
            v3_add(v3_add(v3_scale(s, mul_rn(rr, (float)cp)), v3_scale(b2, mul_rn(rr, (float)sp))),
                   v3_scale(n, u1)));
        float om = ray->omega > 0.0f ? ray->omega : omega_grid;
        float a = mul_rn(mat.s, sqrtf(mul_rn(kern_scatter_pattern(&mat, ray->dir, ko, n), om)));
        float xa = sqrtf(kern_maxf(1.0f - mat.kx, 0.0f)), xb = sqrtf(kern_maxf(mat.kx, 0.0f));
        kern_v3 thi, phi, tho, pho;
        kern_sph_basis(ray->dir, &thi, &phi);
        kern_sph_basis(ko, &tho, &pho);
        /* (s, pin) -> (theta_i, phi_i), then XPD, times a */
        float w00 = v3_dot(thi, s), w01 = v3_dot(thi, pin);
        float w10 = v3_dot(phi, s), w11 = v3_dot(phi, pin);
        float m00 = mul_rn(a, mul_rn(xa, w00) - mul_rn(xb, w10));
        float m01 = mul_rn(a, mul_rn(xa, w01) - mul_rn(xb, w11));
        float m10 = mul_rn(a, mul_rn(xb, w00) + mul_rn(xa, w10));
        float m11 = mul_rn(a, mul_rn(xb, w01) + mul_rn(xa, w11));
        for (int k = 0; k < 2; k++) {
            kern_cf aa = ray->j[0][k], bb = ray->j[1][k];
            kern_cf te = cf_mul(cte, cf_add(cf_scale(aa, q00), cf_scale(bb, q01)));
            kern_cf tm = cf_mul(ctm, cf_add(cf_scale(aa, q10), cf_scale(bb, q11)));
            ray->j[0][k] = cf_add(cf_scale(te, m00), cf_scale(tm, m01));
            ray->j[1][k] = cf_add(cf_scale(te, m10), cf_scale(tm, m11));
        }
        ray->u = tho;
        ray->v = pho;
        ray->dir = ko;
        ray->omega = (float)(2.0 * KERN_PI);
    } else {
        kern_v3 dout = refl ? dref : dtra;
        kern_v3 pout = refl ? pref : pin;
        for (int k = 0; k < 2; k++) {
            kern_cf a = ray->j[0][k], b = ray->j[1][k];
            kern_cf te = cf_add(cf_scale(a, q00), cf_scale(b, q01));
            kern_cf tm = cf_add(cf_scale(a, q10), cf_scale(b, q11));
            ray->j[0][k] = cf_mul(cte, te);
            ray->j[1][k] = cf_mul(ctm, tm);
        }
        ray->u = s;
        ray->v = pout;
        ray->dir = dout;
    }
    ray->org = v3_add(p, v3_scale(n, refl || diff ? eps : -eps));
    ray->depth++;
    return 1;
}

/* Could the ray, after a specular reflection (allow_r) or a refraction
   (allow_t) at distance t on the surface of normal n, meet the plane of
   the grid g on its next segment? 0 when neither outgoing segment,
   unbounded, heads towards the plane: then kern_ray_interact_ex would give
   the ray no crossing on that segment whichever event it chose, and a ray
   whose last segment that is can skip the interaction (kern_bounce.h).
   The outgoing origins are kern_ray_interact_ex's, computed the same way,
   and the outgoing directions have its signs before their normalization,
   which cannot change a sign (it may round a tiny component to 0, which
   crosses nothing either): so a 0 here is exact, where kern_plane_crossing
   would see t <= 0 or dz = 0. (A 1 may still miss the grid: the test is
   kept to the signs, a fraction of the interaction's cost.) The diffuse
   reflection, whose direction is random, is not covered. */
KERN_HD int kern_ray_exit_may_cross(const kern_ray_t *ray, float t, kern_v3 n, int allow_r,
                                    int allow_t, int offset, const kern_grid_t *g)
{
    kern_v3 p = v3_add(ray->org, v3_scale(ray->dir, t));
    float dn = v3_dot(ray->dir, n);
    if (dn > 0.0f) {
        n = v3_scale(n, -1.0f);
        dn = -dn;
    }
    float eps = kern_offset_eps(p, offset);
    if (allow_r) {
        float dz = ray->dir.z - mul_rn(n.z, mul_rn(2.0f, dn));
        float h = g->z - (p.z + mul_rn(n.z, eps));
        if ((h > 0.0f && dz > 0.0f) || (h < 0.0f && dz < 0.0f))
            return 1;
    }
    if (allow_t) {
        float dz = ray->dir.z;
        float h = g->z - (p.z + mul_rn(n.z, -eps));
        if ((h > 0.0f && dz > 0.0f) || (h < 0.0f && dz < 0.0f))
            return 1;
    }
    return 0;
}

/* kern_ray_interact_ex without the diffuse reflection. */
KERN_HD int kern_ray_interact(kern_ray_t *ray, float t, kern_v3 n, kern_mat_t mat, float u01,
                              int allow_r, int allow_t, int offset)
{
    return kern_ray_interact_ex(ray, t, n, mat, u01, 0.0f, 0.0f, allow_r, 0, allow_t, offset, 0.0f);
}

/* Unit geometric normal of triangle (a, b, c); zero vector if degenerate. */
KERN_HD kern_v3 kern_tri_normal(kern_v3 a, kern_v3 b, kern_v3 c)
{
    return v3_norm(v3_cross(v3_sub(b, a), v3_sub(c, a)));
}

#endif
