"""Large bodies stream through usher intact and with backpressure: 50 MB up
and down through a deliberately slow reader, while usher's RSS stays flat.
(If usher buffered a body instead of stopping to read, its RSS would grow by
tens of MB, since the fast side outruns the slow one by ~20x.)"""

import hashlib
import threading
import time

from wire import RateLimiter, RawConn, build_request, pattern_chunks, pattern_sha256

N = 50 * 1024 * 1024
SLOW_RATE = 25 * 1024 * 1024  # bytes/s of the slow side: ~2 s for 50 MB
MAX_RSS_GROWTH_KB = 32 * 1024


class RssSampler:
    def __init__(self, usher):
        self.usher = usher
        self.base = usher.rss_kb()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.usher.rss_kb())
            except OSError:
                return

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(2)

    def check(self, what):
        growth = self.peak - self.base
        assert growth < MAX_RSS_GROWTH_KB, "%s: usher RSS grew by %d kB (from %d kB)" % (
            what, growth, self.base)


def _warm(port):
    with RawConn(port) as c:
        assert c.request("GET", "/big?bytes=1000000").status == 200
        assert c.request("POST", "/upload", body=b"w" * 1000000).status == 200


def test_50mb_download_slow_reader(proxy):
    _warm(proxy.port)
    with RssSampler(proxy.usher) as rss, RawConn(proxy.port, timeout=30) as c:
        c.send(build_request("GET", "/big?bytes=%d" % N))
        h = hashlib.sha256()
        lim = RateLimiter(SLOW_RATE)
        got = [0]

        def sink(d):
            h.update(d)
            got[0] += len(d)
            lim.consumed(len(d))

        r = c.read_response(sink=sink, timeout=60)
        assert r.status == 200 and r.complete, r
        assert got[0] == N and h.hexdigest() == pattern_sha256(N)
        # the connection is still usable
        assert c.request("GET", "/").body == b"blue-1"
    rss.check("50 MB download")


def test_50mb_upload_slow_backend(proxy):
    _warm(proxy.port)
    with RssSampler(proxy.usher) as rss, RawConn(proxy.port, timeout=30) as c:
        c.send(build_request("POST", "/upload?rate=%d" % SLOW_RATE,
                             headers=[("Content-Length", str(N))]))
        err = []

        def sender():
            try:
                for piece in pattern_chunks(N, chunk=1 << 20):
                    c.sock.sendall(piece)
            except OSError as e:
                err.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t0 = time.monotonic()
        t.start()
        t.join(60)
        r = c.read_response(timeout=60)
        assert not err, err
        assert r.status == 200, r
        assert r.json() == {"sha256": pattern_sha256(N), "len": N}
        assert time.monotonic() - t0 >= N / SLOW_RATE * 0.8  # it really was slow
        assert c.request("GET", "/").body == b"blue-1"
    rss.check("50 MB upload")


def test_chunked_upload_20mb(proxy):
    n = 20 * 1024 * 1024
    with RawConn(proxy.port, timeout=30) as c:
        c.send(build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]))
        for piece in pattern_chunks(n, chunk=300007):
            c.sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        c.sock.sendall(b"0\r\n\r\n")
        r = c.read_response(timeout=30)
        assert r.status == 200 and r.json() == {"sha256": pattern_sha256(n), "len": n}, r


def test_close_delimited_20mb(proxy):
    n = 20 * 1024 * 1024
    with RawConn(proxy.port, timeout=30) as c:
        h = hashlib.sha256()
        got = [0]

        def sink(d):
            h.update(d)
            got[0] += len(d)

        c.send(build_request("GET", "/close-delimited?bytes=%d" % n))
        r = c.read_response(sink=sink, timeout=30)
        assert r.status == 200 and r.complete
        assert got[0] == n and h.hexdigest() == pattern_sha256(n)
