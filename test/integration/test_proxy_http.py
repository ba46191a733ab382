"""Data plane: HTTP/1.1 semantics through usher (keep-alive, pipelining,
framing of every kind, 1xx, header rewriting, misbehaving backends)."""

import hashlib
import threading
import time

import pytest

import wire
from wire import RawConn, build_request, pattern_bytes, pattern_sha256


def test_keepalive_reuse_one_client_socket(proxy):
    with proxy.conn() as c:
        for i in range(10):
            r = c.request("GET", "/?i=%d" % i)
            assert r.status == 200 and r.body == b"blue-1", r
            assert not r.has_token("connection", "close"), r.raw_head
        assert c.is_open(0.2), "usher closed a keep-alive client connection"
    reqs = proxy.backend.reqs()
    assert [r.target for r in reqs] == ["/?i=%d" % i for i in range(10)]
    conns = {r.conn_id for r in reqs}
    assert len(conns) <= 2, "10 sequential requests used %d upstream connections" % len(conns)


def test_upstream_pool_shared_across_client_connections(proxy):
    for i in range(8):
        with proxy.conn() as c:
            r = c.request("GET", "/?n=%d" % i)
            assert r.status == 200 and r.body == b"blue-1"
    conns = {r.conn_id for r in proxy.backend.reqs()}
    assert len(conns) <= 2, "8 sequential clients used %d upstream connections" % len(conns)


def test_pipelined_requests_answered_in_order(proxy):
    body = pattern_bytes(5000)
    data = (build_request("GET", "/slow?ms=150") +
            build_request("POST", "/upload", body=body) +
            build_request("GET", "/headers?third=1") +
            build_request("GET", "/", headers=[("Connection", "close")]))
    with proxy.conn() as c:
        c.send(data)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response()
        assert r1.status == 200 and r1.body == b"blue-1", r1
        assert r2.status == 200 and r2.json() == {"sha256": pattern_sha256(5000), "len": 5000}, r2
        assert r3.status == 200 and r3.json()["target"] == "/headers?third=1", r3
        assert r4.status == 200 and r4.body == b"blue-1", r4
        assert r4.has_token("connection", "close")
        assert c.wait_closed(3) == b""
    assert [r.target for r in proxy.backend.reqs()] == ["/slow?ms=150", "/upload",
                                                        "/headers?third=1", "/"]


def test_pipelined_requests_split_across_sends(proxy):
    data = build_request("GET", "/?a=1") + build_request("GET", "/?a=2") + build_request(
        "GET", "/?a=3")
    with proxy.conn() as c:
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
            time.sleep(0.002)
        got = [c.read_response() for _ in range(3)]
    assert [r.status for r in got] == [200, 200, 200]
    assert [r.target for r in proxy.backend.reqs()] == ["/?a=1", "/?a=2", "/?a=3"]


def test_http10_client_gets_close(proxy):
    with proxy.conn() as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"blue-1", r
        assert c.wait_closed(3) == b""


