#!/usr/bin/env bash
# Runs the test suite: installs the software Vulkan driver first where no GPU driver exists, then
# `cargo test --release` (the GPU tests run the real shaders, on lavapipe when there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-gpu-driver.sh
cargo test --release "$@"
