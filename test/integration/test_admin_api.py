"""The runtime API (DESIGN.md "Runtime control"): every endpoint's success
and error statuses, token and loopback rules, drain records, overrides
across a reload and across a restart with admin.state_file."""

import json
import os
import signal
import threading
import time

import pytest

import usher_proc
import wire
from admin_util import admin, backend_of, listener_of, write_token
from wire import RawConn


@pytest.fixture
def bg(backend_factory, usher_factory):
    """Listener web -> blue (blue-1, blue-2) 100 / green (green-1) 0."""
    b1, b2 = backend_factory("blue-1"), backend_factory("blue-2")
    g1 = backend_factory("green-1")
    u = usher_factory(pools={"blue": [b1, b2], "green": [g1]}, split={"blue": 100, "green": 0},
                      pool_opts={"blue": {"deregistration_delay": "20s"}})
    return u


def names_served(u, n):
    out = []
    with RawConn(u.port) as c:
        for _ in range(n):
            r = c.request("GET", "/")
            assert r.status == 200, r
            out.append(r.body.decode())
    return out


# --- /status shape -------------------------------------------------------------

def test_status_has_every_design_field(bg):
    st = bg.status_json()
    for k in ("state", "version", "pid", "generation", "workers", "upgrade", "fleet",
              "listeners", "pools"):
        assert k in st, k
    # a number of event loops; which one (config, auto, USHER_TEST_WORKERS) is test_workers.py's
    assert isinstance(st["workers"], int) and st["workers"] >= 1, st["workers"]
    assert st["upgrade"] is None and st["fleet"] is None
    assert st["pid"] == bg.pid
    l = listener_of(st, "web")
    assert l["pools"] == {"blue": 100, "green": 0} and l["split_override"] is None
    b = backend_of(st, "blue", "blue-1")
    for k in ("name", "state", "reason", "weight", "weight_configured", "weight_override",
              "active_connections", "inflight_requests", "success_streak", "failure_streak",
              "drain"):
        assert k in b, k
    assert b["reason"] is None and b["drain"] is None and b["weight_override"] is None
    assert b["weight"] == b["weight_configured"] == 1


# --- backend drain / ready -------------------------------------------------------

def test_backend_drain_and_ready(bg):
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/drain?deadline=5s")
    assert st == 200, body
    assert body["name"] == "blue-1" and body["state"] == "draining" and body["reason"] == "admin"
    d = body["drain"]
    assert d["reason"] == "admin"
    for k in ("started_ms", "deadline_ms", "remaining_ms", "connections", "inflight",
              "oldest_connection_age_ms", "complete"):
        assert k in d, k
    assert 4500 <= d["deadline_ms"] - d["started_ms"] <= 5000
    assert set(names_served(bg, 6)) == {"blue-2"}
    # idempotent: a second drain is a 200 that changes nothing
    st, again, _ = admin(bg, "POST", "/backends/blue/blue-1/drain")
    assert st == 200 and again["drain"]["started_ms"] == d["started_ms"]
    assert bg.wait_log(r"admin drain .*backend=blue-1")
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/ready")
    assert st == 200 and body["state"] == "healthy" and body["drain"] is None
    assert set(names_served(bg, 6)) == {"blue-1", "blue-2"}
    # ready on a backend that is not admin-drained: 200, nothing changes
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-2/ready")
    assert st == 200 and body["state"] == "healthy"


