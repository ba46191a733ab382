"""Real gRPC for the tests: a python3-grpcio server in the test process,
with generic handlers over raw bytes (no protoc, no generated code), and
clients. The health service grpc.health.v1.Health is served by hand too
(python3-grpcio's grpc_health is not packaged): its two one-field
messages are encoded here.

  s = GrpcServer("g1", tls=None).start()       # 127.0.0.1, a free port; tls=(cert, key)
  s.health[""] = NOT_SERVING                   # what Health/Check answers, by service
  s.stop(grace=2.0); s.restart()               # server.stop(grace): GOAWAY, calls finish
  s.calls                                      # {method: calls started}

Methods (service test.Svc):
  Echo        unary: the request back; b"status:CODE:message" aborts with
              that StatusCode name, trailing metadata x-why
  Slow        unary: sleeps int(request) ms (as text), answers b"slept"
  Bidi        stream-stream: each message back
  Ticks       unary-stream: request "n,ms": n messages b"tick i", ms apart
  Sum         stream-unary: the total length of the messages, as text

  ch = channel(port, tls_ca=None)              # no retries: a failure is seen
  unary(ch, "Echo", b"x", timeout=5) -> bytes

python3-grpcio (Debian) and the standard library. Every wait is bounded."""

import threading
import time
from concurrent import futures

import grpc

from wire import HOST, free_port, wait_until

SERVICE = "test.Svc"
# 4 MB messages (grpc-core's default receive limit is 4 MB: a 4 MB message
# with its framing needs a little more)
MAX_MESSAGE = 8 << 20
SERVER_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE),
                  ("grpc.max_send_message_length", MAX_MESSAGE),
                  ("grpc.so_reuseport", 0)]
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE),
                   ("grpc.max_send_message_length", MAX_MESSAGE),
                   ("grpc.enable_retries", 0)]

# HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def health_request(service):
    """HealthCheckRequest{service} (protobuf, field 1 string)."""
    s = service.encode()
    return (b"\x0a" + _varint(len(s)) + s) if s else b""


def health_response(status):
    """HealthCheckResponse{status} (protobuf, field 1 enum)."""
    return (b"\x08" + _varint(status)) if status else b""


def parse_health_request(data):
    """The service a HealthCheckRequest asks about (field 1; "" if absent)."""
    i, service = 0, ""
    while i < len(data):
        key = data[i]
        i += 1
        if key == 0x0A:
            n, shift = 0, 0
            while True:
                b = data[i]
                i += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            service = data[i:i + n].decode()
            i += n
        else:
            raise ValueError("unexpected field %r" % key)
    return service


class GrpcServer:
    def __init__(self, name, port=0, tls=None, workers=16):
        self.name = name
        self.port = port or free_port()
        self.tls = tls
        self.workers = workers
        self.health = {"": SERVING}
        self.calls = {}
        self.health_checks = 0
        self.inflight = 0
        self.server = None
        self._lock = threading.Lock()

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def _count(self, method):
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    # --- the methods ---------------------------------------------------------------

    def _echo(self, req, ctx):
        self._count("Echo")
        ctx.send_initial_metadata((("x-server", self.name),))
        if req.startswith(b"status:"):
            _, code, msg = req.decode().split(":", 2)
            ctx.set_trailing_metadata((("x-why", "asked"),))
            ctx.abort(getattr(grpc.StatusCode, code), msg)
        return req

    def _slow(self, req, ctx):
        self._count("Slow")
        with self._lock:
            self.inflight += 1
        try:
            deadline = time.monotonic() + int(req.decode() or "0") / 1000.0
            while time.monotonic() < deadline and ctx.is_active():
                time.sleep(0.01)
            return b"slept " + self.name.encode()
        finally:
            with self._lock:
                self.inflight -= 1

    def _bidi(self, it, ctx):
        self._count("Bidi")
        for m in it:
            yield m

    def _ticks(self, req, ctx):
        self._count("Ticks")
        n, ms = (int(x) for x in req.decode().split(","))
        with self._lock:
            self.inflight += 1
        try:
            for i in range(n):
                if not ctx.is_active():
                    return
                yield b"tick %d from %s" % (i, self.name.encode())
                time.sleep(ms / 1000.0)
        finally:
            with self._lock:
                self.inflight -= 1

    def _sum(self, it, ctx):
        self._count("Sum")
        return str(sum(len(m) for m in it)).encode()

    def _health_check(self, req, ctx):
        with self._lock:
            self.health_checks += 1
        service = parse_health_request(req)
        if service not in self.health:
            ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_response(self.health[service])

    # --- life ------------------------------------------------------------------------

    def start(self):
        svc = grpc.method_handlers_generic_handler(SERVICE, {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
            "Ticks": grpc.unary_stream_rpc_method_handler(self._ticks),
            "Sum": grpc.stream_unary_rpc_method_handler(self._sum),
        })
        health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(self._health_check),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers),
                                  options=SERVER_OPTIONS)
        self.server.add_generic_rpc_handlers((svc, health))
        addr = self.address
        if self.tls:
            cert, key = self.tls
            creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
            ok = self.server.add_secure_port(addr, creds)
        else:
            ok = self.server.add_insecure_port(addr)
        assert ok, "grpc server %s could not bind %s" % (self.name, addr)
        self.server.start()
        return self

    def stop(self, grace=None, timeout=10.0):
        """server.stop(grace): no new calls, a GOAWAY to every connection, the
        calls in flight finish within <grace> seconds. Waits (bounded)."""
        if self.server is not None:
            self.server.stop(grace).wait(timeout)
            self.server = None

    def restart(self):
        return self.start()


