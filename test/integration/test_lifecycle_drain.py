"""The process drain on SIGTERM / SIGINT (DESIGN.md "The process drain",
"Signals", "Exit codes"): real binary, real signals, real clients."""

import signal
import time

import pytest

import usher_proc
import wire
from clients import AsyncioThread, WsClient, slow_request
from servers import WsEchoServer
from usher_proc import RELEASE_ORDER, assert_in_order, drain_signal
from wire import ConnectionClosed, RawConn, connect_refused


def _ready_status(u):
    return u.admin_get("/ready", timeout=2.0)[0]


def test_sigterm_inflight_request_completes_then_exit_0(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "10s"})
    slow = slow_request(u.port, 3000)
    b.wait_requests(1, 3.0)
    t0 = drain_signal(u, signal.SIGTERM)
    u.wait_log(r"shutdown listeners closed", 2.0)
    # drain_delay 0: the listening socket is closed right away
    assert connect_refused(u.port), "a new connection was accepted after the listeners closed"
    assert time.monotonic() - t0 < 1.0
    # still running, still reachable on admin: not ready, alive
    assert u.running()
    assert _ready_status(u) == 503
    assert u.admin_get("/live")[0] == 200
    assert u.status_json()["state"] == "draining"

    r, closed = slow.join(10.0)
    assert r.status == 200 and r.body == b"blue-1" and r.complete, r
    assert r.has_token("connection", "close"), r.raw_head
    assert closed, "the connection stayed open after the drained response"
    code = u.wait_exit(3.0)
    t_exit = time.monotonic()
    assert code == 0, u.log()
    # exit when the last connection ends, not at the end of shutdown.timeout (10 s)
    assert t_exit - t0 < 5.0, "exit %.2fs after SIGTERM" % (t_exit - t0)
    assert t_exit - slow.done_at < 1.0, "exit %.2fs after the request ended" % (
        t_exit - slow.done_at)
    assert_in_order(u, [("shutdown started", {"signal": "SIGTERM", "drain_delay_ms": 0,
                                              "timeout_ms": 10000, "connections": 1}),
                        ("shutdown listeners closed", {"connections": 1}),
                        ("shutdown idle connections closed", {"closed": 0, "connections": 1}),
                        ("shutdown drained", {"connections": 0, "exit_code": 0})] +
                    [("released", {"what": w}) for w in RELEASE_ORDER] +
                    [("usher stopped", {"exit_code": 0})])
    # at least one progress line during the 3 s, nothing about a timeout
    assert u.log_lines("shutdown progress"), u.log()
    assert not u.log_lines("shutdown timeout"), u.log()


def test_drain_delay_serves_then_closes_listener(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "2s", "timeout": "5s"})
    ka = RawConn(u.port)
    assert ka.request("GET", "/").status == 200
    t0 = drain_signal(u, signal.SIGTERM)
    u.wait_log(r"shutdown started signal=SIGTERM drain_delay_ms=2000", 1.0)
    assert _ready_status(u) == 503
    assert u.admin_get("/live")[0] == 200
    assert time.monotonic() - t0 < 0.5, "admin checks took too long to be 'immediate'"

    # during the delay: a new connection is accepted and served, with Connection: close
    with RawConn(u.port) as c:
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r
        assert r.has_token("connection", "close"), r.raw_head
        assert c.wait_closed(2.0) == b""
    # an existing keep-alive connection is served too, and told to close
    r = ka.request("GET", "/")
    assert r.status == 200 and r.has_token("connection", "close"), r
    assert ka.wait_closed(2.0) == b""
    ka.close()
    assert not u.log_lines("shutdown listeners closed"), "listeners closed before drain_delay"
    assert time.monotonic() - t0 < 1.8, "too slow to check the delay phase"
    assert not connect_refused(u.port)

    # then the listener closes (and with no connection left, usher exits 0)
    wire.wait_until(lambda: connect_refused(u.port, 0.5), 3.0, interval=0.05,
                    what="listener closed after drain_delay")
    t_closed = time.monotonic() - t0
    assert 1.8 <= t_closed <= 3.0, "listener closed %.2fs after SIGTERM" % t_closed
    assert u.wait_exit(3.0) == 0, u.log()
    assert_in_order(u, [("shutdown started", {"signal": "SIGTERM"}),
                        ("shutdown listeners closed", {"connections": 0}),
                        ("shutdown drained", {"exit_code": 0}),
                        ("usher stopped", {"exit_code": 0})])


