"""Admin HTTP correctness: 405 with Allow on the read-only endpoints, HEAD
wherever GET works (same head, Content-Length included, no body)."""

import socket

import pytest

import usher_proc
import wire

GET_ENDPOINTS = ("/live", "/ready", "/status", "/metrics")


def raw_admin(port, request, timeout=5.0):
    """Sends <request> bytes, reads until the server closes: (status, headers, body)."""
    with socket.create_connection((wire.HOST, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def test_other_methods_get_405_with_allow(proxy):
    port = proxy.usher.admin_port
    for path in GET_ENDPOINTS:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            req = ("%s %s HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
                   % (method, path)).encode()
            status, headers, body = raw_admin(port, req)
            assert status == 405, (method, path)
            assert headers.get("allow") == "GET, HEAD", (method, path, headers)
            assert int(headers["content-length"]) == len(body)


def test_unknown_path_is_404_whatever_the_method(proxy):
    port = proxy.usher.admin_port
    for method in ("GET", "HEAD", "POST"):
        status, headers, _ = raw_admin(
            port, ("%s /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" % method).encode())
        assert status == 404, method
        assert "allow" not in headers


def test_head_matches_get_without_body(proxy):
    port = proxy.usher.admin_port
    for path in GET_ENDPOINTS:
        gs, gh, gbody = raw_admin(port, ("GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path).encode())
        hs, hh, hbody = raw_admin(port, ("HEAD %s HTTP/1.1\r\nHost: a\r\n\r\n" % path).encode())
        assert hs == gs == 200, path
        assert hbody == b"", path
        assert int(gh["content-length"]) == len(gbody) > 0, path
        assert set(hh) == set(gh), (path, hh, gh)
        assert hh["content-type"] == gh["content-type"]
        if path in ("/live", "/ready"):
            # same state, same answer: the body a GET would get has this length
            assert hh["content-length"] == gh["content-length"], path
        else:
            assert int(hh["content-length"]) > 0, path


# --- /ready with admin.ready_requires_backends ----------------------------------------

def _ready_usher(backend_factory, usher_factory, requires):
    from usher_proc import hc_opts
    b = backend_factory("blue-1")
    admin = {"bind": "%s:%d" % (wire.HOST, wire.free_port())}
    if requires is not None:
        admin["ready_requires_backends"] = requires
    u = usher_factory(pools={"blue": [b]},
                      pool_opts={"blue": {"health_check": hc_opts(interval="100ms",
                                                                  timeout="80ms", healthy=1,
                                                                  unhealthy=1)}},
                      extra={"admin": admin})
    return u, b


def test_ready_requires_backends_503_while_a_listener_has_none(backend_factory, usher_factory):
    from usher_proc import wait_state
    u, b = _ready_usher(backend_factory, usher_factory, True)
    assert u.admin_get("/ready")[0] == 200
    b.kill()
    wait_state(u, "blue", "blue-1", "unhealthy")
    status, body, _ = u.admin_get("/ready")
    assert status == 503 and body == "no backend in rotation\n", (status, body)
    assert u.admin_get("/ready", method="HEAD")[0] == 503
    assert u.status_json()["ready"] is False
    assert u.metrics().get("usher_ready") == 0
    assert u.admin_get("/live")[0] == 200
    b.restart()
    u.wait_admin("/ready", 200, 5.0)
    assert u.metrics().get("usher_ready") == 1


@pytest.mark.parametrize("requires", [None, False])
def test_ready_ignores_backends_by_default(requires, backend_factory, usher_factory):
    from usher_proc import wait_state
    u, b = _ready_usher(backend_factory, usher_factory, requires)
    b.kill()
    wait_state(u, "blue", "blue-1", "unhealthy")
    assert u.admin_get("/ready")[0] == 200
    assert u.metrics().get("usher_ready") == 1
