/*  kernels/kern_math.h - the elementary functions of the per-ray math
    (sine, cosine, exponential, arc tangent, hypotenuse), written out so that
    the host and the device compute them bit for bit alike. glibc's sinf and
    CUDA's sinf are both accurate, but not to the same bits, and a last-bit
    difference in a launch direction or a slab coefficient is a different
    ray on the other backend. These use nothing but additions, products
    rounded on their own (dmul_rn, kern_hd.h), divisions, square roots,
    floor, conversions and comparisons: IEEE 754 rounds each of those
    correctly on both sides, so each function returns the same bits
    everywhere.

    Each works in double and rounds once at the end. The polynomials
    (Chebyshev fits with mpmath on the reduced ranges below, each a
    correction to the leading terms, so that sin 0 = 0, cos 0 = e^0 = 1
    exactly) are accurate to 5e-12 relative or better: the float results
    are within one unit in the last place and almost always the correctly
    rounded value (kern_radio_test measures 0.5000 ulp). The polynomials
    are evaluated by Estrin's scheme, whose chain of dependent operations is
    half as long as Horner's: the tracer calls these once per ray and per
    interaction, the orientation search once per zone ray and orientation. */

#ifndef KERN_MATH_H_INCLUDED
#define KERN_MATH_H_INCLUDED

#include "kern_hd.h"

#include <string.h>

/* The nearest integer to |v| < 2^51, ties to even: adding 1.5 * 2^52 leaves
   no fraction bits, subtracting it back is exact (an IEEE identity that no
   compiler may simplify without fast-math). */
KERN_HD double kern_round(double v)
{
    return (v + 6755399441055744.0) - 6755399441055744.0;
}

/* sin(r) and cos(r) for |r| <= pi/4 (a little beyond is fine), as
   r + r u S(u) and 1 + u C(u), u = r^2, S and C by Estrin's scheme:
   errors below 2e-14 and 3e-13. */
KERN_HD void kern_sincos_kernel(double r, double *s, double *c)
{
    double u = dmul_rn(r, r), u2 = dmul_rn(u, u);
    double ps = (-0.16666666666663885 + dmul_rn(0.008333333331079206, u)) +
                dmul_rn((-0.0001984126691696846 + dmul_rn(2.7555990924268847e-06, u)) +
                            dmul_rn(-2.4805635751240042e-08, u2),
                        u2);
    double pc = (-0.4999999999996389 + dmul_rn(0.041666666637395836, u)) +
                dmul_rn((-0.0013888885091376474 + dmul_rn(2.479986218327299e-05, u)) +
                            dmul_rn(-2.723713978117992e-07, u2),
                        u2);
    *s = u == 0.0 ? r : r + dmul_rn(dmul_rn(r, u), ps); /* sin(-0) = -0 */
    *c = 1.0 + dmul_rn(u, pc);
}

/* (s, c) = (sin, cos) of r + q pi/2. */
KERN_HD void kern_sincos_quadrant(double r, int q, double *s, double *c)
{
    double sr, cr;
    kern_sincos_kernel(r, &sr, &cr);
    switch (q & 3) {
    case 0:
        *s = sr;
        *c = cr;
        break;
    case 1:
        *s = cr;
        *c = -sr;
        break;
    case 2:
        *s = -sr;
        *c = -cr;
        break;
    default:
        *s = -cr;
        *c = sr;
        break;
    }
}

/* sin and cos of 2 pi x for 0 <= x < 1 (a fraction of a turn): the quadrant
   comes from x exactly, so no multiple of pi is ever subtracted. */
KERN_HD void kern_sincos_turn(double x, double *s, double *c)
{
    double y = dmul_rn(4.0, x); /* exact */
    double q = kern_round(y);
    double r = dmul_rn(y - q, 1.5707963267948966); /* y - q exact, in [-1/2, 1/2] */
    kern_sincos_quadrant(r, (int)q, s, c);
}

/* sinf and cosf of x. The reduction by multiples of pi/2 is Cody and
   Waite's with pi/2 cut into two 28-bit parts and a 53-bit tail, exact for
   |x| < 2^25 (beyond 2^24 floats are integers anyway, and the tracer's
   only large arguments are phases through metal, whose factor exp(q_im)
   has underflowed to 0 long before). Beyond 2^25 the result is still
   finite, within [-1, 1] and the same on every side, but it is the sine
   of a nearby angle, not of x. NaN and infinities give NaN. */