def test_http10_keepalive_is_consistent(proxy):
    """usher may or may not keep an HTTP/1.0 connection alive, but if it says
    keep-alive the connection must work for a second request."""
    with proxy.conn() as c:
        c.send(b"GET /?x=1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"blue-1", r
        assert r.header("content-length") == "6", "a keep-alive 1.0 answer needs a length: %r" % r
        if r.has_token("connection", "keep-alive"):
            c.send(b"GET /?x=2 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
            assert c.read_response().status == 200
        else:
            assert c.wait_closed(3) == b""


def test_client_connection_close(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/", headers=[("Connection", "close")])
        assert r.status == 200 and r.body == b"blue-1"
        assert r.has_token("connection", "close"), r.raw_head
        assert c.wait_closed(3) == b""
    assert len(proxy.backend.reqs()) == 1


def test_head_has_no_body(proxy):
    with proxy.conn() as c:
        c.send(build_request("HEAD", "/big?bytes=5000"))
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.body == b""
        assert r.header("content-length") == "5000", r.raw_head
        # framing still right: the next response starts where it should
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r
    assert [r.method for r in proxy.backend.reqs()] == ["HEAD", "GET"]


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(proxy, code):
    with proxy.conn() as c:
        r = c.request("GET", "/status?code=%d" % code)
        assert r.status == code and r.body == b"", r
        assert r.header("transfer-encoding") is None, r.raw_head
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r


def test_chunked_response(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/chunked?n=7")
        assert r.status == 200 and r.complete, r
        assert r.body == b"".join(b"blue-1 chunk %d\n" % i for i in range(7))
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1"


def test_close_delimited_response(proxy):
    n = 300000
    with proxy.conn() as c:
        r = c.request("GET", "/close-delimited?bytes=%d" % n)
        assert r.status == 200 and r.complete, r
        assert len(r.body) == n and hashlib.sha256(r.body).hexdigest() == pattern_sha256(n)
        if not r.closed:  # re-framed as chunked: the connection may go on
            assert r.header("transfer-encoding") is not None, r.raw_head
            r = c.request("GET", "/")
            assert r.status == 200 and r.body == b"blue-1"


def test_1xx_forwarded_before_final(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/1xx?code=103&count=2")
        assert r.status == 200 and r.body == b"blue-1", r
        assert [i.status for i in r.interim] == [103, 103], r.interim
        assert r.interim[0].header("link") == "</style.css>; rel=preload"
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1"


def test_1xx_not_sent_to_http10_client(proxy):
    with proxy.conn() as c:
        c.send(b"GET /1xx?code=103 HTTP/1.0\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"blue-1", r
        assert r.interim == [], "1xx sent to an HTTP/1.0 client: %r" % r.interim


def test_expect_100_continue(proxy):
    body = pattern_bytes(100000)
    with proxy.conn() as c:
        c.send(build_request("POST", "/upload", headers=[("Expect", "100-continue"),
                                                          ("Content-Length", str(len(body)))]))
        h = c.read_head(timeout=3.0)
        assert h.status == 100, "expected 100 Continue before the body, got %r" % h
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.json() == {"sha256": pattern_sha256(100000), "len": 100000}
        r = c.request("GET", "/")
        assert r.status == 200


def test_request_bodies_content_length_and_chunked(proxy):
    n = 200000
    body = pattern_bytes(n)
    with proxy.conn() as c:
        r = c.request("POST", "/upload", body=body)
        assert r.status == 200 and r.json() == {"sha256": pattern_sha256(n), "len": n}, r
        # chunked, in uneven chunks sent separately, with an extension and a trailer
        c.send(build_request("PUT", "/upload", headers=[("Transfer-Encoding", "chunked")]))
        off = 0
        for size in (1, 4096, 70000, 125903):
            c.send(b"%x;ext=1\r\n" % size + body[off:off + size] + b"\r\n")
            off += size
            time.sleep(0.005)
        c.send(b"0\r\nX-Trailer: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json() == {"sha256": pattern_sha256(n), "len": n}, r
        r = c.request("DELETE", "/upload", body=b"")
        assert r.status == 200 and r.json()["len"] == 0
    assert [r.method for r in proxy.backend.reqs()] == ["POST", "PUT", "DELETE"]


def test_methods_and_target_preserved(proxy):
    targets = ["/headers?a=1&b=%20x", "/headers/p%2Fq;m=1?z", "/headers?"]
    with proxy.conn() as c:
        for m in ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            for t in targets:
                r = c.request(m, t, body=b"x" if m in ("POST", "PUT", "PATCH") else None)
                assert r.status == 200, r
    seen = [(r.method, r.target) for r in proxy.backend.reqs()]
    assert seen == [(m, t) for m in ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
                    for t in targets]


def test_forwarded_headers_and_hop_by_hop_removed(proxy):
    hdrs = [("Host", "example.test:8443"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "must-not-pass"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Forwarded-For", "10.1.2.3"),
            ("X-Keep-1", "one"),
            ("X-Keep-2", "two, three")]
    with proxy.conn() as c:
        r = c.request("GET", "/headers", headers=hdrs, host=None)
        assert r.status == 200, r
        seen = r.json()["headers"]
        r2 = c.request("GET", "/headers", host="plain.test")
        seen2 = r2.json()["headers"]

    def values(hs, name):
        return [v for k, v in hs if k.lower() == name.lower()]

    for name in ("X-Secret", "Keep-Alive", "TE", "Trailer", "Upgrade", "Proxy-Connection"):
        assert values(seen, name) == [], "%s forwarded: %r" % (name, seen)
    for v in values(seen, "Connection"):
        assert "x-secret" not in v.lower(), seen
    assert values(seen, "X-Forwarded-For") == ["10.1.2.3, 127.0.0.1"], seen
    assert values(seen, "X-Forwarded-Proto") == ["http"], seen
    assert values(seen, "X-Forwarded-Host") == ["example.test:8443"], seen
    assert values(seen, "X-Keep-1") == ["one"] and values(seen, "X-Keep-2") == ["two, three"]
    assert len(values(seen, "Host")) == 1, seen
    # no X-Forwarded-For from the client: usher starts the list
    assert values(seen2, "X-Forwarded-For") == ["127.0.0.1"], seen2
    assert values(seen2, "X-Forwarded-Host") == ["plain.test"], seen2
    assert values(seen2, "X-Forwarded-Proto") == ["http"], seen2


def test_client_forwarded_headers_are_replaced_not_trusted(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/headers", host="h.test",
                      headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.test")])
        seen = r.json()["headers"]
    proto = [v for k, v in seen if k.lower() == "x-forwarded-proto"]
    fhost = [v for k, v in seen if k.lower() == "x-forwarded-host"]
    assert proto == ["http"], seen
    assert fhost == ["h.test"], seen


def test_header_order_and_many_headers_preserved(proxy):
    hdrs = [("X-H-%02d" % i, "v%d" % i) for i in range(60)]
    with proxy.conn() as c:
        r = c.request("GET", "/headers", headers=hdrs)
        assert r.status == 200
        seen = [(k, v) for k, v in r.json()["headers"] if k.startswith("X-H-")]
    assert seen == hdrs


def test_backend_error_status_passes_through(proxy):
    with proxy.conn() as c:
        for code in (404, 500, 503):
            r = c.request("GET", "/status?code=%d" % code)
            assert r.status == code and r.body == b"status %d" % code, r
            assert r.header("x-backend") == "blue-1", "not the backend's response: %r" % r


def test_backend_reset_mid_body_closes_client(proxy):
    with proxy.conn() as c:
        r = c.request("GET", "/reset?bytes=20000", timeout=5.0)
        assert r.status == 200, r
        assert not r.complete and r.closed, "truncated body must end the connection: %r" % r
        assert len(r.body) <= 20000
    with proxy.conn() as c:
        assert c.request("GET", "/").status == 200


@pytest.mark.parametrize("path", ["/reset?before=1", "/drop", "/garbage"])
def test_backend_failure_before_response_is_502(proxy, path):
    with proxy.conn() as c:
        r = c.request("GET", path)
        wire.check_usher_error(c, r, 502, must_close=False)
    with proxy.conn() as c:
        assert c.request("GET", "/").status == 200


def test_response_head_too_big_is_502(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, limits={"max_head_bytes": 4096})
    with RawConn(u.port) as c:
        r = c.request("GET", "/bighead?bytes=8000")
        wire.check_usher_error(c, r, 502, must_close=False)
    with RawConn(u.port) as c:
        r = c.request("GET", "/bighead?bytes=1000")
        assert r.status == 200 and len(r.header("x-big")) == 1000


def test_client_abort_mid_download(proxy):
    c = proxy.conn()
    c.send(build_request("GET", "/big?bytes=%d" % (20 << 20)))
    c.read_head()
    got = 0
    while got < (1 << 20):
        c._fill(time.monotonic() + 5)
        got += len(c.buf)
        c.buf = b""
    c.close()
    # usher gives up the upstream side too, and keeps serving
    wire.wait_until(lambda: proxy.backend.conns_active == 0, 5.0,
                    what="the upstream connection of an aborted download to close")
    with proxy.conn() as c2:
        assert c2.request("GET", "/").status == 200


def test_client_abort_while_waiting(proxy):
    c = proxy.conn()
    c.send(build_request("GET", "/slow?ms=400"))
    time.sleep(0.1)
    c.close()
    time.sleep(0.5)
    with proxy.conn() as c2:
        for _ in range(3):
            r = c2.request("GET", "/")
            assert r.status == 200 and r.body == b"blue-1", r


def test_backend_closes_idle_pooled_connection(backend_factory, usher_factory):
    """The backend's keep-alive timeout is shorter than usher's: a pooled
    connection the backend closed must never cost a client a 502."""
    b = backend_factory("blue-1", idle_timeout=0.15)
    u = usher_factory(pools={"blue": [b]})
    with RawConn(u.port) as c:
        for i in range(4):
            r = c.request("GET", "/?i=%d" % i)
            assert r.status == 200 and r.body == b"blue-1", "request %d: %r" % (i, r)
            time.sleep(0.4)
    assert b.conns_total >= 2


def test_backend_restarted_pooled_connections_reset(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    with RawConn(u.port) as c:
        assert c.request("GET", "/").status == 200
        b.kill()
        b.restart()
        time.sleep(0.1)
        for i in range(3):
            r = c.request("GET", "/?after=%d" % i)
            assert r.status == 200 and r.body == b"blue-1", r


def test_concurrent_clients(proxy):
    errors = []

    def worker(k):
        try:
            with proxy.conn() as c:
                for i in range(20):
                    r = c.request("GET", "/slow?ms=5&k=%d&i=%d" % (k, i))
                    if r.status != 200 or r.body != b"blue-1":
                        errors.append(r)
        except Exception as e:  # pylint: disable=broad-except
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors[:3]
    assert len(proxy.backend.reqs()) == 16 * 20


def test_more_than_10_interim_responses_get_502(proxy):
    """DESIGN "HTTP behaviour": up to 10 interim responses are relayed; a
    backend that sends more gets the client a 502 (no endless 102 stream)."""
    with proxy.conn() as c:
        r = c.request("GET", "/1xx?code=102&count=10")
        assert r.status == 200 and len(r.interim) == 10, r
    with proxy.conn() as c:
        r = c.request("GET", "/1xx?code=102&count=30")
        assert r.status == 502, r
        assert len(r.interim) <= 10, len(r.interim)


def test_invalid_framing_before_any_byte_is_a_502(servers, usher_factory):
    """A response whose chunked framing breaks before a byte of it went to
    the client becomes a 502 response, not a silent close."""
    import servers as srv

    def script(s):
        srv.read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        time.sleep(0.3)

    b = servers.add(srv.ScriptedServer(script, name="bad-chunks").start())
    u = usher_factory(pools={"blue": [b]})
    with wire.RawConn(u.port) as c:
        r = c.request("GET", "/")
        assert r.status == 502, r
