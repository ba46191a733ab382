"""Large response bodies between plain TCP sockets move kernel to kernel
(splice(2) through a pipe) and nothing a client or an operator sees changes:
every byte arrives exactly once, keep-alive and pipelining still work, the
access log and the byte counters say exactly what went out, a slow client
holds usher back (the pipe is bounded), and a body cut by either side is
counted as aborted. While a body is spliced usher holds a pipe: the tests
look at /proc/PID/fd to be sure the splice path is the one under test."""

import hashlib
import os
import socket
import time

import wire
from servers import ScriptedServer, read_head
from test_proxy_bodies import RssSampler
from wire import RateLimiter, RawConn, build_request, pattern_chunks, pattern_sha256

MB = 1024 * 1024
# usher keeps at most this many idle pipes per worker (KPIPE_IDLE_MAX)
IDLE_PIPES_MAX = 8


def _pipe_fds(pid):
    n = 0
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)).startswith("pipe:"):
                n += 1
        except OSError:
            pass
    return n


def _metric(u, name, **labels):
    return u.metrics().get(name, **labels) or 0


def _requests(u, code):
    return _metric(u, "usher_requests_total", listener="web", code=code)


def _access(u, n):
    wire.wait_until(lambda: len(u.log_lines("access")) >= n, 3.0, what="%d access lines" % n)
    return [a["kv"] for a in u.log_lines("access")]


class Sink:
    """Hashes and counts the body bytes a client read."""

    def __init__(self, rate=None):
        self.h = hashlib.sha256()
        self.n = 0
        self.lim = RateLimiter(rate) if rate else None

    def __call__(self, d):
        self.h.update(d)
        self.n += len(d)
        if self.lim:
            self.lim.consumed(len(d))

    def exact(self, n):
        return self.n == n and self.h.hexdigest() == pattern_sha256(n)


