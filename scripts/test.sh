#!/usr/bin/env bash
# Runs the test suite: installs the software Vulkan driver first where no GPU driver exists (and the
# font libraries the pictures need), then
# `cargo test --release` (the GPU tests run the real shaders, on lavapipe when there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-gpu-driver.sh
bash scripts/ensure-build-deps.sh
cargo test --release "$@"
