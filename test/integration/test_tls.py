"""TLS termination on a listener (listeners[].tls): real certificates made
with the openssl command, real TLS clients (Python's ssl module)."""

import os
import socket
import ssl
import subprocess
import time

import pytest

import usher_proc
import wire

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Two self-signed certificates for "localhost" and a key that matches neither."""
    d = tmp_path_factory.mktemp("certs")
    made = {}
    for name in ("one", "two", "stray"):
        cert, key = str(d / ("%s.pem" % name)), str(d / ("%s.key" % name))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost-%s" % name, "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True,
                       timeout=30)
        made[name] = (cert, key)
    return made


def tls_listener(cert, key, protocol="http", pools=None):
    return {"name": "secure", "protocol": protocol, "pools": pools or {"blue": 100},
            "tls": {"cert": cert, "key": key}}


def tls_conn(port, cafile, timeout=5.0, alpn=None):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection((HOST, port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_response(sock, timeout=5.0):
    """Reads one Content-Length response; returns (status, headers dict, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response head: %r" % data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in
               (l.split(":", 1) for l in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return status, headers, body[:length]


def test_https_keepalive_and_forwarded_proto(backend_factory, usher_factory, certs):
    cert, key = certs["one"]
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, listeners=[tls_listener(cert, key)])
    # a client offering http/1.1 only gets it (one offering h2 first now gets
    # h2: test_http2.py)
    s = tls_conn(u.port, cert, alpn=["http/1.1"])
    try:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        for i in range(3):  # three requests on one TLS connection
            s.sendall(b"GET /headers?i=%d HTTP/1.1\r\nHost: secure.test\r\n\r\n" % i)
            status, _, _ = read_response(s)
            assert status == 200
    finally:
        s.close()
    reqs = b.reqs()
    assert len(reqs) == 3
    assert all(r.header("x-forwarded-proto") == "https" for r in reqs), reqs
    assert all(r.header("x-forwarded-host") == "secure.test" for r in reqs), reqs


def test_plain_http_on_tls_listener_is_dropped(backend_factory, usher_factory, certs):
    cert, key = certs["one"]
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, listeners=[tls_listener(cert, key)])
    with socket.create_connection((HOST, u.port), timeout=3.0) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            answer = c.recv(4096)  # a TLS alert at most, then the close
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/"), answer
    assert b.reqs() == []
    s = tls_conn(u.port, cert)  # usher is still fine
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[0] == 200
    s.close()


def test_silent_client_times_out_in_handshake(backend_factory, usher_factory, certs):
    cert, key = certs["one"]
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, listeners=[tls_listener(cert, key)],
                      timeouts={"client_header": "300ms"})
    with wire.RawConn(u.port, timeout=3.0) as c:
        t0 = time.monotonic()
        assert c.wait_closed(3.0) == b""
        assert time.monotonic() - t0 < 2.0


def test_large_download_over_tls(backend_factory, usher_factory, certs):
    cert, key = certs["one"]
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, listeners=[tls_listener(cert, key)])
    n = 5 * 1024 * 1024
    s = tls_conn(u.port, cert)
    try:
        s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
        status, _, body = read_response(s, timeout=20.0)
        assert status == 200 and len(body) == n
        assert body == wire.pattern_bytes(n)
    finally:
        s.close()


def test_tls_tcp_mode(usher_factory, certs):
    """A TCP listener with TLS: usher terminates TLS and tunnels plain bytes."""
    cert, key = certs["one"]
    echo = socket.socket()
    echo.bind((HOST, 0))
    echo.listen(4)
    port = echo.getsockname()[1]
    b = {"name": "echo-1", "address": "%s:%d" % (HOST, port)}
    u = usher_factory(pools={"blue": [b]}, listeners=[tls_listener(cert, key, protocol="tcp")])
    s = tls_conn(u.port, cert)
    try:
        echo.settimeout(5)
        peer, _ = echo.accept()
        s.sendall(b"ping over tls")
        peer.settimeout(5)
        assert peer.recv(100) == b"ping over tls"
        peer.sendall(b"pong")
        s.settimeout(5)
        assert s.recv(100) == b"pong"
        peer.close()
    finally:
        s.close()
        echo.close()


def test_bad_key_is_a_config_error(usher_bin, tmp_path, certs):
    cert, _ = certs["one"]
    _, stray_key = certs["stray"]
    cfg = usher_proc.make_config(pools={"blue": [{"name": "b", "address": "127.0.0.1:1"}]},
                           listeners=[tls_listener(cert, stray_key)])
    path = tmp_path / "bad-tls.yaml"
    path.write_text(usher_proc.to_yaml(cfg))
    for args in (["-t", "-c", str(path)], ["-c", str(path)]):
        r = subprocess.run([usher_bin] + args, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, r
        assert "listeners[0].tls: the private key does not match the certificate" in r.stderr, \
            r.stderr
        assert r.stderr.startswith(str(path) + ":"), r.stderr


def test_certificate_swapped_by_reload(backend_factory, usher_factory, certs):
    (cert1, key1), (cert2, key2) = certs["one"], certs["two"]
    b = backend_factory("blue-1")
    cfg = usher_proc.make_config(pools={"blue": [b]}, listeners=[tls_listener(cert1, key1)])
    u = usher_factory(cfg)
    old = tls_conn(u.port, cert1)  # established before the reload
    cfg["listeners"][0]["tls"] = {"cert": cert2, "key": key2}
    u.reload(cfg)
    u.wait_log(r"reload done generation=2", 5.0)
    new = tls_conn(u.port, cert2)  # verifies against the new certificate only
    try:
        for s in (old, new):
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert read_response(s)[0] == 200
    finally:
        old.close()
        new.close()
    # a broken pair on reload: refused, the running certificate stays
    cfg["listeners"][0]["tls"] = {"cert": cert2, "key": certs["stray"][1]}
    u.reload(cfg)
    u.wait_log(r"reload failed", 5.0)
    s = tls_conn(u.port, cert2)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[0] == 200
    s.close()
