#!/usr/bin/env python3
"""Commit latency and throughput with synchronous replication off, one, quorum and all.

Usage: python3 benches/sync_commit.py --ltxd target/release/ltxd \
           --standin target/release/ltxd-consul-standin --out benches/results/sync.json
       (benches/sync-bench.sh builds the release binaries and runs this)

For each `replication.sync` mode, three candidates on the Consul stand-in (loopback, HTTP): the
first becomes primary, the other two follow it. On the primary's mount, `--writers` processes
(1, then 8), then `--threads` threads of one process (8), each with its own connection, commit
single-row INSERTs into one WAL database; every commit's latency (the `execute` of an autocommit
INSERT) is recorded, and the run's tx/s. A commit waits for the replicas in the write of its
commit frame, holding SQLite's write lock, so writers to one database take turns; the rows with
several writers show what that costs. A
plain directory on the same file system is the baseline, with the same workload, in the same
run. With three candidates, `quorum` (two of three, the primary included) needs one replica,
like `one`; `all` needs both.

The machine may be shared: the script waits for the load to drop (see mount_tps.py) and records
the load average before and after each run. Python 3.11 standard library only.
"""

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon, loadavg, result_header, write_result  # noqa: E402

DB = "sync.db"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, timeout, done):
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.05)


def info(daemon):
    try:
        with urllib.request.urlopen(daemon.url + "/info", timeout=2) as r:
            return json.load(r)
    except OSError:
        return {}


def start_standin(standin):
    port = free_port()
    proc = subprocess.Popen(
        [standin, "--addr", f"127.0.0.1:{port}", "--min-ttl", "1s", "--ttl-multiplier", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait("the stand-in listens", 20, up)
    return proc, f"http://127.0.0.1:{port}"


class Cluster:
    """Three candidates with `replication.sync: mode`, always cleaned up."""

    def __init__(self, args, mode):
        self.root = tempfile.mkdtemp(prefix=f"sync-{mode}-", dir=args.base)
        self.standin, url = start_standin(args.standin)
        self.nodes = []
        for name in ("a", "b", "c"):
            port = free_port()
            lease = (
                f"  type: consul\n  hostname: {name}\n  advertise-url: http://127.0.0.1:{port}\n"
                "  reconnect-delay: 50ms\n  candidate: true\n"
                f"  consul:\n    url: {url}\n    key: ltxd/sync-bench\n    ttl: 2s\n    lock-delay: 100ms\n"
            )
            extra = f"replication:\n  sync: {mode}\n  sync-timeout: {args.sync_timeout}\n"
            self.nodes.append(
                Daemon(args.ltxd, os.path.join(self.root, name), http_port=port, lease=lease, extra=extra)
            )
        self.mode = mode

    def __enter__(self):
        primary = self.nodes[0]
        primary.start()
        wait("a is primary", 30, lambda: info(primary).get("isPrimary"))
        for replica in self.nodes[1:]:
            replica.start()
        conn = sqlite3.connect(os.path.join(primary.mnt, DB), isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.close()

        def settled():
            heads = [info(n).get("databases", {}).get(DB, {}).get("txid") for n in self.nodes]
            if len(set(heads)) != 1 or heads[0] is None:
                return False
            if self.mode == "off":
                return True
            sync = info(primary).get("sync", {})
            return sync.get("replicas") == 2 and not sync.get("degraded")

        wait("the replicas caught up and acknowledge", 60, settled)
        return self

    def __exit__(self, *exc):
        for daemon in reversed(self.nodes):
            try:
                daemon.stop()
            except Exception as err:  # noqa: BLE001 - cleanup goes on
                print(f"stopping {daemon.root}: {err}", file=sys.stderr)
            finally:
                daemon.cleanup()
        self.standin.kill()
        self.standin.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def writer_loop(path, transactions, warmup, start, results):
    """One writer: `warmup` untimed commits, waits for `start`, then `transactions` timed ones;
    puts (latencies in ms, end time) on `results`."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    for _ in range(warmup):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(100))")
    start.wait()
    latencies = []
    for _ in range(transactions):
        started = time.perf_counter()
        conn.execute("INSERT INTO t(v) VALUES (randomblob(100))")
        latencies.append((time.perf_counter() - started) * 1000)
    results.put((latencies, time.perf_counter()))
    conn.close()


def run_writers(path, writers, transactions, warmup, threads):
    """`writers` writers (processes, or threads of this process with `threads`), each with its
    own connection, committing single-row INSERTs; returns the timed commits' latencies and the
    timed run's tx/s."""
    if threads:
        start, results = threading.Event(), queue.Queue()
        workers = [
            threading.Thread(target=writer_loop, args=(path, transactions, warmup, start, results))
            for _ in range(writers)
        ]
    else:
        ctx = multiprocessing.get_context("fork")
        start, results = ctx.Event(), ctx.Queue()
        workers = [
            ctx.Process(target=writer_loop, args=(path, transactions, warmup, start, results))
            for _ in range(writers)
        ]
    for w in workers:
        w.start()
    time.sleep(0.5)  # every writer past its warm-up (or close to it)
    started = time.perf_counter()
    start.set()
    outcomes = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    seconds = max(end for _, end in outcomes) - started
    flat = [x for latencies, _ in outcomes for x in latencies]
    return {
        "writers": writers,
        "writers_are": "threads of one process" if threads else "processes",
        "transactions": len(flat),
        "tx_per_s": round(len(flat) / seconds, 1),
        "latency_ms": {
            "p50": round(percentile(flat, 50), 3),
            "p90": round(percentile(flat, 90), 3),
            "p99": round(percentile(flat, 99), 3),
            "max": round(max(flat), 3),
            "mean": round(statistics.mean(flat), 3),
        },
    }


def measure(path, args, label):
    rows = []
    runs = [(w, False) for w in args.writers] + [(w, True) for w in args.threads]
    for writers, threads in runs:
        load_before = loadavg()
        row = run_writers(path, writers, args.transactions // writers, args.warmup, threads)
        row["load_before"] = load_before
        row["load_after"] = loadavg()
        print(label, json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltxd", required=True)
    parser.add_argument("--standin", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("--modes", default="off,one,quorum,all")
    parser.add_argument("--writers", default="1,8", help="writer processes per run")
    parser.add_argument("--threads", default="8", help="writer threads of one process per run")
    parser.add_argument("--transactions", type=int, default=800, help="timed commits per run, split among the writers")
    parser.add_argument("--warmup", type=int, default=20, help="untimed commits per writer")
    parser.add_argument("--sync-timeout", default="5s")
    parser.add_argument("--base", default="/tmp", help="where the data directories go")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=int, default=600)
    args = parser.parse_args()
    args.writers = [int(w) for w in args.writers.split(",") if w]
    args.threads = [int(w) for w in args.threads.split(",") if w]

    result = {**result_header("sync", args), "storage": args.base, "runs": {}}
    plain = tempfile.mkdtemp(prefix="sync-plain-", dir=args.base)
    try:
        path = os.path.join(plain, DB)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.close()
        result["runs"]["plain-directory"] = measure(path, args, "plain")
    finally:
        shutil.rmtree(plain, ignore_errors=True)
    for mode in args.modes.split(","):
        with Cluster(args, mode) as cluster:
            primary = cluster.nodes[0]
            rows = measure(os.path.join(primary.mnt, DB), args, mode)
            sync = info(primary).get("sync")
            result["runs"][f"sync-{mode}"] = {"runs": rows, "sync_after": sync}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
