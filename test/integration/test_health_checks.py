"""Active health checks and the backend state machine (DESIGN.md, "Backend
states and what each one means for traffic"): a 503 drains a backend within
one check period while its in-flight request completes; thresholds of
failures and successes; a flapping backend costs no client an error; /ready
waits for the first health round."""

import threading
import time

import usher_proc
import wire
from load import Load
from usher_proc import backend_state, hc_opts, state_transitions, wait_field, wait_state
from wire import RawConn

# Slack on top of a computed bound: scheduling of the Python backends and
# clients on a shared machine.
SLACK = 0.15


def _cfg(backends, hc, delay="5s", **kw):
    return usher_proc.make_config(pools={"blue": backends},
                            pool_opts={"blue": {"deregistration_delay": delay, "health_check": hc}},
                            **kw)


def _get_all(port, n, path="/"):
    """n keep-alive GETs; every one must be 200. Returns the bodies."""
    out = []
    with RawConn(port) as c:
        for i in range(n):
            r = c.request("GET", "%s?i=%d" % (path, i))
            assert r.status == 200, "request %d: %r" % (i, r)
            out.append(r.text())
    return out


def _state_metric(u, backend, state):
    return u.metrics().get("usher_backend_state", pool="blue", backend=backend, state=state)


def test_503_stops_new_requests_within_one_period_inflight_completes(servers, usher_factory):
    interval, timeout = 0.25, 0.12
    b1 = servers.backend("blue-1")
    b2 = servers.backend("blue-2")
    u = usher_factory(_cfg([b1, b2], hc_opts(interval="250ms", timeout="120ms")))
    wait_state(u, "blue", "blue-1", "healthy")
    wait_state(u, "blue", "blue-2", "healthy")

    load = servers.add(Load(u.port, threads=2, pause=0.002).start())
    time.sleep(0.3)

    # A slow request in flight on blue-1 when the flip happens (round robin:
    # at most a few tries until one lands there).
    def run_slow(c, res):
        try:
            res["r"] = c.request("GET", "/slow?ms=1500", timeout=5.0)
        except Exception as e:  # pylint: disable=broad-except
            res["err"] = e

    conns, threads = [], []
    slow = None
    for _ in range(4):
        c = RawConn(u.port, timeout=5.0)
        conns.append(c)
        res = {}
        t = threading.Thread(target=run_slow, args=(c, res), daemon=True)
        t.start()
        threads.append(t)
        wire.wait_until(lambda: len(b1.reqs("/slow")) + len(b2.reqs("/slow")) >= len(threads),
                        2.0, what="slow request at a backend")
        if b1.reqs("/slow"):
            slow, slow_thread = res, t
            break
    assert slow is not None, "no slow request reached blue-1 in 4 tries"

    t_flip = time.monotonic()
    b1.health_status = 503
    st = wait_state(u, "blue", "blue-1", "draining", timeout=2.0)
    assert st["drain_deadline_ms"] is not None and st["active_connections"] >= 1, st
    assert _state_metric(u, "blue-1", "draining") == 1
    assert _state_metric(u, "blue-1", "healthy") == 0

    # keep the load on for a while after the drain
    time.sleep(max(0.0, t_flip + 1.0 - time.monotonic()))
    load.stop()
    for t in threads:
        t.join(5.0)
    for c in conns:
        c.close()

    assert not slow_thread.is_alive(), "slow request still running"
    assert "err" not in slow, "slow request failed: %r" % slow.get("err")
    r = slow["r"]
    assert r.status == 200 and r.body == b"blue-1", "in-flight request on the draining backend: %r" % r

    t503 = b1.first_health_answer(503, after=t_flip)
    assert t503 is not None, "blue-1 never answered a check with 503"
    new = [t for t in b1.request_times("/") if t >= t_flip]
    last = max(new) if new else None
    msg = ("503 at +%.0f ms after the flip; last new request at blue-1 %s; load %s"
           % ((t503 - t_flip) * 1000,
              ("%+.1f ms after the first 503" % ((last - t503) * 1000)) if last else "none",
              load.summary()))
    print("\nMEASURE first-503 -> last new request at the backend: %s ms  (%s)"
          % ("%.1f" % ((last - t503) * 1000) if last else "n/a", msg))
    assert t503 - t_flip <= interval * 1.1 + timeout + SLACK, msg
    if last is not None:
        # a request already being forwarded when the 503 arrived may land just after it
        assert last - t503 <= 0.05, msg
        assert last - t_flip <= interval * 1.1 + timeout + SLACK, msg
    assert not load.errors, load.summary()
    assert load.ok.get("blue-2", 0) > 0
    assert len([t for t in b2.request_times("/") if t > t503]) > 10, "blue-2 got no load after the drain"
    assert ("healthy", "draining", "503") in state_transitions(u, "blue-1"), state_transitions(u)

    # the upstream connection of the finished slow request is closed, not pooled
    wire.wait_until(lambda: b1.conns_active == 0, 2.0,
                    what="usher to close every connection to the draining blue-1")


