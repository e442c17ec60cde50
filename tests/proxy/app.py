#!/usr/bin/env python3
"""A small web application for the proxy tests and benchmark: it keeps items in SQLite on its
node's ltxd mount.

  POST /items         stores the request body as an item; 201 with the item's id
  GET  /items/<value> 200 with how many items hold <value> (0 before the table exists)
  GET  /static/<any>  200 "static", without touching the database
  GET  /ping          200 "pong", without touching the database

Usage: app.py PORT DATABASE_PATH
"""

import http.server
import sqlite3
import sys
import urllib.parse

PORT = int(sys.argv[1])
DB = sys.argv[2]


def connect():
    conn = sqlite3.connect(DB, timeout=10, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        value = self.rfile.read(length).decode()
        if self.path != "/items":
            return self.answer(404, "not found\n")
        try:
            conn = connect()
            conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, value TEXT)")
            cur = conn.execute("INSERT INTO items (value) VALUES (?)", (value,))
            conn.close()
            self.answer(201, "%d\n" % cur.lastrowid)
        except sqlite3.Error as err:
            self.answer(500, "sqlite: %s\n" % err)

    def do_GET(self):
        if self.path.startswith("/static/"):
            return self.answer(200, "static\n")
        if self.path == "/ping":
            return self.answer(200, "pong\n")
        if not self.path.startswith("/items/"):
            return self.answer(404, "not found\n")
        value = urllib.parse.unquote(self.path[len("/items/"):])
        try:
            conn = connect()
            (count,) = conn.execute(
                "SELECT count(*) FROM items WHERE value = ?", (value,)
            ).fetchone()
            conn.close()
        except sqlite3.OperationalError:
            count = 0
        self.answer(200, "%d\n" % count)

    do_HEAD = do_GET


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


if __name__ == "__main__":
    Server(("127.0.0.1", PORT), Handler).serve_forever()
