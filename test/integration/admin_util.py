"""Helpers for the runtime API tests: admin requests with a method and a
body, `usher ctl` runs, and keep-alive load that counts errors.

Standard library only (run with /usr/bin/python3); every server listens on
127.0.0.1 and every wait is bounded."""

import http.client
import json
import os
import subprocess
import threading
import time

import util
from util import RawConn

HOST = util.HOST


def admin(u, method, path, body=None, token=None, headers=None, timeout=10.0):
    """One admin request: (status, parsed JSON or text, headers dict)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer %s" % token
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    c = http.client.HTTPConnection(HOST, u.admin_port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read().decode("utf-8", "replace")
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
        return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def ctl(usher_bin, u, *args, timeout=30.0, config=True, extra=None):
    """Runs `usher ctl -c <u's config> ARGS`; returns the CompletedProcess."""
    cmd = [usher_bin, "ctl"] + (["-c", u.cfg_path] if config else []) + list(extra or []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def write_token(tmp_path, token="t0ken-123", mode=0o600, name="admin.token"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write("\n  %s \n" % token)
    os.chmod(path, mode)
    return path


def backend_of(st, pool, name):
    for p in st["pools"]:
        if p["name"] == pool:
            for b in p["backends"]:
                if b["name"] == name:
                    return b
    return None


def listener_of(st, name):
    for l in st["listeners"]:
        if l["name"] == name:
            return l
    return None


class Load:
    """<n> threads, each on its own keep-alive connection, sending GET /
    back to back until stop(). Records (start, end, status, body) per
    request and every error (exception or non-200)."""

    def __init__(self, port, n=4, path="/"):
        self.port = port
        self.n = n
        self.path = path
        self.results = []
        self.errors = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []

    def _run(self):
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = RawConn(self.port, timeout=10.0)
                t0 = time.monotonic()
                r = conn.request("GET", self.path)
                t1 = time.monotonic()
                with self._lock:
                    self.results.append((t0, t1, r.status, r.body))
                    if r.status != 200:
                        self.errors.append("status %d: %r" % (r.status, r.body[:100]))
                if r.has_token("connection", "close"):
                    conn.close()
                    conn = None
            except Exception as e:  # pylint: disable=broad-except
                with self._lock:
                    self.errors.append(repr(e))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    def start(self):
        for _ in range(self.n):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(15.0)
        return self
