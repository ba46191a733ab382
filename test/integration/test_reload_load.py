"""Reloads under a continuous client load (DESIGN.md "The reload"): 50 SIGHUPs
alternating two configs without a single client error or reset, and a
blue/green flip by reload with a WebSocket on blue that survives it."""

import threading
import time

import wire
from clients import AsyncioThread, Background, WsClient
from load import Load
from servers import WsEchoServer
from usher_proc import config_for, reload_and_wait

RELOADS = 50
HEALTH = {"protocol": "http", "path": "/healthz", "interval": "200ms", "timeout": "150ms",
          "healthy_threshold": 2, "unhealthy_threshold": 2}


def test_50_reloads_under_keepalive_load(backend_factory, usher_factory):
    b1 = backend_factory("blue-1")
    b2 = backend_factory("blue-2")
    g1 = backend_factory("green-1")
    # with health checks: unchanged backends must keep their state (a reset to
    # "checking" would take them out of rotation and show up as 503s)
    opts = {p: {"health_check": HEALTH} for p in ("blue", "green")}
    u = usher_factory(pools={"blue": [b1, b2], "green": [g1]}, split={"blue": 100, "green": 0},
                      pool_opts=opts)
    cfg_a = config_for(u, {"blue": [b1, b2], "green": [g1]}, split={"blue": 100, "green": 0},
                       pool_opts=opts)
    cfg_b = config_for(u, {"blue": [(b1, 3), b2], "green": [g1]}, split={"blue": 50, "green": 50},
                       pool_opts=opts)

    load = Load(u.port, threads=4, duration=25.0, timeout=5.0).start()
    # GET / on a new connection each time: every connect must succeed (an
    # unchanged listener keeps its socket)
    fresh = Load(u.port, threads=1, pause=0.01, duration=25.0, timeout=5.0, fresh=True).start()
    outcomes = []
    try:
        wire.wait_until(lambda: load.count() >= 20, 5.0, what="load started")
        t0 = time.monotonic()
        for i in range(RELOADS):
            outcomes.append(reload_and_wait(u, cfg_b if i % 2 == 0 else cfg_a))
            time.sleep(0.1)
            assert time.monotonic() - t0 < 20.0, "reloads too slow: %d done" % (i + 1)
        time.sleep(0.3)
    finally:
        load.stop()
        fresh.stop()
    n_fresh, fresh_errors = fresh.total, fresh.errors

    print("reload under load: %d keep-alive requests (%r), %d errors, %d reconnects; "
          "%d fresh-connection requests, %d errors; upstream connections %r" % (
              load.count(), load.by_backend(), len(load.errors), load.reconnects, n_fresh,
              len(fresh_errors), {b.name: len({r.conn_id for r in b.reqs()}) for b in (b1, b2, g1)}))
    assert outcomes == [("done", g) for g in range(2, RELOADS + 2)], outcomes
    assert load.errors == [], "client errors: %d, first: %r" % (len(load.errors), load.errors[:5])
    assert load.reconnects == 0 and load.connects == 4, (load.reconnects, load.connects)
    assert fresh_errors == [], "fresh connections: %d errors of %d: %r" % (
        len(fresh_errors), n_fresh, fresh_errors[:5])
    assert load.count() >= 200, "only %d requests under load" % load.count()
    by_backend = load.by_backend()
    assert set(by_backend) == {"blue-1", "blue-2", "green-1"}, by_backend

    m = u.metrics()
    assert m.get("usher_config_reloads_total", result="ok") == RELOADS
    assert (m.get("usher_config_reloads_total", result="error") or 0) == 0
    assert m.get("usher_config_generation") == RELOADS + 1
    st = u.status_json()
    assert st["generation"] == RELOADS + 1 and st["state"] == "running", st
    assert st["reloads"] == {"ok": RELOADS, "error": 0}, st["reloads"]
    # unchanged (or only re-weighted) backends kept their state and pooled
    # connections: far fewer upstream connections than reloads
    for b in (b1, b2, g1):
        bs = u.backend_status(b.name[:b.name.index("-")], b.name)
        assert bs["state"] == "healthy" and bs["in_config"], bs
        assert b.health_requests >= 10, (b.name, b.health_requests)
        data_conns = len({r.conn_id for r in b.reqs()})
        assert data_conns <= 12, "%s: %d upstream connections over %d reloads" % (
            b.name, data_conns, RELOADS)
    assert not u.log_lines("backend removed") and not u.log_lines("backend added")[3:]
    # one transition per backend: checking -> healthy at startup, none after
    states = [(l["kv"]["backend"], l["kv"]["from"], l["kv"]["to"])
              for l in u.log_lines("backend state")]
    assert sorted(states) == [(n, "checking", "healthy") for n in ("blue-1", "blue-2",
                                                                   "green-1")], states


