/*  kernels/kern_diffract.h - first-order edge diffraction (docs/radio.md,
    "Diffraction"), written once for the host and the device like
    kern_radio.h: the wedge record, the UTD transition function, the
    uniform theory of diffraction's Jones matrix of a wedge with ITU slab
    faces (Kouyoumjian and Pathak's coefficients with Luebbers' reflection
    factors, in the form Sionna RT 2.x evaluates them), the Keller cone
    sample and the change of variables from (edge position, cone angle) to
    the measurement plane. kern_bounce.h draws the samples and tests their
    visibility; kern_diffract.c finds the wedges of a scene.

    Every product is mul_rn and every elementary function kern_math.h's, so
    the CPU and the CUDA backends compute the same bits (kern_hd.h). */

#ifndef KERN_DIFFRACT_H_INCLUDED
#define KERN_DIFFRACT_H_INCLUDED

#include "kern_radio.h"

/* Mitsuba's and Sionna RT's float epsilon for geometric tests, 100 ulp(1). */
#define KERN_DIFF_EPS 1.1920929e-5f
/* Sionna RT's MIN_SEGMENT_LENGTH: a path with a shorter leg is dropped. */
#define KERN_DIFF_MIN_SEGMENT 1e-2f
/* Offset of the second visibility point off the edge, along the outward
   bisector of the faces (Sionna RT's, against leaks through the faces). */
#define KERN_DIFF_VIS_OFFSET 5e-2f

/* One wedge as the diffraction pass samples it, oriented for the
   transmitter of one trace: face 0 is lit by it (the transmitter is on the
   outer side of face 0's plane), o + l e for l in [0, length] is the edge,
   and n0 x e points from the edge into face 0. n0 and nn are the faces'
   outward unit normals (away from the wedge's inside, whose angle is at
   most pi); a free edge (a screen) has nn = -n0 and an exterior angle of
   2 pi. */
typedef struct {
    float o[3], e[3], n0[3], nn[3];
    float length, ext; /* ext: exterior angle 2 pi - inside angle [rad] */
    uint32_t tri0;     /* face 0, whose material the faces share */
    uint32_t screen;   /* 1 for a free edge */
} kern_wedge_t;

/* An edge of the scene's meshes that can diffract, found once per scene
   (kern_diffract.c): two faces sharing the edge by their vertex indices,
   as Mitsuba links a mesh's directed edges (which Sionna RT's wedges
   follow), or one face alone (a free edge). */
typedef struct {
    float a[3], b[3];      /* end points */
    float na[3], nb[3];    /* outward unit normals of faces a and b (nb = -na: free) */
    float ta[3], tb[3];    /* unit, in each face's plane, across the edge into the face */
    uint32_t tri_a, tri_b; /* tri_b == tri_a for a free edge */
    float inside;          /* inside angle [rad], 0 for a free edge */
    uint8_t free_edge, pad[3];
} kern_edge_t;

KERN_HD kern_v3 kern_v3_of(const float p[3])
{
    return v3(p[0], p[1], p[2]);
}

/* The random numbers of diffraction sample m: the stream of "bounce" 63
   of index m, which no ray's walk draws from (max_depth <= 32); k = 0
   picks the wedge, 1 the point on it, 2 the cone azimuth. */
#define KERN_DIFF_STREAM 63u

/* The wedge a sample draws: the first i with u < cdf[i] (cdf ascending,
   the last 1). */
