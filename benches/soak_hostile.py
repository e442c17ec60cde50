#!/usr/bin/env python3
"""Replication lag and commit rate of a primary and a replica on loopback, quiet and while
hostile clients hit the primary's HTTP port (issue 14): connections that send half a request
header and stop, `/stream` subscriptions whose responses are never read, and connections that
send garbage. The goal: lag p99 under attack within 2x of the quiet figure.

Reuses the pair, the lag measurement and the result format of replication_lag.py.
"""

import argparse
import json
import os
import socket
import sqlite3
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import loadavg, result_header, write_result  # noqa: E402
from replication_lag import Pair, measure_lag  # noqa: E402


def measure_commits(pair, transactions):
    """Commits per second of small WAL transactions on the primary."""
    conn = sqlite3.connect(os.path.join(pair.primary.mnt, "rate.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS r(id INTEGER PRIMARY KEY, v BLOB)")
    start = time.perf_counter()
    for _ in range(transactions):
        conn.execute("INSERT INTO r(v) VALUES (randomblob(100))")
    elapsed = time.perf_counter() - start
    conn.close()
    return round(transactions / elapsed, 1)


class Hostile:
    """`count` hostile connections to `port`, a third of each kind, reopened as the server
    closes them, until stopped."""

    SLOW = b"POST /stream HTTP/1.1\r\nHost: primary\r\nContent-Len"

    def __init__(self, port, count):
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.opened = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(count)]

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.opened += 1
        return s

    def run(self, i):
        kind = i % 3
        while not self.stop.is_set():
            try:
                with self.connect() as s:
                    if kind == 0:
                        s.sendall(self.SLOW)
                    elif kind == 1:
                        body = struct.pack(">I", 0)
                        s.sendall(
                            b"POST /stream HTTP/1.1\r\nHost: p\r\nLitefs-Id: %016X\r\n"
                            b"Content-Length: %d\r\n\r\n" % (0x5000 + i, len(body)) + body
                        )
                    # Hold the connection (slow header, unread stream) or keep sending garbage
                    # until the server closes it.
                    s.settimeout(0.5)
                    while not self.stop.is_set():
                        if kind == 2:
                            s.sendall(os.urandom(512))
                            time.sleep(0.1)
                            continue
                        try:
                            if kind == 0 and s.recv(1) == b"":
                                break
                        except socket.timeout:
                            pass
                        if kind == 1:
                            time.sleep(0.5)
            except OSError:
                time.sleep(0.05)

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(2)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


def run(args, hostile):
    with Pair(args.ltxd, args.base) as pair:
        port = int(pair.primary.url.rsplit(":", 1)[1])
        if hostile:
            with Hostile(port, args.hostile) as attack:
                lag = measure_lag(pair, args.transactions, args.warmup)
                lag["commits_per_s"] = measure_commits(pair, args.transactions)
                lag["hostile_connections"] = args.hostile
                lag["hostile_connects"] = attack.opened
        else:
            lag = measure_lag(pair, args.transactions, args.warmup)
            lag["commits_per_s"] = measure_commits(pair, args.transactions)
        lag["load_after"] = loadavg()
        with open(pair.primary.log_path) as f:
            lines = f.read().splitlines()
        lag["primary_log_lines"] = len(lines)
        print(json.dumps(lag), file=sys.stderr, flush=True)
        return lag


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ltxd", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--hostile", type=int, default=500)
    parser.add_argument("--base", default="/tmp")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=int, default=600)
    args = parser.parse_args()
    result = {**result_header("soak-hostile", args), "storage": args.base}
    result["quiet"] = run(args, hostile=False)
    result["hostile"] = run(args, hostile=True)
    result["p99_ratio"] = round(result["hostile"]["lag_ms"]["p99"] / result["quiet"]["lag_ms"]["p99"], 2)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
