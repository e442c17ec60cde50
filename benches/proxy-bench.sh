#!/usr/bin/env bash
# The proxy's added latency and throughput against the application reached directly, in the same
# run, on loopback (benches/proxy_bench.py). Writes benches/results/proxy.json.
#
# Usage: benches/proxy-bench.sh [proxy_bench.py args...]   e.g. --seconds 10 --max-load 99
#   CARGO_TARGET_DIR is honoured. PROXY_BENCH_OUT overrides the output file.
#   PROXY_BENCH_PROFILE=debug measures the dev build (dependencies optimized, ltxd's code not)
#   instead of the release build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${PROXY_BENCH_OUT:-$root/benches/results/proxy.json}"
mkdir -p "$(dirname "$out")"

profile="${PROXY_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --release --bin ltxd --example http_load
else
    cargo build --bin ltxd --example http_load
fi

exec nice -n 5 python3 "$root/benches/proxy_bench.py" \
    --ltxd "$target_dir/$profile/ltxd" \
    --tool "$target_dir/$profile/examples/http_load" \
    --out "$out" \
    --command "PROXY_BENCH_PROFILE=$profile benches/proxy-bench.sh $*" \
    "$@"
