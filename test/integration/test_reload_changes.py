"""What a reload changes and what it must not touch (DESIGN.md "The reload"):
a removed backend drains its in-flight request, a broken file changes nothing,
listeners are added and removed without disturbing established connections."""

import re
import time

import pytest

import usher_proc
import wire
from clients import AsyncioThread, WsClient, slow_request
from servers import WsEchoServer
from usher_proc import config_for, reload_and_wait
from wire import RawConn, connect_refused


def test_backend_removed_while_slow_request_runs(backend_factory, usher_factory):
    b1 = backend_factory("blue-1")
    b2 = backend_factory("blue-2")
    opts = {"blue": {"deregistration_delay": "10s"}}
    u = usher_factory(pools={"blue": [b1, b2]}, pool_opts=opts)
    carrier = RawConn(u.port, timeout=10.0)
    slow = slow_request(u.port, 2000, conn=carrier, check_close=False)
    victim = wire.wait_until(lambda: next((b for b in (b1, b2) if b.reqs("/slow")), None), 3.0,
                             what="the slow request at a backend")
    other = b2 if victim is b1 else b1

    kind, gen = reload_and_wait(u, config_for(u, {"blue": [other]}, pool_opts=opts))
    assert (kind, gen) == ("done", 2), u.log()
    removed = u.log_lines("backend removed")
    assert [(l["kv"]["pool"], l["kv"]["backend"], l["kv"]["address"]) for l in removed] == [
        ("blue", victim.name, victim.address)], u.log()
    bs = u.backend_status("blue", victim.name)
    assert bs is not None and bs["state"] == "draining" and not bs["in_config"], bs
    assert bs["inflight_requests"] == 1 and bs["drain_deadline_ms"] is not None, bs
    assert 8000 < bs["drain_deadline_ms"] <= 10000, bs

    # new requests go elsewhere, on new and on established connections
    with RawConn(u.port) as ka:
        for _ in range(10):
            r = ka.request("GET", "/")
            assert r.status == 200 and r.body == other.name.encode(), r
    for _ in range(5):
        st, _, body = wire.http_get(u.port, "/")
        assert st == 200 and body == other.name.encode(), (st, body)
    assert len(victim.reqs()) == 1, victim.reqs()

    r, _ = slow.join(5.0)
    assert r.status == 200 and r.body == victim.name.encode() and r.complete, r
    # a reload never closes an established client connection
    assert not r.has_token("connection", "close"), r.raw_head
    r = carrier.request("GET", "/")
    assert r.status == 200 and r.body == other.name.encode(), r
    carrier.close()
    # its upstream connection was closed after the response, not pooled
    wire.wait_until(lambda: victim.conns_active == 0, 2.0,
                    what="the draining backend's connection closed")

    # the drain ends with the last connection, long before the 10 s delay
    u.wait_log(r"backend gone pool=blue backend=%s address=%s" % (victim.name,
                                                                   re.escape(victim.address)),
               3.0)
    assert u.backend_status("blue", victim.name) is None
    names = [b["name"] for p in u.status_json()["pools"] for b in p["backends"]]
    assert names == [other.name], names
    assert not u.log_lines("backend drain expired"), u.log()
    m = u.metrics()
    assert not m.find("usher_backend_state", backend=victim.name), "gone backend still in /metrics"


def _broken(text, kind):
    """(broken YAML text, line, column, what the message must mention)."""
    lines = text.split("\n")
    if kind == "unknown_key":
        i = lines.index("shutdown:")
        lines.insert(i + 1, "  tiemout: 3s")
        return "\n".join(lines), i + 2, 3, "tiemout"
    i = next(n for n, l in enumerate(lines) if l.strip().startswith("drain_delay:"))
    lines[i] = lines[i].replace("drain_delay: 0s", "drain_delay: 5 s")
    return "\n".join(lines), i + 1, lines[i].index("5 s") + 1, "drain_delay"


