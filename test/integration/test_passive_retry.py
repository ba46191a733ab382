"""Passive health and budgeted retries (issue 12 items 6 and 7): real
traffic ejects a failing backend (state `ejected`) within the pool's cap;
an idempotent body-less request whose backend answers garbage, resets or
says nothing within timeouts.first_byte goes once to another backend,
within the pool's retry budget."""

import time

import wire
from wire import RawConn, build_request

PASSIVE = {"consecutive_failures": 3, "ejection_time": "2s", "max_ejected_percent": 50}


def _get_many(port, n, path="/", method="GET", body=None):
    """<n> requests on one keep-alive connection; the statuses in order."""
    out = []
    with RawConn(port, timeout=5.0) as c:
        for _ in range(n):
            if body is None:
                r = c.request(method, path)
            else:
                c.send(build_request(method, path, body=body))
                r = c.read_response(method)
            out.append(r.status)
            if r.has_token("connection", "close"):
                c.close()
                c.__init__(port, timeout=5.0)
    return out


def test_502_backend_ejected_after_exactly_n_failures(backend_factory, usher_factory):
    good = backend_factory("good")
    bad = backend_factory("bad", mode="/status?code=502")
    u = usher_factory(pools={"p": [good, bad]}, pool_opts={"p": {"passive_health": PASSIVE}})
    statuses = _get_many(u.port, 20)
    assert statuses.count(502) == 3, statuses      # exactly consecutive_failures reach clients
    assert set(statuses) == {200, 502}, statuses
    st = u.backend_status("p", "bad")
    assert st["state"] == "ejected", st
    seen = len(bad.reqs())
    t_eject = time.monotonic()
    # no request reaches it during its ejection time
    while time.monotonic() - t_eject < 1.5:
        assert _get_many(u.port, 5) == [200] * 5
    assert len(bad.reqs()) == seen, "an ejected backend got requests"
    m = u.metrics()
    assert m.get("usher_backend_ejections_total", pool="p", backend="bad") == 1
    assert m.get("usher_backend_state", pool="p", backend="bad", state="ejected") == 1
    # back after ejection_time
    wire.wait_until(lambda: u.backend_status("p", "bad")["state"] == "healthy", 2.0,
                    what="the ejected backend back")
    _get_many(u.port, 4)
    assert len(bad.reqs()) > seen
    assert u.log_lines("backend ejected")


def test_all_failing_at_most_half_ejected(backend_factory, usher_factory):
    bs = [backend_factory("b%d" % i, mode="/status?code=503") for i in range(4)]
    u = usher_factory(pools={"p": bs}, pool_opts={"p": {"passive_health": PASSIVE}})
    _get_many(u.port, 40)
    states = [u.backend_status("p", b.name)["state"] for b in bs]
    assert states.count("ejected") == 2, states
    assert u.log_lines("backend ejection refused")


def test_garbage_backend_costs_no_idempotent_request(backend_factory, usher_factory):
    good = backend_factory("good")
    bad = backend_factory("bad", mode="/garbage")
    u = usher_factory(pools={"p": [good, bad]}, pool_opts={"p": {"passive_health": PASSIVE}})
    statuses = _get_many(u.port, 30)
    assert statuses == [200] * 30, statuses
    assert u.backend_status("p", "bad")["state"] == "ejected"
    m = u.metrics()
    retried = m.get("usher_retries_total", pool="p", reason="invalid_head")
    assert retried == 3, m.find("usher_retries_total")
    # a request that is not idempotent is not retried: one 502 where it hit the garbage
    u2 = usher_factory(pools={"p": [good, bad]})
    posts = _get_many(u2.port, 4, path="/upload", method="POST", body=b"abc")
    assert posts.count(502) == 2 and posts.count(200) == 2, posts


def test_silent_backend_retried_after_first_byte(backend_factory, usher_factory):
    good = backend_factory("good")
    bad = backend_factory("bad", mode="/hang")
    u = usher_factory(pools={"p": [good, bad]}, timeouts={"first_byte": "300ms", "backend": "5s"},
                      pool_opts={"p": {"passive_health": PASSIVE}})
    t0 = time.monotonic()
    statuses = _get_many(u.port, 12)
    took = time.monotonic() - t0
    assert statuses == [200] * 12, statuses
    # 3 waits of first_byte before the ejection, none after
    assert 0.85 <= took <= 2.5, took
    assert u.backend_status("p", "bad")["state"] == "ejected"
    assert u.metrics().get("usher_retries_total", pool="p", reason="first_byte") == 3


def test_retry_budget_bounds_a_storm(backend_factory, usher_factory):
    """Without passive health (turned off: it is on by default) the garbage backend keeps getting half the
    requests; retries stop at the budget (20 % of requests plus 3/s), and
    the only client errors are the refused retries."""
    good = backend_factory("good")
    bad = backend_factory("bad", mode="/garbage")
    u = usher_factory(pools={"p": [good, bad]}, pool_opts={"p": {"passive_health": False}})
    statuses = _get_many(u.port, 200)
    m = u.metrics()
    refused = m.get("usher_retry_budget_refused_total", pool="p")
    retried = m.get("usher_retries_total", pool="p", reason="invalid_head")
    print("\nretry budget: 200 requests, %d retried, %d refused, %d client 502" % (
        retried, refused, statuses.count(502)))
    assert refused > 0
    assert statuses.count(502) == refused, (statuses.count(502), refused)
    assert retried <= 0.2 * 200 + 3 * 10 + 1, retried
