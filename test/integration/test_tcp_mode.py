"""TCP listeners (protocol: tcp): bytes flow both ways unchanged, half-close
is passed on, a backend that refuses the connect is skipped without the
client noticing, TCP health checks move a dead backend out and a restarted
one back in, and a draining backend (503 or removed by a reload) keeps its
sessions until deregistration_delay, then usher closes them."""

import socket
import threading
import time

import usher_proc
import wire
from clients import Pinger, TCPClient
from servers import TCPEchoServer
from usher_proc import hc_opts, state_transitions, wait_state

DELAY = 2.0
EARLY, LATE = 0.15, 0.6


def _cfg(backends, hc=None, delay="2s", timeouts=None):
    opts = {"deregistration_delay": delay}
    if hc:
        opts["health_check"] = hc
    return usher_proc.make_config(pools={"tcp": backends}, pool_opts={"tcp": opts}, timeouts=timeouts,
                            listeners=[{"name": "tcp", "protocol": "tcp", "pools": {"tcp": 100}}])


def _echo(s, name):
    return s.add(TCPEchoServer(name).start())


def _dead(name):
    return {"name": name, "address": "127.0.0.1:%d" % wire.free_port(), "weight": 1}


def _which(echos):
    """The one echo server with an active session."""
    on = [e for e in echos if e.conns_active == 1]
    assert len(on) == 1, [(e.name, e.conns_active) for e in echos]
    return on[0]


def test_tcp_bytes_flow_and_half_close(servers, usher_factory):
    e1 = _echo(servers, "tcp-1")
    u = usher_factory(_cfg([e1]))
    c = servers.add(TCPClient(u.port))
    for i in range(20):
        assert c.exchange("line %d\n" % i) == "line %d\n" % i
    # 2 MB of a deterministic stream, written by a thread while we read the echo
    n = 2 * 1024 * 1024
    c.sock.settimeout(5.0)
    writer = threading.Thread(target=lambda: [c.sock.sendall(piece) for piece in
                                              wire.pattern_chunks(n, chunk=65536)], daemon=True)
    writer.start()
    got = bytearray()
    while len(got) < n:
        d = c.sock.recv(1 << 20)
        assert d, "closed after %d of %d bytes" % (len(got), n)
        got += d
    writer.join(5.0)
    assert not writer.is_alive()
    assert bytes(got) == wire.pattern_bytes(n)
    st = u.backend_status("tcp", "tcp-1")
    assert st["active_connections"] == 1, st
    # half-close: our FIN reaches the backend, which answers with its own
    c.sock.sendall(b"last words")
    c.sock.shutdown(socket.SHUT_WR)
    rest = b""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        d = c.sock.recv(65536)
        if not d:
            break
        rest += d
    assert rest == b"last words"
    wire.wait_until(lambda: u.backend_status("tcp", "tcp-1")["active_connections"] == 0, 2.0,
                    what="session released")


def test_tcp_connect_failure_moves_to_next_backend(servers, usher_factory):
    e1 = _echo(servers, "tcp-1")
    u = usher_factory(_cfg([_dead("dead-1"), e1, _dead("dead-2")]))
    for i in range(12):
        c = TCPClient(u.port)
        try:
            assert c.exchange("conn %d\n" % i) == "conn %d\n" % i
        finally:
            c.close()
    assert e1.conns_total == 12
    fails = u.log_lines("backend connect failed")
    assert len(fails) >= 8, fails
    assert {f["kv"]["backend"] for f in fails} == {"dead-1", "dead-2"}


def test_tcp_health_check_dead_backend_out_restarted_back_in(servers, usher_factory):
    e1 = _echo(servers, "tcp-1")
    e2 = _echo(servers, "tcp-2")
    u = usher_factory(_cfg([e1, e2], hc=hc_opts(protocol="tcp", interval="200ms",
                                               timeout="100ms", unhealthy=2, healthy=2)))
    wait_state(u, "tcp", "tcp-1", "healthy")
    e1.kill()
    st = wait_state(u, "tcp", "tcp-1", "unhealthy", timeout=2.0)
    assert st["last_result"] == "refused", st
    for i in range(6):
        c = TCPClient(u.port)
        try:
            assert c.exchange("x%d" % i) == "x%d" % i
        finally:
            c.close()
    assert e2.conns_total == 6
    e1.restart()
    wait_state(u, "tcp", "tcp-1", "healthy", timeout=2.0)
    assert ("unhealthy", "healthy", "ok") in state_transitions(u, "tcp-1")


def _drain_session(servers, u, echos):
    """Opens a session, pings it; returns (client, pinger, its backend, another)."""
    c = servers.add(TCPClient(u.port))
    assert c.exchange("hello") == "hello"
    mine = _which(echos)
    p = servers.add(Pinger(c, every=0.05).start())
    return c, p, mine, next(e for e in echos if e is not mine)


