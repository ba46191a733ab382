"""The multi-threaded data plane (DESIGN.md `workers`, "Ownership and
state": one control thread and N worker threads, each its own event loop,
all accepting from one listening socket per listener; "Every promise of
this page holds with any number of workers").

Each test names `workers` in its config itself (so USHER_TEST_WORKERS does
not change it) and checks what only holds when the workers share the
process: /status and the threads, CPU on more than one thread, `auto`, the
balancers' process-wide state (round-robin split, least_conn in-flight
counts, passive-health streaks), a reload that answers only once every
worker runs the new generation, the process drain, a removed listener's
accept queue, admin drains and /metrics totals summed over the workers.
Real binary, real backends, every wait bounded."""

import concurrent.futures
import os
import shutil
import signal
import socket
import threading
import time

import pytest

import usher_proc
import wire
from admin_util import admin, backend_of
from clients import Background, slow_request
from usher_proc import config_for, reload_and_wait
from wire import HOST, RawConn, build_request

WORKERS = 4
CLK_TCK = os.sysconf("SC_CLK_TCK")
# One request or connect, and the whole of a fan-out, are bounded by these.
REQ_TIMEOUT = 5.0
FAN_OUT_TIMEOUT = 30.0


def start(usher_factory, pools, workers=WORKERS, extra=None, **kw):
    """usher with `workers: <workers>` (the test's own, over USHER_TEST_WORKERS)."""
    extra = dict(extra or {}, workers=workers)
    return usher_factory(pools=pools, extra=extra, **kw)


def one_request(port, path="/"):
    """GET <path> on a new connection: (status, body text, reset)."""
    with RawConn(port, timeout=REQ_TIMEOUT) as c:
        r = c.request("GET", path, timeout=REQ_TIMEOUT)
        return r.status, r.text() if r.complete else None, c.reset


def fan_out(port, n, parallel=8, path="/"):
    """<n> requests, each on its own new connection, from <parallel> client
    threads (so several workers accept them): [(status, body, reset)]."""
    with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
        futs = [ex.submit(one_request, port, path) for _ in range(n)]
        deadline = time.monotonic() + FAN_OUT_TIMEOUT
        return [f.result(timeout=max(0.1, deadline - time.monotonic())) for f in futs]


def bodies(results):
    """{body: count} of the 200 answers; AssertionError naming any other."""
    bad = [r for r in results if r[0] != 200 or r[2]]
    assert not bad, "answers other than a clean 200: %r" % bad[:10]
    out = {}
    for _, body, _ in results:
        out[body] = out.get(body, 0) + 1
    return out


def thread_cpu(pid):
    """{thread id: utime + stime in clock ticks} (/proc/PID/task/TID/stat
    fields 14 and 15; the name in parentheses may hold spaces)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[int(tid)] = int(fields[11]) + int(fields[12])
    return out


class KeepAliveLoad:
    """<n> keep-alive client connections, opened <stagger> s apart (so the
    accepts are spread over time), each sending GET / in a loop until stop()."""

    def __init__(self, port, n, stagger=0.02):
        self.port = port
        self.stagger = stagger
        self.ok = 0
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(n)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(REQ_TIMEOUT + 3.0)
        assert not any(t.is_alive() for t in self._threads), "load threads still running"
        return self

    def _run(self, i):
        if self._stop.wait(i * self.stagger):
            return
        try:
            with RawConn(self.port, timeout=REQ_TIMEOUT) as c:
                while not self._stop.is_set():
                    r = c.request("GET", "/", timeout=REQ_TIMEOUT)
                    if r.status != 200 or r.closed:
                        raise AssertionError("answer %r" % r)
                    with self._lock:
                        self.ok += 1
        except Exception as e:  # pylint: disable=broad-except
            with self._lock:
                self.errors.append("%d: %s: %s" % (i, type(e).__name__, e))


# --- /status, threads, CPU -----------------------------------------------------------

def test_status_reports_workers_and_threads(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = start(usher_factory, {"blue": [b]})
    st = u.status_json()
    assert st["workers"] == WORKERS, st["workers"]
    # one control thread + one per worker (libraries may add more, never fewer)
    wire.wait_until(lambda: len(u.threads()) >= WORKERS + 1, 3.0,
                    what="at least %d threads (now %d)" % (WORKERS + 1, len(u.threads())))
    assert bodies(fan_out(u.port, 40)) == {"blue-1": 40}


def test_keepalive_load_burns_cpu_on_more_than_one_thread(backend_factory, usher_factory):
    """16 keep-alive connections, accepted 20 ms apart, kept busy for 3 s:
    more than one of usher's threads does a real share of the work."""
    b = backend_factory("blue-1")
    u = start(usher_factory, {"blue": [b]})
    load = KeepAliveLoad(u.port, 16).start()
    try:
        time.sleep(0.6)  # every connection open and busy
        before = thread_cpu(u.pid)
        time.sleep(3.0)
        after = thread_cpu(u.pid)
    finally:
        load.stop()
    assert not load.errors, load.errors[:5]
    assert load.ok > 0
    used = {t: after[t] - before.get(t, 0) for t in after}
    total = sum(used.values())
    assert total >= 10, "usher used only %d ticks in 3 s under load: %r" % (total, used)
    # a thread "burns CPU" with at least 10 % of the process' time in the window
    busy = [t for t, v in used.items() if v >= max(3, total * 0.10)]
    assert len(busy) >= 2, "CPU ticks per thread over 3 s of load from 16 connections: %r" % used


