"""Static host names at a reload (DESIGN "The reload"): resolved with
c-ares against resolver.nameservers (a real dnsmasq, servers.Dnsmasq),
without blocking anything, each reload waiting at most 2 s for them.

  - DNS frozen (SIGSTOP) during a SIGHUP: no request waits 200 ms, /live
    answers within 100 ms, the reload succeeds keeping the old address
    (logged `address kept`, /status `resolve_error`), and the next reload
    with DNS back clears it;
  - a name that now resolves elsewhere moves the backend (old drains);
  - a new backend whose name does not resolve fails the reload with its
    file:line:column, the running config untouched; so does one at startup.

Standard library only (run with /usr/bin/python3); every wait is bounded."""

import json
import os
import signal
import subprocess
import time

import pytest

from admin_util import admin, backend_of
from latency import PROBE_NICE, WORKER_NICE, FastBackend, Poller
from load import Load
from servers import Backend, Dnsmasq
from usher_proc import make_config, reload_and_wait, to_yaml
from wire import RawConn, free_port, wait_until

# DESIGN (issue 19): no request waits more than 200 ms while a reload waits
# for a frozen DNS server; /live within 100 ms whatever the control thread does.
REQUEST_BUDGET_S = 0.200
PROBE_BUDGET_S = 0.100
# DESIGN: a name that does not resolve within 2 s keeps its address.
RESOLVE_BOUND_S = 2.0


@pytest.fixture
def dns(servers, tmp_path):
    return servers.add(Dnsmasq(tmp_path).start())


def named_config(dns_port, backends, **kw):
    """Pool blue of backends {name: "host:port"} resolved by the test's DNS."""
    return make_config(pools={"blue": [{"name": n, "address": a} for n, a in backends.items()]},
                       extra={"resolver": {"nameservers": ["127.0.0.1:%d" % dns_port]}}, **kw)


def position(path, needle):
    """file:line:column of the first <needle> in the file (1-based)."""
    with open(path) as f:
        for i, line in enumerate(f, 1):
            col = line.find(needle)
            if col >= 0:
                return "%s:%d:%d" % (path, i, col + 1)
    raise AssertionError("%r not in %s" % (needle, path))


def frozen(dns):
    os.kill(dns.proc.pid, signal.SIGSTOP)


def thawed(dns):
    os.kill(dns.proc.pid, signal.SIGCONT)


def test_reload_with_dns_frozen_keeps_the_address_and_stops_nothing(servers, dns,
                                                                    usher_factory):
    # the backend answers from a process of its own: what the poller
    # measures through usher is usher
    b = servers.add(FastBackend("127.0.0.2").start())
    port = b.port
    dns.set_hosts({"blue.test": ["127.0.0.2"]})
    cfg = named_config(dns.port, {"blue-1": "blue.test:%d" % port})
    u = usher_factory(cfg)
    st = backend_of(u.status_json(), "blue", "blue-1")
    assert st["address"] == "blue.test:%d" % port and st["resolve_error"] is None, st
    load = servers.add(Load(u.port, threads=2, duration=30.0).start())
    plane = servers.add(Poller(u.port, "/", REQUEST_BUDGET_S, WORKER_NICE).start())
    live = servers.add(Poller(u.admin_port, "/live", PROBE_BUDGET_S, PROBE_NICE).start())
    load.run_for(0.5)

    frozen(dns)
    try:
        t0 = time.monotonic()
        kind, gen = reload_and_wait(u, cfg, timeout=RESOLVE_BOUND_S + 5.0)
        took = time.monotonic() - t0
        load.run_for(0.3)
    finally:
        thawed(dns)
    plane.stop()
    live.stop()
    load.stop()
    assert (kind, gen) == ("done", 2), u.log()[-3000:]
    # it waited for DNS, within the bound
    assert RESOLVE_BOUND_S - 0.2 <= took < RESOLVE_BOUND_S + 2.0, took
    assert u.wait_log(r"warn address kept .*backend=blue-1 .*resolved=127\.0\.0\.2 "
                      r"reason=\"timed out\"")
    st = backend_of(u.status_json(), "blue", "blue-1")
    assert st["resolve_error"] == "timed out", st
    assert st["state"] == "healthy", st
    assert load.errors == [], load.summary()
    assert sum(load.ok.values()) > 0, load.summary()
    for name, poller in (("request", plane), ("/live", live)):
        assert all(s[2] == 200 for s in poller.samples), (name, [s for s in poller.samples
                                                                 if s[2] != 200][:5])
        inside, worst, late = poller.usher_late()
        assert len(inside) > 50, (name, len(inside))
        assert not late, "%s late while the host was not: %r (slowest %.3f s)" % (
            name, late[:5], worst)

    # DNS back: the next reload resolves it again, and the error is gone
    kind, gen = reload_and_wait(u, cfg, timeout=5.0)
    assert (kind, gen) == ("done", 3)
    assert backend_of(u.status_json(), "blue", "blue-1")["resolve_error"] is None


