#!/usr/bin/env bash
# Downloads CIFAR-10 (binary version) from its public mirror into data/cifar10 (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/cifar10}
mkdir -p "$out"
if [ ! -f "$out/cifar-10-batches-bin/test_batch.bin" ]; then
  curl -fSL --connect-timeout 10 --retry 2 -o "$out/cifar-10-binary.tar.gz" https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
  tar xzf "$out/cifar-10-binary.tar.gz" -C "$out"
  rm "$out/cifar-10-binary.tar.gz"
fi
echo "CIFAR-10 in $out/cifar-10-batches-bin"
