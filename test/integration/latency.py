"""Latency as a client sees it, told apart from the host's own hiccups.

Poller(port, path, budget) asks GET <path> on a new connection every
POLL_EVERY_S from a process of its own (a thread of the test would share
the interpreter lock with the test's own work and measure that instead of
usher); each round it asks a reference server at the same moment (a
trivial process of its own). On a shared host busy with other work both
answers are late together, and such a round says nothing about usher; a
round where usher alone is late (usher_late) does.

Standard library only (run with /usr/bin/python3); every wait is bounded."""

import json
import subprocess
import sys

# How often the poller asks (DESIGN's probes: "polled every 20 ms").
POLL_EVERY_S = 0.020

# usher's probe thread runs at nice -10 where it may (proxy/admin/probe.c),
# its workers at the process's nice: the reference for each runs alike, so
# that both wait alike for a CPU.
PROBE_NICE = -10
WORKER_NICE = 0


POLLER = r"""
import json, os, selectors, socket, subprocess, sys, time
port, path, every = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
try:
    os.nice(-10)  # measure usher, not how long the shared host leaves the poller waiting
except OSError:
    pass
ref = subprocess.Popen([sys.executable, "-c", sys.argv[4], sys.argv[5]], stdout=subprocess.PIPE)
ref_port = int(ref.stdout.readline())
req = ("GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path).encode()
sel = selectors.DefaultSelector()
sel.register(sys.stdin, selectors.EVENT_READ, None)

def ask_both():
    # both requests at once; (seconds, status) for usher and the reference
    m0 = time.monotonic()
    left, out = {}, {}
    for name, p in (("usher", port), ("ref", ref_port)):
        s = socket.create_connection(("127.0.0.1", p), timeout=1.0)
        s.sendall(req)
        s.setblocking(False)
        left[s] = [name, b""]
        sel.register(s, selectors.EVENT_READ, name)
    deadline = m0 + 1.0
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            if s is sys.stdin or s not in left:
                continue
            chunk = s.recv(65536)
            if chunk:
                left[s][1] += chunk
                continue
            name, data = left.pop(s)
            sel.unregister(s)
            s.close()
            try:
                status = int(data.split()[1])
            except (ValueError, IndexError):
                status = None
            out[name] = (time.monotonic() - m0, status)
    for s, (name, _) in left.items():
        sel.unregister(s)
        s.close()
        out[name] = (time.monotonic() - m0, None)
    return out

samples = []
while True:
    t0 = time.time()
    try:
        got = ask_both()
        samples.append((t0, got["usher"][0], got["usher"][1], got["ref"][0]))
    except OSError:
        samples.append((t0, 1.0, None, 0.0))
    if sel.select(max(0.0, every - (time.time() - t0))):
        break  # the test closed our stdin
ref.kill()
json.dump(samples, sys.stdout)
"""

# The reference: answers every connection at once, from a process that
# does nothing else.
REFERENCE = r"""
import os, socket, sys
try:
    os.nice(int(sys.argv[1]))
except OSError:
    pass
host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(128)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfast\n")
    c.close()
"""


class FastBackend:
    """A backend that answers 200 "fast" at once from a process of its own,
    then closes: so what a client measures through usher is usher, not a
    backend sharing the test's interpreter lock. .host, .port, .address."""

    def __init__(self, host="127.0.0.1", port=0):
        self.host, self.port = host, port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-c", REFERENCE, str(WORKER_NICE), self.host,
                                      str(self.port)], stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())
        return self

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None




class Poller:
    """Asks GET <path> on a new connection to <port> every POLL_EVERY_S from
    a child process, each time together with the reference (running at
    <ref_nice>, as the usher thread that answers does); <budget> is how
    long an answer may take. After stop(), .samples is [(start wall time,
    seconds taken, status or None, seconds the reference took in the same
    round)]."""

    def __init__(self, port, path, budget, ref_nice):
        self.port, self.path, self.budget, self.ref_nice = port, path, budget, ref_nice
        self.samples = []
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-c", POLLER, str(self.port), self.path,
                                      str(POLL_EVERY_S), REFERENCE, str(self.ref_nice)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self

    def stop(self):
        if not self.proc:
            return
        try:
            out, _ = self.proc.communicate(input=b"", timeout=10.0)
            self.samples = [tuple(s) for s in json.loads(out or b"[]")]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def usher_late(self, since=0.0, until=float("inf")):
        """(rounds in [since, until], the slowest answer, the rounds where
        usher took the budget or more while the reference, asked at the
        same moment, answered in less than half of it)."""
        inside = [s for s in self.samples if since <= s[0] <= until]
        late = [s for s in inside if s[1] >= self.budget and s[3] < self.budget / 2]
        return inside, max((s[1] for s in inside), default=0.0), late
