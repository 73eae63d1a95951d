#!/usr/bin/env bash
# The project's test command (README): every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# The C interface tests (ffi/tests/c_api.rs) link the built libhydrant.so and libhydrant.a,
# which `cargo test` alone does not produce: build every artifact first.
cargo build --workspace --release
cargo test --workspace --release --no-fail-fast
