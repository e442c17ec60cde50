#!/usr/bin/env bash
# Point reads per second through `ltxd mount` (primary, replica, replica under writes, 8 readers)
# versus a plain directory, in WAL and DELETE journal modes (benches/read_bench.py). Writes
# benches/results/read.json.
#
# Usage: benches/read-bench.sh [read_bench.py args...]
#   e.g. --rows 200000 --secs 3 --readers 8 --write-rate 150 --modes WAL,DELETE
#        --compare OLD_LTXD (a second build measured in the same run, cases named before:*)
#        --dir /work/bench-tmp --max-load 1.5
#   CARGO_TARGET_DIR is honoured. READ_BENCH_OUT overrides the output file.
#
# Needs /dev/fuse and the right to mount. The script waits for the 1-minute load to drop to
# --max-load (up to 10 minutes) before measuring and records the load around every case.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${READ_BENCH_OUT:-$root/benches/results/read.json}"
mkdir -p "$(dirname "$out")"

# Build first, so that the compiler is not what the load wait or the run measures.
cargo build --release --bin ltxd

exec python3 "$root/benches/read_bench.py" \
    --ltxd "$target_dir/release/ltxd" \
    --out "$out" \
    --command "benches/read-bench.sh $*" \
    "$@"
