#!/usr/bin/env python3
"""Point reads through the ltxd FUSE mount (primary and replica) against a plain directory.

Usage: python3 benches/read_bench.py --ltxd target/release/ltxd --out benches/results/read.json
       (benches/read-bench.sh builds the release binary and runs this; see --help)

Workload: a table of `--rows` rows (`id INTEGER PRIMARY KEY, v BLOB` of 200 random bytes, about
43 MB for 200,000 rows). Each reader is a process of its own with a Python `sqlite3` connection
opened read-only (`mode=ro`, autocommit) that runs `SELECT v FROM t WHERE id=?` on a random id
in a loop, each statement its own read transaction, for `--secs` seconds after a short warm-up.
The readers of a case start together; the result is the reads per second (summed over the
readers), the ratio to the same case on the plain directory, and the 50th and 99th percentile
latency of one read.

Cases, for each journal mode (WAL and DELETE), all in one run:
- plain: the database in a plain directory on the same storage;
- primary: through the primary's mount;
- replica: through the mount of a replica (static lease, HTTP on loopback) that is caught up;
- replica-writes: the replica while a process commits `--write-rate` single-row UPDATEs a
  second on the primary (the achieved rate is recorded);
- plain-8, primary-8, replica-8: `--readers` reader processes at once.

With `--compare OTHER_LTXD`, the mount cases also run against a second binary (a build from
before a change), named `before:primary` and so on, in the same run and against the same plain
numbers.

The machine may be shared: the script waits for the load to drop (see mount_tps.py) and records
the load average before and after every case. Python 3 standard library only.
"""

import argparse
import array
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon, loadavg, result_header, write_result  # noqa: E402
from replication_lag import free_port, percentile, read_pos  # noqa: E402

DB = "read.db"
VALUE_BYTES = 200

READER = r"""
import array, random, sqlite3, sys, time
path, rows, start, secs, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
query = "SELECT v FROM t WHERE id=?"
rand = random.Random()
while time.monotonic() < start:
    conn.execute(query, (rand.randint(1, rows),)).fetchone()
latencies = array.array("d")
end = start + secs
clock = time.perf_counter
mono = time.monotonic
while True:
    t0 = clock()
    row = conn.execute(query, (rand.randint(1, rows),)).fetchone()
    latencies.append(clock() - t0)
    if row is None:
        sys.exit("a read found no row")
    if mono() >= end:
        break
with open(out, "wb") as f:
    latencies.tofile(f)
"""

WRITER = r"""
import os, random, signal, sqlite3, sys, time
path, rows, rate, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
conn = sqlite3.connect(path, isolation_level=None, timeout=30)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
rand = random.Random()
count, t0 = 0, time.monotonic()
while not stop:
    conn.execute("UPDATE t SET v=? WHERE id=?", (os.urandom(200), rand.randint(1, rows)))
    count += 1
    delay = t0 + count / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
with open(out, "w") as f:
    f.write(f"{count} {time.monotonic() - t0}")
"""


