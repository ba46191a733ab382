"""Slow start (issue 12 item 5): a backend entering rotation after startup
gets weight x max(10 %, elapsed / slow_start); backends of the first config
do not ramp. Tolerances: the ratio new/old is 0.1 in the first tenth of the
ramp (accepted 0.05-0.2) and 1.0 after it (accepted 0.8-1.25)."""

import time

from usher_proc import config_for, reload_and_wait
from wire import RawConn

RAMP_S = 4.0


def _count(port, seconds, names):
    """Sends requests for <seconds>; how many each backend answered."""
    got = {n: 0 for n in names}
    end = time.monotonic() + seconds
    with RawConn(port, timeout=5.0) as c:
        while time.monotonic() < end:
            r = c.request("GET", "/")
            assert r.status == 200, r
            got[r.body.decode()] += 1
    return got


def test_new_backend_ramps_up(backend_factory, usher_factory):
    old = backend_factory("old")
    new = backend_factory("new")
    opts = {"p": {"slow_start": "%ds" % RAMP_S}}
    u = usher_factory(pools={"p": [old]}, pool_opts=opts)
    # a backend of the first config takes its full weight at once
    st = u.backend_status("p", "old")
    assert st["weight"] == 1 and st["slow_start_remaining_ms"] is None, st

    assert reload_and_wait(u, config_for(u, {"p": [old, new]}, pool_opts=opts))[0] == "done"
    t0 = time.monotonic()
    st = u.backend_status("p", "new")
    assert abs(st["weight"] - 0.1) < 0.01 and st["weight_configured"] == 1, st
    assert 0 < st["slow_start_remaining_ms"] <= RAMP_S * 1000, st
    first = _count(u.port, RAMP_S / 10 - (time.monotonic() - t0), ["old", "new"])
    ratio_first = first["new"] / max(1, first["old"])
    time.sleep(max(0, RAMP_S - (time.monotonic() - t0)) + 0.1)
    st = u.backend_status("p", "new")
    assert st["weight"] == 1 and st["slow_start_remaining_ms"] is None, st
    after = _count(u.port, 0.5, ["old", "new"])
    ratio_after = after["new"] / max(1, after["old"])
    print("\nslow start %ss: new/old in the first tenth %.3f (%s), after the ramp %.3f (%s)" % (
        RAMP_S, ratio_first, first, ratio_after, after))
    assert first["old"] >= 20, first
    assert 0.05 <= ratio_first <= 0.2, first
    assert 0.8 <= ratio_after <= 1.25, after
