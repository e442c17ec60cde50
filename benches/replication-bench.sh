#!/usr/bin/env bash
# Replication lag (p50/p99 over small WAL commits), the time for ten 1 MiB rows to show on the
# replica, and catch-up throughput, between two `ltxd mount` processes on loopback
# (benches/replication_lag.py). Writes benches/results/replication.json.
#
# Usage: benches/replication-bench.sh [replication_lag.py args...]
#   e.g. --transactions 1000 --warmup 100 --catchup-mb 64 --base /tmp
#   CARGO_TARGET_DIR is honoured. REPLICATION_BENCH_OUT overrides the output file.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${REPLICATION_BENCH_OUT:-$root/benches/results/replication.json}"
mkdir -p "$(dirname "$out")"

cargo build --release --bin ltxd

exec python3 "$root/benches/replication_lag.py" \
    --ltxd "$target_dir/release/ltxd" \
    --out "$out" \
    --command "benches/replication-bench.sh $*" \
    "$@"
