#!/usr/bin/env bash
# Runs the LTX codec benchmarks (benches/ltx.rs, criterion) and writes a JSON summary of the
# throughput of each benchmark to benches/results/ltx-throughput.json.
#
# Usage: benches/ltx-throughput.sh [criterion args...]
#   default criterion args: --warm-up-time 1 --measurement-time 5
#   CARGO_TARGET_DIR is honoured (criterion's results are read from $CARGO_TARGET_DIR/criterion).
#   LTX_BENCH_OUT overrides the output file.
#
# Throughput is in logical page bytes (64 MiB of 4 KiB pages per iteration), reported in
# decimal MB/s (10^6 bytes) from criterion's mean and its 95% confidence interval. The load
# average and any running fuzzer are recorded next to the numbers: on a 2-core machine a
# background job halves them, so check "load" before trusting a run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${LTX_BENCH_OUT:-$root/benches/results/ltx-throughput.json}"
if [ "$#" -eq 0 ]; then
    set -- --warm-up-time 1 --measurement-time 5
fi
mkdir -p "$(dirname "$out")"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
fuzzers_before="$(pgrep -f fuzz | wc -l || true)"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# Only this bench's groups: stale results of removed benchmarks must not leak into the summary.
groups="encode verify_snapshot verify_incremental database_checksum crc64"
for g in $groups; do
    rm -rf "$target_dir/criterion/$g"
done

cargo bench --bench ltx -- "$@" 2>&1 | tee "$log"

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

CRITERION_DIR="$target_dir/criterion" \
BENCH_GROUPS="$groups" \
LOG="$log" \
OUT="$out" \
STARTED="$started" \
LOAD_BEFORE="$load_before" \
LOAD_AFTER="$load_after" \
FUZZERS_BEFORE="$fuzzers_before" \
BENCH_ARGS="$*" \
CPU_MODEL="$(lscpu | sed -n 's/^Model name: *//p' | head -n1)" \
CPUS="$(nproc)" \
GIT_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
RUSTC="$(rustc --version)" \
python3 - <<'EOF'
import json, os, re

crit = os.environ["CRITERION_DIR"]
results = []
for group in os.environ["BENCH_GROUPS"].split():
    gdir = os.path.join(crit, group)
    if not os.path.isdir(gdir):
        continue
    for bench in sorted(os.listdir(gdir)):
        new = os.path.join(gdir, bench, "new")
        try:
            with open(os.path.join(new, "benchmark.json")) as f:
                meta = json.load(f)
            with open(os.path.join(new, "estimates.json")) as f:
                est = json.load(f)
        except FileNotFoundError:
            continue
        nbytes = (meta.get("throughput") or {}).get("Bytes")
        if not nbytes:
            continue
        mean = est["mean"]
        mbps = lambda ns: nbytes / (ns * 1e-9) / 1e6
        results.append({
            "id": meta["full_id"],
            "bytes_per_iter": nbytes,
            "mean_ns": round(mean["point_estimate"]),
            "median_ns": round(est["median"]["point_estimate"]),
            "mb_per_s": round(mbps(mean["point_estimate"]), 1),
            # A longer time is a lower throughput: the CI bounds swap.
            "mb_per_s_ci95": [
                round(mbps(mean["confidence_interval"]["upper_bound"]), 1),
                round(mbps(mean["confidence_interval"]["lower_bound"]), 1),
            ],
        })

by_id = {r["id"]: r["mb_per_s"] for r in results}
GOAL = 1500.0
goals = []
for bench in ["verify_snapshot/v1", "verify_incremental/v1", "database_checksum/cursor"]:
    if bench in by_id:
        goals.append({
            "benchmark": bench,
            "goal_mb_per_s": GOAL,
            "mb_per_s": by_id[bench],
            "met": by_id[bench] >= GOAL,
        })

sizes = {}
with open(os.environ["LOG"], errors="replace") as f:
    for line in f:
        m = re.match(r"ltx bench: (\S+): snapshot (\d+) bytes .*incremental (\d+) bytes", line)
        if m:
            sizes[m.group(1)] = {"snapshot": int(m.group(2)), "incremental": int(m.group(3))}

summary = {
    "benchmark": "benches/ltx.rs",
    "command": "cargo bench --bench ltx -- " + os.environ["BENCH_ARGS"],
    "started_utc": os.environ["STARTED"],
    "git_commit": os.environ["GIT_COMMIT"],
    "rustc": os.environ["RUSTC"],
    "machine": {"cpu": os.environ["CPU_MODEL"], "cpus": int(os.environ["CPUS"])},
    "load_average_before": os.environ["LOAD_BEFORE"],
    "load_average_after": os.environ["LOAD_AFTER"],
    "fuzz_processes_before": int(os.environ["FUZZERS_BEFORE"] or 0),
    "workload": "16384 pages x 4096 bytes (64 MiB); even pages SQLite table-leaf records, odd pages random",
    "unit": "MB/s = 10^6 logical page bytes per second (criterion mean, 95% CI)",
    "encoded_sizes_bytes": sizes,
    "results": results,
    "goals": goals,
}
with open(os.environ["OUT"], "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")

print(f"\nwrote {os.environ['OUT']}")
for r in results:
    print(f"  {r['id']:<28} {r['mb_per_s']:>9.1f} MB/s")
for g in goals:
    print(f"  goal {g['benchmark']} >= {GOAL:.0f} MB/s: {'met' if g['met'] else 'NOT met'}")
EOF
