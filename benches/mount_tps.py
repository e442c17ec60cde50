#!/usr/bin/env python3
"""Single-row transactions per second through the ltxd FUSE mount versus a plain directory.

Usage: python3 benches/mount_tps.py --ltxd target/release/ltxd --out benches/results/mount.json
       (benches/mount-bench.sh builds the release binary and runs this; see --help)

Workload: one connection, autocommit `INSERT INTO t(v) VALUES (?)` with 100-byte random blobs;
`--warmup` transactions, then `--transactions` timed ones. Each case (journal mode x
synchronous x storage) runs on a plain directory and through `ltxd mount` (whose data.dir is on
the same storage), `--repeats` times each, plain and mount alternating; the JSON reports the
medians and the ratio mount/plain.

Storage: "disk" is a directory under --disk-dir (must not be tmpfs), "tmpfs" one under
--tmpfs-dir (must be tmpfs). The FUSE mount point itself is an empty directory next to them.

The machine may be shared: before measuring, the script waits (polling every 30 s, up to
--load-wait seconds) for the 1-minute load average to fall to --max-load, and records the load
before and after every run. Check it before trusting numbers.

Python 3.11 standard library only.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

DB_NAME = "bench.db"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (journal mode, synchronous): FULL is SQLite's default in both modes; WAL + NORMAL is what most
# WAL users run.
MODES = [("DELETE", "FULL"), ("WAL", "FULL"), ("WAL", "NORMAL")]
STORAGES = ["disk", "tmpfs"]


class Terminated(Exception):
    pass


def _on_signal(signum, _frame):
    raise Terminated(f"signal {signum}")


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def fstype(path):
    # A path mounted over twice is listed twice: the first line is the one in effect.
    return (sh("findmnt", "-n", "-o", "FSTYPE", "-T", path).splitlines() or [""])[0]


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == path:
                return True
    return False


def machine():
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": int(sh("nproc") or os.cpu_count() or 0),
        "cpu_model": model,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }


def wait_for_load(max_load, max_wait, poll=30):
    """Waits until the 1-minute load is at most max_load, or max_wait seconds passed."""
    start = time.monotonic()
    samples = [loadavg()]
    while samples[-1][0] > max_load and time.monotonic() - start < max_wait:
        print(
            f"mount_tps: load {samples[-1][0]:.2f} > {max_load}; waiting "
            f"({time.monotonic() - start:.0f}s of {max_wait}s)",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(poll)
        samples.append(loadavg())
    return {
        "waited_secs": round(time.monotonic() - start),
        "load_at_start_of_wait": samples[0],
        "load_at_end_of_wait": samples[-1],
        "below_threshold": samples[-1][0] <= max_load,
    }


def result_header(benchmark, args):
    """The fields every benchmark's JSON starts with; waits for a quiet machine first."""
    return {
        "benchmark": benchmark,
        "command": args.command or " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_wait": wait_for_load(args.max_load, args.load_wait),
    }


def write_result(path, result):
    """Writes `result` as indented JSON to `path` and prints it."""
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(result, indent=2))


def workload(path, mode, synchronous, warmup, transactions, value_size):
    """Runs the insert workload on the database at path; returns the timed run's numbers."""
    values = [os.urandom(value_size) for _ in range(warmup + transactions)]
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        got_mode = conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
        if got_mode.upper() != mode:
            raise RuntimeError(f"journal_mode={mode} gave {got_mode}")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        got_sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        insert = "INSERT INTO t(v) VALUES (?)"
        for v in values[:warmup]:
            conn.execute(insert, (v,))
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for v in values[warmup:]:
            conn.execute(insert, (v,))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        if rows != warmup + transactions:
            raise RuntimeError(f"expected {warmup + transactions} rows, found {rows}")
    finally:
        conn.close()
    return {
        "tps": transactions / elapsed,
        "secs": elapsed,
        "client_cpu_secs": cpu,
        "synchronous_readback": got_sync,
    }


