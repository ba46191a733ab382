"""Health checks over a pool's TLS and with its PROXY header (DESIGN.md
"PROXY protocol and TLS to backends": pools[].tls, send_proxy): a check
connects, sends the PROXY header (LOCAL for v2, "PROXY UNKNOWN" for v1),
makes the pool's TLS handshake, verified like its connections (chain and
name: sni, else the backend's host name or IP), then asks its question. A
handshake or verification failure is a failed check with last_result
"tls". Sessions are resumed from one check to the next. The config check
(-t) and every reload load the pools' CA, client certificate and key and
the listeners' certificates, and report a bad one at its key.

Peers: `openssl s_server -www`, Python ssl servers wrapped around the
test backends (recording SNI, the TLS version, whether the session was
resumed and the client certificate), and backends that first read a
PROXY header (edge_util.ProxyBackend). Certificates: the session's test
PKI (conftest `pki`, made with the openssl CLI)."""

import re
import socket
import ssl
import subprocess
import threading

import pytest

import edge_util as eu
import usher_proc
from servers import Backend
from usher_proc import hc_opts, wait_state
from wire import wait_until

# a check every 250 ms, two in a row decide: states settle within ~1 s
STATE_TIMEOUT = 5.0
RUN_TIMEOUT = 10


class TlsBackend(Backend):
    """A test backend behind TLS (Python's ssl, TLS 1.2/1.3) with the
    certificate <cert> (an edge_util.Cert); <client_ca>: client certificates
    required and verified against it; <proxy>: each connection starts with
    a PROXY header, read before the handshake. .handshakes: one dict per
    connection {ok, sni, version, reused, client_cn, error, proxy}."""

    def __init__(self, name, cert, client_ca=None, proxy=False, **kw):
        super().__init__(name, **kw)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert.cert, cert.key)
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
        self.ctx.sni_callback = self._sni
        self.proxy = proxy
        self.handshakes = []
        self._seen = threading.local()

    def _sni(self, sslobj, name, ctx):
        self._seen.sni = name

    def _handle(self, s, peer):
        rec = {"ok": False, "sni": None, "version": None, "reused": None, "client_cn": None,
               "error": None, "proxy": None}
        if self.proxy:
            rec["proxy"] = eu.read_proxy_header(s)
        self._seen.sni = None
        try:
            s.settimeout(5.0)
            t = self.ctx.wrap_socket(s, server_side=True)
        except (ssl.SSLError, OSError) as e:
            rec["error"] = str(e)
            rec["sni"] = self._seen.sni
            with self._lock:
                self.handshakes.append(rec)
            s.close()
            return
        rec.update(ok=True, sni=self._seen.sni, version=t.version(), reused=t.session_reused)
        peer_cert = t.getpeercert()
        if peer_cert:
            rec["client_cn"] = dict(x[0] for x in peer_cert["subject"]).get("commonName")
        with self._lock:
            self.handshakes.append(rec)
        super()._handle(t, peer)

    def done(self):
        with self._lock:
            return [h for h in self.handshakes if h["ok"]]

    def failed(self):
        with self._lock:
            return [h for h in self.handshakes if not h["ok"]]


@pytest.fixture
def tls_backend(servers, pki):
    """TlsBackend factory: tls_backend(name, leaf="app", **kw), started."""
    def make(name, leaf="app", **kw):
        return servers.add(TlsBackend(name, pki.cert(leaf), **kw).start())
    return make


def tls_pool(pki, **kw):
    d = {"ca": pki.ca}
    d.update(kw)
    return d


def hc_pool(tls=None, hc=None, **kw):
    opts = {"health_check": hc or hc_opts()}
    if tls is not None:
        opts["tls"] = tls
    opts.update(kw)
    return opts


def status_of(u, pool, name):
    return u.backend_status(pool, name)


# --- TLS checks ----------------------------------------------------------------------

def test_verified_checks_against_openssl_s_server(pki, servers, usher_factory, tmp_path):
    """openssl s_server -www with the backend certificate: verified by IP,
    by host name and by sni (the three ways DESIGN names), each healthy."""
    srv = eu.OpensslServer(tmp_path, pki.cert("app"))
    srv.start()
    try:
        port = srv.port
        u = usher_factory(
            pools={"by-ip": [{"name": "s", "address": "127.0.0.1:%d" % port}],
                   "by-name": [{"name": "s", "address": "localhost:%d" % port}],
                   "by-sni": [{"name": "s", "address": "127.0.0.1:%d" % port}],
                   "lax": [{"name": "s", "address": "127.0.0.1:%d" % port}]},
            pool_opts={"by-ip": hc_pool(tls_pool(pki)),
                       "by-name": hc_pool(tls_pool(pki)),
                       "by-sni": hc_pool(tls_pool(pki, sni="app.internal")),
                       "lax": hc_pool({"verify": False})})
        for pool in ("by-ip", "by-name", "by-sni", "lax"):
            b = wait_state(u, pool, "s", "healthy", timeout=STATE_TIMEOUT)
            assert b["last_result"] == "ok", (pool, b)
    finally:
        srv.stop()


