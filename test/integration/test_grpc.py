"""gRPC through usher with real gRPC on both sides (python3-grpcio: generic
handlers over raw bytes, no protoc): unary, bidi and client/server
streaming, 4 MB messages, over h2c and over TLS both ways; trailers and
non-OK statuses passing through; the answers usher makes itself arriving
as UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED (never INTERNAL);
two backends stopped gracefully (server.stop(grace)) under a call loop
without a failed call; the gRPC health check (SERVING, NOT_SERVING as a
drain, errors as failures). DESIGN "HTTP/2 and gRPC"."""

import time

import grpc
import pytest

import usher_proc
from grpc_util import (CallLoop, GrpcServer, NOT_SERVING, SERVICE_UNKNOWN, SERVING, UNKNOWN,
                       channel, code_of, method, unary)
from h2client import H2Conn
from wire import HOST, free_port, wait_until

H2C = {"protocol": "h2c"}


def grpc_backend(servers, name, **kw):
    return servers.add(GrpcServer(name, **kw).start())


def start(usher_factory, pools, pool_opts=None, **kw):
    opts = {p: dict(H2C) for p in pools}
    for p, o in (pool_opts or {}).items():
        opts[p].update(o)
    return usher_factory(pools=pools, pool_opts=opts, **kw)


def grpc_hc(**kw):
    d = {"protocol": "grpc", "interval": "200ms", "timeout": "150ms", "healthy_threshold": 2,
         "unhealthy_threshold": 2}
    d.update(kw)
    return d


# --- calls of every shape ------------------------------------------------------------------

def test_unary_streaming_and_4mb_messages(servers, usher_factory):
    g = grpc_backend(servers, "g1")
    u = start(usher_factory, {"p": [g]})
    ch = channel(u.port)
    assert unary(ch, "Echo", b"hello") == b"hello"
    big = bytes(range(256)) * (4 * 4096)  # 4 MB
    assert unary(ch, "Echo", big, timeout=20) == big
    msgs = [b"m%d" % i * (i * 1000 + 1) for i in range(12)]
    got = list(method(ch, "Bidi", "stream_stream")(iter(msgs), timeout=10))
    assert got == msgs
    ticks = list(method(ch, "Ticks", "unary_stream")(b"5,20", timeout=10))
    assert ticks == [b"tick %d from g1" % i for i in range(5)]
    assert method(ch, "Sum", "stream_unary")(iter([b"a" * 100000] * 30), timeout=20) == b"3000000"
    # a bidi stream of 4 MB messages both ways, interleaved
    got = list(method(ch, "Bidi", "stream_stream")(iter([big, b"x", big]), timeout=30))
    assert got == [big, b"x", big]
    ch.close()


def test_grpc_over_tls_both_ways(servers, usher_factory, pki):
    """TLS from the client (a TLS listener, ALPN h2) and to the backend
    (protocol h2: TLS with ALPN h2, verified against the test CA)."""
    app = pki.cert("app")
    g = grpc_backend(servers, "g1", tls=(app.cert, app.key))
    listeners = [{"name": "web", "pools": {"p": 100},
                  "tls": {"cert": app.cert, "key": app.key}}]
    u = usher_factory(pools={"p": [g]}, listeners=listeners,
                      pool_opts={"p": {"protocol": "h2", "tls": {"ca": pki.ca}}})
    ch = channel(u.port, tls_ca=pki.ca)
    assert unary(ch, "Echo", b"over tls") == b"over tls"
    big = b"\x5a" * (4 << 20)
    assert unary(ch, "Echo", big, timeout=20) == big
    msgs = [b"tls %d" % i for i in range(20)]
    assert list(method(ch, "Bidi", "stream_stream")(iter(msgs), timeout=10)) == msgs
    ch.close()


def test_trailers_and_statuses_pass_through(servers, usher_factory):
    g = grpc_backend(servers, "g1")
    u = start(usher_factory, {"p": [g]})
    ch = channel(u.port)
    call = method(ch, "Echo")
    for code in ("FAILED_PRECONDITION", "NOT_FOUND", "PERMISSION_DENIED", "INTERNAL"):
        with pytest.raises(grpc.RpcError) as e:
            call(b"status:%s:said %s" % (code.encode(), code.encode()), timeout=5)
        assert e.value.code() == getattr(grpc.StatusCode, code)
        assert e.value.details() == "said %s" % code
        assert ("x-why", "asked") in [(m.key, m.value) for m in e.value.trailing_metadata()]
        # a trailers-only answer carries no content-length of usher's making
        assert "content-length" not in [m.key for m in e.value.trailing_metadata()]
    r, c = call.with_call(b"ok", timeout=5)
    assert r == b"ok" and ("x-server", "g1") in [(m.key, m.value) for m in c.initial_metadata()]
    ch.close()
    # frame level: the trailers are trailing HEADERS, te: trailers reached the backend
    h = H2Conn(u.port)
    sid = h.request("/test.Svc/Echo", method="POST", body=b"\x00\x00\x00\x00\x02hi",
                    headers=[("content-type", "application/grpc"), ("te", "trailers")])
    r = h.response(sid)
    assert r.status == 200 and r.body == b"\x00\x00\x00\x00\x02hi"
    assert dict(r.trailers)["grpc-status"] == "0"
    h.close()


