"""The two-step GOAWAY drain of HTTP/2 client connections (DESIGN "HTTP/2 and
gRPC", RFC 9113 6.8), frame by frame: wherever an HTTP/1.1 connection would be
told Connection: close, an HTTP/2 one gets GOAWAY(2^31-1), then a PING, then —
at the PING's acknowledgement or after 1 s — the final GOAWAY naming the last
stream usher accepted (NO_ERROR). Every stream up to it is answered, none is
reset or refused, and the connection closes after the last one."""

import signal
import time

import pytest

import wire
from h2client import H2Conn, MAX_STREAM_ID, NO_ERROR
import h2.events

# RFC 9113 6.8 / usher: the final GOAWAY at the PING ack, or this long after
# the first GOAWAY when no ack comes.
PING_TIMEOUT_S = 1.0
SLACK = 1.5


def goaway_sequence(c, timeout=5.0):
    """Waits for both GOAWAYs; returns them and whether the PING came between."""
    c.pump(timeout, until=lambda: len(c.goaways) >= 2 or c.closed)
    kinds = [type(e).__name__ for e in c.events if not isinstance(e, tuple)]
    return c.goaways, kinds


def check_two_step(c, last_stream, timeout=5.0, acked=True):
    goaways, kinds = goaway_sequence(c, timeout)
    assert len(goaways) >= 2, "GOAWAYs seen: %r (events %r)" % (goaways, kinds)
    (first_id, first_code, t1), (last_id, last_code, t2) = goaways[:2]
    assert first_id == MAX_STREAM_ID and first_code == NO_ERROR, goaways
    assert last_id == last_stream and last_code == NO_ERROR, goaways
    # the PING came after the first GOAWAY and before the final one
    i1 = kinds.index("ConnectionTerminated")
    assert "PingReceived" in kinds[i1:], kinds
    if acked:
        assert t2 - t1 < PING_TIMEOUT_S * 0.8, "final GOAWAY %.3fs after the first" % (t2 - t1)
    return t2 - t1


def test_sigterm_streams_in_flight_finish_across_both_goaways(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"timeout": "10s"})
    c = H2Conn(u.port)
    assert c.get("/").status == 200
    sids = [c.request("/slow?ms=800") for _ in range(3)]
    b.wait_requests(4, timeout=3.0)
    u.send_signal(signal.SIGTERM)
    check_two_step(c, last_stream=sids[-1])
    for sid in sids:
        r = c.response(sid, timeout=5.0)
        assert r.status == 200 and r.reset is None and r.body == b"blue-1", r
    assert c.wait_closed(5.0), "usher kept the drained connection open"
    assert u.wait_exit(10) == 0
    assert u.log_lines("shutdown started")


def test_final_goaway_after_one_second_without_ping_ack(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"timeout": "10s"})
    c = H2Conn(u.port)
    assert c.get("/").status == 200

    # a client that never acknowledges PINGs: its ack is dropped
    orig = c._handle

    def no_ack(ev):
        orig(ev)
        if isinstance(ev, h2.events.PingReceived):
            c.conn.clear_outbound_data_buffer()
    c._handle = no_ack
    sid = c.request("/slow?ms=300")
    b.wait_requests(2, timeout=3.0)
    u.send_signal(signal.SIGTERM)
    gap = check_two_step(c, last_stream=sid, acked=False)
    assert PING_TIMEOUT_S * 0.9 <= gap <= PING_TIMEOUT_S + SLACK, gap
    assert c.response(sid).status == 200
    assert c.wait_closed(5.0)
    assert u.wait_exit(10) == 0


