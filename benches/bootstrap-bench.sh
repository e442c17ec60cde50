#!/usr/bin/env bash
# A new replica bootstrapping a large database (default 2 GiB) over HTTP and QUIC on loopback:
# peak RSS of both daemons, catch-up MB/s beside a plain `cp` (+ fsync) of the same file, and
# the start-up time of a node with that database and 100,000 log records
# (benches/bootstrap_memory.py). Writes benches/results/bootstrap.json.
#
# Usage: benches/bootstrap-bench.sh [bootstrap_memory.py args...]
#   e.g. --size-mib 2048 --records 100000 --transports http,quic --base /tmp
#   CARGO_TARGET_DIR is honoured. BOOTSTRAP_BENCH_OUT overrides the output file.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${BOOTSTRAP_BENCH_OUT:-$root/benches/results/bootstrap.json}"
mkdir -p "$(dirname "$out")"

cargo build --release -p ltxd --bin ltxd

exec python3 "$root/benches/bootstrap_memory.py" \
    --ltxd "$target_dir/release/ltxd" \
    --out "$out" \
    --command "benches/bootstrap-bench.sh $*" \
    "$@"
