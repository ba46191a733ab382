"""Data plane edge cases: framing corner cases on both sides, response
smuggling from a backend, the keep-alive race, half-closed clients,
max_connections, and errors on reused client connections."""

import socket
import threading
import time

import pytest

import wire
from wire import RawConn, build_request, pattern_bytes

H = b"Host: usher.test\r\n"


# --- errors on a connection that already served a request ------------------------

@pytest.mark.parametrize("data,code", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                     # no Host
    (b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 17000 + b"\r\n\r\n", 431),
], ids=["400", "414", "431"])
def test_error_on_reused_client_connection(proxy, data, code):
    with proxy.conn() as c:
        assert c.request("GET", "/first").status == 200
        c.send(data)
        r = c.read_response()
        wire.check_usher_error(c, r, code, must_close=True)


def test_error_after_head_request_has_a_body(proxy):
    """An usher-made 400 after a HEAD exchange is a normal response with its body."""
    with proxy.conn() as c:
        c.send(build_request("HEAD", "/"))
        assert c.read_response(method="HEAD").status == 200
        c.send(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
        r = c.read_response()
        wire.check_usher_error(c, r, 400, must_close=True)


def test_client_header_timeout_on_reused_connection(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"client_header": "500ms"})
    with RawConn(u.port) as c:
        assert c.request("GET", "/").status == 200
        c.send(b"GET /second HTTP/1.1\r\n")
        r = c.read_response(timeout=4)
        wire.check_usher_error(c, r, 408, must_close=True)


def test_503_on_head_request_has_no_body(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [(b, 0)]})
    with RawConn(u.port) as c:
        c.send(build_request("HEAD", "/"))
        r = c.read_response(method="HEAD")
        assert r.status == 503 and r.body == b""
        if not r.has_token("connection", "close"):
            r = c.request("GET", "/")
            assert r.status == 503 and len(r.body) > 0, r
        else:
            assert c.wait_closed(3) == b""


# --- request side ---------------------------------------------------------------------

def test_transfer_coding_and_header_names_are_case_insensitive(proxy):
    with proxy.conn() as c:
        c.send(b"POST /upload HTTP/1.1\r\nhost: usher.test\r\ntransfer-encoding: Chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["len"] == 3, r
        c.send(b"POST /upload HTTP/1.1\r\nHOST: usher.test\r\nCONTENT-LENGTH:   4  \r\n\r\nabcd")
        r = c.read_response()
        assert r.status == 200 and r.json()["len"] == 4, r


@pytest.mark.parametrize("data", [
    b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",           # space in the target
    b"GET / HTTP/1.1\r\n" + H + b"X Foo: bar\r\n\r\n",  # space inside a field name
    b"GET / HTTP/1.1\r\n" + H + b": bar\r\n\r\n",       # empty field name
], ids=["space_in_target", "space_in_name", "empty_name"])
def test_malformed_request_400(proxy, data):
    with proxy.conn() as c:
        c.send(data)
        r = c.read_response()
        wire.check_usher_error(c, r, 400, must_close=True)
    assert proxy.backend.reqs() == []


def test_many_pipelined_requests(proxy):
    n = 300
    data = b"".join(build_request("GET", "/?p=%d" % i, headers=[("X-Pad", "x" * 150)])
                    for i in range(n))
    assert len(data) > 60000
    with proxy.conn(timeout=20) as c:
        t = threading.Thread(target=c.send, args=(data,))
        t.start()
        got = [c.read_response() for _ in range(n)]
        t.join(10)
    assert all(r.status == 200 and r.body == b"blue-1" for r in got)
    assert [r.target for r in proxy.backend.reqs()] == ["/?p=%d" % i for i in range(n)]


def test_half_closed_client_still_answered(proxy):
    with proxy.conn() as c:
        c.send(build_request("GET", "/slow?ms=200") + build_request("GET", "/?second"))
        c.sock.shutdown(socket.SHUT_WR)
        r1 = c.read_response()
        r2 = c.read_response()
        assert r1.status == 200 and r2.status == 200 and r2.body == b"blue-1"
        assert c.wait_closed(3) == b""


def test_client_disconnects_mid_upload(proxy):
    c = proxy.conn()
    c.send(build_request("POST", "/upload?rate=200000", headers=[("Content-Length", "5000000")]))
    c.send(pattern_bytes(300000))
    proxy.backend.wait_requests(1, 3)
    c.close()
    wire.wait_until(lambda: proxy.backend.conns_active == 0, 5.0,
                    what="the upstream connection of an aborted upload to close")
    assert not proxy.backend.reqs()[0].complete
    with proxy.conn() as c2:
        assert c2.request("GET", "/").status == 200


def test_expect_100_with_no_backend_answers_at_once(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [(b, 0)]})
    with RawConn(u.port) as c:
        c.send(build_request("POST", "/upload", headers=[("Expect", "100-continue"),
                                                          ("Content-Length", "100000")]))
        r = c.read_response(timeout=2)  # without ever sending the body
        assert r.status == 503, r


