"""Raw wire helpers: ports, bounded waiting, deterministic payloads, a raw
HTTP/1.1 client that keeps full control over the bytes, and checks of the
errors usher makes itself.

Standard library only (run with /usr/bin/python3)."""

import hashlib
import http.client
import json
import re
import select
import os
import socket
import time

HOST = "127.0.0.1"


# --- ports and waiting -------------------------------------------------------

def close_quietly(sock):
    """Closes <sock> (a socket or None), ignoring an error: the peer may be gone."""
    if sock is None:
        return
    try:
        sock.close()
    except OSError:
        pass


# Ports handed out recently: the kernel may give the same free port to two
# calls in a row (both closed at once), and one config must never get it twice.
_RECENT_PORTS = []
_RECENT_MAX = 256


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind 0, read,
    close), never one of the last ports this process handed out."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            del _RECENT_PORTS[:-_RECENT_MAX]
            return port
    return port


def pid_alive(pid):
    """True while process <pid> runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def read_text(path):
    """The file's text so far ("" if it does not exist yet), for logs."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or raises
    AssertionError after <timeout> seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # pylint: disable=broad-except
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s" %
                                 (timeout, what, (" (last error: %r)" % last_exc) if last_exc else ""))
        time.sleep(interval)


# --- deterministic payloads ---------------------------------------------------

# A prime period, so a dropped or duplicated buffer of any power-of-two size
# shifts the content and changes the digest.
PATTERN_PERIOD = 65521
PATTERN = bytes(((i * 2654435761) >> 13) & 0xFF for i in range(PATTERN_PERIOD))


def pattern_chunks(n, chunk=65536, start=0):
    """Yields the n bytes of the deterministic stream starting at offset <start>."""
    off = start
    end = start + n
    while off < end:
        p = off % PATTERN_PERIOD
        take = min(chunk, end - off, PATTERN_PERIOD - p)
        yield PATTERN[p:p + take]
        off += take


def pattern_bytes(n):
    return b"".join(pattern_chunks(n))


_sha_cache = {}


def pattern_sha256(n):
    """sha256 hex of the first n bytes of the deterministic stream."""
    if n not in _sha_cache:
        h = hashlib.sha256()
        for c in pattern_chunks(n, chunk=1 << 20):
            h.update(c)
        _sha_cache[n] = h.hexdigest()
    return _sha_cache[n]


class RateLimiter:
    """Sleeps so that the bytes passed to .consumed(n) stay under <rate> bytes/s."""

    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.total = 0

    def consumed(self, n):
        if not self.rate:
            return
        self.total += n
        ahead = self.total / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


# --- raw HTTP/1.1 client --------------------------------------------------------

class ConnectionClosed(Exception):
    """The peer closed (FIN or RST) before a complete response head arrived."""


class Response:
    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []      # [(name, value)] in order, names as received
        self.body = b""
        self.raw_head = b""
        self.interim = []      # 1xx responses received before this one
        self.complete = True   # False when the connection ended before the framed body did
        self.closed = False    # True when the connection was seen closed while reading it

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_token(self, name, token):
        """True if the comma-separated header <name> contains <token>."""
        token = token.lower()
        for v in self.header_all(name):
            if token in [t.strip().lower() for t in v.split(",")]:
                return True
        return False

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %s %r body=%d bytes%s>" % (
            self.status, self.reason, self.headers, len(self.body),
            "" if self.complete else " INCOMPLETE")


def build_request(method="GET", target="/", headers=None, body=None, version="HTTP/1.1",
                  host="usher.test", chunked=False):
    """Request bytes. <headers> is a list of (name, value) pairs sent as given;
    Host (unless host=None or already present) and Content-Length / chunked
    framing (when a body is given) are added."""
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if host is not None and "host" not in names:
        headers.insert(0, ("Host", host))
    if body is not None:
        if chunked:
            if "transfer-encoding" not in names:
                headers.append(("Transfer-Encoding", "chunked"))
        elif "content-length" not in names:
            headers.append(("Content-Length", str(len(body))))
    out = ["%s %s %s\r\n" % (method, target, version)]
    out += ["%s: %s\r\n" % (k, v) for k, v in headers]
    out.append("\r\n")
    data = "".join(out).encode("latin-1")
    if body is not None:
        if chunked:
            if body:
                data += b"%x\r\n%s\r\n" % (len(body), body)
            data += b"0\r\n\r\n"
        else:
            data += body
    return data


