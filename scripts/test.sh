#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: setup, the example plugins built to
# Wasm, the gateway binary, then every test of the workspace and the example plugins'
# native unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-plugins.sh
cargo build --workspace --bins
cargo test --workspace "$@"
# The example plugins' own unit tests, run natively through the SDK.
cargo test --manifest-path plugins/Cargo.toml
