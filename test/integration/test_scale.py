"""Control work at scale never stops serving (issue 19, DESIGN.md "Ownership
and state"): a reload of a config with 10,000 backends, with a change and
without one, costs no keep-alive request more than 50 ms; and 20,000
configured backends without health checks reserve no descriptors, so under
`nofile` 20,000 usher still takes thousands of clients.

In both configs the many backends sit in a pool with weight 0 in the split
(no health checks, no traffic: nothing of them can be open) beside a pool
of one real backend that answers every request."""

import os
import resource
import subprocess
import sys
import time

import pytest

import usher_proc
import wire
from load import Load
from usher_proc import make_config, reload_and_wait
from wire import RawConn

# issue 19, "Done when": a 10,000-backend reload under keep-alive load, no
# request waits more than 50 ms
RELOAD_BACKENDS = 10000
MAX_WAIT_S = 0.050
# issue 19: 20,000 idle backends under nofile 20,000 must not starve usher;
# it takes "thousands of clients, not 1"
IDLE_BACKENDS = 20000
NOFILE = 20000
CLIENTS = 2000
# the many backends' ports: never connected (no checks, weight 0)
IDLE_PORT0 = 20000
# starting or reloading a config this large is parsing work: bounded, with margin
BIG_CONFIG_TIMEOUT_S = 60.0


def idle_backends(n):
    return [{"name": "idle-%05d" % i, "address": "127.0.0.1:%d" % (IDLE_PORT0 + i % 40000)}
            for i in range(n)]


def big_config(live, n, weight=1, **kw):
    """Listener web -> pool live (backend <live>, weight <weight>); pool idle of
    <n> backends with weight 0 in the split."""
    return make_config(pools={"live": [(live, weight)], "idle": idle_backends(n)},
                       split={"live": 100, "idle": 0}, **kw)


def waits_across(records, t_from, t_to):
    """The requests of <records> (Load.records) in flight at some point of
    [t_from, t_to], as (wait seconds, t_sent), longest first."""
    hit = [(t1 - t0, t0) for t0, t1, _, _, _ in records if t1 >= t_from and t0 <= t_to]
    return sorted(hit, reverse=True)


def longest_silence(records, t_from, t_to):
    """The longest stretch of [t_from, t_to] in which no thread got an answer."""
    ends = sorted(t1 for _, t1, _, _, _ in records if t_from <= t1 <= t_to)
    points = [t_from] + ends + [t_to]
    return max(b - a for a, b in zip(points, points[1:]))


# a quiet stretch of the same load just before the reloads: the host's own
# noise (a shared CPU), printed beside the result; a run whose quiet stretch
# already had a wait over MAX_WAIT_S says nothing about usher and is taken
# again, at most ATTEMPTS times in all
QUIET_S = 0.8
ATTEMPTS = 2
GIL_SWITCH_S = 0.0005


def test_reload_of_10k_backends_no_request_waits_over_50ms(backend_factory, usher_factory):
    """SIGHUP with a change (the live backend's weight), then SIGHUP with the
    same file again: three keep-alive client threads, each timestamping every
    request it sends and every answer; no request in flight across either
    reload waits more than 50 ms."""
    live = backend_factory("live-1")
    u = usher_factory(cfg=big_config(live, RELOAD_BACKENDS), timeout=BIG_CONFIG_TIMEOUT_S)
    # the client threads and the backend share this process's GIL: a shorter
    # switch interval than the default 5 ms keeps their own waits well below
    # the limit measured
    switch = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_S)
    load = Load(u.port, threads=3, duration=3 * BIG_CONFIG_TIMEOUT_S, timeout=5.0).start()
    outcomes = []
    try:
        wire.wait_until(lambda: load.count() >= 100, 10.0, what="load started")
        for attempt in range(ATTEMPTS):
            t_quiet = time.monotonic()
            time.sleep(QUIET_S)
            t_from = time.monotonic()
            quiet = waits_across(load.records, t_quiet, t_from)
            cfg = usher_proc.config_for(u, {"live": [(live, 2 + attempt)],
                                            "idle": idle_backends(RELOAD_BACKENDS)},
                                        split={"live": 100, "idle": 0})
            for _ in range(2):   # a change, then the same file again: nothing changed
                outcomes.append(reload_and_wait(u, cfg, timeout=BIG_CONFIG_TIMEOUT_S))
                time.sleep(0.3)
            t_to = time.monotonic()
            waits = waits_across(load.records, t_from, t_to)
            assert len(waits) >= 20 and quiet, "only %d requests across the reloads" % len(waits)
            silence = longest_silence(load.records, t_from, t_to)
            print("attempt %d: 10,000-backend reloads: %.0f ms in all, %d requests across them; "
                  "longest wait %.1f ms (next %s ms); longest stretch without an answer %.1f ms; "
                  "quiet %.1f s before: longest wait %.1f ms" % (
                      attempt + 1, (t_to - t_from) * 1000, len(waits), waits[0][0] * 1000,
                      ", ".join("%.1f" % (w * 1000) for w, _ in waits[1:4]), silence * 1000,
                      QUIET_S, quiet[0][0] * 1000))
            if waits[0][0] <= MAX_WAIT_S or quiet[0][0] <= MAX_WAIT_S:
                break
    finally:
        load.stop()
        sys.setswitchinterval(switch)
    assert all(o[0] == "done" for o in outcomes), (outcomes, u.log()[-2000:])
    assert load.errors == [], "client errors: %d, first: %r" % (len(load.errors), load.errors[:5])
    slow = [(round(w * 1000, 1), round((t0 - t_from) * 1000)) for w, t0 in waits if w > MAX_WAIT_S]
    assert not slow, ("%d requests waited more than %d ms across the reloads "
                      "[(wait ms, sent at ms after the first SIGHUP)]: %r (quiet before: longest "
                      "wait %.1f ms)" % (len(slow), MAX_WAIT_S * 1000, slow[:10], quiet[0][0] * 1000))


