"""Helpers for the edge tests (routes, certificates by SNI, the PROXY
protocol, TLS to backends): a test PKI made with the openssl CLI, TLS
clients (Python's ssl module and `openssl s_client`), PROXY protocol v1/v2
headers and a reader for them, scripted servers that expect a PROXY header,
real nginx and HAProxy processes, and config-error positions.

  make_pki(dir)        a CA, a second ("rogue") CA and leaf certificates
                       (conftest's session fixture `pki`); Pki.cert(name)
  cert_info(pem|der)   {names, ips, serial, not_after, subject} via openssl x509
  tls_context / tls_connect / tls_raw_conn / peer_cert
                       Python ssl clients, optionally verifying chain and name,
                       optionally from another loopback source address
  s_client(...)        `openssl s_client -servername`: what certificate was
                       presented, whether it verified, whether an alert ended it
  proxy_v1 / proxy_v1_unknown / proxy_v2 / proxy_v2_local, read_proxy_header
                       the PROXY protocol (HAProxy's spec, proxy-protocol.txt)
  ProxyBackend         servers.Backend that first reads a PROXY header per
                       connection (recorded in .proxy_headers)
  ProxyEchoServer      a TCP echo server that first reads a PROXY header
  Nginx, HAProxy       the real peers, in the foreground, on loopback ports,
                       with a temporary prefix; stop() ends them
  nginx_echo_server    an nginx server block that says what it saw (PROXY
                       addresses, TLS session reuse, client certificate, SNI)
  OpensslServer        `openssl s_server -www`, to prove the TLS clients
  source_conn(...)     a wire.RawConn from 127.0.0.N
  pos_of(text, ...)    (line, column) of a token in a config text

Every wait is bounded. Standard library + openssl/nginx/haproxy binaries."""

import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import types

import wire
from servers import Backend, ThreadedServer, READ_CHUNK
from wire import HOST, RawConn, wait_until

# How long one openssl command may take (key generation is the slow part:
# EC P-256 keys take milliseconds; the margin is for a loaded shared box).
OPENSSL_TIMEOUT = 30
# How long nginx / HAProxy may take to listen after their start.
PEER_START_TIMEOUT = 10.0
PEER_STOP_TIMEOUT = 5.0


# --- a test PKI ---------------------------------------------------------------------

def openssl(*args, input_bytes=None, check=True):
    """Runs the openssl CLI; returns the CompletedProcess (text output)."""
    r = subprocess.run(["openssl"] + list(args), input=input_bytes, capture_output=True,
                       timeout=OPENSSL_TIMEOUT)
    if check and r.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                           r.stderr.decode("utf-8", "replace")))
    return r


# openssl x509 -enddate prints e.g. "notAfter=Jan  5 12:00:00 2027 GMT"
_ENDDATE = "%b %d %H:%M:%S %Y GMT"


def cert_info(pem=None, der=None):
    """What openssl reads in one certificate (a PEM path or text, or DER
    bytes): {names: [DNS names of the subjectAltName, in order], ips: [IP
    names], serial: hex string, not_after: aware UTC datetime, subject}."""
    if der is not None:
        args, data = ["-inform", "DER"], der
    elif os.path.exists(str(pem)):
        with open(str(pem), "rb") as f:
            args, data = [], f.read()
    else:
        args, data = [], pem.encode() if isinstance(pem, str) else pem
    r = openssl("x509", "-noout", "-serial", "-enddate", "-subject", "-ext", "subjectAltName",
                *args, input_bytes=data)
    out = r.stdout.decode()
    serial = re.search(r"^serial=(\S+)", out, re.M).group(1).upper()
    end = re.search(r"^notAfter=(.+)$", out, re.M).group(1).strip()
    not_after = datetime.datetime.strptime(" ".join(end.split()), _ENDDATE).replace(
        tzinfo=datetime.timezone.utc)
    subject = re.search(r"^subject=(.*)$", out, re.M).group(1).strip()
    names = re.findall(r"DNS:([^,\s]+)", out)
    ips = re.findall(r"IP Address:([^,\s]+)", out)
    return {"names": names, "ips": ips, "serial": serial, "not_after": not_after,
            "subject": subject}