KERN_HD void kern_sincosf(float x, float *s, float *c)
{
    double xd = x;
    if (!(fabs(xd) <= 3.5e38)) { /* NaN or infinite (FLT_MAX is 3.4e38) */
        *s = *c = x - x;
        return;
    }
    double k = kern_round(dmul_rn(xd, 0.6366197723675814));
    double r = k == 0.0
                   ? xd /* keeps the sign of a zero */
                   : ((xd - dmul_rn(k, 1.570796325802803)) - dmul_rn(k, 9.920935808982456e-10)) -
                         dmul_rn(k, -1.2177051777973966e-18);
    if (!(fabs(r) <= 0.7854)) /* |x| >= 2^25: the products were not exact */
        r = r < 0.0 ? -0.7854 : 0.7854;
    double q = k - dmul_rn(4.0, floor(dmul_rn(k, 0.25))); /* k mod 4, exact */
    double sd, cd;
    kern_sincos_quadrant(r, (int)q, &sd, &cd);
    *s = (float)sd;
    *c = (float)cd;
}
KERN_HD float kern_cosf(float x)
{
    float s, c;
    kern_sincosf(x, &s, &c);
    return c;
}

/* 2^k for -1022 <= k <= 1023, exactly. */
KERN_HD double kern_pow2(int k)
{
    uint64_t bits = (uint64_t)(k + 1023) << 52;
#if defined(__CUDA_ARCH__)
    return __longlong_as_double((long long)bits);
#else
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
#endif
}

/* expf(x) = 2^k 2^r: x log2(e) = k + r in double (its rounding costs 1e-14
   relative at most), k the nearest integer, |r| <= 1/2 exact; 2^r = 1 +
   r F(r), F by Estrin's scheme, error below 3e-12. Results below half the
   least subnormal float are 0, above the float range infinity, NaN stays
   NaN. */
KERN_HD float kern_expf(float x)
{
    if (x != x)
        return x;
    if (x < -104.0f)
        return 0.0f;
    if (x > 89.0f)
        return INFINITY;
    double t = dmul_rn((double)x, 1.4426950408889634);
    double k = kern_round(t), r = t - k;
    double r2 = dmul_rn(r, r), r4 = dmul_rn(r2, r2);
    double f = (0.6931471805568324 + dmul_rn(0.24022650695888503, r)) +
               dmul_rn(0.055504109063259144 + dmul_rn(0.009618129135236173, r), r2) +
               dmul_rn((0.0013333478473621615 + dmul_rn(0.00015403475186486585, r)) +
                           dmul_rn(1.5303700731783077e-05 + dmul_rn(1.3250805531647423e-06, r), r2),
                       r4);
    return (float)dmul_rn(1.0 + dmul_rn(r, f), kern_pow2((int)k)); /* k in [-151, 129] */
}

/* atan(lo / hi) for 0 <= lo <= hi, 0 < hi < infinity, with one division:
   above tan(pi/8), atan t = pi/4 + atan((lo - hi) / (lo + hi)); then
   atan t = t + t u A(u), u = t^2 <= tan(pi/8)^2, A by Estrin's scheme,
   error below 2e-12. */
KERN_HD double kern_atan_ratio(double lo, double hi)
{
    int big = lo > dmul_rn(hi, 0.41421356237309503);
    double t = (big ? lo - hi : lo) / (big ? lo + hi : hi);
    double u = dmul_rn(t, t), u2 = dmul_rn(u, u), u4 = dmul_rn(u2, u2);
    double a = (-0.33333333331440707 + dmul_rn(0.19999998917276623, u)) +
               dmul_rn(-0.14285612510464937 + dmul_rn(0.1110749511007188, u), u2) +
               dmul_rn((-0.09028983181607796 + dmul_rn(0.07135323312870018, u)) +
                           dmul_rn(-0.04043221003181974, u2),
                       u4);
    return (big ? 0.7853981633974483 : 0.0) + (t + dmul_rn(dmul_rn(t, u), a));
}

/* atan2(y, x) in double for finite or infinite y, x, with C's signs of
   zero: atan2(+-0, -0) = +-pi, atan2(+-0, +0) = +-0. */
KERN_HD double kern_atan2(double y, double x)
{
    if (x != x || y != y)
        return x + y;
    double ax = fabs(x), ay = fabs(y);
    double lo = ay < ax ? ay : ax, hi = ay < ax ? ax : ay;
    double a;
    if (hi > 0.0 && hi < INFINITY)
        a = kern_atan_ratio(lo, hi);
    else /* both zero, or one infinite */
        a = hi == 0.0 ? 0.0 : (lo == hi ? 0.7853981633974483 : 0.0);
    if (ay > ax)
        a = 1.5707963267948966 - a;
    if (copysign(1.0, x) < 0.0)
        a = 3.141592653589793 - a;
    return copysign(a, y);
}
KERN_HD float kern_atan2f(float y, float x)
{
    return (float)kern_atan2(y, x);
}

/* hypotf(x, y): the squares of floats are exact in double and cannot
   overflow there, so one rounded sum and a correctly rounded root. */
KERN_HD float kern_hypotf(float x, float y)
{
    double xd = x, yd = y;
    return (float)sqrt(dmul_rn(xd, xd) + dmul_rn(yd, yd));
}

#endif