KERN_HD uint32_t kern_diffract_pick(const float *cdf, uint32_t count, float u)
{
    uint32_t lo = 0, hi = count - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (u < cdf[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* acos x for x in [-1, 1] (clamped), as atan2(sqrt(1 - x^2), x). */
KERN_HD float kern_acosf(float x)
{
    x = kern_minf(kern_maxf(x, -1.0f), 1.0f);
    return kern_atan2f(sqrtf(kern_maxf(1.0f - mul_rn(x, x), 0.0f)), x);
}

/* -1 for x < 0, else 1 (Dr.Jit's sign, which Sionna RT's angles use). */
KERN_HD float kern_signf(float x)
{
    return x >= 0.0f ? 1.0f : -1.0f;
}

/* G(x) = F(x) / sqrt(x), F the UTD transition function
   F(x) = 2j sqrt(x) e^{jx} int_{sqrt x}^inf e^{-j t^2} dt, for x >= 0,
   through Boersma's approximation of the Fresnel integral (the
   coefficients of ITU-R P.526-15 section 2.7 and of Sionna RT). Written
   so that nothing cancels: below x = 4 the e^{jx} of the integral and of
   F multiply to 1 term by term, and from x = 4 on F needs no phase at all
   (F = 2 sqrt(2 pi) (sum d_n (4/x)^n - j sum c_n (4/x)^n)). G(0) is
   sqrt(pi/2) (1 + j), and F(x) -> 1 for large x. */
KERN_HD kern_cf kern_utd_g(float x)
{
    /* Boersma's a, b (x < 4) and c, d (x >= 4) coefficients, n = 0..11 */
    const float a[12] = {1.595769140f, -0.000001702f, -6.808568854f, -0.000576361f,
                         6.920691902f, -0.016898657f, -3.050485660f, -0.075752419f,
                         0.850663781f, -0.025639041f, -0.150230960f, 0.034404779f};
    const float b[12] = {-0.000000033f, 4.255387524f, -0.000092810f, -7.780020400f,
                         -0.009520895f, 5.075161298f, -0.138341947f, -1.363729124f,
                         -0.403349276f, 0.702222016f, -0.216195929f, 0.019547031f};
    const float c[12] = {0.000000000f, -0.024933975f, 0.000003936f,  0.005770956f,
                         0.000689892f, -0.009497136f, 0.011948809f,  -0.006748873f,
                         0.000246420f, 0.002102967f,  -0.001217930f, 0.000233939f};
    const float d[12] = {0.199471140f,  0.000000023f, -0.009351341f, 0.000023006f,
                         0.004851466f,  0.001903218f, -0.017122914f, 0.029064067f,
                         -0.027928955f, 0.016497308f, -0.005598515f, 0.000838386f};
    x = kern_maxf(x, 0.0f);
    int small = x < 4.0f;
    float arg = small ? mul_rn(x, 0.25f) : 4.0f / x;
    float p = 1.0f, sr = 0.0f, si = 0.0f;
    for (int i = 0; i < 12; i++) {
        sr += mul_rn(small ? a[i] : c[i], p);
        si += mul_rn(small ? b[i] : d[i], p);
        p = mul_rn(p, arg);
    }
    const float sqrt_pi_2 = 1.2533141f, two_sqrt_2pi = 5.0132565f;
    if (!small) { /* F / sqrt(x) */
        float rx = 1.0f / sqrtf(x);
        return cf(mul_rn(mul_rn(two_sqrt_2pi, si), rx), -mul_rn(mul_rn(two_sqrt_2pi, sr), rx));
    }
    /* Fresnel integral e^{jx} (r + j i), r = sqrt(x/4) sum a_n (x/4)^n,
       i = -sqrt(x/4) sum b_n (x/4)^n; G = sqrt(pi/2) (e^{jx} (1 + j) - 2j r - 2 i) */
    float q = sqrtf(arg);
    float r = mul_rn(sr, q), im = -mul_rn(si, q);
    float sx, cx;
    kern_sincosf(x, &sx, &cx);
    float gr = (cx - sx) - mul_rn(2.0f, im);
    float gi = (cx + sx) - mul_rn(2.0f, r);
    return cf(mul_rn(sqrt_pi_2, gr), mul_rn(sqrt_pi_2, gi));
}

/* cot(psi) F(x) with x = kL a(psi), finite at the shadow and reflection
   boundaries where cot -> infinity and F -> 0 together: there the product
   tends to sign(sin psi) n sqrt(2 pi kL) e^{j pi/4} (computed as
   cos psi (sqrt(x) / sin psi) G(x) with sqrt(x) / sin psi -> sign n
   sqrt(2 kL)). */
KERN_HD kern_cf kern_utd_cotf(float psi, float x, float n, float kl)
{
    float sp, cp;
    kern_sincosf(psi, &sp, &cp);
    x = kern_maxf(x, 0.0f);
    kern_cf g = kern_utd_g(x);
    const float eps = 3.4526698e-4f; /* sqrt(float epsilon) */
    float r;
    if (fabsf(sp) <= eps && x <= eps)
        r = mul_rn(mul_rn(n, sqrtf(kern_maxf(mul_rn(2.0f, kl), 0.0f))), sp >= 0.0f ? 1.0f : -1.0f);
    else
        r = sqrtf(x) / sp;
    return cf_scale(g, mul_rn(cp, r));
}

/* Sionna RT's a+ and a- of an angle beta for the exterior angle ext = n pi:
   2 cos^2(n pi N -/+ beta / 2), N the integer nearest (beta +/- pi) /
   (2 n pi). */
KERN_HD void kern_utd_a(float beta, float ext, float *ap, float *am)
{
    float np = rintf((beta + KERN_PIF) / mul_rn(2.0f, ext));
    float nm = rintf((beta - KERN_PIF) / mul_rn(2.0f, ext));
    float cpv = kern_cosf(mul_rn(ext, np) - mul_rn(0.5f, beta));
    float cmv = kern_cosf(mul_rn(ext, nm) - mul_rn(0.5f, beta));
    *ap = mul_rn(2.0f, mul_rn(cpv, cpv));
    *am = mul_rn(2.0f, mul_rn(cmv, cmv));
}

/* 2x2 real rotation that carries the components of a transverse field
   along (sc, k x sc) to its components along (st, k x st) (Sionna RT's
   jones_matrix_rotator). */
KERN_HD void kern_rotator(kern_v3 k, kern_v3 sc, kern_v3 st, float r[2][2])
{
    float c = v3_dot(sc, st), s = v3_dot(k, v3_cross(sc, st));
    r[0][0] = c;
    r[0][1] = s;
    r[1][0] = -s;
    r[1][1] = c;
}

/* A unit vector across k from the plane of incidence on a face of normal
   n: k x n, or a fixed axis projected across k at normal incidence. */
KERN_HD kern_v3 kern_transverse(kern_v3 k, kern_v3 n)
{
    kern_v3 b = v3_cross(k, n);
    if (v3_dot(b, b) < 1e-12f) {
        kern_v3 ref = fabsf(k.x) < 0.9f ? v3(1.0f, 0.0f, 0.0f) : v3(0.0f, 1.0f, 0.0f);
        b = v3_sub(ref, v3_scale(k, v3_dot(ref, k)));
    }
    return v3_norm(b);
}

/* out = A (complex 2x2) B (real 2x2) and out = B (real) A (complex). */
KERN_HD void kern_cm_mul_r(const kern_cf a[2][2], const float b[2][2], kern_cf out[2][2])
{
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            out[i][j] = cf_add(cf_scale(a[i][0], b[0][j]), cf_scale(a[i][1], b[1][j]));
}
KERN_HD void kern_r_mul_cm(const float b[2][2], const kern_cf a[2][2], kern_cf out[2][2])
{
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            out[i][j] = cf_add(cf_scale(a[0][j], b[i][0]), cf_scale(a[1][j], b[i][1]));
}

/* sqrt(1 - S^2): the specular share of a rough face's reflection (1 on a
   smooth one), which the UTD's reflection factors take too. */
KERN_HD float kern_specular_share(const kern_mat_t *mat)
{
    return mat->s > 0.0f ? sqrtf(kern_maxf(1.0f - mul_rn(mat->s, mat->s), 0.0f)) : 1.0f;
}

/* The reflection factor of one face for the UTD: w_out diag(R_TE, R_TM)
   w_in, R the slab's coefficients at the incidence on the face (reduced by
   sqrt(1 - S^2) on a rough face, as the specular reflection). */
KERN_HD void kern_utd_face(const kern_mat_t *mat, kern_v3 ki, kern_v3 n, kern_v3 e, kern_v3 phi_in,
                           kern_cf out[2][2])
{
    kern_v3 ksb = v3_norm(v3_sub(ki, v3_scale(n, mul_rn(2.0f, v3_dot(ki, n)))));
    kern_v3 phi_sb = v3_scale(v3_norm(v3_cross(ksb, e)), -1.0f);
    kern_v3 te = kern_transverse(ki, n);
    float win[2][2], wout[2][2];
    kern_rotator(ki, phi_in, te, win);
    kern_rotator(ksb, te, phi_sb, wout);
    kern_cf c[4];
    kern_slab_coeffs(*mat, fabsf(v3_dot(ki, n)), c);
    float red = kern_specular_share(mat);
    kern_cf d[2][2];
    d[0][0] = cf_scale(c[0], red);
    d[0][1] = cf(0.0f, 0.0f);
    d[1][0] = cf(0.0f, 0.0f);
    d[1][1] = cf_scale(c[1], red);
    kern_cf t[2][2];
    kern_cm_mul_r(d, win, t);
    kern_r_mul_cm(wout, t, out);
}

/* The diffraction coefficients (docs/radio.md): Sionna RT's combination
   (the default), or Kouyoumjian and Pathak's D_s and D_h with Luebbers'
   reflection factors for faces of finite conductivity. */
enum { KERN_UTD_SIONNA = 0, KERN_UTD_LUEBBERS = 1 };

/* The field of the wedge w diffracted from the incident direction ki
   (unit, transmitter to edge point) into ko (unit, on the Keller cone) at
   distances s' (transmitter to edge) and s (edge to observer), for the
   wavenumber k: J maps the incident field's components along the world
   theta-hat/phi-hat of ki (kern_sph_basis) to the diffracted field's along
   those of ko, spreading 1/sqrt(s s' (s + s')) included. Returns 0 (J
   unset) at grazing incidence along the edge. mat: the faces' material;
   model: KERN_UTD_*. */
KERN_HD int kern_utd_jones(const kern_wedge_t *w, const kern_mat_t *mat, kern_v3 ki, kern_v3 ko,
                           float s, float sp, float k, int model, kern_cf J[2][2])
{
    kern_v3 e = kern_v3_of(w->e), n0 = kern_v3_of(w->n0), nn = kern_v3_of(w->nn);
    float ext = w->ext, n = w->ext / KERN_PIF;
    float cb = fabsf(v3_dot(ki, e));
    float sb = sqrtf(kern_maxf(1.0f - mul_rn(cb, cb), 0.0f));
    if (!(sb > 1e-6f))
        return 0;
    kern_v3 t0 = v3_norm(v3_cross(n0, e));
    kern_v3 kip = v3_norm(v3_sub(ki, v3_scale(e, v3_dot(ki, e))));
    kern_v3 kop = v3_norm(v3_sub(ko, v3_scale(e, v3_dot(ko, e))));
    /* angles from face 0, through the outside: of the source (phi') and of
       the observer (phi) */
    float php =
        mul_rn(KERN_PIF - kern_acosf(-v3_dot(kip, t0)), -kern_signf(-v3_dot(kip, n0))) + KERN_PIF;
    float ph =
        mul_rn(KERN_PIF - kern_acosf(v3_dot(kop, t0)), -kern_signf(v3_dot(kop, n0))) + KERN_PIF;
    float l = mul_rn(mul_rn(s, sp) / (s + sp), mul_rn(sb, sb));
    float kl = mul_rn(k, l);
    float dif = ph - php, sum = ph + php;
    float a1, a2, a3, a4;
    kern_utd_a(dif, ext, &a1, &a2);
    kern_utd_a(sum, ext, &a3, &a4);
    /* -e^{-j pi/4} / (2 n sqrt(2 pi k) sin beta0) */
    float fm = 1.0f / mul_rn(mul_rn(mul_rn(2.0f, n), sqrtf(mul_rn(2.0f * KERN_PIF, k))), sb);
    kern_cf factor = cf(mul_rn(-0.70710678f, fm), mul_rn(0.70710678f, fm));
    float n2 = mul_rn(2.0f, n);
    kern_cf d1 = cf_mul(factor, kern_utd_cotf((KERN_PIF + dif) / n2, mul_rn(kl, a1), n, kl));
    kern_cf d2 = cf_mul(factor, kern_utd_cotf((KERN_PIF - dif) / n2, mul_rn(kl, a2), n, kl));
    kern_cf d3 = cf_mul(factor, kern_utd_cotf((KERN_PIF + sum) / n2, mul_rn(kl, a3), n, kl));
    kern_cf d4 = cf_mul(factor, kern_utd_cotf((KERN_PIF - sum) / n2, mul_rn(kl, a4), n, kl));

    kern_v3 phi_in = v3_norm(v3_cross(ki, e));
    kern_cf de[2][2];
    if (model == KERN_UTD_LUEBBERS) {
        /* In the edge-fixed bases (phi-hat, beta-hat): D_h = d1 + d2 +
           R0_h d4 + Rn_h d3 across the edge and D_s = d1 + d2 + R0_s d4 +
           Rn_s d3 along it, R_s the slab's R_TE and R_h its R_TM (-1 and +1
           on a perfect conductor, Kouyoumjian and Pathak's), face 0's at
           the incidence from the source, face n's at the reflection into
           the observer (Luebbers 1984). A power needs no sign convention
           between the two: the matrix is diagonal. */
        kern_cf c0[4], cn[4];
        kern_slab_coeffs(*mat, fabsf(v3_dot(ki, n0)), c0);
        kern_slab_coeffs(*mat, fabsf(v3_dot(ko, nn)), cn);
        float red = kern_specular_share(mat);
        kern_cf d12 = cf_add(d1, d2);
        kern_cf dh =
            cf_add(d12, cf_add(cf_mul(cf_scale(c0[1], red), d4), cf_mul(cf_scale(cn[1], red), d3)));
        kern_cf ds =
            cf_add(d12, cf_add(cf_mul(cf_scale(c0[0], red), d4), cf_mul(cf_scale(cn[0], red), d3)));
        de[0][0] = dh;
        de[0][1] = cf(0.0f, 0.0f);
        de[1][0] = cf(0.0f, 0.0f);
        de[1][1] = ds;
    } else {
        /* The faces' reflection factors in the shadow-boundary bases
           (Hashimoto's approach, as Sionna RT): R_0 and R_n; R_n = -I when the
           n-face is not lit (n pi > pi + phi'). */
        kern_cf r0[2][2], rn[2][2];
        kern_utd_face(mat, ki, n0, e, phi_in, r0);
        if (ext > KERN_PIF + php) {
            rn[0][0] = cf(-1.0f, 0.0f);
            rn[0][1] = cf(0.0f, 0.0f);
            rn[1][0] = cf(0.0f, 0.0f);
            rn[1][1] = cf(-1.0f, 0.0f);
        } else {
            kern_utd_face(mat, ki, nn, e, phi_in, rn);
        }
        kern_cf d14 = cf_sub(d1, d4), d23 = cf_sub(d2, d3);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++)
                de[i][j] = cf_add(cf_mul(r0[i][j], d14), cf_mul(rn[i][j], d23));
    }

    /* from the theta/phi basis of ki to the edge-fixed one, and from the
       edge-fixed one of ko to its theta/phi basis */
    kern_v3 thi, phi_i, tho, pho;
    kern_sph_basis(ki, &thi, &phi_i);
    kern_sph_basis(ko, &tho, &pho);
    kern_v3 phi_out = v3_scale(v3_norm(v3_cross(ko, e)), -1.0f);
    float win[2][2], wout[2][2];
    kern_rotator(ki, thi, phi_in, win);
    kern_rotator(ko, phi_out, tho, wout);
    kern_cf t[2][2];
    kern_cm_mul_r(de, win, t);
    kern_r_mul_cm(wout, t, J);
    float sf = 1.0f / sqrtf(mul_rn(mul_rn(s, sp), s + sp));
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            J[i][j] = cf_scale(J[i][j], sf);
    return 1;
}

/* A direction on the Keller cone of wedge w for the incident direction ki:
   the cone's half angle is the angle between ki and the edge, and u in
   [0, 1) picks its azimuth phi = u ext from face 0 through the outside.
   Returns ko (unit); ext is the measure of the azimuths sampled. */
KERN_HD kern_v3 kern_keller_dir(const kern_wedge_t *w, kern_v3 ki, float u)
{
    kern_v3 e = kern_v3_of(w->e), n0 = kern_v3_of(w->n0);
    kern_v3 t0 = v3_norm(v3_cross(n0, e));
    float ce = v3_dot(e, ki);
    kern_v3 ef = ce > 0.0f ? e : v3_scale(e, -1.0f);
    float cb = fabsf(ce);
    float sb = sqrtf(kern_maxf(1.0f - mul_rn(cb, cb), 0.0f));
    float sphi, cphi;
    kern_sincosf(mul_rn(u, w->ext), &sphi, &cphi);
    return v3_add(v3_add(v3_scale(n0, mul_rn(sphi, sb)), v3_scale(t0, mul_rn(cphi, sb))),
                  v3_scale(ef, cb));
}

/* The area on the horizontal measurement plane swept per unit edge length
   and unit cone azimuth, |ds/dphi x ds/dl|, at the diffraction point p of
   wedge w lit from src, for the diffracted direction ko reaching the
   plane after a distance tau (Sionna RT's _diffraction_integration_weight,
   in closed form). 0 where it is undefined (a source on the edge line, a
   direction parallel to the plane). */
KERN_HD float kern_diffract_jacobian(const kern_wedge_t *w, kern_v3 src, kern_v3 p, kern_v3 ko,
                                     float tau)
{
    kern_v3 o = kern_v3_of(w->o), e = kern_v3_of(w->e), n0 = kern_v3_of(w->n0);
    kern_v3 t0 = v3_norm(v3_cross(n0, e));
    float nd = ko.z; /* the plane's normal is +z */
    if (fabsf(nd) < 1e-9f)
        return 0.0f;
    kern_v3 so = v3_sub(src, o);
    float wsrc = v3_dot(so, e);
    float rho = v3_len(v3_sub(so, v3_scale(e, wsrc)));
    float ell = v3_len(v3_sub(p, o)) - wsrc;
    float nrm2 = mul_rn(rho, rho) + mul_rn(ell, ell);
    float nrm = sqrtf(nrm2);
    if (!(rho > 0.0f) || !(nrm > 0.0f))
        return 0.0f;
    float inv3 = 1.0f / mul_rn(nrm2, nrm);
    float dsin = -mul_rn(mul_rn(rho, ell), inv3), dcos = mul_rn(mul_rn(rho, rho), inv3);
    float ce = v3_dot(ko, e);
    float st = sqrtf(kern_maxf(1.0f - mul_rn(ce, ce), 0.0f));
    if (!(st > 0.0f))
        return 0.0f;
    kern_v3 radial = v3_scale(v3_sub(ko, v3_scale(e, ce)), 1.0f / st); /* cos phi t0 + sin phi n0 */
    kern_v3 dphi = v3_sub(v3_scale(n0, v3_dot(ko, t0)), v3_scale(t0, v3_dot(ko, n0)));
    kern_v3 dl = v3_add(v3_scale(radial, dsin), v3_scale(e, dcos));
    kern_v3 sphi = v3_scale(v3_sub(dphi, v3_scale(ko, dphi.z / nd)), tau);
    kern_v3 sl = v3_add(v3_sub(e, v3_scale(ko, e.z / nd)),
                        v3_scale(v3_sub(dl, v3_scale(ko, dl.z / nd)), tau));
    return v3_len(v3_cross(sphi, sl));
}

#endif
