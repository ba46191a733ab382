"""Scripted servers for the integration tests, all on loopback, every one
stoppable, every wait bounded. One base class (Server: name, host, port,
address, start/stop/kill/restart) and one /healthz answerer (HealthAnswers:
a fixed status or a cycled pattern, every answer timed):

  Backend         a misbehaving HTTP/1.1 backend, one thread per connection
                  (paths below)
  TCPEchoServer   echoes every byte (an HTTP health check on it is answered)
  ScriptedServer  runs script(sock) on each connection
  WsEchoServer    a WebSocket echo server (python3-websockets on an
                  clients.AsyncioThread); plain HTTP gets /healthz or 200
  Blackhole       a listener whose accept queue is full (connects hang)
  Dnsmasq         a real DNS server (Debian's dnsmasq) on a loopback UDP/TCP
                  port, answering from a hosts file the test rewrites

Backend answers by path:

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
  /big?bytes=N[&rate=R]     N deterministic bytes (wire.pattern_*) with Content-Length,
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

Standard library + python3-websockets only (run with /usr/bin/python3).
"""

import asyncio
import hashlib
import http
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

import wire
from clients import AsyncioThread
from wire import HOST, close_quietly

READ_CHUNK = 65536
BODY_NONE_STATUSES = (204, 304)
# How long a server waits for its own threads when stopped.
JOIN_TIMEOUT = 3.0


def shut_down_sockets(lsock, socks, reset):
    """Closes the listening socket <lsock> (None is fine: connects are then
    refused) and ends every connection in <socks>: with a FIN, or, when
    <reset>, so that their close sends an RST. SHUT_RD wakes a thread blocked
    in recv() without sending a FIN; with SO_LINGER 0 the final close (by that
    thread or the caller) then sends the RST."""
    close_quietly(lsock)
    for s in socks:
        try:
            if reset:
                reset_on_close(s)
                s.shutdown(socket.SHUT_RD)
            else:
                s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def reset_on_close(s):
    """Makes the close of socket <s> send an RST (SO_LINGER 0)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def rst_close(s):
    """Closes socket <s> with an RST."""
    reset_on_close(s)
    close_quietly(s)


def read_head(s):
    """Reads one request head from socket <s>; returns it (b"" on EOF)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(READ_CHUNK)
        if not d:
            return b""
        buf += d
    return buf


# --- the base class and the one /healthz answerer --------------------------------------

class Server:
    """What every scripted server has: a name, a loopback host and port,
    .address ("host:port"), start() (returns self), stop(timeout) (graceful),
    kill(timeout) (abrupt; default: like stop) and restart() (same port)."""

    def __init__(self, name, port=0, host=HOST):
        self.name = name
        self.host = host                  # a loopback address (127.0.0.0/8)
        self._want_port = port
        self.port = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        raise NotImplementedError

    def stop(self, timeout=JOIN_TIMEOUT):
        raise NotImplementedError

    def kill(self, timeout=JOIN_TIMEOUT):
        self.stop(timeout)

    def restart(self):
        """Starts again on the same port after stop()/kill()."""
        self._want_port = self.port
        return self.start()


class HealthAnswers:
    """The /healthz answer of a server: .health_status (settable), or
    .health_pattern, a list of statuses cycled one entry per check. Every
    answer is logged as (monotonic time, status) in .health_log. A server
    reads .health_status exactly once per /healthz request, right before
    answering it: the property is the hook that times the answers."""

    def _init_health(self, status=200):
        self.health_log = []
        self.health_pattern = None
        self._pattern_i = 0
        self._hs = status

    @property
    def health_status(self):
        if self.health_pattern:
            code = self.health_pattern[self._pattern_i % len(self.health_pattern)]
            self._pattern_i += 1
        else:
            code = self._hs
        self.health_log.append((time.monotonic(), code))
        return code

    @health_status.setter
    def health_status(self, code):
        self._hs = code

    def first_health_answer(self, code, after=0.0):
        """Time of the first /healthz answer with <code> at or after <after>, or None."""
        for t, c in list(self.health_log):
            if c == code and t >= after:
                return t
        return None


