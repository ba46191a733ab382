"""A scripted HTTP/2 backend for the tests (h2c with prior knowledge,
python3-h2 on a thread per connection): what usher's pools with
`protocol: h2c` talk to when a test needs to see or misbehave at frame
level. Every request is recorded (.reqs) and answered by its path:

  /echo          200, the request body back (as its windows allow)
  /big?n=N       200, N bytes (deterministic: wire.payload)
  /slow?ms=N     200 after N ms
  /silent        never answered (per-stream timeouts)
  /trailers      200, a body, then trailers x-checksum and x-count
  /status?code=N N, a short body
  /grpc-hang/M   a gRPC answer: its head and one message, then nothing
  anything else  200, "conn=C stream=S method=M path=P len=L\\n"

  b = H2Backend("h2-1", max_streams=None, goaway_hold=0, window=None,
                ack_data=True, silent=("/silent",)).start()
      max_streams: SETTINGS_MAX_CONCURRENT_STREAMS; window: SETTINGS_INITIAL_WINDOW_SIZE;
      ack_data=False: request DATA is never acknowledged (its windows stay
      shut: flow control as backpressure); silent: path prefixes never answered
  b.reqs            [Req(conn, stream, method, path, headers, body)]
  b.conns           connections accepted so far
  b.goaways_sent    [(conn, last_stream_id)]

goaway_hold=N: on the first connection, once N requests are complete and
unanswered, the backend sends GOAWAY with the lowest of their stream ids as
last-stream-id, answers that one stream, and closes the connection a moment
later: the other N-1 were never processed (RFC 9113 6.8), and usher must
send them again. Later connections answer normally.

Standard library + Debian's python3-h2. Every wait is bounded."""

import collections
import socket
import threading
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.settings

import wire
from servers import ThreadedServer

Req = collections.namedtuple("Req", "conn stream method path headers body")


class H2Backend(ThreadedServer):
    def __init__(self, name="h2", port=0, max_streams=None, goaway_hold=0, window=None,
                 ack_data=True, silent=("/silent",)):
        super().__init__(name, port)
        self.ack_data = ack_data
        self.silent = silent
        self.max_streams = max_streams
        self.goaway_hold = goaway_hold
        self.window = window
        self.reqs = []
        self.conns = 0
        self.goaways_sent = []
        self.open_conns = 0
        self.unacked = 0  # request body bytes taken with ack_data=False

    def paths(self, path):
        return [r for r in self.reqs if r.path == path]

    def wait_requests(self, n, path=None, timeout=5.0):
        return wire.wait_until(lambda: len([r for r in self.reqs if path is None or r.path == path]) >= n,
                               timeout, what="%d requests at %s" % (n, self.name))

    def _handle(self, s, peer):
        with self._lock:
            self.conns += 1
            self.open_conns += 1
            conn_id = self.conns
        try:
            _H2ServerConn(self, s, conn_id).run()
        finally:
            with self._lock:
                self.open_conns -= 1