def test_a_name_that_moved_moves_the_backend(servers, dns, usher_factory):
    port = free_port()
    old = servers.add(Backend("old", port=port, host="127.0.0.2").start())
    new = servers.add(Backend("new", port=port, host="127.0.0.3").start())
    dns.set_hosts({"blue.test": ["127.0.0.2"]})
    cfg = named_config(dns.port, {"blue-1": "blue.test:%d" % port},
                       pool_opts={"blue": {"deregistration_delay": "1s"}})
    u = usher_factory(cfg)
    assert get(u) == "old"
    dns.set_hosts({"blue.test": ["127.0.0.3"]})
    kind, _ = reload_and_wait(u, cfg)
    assert kind == "done"
    assert u.wait_log(r"reload change kind=backend_removed pool=blue backend=blue-1")
    assert u.wait_log(r"reload change kind=backend_added pool=blue backend=blue-1")
    wait_until(lambda: get(u) == "new", 3.0, what="traffic to the new address")
    assert backend_of(u.status_json(), "blue", "blue-1")["resolve_error"] is None
    assert not u.log_lines("address kept")


def get(u):
    """The body of GET / (the backend's name), or None."""
    with RawConn(u.port) as c:
        r = c.request("GET", "/")
        return r.body.decode() if r.status == 200 else None


@pytest.mark.parametrize("dns_state", ["nxdomain", "frozen"])
def test_a_new_backend_whose_name_does_not_resolve_fails_the_reload(servers, dns, usher_factory,
                                                                    dns_state):
    port = free_port()
    servers.add(Backend("blue-1", port=port, host="127.0.0.2").start())
    dns.set_hosts({"blue.test": ["127.0.0.2"]})
    cfg = named_config(dns.port, {"blue-1": "blue.test:%d" % port})
    u = usher_factory(cfg)
    cfg2 = json.loads(json.dumps(u.cfg))
    cfg2["pools"][0]["backends"].append({"name": "blue-2", "address": "nope.test:%d" % port})
    u.write_config(cfg2)
    if dns_state == "frozen":
        frozen(dns)
    try:
        t0 = time.monotonic()
        status, body, _ = admin(u, "POST", "/reload", timeout=RESOLVE_BOUND_S + 5.0)
        took = time.monotonic() - t0
    finally:
        thawed(dns)
    assert status == 422 and body["result"] == "error" and body["generation"] == 1, body
    where = position(u.cfg_path, "nope.test")
    assert len(body["errors"]) == 1, body
    err = body["errors"][0]
    assert err.startswith(where + ": pools[0].backends[1].address: invalid address "
                          "\"nope.test:%d\": cannot resolve host (" % port), (err, where)
    if dns_state == "frozen":
        assert "timed out" in err and took >= RESOLVE_BOUND_S - 0.2, (err, took)
    else:
        assert took < RESOLVE_BOUND_S, took
    assert u.wait_log(r"reload failed reason=\"cannot resolve a host name, running config kept\"")
    st = u.status_json()
    assert st["generation"] == 1
    assert [b["name"] for b in st["pools"][0]["backends"]] == ["blue-1"]


def test_startup_resolves_with_the_configured_nameservers(servers, dns, usher_bin, tmp_path):
    port = free_port()
    dns.set_hosts({"blue.test": ["127.0.0.2"]})
    cfg = named_config(dns.port, {"blue-1": "blue.test:%d" % port,
                                  "blue-2": "gone.test:%d" % port})
    path = os.path.join(str(tmp_path), "startup.yaml")
    with open(path, "w") as f:
        f.write(to_yaml(cfg))
    r = subprocess.run([usher_bin, "-c", path], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r
    where = position(path, "gone.test")
    assert r.stderr.splitlines() == [
        "%s: pools[0].backends[1].address: invalid address \"gone.test:%d\": cannot resolve "
        "host (Domain name not found)" % (where, port)], r.stderr
