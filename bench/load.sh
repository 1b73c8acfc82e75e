#!/usr/bin/env bash
# The CIFAR epoch under one competing CPU-bound process (a shell busy loop on this machine), at 1
# and 2 threads, for minigrad and LibTorch, twice each, interleaved. Run bench/run.sh first (it
# builds both sides). Prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
sh -c 'while :; do :; done' &
busy=$!
trap 'kill $busy 2>/dev/null || true' EXIT
sleep 1
for rep in 1 2; do
  for th in 1 2; do
    build/release/bench_epoch cifar $th
    build/libtorch/torch_epoch cifar $th
  done
done
