#!/usr/bin/env bash
# Regenerates the sample grids of the README from the committed
# class-conditional Fashion-MNIST model: 10 classes x 8 samples, with and
# without guidance, with and without denoising. Same seed, same pixels.
# usage: scripts/sample_grids.sh [MODEL] [CFG]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/fmnist-cond.safetensors}
cfg=${2:-2}
tfc=target/release/tfc
cargo build -q --release -p tfc
for w in 0 "$cfg"; do
  "$tfc" sample --model "$model" -n 8 --seed 1 --cfg "$w" -f -o "docs/fmnist-cond-cfg$w.png"
  "$tfc" sample --model "$model" -n 8 --seed 1 --cfg "$w" --no-denoise -f \
    -o "docs/fmnist-cond-cfg$w-raw.png"
done
