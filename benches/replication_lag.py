#!/usr/bin/env python3
"""Replication lag and catch-up between two `ltxd mount` processes on loopback.

Usage: python3 benches/replication_lag.py --ltxd target/release/ltxd --out benches/results/replication.json
       (benches/replication-bench.sh builds the release binary and runs this)

Three measurements, each on a fresh primary and replica (static lease, HTTP on loopback):
- lag: `--transactions` single-row WAL commits on the primary. After each commit returns, a
  read-only connection on the replica's mount polls until the row is visible. The lag is the
  time from the commit's return to the first poll that sees it; p50, p90, p99 and max.
- blobs: ten 1 MiB rows committed on the primary; the time from the last commit until the replica
  shows all ten.
- catch-up: with the replica stopped, `--catchup-mb` of 256 KiB rows are committed; the replica
  is started and the time until its position equals the primary's gives MB/s (LTX bytes in the
  primary's log over that time, and database bytes).

The machine may be shared: the script waits for the load to drop (see mount_tps.py) and records
it. Python 3.11 standard library only.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon, dir_bytes, loadavg, result_header, write_result  # noqa: E402

DB = "lag.db"


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_pos(daemon, db=DB):
    try:
        with open(os.path.join(daemon.mnt, f"{db}-pos")) as f:
            return f.read().strip()
    except OSError:
        return ""


def wait_caught_up(primary, replica, timeout=120):
    want = read_pos(primary)
    deadline = time.monotonic() + timeout
    while read_pos(replica) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica did not reach {want}:\n{replica.tail()}")
        time.sleep(0.0005)
    return want


class Pair:
    """A primary and a replica under `base`, always cleaned up."""

    def __init__(self, ltxd, base):
        self.root = tempfile.mkdtemp(prefix="repl-", dir=base)
        port = free_port()
        self.primary = Daemon(ltxd, os.path.join(self.root, "primary"), http_port=port)
        self.replica = Daemon(
            ltxd,
            os.path.join(self.root, "replica"),
            http_port=free_port(),
            primary_url=f"http://127.0.0.1:{port}",
        )

    def __enter__(self):
        self.primary.start()
        self.replica.start()
        return self

    def __exit__(self, *exc):
        for daemon in (self.replica, self.primary):
            try:
                daemon.stop()
            finally:
                daemon.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure_lag(pair, transactions, warmup):
    conn = sqlite3.connect(os.path.join(pair.primary.mnt, DB), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    wait_caught_up(pair.primary, pair.replica)
    reader = sqlite3.connect(
        f"file:{os.path.join(pair.replica.mnt, DB)}?mode=ro", uri=True, isolation_level=None
    )
    lags, polls = [], []
    for i in range(1, warmup + transactions + 1):
        conn.execute("INSERT INTO t(id, v) VALUES (?, randomblob(100))", (i,))
        committed = time.perf_counter()
        n = 0
        while True:
            n += 1
            if reader.execute("SELECT max(id) FROM t").fetchone()[0] == i:
                break
        visible = time.perf_counter()
        if i > warmup:
            lags.append((visible - committed) * 1000)
            polls.append(n)
    conn.close()
    reader.close()
    return {
        "transactions": transactions,
        "warmup": warmup,
        "lag_ms": {
            "p50": round(percentile(lags, 50), 3),
            "p90": round(percentile(lags, 90), 3),
            "p99": round(percentile(lags, 99), 3),
            "max": round(max(lags), 3),
            "mean": round(statistics.mean(lags), 3),
        },
        "polls_per_transaction_median": statistics.median(polls),
    }


def measure_blobs(pair):
    conn = sqlite3.connect(os.path.join(pair.primary.mnt, "blobs.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB)")
    for i in range(10):
        conn.execute("INSERT INTO b VALUES (?, randomblob(1048576))", (i,))
    last_commit = time.perf_counter()
    reader_path = os.path.join(pair.replica.mnt, "blobs.db")
    while True:
        try:
            reader = sqlite3.connect(f"file:{reader_path}?mode=ro", uri=True)
            count = reader.execute("SELECT count(*) FROM b").fetchone()[0]
            reader.close()
            if count == 10:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.0005)
    shown = time.perf_counter()
    conn.close()
    return {"rows": 10, "row_bytes": 1048576, "ms_after_last_commit": round((shown - last_commit) * 1000, 2)}


def measure_catchup(pair, megabytes):
    conn = sqlite3.connect(os.path.join(pair.primary.mnt, DB), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    wait_caught_up(pair.primary, pair.replica)
    pair.replica.stop()
    rows = megabytes * 4
    for _ in range(rows):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(262144))")
    conn.close()
    log_bytes = dir_bytes(os.path.join(pair.primary.data, "dbs", DB, "segments"))
    db_bytes = sum(
        os.path.getsize(p)
        for p in (os.path.join(pair.primary.mnt, DB), os.path.join(pair.primary.mnt, DB + "-wal"))
        if os.path.exists(p)
    )
    started = time.perf_counter()
    pair.replica.start()
    wait_caught_up(pair.primary, pair.replica, timeout=600)
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "row_bytes": 262144,
        "primary_log_bytes": log_bytes,
        "seconds_from_replica_start": round(seconds, 3),
        "log_mb_per_s": round(log_bytes / 1e6 / seconds, 1),
        "note": "includes the replica's start and mount; the replica resumes from its position (no snapshot)",
        "primary_db_plus_wal_bytes": db_bytes,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltxd", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--catchup-mb", type=int, default=64)
    parser.add_argument("--base", default="/tmp", help="where the data directories go")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=int, default=600)
    args = parser.parse_args()

    result = {
        **result_header("replication", args),
        "storage": args.base,
    }
    with Pair(args.ltxd, args.base) as pair:
        result["lag"] = measure_lag(pair, args.transactions, args.warmup)
        result["lag"]["load_after"] = loadavg()
        print(json.dumps(result["lag"]), file=sys.stderr, flush=True)
    with Pair(args.ltxd, args.base) as pair:
        result["blobs"] = measure_blobs(pair)
        print(json.dumps(result["blobs"]), file=sys.stderr, flush=True)
    with Pair(args.ltxd, args.base) as pair:
        result["catchup"] = measure_catchup(pair, args.catchup_mb)
        print(json.dumps(result["catchup"]), file=sys.stderr, flush=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
