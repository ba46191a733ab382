"""HTTP/2 abuse that took down real servers (DESIGN "HTTP/2 and gRPC",
"Abuse"), each sent on one connection with raw frames while a second
connection keeps getting answers within 200 ms: rapid reset
(CVE-2023-44487), CONTINUATION flood (CVE-2024-27316 class), SETTINGS, PING
and empty-frame floods, an HPACK bomb beyond max_head_bytes — each answered
GOAWAY (ENHANCE_YOUR_CALM or the protocol's code) and closed; more than
h2_max_streams concurrent streams (REFUSED_STREAM, the connection goes on);
and a reader that never opens its window (bounded by the timeouts, its
buffers freed)."""

import socket
import struct
import threading
import time

import hpack
import pytest

import wire
from h2client import (CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, HEADERS,
                      PING, REFUSED_STREAM, RST_STREAM, SETTINGS, H2Conn, frame)
from wire import HOST, RawConn

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ANSWER_WITHIN_S = 0.2  # the bound for the other connection
H2_MAX_STREAMS = 100   # limits.h2_max_streams default


class Watcher:
    """A second client, on its own connection, that keeps asking while the
    attack runs and records the slowest answer."""

    def __init__(self, port):
        self.port = port
        self.worst = 0.0
        self.errors = []
        self.count = 0
        self._stop = threading.Event()
        self.conn = RawConn(port, timeout=5.0)
        self.conn.request("GET", "/")  # connected and warm before the attack
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                r = self.conn.request("GET", "/")
                if r.status != 200:
                    self.errors.append(r.status)
            except Exception as e:  # pylint: disable=broad-except
                self.errors.append(repr(e))
                return
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1
            time.sleep(0.01)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join(5.0)
        self.conn.close()

    def check(self):
        assert not self.errors, self.errors
        assert self.count > 0, "the other connection got no answer at all"
        assert self.worst < ANSWER_WITHIN_S, "the other connection waited %.3fs" % self.worst
        # and a brand new HTTP/2 connection is answered too
        t0 = time.monotonic()
        c = H2Conn(self.port)
        assert c.get("/").status == 200
        c.close()
        assert time.monotonic() - t0 < 1.0