class Cert(types.SimpleNamespace):
    """One certificate and key: .name, .cert (PEM path), .key (PEM path),
    .names (SAN DNS names), .ips, .serial, .not_after (aware UTC datetime),
    .issuer ("ca" or "rogue"), .chain (cert + CA cert, for nginx)."""

    def not_after_rfc3339(self):
        return self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")

    def not_after_unix(self):
        return int(self.not_after.timestamp())

    def copy_to(self, directory, stem):
        """Copies cert and key to <directory>/<stem>.pem/.key; returns (cert, key)."""
        c, k = os.path.join(str(directory), stem + ".pem"), os.path.join(str(directory), stem + ".key")
        shutil.copyfile(self.cert, c)
        shutil.copyfile(self.key, k)
        return c, k


class Pki:
    """A CA and the leaf certificates of the edge tests, made in <dir>.
    .ca / .ca_key: the test CA (PEM paths), .rogue_ca: another CA nobody
    trusts; cert(name) -> Cert. What each leaf says: LEAVES."""

    def __init__(self, directory):
        self.dir = str(directory)
        self.certs = {}
        self.ca, self.ca_key = self._make_ca("ca", "usher test CA")
        self.rogue_ca, self.rogue_ca_key = self._make_ca("rogue-ca", "usher rogue CA")

    def _make_ca(self, stem, cn):
        cert, key = self._path(stem + ".pem"), self._path(stem + ".key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "3650", "-subj", "/CN=%s" % cn, "-keyout", key, "-out", cert,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return cert, key

    def _path(self, name):
        return os.path.join(self.dir, name)

    def make(self, name, dns=(), ips=(), days=30, issuer="ca", client=False, cn=None):
        """Issues a leaf certificate (a fresh P-256 key) with these SAN
        entries, valid <days> days, from the CA <issuer> ("ca" or "rogue")."""
        cert, key, csr = self._path(name + ".pem"), self._path(name + ".key"), self._path(name + ".csr")
        ext = self._path(name + ".ext")
        san = ",".join(["DNS:%s" % d for d in dns] + ["IP:%s" % i for i in ips])
        with open(ext, "w") as f:
            if san:
                f.write("subjectAltName=%s\n" % san)
            f.write("basicConstraints=CA:FALSE\n")
            f.write("keyUsage=critical,digitalSignature,keyEncipherment\n")
            f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-subj", "/CN=%s" % (cn or (dns[0] if dns else name)), "-keyout", key,
                "-out", csr)
        ca, ca_key = (self.ca, self.ca_key) if issuer == "ca" else (self.rogue_ca,
                                                                     self.rogue_ca_key)
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial",
                str(0x1000 + len(self.certs) * 7919 + int(time.time()) % 100000),
                "-days", str(days), "-extfile", ext, "-out", cert)
        chain = self._path(name + ".chain.pem")
        with open(chain, "wb") as out:
            for p in (cert, ca):
                with open(p, "rb") as f:
                    out.write(f.read())
        info = cert_info(cert)
        c = Cert(name=name, cert=cert, key=key, names=info["names"], ips=info["ips"],
                 serial=info["serial"], not_after=info["not_after"], issuer=issuer, chain=chain)
        self.certs[name] = c
        return c

    def cert(self, name):
        return self.certs[name]


