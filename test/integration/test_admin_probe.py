"""/live and /ready come from the probe thread (DESIGN "Ownership and
state": they answer within 100 ms whatever the control thread is doing).

  - a reload to a 20,000-backend config (generated here) keeps the control
    loop busy for seconds; /live, polled every 20 ms meanwhile, answers
    every time within 100 ms, and /ready keeps its answer;
  - /metrics of those 20,000 backends, scraped back to back, delays no probe;
  - what the probe does not answer (/status, the API) still reaches the
    control loop, with the head it read.

Standard library only (run with /usr/bin/python3); every wait is bounded."""

import calendar
import socket
import time

from latency import PROBE_NICE, Poller

from usher_proc import config_for, make_config
from wire import HOST, wait_until

# DESIGN: "/live and /ready answer within 100 ms whatever the control thread
# is doing".
PROBE_BUDGET_S = 0.100
BACKENDS = 20000


def raw_get(port, path, timeout=1.0):
    """GET <path> on a fresh connection: (status, body bytes)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def wait_log_text(u, needles, timeout):
    """Waits (checking every 0.2 s, cheaply) until the log holds one of
    <needles>; returns it."""
    def found():
        text = u.log()
        return next((n for n in needles if n in text), None)
    return wait_until(found, timeout, interval=0.2, what="one of %r in the log" % (needles,))


def big_pools(n):
    """One pool of <n> backends on addresses nothing listens on (no health
    checks: they never get a connection in these tests)."""
    return {"blue": [{"name": "b%05d" % i, "address": "127.1.%d.%d:9" % (i // 250, i % 250 + 1)}
                     for i in range(n)]}


def log_time(u, event):
    """Wall time of the last log line <event>."""
    lines = u.log_lines(event)
    assert lines, "no %r line in the log" % event
    ts = lines[-1]["time"]  # 2026-01-02T03:04:05.678Z
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000.0


def test_live_answers_while_a_big_reload_keeps_the_control_loop_busy(backend_factory,
                                                                     usher_factory, servers):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    live = servers.add(Poller(u.admin_port, "/live", PROBE_BUDGET_S, PROBE_NICE).start())
    ready = servers.add(Poller(u.admin_port, "/ready", PROBE_BUDGET_S, PROBE_NICE).start())
    time.sleep(0.2)
    u.reload(config_for(u, big_pools(BACKENDS)))
    wait_log_text(u, [" reload done generation=2", " reload failed "], 90.0)
    time.sleep(0.2)
    live.stop()
    ready.stop()
    assert not u.log_lines("reload failed"), u.log()[-2000:]
    # the window the control loop applied the diff in (the parse ran on
    # the background thread before it)
    busy_from, busy_to = log_time(u, "reload diff"), log_time(u, "reload done")
    inside, _, _ = live.usher_late(busy_from, busy_to)
    started = log_time(u, "reload started")
    for name, poller in (("live", live), ("ready", ready)):
        for t0, took, _, ref in sorted(poller.samples, key=lambda x: -x[1])[:2]:
            print("  /%s %.1f ms (reference %.1f ms) at %+.3f s from reload started "
                  "(diff %+.3f, done %+.3f)" % (name, took * 1000, ref * 1000, t0 - started,
                                                 busy_from - started, busy_to - started))
    assert busy_to - busy_from > 0.3, "the control loop was hardly busy: %.3f s" % (
        busy_to - busy_from)
    assert len(inside) >= 10, "too few probes while the control loop was busy: %d" % len(inside)
    for name, poller in (("live", live), ("ready", ready)):
        assert all(s[2] == 200 for s in poller.samples), [s for s in poller.samples
                                                          if s[2] != 200][:5]
        _, worst, late = poller.usher_late()
        assert not late, "/%s late while the host was not: %r (slowest %.3f s)" % (
            name, late[:5], worst)
    _, worst, _ = live.usher_late()
    print("control loop busy %.2f s: %d /live probes inside, slowest %.1f ms" % (
        busy_to - busy_from, len(inside), worst * 1000))


def scrape(port, path, timeout=30.0):
    """GET <path>, its body read and thrown away as cheaply as Python can
    (the test must not take the CPU it measures usher against): the status."""
    buf = bytearray(1 << 20)
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path).encode())
        n = s.recv_into(buf)
        status = int(bytes(buf[:n]).split()[1])
        while s.recv_into(buf):
            pass
    return status


def test_live_answers_while_metrics_of_20000_backends_are_scraped(usher_factory, servers):
    u = usher_factory(make_config(pools=big_pools(BACKENDS)), timeout=60.0)
    live = servers.add(Poller(u.admin_port, "/live", PROBE_BUDGET_S, PROBE_NICE).start())
    t0 = time.monotonic()
    scrapes = 0
    while time.monotonic() - t0 < 3.0:
        assert scrape(u.admin_port, "/metrics") == 200
        scrapes += 1
    live.stop()
    assert all(s[2] == 200 for s in live.samples)
    _, worst, late = live.usher_late()
    assert len(live.samples) >= 50, len(live.samples)
    assert not late, "/live late while the host was not: %r (slowest %.3f s, %d scrapes)" % (
        late[:5], worst, scrapes)


def test_ready_follows_the_drain_and_other_paths_reach_the_control_loop(proxy):
    u = proxy.usher
    assert raw_get(u.admin_port, "/ready") == (200, b"ready\n")
    assert raw_get(u.admin_port, "/live?verbose=1") == (200, b"live\n")
    status, body = raw_get(u.admin_port, "/status")
    assert status == 200 and b'"generation"' in body
    # a request the probe hands over keeps the bytes it already read: the
    # head arrives in pieces, the body after it
    with socket.create_connection((HOST, u.admin_port), timeout=5.0) as s:
        s.sendall(b"POST /backends/blue/blue-1/weight HTTP/1.1\r\nHost: a\r\n")
        time.sleep(0.05)
        s.sendall(b"Content-Length: 13\r\n\r\n{\"weight\": ")
        time.sleep(0.05)
        s.sendall(b"3}")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert b'"weight_override":3' in data, data
