"""WebSocket through usher: the upgrade is forwarded, the session becomes a
byte tunnel counted against its backend; a draining backend (503 or removed
by a reload) keeps its sessions until deregistration_delay, then usher closes
them ("backend drain expired ... closing=N"); a removed backend without
connections is gone at once; a drain completes early when its last session
ends."""

import time

import usher_proc
import wire
from clients import Pinger, WsClient
from servers import WsEchoServer
from usher_proc import hc_opts, state_transitions, wait_state

DELAY = 2.0       # deregistration_delay of the pool, seconds
# How early / late usher may close a session relative to the delay: the
# check that starts the drain is timed on our side when answered, the close
# is seen by a client pinging every 50 ms.
EARLY, LATE = 0.15, 0.6


def _cfg(servers_, delay="2s", hc=True):
    opts = {"deregistration_delay": delay}
    if hc:
        opts["health_check"] = hc_opts(interval="200ms", timeout="100ms")
    # tunnel_close_grace 0s: no close frame, the tunnel runs to the delay
    # (close frames: test_websocket_close.py)
    return usher_proc.make_config(pools={"ws": servers_}, pool_opts={"ws": opts},
                            shutdown={"tunnel_close_grace": "0s"})


def _without(cfg, *names):
    """<cfg> with the named backends removed from its one pool."""
    new = dict(cfg)
    pool = cfg["pools"][0]
    new["pools"] = [dict(pool, backends=[b for b in pool["backends"] if b["name"] not in names])]
    return new


def _ws(s, u, path="/echo"):
    return s.add(WsClient("ws://127.0.0.1:%d%s" % (u.port, path)))


def _start(s, names):
    return [s.add(WsEchoServer(n, tag=True).start()) for n in names]


def _session_on(s, u, backends):
    """A session and the WsEchoServer it landed on."""
    c = _ws(s, u)
    name = c.exchange("hello").split(":", 1)[0]
    return c, next(b for b in backends if b.name == name)


def test_websocket_echo_counted_against_backend(servers, usher_factory):
    w1, = _start(servers, ["ws-1"])
    u = usher_factory(_cfg([w1]))
    c = _ws(servers, u)
    for i in range(50):
        assert c.exchange("m%d" % i) == "ws-1:m%d" % i
    big = "x" * 200000
    assert c.exchange(big, timeout=5.0) == "ws-1:" + big
    st = u.backend_status("ws", "ws-1")
    assert st["active_connections"] == 1, st
    assert w1.sessions_active == 1
    c.close()
    wire.wait_until(lambda: u.backend_status("ws", "ws-1")["active_connections"] == 0, 2.0,
                    what="tunnel released after the client closed")
    wire.wait_until(lambda: w1.sessions_active == 0, 2.0, what="backend session ended")


def test_websocket_survives_503_drain_until_delay_then_closed(servers, usher_factory):
    ws = _start(servers, ["ws-1", "ws-2"])
    u = usher_factory(_cfg(ws))
    for w in ws:
        wait_state(u, "ws", w.name, "healthy")
    c, mine = _session_on(servers, u, ws)
    other = next(w for w in ws if w is not mine)
    p = servers.add(Pinger(c, every=0.05).start())
    time.sleep(0.3)

    t_flip = time.monotonic()
    mine.health_status = 503
    st = wait_state(u, "ws", mine.name, "draining", timeout=2.0)
    assert st["active_connections"] == 1 and st["drain_deadline_ms"] is not None, st
    assert 0 < st["drain_deadline_ms"] <= DELAY * 1000, st
    # new sessions go to the other backend, the old one keeps flowing
    c2, where = _session_on(servers, u, ws)
    assert where is other
    failed = p.wait_failed(DELAY + 3.0)
    t503 = mine.first_health_answer(503, after=t_flip)
    assert failed is not None, "session still open %.1fs after the drain started" % (
        time.monotonic() - t503)
    print("\nWS 503 drain: session closed %.2fs after the first 503 (delay %.1fs), %d messages, "
          "last ok at +%.2fs; error %s" % (failed - t503, DELAY, p.ok, p.last_ok - t503, p.error))
    assert DELAY - EARLY <= failed - t503 <= DELAY + LATE, (failed - t503, p.error)
    assert p.last_ok - t503 >= DELAY - EARLY - 0.1, "session stopped flowing before the delay"
    m = u.wait_log(r"backend drain expired pool=ws backend=%s closing=1\b" % mine.name, 1.0)
    assert m
    wire.wait_until(lambda: u.backend_status("ws", mine.name)["active_connections"] == 0, 1.0,
                    what="tunnel released")
    # the session on the healthy backend is untouched
    assert c2.exchange("still") == "%s:still" % other.name
    assert u.backend_status("ws", mine.name)["state"] == "draining"


