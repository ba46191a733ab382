"""Admin HTTP correctness: 405 with Allow on the read-only endpoints, HEAD
wherever GET works (same head, Content-Length included, no body)."""

import socket

import util

GET_ENDPOINTS = ("/live", "/ready", "/status", "/metrics")


def raw_admin(port, request, timeout=5.0):
    """Sends <request> bytes, reads until the server closes: (status, headers, body)."""
    with socket.create_connection((util.HOST, port), timeout=timeout) as s:
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