class ThreadedServer(Server):
    """A listening socket with an accept thread and one thread per connection
    running self._handle(sock, peer). stop() closes everything with a FIN,
    kill() closes the listener (connects are refused) and resets every
    connection."""

    def __init__(self, name, port=0, host=HOST, backlog=128):
        super().__init__(name, port, host)
        self.backlog = backlog
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = set()
        self._threads = []
        self._lsock = None
        self._accept_thread = None

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
                                               name="%s-accept" % self.name)
        self._accept_thread.start()
        return self

    def stop(self, timeout=JOIN_TIMEOUT):
        """Stops accepting and closes every connection (FIN)."""
        self._shutdown(reset=False, timeout=timeout)

    def kill(self, timeout=JOIN_TIMEOUT):
        """Simulates a dead server: listener closed (connects are refused) and
        every open connection reset."""
        self._shutdown(reset=True, timeout=timeout)

    def _shutdown(self, reset, timeout):
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        shut_down_sockets(self._lsock, socks, reset)
        self._lsock = None
        if reset:
            for s in socks:
                s.close()
        deadline = time.monotonic() + timeout
        for t in [self._accept_thread] + list(self._threads):
            if t is not None:
                t.join(max(0.01, deadline - time.monotonic()))
        for s in socks:
            s.close()

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
            with self._lock:
                self._socks.add(s)
            t = threading.Thread(target=self._run, args=(s, peer), daemon=True,
                                 name="%s-conn" % self.name)
            self._threads.append(t)
            t.start()

    def _run(self, s, peer):
        try:
            self._handle(s, peer)
        except OSError:
            pass
        finally:
            with self._lock:
                self._socks.discard(s)
            close_quietly(s)

    def _handle(self, s, peer):
        raise NotImplementedError


class ScriptedServer(ThreadedServer):
    """Runs script(sock) on each connection (the socket is closed when it
    returns); .accepted counts connections."""

    def __init__(self, script, name="scripted", port=0, host=HOST):
        super().__init__(name, port, host, backlog=64)
        self.script = script
        self.accepted = 0

    def _handle(self, s, peer):
        s.settimeout(5.0)
        self.accepted += 1
        self.script(s)


# --- the HTTP backend ------------------------------------------------------------------

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
        limiter = wire.RateLimiter(rate)
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
        """Closes with an RST."""
        reset_on_close(self.sock)
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            close_quietly(self.sock)

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


