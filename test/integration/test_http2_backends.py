"""HTTP/2 to backends (pools[].protocol h2c; DESIGN "HTTP/2 and gRPC",
backends): HTTP/1.1 and HTTP/2 clients against h2c backends (a scripted
python3-h2 one, and nghttpd), streams multiplexed over few connections, a
new connection at the backend's SETTINGS_MAX_CONCURRENT_STREAMS, a
backend's GOAWAY with a low last-stream-id (the streams above it sent
again, every request answered), a backend killed outright (the retry
rules), per-stream timeouts, the pooled-connection rules per connection,
and flow control as backpressure both ways."""

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

import usher_proc
import wire
from h2backend import H2Backend
from h2client import H2Conn
from servers import Backend
from wire import HOST, free_port, wait_until

H2C = {"protocol": "h2c"}


def h2_backend(servers, name, **kw):
    return servers.add(H2Backend(name, **kw).start())


def start(usher_factory, pools, pool_opts=None, **kw):
    opts = {p: dict(H2C) for p in pools}
    for p, o in (pool_opts or {}).items():
        opts[p].update(o)
    return usher_factory(pools=pools, pool_opts=opts, **kw)


def raw_until(port, request, *marks, timeout=5.0):
    """Sends <request> on a new connection and reads until each of <marks>
    was seen, in order (bounded). Returns the bytes."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.sendall(request)
    data, pos, deadline = b"", 0, time.monotonic() + timeout
    for m in marks:
        while data.find(m, pos) < 0:
            assert time.monotonic() < deadline, data
            d = s.recv(65536)
            assert d, data
            data += d
        pos = data.find(m, pos) + len(m)
    s.close()
    return data


# --- translation both ways -------------------------------------------------------------

def test_http1_client_to_h2c_backend(servers, usher_factory):
    b = h2_backend(servers, "h2-1")
    u = start(usher_factory, {"p": [b]})
    st, hs, body = wire.http_get(u.port, "/hello?x=1", headers={"X-Custom": "yes"})
    assert st == 200 and body.startswith(b"conn=1 stream=1 method=GET path=/hello?x=1"), body
    assert hs["x-backend"] == "h2-1"
    r = b.reqs[-1]
    assert r.headers[":authority"].startswith("127.0.0.1:") and r.headers[":scheme"] == "http"
    assert r.headers["x-custom"] == "yes" and r.headers["x-forwarded-for"] == "127.0.0.1"
    assert "connection" not in r.headers and "host" not in r.headers
    # a body with a length, and a chunked one (the backend gets DATA, no framing)
    body = wire.pattern_bytes(300000)
    st, _, got = wire.http_get(u.port, "/echo", method="POST", body=body)
    assert st == 200 and got == body
    c = wire.RawConn(u.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n")
    resp = c.read_response()
    assert resp.status == 200 and resp.body == b"hello world", resp
    assert b.reqs[-1].headers.get(":authority") == "a.test"
    # HEAD: the length said, no body
    st, hs, got = wire.http_get(u.port, "/x", method="HEAD")
    assert st == 200 and got == b"" and int(hs["content-length"]) > 0
    # a large download, and trailers as a chunked body's trailer section
    st, _, got = wire.http_get(u.port, "/big?n=2000000")
    assert st == 200 and got == wire.pattern_bytes(2000000)
    raw = raw_until(u.port, b"GET /trailers HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\n\r\n",
                    b"\r\n0\r\n", b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in raw and b"x-checksum: abc123\r\n" in raw, raw
    assert b.reqs[-1].headers.get("te") == "trailers"
    # an answer's status passes through
    st, _, got = wire.http_get(u.port, "/status?code=404")
    assert st == 404 and got == b"status 404\n"


def test_http2_client_to_h2c_backend(servers, usher_factory):
    b = h2_backend(servers, "h2-1")
    u = start(usher_factory, {"p": [b]})
    c = H2Conn(u.port)
    r = c.get("/a", headers=[("x-custom", "1"), ("te", "trailers")])
    assert r.status == 200 and b"method=GET path=/a" in r.body
    assert b.reqs[-1].headers["te"] == "trailers" and b.reqs[-1].headers["x-custom"] == "1"
    body = wire.pattern_bytes(500000)
    r = c.response(c.request("/echo", method="POST", body=body), timeout=10)
    assert r.status == 200 and r.body == body
    r = c.get("/trailers")
    assert r.status == 200 and r.body == b"trailers follow\n"
    assert r.trailers == [("x-checksum", "abc123"), ("x-count", "1")], r.trailers
    r = c.get("/big?n=3000000", timeout=10)
    assert r.body == wire.pattern_bytes(3000000)
    c.close()


def test_clients_to_nghttpd(servers, usher_factory, tmp_path):
    """A plain non-gRPC HTTP/2 server (nghttpd, C, h2c) behind usher."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(b"from nghttpd\n")
    big = wire.pattern_bytes(1500000)
    (root / "big.bin").write_bytes(big)
    port = free_port()
    p = subprocess.Popen(["nghttpd", "--no-tls", "-a", HOST, "-d", str(root), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: not wire.connect_refused(port), 5.0, what="nghttpd listening")
        u = start(usher_factory, {"p": [{"name": "nghttpd", "address": "%s:%d" % (HOST, port)}]})
        assert wire.http_get(u.port, "/index.html")[2] == b"from nghttpd\n"
        assert wire.http_get(u.port, "/big.bin")[2] == big
        c = H2Conn(u.port)
        sids = [c.request("/big.bin") for _ in range(4)] + [c.request("/index.html")]
        for sid in sids[:4]:
            assert c.response(sid, timeout=10).body == big
        assert c.response(sids[4]).body == b"from nghttpd\n"
        c.close()
    finally:
        p.terminate()
        p.wait(5)


# --- multiplexing ----------------------------------------------------------------------

def test_streams_share_one_connection(servers, usher_factory):
    """Twenty streams of one client go over one backend connection (its
    SETTINGS allow more); none waits for another."""
    b = h2_backend(servers, "h2-1")
    u = start(usher_factory, {"p": [b]})
    c = H2Conn(u.port)
    t0 = time.monotonic()
    sids = [c.request("/slow?ms=400") for _ in range(20)]
    for sid in sids:
        assert c.response(sid, timeout=5).status == 200
    assert time.monotonic() - t0 < 3.0  # concurrent, not 20 x 400 ms
    assert b.conns == 1 and len({r.stream for r in b.reqs}) == 20
    c.close()


def test_max_concurrent_streams_opens_another_connection(servers, usher_factory):
    """A backend that takes 2 streams at a time: 5 at once need 3 connections."""
    b = h2_backend(servers, "h2-1", max_streams=2)
    u = start(usher_factory, {"p": [b]})
    c = H2Conn(u.port)
    assert c.get("/first").status == 200  # its SETTINGS are known from now on
    sids = [c.request("/slow?ms=500") for _ in range(5)]
    for sid in sids:
        assert c.response(sid, timeout=5).status == 200
    slow = b.paths("/slow")
    per_conn = {}
    for r in slow:
        per_conn[r.conn] = per_conn.get(r.conn, 0) + 1
    assert b.conns == 3 and sorted(per_conn.values()) == [1, 2, 2], per_conn
    c.close()


# --- a backend's GOAWAY is a drain --------------------------------------------------------

def test_goaway_low_last_stream_id_streams_sent_again(servers, usher_factory):
    """The backend answers GOAWAY with the first of four open streams as its
    last-stream-id, finishes that one and closes: the three above it were
    never processed, and usher sends them again on a new connection
    (POSTs with bodies too: whatever the method). Every request is answered."""
    b = h2_backend(servers, "h2-1", goaway_hold=4)
    u = start(usher_factory, {"p": [b]})
    c = H2Conn(u.port)
    bodies = [wire.pattern_bytes(1000 * (i + 1)) for i in range(4)]
    sids = [c.request("/echo", method="POST", body=bodies[i]) for i in range(4)]
    got = [c.response(sid, timeout=10) for sid in sids]
    assert [r.status for r in got] == [200] * 4, got
    assert [r.body for r in got] == bodies
    assert b.goaways_sent == [(1, 1)]
    # the three above stream 1 arrived again, on connection 2
    firsts = [r for r in b.reqs if r.conn == 1]
    again = [r for r in b.reqs if r.conn == 2]
    assert len(firsts) == 4 and len(again) == 3
    assert sorted(r.body for r in again) == sorted(r.body for r in firsts if r.stream != 1)
    m = u.metrics()
    assert m.get("usher_retries_total", pool="p", reason="refused") == 3
    assert m.sum("usher_backend_responses_total", code="5xx") == 0
    u.wait_log(r"backend goaway .*last_stream_id=1 .*refused=3")
    c.close()


def test_goaway_from_http1_clients(servers, usher_factory):
    """The same with HTTP/1.1 clients (one worker, so their streams share the
    backend connection the GOAWAY comes on)."""
    b = h2_backend(servers, "h2-1", goaway_hold=3)
    u = start(usher_factory, {"p": [b]}, extra={"workers": 1})
    results = [None] * 3

    def call(i):
        results[i] = wire.http_get(u.port, "/echo", method="PUT", body=b"x%d" % i * 100,
                                   timeout=10)

    ts = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(15)
    assert [r[0] for r in results] == [200] * 3
    assert [r[2] for r in results] == [b"x%d" % i * 100 for i in range(3)]
    assert b.conns == 2 and len([r for r in b.reqs if r.conn == 2]) == 2


def test_backend_killed_streams_follow_retry_rules(servers, usher_factory):
    """Streams in flight when their backend dies: an idempotent body-less
    request goes once to another backend, a POST gets 502 (it may have been
    processed)."""
    b1 = h2_backend(servers, "h2-1")
    b2 = h2_backend(servers, "h2-2", silent=())
    u = start(usher_factory, {"p": [b1, b2]}, timeouts={"backend": "10s"})
    c = H2Conn(u.port)
    gets = [c.request("/silent?g=%d" % i) for i in range(6)]
    posts = [c.request("/silent?p=%d" % i, method="POST", body=b"data") for i in range(6)]
    # b2 answers what it gets; b1 holds its share until it dies
    wait_until(lambda: len(b1.reqs) + len([r for r in b2.reqs]) >= 12, 5.0, what="12 streams")
    at_b1 = {r.headers[":path"] for r in b1.reqs}
    assert at_b1, "round robin sent nothing to h2-1"
    b1.kill()
    for sid in gets:
        r = c.response(sid, timeout=10)
        assert r.status == 200 and r.header("x-backend") == "h2-2", r
    for i, sid in enumerate(posts):
        r = c.response(sid, timeout=10)
        if "/silent?p=%d" % i in at_b1:
            assert r.status == 502, r
        else:
            assert r.status == 200, r
    m = u.metrics()
    assert m.get("usher_retries_total", pool="p", reason="reset") == len(
        [p for p in at_b1 if "?g=" in p])
    assert m.get("usher_retries_total", pool="p", reason="refused") in (None, 0)
    c.close()


# --- per-stream timeouts -----------------------------------------------------------------

def test_silent_stream_times_out_while_others_flow(servers, usher_factory):
    """timeouts.backend counts per stream: a silent stream gets 504 after
    1 s although other streams of the same backend connection keep moving."""
    b = h2_backend(servers, "h2-1")
    u = start(usher_factory, {"p": [b]}, timeouts={"backend": "1s"})
    c = H2Conn(u.port)
    t0 = time.monotonic()
    silent = c.request("/silent", method="POST", body=b"x")
    answered = 0
    while time.monotonic() - t0 < 2.0:
        assert c.get("/slow?ms=100").status == 200
        answered += 1
    r = c.response(silent, timeout=5)
    assert r.status == 504, r
    assert answered >= 8
    assert b.conns == 1  # one connection carried both
    u.wait_log(r"backend failed pool=p backend=h2-1 reason=\"no response within first_byte\"")
    c.close()


# --- pooled-connection rules, per connection ----------------------------------------------

def test_idle_connection_closed_after_backend_idle(servers, usher_factory):
    b = h2_backend(servers, "h2-1")
    u = start(usher_factory, {"p": [b]}, timeouts={"backend_idle": "500ms"})
    assert wire.http_get(u.port, "/a")[0] == 200
    assert wire.http_get(u.port, "/b")[0] == 200
    t0 = time.monotonic()
    wait_until(lambda: b.open_conns == 0, 3.0, what="the idle backend connection closed")
    assert time.monotonic() - t0 >= 0.2


def test_draining_backend_connection_closes_after_last_stream(servers, usher_factory):
    """A drained backend gets no new stream; its connection carries its
    in-flight stream to the end, then closes, and the drain completes."""
    b1 = h2_backend(servers, "h2-1")
    b2 = h2_backend(servers, "h2-2")
    u = start(usher_factory, {"p": [b1, b2]}, extra={"workers": 1})
    c = H2Conn(u.port)
    slow = [c.request("/slow?ms=1500") for _ in range(2)]  # one on each backend
    wait_until(lambda: len(b1.reqs) == 1 and len(b2.reqs) == 1, 3.0, what="both backends busy")
    st, body, _ = u.admin_get("/backends/p/h2-1/drain?deadline=20s", method="POST")
    assert st == 200, body
    for _ in range(6):
        r = c.get("/new")
        assert r.status == 200 and r.header("x-backend") == "h2-2"
    assert b1.open_conns == 1  # still carrying its stream
    for sid in slow:
        assert c.response(sid, timeout=5).status == 200
    wait_until(lambda: b1.open_conns == 0, 3.0, what="h2-1's connection closed")
    d = wait_until(lambda: (u.backend_status("p", "h2-1")["drain"] or {}).get("complete"), 3.0,
                   what="drain complete")
    assert d
    c.close()


# --- flow control as backpressure ----------------------------------------------------------

def test_download_to_a_slow_reader_is_bounded(servers, usher_factory):
    """16 MB from an h2c backend to an HTTP/1.1 client that reads nothing:
    the stream's window stays shut, so usher holds a bounded amount; the
    bytes then arrive whole."""
    b = h2_backend(servers, "h2-1")
    u = start(usher_factory, {"p": [b]})
    n = 16 * 1024 * 1024
    s = socket.create_connection((HOST, u.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    rss0 = u.rss_kb()
    s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
    time.sleep(2.0)
    grown = u.rss_kb() - rss0
    assert grown < 8 * 1024, "usher grew %d KB for a reader that reads nothing" % grown
    h = hashlib.sha256()
    r = wire.RawConn(u.port, sock=s, timeout=20).read_response(sink=h.update)
    assert r.status == 200 and r.complete
    total = n
    assert total == n and h.hexdigest() == wire.pattern_sha256(n)
    s.close()


def test_upload_to_a_backend_that_takes_nothing_is_bounded(servers, usher_factory):
    """A backend that never opens its window: usher takes no more of the
    client's upload than its buffers hold, and the client is stopped."""
    b = h2_backend(servers, "h2-1", ack_data=False, silent=("/echo",))
    u = start(usher_factory, {"p": [b]}, timeouts={"backend": "3s"})
    s = socket.create_connection((HOST, u.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
    s.setblocking(False)
    sent = 0
    chunk = b"z" * 65536
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            time.sleep(0.02)
    # the backend's window (65,535) + usher's buffers + the sockets' buffers
    assert sent < 8 << 20, sent
    assert b.unacked <= 65535
    s.close()
