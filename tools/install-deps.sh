#!/usr/bin/env bash
# Install the Debian 12 packages mamba-train needs to build and test, skipping what is already there.
# CUDA (nvcc, cuBLAS) is optional: when /usr/local/cuda/bin/nvcc or nvcc on PATH exists, the GPU kernels are built.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libhdf5-dev libyaml-cpp-dev libgtest-dev libfmt-dev nlohmann-json3-dev
      libcli11-dev libssl-dev zlib1g-dev libutf8proc-dev
      clang libclang-rt-14-dev libomp-dev  # the sanitizer / fuzzing build of tools/reliability.sh
      clang-format)                        # tools/format.sh --check (CI)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
