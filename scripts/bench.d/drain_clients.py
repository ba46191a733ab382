#!/usr/bin/python3
"""Drain scenario helper for scripts/bench: keep-alive clients on a proxy,
then a graceful stop of the proxy; what the clients and the next hop see.

--conns clients each keep one connection to the proxy (--port) and send
GET / every 0..--interval s, at random (so most of the time their
connection is idle, the way a load balancer's pool is). After warm-up the helper sends --signal to
--pid. A client whose connection the proxy closes reconnects to the next
hop (--next-port: the stand-in for the proxy's replacement) and goes on
there. Printed, one line: BENCH errors=E closes=C peak_per_100ms=P
first_close_ms=F last_close_ms=L, where an error is a request that got no
response (the connection closed or reset under it), and peak_per_100ms the
most reconnects the next hop saw in one 100 ms slot.

Loopback only, bounded: --window seconds after the signal, then it stops.
"""
import argparse
import os
import random
import selectors
import signal
import socket
import time

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
SLOT_S = 0.1


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self.sock.setblocking(False)
        self.buf = b""
        self.waiting = False     # a request is out, its response not in yet
        self.next_at = 0.0
        self.on_proxy = True


def parse(buf):
    """(complete, close, rest) for one response at the front of <buf>."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return False, False, buf
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v.strip())
        elif k == b"connection" and b"close" in v.lower():
            close = True
    if len(rest) < length:
        return False, False, buf
    return True, close, rest[length:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--next-port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--signal", required=True)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=2.0)
    a = ap.parse_args()

    sel = selectors.DefaultSelector()
    clients = [Client(a.port) for _ in range(a.conns)]
    now = time.monotonic()
    for c in clients:
        c.next_at = now   # a first request at once: every connection is a keep-alive one
        sel.register(c.sock, selectors.EVENT_READ, c)
    errors = closes = 0
    close_times = []
    t0 = None
    start = now
    end = now + a.warmup + a.window

    def reconnect(c, t):
        nonlocal closes
        sel.unregister(c.sock)
        c.sock.close()
        if c.on_proxy:
            closes += 1
            if t0 is not None:
                close_times.append(t - t0)
        c.on_proxy = False
        c.sock = socket.create_connection(("127.0.0.1", a.next_port), timeout=5.0)
        c.sock.setblocking(False)
        c.buf = b""
        sel.register(c.sock, selectors.EVENT_READ, c)

    while time.monotonic() < end:
        now = time.monotonic()
        if t0 is None and now >= start + a.warmup:
            t0 = time.monotonic()
            os.kill(a.pid, getattr(signal, a.signal))
        for c in clients:
            if not c.waiting and now >= c.next_at:
                try:
                    c.sock.send(REQ)
                    c.waiting = True
                except OSError:
                    if c.waiting:
                        errors += 1
                    reconnect(c, now)
                    c.next_at = now
        for key, _ in sel.select(0.01):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            t = time.monotonic()
            if not data:
                if c.waiting:
                    errors += 1      # the request got no answer
                    c.waiting = False
                reconnect(c, t)
                c.next_at = t
                continue
            c.buf += data
            done, close, rest = parse(c.buf)
            if done:
                c.buf = rest
                c.waiting = False
                c.next_at = t + random.random() * a.interval
                if close:
                    reconnect(c, t)
    slots = {}
    for t in close_times:
        slots[int(t / SLOT_S)] = slots.get(int(t / SLOT_S), 0) + 1
    peak = max(slots.values()) if slots else 0
    if os.environ.get("DRAIN_SLOTS"):
        print("slots", [slots.get(i, 0) for i in range(max(slots) + 1 if slots else 0)])
    first = min(close_times) * 1000 if close_times else -1
    last = max(close_times) * 1000 if close_times else -1
    print(f"BENCH errors={errors} closes={closes} peak_per_100ms={peak} "
          f"first_close_ms={first:.0f} last_close_ms={last:.0f}")
    for c in clients:
        c.sock.close()


if __name__ == "__main__":
    main()
