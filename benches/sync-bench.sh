#!/usr/bin/env bash
# Commit latency (p50/p99) and tx/s with replication.sync off, one, quorum and all, for 1 and 8
# writers, on three candidates on the Consul stand-in (loopback, HTTP), beside a plain directory
# (benches/sync_commit.py). Writes benches/results/sync.json.
#
# Usage: benches/sync-bench.sh [sync_commit.py args...]   e.g. --transactions 2000 --base /tmp
#   CARGO_TARGET_DIR is honoured. SYNC_BENCH_OUT overrides the output file.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${SYNC_BENCH_OUT:-$root/benches/results/sync.json}"
mkdir -p "$(dirname "$out")"
cargo build --release -p ltxd --bin ltxd
cargo build --release -p ltxd-consul-standin --bin ltxd-consul-standin
exec python3 "$root/benches/sync_commit.py" \
    --ltxd "$target_dir/release/ltxd" \
    --standin "$target_dir/release/ltxd-consul-standin" \
    --out "$out" \
    --command "benches/sync-bench.sh $*" \
    "$@"
