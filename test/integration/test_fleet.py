"""Fleet control through etcd (DESIGN.md "Discovery and fleets"): a real
etcd (Debian etcd-server) on loopback ports with its data in the test's
temp folder, three usher instances in one fleet.

  - `usher ctl switch` against one instance flips all three within 1 s
    under load, 0 client errors (20 flips: median and max are printed and
    written to fleet-figures.json in the temp folder)
  - `--wait-drained` returns only after a slow request on the old pool
    finished on the slowest instance
  - etcd killed mid-run: traffic unaffected, /status fleet.connected false,
    a mutation gets 503 {"error"}, a switch applies once etcd is back
  - etcd restarted with its data: every instance and etcd agree
  - an instance killed leaves the instance list within its lease; one
    stopped cleanly (SIGTERM) leaves at once (its lease revoked)

Standard library only; every server on 127.0.0.1; every wait bounded;
every process stopped at teardown."""

import base64
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time

import pytest

import usher_proc
import wire
from admin_util import admin, ctl, listener_of
from load import Load
from servers import Backend

HOST = wire.HOST
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PREFIX = "/usher-test/"
LEASE_S = 10  # fleet.h FLEET_LEASE_TTL_S
FLIPS = 20

pytestmark = pytest.mark.skipif(not os.access(ETCD, os.X_OK),
                                reason="etcd not installed (Debian etcd-server; scripts/deps test)")


class Etcd:
    """One etcd member on loopback ports, data in <data_dir>."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.data_dir = os.path.join(self.workdir, "etcd-data")
        self.client_port = wire.free_port()
        self.peer_port = wire.free_port()
        self.proc = None
        self.log = None

    @property
    def endpoint(self):
        return "%s:%d" % (HOST, self.client_port)

    def start(self, timeout=10.0):
        c = "http://%s:%d" % (HOST, self.client_port)
        q = "http://%s:%d" % (HOST, self.peer_port)
        self.log = open(os.path.join(self.workdir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "default", "--data-dir", self.data_dir,
             "--listen-client-urls", c, "--advertise-client-urls", c,
             "--listen-peer-urls", q, "--initial-advertise-peer-urls", q,
             "--initial-cluster", "default=" + q, "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        wire.wait_until(self.healthy, timeout, interval=0.05, what="etcd healthy")
        return self

    def healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("etcd exited with %s" % self.proc.returncode)
        try:
            return self.post("/v3/kv/range", {"key": b64("/")}) is not None
        except OSError:
            return False

    def post(self, path, body, timeout=2.0):
        c = http.client.HTTPConnection(HOST, self.client_port, timeout=timeout)
        try:
            c.request("POST", path, body=json.dumps(body))
            r = c.getresponse()
            data = r.read()
            return json.loads(data) if r.status == 200 else None
        finally:
            c.close()

    def keys(self, prefix):
        """{key: value} under <prefix>."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = self.post("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)})
        return {unb64(kv["key"]): unb64(kv.get("value", "")) for kv in r.get("kvs", [])}

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log:
            self.log.close()
            self.log = None


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode()


def split_of(u):
    return listener_of(u.status_json(), "web")["pools"]


def fleet_of(u):
    return u.status_json()["fleet"]


@pytest.fixture(scope="module")
def fleet(usher_bin, tmp_path_factory):
    """etcd, blue-1 and green-1, three ushers u0 u1 u2 in fleet PREFIX."""
    tmp = tmp_path_factory.mktemp("fleet")
    etcd = Etcd(tmp)
    backends, ushers = [], []
    try:
        etcd.start()
        blue = Backend("blue-1").start()
        green = Backend("green-1").start()
        backends += [blue, green]
        for i in range(3):
            cfg = usher_proc.make_config(
                pools={"blue": [blue], "green": [green]}, split={"blue": 100, "green": 0},
                extra={"fleet": {"etcd": [etcd.endpoint], "prefix": PREFIX,
                                 "instance": "u%d" % i}})
            u = usher_proc.Usher(usher_bin, cfg, tmp, name="u%d" % i)
            ushers.append(u)
            u.start(wait_ready=True, timeout=10.0)
        for u in ushers:
            wire.wait_until(lambda u=u: len(fleet_of(u)["instances"]) == 3, 5.0,
                            what="%s sees three instances" % u.name)
        yield {"etcd": etcd, "ushers": ushers, "tmp": tmp, "blue": blue, "green": green}
    finally:
        reports = []
        for u in ushers:
            if u.running():
                u.stop()
            rep = u.sanitizer_report()
            if rep:
                reports.append("%s: %s" % (u.name, rep))
        for b in backends:
            b.stop(timeout=2.0)
        etcd.stop()
        assert not reports, "\n".join(reports)