def test_spliced_bodies_exact_pipelined_and_counted(backend_factory, usher_factory):
    """Two pipelined 4 MB answers and a third on the same connection: each
    body exact, the connection reused, and the access log and
    usher_response_bytes_total count head + body to the byte."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, log={"access": True})
    n = 4 * MB
    out0 = _metric(u, "usher_response_bytes_total", listener="web")
    received = []
    with RawConn(u.port, timeout=30) as c:
        c.send(build_request("GET", "/big?bytes=%d" % n) + build_request("GET", "/big?bytes=%d" % n))
        for _ in range(3):
            if len(received) == 2:
                c.send(build_request("GET", "/big?bytes=%d" % n))
            s = Sink()
            r = c.read_response(sink=s, timeout=30)
            assert r.status == 200 and r.complete and s.exact(n), r
            received.append(len(r.raw_head) + s.n)
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r
        received.append(len(r.raw_head) + len(r.body))
    lines = _access(u, 4)
    assert [int(a["bytes"]) for a in lines] == received
    wire.wait_until(lambda: _metric(u, "usher_response_bytes_total", listener="web") - out0 ==
                    sum(received), 3.0, what="usher_response_bytes_total to count every byte")
    assert len(b.reqs()) == 4 and len({r.conn_id for r in b.reqs()}) == 1, \
        "the backend connection was not reused"


def test_spliced_close_delimited_body(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, log={"access": True})
    n = 8 * MB + 12345
    ok0, aborted0 = _requests(u, "2xx"), _requests(u, "aborted")
    with RawConn(u.port, timeout=30) as c:
        s = Sink()
        c.send(build_request("GET", "/close-delimited?bytes=%d" % n))
        r = c.read_response(sink=s, timeout=30)
        assert r.status == 200 and r.closed and s.exact(n), r
    (line,) = _access(u, 1)
    assert int(line["bytes"]) == len(r.raw_head) + n
    wire.wait_until(lambda: _requests(u, "2xx") == ok0 + 1, 3.0, what="the answer counted 2xx")
    assert _requests(u, "aborted") == aborted0


def test_spliced_body_slow_client_holds_backend_back(proxy):
    """A client reading 16 MB at 8 MB/s: a pipe is in use while it reads,
    RSS stays flat (the body is not buffered in usher), bytes exact, and
    the pipe goes back to the pool afterwards (no descriptor leak)."""
    n = 16 * MB
    pid = proxy.usher.pid
    base = _pipe_fds(pid)
    with RssSampler(proxy.usher) as rss, RawConn(proxy.port, timeout=30) as c:
        c.send(build_request("GET", "/big?bytes=%d" % n))
        s = Sink(rate=8 * MB)
        seen = []

        def sink(d):
            s(d)
            if not seen and s.n > 4 * MB:
                seen.append(_pipe_fds(pid))

        r = c.read_response(sink=sink, timeout=30)
        assert r.status == 200 and r.complete and s.exact(n), r
        assert seen and seen[0] >= base + 2, (
            "no pipe held while a 16 MB body went to a slow client (pipe fds %d, before %d): "
            "the body did not take the splice path" % (seen[0] if seen else -1, base))
        assert c.request("GET", "/").body == b"blue-1"
    rss.check("16 MB spliced download to a slow reader")
    assert _pipe_fds(pid) <= base + 2 * IDLE_PIPES_MAX


def test_client_closing_mid_spliced_body_is_aborted(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, log={"access": True})
    n = 64 * MB
    pid = u.pid
    base = _pipe_fds(pid)
    ok0, aborted0 = _requests(u, "2xx"), _requests(u, "aborted")
    c = RawConn(u.port, timeout=10)
    c.send(build_request("GET", "/big?bytes=%d&rate=%d" % (n, 16 * MB)))
    head = c.read_head()
    assert head.status == 200
    got = len(c.buf)
    while got < 2 * MB:
        got += len(c.sock.recv(262144))
    # unread bytes in the receive buffer: the close sends an RST
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    wire.wait_until(lambda: _requests(u, "aborted") == aborted0 + 1, 5.0,
                    what="the cut answer counted as aborted")
    assert _requests(u, "2xx") == ok0
    (line,) = _access(u, 1)
    assert got <= int(line["bytes"]) - len(head.raw_head) < n
    # usher goes on serving, and the pipe of the cut body was not leaked
    with RawConn(u.port) as c2:
        assert c2.request("GET", "/").body == b"blue-1"
    wire.wait_until(lambda: _pipe_fds(pid) <= base + 2 * IDLE_PIPES_MAX, 3.0,
                    what="pipes given back")


def _cut_after(total, sent, rst):
    def script(s):
        if not read_head(s):
            return
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for piece in pattern_chunks(sent, chunk=65536):
            s.sendall(piece)
        time.sleep(0.2)  # the bytes sent so far reach usher before the cut
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    return script


def _backend_cut(servers, usher_factory, rst):
    total, sent = 8 * MB, 3 * MB
    srv = servers.add(ScriptedServer(_cut_after(total, sent, rst)).start())
    u = usher_factory(pools={"blue": [{"name": "blue-1", "address": srv.address}]},
                      log={"access": True})
    ok0, aborted0 = _requests(u, "2xx"), _requests(u, "aborted")
    with RawConn(u.port, timeout=10) as c:
        s = Sink()
        c.send(build_request("GET", "/"))
        r = c.read_response(sink=s, timeout=10)
        assert r.status == 200 and not r.complete and r.closed, r
    wire.wait_until(lambda: _requests(u, "aborted") == aborted0 + 1, 5.0,
                    what="the cut answer counted as aborted")
    assert _requests(u, "2xx") == ok0
    (line,) = _access(u, 1)
    # what went out is what the client got: a prefix of the body, to the byte
    assert int(line["bytes"]) == len(r.raw_head) + s.n
    assert s.n <= sent and s.h.hexdigest() == hashlib.sha256(wire.pattern_bytes(s.n)).hexdigest()
    if not rst:
        assert s.n == sent  # a FIN loses nothing that was sent before it
    assert u.log_lines("backend failed")


def test_backend_fin_mid_spliced_body_is_aborted(servers, usher_factory):
    _backend_cut(servers, usher_factory, rst=False)


def test_backend_rst_mid_spliced_body_is_aborted(servers, usher_factory):
    _backend_cut(servers, usher_factory, rst=True)
