"""A short wrk run through usher against a keep-alive backend: no non-2xx
answer and no socket error of any kind."""

import re
import shutil
import subprocess

import pytest

import wire


def test_wrk_smoke(backend_factory, usher_factory):
    wrk = shutil.which("wrk")
    if not wrk:
        pytest.fail("wrk is not installed (Debian package wrk)")
    b1 = backend_factory("blue-1")
    b2 = backend_factory("blue-2")
    u = usher_factory(pools={"blue": [b1, b2]})
    p = subprocess.run([wrk, "-t1", "-c20", "-d3s", "--timeout", "5s", u.url("/")],
                       capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    total = int(m.group(1))
    assert total >= 500, "only %d requests in 3 s:\n%s" % (total, out)
    assert "Non-2xx" not in out, out
    assert "Socket errors" not in out, out
    assert u.admin_get("/ready")[0] == 200
    st = u.status_json()
    served = sum(b["requests_total"] for b in st["pools"][0]["backends"])
    assert served >= total, (served, total)
    # round robin over two equal backends
    n1, n2 = len(b1.reqs()), len(b2.reqs())
    assert abs(n1 - n2) <= max(20, 0.05 * (n1 + n2)), (n1, n2)


def test_wrk_connection_close(backend_factory, usher_factory):
    """New connection per request: accept, answer, close, again and again."""
    b1 = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b1]})
    p = subprocess.run(["wrk", "-t1", "-c10", "-d2s", "--timeout", "5s",
                        "-H", "Connection: close", u.url("/")],
                       capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    total = int(re.search(r"(\d+) requests in", out).group(1))
    assert total >= 200, out
    assert "Non-2xx" not in out, out
    assert "Socket errors" not in out, out
    wire.wait_until(lambda: u.status_json()["listeners"][0]["connections"] == 0, 3.0,
                    what="every client connection to be gone")
    # the upstream side stayed pooled: far fewer upstream connections than requests
    assert b1.conns_total <= 20, b1.conns_total
