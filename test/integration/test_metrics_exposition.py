"""/metrics passes `promtool check metrics` after traffic of every kind
(successes, backend errors, connect failures, aborted responses, reloads
that worked and one that failed, a backend draining), carries the
histograms, byte counters and build info DESIGN lists, and the README's
metric table names exactly the families the binary prints."""

import json
import os
import re
import shutil
import subprocess

import pytest

import usher_proc
import wire
from clients import slow_request
from usher_proc import config_for, reload_and_wait
from wire import RawConn

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUCKETS = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
           "2.5", "5", "10", "30", "60", "+Inf"]


def families(text):
    """{name: type} from the TYPE lines, and the set of names with a HELP line."""
    types, helps = {}, set()
    for line in text.splitlines():
        m = re.match(r"# (HELP|TYPE) (\S+) (.*)$", line)
        if m and m.group(1) == "TYPE":
            types[m.group(2)] = m.group(3)
        elif m:
            helps.add(m.group(2))
    return types, helps


def family_of(sample, types):
    if sample in types:
        return sample
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample[:-len(suffix)] if sample.endswith(suffix) else None
        if base and types.get(base) == "histogram":
            return base
    return None


def promtool_check(text):
    exe = shutil.which("promtool")
    if not exe:
        pytest.fail("promtool not found: install the Debian package prometheus (scripts/deps test)")
    p = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode()


@pytest.fixture
def busy_usher(backend_factory, usher_factory):
    """usher after successes, 4xx/5xx from the backend, connect failures,
    an aborted response, two reloads (ok, error) and with blue-2 draining
    (removed by the last reload while a slow request holds it)."""
    b1 = backend_factory("blue-1")
    b2 = backend_factory("blue-2")
    dead = {"name": "dead", "address": "127.0.0.1:%d" % wire.free_port()}
    opts = {"blue": {"deregistration_delay": "20s"}}
    u = usher_factory(pools={"blue": [b1, b2], "green": [dead]}, split={"blue": 100, "green": 0},
                      pool_opts=opts)
    with RawConn(u.port) as c:
        for _ in range(10):
            assert c.request("GET", "/").status == 200
        assert c.request("GET", "/status?code=404").status == 404
        assert c.request("GET", "/status?code=500").status == 500
        assert c.request("POST", "/upload", body=b"x" * 5000).status == 200
    with RawConn(u.port) as c:
        c.send(b"GET /reset?bytes=1000 HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            c.read_response()
        except Exception:  # pylint: disable=broad-except
            pass  # cut short on purpose
    # green gets traffic: its backend refuses connections (502)
    kind, gen = reload_and_wait(u, config_for(u, {"blue": [b1, b2], "green": [dead]},
                                              split={"blue": 0, "green": 100}, pool_opts=opts))
    assert (kind, gen) == ("done", 2), u.log()
    assert wire.http_get(u.port, "/")[0] == 502
    # a broken file: counted as a failed reload
    good = u.cfg
    kind, _ = reload_and_wait(u, "listeners: [\n")
    assert kind == "failed"
    u.cfg = good
    # blue-2 leaves while a slow request holds it: it drains
    kind, gen = reload_and_wait(u, config_for(u, {"blue": [b1, b2], "green": [dead]},
                                              split={"blue": 100, "green": 0}, pool_opts=opts))
    assert (kind, gen) == ("done", 3), u.log()
    slows = [slow_request(u.port, 3000, check_close=False) for _ in range(2)]
    wire.wait_until(lambda: b2.reqs("/slow"), 3.0, what="a slow request at blue-2")
    kind, gen = reload_and_wait(u, config_for(u, {"blue": [b1], "green": [dead]},
                                              split={"blue": 100, "green": 0}, pool_opts=opts))
    assert (kind, gen) == ("done", 4), u.log()
    assert u.backend_status("blue", "blue-2")["state"] == "draining"
    yield u
    for s in slows:
        s.join(10.0)


def test_promtool_passes_on_live_metrics(busy_usher):
    u = busy_usher
    st, text, headers = u.admin_get("/metrics")
    assert st == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    rc, out = promtool_check(text)
    print("promtool check metrics:", rc, out or "(no output)")
    assert rc == 0 and out.strip() == "", out

    types, helps = families(text)
    assert set(types) == helps, "families without HELP or TYPE: %s" % (set(types) ^ helps)
    m = usher_proc.Metrics(text)
    for name in m.names():
        assert family_of(name, types), "sample %s without a TYPE line" % name

    # the picture the test painted
    assert m.get("usher_config_reloads_total", result="ok") == 3
    assert m.get("usher_config_reloads_total", result="error") == 1
    assert m.get("usher_requests_total", listener="web", code="2xx") >= 11
    assert m.get("usher_requests_total", listener="web", code="4xx") == 1
    assert m.get("usher_requests_total", listener="web", code="5xx") >= 2
    assert m.get("usher_requests_total", listener="web", code="aborted") == 1
    assert m.sum("usher_backend_connect_failures_total", pool="green") >= 1
    assert m.get("usher_backend_state", pool="blue", backend="blue-2", state="draining") == 1
    assert m.get("usher_backend_drain_connections", pool="blue", backend="blue-2") >= 1
    assert 10 < m.get("usher_backend_drain_remaining_seconds", pool="blue", backend="blue-2") <= 20

    (labels, one), = m.find("usher_build_info")
    assert one == 1 and labels["version"] and labels["commit"], labels

    # histograms: fixed buckets, cumulative, count = +Inf = requests timed
    les = [l["le"] for l, _ in m.find("usher_request_duration_seconds_bucket", listener="web")]
    assert les == BUCKETS
    cum = [v for _, v in m.find("usher_request_duration_seconds_bucket", listener="web")]
    assert cum == sorted(cum)
    count = m.get("usher_request_duration_seconds_count", listener="web")
    assert count == cum[-1] == m.sum("usher_requests_total", listener="web")
    assert m.get("usher_request_duration_seconds_sum", listener="web") > 0
    blue = m.sum("usher_backend_response_duration_seconds_count", pool="blue")
    assert blue >= 14
    assert m.sum("usher_backend_response_duration_seconds_bucket", pool="blue", le="+Inf") == blue

    # bytes: the upload's body counted in, responses out
    assert m.get("usher_request_bytes_total", listener="web") > 5000
    assert m.get("usher_response_bytes_total", listener="web") > 0
    assert m.get("usher_backend_request_bytes_total", pool="blue", backend="blue-1") > 5000 or \
        m.get("usher_backend_request_bytes_total", pool="blue", backend="blue-2") > 5000


def test_draining_process_metrics_pass_promtool(backend_factory, usher_factory):
    import signal
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "5s"})
    slow = slow_request(u.port, 2000, check_close=False)
    b.wait_requests(1, 3.0)
    u.send_signal(signal.SIGTERM)
    u.wait_admin("/ready", 503, 3.0)
    st, text, _ = u.admin_get("/metrics")
    assert st == 200
    rc, out = promtool_check(text)
    assert rc == 0 and out.strip() == "", out
    m = usher_proc.Metrics(text)
    assert m.get("usher_draining") == 1 and m.get("usher_ready") == 0
    assert m.get("usher_drain_connections_left") == 1
    assert 2 < m.get("usher_drain_remaining_seconds") <= 5
    r, _ = slow.join(5.0)
    assert r.status == 200


