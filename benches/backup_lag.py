#!/usr/bin/env python3
"""Continuous backup to moto's S3 server on loopback.

Usage: python3 benches/backup_lag.py --ltxd BIN --moto /opt/ltxd-venv/bin/moto_server --out FILE
       (benches/backup-bench.sh runs this)

- lag: `--transactions` single-row WAL commits, `--spacing-ms` apart, on a primary that backs up
  to the bucket (interval 1 s). A thread lists the bucket every 20 ms; the lag of a commit is the
  time from its return to the first listing whose chain covers its TXID. p50, p90, p99, max.
- upload: `--upload-mb` of 256 KiB rows committed as fast as possible; the time from the first
  commit until the bucket holds the head gives MB/s (LTX bytes in the log over that time).
- restore: a database of `--restore-mb` (256 KiB rows) restored from the bucket with
  `ltxd restore --from`, and, as the baseline in the same run, from the local log with
  `ltxd restore --data-dir`; MB/s of database bytes and the peak RSS of each restore process.

Python 3.11 standard library only.
"""

import argparse
import filecmp
import json
import os
import re
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
from mount_tps import Daemon, dir_bytes, loadavg, result_header, write_result  # noqa: E402

DB = "bench.db"
BUCKET = "bench"
KEY = re.compile(r"<Key>([^<]*)/ltx/0/([0-9a-f]{16})-([0-9a-f]{16})-[0-9a-f]{16}\.ltx</Key>")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, exe, base):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(base, "moto.log"), "wb")
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.05)
        req = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        urllib.request.urlopen(req, timeout=10).read()

    def tip(self, prefix):
        """The last TXID of the contiguous level-0 chain from TXID 1 under `prefix`."""
        ranges, token = {}, None
        while True:
            url = f"{self.endpoint}/{BUCKET}?list-type=2&prefix={prefix}/{DB}/ltx/0/"
            if token:
                url += "&continuation-token=" + urllib.request.quote(token)
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            for _, lo, hi in KEY.findall(body):
                lo, hi = int(lo, 16), int(hi, 16)
                ranges[lo] = max(ranges.get(lo, 0), hi)
            m = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", body)
            if not m:
                break
            token = m.group(1)
        tip = 0
        while tip + 1 in ranges:
            tip = ranges[tip + 1]
        return tip

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def backup_yaml(moto, prefix):
    return (
        "backup:\n  type: s3\n  bucket: bench\n"
        f"  path: {prefix}\n  endpoint: {moto.endpoint}\n  force-path-style: true\n"
    )


def txid(daemon):
    with open(os.path.join(daemon.mnt, f"{DB}-pos")) as f:
        return int(f.read().strip().split("/")[0], 16)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure_lag(moto, daemon, transactions, spacing_ms):
    conn = sqlite3.connect(os.path.join(daemon.mnt, DB), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    committed = {}
    seen = {}
    done = threading.Event()

    def watch():
        while not done.is_set():
            tip = moto.tip("lag")
            now = time.perf_counter()
            for t in list(committed):
                if t <= tip and t not in seen:
                    seen[t] = now
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for i in range(transactions):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(100))")
        committed[txid(daemon)] = time.perf_counter()
        time.sleep(spacing_ms / 1000)
    deadline = time.monotonic() + 60
    while len(seen) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    watcher.join()
    conn.close()
    lags = [(seen[t] - c) * 1000 for t, c in committed.items() if t in seen]
    return {
        "transactions": transactions,
        "spacing_ms": spacing_ms,
        "interval_ms": 1000,
        "missing": len(committed) - len(lags),
        "lag_ms": {
            "p50": round(percentile(lags, 50), 1),
            "p90": round(percentile(lags, 90), 1),
            "p99": round(percentile(lags, 99), 1),
            "max": round(max(lags), 1),
            "mean": round(statistics.mean(lags), 1),
        },
        "note": "the bucket is listed every 20 ms, which adds up to 20 ms plus one listing",
    }


def fill(daemon, megabytes):
    conn = sqlite3.connect(os.path.join(daemon.mnt, DB), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    for _ in range(megabytes * 4):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(262144))")
    conn.close()


