"""Drain courtesy toward clients (issue 12 items 1-3): close spreading
(shutdown.close_spread), after-request idle close (shutdown.idle_close:
after_request) and the lingering close."""

import selectors
import signal
import socket
import threading
import time

from usher_proc import drain_signal
from wire import HOST, RawConn, build_request

IDLE_CLIENTS = 1000
SPREAD_S = 2.0


def _open_idle(port, n):
    """<n> keep-alive connections, each having had one request answered."""
    socks = []
    req = build_request("GET", "/", headers=[("Host", "t")])
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=5.0)
        s.sendall(req)
        socks.append(s)
    for s in socks:
        got = b""
        while b"\r\n\r\n" not in got or not got.endswith(b"blue-1"):
            chunk = s.recv(4096)
            assert chunk, "closed before the first answer"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200"), got
        s.setblocking(False)
    return socks


def _close_times(socks, timeout):
    """Monotonic time at which each socket saw its EOF (None: still open)."""
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    times = [None] * len(socks)
    left = len(socks)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            i = key.data
            try:
                data = socks[i].recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data == b"":
                times[i] = time.monotonic()
                sel.unregister(socks[i])
                left -= 1
    sel.close()
    return times


def test_close_spread_closes_idle_connections_evenly(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]},
                      shutdown={"timeout": "6s", "close_spread": "%ds" % SPREAD_S},
                      limits={"max_connections": 4000})
    idle = _open_idle(u.port, IDLE_CLIENTS)

    # clients that keep sending on their connection during the window
    senders, results, stop = [], [], threading.Event()
    for _ in range(10):
        c = RawConn(u.port, timeout=5.0)
        assert c.request("GET", "/").status == 200
        senders.append(c)

    def keep_sending(c):
        out = []
        while not stop.is_set():
            try:
                r = c.request("GET", "/")
            except Exception as e:  # pylint: disable=broad-except
                out.append(("error", repr(e)))
                return out
            out.append(("ok" if r.status == 200 else "status %d" % r.status,
                        r.has_token("connection", "close")))
            if r.has_token("connection", "close"):
                return out
            time.sleep(0.1)
        return out

    threads = []
    for c in senders:
        t = threading.Thread(target=lambda c=c: results.append(keep_sending(c)), daemon=True)
        threads.append(t)

    t0 = drain_signal(u, signal.SIGTERM)
    for t in threads:
        t.start()
    u.wait_log(r"shutdown listeners closed", 2.0)
    times = _close_times(idle, SPREAD_S + 3.0)
    stop.set()
    for t in threads:
        t.join(5.0)
    for s in idle:
        s.close()
    for c in senders:
        c.close()

    assert all(t is not None for t in times), "%d idle connections never closed" % (
        sum(t is None for t in times))
    rel = [t - t0 for t in times]
    # the spread: over the window, not at once
    assert max(rel) > SPREAD_S * 0.8, "last close %.2fs after SIGTERM" % max(rel)
    assert max(rel) < SPREAD_S + 1.0, "last close %.2fs after SIGTERM" % max(rel)
    slices = [0] * 10
    for r in rel:
        slices[min(9, max(0, int(r / (SPREAD_S / 10))))] += 1
    print("close_spread: closes per 10%% slice of %.1fs: %s, last %.2fs" % (SPREAD_S, slices, max(rel)))
    assert max(slices) <= IDLE_CLIENTS * 0.20, "closes per 10%% slice: %s" % slices
    # the clients that kept sending: every answer a 200, the last one with Connection: close
    assert len(results) == len(senders), results
    for out in results:
        assert out and all(o[0] == "ok" for o in out), out
        assert out[-1][1], "no Connection: close before the connection went: %s" % out
    assert u.wait_exit(SPREAD_S + 3.0) == 0, u.log()
    line = u.log_lines("shutdown idle connections closed")[0]
    assert line["kv"]["close_spread_ms"] == str(int(SPREAD_S * 1000)), line


def test_idle_close_after_request_serves_the_next_request(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]},
                      shutdown={"timeout": "2s", "idle_close": "after_request"})
    reuse = RawConn(u.port)
    assert reuse.request("GET", "/").status == 200
    quiet = RawConn(u.port)
    assert quiet.request("GET", "/").status == 200
    t0 = drain_signal(u, signal.SIGTERM)
    u.wait_log(r"shutdown listeners closed", 2.0)
    # what an upstream load balancer does: reuse its idle connection right away
    r = reuse.request("GET", "/")
    assert r.status == 200 and r.body == b"blue-1", r
    assert r.has_token("connection", "close"), r.raw_head
    assert reuse.wait_closed(2.0) == b""
    # a connection that sends nothing is kept (its next request would be served)...
    time.sleep(0.5)
    assert quiet.is_open(), "an idle connection was closed with idle_close: after_request"
    # ... until shutdown.timeout: closing idle connections cuts nothing, exit 0
    assert quiet.wait_closed(3.0) == b""
    assert time.monotonic() - t0 > 1.5
    assert u.wait_exit(2.0) == 0, u.log()
    line = u.log_lines("shutdown timeout")[0]
    assert line["kv"]["cut"] == "0" and line["kv"]["exit_code"] == "0", line
    reuse.close()
    quiet.close()


def test_lingering_close_keeps_the_first_response_whole(backend_factory, usher_factory):
    """Three pipelined requests, the first one with Connection: close: usher
    answers it and closes; the unread pipelined bytes must not turn the close
    into an RST that destroys the 1 MB response still in flight."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    n = 1 << 20
    with RawConn(u.port, timeout=5.0) as c:
        c.send(build_request("GET", "/big?bytes=%d" % n, headers=[("Connection", "close")]) +
               build_request("GET", "/", body=b"x" * 20000,
                             headers=[("Content-Length", "20000")]) +
               build_request("GET", "/"))
        time.sleep(0.3)  # the response sits in the socket buffers, unread
        r = c.read_response("GET", timeout=5.0)
        assert r.status == 200 and len(r.body) == n, (r.status, len(r.body))
        assert r.has_token("connection", "close")
        assert c.wait_closed(3.0) == b""