def dir_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def proc_cpu_secs(pid):
    """User+system CPU seconds of a live process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Daemon:
    """An `ltxd mount` process on generated directories, always cleaned up."""

    def __init__(
        self,
        ltxd,
        root,
        http_port=20202,
        primary_url=None,
        lease=None,
        http_host="127.0.0.1",
        extra="",
        prefix=(),
        http_extra="",
        fuse_extra="",
    ):
        """A primary serving on `http_host:http_port`, or a replica of `primary_url` when it is
        given, on a static lease; or a node with the `lease:` section `lease` (indented lines).
        `extra` is more top-level YAML, `http_extra` more lines of the `http:` section; `prefix`
        goes before the command (e.g. nsenter)."""
        self.ltxd = ltxd
        self.url = f"http://{http_host}:{http_port}"
        self.prefix = list(prefix)
        self.root = root
        self.mnt = os.path.join(root, "mnt")
        self.data = os.path.join(root, "data")
        self.config = os.path.join(root, "ltxd.yml")
        self.log_path = os.path.join(root, "ltxd.stderr")
        self.proc = None
        os.makedirs(self.mnt)
        os.makedirs(self.data)
        with open(self.config, "w") as f:
            f.write(
                "fuse:\n"
                f"  dir: {self.mnt}\n"
                + fuse_extra
                + "data:\n"
                f"  dir: {self.data}\n"
                "http:\n"
                f"  addr: {http_host}:{http_port}\n"
                + http_extra
                + "lease:\n"
                + (
                    lease
                    or (
                        "  type: static\n"
                        f"  candidate: {'false' if primary_url else 'true'}\n"
                        "  hostname: bench\n"
                        f"  advertise-url: {primary_url or self.url}\n"
                        "  reconnect-delay: 50ms\n"
                    )
                )
                + extra
            )

    def start(self, timeout=30):
        self.stderr = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.prefix + [self.ltxd, "mount", "--config", self.config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ltxd mount exited with {self.proc.returncode}:\n{self.tail()}")
            if is_mounted(self.mnt):
                try:
                    os.stat(self.mnt)
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"the mount did not come up in {timeout}s:\n{self.tail()}")

    def tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout=30):
        """SIGTERM, wait for a clean exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"ltxd mount did not exit {timeout}s after SIGTERM:\n{self.tail()}")

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], check=False)
        if getattr(self, "stderr", None):
            self.stderr.close()

    def log_stats(self):
        """Records and bytes in the log (after the daemon has exited)."""
        out = subprocess.run(
            [self.ltxd, "log", "list", "--json", "--data-dir", self.data, "--db", DB_NAME],
            capture_output=True,
            text=True,
            check=False,
        )
        stats = {
            "segments_bytes": dir_bytes(os.path.join(self.data, "dbs", DB_NAME, "segments")),
            "data_dir_bytes": dir_bytes(self.data),
        }
        try:
            entries = json.loads(out.stdout)
            records = [e for e in entries if e["kind"] == "record"]
            stats["records"] = len(records)
            stats["record_bytes"] = sum(e["bytes"] for e in records)
            stats["snapshots"] = len(entries) - len(records)
        except (ValueError, KeyError, TypeError):
            stats["list_error"] = (out.stderr or out.stdout)[-500:]
        return stats