class Raw:
    """A raw HTTP/2 client connection: the preface, SETTINGS, hand-made frames."""

    def __init__(self, port, settings=b""):
        self.s = socket.create_connection((HOST, port), timeout=5.0)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.enc = hpack.Encoder()
        self.buf = b""
        self.frames = []
        self.closed = False
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings))

    def send(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            self.closed = True

    def headers(self, sid, path="/", end_stream=True, extra=(), method="GET"):
        block = self.enc.encode([(":method", method), (":path", path), (":scheme", "http"),
                                 (":authority", "a.test")] + list(extra))
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)

    def read(self, timeout=5.0, until=None):
        """Reads frames until <until>(frames) or close or timeout."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            if until and until(self.frames):
                return True
            self.s.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.closed = True
                break
            if not d:
                self.closed = True
                break
            self.buf += d
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                ftype, flags, sid = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big")
                self.frames.append((ftype, flags, sid & 0x7fffffff, self.buf[9:9 + n]))
                if ftype == SETTINGS and not flags & 1:
                    self.send(frame(SETTINGS, 1, 0))  # ack, as a client does
                self.buf = self.buf[9 + n:]
        return until(self.frames) if until else None

    def goaways(self):
        return [struct.unpack(">II", p[:8]) for t, _, _, p in self.frames if t == 7]

    def resets(self):
        return {sid: struct.unpack(">I", p)[0] for t, _, sid, p in self.frames if t == RST_STREAM}

    def close(self):
        self.s.close()


def expect_goaway_and_close(raw, codes=(ENHANCE_YOUR_CALM,), timeout=5.0):
    raw.read(timeout, until=lambda f: raw.closed)
    gs = raw.goaways()
    assert gs, "no GOAWAY (frames: %r)" % [(t, fl, sid) for t, fl, sid, _ in raw.frames[-10:]]
    assert gs[-1][1] in codes, "GOAWAY error %#x, want one of %r" % (gs[-1][1], codes)
    assert raw.closed, "the connection stayed open after the GOAWAY"


@pytest.fixture
def target(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    return u, b


def test_rapid_reset(target):
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        burst = b"".join(raw.headers(sid, "/slow?ms=200") + frame(RST_STREAM, 0, sid,
                                                                 struct.pack(">I", 8))
                         for sid in range(1, 2 * 10000, 2))
        raw.send(burst)
        expect_goaway_and_close(raw)
    w.check()
    # a HEADERS reset within the same read never reaches a backend
    assert len([q for q in b.reqs() if q.path == "/slow"]) < 2 * H2_MAX_STREAMS
    assert u.metrics().get("usher_http2_goaway_sent_total", reason="enhance_your_calm") >= 1


def test_rapid_reset_across_reads(target):
    """Each HEADERS read (and its exchange started) before its RST_STREAM."""
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        for sid in range(1, 2 * 1000, 2):
            raw.send(raw.headers(sid, "/slow?ms=200"))
            raw.send(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
            if raw.closed:
                break
        expect_goaway_and_close(raw)
    w.check()


def test_continuation_flood(target):
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        block = raw.enc.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                (":authority", "a.test")])
        raw.send(frame(HEADERS, END_STREAM, 1, block))  # no END_HEADERS
        crumb = hpack.Encoder().encode([("x-a", "b")])
        for _ in range(5000):
            raw.send(frame(CONTINUATION, 0, 1, crumb))
            if raw.closed:
                break
        expect_goaway_and_close(raw, codes=(ENHANCE_YOUR_CALM, 0x1))
    w.check()


def test_empty_continuation_flood(target):
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        raw.send(frame(HEADERS, END_STREAM, 1, raw.enc.encode([(":method", "GET")])))
        raw.send(frame(CONTINUATION, 0, 1) * 5000)
        expect_goaway_and_close(raw, codes=(ENHANCE_YOUR_CALM, 0x1))
    w.check()


def test_settings_flood(target):
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        raw.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)) * 5000)
        expect_goaway_and_close(raw)
    w.check()


def test_ping_flood(target):
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        raw.send(frame(PING, 0, 0, b"flooding") * 5000)
        expect_goaway_and_close(raw)
    w.check()


def test_empty_data_frames(target):
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        raw.send(raw.headers(1, "/upload", end_stream=False, method="POST"))
        raw.send(frame(DATA, 0, 1) * 5000)
        expect_goaway_and_close(raw)
    w.check()


def test_hpack_bomb_beyond_max_head_bytes(target):
    """A small header block that decodes to far more than max_head_bytes
    (one 4 KB field added to the dynamic table, then referenced again and
    again): the connection is cut before it is all decoded."""
    u, b = target
    with Watcher(u.port) as w:
        raw = Raw(u.port)
        block = raw.enc.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                (":authority", "a.test")] + [("x-bomb", "A" * 4000)] * 200)
        assert len(block) < 6000, len(block)  # 800 KB decoded from a few KB
        raw.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
        expect_goaway_and_close(raw)
    w.check()
    assert b.reqs() == [] or all(q.path != "/" or q.header("x-bomb") is None for q in b.reqs())


def test_header_list_beyond_max_head_bytes_in_plain_fields(target):
    u, b = target
    raw = Raw(u.port)
    block = raw.enc.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                            (":authority", "a.test")] +
                           [("x-f%d" % i, "v" * 1000) for i in range(20)])
    # within the frame size: HEADERS and CONTINUATION of 8 KB each
    parts = [block[i:i + 8192] for i in range(0, len(block), 8192)]
    raw.send(frame(HEADERS, END_STREAM, 1, parts[0]) +
             b"".join(frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, 1, p)
                      for i, p in enumerate(parts[1:], 1)))
    expect_goaway_and_close(raw)


def test_more_than_h2_max_streams_refused(target):
    u, b = target
    raw = Raw(u.port)
    raw.read(2.0, until=lambda f: any(t == SETTINGS and fl & 1 for t, fl, _, _ in f))
    sids = list(range(1, 2 * (H2_MAX_STREAMS + 5), 2))
    raw.send(b"".join(raw.headers(sid, "/slow?ms=1000") for sid in sids))
    extra = sids[H2_MAX_STREAMS:]
    assert raw.read(3.0, until=lambda f: all(s in raw.resets() for s in extra)), raw.resets()
    assert all(raw.resets()[s] == REFUSED_STREAM for s in extra), raw.resets()
    # the connection goes on: the first h2_max_streams are answered
    done = lambda f: len({sid for t, fl, sid, _ in f if fl & END_STREAM and t in (0, 1)}) >= H2_MAX_STREAMS
    assert raw.read(10.0, until=done), "not every accepted stream was answered"
    assert not raw.closed and raw.goaways() == []
    assert not any(s in raw.resets() for s in sids[:H2_MAX_STREAMS])
    assert len([q for q in b.reqs() if q.path == "/slow"]) == H2_MAX_STREAMS
    raw.close()


def test_zero_window_reader_bounded_by_timeouts(backend_factory, usher_factory):
    """A reader that never opens its window: its stream is cut at
    timeouts.backend (nothing moves), its buffers go, and the idle
    connection is then closed at client_idle."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "1s", "client_idle": "2s"})
    with Watcher(u.port) as w:
        raw = Raw(u.port, settings=struct.pack(">HI", 4, 0))  # INITIAL_WINDOW_SIZE 0
        raw.send(raw.headers(1, "/big?bytes=%d" % (200 * 1024 * 1024)))
        t0 = time.monotonic()
        assert raw.read(5.0, until=lambda f: 1 in raw.resets()), raw.frames[-5:]
        cut = time.monotonic() - t0
        assert 0.8 <= cut <= 3.5, cut
        assert not any(t == DATA and sid == 1 and p for t, _, sid, p in raw.frames)
        wire.wait_until(lambda: u.metrics().get("usher_http2_streams_active") == 0, 3.0,
                        what="the stream's exchange to end")
        raw.read(6.0, until=lambda f: raw.closed)
        assert raw.closed, "the idle connection outlived client_idle"
    w.check()


