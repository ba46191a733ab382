"""Helpers for the health-check, backend-state, WebSocket and TCP-mode
integration tests: a backend whose /healthz answers are timed (and can follow
a pattern), a client load loop that counts errors, a raw TCP echo server, a
WebSocket echo server (python3-websockets, asyncio, in a thread) with a plain
HTTP /healthz, and clients that keep a session exchanging messages.

Everything listens on 127.0.0.1, every wait is bounded and every server and
thread is stoppable. Standard library + python3-websockets only."""

import asyncio
import http
import socket
import threading
import time

import util
from backend import Backend, shut_down_sockets
from util import HOST, RawConn

# How long a helper waits for its own threads when stopped.
JOIN_TIMEOUT = 3.0


def hc_opts(interval="250ms", timeout="120ms", healthy=2, unhealthy=2, protocol="http", **kw):
    """A health_check section with short intervals."""
    d = {"protocol": protocol, "interval": interval, "timeout": timeout,
         "healthy_threshold": healthy, "unhealthy_threshold": unhealthy}
    if protocol == "http":
        d["path"] = "/healthz"
    d.update(kw)
    return d


def backend_state(u, pool, name):
    b = u.backend_status(pool, name)
    return b["state"] if b else None


def wait_state(u, pool, name, state, timeout=5.0):
    """Waits until /status shows backend <pool>/<name> in <state> (None: gone);
    returns the backend's /status object (None when gone)."""
    def ok():
        b = u.backend_status(pool, name)
        if state is None:
            return b is None or "gone"
        return b if b and b["state"] == state else None
    r = util.wait_until(ok, timeout, interval=0.01,
                        what="backend %s/%s in state %s" % (pool, name, state))
    return None if r == "gone" else r


def wait_field(u, pool, name, key, at_least, timeout=3.0):
    """Waits until the backend's /status field <key> is >= <at_least>;
    returns the backend's /status object."""
    def ok():
        b = u.backend_status(pool, name)
        return b if b and b[key] >= at_least else None
    return util.wait_until(ok, timeout, interval=0.005,
                           what="%s/%s %s >= %d" % (pool, name, key, at_least))


def state_transitions(u, backend=None):
    """[(from, to, reason)] of the 'backend state' log lines, optionally of one backend."""
    out = []
    for l in u.log_lines("backend state"):
        kv = l["kv"]
        if backend is None or kv.get("backend") == backend:
            out.append((kv.get("from"), kv.get("to"), kv.get("reason")))
    return out


# --- a backend whose health answers are timed ----------------------------------

class TimedBackend(Backend):
    """A Backend that records (monotonic time, status) of every /healthz answer
    in .health_log, and can follow a pattern of statuses (.health_pattern, a
    list cycled one entry per check) instead of the fixed .health_status."""

    def __init__(self, name="backend", **kw):
        self.health_log = []
        self.health_pattern = None
        self._pattern_i = 0
        self._hs = 200
        super().__init__(name, **kw)

    # Backend reads .health_status exactly once per /healthz request, right
    # before answering it: the property is the hook that times the answers.
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

    def request_times(self, path=None):
        return [r.time for r in self.reqs(path)]


class BackendSet:
    """Owns what a test starts (servers, load loops, pingers, clients) and
    stops or closes all of it, last added first."""

    def __init__(self):
        self.items = []

    def add(self, obj):
        self.items.append(obj)
        return obj

    def backend(self, name, **kw):
        return self.add(TimedBackend(name, **kw).start())

    def stop(self):
        for o in reversed(self.items):
            try:
                if isinstance(o, (Backend, TCPEchoServer, WSEchoServer)):
                    o.stop(timeout=2.0)
                elif hasattr(o, "stop"):
                    o.stop()
                else:
                    o.close()
            except Exception:  # pylint: disable=broad-except
                pass


# --- client load loop -------------------------------------------------------------

