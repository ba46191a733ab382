"""DNS discovery (DESIGN.md "Discovery and fleets") against a real DNS
server: Debian's dnsmasq on a loopback port, answering from a hosts file the
tests rewrite (servers.Dnsmasq). Backends listen on 127.0.0.2, .3, ... all on
one port, the port `discover` names; each is a backend ADDRESS:PORT.

  - scale 2 -> 5 -> 1 under keep-alive load: 0 client errors, new addresses
    enter `checking` then serve, vanished ones drain (reason dns) and go;
  - DNS down for less than hold (and longer): nothing drains, /status says why;
  - startup without a DNS server: usher runs, the pool waits empty, /status
    says why, and it fills once DNS answers;
  - an empty answer is believed only after hold;
  - a reload keeps the discovered backends; one that drops `discover`
    drains them;
  - SRV records (port and weight from the record), IPv6 names, /status.

Standard library only (run with /usr/bin/python3); every wait is bounded."""

import copy
import os
import subprocess
import time

import pytest

from clients import slow_request
from load import Load
from servers import Backend, Dnsmasq, free_dns_port
from usher_proc import hc_opts, make_config, reload_and_wait, state_transitions
from wire import free_port, http_get, wait_until

NAME = "blue.test"
# Re-resolution period of the tests: short, so a change shows within a
# fraction of a second.
INTERVAL = "200ms"


@pytest.fixture
def dns(servers, tmp_path):
    """A started Dnsmasq, stopped at teardown."""
    return servers.add(Dnsmasq(tmp_path).start())


def start_backends(servers, port, count, first=2):
    """<count> Backends on 127.0.0.<first>... all on <port>, each named by
    its backend name in usher (ADDRESS:PORT)."""
    out = []
    for i in range(first, first + count):
        host = "127.0.0.%d" % i
        out.append(servers.add(Backend("%s:%d" % (host, port), port=port, host=host).start()))
    return out


def addrs(backends):
    return [b.host for b in backends]


def discover_config(dns_port, port, hold="3s", delay="2s", health=True, interval=INTERVAL,
                    static=None, **kw):
    opts = {"deregistration_delay": delay,
            "discover": {"dns": NAME, "port": port, "interval": interval}}
    if health:
        opts["health_check"] = hc_opts(interval="100ms", timeout="80ms", healthy=1, unhealthy=2)
    return make_config(pools={"blue": static or []}, pool_opts={"blue": opts},
                       extra={"resolver": {"nameservers": ["127.0.0.1:%d" % dns_port],
                                           "hold": hold}}, **kw)


def pool_status(u, pool="blue"):
    for p in u.status_json()["pools"]:
        if p["name"] == pool:
            return p
    return None


def states(u, pool="blue"):
    """{backend name: state} of the pool's backends in /status."""
    return {b["name"]: b["state"] for b in pool_status(u, pool)["backends"]}


def wait_states(u, want, timeout=5.0, what=None):
    """Waits until the pool's backends are exactly <want> ({name: state})."""
    return wait_until(lambda: states(u) == want, timeout,
                      what=what or "backends %r (now %r)" % (want, states(u)))


def healthy(backends):
    return {b.name: "healthy" for b in backends}


def test_scale_up_and_down_under_load(servers, dns, usher_factory):
    port = free_port()
    bs = start_backends(servers, port, 5)
    dns.set_hosts({NAME: addrs(bs[:2])})
    u = usher_factory(discover_config(dns.port, port))
    wait_states(u, healthy(bs[:2]))

    load = servers.add(Load(u.port, threads=4, duration=40.0).start())
    load.run_for(1.0)

    # 2 -> 5: the new ones enter checking, then serve
    dns.set_hosts({NAME: addrs(bs)})
    wait_states(u, healthy(bs), what="5 healthy backends")
    wait_until(lambda: all(load.ok.get(b.name, 0) > 0 for b in bs), 5.0,
               what="traffic on all 5 backends (%r)" % load.ok)
    for b in bs[2:]:
        assert ("checking", "healthy", "ok") in state_transitions(u, b.name), u.log()

    # 5 -> 1: four drain (reason dns) and go; the load never notices, and
    # requests in flight on them finish
    slow = [slow_request(u.port, 800, check_close=False) for _ in range(10)]
    wait_until(lambda: sum(len(b.reqs("/slow")) for b in bs) == 10, 3.0,
               what="10 slow requests at the backends")
    dns.set_hosts({NAME: addrs(bs[:1])})
    wait_until(lambda: all(states(u).get(b.name) in ("draining", None) for b in bs[1:]), 3.0,
               what="4 backends draining")
    for bg in slow:
        r, _ = bg.join(5.0)
        assert r.status == 200 and r.complete, r
    assert sum(len(b.reqs("/slow")) for b in bs[1:]) > 0, "no slow request on a drained one"
    wait_states(u, healthy(bs[:1]), timeout=8.0, what="1 backend left")
    served_before = dict(load.ok)
    load.run_for(1.0)
    load.stop()
    assert load.errors == [], load.summary()
    for b in bs[1:]:
        assert load.ok.get(b.name, 0) == served_before.get(b.name, 0), \
            "%s served after it drained: %s" % (b.name, load.summary())
        assert ("healthy", "draining", "dns") in state_transitions(u, b.name), u.log()
    assert load.ok.get(bs[0].name, 0) > served_before.get(bs[0].name, 0)
    assert pool_status(u)["discover"]["addresses"] == [bs[0].name]
    print("scale 2 -> 5 -> 1: %d requests, %d errors" % (load.total, len(load.errors)))


