#!/usr/bin/env python3
"""The proxy's cost (benches/proxy-bench.sh): a primary and a replica `ltxd mount` on loopback,
each with its proxy, measured side by side with the application reached directly in the same
run.

1. GET: the target is `http_load serve` (a fast Rust echo application, so that the proxy's own
   cost shows): latency p50/p99 with one client, and requests/s with 64 concurrent keep-alive
   clients, directly and through the primary's proxy.
2. The target is tests/proxy/app.py (Python, SQLite on the mount): requests/s of GET /ping
   with 64 clients directly and through the proxy, then POST latency with one client directly
   on the primary's application, through the primary's proxy, and forwarded by the replica's
   proxy to the primary's.

The load average is recorded before and after.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_tps import Daemon, loadavg, result_header, write_result  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tests", "proxy", "app.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def load(tool, port, path, method, concurrency, seconds):
    out = subprocess.run(
        [tool, "load", f"127.0.0.1:{port}", path, method, str(concurrency), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def proxy_yaml(proxy_port, app_port):
    return (
        "proxy:\n"
        f"  addr: 127.0.0.1:{proxy_port}\n"
        f"  target: 127.0.0.1:{app_port}\n"
        "  db: app.db\n"
    )


class Cluster:
    """A primary and a replica, each with a proxy in front of its own application port."""

    def __init__(self, ltxd, base):
        self.dir = tempfile.mkdtemp(prefix="proxy-bench-", dir=base)
        self.app_ports = [free_port(), free_port()]
        self.proxy_ports = [free_port(), free_port()]
        port = free_port()
        self.primary = Daemon(
            ltxd,
            os.path.join(self.dir, "primary"),
            http_port=port,
            extra=proxy_yaml(self.proxy_ports[0], self.app_ports[0]),
        )
        self.replica = Daemon(
            ltxd,
            os.path.join(self.dir, "replica"),
            http_port=free_port(),
            primary_url=self.primary.url,
            extra=proxy_yaml(self.proxy_ports[1], self.app_ports[1]),
        )
        self.apps = []

    def __enter__(self):
        self.primary.start()
        self.replica.start()
        return self

    def start_apps(self, command):
        for port, daemon in zip(self.app_ports, [self.primary, self.replica]):
            self.apps.append(subprocess.Popen(command(port, daemon), stdout=subprocess.DEVNULL))
            wait_port(port)

    def __exit__(self, *exc):
        for app in self.apps:
            app.kill()
            app.wait()
        for daemon in (self.replica, self.primary):
            try:
                daemon.stop()
            finally:
                daemon.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def gets(args):
    with Cluster(args.ltxd, args.base) as cluster:
        cluster.start_apps(lambda port, _d: [args.tool, "serve", str(port)])
        direct, proxied = cluster.app_ports[0], cluster.proxy_ports[0]
        load(args.tool, proxied, "/", "GET", 4, 1)  # warm up
        result = {}
        for name, port in (("direct", direct), ("proxy", proxied)):
            result[name] = {
                "latency_1_client": load(args.tool, port, "/", "GET", 1, args.seconds),
                "rate_64_clients": load(args.tool, port, "/", "GET", 64, args.seconds),
            }
        d, p = result["direct"], result["proxy"]
        result["added_p50_us"] = p["latency_1_client"]["p50_us"] - d["latency_1_client"]["p50_us"]
        result["added_p99_us"] = p["latency_1_client"]["p99_us"] - d["latency_1_client"]["p99_us"]
        result["rate_ratio_64"] = round(
            p["rate_64_clients"]["rps"] / max(d["rate_64_clients"]["rps"], 1), 3
        )
        return result


def posts(args):
    with Cluster(args.ltxd, args.base) as cluster:
        cluster.start_apps(
            lambda port, daemon: ["python3", APP, str(port), os.path.join(daemon.mnt, "app.db")]
        )
        # Creates the table, and warms the replica's route to the primary.
        load(args.tool, cluster.proxy_ports[1], "/items", "POST", 1, 1)
        result = {}
        for name, port in (("direct", cluster.app_ports[0]), ("proxy", cluster.proxy_ports[0])):
            result[f"get_ping_64_clients_{name}"] = load(
                args.tool, port, "/ping", "GET", 64, args.seconds
            )
        result["get_ping_rate_ratio_64"] = round(
            result["get_ping_64_clients_proxy"]["rps"]
            / max(result["get_ping_64_clients_direct"]["rps"], 1),
            3,
        )
        for name, port in (
            ("direct_on_primary", cluster.app_ports[0]),
            ("primary_proxy", cluster.proxy_ports[0]),
            ("forwarded_by_replica", cluster.proxy_ports[1]),
        ):
            result[name] = load(args.tool, port, "/items", "POST", 1, args.seconds)
        base = result["direct_on_primary"]["p50_us"]
        result["added_p50_us_primary_proxy"] = result["primary_proxy"]["p50_us"] - base
        result["added_p50_us_forwarded"] = result["forwarded_by_replica"]["p50_us"] - base
        return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ltxd", required=True)
    parser.add_argument("--tool", required=True, help="the http_load example binary")
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--base", default="/tmp")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=int, default=600)
    args = parser.parse_args()
    result = result_header("proxy", args)
    result["loadavg_before"] = loadavg()
    result["get"] = gets(args)
    result["post"] = posts(args)
    result["loadavg_after"] = loadavg()
    write_result(args.out, result)


if __name__ == "__main__":
    main()
