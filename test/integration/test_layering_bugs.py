"""Regression tests for bugs found in a review of usher's layering (one
test per bug, each asserting the behaviour DESIGN.md promises):

  g  requests already written when a drain or a listener-removing reload
     starts are answered, never reset
  d  closed client connections are freed under sustained load (RSS bound)
  e  a listener removed by a reload leaves /status with its last connection
  h  a 101 without the requested Upgrade is a 502, not a tunnel
  j  a connection that never sends a byte is closed by client_header
  k  a response cut after its head is counted as "aborted", not 2xx
  f  a POST on a pooled connection the backend just closed is not a 502
  i  idle pooled connections do not hold the descriptors new traffic needs
  a  a backend host name is resolved again at reload
  b  a reload that fails after binding a new listener does not crash

Every server listens on loopback, every wait is bounded, every thread and
process is stopped at teardown."""

import collections
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import wire
from servers import ScriptedServer, read_head, rst_close
from usher_proc import config_for, reload_and_wait
from wire import HOST, ConnectionClosed, RawConn, build_request, connect_refused

# Seconds a timer may fire late on the shared 2-core host.
SLACK = 2.0


# --- g: requests already received are answered at a drain ---------------------------

N_IDLE = 60


def _open_idle(port, n):
    """n keep-alive connections, each after one answered request."""
    conns = []
    for i in range(n):
        c = RawConn(port, timeout=8.0)
        conns.append(c)
        r = c.request("GET", "/?first=%d" % i)
        assert r.status == 200 and r.complete, r
    return conns


def _proc_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _write_then_signal(u, conns, sig):
    """Writes the next request on every connection, then sends <sig>. usher
    is stopped meanwhile (SIGSTOP), so every request is in its socket's
    receive queue, unread, when the signal arrives: received, and due."""
    u.send_signal(signal.SIGSTOP)
    try:
        wire.wait_until(lambda: _proc_state(u.pid) == "T", 2.0, interval=0.001,
                        what="usher stopped by SIGSTOP")
        for i, c in enumerate(conns):
            assert c.send(build_request("GET", "/?second=%d" % i))
        u.send_signal(sig)
    finally:
        u.send_signal(signal.SIGCONT)


def _answers(conns, want_close):
    """Reads the answer to the request written on each connection; returns
    the list of problems (resets, closes without an answer, non-200s)."""
    problems = []
    for i, c in enumerate(conns):
        try:
            r = c.read_response(timeout=8.0)
        except (ConnectionClosed, TimeoutError, ValueError) as e:
            problems.append("conn %d: %s%s" % (i, "RESET " if c.reset else "", e))
            continue
        if c.reset:
            problems.append("conn %d: reset after %r" % (i, r))
        elif r.status != 200 or not r.complete:
            problems.append("conn %d: %r" % (i, r))
        elif want_close and not r.has_token("connection", "close"):
            problems.append("conn %d: no Connection: close in %r" % (i, r.raw_head))
    return problems


def test_drain_answers_requests_already_written(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, shutdown={"drain_delay": "0s", "timeout": "5s"})
    conns = _open_idle(u.port, N_IDLE)
    try:
        _write_then_signal(u, conns, signal.SIGTERM)
        problems = _answers(conns, want_close=True)
    finally:
        for c in conns:
            c.close()
    assert not problems, "%d of %d written requests not answered at the drain:\n%s" % (
        len(problems), N_IDLE, "\n".join(problems[:10]))
    assert u.wait_exit(10.0) == 0, u.log()


def test_reload_removing_listener_answers_requests_already_written(backend_factory,
                                                                   usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, listeners=[{"name": "web", "pools": {"blue": 100}},
                                                      {"name": "other", "pools": {"blue": 100}}])
    conns = _open_idle(u.ports["web"], N_IDLE)
    try:
        u.write_config(config_for(u, {"blue": [b]},
                                  listeners=[{"name": "other", "pools": {"blue": 100}}]))
        _write_then_signal(u, conns, signal.SIGHUP)
        problems = _answers(conns, want_close=False)
    finally:
        for c in conns:
            c.close()
    assert not problems, "%d of %d written requests not answered at the reload:\n%s" % (
        len(problems), N_IDLE, "\n".join(problems[:10]))
    u.wait_log(r"reload done", 5.0)
    assert u.running()