def test_verification_failures_are_unhealthy_with_reason_tls(pki, tls_backend, usher_factory):
    """An unknown CA and a name the certificate does not carry: unhealthy,
    last_result "tls", and no HTTP request ever reached the backend; the
    right CA and name: healthy, the check seen over TLS with its SNI."""
    good = tls_backend("good")
    rogue = tls_backend("rogue", leaf="rogue")
    wrong = tls_backend("wrong", leaf="wrong-name")
    u = usher_factory(
        pools={"p": [good, rogue, wrong]},
        pool_opts={"p": hc_pool(tls_pool(pki, sni="app.internal"))})
    b = wait_state(u, "p", "good", "healthy", timeout=STATE_TIMEOUT)
    assert b["last_result"] == "ok"
    for name in ("rogue", "wrong"):
        b = wait_state(u, "p", name, "unhealthy", timeout=STATE_TIMEOUT)
        assert b["last_result"] == "tls", b
    assert rogue.health_requests == 0 and wrong.health_requests == 0
    assert rogue.failed() and wrong.failed()   # usher ended those handshakes
    wait_until(lambda: good.health_requests >= 2, STATE_TIMEOUT, what="two checks at good")
    hs = good.done()
    assert hs and {h["sni"] for h in hs} == {"app.internal"}, hs
    assert {h["version"] for h in hs} <= {"TLSv1.2", "TLSv1.3"}, hs
    # the state change names the reason
    assert any(to == "unhealthy" and reason == "tls"
               for fr, to, reason in usher_proc.state_transitions(u, "rogue")), u.log()


def test_wrong_ca_unhealthy_then_reload_with_the_right_one(pki, tls_backend, usher_factory):
    b1 = tls_backend("b1")
    cfg = usher_proc.make_config(pools={"p": [b1]},
                                 pool_opts={"p": hc_pool(tls_pool(pki, ca=pki.rogue_ca))})
    u = usher_factory(cfg)
    assert wait_state(u, "p", "b1", "unhealthy", timeout=STATE_TIMEOUT)["last_result"] == "tls"
    cfg["pools"][0]["tls"]["ca"] = pki.ca
    assert usher_proc.reload_and_wait(u, cfg)[0] == "done"
    b = wait_state(u, "p", "b1", "healthy", timeout=STATE_TIMEOUT)
    assert b["last_result"] == "ok"
    # and verify: false takes any certificate
    cfg["pools"][0]["tls"] = {"ca": pki.rogue_ca, "verify": False}
    assert usher_proc.reload_and_wait(u, cfg)[0] == "done"
    wait_until(lambda: status_of(u, "p", "b1")["state"] == "healthy", STATE_TIMEOUT)


def test_tcp_checks_complete_the_handshake(pki, tls_backend, servers, usher_factory):
    """A tcp check over TLS succeeds once the verified handshake completes;
    a plain server behind a tls pool, or an unverified certificate, fails."""
    good = tls_backend("good")
    rogue = tls_backend("rogue", leaf="rogue")
    plain = servers.backend("plain")
    u = usher_factory(pools={"p": [good, rogue, plain]},
                      pool_opts={"p": hc_pool(tls_pool(pki, sni="app.internal"),
                                              hc=hc_opts(protocol="tcp"))})
    wait_state(u, "p", "good", "healthy", timeout=STATE_TIMEOUT)
    assert wait_state(u, "p", "rogue", "unhealthy", timeout=STATE_TIMEOUT)["last_result"] == "tls"
    b = wait_state(u, "p", "plain", "unhealthy", timeout=STATE_TIMEOUT)
    # it reads the ClientHello as the start of an HTTP head and waits for more
    assert b["last_result"] in ("tls", "closed", "reset", "timeout"), b
    assert good.done() and good.health_requests == 0


def test_sessions_resumed_from_check_to_check(pki, tls_backend, usher_factory):
    """The first check makes a full handshake; the next ones resume its
    session (the TLS 1.3 ticket arrives after the handshake, with the
    answer) — per backend: each has its own first full handshake."""
    b1, b2 = tls_backend("b1"), tls_backend("b2")
    u = usher_factory(pools={"p": [b1, b2]},
                      pool_opts={"p": hc_pool(tls_pool(pki, sni="app.internal"))})
    for b in (b1, b2):
        wait_until(lambda: len(b.done()) >= 4, STATE_TIMEOUT,
                   what="4 checks at %s" % b.name)
        seq = [h["reused"] for h in b.done()]
        assert seq[0] is False and all(seq[1:4]), (b.name, seq)
        assert b.done()[0]["version"] == "TLSv1.3"
    assert wait_state(u, "p", "b1", "healthy")["last_result"] == "ok"


