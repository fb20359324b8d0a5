#!/usr/bin/env bash
# Runs `calibseg bench` on every wgpu back end of this machine that has an adapter (Vulkan, Metal, DX12, GL),
# writes one JSON report per back end into a folder, and prints them side by side.
#   bash scripts/bench-backends.sh [FOLDER] [bench flags, e.g. --quick]
# Copy the JSON files of several machines into one folder and run `calibseg bench --compare FOLDER/*.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
shift || true
mkdir -p "$out"
cargo build --release --locked --bin calibseg
bin=./target/release/calibseg
host=$(hostname -s 2>/dev/null || echo host)
files=()
for backend in vulkan metal dx12 gl; do
    if WGPU_BACKEND=$backend "$bin" devices 2>/dev/null | grep -q '^would use'; then
        file="$out/$host-$backend.json"
        echo "== $backend -> $file"
        WGPU_BACKEND=$backend "$bin" bench "$@" --json "$file"
        files+=("$file")
    fi
done
if [ ${#files[@]} -eq 0 ]; then
    echo "no adapter on any back end (see: $bin devices)" >&2
    exit 1
fi
"$bin" bench --compare "${files[@]}"