def test_shutdown_timeout_cuts_long_request_exit_1(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "1s"})
    slow = slow_request(u.port, 0, check_close=False, path="/hang")
    b.wait_requests(1, 3.0)
    t0 = drain_signal(u, signal.SIGTERM)
    code = u.wait_exit(4.0)
    elapsed = time.monotonic() - t0
    assert code == 1, u.log()
    assert 0.9 <= elapsed < 2.0, "exit %.2fs after SIGTERM with timeout 1s" % elapsed
    with pytest.raises(ConnectionClosed):
        slow.join(5.0)
    assert_in_order(u, [("shutdown started", {"signal": "SIGTERM"}),
                        ("shutdown listeners closed", {"connections": 1}),
                        ("shutdown timeout", {"closing": 1, "exit_code": 1})] +
                    [("released", {"what": w}) for w in RELEASE_ORDER] +
                    [("usher stopped", {"exit_code": 1})])
    # the cut connections are not a clean drain: no "shutdown drained ... exit_code=0"
    assert not u.log_lines("shutdown drained"), u.log()


def test_idle_keepalive_clients_closed_when_listeners_close(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "10s"})
    idle = [RawConn(u.port) for _ in range(3)]
    for c in idle:
        assert c.request("GET", "/").status == 200
    # a request in flight keeps the process alive, so the EOF the idle clients
    # see comes from the drain, not from the exit
    slow = slow_request(u.port, 2000)
    b.wait_requests(4, 3.0)
    drain_signal(u, signal.SIGTERM)
    for c in idle:
        assert c.wait_closed(2.0) == b"", "an idle keep-alive connection got bytes"
        assert not c.reset, "an idle keep-alive connection was reset, not closed"
        c.close()
    assert u.running(), "usher exited before the in-flight request ended"
    # the clients may see their EOF before usher has written the summary line
    u.wait_log(r"shutdown idle connections closed", 2.0)
    assert_in_order(u, [("shutdown listeners closed", {"connections": 4}),
                        ("shutdown idle connections closed", {"closed": 3, "connections": 1})])
    r, closed = slow.join(5.0)
    assert r.status == 200 and r.has_token("connection", "close") and closed, r
    assert u.wait_exit(3.0) == 0, u.log()


def test_sigint_drains_like_sigterm(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "10s"})
    idle = RawConn(u.port)
    assert idle.request("GET", "/").status == 200
    slow = slow_request(u.port, 1500)
    b.wait_requests(2, 3.0)
    t0 = drain_signal(u, signal.SIGINT)
    u.wait_log(r"shutdown listeners closed", 2.0)
    assert connect_refused(u.port)
    assert idle.wait_closed(2.0) == b""
    idle.close()
    assert _ready_status(u) == 503
    r, closed = slow.join(5.0)
    assert r.status == 200 and r.body == b"blue-1", r
    assert r.has_token("connection", "close") and closed, r.raw_head
    assert u.wait_exit(3.0) == 0, u.log()
    assert time.monotonic() - t0 < 4.0
    assert_in_order(u, [("shutdown started", {"signal": "SIGINT", "connections": 2}),
                        ("shutdown listeners closed", {}),
                        ("shutdown idle connections closed", {"closed": 1, "connections": 1}),
                        ("shutdown drained", {"exit_code": 0})] +
                    [("released", {"what": w}) for w in RELEASE_ORDER] +
                    [("usher stopped", {"exit_code": 0})])


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_during_drain_exits_1_at_once(backend_factory, usher_factory, second):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "20s"})
    slow = slow_request(u.port, 0, check_close=False, path="/hang")
    b.wait_requests(1, 3.0)
    drain_signal(u, signal.SIGTERM)
    u.wait_log(r"shutdown listeners closed", 2.0)
    time.sleep(0.2)
    assert u.running()
    t1 = drain_signal(u, second)
    code = u.wait_exit(2.0)
    assert code == 1, u.log()
    assert time.monotonic() - t1 < 1.0, "second signal did not stop usher at once"
    with pytest.raises(ConnectionClosed):
        slow.join(5.0)
    name = "SIGTERM" if second == signal.SIGTERM else "SIGINT"
    assert_in_order(u, [("shutdown started", {"signal": "SIGTERM"}),
                        ("shutdown forced", {"signal": name, "connections": 1, "exit_code": 1}),
                        ("usher stopped", {"exit_code": 1})])
    assert not u.log_lines("shutdown drained") and not u.log_lines("shutdown timeout")


def test_second_signal_during_drain_delay_exits_1(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "5s", "timeout": "5s"})
    drain_signal(u, signal.SIGTERM)
    u.wait_log(r"shutdown started", 2.0)
    t1 = drain_signal(u, signal.SIGTERM)
    assert u.wait_exit(2.0) == 1, u.log()
    assert time.monotonic() - t1 < 1.0
    assert_in_order(u, [("shutdown started", {"signal": "SIGTERM", "drain_delay_ms": 5000}),
                        ("shutdown forced", {"signal": "SIGTERM", "exit_code": 1}),
                        ("usher stopped", {"exit_code": 1})])