# The leaves every edge test may use: name -> (dns, ips, days, issuer, client).
# Distinct validity periods make each certificate's not_after its own.
LEAVES = {
    # listener certificates (SNI selection, 421, strict_sni, /status)
    "default": (["default.test", "www.default.test"], [], 20, "ca", False),
    "api": (["api.example.com"], [], 21, "ca", False),
    "api-v2": (["api.example.com"], [], 41, "ca", False),   # replaces "api" in place
    "wild": (["*.example.com"], [], 22, "ca", False),
    "wild-api": (["*.api.example.com"], [], 23, "ca", False),
    "other": (["other.test", "www.other.test"], [], 24, "ca", False),
    # the realistic edge: three services and the edge's own default
    "edge": (["edge.test"], [], 25, "ca", False),
    "svc-a": (["svc-a.test"], [], 26, "ca", False),
    "svc-b": (["svc-b.test"], [], 27, "ca", False),
    "svc-c": (["svc-c.test"], [], 28, "ca", False),
    # backends (pool tls): the right names, a wrong name, an unknown CA
    "app": (["app.internal", "localhost"], ["127.0.0.1"], 29, "ca", False),
    "wrong-name": (["wrong.internal"], [], 30, "ca", False),
    "rogue": (["app.internal", "localhost"], ["127.0.0.1"], 31, "rogue", False),
    # a client certificate for mutual TLS
    "client": ([], [], 32, "ca", True),
}


def make_pki(directory):
    """The CA, the rogue CA and every certificate of LEAVES, in <directory>."""
    pki = Pki(directory)
    for name, (dns, ips, days, issuer, client) in LEAVES.items():
        pki.make(name, dns=dns, ips=ips, days=days, issuer=issuer, client=client,
                 cn="usher-client" if client else None)
    return pki


# --- TLS clients -------------------------------------------------------------------------

