// Configure-time probe (CMakeLists.txt): GCC 12.2, tuning for Intel's AVX-512 cores
// (-march=native on a Skylake-X ... Rocket Lake / Ice Lake server, or -march=skylake-avx512,
// icelake-server, cascadelake, tigerlake), lets its SLP vectorizer build this temporary with one
// vpbroadcastq of the 2 over both stride and padding: padding arrives as {2, 2}. minigrad's option
// structs are exactly this shape (ops/conv.h), so nn::ConvTranspose2d(4, 2, 2, {.stride = 2})
// got padding 2. Exits 0 when the copy arrives intact.
#include <cstdint>

struct Pair {
  int64_t h = 1, w = 1;
  Pair() = default;
  Pair(int64_t v) : h(v), w(v) {}  // NOLINT: implicit, as Pair2's
};
struct Opts {
  Pair stride = 1;
  Pair padding = 0;
  Pair output_padding = 0;
  Pair dilation = 1;
  int64_t groups = 1;
};

__attribute__((noinline)) int check(int, int, Pair k, Opts o) {
  return k.h == 2 && o.stride.h == 2 && o.stride.w == 2 && o.padding.h == 0 && o.padding.w == 0 &&
                 o.output_padding.h == 0 && o.dilation.h == 1 && o.dilation.w == 1 && o.groups == 1
             ? 0
             : 1;
}

int main() { return check(4, 2, 2, {.stride = 2}); }