def test_admin_drain_record_counts_a_slow_request(bg):
    done = []
    threads = []

    def inflight(name):
        return backend_of(bg.status_json(), "blue", name)["inflight_requests"]

    # round robin over two backends, but with several workers two new
    # connections need not alternate: one slow request at a time until one is on blue-1
    for n in range(1, 9):
        t = threading.Thread(target=lambda: done.append(
            wire.http_get(bg.port, "/slow?ms=1500", timeout=10)[0]))
        t.start()
        threads.append(t)
        wire.wait_until(lambda: inflight("blue-1") + inflight("blue-2") >= n, 3.0,
                        what="slow request %d in flight" % n)
        if inflight("blue-1") == 1:
            break
    assert inflight("blue-1") == 1, "no slow request on blue-1 after %d" % len(threads)
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/drain?deadline=10s")
    assert st == 200
    d = body["drain"]
    assert d["connections"] >= 1 and d["inflight"] == 1 and d["complete"] is False
    assert 8000 < d["remaining_ms"] <= 10000
    time.sleep(0.3)
    d2 = backend_of(bg.status_json(), "blue", "blue-1")["drain"]
    assert d2["remaining_ms"] < d["remaining_ms"]
    assert d2["oldest_connection_age_ms"] >= 250
    for t in threads:
        t.join(5)
    assert done == [200] * len(threads)
    d3 = wire.wait_until(lambda: (lambda b: b["drain"] if b["drain"]["complete"] else None)(
        backend_of(bg.status_json(), "blue", "blue-1")), 3.0, what="drain complete")
    assert d3["connections"] == 0 and d3["remaining_ms"] == 0
    b = backend_of(bg.status_json(), "blue", "blue-1")
    assert b["state"] == "draining", "an admin drain stays draining once complete"
    m = bg.metrics()
    assert m.get("usher_backend_drain_remaining_seconds", pool="blue", backend="blue-1") == 0
    assert m.get("usher_backend_drain_connections", pool="blue", backend="blue-1") == 0


def test_admin_drain_holds_against_passing_checks(backend_factory, usher_factory):
    b1, b2 = backend_factory("blue-1"), backend_factory("blue-2")
    hc = {"protocol": "http", "path": "/healthz", "interval": "100ms", "timeout": "80ms",
          "healthy_threshold": 1, "unhealthy_threshold": 1}
    u = usher_factory(pools={"blue": [b1, b2]}, pool_opts={"blue": {"health_check": hc}})
    assert admin(u, "POST", "/backends/blue/blue-1/drain")[0] == 200
    time.sleep(0.6)  # several passing checks
    b = u.backend_status("blue", "blue-1")
    assert b["state"] == "draining" and b["reason"] == "admin"
    assert b["success_streak"] >= 2
    # a 503 drain is not the API's to end
    b2.health_status = 503
    wire.wait_until(lambda: u.backend_status("blue", "blue-2")["state"] == "draining", 3.0)
    st, body, _ = admin(u, "POST", "/backends/blue/blue-2/ready")
    assert st == 200 and body["state"] == "draining" and body["reason"] == "health_503"
    assert admin(u, "POST", "/backends/blue/blue-1/ready")[1]["state"] == "healthy"


def test_backend_errors(bg):
    st, body, _ = admin(bg, "POST", "/backends/blue/nope/drain")
    assert st == 404 and "nope" in body["error"]
    st, body, _ = admin(bg, "POST", "/backends/red/blue-1/drain")
    assert st == 404 and "red" in body["error"]
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/drain?deadline=soon")
    assert st == 400 and "deadline" in body["error"]
    assert bg.backend_status("blue", "blue-1")["state"] == "healthy", "a 400 changes nothing"
    st, body, h = admin(bg, "GET", "/backends/blue/blue-1/drain")
    assert st == 405 and h["allow"] == "POST"
    st, body, h = admin(bg, "DELETE", "/backends/blue/blue-1/ready")
    assert st == 405 and h["allow"] == "POST"
    st, body, h = admin(bg, "PUT", "/backends/blue/blue-1/weight", {"weight": 1})
    assert st == 405 and h["allow"] == "POST, DELETE"


# --- weight ------------------------------------------------------------------------

def test_weight_override_and_clear(bg):
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/weight", {"weight": 0})
    assert st == 200
    assert body["weight"] == 0 and body["weight_configured"] == 1 and body["weight_override"] == 0
    assert body["reason"] == "weight 0"
    assert set(names_served(bg, 6)) == {"blue-2"}
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/weight", {"weight": 3})
    assert st == 200 and body["weight"] == 3
    served = names_served(bg, 8)
    assert served.count("blue-1") == 6 and served.count("blue-2") == 2, served
    st, body, _ = admin(bg, "DELETE", "/backends/blue/blue-1/weight")
    assert st == 200 and body["weight"] == 1 and body["weight_override"] is None