def test_blue_green_flip_under_load_websocket_survives(backend_factory, usher_factory):
    aio = AsyncioThread()
    ws_backend = WsEchoServer("blue-ws", aio=aio).start()
    ws = None
    load = None
    try:
        g = backend_factory("green-1")
        blue = [{"name": "blue-ws", "address": ws_backend.address, "weight": 1}]
        u = usher_factory(pools={"blue": blue, "green": [g]}, split={"blue": 100, "green": 0},
                          pool_opts={"blue": {"deregistration_delay": "30s"}})
        ws = WsClient(u.port, aio=aio)
        assert ws.echo("hello") == "hello"
        assert u.backend_status("blue", "blue-ws")["active_connections"] >= 1

        # the WebSocket keeps echoing during and after the flip
        stop_ws = threading.Event()

        echoed = [0]

        def ws_loop():
            while not stop_ws.is_set():
                msg = "m%d" % echoed[0]
                got = ws.echo(msg)
                assert got == msg, (got, msg)
                echoed[0] += 1
                time.sleep(0.02)
            return echoed[0]

        ws_bg = Background(ws_loop)
        load = Load(u.port, threads=4, duration=20.0, timeout=5.0).start()
        wire.wait_until(lambda: load.count() >= 50, 5.0, what="load on blue")
        t_hup = time.monotonic()
        kind, gen = reload_and_wait(u, config_for(u, {"blue": blue, "green": [g]},
                                                  split={"blue": 0, "green": 100},
                                                  pool_opts={"blue": {
                                                      "deregistration_delay": "30s"}}))
        t_done = time.monotonic()
        assert (kind, gen) == ("done", 2)
        n_at_flip, echoes_at_flip = load.count(), echoed[0]
        wire.wait_until(lambda: load.count() >= n_at_flip + 200, 8.0, what="load on green")
        wire.wait_until(lambda: echoed[0] >= echoes_at_flip + 20 or ws_bg.done_at, 5.0,
                        what="WebSocket echoes after the flip")
        time.sleep(0.5)
        load.stop()
        stop_ws.set()
        echoes = ws_bg.join(5.0)

        assert load.errors == [], "client errors: %d, first: %r" % (len(load.errors),
                                                                   load.errors[:5])
        assert load.reconnects == 0 and load.connects == 4, (load.reconnects, load.connects)
        before = [r for r in load.records if r[1] < t_hup]
        after = [r for r in load.records if r[0] > t_done]
        assert before and all(r[3] == "blue-ws" for r in before), \
            {r[3] for r in before}
        wrong = [r for r in after if r[3] != "green-1"]
        assert after and not wrong, "%d of %d requests sent after the reload went to %r" % (
            len(wrong), len(after), {r[3] for r in wrong})
        # the switch is atomic: once any client got an answer from green, every
        # request sent after that answer goes to green (only the requests in
        # flight at that moment may still be answered by blue)
        first_green = min(r[1] for r in load.records if r[3] == "green-1")
        late_blue = [r for r in load.records if r[0] > first_green and r[3] != "green-1"]
        assert not late_blue, "%d requests sent after green answered went to blue" % len(
            late_blue)
        assert t_done - t_hup < 1.0, "reload took %.2fs" % (t_done - t_hup)
        print("blue/green flip: %d requests (%r), %d errors, %d reconnects, %d echoes" % (
            load.count(), load.by_backend(), len(load.errors), load.reconnects, echoes))

        # the WebSocket on blue: same session, still echoing after the flip
        assert echoes >= echoes_at_flip + 20
        assert ws.echo("after the flip") == "after the flip"
        assert ws_backend.sessions == 1
        bs = u.backend_status("blue", "blue-ws")
        assert bs["state"] == "healthy" and bs["active_connections"] >= 1, bs
        st = u.status_json()
        assert st["listeners"][0]["pools"] == {"blue": 0, "green": 100}, st["listeners"]
        assert any(l["kv"].get("kind") == "listener_split" for l in u.log_lines("reload change"))
    finally:
        if load is not None:
            load.stop()
        if ws is not None:
            ws.close()
        ws_backend.stop()
        aio.close()
