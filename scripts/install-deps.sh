#!/usr/bin/env bash
# Installs minigrad's build dependencies from Debian's packages, if any is missing, plus any
# extra packages named as arguments (e.g. dataset-fashion-mnist).
set -euo pipefail
pkgs=(cmake g++ make libopenblas-dev libopenblas-openmp-dev doctest-dev libstb-dev zlib1g-dev libjpeg62-turbo-dev libsleef-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
