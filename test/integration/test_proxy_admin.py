"""Admin endpoints (/live /ready /status /metrics, 404 otherwise) and the
log format, including the access log."""

import json
import re
import threading
import time

import usher_proc
import wire
from wire import RawConn


def test_live_ready_and_404(proxy):
    u = proxy.usher
    assert u.admin_get("/live")[0] == 200
    assert u.admin_get("/ready")[0] == 200
    for path in ("/nope", "/status/x", "/livex"):
        assert u.admin_get(path)[0] == 404, path


def test_status_json_shape(backend_factory, usher_factory):
    b1 = backend_factory("blue-1")
    b2 = backend_factory("green-1")
    u = usher_factory(pools={"blue": [(b1, 2)], "green": [b2]}, split={"blue": 100, "green": 0},
                      pool_opts={"blue": {"balance": "least_conn",
                                          "deregistration_delay": "1500ms"}})
    with RawConn(u.port) as c:
        for _ in range(5):
            assert c.request("GET", "/").status == 200
    st = u.status_json()
    assert st["state"] == "running"
    assert st["generation"] == 1
    assert len(st["listeners"]) == 1
    l = st["listeners"][0]
    assert l["name"] == "web"
    assert l["bind"] == "127.0.0.1:%d" % u.port
    assert l["protocol"] == "http"
    assert isinstance(l["connections"], int)
    assert l["pools"] == {"blue": 100, "green": 0}
    pools = {p["name"]: p for p in st["pools"]}
    assert set(pools) == {"blue", "green"}
    assert pools["blue"]["balance"] == "least_conn"
    assert pools["blue"]["deregistration_delay_ms"] == 1500
    assert pools["green"]["balance"] == "round_robin"
    assert pools["green"]["deregistration_delay_ms"] == 30000
    keys = {"name", "address", "state", "weight", "active_connections", "inflight_requests",
            "requests_total", "success_streak", "failure_streak", "last_result",
            "drain_deadline_ms"}
    (bb,) = pools["blue"]["backends"]
    assert keys <= set(bb), "missing keys: %s" % (keys - set(bb))
    assert bb["name"] == "blue-1" and bb["address"] == b1.address
    assert bb["state"] == "healthy"
    assert bb["weight"] == 2
    assert bb["requests_total"] == 5
    assert bb["inflight_requests"] == 0
    assert isinstance(bb["active_connections"], int) and bb["active_connections"] <= 1
    assert isinstance(bb["success_streak"], int) and isinstance(bb["failure_streak"], int)
    assert bb["drain_deadline_ms"] is None
    (gb,) = pools["green"]["backends"]
    assert gb["requests_total"] == 0 and gb["weight"] == 1


def test_status_counts_inflight_and_connections(proxy):
    u = proxy.usher
    done = []

    def slow():
        with RawConn(u.port, timeout=10) as c:
            done.append(c.request("GET", "/slow?ms=1000").status)

    t = threading.Thread(target=slow)
    t.start()
    try:
        proxy.backend.wait_requests(1, 3.0)
        time.sleep(0.05)
        st = u.status_json()
        bb = st["pools"][0]["backends"][0]
        assert bb["inflight_requests"] == 1, bb
        assert bb["active_connections"] >= 1, bb
        assert st["listeners"][0]["connections"] >= 1, st["listeners"]
        m = u.metrics()
        assert m.get("usher_backend_active_connections", pool="blue", backend="blue-1") >= 1
        assert m.get("usher_client_connections", listener="web") >= 1
    finally:
        t.join(10)
    assert done == [200]
    wire.wait_until(lambda: u.status_json()["listeners"][0]["connections"] == 0, 3.0,
                    what="listener connections back to 0")
    bb = u.status_json()["pools"][0]["backends"][0]
    assert bb["inflight_requests"] == 0 and bb["requests_total"] == 1


