#!/usr/bin/env bash
# Runs the durable-log benchmarks (benches/log.rs) and writes their numbers, with the machine's
# load, to benches/results/log.json.
#
# Usage: benches/log-bench.sh [section filter...]
#   sections: append, cursor, compaction, snapshot, open (default: all)
#   CARGO_TARGET_DIR is honoured. LOG_BENCH_OUT overrides the output file.
#   LOG_BENCH_DISK_DIR: a directory on the real disk for the data directories (default: the
#     system temporary directory; the bench refuses tmpfs). LOG_BENCH_TMPFS_DIR (default
#     /dev/shm). LOG_BENCH_QUICK=1: small sizes, a smoke test.
#   LOG_BENCH_FUZZ_WAIT: seconds to wait for a running fuzzer to end before measuring, polling
#     every 60 s (default 1200; 0 does not wait). The run goes ahead after the wait either way,
#     and the JSON records the fuzz processes seen.
#
# The machine may be shared (2 cores here): a fuzzer or a build halves CPU-bound numbers and
# makes fdatasync latency erratic. The load average before and after is in the JSON: check it
# before trusting a run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${LOG_BENCH_OUT:-$root/benches/results/log.json}"
fuzz_wait="${LOG_BENCH_FUZZ_WAIT:-1200}"
mkdir -p "$(dirname "$out")"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

fuzzers() { pgrep -f fuzz | grep -vx "$$" | wc -l || true; }

# Build first, so that the compiler is not what the wait or the run measures.
cargo bench --bench log --no-run

waited=0
while [ "$(fuzzers)" -gt 0 ] && [ "$waited" -lt "$fuzz_wait" ]; do
    echo "log-bench: a fuzzer is running; waiting (${waited}s of ${fuzz_wait}s)" >&2
    sleep 60
    waited=$((waited + 60))
done

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
uptime_before="$(uptime)"
fuzzers_before="$(fuzzers)"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

cargo bench --bench log -- "$@" 2>&1 | tee "$log"

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
fuzzers_after="$(fuzzers)"

LOG="$log" \
OUT="$out" \
STARTED="$started" \
LOAD_BEFORE="$load_before" \
LOAD_AFTER="$load_after" \
UPTIME_BEFORE="$uptime_before" \
FUZZERS_BEFORE="$fuzzers_before" \
FUZZERS_AFTER="$fuzzers_after" \
FUZZ_WAITED="$waited" \
BENCH_ARGS="$*" \
QUICK="${LOG_BENCH_QUICK:-0}" \
CPU_MODEL="$(lscpu | sed -n 's/^Model name: *//p' | head -n1)" \
CPUS="$(nproc)" \
KERNEL="$(uname -r)" \
GIT_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
GIT_DIRTY="$(git status --porcelain -- src Cargo.toml 2>/dev/null | wc -l)" \
RUSTC="$(rustc --version)" \
python3 - <<'EOF'
import json, os

results = None
with open(os.environ["LOG"], errors="replace") as f:
    for line in f:
        if line.startswith("LOGBENCH-JSON "):
            results = json.loads(line[len("LOGBENCH-JSON "):])
if results is None:
    raise SystemExit("log-bench: the bench printed no LOGBENCH-JSON line")

def get(*path):
    v = results
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    return v

summary = {
    "appends_per_s_disk": get("appends", "disk", "appends_per_s"),
    "raw_pwrite_fdatasync_per_s_disk": get("appends", "disk", "raw_pwrite_fdatasync_per_s"),
    "appends_per_s_tmpfs": get("appends", "tmpfs", "appends_per_s"),
    "cursor_record_after_mb_per_s": get("cursor", "record_after_mb_per_s"),
    "cursor_async_mb_per_s": get("cursor", "async_cursor_mb_per_s"),
    "compaction_mb_per_s_tmpfs": get("compaction", "tmpfs", "mb_per_s"),
    "compaction_mb_per_s_disk": get("compaction", "disk", "mb_per_s"),
    "compaction_mb_per_s_tmpfs_smaller_groups":
        get("compaction", "tmpfs_smaller_groups", "result", "mb_per_s"),
    "snapshot_uncompacted_mb_per_s_tmpfs": get("snapshot", "uncompacted_tmpfs", "mb_per_s"),
    "snapshot_uncompacted_error": get("snapshot", "uncompacted_tmpfs", "error"),
    "snapshot_compacted_mb_per_s_tmpfs": get("snapshot", "compacted_tmpfs", "mb_per_s"),
    "snapshot_uncompacted_half_log_mb_per_s_tmpfs": get("snapshot", "uncompacted_half_tmpfs", "mb_per_s"),
    "snapshot_uncompacted_half_log_mb_per_s_disk": get("snapshot", "uncompacted_half_disk", "mb_per_s"),
    "open_100k_with_index_secs_tmpfs": get("open", "tmpfs", "open_with_index_secs"),
    "open_100k_rebuild_secs_tmpfs": get("open", "tmpfs", "open_rebuild_secs"),
    "open_100k_with_index_secs_disk_warm": get("open", "disk_warm_cache", "open_with_index_secs"),
    "open_100k_rebuild_secs_disk_warm": get("open", "disk_warm_cache", "open_rebuild_secs"),
    "open_100k_with_index_secs_disk_cold": get("open", "disk_cold_cache", "open_with_index_secs"),
    "open_100k_rebuild_secs_disk_cold": get("open", "disk_cold_cache", "open_rebuild_secs"),
}

doc = {
    "benchmark": "benches/log.rs",
    "command": ("LOG_BENCH_QUICK=1 " if os.environ["QUICK"] == "1" else "")
        + "cargo bench --bench log -- " + os.environ["BENCH_ARGS"],
    "started_utc": os.environ["STARTED"],
    "git_commit": os.environ["GIT_COMMIT"],
    "uncommitted_changes_in_src": int(os.environ["GIT_DIRTY"] or 0),
    "rustc": os.environ["RUSTC"],
    "machine": {
        "cpu": os.environ["CPU_MODEL"],
        "cpus": int(os.environ["CPUS"]),
        "kernel": os.environ["KERNEL"],
    },
    "uptime_before": os.environ["UPTIME_BEFORE"].strip(),
    "load_average_before": os.environ["LOAD_BEFORE"],
    "load_average_after": os.environ["LOAD_AFTER"],
    "fuzz_processes_before": int(os.environ["FUZZERS_BEFORE"] or 0),
    "fuzz_processes_after": int(os.environ["FUZZERS_AFTER"] or 0),
    "waited_for_fuzzer_secs": int(os.environ["FUZZ_WAITED"]),
    "units": "MB/s = 10^6 LTX bytes per second; medians of the repetitions listed",
    "summary": summary,
    "results": results,
}
with open(os.environ["OUT"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

print(f"\nwrote {os.environ['OUT']}")
for k, v in summary.items():
    print(f"  {k:<40} {v}")
EOF