# --- d: closed clients are reaped under sustained load --------------------------------

RSS_GROWTH_MAX_KB = 15 * 1024


def test_closed_clients_reaped_under_load(backend_factory, usher_factory):
    """Connection-per-request load for 8 s: RSS must not keep growing
    (closed clients are freed at a safe point that runs every iteration)."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    p = subprocess.Popen(["wrk", "-t2", "-c16", "-d8s", "--timeout", "5s",
                          "-H", "Connection: close", u.url("/")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2.0)
        rss_2s = u.rss_kb()
        peak = rss_2s
        deadline = time.monotonic() + 12.0
        while p.poll() is None and time.monotonic() < deadline:
            peak = max(peak, u.rss_kb())
            time.sleep(0.25)
        out, _ = p.communicate(timeout=5.0)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5.0)
    peak = max(peak, u.rss_kb())
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) >= 1000, out
    assert peak - rss_2s < RSS_GROWTH_MAX_KB, (
        "RSS grew %d KiB between 2 s and the end of an 8 s connection-per-request load "
        "(%d -> %d KiB)\n%s" % (peak - rss_2s, rss_2s, peak, out))


# --- e: a removed listener leaves /status with its last connection ------------------------

def _listener_names(u):
    return [l["name"] for l in u.status_json()["listeners"]]


def _two_listeners(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, listeners=[{"name": "web", "pools": {"blue": 100}},
                                                      {"name": "api", "pools": {"blue": 100}}])
    assert sorted(_listener_names(u)) == ["api", "web"]
    return b, u


def test_removed_listener_leaves_status_without_connections(backend_factory, usher_factory):
    b, u = _two_listeners(backend_factory, usher_factory)
    kind, _ = reload_and_wait(u, config_for(u, {"blue": [b]},
                                            listeners=[{"name": "web", "pools": {"blue": 100}}]))
    assert kind == "done", u.log()
    wire.wait_until(lambda: _listener_names(u) == ["web"], 3.0,
                    what="listener api gone from /status (still: %r)" % _listener_names(u))


def test_removed_listener_leaves_status_after_last_connection(backend_factory, usher_factory):
    b, u = _two_listeners(backend_factory, usher_factory)
    c = RawConn(u.ports["api"])
    try:
        r = c.request("GET", "/")
        assert r.status == 200, r
        kind, _ = reload_and_wait(u, config_for(u, {"blue": [b]},
                                                listeners=[{"name": "web",
                                                            "pools": {"blue": 100}}]))
        assert kind == "done", u.log()
    finally:
        c.close()
    wire.wait_until(lambda: _listener_names(u) == ["web"], 3.0,
                    what="listener api gone from /status after its last connection closed "
                         "(still: %r)" % _listener_names(u))
    r = wire.http_get(u.ports["web"], "/")
    assert r[0] == 200, r


# --- h: a 101 must switch to the protocol that was asked for ----------------------------

WS_UPGRADE = build_request("GET", "/ws", headers=[
    ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])


def _answer_101(extra_headers):
    def script(s):
        if not read_head(s):
            return
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n" +
                  extra_headers + b"\r\n")
        s.settimeout(0.2)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # hold the "tunnel" open
            try:
                if not s.recv(65536):
                    return
            except socket.timeout:
                continue
    return script


@pytest.mark.parametrize("upgrade_header", [b"", b"Upgrade: h2c\r\n"],
                         ids=["no_upgrade_header", "other_protocol"])
def test_101_without_requested_upgrade_is_502(servers, usher_factory, upgrade_header):
    srv = servers.add(ScriptedServer(_answer_101(upgrade_header)).start())
    u = usher_factory(pools={"blue": [{"name": "blue-1", "address": srv.address}]})
    with RawConn(u.port, timeout=5.0) as c:
        c.send(WS_UPGRADE)
        r = c.read_response(timeout=5.0)
        assert r.status == 502, "a 101 answering Upgrade: websocket with %r reached the client: " \
                                "%r" % (upgrade_header, r.raw_head)


# --- j: a silent connection is closed by client_header ---------------------------------

def test_silent_connection_closed_by_client_header(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]},
                      timeouts={"client_header": "1s", "client_idle": "60s"})
    with RawConn(u.port, timeout=5.0) as c:
        t0 = time.monotonic()
        try:
            extra = c.wait_closed(1.0 + SLACK)
        except TimeoutError:
            pytest.fail("a connection that sent nothing is still open after %.1fs "
                        "(client_header 1s)" % (time.monotonic() - t0))
        assert extra == b"" or extra.startswith(b"HTTP/1.1 408 "), extra
    assert b.reqs() == []


# --- k: a response cut after its head is not a 2xx ------------------------------------------

def _cut_response(s):
    if not read_head(s):
        return
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    time.sleep(0.05)
    rst_close(s)


def _requests_total(u, code):
    return u.metrics().get("usher_requests_total", listener="web", code=code) or 0


def test_cut_response_counted_as_aborted(servers, usher_factory):
    srv = servers.add(ScriptedServer(_cut_response).start())
    u = usher_factory(pools={"blue": [{"name": "blue-1", "address": srv.address}]})
    ok0, aborted0 = _requests_total(u, "2xx"), _requests_total(u, "aborted")
    with RawConn(u.port, timeout=5.0) as c:
        r = c.request("GET", "/")
        assert r.status == 200 and not r.complete, r
    # counted once the client side closed: give usher a moment
    wire.wait_until(lambda: _requests_total(u, "2xx") > ok0 or
                    _requests_total(u, "aborted") > aborted0, 3.0,
                    what="the cut response to be counted")
    time.sleep(0.1)
    ok1, aborted1 = _requests_total(u, "2xx"), _requests_total(u, "aborted")
    assert (ok1 - ok0, aborted1 - aborted0) == (0, 1), (
        "usher_requests_total{listener=web}: 2xx +%d, aborted +%d (want +0, +1)" % (
            ok1 - ok0, aborted1 - aborted0))


# --- f: a body request is not sent to a pooled connection the backend closed -----------

def test_post_after_backend_closed_pooled_connection(backend_factory, usher_factory):
    b = backend_factory("blue-1", idle_timeout=0.3)
    u = usher_factory(pools={"blue": [b]})
    body = wire.pattern_bytes(2000)
    failures = []
    with RawConn(u.port, timeout=5.0) as c:
        for i in range(10):
            r = c.request("GET", "/?i=%d" % i)
            assert r.status == 200, r
            time.sleep(0.6)  # the backend closed its idle connection 0.3 s ago
            r = c.request("POST", "/upload?i=%d" % i, body=body)
            if r.status != 200:
                failures.append("round %d: %r %r" % (i, r, r.body[:100]))
            if r.closed or r.has_token("connection", "close"):
                c.close()
                c = RawConn(u.port, timeout=5.0)
    assert not failures, "%d of 10 POSTs failed:\n%s" % (len(failures), "\n".join(failures))


# --- i: idle pooled connections give their descriptors back --------------------------------

def _fd_numbers(pid):
    return sorted(int(n) for n in os.listdir("/proc/%d/fd" % pid))


def _limit_leaving(pid, free):
    """The RLIMIT_NOFILE that leaves exactly <free> descriptor numbers
    unused below it (the limit bounds numbers, not a count)."""
    used = set(_fd_numbers(pid))
    limit, unused = 0, 0
    while unused < free or limit in used:
        unused += limit not in used
        limit += 1
    return limit


# usher keeps 64 descriptors plus one per listener and backend aside and
# admits (limit - reserve) / 2 clients: N_POOLED idle pooled connections
# eat that reserve and more, so its client cap still admits N_AFTER clients
# while only FD_HEADROOM (< 2 x N_AFTER) descriptors are really left.
N_POOLED = 100
FD_HEADROOM = 12
N_AFTER = 10


def test_idle_pool_of_switched_pool_frees_descriptors(backend_factory, usher_factory):
    """Pool blue holds 100 idle pooled connections and the descriptor limit
    leaves 12 free. After a reload sends all traffic to green, 10 concurrent
    clients need 20 descriptors: there only if the idle connections to blue
    (which get no traffic now) give theirs back."""
    blues = [backend_factory("blue-%d" % i) for i in range(1, 5)]
    green = backend_factory("green-1")
    pools = {"blue": blues, "green": [green]}
    timeouts = {"backend_idle": "60s"}
    u = usher_factory(pools=pools, split={"blue": 100, "green": 0}, timeouts=timeouts)

    def clients():
        return u.status_json()["listeners"][0]["connections"]

    # The pooled connections must hold the lowest descriptor numbers, so that
    # a lower limit leaves no holes: 2 x N_POOLED clients connect, the first
    # half leaves, and the second half's requests open the upstream
    # connections in the descriptors the first half gave back.
    conns = [RawConn(u.port, timeout=8.0) for _ in range(2 * N_POOLED)]
    try:
        wire.wait_until(lambda: clients() == 2 * N_POOLED, 5.0, what="every client accepted")
        for c in conns[:N_POOLED]:
            c.close()
        wire.wait_until(lambda: clients() == N_POOLED, 3.0, what="half of the clients gone")
        for i, c in enumerate(conns[N_POOLED:]):
            c.send(build_request("GET", "/slow?ms=1500&i=%d" % i))
        for c in conns[N_POOLED:]:
            r = c.read_response(timeout=8.0)
            assert r.status == 200, r
    finally:
        for c in conns:
            c.close()
    wire.wait_until(lambda: clients() == 0, 3.0, what="the client connections closed")
    pooled = sum(x.conns_active for x in blues)
    assert pooled >= N_POOLED * 0.9, "only %d upstream connections to blue pooled" % pooled

    limit = _limit_leaving(u.pid, FD_HEADROOM)
    subprocess.run(["prlimit", "--pid", str(u.pid), "--nofile=%d:%d" % (limit, limit)],
                   check=True, timeout=5)
    kind, _ = reload_and_wait(u, config_for(u, pools, split={"blue": 0, "green": 100},
                                            timeouts=timeouts))
    assert kind == "done", u.log()
    # all connected (and accepted) first, then all asking at once: each needs
    # its upstream descriptor while every client holds its own
    after = [RawConn(u.port, timeout=8.0) for _ in range(N_AFTER)]
    statuses = []
    try:
        time.sleep(0.3)
        for i, c in enumerate(after):
            c.send(build_request("GET", "/slow?ms=400&after=%d" % i))
        for c in after:
            try:
                statuses.append(c.read_response(timeout=8.0).status)
            except (ConnectionClosed, TimeoutError, ValueError) as e:
                statuses.append(type(e).__name__)
    finally:
        for c in after:
            c.close()
    assert statuses == [200] * N_AFTER, (
        "with %d idle pooled connections to blue and %d free descriptors (limit %d), "
        "clients of green got %r" % (pooled, FD_HEADROOM, limit, statuses))


# --- a: a host name is resolved again at reload ------------------------------------------

HOSTS = "/etc/hosts"
TEST_HOST = "usher-test-host"


def _set_hosts(original, addr):
    with open(HOSTS, "w") as f:  # in place: /etc/hosts may be a bind mount
        f.write(original.rstrip("\n") + "\n%s %s\n" % (addr, TEST_HOST))


def test_backend_host_name_resolved_again_at_reload(backend_factory, usher_factory):
    port = wire.free_port()
    old = backend_factory("at-127.0.0.2", port=port, host="127.0.0.2")
    new = backend_factory("at-127.0.0.3", port=port, host="127.0.0.3")
    with open(HOSTS) as f:
        original = f.read()
    try:
        _set_hosts(original, "127.0.0.2")
        pools = {"blue": [{"name": "blue-1", "address": "%s:%d" % (TEST_HOST, port)}]}
        u = usher_factory(pools=pools)
        st, _, body = wire.http_get(u.port, "/")
        assert (st, body) == (200, b"at-127.0.0.2"), (st, body)
        _set_hosts(original, "127.0.0.3")
        kind, _ = reload_and_wait(u, config_for(u, pools))
        assert kind == "done", u.log()
    finally:
        with open(HOSTS, "w") as f:
            f.write(original)
    # the old address drains; new requests go to the new one
    got = [wire.http_get(u.port, "/?i=%d" % i)[2] for i in range(5)]
    assert got == [b"at-127.0.0.3"] * 5, "after %s moved to 127.0.0.3: %r" % (TEST_HOST, got)
    assert len(new.reqs()) == 5 and len(old.reqs()) == 1, (old.reqs(), new.reqs())


# --- b: a reload that fails after binding a new listener ------------------------------------

RELOAD_ROUNDS = 20
# new listeners bound before the one that fails: binding them widens the
# window in which a knock can land in the first one's accept queue
EXTRA_LISTENERS = 30


def test_failed_reload_after_new_listener_bound(backend_factory, usher_factory):
    """Each reload binds listener "new" (and more), then fails to bind
    "clash" (its port is held here) while two clients keep connecting to
    "new": usher must throw the new listeners away cleanly, again and again,
    and keep serving "web" (the fixture also fails on any sanitizer report)."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind((HOST, 0))
    taken.listen(1)
    new_port = wire.free_port()
    stop = threading.Event()
    knocks = [0, 0]

    def knock(k):
        """Connects and sends a request, keeping the last few connections
        open: one accepted by a listener being thrown away is then served."""
        deadline = time.monotonic() + 20.0
        held = collections.deque()
        req = build_request("GET", "/")
        while not stop.is_set() and time.monotonic() < deadline:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.5)
            try:
                s.connect((HOST, new_port))
                s.sendall(req)
                held.append(s)
            except OSError:
                s.close()
            knocks[k] += 1
            while len(held) > 16:
                held.popleft().close()
        for s in held:
            s.close()

    knockers = [threading.Thread(target=knock, args=(k,), daemon=True) for k in range(2)]
    for t in knockers:
        t.start()
    try:
        listeners = [{"name": "web", "pools": {"blue": 100}},
                     {"name": "new", "bind": "%s:%d" % (HOST, new_port), "pools": {"blue": 100}}]
        listeners += [{"name": "new%d" % i, "bind": "%s:%d" % (HOST, wire.free_port()),
                       "pools": {"blue": 100}} for i in range(EXTRA_LISTENERS)]
        listeners.append({"name": "clash", "bind": "%s:%d" % (HOST, taken.getsockname()[1]),
                          "pools": {"blue": 100}})
        bad = config_for(u, {"blue": [b]}, listeners=listeners)
        for i in range(RELOAD_ROUNDS):
            kind, _ = reload_and_wait(u, bad)
            assert kind == "failed", u.log()
            assert u.running(), "usher died at failed reload %d:\n%s" % (i + 1, u.log())
            st, _, body = wire.http_get(u.port, "/")
            assert (st, body) == (200, b"blue-1"), (st, body)
    finally:
        stop.set()
        for t in knockers:
            t.join(3.0)
        taken.close()
    assert sum(knocks) > RELOAD_ROUNDS, knocks
    assert u.running(), u.log()
    assert _listener_names(u) == ["web"], _listener_names(u)
    # every failed reload threw its new listeners away
    assert connect_refused(new_port), "port %d of the failed reload still accepts" % new_port