def measure_upload(moto, daemon, prefix, megabytes):
    started = time.perf_counter()
    fill(daemon, megabytes)
    committed = time.perf_counter()
    head = txid(daemon)
    deadline = time.monotonic() + 900
    while moto.tip(prefix) < head:
        if time.monotonic() > deadline:
            raise RuntimeError("the bucket did not catch up")
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    log_bytes = dir_bytes(os.path.join(daemon.data, "dbs", DB, "segments"))
    return {
        "megabytes_committed": megabytes,
        "log_bytes": log_bytes,
        "commit_seconds": round(committed - started, 2),
        "seconds_until_in_bucket": round(seconds, 2),
        "upload_mb_per_s": round(log_bytes / 1e6 / seconds, 1),
        "note": "from the first commit; the upload runs while the commits do",
    }


def timed_restore(cmd):
    """Runs `cmd`; its wall time in seconds and its own peak RSS in KiB (wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: {proc.stderr.read().decode()}")
    return seconds, usage.ru_maxrss


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ltxd", required=True)
    p.add_argument("--moto", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--command", default="")
    p.add_argument("--transactions", type=int, default=300)
    p.add_argument("--spacing-ms", type=int, default=30)
    p.add_argument("--upload-mb", type=int, default=64)
    p.add_argument("--restore-mb", type=int, default=256)
    p.add_argument("--base", default="/tmp")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--load-wait", type=int, default=600)
    args = p.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    root = tempfile.mkdtemp(prefix="backup-bench-", dir=args.base)
    result = {**result_header("backup", args), "storage": args.base, "store": "moto_server on 127.0.0.1"}
    profile = "release" if "/release/" in args.ltxd else "dev (dependencies at opt-level 3)"
    result["ltxd_profile"] = profile
    moto = Moto(args.moto, root)
    daemons = []
    try:
        d = Daemon(args.ltxd, os.path.join(root, "lag"), http_port=free_port(), extra=backup_yaml(moto, "lag"))
        daemons.append(d)
        d.start()
        result["lag"] = measure_lag(moto, d, args.transactions, args.spacing_ms)
        result["lag"]["load_after"] = loadavg()
        print(json.dumps(result["lag"]), file=sys.stderr, flush=True)
        d.stop()

        d = Daemon(args.ltxd, os.path.join(root, "up"), http_port=free_port(), extra=backup_yaml(moto, "up"))
        daemons.append(d)
        d.start()
        result["upload"] = measure_upload(moto, d, "up", args.upload_mb)
        result["upload"]["load_after"] = loadavg()
        print(json.dumps(result["upload"]), file=sys.stderr, flush=True)
        extra_mb = max(0, args.restore_mb - args.upload_mb)
        if extra_mb:
            fill(d, extra_mb)
            head = txid(d)
            deadline = time.monotonic() + 1800
            while moto.tip("up") < head and time.monotonic() < deadline:
                time.sleep(0.2)
        db_bytes = os.path.getsize(os.path.join(d.mnt, DB))
        d.stop()
        out_bucket = os.path.join(root, "restored-bucket.db")
        out_log = os.path.join(root, "restored-log.db")
        base_s, base_rss = timed_restore(
            [args.ltxd, "restore", "--data-dir", d.data, "--db", DB, "-o", out_log])
        s, rss = timed_restore(
            [args.ltxd, "restore", "--from", f"s3://{BUCKET}/up", "--endpoint", moto.endpoint,
             "--db", DB, "-o", out_bucket])
        same = filecmp.cmp(out_bucket, out_log, shallow=False)
        result["restore"] = {
            "database_bytes": os.path.getsize(out_bucket),
            "from_bucket": {"seconds": round(s, 2), "mb_per_s": round(os.path.getsize(out_bucket) / 1e6 / s, 1),
                            "peak_rss_mb": round(rss / 1024, 1)},
            "from_local_log_baseline": {"seconds": round(base_s, 2),
                                        "mb_per_s": round(os.path.getsize(out_log) / 1e6 / base_s, 1),
                                        "peak_rss_mb": round(base_rss / 1024, 1)},
            "byte_identical": same,
            "load_after": loadavg(),
            "note": "peak RSS of each restore process alone (wait4)",
        }
        print(json.dumps(result["restore"]), file=sys.stderr, flush=True)
    finally:
        for d in daemons:
            try:
                d.stop()
            finally:
                d.cleanup()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