def test_thresholds_out_of_rotation_and_back(servers, usher_factory):
    b1 = servers.backend("blue-1")
    b2 = servers.backend("blue-2")
    u = usher_factory(_cfg([b1, b2], hc_opts(interval="300ms", timeout="120ms", healthy=2,
                                              unhealthy=3)))
    wait_state(u, "blue", "blue-1", "healthy")
    assert ("checking", "healthy", "ok") in state_transitions(u, "blue-1")

    b1.health_status = 500

    # unhealthy_threshold - 1 failures: still healthy and still served
    st = wait_field(u, "blue", "blue-1", "failure_streak", 2)
    before = len(b1.reqs())
    bodies = _get_all(u.port, 6)
    after_st = u.backend_status("blue", "blue-1")
    assert st["failure_streak"] == 2 and st["state"] == "healthy", st
    assert after_st["failure_streak"] == 2, \
        "the third check came before the requests were sent; rerun: %r" % after_st
    assert len(b1.reqs()) - before >= 2 and "blue-1" in bodies, bodies

    # the threshold-th failure takes it out
    st = wait_state(u, "blue", "blue-1", "unhealthy", timeout=1.0)
    assert st["failure_streak"] >= 3 and st["last_result"] == "bad status", st
    assert st["last_status"] == 500, st
    assert ("healthy", "unhealthy", "bad status") in state_transitions(u, "blue-1")
    assert _state_metric(u, "blue-1", "unhealthy") == 1
    assert _state_metric(u, "blue-1", "healthy") == 0
    assert u.metrics().get("usher_health_checks_total", pool="blue", backend="blue-1",
                           result="fail") >= 3
    before = len(b1.reqs())
    bodies = _get_all(u.port, 10)
    assert set(bodies) == {"blue-2"} and len(b1.reqs()) == before, bodies

    # healthy_threshold successes bring it back; one is not enough
    b1.health_status = 200
    st = wait_field(u, "blue", "blue-1", "success_streak", 1)
    if st["success_streak"] == 1:
        assert st["state"] == "unhealthy", st
        bodies = _get_all(u.port, 4)
        if u.backend_status("blue", "blue-1")["success_streak"] == 1:
            assert set(bodies) == {"blue-2"}, bodies
    st = wait_state(u, "blue", "blue-1", "healthy", timeout=1.0)
    assert st["success_streak"] >= 2, st
    assert ("unhealthy", "healthy", "ok") in state_transitions(u, "blue-1")
    assert _state_metric(u, "blue-1", "healthy") == 1
    assert _state_metric(u, "blue-1", "unhealthy") == 0
    bodies = _get_all(u.port, 6)
    assert bodies.count("blue-1") == 3, bodies


def test_flapping_backend_costs_clients_nothing(servers, usher_factory):
    b1 = servers.backend("blue-1")
    b2 = servers.backend("blue-2")
    u = usher_factory(_cfg([b1, b2], hc_opts(interval="150ms", timeout="80ms", healthy=2,
                                              unhealthy=2), delay="2s"))
    wait_state(u, "blue", "blue-1", "healthy")
    # healthy -> draining -> healthy -> unhealthy -> healthy, about every 1.2 s
    b1.health_pattern = [503, 200, 200, 500, 500, 200, 200]
    load = servers.add(Load(u.port, threads=3, path="/slow?ms=15", pause=0.0).start())
    time.sleep(3.0)
    load.stop()
    b1.health_pattern = None
    tr = state_transitions(u, "blue-1")
    tos = [t for _, t, _ in tr]
    print("\nflapping: transitions %r; load %s" % (tr, load.summary()))
    assert tos.count("draining") >= 2 and tos.count("unhealthy") >= 2, tr
    assert tos.count("healthy") >= 4, tr
    assert load.ok.get("blue-1", 0) > 0 and load.ok.get("blue-2", 0) > 0, load.summary()
    assert not load.errors, load.summary()


def test_ready_waits_for_first_health_round(servers, usher_factory):
    fast = servers.backend("blue-1")
    slow = servers.backend("blue-2")
    slow.health_delay = 0.5   # every check of blue-2 takes 500 ms
    cfg = _cfg([fast, slow], hc_opts(interval="5s", timeout="2s"))
    t0 = time.monotonic()
    u = usher_factory(cfg, wait_ready=False)

    def live():
        try:
            return u.admin_get("/live", timeout=1.0)[0] == 200
        except OSError:
            return False
    wire.wait_until(live, 3.0, interval=0.01, what="/live 200")

    seen_503 = 0
    st_starting = None
    t_ready = None
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        code, body, _ = u.admin_get("/ready", timeout=1.0)
        now = time.monotonic()
        if code == 200:
            t_ready = now
            break
        assert code == 503, (code, body)
        seen_503 += 1
        if st_starting is None:
            st_starting = u.status_json()
        time.sleep(0.01)
    assert t_ready is not None, "/ready never answered 200; log:\n%s" % u.log()
    t_answer = slow.first_health_answer(200)
    print("\n/ready: %d x 503, 200 after %.0f ms (slow check answered after %.0f ms)"
          % (seen_503, (t_ready - t0) * 1000, ((t_answer or t0) - t0) * 1000))
    assert seen_503 >= 5, "expected /ready 503 during the slow first check"
    assert st_starting["state"] == "starting" and st_starting["ready"] is False, st_starting
    assert t_answer is not None and t_ready >= t_answer - 0.005, \
        "/ready 200 before the slow backend's first check was answered"
    assert t_ready - t_answer < 0.5, "/ready late after the first round completed"
    assert slow.health_requests == 1 and fast.health_requests == 1
    st = u.status_json()
    assert st["state"] == "running" and st["ready"] is True, st
    assert backend_state(u, "blue", "blue-2") == "healthy"
    u.wait_log(r" ready generation=1\b", timeout=1.0)