def test_dns_down_for_less_than_hold_drains_nothing(servers, dns, usher_factory):
    port = free_port()
    bs = start_backends(servers, port, 3)
    dns.set_hosts({NAME: addrs(bs)})
    u = usher_factory(discover_config(dns.port, port, hold="2s"))
    wait_states(u, healthy(bs))
    load = servers.add(Load(u.port, threads=2, duration=20.0).start())

    dns.kill()
    st = wait_until(lambda: pool_status(u)["discover"]["last_error"], 3.0,
                    what="/status to say DNS fails")
    assert "DNS" in st, st
    load.run_for(1.5)  # less than hold
    assert states(u) == healthy(bs)
    # and longer than hold: a DNS outage never drains a fleet either
    load.run_for(1.5)
    assert states(u) == healthy(bs)
    d = pool_status(u)["discover"]
    assert d["addresses"] == sorted(b.name for b in bs)
    assert d["resolved_age_ms"] >= 2500, d

    dns.restart()
    wait_until(lambda: pool_status(u)["discover"]["last_error"] is None, 3.0,
               what="discovery to recover")
    load.stop()
    assert load.errors == [], load.summary()
    assert not [t for t in state_transitions(u) if t[1] == "draining"], u.log()
    assert u.log_lines("discover failed"), u.log()


def test_startup_without_dns_then_fills(servers, tmp_path, usher_factory):
    port = free_port()
    bs = start_backends(servers, port, 2)
    dns = Dnsmasq(tmp_path)
    dns.port = free_dns_port()  # nothing listens there yet: queries are refused
    dns.set_hosts({NAME: addrs(bs)})
    u = usher_factory(discover_config(dns.port, port))  # waits for /ready: usher runs

    p = pool_status(u)
    assert p["backends"] == []
    assert p["discover"]["addresses"] == []
    assert p["discover"]["last_error"] == "Could not contact DNS servers", p
    assert p["discover"]["resolved_age_ms"] is None
    assert http_get(u.port, "/")[0] == 503

    servers.add(dns.restart())
    wait_states(u, healthy(bs), what="the pool to fill once DNS answers")
    wait_until(lambda: http_get(u.port, "/")[0] == 200, 3.0, what="a 200 through the pool")
    d = pool_status(u)["discover"]
    assert d["last_error"] is None and d["resolved_age_ms"] < 1000, d


def test_empty_answer_believed_after_hold(servers, dns, usher_factory):
    port = free_port()
    bs = start_backends(servers, port, 2)
    dns.set_hosts({NAME: addrs(bs)})
    u = usher_factory(discover_config(dns.port, port, hold="1500ms", health=False))
    wait_states(u, healthy(bs))

    dns.set_hosts({})  # NXDOMAIN: a Service scaled to zero
    t0 = time.monotonic()
    wait_until(lambda: pool_status(u)["discover"]["last_error"], 2.0, what="the empty answer")
    assert states(u) == healthy(bs)
    wait_until(lambda: states(u) == {}, 4.0, what="the pool to empty after hold")
    assert time.monotonic() - t0 >= 1.4
    for b in bs:
        assert ("healthy", "draining", "dns") in state_transitions(u, b.name), u.log()
    assert http_get(u.port, "/")[0] == 503
    assert u.log_lines("discover emptied"), u.log()

    dns.set_hosts({NAME: addrs(bs)})
    wait_states(u, healthy(bs), what="the pool to refill")


