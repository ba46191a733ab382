"""A frame-level HTTP/2 client for the tests (python3-h2 over a socket, plain
h2c with prior knowledge or TLS with ALPN h2): it records every frame-level
event it sees — responses per stream, resets, GOAWAYs with their
last-stream-id and the time they came, PINGs — and can also write raw frames
(abuse tests). Every wait is bounded.

  c = H2Conn(port)                      # connect, preface, SETTINGS exchanged
  sid = c.request("/path")              # GET; body=b"..." for a POST; headers=[(n, v)]
  r = c.response(sid)                   # wait for the whole response: .status .headers .body
                                        #   .trailers .reset (error code or None)
  c.pump(timeout, until=lambda: ...)    # read and handle frames until until() or the timeout
  c.goaways                             # [(last_stream_id, error_code, monotonic time)]
  c.closed                              # the server closed the TCP connection
  c.raw(bytes)                          # write bytes as they are
  c.flush(records=True)                 # what h2 has to send, one TLS record per frame, in one
                                        #   TCP write (H2Conn(..., tls_records=True))

Standard library + Debian's python3-h2 (and its hyperframe, hpack)."""

import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from wire import HOST

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
# flags
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, REFUSED_STREAM, CANCEL, \
    ENHANCE_YOUR_CALM = 0x0, 0x1, 0x2, 0x3, 0x7, 0x8, 0xb
MAX_STREAM_ID = 2 ** 31 - 1


def frame(ftype, flags, stream_id, payload=b""):
    """One raw frame: 9-byte header + payload."""
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xffff, ftype, flags, stream_id & 0x7fffffff) + payload


class Response:
    def __init__(self):
        self.status = None
        self.headers = []
        self.interim = []       # [[(name, value), ...], ...] 1xx heads
        self.body = b""
        self.trailers = None
        self.ended = False
        self.reset = None       # RST_STREAM error code, if reset

    def header(self, name, default=None):
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def __repr__(self):
        return "Response(status=%r, reset=%r, ended=%r, body=%r...)" % (
            self.status, self.reset, self.ended, self.body[:60])


