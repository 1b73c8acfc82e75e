#!/usr/bin/env bash
# Side-by-side benchmarks in one run: minigrad at every CPU ISA level this CPU has (forced with
# MINIGRAD_CPU_ISA) against LibTorch (Debian's libtorch-dev 1.13, with oneDNN on and off), against
# OpenBLAS sgemm on the same GEMMs and against the measured FMA peak of each level; the epoch
# benchmarks at every level and from a portable (-DMINIGRAD_NATIVE=OFF) build. Installs LibTorch if
# it is missing, builds both sides, and prints markdown tables (paste into bench/RESULTS.md).
# On an AVX-512 CPU the avx2 rows run both sides as on an AVX2-only CPU (see level_env).
#   [REPS=3] bench/run.sh [threads for the conv table, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
scripts/install-deps.sh libtorch-dev time python3
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMINIGRAD_BUILD_BENCH=ON >/dev/null
cmake --build build/release -j "$(nproc)" --target bench_conv bench_epoch bench_matmul >/dev/null
cmake -S . -B build/portable -DCMAKE_BUILD_TYPE=Release -DMINIGRAD_NATIVE=OFF -DMINIGRAD_CUDA=OFF \
  -DMINIGRAD_BUILD_TESTS=OFF -DMINIGRAD_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/portable -j "$(nproc)" --target bench_conv bench_epoch >/dev/null
