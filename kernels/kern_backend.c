/*  kernels/kern_backend.c - the backends as a set: the CUDA backend's
    getter in a build without nvcc (kern_cuda.cu defines the real one), and
    the GPUs the engine can run on, asked of the CUDA backend's table so
    that nothing outside kernels/ talks to the CUDA runtime. */

#include "kern.h"

#if !defined(BF_HAVE_CUDA)
const kern_backend_t *kern_backend_cuda(void)
{
    return NULL;
}
#endif

int kern_devices(kern_device_t *out, int max)
{
    const kern_backend_t *gpu = kern_backend_cuda();
    if (!gpu || !gpu->devices || max <= 0)
        return 0;
    return gpu->devices(out, max);
}