class LoadLoop:
    """<threads> client threads doing keep-alive GETs of <path> through usher
    until stop() (or <duration> seconds). Counts successes per backend (the
    response body is the backend name) and records every error:
    a status other than 200, a connection closed or reset, a timeout."""

    def __init__(self, port, threads=3, path="/", pause=0.003, duration=20.0, timeout=3.0):
        self.port = port
        self.path = path
        self.pause = pause
        self.duration = duration
        self.timeout = timeout
        self.ok = {}
        self.total = 0
        self.errors = []          # (monotonic time, thread, description)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name="load-%d" % i) for i in range(threads)]

    def start(self):
        self.t_start = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + JOIN_TIMEOUT)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, "load threads still running: %r" % alive
        return self

    def run_for(self, seconds):
        """Blocks <seconds> (bounded by the loop's own duration)."""
        time.sleep(min(seconds, self.duration))

    def _err(self, i, what):
        with self._lock:
            self.errors.append((time.monotonic(), i, what))

    def _run(self, i):
        deadline = time.monotonic() + self.duration
        conn = None
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            target = "(connect)"
            try:
                if conn is None:
                    conn = RawConn(self.port, timeout=self.timeout)
                n += 1
                sep = "&" if "?" in self.path else "?"
                target = "%s%st=%d-%d" % (self.path, sep, i, n)
                r = conn.request("GET", target, timeout=self.timeout)
                if r.status != 200 or not r.complete:
                    self._err(i, "%s: status %d complete=%s body=%r" % (
                        target, r.status, r.complete, r.body[:100]))
                else:
                    name = r.text()
                    with self._lock:
                        self.ok[name] = self.ok.get(name, 0) + 1
                if r.closed or r.has_token("connection", "close"):
                    conn.close()
                    conn = None
            except Exception as e:  # pylint: disable=broad-except
                self._err(i, "%s: %s: %s" % (target, type(e).__name__, e))
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.total += 1
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def summary(self):
        return "total=%d ok=%r errors=%d %r" % (self.total, self.ok, len(self.errors),
                                                self.errors[:10])


# --- raw TCP echo server ---------------------------------------------------------

class TCPEchoServer:
    """Echoes every byte back on 127.0.0.1:<port>. A connection whose first
    bytes are "GET /healthz" is answered as HTTP with .health_status (so an
    HTTP health check can drain it); a plain TCP health check just connects
    and closes. stop(): FIN everything; kill(): listener closed, connections
    reset; restart(): same port again."""

    def __init__(self, name="echo", port=0):
        self.name = name
        self._want_port = port
        self.port = None
        self.health_status = 200
        self.health_log = []      # (monotonic time, status) of HTTP health answers
        self.conns_total = 0      # data connections (not health checks)
        self.conns_active = 0
        self.bytes_echoed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lsock = None
        self._socks = set()
        self._threads = []

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, self._want_port))
        s.listen(64)
        s.settimeout(0.1)
        self._lsock = s
        self.port = s.getsockname()[1]
        self._stop.clear()
        t = threading.Thread(target=self._accept, daemon=True, name="echo-%s" % self.name)
        self._threads = [t]
        t.start()
        return self

    def restart(self):
        self._want_port = self.port
        return self.start()

    def first_health_answer(self, code, after=0.0):
        for t, c in list(self.health_log):
            if c == code and t >= after:
                return t
        return None

    def _accept(self):
        while not self._stop.is_set():
            lsock = self._lsock
            if lsock is None:
                return
            try:
                s, _ = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(0.2)
            with self._lock:
                self._socks.add(s)
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, s):
        counted = False
        try:
            first = True
            while not self._stop.is_set():
                try:
                    d = s.recv(65536)
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
                    self.health_log.append((time.monotonic(), code))
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
        except OSError:
            pass
        finally:
            with self._lock:
                self._socks.discard(s)
                if counted:
                    self.conns_active -= 1
            try:
                s.close()
            except OSError:
                pass

    def stop(self, timeout=2.0):
        self._shutdown(False, timeout)

    def kill(self, timeout=2.0):
        self._shutdown(True, timeout)

    def _shutdown(self, reset, timeout):
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        shut_down_sockets(self._lsock, socks, reset)
        self._lsock = None
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.01, deadline - time.monotonic()))


