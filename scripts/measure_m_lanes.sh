#!/usr/bin/env bash
# Size against speed for sub-pixel bits m and lane counts: for each
# (m, lanes) pair, codes the given images (default: 3 Kodak images) and
# prints the coded bits per dimension, the gap to the model's NLL, and the
# encode and decode times (2 threads).
# usage: scripts/measure_m_lanes.sh MODEL [IMAGE...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="$1"; shift
if [ $# -eq 0 ]; then
  set -- ../shared/data/kodak/kodim0{1,7}.png ../shared/data/kodak/kodim23.png
fi
nice cargo build -q --release -p tfc-codec --example codec_tool
tool=target/release/examples/codec_tool
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "m lanes total_bpd gap_vs_nll fixed_bpd encode_s decode_s"
for m in ${M_VALUES:-2 3 4 5 6}; do
  for lanes in ${LANE_VALUES:-1 2 4}; do
    g="$(RAYON_NUM_THREADS=2 $tool gap "$model" --m "$m" --lanes "$lanes" "$@" | tail -1)"
    enc="$(RAYON_NUM_THREADS=2 $tool encode "$model" "$work" --m "$m" --lanes "$lanes" "$@" | awk '{s+=$3} END {print s}')"
    dec="$(RAYON_NUM_THREADS=2 $tool decode "$model" "$work" "$@" | awk '{s+=$3} END {print s}')"
    nll_coded="$(sed -E 's/.*coded \(payload - startup\) ([0-9.]+) bpd, gap ([-+0-9.]+%).*= ([0-9.]+) bpd/\1 \2 \3/' <<<"$g")"
    read -r coded gap fixed <<<"$nll_coded"
    total="$(awk -v a="$coded" -v b="$fixed" 'BEGIN {printf "%.4f", a + b}')"
    echo "$m $lanes $total $gap $fixed $enc $dec"
  done
done
