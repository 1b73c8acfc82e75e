#!/usr/bin/env bash
# Run here, before a GPU session: downloads into .debs/ (git-ignored) the Debian packages the GPU
# machine's image may lack (OpenBLAS with its Fortran runtime, doctest, stb, zlib and libjpeg headers, SLEEF) and the
# Fashion-MNIST data set, about 45 MB, so that the device tool can carry them (carry: [".debs"]).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .debs
cd .debs
apt-get download libopenblas0-openmp libopenblas-openmp-dev libopenblas-dev libgfortran5 libquadmath0 \
  doctest-dev libstb-dev libstb0 zlib1g-dev libjpeg62-turbo libjpeg62-turbo-dev libsleef3 libsleef-dev dataset-fashion-mnist
ls -la
