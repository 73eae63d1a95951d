#!/usr/bin/env bash
# The project's test command (README): every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
