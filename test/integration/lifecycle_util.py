"""Helpers for the process-lifecycle tests (drain, reload, blue/green):
configs that keep the running listeners' binds, a reload that waits for its
outcome, a keep-alive client load that counts errors and reconnects, and a
WebSocket echo backend (python3-websockets) that also answers plain HTTP.

Standard library + python3-websockets only (run with /usr/bin/python3)."""

import asyncio
import http
import re
import signal
import socket
import threading
import time

import websockets

import util
from util import HOST, ConnectionClosed, RawConn

# The order DESIGN.md "The process drain" gives for a clean drain with no
# drain_delay: one log line per step, then the releases in reverse order of
# acquisition.
RELEASE_ORDER = ["listeners", "client_connections", "health_checks", "backend_pools",
                 "admin_listener"]


# --- configs and reloads ---------------------------------------------------------------

def config_for(u, pools, split=None, listeners=None, **kw):
    """make_config() for a reload of the running usher <u>: same admin bind and,
    unless <listeners> is given, the single listener "web" on its current bind
    with <split> (default: every pool 100). Listeners given without a bind keep
    the bind of the running listener of the same name (a new one gets a free port)."""
    if listeners is None:
        listeners = [{"name": "web", "pools": dict(split) if split is not None else
                      {p: 100 for p in pools}}]
    ls = []
    for l in listeners:
        l = dict(l)
        if "bind" not in l and l["name"] in u.ports:
            l["bind"] = "%s:%d" % (HOST, u.ports[l["name"]])
        ls.append(l)
    return util.make_config(pools, listeners=ls, admin=u.cfg["admin"]["bind"], **kw)


def _outcomes(u):
    return re.findall(r"^\S+ \w+ reload (done|failed) .*generation=(\d+)", u.log(), re.M)


def reload_and_wait(u, cfg, timeout=5.0):
    """Writes <cfg>, sends SIGHUP and waits for the reload's outcome line.
    Returns ("done"|"failed", generation). Waiting for the outcome before the
    next SIGHUP matters: signals that arrive together are merged into one."""
    before = len(_outcomes(u))
    u.reload(cfg)
    util.wait_until(lambda: len(_outcomes(u)) > before, timeout,
                    what="reload done|failed after SIGHUP")
    kind, gen = _outcomes(u)[before]
    return kind, int(gen)


def log_events(u):
    """[(event, kv)] of every parsed log line so far."""
    return [(p["event"], p["kv"]) for p in u.log_lines()]


def assert_in_order(u, steps):
    """Asserts that the log has, in this order, lines matching <steps>: each
    step is (event, {key: value}) and matches the first line after the
    previous step's line with that event whose kv contains those pairs."""
    evs = log_events(u)
    pos = 0
    for event, kv in steps:
        for i in range(pos, len(evs)):
            e, k = evs[i]
            if e == event and all(k.get(a) == str(b) for a, b in kv.items()):
                pos = i + 1
                break
        else:
            raise AssertionError("log line %s %r not found after line %d (in order); log:\n%s"
                                 % (event, kv, pos, u.log()))


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


def drain_signal(u, sig=signal.SIGTERM):
    """Sends <sig> and returns the monotonic time just before it was sent."""
    t = time.monotonic()
    u.send_signal(sig)
    return t


class Background:
    """Runs fn() in a thread; .join(timeout) returns its result or re-raises
    its exception (AssertionError if it is still running)."""

    def __init__(self, fn):
        self.result = None
        self.exc = None
        self.done_at = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:  # pylint: disable=broad-except
            self.exc = e
        self.done_at = time.monotonic()

    def join(self, timeout):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("background call still running after %.1fs" % timeout)
        if self.exc:
            raise self.exc
        return self.result


def slow_request(port, ms, timeout=15.0, conn=None, check_close=True, path=None):
    """Background GET /slow?ms=<ms> (or <path>) on a new connection (or on
    <conn>, left open). Result: (Response, closed) where closed says whether
    the server closed the connection within 3 s after the response (None
    without <check_close>)."""

    def run():
        c = conn or RawConn(port, timeout=timeout)
        try:
            r = c.request("GET", path or "/slow?ms=%d" % ms, timeout=timeout)
            closed = None
            if check_close:
                try:
                    closed = r.closed or c.wait_closed(3.0) == b""
                except TimeoutError:
                    closed = False
            return r, closed
        finally:
            if conn is None:
                c.close()

    return Background(run)


# --- a keep-alive client load ----------------------------------------------------------------

