#!/usr/bin/env python3
"""Replication over HTTP against QUIC, on loopback-like and simulated WAN links (tools/wan).

Usage: python3 benches/wan_replication.py --ltxd target/release/ltxd --wan target/debug/wan \
           --out benches/results/wan.json
       (benches/wan-bench.sh builds both and runs this; needs root, iproute2 and iptables)

For each profile (lan, wan50: 50 ms RTT and 1% loss, wan150: 150 ms RTT and 0.5% loss) and each
transport (HTTP/2 with a token; QUIC with TLS and a token), a primary runs in one network
namespace and a replica in the other:
- lag: --transactions single-row WAL commits spread round-robin over --databases databases;
  after each commit returns, the replica's mount is polled until the row is visible.
  p50/p99 of commit-return-to-visible.
- catch-up: with the replica stopped, --catchup-mb of 256 KiB rows go into one database; the
  replica starts and the time until its position equals the primary's gives MB/s of LTX.
Python 3.11 standard library only.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon, dir_bytes, loadavg, result_header, write_result  # noqa: E402

TOKEN = "wan-bench-token"
LINK = "ltxd-wanbench"
A, B = "10.77.0.1", "10.77.0.2"


def read_pos(daemon, db):
    try:
        with open(os.path.join(daemon.mnt, f"{db}-pos")) as f:
            return f.read().strip()
    except OSError:
        return ""


def wait_pos(primary, replica, db, timeout=300):
    want = read_pos(primary, db)
    deadline = time.monotonic() + timeout
    while read_pos(replica, db) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica did not reach {want} in {db}:\n{replica.tail()}")
        time.sleep(0.001)


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def nodes(args, root, transport):
    enter = lambda side: ["nsenter", f"--net=/run/netns/{LINK}-{side}"]  # noqa: E731
    http = f"  token: {TOKEN}\n"
    if transport == "quic":
        url = f"quic://{A}:4433"
        primary_extra = f"quic:\n  addr: {A}:4433\n  insecure-dev: true\n  token: {TOKEN}\n"
        replica_extra = f"quic:\n  insecure-dev: true\n  token: {TOKEN}\n"
    else:
        url = f"http://{A}:20202"
        primary_extra = replica_extra = ""

    def lease(candidate):
        return (
            f"  type: static\n  candidate: {candidate}\n  hostname: bench\n"
            f"  advertise-url: {url}\n  reconnect-delay: 50ms\n"
        )

    primary = Daemon(
        args.ltxd, os.path.join(root, "primary"), http_port=20202, http_host=A,
        lease=lease("true"), extra=primary_extra, prefix=enter("a"), http_extra=http,
    )
    replica = Daemon(
        args.ltxd, os.path.join(root, "replica"), http_port=20202, http_host=B,
        lease=lease("false"), extra=replica_extra, prefix=enter("b"), http_extra=http,
    )
    return primary, replica


def measure(args, profile, transport):
    subprocess.run([args.wan, "up", profile, "--name", LINK], check=True, capture_output=True)
    root = tempfile.mkdtemp(prefix=f"wan-{profile}-{transport}-", dir=args.base)
    primary, replica = nodes(args, root, transport)
    try:
        primary.start()
        replica.start()
        dbs = [f"db{i}.db" for i in range(args.databases)]
        writers, readers = {}, {}
        for db in dbs:
            conn = sqlite3.connect(os.path.join(primary.mnt, db), isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            writers[db] = conn
        for db in dbs:
            wait_pos(primary, replica, db)
            readers[db] = sqlite3.connect(
                f"file:{os.path.join(replica.mnt, db)}?mode=ro", uri=True, isolation_level=None
            )
        lags = []
        for i in range(1, args.transactions + 1):
            db = dbs[i % len(dbs)]
            writers[db].execute("INSERT INTO t(id, v) VALUES (?, randomblob(100))", (i,))
            committed = time.perf_counter()
            while readers[db].execute("SELECT max(id) FROM t").fetchone()[0] != i:
                pass
            lags.append((time.perf_counter() - committed) * 1000)
        for conn in list(writers.values()) + list(readers.values()):
            conn.close()
        # Catch-up.
        replica.stop()
        conn = sqlite3.connect(os.path.join(primary.mnt, dbs[0]), isolation_level=None)
        for _ in range(args.catchup_mb * 4):
            conn.execute("INSERT INTO t(v) VALUES (randomblob(262144))")
        conn.close()
        log_bytes = dir_bytes(os.path.join(replica.data, "dbs", dbs[0], "segments"))
        primary_bytes = dir_bytes(os.path.join(primary.data, "dbs", dbs[0], "segments"))
        started = time.perf_counter()
        replica.start()
        wait_pos(primary, replica, dbs[0], timeout=600)
        seconds = time.perf_counter() - started
        moved = max(primary_bytes - log_bytes, 0)
        return {
            "profile": profile,
            "transport": transport,
            "databases": args.databases,
            "transactions": args.transactions,
            "lag_ms": {
                "p50": round(pct(lags, 50), 2),
                "p99": round(pct(lags, 99), 2),
                "max": round(max(lags), 2),
                "mean": round(statistics.mean(lags), 2),
            },
            "catchup": {
                "ltx_bytes": moved,
                "seconds_from_replica_start": round(seconds, 3),
                "mb_per_s": round(moved / 1e6 / seconds, 2),
            },
        }
    finally:
        for daemon in (replica, primary):
            try:
                daemon.stop()
            except Exception:  # noqa: BLE001 - best effort during cleanup
                pass
            daemon.cleanup()
        subprocess.run([args.wan, "down", "--name", LINK], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltxd", required=True)
    parser.add_argument("--wan", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("--profiles", default="lan,wan50,wan150")
    parser.add_argument("--transports", default="http,quic")
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--databases", type=int, default=4)
    parser.add_argument("--catchup-mb", type=int, default=16)
    parser.add_argument("--base", default="/tmp")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=int, default=600)
    args = parser.parse_args()
    result = {
        **result_header("wan-replication", args),
        "runs": [],
    }
    for profile in args.profiles.split(","):
        for transport in args.transports.split(","):
            run = measure(args, profile, transport)
            print(json.dumps(run), file=sys.stderr, flush=True)
            result["runs"].append(run)
    result["load_after"] = loadavg()
    write_result(args.out, result)


if __name__ == "__main__":
    main()
