/*  kernels/kern_hd.h - the small vocabulary that the CPU and CUDA backends
    share line for line: a function qualifier that means "host and device"
    under nvcc and "static inline" in C, the products that no compiler may
    fuse into a multiply-add (mul_rn, dmul_rn), and a float 3-vector with the
    few operations the tracer and the radio math need.

    Headers that include this one (kern_math.h, kern_traverse.h,
    kern_radio.h, kern_bounce.h) must stay valid C11 and valid CUDA C++ at
    the same time: no C99-only syntax that C++ lacks (compound literals,
    designated initializers in expressions), no host-only library calls
    except <math.h> functions CUDA also provides. Every floating-point
    product in them is written mul_rn(a, b) or dmul_rn(a, b), never a * b. */

#ifndef KERN_HD_H_INCLUDED
#define KERN_HD_H_INCLUDED

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define KERN_HD static inline __host__ __device__
#else
#define KERN_HD static inline
#endif

/* *p |= v, atomically among the threads of one trace (the order of the
   ORs does not matter: the result is the union). */
#if defined(__CUDACC__)
static inline __host__ __device__ void kern_atomic_or32(uint32_t *p, uint32_t v)
{
#if defined(__CUDA_ARCH__)
    atomicOr((unsigned int *)p, (unsigned int)v);
#else
    __atomic_fetch_or(p, v, __ATOMIC_RELAXED);
#endif
}
#else
static inline void kern_atomic_or32(uint32_t *p, uint32_t v)
{
    __atomic_fetch_or(p, v, __ATOMIC_RELAXED);
}
#endif

/* ---- products that are never contracted ------------------------------------
   The CPU and the GPU must trace the same ray the same way: a watertight
   triangle test needs the edge functions of two triangles sharing an edge to
   be exact negatives, and coplanar surfaces (building floors on the ground)
   decide the closest hit by rounding. nvcc contracts a * b + c into one fused
   multiply-add by default (about 190 of them in the trace kernel), the host
   build has none, and the two disagree in the last bit. So every product of
   the shared math is rounded on its own, on both sides:

   - device: __fmul_rn / __dmul_rn, which compile to mul.rn, an instruction
     that neither NVVM nor ptxas may fuse (an unannotated mul may be fused by
     ptxas even when the PTX shows none);
   - host without FMA instructions (the x86-64 baseline the project builds
     for): a plain product, nothing can fuse it;
   - host with FMA (-mfma, -march=native, aarch64), where -ffp-contract=fast
     or clang's default could fuse it: the product passes through an empty
     asm statement, which hides its value from the optimizer and so from
     contraction, at the cost of nothing but that.

   Why not -fmad=false on the CUDA translation unit? Measured on the trace
   kernel (compute_90 PTX, sm_90 registers): as it was, 1850 instructions, 189
   of them fused, 89 registers; with -fmad=false, 1960 instructions, 89
   registers, and still 76 fused multiply-adds and 3 approximate
   instructions inside CUDA's sin, exp, acosf (kern_math.h replaces those);
   written here, 1843 instructions, none fused, 92 registers (the double
   polynomials of kern_math.h). The flag is no cheaper, and it lives on a
   build line: lost by any other build of the file, silent when it is,
   and impossible to check on a host. Written in the source, the rule holds
   for any flags; kern_contract_test proves on the host that a build with
   contraction on (-mfma -ffp-contract=fast, as nvcc) traces the same bits,
   and kern_cuda_ptx_test reads the kernels' PTX. */
#if defined(__CUDA_ARCH__)
#define KERN_NOFUSE(v) ((void)0)
#elif defined(__FMA__) || defined(__FP_FAST_FMAF) || defined(__FP_FAST_FMA)
#if defined(__x86_64__) || defined(__i386__)
#define KERN_NOFUSE(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define KERN_NOFUSE(v) __asm__("" : "+w"(v))
#else
#define KERN_NOFUSE(v) __asm__("" : "+m"(v))
#endif
#else
#define KERN_NOFUSE(v) ((void)0)
#endif

/* On a host build with GCC or Clang, inline every call in the function's
   body, the helpers' calls too: kern_slab_coeffs keeps its sincos out of
   line otherwise, and a call in the middle of its chain of dependent
   operations cost 1 % of a radio map on simple_street_canyon. Inlining
   changes no bit. (nvcc inlines device functions on its own.) */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define KERN_FLATTEN __attribute__((flatten))
#else
#define KERN_FLATTEN
#endif

/* a * b rounded to float, never fused with an addition */
KERN_HD float mul_rn(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    float p = a * b;
    KERN_NOFUSE(p);
    return p;
#endif
}
/* a * b rounded to double, never fused with an addition */
KERN_HD double dmul_rn(double a, double b)
{
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    double p = a * b;
    KERN_NOFUSE(p);
    return p;
#endif
}

/* Minimum and maximum as comparisons: fminf and fmaxf are library calls on
   the host unless finite math is assumed. b is returned when a is NaN, so
   the bound goes second: kern_minf(x, 1.0f) is 1 for a NaN x, as fminf. */
KERN_HD float kern_minf(float a, float b)
{
    return a < b ? a : b;
}
KERN_HD float kern_maxf(float a, float b)
{
    return a > b ? a : b;
}

/* ---- float 3-vectors ------------------------------------------------------ */
typedef struct {
    float x, y, z;
} kern_v3;

KERN_HD kern_v3 v3(float x, float y, float z)
{
    kern_v3 r;
    r.x = x;
    r.y = y;
    r.z = z;
    return r;
}
KERN_HD kern_v3 v3_add(kern_v3 a, kern_v3 b)
{
    return v3(a.x + b.x, a.y + b.y, a.z + b.z);
}
KERN_HD kern_v3 v3_sub(kern_v3 a, kern_v3 b)
{
    return v3(a.x - b.x, a.y - b.y, a.z - b.z);
}
KERN_HD kern_v3 v3_scale(kern_v3 a, float s)
{
    return v3(mul_rn(a.x, s), mul_rn(a.y, s), mul_rn(a.z, s));
}
KERN_HD float v3_dot(kern_v3 a, kern_v3 b)
{
    return mul_rn(a.x, b.x) + mul_rn(a.y, b.y) + mul_rn(a.z, b.z);
}
KERN_HD kern_v3 v3_cross(kern_v3 a, kern_v3 b)
{
    return v3(mul_rn(a.y, b.z) - mul_rn(a.z, b.y), mul_rn(a.z, b.x) - mul_rn(a.x, b.z),
              mul_rn(a.x, b.y) - mul_rn(a.y, b.x));
}
KERN_HD float v3_len(kern_v3 a)
{
    return sqrtf(v3_dot(a, a));
}
KERN_HD kern_v3 v3_norm(kern_v3 a)
{
    float l = v3_len(a);
    return l > 0.0f ? v3_scale(a, 1.0f / l) : a;
}
KERN_HD float v3_get(kern_v3 a, int axis)
{
    return axis == 0 ? a.x : (axis == 1 ? a.y : a.z);
}

#endif