@pytest.mark.parametrize("raw", ["", "nope", "{}", '{"weight": -1}', '{"weight": 1.5}',
                                 '{"weight": "2"}', '{"weight": 1, "extra": 2}', '[1]',
                                 '{"weight": 1}}', '{"wieght": 2}'])
def test_weight_bad_bodies(bg, raw):
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/weight", raw)
    assert st == 400, (raw, body)
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    assert bg.backend_status("blue", "blue-1")["weight_override"] is None


def test_body_over_64k_is_413(bg):
    big = '{"weight": 1' + " " * (64 * 1024) + "}"
    st, body, _ = admin(bg, "POST", "/backends/blue/blue-1/weight", big)
    assert st == 413
    assert bg.backend_status("blue", "blue-1")["weight_override"] is None
    # exactly at the limit is read
    ok = '{"weight": 2' + " " * (64 * 1024 - 13) + "}"
    assert len(ok) == 64 * 1024
    assert admin(bg, "POST", "/backends/blue/blue-1/weight", ok)[0] == 200


# --- split -------------------------------------------------------------------------

def test_split_override_is_atomic_and_clears(bg):
    st, body, _ = admin(bg, "POST", "/listeners/web/split", {"green": 100})
    assert st == 200
    assert body["pools"] == {"blue": 0, "green": 100}
    assert body["split_override"] == {"blue": 0, "green": 100}
    # the very next request uses it, on an existing keep-alive connection too
    assert set(names_served(bg, 5)) == {"green-1"}
    st, body, _ = admin(bg, "DELETE", "/listeners/web/split")
    assert st == 200 and body["split_override"] is None and body["pools"] == {"blue": 100, "green": 0}
    assert set(names_served(bg, 4)) <= {"blue-1", "blue-2"}


def test_split_on_a_live_keepalive_connection(bg):
    with RawConn(bg.port) as c:
        assert c.request("GET", "/").body.decode().startswith("blue")
        assert admin(bg, "POST", "/listeners/web/split", {"blue": 0, "green": 1})[0] == 200
        assert c.request("GET", "/").body == b"green-1"


def test_split_errors(bg):
    st, body, _ = admin(bg, "POST", "/listeners/web/split", {"red": 100})
    assert st == 400 and "red" in body["error"]
    st, body, _ = admin(bg, "POST", "/listeners/nope/split", {"blue": 100})
    assert st == 404
    st, body, _ = admin(bg, "POST", "/listeners/web/split", "{}")
    assert st == 400
    st, body, _ = admin(bg, "POST", "/listeners/web/split", '{"blue": 1, "blue": 2}')
    assert st == 400
    st, body, h = admin(bg, "GET", "/listeners/web/split")
    assert st == 405 and h["allow"] == "POST, DELETE"
    assert listener_of(bg.status_json(), "web")["split_override"] is None


# --- pools -------------------------------------------------------------------------

