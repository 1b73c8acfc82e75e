// minigrad: the scalar math behind the cf:: functions of open-conv functors (ops/open_conv.h).
//
// Each function is an extern "C" symbol of libminigrad. With GCC on x86-64 it is also declared
// `simd`: a loop the compiler vectorises (the open conv's fused kernels, inlining the user's
// functor) then calls minigrad's vector forms of it, SLEEF's u10 functions (1.0 ulp) at the
// loop's vector width (SSE2, AVX, AVX2, AVX-512; ops/cpu/isa/vecmath.inc), instead of libm once
// per element. `const`: equal arguments give equal results, so the compiler may hoist or share
// calls. Other compilers (clang) and other CPUs call the scalar forms, which use libm, as do builds
// that leave a CPU level out (-DMINIGRAD_CPU_LEVELS: that level's vector forms are not built).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && defined(__x86_64__) && \
    !defined(MINIGRAD_NO_AVX2) && !defined(MINIGRAD_NO_AVX512)
#define MG_CF_VECTOR_ABI 1
#define MG_CF_FN __attribute__((simd("notinbranch"), const, nothrow))
#else
#define MG_CF_FN __attribute__((const, nothrow))
#endif

extern "C" {
float mg_cf_expf(float) MG_CF_FN;
float mg_cf_logf(float) MG_CF_FN;
float mg_cf_tanhf(float) MG_CF_FN;
float mg_cf_sqrtf(float) MG_CF_FN;
float mg_cf_powf(float, float) MG_CF_FN;
double mg_cf_exp(double) MG_CF_FN;
double mg_cf_log(double) MG_CF_FN;
double mg_cf_tanh(double) MG_CF_FN;
double mg_cf_sqrt(double) MG_CF_FN;
double mg_cf_pow(double, double) MG_CF_FN;
}