class KeepAliveLoad:
    """<threads> clients, each on its own persistent connection, sending GET
    <path> in a loop until stop() or <max_seconds>. Each response is recorded
    as (t_sent, t_received, status, X-Backend). A connection is replaced only
    when the server legitimately ends it (a response with Connection: close);
    that counts as a reconnect. Anything else is an error: an exception, a
    close or reset without a complete response, a status other than 200."""

    def __init__(self, port, threads=4, path="/", max_seconds=15.0, pause=0.0):
        self.port = port
        self.path = path
        self.pause = pause
        self.deadline = time.monotonic() + max_seconds
        self.records = []      # (t_sent, t_received, status, backend, thread index)
        self.errors = []       # (thread index, description)
        self.reconnects = 0
        self.connects = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name="load-%d" % i) for i in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout=10.0):
        self._stop.set()
        for t in self._threads:
            t.join(max(0.1, timeout))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, "load threads still running: %s" % alive
        return self

    def count(self):
        return len(self.records)

    def _error(self, i, what):
        with self._lock:
            self.errors.append((i, what))

    def _run(self, i):
        conn = None
        try:
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                if conn is None:
                    conn = RawConn(self.port, timeout=5.0)
                    with self._lock:
                        self.connects += 1
                t0 = time.monotonic()
                try:
                    r = conn.request("GET", self.path)
                except (ConnectionClosed, TimeoutError, OSError, ValueError) as e:
                    self._error(i, "request %d: %r (reset=%s)" % (len(self.records), e,
                                                                   conn.reset))
                    conn.close()
                    conn = None
                    continue
                t1 = time.monotonic()
                with self._lock:
                    self.records.append((t0, t1, r.status, r.header("x-backend"), i))
                if r.status != 200 or not r.complete:
                    self._error(i, "response %r body=%r" % (r, r.body[:100]))
                if r.has_token("connection", "close") or r.closed:
                    with self._lock:
                        self.reconnects += 1
                    conn.close()
                    conn = None
                if self.pause:
                    time.sleep(self.pause)
        except Exception as e:  # pylint: disable=broad-except
            self._error(i, "thread died: %r" % e)
        finally:
            if conn is not None:
                conn.close()


# --- WebSocket echo backend and client ------------------------------------------------------

class AsyncioThread:
    """An asyncio event loop running in a daemon thread; run(coro, timeout)
    executes a coroutine on it and returns its result."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="asyncio")
        self.thread.start()

    def run(self, coro, timeout=5.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(2.0)


class WsEchoBackend:
    """A backend on 127.0.0.1: a WebSocket upgrade becomes an echo session;
    every other request (health checks, plain GETs) is answered 200 with body
    <name> and X-Backend: <name>, then the connection is closed (websockets
    answers plain HTTP with Connection: close)."""

    def __init__(self, aio, name="blue-ws"):
        self.aio = aio
        self.name = name
        self.server = None
        self.port = None
        self.sessions = 0
        self.echoed = 0
        self.plain = 0

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    async def _process_request(self, path, headers):
        if "upgrade" in headers.get("Connection", "").lower():
            return None
        self.plain += 1
        return (http.HTTPStatus.OK, [("X-Backend", self.name), ("Content-Type", "text/plain")],
                self.name.encode())

    async def _handler(self, ws, path=None):
        self.sessions += 1
        try:
            async for msg in ws:
                self.echoed += 1
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass    # a cut tunnel is what some tests are about

    async def _start(self):
        self.server = await websockets.serve(self._handler, HOST, 0,
                                             process_request=self._process_request,
                                             ping_interval=None)
        self.port = self.server.sockets[0].getsockname()[1]

    def start(self):
        self.aio.run(self._start())
        return self

    async def _stop(self):
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 2.0)

    def stop(self):
        if self.server is not None:
            try:
                self.aio.run(self._stop(), timeout=4.0)
            except Exception:  # pylint: disable=broad-except
                pass
            self.server = None


class WsClient:
    """A WebSocket client connection through usher (ws://127.0.0.1:<port>/ws)."""

    def __init__(self, aio, port, path="/ws"):
        self.aio = aio
        async def connect():
            return await websockets.connect("ws://%s:%d%s" % (HOST, port, path),
                                            ping_interval=None, open_timeout=5,
                                            close_timeout=1)
        self.ws = aio.run(connect(), timeout=6.0)

    def echo(self, msg, timeout=3.0):
        async def go():
            await self.ws.send(msg)
            return await asyncio.wait_for(self.ws.recv(), timeout)
        return self.aio.run(go(), timeout + 1.0)

    def close(self):
        try:
            self.aio.run(self.ws.close(), timeout=3.0)
        except Exception:  # pylint: disable=broad-except
            pass