def run_plain(base, mode, sync, args):
    root = tempfile.mkdtemp(prefix="plain-", dir=base)
    try:
        r = workload(os.path.join(root, DB_NAME), mode, sync, args.warmup, args.transactions,
                     args.value_size)
        r["db_dir_bytes"] = dir_bytes(root)
        return r
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_mount(base, mode, sync, args):
    root = tempfile.mkdtemp(prefix="mount-", dir=base)
    fuse_extra = f"  busy-poll: {args.busy_poll}\n" if args.busy_poll else ""
    daemon = Daemon(args.ltxd, root, fuse_extra=fuse_extra)
    try:
        t0 = time.perf_counter()
        daemon.start()
        startup = time.perf_counter() - t0
        cpu0 = proc_cpu_secs(daemon.proc.pid)
        r = workload(os.path.join(daemon.mnt, DB_NAME), mode, sync, args.warmup,
                     args.transactions, args.value_size)
        cpu1 = proc_cpu_secs(daemon.proc.pid)
        r["mount_startup_secs"] = startup
        if cpu0 is not None and cpu1 is not None:
            # Includes the warm-up's share: an upper bound per timed transaction.
            r["daemon_cpu_secs_workload"] = cpu1 - cpu0
        t0 = time.perf_counter()
        code = daemon.stop()
        r["daemon_stop_secs"] = time.perf_counter() - t0
        r["daemon_exit_code"] = code
        if code != 0:
            raise RuntimeError(f"ltxd mount exited with {code}:\n{daemon.tail()}")
        r["log"] = daemon.log_stats()
        expected = 2 + args.warmup + args.transactions  # CREATE TABLE (+ WAL switch) + inserts
        r["log"]["expected_records_about"] = expected
        return r
    finally:
        daemon.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ltxd", required=True, help="the ltxd binary (release build)")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--transactions", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--disk-dir", default="/work/bench-tmp")
    p.add_argument("--tmpfs-dir", default="/dev/shm")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--load-wait", type=int, default=600, help="seconds to wait for the load")
    p.add_argument("--modes", default=",".join(f"{m}/{s}" for m, s in MODES),
                   help="comma-separated MODE/SYNCHRONOUS list")
    p.add_argument("--storages", default=",".join(STORAGES))
    p.add_argument("--command", default=None, help="the command line to record")
    p.add_argument("--busy-poll", default=None,
                   help="fuse.busy-poll for the mount (e.g. 1ms); off by default")
    args = p.parse_args()
    args.ltxd = os.path.abspath(args.ltxd)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    modes = [tuple(x.strip().upper().split("/")) for x in args.modes.split(",") if x.strip()]
    storages = [s.strip() for s in args.storages.split(",") if s.strip()]
    bases = {}
    storage_info = {}
    for storage in storages:
        parent = args.disk_dir if storage == "disk" else args.tmpfs_dir
        os.makedirs(parent, exist_ok=True)
        fs = fstype(parent)
        if storage == "disk" and fs == "tmpfs":
            sys.exit(f"mount_tps: --disk-dir {parent} is on tmpfs; give a directory on the disk")
        if storage == "tmpfs" and fs != "tmpfs":
            sys.exit(f"mount_tps: --tmpfs-dir {parent} is on {fs!r}, not tmpfs")
        if storage not in ("disk", "tmpfs"):
            sys.exit(f"mount_tps: unknown storage {storage!r}")
    for storage in storages:
        parent = args.disk_dir if storage == "disk" else args.tmpfs_dir
        bases[storage] = tempfile.mkdtemp(prefix="mount-tps-", dir=parent)
        storage_info[storage] = {
            "dir": parent,
            "fstype": fstype(parent),
            "findmnt": sh("findmnt", "-n", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS", "-T", parent),
        }

    doc = {
        "benchmark": "benches/mount_tps.py",
        "command": args.command or " ".join(sys.argv),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "ltxd": args.ltxd,
        "ltxd_binary_mtime_utc": datetime.datetime.fromtimestamp(
            os.stat(args.ltxd).st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": sh("git", "-C", REPO, "rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_changes_in_src": len(
            sh("git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml").splitlines()),
        "workload": {
            "statement": "INSERT INTO t(v) VALUES (?)  -- autocommit, one row per transaction",
            "table": "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
            "value_bytes": args.value_size,
            "warmup_transactions": args.warmup,
            "timed_transactions": args.transactions,
            "repeats": args.repeats,
            "order": "per repeat: plain then mount, alternating",
            "connections": 1,
            "fuse_busy_poll": args.busy_poll or "off",
        },
        "storage": storage_info,
        "uptime_before": sh("uptime"),
    }
    try:
        doc["load_wait"] = wait_for_load(args.max_load, args.load_wait)
        doc["loadavg_before"] = loadavg()
        cases = []
        for storage in storages:
            for mode, sync in modes:
                case = {"mode": mode, "storage": storage, "synchronous": sync,
                        "plain_runs": [], "mount_runs": []}
                for rep in range(args.repeats):
                    for kind, fn in (("plain", run_plain), ("mount", run_mount)):
                        before = loadavg()[0]
                        r = fn(bases[storage], mode, sync, args)
                        r["load1_before"] = before
                        r["load1_after"] = loadavg()[0]
                        case[f"{kind}_runs"].append(r)
                        print(f"mount_tps: {storage:5} {mode:6} {sync:6} {kind:5} #{rep + 1}: "
                              f"{r['tps']:8.0f} tx/s (load {before:.2f})", file=sys.stderr,
                              flush=True)
                case["plain_tps"] = round(statistics.median(r["tps"] for r in case["plain_runs"]), 1)
                case["mount_tps"] = round(statistics.median(r["tps"] for r in case["mount_runs"]), 1)
                case["ratio"] = round(case["mount_tps"] / case["plain_tps"], 3)
                for kind in ("plain", "mount"):
                    for r in case[f"{kind}_runs"]:
                        for k in ("tps", "secs", "client_cpu_secs", "mount_startup_secs",
                                  "daemon_cpu_secs_workload", "daemon_stop_secs"):
                            if k in r:
                                r[k] = round(r[k], 3 if k != "tps" else 1)
                cases.append(case)
        doc["loadavg_after"] = loadavg()
        doc["uptime_after"] = sh("uptime")
        doc["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        doc["cases"] = cases
        summary = []
        for c in cases:
            summary.append({k: c[k] for k in ("mode", "storage", "synchronous", "plain_tps",
                                              "mount_tps", "ratio")})
        doc["summary"] = summary
        goals = []
        for c in cases:
            if c["storage"] == "disk":
                goals.append({"case": f"{c['mode']}/{c['synchronous']}/disk",
                              "goal": "mount >= 0.7 x plain", "value": c["ratio"],
                              "met": c["ratio"] >= 0.7})
            else:
                goals.append({"case": f"{c['mode']}/{c['synchronous']}/tmpfs",
                              "goal": "mount >= 3000 tx/s", "value": c["mount_tps"],
                              "met": c["mount_tps"] >= 3000})
        doc["goals"] = goals
    finally:
        for base in bases.values():
            shutil.rmtree(base, ignore_errors=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"\nwrote {args.out}  (load {doc['loadavg_before']} -> {doc['loadavg_after']})")
    print(f"  {'storage':7} {'mode':6} {'sync':6} {'plain tx/s':>11} {'mount tx/s':>11} {'ratio':>6}")
    for s in doc["summary"]:
        print(f"  {s['storage']:7} {s['mode']:6} {s['synchronous']:6} {s['plain_tps']:11.0f} "
              f"{s['mount_tps']:11.0f} {s['ratio']:6.2f}")
    for g in doc["goals"]:
        print(f"  goal {g['case']}: {g['goal']}: {g['value']} {'met' if g['met'] else 'NOT met'}")


if __name__ == "__main__":
    try:
        main()
    except Terminated as e:
        sys.exit(f"mount_tps: stopped by {e}")