class Backend(ThreadedServer, HealthAnswers):
    """An HTTP/1.1 backend on <host>:<port> (paths: module docstring). start()/stop() (graceful: closes
    everything with FIN), kill() (abrupt: listener closed, connections reset).

    Attributes tests read: name, port, address, requests (list of Request),
    conns_total (accepted connections), conns_active, closed_conns
    (conn ids whose peer closed or that the backend closed).
    Attributes tests set: health_status (int), mode (None or a path),
    idle_timeout (seconds: close a keep-alive connection idle that long),
    response_delay (seconds before every non-health response),
    health_delay (seconds before answering /healthz),
    drop_reused (close, without answering, any request that is not the first
    on its connection: the keep-alive race). /healthz answers: HealthAnswers."""

    def __init__(self, name="backend", port=0, backlog=128, idle_timeout=None,
                 health_status=200, mode=None, host=HOST):
        super().__init__(name, port, host, backlog)
        self._init_health(health_status)
        self.idle_timeout = idle_timeout
        self.mode = mode
        self.response_delay = 0.0
        self.health_delay = 0.0
        self.drop_reused = False
        self.requests = []
        self.health_requests = 0
        self.conns_total = 0
        self.conns_active = 0
        self.closed_conns = []

    # queries -----------------------------------------------------------------
    def reqs(self, path=None):
        """Recorded (non-health) requests, optionally only those for <path>."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def clear(self):
        with self._lock:
            self.requests = []

    def wait_requests(self, n, timeout=5.0):
        return wire.wait_until(lambda: len(self.reqs()) >= n, timeout,
                               what="%d requests at backend %s" % (n, self.name))

    def request_times(self, path=None):
        return [r.time for r in self.reqs(path)]

    # serving -------------------------------------------------------------------
    def _handle(self, s, peer):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.conns_total += 1
            self.conns_active += 1
            c = _Conn(self, s, "%s:%d" % peer, self.conns_total)
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
                for piece in wire.pattern_chunks(n, chunk=16384):
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
            c.send(wire.pattern_bytes(n))
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
                limiter = wire.RateLimiter(rate)
                for piece in wire.pattern_chunks(n, chunk=65536):
                    c.send(piece)
                    limiter.consumed(len(piece))
            return keep
        if path == "/stall":
            n = int(query.get("bytes", "100000"))
            m = int(query.get("after", "1000"))
            c.send(self._head(200, [("Content-Length", str(n))], keep))
            c.send(wire.pattern_bytes(m))
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
            # head and body in one write, as servers do for small bodies: a
            # kill() never falls between them (a cut response is a test of
            # its own)
            c.send(self._head(code, [("Content-Type", ctype), ("Content-Length", str(len(body)))],
                              keep) + (b"" if head_only else body))
        return keep




# --- raw TCP echo server ----------------------------------------------------------------

class TCPEchoServer(ThreadedServer, HealthAnswers):
    """Echoes every byte back. A connection whose first bytes are
    "GET /healthz" is answered as HTTP with .health_status (so an HTTP health
    check can drain it); a plain TCP health check just connects and closes.
    .conns_total / .conns_active count data connections (not health checks),
    .bytes_echoed the bytes sent back."""

    def __init__(self, name="echo", port=0, host=HOST):
        super().__init__(name, port, host, backlog=64)
        self._init_health()
        self.conns_total = 0
        self.conns_active = 0
        self.bytes_echoed = 0

    def _handle(self, s, peer):
        s.settimeout(0.2)
        counted = False
        try:
            first = True
            while not self._stop.is_set():
                try:
                    d = s.recv(READ_CHUNK)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not d:
                    # half-close passed on: answer with our own FIN
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                if first and d.startswith(b"GET /healthz"):
                    code = self.health_status
                    s.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                              % code)
                    return
                if first:
                    first = False
                    counted = True
                    with self._lock:
                        self.conns_total += 1
                        self.conns_active += 1
                s.sendall(d)
                with self._lock:
                    self.bytes_echoed += len(d)
        finally:
            if counted:
                with self._lock:
                    self.conns_active -= 1


# --- WebSocket echo server ----------------------------------------------------------------

class WsEchoServer(Server, HealthAnswers):
    """A WebSocket echo server: every message m is answered with m, or with
    "<name>:<m>" when <tag>. Plain HTTP: GET /healthz gets .health_status;
    any other request without "Connection: upgrade" gets 200 with body
    <name> and X-Backend: <name> (websockets then closes the connection).
    Runs on <aio> (a clients.AsyncioThread), or on its own one.
    .sessions / .sessions_active count WebSocket sessions, .echoed messages,
    .plain plain HTTP answers."""

    def __init__(self, name="ws", tag=False, aio=None, port=0, host=HOST):
        import websockets  # python3-websockets (asyncio API)
        super().__init__(name, port, host)
        self._init_health()
        self._ws = websockets
        self.tag = tag
        self.sessions = 0
        self.sessions_active = 0
        self.echoed = 0
        self.plain = 0
        self._aio = aio
        self._own_aio = None
        self._server = None

    def start(self):
        if self._aio is None:
            self._own_aio = self._aio = AsyncioThread("ws-%s" % self.name)
        self._server = self._aio.run(self._start(), 5.0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _start(self):
        return await self._ws.serve(self._handler, self.host, self._want_port,
                                    process_request=self._process_request,
                                    ping_interval=None, close_timeout=1)

    async def _process_request(self, path, headers):
        if path.split("?")[0] == "/healthz":
            code = self.health_status
            return http.HTTPStatus(code), [("Content-Type", "text/plain")], b"ok"
        if "upgrade" in headers.get("Connection", "").lower():
            return None
        self.plain += 1
        return (http.HTTPStatus.OK, [("X-Backend", self.name), ("Content-Type", "text/plain")],
                self.name.encode())

    async def _handler(self, ws, *args):
        self.sessions += 1
        self.sessions_active += 1
        try:
            async for msg in ws:
                self.echoed += 1
                await ws.send("%s:%s" % (self.name, msg) if self.tag else msg)
        except Exception:  # pylint: disable=broad-except
            pass    # a cut tunnel is what some tests are about
        finally:
            self.sessions_active -= 1

    def stop(self, timeout=JOIN_TIMEOUT):
        if self._server is not None:
            async def _close():
                self._server.close()
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            try:
                self._aio.run(_close(), timeout + 1.0)
            except Exception:  # pylint: disable=broad-except
                pass
            self._server = None
        if self._own_aio is not None:
            self._own_aio.close()
            self._own_aio = self._aio = None


# --- a blackhole ------------------------------------------------------------------------------

class Blackhole(Server):
    """A listening socket whose accept queue is full, so a connect() to it
    neither succeeds nor is refused (the SYN is dropped): a backend for the
    connect timeout. Listening as soon as it is made; close() or stop()."""

    def __init__(self, name="blackhole", host=HOST):
        super().__init__(name, 0, host)
        self.lsock = None
        self.fillers = []
        self.start()

    def start(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind((self.host, self._want_port))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        # backlog 0 still admits one or two queued connections: fill the queue
        # until a connect no longer completes.
        for _ in range(8):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect((self.host, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(f)
            _, w, _ = select.select([], [f], [], 0.2)
            if not w:
                break
        return self

    def stop(self, timeout=JOIN_TIMEOUT):
        for f in self.fillers:
            f.close()
        self.fillers = []
        if self.lsock is not None:
            self.lsock.close()
            self.lsock = None

    close = stop


# --- DNS -----------------------------------------------------------------------------

# How long Dnsmasq.start() waits for the server to answer its first query.
DNS_START_TIMEOUT = 5.0


def dns_query(port, name, qtype=1, host=HOST, timeout=1.0):
    """One UDP query for <name> (<qtype>: 1 A, 28 AAAA, 33 SRV) to host:port.
    Returns (rcode, number of answers); raises OSError (socket.timeout) when
    nothing answers."""
    qid = random.randrange(1 << 16)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(pkt, (host, port))
        while True:
            r, _ = s.recvfrom(4096)
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
                flags, _, ancount = struct.unpack(">HHH", r[2:8])
                return flags & 0xF, ancount
    finally:
        s.close()


def free_dns_port(host=HOST):
    """A port free for both UDP and TCP on <host> a moment ago (dnsmasq takes both)."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
        finally:
            u.close()
            t.close()
    raise OSError("no port free for both UDP and TCP")