# --- answers of usher's own ------------------------------------------------------------------

def test_usher_errors_arrive_as_grpc_statuses(servers, usher_factory):
    g = grpc_backend(servers, "g1")
    dead = free_port()
    u = start(usher_factory, {"p": [g], "down": [{"name": "d1", "address": "%s:%d" % (HOST, dead)}]},
              listeners=[{"name": "web", "pools": {"p": 100}},
                         {"name": "nowhere", "pools": {"down": 100}}],
              timeouts={"backend": "700ms"}, limits={"max_headers": 20})
    # no backend that answers the connect: UNAVAILABLE
    ch = channel(u.ports["nowhere"])
    code, details = code_of(lambda: unary(ch, "Echo", b"x"))
    assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
    ch.close()
    ch = channel(u.port)
    # the backend says nothing within timeouts.backend: DEADLINE_EXCEEDED
    t0 = time.monotonic()
    code, details = code_of(lambda: unary(ch, "Slow", b"3000", timeout=10))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (code, details)
    assert time.monotonic() - t0 < 2.5
    # more header fields than max_headers: RESOURCE_EXHAUSTED
    md = [("x-m%d" % i, "v") for i in range(30)]
    code, details = code_of(lambda: unary(ch, "Echo", b"x", metadata=md))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    # and the channel goes on
    assert unary(ch, "Echo", b"fine") == b"fine"
    ch.close()


def test_trailers_only_frames_and_head_too_large(servers, usher_factory):
    """Frame level: an answer of usher's own is one HEADERS with
    END_STREAM, :status 200, content-type application/grpc, grpc-status and
    grpc-message; a gRPC request past max_head_bytes gets grpc-status 8."""
    dead = free_port()
    u = start(usher_factory, {"down": [{"name": "d1", "address": "%s:%d" % (HOST, dead)}]},
              limits={"max_head_bytes": 4096})
    h = H2Conn(u.port)
    gh = [("content-type", "application/grpc"), ("te", "trailers")]
    r = h.response(h.request("/test.Svc/Echo", method="POST", body=b"\0\0\0\0\0", headers=gh))
    hd = dict(r.headers)
    assert r.status == 200 and r.body == b"" and r.trailers is None, r
    assert hd["content-type"] == "application/grpc" and hd["grpc-status"] == "14", hd
    assert "content-length" not in hd and hd["grpc-message"], hd
    r = h.response(h.request("/test.Svc/Echo", method="POST", body=b"\0\0\0\0\0",
                             headers=gh + [("x-big", "b" * 6000)]))
    assert r.status == 200 and dict(r.headers)["grpc-status"] == "8", r.headers
    assert not h.closed and h.goaways == []
    # a plain request that large is still cut (the HPACK-bomb rule)
    h.request("/x", headers=[("x-big", "b" * 6000)])
    h.pump(3.0, until=lambda: h.goaways)
    assert h.goaways
    h.close()


def test_answers_cut_mid_stream_end_with_a_grpc_status(servers, usher_factory):
    """A response under way when its backend fails ends with trailers
    after its last whole message — DEADLINE_EXCEEDED for a silent backend,
    UNAVAILABLE for one reset — not with a reset the client reads as
    INTERNAL."""
    from h2backend import H2Backend
    hb = servers.add(H2Backend("h2-1").start())
    u = start(usher_factory, {"p": [hb]}, timeouts={"backend": "600ms"})
    ch = channel(u.port)
    call = ch.unary_stream("/grpc-hang/M")
    got = []
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        for m in call(b"x", timeout=10):
            got.append(m)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
    assert got == [b"first"] and 0.5 < time.monotonic() - t0 < 3.0
    # the same, its backend reset under it
    got = []
    it = call(b"x", timeout=10)
    got.append(next(it))
    hb.kill()
    with pytest.raises(grpc.RpcError) as e:
        for m in it:
            got.append(m)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    assert got == [b"first"]
    ch.close()


# --- graceful stops, one backend after the other ------------------------------------------------

