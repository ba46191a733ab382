"""The one client load loop of the integration tests.

Load(port, threads, ...) runs <threads> client threads sending GET <path>
through usher until stop() or <duration> seconds, on keep-alive connections
(a connection is replaced only when the server ends it: "Connection: close"
or a close after a complete response; that counts as a reconnect) or, with
fresh=True, on a new connection per request. Every request carries a
t=<thread>-<n> query parameter, so each one is told apart at the backend.

It records every answer, counts the successes by backend and every error:
a status other than 200, a body cut short, a connection closed or reset
without a complete response, a timeout, a connect that failed.

Standard library only. Every wait is bounded."""

import threading
import time

from wire import RawConn

# How long stop() waits for the threads beyond one request's timeout.
JOIN_TIMEOUT = 3.0


class Load:
    """Attributes: records [(t_sent, t_received, status, X-Backend, thread)],
    ok {response body (the backend's name): count of 200s}, total (requests
    tried), errors [(monotonic time, thread, description)], connects
    (connections opened), reconnects (connections the server ended)."""

    def __init__(self, port, threads=3, path="/", pause=0.0, duration=20.0, timeout=3.0,
                 fresh=False):
        self.port = port
        self.path = path
        self.pause = pause
        self.duration = duration
        self.timeout = timeout
        self.fresh = fresh
        self.records = []
        self.ok = {}
        self.total = 0
        self.errors = []
        self.connects = 0
        self.reconnects = 0
        self.t_start = None
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

    def count(self):
        """Requests answered so far (any status)."""
        return len(self.records)

    def by_backend(self):
        """{X-Backend: answers} over every recorded answer."""
        out = {}
        for _, _, _, be, _ in list(self.records):
            out[be] = out.get(be, 0) + 1
        return out

    def summary(self):
        return "total=%d ok=%r errors=%d %r" % (self.total, self.ok, len(self.errors),
                                                self.errors[:10])

    def _err(self, i, what):
        with self._lock:
            self.errors.append((time.monotonic(), i, what))

    def _run(self, i):
        deadline = self.t_start + self.duration
        conn = None
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            target = "(connect)"
            try:
                if conn is None:
                    conn = RawConn(self.port, timeout=self.timeout)
                    with self._lock:
                        self.connects += 1
                n += 1
                sep = "&" if "?" in self.path else "?"
                target = "%s%st=%d-%d" % (self.path, sep, i, n)
                t0 = time.monotonic()
                r = conn.request("GET", target, timeout=self.timeout)
                t1 = time.monotonic()
                with self._lock:
                    self.records.append((t0, t1, r.status, r.header("x-backend"), i))
                if r.status != 200 or not r.complete:
                    self._err(i, "%s: status %d complete=%s body=%r" % (
                        target, r.status, r.complete, r.body[:100]))
                else:
                    name = r.text()
                    with self._lock:
                        self.ok[name] = self.ok.get(name, 0) + 1
                if self.fresh:
                    conn.close()
                    conn = None
                elif r.closed or r.has_token("connection", "close"):
                    with self._lock:
                        self.reconnects += 1
                    conn.close()
                    conn = None
            except Exception as e:  # pylint: disable=broad-except
                self._err(i, "%s: %s: %s (reset=%s)" % (target, type(e).__name__, e,
                                                        conn.reset if conn else None))
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.total += 1
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()
