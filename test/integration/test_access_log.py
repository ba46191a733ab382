"""The access log (host, user agent, bytes in, protocol, request id, the
same field names in text and JSON) and X-Request-Id: forwarded when the
client sent one, generated (128 random bits, hex) when not, and the same id
in the log line."""

import re

import pytest

import usher_proc
import wire
from test_log_format import parse_json, parse_logfmt
from wire import RawConn

ACCESS_KEYS = {"client", "listener", "method", "path", "protocol", "host", "status", "bytes",
               "bytes_in", "ms", "pool", "backend", "user_agent", "request_id"}
HEX128 = re.compile(r"^[0-9a-f]{32}$")


def access_lines(u, fmt):
    parse = parse_json if fmt == "json" else parse_logfmt
    out = []
    for line in u.log().splitlines():
        try:
            p = parse(line)
        except ValueError:
            continue
        if p[1] == "access":
            out.append(p[2])
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_access_fields_same_in_both_formats(fmt, backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, log={"access": True, "format": fmt})
    body = b"x" * 1000
    with RawConn(u.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: probe \"1\"/2\r\n"
               b"X-Request-Id: abc-123\r\nContent-Length: 1000\r\n\r\n" + body)
        assert c.read_response().status == 200
        c.send(b"GET / HTTP/1.0\r\nHost: other.test\r\n\r\n")
        assert c.read_response().status == 200
    wire.wait_until(lambda: len(access_lines(u, fmt)) == 2, 3.0, what="two access lines")
    first, second = access_lines(u, fmt)
    assert set(first) >= ACCESS_KEYS, ACCESS_KEYS - set(first)
    assert set(second) == set(first)
    assert first["host"] == "shop.test"
    assert first["user_agent"] == 'probe "1"/2'
    assert first["protocol"] == "HTTP/1.1" and second["protocol"] == "HTTP/1.0"
    assert int(first["bytes_in"]) >= 1000 + len(b"POST /upload HTTP/1.1\r\n")
    assert int(first["bytes_in"]) < 1200
    assert int(second["bytes_in"]) == len(b"GET / HTTP/1.0\r\nHost: other.test\r\n\r\n")
    assert first["request_id"] == "abc-123"
    assert HEX128.match(second["request_id"]), second
    assert second["user_agent"] == "-"
    if fmt == "json":
        assert isinstance(first["bytes_in"], int) and isinstance(first["status"], int)
    # the backend saw the same ids
    ids = [r.header_all("x-request-id") for r in b.reqs()]
    assert ids == [["abc-123"], [second["request_id"]]]


def test_request_id_generated_unique_and_forwarded_once(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, log={"access": True})
    with RawConn(u.port) as c:
        for _ in range(50):
            assert c.request("GET", "/").status == 200
        # empty ids do not count: one is generated, the empty field dropped
        assert c.request("GET", "/e", headers=[("X-Request-Id", "")]).status == 200
        # several: the first non-empty one goes on, alone
        assert c.request("GET", "/d", headers=[("X-Request-Id", ""), ("x-request-id", "one"),
                                                ("X-Request-ID", "two")]).status == 200
        # an id too long to log is replaced
        assert c.request("GET", "/l", headers=[("X-Request-Id", "z" * 129)]).status == 200
    wire.wait_until(lambda: len(u.log_lines("access")) == 53, 3.0, what="53 access lines")
    logged = [a["kv"]["request_id"] for a in u.log_lines("access")]
    seen = [r.header_all("x-request-id") for r in b.reqs()]
    assert all(len(s) == 1 for s in seen), seen
    assert [s[0] for s in seen] == logged
    gen = logged[:50] + [logged[50], logged[52]]
    assert all(HEX128.match(x) for x in gen), gen
    assert len(set(gen)) == len(gen)
    assert logged[51] == "one"


def test_error_usher_answers_has_an_id_and_no_backend(usher_factory):
    dead = {"name": "dead", "address": "127.0.0.1:%d" % wire.free_port()}
    u = usher_factory(pools={"blue": [dead]}, log={"access": True})
    with RawConn(u.port) as c:
        r = c.request("GET", "/", headers=[("User-Agent", "curl/8")])
        assert r.status == 502
    wire.wait_until(lambda: u.log_lines("access"), 3.0, what="access line")
    kv = u.log_lines("access")[0]["kv"]
    assert kv["status"] == "502" and kv["backend"] == "-" and kv["user_agent"] == "curl/8"
    assert HEX128.match(kv["request_id"]), kv
