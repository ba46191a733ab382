"""Canonical forwarding (DESIGN "HTTP behaviour"): what usher accepts it
forwards in one spelling, never as the client wrote it. Every test asserts
the exact bytes a recording backend received."""

import re
import socket
import threading

import pytest

import usher_proc
import wire
from wire import RawConn

HOST = "127.0.0.1"
# what usher adds after the client's fields, for a client on loopback
XF = b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
# and after those (and X-Forwarded-Host) the id it generates for a request
# without one: random, so the Recorder takes it out of what it compares
GENERATED_ID = re.compile(rb"X-Request-Id: [0-9a-f]{32}\r\n")


class Recorder:
    """A backend that records each request's raw bytes (head and body, as
    framed on the wire) and answers 200 "ok"."""

    def __init__(self, name="rec"):
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address = "%s:%d" % (HOST, self.sock.getsockname()[1])
        self.requests = []
        self.cond = threading.Condition()
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        c.settimeout(5.0)
        buf = b""

        def fill():
            nonlocal buf
            d = c.recv(65536)
            if not d:
                raise EOFError
            buf += d

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                fill()
            i = buf.index(b"\r\n") + 2
            ln, buf = buf[:i], buf[i:]
            return ln

        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    fill()
                i = buf.index(b"\r\n\r\n") + 4
                head, buf = buf[:i], buf[i:]
                head, n_ids = GENERATED_ID.subn(b"", head, count=1)
                assert n_ids == 1 or b"x-request-id" in head.lower(), head
                fields = [l.split(b":", 1) for l in head.split(b"\r\n")[1:] if b":" in l]
                names = {k.strip().lower(): v.strip() for k, v in fields}
                raw = head
                if b"transfer-encoding" in names:
                    while True:
                        ln = line()
                        raw += ln
                        size = int(ln.split(b";")[0], 16)
                        if size == 0:
                            while True:
                                t = line()
                                raw += t
                                if t == b"\r\n":
                                    break
                            break
                        while len(buf) < size + 2:
                            fill()
                        raw += buf[:size + 2]
                        buf = buf[size + 2:]
                elif b"content-length" in names:
                    n = int(names[b"content-length"])
                    while len(buf) < n:
                        fill()
                    raw += buf[:n]
                    buf = buf[n:]
                with self.cond:
                    self.requests.append(raw)
                    self.cond.notify_all()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (EOFError, OSError, ValueError):
            pass
        finally:
            c.close()

    def wait(self, n=1, timeout=5.0):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError("backend saw %d request(s), expected %d"
                                     % (len(self.requests), n))
            return self.requests[n - 1]

    def stop(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(timeout=2.0)


@pytest.fixture
def rec(usher_factory):
    r = Recorder()
    u = usher_factory(pools={"blue": [r]})
    yield r, u
    u.stop()
    r.stop()


def exchange(u, data):
    with RawConn(u.port) as c:
        c.send(data)
        resp = c.read_response()
    assert resp.status == 200, resp
    return resp


def test_duplicate_identical_content_length_forwarded_once(rec):
    r, u = rec
    exchange(u, b"POST /d HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
                b"X-A: 1\r\ncontent-length: 5\r\n\r\nhello")
    assert r.wait() == (b"POST /d HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nX-A: 1\r\n"
                        + XF + b"X-Forwarded-Host: a.test\r\n\r\nhello")


def test_content_length_loses_leading_zeros(rec):
    r, u = rec
    body = b"x" * 40
    exchange(u, b"POST /z HTTP/1.1\r\nHost: a.test\r\nContent-Length: 00040\r\n\r\n" + body)
    assert r.wait() == (b"POST /z HTTP/1.1\r\nHost: a.test\r\nContent-Length: 40\r\n"
                        + XF + b"X-Forwarded-Host: a.test\r\n\r\n" + body)


@pytest.mark.parametrize("te", [b",chunked", b"chunked,", b"chunked, ,", b" , chunked"])
def test_transfer_encoding_loses_empty_elements(rec, te):
    r, u = rec
    exchange(u, b"POST /t HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: " + te +
             b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert r.wait() == (b"POST /t HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n"
                        + XF + b"X-Forwarded-Host: a.test\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


def test_absolute_form_becomes_origin_form_with_its_host(rec):
    r, u = rec
    exchange(u, b"GET http://b.test/x?q=1 HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n\r\n")
    assert r.wait() == (b"GET /x?q=1 HTTP/1.1\r\nHost: b.test\r\nX-A: 1\r\n"
                        + XF + b"X-Forwarded-Host: b.test\r\n\r\n")


def test_absolute_form_without_path(rec):
    r, u = rec
    exchange(u, b"GET HTTP://b.test:8080?q HTTP/1.1\r\nHost: b.test:8080\r\n\r\n")
    assert r.wait() == (b"GET /?q HTTP/1.1\r\nHost: b.test:8080\r\n"
                        + XF + b"X-Forwarded-Host: b.test:8080\r\n\r\n")


def test_absolute_form_with_userinfo_is_rejected(rec):
    r, u = rec
    with RawConn(u.port) as c:
        c.send(b"GET http://user@b.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n")
        resp = c.read_response()
        wire.check_usher_error(c, resp, 400, must_close=True)
    assert r.requests == []


def test_framing_routing_and_credential_trailers_dropped(rec):
    r, u = rec
    dropped = [b"Content-Length: 3", b"Transfer-Encoding: chunked", b"Host: evil.test",
               b"Authorization: Bearer x", b"Cookie: a=b", b"Set-Cookie: a=b",
               b"Content-Type: text/evil", b"Expect: 100-continue", b"Connection: close",
               b"Keep-Alive: 5", b"TE: trailers", b"Trailer: X", b"Upgrade: h2c",
               b"Proxy-Connection: close", b"X-Forwarded-For: 10.0.0.1"]
    kept = [b"X-Checksum: abc", b"Server-Timing: db;dur=5"]
    trailers = b"".join(t + b"\r\n" for t in [kept[0]] + dropped + [kept[1]])
    exchange(u, b"POST /tr HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n")
    assert r.wait() == (b"POST /tr HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n"
                        + XF + b"X-Forwarded-Host: a.test\r\n\r\n3\r\nabc\r\n0\r\n"
                        + b"".join(t + b"\r\n" for t in kept) + b"\r\n")


def test_trailers_filtered_when_sent_byte_by_byte(rec):
    """A trailer line split over many reads is judged whole, and the
    connection goes on with the next request."""
    r, u = rec
    req = (b"POST /slow HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n0\r\nAuthorization: x\r\nX-Keep: 1\r\n\r\n")
    with RawConn(u.port) as c:
        head_len = req.index(b"\r\n\r\n") + 4
        c.send(req[:head_len])
        for i in range(head_len, len(req)):
            c.send(req[i:i + 1])
        assert c.read_response().status == 200
        c.send(b"GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert c.read_response().status == 200
    assert r.wait(1).endswith(b"\r\n\r\n3\r\nabc\r\n0\r\nX-Keep: 1\r\n\r\n")
    assert r.wait(2).startswith(b"GET /next HTTP/1.1\r\n")


def test_connection_cannot_strip_the_framing(rec):
    """A Connection field naming Content-Length must not make usher drop the
    framing of the body it forwards (the next hop would see a different
    message boundary)."""
    r, u = rec
    exchange(u, b"POST /c HTTP/1.1\r\nHost: a.test\r\nConnection: content-length, x-drop\r\n"
                b"X-Drop: 1\r\nContent-Length: 3\r\n\r\nabc")
    assert r.wait() == (b"POST /c HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n"
                        + XF + b"X-Forwarded-Host: a.test\r\n\r\nabc")