def test_client_reading_nothing_at_all_is_closed(backend_factory, usher_factory):
    """A client that stops reading its socket: its stream is cut at
    timeouts.backend, and the connection, whose GOAWAYs cannot even be
    written, is closed once it stayed so for client_idle."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "1s", "client_idle": "2s"})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((HOST, u.port))
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/big?bytes=%d" % (100 << 20)),
                        (":scheme", "http"), (":authority", "a.test")])
    s.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    time.sleep(0.5)
    wire.wait_until(lambda: u.metrics().get("usher_http2_streams_active") == 0, 5.0,
                    what="the stalled stream to be cut")
    wire.wait_until(lambda: u.status_json()["connections"] == 0, 8.0,
                    what="the connection of a client that reads nothing to be closed")
    s.close()


ZERO_WINDOW_READERS = 30
ZERO_WINDOW_ROUNDS = 4
# 30 stalled streams hold ~2.7 MB of buffers at once (measured); a round
# that kept its streams' buffers would keep at least their 64 KiB response
# buffers: 1.9 MB a round
ZERO_WINDOW_GROWTH_MAX_KB = 1024


def test_zero_window_readers_free_their_buffers(backend_factory, usher_factory):
    """Rounds of 30 readers that never open their windows, each asking for
    200 MB: every stream is cut at timeouts.backend, every connection closed
    at client_idle, and the buffers they held go back — after the first
    round, later rounds cost usher no more memory (one worker, so its
    buffer pools are the only ones)."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, timeouts={"backend": "500ms", "client_idle": "1s"},
                      extra={"workers": 1})
    after = []
    with Watcher(u.port) as w:
        for rnd in range(ZERO_WINDOW_ROUNDS):
            raws = []
            for _ in range(ZERO_WINDOW_READERS):
                raw = Raw(u.port, settings=struct.pack(">HI", 4, 0))
                raw.send(raw.headers(1, "/big?bytes=%d" % (200 * 1024 * 1024)))
                raws.append(raw)
            wire.wait_until(lambda: u.metrics().get("usher_http2_streams_active") ==
                            ZERO_WINDOW_READERS, 5.0, what="every stalled stream running")
            wire.wait_until(lambda: u.metrics().get("usher_http2_streams_active") == 0, 5.0,
                            what="every stalled stream cut at timeouts.backend")
            wire.wait_until(lambda: u.status_json()["connections"] <= 1, 5.0,  # the watcher
                            what="every stalled connection closed at client_idle")
            for raw in raws:
                raw.close()
            after.append(u.rss_kb())
    w.check()
    growth = after[-1] - after[0]
    print("RSS after each round (KiB): %r" % after)
    assert growth < ZERO_WINDOW_GROWTH_MAX_KB, \
        "RSS grew %d KiB over %d rounds after the first: %r" % (growth, len(after) - 1, after)
