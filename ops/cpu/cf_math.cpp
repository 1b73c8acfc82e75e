// The scalar forms of the cf:: math (ops/cf_math.h): libm. The vector forms the compiler calls
// from vectorised loops are in ops/cpu/isa/vecmath.inc, one set per vector level. This file does
// not include ops/cf_math.h: GCC would emit its own vector clones of a `simd` function defined here.

#include <cmath>

extern "C" {
float mg_cf_expf(float x) { return std::exp(x); }
float mg_cf_logf(float x) { return std::log(x); }
float mg_cf_tanhf(float x) { return std::tanh(x); }
float mg_cf_sqrtf(float x) { return std::sqrt(x); }
float mg_cf_powf(float x, float p) { return std::pow(x, p); }
double mg_cf_exp(double x) { return std::exp(x); }
double mg_cf_log(double x) { return std::log(x); }
double mg_cf_tanh(double x) { return std::tanh(x); }
double mg_cf_sqrt(double x) { return std::sqrt(x); }
double mg_cf_pow(double x, double p) { return std::pow(x, p); }
}
