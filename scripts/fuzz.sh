#!/usr/bin/env bash
# libFuzzer on every loader (tests/fuzz/): scripts/fuzz.sh [SECONDS_EACH] [asan|release|both]
# Builds the harnesses with clang (build/fuzz-asan: ASan + UBSan; build/fuzz-release: -O2, no
# sanitizer), seeds each from make_fuzz_corpus, and runs each harness for SECONDS_EACH (default 30),
# as many at once as there are cores, with a 10 s timeout per input, a 512 MiB RSS limit and no
# single allocation above 160 MiB (the harnesses cap inflated data at 64 MiB and images at 2^22
# pixels; a growing buffer may double past the cap once). Any crash, hang, leak, out-of-memory,
# oversized allocation or sanitizer report fails the run; the inputs that reproduce one are left
# in build/fuzz-*/findings, the logs in build/fuzz-*/fuzz_*.log. The fuzz builds compile only the
# generic CPU kernels (-DMINIGRAD_CPU_LEVELS=generic; no loader reaches the vector ones), the ASan one
# at -O1: about 2.5 minutes on 2 cores instead of over 10.
# Debian's libjpeg-turbo, which load_image decodes JPEG with, is not instrumented: libFuzzer sees no
# coverage inside it and ASan no access it makes. JPEG_SOURCE=DIR (an unpacked libjpeg-turbo source
# tree, e.g. from `apt-get source libjpeg-turbo`, which needs a deb-src entry) builds it with the same
# compiler, coverage and sanitizer flags (C code, no SIMD) and links the harnesses against that.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
mode=${2:-asan}
scripts/install-deps.sh clang libclang-rt-dev  # the runtime (ASan, UBSan, libFuzzer) is only recommended by clang
jobs=$(nproc)
read -r -a harnesses <<< "${HARNESSES:-safetensors checkpoint idx idx_gz cifar image}"  # HARNESSES="idx image": a subset

# The seeds come from the regular build's make_fuzz_corpus.
if [ ! -x build/release/make_fuzz_corpus ]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/release -j "$jobs" --target make_fuzz_corpus
fi
rm -rf build/fuzz-seeds
build/release/make_fuzz_corpus build/fuzz-seeds

modes=("$mode")
[ "$mode" = both ] && modes=(asan release)
status=0
for m in "${modes[@]}"; do
  dir=build/fuzz-$m
  san=OFF opt="-O2 -g"
  [ "$m" = asan ] && san=ON opt="-O1 -gline-tables-only"
  echo "== fuzz build ($m)"
  jpeg=()
  if [ -n "${JPEG_SOURCE:-}" ]; then
    cflags="$opt -fsanitize=fuzzer-no-link"
    [ "$m" = asan ] && cflags="$cflags -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    rm -rf "$dir/libjpeg" "$dir/libjpeg-build"
    cmake -S "$JPEG_SOURCE" -B "$dir/libjpeg-build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$cflags" -DENABLE_SHARED=OFF -DWITH_SIMD=OFF -DWITH_TURBOJPEG=OFF >/dev/null
    cmake --build "$dir/libjpeg-build" -j "$jobs" --target jpeg-static >/dev/null
    mkdir -p "$dir/libjpeg/include" "$dir/libjpeg/lib"
    cp "$JPEG_SOURCE"/{jpeglib.h,jmorecfg.h,jerror.h} "$dir/libjpeg-build/jconfig.h" "$dir/libjpeg/include/"
    cp "$dir/libjpeg-build/libjpeg.a" "$dir/libjpeg/lib/"
    jpeg=(-DJPEG_INCLUDE_DIR="$PWD/$dir/libjpeg/include" -DJPEG_LIBRARY="$PWD/$dir/libjpeg/lib/libjpeg.a")
    echo "libjpeg-turbo from $JPEG_SOURCE, instrumented ($cflags)"
  fi
  rm -f "$dir/CMakeCache.txt"  # JPEG_* are cached: a run without JPEG_SOURCE finds Debian's again
  cmake -S . -B "$dir" "${jpeg[@]}" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$opt" \
    -DMINIGRAD_CPU_LEVELS=generic -DMINIGRAD_FUZZ=ON \
    -DMINIGRAD_SANITIZE=$san -DMINIGRAD_CUDA=OFF -DMINIGRAD_NATIVE=OFF -DMINIGRAD_BUILD_TESTS=OFF \
    -DMINIGRAD_BUILD_EXAMPLES=OFF -DMINIGRAD_BUILD_BENCH=OFF >/dev/null
  cmake --build "$dir" -j "$jobs" --target $(printf 'fuzz_%s ' "${harnesses[@]}")
  mkdir -p "$dir/findings"
  fuzz_one() {  # harness -> its log; the exit status is libFuzzer's
    local h=$1 corpus=$dir/corpus/$1
    mkdir -p "$corpus"
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$dir/fuzz_$h" -max_total_time="$secs" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb=160 \
      -artifact_prefix="$dir/findings/$h-" -print_final_stats=1 "$corpus" "build/fuzz-seeds/$h" >"$dir/fuzz_$h.log" 2>&1
  }
  pids=()
  for h in "${harnesses[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
    fuzz_one "$h" &
    pids+=("$!")
  done
  for i in "${!harnesses[@]}"; do
    h=${harnesses[$i]}
    log=$dir/fuzz_$h.log
    set +e
    wait "${pids[$i]}"
    rc=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    if [ $rc -eq 0 ]; then
      echo "fuzz_$h ($m): ${secs} s, $runs inputs, $cov, no findings"
    else
      echo "fuzz_$h ($m): FAILED (exit $rc); see $log and $dir/findings"
      tail -40 "$log"
      status=1
    fi
  done
done
exit $status
