#!/usr/bin/env bash
# The main job: installs what it needs (build tools, OpenBLAS, doctest, stb and Debian's
# Fashion-MNIST), builds minigrad, and trains the Fashion-MNIST CNN. Extra arguments go to the
# program (e.g. --epochs 10, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh dataset-fashion-mnist
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target fashion_mnist
exec build/release/fashion_mnist --data /usr/share/datasets/fashion-mnist --out runs/fashion_mnist "$@"