@pytest.mark.parametrize("kind", ["unknown_key", "bad_duration"])
def test_broken_config_on_reload_keeps_old_config(backend_factory, usher_factory, kind):
    b = backend_factory("blue-1")
    g = backend_factory("green-1")
    u = usher_factory(pools={"blue": [b], "green": [g]}, split={"blue": 100, "green": 0})
    ka = RawConn(u.port)
    assert ka.request("GET", "/").body == b"blue-1"

    # the broken file would send everything to green if it were applied
    flipped = config_for(u, {"blue": [b], "green": [g]}, split={"blue": 0, "green": 100})
    text, line, col, key = _broken(usher_proc.to_yaml(flipped), kind)
    u.reload(text)
    wire.wait_until(lambda: u.log_lines("reload failed"), 5.0, what="reload failed")
    errs = u.log_lines("config error")
    assert len(errs) == 1, u.log()
    msg = errs[0]["kv"]["error"]
    assert msg.startswith("%s:%d:%d: " % (u.cfg_path, line, col)), (msg, line, col)
    assert key in msg, msg
    assert errs[0]["level"] == "error"
    (failed,) = u.log_lines("reload failed")
    assert failed["kv"]["generation"] == "1", failed
    assert not u.log_lines("reload done") and not u.log_lines("reload change")

    # the old config keeps serving, same routing, same connections
    for _ in range(5):
        r = ka.request("GET", "/")
        assert r.status == 200 and r.body == b"blue-1", r
    for _ in range(5):
        st, _, body = wire.http_get(u.port, "/")
        assert st == 200 and body == b"blue-1", (st, body)
    assert g.reqs() == []
    m = u.metrics()
    assert m.get("usher_config_reloads_total", result="error") == 1
    assert (m.get("usher_config_reloads_total", result="ok") or 0) == 0
    assert m.get("usher_config_generation") == 1
    st = u.status_json()
    assert st["generation"] == 1 and st["state"] == "running" and st["ready"], st
    assert st["reloads"] == {"ok": 0, "error": 1}, st["reloads"]
    assert st["listeners"][0]["pools"] == {"blue": 100, "green": 0}
    assert u.admin_get("/ready")[0] == 200

    # fixing the file and reloading again works
    assert reload_and_wait(u, flipped) == ("done", 2)
    r = ka.request("GET", "/")
    assert r.status == 200 and r.body == b"green-1", r
    ka.close()
    assert u.status_json()["reloads"] == {"ok": 1, "error": 1}