def test_websocket_removed_backend_drains_then_gone_idle_one_gone_at_once(servers,
                                                                         usher_factory):
    ws = _start(servers, ["ws-1", "ws-2", "ws-3"])
    cfg = _cfg(ws)
    u = usher_factory(cfg)
    for w in ws:
        wait_state(u, "ws", w.name, "healthy")
    c, mine = _session_on(servers, u, ws)
    idle = next(w for w in ws if w is not mine)
    keep = next(w for w in ws if w is not mine and w is not idle)
    assert idle.sessions_active == 0
    p = servers.add(Pinger(c, every=0.05).start())
    time.sleep(0.2)

    new_cfg = _without(cfg, mine.name, idle.name)
    t_reload = time.monotonic()
    u.reload(new_cfg)
    u.wait_log(r"reload done generation=2", 2.0)
    # the idle backend has nothing to wait for: gone at once
    wait_state(u, "ws", idle.name, None, timeout=0.5)
    t_gone_idle = time.monotonic() - t_reload
    u.wait_log(r"backend gone pool=ws backend=%s " % idle.name, 0.5)
    u.wait_log(r"backend removed pool=ws backend=%s .*connections=1\b" % mine.name, 0.5)
    st = u.backend_status("ws", mine.name)
    assert st["state"] == "draining" and st["in_config"] is False, st
    assert st["active_connections"] == 1 and st["drain_deadline_ms"] is not None, st

    failed = p.wait_failed(DELAY + 3.0)
    assert failed is not None, "session still open after the delay"
    print("\nWS removal: idle backend gone after %.3fs; session closed %.2fs after the reload "
          "(delay %.1fs), %d messages" % (t_gone_idle, failed - t_reload, DELAY, p.ok))
    assert DELAY - EARLY <= failed - t_reload <= DELAY + LATE, (failed - t_reload, p.error)
    assert p.last_ok - t_reload >= DELAY - EARLY - 0.1
    u.wait_log(r"backend drain expired pool=ws backend=%s closing=1\b" % mine.name, 1.0)
    u.wait_log(r"backend gone pool=ws backend=%s " % mine.name, 1.0)
    wait_state(u, "ws", mine.name, None, timeout=1.0)
    c3, where = _session_on(servers, u, ws)
    assert where is keep
    assert [b["name"] for b in u.status_json()["pools"][0]["backends"]] == [keep.name]


def test_websocket_drain_completes_early_when_last_session_ends(servers, usher_factory):
    ws = _start(servers, ["ws-1", "ws-2"])
    cfg = _cfg(ws, delay="30s")
    u = usher_factory(cfg)
    for w in ws:
        wait_state(u, "ws", w.name, "healthy")
    c, mine = _session_on(servers, u, ws)
    keep = next(w for w in ws if w is not mine)
    new_cfg = _without(cfg, mine.name)
    u.reload(new_cfg)
    u.wait_log(r"reload done generation=2", 2.0)
    st = wait_state(u, "ws", mine.name, "draining", timeout=1.0)
    assert st["drain_deadline_ms"] > 20000, st
    for i in range(5):
        assert c.exchange("d%d" % i) == "%s:d%d" % (mine.name, i)
    time.sleep(0.5)
    t_close = time.monotonic()
    c.close()
    wait_state(u, "ws", mine.name, None, timeout=1.0)
    print("\nWS drain completed %.3fs after the last session closed" % (time.monotonic() - t_close))
    u.wait_log(r"backend gone pool=ws backend=%s " % mine.name, 0.5)
    assert not u.log_lines("backend drain expired")


def test_websocket_503_then_healthy_again_keeps_session(servers, usher_factory):
    """A backend that drained on 503 and passes healthy_threshold checks
    before the delay ends is back in service: its session is not cut."""
    ws = _start(servers, ["ws-1", "ws-2"])
    u = usher_factory(_cfg(ws))
    for w in ws:
        wait_state(u, "ws", w.name, "healthy")
    c, mine = _session_on(servers, u, ws)
    p = servers.add(Pinger(c, every=0.05).start())
    t_flip = time.monotonic()
    mine.health_status = 503
    wait_state(u, "ws", mine.name, "draining", timeout=2.0)
    m = u.metrics()
    remaining = m.get("usher_backend_drain_remaining_seconds", pool="ws", backend=mine.name)
    assert remaining is not None and 0 < remaining <= DELAY, remaining
    time.sleep(0.3)
    mine.health_status = 200
    st = wait_state(u, "ws", mine.name, "healthy", timeout=2.0)
    assert st["drain_deadline_ms"] is None, st
    # well past the delay counted from the first 503
    time.sleep(max(0.0, t_flip + DELAY + 0.8 - time.monotonic()))
    assert p.failed_at is None, "session cut although the backend came back: %s" % p.error
    assert p.last_ok > t_flip + DELAY + 0.5
    assert not u.log_lines("backend drain expired")
    assert ("draining", "healthy", "ok") in state_transitions(u, mine.name)


def test_websocket_readded_while_draining_keeps_session(servers, usher_factory):
    """A backend removed by a reload and re-added by the next one before its
    delay ends becomes a normal backend again and keeps its session."""
    ws = _start(servers, ["ws-1", "ws-2"])
    cfg = _cfg(ws)
    u = usher_factory(cfg)
    for w in ws:
        wait_state(u, "ws", w.name, "healthy")
    c, mine = _session_on(servers, u, ws)
    p = servers.add(Pinger(c, every=0.05).start())
    t_remove = time.monotonic()
    u.reload(_without(cfg, mine.name))
    u.wait_log(r"reload done generation=2", 2.0)
    st = wait_state(u, "ws", mine.name, "draining", timeout=1.0)
    assert st["in_config"] is False and st["active_connections"] == 1, st
    time.sleep(0.5)
    u.reload(cfg)
    u.wait_log(r"reload done generation=3", 2.0)
    st = wait_state(u, "ws", mine.name, "healthy", timeout=1.0)
    assert st["in_config"] is True and st["drain_deadline_ms"] is None, st
    time.sleep(max(0.0, t_remove + DELAY + 0.8 - time.monotonic()))
    assert p.failed_at is None, "session cut although the backend was re-added: %s" % p.error
    assert p.last_ok > t_remove + DELAY + 0.5
    assert not u.log_lines("backend drain expired")
    assert not u.log_lines("backend gone")
    st = u.backend_status("ws", mine.name)
    assert st["state"] == "healthy" and st["active_connections"] == 1, st
