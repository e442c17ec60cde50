#!/usr/bin/env bash
# Failover times over repeated SIGKILLs of the primary, on etcd and on the Consul stand-in
# (benches/failover_times.py). Writes benches/results/failover.json.
#
# Usage: benches/failover-bench.sh [failover_times.py args...]   e.g. --trials 20 --ttl 2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${FAILOVER_BENCH_OUT:-$root/benches/results/failover.json}"
mkdir -p "$(dirname "$out")"
cargo build --release -p ltxd --bin ltxd
cargo build --release -p ltxd-consul-standin --bin ltxd-consul-standin
exec python3 "$root/benches/failover_times.py" \
    --ltxd "$target_dir/release/ltxd" \
    --standin "$target_dir/release/ltxd-consul-standin" \
    --out "$out" \
    --command "benches/failover-bench.sh $*" \
    "$@"