def test_backend_answers_before_reading_the_body(proxy):
    """An early final response (e.g. 413) while the client is still sending:
    it is relayed, and the connection ends (the rest of the body cannot be
    told from a next request)."""
    with proxy.conn() as c:
        c.send(build_request("POST", "/early?code=413", headers=[("Content-Length", "2000000")]))
        c.send(pattern_bytes(10000))
        r = c.read_response()
        assert r.status == 413 and r.body == b"early", r
        assert r.has_token("connection", "close") or r.closed, r.raw_head
        c.wait_closed(3)


def test_idle_connection_without_any_request_is_closed(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]},
                      timeouts={"client_header": "500ms", "client_idle": "500ms"})
    with RawConn(u.port) as c:
        t0 = time.monotonic()
        data = c.wait_closed(4)
        assert time.monotonic() - t0 <= 2.5
        assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


def test_max_connections_pauses_accepting(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, limits={"max_connections": 4})
    conns = [RawConn(u.port) for _ in range(4)]
    try:
        for c in conns:
            assert c.request("GET", "/").status == 200
        extra = RawConn(u.port)  # completes in the kernel backlog
        conns.append(extra)
        extra.send(build_request("GET", "/?extra"))
        assert not extra.readable(0.5), "a 5th connection was served with max_connections 4"
        conns[0].close()
        r = extra.read_response(timeout=3)
        assert r.status == 200 and r.body == b"blue-1", r
        assert u.admin_get("/live")[0] == 200
    finally:
        for c in conns:
            c.close()


# --- response side ----------------------------------------------------------------------

