"""h2load (nghttp2-client) through usher across every deploy motion (issue 21
item 7, DESIGN "HTTP/2 and gRPC" and "The reload", "The upgrade", "The
process drain"): many streams on each connection, over TLS (ALPN h2) and
h2c at once, across 20 reloads (some removing and re-adding a pool), 5
binary upgrades and a SIGTERM with drain_delay — no stream failed, errored,
cut or answered other than 2xx, and streams were in flight across every
motion.

How h2load counts, and why "started == done" is checked too: h2load never
opens a new HTTP/2 connection after the server closed one (a drain), and in
duration mode (-D) its final sum, req_not_issued = req_todo - succeeded -
failed, cancels the streams a closed connection took with it: a run whose
streams were all cut prints "128 started, 0 done, 0 failed, 0 errored"
(test_cut_streams_show_as_started_not_done). So a motion that closes the
connections (upgrade, SIGTERM) runs h2load in -D mode, long enough that the
drain has closed every connection before it ends, and a stream lost shows as
started > done. The reloads keep the connections: there h2load runs a
bounded count of requests (-n) at a bounded rate (--rps), whose every
abandoned stream is counted failed.

Every h2load run is bounded in count or time (and killed past a deadline);
the rate is bounded (--rps) so the shared machine keeps up."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import usher_proc
import wire
from h2client import H2Conn, tls_context

H2LOAD = shutil.which("h2load")
CONNS, STREAMS = 8, 16   # h2load -c -m: many streams on each connection
RPS = 40                 # requests per second per connection (h2load --rps)
SLOW_MS = 200            # each answer takes this long: ~RPS*SLOW_MS/1000 streams in flight each
PATH = "/slow?ms=%d" % SLOW_MS
# what the summary says (nghttp2 1.52 h2load)
SUMMARY = r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, " \
          r"(\d+) errored, (\d+) timeout"
CODES = r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx"

pytestmark = pytest.mark.skipif(H2LOAD is None, reason="h2load (nghttp2-client) is needed")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("h2loadcert")
    c, k = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", k, "-out", c], check=True, capture_output=True, timeout=30)
    return c, k


class H2Load:
    """One h2load run in the background: -t1 -c CONNS -m STREAMS --rps RPS,
    -D <duration> seconds or -n <requests>, per-stream log in a file."""

    def __init__(self, url, log_file, duration=None, requests=None, path=PATH):
        self.url = url
        self.log_file = log_file
        argv = [H2LOAD, "-t1", "-c%d" % CONNS, "-m%d" % STREAMS, "--rps=%d" % RPS,
                "--log-file=%s" % log_file]
        argv += ["-D", str(duration)] if duration else ["-n", str(requests)]
        if url.startswith("https:"):
            argv.append("--npn-list=h2")  # h2 or nothing: no silent HTTP/1.1
        argv.append(url + path.lstrip("/"))
        self.argv = argv
        self.budget = (duration or requests / (CONNS * RPS)) + 30.0
        self.out = None
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)

    def running(self):
        return self.proc.poll() is None

    def finish(self):
        """Waits for the summary (bounded); returns the parsed counts."""
        if self.out is not None:
            return self.summary()
        try:
            self.out, _ = self.proc.communicate(timeout=self.budget)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("h2load still running after %.0fs: %s" % (self.budget, self.argv))
        return self.summary()

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate(timeout=5)

    def summary(self):
        m = re.search(SUMMARY, self.out or "")
        assert m, "h2load printed no summary:\n%s" % self.out
        keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
        s = dict(zip(keys, (int(v) for v in m.groups())))
        c = re.search(CODES, self.out)
        s.update(zip(("2xx", "3xx", "4xx", "5xx"), (int(v) for v in c.groups())))
        p = re.search(r"Application protocol: (\S+)", self.out)
        s["protocol"] = p.group(1) if p else None
        return s

    def streams(self):
        """[(start, end, status)] of every stream h2load closed (wall clock
        seconds; status -1: closed without a response)."""
        rows = []
        with open(self.log_file) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) >= 3:
                    start = int(cols[0]) / 1e6
                    rows.append((start, start + int(cols[2]) / 1e6, int(cols[1])))
        return rows

    def crossing(self, t):
        """Streams answered 2xx that were in flight at wall-clock time <t>."""
        return [r for r in self.streams() if r[0] < t < r[1] and 200 <= r[2] < 300]


def check_clean(run, what, duration_mode):
    """Every stream h2load sent was answered 2xx: nothing reset, refused,
    timed out, answered otherwise, or cut with its connection. The only
    streams h2load may count failed (and errored) are the ones it never
    sent: submitted just before it read usher's GOAWAY, they were closed
    by its own nghttp2 (REFUSED_STREAM, RFC 9113 6.8: the client must not
    open them; h2load retries nothing), and its log shows them with no
    send time. Returns the summary, with "unsent" added."""
    s = run.finish()
    want_proto = "h2" if run.url.startswith("https:") else "h2c"
    assert s["protocol"] == want_proto, "%s: protocol %r\n%s" % (what, s["protocol"], run.out)
    rows = run.streams()
    unsent = [r for r in rows if r[0] == 0 and r[2] == -1]
    sent_bad = [r for r in rows if r[0] != 0 and not 200 <= r[2] < 300]
    assert not sent_bad, "%s: streams sent and not answered 2xx: %r\n%s" % (what, sent_bad[:10],
                                                                           run.out)
    s["unsent"] = len(unsent)
    bad = {k: s[k] for k in ("timeout", "3xx", "4xx", "5xx") if s[k]}
    if s["failed"] != len(unsent) or s["errored"] != len(unsent):
        bad.update(failed=s["failed"], errored=s["errored"], unsent=len(unsent))
    assert not bad, "%s: %r\n%s" % (what, bad, run.out)
    assert s["started"] == s["done"], \
        "%s: streams started but never answered (cut with their connection)\n%s" % (what, run.out)
    assert s["succeeded"] == s["2xx"] == s["done"] - len(unsent) == len(rows) - len(unsent), \
        "%s: %r, %d streams logged\n%s" % (what, s, len(rows), run.out)
    assert s["succeeded"] > 0, "%s: no stream answered\n%s" % (what, run.out)
    if not duration_mode:
        assert s["done"] == s["total"], "%s\n%s" % (what, run.out)
    return s


def two_listeners(pools, split, cert):
    """Listener "tls" (h2 by ALPN) and "h2c" (prior knowledge), same split."""
    c, k = cert
    return usher_proc.make_config(
        pools=pools, listeners=[
            {"name": "tls", "pools": dict(split), "tls": {"cert": c, "key": k}},
            {"name": "h2c", "pools": dict(split)}],
        shutdown={"timeout": "10s"})


def urls(u):
    return ("https://127.0.0.1:%d/" % u.ports["tls"], "http://127.0.0.1:%d/" % u.ports["h2c"])


def start_runs(u, tmp_path, tag, **kw):
    return [H2Load(url, str(tmp_path / ("h2load-%s-%s.log" % (tag, proto))), **kw)
            for url, proto in zip(urls(u), ("tls", "h2c"))]


# --- reloads: the connections stay, so a bounded count of requests ------------------------

RELOADS = 20
RELOAD_GAP_S = 0.25       # load flows between two reloads
RELOAD_RUN_S = 12         # h2load's length (requests / (CONNS * RPS)): longer than the reloads


def test_h2load_across_20_reloads_removing_and_readding_pools(backend_factory, usher_factory,
                                                              tmp_path, cert):
    blue, green = backend_factory("blue-1"), backend_factory("green-1")
    both = {"blue": [blue], "green": [green]}
    configs = {  # every other reload removes a pool, the next puts it back
        "both": two_listeners(both, {"blue": 100, "green": 100}, cert),
        "blue": two_listeners({"blue": [blue]}, {"blue": 100}, cert),
        "green": two_listeners({"green": [green]}, {"green": 100}, cert),
    }
    u = usher_factory(configs["both"])
    for name in ("blue", "green"):  # same ports as the first config
        for l, l0 in zip(configs[name]["listeners"], configs["both"]["listeners"]):
            l["bind"] = l0["bind"]
        configs[name]["admin"] = configs["both"]["admin"]
    runs = start_runs(u, tmp_path, "reload", requests=CONNS * RPS * RELOAD_RUN_S)
    try:
        time.sleep(1.0)
        order = ["blue", "both", "green", "both"] * (RELOADS // 4)
        at = []
        for i, name in enumerate(order):
            kind, gen = usher_proc.reload_and_wait(u, configs[name], timeout=10.0)
            assert kind == "done", "reload %d (%s): %s\n%s" % (i + 1, name, kind, u.log()[-3000:])
            at.append(time.time())
            time.sleep(RELOAD_GAP_S)
        assert gen == RELOADS + 1
        assert all(r.running() for r in runs), \
            "h2load ended before the last reload: the reloads were not all under load"
        results = [check_clean(r, "reloads over %s" % r.url[:5], duration_mode=False)
                   for r in runs]
    finally:
        for r in runs:
            r.kill()
    # streams were in flight across the reloads, and both pools served
    for r in runs:
        crossed = [t for t in at if r.crossing(t)]
        assert len(crossed) >= RELOADS - 2, "%s: streams across only %d of %d reloads" % (
            r.url, len(crossed), RELOADS)
    assert blue.reqs() and green.reqs()
    m = u.metrics()
    assert m.get("usher_config_reloads_total", result="ok") == RELOADS
    print("20 reloads: %s" % ", ".join("%s %d streams answered, %d failed" % (
        s["protocol"], s["succeeded"], s["failed"]) for s in results))


# --- upgrades and SIGTERM: the drain closes the connections -------------------------------

UPGRADES = 5
MOTION_AFTER_S = 0.8      # h2load runs this long before the signal
DRAIN_RUN_S = 3           # h2load -D: the drain must be over (every connection closed) before


def stop_pid(pid, timeout=5.0):
    if pid and wire.pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        try:
            wire.wait_until(lambda: not wire.pid_alive(pid), timeout, what="pid %d to exit" % pid)
        except AssertionError:
            os.kill(pid, signal.SIGKILL)


def test_h2load_across_5_upgrades(backend_factory, usher_bin, tmp_path, cert):
    """Each upgrade under a fresh h2load (the old process's drain closes its
    connections, and h2load opens no new one): the old process sends both
    GOAWAYs, answers every stream, and exits; the new one serves the next
    run. idle_close stays `now`: an idle HTTP/2 connection is closed with
    the two GOAWAYs, which lose nothing (after_request is for HTTP/1.1
    clients that reuse a connection without waiting for a close)."""
    b = backend_factory("blue-1")
    binary = str(tmp_path / "usher-bin")
    shutil.copy(usher_bin, binary)
    cfg = two_listeners({"blue": [b]}, {"blue": 100}, cert)
    cfg["upgrade"] = {"timeout": "5s"}
    u = usher_proc.Usher(binary, cfg, tmp_path)
    u.start()
    made, runs = [], []
    pid = u.pid
    try:
        for i in range(UPGRADES):
            runs = start_runs(u, tmp_path, "upgrade%d" % i, duration=DRAIN_RUN_S)
            time.sleep(MOTION_AFTER_S)
            t_sig = time.time()
            os.kill(pid, signal.SIGUSR2)
            wire.wait_until(lambda: not wire.pid_alive(pid), 8.0,
                            what="old usher %d to drain and exit (upgrade %d)" % (pid, i + 1))
            assert all(r.running() for r in runs), \
                "h2load ended before the old process drained (upgrade %d): lengthen DRAIN_RUN_S" % (i + 1)
            new = u.status_json()["pid"]
            assert new != pid
            made.append(new)
            pid = new
            for r in runs:
                s = check_clean(r, "upgrade %d over %s" % (i + 1, r.url[:5]), duration_mode=True)
                crossing = len(r.crossing(t_sig))
                assert crossing, "upgrade %d: no stream in flight at SIGUSR2 (%r)" % (i + 1, s)
                print("upgrade %d %s: %d streams answered, %d across SIGUSR2, %d never sent" % (
                    i + 1, s["protocol"], s["succeeded"], crossing, s["unsent"]))
            runs = []
        assert u.proc.wait(5) == 0, u.log()[-3000:]
        log = u.log()
        assert log.count("upgrade ready") == UPGRADES
        # the last process serves both listeners
        for port, ctx in ((u.ports["tls"], tls_context(cert[0])), (u.ports["h2c"], None)):
            c = H2Conn(port, tls_ctx=ctx)
            assert c.get("/").status == 200
            c.close()
    finally:
        for r in runs:
            r.kill()
        for p in made:
            stop_pid(p)
        u.stop(timeout=5.0, check=False)
    assert not u.sanitizer_report(), u.sanitizer_report()


def test_h2load_across_sigterm_with_drain_delay(backend_factory, usher_factory, tmp_path, cert):
    """SIGTERM with drain_delay: from the first step each connection is
    drained at its next stream (both GOAWAYs), every stream is answered,
    and usher exits 0 once the last connection closed."""
    b = backend_factory("blue-1")
    cfg = two_listeners({"blue": [b]}, {"blue": 100}, cert)
    cfg["shutdown"] = {"drain_delay": "1s", "timeout": "10s"}
    u = usher_factory(cfg)
    runs = start_runs(u, tmp_path, "sigterm", duration=DRAIN_RUN_S + 1)
    try:
        time.sleep(MOTION_AFTER_S)
        t_sig = time.time()
        u.send_signal(signal.SIGTERM)
        assert u.wait_exit(15) == 0, u.log()[-3000:]
        assert all(r.running() for r in runs), "h2load ended before usher drained"
        for r in runs:
            s = check_clean(r, "SIGTERM over %s" % r.url[:5], duration_mode=True)
            crossing = len(r.crossing(t_sig))
            assert crossing, "no stream in flight at SIGTERM"
            print("SIGTERM %s: %d streams answered, %d across SIGTERM, %d never sent" % (
                s["protocol"], s["succeeded"], crossing, s["unsent"]))
    finally:
        for r in runs:
            r.kill()
    assert "shutdown drained" in u.log()


def test_cut_streams_show_as_started_not_done(backend_factory, usher_factory, tmp_path):
    """The check above can fail: streams cut by the drain's deadline leave
    h2load's failed and errored counts at 0 in -D mode, and show as started
    and never done."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"timeout": "200ms"})
    run = H2Load("http://127.0.0.1:%d/" % u.port, str(tmp_path / "h2load-cut.log"),
                 duration=DRAIN_RUN_S, path="/slow?ms=5000")
    try:
        time.sleep(MOTION_AFTER_S)
        u.send_signal(signal.SIGTERM)
        assert u.wait_exit(10) == 1
        s = run.finish()
    finally:
        run.kill()
    assert s["started"] > 0 and s["done"] < s["started"], s
    with pytest.raises(AssertionError, match="started but never answered"):
        check_clean(run, "cut", duration_mode=True)