def readme_metric_table():
    """[(name, type, [labels])] from the metric table of README's "Admin endpoints"."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    start = text.index("## Admin endpoints")
    end = text.index("\n## ", start + 1)
    rows = []
    for line in text[start:end].splitlines():
        m = re.match(r"^\| `(usher_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|", line)
        if m:
            labels = re.findall(r"`(\w+)`", m.group(3))
            rows.append((m.group(1), m.group(2), sorted(labels)))
    return rows


def test_readme_metric_list_matches_the_binary(busy_usher):
    st, text, _ = busy_usher.admin_get("/metrics")
    types, _ = families(text)
    printed_labels = {}
    for name, labels, _ in usher_proc.Metrics(text).samples:
        fam = family_of(name, types)
        printed_labels.setdefault(fam, set()).update(k for k in labels if k != "le")
    rows = readme_metric_table()
    assert rows, "README has no metric table"
    documented = {n: (t, l) for n, t, l in rows}
    assert len(documented) == len(rows), "a metric listed twice in the README"
    missing = set(types) - set(documented)
    extra = set(documented) - set(types)
    assert not missing and not extra, "README lacks %s; README lists %s the binary does not " \
        "print" % (sorted(missing), sorted(extra))
    for name, (typ, labels) in documented.items():
        assert typ == types[name], "%s: README says %s, binary %s" % (name, typ, types[name])
        assert labels == sorted(printed_labels.get(name, ())), \
            "%s: README labels %s, binary %s" % (name, labels, sorted(printed_labels[name]))


def dashboard_exprs():
    d = json.load(open(os.path.join(REPO, "conf", "grafana-dashboard.json"), encoding="utf-8"))
    exprs = [a["expr"] for a in d.get("annotations", {}).get("list", []) if a.get("expr")]

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))
    walk(d["panels"])
    return exprs


def test_grafana_dashboard_queries_parse_and_use_printed_metrics(proxy, tmp_path):
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    text = proxy.usher.admin_get("/metrics")[1]
    types, _ = families(text)
    for e in exprs:
        for name in re.findall(r"\b(usher_[a-z_]+)", e):
            assert family_of(name, types), "dashboard uses %s, which /metrics lacks: %s" % (name, e)
    # promtool parses PromQL in rule files: every query, with Grafana's
    # variables given values, as a recording rule
    rules = tmp_path / "dashboard-rules.yml"
    with open(rules, "w") as f:
        f.write("groups:\n- name: dashboard\n  rules:\n")
        for i, e in enumerate(exprs):
            q = e.replace("$__rate_interval", "5m").replace("$instance", ".*")
            f.write("  - record: usher:dashboard:%d\n    expr: %s\n" % (i, json.dumps(q)))
    p = subprocess.run([shutil.which("promtool") or "promtool", "check", "rules", str(rules)],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()
