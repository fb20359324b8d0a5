#!/usr/bin/env bash
# Runs the main job: installs the software Vulkan driver first where no GPU driver exists, then the
# calibration_study example (or the example named by the first argument, with the rest passed to it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-gpu-driver.sh
cargo run --release --example "${1:-calibration_study}" -- "${@:2}"