def test_stream_opened_after_first_goaway_is_served(backend_factory, usher_factory):
    """A stream the client sends before it saw the final GOAWAY is answered,
    never refused: the final GOAWAY waits for the PING's ack, which comes
    after it."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"timeout": "10s"})
    c = H2Conn(u.port)
    first = c.request("/slow?ms=500")
    b.wait_requests(1, timeout=3.0)
    late = []
    orig = c._handle

    def open_after_notice(ev):
        # on the first GOAWAY, before the PING is even read: a new stream
        if isinstance(ev, h2.events.ConnectionTerminated) and not late:
            orig(ev)
            c.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            late.append(c.request("/slow?ms=200"))
            return
        orig(ev)
    c._handle = open_after_notice
    u.send_signal(signal.SIGTERM)
    c.pump(5.0, until=lambda: len(c.goaways) >= 2)
    assert late, "no first GOAWAY came"
    assert c.goaways[1][0] == late[0], c.goaways
    for sid in (first, late[0]):
        r = c.response(sid, timeout=5.0)
        assert r.status == 200 and r.reset is None, (sid, r)
    assert u.wait_exit(10) == 0


def test_reload_removing_listener_drains_its_http2_connections(backend_factory, usher_factory):
    import usher_proc
    b = backend_factory("blue-1")
    cfg = usher_proc.make_config(pools={"blue": [b]}, listeners=[
        {"name": "keep", "pools": {"blue": 100}}, {"name": "gone", "pools": {"blue": 100}}])
    u = usher_factory(cfg)
    c = H2Conn(u.ports["gone"])
    assert c.get("/").status == 200
    sid = c.request("/slow?ms=800")
    b.wait_requests(2, timeout=3.0)
    cfg2 = dict(cfg)
    cfg2["listeners"] = [l for l in cfg["listeners"] if l["name"] == "keep"]
    u.reload(cfg2)
    check_two_step(c, last_stream=sid)
    r = c.response(sid, timeout=5.0)
    assert r.status == 200 and r.reset is None
    assert c.wait_closed(5.0)
    assert H2Conn(u.ports["keep"]).get("/").status == 200
    m = u.metrics()
    assert m.get("usher_http2_goaway_sent_total", reason="drain") >= 1


def test_idle_connections_get_the_first_goaway_spread(backend_factory, usher_factory):
    """close_spread spaces the first GOAWAYs of idle HTTP/2 connections over
    its window; each then closes after its final GOAWAY."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]},
                      shutdown={"close_spread": "1500ms", "timeout": "10s"})
    conns = [H2Conn(u.port) for _ in range(3)]
    for c in conns:
        assert c.get("/").status == 200
    t0 = time.monotonic()
    u.send_signal(signal.SIGTERM)
    # every connection read in turn, a little at a time, so each GOAWAY is
    # seen (and its PING acknowledged) about when it comes
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not all(c.closed for c in conns):
        for c in conns:
            c.pump(0.02)
    firsts = []
    for c in conns:
        assert len(c.goaways) >= 2 and c.goaways[0][0] == MAX_STREAM_ID, c.goaways
        assert c.goaways[1][0] == 1  # the one stream it sent
        assert c.goaways[1][2] - c.goaways[0][2] < 0.5  # its PING was acknowledged
        firsts.append(c.goaways[0][2] - t0)
        assert c.closed
    firsts.sort()
    assert firsts[-1] - firsts[0] >= 0.5, "first GOAWAYs not spread: %r" % firsts
    assert u.wait_exit(10) == 0


def test_idle_close_after_request_waits_for_the_next_stream(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]},
                      shutdown={"idle_close": "after_request", "timeout": "10s"})
    c = H2Conn(u.port)
    assert c.get("/").status == 200
    u.send_signal(signal.SIGTERM)
    u.wait_log(r"shutdown started")
    c.pump(1.0)
    assert c.goaways == [], "an idle connection got a GOAWAY before its next request"
    sid = c.request("/")
    check_two_step(c, last_stream=sid)
    assert c.response(sid).status == 200
    assert c.wait_closed(5.0)
    assert u.wait_exit(10) == 0


def test_drain_delay_new_stream_starts_the_drain(backend_factory, usher_factory):
    """From the drain's first step (drain_delay), a stream is answered and its
    connection drained, as an HTTP/1.1 response carries Connection: close."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "2s", "timeout": "10s"})
    c = H2Conn(u.port)
    assert c.get("/").status == 200
    u.send_signal(signal.SIGTERM)
    u.wait_admin("/ready", 503, timeout=3.0)
    sid = c.request("/")
    check_two_step(c, last_stream=sid)
    assert c.response(sid).status == 200
    assert c.wait_closed(5.0)
    # new connections are still served during the delay
    c2 = H2Conn(u.port)
    assert c2.get("/").status == 200
    assert u.wait_exit(15) == 0


def test_upgrade_drains_http2_connections_of_the_old_process(backend_factory, usher_bin,
                                                             tmp_path):
    """SIGUSR2: the old process drains like a process drain; its HTTP/2
    connection gets both GOAWAYs, its stream in flight is answered, and the
    new process serves the next connection."""
    import os
    import shutil
    import usher_proc
    b = backend_factory("blue-1")
    binary = str(tmp_path / "usher-bin")
    shutil.copy(usher_bin, binary)
    cfg = usher_proc.make_config(pools={"blue": [b]},
                                 shutdown={"idle_close": "after_request", "timeout": "5s"},
                                 extra={"upgrade": {"timeout": "3s"}})
    u = usher_proc.Usher(binary, cfg, tmp_path)
    u.start()
    new_pid = None
    try:
        old_pid = u.status_json()["pid"]
        c = H2Conn(u.port)
        assert c.get("/").status == 200
        sid = c.request("/slow?ms=1500")
        b.wait_requests(2, timeout=3.0)
        os.kill(old_pid, signal.SIGUSR2)
        check_two_step(c, last_stream=sid, timeout=8.0)
        r = c.response(sid, timeout=5.0)
        assert r.status == 200 and r.reset is None
        assert c.wait_closed(5.0)
        wire.wait_until(lambda: not wire.pid_alive(old_pid), 8.0, what="the old usher to exit")
        c2 = H2Conn(u.port)
        assert c2.get("/").status == 200
        new_pid = u.status_json()["pid"]
        assert new_pid != old_pid
        c2.close()
    finally:
        if new_pid and wire.pid_alive(new_pid):
            os.kill(new_pid, signal.SIGTERM)
            wire.wait_until(lambda: not wire.pid_alive(new_pid), 5.0, what="the new usher")
        u.stop(timeout=5.0, check=False)
