#!/usr/bin/env bash
# Cross-build decoding check (design note, section 3): build the codec
# twice, with -C target-cpu=x86-64 (baseline SSE2) and -C target-cpu=native
# (AVX2/AVX-512/FMA where present), encode every image with each build,
# require the two encoders to write identical bytes, and decode each file
# with the *other* build on 1 and 2 threads, requiring exact pixels. The
# baseline build picks an AVX2 matmul at run time where the CPU has it, so
# its decoder also runs once with TFC_NO_AVX2=1 (the plain SSE2 path).
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
decode_check() { # ENCODER DECODER THREADS [ENV...]
  local enc="$1" dec="$2" threads="$3"; shift 3
  if env "$@" RAYON_NUM_THREADS="$threads" "target/cross-$dec/release/examples/codec_tool" \
      decode "$model" "$work/$enc" "${images[@]}" >"$work/dec.log"; then
    echo "encode $enc -> decode $dec $*, $threads thread(s): all exact"
  else
    echo "FAIL: encode $enc -> decode $dec $*, $threads thread(s):"; grep MISMATCH "$work/dec.log"; status=1
  fi
}
for threads in 1 2; do
  decode_check x86-64 native "$threads"
  decode_check native x86-64 "$threads"
done
decode_check native x86-64 2 TFC_NO_AVX2=1
exit $status