def test_pool_drain_wait_answers_when_drained(bg):
    done = []
    threads = [threading.Thread(target=lambda: done.append(
        wire.http_get(bg.port, "/slow?ms=800", timeout=10)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    wire.wait_until(lambda: sum(b["inflight_requests"] for b in
                                bg.status_json()["pools"][0]["backends"]) == 2, 3.0)
    t0 = time.monotonic()
    st, body, _ = admin(bg, "POST", "/pools/blue/drain?wait=5s")
    took = time.monotonic() - t0
    assert st == 200 and body["drained"] is True and body["connections"] == 0, body
    assert 0.3 < took < 3.0, took
    for t in threads:
        t.join(5)
    assert done == [200, 200]
    # the listener keeps serving: green is now the only pool in rotation? no:
    # green has weight 0, so the split has no pool in rotation -> 503
    with RawConn(bg.port) as c:
        assert c.request("GET", "/").status == 503
    st, body, _ = admin(bg, "POST", "/pools/blue/ready")
    assert st == 200 and all(b["state"] == "healthy" for b in body["backends"])
    assert set(names_served(bg, 4)) == {"blue-1", "blue-2"}


def test_pool_drain_wait_times_out(bg):
    t = threading.Thread(target=lambda: wire.http_get(bg.port, "/slow?ms=2500", timeout=10))
    t.start()
    wire.wait_until(lambda: sum(b["inflight_requests"] for b in
                                bg.status_json()["pools"][0]["backends"]) == 1, 3.0)
    t0 = time.monotonic()
    st, body, _ = admin(bg, "POST", "/pools/blue/drain?wait=400ms")
    took = time.monotonic() - t0
    assert st == 200 and body["drained"] is False and body["connections"] >= 1
    assert 0.35 < took < 2.0
    # the loop was never blocked: /live answers while another wait runs
    waiter = threading.Thread(target=lambda: admin(bg, "POST", "/pools/blue/drain?wait=1s"))
    waiter.start()
    time.sleep(0.1)
    t1 = time.monotonic()
    assert bg.admin_get("/live")[0] == 200
    assert time.monotonic() - t1 < 0.5
    waiter.join(5)
    t.join(5)


def test_pool_errors(bg):
    assert admin(bg, "POST", "/pools/red/drain")[0] == 404
    assert admin(bg, "POST", "/pools/red/ready")[0] == 404
    assert admin(bg, "POST", "/pools/blue/drain?wait=forever")[0] == 400
    st, _, h = admin(bg, "GET", "/pools/blue/drain")
    assert st == 405 and h["allow"] == "POST"


# --- reload ------------------------------------------------------------------------

def test_post_reload_ok_and_error(bg, backend_factory):
    b3 = backend_factory("blue-3")
    cfg = json.loads(json.dumps(bg.cfg))
    cfg["pools"][0]["backends"].append({"name": "blue-3", "address": b3.address, "weight": 1})
    bg.write_config(cfg)
    st, body, _ = admin(bg, "POST", "/reload")
    assert st == 200 and body["result"] == "ok" and body["generation"] == 2
    assert any(c["backend"] == "blue-3" for c in body["changes"]), body
    with open(bg.cfg_path, "a") as f:
        f.write("bogus_key: 1\n")
    st, body, _ = admin(bg, "POST", "/reload")
    assert st == 422 and body["result"] == "error"
    assert body["errors"] and all(e.startswith(bg.cfg_path + ":") for e in body["errors"]), body
    assert "bogus_key" in body["errors"][0]
    assert bg.status_json()["generation"] == 2
    st, _, h = admin(bg, "GET", "/reload")
    assert st == 405 and h["allow"] == "POST"


# --- who may change things --------------------------------------------------------

def test_token_rules(backend_factory, usher_factory, tmp_path):
    b1 = backend_factory("blue-1")
    tok = write_token(tmp_path, "s3cret-token")
    cfg = usher_proc.make_config(pools={"blue": [b1]})
    cfg["admin"]["token_file"] = tok
    u = usher_factory(cfg)
    path = "/backends/blue/blue-1/weight"
    st, body, _ = admin(u, "POST", path, {"weight": 2})
    assert st == 401 and "error" in body
    assert admin(u, "POST", path, {"weight": 2}, token="wrong")[0] == 401
    assert admin(u, "POST", path, {"weight": 2}, token="s3cret-token-")[0] == 401
    assert admin(u, "POST", path, {"weight": 2}, headers={"Authorization": "Basic x"})[0] == 401
    assert u.backend_status("blue", "blue-1")["weight_override"] is None
    assert admin(u, "POST", path, {"weight": 2}, token="s3cret-token")[0] == 200
    # GETs stay open
    assert u.admin_get("/status")[0] == 200 and u.admin_get("/metrics")[0] == 200
    assert u.admin_get("/")[0] == 200
    # the file is re-read at reload
    write_token(tmp_path, "rotated")
    u.reload(cfg)
    u.wait_log(r"reload done generation=2")
    assert admin(u, "POST", path, {"weight": 3}, token="s3cret-token")[0] == 401
    assert admin(u, "POST", path, {"weight": 3}, token="rotated")[0] == 200
    assert admin(u, "POST", "/reload", token="rotated")[0] == 200
    assert "admin token readable by others" not in u.log()


def test_token_file_readable_by_others_warns(backend_factory, usher_factory, tmp_path):
    b1 = backend_factory("blue-1")
    cfg = usher_proc.make_config(pools={"blue": [b1]})
    cfg["admin"]["token_file"] = write_token(tmp_path, "x", mode=0o644)
    u = usher_factory(cfg)
    assert u.wait_log(r"warn admin token readable by others")


def test_without_token_loopback_peers_may_mutate(bg):
    # every test peer is on loopback: allowed without a token (the peer rule
    # itself, 403 for anything else, is the C unit test test_admin_api.c)
    assert admin(bg, "POST", "/backends/blue/blue-1/weight", {"weight": 2})[0] == 200
    assert admin(bg, "POST", "/backends/blue/blue-1/weight", {"weight": 2}, token="any")[0] == 200


def test_non_loopback_bind_without_token_warns(backend_factory, usher_factory):
    b1 = backend_factory("blue-1")
    port = wire.free_port()
    cfg = usher_proc.make_config(pools={"blue": [b1]}, admin="0.0.0.0:%d" % port)
    u = usher_factory(cfg, wait_ready=False)
    u.admin_port = port
    u.wait_ready()
    assert u.wait_log(r"warn admin mutations off")
    # we still reach it over loopback, and loopback may mutate
    assert admin(u, "POST", "/backends/blue/blue-1/weight", {"weight": 2})[0] == 200


def test_admin_connection_limit_keeps_data_plane(bg):
    socks = []
    try:
        import socket
        for _ in range(60):
            s = socket.create_connection((wire.HOST, bg.admin_port), timeout=2)
            socks.append(s)
        time.sleep(0.2)
        with RawConn(bg.port) as c:
            assert c.request("GET", "/").status == 200
    finally:
        for s in socks:
            s.close()
    wire.wait_until(lambda: bg.admin_get("/live")[0] == 200, 3.0)


# --- overrides outlive reloads and restarts ---------------------------------------

def test_overrides_survive_reload_and_removed_ones_drop(bg):
    assert admin(bg, "POST", "/backends/blue/blue-1/drain")[0] == 200
    assert admin(bg, "POST", "/backends/blue/blue-2/weight", {"weight": 5})[0] == 200
    assert admin(bg, "POST", "/listeners/web/split", {"blue": 10, "green": 90})[0] == 200
    cfg = json.loads(json.dumps(bg.cfg))
    cfg["listeners"][0]["pools"] = {"blue": 50, "green": 50}
    bg.reload(cfg)
    bg.wait_log(r"reload done generation=2")
    st = bg.status_json()
    assert backend_of(st, "blue", "blue-1")["reason"] == "admin"
    b2 = backend_of(st, "blue", "blue-2")
    assert b2["weight"] == 5 and b2["weight_configured"] == 1
    l = listener_of(st, "web")
    assert l["pools"] == {"blue": 10, "green": 90} and l["split_override"] == {"blue": 10, "green": 90}
    assert l["split_configured"] == {"blue": 50, "green": 50}
    kept = bg.log_lines("override kept")
    assert {x["kv"]["kind"] for x in kept} == {"drain", "weight", "split"}
    # a reload that removes blue-1 and green drops the overrides naming them
    cfg["pools"] = [p for p in cfg["pools"] if p["name"] != "green"]
    cfg["pools"][0]["backends"] = [b for b in cfg["pools"][0]["backends"] if b["name"] != "blue-1"]
    cfg["listeners"][0]["pools"] = {"blue": 100}
    bg.reload(cfg)
    bg.wait_log(r"reload done generation=3")
    dropped = bg.log_lines("override dropped")
    kinds = sorted(x["kv"]["kind"] for x in dropped)
    assert kinds == ["drain", "split"], dropped
    st = bg.status_json()
    assert listener_of(st, "web")["split_override"] is None
    assert backend_of(st, "blue", "blue-2")["weight"] == 5


def test_overrides_survive_restart_with_state_file(backend_factory, usher_factory, tmp_path):
    b1, b2 = backend_factory("blue-1"), backend_factory("blue-2")
    g1 = backend_factory("green-1")
    state = os.path.join(str(tmp_path), "usher.state")
    cfg = usher_proc.make_config(pools={"blue": [b1, b2], "green": [g1]}, split={"blue": 100, "green": 0})
    cfg["admin"]["state_file"] = state
    u = usher_factory(cfg, name="first")
    assert admin(u, "POST", "/backends/blue/blue-1/drain?deadline=1m")[0] == 200
    assert admin(u, "POST", "/backends/blue/blue-2/weight", {"weight": 7})[0] == 200
    assert admin(u, "POST", "/listeners/web/split", {"green": 100})[0] == 200
    assert os.path.exists(state)
    assert not [f for f in os.listdir(str(tmp_path)) if ".tmp." in f], "temp file left behind"
    assert u.stop() == 0
    u2 = usher_factory(cfg, name="second")
    st = u2.status_json()
    assert backend_of(st, "blue", "blue-1")["reason"] == "admin"
    assert backend_of(st, "blue", "blue-2")["weight"] == 7
    assert listener_of(st, "web")["split_override"] == {"blue": 0, "green": 100}
    assert set(names_served(u2, 3)) == {"green-1"}
    assert u2.wait_log(r"state file loaded .*drains=1 weights=1 splits=1")
    # clearing writes the file again
    assert admin(u2, "DELETE", "/listeners/web/split")[0] == 200
    assert admin(u2, "POST", "/backends/blue/blue-1/ready")[0] == 200
    assert admin(u2, "DELETE", "/backends/blue/blue-2/weight")[0] == 200
    assert u2.stop() == 0
    u3 = usher_factory(cfg, name="third")
    st = u3.status_json()
    assert listener_of(st, "web")["split_override"] is None
    assert backend_of(st, "blue", "blue-1")["state"] == "healthy"
    assert backend_of(st, "blue", "blue-2")["weight_override"] is None


@pytest.mark.parametrize("content", [b"garbage\n", b"usher-state 1\nweight\tblue\n",
                                     b"\x00\x01\x02", b""])
def test_corrupt_state_file_starts_without_overrides(backend_factory, usher_factory, tmp_path,
                                                     content):
    b1 = backend_factory("blue-1")
    state = os.path.join(str(tmp_path), "usher.state")
    with open(state, "wb") as f:
        f.write(content)
    cfg = usher_proc.make_config(pools={"blue": [b1]})
    cfg["admin"]["state_file"] = state
    u = usher_factory(cfg)
    assert u.wait_log(r"error state file corrupt")
    assert u.backend_status("blue", "blue-1")["weight_override"] is None
    assert admin(u, "POST", "/backends/blue/blue-1/weight", {"weight": 4})[0] == 200
    with open(state) as f:
        assert f.read().startswith("usher-state 1\n")


def test_admin_head_timeout_drops_a_slow_client(bg):
    import socket
    s = socket.create_connection((wire.HOST, bg.admin_port), timeout=10)
    try:
        s.sendall(b"POST /reload HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        t0 = time.monotonic()
        with RawConn(bg.port) as c:
            assert c.request("GET", "/").status == 200
        s.settimeout(8.0)
        assert s.recv(100) == b""  # closed without an answer
        took = time.monotonic() - t0
        assert 4.0 < took < 7.5, took
    finally:
        s.close()
    assert bg.status_json()["generation"] == 1, "a head that never ended changed nothing"