def test_two_backends_stopped_gracefully_under_call_loop(servers, usher_factory):
    """server.stop(grace) sends GOAWAY and refuses new connections while
    its calls finish: the streams that cross the GOAWAY go again, new
    connects fail over, and a 4-thread call loop sees no failed call
    while each backend stops and comes back in turn. Passive health (on by
    default) does not eject a backend for the connects it refuses right
    after its GOAWAY: ejected, the first would still be out when the second
    stops."""
    g1 = grpc_backend(servers, "g1")
    g2 = grpc_backend(servers, "g2")
    u = start(usher_factory, {"p": [g1, g2]})  # passive health on, as by default
    loop = CallLoop(u.port, threads=4).start()
    try:
        loop.wait_calls(200)
        for g in (g1, g2):
            g.stop(grace=2.0)
            loop.wait_calls(200, timeout=15)
            time.sleep(0.5)  # down a while: its connects are refused
            g.restart()
            wait_until(lambda: g.calls.get("Echo", 0) > 0, 10.0, what="%s serving again" % g.name)
            g.calls.clear()
            loop.wait_calls(200, timeout=15)
    finally:
        loop.stop()
    assert loop.failed == [], loop.failed[:5]
    assert loop.ok > 800 and set(loop.by_server) == {"g1", "g2"}
    assert u.metrics().sum("usher_backend_ejections_total") == 0
    # the stops were felt: connects refused went elsewhere
    assert u.metrics().sum("usher_retries_total", pool="p") > 0


# --- the gRPC health check --------------------------------------------------------------------------

def test_grpc_health_check_states(servers, usher_factory):
    g = grpc_backend(servers, "g1")
    u = start(usher_factory, {"p": [g]}, pool_opts={"p": {"health_check": grpc_hc(service="svc.A")}})
    g.health["svc.A"] = SERVING
    usher_proc.wait_state(u, "p", "g1", "healthy", 5.0)
    g.health["svc.A"] = NOT_SERVING
    b = usher_proc.wait_state(u, "p", "g1", "draining", 5.0)
    assert b["reason"] == "not_serving" and b["drain"]["reason"] == "not_serving", b
    g.health["svc.A"] = SERVING
    usher_proc.wait_state(u, "p", "g1", "healthy", 5.0)
    tr = usher_proc.state_transitions(u, "g1")
    assert ("healthy", "draining", "not_serving") in tr and ("draining", "healthy", "ok") in tr, tr
    # UNKNOWN, an unknown service (NOT_FOUND), a server without the service: failures
    g.health["svc.A"] = UNKNOWN
    b = usher_proc.wait_state(u, "p", "g1", "unhealthy", 5.0)
    assert b["last_result"] == "serving status", b
    g.health["svc.A"] = SERVING
    usher_proc.wait_state(u, "p", "g1", "healthy", 5.0)
    del g.health["svc.A"]
    b = usher_proc.wait_state(u, "p", "g1", "unhealthy", 5.0)
    assert b["last_result"] == "grpc error", b
    assert g.health_checks > 5


def test_grpc_health_check_over_tls(servers, usher_factory, pki):
    app = pki.cert("app")
    g = grpc_backend(servers, "g1", tls=(app.cert, app.key))
    u = usher_factory(pools={"p": [g]}, pool_opts={"p": {
        "protocol": "h2", "tls": {"ca": pki.ca}, "health_check": grpc_hc()}})
    usher_proc.wait_state(u, "p", "g1", "healthy", 5.0)
    g.health[""] = NOT_SERVING
    usher_proc.wait_state(u, "p", "g1", "draining", 5.0)


def test_not_serving_drains_while_inflight_call_completes(servers, usher_factory):
    g1 = grpc_backend(servers, "g1")
    g2 = grpc_backend(servers, "g2")
    u = start(usher_factory, {"p": [g1, g2]},
              pool_opts={"p": {"health_check": grpc_hc(), "deregistration_delay": "20s"}})
    usher_proc.wait_state(u, "p", "g1", "healthy", 5.0)
    usher_proc.wait_state(u, "p", "g2", "healthy", 5.0)
    ch = channel(u.port)
    slow = method(ch, "Slow")
    futs = [slow.future(b"2000", timeout=10) for _ in range(4)]
    wait_until(lambda: g1.inflight >= 1 and g2.inflight >= 1, 5.0, what="calls on both")
    g1.health[""] = NOT_SERVING
    b = usher_proc.wait_state(u, "p", "g1", "draining", 3.0)
    assert b["inflight_requests"] >= 1
    # new calls go to g2 only
    for _ in range(6):
        r, c = method(ch, "Echo").with_call(b"x", timeout=5)
        assert dict(c.initial_metadata())["x-server"] == "g2"
    # the calls in flight on g1 complete
    results = [f.result(timeout=10) for f in futs]
    assert set(results) <= {b"slept g1", b"slept g2"} and b"slept g1" in results, results
    d = wait_until(lambda: (u.backend_status("p", "g1")["drain"] or {}).get("complete"), 5.0,
                   what="g1's drain complete once its calls ended")
    assert d
    ch.close()
