"""timeouts: client_header (408), client_idle (silent close), connect
(retry / error), backend (504, or close mid-body). Short values keep the
suite fast; the bounds leave room for a loaded 2-core machine."""

import time

import wire
from servers import Blackhole
from wire import RawConn, build_request

SLACK = 2.0  # seconds a timeout may fire late on a busy machine


def _elapsed(t0):
    return time.monotonic() - t0


def test_client_header_timeout_408(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"client_header": "500ms"})
    with RawConn(u.port, timeout=5) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: usher.test\r\n")
        t0 = time.monotonic()
        r = c.read_response(timeout=0.5 + SLACK + 1)
        dt = _elapsed(t0)
        wire.check_usher_error(c, r, 408, must_close=True)
        assert 0.4 <= dt <= 0.5 + SLACK, "408 after %.2fs" % dt
    assert b.reqs() == []


def test_client_header_timeout_covers_whole_head(backend_factory, usher_factory):
    """Slowloris: a byte now and then must not keep re-arming the timer."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"client_header": "600ms"})
    with RawConn(u.port, timeout=5) as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: usher.test\r\n")
        for i in range(40):
            if not c.send(b"X-Drip-%d: x\r\n" % i) or c.readable(0.1):
                break
        dt = _elapsed(t0)
        r = c.read_response(timeout=3)
        wire.check_usher_error(c, r, 408, must_close=True)
        assert dt <= 0.6 + SLACK, "the head was still accepted after %.2fs" % dt
    assert b.reqs() == []


def test_client_header_timeout_allows_prompt_requests(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"client_header": "500ms"})
    with RawConn(u.port) as c:
        for _ in range(4):  # keep-alive: each new head gets its own budget
            c.send(b"GET / HTTP/1.1\r\n")
            time.sleep(0.2)
            c.send(b"Host: usher.test\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and r.body == b"blue-1", r
            time.sleep(0.2)


def test_client_idle_timeout_closes_silently(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"client_idle": "500ms"})
    with RawConn(u.port) as c:
        r = c.request("GET", "/")
        assert r.status == 200
        t0 = time.monotonic()
        extra = c.wait_closed(0.5 + SLACK + 1)
        dt = _elapsed(t0)
        assert extra == b"", "usher sent bytes on an idle connection: %r" % extra
        assert 0.4 <= dt <= 0.5 + SLACK, "idle connection closed after %.2fs" % dt


def test_client_idle_timer_restarts_per_request(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"client_idle": "500ms"})
    with RawConn(u.port) as c:
        for i in range(5):  # 5 x 0.3 s > 0.5 s in total, never idle 0.5 s
            r = c.request("GET", "/?i=%d" % i)
            assert r.status == 200, r
            time.sleep(0.3)
        assert c.is_open(0.01)


def test_client_idle_does_not_cut_a_slow_response(backend_factory, usher_factory):
    """A request waiting for its backend is not idle."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"client_idle": "300ms"})
    with RawConn(u.port) as c:
        r = c.request("GET", "/slow?ms=900")
        assert r.status == 200 and r.body == b"blue-1", r


def test_backend_timeout_504(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "500ms"})
    with RawConn(u.port) as c:
        c.send(build_request("GET", "/hang"))
        t0 = time.monotonic()
        r = c.read_response(timeout=0.5 + SLACK + 1)
        dt = _elapsed(t0)
        wire.check_usher_error(c, r, 504, must_close=False)
        assert 0.4 <= dt <= 0.5 + SLACK, "504 after %.2fs" % dt
    # the hung upstream connection is given up, not pooled
    wire.wait_until(lambda: b.conns_active == 0, 3.0, what="the timed-out upstream connection to close")
    with RawConn(u.port) as c:
        assert c.request("GET", "/").status == 200


def test_backend_timeout_mid_body_closes(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "500ms"})
    with RawConn(u.port) as c:
        c.send(build_request("GET", "/stall?bytes=100000&after=3000"))
        t0 = time.monotonic()
        r = c.read_response(timeout=0.5 + SLACK + 2)
        dt = _elapsed(t0)
        assert r.status == 200 and not r.complete and r.closed, r
        assert len(r.body) == 3000
        assert 0.4 <= dt <= 0.5 + SLACK, "closed after %.2fs" % dt


def test_backend_timeout_is_per_byte_not_total(backend_factory, usher_factory):
    """backend: no byte for that long. A response trickling a chunk every
    ~250 ms for ~1.5 s in total must not be cut by a 700 ms timeout."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "700ms"})
    n = 65536 * 7
    with RawConn(u.port, timeout=10) as c:
        r = c.request("GET", "/big?bytes=%d&rate=%d" % (n, 65536 * 4))
        assert r.status == 200 and r.complete and len(r.body) == n, r
        r = c.request("GET", "/slow?ms=400")
        assert r.status == 200


def test_connect_timeout_no_alternative(usher_factory):
    bh = Blackhole()
    try:
        u = usher_factory(pools={"blue": [{"name": "hole", "address": bh.address, "weight": 1}]},
                          timeouts={"connect": "300ms"})
        with RawConn(u.port) as c:
            c.send(build_request("GET", "/"))
            t0 = time.monotonic()
            r = c.read_response(timeout=0.3 + SLACK + 2)
            dt = _elapsed(t0)
            assert r.status in (502, 504), r
            wire.check_usher_error(c, r, r.status, must_close=False)
            assert 0.25 <= dt <= 0.3 + SLACK, "answered after %.2fs" % dt
    finally:
        bh.close()


def test_connect_timeout_retried_on_other_backend(backend_factory, usher_factory):
    bh = Blackhole()
    try:
        b = backend_factory("blue-1")
        u = usher_factory(pools={"blue": [{"name": "hole", "address": bh.address, "weight": 1}, b]},
                          timeouts={"connect": "300ms"})
        with RawConn(u.port) as c:
            t0 = time.monotonic()
            for i in range(4):
                r = c.request("GET", "/?i=%d" % i, timeout=5)
                assert r.status == 200 and r.body == b"blue-1", r
            assert _elapsed(t0) < 4 * (0.3 + SLACK)
        assert len(b.reqs()) == 4
    finally:
        bh.close()
