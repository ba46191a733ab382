"""Strict request parsing: every request-smuggling vector is refused with 400
(501 for an unknown transfer coding), the connection is closed, and the
backend never sees the request. Plus the head/header/URI limits."""

import time

import pytest

import wire
from wire import RawConn, build_request

H = b"Host: usher.test\r\n"

# name -> (request bytes, expected status)
HEAD_VECTORS = {
    "cl_and_te": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    "te_and_cl": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
                  b"Content-Length: 6\r\n\r\n0\r\n\r\nG", 400),
    "duplicate_cl_differ": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
                            b"Content-Length: 6\r\n\r\nhello!", 400),
    "cl_list_differ": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    "cl_non_numeric": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    "cl_negative": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    "cl_plus_sign": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    "cl_hex": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    "cl_two_numbers": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5 5\r\n\r\nhello", 400),
    "te_gzip_not_chunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n"
                            b"abc", 400),
    "te_chunked_not_final": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip"
                             b"\r\n\r\n0\r\n\r\n", 400),
    "te_unknown_coding": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: foo, chunked\r\n\r\n"
                          b"0\r\n\r\n", 501),
    "space_before_colon_host": (b"GET / HTTP/1.1\r\nHost : usher.test\r\n\r\n", 400),
    "space_before_colon_te": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
                              b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    "obs_fold": (b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n  b\r\n\r\n", 400),
    "obs_fold_te": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n chunked\r\n"
                    b"Content-Length: 3\r\n\r\nabc", 400),
    "bare_cr_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rX-B: b\r\n\r\n", 400),
    "nul_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    "nul_in_name": (b"GET / HTTP/1.1\r\n" + H + b"X-\x00A: a\r\n\r\n", 400),
    "missing_host_http11": (b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    "two_hosts": (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
    "two_hosts_same": (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n", 400),
}

CHUNK_VECTORS = {
    "chunk_size_not_hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_negative": b"-1\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
}


def _assert_usher_alive(port):
    with RawConn(port) as c:
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r


@pytest.mark.parametrize("name", sorted(HEAD_VECTORS))
def test_smuggling_vector_rejected(proxy, name):
    data, code = HEAD_VECTORS[name]
    with proxy.conn() as c:
        c.send(data)
        r = c.read_response()
        wire.check_usher_error(c, r, code, must_close=True)
    time.sleep(0.1)
    assert proxy.backend.reqs() == [], "the backend saw %r" % proxy.backend.reqs()
    assert proxy.backend.conns_total == 0, "usher connected upstream for a rejected request"
    _assert_usher_alive(proxy.port)


@pytest.mark.parametrize("name", sorted(HEAD_VECTORS))
def test_smuggling_vector_after_valid_request(proxy, name):
    """The same vectors arriving on a connection that already served a request."""
    data, code = HEAD_VECTORS[name]
    with proxy.conn() as c:
        r = c.request("GET", "/first")
        assert r.status == 200
        c.send(data)
        r = c.read_response()
        wire.check_usher_error(c, r, code, must_close=True)
    time.sleep(0.1)
    assert [r.target for r in proxy.backend.reqs()] == ["/first"], proxy.backend.reqs()


@pytest.mark.parametrize("name", sorted(CHUNK_VECTORS))
def test_bad_chunk_size_rejected(proxy, name):
    """The head is valid, so usher may already have sent it upstream while
    streaming; what matters is that no complete request reaches the backend
    and the client gets 400 and a closed connection."""
    head = b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    with proxy.conn() as c:
        c.send(head + CHUNK_VECTORS[name])
        r = c.read_response()
        wire.check_usher_error(c, r, 400, must_close=True)
    time.sleep(0.2)
    complete = [r for r in proxy.backend.reqs() if r.complete]
    assert complete == [], "the backend got a complete request: %r" % complete
    wire.wait_until(lambda: proxy.backend.conns_active == 0, 3.0,
                    what="the upstream connection carrying the bad body to close")
    _assert_usher_alive(proxy.port)


def test_bad_chunk_size_after_valid_chunk(proxy):
    """The invalid chunk arrives after the request already streamed a chunk."""
    head = b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    with proxy.conn() as c:
        c.send(head + b"5\r\nhello\r\n")
        time.sleep(0.2)
        c.send(b"zz\r\nworld\r\n0\r\n\r\n")
        # no response has started, so usher can still answer 400
        r = c.read_response()
        wire.check_usher_error(c, r, 400, must_close=True)
    time.sleep(0.2)
    assert [r for r in proxy.backend.reqs() if r.complete] == []
    _assert_usher_alive(proxy.port)


def test_unsupported_http_version_505(proxy):
    with proxy.conn() as c:
        c.send(b"GET / HTTP/2.0\r\n" + H + b"\r\n")
        r = c.read_response()
        wire.check_usher_error(c, r, 505, must_close=True)
    assert proxy.backend.reqs() == []


@pytest.fixture
def limited(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]},
                      limits={"max_head_bytes": 4096, "max_headers": 20, "max_uri_bytes": 1024})
    return u, b


