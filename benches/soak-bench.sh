#!/usr/bin/env bash
# Replication lag p99 and commit rate, quiet and while 500 hostile connections (slow headers,
# unread streams, garbage) hit the primary (benches/soak_hostile.py). Writes
# benches/results/soak.json.
#
# Usage: benches/soak-bench.sh [soak_hostile.py args...]
#   e.g. --transactions 1000 --hostile 500 --base /tmp
#   CARGO_TARGET_DIR is honoured. SOAK_BENCH_OUT overrides the output file; SOAK_BENCH_PROFILE=debug
#   uses the debug build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${SOAK_BENCH_OUT:-$root/benches/results/soak.json}"
profile="${SOAK_BENCH_PROFILE:-release}"
mkdir -p "$(dirname "$out")"

if [ "$profile" = release ]; then
    cargo build --release --bin ltxd
else
    cargo build --bin ltxd
fi

exec nice -n 5 python3 "$root/benches/soak_hostile.py" \
    --ltxd "$target_dir/$profile/ltxd" \
    --out "$out" \
    --command "benches/soak-bench.sh $*" \
    "$@"
