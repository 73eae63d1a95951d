#!/usr/bin/env bash
# NVRTC 13.0 and the CUDA headers for the kernel compile test (kernels/tests/nvrtc.rs): PyPI wheels,
# installed once under target/cuda-wheels/ (where the test looks for them); no GPU or CUDA toolkit needed.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=target/cuda-wheels
install_wheel() { # folder requirement
  [[ -f "$wheels/$1/.installed" ]] && return
  rm -rf "${wheels:?}/$1"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$wheels/$1" "$2"
  touch "$wheels/$1/.installed"
}
install_wheel nvrtc 'nvidia-cuda-nvrtc==13.0.*'
install_wheel runtime 'nvidia-cuda-runtime==13.0.*'
