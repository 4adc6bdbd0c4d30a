#!/usr/bin/env bash
# Coverage-guided fuzzing of the tfc decoder on the STABLE toolchain.
#
# cargo-fuzz needs nightly only for -Zsanitizer; the coverage
# instrumentation libFuzzer needs is reachable on stable through
# `-C passes=sancov-module` and `-C llvm-args=...`, and libfuzzer-sys
# builds libFuzzer itself with the system C++ compiler (g++ works). So:
#   fuzz/run.sh [SECONDS] [JOBS]     (default 60 s, 1 job)
# builds fuzz/target/<host>/release/decode with coverage counters, copies the
# committed seeds to fuzz/corpus/ and runs libFuzzer. Crashes land in
# fuzz/artifacts/; copy each into codec/tests/fuzz-regressions/ (any name
# ending in .bin) so that `cargo test -p tfc-codec` replays it forever.
# Without AddressSanitizer (nightly only) memory errors in unsafe code go
# unnoticed, but this crate's code is all safe Rust; panics, overflows
# (overflow-checks are on), hangs (-timeout) and huge allocations
# (-rss_limit_mb) are caught.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
jobs="${2:-1}"
export RUSTFLAGS="-C passes=sancov-module \
 -C llvm-args=-sanitizer-coverage-level=4 \
 -C llvm-args=-sanitizer-coverage-inline-8bit-counters \
 -C llvm-args=-sanitizer-coverage-pc-table \
 -C llvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -C debug-assertions -C overflow-checks"
# An explicit --target keeps RUSTFLAGS (and so the instrumentation) off
# build scripts and proc macros, which would not link without libFuzzer.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bin decode --target "$triple"
bin="target/$triple/release/decode"
mkdir -p corpus artifacts
cp -n seeds/* corpus/ 2>/dev/null || true
par=()
if [ "$jobs" -gt 1 ]; then par=(-jobs="$jobs" -workers="$jobs"); fi
"$bin" corpus -artifact_prefix=artifacts/ \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 "${par[@]}"