def _start_pinned(usher_bin, tmp_path, cfg, cpus):
    """usher started through taskset on the CPU list <cpus>."""
    taskset = shutil.which("taskset")
    assert taskset, "taskset (util-linux) is needed"
    u = usher_proc.Usher(taskset, cfg, tmp_path, name="pinned")
    u.start(args=["-c", ",".join(str(c) for c in cpus), usher_bin])
    return u


@pytest.mark.parametrize("restricted", [False, True], ids=["all-cpus", "taskset"])
def test_workers_auto_is_the_cpus_usher_may_run_on(restricted, backend_factory, usher_bin,
                                                   tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    if restricted and len(cpus) < 2:
        pytest.skip("one CPU: a restricted set would be the full set")
    # restricted: one CPU fewer than this test may use, so the count differs
    allowed = cpus[:len(cpus) - 1] if restricted else cpus
    b = backend_factory("blue-1")
    cfg = usher_proc.make_config(pools={"blue": [b]}, extra={"workers": "auto"})
    u = _start_pinned(usher_bin, tmp_path, cfg, allowed)
    try:
        assert sorted(os.sched_getaffinity(u.pid)) == allowed
        st = u.status_json()
        assert st["workers"] == len(allowed), (st["workers"], allowed)
        # a thread per worker (the control thread: test_status_reports_workers_and_threads)
        wire.wait_until(lambda: len(u.threads()) >= len(allowed), 3.0,
                        what="at least %d threads" % len(allowed))
        assert bodies(fan_out(u.port, 10)) == {"blue-1": 10}
    finally:
        code = u.stop()
    assert code == 0, u.log()


# --- balancing with process-wide state ---------------------------------------------------

def test_round_robin_split_exact_across_workers(backend_factory, usher_factory):
    """Weights 3:1, 800 requests on new connections from 8 client threads:
    each backend within +-(workers x total weight) of its exact share, the
    bound of one smooth weighted round robin per worker (each deviates by
    less than the total weight) and met exactly by a shared one."""
    a = backend_factory("blue-a")
    b = backend_factory("blue-b")
    u = start(usher_factory, {"blue": [(a, 3), (b, 1)]},
              pool_opts={"blue": {"balance": "round_robin"}})
    n, total_weight = 800, 4
    seen = bodies(fan_out(u.port, n))
    tol = WORKERS * total_weight
    assert sum(seen.values()) == n
    assert abs(seen.get("blue-a", 0) - n * 3 // 4) <= tol, (seen, tol)
    assert abs(seen.get("blue-b", 0) - n // 4) <= tol, (seen, tol)


def test_least_conn_counts_inflight_over_the_whole_process(backend_factory, usher_factory):
    """8 connections opened at once (spread over the workers), then one
    long request on each, each sent once the previous one reached a backend:
    least_conn, counting in-flight requests process-wide, gives each of 4
    backends exactly 2, whichever worker took each connection."""
    bs = [backend_factory("blue-%d" % i) for i in range(4)]
    u = start(usher_factory, {"blue": bs}, pool_opts={"blue": {"balance": "least_conn"}})
    n = 8
    conns = []
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        for f in [ex.submit(RawConn, u.port, timeout=15.0) for _ in range(n)]:
            conns.append(f.result(timeout=REQ_TIMEOUT))
    slows = []
    try:
        for i, c in enumerate(conns):
            slows.append(slow_request(u.port, 2500, conn=c, check_close=False))
            wire.wait_until(lambda: sum(len(b.reqs("/slow")) for b in bs) >= i + 1, 3.0,
                            interval=0.005, what="slow request %d at a backend" % (i + 1))
        per_backend = {b.name: len(b.reqs("/slow")) for b in bs}
        assert per_backend == {b.name: 2 for b in bs}, per_backend
        st = u.status_json()
        inflight = {b.name: backend_of(st, "blue", b.name)["inflight_requests"] for b in bs}
        assert inflight == {b.name: 2 for b in bs}, inflight
        for s in slows:
            r, _ = s.join(10.0)
            assert r.status == 200 and r.complete, r
    finally:
        for c in conns:
            c.close()


def test_passive_ejection_counts_failures_over_every_worker(backend_factory, usher_factory):
    """A backend answering 502 is ejected after exactly consecutive_failures
    answers, although each request came on a new connection (any worker)."""
    good = backend_factory("good")
    bad = backend_factory("bad", mode="/status?code=502")
    passive = {"consecutive_failures": 3, "ejection_time": "10s", "max_ejected_percent": 50}
    u = start(usher_factory, {"p": [good, bad]}, pool_opts={"p": {"passive_health": passive}})
    statuses = [one_request(u.port)[0] for _ in range(20)]
    assert statuses.count(502) == 3, statuses
    assert set(statuses) == {200, 502}, statuses
    assert u.backend_status("p", "bad")["state"] == "ejected"
    seen = len(bad.reqs())
    assert bodies(fan_out(u.port, 40)) == {"good": 40}
    assert len(bad.reqs()) == seen, "an ejected backend got requests"
    assert u.metrics().get("usher_backend_ejections_total", pool="p", backend="bad") == 1


# --- reload: answered once every worker runs the new generation -------------------------

@pytest.mark.parametrize("via", ["api", "sighup"])
def test_reload_answers_once_every_worker_runs_it(via, backend_factory, usher_factory):
    """After POST /reload answers (or the SIGHUP's "reload done" line), 40
    new connections and 16 keep-alive connections opened before it all use
    the new config: the backend it added takes every request, the one it
    removed gets none. Three rounds, swapping the backend each time."""
    one = backend_factory("blue-1")
    two = backend_factory("blue-2")
    u = start(usher_factory, {"blue": [one]})
    kept = [RawConn(u.port, timeout=REQ_TIMEOUT) for _ in range(16)]
    try:
        for c in kept:
            assert c.request("GET", "/").body == b"blue-1"
        old, new = one, two
        for gen in (2, 3, 4):
            cfg = config_for(u, {"blue": [new]}, extra={"workers": WORKERS})
            if via == "api":
                u.write_config(cfg)
                st, body, _ = admin(u, "POST", "/reload")
                assert st == 200 and body["result"] == "ok" and body["generation"] == gen, body
            else:
                assert reload_and_wait(u, cfg) == ("done", gen)
            n_old = len(old.reqs())
            assert bodies(fan_out(u.port, 40)) == {new.name: 40}, "generation %d" % gen
            for c in kept:
                r = c.request("GET", "/")
                assert r.status == 200 and r.text() == new.name, (gen, r)
            assert len(old.reqs()) == n_old, "the removed backend got new requests"
            assert u.status_json()["generation"] == gen
            old, new = new, old
    finally:
        for c in kept:
            c.close()


def test_reload_keeps_the_running_worker_count(backend_factory, usher_factory):
    """DESIGN "The upgrade": a changed `workers` takes effect through an
    upgrade or a restart; a reload keeps the running number and logs it."""
    b = backend_factory("blue-1")
    u = start(usher_factory, {"blue": [b]})
    wire.wait_until(lambda: len(u.threads()) >= WORKERS + 1, 3.0, what="worker threads")
    n_threads = len(u.threads())
    u.write_config(config_for(u, {"blue": [b]}, extra={"workers": 2}))
    st, body, _ = admin(u, "POST", "/reload")
    assert st == 200 and body["result"] == "ok", body
    # the log thread writes the line a moment after the answer may come
    partial = wire.wait_until(lambda: [l for l in u.log_lines("reload partial")
                                       if l["kv"].get("key") == "workers"],
                              3.0, what="reload partial key=workers")
    assert partial, "no log line about the kept worker count:\n%s" % u.log()
    assert u.status_json()["workers"] == WORKERS
    assert len(u.threads()) == n_threads, u.threads()
    assert bodies(fan_out(u.port, 20)) == {"blue-1": 20}


def test_removed_listener_serves_its_accept_queue(backend_factory, usher_factory):
    """100 clients connect to listener "old" in a burst while a reload
    removes it: every connect completed before the reload was asked for is
    accepted and answered 200, whichever worker's queue turn it was; the
    ones made while the reload runs are answered or refused. A connect the
    kernel completes in the instant between the last accept() and close()
    is reset by any proxy (only net.ipv4.tcp_migrate_req could move it):
    that window is allowed one connection, a drain that loses its queue
    would reset many."""
    b = backend_factory("blue-1")
    listeners = [{"name": "web", "pools": {"blue": 100}},
                 {"name": "old", "pools": {"blue": 100}}]
    u = start(usher_factory, {"blue": [b]}, listeners=listeners,
              limits={"max_connections": 1000})
    port = u.ports["old"]
    conns = []
    refused = []
    started = threading.Event()
    reload_at = [float("inf")]
    connect_raced, connect_failed = [], []

    def burst(k):
        for j in range(25):
            before = time.monotonic() < reload_at[0]
            try:
                s = socket.create_connection((HOST, port), timeout=REQ_TIMEOUT)
            except ConnectionRefusedError:
                refused.append((k, j))
                continue
            except OSError as e:  # reset while connecting
                (connect_raced if not before else connect_failed).append(repr(e))
                continue
            try:
                s.sendall(build_request("GET", "/"))
            except OSError:
                pass  # reset in the close window: counted when read below
            conns.append((s, before))
            if len(conns) >= 20:
                started.set()

    ts = [threading.Thread(target=burst, args=(k,), daemon=True) for k in range(4)]
    for t in ts:
        t.start()
    try:
        assert started.wait(REQ_TIMEOUT), "20 connects did not complete"
        u.write_config(config_for(u, {"blue": [b]}, listeners=listeners[:1],
                                  limits={"max_connections": 1000}, extra={"workers": WORKERS}))
        reload_at[0] = time.monotonic()
        st, body, _ = admin(u, "POST", "/reload")
        assert st == 200 and body["result"] == "ok", body
        for t in ts:
            t.join(REQ_TIMEOUT * 25)
        assert not any(t.is_alive() for t in ts)
        assert not connect_failed, connect_failed
        assert len(conns) + len(refused) + len(connect_raced) == 100
        assert len(conns) >= 20
        bad, raced = [], []
        for s, before in conns:
            c = RawConn(port, timeout=REQ_TIMEOUT, sock=s)
            try:
                r = c.read_response(timeout=REQ_TIMEOUT)
                if r.status != 200 or not r.complete or c.reset:
                    bad.append(repr(r))
            except Exception as e:  # pylint: disable=broad-except
                why = "%s: %s (reset=%s)" % (type(e).__name__, e, c.reset)
                (raced if c.reset and not before else bad).append(why)
        assert not bad, "%d of %d connected clients not answered 200: %r" % (
            len(bad), len(conns), bad[:10])
        raced += connect_raced
        assert len(raced) <= 1, "%d connects during the reload reset: %r" % (len(raced), raced)
        assert wire.connect_refused(port), "the removed listener still accepts"
        assert bodies(fan_out(u.port, 20)) == {"blue-1": 20}
    finally:
        for s, _ in conns:
            wire.close_quietly(s)


# --- process drain ---------------------------------------------------------------------

def test_sigterm_drains_long_requests_on_every_worker(backend_factory, usher_factory):
    """24 long requests on 24 connections (spread over the workers), SIGTERM:
    every one is answered 200 with Connection: close, usher exits 0, and only
    once the last one is answered (promptly then, not at the timeout)."""
    b = backend_factory("blue-1")
    u = start(usher_factory, {"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "15s"})
    n = 24
    # 1.0 s .. 2.15 s: the answers come one after the other while draining
    slows = [slow_request(u.port, 1000 + 50 * i, timeout=15.0) for i in range(n)]
    b.wait_requests(n, 5.0)
    exited = Background(lambda: (u.proc.wait(20.0), time.monotonic())[1])
    t0 = time.monotonic()
    u.send_signal(signal.SIGTERM)
    results = [s.join(15.0) for s in slows]
    for r, closed in results:
        assert r.status == 200 and r.complete and r.body == b"blue-1", r
        assert r.has_token("connection", "close") and closed, r.raw_head
    last = max(s.done_at for s in slows)
    t_exit = exited.join(10.0)
    assert u.proc.returncode == 0, u.log()
    assert t_exit - last < 1.0, "exit %.2fs after the last answer" % (t_exit - last)
    assert t_exit - t0 < 8.0, "exit %.2fs after SIGTERM" % (t_exit - t0)
    drained = u.log_lines("shutdown drained")
    assert drained and drained[-1]["kv"].get("exit_code") == "0", u.log()


# --- admin drain and /metrics with workers --------------------------------------------

def test_admin_drain_with_workers(backend_factory, usher_factory):
    """6 long requests on blue-1 on 6 connections (any workers); an admin
    drain of blue-1 counts all 6 in its drain record, sends no new request
    there from any worker, lets the 6 finish, and completes."""
    one = backend_factory("blue-1")
    two = backend_factory("blue-2")
    u = start(usher_factory, {"blue": [one, two]})
    st, body, _ = admin(u, "POST", "/backends/blue/blue-2/drain?deadline=30s")
    assert st == 200, body
    n = 6
    slows = [slow_request(u.port, 2500, timeout=15.0, check_close=False) for _ in range(n)]
    one.wait_requests(n, 5.0)
    assert admin(u, "POST", "/backends/blue/blue-2/ready")[0] == 200
    st, body, _ = admin(u, "POST", "/backends/blue/blue-1/drain?deadline=30s")
    assert st == 200 and body["state"] == "draining", body
    d = u.backend_status("blue", "blue-1")["drain"]
    assert d["reason"] == "admin" and d["inflight"] == n and d["connections"] >= n, d
    seen = len(one.reqs())
    assert bodies(fan_out(u.port, 40)) == {"blue-2": 40}
    assert len(one.reqs()) == seen, "a worker sent a new request to the drained backend"
    for s in slows:
        r, _ = s.join(10.0)
        assert r.status == 200 and r.complete and r.body == b"blue-1", r
    wire.wait_until(lambda: u.backend_status("blue", "blue-1")["drain"]["complete"], 5.0,
                    what="the admin drain of blue-1 to complete")
    assert u.backend_status("blue", "blue-1")["state"] == "draining"


def test_metrics_totals_sum_over_workers(backend_factory, usher_factory):
    """20 connections x 10 requests at once, 12 more held open: the
    counters and gauges of /metrics are totals over every worker."""
    b = backend_factory("blue-1")
    u = start(usher_factory, {"blue": [b]})
    m0 = u.metrics()

    def ten():
        with RawConn(u.port, timeout=REQ_TIMEOUT) as c:
            return [c.request("GET", "/").status for _ in range(10)]

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        futs = [ex.submit(ten) for _ in range(20)]
        statuses = [s for f in futs for s in f.result(timeout=FAN_OUT_TIMEOUT)]
    assert statuses == [200] * 200
    held = [RawConn(u.port, timeout=REQ_TIMEOUT) for _ in range(12)]
    try:
        for c in held:
            assert c.request("GET", "/").status == 200

        def counts():
            m = u.metrics()
            return (m.sum("usher_requests_total", listener="web") -
                    m0.sum("usher_requests_total", listener="web"),
                    m.sum("usher_backend_requests_total", pool="blue") -
                    m0.sum("usher_backend_requests_total", pool="blue"),
                    m.sum("usher_client_connections_accepted_total", listener="web") -
                    m0.sum("usher_client_connections_accepted_total", listener="web"),
                    m.sum("usher_client_connections", listener="web"))
        want = (212, 212, 32, 12)
        # a finished request is counted when its answer is written: allow that moment
        try:
            wire.wait_until(lambda: counts() == want, 2.0, what="metrics totals")
        except AssertionError:
            pass
        assert counts() == want, "(requests, backend requests, accepted, open) = %r, want %r" % (
            counts(), want)
    finally:
        for c in held:
            c.close()
