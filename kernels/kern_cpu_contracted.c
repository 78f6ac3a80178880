/*  kernels/kern_cpu_contracted.c - the CPU backend once more, for
    kern_contract_test alone: kern_cpu.c as it is, compiled the way nvcc
    compiles the CUDA backend's arithmetic, with fused multiply-adds allowed
    wherever the compiler likes them (kernels/CMakeLists.txt builds this file
    with -mfma -ffp-contract=fast). Its two public functions are renamed so
    that it links beside the real backend. If the shared math (kern_hd.h,
    kern_math.h, kern_radio.h, kern_traverse.h, kern_bounce.h) ever leaves a
    product that a compiler may fuse, this build traces different bits from
    the normal one, as the GPU would, and kern_contract_test fails on the
    host. */

#define kern_backend_cpu     kern_backend_cpu_contracted
#define kern_zone_data_clear kern_zone_data_clear_contracted
#include "kern_cpu.c"

/* 1 when this translation unit was compiled for a target with fused
   multiply-add instructions, i.e. when the compiler could contract. */
int kern_contract_has_fma(void);
int kern_contract_has_fma(void)
{
#if defined(__FP_FAST_FMAF) || defined(__FMA__)
    return 1;
#else
    return 0;
#endif
}

/* a * b + c as this translation unit compiles it: rounded once when the
   compiler contracts it, twice when not. */
float kern_contract_probe(float a, float b, float c);
float kern_contract_probe(float a, float b, float c)
{
    return a * b + c;
}
