"""gRPC calls and every drain (DESIGN "HTTP/2 and gRPC", "The process
drain"): a long stream is an in-flight request for `usher ctl switch
--wait-drained`; a stream still open near a backend's or the process's
drain deadline ends with grpc-status 14 tunnel_close_grace before it, at a
message boundary, as a WebSocket gets its 1001; and a call loop loses no
call across reloads, an upgrade and a SIGTERM with drain_delay."""

import os
import shutil
import signal
import time

import grpc
import pytest

import usher_proc
import wire
from admin_util import ctl
from clients import Background
from grpc_util import CallLoop, GrpcServer, channel, code_of, method, unary
from wire import wait_until

H2C = {"protocol": "h2c"}


def grpc_backend(servers, name, **kw):
    return servers.add(GrpcServer(name, **kw).start())


def read_ticks(ch, n, ms, timeout=30.0):
    """Runs Ticks("n,ms"): (messages received, StatusCode, seconds)."""
    got = []
    t0 = time.monotonic()
    try:
        for m in method(ch, "Ticks", "unary_stream")(b"%d,%d" % (n, ms), timeout=timeout):
            got.append(m)
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    return got, code, time.monotonic() - t0


def test_switch_wait_drained_waits_for_a_streaming_call(servers, usher_factory, usher_bin):
    blue = grpc_backend(servers, "blue-1")
    green = grpc_backend(servers, "green-1")
    u = usher_factory(pools={"blue": [blue], "green": [green]}, split={"blue": 100, "green": 0},
                      pool_opts={"blue": dict(H2C), "green": dict(H2C)})
    ch = channel(u.port)
    stream = Background(lambda: read_ticks(ch, 25, 100))  # 2.5 s on blue
    wait_until(lambda: blue.inflight == 1, 5.0, what="the stream on blue")
    t0 = time.monotonic()
    r = ctl(usher_bin, u, "switch", "web", "green", "--wait-drained", "15s")
    waited = time.monotonic() - t0
    assert r.returncode == 0, (r.stdout, r.stderr)
    got, code, took = stream.join(10)
    assert code == grpc.StatusCode.OK and len(got) == 25
    assert stream.done_at - t0 <= waited + 0.1, "the switch returned before the stream ended"
    assert waited >= 1.0, waited
    # new calls go to green
    r, c = method(ch, "Echo").with_call(b"x", timeout=5)
    assert dict(c.initial_metadata())["x-server"] == "green-1"
    ch.close()


def test_backend_drain_deadline_ends_a_stream_with_status_14(servers, usher_factory):
    """An admin drain with a 3 s deadline and tunnel_close_grace 1 s: the
    stream gets grpc-status 14 about 2 s in, after a whole message, and the
    drain completes without cutting anything."""
    g = grpc_backend(servers, "g1")
    u = usher_factory(pools={"p": [g]}, pool_opts={"p": dict(H2C)},
                      shutdown={"tunnel_close_grace": "1s"})
    ch = channel(u.port)
    stream = Background(lambda: read_ticks(ch, 200, 50))  # 10 s if nothing ends it
    wait_until(lambda: g.inflight == 1, 5.0, what="the stream on g1")
    t0 = time.monotonic()
    st, body, _ = u.admin_get("/backends/p/g1/drain?deadline=3s", method="POST")
    assert st == 200, body
    got, code, _ = stream.join(10)
    ended = stream.done_at - t0
    assert code == grpc.StatusCode.UNAVAILABLE, code
    assert 1.5 <= ended <= 2.9, ended
    assert got == [b"tick %d from g1" % i for i in range(len(got))] and len(got) >= 20
    d = wait_until(lambda: (u.backend_status("p", "g1")["drain"] or {}).get("complete"), 5.0,
                   what="the drain complete")
    assert d
    ch.close()


