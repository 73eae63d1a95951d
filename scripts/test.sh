#!/usr/bin/env bash
# The project's test command (README): every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test_tools.sh
# The kernel compile test needs NVRTC and the CUDA headers (PyPI wheels, no GPU needed).
if [[ "${HYDRANT_SKIP_NVRTC:-0}" != 1 ]]; then
  bash scripts/cuda_wheels.sh
fi
# The C interface tests (ffi/tests/c_api.rs) link the built libhydrant.so and libhydrant.a,
# which `cargo test` alone does not produce: build every artifact first.
cargo build --workspace --release
cargo test --workspace --release --no-fail-fast
