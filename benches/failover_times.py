#!/usr/bin/env python3
"""Failover times of a three-node ltxd cluster on etcd (a real etcd-server) and on the Consul
stand-in, over repeated SIGKILLs of the primary, and handoff times over repeated `ltxd promote`.

Usage: python3 benches/failover_times.py --ltxd target/release/ltxd \
           --standin target/release/ltxd-consul-standin --out benches/results/failover.json
       (benches/failover-bench.sh builds both and runs this)

Each trial: find the primary (GET /info), write to it, SIGKILL it, and time until another node
accepts a write through its mount (polling every 10 ms with sqlite3); then restart the killed node
and wait until it has rejoined as a replica. Then each of --promotions trials runs `ltxd promote`
on a replica and times until that node accepts a write through its mount. The lease TTL is --ttl
seconds. The stand-in runs with
Consul's rules except a minimum TTL of 1 s and expiry after one TTL (Consul may take two).
Python 3.11 standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon, loadavg, result_header, write_result  # noqa: E402

DB = "fo.db"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, timeout, check, poll=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(poll)
    raise RuntimeError(f"timed out waiting until {what}")


def is_primary(daemon):
    try:
        with urllib.request.urlopen(daemon.url + "/info", timeout=1) as r:
            return json.load(r).get("isPrimary") is True
    except OSError:
        return False


def writes(daemon):
    r = subprocess.run(
        ["sqlite3", os.path.join(daemon.mnt, DB), "INSERT INTO t(v) VALUES (1);"],
        capture_output=True,
        timeout=10,
    )
    return r.returncode == 0


def start_etcd(root):
    client, peer = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [
            "etcd",
            "--name=bench",
            f"--data-dir={root}/etcd",
            f"--listen-client-urls={endpoint}",
            f"--advertise-client-urls={endpoint}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=bench=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def healthy():
        try:
            with urllib.request.urlopen(endpoint + "/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait("etcd is healthy", 20, healthy)
    return proc, endpoint


def start_standin(standin):
    port = free_port()
    proc = subprocess.Popen(
        [standin, "--addr", f"127.0.0.1:{port}", "--min-ttl", "1s", "--ttl-multiplier", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait("the stand-in listens", 20, up)
    return proc, url


def lease_section(backend, endpoint, name, port, ttl):
    common = f"  hostname: {name}\n  advertise-url: http://127.0.0.1:{port}\n  reconnect-delay: 50ms\n  candidate: true\n"
    if backend == "etcd":
        return common + f"  type: etcd\n  etcd:\n    endpoints: [{endpoint}]\n    key: /ltxd/bench\n    ttl: {ttl}s\n"
    return common + f"  type: consul\n  consul:\n    url: {endpoint}\n    key: ltxd/bench\n    ttl: {ttl}s\n    lock-delay: 100ms\n"


def summary(times):
    if not times:
        return {}
    ordered = sorted(times)
    return {
        "min": round(ordered[0], 3),
        "p50": round(statistics.median(ordered), 3),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.mean(ordered), 3),
    }


def run_backend(backend, args):
    root = tempfile.mkdtemp(prefix=f"failover-{backend}-", dir=args.base)
    server, endpoint = start_etcd(root) if backend == "etcd" else start_standin(args.standin)
    nodes = []
    try:
        for i in range(3):
            port = free_port()
            nodes.append(
                Daemon(
                    args.ltxd,
                    os.path.join(root, f"node-{i}"),
                    http_port=port,
                    lease=lease_section(backend, endpoint, f"node-{i}", port, args.ttl),
                )
            )
        for node in nodes:
            node.start()
        primary = wait("a primary", 30, lambda: next((n for n in nodes if is_primary(n)), None))
        subprocess.run(
            ["sqlite3", os.path.join(primary.mnt, DB), "PRAGMA journal_mode=WAL; CREATE TABLE t(v);"],
            check=True,
            capture_output=True,
        )
        times = []
        for trial in range(args.trials):
            primary = wait("a primary", 30, lambda: next((n for n in nodes if is_primary(n)), None))
            others = [n for n in nodes if n is not primary]
            wait("the primary takes writes", 10, lambda: writes(primary))
            killed = time.monotonic()
            primary.proc.send_signal(signal.SIGKILL)
            primary.proc.wait()
            wait("another node takes writes", args.ttl + 30, lambda: any(writes(n) for n in others), poll=0.01)
            took = time.monotonic() - killed
            times.append(took)
            print(f"{backend} trial {trial + 1}: {took * 1000:.0f} ms", file=sys.stderr, flush=True)
            primary.cleanup()
            primary.start()
            wait("the killed node rejoins", 30, lambda: not is_primary(primary))
        promotions = []
        for trial in range(args.promotions):
            primary = wait("a primary", 30, lambda: next((n for n in nodes if is_primary(n)), None))
            target = nodes[(nodes.index(primary) + 1) % len(nodes)]
            wait("the primary takes writes", 10, lambda: writes(primary))
            asked = time.monotonic()
            subprocess.run(
                [args.ltxd, "promote", "--url", target.url],
                check=True,
                capture_output=True,
            )
            wait("the promoted node takes writes", 30, lambda: writes(target), poll=0.005)
            took = time.monotonic() - asked
            promotions.append(took)
            print(f"{backend} promotion {trial + 1}: {took * 1000:.0f} ms", file=sys.stderr, flush=True)
        return {
            "backend": backend,
            "ttl_s": args.ttl,
            "trials": len(times),
            "seconds": summary(times),
            "all_seconds": [round(t, 3) for t in times],
            "promotions": len(promotions),
            "promotion_seconds": summary(promotions),
            "all_promotion_seconds": [round(t, 3) for t in promotions],
        }
    finally:
        for node in nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - best effort during cleanup
                pass
            node.cleanup()
        server.kill()
        server.wait()
        shutil.rmtree(root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltxd", required=True)
    parser.add_argument("--standin", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--promotions", type=int, default=20)
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--backends", default="etcd,consul")
    parser.add_argument("--base", default="/tmp")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=int, default=600)
    args = parser.parse_args()
    result = {
        **result_header("failover", args),
        "results": [run_backend(b, args) for b in args.backends.split(",")],
        "load_after": loadavg(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
