#!/usr/bin/env bash
# Run on a GPU machine (the device tool), with .debs/ carried from scripts/gpu-debs.sh:
#   scripts/gpu-check.sh [all|build|test|sanitize|train|bench]
# unpacks the packages into build/gpu-root (never onto /), builds minigrad with the CUDA backend for
# Hopper (sm_90) with ninja, then runs: the whole test suite with the GPU on (each op and layer test
# body runs on both devices), compute-sanitizer's memcheck on it, the main job on the GPU, and the
# GPU benchmarks beside PyTorch. Logs go to $OUT (the device tool brings them back) or build/gpu-out.
# Every step runs even when an earlier one failed; the exit code says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${OUT:-build/gpu-out}
mkdir -p "$out"
root=$PWD/build/gpu-root
fail=0
step() {  # step NAME COMMAND...: runs it, logs to $out/NAME.txt, notes a failure
  local name=$1
  shift
  echo "== $name: $*"
  if "$@" >"$out/$name.txt" 2>&1; then echo "   ok"; else echo "   FAILED (exit $?), see $name.txt"; fail=1; fi
  tail -n 5 "$out/$name.txt"
}
if [ ! -d "$root/usr" ]; then
  mkdir -p "$root"
  for f in .debs/*.deb; do dpkg -x "$f" "$root"; done
fi
lib=$root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$lib:$lib/openblas-openmp:${LD_LIBRARY_PATH:-}"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
if [ "$what" = all ] || [ "$what" = build ]; then
  step configure cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMINIGRAD_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DOPENBLAS_ROOT="$root/usr" -DSTB_ROOT="$root/usr" -DDOCTEST_ROOT="$root/usr" \
    -DZLIB_ROOT="$root/usr" -DJPEG_ROOT="$root/usr" -DSLEEF_ROOT="$root/usr"
  step build cmake --build build/gpu
fi
if [ "$what" = all ] || [ "$what" = test ]; then
  step tests build/gpu/minigrad_tests
  step ctest ctest --test-dir build/gpu --output-on-failure
fi
if [ "$what" = all ] || [ "$what" = sanitize ]; then
  step sanitize compute-sanitizer --tool memcheck --leak-check full --error-exitcode 1 build/gpu/minigrad_tests
fi
if [ "$what" = all ] || [ "$what" = train ]; then
  step train_gpu build/gpu/fashion_mnist --device cuda --data "$root/usr/share/datasets/fashion-mnist" \
    --out build/gpu-run
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  step bench_minigrad build/gpu/bench_gpu
  step bench_torch python3 bench/gpu/torch_gpu.py
fi
exit $fail
