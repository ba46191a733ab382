"""A scriptable, misbehaving HTTP/1.1 backend for the integration tests.

Raw sockets and one thread per connection, so a test controls every byte.
It records every request head it sees (and whether the body then arrived
completely), supports keep-alive with Content-Length and chunked request
bodies, and answers by path:

  /                     200, body = the backend's name (e.g. "blue-1")
  /healthz              status .health_status (settable at runtime), body "ok"
  /slow?ms=N            like / after N ms
  /chunked?n=K          chunked response, K chunks (default 5), 10 ms apart
  /close-delimited?bytes=N  no Content-Length, no Transfer-Encoding, body ends at close
  /reset?bytes=N        head with Content-Length 1000000, N body bytes (default 10000), then RST
  /reset?before=1       RST instead of a response
  /drop                 close (FIN) without a response
  /garbage              answers "NOT HTTP AT ALL\r\n\r\n" and closes
  /bighead?bytes=N      200 with one response header of N bytes
  /1xx?code=103[&count=K]   K interim responses (default 1, code 103) then 200
  /big?bytes=N[&rate=R]     N deterministic bytes (util.pattern_*) with Content-Length,
                            written at most R bytes/s
  /stall?bytes=N&after=M    Content-Length N, sends M bytes, then never sends more
  /upload[?rate=R]      reads the body (at most R bytes/s) and answers JSON {"sha256","len"}
  /hang                 never answers (until the peer closes or the backend stops)
  /status?code=N        status N (no body for 1xx/204/304)
  /headers              JSON {"method","target","version","headers":[[name,value],...],"peer"}
  /early?code=N         answers N at once without reading the request body, then closes
  /status?code=N&cl=L   status N with Content-Length L and no body (304, HEAD)
  /cl-te                response with Content-Length 3 and Transfer-Encoding chunked ("chunky")
  /dup-cl               response with two differing Content-Length headers
  /badchunk             chunked response whose second chunk size is "zz"
  /trickle-head         a normal answer written one byte at a time
  /hop                  answer with hop-by-hop headers (Connection: X-Hop, X-Hop, Keep-Alive...)
  /manyheaders?n=N      answer with N extra header fields
  any path with v10=1   answers "HTTP/1.0 200" (no keep-alive) and then reads nothing more
  any path with close=1 answers with "Connection: close" and closes.

Setting .mode to a path ("/hang", "/status?code=500", ...) handles every
request except /healthz as if it had been sent to that path.
HEAD gets the same head as GET without the body. A request with
"Expect: 100-continue" and a body gets "100 Continue" before the body is read.
"""

import hashlib
import json
import select
import socket
import struct
import threading
import time
import urllib.parse

import util

HOST = "127.0.0.1"
READ_CHUNK = 65536
BODY_NONE_STATUSES = (204, 304)


def shut_down_sockets(lsock, socks, reset):
    """Closes the listening socket <lsock> (None is fine: connects are then
    refused) and ends every connection in <socks>: with a FIN, or, when
    <reset>, so that their close sends an RST. SHUT_RD wakes a thread blocked
    in recv() without sending a FIN; with SO_LINGER 0 the final close (by that
    thread or the caller) then sends the RST."""
    if lsock is not None:
        try:
            lsock.close()
        except OSError:
            pass
    for s in socks:
        try:
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD)
            else:
                s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class BadRequest(Exception):
    pass


class Request:
    """One request as the backend saw it."""

    def __init__(self, conn_id, method, target, version, headers, peer):
        self.conn_id = conn_id
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers            # [(name, value)] as received
        self.peer = peer
        u = urllib.parse.urlsplit(target)
        self.path = u.path
        self.query = dict(urllib.parse.parse_qsl(u.query))
        self.body_len = 0
        self.body_sha256 = None
        self.complete = False             # set once the whole body was read
        self.time = time.monotonic()

    def header(self, name, default=None):
        v = self.header_all(name)
        return v[0] if v else default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def __repr__(self):
        return "<Request #%d %s %s %s %r body=%d%s>" % (
            self.conn_id, self.method, self.target, self.version, self.headers, self.body_len,
            "" if self.complete else " incomplete")