def test_sighup_during_drain_is_ignored(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    g = backend_factory("green-1")
    cfg = usher_proc.make_config(pools={"blue": [b], "green": [g]}, split={"blue": 100, "green": 0},
                           shutdown={"drain_delay": "1s", "timeout": "10s"})
    u = usher_factory(cfg)
    slow = slow_request(u.port, 2500)
    b.wait_requests(1, 3.0)
    drain_signal(u, signal.SIGTERM)
    u.wait_log(r"shutdown started", 2.0)
    # a changed file (green takes everything) that must not be loaded
    flipped = dict(cfg)
    flipped["listeners"] = [dict(cfg["listeners"][0], pools={"blue": 0, "green": 100})]
    u.reload(flipped)                                # during drain_delay
    u.wait_log(r"reload ignored reason=draining", 2.0)
    with RawConn(u.port) as c:                       # still blue during the delay
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r
    u.wait_log(r"shutdown listeners closed", 3.0)
    u.send_signal(signal.SIGHUP)                     # after the listeners closed
    wire.wait_until(lambda: len(u.log_lines("reload ignored")) == 2, 2.0,
                    what="second 'reload ignored'")
    st = u.status_json()
    assert st["generation"] == 1 and st["state"] == "draining", st
    assert st["listeners"][0]["pools"] == {"blue": 100, "green": 0}, st["listeners"]
    r, closed = slow.join(5.0)
    assert r.status == 200 and r.body == b"blue-1" and closed, r
    assert u.wait_exit(3.0) == 0, u.log()
    assert not u.log_lines("reload started"), u.log()
    assert all(l["level"] == "warn" for l in u.log_lines("reload ignored"))
    assert g.reqs() == []


def test_websocket_tunnel_flows_during_drain_then_cut_at_timeout(usher_factory):
    """A tunnel is a client connection like any other: it keeps flowing after
    the listeners close and is cut when shutdown.timeout passes (exit 1)."""
    aio = AsyncioThread()
    ws_backend = WsEchoServer("blue-ws", aio=aio).start()
    ws = None
    try:
        u = usher_factory(pools={"blue": [{"name": "blue-ws", "address": ws_backend.address}]},
                          shutdown={"drain_delay": "0s", "timeout": "2s",
                                    "tunnel_close_grace": "0s"})  # no close frame: cut
        ws = WsClient(u.port, aio=aio)
        assert ws.echo("before") == "before"
        t0 = drain_signal(u, signal.SIGTERM)
        u.wait_log(r"shutdown listeners closed connections=1", 2.0)
        for i in range(5):
            assert ws.echo("during %d" % i) == "during %d" % i
            time.sleep(0.1)
        assert u.wait_exit(4.0) == 1, u.log()
        assert 1.9 <= time.monotonic() - t0 < 3.0
        with pytest.raises(Exception):
            ws.echo("after", timeout=1.0)
        assert_in_order(u, [("shutdown idle connections closed", {"closed": 0, "connections": 1}),
                            ("shutdown timeout", {"closing": 1, "exit_code": 1}),
                            ("usher stopped", {"exit_code": 1})])
    finally:
        if ws is not None:
            ws.close()
        ws_backend.stop()
        aio.close()


def test_connection_without_a_request_yet_is_served_during_drain(backend_factory, usher_factory):
    """A client that connected just before SIGTERM but has not sent its request
    yet is not an idle keep-alive connection: closing it would turn its request
    into an error. It gets a short grace, and its request is answered."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "10s"})
    fresh = RawConn(u.port)
    time.sleep(0.2)  # accepted by usher, no byte sent yet
    drain_signal(u, signal.SIGTERM)
    u.wait_log(r"shutdown listeners closed", 2.0)
    time.sleep(0.2)
    r = fresh.request("GET", "/")
    assert r.status == 200 and r.body == b"blue-1", r
    assert r.has_token("connection", "close"), r.raw_head
    assert fresh.wait_closed(2.0) == b""
    fresh.close()
    assert u.wait_exit(3.0) == 0, u.log()


def test_connection_that_never_sends_does_not_hold_the_drain(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "10s"})
    silent = RawConn(u.port)
    time.sleep(0.2)
    t0 = drain_signal(u, signal.SIGTERM)
    assert silent.wait_closed(3.0) == b""
    silent.close()
    assert u.wait_exit(3.0) == 0, u.log()
    assert time.monotonic() - t0 < 2.5, "a silent connection held the drain"