def test_head_too_big_431(limited):
    u, b = limited
    with RawConn(u.port) as c:
        r = c.request("GET", "/", headers=[("X-Big", "a" * 5000)])
        wire.check_usher_error(c, r, 431, must_close=True)
    with RawConn(u.port) as c:  # under the limit
        r = c.request("GET", "/", headers=[("X-Big", "a" * 3000)])
        assert r.status == 200, r
    assert len(b.reqs()) == 1


def test_head_too_big_sent_slowly_431(limited):
    """The limit holds when the head trickles in (no terminating CRLF yet)."""
    u, b = limited
    with RawConn(u.port) as c:
        c.send(b"GET / HTTP/1.1\r\n" + H)
        for _ in range(6):
            if not c.send(b"X-Pad: " + b"p" * 1000 + b"\r\n"):
                break
            time.sleep(0.02)
        r = c.read_response()
        wire.check_usher_error(c, r, 431, must_close=True)
    assert b.reqs() == []


def test_too_many_headers_431(limited):
    u, b = limited
    with RawConn(u.port) as c:
        r = c.request("GET", "/", headers=[("X-N%d" % i, "v") for i in range(25)])
        wire.check_usher_error(c, r, 431, must_close=True)
    with RawConn(u.port) as c:
        r = c.request("GET", "/", headers=[("X-N%d" % i, "v") for i in range(15)])
        assert r.status == 200, r
    assert len(b.reqs()) == 1


def test_uri_too_long_414(limited):
    u, b = limited
    with RawConn(u.port) as c:
        r = c.request("GET", "/" + "u" * 2000)
        wire.check_usher_error(c, r, 414, must_close=True)
    with RawConn(u.port) as c:
        r = c.request("GET", "/" + "u" * 900)
        assert r.status == 200, r
    assert [len(r.target) for r in b.reqs()] == [901]


def test_default_limits_accept_large_but_legal_heads(proxy):
    """Defaults: 16 KiB head, 100 headers, 8 KiB URI."""
    with proxy.conn() as c:
        r = c.request("GET", "/" + "u" * 7000, headers=[("X-N%d" % i, "v" * 50) for i in range(90)])
        assert r.status == 200, r
    with proxy.conn() as c:
        r = c.request("GET", "/" + "u" * 9000)
        wire.check_usher_error(c, r, 414, must_close=True)
    with proxy.conn() as c:
        r = c.request("GET", "/", headers=[("X-N%d" % i, "v") for i in range(120)])
        wire.check_usher_error(c, r, 431, must_close=True)
    with proxy.conn() as c:
        r = c.request("GET", "/", headers=[("X-Big", "a" * 17000)])
        wire.check_usher_error(c, r, 431, must_close=True)


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: usher.test\r\n\r\n"


def _dead_entry():
    return {"name": "dead-1", "address": "127.0.0.1:%d" % wire.free_port(), "weight": 1}


def test_error_with_unread_body_closes_connection(backend_factory, usher_factory):
    """usher answers 503 before the body arrived: the body (which looks like
    a request) must never be taken for the next request."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [(b, 0)]})
    with RawConn(u.port) as c:
        c.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % (len(SMUGGLED) + 100))
        r = c.read_response()
        assert r.status == 503, r
        c.send(SMUGGLED)  # the body, sent after the answer
        assert r.has_token("connection", "close"), "unread body but no Connection: close: %r" % (
            r.raw_head)
        assert c.wait_closed(3) == b""


def test_error_body_in_same_packet_not_a_second_request(usher_factory):
    """The whole body arrived with the head: usher may keep the connection,
    but the body is skipped, not parsed (one request -> one response)."""
    u = usher_factory(pools={"blue": [_dead_entry()]})
    with RawConn(u.port) as c:
        c.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) +
               SMUGGLED)
        r = c.read_response()
        wire.check_usher_error(c, r, 502, must_close=False)
        if r.has_token("connection", "close"):
            assert c.wait_closed(3) == b""
            return
        assert not c.readable(0.5), "a second response: the body was parsed as a request"
        c.send(build_request("GET", "/real"))
        r = c.read_response()
        assert r.status == 502
        assert not c.readable(0.3)


def test_chunked_body_with_error_not_a_second_request(usher_factory):
    u = usher_factory(pools={"blue": [_dead_entry()]})
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    with RawConn(u.port) as c:
        c.send(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        r = c.read_response()
        wire.check_usher_error(c, r, 502, must_close=False)
        if r.has_token("connection", "close"):
            assert c.wait_closed(3) == b""
        else:
            assert not c.readable(0.5), "a second response: the chunked body was parsed"