def wait_split(ushers, want, timeout):
    """Seconds until every usher shows split <want> (AssertionError after
    <timeout>)."""
    t0 = time.monotonic()
    wire.wait_until(lambda: all(split_of(u) == want for u in ushers), timeout, interval=0.005,
                    what="split %r on every instance" % want)
    return time.monotonic() - t0


def test_switch_flips_every_instance_within_1s_under_load(usher_bin, fleet):
    ushers = fleet["ushers"]
    loads = [Load(u.port, threads=2, duration=120.0).start() for u in ushers]
    latencies = []
    try:
        wire.wait_until(lambda: all(len(l.records) > 20 for l in loads), 5.0, what="load")
        for i in range(FLIPS):
            to = "green" if i % 2 == 0 else "blue"
            want = {"blue": 0, "green": 100} if to == "green" else {"blue": 100, "green": 0}
            via = ushers[i % 3]
            t0 = time.monotonic()
            p = subprocess.Popen([usher_bin, "ctl", "-c", via.cfg_path, "switch", "web", to],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL)
            wait_split(ushers, want, 3.0)
            latencies.append(time.monotonic() - t0)
            out, err = p.communicate(timeout=10)
            assert p.returncode == 0, out + err
        time.sleep(0.2)
    finally:
        for l in loads:
            l.stop()
    errors = [e for l in loads for e in l.errors]
    assert not errors, errors[:5]
    med, mx = statistics.median(latencies), max(latencies)
    figures = {"flips": FLIPS, "median_s": round(med, 4), "max_s": round(mx, 4),
               "requests": sum(len(l.records) for l in loads), "client_errors": len(errors)}
    with open(os.path.join(str(fleet["tmp"]), "fleet-figures.json"), "w") as f:
        json.dump(figures, f)
    print("fleet flip latency over %d flips: median %.3fs max %.3fs (%d requests, 0 errors)"
          % (FLIPS, med, mx, figures["requests"]))
    assert mx < 1.0, latencies
    # the last flip went to blue: every request after it lands on blue
    assert split_of(ushers[0]) == {"blue": 100, "green": 0}
    keys = fleet["etcd"].keys(PREFIX + "overrides/")
    assert json.loads(keys[PREFIX + "overrides/split/web"])["split"] == [
        {"pool": "blue", "weight": 100}, {"pool": "green", "weight": 0}]


def test_wait_drained_waits_for_the_slowest_instance(usher_bin, fleet):
    u0, u1, u2 = fleet["ushers"]
    wait_split(fleet["ushers"], {"blue": 100, "green": 0}, 2.0)
    slow = {}

    def slow_request():
        slow["status"] = wire.http_get(u2.port, "/slow?ms=2000", timeout=15)[0]
        slow["done"] = time.monotonic()

    t = threading.Thread(target=slow_request)
    t.start()
    try:
        wire.wait_until(lambda: u2.backend_status("blue", "blue-1")["inflight_requests"] >= 1,
                        3.0, what="the slow request on u2's blue")
        t0 = time.monotonic()
        r = ctl(usher_bin, u0, "switch", "web", "green", "--wait-drained", "20s")
        t_done = time.monotonic()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "drained:" in r.stdout.splitlines()[-1], r.stdout
        assert "blue@u2" in r.stdout, r.stdout  # it saw u2's request in its progress
    finally:
        t.join(10)
    assert slow.get("status") == 200
    assert slow["done"] <= t_done, "ctl returned before the slow request on u2 finished"
    assert t_done - t0 >= 1.0
    # POST /pools/{pool}/drain?wait= waits fleet-wide too
    t = threading.Thread(target=lambda: wire.http_get(u1.port, "/slow?ms=1500", timeout=15))
    admin(u0, "POST", "/pools/green/ready")
    wait_split(fleet["ushers"], {"blue": 0, "green": 100}, 2.0)
    wire.wait_until(lambda: all(u.backend_status("green", "green-1")["state"] == "healthy"
                                for u in fleet["ushers"]), 3.0, what="green ready everywhere")
    t.start()
    wire.wait_until(lambda: u1.backend_status("green", "green-1")["inflight_requests"] >= 1, 3.0,
                    what="the slow request on u1's green")
    t0 = time.monotonic()
    st, body, _ = admin(u0, "POST", "/pools/green/drain?wait=10s&deadline=30s", timeout=15)
    waited = time.monotonic() - t0
    t.join(10)
    assert st == 200 and body["drained"] is True, body
    assert waited >= 0.8, "the drain wait did not wait for u1 (%.2fs)" % waited
    for u in fleet["ushers"]:
        wire.wait_until(lambda u=u: u.backend_status("green", "green-1")["reason"] == "admin",
                        2.0, what="green drained on %s" % u.name)
    st, body, _ = admin(u2, "POST", "/pools/green/ready")
    assert st == 200, body
    for u in fleet["ushers"]:
        wire.wait_until(lambda u=u: u.backend_status("green", "green-1")["reason"] != "admin",
                        2.0, what="green ready on %s" % u.name)
    r = ctl(usher_bin, u1, "switch", "web", "blue")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_split(fleet["ushers"], {"blue": 100, "green": 0}, 1.0)


