#!/usr/bin/python3
"""Idle keep-alive clients for scripts/bench (scenario "idle").

Opens N connections to a proxy, sends one keep-alive request on each, reads the
response, then leaves the connection open and idle. Measures the RSS of the
given processes before and after, checks how many connections are still open,
prints one line starting with "IDLE", and closes everything.

Usage: idle_clients.py --port P --conns N --pids PID[,PID...] [--settle S]
--pids: the processes that serve traffic (usher; the HAProxy/nginx worker).
"""
import argparse
import resource
import select
import socket
import sys
import time

BATCH = 250  # connections opened before reading their responses (under every listen backlog)
IO_TIMEOUT_S = 10.0
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: usher-bench-idle\r\n\r\n"


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def read_response(sock):
    """Reads one response with a Content-Length body; returns its status or -1."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            return -1
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return -1
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return -1
        body += chunk
    return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--pids", required=True)
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.conns + 64 > hard:
        print(f"idle_clients: RLIMIT_NOFILE {hard} too low for {args.conns} connections", file=sys.stderr)
        return 2

    before = rss_kb(pids)
    socks, ok, failed = [], 0, 0
    t0 = time.monotonic()
    for start in range(0, args.conns, BATCH):
        batch = []
        for _ in range(min(BATCH, args.conns - start)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(IO_TIMEOUT_S)
            try:
                s.connect(("127.0.0.1", args.port))
                s.sendall(REQUEST)
                batch.append(s)
            except OSError:
                failed += 1
                s.close()
        for s in batch:
            try:
                status = read_response(s)
            except (OSError, ValueError):
                status = -1
            if status == 200:
                ok += 1
            else:
                failed += 1
        socks.extend(batch)
    open_s = time.monotonic() - t0
    time.sleep(args.settle)
    after = rss_kb(pids)

    # A connection the proxy closed is readable (EOF); an idle open one is not.
    alive = 0
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN)
    readable = {fd for fd, _ in poller.poll(0)}
    alive = sum(1 for s in socks if s.fileno() not in readable)
    for s in socks:
        s.close()
    print(f"IDLE opened={len(socks)} ok={ok} failed={failed} alive={alive} "
          f"rss_before_kb={before} rss_after_kb={after} open_s={open_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
