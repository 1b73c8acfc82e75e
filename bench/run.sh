#!/usr/bin/env bash
# Side-by-side benchmarks in one run: minigrad against LibTorch (Debian's libtorch-dev 1.13, with
# oneDNN on and off) and against OpenBLAS sgemm. Installs LibTorch if it is missing, builds both
# sides, and prints markdown tables (paste into bench/RESULTS.md).
#   bench/run.sh [threads for the conv table, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
scripts/install-deps.sh libtorch-dev time python3
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target bench_conv bench_epoch bench_matmul >/dev/null
cmake -S bench/libtorch -B build/libtorch -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/libtorch -j "$(nproc)" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
# OpenBLAS picks its kernels from the CPU unless OPENBLAS_CORETYPE names them; both sides (minigrad
# and LibTorch's im2col path) load the same libopenblas, so they run the same kernels.
echo "OpenBLAS kernels: $(build/release/bench_matmul --core) (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
echo
echo "### conv2d forward+backward, batch 64, $T threads (median ms)"
build/release/bench_conv "$T" --raw >"$tmp/mg"
build/libtorch/torch_conv on "$T" >"$tmp/on"
build/libtorch/torch_conv off "$T" >"$tmp/off"
python3 - "$tmp" <<'PY'
import sys
d = sys.argv[1]
def load(f): return {l.split()[0]: l.split()[1:] for l in open(f"{d}/{f}") if l.strip()}
mg, on, off = load("mg"), load("on"), load("off")
names = {"lenet1": "LeNet conv1 1→6 5×5 28×28 pad 2", "lenet2": "LeNet conv2 6→16 5×5 14×14",
         "c64": "64→64 3×3 32×32 pad 1", "c128": "128→128 3×3 16×16 pad 1"}
print("| layer | minigrad ms | LibTorch oneDNN ms | LibTorch im2col ms | minigrad / oneDNN | minigrad / im2col | minigrad GFLOP/s | sgemm GFLOP/s |")
print("|---|---|---|---|---|---|---|---|")
for k, n in names.items():
    m, g, s = map(float, mg[k]); o = float(on[k][0]); f = float(off[k][0])
    print(f"| {n} | {m:.2f} | {o:.2f} | {f:.2f} | {m/o:.2f} | {m/f:.2f} | {g:.1f} | {s:.1f} |")
PY
echo
echo "### one training epoch, SGD momentum, batch 64 (best thread count of each side; peak RSS from /usr/bin/time -v)"
echo "| model | minigrad s | LibTorch s | ratio | minigrad peak RSS MB | LibTorch peak RSS MB | RSS ratio |"
echo "|---|---|---|---|---|---|---|"
for model in lenet cifar; do
  best_m=""; best_t=""
  for th in 1 2; do
    /usr/bin/time -v build/release/bench_epoch $model $th >"$tmp/m$th" 2>"$tmp/mt$th"
    /usr/bin/time -v build/libtorch/torch_epoch $model $th >"$tmp/t$th" 2>"$tmp/tt$th"
  done
  python3 - "$tmp" "$model" <<'PY'
import sys, re
d, model = sys.argv[1], sys.argv[2]
def run(prefix, th):
    secs = float(re.search(r"epoch: ([0-9.]+) s", open(f"{d}/{prefix}{th}").read()).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{d}/{prefix}t{th}").read()).group(1)) / 1024
    return secs, rss, th
m = min(run("m", t) for t in (1, 2)); t = min(run("t", t) for t in (1, 2))
label = {"lenet": "LeNet-5, 10,000 28×28", "cifar": "4-conv CIFAR CNN, 5,000 32×32"}[model]
print(f"| {label} | {m[0]:.3f} ({m[2]} thr) | {t[0]:.3f} ({t[2]} thr) | {m[0]/t[0]:.2f} | {m[1]:.0f} | {t[1]:.0f} | {m[1]/t[1]:.2f} |")
PY
done
echo
echo "### matmul overhead against cblas_sgemm, $T threads"
build/release/bench_matmul "$T" | tail -n +3
