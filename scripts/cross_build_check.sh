#!/usr/bin/env bash
# Cross-build decoding check (design note, section 3): build the codec
# twice, with -C target-cpu=x86-64 (baseline SSE2) and -C target-cpu=native
# (AVX2/AVX-512/FMA where present), encode every image with each build,
# require the two encoders to write identical bytes, and decode each file
# with the *other* build on 1 and 2 threads, requiring exact pixels.
#
# usage: scripts/cross_build_check.sh [MODEL] [IMAGE_DIR]
#   MODEL      RGB model file; default: a random-weight photo-preset model
#   IMAGE_DIR  default: ../shared/data/kodak (the 24 Kodak images)
# Exit status 0 only if every comparison passed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
images_dir="${2:-$root/../shared/data/kodak}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for cpu in x86-64 native; do
  RUSTFLAGS="-C target-cpu=$cpu" nice cargo build -q --release -p tfc-codec \
    --example codec_tool --example random_model --target-dir "target/cross-$cpu"
done
tool() { "target/cross-$1/release/examples/codec_tool" "${@:2}"; }

model="${1:-$work/model.safetensors}"
if [ -z "${1:-}" ]; then
  target/cross-x86-64/release/examples/random_model "$model" 3 7
fi
mapfile -t images < <(ls "$images_dir"/*.png)
echo "checking ${#images[@]} images from $images_dir with $(basename "$model")"

for cpu in x86-64 native; do
  mkdir -p "$work/$cpu"
  RAYON_NUM_THREADS=2 tool "$cpu" encode "$model" "$work/$cpu" "${images[@]}" >"$work/enc-$cpu.log"
done
for img in "${images[@]}"; do
  n="$(basename "${img%.png}")"
  cmp -s "$work/x86-64/$n.tfc" "$work/native/$n.tfc" || { echo "FAIL: encoders differ on $n"; exit 1; }
done
echo "encoders agree byte for byte"

status=0
for pair in "x86-64 native" "native x86-64"; do
  set -- $pair
  for threads in 1 2; do
    if RAYON_NUM_THREADS=$threads tool "$2" decode "$model" "$work/$1" "${images[@]}" >"$work/dec.log"; then
      echo "encode $1 -> decode $2, $threads thread(s): all exact"
    else
      echo "FAIL: encode $1 -> decode $2, $threads thread(s):"; grep MISMATCH "$work/dec.log"; status=1
    fi
  done
done
exit $status
