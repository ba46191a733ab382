"""Clients for the integration tests: one asyncio event loop in a thread
(AsyncioThread), one WebSocket client (WsClient), a raw TCP client that
checks its echo (TCPClient), a pinger that keeps a session busy, a
background call (Background) and a slow request in the background.

Every wait is bounded. Standard library + python3-websockets only."""

import asyncio
import socket
import threading
import time

from wire import HOST, RawConn, close_quietly

# How long a helper waits for its own threads when stopped.
JOIN_TIMEOUT = 3.0


class AsyncioThread:
    """An asyncio event loop running in a daemon thread; run(coro, timeout)
    executes a coroutine on it and returns its result (cancelling it if the
    wait fails)."""

    def __init__(self, name="asyncio"):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True, name=name)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout=5.0):
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


class WsClient:
    """One WebSocket client session to ws://127.0.0.1:<port><path> (or to the
    URL <target>), on <aio> or on its own AsyncioThread.
    echo(msg) sends <msg> and returns the reply; exchange(msg) also checks
    the reply of a tagging WsEchoServer ("<backend>:<msg>")."""

    def __init__(self, target, path="/ws", aio=None, timeout=3.0, open_timeout=5.0):
        import websockets  # python3-websockets (asyncio API)
        url = target if isinstance(target, str) else "ws://%s:%d%s" % (HOST, target, path)
        self.timeout = timeout
        self._own = aio is None
        self.aio = AsyncioThread("ws-client") if aio is None else aio

        async def connect():
            return await websockets.connect(url, open_timeout=open_timeout, ping_interval=None,
                                            close_timeout=1, max_size=None)
        try:
            self.ws = self.aio.run(connect(), open_timeout + 1.0)
        except BaseException:
            if self._own:
                self.aio.close()
            raise

    async def _xchg(self, msg, timeout):
        await self.ws.send(msg)
        return await asyncio.wait_for(self.ws.recv(), timeout)

    def echo(self, msg, timeout=None):
        """Sends <msg>, returns the reply."""
        t = timeout or self.timeout
        return self.aio.run(self._xchg(msg, t), t + 1.0)

    def exchange(self, msg, timeout=None):
        """Sends <msg>, returns the tagged echo "<backend>:<msg>"."""
        reply = self.echo(msg, timeout)
        if not reply.endswith(":" + msg):
            raise AssertionError("echo mismatch: sent %r got %r" % (msg, reply))
        return reply

    def close(self):
        if self.aio is None:
            return
        try:
            self.aio.run(self.ws.close(), 3.0)
        except BaseException:  # pylint: disable=broad-except
            pass
        if self._own:
            self.aio.close()
        self.aio = None


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
        close_quietly(self.sock)


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