def test_reload_keeps_discovered_backends(servers, dns, usher_factory):
    port = free_port()
    bs = start_backends(servers, port, 2)
    static = servers.add(Backend("static-1").start())
    dns.set_hosts({NAME: addrs(bs)})
    u = usher_factory(discover_config(dns.port, port, static=[static]))
    want = dict(healthy(bs), **{"static-1": "healthy"})
    wait_states(u, want)

    # a reload that changes the pool (its health check): the diff knows only
    # static-1, the discovered backends stay as they are
    cfg = copy.deepcopy(u.cfg)
    cfg["pools"][0]["health_check"] = hc_opts(interval="150ms", timeout="80ms", healthy=1)
    assert reload_and_wait(u, cfg)[0] == "done"
    time.sleep(0.5)  # a few intervals
    assert states(u) == want
    assert not [t for t in state_transitions(u) if t[1] == "draining"], u.log()

    # a reload that drops `discover` drains what it found
    del cfg["pools"][0]["discover"]
    assert reload_and_wait(u, cfg)[0] == "done"
    wait_states(u, {"static-1": "healthy"}, what="discovered backends gone")
    assert "discover" not in pool_status(u)


def test_srv_records_give_port_and_weight(servers, tmp_path, usher_factory):
    p1, p2 = free_port(), free_port()
    b1 = servers.add(Backend("127.0.0.2:%d" % p1, port=p1, host="127.0.0.2").start())
    b2 = servers.add(Backend("127.0.0.3:%d" % p2, port=p2, host="127.0.0.3").start())
    srv = "_http._tcp." + NAME
    dns = servers.add(Dnsmasq(tmp_path, extra=[
        "--srv-host=%s,a.%s,%d,0,3" % (srv, NAME, p1),
        "--srv-host=%s,b.%s,%d,0,1" % (srv, NAME, p2),
        "--srv-host=%s,c.%s,%d,1,1" % (srv, NAME, p2),  # a backup (priority 1): not used
    ]).start())
    dns.set_hosts({"a." + NAME: ["127.0.0.2"], "b." + NAME: ["127.0.0.3"],
                   "c." + NAME: ["127.0.0.4"]})
    cfg = make_config(pools={"blue": []}, pool_opts={"blue": {
        "discover": {"dns": srv, "srv": True, "interval": INTERVAL}}},
        extra={"resolver": {"nameservers": ["127.0.0.1:%d" % dns.port]}})
    u = usher_factory(cfg)
    wait_states(u, {b1.name: "healthy", b2.name: "healthy"})
    weights = {b["name"]: b["weight"] for b in pool_status(u)["backends"]}
    assert weights == {b1.name: 3, b2.name: 1}
    got = {http_get(u.port, "/")[2].decode() for _ in range(8)}
    assert got == {b1.name, b2.name}


def test_ipv6_addresses_are_bracketed(servers, dns, usher_factory):
    port = free_port()
    dns.set_hosts({NAME: ["::1", "127.0.0.2"]})
    u = usher_factory(discover_config(dns.port, port, health=False))
    want = {"[::1]:%d" % port: "healthy", "127.0.0.2:%d" % port: "healthy"}
    wait_states(u, want)
    d = pool_status(u)["discover"]
    assert d["dns"] == NAME
    assert d["addresses"] == sorted(want)
    for b in pool_status(u)["backends"]:
        assert b["address"] == b["name"]


def test_kubernetes_example_discovers(usher_bin, tmp_path):
    """conf/kubernetes.yaml: its usher.yaml is valid and its pools discover
    (so a missing Service cannot keep usher from starting)."""
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    text = open(os.path.join(repo, "conf", "kubernetes.yaml")).read()
    lines = text.split("  usher.yaml: |\n", 1)[1].split("\n---\n", 1)[0].splitlines()
    body = "\n".join(l[4:] for l in lines) + "\n"
    path = tmp_path / "usher.yaml"
    path.write_text(body)
    p = subprocess.run([usher_bin, "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=10)
    assert (p.returncode, p.stdout, p.stderr) == (0, "configuration ok\n", "")
    assert body.count("discover:") == 2 and "address:" not in body
    assert text.count("clusterIP: None") == 2


def test_reload_with_an_unresolvable_name_is_not_fatal(servers, dns, usher_factory):
    port = free_port()
    bs = start_backends(servers, port, 1)
    dns.set_hosts({NAME: addrs(bs)})
    u = usher_factory(discover_config(dns.port, port, health=False))
    wait_states(u, healthy(bs))

    cfg = copy.deepcopy(u.cfg)
    cfg["pools"].append({"name": "green", "backends": [],
                         "discover": {"dns": "nope.test", "port": port, "interval": INTERVAL}})
    cfg["listeners"][0]["pools"] = {"blue": 100, "green": 100}
    assert reload_and_wait(u, cfg)[0] == "done"
    green = wait_until(lambda: pool_status(u, "green")["discover"]["last_error"] not in
                       (None, "not resolved yet") and pool_status(u, "green")["discover"]["last_error"],
                       3.0, what="green's discovery to fail")
    assert green == "Domain name not found"
    assert pool_status(u, "green")["backends"] == []
    assert states(u) == healthy(bs)
    for _ in range(4):  # the empty pool takes no share of the split
        st, _, body = http_get(u.port, "/")
        assert (st, body.decode()) == (200, bs[0].name)
