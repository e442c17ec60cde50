#!/usr/bin/env bash
# Continuous backup to a real S3 server (moto on loopback; benches/backup_lag.py): commit-to-bucket
# lag p50/p99, upload throughput, and restore from the bucket (MB/s, peak RSS) beside a restore
# from the local log. Writes benches/results/backup.json.
#
# Usage: benches/backup-bench.sh [backup_lag.py args...]   e.g. --transactions 300 --restore-mb 256
#   CARGO_TARGET_DIR is honoured; LTXD_BIN uses a given binary instead of building a release one.
#   BACKUP_BENCH_OUT overrides the output file. moto comes from /opt/ltxd-venv (.ci/run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${BACKUP_BENCH_OUT:-$root/benches/results/backup.json}"
mkdir -p "$(dirname "$out")"
if [[ -z ${LTXD_BIN:-} ]]; then
    cargo build --release -p ltxd --bin ltxd
    LTXD_BIN="$target_dir/release/ltxd"
fi
exec python3 "$root/benches/backup_lag.py" \
    --ltxd "$LTXD_BIN" \
    --moto "${LTXD_MOTO_VENV:-/opt/ltxd-venv}/bin/moto_server" \
    --out "$out" \
    --command "benches/backup-bench.sh $*" \
    "$@"