class _H2ServerConn:
    def __init__(self, backend, sock, conn_id):
        self.b = backend
        self.sock = sock
        self.id = conn_id
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.streams = {}      # id -> {"headers", "body", "done"}
        self.out = {}          # id -> [bytes left, trailers or None]
        self.timers = []       # [(when, stream_id)]
        self.close_at = None
        self.goaway_done = False

    def run(self):
        self.h2.initiate_connection()
        settings = {}
        if self.b.max_streams is not None:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.b.max_streams
        if self.b.window is not None:
            settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = self.b.window
        if settings:
            self.h2.update_settings(settings)
        self.flush()
        while not self.b._stop.is_set():
            now = time.monotonic()
            if self.close_at is not None and now >= self.close_at:
                return
            for when, sid in [t for t in self.timers if t[0] <= now]:
                self.timers.remove((when, sid))
                self.answer(sid)
            self.sock.settimeout(0.02)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                self.flush()
                continue
            except OSError:
                return
            if not data:
                return
            try:
                events = self.h2.receive_data(data)
            except Exception:  # pylint: disable=broad-except
                return
            for ev in events:
                self.event(ev)
            self.pump_out()
            self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            # its END_STREAM comes as a StreamEnded event of its own
            self.streams[ev.stream_id] = {"headers": dict(ev.headers), "body": b"", "done": False}
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st["body"] += ev.data
            if self.b.ack_data:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            else:
                self.b.unacked += ev.flow_controlled_length
        elif isinstance(ev, h2.events.StreamEnded):
            self.complete(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.out.pop(ev.stream_id, None)
            self.timers = [t for t in self.timers if t[1] != ev.stream_id]
        elif isinstance(ev, h2.events.WindowUpdated):
            pass

    def complete(self, sid):
        st = self.streams.get(sid)
        if st is None or st["done"]:
            return
        st["done"] = True
        hs = st["headers"]
        path = hs.get(":path", "/")
        with self.b._lock:
            self.b.reqs.append(Req(self.id, sid, hs.get(":method"), path.split("?")[0], hs, st["body"]))
        if self.b.goaway_hold and self.id == 1 and not self.goaway_done:
            waiting = sorted(k for k, v in self.streams.items() if v["done"] and k not in self.out)
            if len(waiting) >= self.b.goaway_hold:
                self.goaway_done = True
                last = waiting[0]
                self.h2.close_connection(error_code=0, last_stream_id=last)
                self.b.goaways_sent.append((self.id, last))
                # h2 took the GOAWAY for the end of the connection: put it
                # back open so the stream it kept can still be answered
                self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
                self.answer(last)
                self.close_at = time.monotonic() + 0.3
            return
        if self.goaway_done:
            return  # above the last-stream-id: never processed
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        if path.startswith("/slow"):
            self.timers.append((time.monotonic() + int(q.get("ms", ["100"])[0]) / 1000.0, sid))
        elif any(path.startswith(p) for p in self.b.silent):
            pass
        else:
            self.answer(sid)

    def answer(self, sid):
        st = self.streams.get(sid)
        if st is None:
            return
        hs = st["headers"]
        path = hs.get(":path", "/")
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        status, body, trailers = 200, None, None
        if path.startswith("/echo"):
            body = st["body"]
        elif path.startswith("/big"):
            body = wire.pattern_bytes(int(q.get("n", ["1000"])[0]))
        elif path.startswith("/trailers"):
            body = b"trailers follow\n"
            trailers = [("x-checksum", "abc123"), ("x-count", "1")]
        elif path.startswith("/status"):
            status = int(q.get("code", ["200"])[0])
            body = b"status %d\n" % status
        elif path.startswith("/grpc-hang"):
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            self.h2.send_data(sid, b"\x00\x00\x00\x00\x05first")
            return  # and nothing more
        else:
            body = ("conn=%d stream=%d method=%s path=%s len=%d\n" % (
                self.id, sid, hs.get(":method"), path, len(st["body"]))).encode()
        head = [(":status", str(status)), ("content-type", "text/plain"),
                ("x-backend", self.b.name), ("x-conn", str(self.id))]
        if hs.get(":method") == "HEAD":
            self.h2.send_headers(sid, head + [("content-length", str(len(body)))], end_stream=True)
            return
        self.h2.send_headers(sid, head)
        self.out[sid] = [body, trailers]
        self.pump_out()

    def pump_out(self):
        for sid in list(self.out):
            body, trailers = self.out[sid]
            while body:
                try:
                    room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                except Exception:  # pylint: disable=broad-except
                    self.out.pop(sid, None)
                    break
                if room <= 0:
                    break
                self.h2.send_data(sid, body[:room])
                body = body[room:]
            if sid not in self.out:
                continue
            if body:
                self.out[sid][0] = body
                continue
            del self.out[sid]
            if trailers:
                self.h2.send_headers(sid, trailers, end_stream=True)
            else:
                self.h2.end_stream(sid)
        self.flush()