class H2Conn:
    def __init__(self, port, host=HOST, tls_ctx=None, timeout=5.0, auto_ack_data=True,
                 settings=None, wait_settings=True, validate=True, tls_records=False):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_ctx is not None and tls_records:
            sock = RecordTLSSocket(sock, tls_ctx, timeout)
        elif tls_ctx is not None:
            sock = tls_ctx.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.sock.settimeout(timeout)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        validate_inbound_headers=validate,
                                        normalize_outbound_headers=validate)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.auto_ack_data = auto_ack_data
        self.responses = {}
        self.goaways = []
        self.pings_acked = []
        self.server_settings = {}
        self.settings_seen = False
        self.closed = False
        self.events = []
        self._rbuf = b""
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        if wait_settings:
            self.pump(timeout, until=lambda: self.settings_seen)

    # --- writing -----------------------------------------------------------------

    def flush(self, records=False):
        """Writes what h2 has to send; with <records> (a RecordTLSSocket),
        each frame as a TLS record of its own, all of them in one write."""
        data = self.conn.data_to_send()
        if not data:
            return
        try:
            if records:
                frames = []
                while data:
                    n = int.from_bytes(data[:3], "big") + 9
                    frames.append(data[:n])
                    data = data[n:]
                self.sock.send_records(frames)
            else:
                self.sock.sendall(data)
        except OSError:
            self.closed = True

    def raw(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def request(self, path="/", method="GET", headers=None, body=None, authority=None,
                end_stream=True, scheme="http", flush=True):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":path", path), (":scheme", scheme),
              (":authority", authority or "%s:%d" % (HOST, self.sock.getpeername()[1]))]
        hs += list(headers or [])
        self.responses[sid] = Response()
        self.conn.send_headers(sid, hs, end_stream=end_stream and body is None)
        if body is not None:
            self.send_body(sid, body, end_stream=end_stream)
        if flush:
            self.flush()
        return sid

    def send_body(self, sid, body, end_stream=True, timeout=10.0):
        """Sends <body> on <sid> as its windows allow (bounded wait)."""
        deadline = time.monotonic() + timeout
        view = memoryview(body)
        while len(view):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.flush()
                if time.monotonic() > deadline:
                    raise TimeoutError("no window to send the body")
                # back as soon as a WINDOW_UPDATE opens it: only the server paces the body
                self.pump(0.05, until=lambda: self.conn.local_flow_control_window(sid) > 0
                          or self.closed)
                continue
            n = min(room, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid, code=CANCEL):
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def ping(self, data=b"12345678"):
        self.conn.ping(data)
        self.flush()

    # --- reading -----------------------------------------------------------------

    def pump(self, timeout, until=None):
        """Reads and handles frames until until() is true, the connection
        closes, or <timeout> seconds pass. Returns until()'s last value (or
        None without it)."""
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until():
                return True
            if self.closed:
                return until() if until else None
            left = deadline - time.monotonic()
            if left <= 0:
                return until() if until else None
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError:
                self.closed = True
                continue
            if not data:
                self.closed = True
                continue
            self._feed(data)

    def _feed(self, data):
        """Hands the frames to h2 one at a time, flushing after each: h2 4.1
        takes any GOAWAY as the end of the connection (it drops what it had
        to send, then refuses every later frame), where RFC 9113 6.8 lets
        the streams up to its last-stream-id go on. After a NO_ERROR GOAWAY
        the connection is put back open, so those streams are received and
        PINGs acknowledged as a real client does."""
        self._rbuf += data
        while len(self._rbuf) >= 9:
            n = int.from_bytes(self._rbuf[:3], "big") + 9
            if len(self._rbuf) < n:
                break
            one, self._rbuf = self._rbuf[:n], self._rbuf[n:]
            try:
                events = self.conn.receive_data(one)
            except Exception as e:  # pylint: disable=broad-except
                self.events.append(("error", e))
                self.closed = True
                return
            for ev in events:
                self._handle(ev)
                if isinstance(ev, h2.events.ConnectionTerminated) and ev.error_code == 0:
                    self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            self.flush()

    def _resp(self, sid):
        return self.responses.setdefault(sid, Response())

    def _handle(self, ev):
        self.events.append(ev)
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
            for k, v in ev.changed_settings.items():
                self.server_settings[k] = v.new_value
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._resp(ev.stream_id).interim.append(list(ev.headers))
        elif isinstance(ev, h2.events.ResponseReceived):
            r = self._resp(ev.stream_id)
            r.headers = list(ev.headers)
            r.status = int(dict(r.headers)[":status"])
        elif isinstance(ev, h2.events.DataReceived):
            self._resp(ev.stream_id).body += ev.data
            if self.auto_ack_data and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self._resp(ev.stream_id).trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            self._resp(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.StreamReset):
            self._resp(ev.stream_id).reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaways.append((ev.last_stream_id, ev.error_code, time.monotonic()))
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings_acked.append(ev.ping_data)

    def response(self, sid, timeout=5.0):
        """Waits until stream <sid> ended or was reset; returns its Response."""
        r = self._resp(sid)
        self.pump(timeout, until=lambda: r.ended or r.reset is not None)
        if not (r.ended or r.reset is not None):
            raise TimeoutError("stream %d: no complete response within %.1fs (%r)" % (sid, timeout, r))
        return r

    def get(self, path="/", timeout=5.0, **kw):
        return self.response(self.request(path, **kw), timeout)

    def wait_closed(self, timeout=5.0):
        self.pump(timeout, until=lambda: self.closed)
        return self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    stop = close


class RecordTLSSocket:
    """TLS over a memory BIO, so the test decides how records meet the
    wire: send_records() makes each chunk a record of its own and writes
    them all in one TCP write (they arrive together, and the server's
    OpenSSL takes them in one read). Enough of a socket for H2Conn."""

    def __init__(self, sock, ctx, timeout):
        self.raw = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.raw.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if time.monotonic() > deadline:
                    raise TimeoutError("TLS handshake")
                self._out()
                self._in()
        self._out()

    def _out(self):
        data = self.outgoing.read()
        if data:
            self.raw.sendall(data)

    def _in(self):
        data = self.raw.recv(65536)
        if not data:
            self.incoming.write_eof()
        else:
            self.incoming.write(data)
        return data

    def send_records(self, chunks):
        for ch in chunks:
            self.obj.write(ch)
        self._out()

    def sendall(self, data):
        self.obj.write(data)
        self._out()

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._out()
                if not self._in():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def settimeout(self, t):
        self.raw.settimeout(t)

    def getpeername(self):
        return self.raw.getpeername()

    def selected_alpn_protocol(self):
        return self.obj.selected_alpn_protocol()

    def close(self):
        self.raw.close()


def tls_context(cafile=None, alpn=("h2",)):
    """A client context offering <alpn>, trusting <cafile> (or nothing checked)."""
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not cafile:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    return ctx