class NofileUsher(usher_proc.Usher):
    """usher started with RLIMIT_NOFILE (soft and hard) set in the child
    between fork and exec (usher raises its soft limit to the hard one, so
    both are set)."""

    nofile = None

    def start(self, wait_ready=True, timeout=5.0, args=None):
        limit = self.nofile
        self._log_file = open(self.log_path, "wb")
        cmd = [self.binary] + (args or []) + ["-c", self.cfg_path]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
            cwd=str(self.workdir),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
        if wait_ready:
            self.wait_ready(timeout)
        return self


@pytest.fixture
def nofile_usher(usher_bin, tmp_path):
    """start(cfg, nofile) -> a started NofileUsher; stopped at teardown (and
    the test fails if it printed a sanitizer report)."""
    started = []

    def start(cfg, nofile, timeout=BIG_CONFIG_TIMEOUT_S):
        u = NofileUsher(usher_bin, cfg, tmp_path, name="nofile%d" % len(started))
        u.nofile = nofile
        started.append(u)
        return u.start(timeout=timeout)

    yield start
    reports = []
    for u in started:
        u.stop(timeout=10.0, check=False)
        if u.sanitizer_report():
            reports.append(u.sanitizer_report())
    if reports:
        pytest.fail("usher printed a sanitizer report:\n%s" % "\n\n".join(reports), pytrace=False)


def test_20k_idle_backends_under_nofile_20k_take_2000_clients(backend_factory, nofile_usher):
    """20,000 configured backends without health checks, nofile 20,000: usher
    does not lower max_connections to a starvation level (it may lower it to
    what two descriptors per client allow), and it takes 2,000 client
    connections at once: all open together, a request on each, every one
    answered by the backend."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < CLIENTS + 200:
        pytest.skip("this process cannot open %d client sockets" % CLIENTS)
    live = backend_factory("live-1")
    u = nofile_usher(big_config(live, IDLE_BACKENDS), NOFILE)
    with open("/proc/%d/limits" % u.pid) as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert line.split()[3] == str(NOFILE), line
    lowered = u.log_lines("max_connections lowered")
    starved = [l["kv"] for l in lowered if int(l["kv"].get("effective", "0")) < CLIENTS]
    assert not starved, ("usher lowered max_connections below %d clients with %d backends "
                         "configured and nofile %d: %r" % (CLIENTS, IDLE_BACKENDS, NOFILE, starved))
    conns = []
    deadline = time.monotonic() + 60.0
    try:
        for i in range(CLIENTS):
            assert time.monotonic() < deadline, "only %d connections opened in 60 s" % i
            conns.append(RawConn(u.port, timeout=3.0))
        answered = 0
        for i, c in enumerate(conns):
            assert time.monotonic() < deadline, "only %d of %d requests answered in 60 s" % (
                answered, CLIENTS)
            try:
                r = c.request("GET", "/?client=%d" % i, timeout=3.0)
            except Exception as e:  # pylint: disable=broad-except
                raise AssertionError("request on connection %d of %d (all open) not answered: %s: %s; "
                                     "usher log tail:\n%s" % (i + 1, CLIENTS, type(e).__name__, e,
                                                              u.log()[-1500:])) from None
            assert r.status == 200 and r.text() == "live-1", (i, r)
            answered += 1
        # all still open together: usher held every one of them
        open_now = len(os.listdir("/proc/%d/fd" % u.pid))
        assert open_now >= CLIENTS, "usher holds %d descriptors for %d clients" % (open_now, CLIENTS)
    finally:
        for c in conns:
            c.close()