class RawConn:
    """One client TCP connection with a receive buffer, so pipelined responses
    and responses that arrive byte by byte are read correctly."""

    def __init__(self, port, host=HOST, timeout=5.0, sock=None):
        """Connects to <host>:<port>, or takes over the connected socket <sock>."""
        self.timeout = timeout
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.reset = False

    # context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        close_quietly(self.sock)

    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        """Sends all of <data>. Returns False if the peer already closed."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def request(self, method="GET", target="/", headers=None, body=None, **kw):
        """Sends one request and reads its response."""
        self.send(build_request(method, target, headers, body, **{
            k: v for k, v in kw.items() if k in ("version", "host", "chunked")}))
        return self.read_response(method=method, timeout=kw.get("timeout"))

    def _fill(self, deadline):
        """Reads more bytes into self.buf. Returns False on EOF/RST; raises
        TimeoutError when <deadline> passes."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the peer")
        self.sock.settimeout(remaining)
        try:
            d = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("no data from the peer") from None
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _read_line(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = self.buf[:i]
                self.buf = self.buf[i + 2:]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            if not self._fill(deadline):
                return None

    def _read_exact(self, n, deadline, sink=None):
        """Reads n bytes; returns (data, complete)."""
        parts = []
        got = 0
        while got < n:
            if not self.buf:
                if not self._fill(deadline):
                    break
            take = self.buf[:n - got]
            self.buf = self.buf[len(take):]
            got += len(take)
            if sink:
                sink(take)
            else:
                parts.append(take)
        return b"".join(parts), got == n

    def read_head(self, timeout=None):
        """Reads one response head (interim or final). Returns a Response with
        no body, or raises ConnectionClosed / TimeoutError."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed%s with %d bytes of a head: %r" %
                                       (" (reset)" if self.reset else "", len(self.buf),
                                        self.buf[:200]))
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        r = Response()
        r.raw_head = head + b"\r\n\r\n"
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise ValueError("bad status line %r" % lines[0])
        r.version, r.status, r.reason = m.group(1), int(m.group(2)), m.group(3) or ""
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep:
                raise ValueError("bad header line %r" % line)
            r.headers.append((k, v.strip(" \t")))
        return r

    def read_response(self, method="GET", timeout=None, sink=None, keep_interim=True):
        """Reads a full response: 1xx interim heads are collected in .interim,
        the body is framed by method/status, Transfer-Encoding chunked,
        Content-Length or the connection close. With <sink>, body bytes are
        passed to sink(bytes) instead of being stored. A body cut short sets
        .complete False (no exception)."""
        timeout = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + timeout
        interim = []
        while True:
            r = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            break
        if keep_interim:
            r.interim = interim
        no_body = method.upper() == "HEAD" or r.status in (204, 304) or r.status == 101
        parts = []
        store = sink or parts.append
        te = ",".join(r.header_all("transfer-encoding")).lower()
        cl = r.header("content-length")
        if no_body:
            pass
        elif te:
            if te.split(",")[-1].strip() != "chunked":
                raise ValueError("response with Transfer-Encoding %r" % te)
            r.complete = self._read_chunked(deadline, store)
        elif cl is not None:
            data, r.complete = self._read_exact(int(cl), deadline, sink=store)
        else:
            while True:
                if self.buf:
                    store(self.buf)
                    self.buf = b""
                if not self._fill(deadline):
                    break
            r.closed = True
        if not sink:
            r.body = b"".join(parts)
        if self.eof and not self.buf:
            r.closed = True
        return r

    def _read_chunked(self, deadline, store):
        while True:
            line = self._read_line(deadline)
            if line is None:
                return False
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers
                    t = self._read_line(deadline)
                    if t is None:
                        return False
                    if t == b"":
                        return True
            _, ok = self._read_exact(size, deadline, sink=store)
            if not ok:
                return False
            if self._read_line(deadline) != b"":
                return False

    def wait_closed(self, timeout=3.0):
        """Waits for the peer to close. Returns the bytes received meanwhile
        (plus anything already buffered) once the connection is closed; raises
        TimeoutError if it is still open after <timeout>."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def readable(self, wait=0.1):
        """True if bytes or a close are waiting to be read after <wait> seconds."""
        if self.buf or self.eof:
            return True
        r, _, _ = select.select([self.sock], [], [], wait)
        return bool(r)

    def is_open(self, wait=0.1):
        """True if nothing says the connection is closed after <wait> seconds
        (no FIN, no RST, no unexpected byte)."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            self.sock.setblocking(False)
            d = self.sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.setblocking(True)
        return bool(d)


def http_get(port, path="/", headers=None, timeout=5.0, method="GET", body=None):
    """One request on a fresh connection with http.client: (status, headers dict, body bytes)."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


# --- usher error responses ---------------------------------------------------------

def check_usher_error(conn, resp, code, must_close=True, close_timeout=3.0):
    """Asserts <resp> is an error usher made itself: status <code>, a
    text/plain short body framed by Content-Length and, with <must_close>,
    "Connection: close" and the connection actually closed."""
    assert resp.status == code, "expected %d, got %r body=%r" % (code, resp, resp.body[:200])
    assert resp.version == "HTTP/1.1", resp.raw_head
    ct = resp.header("content-type", "")
    assert ct.lower().startswith("text/plain"), "Content-Type %r in %r" % (ct, resp.raw_head)
    cl = resp.header("content-length")
    assert cl is not None and int(cl) == len(resp.body), "Content-Length %r, body %d bytes" % (
        cl, len(resp.body))
    assert 0 < len(resp.body) < 1024, "body %r" % resp.body
    if must_close:
        assert resp.has_token("connection", "close"), "no Connection: close in %r" % resp.raw_head
        extra = conn.wait_closed(close_timeout)
        assert extra == b"", "bytes after the %d response: %r" % (code, extra[:200])


def connect_refused(port, timeout=1.0):
    """True if a TCP connect to 127.0.0.1:<port> is refused (False if it connects)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((HOST, port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