def tls_context(ca=None, check_hostname=True, alpn=("http/1.1",), cert=None):
    """A client context: verifies the chain against <ca> (None: no
    verification at all) and, with <check_hostname>, the name; offers
    <alpn>; presents the client certificate <cert> (a Cert) if given."""
    if ca is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = check_hostname
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def tcp_connect(port, source=None, timeout=5.0):
    """A TCP connection to 127.0.0.1:<port>, from the loopback address
    <source> (e.g. "127.0.0.2") when given."""
    return socket.create_connection((HOST, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def tls_connect(port, sni, ca=None, check_hostname=True, source=None, timeout=5.0, preamble=b"",
                alpn=("http/1.1",), cert=None):
    """A TLS connection (an ssl.SSLSocket, handshake done) to 127.0.0.1:<port>
    with SNI <sni> (None: no SNI extension). <preamble> is sent in clear
    before the ClientHello (a PROXY header). ssl.SSLError when the handshake
    fails (a certificate that does not verify, an alert)."""
    ctx = tls_context(ca, check_hostname and sni is not None, alpn, cert)
    raw = tcp_connect(port, source, timeout)
    try:
        if preamble:
            raw.sendall(preamble)
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def tls_raw_conn(port, sni, ca=None, **kw):
    """tls_connect() wrapped in a wire.RawConn (requests, keep-alive)."""
    s = tls_connect(port, sni, ca, **kw)
    return RawConn(port, sock=s, timeout=kw.get("timeout", 5.0))


def peer_cert(sslsock):
    """cert_info() of the certificate the server presented on <sslsock>."""
    return cert_info(der=sslsock.getpeercert(binary_form=True))


def handshake_refused(port, sni, ca=None, timeout=5.0):
    """True if a TLS handshake with SNI <sni> fails (an alert or a close);
    False if it completes (the connection is then closed)."""
    try:
        s = tls_connect(port, sni, ca, check_hostname=False, timeout=timeout)
    except (ssl.SSLError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
            ssl.SSLEOFError):
        return True
    except OSError as e:
        if isinstance(e, socket.timeout):
            raise
        return True
    s.close()
    return False


def s_client(port, servername=None, ca=None, verify_host=None, timeout=15.0, source=None):
    """Runs `openssl s_client` against 127.0.0.1:<port> with -servername
    <servername> (None: -noservername) and, with <ca>, -CAfile and
    -verify_return_error (and -verify_hostname <verify_host>). Returns a
    namespace: rc, out (stdout + stderr), cert (cert_info of the presented
    certificate, or None), verified (bool), alert (bool: the handshake
    ended with a TLS alert)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)]
    cmd += ["-servername", servername] if servername else ["-noservername"]
    if ca:
        cmd += ["-CAfile", ca, "-verify_return_error"]
        if verify_host:
            cmd += ["-verify_hostname", verify_host]
    if source:
        cmd += ["-bind", "%s:0" % source]
    r = subprocess.run(cmd, input=b"", capture_output=True, timeout=timeout)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.S)
    cert = cert_info(pem=m.group(0)) if m else None
    verified = bool(re.search(r"Verify return code: 0 \(ok\)", out)) and r.returncode == 0
    alert = bool(re.search(r"alert", out, re.I)) and cert is None
    return types.SimpleNamespace(rc=r.returncode, out=out, cert=cert, verified=verified,
                                 alert=alert)


# --- the PROXY protocol (HAProxy's proxy-protocol.txt) -------------------------------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_VERSION = 0x20
V2_CMD_LOCAL, V2_CMD_PROXY = 0x0, 0x1
V2_FAM_UNSPEC, V2_FAM_TCP4, V2_FAM_TCP6 = 0x00, 0x11, 0x21
V1_MAX = 107          # the spec's longest v1 line, CRLF included
V2_HEAD = 16          # signature, ver/cmd, family, length
PEEK_MAX = 4096       # more than any header these tests send or expect


def proxy_v1(src, dst="127.0.0.1", sport=40000, dport=8080):
    """A v1 header: "PROXY TCP4|TCP6 src dst sport dport\\r\\n"."""
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def proxy_v1_unknown():
    return b"PROXY UNKNOWN\r\n"


def proxy_v2(src, dst="127.0.0.1", sport=40000, dport=8080, tlvs=b""):
    """A v2 PROXY header (TCP over IPv4 or IPv6), with optional raw TLVs."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        fam, body = V2_FAM_TCP4, s.packed + d.packed + struct.pack(">HH", sport, dport)
    else:
        fam, body = V2_FAM_TCP6, s.packed + d.packed + struct.pack(">HH", sport, dport)
    body += tlvs
    return V2_SIGNATURE + bytes([V2_VERSION | V2_CMD_PROXY, fam]) + struct.pack(">H", len(body)) + body


def proxy_v2_local():
    """A v2 LOCAL header (a balancer's own health check): no addresses."""
    return V2_SIGNATURE + bytes([V2_VERSION | V2_CMD_LOCAL, V2_FAM_UNSPEC]) + struct.pack(">H", 0)


class ProxyHeader(types.SimpleNamespace):
    """A parsed header: version (1|2), command ("PROXY"|"LOCAL"|"UNKNOWN"),
    src, dst, sport, dport (None when not carried), raw bytes."""


def parse_proxy(data):
    """Parses the PROXY header at the start of <data>. Returns (ProxyHeader,
    bytes consumed), (None, 0) when <data> does not start like one, or
    (None, -1) when more bytes are needed. ValueError when malformed."""
    if data.startswith(V2_SIGNATURE[:min(len(data), 12)]) and data[:1] == b"\r":
        if len(data) < V2_HEAD:
            return None, -1
        ver_cmd, fam = data[12], data[13]
        length = struct.unpack(">H", data[14:16])[0]
        if len(data) < V2_HEAD + length:
            return None, -1
        if ver_cmd >> 4 != 2:
            raise ValueError("v2 header with version %d" % (ver_cmd >> 4))
        body = data[V2_HEAD:V2_HEAD + length]
        raw = data[:V2_HEAD + length]
        cmd = ver_cmd & 0xF
        if cmd not in (V2_CMD_LOCAL, V2_CMD_PROXY):
            raise ValueError("v2 command %d" % cmd)
        h = ProxyHeader(version=2, command="LOCAL" if cmd == V2_CMD_LOCAL else "PROXY",
                        family=fam, src=None, dst=None, sport=None, dport=None, raw=raw)
        if cmd == V2_CMD_PROXY:
            if fam == V2_FAM_TCP4 and length >= 12:
                h.src, h.dst = str(ipaddress.ip_address(body[0:4])), str(ipaddress.ip_address(body[4:8]))
                h.sport, h.dport = struct.unpack(">HH", body[8:12])
            elif fam == V2_FAM_TCP6 and length >= 36:
                h.src, h.dst = str(ipaddress.ip_address(body[0:16])), str(ipaddress.ip_address(body[16:32]))
                h.sport, h.dport = struct.unpack(">HH", body[32:36])
        return h, len(raw)
    if data.startswith(b"PROXY "[:len(data)]):
        i = data.find(b"\r\n")
        if i < 0:
            if len(data) >= V1_MAX:
                raise ValueError("v1 line without CRLF in %d bytes" % V1_MAX)
            return None, -1
        line = data[:i].decode("ascii")
        parts = line.split(" ")
        h = ProxyHeader(version=1, command="PROXY", src=None, dst=None, sport=None, dport=None,
                        raw=data[:i + 2])
        if parts[1] == "UNKNOWN":
            h.command = "UNKNOWN"
        elif parts[1] in ("TCP4", "TCP6") and len(parts) == 6:
            h.src, h.dst, h.sport, h.dport = parts[2], parts[3], int(parts[4]), int(parts[5])
        else:
            raise ValueError("bad v1 line %r" % line)
        return h, i + 2
    return None, 0


def read_proxy_header(sock, timeout=5.0):
    """Reads exactly one PROXY header from <sock> (peeking, so no byte after
    it is consumed). Returns a ProxyHeader, or None when the connection does
    not start with one (nothing is consumed then) or closes first; ValueError
    when it starts like one but is malformed."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(PEEK_MAX, socket.MSG_PEEK)
        except (socket.timeout, OSError):
            return None
        if not data:
            return None
        h, n = parse_proxy(data)
        if n == 0:
            return None
        if n > 0:
            got = b""
            while len(got) < n:
                d = sock.recv(n - len(got))
                if not d:
                    return None
                got += d
            sock.settimeout(None)
            return h
        if len(data) == seen:
            time.sleep(0.005)   # peeked all there is: let more arrive
        seen = len(data)
    return None


class ProxyBackend(Backend):
    """A servers.Backend whose connections start with a PROXY header (read
    first, then HTTP as usual). .proxy_headers: [(peer "ip:port", ProxyHeader
    or None)] in accept order; .first_lines: {peer: [request line, ...]}
    (health checks included); header_of(request) -> the ProxyHeader of the
    connection that carried it."""

    def __init__(self, name="backend", **kw):
        super().__init__(name, **kw)
        self.proxy_headers = []
        self.first_lines = {}
        self._by_peer = {}

    def _handle(self, s, peer):
        h = read_proxy_header(s)
        key = "%s:%d" % peer
        with self._lock:
            self.proxy_headers.append((key, h))
            self._by_peer[key] = h
        super()._handle(s, peer)

    def _read_head(self, c):
        lines = super()._read_head(c)
        if lines:
            with self._lock:
                self.first_lines.setdefault(c.peer, []).append(lines[0])
        return lines

    def header_of(self, req):
        with self._lock:
            return self._by_peer.get(req.peer)

    def headers_for(self, path_prefix):
        """[ProxyHeader] of the connections whose first request line asks
        for a path starting with <path_prefix>."""
        with self._lock:
            out = []
            for peer, h in self.proxy_headers:
                lines = self.first_lines.get(peer, [])
                if lines and lines[0].split(" ")[1].startswith(path_prefix):
                    out.append(h)
            return out


class ProxyEchoServer(ThreadedServer):
    """A TCP echo server whose connections start with a PROXY header:
    .proxy_headers [ProxyHeader or None] in accept order; .echoed bytes."""

    def __init__(self, name="pecho", port=0, host=HOST):
        super().__init__(name, port, host, backlog=64)
        self.proxy_headers = []
        self.echoed = 0

    def _handle(self, s, peer):
        h = read_proxy_header(s)
        with self._lock:
            self.proxy_headers.append(h)
        s.settimeout(0.2)
        while not self._stop.is_set():
            try:
                d = s.recv(READ_CHUNK)
            except socket.timeout:
                continue
            except OSError:
                return
            if not d:
                return
            s.sendall(d)
            with self._lock:
                self.echoed += len(d)


# --- real peers: nginx and HAProxy ---------------------------------------------------------

def wait_listening(port, proc, log_fn, what, timeout=PEER_START_TIMEOUT):
    """Waits until 127.0.0.1:<port> accepts a connection; AssertionError with
    the log if <proc> exits first or the time runs out."""
    def up():
        if proc.poll() is not None:
            raise AssertionError("%s exited with %s:\n%s" % (what, proc.returncode, log_fn()))
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return True
        except OSError:
            return False
    try:
        wait_until(up, timeout, interval=0.05, what="%s to listen on %d" % (what, port))
    except AssertionError as e:
        if "exited" in str(e):
            raise
        raise AssertionError("%s\n%s log:\n%s" % (e, what, log_fn())) from None


def stop_process(proc, sig=signal.SIGTERM, timeout=PEER_STOP_TIMEOUT):
    """Sends <sig> to <proc>, waits, then SIGKILLs it (bounded)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# What the nginx peers log for each request, '|'-separated (an unset
# variable is empty): NGINX_LOG_FIELDS names them.
NGINX_LOG_FIELDS = ("uri", "pp_addr", "pp_port", "remote", "ssl_protocol", "ssl_reused",
                    "client_dn", "connection", "status", "server_name", "server_port", "sni")
NGINX_LOG_FORMAT = ("'$request_uri|$proxy_protocol_addr|$proxy_protocol_port|$remote_addr|"
                    "$ssl_protocol|$ssl_session_reused|$ssl_client_s_dn|$connection|$status|"
                    "$server_name|$server_port|$ssl_server_name'")


class Nginx:
    """A real nginx (Debian's) in the foreground (daemon off, one worker)
    with its own prefix under <workdir>/<name>, running the server blocks
    <servers_text> (use {port}, {dir} placeholders through .port/.dir when
    building it). Each request is logged with NGINX_LOG_FORMAT:
    access() -> [dict(NGINX_LOG_FIELDS)]. start() waits until .port
    accepts; stop() ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir, name="nginx", port=None):
        self.name = name
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.port = port or wire.free_port()
        self.host = HOST
        self.proc = None
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "logs", "error.log")
        self.access_log = os.path.join(self.dir, "logs", "access.log")

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def write(self, servers_text):
        d = self.dir
        conf = """\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
{user}
events {{
    worker_connections 256;
}}
http {{
    log_format edge {fmt};
    access_log {d}/logs/access.log edge;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
{servers}
}}
""".format(d=d, fmt=NGINX_LOG_FORMAT, servers=servers_text,
           # as root nginx's workers would run as "nobody", who may not read
           # the certificates and logs of a test's temporary directory
           user="user root;" if os.geteuid() == 0 else "")
        with open(self.conf, "w") as f:
            f.write(conf)
        return self

    def start(self, servers_text=None):
        if servers_text is not None:
            self.write(servers_text)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self._out = open(os.path.join(self.dir, "logs", "stderr.log"), "ab")
        self.proc = subprocess.Popen([binary, "-p", self.dir + "/", "-e", self.error_log,
                                      "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._out)
        wait_listening(self.port, self.proc, self.log, "nginx %s" % self.name)
        return self

    def log(self):
        return wire.read_text(self.error_log) + wire.read_text(
            os.path.join(self.dir, "logs", "stderr.log"))

    def access(self):
        out = []
        for line in wire.read_text(self.access_log).splitlines():
            parts = line.split("|")
            if len(parts) == len(NGINX_LOG_FIELDS):
                out.append(dict(zip(NGINX_LOG_FIELDS, parts)))
        return out

    def stop(self, timeout=PEER_STOP_TIMEOUT):
        stop_process(self.proc, signal.SIGTERM, timeout)
        if self.proc is not None:
            self._out.close()
        self.proc = None


def nginx_echo_server(port, name, proxy_protocol=False, ssl_cert=None, verify_client_ca=None,
                      keepalive=True, session_cache=True, v6=False):
    """An nginx server block answering every request with 200, body
    "<name>" (so load.Load counts it), and headers naming what nginx saw:
    X-Backend, X-PP-Addr / X-PP-Port ($proxy_protocol_addr/_port),
    X-Remote ($remote_addr), X-Conn ($connection), X-SSL-Reused
    ($ssl_session_reused), X-Client-DN ($ssl_client_s_dn), X-SNI
    ($ssl_server_name). /healthz answers 200 "ok". With <v6> it listens on
    [::1]:<port> too."""
    listen = "listen %s:%d%s%s;" % (HOST, port, " ssl" if ssl_cert else "",
                                     " proxy_protocol" if proxy_protocol else "")
    lines = ["    server {", "        " + listen, "        server_name _;"]
    if v6:      # the same server on [::1] too (a host name may resolve to either)
        lines.insert(2, "        " + listen.replace(HOST, "[::1]"))
    if ssl_cert:
        lines += ["        ssl_certificate %s;" % ssl_cert.cert,
                  "        ssl_certificate_key %s;" % ssl_cert.key,
                  "        ssl_protocols TLSv1.2 TLSv1.3;"]
        if session_cache:
            lines += ["        ssl_session_cache shared:S%d:1m;" % port,
                      "        ssl_session_tickets on;"]
        if verify_client_ca:
            lines += ["        ssl_verify_client on;",
                      "        ssl_client_certificate %s;" % verify_client_ca]
    if not keepalive:
        lines.append("        keepalive_timeout 0;")
    hdrs = [("X-Backend", name), ("X-PP-Addr", "$proxy_protocol_addr"),
            ("X-PP-Port", "$proxy_protocol_port"), ("X-Remote", "$remote_addr"),
            ("X-Conn", "$connection"), ("X-SSL-Reused", "$ssl_session_reused"),
            ("X-Client-DN", '"$ssl_client_s_dn"'), ("X-SNI", '"$ssl_server_name"')]
    lines += ["        location = /healthz {", "            return 200 \"ok\";", "        }",
              "        location / {"]
    lines += ["            add_header %s %s always;" % (k, v) for k, v in hdrs]
    lines += ["            return 200 \"%s\";" % name, "        }", "    }"]
    return "\n".join(lines)


class HAProxy:
    """A real HAProxy (Debian's) in the foreground (-db). start(body) writes
    a config: a global section with a stats socket (.stats_socket), defaults
    for <mode> with bounded timeouts, then <body> (frontends and backends;
    a frontend binds .port). start() returns once the stats socket answers
    (HAProxy has bound its listeners by then: no probe connection goes
    through to what is behind it); stop() ends it."""

    def __init__(self, workdir, name="haproxy", port=None):
        self.name = name
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or wire.free_port()
        self.cfg_path = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.stats_socket = os.path.join(self.dir, "stats.sock")
        self.proc = None

    def start(self, body, mode="tcp"):
        cfg = """\
global
    maxconn 200
    stats socket {sock} mode 600 level admin
defaults
    mode {mode}
    timeout connect 3s
    timeout client 30s
    timeout server 30s
    timeout check 2s
{body}
""".format(sock=self.stats_socket, mode=mode, body=body)
        with open(self.cfg_path, "w") as f:
            f.write(cfg)
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self._out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "-db", "-f", self.cfg_path],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._out)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("haproxy exited with %s:\n%s" % (self.proc.returncode,
                                                                      self.log()))
            try:
                return "Name: HAProxy" in self.command("show info", timeout=0.5)
            except OSError:
                return False
        try:
            wait_until(up, PEER_START_TIMEOUT, interval=0.05, what="haproxy stats socket")
        except AssertionError as e:
            if "exited" in str(e):
                raise
            raise AssertionError("%s\nhaproxy log:\n%s" % (e, self.log())) from None
        return self

    def log(self):
        return wire.read_text(self.log_path)

    def command(self, cmd, timeout=3.0):
        """One command on the stats socket; its answer (text)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.stats_socket)
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
            return out.decode("utf-8", "replace")
        finally:
            s.close()

    def server_stat(self, backend, server):
        """{column: value} of `show stat` for <backend>/<server>, or None."""
        text = self.command("show stat")
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# "):
            return None
        cols = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(cols, line.split(",")))
            if row.get("pxname") == backend and row.get("svname") == server:
                return row
        return None

    def stop(self, timeout=PEER_STOP_TIMEOUT):
        # SIGUSR1 is HAProxy's soft stop; SIGTERM its hard stop
        stop_process(self.proc, signal.SIGTERM, timeout)
        if self.proc is not None:
            self._out.close()
        self.proc = None


class OpensslServer:
    """`openssl s_server -www` on a loopback port: the default certificate
    <cert> (a Cert) and, for the SNI name <sni_name>, <sni_cert>; with
    <fatal>, any other SNI name is refused with a fatal alert
    (-servername_fatal). A peer to prove the TLS clients against."""

    def __init__(self, workdir, cert, sni_name=None, sni_cert=None, fatal=False, name="s_server"):
        self.name = name
        self.port = wire.free_port()
        self.log_path = os.path.join(str(workdir), "%s-%d.log" % (name, self.port))
        self.cmd = ["openssl", "s_server", "-accept", "%s:%d" % (HOST, self.port), "-cert",
                    cert.cert, "-key", cert.key, "-www", "-quiet"]
        if sni_name:
            self.cmd += ["-servername", sni_name, "-cert2", sni_cert.cert, "-key2", sni_cert.key]
            if fatal:
                self.cmd.append("-servername_fatal")
        self.proc = None

    def start(self):
        self._out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._out)
        wait_listening(self.port, self.proc, lambda: wire.read_text(self.log_path), self.name)
        return self

    def stop(self, timeout=PEER_STOP_TIMEOUT):
        stop_process(self.proc, signal.SIGTERM, timeout)
        if self.proc is not None:
            self._out.close()
        self.proc = None


