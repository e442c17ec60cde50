#!/usr/bin/env bash
# Replication over HTTP against QUIC on lan, wan50 and wan150 links (benches/wan_replication.py).
# Writes benches/results/wan.json. Needs root, iproute2 and iptables.
#
# Usage: benches/wan-bench.sh [wan_replication.py args...]
#   e.g. --transactions 200 --databases 4 --catchup-mb 16 --profiles lan,wan50,wan150
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${WAN_BENCH_OUT:-$root/benches/results/wan.json}"
mkdir -p "$(dirname "$out")"
cargo build --release -p ltxd --bin ltxd
cargo build -p ltxd-wan --bins
exec python3 "$root/benches/wan_replication.py" \
    --ltxd "$target_dir/release/ltxd" \
    --wan "$target_dir/debug/wan" \
    --out "$out" \
    --command "benches/wan-bench.sh $*" \
    "$@"
