#!/usr/bin/env bash
# Chooses the training noise of the class-conditional Fashion-MNIST model by
# measurement: one model per sigma with the same seed, steps and schedule,
# then test BPD and the accuracy of a classifier on samples at cfg 0 and 2.
# usage: scripts/sigma_sweep.sh OUTDIR STEPS SIGMA... (single-threaded runs)
# env: TFC (binary, default target/release/tfc), THREADS (default 1)
set -euo pipefail
out=$1; steps=$2; shift 2
tfc=${TFC:-target/release/tfc}
threads=${THREADS:-1}
mkdir -p "$out"
for s in "$@"; do
  m="$out/sigma-$s.safetensors"
  if [ ! -f "$m" ]; then
    start=$(date +%s)
    if [ -f "$m.ckpt" ]; then resume=--resume; else resume=; fi
    "$tfc" -q --threads "$threads" train --preset fmnist-cond --noise "gaussian:$s" \
      --steps "$steps" --val none $resume -o "$m"
    echo "$s train_s $(( $(date +%s) - start ))" >> "$out/times.txt"
  fi
  [ -f "$out/sigma-$s.bpd.json" ] || "$tfc" -q --threads "$threads" bpd --model "$m" \
    --data fashion-mnist:test --limit 2000 --json > "$out/sigma-$s.bpd.json"
  [ -f "$out/sigma-$s.md" ] || "$tfc" -q --threads "$threads" guidance-eval --model "$m" \
    -n 50 --cfg 0,2 > "$out/sigma-$s.md"
done
echo done > "$out/done"