def channel(port, tls_ca=None, host=HOST, options=None, transparent_retries=False):
    """A channel to usher. Retries are off, so that every failure counts;
    with <transparent_retries> grpc-core's own are on (no retry policy): a
    call whose stream never left the client, or that the server refused
    unseen (REFUSED_STREAM, above a GOAWAY), is started again, as every
    gRPC client does by default. A status usher answers is never hidden."""
    target = "%s:%d" % (host, port)
    opts = (CHANNEL_OPTIONS if not transparent_retries else
            [o for o in CHANNEL_OPTIONS if o[0] != "grpc.enable_retries"]) + list(options or [])
    if tls_ca:
        creds = grpc.ssl_channel_credentials(root_certificates=open(tls_ca, "rb").read())
        return grpc.secure_channel(target, creds, options=opts + [
            ("grpc.ssl_target_name_override", "localhost")])
    return grpc.insecure_channel(target, options=opts)


def method(ch, name, kind="unary_unary"):
    return getattr(ch, kind)("/%s/%s" % (SERVICE, name))


def unary(ch, name, req, timeout=5.0, metadata=None):
    return method(ch, name)(req, timeout=timeout, metadata=metadata)


def code_of(fn):
    """Runs fn(); returns (StatusCode, details) of the grpc.RpcError it
    raised, or (OK, result)."""
    try:
        return grpc.StatusCode.OK, fn()
    except grpc.RpcError as e:
        return e.code(), e.details()


class CallLoop:
    """<threads> threads calling Echo in a loop, each on its own channel,
    until stop(): .ok, .failed [(monotonic time, code, details)], .by_server
    {name: n}."""

    def __init__(self, port, threads=4, timeout=5.0, pause=0.0, tls_ca=None,
                 transparent_retries=False):
        self.port = port
        self.transparent_retries = transparent_retries
        self.timeout = timeout
        self.pause = pause
        self.tls_ca = tls_ca
        self.ok = 0
        self.failed = []
        self.by_server = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def _run(self, i):
        ch = channel(self.port, tls_ca=self.tls_ca, transparent_retries=self.transparent_retries)
        call = method(ch, "Echo")
        n = 0
        while not self._stop.is_set():
            body = b"call %d-%d" % (i, n)
            n += 1
            try:
                r, c = call.with_call(body, timeout=self.timeout)
                server = dict(c.initial_metadata()).get("x-server", "?")
                with self._lock:
                    if r == body:
                        self.ok += 1
                        self.by_server[server] = self.by_server.get(server, 0) + 1
                    else:
                        self.failed.append((time.monotonic(), "BAD_BODY", r[:40]))
            except grpc.RpcError as e:
                with self._lock:
                    self.failed.append((time.monotonic(), e.code(), e.details()))
            if self.pause:
                time.sleep(self.pause)
        ch.close()

    def wait_calls(self, n, timeout=10.0):
        start = self.ok
        wait_until(lambda: self.ok >= start + n, timeout, what="%d more gRPC calls" % n)

    def stop(self, timeout=15.0):
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "call loop threads still running"
        return self