class _Conn:
    def __init__(self, backend, sock, peer, conn_id):
        self.backend = backend
        self.sock = sock
        self.peer = peer
        self.id = conn_id
        self.buf = b""
        self.closed = False
        self.nreq = 0

    # reading helpers ---------------------------------------------------------
    def fill(self):
        try:
            d = self.sock.recv(READ_CHUNK)
        except (ConnectionResetError, OSError):
            d = b""
        if not d:
            return False
        self.buf += d
        return True

    def read_line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise BadRequest("line too long")
            if not self.fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_body(self, req, rate=None):
        """Reads the request body per its framing, hashing it."""
        h = hashlib.sha256()
        limiter = util.RateLimiter(rate)
        te = ",".join(req.header_all("transfer-encoding")).lower()
        cl = req.header("content-length")
        n = 0

        def take(k):
            nonlocal n
            while len(self.buf) < 1 and k > 0:
                if not self.fill():
                    raise BadRequest("eof in body")
            d = self.buf[:min(k, READ_CHUNK)]
            self.buf = self.buf[len(d):]
            h.update(d)
            n += len(d)
            limiter.consumed(len(d))
            return len(d)

        if te:
            if te.split(",")[-1].strip() != "chunked":
                raise BadRequest("transfer-encoding %r" % te)
            while True:
                line = self.read_line()
                if line is None:
                    raise BadRequest("eof in chunk size")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self.read_line()
                        if t is None:
                            raise BadRequest("eof in trailers")
                        if t == b"":
                            break
                    break
                left = size
                while left:
                    left -= take(left)
                if self.read_line() != b"":
                    raise BadRequest("bad chunk end")
        elif cl is not None:
            left = int(cl)
            while left:
                left -= take(left)
        req.body_len = n
        req.body_sha256 = h.hexdigest()
        req.complete = True

    # writing helpers -----------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def rst(self):
        """Closes with an RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def wait_peer_or_stop(self):
        """Blocks until the peer closes or the backend stops (for /hang, /stall)."""
        self.sock.settimeout(0.1)
        try:
            while not self.backend._stop.is_set():
                try:
                    d = self.sock.recv(READ_CHUNK)
                    if not d:
                        return
                except socket.timeout:
                    continue
                except OSError:
                    return
        finally:
            try:
                self.sock.settimeout(None)
            except OSError:
                pass


class Backend:
    """A backend server on 127.0.0.1:<port>. start()/stop() (graceful: closes
    everything with FIN), kill() (abrupt: listener closed, connections reset).

    Attributes tests read: name, port, address, requests (list of Request),
    conns_total (accepted connections), conns_active, closed_conns
    (conn ids whose peer closed or that the backend closed).
    Attributes tests set: health_status (int), mode (None or a path),
    idle_timeout (seconds: close a keep-alive connection idle that long),
    response_delay (seconds before every non-health response),
    health_delay (seconds before answering /healthz),
    drop_reused (close, without answering, any request that is not the first
    on its connection: the keep-alive race)."""

    def __init__(self, name="backend", port=0, backlog=128, idle_timeout=None,
                 health_status=200, mode=None, host=HOST):
        self.name = name
        self.host = host                  # a loopback address (127.0.0.0/8)
        self._want_port = port
        self.port = None
        self.backlog = backlog
        self.idle_timeout = idle_timeout
        self.health_status = health_status
        self.mode = mode
        self.response_delay = 0.0
        self.health_delay = 0.0
        self.drop_reused = False
        self.requests = []
        self.health_requests = 0
        self.conns_total = 0
        self.conns_active = 0
        self.closed_conns = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns = set()
        self._threads = []
        self._lsock = None
        self._accept_thread = None

    # lifecycle -----------------------------------------------------------------
    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self._want_port))
        s.listen(self.backlog)
        s.settimeout(0.1)
        self._lsock = s
        self.port = s.getsockname()[1]
        self._stop.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="backend-%s-accept" % self.name)
        self._accept_thread.start()
        return self

    def restart(self):
        """Starts again on the same port after stop()/kill()."""
        self._want_port = self.port
        return self.start()

    def stop(self, timeout=3.0):
        """Stops accepting and closes every connection (FIN)."""
        self._shutdown(reset=False, timeout=timeout)

    def kill(self, timeout=3.0):
        """Simulates a dead backend: listener closed (connects are refused) and
        every open connection reset."""
        self._shutdown(reset=True, timeout=timeout)

    def _shutdown(self, reset, timeout):
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        shut_down_sockets(self._lsock, [c.sock for c in conns], reset)
        self._lsock = None
        if reset:
            for c in conns:
                c.close()
        deadline = time.monotonic() + timeout
        for t in [self._accept_thread] + list(self._threads):
            if t is not None:
                t.join(max(0.01, deadline - time.monotonic()))
        for c in conns:
            c.close()

    # queries -----------------------------------------------------------------
    def reqs(self, path=None):
        """Recorded (non-health) requests, optionally only those for <path>."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def clear(self):
        with self._lock:
            self.requests = []

    def wait_requests(self, n, timeout=5.0):
        return util.wait_until(lambda: len(self.reqs()) >= n, timeout,
                               what="%d requests at backend %s" % (n, self.name))

    # serving -------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                lsock = self._lsock
                if lsock is None:
                    return
                s, peer = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.conns_total += 1
                self.conns_active += 1
                c = _Conn(self, s, "%s:%d" % peer, self.conns_total)
                self._conns.add(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True,
                                 name="backend-%s-conn%d" % (self.name, c.id))
            self._threads.append(t)
            t.start()

    def _serve(self, c):
        try:
            while not self._stop.is_set():
                if not self._serve_one(c):
                    break
        except (BadRequest, ValueError):
            pass
        except OSError:
            pass
        finally:
            c.close()
            with self._lock:
                self.conns_active -= 1
                self._conns.discard(c)
                self.closed_conns.append(c.id)

    def _read_head(self, c):
        """Returns the head lines, or None on EOF / idle timeout."""
        if self.idle_timeout is not None and not c.buf:
            c.sock.settimeout(self.idle_timeout)
        try:
            while b"\r\n\r\n" not in c.buf:
                if len(c.buf) > 1 << 20:
                    raise BadRequest("head too big")
                if not c.fill():
                    return None
                c.sock.settimeout(None)
        except socket.timeout:
            return None
        finally:
            try:
                c.sock.settimeout(None)
            except OSError:
                pass
        head, c.buf = c.buf.split(b"\r\n\r\n", 1)
        return head.decode("latin-1").split("\r\n")

    def _serve_one(self, c):
        lines = self._read_head(c)
        if lines is None:
            return False
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise BadRequest("bad request line %r" % lines[0])
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep:
                raise BadRequest("bad header %r" % line)
            headers.append((k, v.strip(" \t")))
        req = Request(c.id, method, target, version, headers, c.peer)
        path, query = req.path, req.query
        health = path == "/healthz"
        if not health and self.mode:
            u = urllib.parse.urlsplit(self.mode)
            path, query = u.path, dict(urllib.parse.parse_qsl(u.query))
        with self._lock:
            if health:
                self.health_requests += 1
            else:
                self.requests.append(req)

        conn_hdr = ",".join(req.header_all("connection")).lower()
        keep = ("close" not in conn_hdr) and (version == "HTTP/1.1" or "keep-alive" in conn_hdr)
        if query.get("close") == "1":
            keep = False
        has_body = req.header("content-length") not in (None, "0") or req.header_all(
            "transfer-encoding")
        c.nreq += 1
        if not health and self.drop_reused and c.nreq > 1:
            return False  # like a backend whose keep-alive timer fired just now
        if has_body and "100-continue" in (req.header("expect") or "").lower() and path not in (
                "/hang", "/early"):
            c.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        head_only = method == "HEAD"

        if not health and self.response_delay:
            time.sleep(self.response_delay)

        if path == "/hang":
            c.wait_peer_or_stop()
            return False
        if path == "/reset" and query.get("before"):
            c.rst()
            return False
        if path == "/drop":
            return False
        if path == "/early":
            # answer without reading the request body, then close
            code = int(query.get("code", "413"))
            self._respond(c, code, b"early", False, head_only)
            time.sleep(0.2)
            return False
        if query.get("v10") == "1":
            # an HTTP/1.0 server: answers 1.0 without keep-alive and then
            # reads nothing more (a request sent on this connection hangs)
            c.read_body(req)
            body = self.name.encode()
            c.send(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            c.wait_peer_or_stop()
            return False
        if path == "/upload":
            c.read_body(req, rate=float(query.get("rate", 0)) or None)
            body = json.dumps({"sha256": req.body_sha256, "len": req.body_len}).encode()
            return self._respond(c, 200, body, keep, head_only, ctype="application/json")
        c.read_body(req)

        if path == "/healthz":
            if self.health_delay:
                time.sleep(self.health_delay)
            code = self.health_status
            return self._respond(c, code, b"ok", keep, head_only)
        if path == "/slow":
            time.sleep(int(query.get("ms", "100")) / 1000.0)
            return self._respond(c, 200, self.name.encode(), keep, head_only)
        if path == "/status":
            code = int(query.get("code", "200"))
            if "cl" in query:  # e.g. a 304 or a HEAD answer with the length of the full body
                c.send(self._head(code, [("Content-Length", query["cl"])], keep))
                return keep
            return self._respond(c, code, ("status %d" % code).encode(), keep, head_only)
        if path == "/cl-te":
            # response smuggling attempt: Transfer-Encoding must win over Content-Length
            c.send(self._head(200, [("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
                              keep))
            if not head_only:
                c.send(b"6\r\nchunky\r\n0\r\n\r\n")
            return keep
        if path == "/dup-cl":
            c.send(self._head(200, [("Content-Length", "4"), ("Content-Length", "6")], False))
            if not head_only:
                c.send(b"abcdef")
            return False
        if path == "/badchunk":
            c.send(self._head(200, [("Transfer-Encoding", "chunked")], keep))
            c.send(b"5\r\nhello\r\n")
            time.sleep(0.05)
            c.send(b"zz\r\nworld\r\n0\r\n\r\n")
            time.sleep(0.2)
            return False
        if path == "/trickle-head":
            body = self.name.encode()
            data = self._head(200, [("Content-Type", "text/plain"),
                                    ("Content-Length", str(len(body)))], keep) + body
            for i in range(len(data)):
                c.send(data[i:i + 1])
                time.sleep(0.002)
            return keep
        if path == "/hop":
            body = self.name.encode()
            c.send(self._head(200, [("Connection", "X-Hop"), ("X-Hop", "1"),
                                    ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                                    ("X-End", "2"), ("Content-Length", str(len(body)))], keep))
            if not head_only:
                c.send(body)
            return keep
        if path == "/manyheaders":
            n = int(query.get("n", "150"))
            body = self.name.encode()
            c.send(self._head(200, [("X-M%d" % i, "v") for i in range(n)] +
                              [("Content-Length", str(len(body)))], keep))
            if not head_only:
                c.send(body)
            return keep
        if path == "/headers":
            body = json.dumps({"method": method, "target": target, "version": version,
                               "headers": [[k, v] for k, v in headers], "peer": c.peer,
                               "backend": self.name}).encode()
            return self._respond(c, 200, body, keep, head_only, ctype="application/json")
        if path == "/chunked":
            n = int(query.get("n", "5"))
            c.send(self._head(200, [("Transfer-Encoding", "chunked")], keep))
            if head_only:
                return keep
            for i in range(n):
                piece = ("%s chunk %d\n" % (self.name, i)).encode()
                c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(0.01)
            c.send(b"0\r\n\r\n")
            return keep
        if path == "/close-delimited":
            n = int(query.get("bytes", "100000"))
            c.send(self._head(200, [], keep=True, conn_header=False))
            if not head_only:
                sent = 0
                for piece in util.pattern_chunks(n, chunk=16384):
                    c.send(piece)
                    sent += len(piece)
                    if sent % 65536 < 16384:
                        time.sleep(0.005)
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return False
        if path == "/reset":
            n = int(query.get("bytes", "10000"))
            c.send(self._head(200, [("Content-Length", "1000000")], keep))
            c.send(util.pattern_bytes(n))
            time.sleep(0.05)
            c.rst()
            return False
        if path == "/garbage":
            c.send(b"NOT HTTP AT ALL\r\n\r\n")
            return False
        if path == "/bighead":
            n = int(query.get("bytes", "20000"))
            body = self.name.encode()
            c.send(self._head(200, [("X-Big", "b" * n), ("Content-Length", str(len(body)))], keep))
            if not head_only:
                c.send(body)
            return keep
        if path == "/1xx":
            code = int(query.get("code", "103"))
            for _ in range(int(query.get("count", "1"))):
                if code == 103:
                    c.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                else:
                    c.send(b"HTTP/1.1 %d Interim\r\n\r\n" % code)
                time.sleep(0.02)
            return self._respond(c, 200, self.name.encode(), keep, head_only)
        if path == "/big":
            n = int(query.get("bytes", "1000000"))
            rate = float(query.get("rate", 0)) or None
            c.send(self._head(200, [("Content-Length", str(n))], keep))
            if not head_only:
                limiter = util.RateLimiter(rate)
                for piece in util.pattern_chunks(n, chunk=65536):
                    c.send(piece)
                    limiter.consumed(len(piece))
            return keep
        if path == "/stall":
            n = int(query.get("bytes", "100000"))
            m = int(query.get("after", "1000"))
            c.send(self._head(200, [("Content-Length", str(n))], keep))
            c.send(util.pattern_bytes(m))
            c.wait_peer_or_stop()
            return False
        return self._respond(c, 200, self.name.encode(), keep, head_only)

    def _head(self, code, headers, keep, conn_header=True):
        reason = {200: "OK", 204: "No Content", 304: "Not Modified", 404: "Not Found",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(code, "Status")
        out = ["HTTP/1.1 %d %s\r\n" % (code, reason), "X-Backend: %s\r\n" % self.name]
        out += ["%s: %s\r\n" % (k, v) for k, v in headers]
        if conn_header and not keep:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        return "".join(out).encode("latin-1")

    def _respond(self, c, code, body, keep, head_only, ctype="text/plain"):
        if code in BODY_NONE_STATUSES or 100 <= code < 200:
            c.send(self._head(code, [], keep))
        else:
            c.send(self._head(code, [("Content-Type", ctype), ("Content-Length", str(len(body)))],
                              keep))
            if not head_only:
                c.send(body)
        return keep


class Blackhole:
    """A listening socket whose accept queue is full, so a connect() to it
    neither succeeds nor is refused (the SYN is dropped): a backend for the
    connect timeout. Close with .close()."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = []
        # backlog 0 still admits one or two queued connections: fill the queue
        # until a connect no longer completes.
        for _ in range(8):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect((HOST, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(f)
            _, w, _ = select.select([], [f], [], 0.2)
            if not w:
                break

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def close(self):
        for f in self.fillers:
            f.close()
        self.lsock.close()