def test_mutual_tls_checks(pki, tls_backend, usher_factory):
    """A backend that requires a client certificate: the pool's cert/key
    are presented by its checks; without them the check fails (TLS 1.3
    sends the refusal after the client's handshake: it comes on the read)."""
    client = pki.cert("client")
    m1 = tls_backend("m1", client_ca=pki.ca)
    m2 = tls_backend("m2", client_ca=pki.ca)
    u = usher_factory(
        pools={"with": [m1], "without": [m2]},
        pool_opts={"with": hc_pool(tls_pool(pki, sni="app.internal", cert=client.cert,
                                            key=client.key)),
                   "without": hc_pool(tls_pool(pki, sni="app.internal"))})
    assert wait_state(u, "with", "m1", "healthy", timeout=STATE_TIMEOUT)["last_result"] == "ok"
    assert {h["client_cn"] for h in m1.done()} == {"usher-client"}
    b = wait_state(u, "without", "m2", "unhealthy", timeout=STATE_TIMEOUT)
    # the backend's alert, or the reset of a socket it closed with our
    # request unread in it, whichever the read meets first
    assert b["last_result"] in ("tls", "reset"), b
    assert m2.health_requests == 0


# --- PROXY headers ---------------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_checks_start_with_local_or_unknown(version, servers, usher_factory):
    """send_proxy v1: "PROXY UNKNOWN\\r\\n"; v2: the 16-byte LOCAL header
    (a check carries no client); then the HTTP check, healthy."""
    b = servers.add(eu.ProxyBackend("pp").start())
    t = servers.add(eu.ProxyBackend("pp-tcp").start())
    u = usher_factory(pools={"http": [b], "tcp": [t]},
                      pool_opts={"http": hc_pool(send_proxy=version),
                                 "tcp": hc_pool(send_proxy=version,
                                                hc=hc_opts(protocol="tcp"))})
    wait_state(u, "http", "pp", "healthy", timeout=STATE_TIMEOUT)
    wait_state(u, "tcp", "pp-tcp", "healthy", timeout=STATE_TIMEOUT)
    wait_until(lambda: b.health_requests >= 2 and len(t.proxy_headers) >= 2, STATE_TIMEOUT,
               what="two checks each")
    want_cmd = "UNKNOWN" if version == "v1" else "LOCAL"
    want_raw = eu.proxy_v1_unknown() if version == "v1" else eu.proxy_v2_local()
    for srv in (b, t):
        heads = [h for _, h in srv.proxy_headers]
        assert heads and all(h is not None for h in heads), (srv.name, heads)
        assert {(h.version, h.command, h.raw) for h in heads} == {
            (int(version[1]), want_cmd, want_raw)}, heads
    # the HTTP check came right after the header, on the same connection
    lines = [ls[0] for ls in b.first_lines.values() if ls]
    assert lines and set(lines) == {"GET /healthz HTTP/1.1"}, b.first_lines


def test_send_proxy_goes_before_tls(pki, tls_backend, usher_factory):
    """With both: the PROXY header in the clear, then the handshake."""
    b = tls_backend("pt", proxy=True)
    u = usher_factory(pools={"p": [b]},
                      pool_opts={"p": hc_pool(tls_pool(pki, sni="app.internal"),
                                              send_proxy="v2")})
    assert wait_state(u, "p", "pt", "healthy", timeout=STATE_TIMEOUT)["last_result"] == "ok"
    hs = b.done()
    assert hs and all(h["proxy"] is not None and h["proxy"].command == "LOCAL" for h in hs), hs


def test_no_proxy_header_without_send_proxy(servers, usher_factory):
    b = servers.add(eu.ProxyBackend("plain").start())
    u = usher_factory(pools={"p": [b]}, pool_opts={"p": hc_pool()})
    wait_state(u, "p", "plain", "healthy", timeout=STATE_TIMEOUT)
    assert b.proxy_headers and all(h is None for _, h in b.proxy_headers)


# --- the config check and reloads ------------------------------------------------------