def test_process_drain_deadline_ends_a_stream_with_status_14(servers, usher_factory):
    """SIGTERM with shutdown.timeout 3 s and tunnel_close_grace 1 s: the
    stream in flight ends with grpc-status 14 about 2 s after the listeners
    closed, and usher exits 0 (it cut nothing)."""
    g = grpc_backend(servers, "g1")
    u = usher_factory(pools={"p": [g]}, pool_opts={"p": dict(H2C)},
                      shutdown={"timeout": "3s", "tunnel_close_grace": "1s"})
    ch = channel(u.port)
    stream = Background(lambda: read_ticks(ch, 200, 50))
    wait_until(lambda: g.inflight == 1, 5.0, what="the stream on g1")
    t0 = usher_proc.drain_signal(u)
    got, code, _ = stream.join(10)
    ended = stream.done_at - t0
    assert code == grpc.StatusCode.UNAVAILABLE, code
    assert 1.5 <= ended <= 2.9, ended
    assert got == [b"tick %d from g1" % i for i in range(len(got))] and len(got) >= 20
    assert u.wait_exit(5) == 0, u.log()
    ch.close()


def test_no_call_lost_across_reloads_an_upgrade_and_sigterm(servers, tmp_path, usher_bin):
    """A 4-thread call loop through 5 reloads, a binary upgrade (the old
    process drains its HTTP/2 connections in two steps) and a SIGTERM with
    drain_delay (the loop stops sending at it, as a load balancer would,
    and a late client is still served): not one failed call, with the
    clients' retries off. (A loop that went on through drain_delay would
    be told GOAWAY at each new connection, as DESIGN says: grpc-core then
    fails some calls it had not even sent, unless its transparent retries
    are on — the late client keeps them.)"""
    g1 = grpc_backend(servers, "g1")
    g2 = grpc_backend(servers, "g2")
    binary = str(tmp_path / "usher-bin")
    shutil.copy(usher_bin, binary)
    pools = {"p": [g1, g2]}
    opts = {"p": dict(H2C)}
    cfg = usher_proc.make_config(pools=pools, pool_opts=opts,
                                 shutdown={"drain_delay": "2s", "timeout": "5s"},
                                 extra={"upgrade": {"timeout": "5s"}})
    u = usher_proc.Usher(binary, cfg, tmp_path)
    u.start()
    new_pid = None
    loop = CallLoop(u.port, threads=4).start()
    try:
        loop.wait_calls(100)
        for i in range(5):
            w = {"g1": 1 + i % 2, "g2": 1}
            kind, _ = usher_proc.reload_and_wait(u, usher_proc.config_for(
                u, {"p": [(g1, w["g1"]), (g2, w["g2"])]}, pool_opts=opts,
                shutdown={"drain_delay": "2s", "timeout": "5s"},
                extra={"upgrade": {"timeout": "5s"}}))
            assert kind == "done"
            loop.wait_calls(50)
        old = u.pid
        os.kill(old, signal.SIGUSR2)
        wait_until(lambda: not wire.pid_alive(old), 10.0, what="the old usher to drain and exit")
        assert u.proc.wait(5) == 0, u.log()
        new_pid = u.status_json()["pid"]
        assert new_pid != old
        loop.wait_calls(100)
        os.kill(new_pid, signal.SIGTERM)
        t0 = time.monotonic()
        # the load balancer stops sending; the calls in flight finish
        loop.stop()
        # drain_delay: a client that still comes is served
        ch = channel(u.port, transparent_retries=True)
        assert unary(ch, "Echo", b"late") == b"late"
        ch.close()
        assert time.monotonic() - t0 < 2.0
    finally:
        loop.stop()
        if new_pid:
            wait_until(lambda: not wire.pid_alive(new_pid), 10.0, what="the new usher to exit")
        else:
            u.stop()
    assert loop.failed == [], loop.failed[:5]
    assert loop.ok > 500
    assert "shutdown drained connections=0 exit_code=0" in u.log()
