#!/usr/bin/env bash
# Training epochs under competing CPU-bound processes (shell busy loops on this machine): the
# CIFAR and LeNet epochs at 1 and 2 threads, for minigrad and LibTorch, twice each, interleaved.
# Run bench/run.sh first (it builds both sides). Prints one line per run.
#   bench/load.sh [competing processes, default 1] [models, default "cifar"]
set -euo pipefail
cd "$(dirname "$0")/.."
procs=${1:-1}
models=${2:-cifar}
# LibTorch runs OpenBLAS with the kernels minigrad chose (see bench/run.sh)
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(build/release/bench_matmul --core)}
busy=()
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT
for _ in $(seq "$procs"); do
  sh -c 'while :; do :; done' &
  busy+=($!)
done
sleep 1
echo "competing busy processes: $procs; OpenBLAS kernels: $OPENBLAS_CORETYPE"
for model in $models; do
  for rep in 1 2; do
    for th in 1 2; do
      build/release/bench_epoch "$model" "$th"
      build/libtorch/torch_epoch "$model" "$th"
    done
  done
done