class Dnsmasq(Server):
    """Debian's dnsmasq (the binary of dnsmasq-base: no system service that
    would take port 53) on <host>:<port> (UDP and TCP), authoritative for
    the <domain> zone (a name missing from the hosts file is NXDOMAIN, a
    missing record type an empty answer, like a cluster DNS) and forwarding
    nothing. Its answers come from a hosts file: set_hosts({name: [address,
    ...]}) rewrites it and SIGHUPs dnsmasq, which re-reads it (and drops its
    cache). <extra> are more command-line options (e.g. --srv-host=...).
    stop() / kill() end the process (queries are then refused: the port is
    closed); restart() starts it again on the same port with the same hosts.
    <workdir> holds the hosts file and the log (dnsmasq.log)."""

    def __init__(self, workdir, name="dnsmasq", port=0, host=HOST, domain="test", extra=None):
        super().__init__(name, port, host)
        self.workdir = str(workdir)
        self.domain = domain
        self.extra = list(extra or [])
        self.hosts_path = os.path.join(self.workdir, "%s.hosts" % name)
        self.log_path = os.path.join(self.workdir, "%s.log" % name)
        self.proc = None
        self.hosts = {}
        self._write_hosts()

    def _write_hosts(self):
        tmp = self.hosts_path + ".tmp"
        with open(tmp, "w") as f:
            for name, addrs in self.hosts.items():
                for a in addrs:
                    f.write("%s %s\n" % (a, name))
        os.replace(tmp, self.hosts_path)  # dnsmasq never reads half a file

    def start(self):
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("dnsmasq not found: install the Debian package dnsmasq-base")
        self.port = self._want_port or free_dns_port(self.host)
        self._want_port = self.port
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        cmd = [binary, "--no-daemon", "--port=%d" % self.port, "--listen-address=%s" % self.host,
               "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
               "--addn-hosts=%s" % self.hosts_path, "--local=/%s/" % self.domain,
               "--user=%s" % (user or "root"), "--pid-file=", "--log-facility=-",
               "--log-queries"] + self.extra
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log)
        deadline = time.monotonic() + DNS_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited with %s:\n%s" % (self.proc.returncode,
                                                                      self.log()))
            try:
                dns_query(self.port, "probe." + self.domain, timeout=0.2)
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dnsmasq did not answer within %.0fs:\n%s"
                                   % (DNS_START_TIMEOUT, self.log()))
            time.sleep(0.02)

    def set_hosts(self, hosts):
        """Answers from now on: {name: [address, ...]} (an empty list or a
        missing name: NXDOMAIN). Returns once dnsmasq has re-read the file
        (bounded)."""
        self.hosts = {k: list(v) for k, v in hosts.items()}
        self._write_hosts()
        if self.running():
            before = self.log().count("read %s" % self.hosts_path)
            self.proc.send_signal(signal.SIGHUP)
            wire.wait_until(lambda: self.log().count("read %s" % self.hosts_path) > before,
                            3.0, what="dnsmasq to re-read its hosts file")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return wire.read_text(self.log_path)

    def stop(self, timeout=JOIN_TIMEOUT):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None
        self._log.close()

    def kill(self, timeout=JOIN_TIMEOUT):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.stop(timeout)