class TCPClient:
    """One client connection; exchange() sends a line and reads its echo."""

    def __init__(self, port, timeout=3.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def exchange(self, msg, timeout=None):
        data = msg.encode() if isinstance(msg, str) else msg
        self.sock.settimeout(timeout or self.timeout)
        self.sock.sendall(data)
        got = b""
        while len(got) < len(data):
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("closed by peer after %d of %d echoed bytes"
                                      % (len(got), len(data)))
            got += d
        if got != data:
            raise AssertionError("echo mismatch: sent %r got %r" % (data, got))
        return got.decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- WebSocket echo server and client (asyncio in a thread) ------------------------

class _LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self, name):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True, name=name)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def close(self):
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(JOIN_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


class WSEchoServer:
    """A WebSocket echo server on 127.0.0.1: every text message m is answered
    with "<name>:<m>". Plain HTTP GET /healthz is answered with
    .health_status (times recorded in .health_log), so usher can health-check
    it over HTTP. .sessions_active / .sessions_total count WebSocket sessions."""

    def __init__(self, name="ws"):
        import websockets  # python3-websockets (asyncio API)
        self._ws = websockets
        self.name = name
        self.port = None
        self.health_status = 200
        self.health_log = []
        self.sessions_active = 0
        self.sessions_total = 0
        self._lt = None
        self._server = None

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def start(self):
        self._lt = _LoopThread("ws-%s" % self.name)
        self._server = self._lt.call(self._start(), 5.0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _start(self):
        return await self._ws.serve(self._handler, HOST, 0, process_request=self._process_request,
                                    ping_interval=None, close_timeout=1)

    async def _process_request(self, path, headers):
        if path.split("?")[0] == "/healthz":
            code = self.health_status
            self.health_log.append((time.monotonic(), code))
            return http.HTTPStatus(code), [("Content-Type", "text/plain")], b"ok"
        return None

    async def _handler(self, ws, *args):
        self.sessions_active += 1
        self.sessions_total += 1
        try:
            async for msg in ws:
                await ws.send("%s:%s" % (self.name, msg))
        except Exception:  # pylint: disable=broad-except
            pass
        finally:
            self.sessions_active -= 1

    def first_health_answer(self, code, after=0.0):
        for t, c in list(self.health_log):
            if c == code and t >= after:
                return t
        return None

    def stop(self, timeout=2.0):
        if self._server is not None:
            async def _close():
                self._server.close()
                await self._server.wait_closed()
            try:
                self._lt.call(_close(), timeout)
            except Exception:  # pylint: disable=broad-except
                pass
            self._server = None
        if self._lt is not None:
            self._lt.close()
            self._lt = None


class WSClient:
    """One WebSocket client session (asyncio client in its own thread)."""

    def __init__(self, url, timeout=3.0):
        import websockets
        self.timeout = timeout
        self._lt = _LoopThread("ws-client")
        try:
            async def _connect():
                return await websockets.connect(url, open_timeout=timeout, ping_interval=None,
                                                close_timeout=1, max_size=None)
            self.ws = self._lt.call(_connect(), timeout + 1)
        except BaseException:
            self._lt.close()
            raise

    async def _xchg(self, msg, timeout):
        await self.ws.send(msg)
        return await asyncio.wait_for(self.ws.recv(), timeout)

    def exchange(self, msg, timeout=None):
        """Sends <msg>, returns the echo "<backend>:<msg>"."""
        t = timeout or self.timeout
        reply = self._lt.call(self._xchg(msg, t), t + 1)
        if not reply.endswith(":" + msg):
            raise AssertionError("echo mismatch: sent %r got %r" % (msg, reply))
        return reply

    def close(self):
        if self._lt is None:
            return

        async def _close():
            await self.ws.close()
        try:
            self._lt.call(_close(), 2.0)
        except BaseException:  # pylint: disable=broad-except
            pass
        self._lt.close()
        self._lt = None


class Pinger:
    """Keeps one session busy: exchange("ping <n>") every <every> seconds in a
    thread until the session fails or stop(). Records .ok, .first_ok,
    .last_ok, .failed_at (monotonic) and .error."""

    def __init__(self, session, every=0.05, timeout=1.0, duration=15.0):
        self.session = session
        self.every = every
        self.timeout = timeout
        self.duration = duration
        self.ok = 0
        self.first_ok = None
        self.last_ok = None
        self.last_reply = None
        self.failed_at = None
        self.error = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="pinger")

    def start(self):
        self._t.start()
        return self

    def _run(self):
        deadline = time.monotonic() + self.duration
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                self.last_reply = self.session.exchange("ping %d" % n, timeout=self.timeout)
            except BaseException as e:  # pylint: disable=broad-except
                self.failed_at = time.monotonic()
                self.error = "%s: %s" % (type(e).__name__, e)
                return
            now = time.monotonic()
            if self.first_ok is None:
                self.first_ok = now
            self.last_ok = now
            self.ok += 1
            self._stop.wait(self.every)

    def wait_failed(self, timeout):
        self._t.join(timeout)
        return self.failed_at

    def stop(self):
        self._stop.set()
        self._t.join(self.timeout + JOIN_TIMEOUT)


# --- fixture -------------------------------------------------------------------------

import pytest  # noqa: E402  (after the helpers: the fixture below is the only use)


@pytest.fixture
def servers():
    """A BackendSet: add servers/clients with .add(x) or .backend(name); all
    stopped at teardown (after usher, when listed before usher_factory)."""
    s = BackendSet()
    yield s
    s.stop()