def test_metrics(proxy):
    u = proxy.usher
    with RawConn(u.port) as c:
        for _ in range(3):
            assert c.request("GET", "/").status == 200
        for _ in range(2):
            assert c.request("GET", "/status?code=404").status == 404
        assert c.request("GET", "/status?code=500").status == 500
    st, text, hdrs = u.admin_get("/metrics")
    assert st == 200
    assert hdrs.get("content-type", "").startswith("text/plain"), hdrs
    m = usher_proc.Metrics(text)
    assert all(n.startswith("usher_") for n in m.names()), sorted(m.names())
    assert m.get("usher_requests_total", listener="web", code="2xx") == 3
    assert m.get("usher_requests_total", listener="web", code="4xx") == 2
    assert m.get("usher_requests_total", listener="web", code="5xx") == 1
    assert m.get("usher_backend_requests_total", pool="blue", backend="blue-1") == 6
    assert m.get("usher_backend_active_connections", pool="blue", backend="blue-1") is not None
    assert m.get("usher_backend_state", pool="blue", backend="blue-1", state="healthy") == 1
    others = [v for l, v in m.find("usher_backend_state", pool="blue", backend="blue-1")
              if l.get("state") != "healthy"]
    assert all(v == 0 for v in others), others
    assert m.get("usher_client_connections", listener="web") is not None
    assert m.find("usher_config_reloads_total"), "no usher_config_reloads_total"
    for l, _ in m.find("usher_config_reloads_total"):
        assert "result" in l
    # HELP/TYPE lines are well formed
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            assert re.match(r"^# TYPE usher_\w+ (counter|gauge|histogram|summary|untyped)$",
                            line), line


def test_metrics_count_usher_made_errors(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [(b, 0)]})
    with RawConn(u.port) as c:
        assert c.request("GET", "/").status == 503
    with RawConn(u.port) as c:
        c.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host
        assert c.read_response().status == 400
    m = u.metrics()
    assert m.get("usher_requests_total", listener="web", code="5xx") == 1
    assert m.get("usher_requests_total", listener="web", code="4xx") == 1


def test_ready_waits_for_first_health_round(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    b.health_delay = 1.0  # no health result for at least 1 s
    cfg = usher_proc.make_config(pools={"blue": [b]}, pool_opts={"blue": {"health_check": {
        "path": "/healthz", "interval": "2s", "timeout": "1500ms"}}})
    u = usher_factory(cfg, wait_ready=False)
    u.wait_admin("/live", 200, 5.0)
    assert u.admin_get("/ready")[0] == 503, "ready before any health check answered"
    assert u.backend_status("blue", "blue-1")["state"] == "checking"
    with RawConn(u.port) as c:
        r = c.request("GET", "/")
        wire.check_usher_error(c, r, 503, must_close=False)
    u.wait_admin("/ready", 200, 6.0)
    assert u.backend_status("blue", "blue-1")["state"] == "healthy"
    with RawConn(u.port) as c:
        assert c.request("GET", "/").body == b"blue-1"


def test_log_format(proxy):
    u = proxy.usher
    lines = [l for l in u.log().splitlines() if l.strip()]
    assert lines, "usher logged nothing at startup"
    for line in lines:
        assert usher_proc.parse_log_line(line), "not '<time> <level> <event> k=v': %r" % line
    started = [p for p in u.log_lines("listener started")]
    assert started, u.log()
    assert started[0]["kv"].get("name") == "web"
    assert started[0]["kv"].get("bind") == "127.0.0.1:%d" % u.port
    assert started[0]["level"] == "info"


def test_access_log(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, log={"access": True})
    with RawConn(u.port) as c:
        r = c.request("GET", "/headers?x=1")
        assert r.status == 200
        body_len = len(r.body)
        client_port = c.local_port()
        r = c.request("GET", "/status?code=404")
    u.wait_log(r" access .*status=404", 3.0)
    acc = u.log_lines("access")
    assert len(acc) == 2, acc
    kv = acc[0]["kv"]
    for k in ("client", "listener", "method", "path", "status", "bytes", "ms", "pool", "backend"):
        assert k in kv, "access line without %s: %r" % (k, acc[0])
    assert kv["client"] in ("127.0.0.1:%d" % client_port, "127.0.0.1"), kv
    assert kv["listener"] == "web" and kv["method"] == "GET"
    assert kv["path"] in ("/headers?x=1", "/headers"), kv
    assert kv["status"] == "200" and kv["pool"] == "blue" and kv["backend"] == "blue-1", kv
    assert int(kv["bytes"]) >= body_len, kv
    assert float(kv["ms"]) >= 0
    assert acc[1]["kv"]["status"] == "404"


def test_no_access_log_by_default(proxy):
    with proxy.conn() as c:
        assert c.request("GET", "/").status == 200
    time.sleep(0.2)
    assert proxy.usher.log_lines("access") == []


def test_status_is_json_content_type(proxy):
    st, body, hdrs = proxy.usher.admin_get("/status")
    assert st == 200
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    json.loads(body)