def test_http10_client_gets_dechunked_body(proxy):
    with proxy.conn() as c:
        c.send(b"GET /chunked?n=4 HTTP/1.0\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.header("transfer-encoding") is None, "chunked sent to HTTP/1.0: %r" % r.raw_head
        assert r.body == b"".join(b"blue-1 chunk %d\n" % i for i in range(4)), r.body
        assert r.complete


def test_head_of_chunked_resource(proxy):
    with proxy.conn() as c:
        c.send(build_request("HEAD", "/chunked"))
        r = c.read_response(method="HEAD", timeout=3)
        assert r.status == 200 and r.body == b""
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r


def test_304_with_content_length_has_no_body(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/status?code=304&cl=100", timeout=3)
        assert r.status == 304 and r.body == b""
        r = c.request("GET", "/", timeout=3)
        assert r.status == 200 and r.body == b"blue-1", r


def test_head_with_content_length_has_no_body(proxy):
    with proxy.conn() as c:
        c.send(build_request("HEAD", "/status?code=200&cl=12345"))
        r = c.read_response(method="HEAD", timeout=3)
        assert r.status == 200 and r.header("content-length") == "12345"
        r = c.request("GET", "/", timeout=3)
        assert r.status == 200 and r.body == b"blue-1", r


def test_response_cl_and_te_is_not_smuggled(proxy):
    """A backend response with both Content-Length and Transfer-Encoding:
    usher rejects it (502) or frames it by Transfer-Encoding and does not
    forward both headers."""
    with proxy.conn() as c:
        r = c.request("GET", "/cl-te")
        if r.status == 502:
            return
        assert r.status == 200 and r.body == b"chunky", r
        assert not (r.header("content-length") and r.header("transfer-encoding")), r.raw_head
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r


def test_response_duplicate_content_length_502(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/dup-cl")
        wire.check_usher_error(c, r, 502, must_close=False)


def test_response_too_many_headers_502(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/manyheaders?n=150")
        wire.check_usher_error(c, r, 502, must_close=False)
    with proxy.conn() as c:
        r = c.request("GET", "/manyheaders?n=50")
        assert r.status == 200


def test_response_bad_chunk_from_backend(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/badchunk", timeout=5)
        assert r.status == 200
        assert not r.complete and r.closed, "a malformed chunked body was passed on: %r" % r
    with proxy.conn() as c:
        assert c.request("GET", "/").status == 200


def test_response_head_trickled_byte_by_byte(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/trickle-head")
        assert r.status == 200 and r.body == b"blue-1", r


def test_response_hop_by_hop_removed(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/hop")
        assert r.status == 200 and r.body == b"blue-1"
        assert r.header("x-hop") is None, r.raw_head
        assert r.header("keep-alive") is None, r.raw_head
        assert r.header("proxy-connection") is None, r.raw_head
        assert not r.has_token("connection", "x-hop"), r.raw_head
        assert r.header("x-end") == "2"
        assert c.request("GET", "/").status == 200


def test_backend_connection_close_not_pooled(proxy):
    with proxy.conn() as c:
        for i in range(5):
            r = c.request("GET", "/?close=1&i=%d" % i)
            assert r.status == 200 and r.body == b"blue-1", r
            assert not r.has_token("connection", "close"), "client keep-alive lost: %r" % r.raw_head
        assert c.is_open(0.1)
    assert proxy.backend.conns_total == 5


def test_keepalive_race_backend_closes_reused_connection(backend_factory, usher_factory):
    """The backend closes a reused connection right as a request arrives on
    it. A request without a body is retried on a new connection."""
    b = backend_factory("blue-1")
    b.drop_reused = True
    u = usher_factory(pools={"blue": [b]})
    with RawConn(u.port) as c:
        for i in range(5):
            r = c.request("GET", "/?i=%d" % i)
            assert r.status == 200 and r.body == b"blue-1", "request %d: %r" % (i, r)


def test_multiple_x_forwarded_for_lines(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/headers", headers=[("X-Forwarded-For", "10.0.0.1"),
                                                  ("X-Forwarded-For", "10.0.0.2, 10.0.0.3")])
        seen = [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"]
    joined = ", ".join(seen)
    assert joined == "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1", seen


def test_http10_backend_connection_not_reused(backend_factory, usher_factory):
    """An HTTP/1.0 answer without keep-alive ends that upstream connection."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "1s"})
    with RawConn(u.port) as c:
        for i in range(3):
            r = c.request("GET", "/?v10=1&i=%d" % i, timeout=4)
            assert r.status == 200 and r.body == b"blue-1", "request %d: %r" % (i, r)
    assert b.conns_total == 3


def test_nothing_after_connection_close_is_processed(proxy):
    with proxy.conn() as c:
        c.send(build_request("GET", "/a", headers=[("Connection", "close")]) +
               build_request("GET", "/b"))
        r = c.read_response()
        assert r.status == 200 and r.has_token("connection", "close")
        assert c.wait_closed(3) == b""
    time.sleep(0.1)
    assert [r.target for r in proxy.backend.reqs()] == ["/a"]


def test_asterisk_and_absolute_form_targets(proxy):
    with proxy.conn() as c:
        r = c.request("OPTIONS", "*")
        assert r.status == 200, r
        r = c.request("GET", "http://usher.test/headers?abs=1")
        assert r.status == 200, "absolute-form must be accepted (RFC 9112 3.2.2): %r" % r
    targets = [r.target for r in proxy.backend.reqs()]
    assert targets[0] == "*"
    assert targets[1] in ("/headers?abs=1", "http://usher.test/headers?abs=1"), targets


def test_invalid_host_value_400(proxy):
    with proxy.conn() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
        r = c.read_response()
        wire.check_usher_error(c, r, 400, must_close=True)
    assert proxy.backend.reqs() == []


def test_slow_upload_longer_than_backend_timeout(backend_factory, usher_factory):
    """The backend timeout measures how long usher waits for the backend; a
    body still flowing up to it is not the backend being silent."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "500ms"})
    n = 16 * 20000
    with RawConn(u.port, timeout=10) as c:
        c.send(build_request("POST", "/upload", headers=[("Content-Length", str(n))]))
        for i in range(16):  # ~1.6 s in total, a piece every 100 ms
            c.send(b"".join(wire.pattern_chunks(20000, start=20000 * i)))
            time.sleep(0.1)
        r = c.read_response()
        assert r.status == 200 and r.json() == {"sha256": wire.pattern_sha256(n), "len": n}, r