def ipv6_loopback():
    """True if [::1] can be bound here (IPv6 may be off in a container)."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


# --- clients from other loopback addresses --------------------------------------------------

def source_conn(port, source, timeout=5.0, preamble=b""):
    """A wire.RawConn to 127.0.0.1:<port> from the address <source>, after
    sending <preamble> (a PROXY header) if given."""
    s = tcp_connect(port, source, timeout)
    if preamble:
        s.sendall(preamble)
    return RawConn(port, sock=s, timeout=timeout)


def closed_without_answer(sock, timeout=3.0):
    """Waits for the peer to close <sock> (FIN or RST) within <timeout>;
    returns the bytes it sent meanwhile. TimeoutError if it stays open."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("connection still open after %.1fs" % timeout)
        sock.settimeout(left)
        try:
            d = sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("connection still open after %.1fs" % timeout) from None
        except (ConnectionResetError, ConnectionAbortedError):
            return got
        if not d:
            return got
        got += d


# --- config texts ---------------------------------------------------------------------------

def pos_of(text, needle, nth=1, line_hint=None):
    """(line, column), both 1-based, of the <nth> occurrence of <needle> in
    <text> (after the first line containing <line_hint>, if given)."""
    start = 0
    if line_hint is not None:
        start = text.index(line_hint)
        start = text.rfind("\n", 0, start) + 1
    i = start - 1
    for _ in range(nth):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


# --- metrics -----------------------------------------------------------------------------

def metric_sum(u, name, **labels):
    """The sum of the samples of <name> whose labels include <labels>."""
    return u.metrics().sum(name, **labels)


def names_label(value):
    """The certificate names of a usher_tls_certificate_expiry_seconds
    `names` label value, as a sorted list (separated by commas and/or spaces)."""
    return sorted(n for n in re.split(r"[,\s]+", value) if n)


def run_threads(fns, timeout):
    """Runs every fn of <fns> in its own thread; returns their results in
    order (re-raising the first exception); bounded by <timeout>."""
    results = [None] * len(fns)
    errors = [None] * len(fns)

    def run(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # pylint: disable=broad-except
            errors[i] = e
    ts = [threading.Thread(target=run, args=(i, f), daemon=True) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.01, deadline - time.monotonic()))
    if any(t.is_alive() for t in ts):
        raise AssertionError("threads still running after %.1fs" % timeout)
    for e in errors:
        if e is not None:
            raise e
    return results
