"""Balancing: listener pool splits, round_robin (smooth weighted) and
least_conn inside a pool, weight 0, 503 with nothing in rotation, and the
retry of a failed connect on another backend."""

import collections
import http.client
import threading
import time

import wire
from wire import RawConn, free_port


def _dead(name):
    """A backend entry on a port nobody listens on (connect refused)."""
    return {"name": name, "address": "127.0.0.1:%d" % free_port(), "weight": 1}


def _count(port, n, path="/"):
    """n keep-alive requests through http.client; Counter of response bodies."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seen = collections.Counter()
    order = []
    try:
        for _ in range(n):
            c.request("GET", path)
            r = c.getresponse()
            body = r.read().decode()
            assert r.status == 200, (r.status, body)
            seen[body] += 1
            order.append(body)
    finally:
        c.close()
    return seen, order


def test_refused_backend_no_alternative_502(usher_factory):
    u = usher_factory(pools={"blue": [_dead("dead-1")]})
    with RawConn(u.port) as c:
        r = c.request("GET", "/")
        wire.check_usher_error(c, r, 502, must_close=False)


def test_refused_backend_retried_on_other(backend_factory, usher_factory):
    good = backend_factory("blue-2")
    u = usher_factory(pools={"blue": [_dead("dead-1"), good]})
    with RawConn(u.port) as c:
        for i in range(10):
            r = c.request("GET", "/?i=%d" % i)
            assert r.status == 200 and r.body == b"blue-2", "request %d: %r" % (i, r)
        # a body that was never sent can be retried as well
        r = c.request("POST", "/upload", body=b"x" * 1000)
        assert r.status == 200 and r.json()["len"] == 1000, r
    assert len(good.reqs()) == 11


def test_refused_backends_each_tried_once(backend_factory, usher_factory):
    good = backend_factory("blue-9")
    u = usher_factory(pools={"blue": [_dead("dead-%d" % i) for i in range(4)] + [good]})
    for i in range(6):
        with RawConn(u.port) as c:
            r = c.request("GET", "/?i=%d" % i)
            assert r.status == 200 and r.body == b"blue-9", r
    u2 = usher_factory(pools={"blue": [_dead("dead-%d" % i) for i in range(3)]}, name="alldead")
    with RawConn(u2.port) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/")
        wire.check_usher_error(c, r, 502, must_close=False)
        assert time.monotonic() - t0 < 2.0


def test_killed_backend_costs_no_client_an_error(backend_factory, usher_factory):
    """Both backends have pooled connections; one dies (connections reset,
    connects refused). Every following request still succeeds."""
    b1 = backend_factory("blue-1")
    b2 = backend_factory("blue-2")
    u = usher_factory(pools={"blue": [b1, b2]})
    seen, _ = _count(u.port, 10)
    assert seen == {"blue-1": 5, "blue-2": 5}, seen
    b2.kill()
    time.sleep(0.05)
    seen, _ = _count(u.port, 20)
    assert seen == {"blue-1": 20}, seen


def test_split_90_10(backend_factory, usher_factory):
    blue = backend_factory("blue-1")
    green = backend_factory("green-1")
    u = usher_factory(pools={"blue": [blue], "green": [green]}, split={"blue": 90, "green": 10})
    n = 2000
    seen, _ = _count(u.port, n)
    assert set(seen) <= {"blue-1", "green-1"}, seen
    share = seen["blue-1"] / n
    assert 0.87 <= share <= 0.93, "blue got %.1f%% of %d requests: %r" % (share * 100, n, seen)


def test_pool_weight_zero_gets_nothing(backend_factory, usher_factory):
    blue = backend_factory("blue-1")
    green = backend_factory("green-1")
    u = usher_factory(pools={"blue": [blue], "green": [green]}, split={"blue": 100, "green": 0})
    seen, _ = _count(u.port, 50)
    assert seen == {"blue-1": 50}, seen
    assert green.reqs() == []


def test_split_renormalised_over_pools_in_rotation(backend_factory, usher_factory):
    """green has no backend in rotation (weight 0): all of the split goes to blue."""
    blue = backend_factory("blue-1")
    green = backend_factory("green-1")
    u = usher_factory(pools={"blue": [blue], "green": [(green, 0)]},
                      split={"blue": 50, "green": 50})
    seen, _ = _count(u.port, 40)
    assert seen == {"blue-1": 40}, seen


def test_round_robin_smooth_weighted(backend_factory, usher_factory):
    a = backend_factory("blue-a")
    b = backend_factory("blue-b")
    c = backend_factory("blue-c")
    u = usher_factory(pools={"blue": [(a, 3), (b, 1), (c, 0)]},
                      pool_opts={"blue": {"balance": "round_robin"}})
    seen, order = _count(u.port, 400)
    assert seen == {"blue-a": 300, "blue-b": 100}, seen
    # smooth: never two "b" in a row, never more than 3 "a" in a row
    run, longest = 0, 0
    for i, name in enumerate(order):
        if name == "blue-b":
            assert i == 0 or order[i - 1] != "blue-b", order[:20]
            run = 0
        else:
            run += 1
            longest = max(longest, run)
    assert longest <= 3, "not smooth: %d blue-a in a row (%r)" % (longest, order[:20])
    assert c.reqs() == [], "a weight-0 backend got traffic"


def test_round_robin_equal_weights_alternate(backend_factory, usher_factory):
    bs = [backend_factory("blue-%d" % i) for i in range(3)]
    u = usher_factory(pools={"blue": bs})
    seen, order = _count(u.port, 30)
    assert seen == {"blue-0": 10, "blue-1": 10, "blue-2": 10}, seen
    for i in range(3, 30):
        assert order[i] == order[i - 3], order


def test_least_conn_avoids_busy_backend(backend_factory, usher_factory):
    a = backend_factory("blue-a")
    b = backend_factory("blue-b")
    u = usher_factory(pools={"blue": [a, b]}, pool_opts={"blue": {"balance": "least_conn"}})
    # warm both so each has an idle pooled connection
    _count(u.port, 4)
    slow_result = []

    def slow():
        with RawConn(u.port, timeout=10) as c:
            slow_result.append(c.request("GET", "/slow?ms=1500"))

    t = threading.Thread(target=slow)
    t.start()
    try:
        wire.wait_until(lambda: any(r.path == "/slow" for r in a.reqs() + b.reqs()), 3.0,
                        what="the slow request to reach a backend")
        busy = "blue-a" if any(r.path == "/slow" for r in a.reqs()) else "blue-b"
        other = "blue-b" if busy == "blue-a" else "blue-a"
        seen, _ = _count(u.port, 6)
        assert seen == {other: 6}, "least_conn sent requests to %s while it was busy: %r" % (
            busy, seen)
    finally:
        t.join(10)
    assert slow_result and slow_result[0].status == 200


def test_least_conn_spreads_concurrent_requests(backend_factory, usher_factory):
    bs = [backend_factory("blue-%d" % i) for i in range(3)]
    u = usher_factory(pools={"blue": bs}, pool_opts={"blue": {"balance": "least_conn"}})
    results = []

    def one(i):
        with RawConn(u.port, timeout=10) as c:
            results.append(c.request("GET", "/slow?ms=600&i=%d" % i).text())

    ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
        time.sleep(0.03)
    for t in ts:
        t.join(10)
    assert collections.Counter(results) == {"blue-0": 2, "blue-1": 2, "blue-2": 2}, results


def test_503_when_no_backend_in_rotation(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [(b, 0)]})
    with RawConn(u.port) as c:
        r = c.request("GET", "/")
        wire.check_usher_error(c, r, 503, must_close=False)
        if not r.has_token("connection", "close"):
            # the request was fully read: the connection may serve another one
            r = c.request("GET", "/again")
            assert r.status == 503
    time.sleep(0.1)
    assert b.reqs() == [] and b.conns_total == 0


def test_503_when_every_pool_is_empty(backend_factory, usher_factory):
    blue = backend_factory("blue-1")
    green = backend_factory("green-1")
    u = usher_factory(pools={"blue": [(blue, 0)], "green": [(green, 0)]},
                      split={"blue": 90, "green": 10})
    with RawConn(u.port) as c:
        r = c.request("POST", "/upload", body=b"abc")
        wire.check_usher_error(c, r, 503, must_close=False)
    assert blue.reqs() == [] and green.reqs() == []
