"""Helpers for the runtime API tests: admin requests with a method and a
body, `usher ctl` runs, and keep-alive load that counts errors.

Standard library only (run with /usr/bin/python3); every server listens on
127.0.0.1 and every wait is bounded."""

import http.client
import json
import os
import subprocess
import time

import wire
from wire import RawConn

HOST = wire.HOST


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


