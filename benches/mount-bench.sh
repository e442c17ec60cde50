#!/usr/bin/env bash
# Single-row transactions per second through `ltxd mount` versus a plain directory, in DELETE and
# WAL journal modes, with the data on the disk and on tmpfs (benches/mount_tps.py). Writes
# benches/results/mount.json.
#
# Usage: benches/mount-bench.sh [mount_tps.py args...]
#   e.g. --transactions 3000 --warmup 200 --repeats 3 --modes DELETE/FULL,WAL/FULL,WAL/NORMAL
#        --storages disk,tmpfs --disk-dir /work/bench-tmp --tmpfs-dir /dev/shm
#   CARGO_TARGET_DIR is honoured. MOUNT_BENCH_OUT overrides the output file.
#
# Needs /dev/fuse and the right to mount (root, or fusermount3 for the user). The script waits
# for the 1-minute load to drop to 1.5 (up to 10 minutes) before measuring and records the load
# before and after every run: on a 2-core machine a concurrent build halves these numbers.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${MOUNT_BENCH_OUT:-$root/benches/results/mount.json}"
mkdir -p "$(dirname "$out")"

# Build first, so that the compiler is not what the load wait or the run measures.
cargo build --release --bin ltxd

exec python3 "$root/benches/mount_tps.py" \
    --ltxd "$target_dir/release/ltxd" \
    --out "$out" \
    --command "benches/mount-bench.sh $*" \
    "$@"