cmake -S bench/libtorch -B build/libtorch -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/libtorch -j "$(nproc)" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
levels=$(build/release/bench_conv --levels | xargs)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "CPU ISA levels: $levels (best: ${levels##* }); vector flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512dq|avx512vl)$' | xargs)"
# OpenBLAS picks its kernels from the CPU's model unless OPENBLAS_CORETYPE names them, and gives a
# model newer than it knows its SSE3 ones; minigrad then has it choose from the vector features
# (ops/cpu/gemm.cpp). LibTorch loads the same libopenblas (its im2col path and Linear) without that
# step, so both sides run with OPENBLAS_CORETYPE set to minigrad's choice: the same kernels.
user_core=${OPENBLAS_CORETYPE:-}
core=$(env -u OPENBLAS_CORETYPE build/release/bench_matmul --core)
# OPENBLAS_VERBOSE=2: OpenBLAS prints "Core: X" when it loads, before minigrad's second choice
own=$(env -u OPENBLAS_CORETYPE OPENBLAS_VERBOSE=2 build/release/bench_matmul --core 2>&1 | sed -n 's/^Core: //p' | head -1)
echo "OpenBLAS kernels: ${user_core:-$core} (OPENBLAS_CORETYPE=${user_core:-unset}; OpenBLAS's own choice: $own, minigrad's: $core)"
export OPENBLAS_CORETYPE=${user_core:-$core}
echo
# On an AVX-512 CPU the avx2 rows stand for an AVX2-only machine: both sides run as they would
# there, LibTorch with oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA) and OpenBLAS on both sides with
# its Haswell kernels (OPENBLAS_CORETYPE), and those rows are compared with that LibTorch.
best=${levels##* }
level_env() {
  if [ "$1" = avx2 ] && [ "$best" = avx512 ]; then
    echo "OPENBLAS_CORETYPE=${user_core:-Haswell} ONEDNN_MAX_CPU_ISA=AVX2"
  fi
}
# Every conv run REPS times (default 3), the two sides in turn, each layer's fastest run kept:
# on a shared VM single runs of either side moved by up to 2x (oneDNN's more than minigrad's).
REPS=${REPS:-3}
for rep in $(seq "$REPS"); do
  for l in $levels; do
    env $(level_env "$l") MINIGRAD_CPU_ISA=$l build/release/bench_conv "$T" --raw >"$tmp/mg_$l.$rep"
  done
  MINIGRAD_CPU_ISA=$best build/portable/bench_conv "$T" --raw >"$tmp/mg_portable.$rep"
  build/libtorch/torch_conv on "$T" >"$tmp/on.$rep"
  build/libtorch/torch_conv off "$T" >"$tmp/off.$rep"
  if [ -n "$(level_env avx2)" ]; then
    env $(level_env avx2) build/libtorch/torch_conv on "$T" >"$tmp/on_avx2.$rep"
    env $(level_env avx2) build/libtorch/torch_conv off "$T" >"$tmp/off_avx2.$rep"
  fi
done
if [ -n "$(level_env avx2)" ]; then
  echo "avx2 rows: both sides as on an AVX2-only CPU ($(level_env avx2))"
  echo
fi
echo "each conv: the fastest of $REPS runs of each side, taken in turn"
echo
echo "### conv2d forward+backward, batch 64, $T threads (ms: each side's fastest of $REPS medians; peak = measured FMA GFLOP/s of the level)"
python3 - "$tmp" $levels <<'PY'
import sys
d, levels = sys.argv[1], sys.argv[2:]
import glob
def load(f):  # each layer's fastest run (lowest ms, the first field) over the repetitions
    best = {}
    for path in sorted(glob.glob(f"{d}/{f}.*")):
        for l in open(path):
            if l.strip():
                k, *r = l.split()
                if k not in best or float(r[0]) < float(best[k][0]): best[k] = r
    return best
import os
on, off = load("on"), load("off")
# the avx2 rows against LibTorch run as on an AVX2-only CPU, where run.sh made that run
sim = bool(glob.glob(f"{d}/on_avx2.*"))
on_lv = {l: (load("on_avx2"), load("off_avx2"), "AVX2") if sim and l == "avx2" else (on, off, "best") for l in levels + ["portable"]}
names = {"lenet1": "LeNet conv1 1→6 5×5 28² pad 2", "lenet2": "LeNet conv2 6→16 5×5 14²",
         "first": "3→32 3×3 32² pad 1", "c32": "32→32 3×3 32² pad 1", "c64": "64→64 3×3 32² pad 1",
         "c128": "128→128 3×3 16² pad 1", "c256": "256→256 3×3 8² pad 1", "s2": "64→128 3×3 stride 2 32²",
         "pw": "1×1 128→256 16²", "dw": "depthwise 3×3 64 ch 32²"}
peaks = {l: float(next(iter(load(f"mg_{l}").values()))[3]) for l in levels}
print("FMA peak: " + ", ".join(f"{l} {p:.0f} GFLOP/s" for l, p in peaks.items()))
print()
print("| layer | level | minigrad ms | oneDNN ms | oneDNN ISA | im2col ms | / oneDNN | / im2col | GFLOP/s | % peak | sgemm GFLOP/s | algorithm |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for k, n in names.items():
    for l in levels + ["portable"]:
        r = load(f"mg_{l}")[k]
        m, g, s, p, isa, algo = float(r[0]), float(r[1]), float(r[2]), float(r[3]), r[4], r[5]
        o, f = float(on_lv[l][0][k][0]), float(on_lv[l][1][k][0])
        lab = l if l != "portable" else f"{isa} (portable build)"
        # GEMM paths run OpenBLAS's own kernels (its choice for this CPU), whatever minigrad's level:
        # their share is of the best level's peak
        pct = f"{100*g/p:.0f}%" if algo == "direct" else f"{100*g/max(peaks.values()):.0f}% (OpenBLAS)"
        print(f"| {n} | {lab} | {m:.2f} | {o:.2f} | {on_lv[l][2]} | {f:.2f} | {m/o:.2f} | {m/f:.2f} | {g:.1f} | {pct} | {s:.1f} | {algo} |")
PY
echo
echo "### one training epoch, SGD momentum, batch 64 (best of 1 and 2 threads for each side; peak RSS from /usr/bin/time -v)"
echo "| model | minigrad build / level | minigrad s | LibTorch s | LibTorch ISA | ratio | minigrad peak RSS MB | LibTorch peak RSS MB | RSS ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for model in lenet cifar; do
  for th in 1 2; do
    /usr/bin/time -v build/libtorch/torch_epoch $model $th >"$tmp/t$th" 2>"$tmp/tt$th"
    if [ -n "$(level_env avx2)" ]; then
      env $(level_env avx2) /usr/bin/time -v build/libtorch/torch_epoch $model $th >"$tmp/a$th" 2>"$tmp/at$th"
    fi
  done
  for l in $levels portable; do
    for th in 1 2; do
      if [ "$l" = portable ]; then
        /usr/bin/time -v build/portable/bench_epoch $model $th >"$tmp/m$th" 2>"$tmp/mt$th"
      else
        env $(level_env "$l") MINIGRAD_CPU_ISA=$l /usr/bin/time -v build/release/bench_epoch $model $th >"$tmp/m$th" 2>"$tmp/mt$th"
      fi
    done
    torch=t; tisa=best
    if [ "$l" = avx2 ] && [ -n "$(level_env avx2)" ]; then torch=a; tisa=AVX2; fi
    python3 - "$tmp" "$model" "$l" "$torch" "$tisa" <<'PY'
import sys, re
d, model, level, torch, tisa = sys.argv[1:6]
def run(prefix, th):
    secs = float(re.search(r"epoch: ([0-9.]+) s", open(f"{d}/{prefix}{th}").read()).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{d}/{prefix}t{th}").read()).group(1)) / 1024
    return secs, rss, th
m = min(run("m", t) for t in (1, 2)); t = min(run(torch, t) for t in (1, 2))
label = {"lenet": "LeNet-5, 10,000 28×28", "cifar": "4-conv CIFAR CNN, 5,000 32×32"}[model]
lv = "portable, best level" if level == "portable" else f"native, {level}"
print(f"| {label} | {lv} | {m[0]:.3f} ({m[2]} thr) | {t[0]:.3f} ({t[2]} thr) | {tisa} | {m[0]/t[0]:.2f} | {m[1]:.0f} | {t[1]:.0f} | {m[1]/t[1]:.2f} |")
PY
  done
done
echo
echo "### matmul overhead against cblas_sgemm, $T threads"
build/release/bench_matmul "$T" | tail -n +3