def test_listener_added_and_removed_by_reload(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    web_port = u.port
    web = RawConn(web_port)
    assert web.request("GET", "/").status == 200
    web_local = web.local_port()

    # add listener "api"
    api_bind = "127.0.0.1:%d" % wire.free_port()
    two = [{"name": "web", "pools": {"blue": 100}},
           {"name": "api", "bind": api_bind, "pools": {"blue": 100}}]
    assert reload_and_wait(u, config_for(u, {"blue": [b]}, listeners=two)) == ("done", 2)
    api_port = u.ports["api"]
    u.wait_log(r"listener started name=api bind=%s" % re.escape(api_bind), 1.0)
    st, _, body = wire.http_get(api_port, "/")
    assert st == 200 and body == b"blue-1"
    listeners = {l["name"]: l for l in u.status_json()["listeners"]}
    assert set(listeners) == {"web", "api"} and listeners["api"]["open"], listeners
    r = web.request("GET", "/")                      # the web socket was kept
    assert r.status == 200 and web.local_port() == web_local, r

    # established connections on api: one busy, one idle
    busy = RawConn(api_port, timeout=10.0)
    assert busy.request("GET", "/").status == 200
    idle = RawConn(api_port)
    assert idle.request("GET", "/").status == 200
    n = len(b.reqs())
    slow = slow_request(api_port, 1500, conn=busy)
    b.wait_requests(n + 1, 3.0)

    # remove api
    assert reload_and_wait(u, config_for(u, {"blue": [b]},
                                         listeners=[{"name": "web",
                                                     "pools": {"blue": 100}}])) == ("done", 3)
    u.wait_log(r"listener removed name=api", 1.0)
    assert connect_refused(api_port), "the removed listener still accepts"
    assert idle.wait_closed(2.0) == b"", "idle connection on the removed listener got bytes"
    idle.close()
    assert slow.done_at is None, "the in-flight request ended before its response was due"
    r = web.request("GET", "/")                      # web is untouched
    assert r.status == 200 and not r.has_token("connection", "close"), r
    r, closed = slow.join(5.0)
    assert r.status == 200 and r.body == b"blue-1" and r.complete, r
    assert r.has_token("connection", "close") and closed, r.raw_head
    busy.close()
    # and web keeps serving on the same connection and on new ones
    assert web.request("GET", "/").status == 200
    assert wire.http_get(web_port, "/")[0] == 200
    web.close()
    open_listeners = [l["name"] for l in u.status_json()["listeners"] if l["open"]]
    assert open_listeners == ["web"], open_listeners
    assert u.running()


def test_reload_with_new_listener_on_busy_port_fails_whole(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    g = backend_factory("green-1")
    u = usher_factory(pools={"blue": [b], "green": [g]}, split={"blue": 100, "green": 0})
    # the new listener's port is taken by another socket: the reload fails as a
    # whole (the valid split change in the same file is not applied either)
    busy = g.port
    bad = [{"name": "web", "pools": {"blue": 0, "green": 100}},
           {"name": "api", "bind": "127.0.0.1:%d" % busy, "pools": {"blue": 100}}]
    kind, gen = reload_and_wait(u, config_for(u, {"blue": [b], "green": [g]}, listeners=bad))
    assert (kind, gen) == ("failed", 1), u.log()
    u.wait_log(r"listener failed name=api bind=127\.0\.0\.1:%d" % busy, 1.0)
    for _ in range(5):
        st, _, body = wire.http_get(u.port, "/")
        assert st == 200 and body == b"blue-1", (st, body)
    st = u.status_json()
    assert st["generation"] == 1 and st["reloads"] == {"ok": 0, "error": 1}, st
    assert [l["name"] for l in st["listeners"]] == ["web"], st["listeners"]
    assert u.metrics().get("usher_config_reloads_total", result="error") == 1


def test_backend_readded_while_draining_keeps_its_connection(backend_factory, usher_factory):
    b1 = backend_factory("blue-1")
    b2 = backend_factory("blue-2")
    opts = {"blue": {"deregistration_delay": "10s"}}
    u = usher_factory(pools={"blue": [b1, b2]}, pool_opts=opts)
    slow = slow_request(u.port, 1500, check_close=False)
    victim = wire.wait_until(lambda: next((b for b in (b1, b2) if b.reqs("/slow")), None), 3.0,
                             what="the slow request at a backend")
    other = b2 if victim is b1 else b1
    assert reload_and_wait(u, config_for(u, {"blue": [other]}, pool_opts=opts)) == ("done", 2)
    assert u.backend_status("blue", victim.name)["state"] == "draining"
    assert reload_and_wait(u, config_for(u, {"blue": [b1, b2]}, pool_opts=opts)) == ("done", 3)
    bs = u.backend_status("blue", victim.name)
    assert bs["state"] == "healthy" and bs["in_config"] and bs["inflight_requests"] == 1, bs
    assert bs["drain_deadline_ms"] is None, bs
    r, _ = slow.join(5.0)
    assert r.status == 200 and r.body == victim.name.encode(), r
    seen = set()
    with RawConn(u.port) as c:
        for _ in range(6):
            r = c.request("GET", "/")
            assert r.status == 200, r
            seen.add(r.body)
    assert seen == {b"blue-1", b"blue-2"}, seen
    time.sleep(0.3)
    assert not u.log_lines("backend gone"), u.log()
    assert u.backend_status("blue", victim.name)["state"] == "healthy"


def test_removed_pool_websocket_runs_until_deregistration_delay(backend_factory, usher_factory):
    """The last step of a blue/green switch: the blue pool leaves the config.
    Its backend drains: a WebSocket still open on it keeps flowing until the
    pool's deregistration_delay, is then closed, and the backend is gone."""
    aio = AsyncioThread()
    ws_backend = WsEchoServer("blue-ws", aio=aio).start()
    ws = None
    try:
        g = backend_factory("green-1")
        blue = [{"name": "blue-ws", "address": ws_backend.address}]
        opts = {"blue": {"deregistration_delay": "1500ms"}}
        sd = {"tunnel_close_grace": "0s"}  # no close frame: runs to the delay
        u = usher_factory(pools={"blue": blue, "green": [g]}, split={"blue": 100, "green": 0},
                          pool_opts=opts, shutdown=sd)
        ws = WsClient(u.port, aio=aio)
        assert ws.echo("on blue") == "on blue"
        assert reload_and_wait(u, config_for(u, {"blue": blue, "green": [g]},
                                             split={"blue": 0, "green": 100},
                                             pool_opts=opts, shutdown=sd)) == ("done", 2)
        assert wire.http_get(u.port, "/")[2] == b"green-1"
        t0 = time.monotonic()
        assert reload_and_wait(u, config_for(u, {"green": [g]}, shutdown=sd)) == ("done", 3)
        assert ws.echo("draining") == "draining"
        bs = u.backend_status("blue", "blue-ws")
        assert bs["state"] == "draining" and not bs["in_config"], bs
        assert bs["active_connections"] == 1 and bs["drain_deadline_ms"] is not None, bs
        for i in range(5):
            assert ws.echo("still %d" % i) == "still %d" % i
            time.sleep(0.1)
        u.wait_log(r"backend drain expired pool=blue backend=blue-ws closing=1", 3.0)
        elapsed = time.monotonic() - t0
        assert 1.3 <= elapsed < 2.5, "drain expired %.2fs after the reload" % elapsed
        u.wait_log(r"backend gone pool=blue backend=blue-ws", 2.0)
        with pytest.raises(Exception):
            ws.echo("after", timeout=1.0)
        assert u.backend_status("blue", "blue-ws") is None
        assert wire.http_get(u.port, "/")[2] == b"green-1"
        # the removal is logged like any other backend removed by a reload
        removed = [(l["kv"]["backend"], l["kv"]["connections"])
                   for l in u.log_lines("backend removed")]
        assert removed == [("blue-ws", "1")], u.log()
    finally:
        if ws is not None:
            ws.close()
        ws_backend.stop()
        aio.close()
