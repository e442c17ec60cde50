#!/usr/bin/env python3
"""Counts the FUSE requests that point reads through `ltxd mount` make, per read transaction.

Usage: python3 benches/read_requests.py --ltxd target/debug/ltxd [--reads 2000]

For each journal mode (WAL, DELETE): a primary mount with fuser's request log on
(`LTXD_LOG=fuser=debug`), a 2,000-row table, a read-only connection that warms up with 200
point reads, then `--reads` more; the requests the daemon logged during those are counted by
kind and divided by the number of reads. A count, not a speed: any build will do.
Python 3 standard library only.
"""

import argparse
import collections
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon  # noqa: E402
from replication_lag import free_port  # noqa: E402

ROWS = 2000
REQUEST = re.compile(r"FUSE\(\s*\d+\) ino \S+ ([A-Z_]+)")


def count(ltxd, mode, reads, base):
    root = tempfile.mkdtemp(prefix="read-requests-", dir=base)
    os.environ["LTXD_LOG"] = "fuser=debug,info"
    daemon = Daemon(ltxd, root, http_port=free_port())
    try:
        daemon.start()
        path = os.path.join(daemon.mnt, "r.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, randomblob(200))",
                         ((i,) for i in range(1, ROWS + 1)))
        conn.execute("COMMIT")
        conn.close()
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        query = "SELECT v FROM t WHERE id=?"
        for _ in range(200):
            reader.execute(query, (random.randint(1, ROWS),)).fetchone()
        time.sleep(0.2)
        before = os.path.getsize(daemon.log_path)
        for _ in range(reads):
            reader.execute(query, (random.randint(1, ROWS),)).fetchone()
        time.sleep(0.2)
        with open(daemon.log_path, errors="replace") as f:
            f.seek(before)
            kinds = collections.Counter(REQUEST.findall(f.read()))
        reader.close()
        daemon.stop()
        return {kind: round(n / reads, 3) for kind, n in sorted(kinds.items())}
    finally:
        del os.environ["LTXD_LOG"]
        daemon.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ltxd", required=True)
    p.add_argument("--reads", type=int, default=2000)
    p.add_argument("--dir", default="/tmp")
    args = p.parse_args()
    for mode in ("WAL", "DELETE"):
        per_read = count(os.path.abspath(args.ltxd), mode, args.reads, args.dir)
        print(f"{mode}: requests per read transaction: {per_read or 'none'}", flush=True)


if __name__ == "__main__":
    main()
