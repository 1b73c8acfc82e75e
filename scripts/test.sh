#!/usr/bin/env bash
# The whole test suite, twice: a Release build, and a build under AddressSanitizer +
# UndefinedBehaviorSanitizer (any report fails the run; CPU code only). Then every loader's libFuzzer
# harness for FUZZ_SECONDS (default 20) under ASan + UBSan, built with clang (scripts/fuzz.sh; any
# crash, hang, leak, oversized allocation or sanitizer report fails the run; FUZZ_SECONDS=0 skips it).
# Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)

echo "== release build"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure

echo "== using minigrad from another CMake project (add_subdirectory and find_package)"
rm -rf build/install build/consumer-sub build/consumer-pkg
cmake --install build/release --prefix build/install >/dev/null
# from the source tree with the generic kernels alone (-DMINIGRAD_CPU_LEVELS, as the fuzz builds):
# the program must run the generic level, the open conv's kernels compiled in it included
cmake -S tests/consumer -B build/consumer-sub -DMINIGRAD_SOURCE_DIR="$PWD" -DMINIGRAD_CPU_LEVELS=generic \
  -DEXPECT_CPU_ISA=generic -DMINIGRAD_CUDA=OFF -DMINIGRAD_BUILD_TESTS=OFF -DMINIGRAD_BUILD_EXAMPLES=OFF \
  -DMINIGRAD_BUILD_BENCH=OFF >/dev/null
cmake --build build/consumer-sub -j "$jobs" >/dev/null
build/consumer-sub/consumer
cmake -S tests/consumer -B build/consumer-pkg -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
cmake --build build/consumer-pkg -j "$jobs" >/dev/null
build/consumer-pkg/consumer

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DMINIGRAD_SANITIZE=ON -DMINIGRAD_CUDA=OFF -DMINIGRAD_BUILD_BENCH=OFF >/dev/null
cmake --build build/asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure

fuzz=${FUZZ_SECONDS:-20}
if [ "$fuzz" != 0 ]; then
  echo "== libFuzzer, ${fuzz} s a loader"
  scripts/fuzz.sh "$fuzz" asan
fi
