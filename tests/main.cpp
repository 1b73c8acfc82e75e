// The doctest runner. Run with MINIGRAD_CPU_ISA naming a level this CPU lacks, it checks that the
// level is refused with a clear error and exits 77 (ctest's "skipped"), since nothing can run.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "minigrad.h"

int main(int argc, char** argv) {
  if (const char* env = std::getenv("MINIGRAD_CPU_ISA"); env && *env) {
    try {
      minigrad::cpu_isa();
    } catch (const minigrad::Error& e) {
      const std::string msg = e.what();
      const bool clear = msg.find("MINIGRAD_CPU_ISA") != std::string::npos;
      std::printf("MINIGRAD_CPU_ISA=%s refused: %s\n", env, msg.c_str());
      return clear ? 77 : 1;
    }
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