def run_check(usher_bin, path):
    r = subprocess.run([usher_bin, "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT)
    return r.returncode, r.stdout, r.stderr


def write_cfg(tmp_path, cfg, name="u.yaml"):
    path = tmp_path / name
    path.write_text(usher_proc.to_yaml(cfg))
    return path


def test_config_check_loads_pool_tls_files(pki, usher_bin, tmp_path):
    """-t loads each pool's CA and client certificate: a file that is no
    PEM, or a key of another certificate, is an error at the pool."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    client, app = pki.cert("client"), pki.cert("app")
    pools = {"a": [{"name": "a1", "address": "127.0.0.1:1"}],
             "b": [{"name": "b1", "address": "127.0.0.1:2"}],
             "c": [{"name": "c1", "address": "127.0.0.1:3"}]}
    good = usher_proc.make_config(
        pools=pools, pool_opts={"a": {"tls": {"ca": pki.ca}},
                                "b": {"tls": {"ca": pki.ca, "cert": client.cert,
                                              "key": client.key}},
                                "c": {"tls": {"verify": False}}})
    assert run_check(usher_bin, write_cfg(tmp_path, good)) == (0, "configuration ok\n", "")
    bad = usher_proc.make_config(
        pools=pools, pool_opts={"a": {"tls": {"ca": str(garbage)}},
                                "b": {"tls": {"ca": pki.ca, "cert": client.cert,
                                              "key": app.key}},
                                "c": {"tls": {"verify": False}}})
    path = write_cfg(tmp_path, bad, "bad.yaml")
    code, out, err = run_check(usher_bin, path)
    assert (code, out) == (2, ""), err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert re.match(r"^%s:\d+:\d+: pools\[0\]\.tls: no CA certificate in %s" % (
        re.escape(str(path)), re.escape(str(garbage))), lines[0]), lines[0]
    assert re.match(r"^%s:\d+:\d+: pools\[1\]\.tls: the private key does not match the "
                    r"certificate" % re.escape(str(path)), lines[1]), lines[1]
    # the position is the pool's: where its mapping starts in the file
    text = path.read_text().splitlines()
    for line, pool in zip(lines, ("a", "b")):
        n, col = map(int, re.match(r"^.*?:(\d+):(\d+):", line[len(str(path)):]).groups())
        assert "name: %s" % pool in text[n - 1][col - 1:] or text[n - 1].strip().startswith("-"), \
            (line, text[n - 1])


def test_config_check_refuses_a_certificate_sni_cannot_select(pki, usher_bin, tmp_path):
    """An entry of tls.certificates that names no host (only an IP
    address) is an error at its position; the default tls.cert may."""
    cert, key = tmp_path / "ip.pem", tmp_path / "ip.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=usher test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=RUN_TIMEOUT)
    d = pki.cert("default")
    pools = {"blue": [{"name": "b", "address": "127.0.0.1:1"}]}
    as_default = usher_proc.make_config(pools=pools, listeners=[
        {"name": "s", "pools": {"blue": 1}, "tls": {"cert": str(cert), "key": str(key)}}])
    assert run_check(usher_bin, write_cfg(tmp_path, as_default)) == (0, "configuration ok\n", "")
    as_entry = usher_proc.make_config(pools=pools, listeners=[
        {"name": "s", "pools": {"blue": 1},
         "tls": {"cert": d.cert, "key": d.key,
                 "certificates": [{"cert": pki.cert("api").cert, "key": pki.cert("api").key},
                                  {"cert": str(cert), "key": str(key)}]}}])
    path = write_cfg(tmp_path, as_entry, "entry.yaml")
    code, out, err = run_check(usher_bin, path)
    assert code == 2, err
    assert re.match(r"^%s:\d+:\d+: listeners\[0\]\.tls\.certificates\[1\]: %s names no host" % (
        re.escape(str(path)), re.escape(str(cert))), err), err


def test_reload_refuses_a_bad_pool_ca_and_keeps_checking(pki, tls_backend, usher_factory,
                                                          tmp_path):
    """A reload whose pool CA does not load fails at the pool; the running
    checks go on with the running settings."""
    b1 = tls_backend("b1")
    cfg = usher_proc.make_config(pools={"p": [b1]},
                                 pool_opts={"p": hc_pool(tls_pool(pki, sni="app.internal"))})
    u = usher_factory(cfg)
    wait_state(u, "p", "b1", "healthy", timeout=STATE_TIMEOUT)
    garbage = tmp_path / "garbage-ca.pem"
    garbage.write_text("nothing\n")
    cfg["pools"][0]["tls"]["ca"] = str(garbage)
    assert usher_proc.reload_and_wait(u, cfg)[0] == "failed"
    assert u.wait_log(r"config error .*pools\[0\]\.tls: no CA certificate in", 5.0)
    before = b1.health_requests
    wait_until(lambda: b1.health_requests >= before + 2, STATE_TIMEOUT, what="more checks")
    assert status_of(u, "p", "b1")["state"] == "healthy"