def populate(path, mode, rows):
    """Creates the table of `rows` rows in `path`, in journal mode `mode`."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        got = conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
        if got.upper() != mode:
            raise RuntimeError(f"journal_mode={mode} gave {got}")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t(id, v) VALUES (?, ?)",
            ((i, os.urandom(VALUE_BYTES)) for i in range(1, rows + 1)),
        )
        conn.execute("COMMIT")
        if mode == "WAL":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()


def wait_caught_up(primary, replica, timeout=300):
    want = read_pos(primary, DB)
    deadline = time.monotonic() + timeout
    while read_pos(replica, DB) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica did not reach {want}:\n{replica.tail()}")
        time.sleep(0.01)


def run_readers(path, readers, rows, secs, tmp):
    """Runs `readers` reader processes on `path` together; returns their numbers."""
    start = time.monotonic() + 1.0 + 0.1 * readers
    outs = [os.path.join(tmp, f"lat-{i}") for i in range(readers)]
    procs = [
        subprocess.Popen([sys.executable, "-c", READER, path, str(rows), str(start), str(secs),
                          out])
        for out in outs
    ]
    failed = [p for p in procs if p.wait() != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} reader(s) failed on {path}")
    latencies = array.array("d")
    for out in outs:
        with open(out, "rb") as f:
            latencies.frombytes(f.read())
        os.remove(out)
    # Each reader ran for `secs` (give or take its last read).
    return {
        "readers": readers,
        "reads": len(latencies),
        "reads_per_sec": round(len(latencies) / secs),
        "p50_us": round(percentile(latencies, 50) * 1e6, 1),
        "p99_us": round(percentile(latencies, 99) * 1e6, 1),
    }


def case(name, path, readers, args, tmp, writer_on=None):
    """One case, with the load recorded, and a writer on the primary if `writer_on` is given."""
    load_before = loadavg()
    writer = None
    if writer_on is not None:
        writer_out = os.path.join(tmp, "writer")
        writer = subprocess.Popen([sys.executable, "-c", WRITER, writer_on, str(args.rows),
                                   str(args.write_rate), writer_out])
        time.sleep(0.5)
    try:
        result = run_readers(path, readers, args.rows, args.secs, tmp)
    finally:
        if writer is not None:
            writer.send_signal(signal.SIGTERM)
            writer.wait()
    if writer is not None:
        with open(writer_out) as f:
            count, secs = f.read().split()
        result["primary_tx_per_sec"] = round(int(count) / float(secs), 1)
    result["case"] = name
    result["load_before"] = load_before
    result["load_after"] = loadavg()
    print(f"read_bench: {name}: {result['reads_per_sec']} reads/s, p50 {result['p50_us']} us, "
          f"p99 {result['p99_us']} us", file=sys.stderr, flush=True)
    return result


def run_mode(mode, args, base):
    root = tempfile.mkdtemp(prefix=f"read-{mode.lower()}-", dir=base)
    plain_dir = os.path.join(root, "plain")
    os.makedirs(plain_dir)
    plain = os.path.join(plain_dir, DB)
    results = []
    try:
        populate(plain, mode, args.rows)
        results.append(case("plain", plain, 1, args, root))
        results.append(case(f"plain-{args.readers}", plain, args.readers, args, root))
        binaries = [("", args.ltxd)]
        if args.compare:
            binaries.insert(0, ("before:", args.compare))
        for label, ltxd in binaries:
            results.extend(mount_cases(mode, label, ltxd, args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    plain_rate = {r["readers"]: r["reads_per_sec"] for r in results if r["case"].startswith("plain")}
    for r in results:
        r["ratio_to_plain"] = round(r["reads_per_sec"] / plain_rate[r["readers"]], 3)
        r["journal_mode"] = mode
    return results


def mount_cases(mode, label, ltxd, args, root):
    """The cases through the mounts of a primary and a replica running `ltxd`, named with
    `label` in front."""
    here = os.path.join(root, label.rstrip(":") or "after")
    primary = Daemon(ltxd, os.path.join(here, "primary"), http_port=free_port())
    replica = Daemon(ltxd, os.path.join(here, "replica"), http_port=free_port(),
                     primary_url=primary.url)
    results = []
    try:
        primary.start()
        replica.start()
        on_primary = os.path.join(primary.mnt, DB)
        on_replica = os.path.join(replica.mnt, DB)
        populate(on_primary, mode, args.rows)
        wait_caught_up(primary, replica)
        one = [("primary", on_primary), ("replica", on_replica)]
        for name, path in one:
            results.append(case(label + name, path, 1, args, root))
        results.append(case(label + "replica-writes", on_replica, 1, args, root,
                            writer_on=on_primary))
        for name, path in one:
            results.append(case(f"{label}{name}-{args.readers}", path, args.readers, args, root))
        for daemon in (replica, primary):
            code = daemon.stop()
            if code != 0:
                raise RuntimeError(f"ltxd mount exited with {code}:\n{daemon.tail()}")
    finally:
        for daemon in (replica, primary):
            daemon.cleanup()
    for r in results:
        r["ltxd"] = ltxd
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ltxd", required=True, help="the ltxd binary (release build)")
    p.add_argument("--compare", default=None,
                   help="another ltxd binary measured in the same run, its cases named before:*")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--secs", type=float, default=3.0, help="seconds per case")
    p.add_argument("--readers", type=int, default=8, help="reader processes in the -N cases")
    p.add_argument("--write-rate", type=float, default=150.0,
                   help="commits a second on the primary in the replica-writes case")
    p.add_argument("--modes", default="WAL,DELETE")
    p.add_argument("--dir", default="/work/bench-tmp",
                   help="where the databases and the daemons' data go (the disk)")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--load-wait", type=int, default=600, help="seconds to wait for the load")
    p.add_argument("--command", default=None, help="the command line to record")
    args = p.parse_args()
    args.ltxd = os.path.abspath(args.ltxd)
    if args.compare:
        args.compare = os.path.abspath(args.compare)
    os.makedirs(args.dir, exist_ok=True)
    result = result_header("read", args)
    result["rows"] = args.rows
    result["secs_per_case"] = args.secs
    result["cases"] = []
    for mode in [m.strip().upper() for m in args.modes.split(",") if m.strip()]:
        result["cases"].extend(run_mode(mode, args, args.dir))
    result["load_after"] = loadavg()
    write_result(args.out, result)


if __name__ == "__main__":
    main()