def test_frozen_etcd_a_write_is_503_and_every_instance_agrees(fleet):
    """etcd stops answering (SIGSTOP) while its sockets stay open: the API
    answer waits for etcd's confirmation, gets none within the call
    timeout and is a 503; once etcd answers again every instance runs
    exactly what etcd has."""
    etcd, ushers = fleet["etcd"], fleet["ushers"]
    wait_split(ushers, {"blue": 100, "green": 0}, 2.0)
    os.kill(etcd.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        st, body, _ = admin(ushers[1], "POST", "/listeners/web/split", {"blue": 0, "green": 100})
        took = time.monotonic() - t0
        assert st == 503 and "etcd" in body["error"], (st, body)
        assert took < 4.0
        # the instance that took it went back to what it last saw from etcd
        assert split_of(ushers[1]) == {"blue": 100, "green": 0}
    finally:
        os.kill(etcd.proc.pid, signal.SIGCONT)
    for u in ushers:
        wire.wait_until(lambda u=u: fleet_of(u)["connected"] is True, 8.0,
                        what="%s reconnected" % u.name)

    def agreed():
        rec = json.loads(etcd.keys(PREFIX + "overrides/")[PREFIX + "overrides/split/web"])
        want = {s["pool"]: s["weight"] for s in rec["split"]}
        return all(split_of(u) == want for u in ushers) and want
    want = wire.wait_until(agreed, 3.0, what="every instance runs etcd's split")
    if want != {"blue": 100, "green": 0}:  # etcd applied the write after all: undo it
        st, body, _ = admin(ushers[0], "POST", "/listeners/web/split", {"blue": 100, "green": 0})
        assert st == 200, body
        wait_split(ushers, {"blue": 100, "green": 0}, 1.0)


def test_etcd_outage_and_restart_with_its_data(usher_bin, fleet):
    etcd, ushers = fleet["etcd"], fleet["ushers"]
    wait_split(ushers, {"blue": 100, "green": 0}, 2.0)
    loads = [Load(u.port, threads=2, duration=120.0).start() for u in ushers]
    try:
        wire.wait_until(lambda: all(len(l.records) > 20 for l in loads), 5.0, what="load")
        t_kill = time.monotonic()
        etcd.kill()
        for u in ushers:
            wire.wait_until(lambda u=u: fleet_of(u)["connected"] is False, 3.0,
                            what="%s sees etcd down" % u.name)
        t_noticed = time.monotonic() - t_kill
        before = [len(l.records) for l in loads]
        # a mutation is refused: a switch never half happens
        st, body, _ = admin(ushers[1], "POST", "/listeners/web/split", {"blue": 0, "green": 100})
        assert st == 503 and "etcd" in body["error"], (st, body)
        r = ctl(usher_bin, ushers[0], "switch", "web", "green")
        assert r.returncode == 1 and "503" in r.stderr, r.stdout + r.stderr
        time.sleep(1.5)
        assert all(split_of(u) == {"blue": 100, "green": 0} for u in ushers)
        assert all(len(l.records) > b + 20 for l, b in zip(loads, before)), "traffic stalled"
        assert any("fleet disconnected" in u.log() for u in ushers)
        # etcd back with its data: every instance catches up (backoff <= 5 s)
        t_back = time.monotonic()
        etcd.start()
        for u in ushers:
            wire.wait_until(lambda u=u: fleet_of(u)["connected"] is True, 8.0,
                            what="%s reconnected" % u.name)
        t_caught_up = time.monotonic() - t_back
        # state consistent: etcd kept the last split, every instance agrees
        keys = etcd.keys(PREFIX + "overrides/")
        assert json.loads(keys[PREFIX + "overrides/split/web"])["split"][0] == {
            "pool": "blue", "weight": 100}
        assert all(split_of(u) == {"blue": 100, "green": 0} for u in ushers)
        # every instance has seen the same history up to the same revision
        wire.wait_until(lambda: len({fleet_of(u)["revision"] for u in ushers}) == 1, 3.0,
                        what="one revision on every instance")
        wire.wait_until(lambda: len(etcd.keys(PREFIX + "instances/")) == 3, 5.0,
                        what="three instance keys")
        # a later switch applies on every instance
        r = ctl(usher_bin, ushers[2], "switch", "web", "green")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_split(ushers, {"blue": 0, "green": 100}, 1.0)
        r = ctl(usher_bin, ushers[0], "switch", "web", "blue")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_split(ushers, {"blue": 100, "green": 0}, 1.0)
        time.sleep(0.2)
    finally:
        for l in loads:
            l.stop()
    errors = [e for l in loads for e in l.errors]
    assert not errors, errors[:5]
    print("etcd outage: noticed by every instance in %.2fs, caught up %.2fs after etcd "
          "returned, 0 client errors over %d requests"
          % (t_noticed, t_caught_up, sum(len(l.records) for l in loads)))
    with open(os.path.join(str(fleet["tmp"]), "fleet-outage.json"), "w") as f:
        json.dump({"noticed_s": round(t_noticed, 3), "caught_up_s": round(t_caught_up, 3),
                   "client_errors": len(errors)}, f)


def test_killed_instance_leaves_within_its_lease(fleet):
    u0, u1, u2 = fleet["ushers"]
    ids = lambda: sorted(i["id"] for i in fleet_of(u0)["instances"])
    wire.wait_until(lambda: ids() == ["u0", "u1", "u2"], 5.0, what="three instances")
    t0 = time.monotonic()
    u2.proc.kill()
    u2.proc.wait(5)
    wire.wait_until(lambda: ids() == ["u0", "u1"], LEASE_S + 3.0, interval=0.1,
                    what="u2 out of the instance list")
    gone = time.monotonic() - t0
    assert gone <= LEASE_S + 3.0
    assert PREFIX + "instances/u2" not in fleet["etcd"].keys(PREFIX + "instances/")
    assert sorted(i["id"] for i in fleet_of(u1)["instances"]) == ["u0", "u1"]
    print("killed instance left the list after %.1fs (lease %ds)" % (gone, LEASE_S))
    # a clean stop revokes the lease: the instance leaves at once
    t0 = time.monotonic()
    u1.send_signal(signal.SIGTERM)
    wire.wait_until(lambda: ids() == ["u0"], 2.0, what="u1 out of the list at its clean stop")
    assert u1.wait_exit(5.0) == 0
    assert "fleet left" in u1.log() and "lease revoked" in u1.log()
    print("cleanly stopped instance left the list after %.2fs" % (time.monotonic() - t0))


def test_start_without_etcd_serves_then_joins(usher_factory, backend_factory, tmp_path):
    """etcd is not there at startup: usher starts and serves, mutations get
    503, and it joins the fleet once etcd comes (backoff at most 5 s)."""
    etcd = Etcd(tmp_path)
    b = backend_factory("blue-1")
    g = backend_factory("green-1")
    u = usher_factory(pools={"blue": [b], "green": [g]}, split={"blue": 100, "green": 0},
                      extra={"fleet": {"etcd": [etcd.endpoint], "prefix": "/solo/",
                                       "instance": "solo"}})
    try:
        assert wire.http_get(u.port, "/")[0] == 200
        assert fleet_of(u)["connected"] is False
        st, body, _ = admin(u, "POST", "/listeners/web/split", {"blue": 0, "green": 100})
        assert st == 503 and "error" in body, (st, body)
        etcd.start()
        wire.wait_until(lambda: fleet_of(u)["connected"] is True, 7.0, what="joined")
        st, body, _ = admin(u, "POST", "/listeners/web/split", {"blue": 0, "green": 100})
        assert st == 200, body
        assert split_of(u) == {"blue": 0, "green": 100}
        wire.wait_until(lambda: [i["id"] for i in fleet_of(u)["instances"]] == ["solo"], 3.0,
                        what="its own report")
    finally:
        etcd.stop()