def test_tcp_session_survives_503_drain_until_delay_then_closed(servers, usher_factory):
    echos = [_echo(servers, "tcp-1"), _echo(servers, "tcp-2")]
    # an HTTP health check: the echo servers answer GET /healthz as HTTP
    u = usher_factory(_cfg(echos, hc=hc_opts(interval="200ms", timeout="100ms")))
    for e in echos:
        wait_state(u, "tcp", e.name, "healthy")
    c, p, mine, other = _drain_session(servers, u, echos)
    time.sleep(0.3)
    t_flip = time.monotonic()
    mine.health_status = 503
    st = wait_state(u, "tcp", mine.name, "draining", timeout=2.0)
    assert st["active_connections"] == 1, st
    # new connections go to the other backend
    before = other.conns_total
    c2 = servers.add(TCPClient(u.port))
    assert c2.exchange("new") == "new" and other.conns_total == before + 1
    failed = p.wait_failed(DELAY + 3.0)
    t503 = mine.first_health_answer(503, after=t_flip)
    assert failed is not None, "session still open after the delay"
    print("\nTCP 503 drain: session closed %.2fs after the first 503 (delay %.1fs), %d messages; %s"
          % (failed - t503, DELAY, p.ok, p.error))
    assert DELAY - EARLY <= failed - t503 <= DELAY + LATE, (failed - t503, p.error)
    assert p.last_ok - t503 >= DELAY - EARLY - 0.1
    u.wait_log(r"backend drain expired pool=tcp backend=%s closing=1\b" % mine.name, 1.0)
    wire.wait_until(lambda: mine.conns_active == 0, 1.0, what="backend side closed")
    assert c2.exchange("still") == "still"


def test_tcp_removed_backend_drains_until_delay_then_gone(servers, usher_factory):
    echos = [_echo(servers, "tcp-1"), _echo(servers, "tcp-2")]
    cfg = _cfg(echos, hc=hc_opts(protocol="tcp", interval="200ms", timeout="100ms"))
    u = usher_factory(cfg)
    for e in echos:
        wait_state(u, "tcp", e.name, "healthy")
    c, p, mine, other = _drain_session(servers, u, echos)
    time.sleep(0.2)
    new = dict(cfg)
    pool = cfg["pools"][0]
    new["pools"] = [dict(pool, backends=[b for b in pool["backends"] if b["name"] != mine.name])]
    t_reload = time.monotonic()
    u.reload(new)
    u.wait_log(r"reload done generation=2", 2.0)
    u.wait_log(r"backend removed pool=tcp backend=%s .*connections=1\b" % mine.name, 0.5)
    st = u.backend_status("tcp", mine.name)
    assert st["state"] == "draining" and st["active_connections"] == 1, st
    failed = p.wait_failed(DELAY + 3.0)
    assert failed is not None, "session still open after the delay"
    print("\nTCP removal: session closed %.2fs after the reload (delay %.1fs), %d messages"
          % (failed - t_reload, DELAY, p.ok))
    assert DELAY - EARLY <= failed - t_reload <= DELAY + LATE, (failed - t_reload, p.error)
    u.wait_log(r"backend drain expired pool=tcp backend=%s closing=1\b" % mine.name, 1.0)
    u.wait_log(r"backend gone pool=tcp backend=%s " % mine.name, 1.0)
    wait_state(u, "tcp", mine.name, None, timeout=1.0)
    c3 = servers.add(TCPClient(u.port))
    assert c3.exchange("after") == "after"
    assert other.conns_active == 1


def test_tcp_unhealthy_backend_keeps_its_sessions(servers, usher_factory):
    """unhealthy (failed checks, not 503) takes a backend out of rotation but
    its existing sessions are not closed by usher: no deregistration delay
    applies to them."""
    echos = [_echo(servers, "tcp-1"), _echo(servers, "tcp-2")]
    u = usher_factory(_cfg(echos, hc=hc_opts(interval="150ms", timeout="80ms", unhealthy=2)))
    for e in echos:
        wait_state(u, "tcp", e.name, "healthy")
    c, p, mine, other = _drain_session(servers, u, echos)
    t_flip = time.monotonic()
    mine.health_status = 500
    st = wait_state(u, "tcp", mine.name, "unhealthy", timeout=2.0)
    assert st["active_connections"] == 1, st
    before = other.conns_total
    c2 = servers.add(TCPClient(u.port))
    assert c2.exchange("new") == "new" and other.conns_total == before + 1
    time.sleep(max(0.0, t_flip + DELAY + 0.8 - time.monotonic()))
    assert p.failed_at is None, "usher closed a session of an unhealthy backend: %s" % p.error
    assert p.last_ok > t_flip + DELAY + 0.5
    assert not u.log_lines("backend drain expired")
