#!/usr/bin/env bash
# Builds the example plugins (plugins/) and the test fixture plugins
# (tests/plugins/) for wasm32-wasip2. Outputs land in each workspace's target/.
set -euo pipefail
cd "$(dirname "$0")/.."

for ws in plugins tests/plugins; do
  if [ -f "$ws/Cargo.toml" ]; then
    cargo build --release --target wasm32-wasip2 --manifest-path "$ws/Cargo.toml"
  fi
done
