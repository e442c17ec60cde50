#!/usr/bin/env python3
"""A new replica bootstrapping a large database: peak memory on both sides, catch-up rate, and
the start-up time of a node with a large database and a long log.

Usage: python3 benches/bootstrap_memory.py --ltxd target/release/ltxd --out benches/results/bootstrap.json
       (benches/bootstrap-bench.sh builds the release binary and runs this)

- seed: a SQLite database of `--size-mib` MiB (4000-byte random blobs, one per 4 KiB page) made
  with Python's sqlite3 on a plain file, encoded with `ltxd ltx encode-db`. For each transport
  (HTTP, QUIC), a fresh primary imports it with `ltxd log import` (one snapshot record) and
  starts; then a new replica starts, and the time from its start until its position equals the
  primary's gives the catch-up rate (database bytes over that time). Peak resident memory is
  VmHWM from /proc/<pid>/status of each daemon at that moment.
- baseline, in the same run and directory: `cp` of the primary's database file followed by an
  fsync of the copy (the replica writes the database, and fsyncs its log).
- start-up: the HTTP primary then takes `--records` single-row commits through its mount (WAL,
  synchronous=NORMAL), stops, and is timed from spawn until its mount is up and its `/info`
  answers; the log's record count at that start is recorded.

The machine may be shared: the script waits for the load to drop (see mount_tps.py) and records
the load average before and after each measurement. Python 3.11 standard library only.
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon, loadavg, result_header, write_result  # noqa: E402

DB = "big.db"


def free_port(kind="tcp"):
    import socket

    with socket.socket(type=socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_pos(daemon):
    try:
        with open(os.path.join(daemon.mnt, f"{DB}-pos")) as f:
            return f.read().strip()
    except OSError:
        return ""


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def make_seed(path, mib):
    conn = sqlite3.connect(path)
    conn.executescript(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
        "CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB);"
    )
    rows = mib * 256
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO t (x) SELECT randomblob(4000) FROM n",
        (rows,),
    )
    conn.commit()
    conn.close()


def ltxd(args, *cmd):
    subprocess.run([args.ltxd, *cmd], check=True, stdout=subprocess.DEVNULL)


def primary_daemon(args, root, transport):
    port = free_port()
    if transport == "quic":
        quic = free_port("udp")
        url = f"quic://127.0.0.1:{quic}"
        extra = f"quic:\n  addr: 127.0.0.1:{quic}\n  insecure-dev: true\n"
    else:
        url = f"http://127.0.0.1:{port}"
        extra = ""
    lease = (
        "  type: static\n  candidate: true\n  hostname: bench\n"
        f"  advertise-url: {url}\n  reconnect-delay: 50ms\n"
    )
    return Daemon(args.ltxd, os.path.join(root, "primary"), http_port=port, lease=lease, extra=extra), url


def replica_daemon(args, root, url):
    extra = "quic:\n  insecure-dev: true\n" if url.startswith("quic://") else ""
    lease = (
        "  type: static\n  candidate: false\n  hostname: bench\n"
        f"  advertise-url: {url}\n  reconnect-delay: 50ms\n"
    )
    return Daemon(
        args.ltxd, os.path.join(root, "replica"), http_port=free_port(), lease=lease, extra=extra
    )


def timed_start(daemon, timeout):
    start = time.monotonic()
    daemon.start(timeout=timeout)
    while True:
        try:
            with urllib.request.urlopen(f"{daemon.url}/info", timeout=5) as r:
                r.read()
            break
        except OSError:
            if time.monotonic() - start > timeout:
                raise
            time.sleep(0.01)
    return time.monotonic() - start


def baseline_copy(src, dst):
    start = time.monotonic()
    subprocess.run(["cp", src, dst], check=True)
    copied = time.monotonic() - start
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    synced = time.monotonic() - start
    os.unlink(dst)
    return copied, synced


def bootstrap(args, seed_ltx, db_bytes, transport, startup):
    root = tempfile.mkdtemp(prefix=f"h18m-bootstrap-{transport}-", dir=args.base)
    primary, url = primary_daemon(args, root, transport)
    replica = None
    try:
        ltxd(args, "log", "import", "--data-dir", primary.data, "--db", DB, seed_ltx)
        primary_start = timed_start(primary, args.timeout)
        backing = os.path.join(primary.data, "dbs", DB, "database")
        load_before = loadavg()
        cp_secs, cp_sync_secs = baseline_copy(backing, os.path.join(root, "copy.db"))
        replica = replica_daemon(args, root, url)
        want = read_pos(primary)
        start = time.monotonic()
        replica.start(timeout=args.timeout)
        while read_pos(replica) != want:
            if time.monotonic() - start > args.timeout:
                raise RuntimeError(f"the replica did not catch up:\n{replica.tail()}")
            time.sleep(0.01)
        secs = time.monotonic() - start
        result = {
            "transport": transport,
            "database_bytes": db_bytes,
            "primary_start_secs": round(primary_start, 2),
            "catch_up_secs": round(secs, 2),
            "catch_up_mb_per_s": round(db_bytes / secs / 1e6, 1),
            "peak_rss_kib": {
                "primary": peak_rss_kib(primary.proc.pid),
                "replica": peak_rss_kib(replica.proc.pid),
            },
            "baseline_cp_secs": round(cp_secs, 2),
            "baseline_cp_mb_per_s": round(db_bytes / cp_secs / 1e6, 1),
            "baseline_cp_fsync_secs": round(cp_sync_secs, 2),
            "baseline_cp_fsync_mb_per_s": round(db_bytes / cp_sync_secs / 1e6, 1),
            "load_before": load_before,
            "load_after": loadavg(),
        }
        print(json.dumps(result), file=sys.stderr, flush=True)
        replica.stop()
        replica.cleanup()
        shutil.rmtree(replica.root, ignore_errors=True)
        replica = None
        if startup:
            result["startup"] = measure_startup(args, primary)
        return result
    finally:
        for d in (replica, primary):
            if d is not None:
                d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def measure_startup(args, primary):
    path = os.path.join(primary.mnt, DB)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    start = time.monotonic()
    for i in range(args.records):
        conn.execute("INSERT INTO t (x) VALUES (?)", (i.to_bytes(8, "big"),))
    write_secs = time.monotonic() - start
    conn.close()
    if primary.stop() != 0:
        raise RuntimeError(f"the primary did not stop cleanly:\n{primary.tail()}")
    listed = subprocess.run(
        [args.ltxd, "log", "list", "--json", "--data-dir", primary.data, "--db", DB],
        capture_output=True,
        text=True,
        check=True,
    )
    records = len(json.loads(listed.stdout))
    load_before = loadavg()
    secs = timed_start(primary, args.timeout)
    return {
        "commits": args.records,
        "commits_secs": round(write_secs, 1),
        "log_records_at_start": records,
        "start_secs": round(secs, 2),
        "peak_rss_kib": peak_rss_kib(primary.proc.pid),
        "load_before": load_before,
        "load_after": loadavg(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ltxd", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--transports", default="http,quic")
    parser.add_argument("--base", default=tempfile.gettempdir())
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=int, default=300)
    args = parser.parse_args()

    result = result_header("bootstrap", args)
    result["base"] = args.base
    seed_dir = tempfile.mkdtemp(prefix="h18m-bootstrap-seed-", dir=args.base)
    try:
        seed = os.path.join(seed_dir, "seed.db")
        make_seed(seed, args.size_mib)
        db_bytes = os.path.getsize(seed)
        seed_ltx = os.path.join(seed_dir, "seed.ltx")
        ltxd(args, "ltx", "encode-db", "-o", seed_ltx, seed)
        os.unlink(seed)
        runs = []
        for i, transport in enumerate(args.transports.split(",")):
            runs.append(bootstrap(args, seed_ltx, db_bytes, transport, startup=(i == 0 and args.records > 0)))
        result["runs"] = runs
    finally:
        shutil.rmtree(seed_dir, ignore_errors=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
