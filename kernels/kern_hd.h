/*  kernels/kern_hd.h - the small vocabulary that the CPU and CUDA backends
    share line for line: a function qualifier that means "host and device"
    under nvcc and "static inline" in C, and a float 3-vector with the few
    operations the tracer and the radio math need.

    Headers that include this one (kern_traverse.h, kern_radio.h) must stay
    valid C11 and valid CUDA C++ at the same time: no C99-only syntax that
    C++ lacks (compound literals, designated initializers in expressions),
    no host-only library calls except <math.h> functions CUDA also provides. */

#ifndef KERN_HD_H_INCLUDED
#define KERN_HD_H_INCLUDED

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define KERN_HD static inline __host__ __device__
#else
#define KERN_HD static inline
#endif

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
    return v3(a.x * s, a.y * s, a.z * s);
}
KERN_HD float v3_dot(kern_v3 a, kern_v3 b)
{
    return a.x * b.x + a.y * b.y + a.z * b.z;
}
KERN_HD kern_v3 v3_cross(kern_v3 a, kern_v3 b)
{
    return v3(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x);
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
