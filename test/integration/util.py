"""Helpers shared by the integration tests: ports, waiting, a raw HTTP/1.1
client that keeps full control over the bytes, deterministic payloads, a tiny
YAML writer for usher configs and a Prometheus text parser.

Standard library only (run with /usr/bin/python3)."""

import hashlib
import http.client
import json
import re
import select
import socket
import time

HOST = "127.0.0.1"


# --- ports and waiting -------------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind 0, read, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or raises
    AssertionError after <timeout> seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # pylint: disable=broad-except
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s" %
                                 (timeout, what, (" (last error: %r)" % last_exc) if last_exc else ""))
        time.sleep(interval)


# --- deterministic payloads ---------------------------------------------------

# A prime period, so a dropped or duplicated buffer of any power-of-two size
# shifts the content and changes the digest.
PATTERN_PERIOD = 65521
PATTERN = bytes(((i * 2654435761) >> 13) & 0xFF for i in range(PATTERN_PERIOD))


def pattern_chunks(n, chunk=65536, start=0):
    """Yields the n bytes of the deterministic stream starting at offset <start>."""
    off = start
    end = start + n
    while off < end:
        p = off % PATTERN_PERIOD
        take = min(chunk, end - off, PATTERN_PERIOD - p)
        yield PATTERN[p:p + take]
        off += take


def pattern_bytes(n):
    return b"".join(pattern_chunks(n))


_sha_cache = {}


def pattern_sha256(n):
    """sha256 hex of the first n bytes of the deterministic stream."""
    if n not in _sha_cache:
        h = hashlib.sha256()
        for c in pattern_chunks(n, chunk=1 << 20):
            h.update(c)
        _sha_cache[n] = h.hexdigest()
    return _sha_cache[n]


class RateLimiter:
    """Sleeps so that the bytes passed to .consumed(n) stay under <rate> bytes/s."""

    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.total = 0

    def consumed(self, n):
        if not self.rate:
            return
        self.total += n
        ahead = self.total / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


# --- raw HTTP/1.1 client --------------------------------------------------------

class ConnectionClosed(Exception):
    """The peer closed (FIN or RST) before a complete response head arrived."""


class Response:
    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []      # [(name, value)] in order, names as received
        self.body = b""
        self.raw_head = b""
        self.interim = []      # 1xx responses received before this one
        self.complete = True   # False when the connection ended before the framed body did
        self.closed = False    # True when the connection was seen closed while reading it

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_token(self, name, token):
        """True if the comma-separated header <name> contains <token>."""
        token = token.lower()
        for v in self.header_all(name):
            if token in [t.strip().lower() for t in v.split(",")]:
                return True
        return False

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %s %r body=%d bytes%s>" % (
            self.status, self.reason, self.headers, len(self.body),
            "" if self.complete else " INCOMPLETE")


def build_request(method="GET", target="/", headers=None, body=None, version="HTTP/1.1",
                  host="usher.test", chunked=False):
    """Request bytes. <headers> is a list of (name, value) pairs sent as given;
    Host (unless host=None or already present) and Content-Length / chunked
    framing (when a body is given) are added."""
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if host is not None and "host" not in names:
        headers.insert(0, ("Host", host))
    if body is not None:
        if chunked:
            if "transfer-encoding" not in names:
                headers.append(("Transfer-Encoding", "chunked"))
        elif "content-length" not in names:
            headers.append(("Content-Length", str(len(body))))
    out = ["%s %s %s\r\n" % (method, target, version)]
    out += ["%s: %s\r\n" % (k, v) for k, v in headers]
    out.append("\r\n")
    data = "".join(out).encode("latin-1")
    if body is not None:
        if chunked:
            if body:
                data += b"%x\r\n%s\r\n" % (len(body), body)
            data += b"0\r\n\r\n"
        else:
            data += body
    return data


class RawConn:
    """One client TCP connection with a receive buffer, so pipelined responses
    and responses that arrive byte by byte are read correctly."""

    def __init__(self, port, host=HOST, timeout=5.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.reset = False

    # context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        """Sends all of <data>. Returns False if the peer already closed."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def request(self, method="GET", target="/", headers=None, body=None, **kw):
        """Sends one request and reads its response."""
        self.send(build_request(method, target, headers, body, **{
            k: v for k, v in kw.items() if k in ("version", "host", "chunked")}))
        return self.read_response(method=method, timeout=kw.get("timeout"))

    def _fill(self, deadline):
        """Reads more bytes into self.buf. Returns False on EOF/RST; raises
        TimeoutError when <deadline> passes."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the peer")
        self.sock.settimeout(remaining)
        try:
            d = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("no data from the peer") from None
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _read_line(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = self.buf[:i]
                self.buf = self.buf[i + 2:]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            if not self._fill(deadline):
                return None

    def _read_exact(self, n, deadline, sink=None):
        """Reads n bytes; returns (data, complete)."""
        parts = []
        got = 0
        while got < n:
            if not self.buf:
                if not self._fill(deadline):
                    break
            take = self.buf[:n - got]
            self.buf = self.buf[len(take):]
            got += len(take)
            if sink:
                sink(take)
            else:
                parts.append(take)
        return b"".join(parts), got == n

    def read_head(self, timeout=None):
        """Reads one response head (interim or final). Returns a Response with
        no body, or raises ConnectionClosed / TimeoutError."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed%s with %d bytes of a head: %r" %
                                       (" (reset)" if self.reset else "", len(self.buf),
                                        self.buf[:200]))
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        r = Response()
        r.raw_head = head + b"\r\n\r\n"
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise ValueError("bad status line %r" % lines[0])
        r.version, r.status, r.reason = m.group(1), int(m.group(2)), m.group(3) or ""
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep:
                raise ValueError("bad header line %r" % line)
            r.headers.append((k, v.strip(" \t")))
        return r

    def read_response(self, method="GET", timeout=None, sink=None, keep_interim=True):
        """Reads a full response: 1xx interim heads are collected in .interim,
        the body is framed by method/status, Transfer-Encoding chunked,
        Content-Length or the connection close. With <sink>, body bytes are
        passed to sink(bytes) instead of being stored. A body cut short sets
        .complete False (no exception)."""
        timeout = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + timeout
        interim = []
        while True:
            r = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            break
        if keep_interim:
            r.interim = interim
        no_body = method.upper() == "HEAD" or r.status in (204, 304) or r.status == 101
        parts = []
        store = sink or parts.append
        te = ",".join(r.header_all("transfer-encoding")).lower()
        cl = r.header("content-length")
        if no_body:
            pass
        elif te:
            if te.split(",")[-1].strip() != "chunked":
                raise ValueError("response with Transfer-Encoding %r" % te)
            r.complete = self._read_chunked(deadline, store)
        elif cl is not None:
            data, r.complete = self._read_exact(int(cl), deadline, sink=store)
        else:
            while True:
                if self.buf:
                    store(self.buf)
                    self.buf = b""
                if not self._fill(deadline):
                    break
            r.closed = True
        if not sink:
            r.body = b"".join(parts)
        if self.eof and not self.buf:
            r.closed = True
        return r

    def _read_chunked(self, deadline, store):
        while True:
            line = self._read_line(deadline)
            if line is None:
                return False
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers
                    t = self._read_line(deadline)
                    if t is None:
                        return False
                    if t == b"":
                        return True
            _, ok = self._read_exact(size, deadline, sink=store)
            if not ok:
                return False
            if self._read_line(deadline) != b"":
                return False

    def wait_closed(self, timeout=3.0):
        """Waits for the peer to close. Returns the bytes received meanwhile
        (plus anything already buffered) once the connection is closed; raises
        TimeoutError if it is still open after <timeout>."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def readable(self, wait=0.1):
        """True if bytes or a close are waiting to be read after <wait> seconds."""
        if self.buf or self.eof:
            return True
        r, _, _ = select.select([self.sock], [], [], wait)
        return bool(r)

    def is_open(self, wait=0.1):
        """True if nothing says the connection is closed after <wait> seconds
        (no FIN, no RST, no unexpected byte)."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            self.sock.setblocking(False)
            d = self.sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.setblocking(True)
        return bool(d)


def http_get(port, path="/", headers=None, timeout=5.0, method="GET", body=None):
    """One request on a fresh connection with http.client: (status, headers dict, body bytes)."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


# --- usher error responses ---------------------------------------------------------

def check_usher_error(conn, resp, code, must_close=True, close_timeout=3.0):
    """Asserts <resp> is an error usher made itself: status <code>, a
    text/plain short body framed by Content-Length and, with <must_close>,
    "Connection: close" and the connection actually closed."""
    assert resp.status == code, "expected %d, got %r body=%r" % (code, resp, resp.body[:200])
    assert resp.version == "HTTP/1.1", resp.raw_head
    ct = resp.header("content-type", "")
    assert ct.lower().startswith("text/plain"), "Content-Type %r in %r" % (ct, resp.raw_head)
    cl = resp.header("content-length")
    assert cl is not None and int(cl) == len(resp.body), "Content-Length %r, body %d bytes" % (
        cl, len(resp.body))
    assert 0 < len(resp.body) < 1024, "body %r" % resp.body
    if must_close:
        assert resp.has_token("connection", "close"), "no Connection: close in %r" % resp.raw_head
        extra = conn.wait_closed(close_timeout)
        assert extra == b"", "bytes after the %d response: %r" % (code, extra[:200])


# --- YAML writer -------------------------------------------------------------------

_PLAIN_OK = re.compile(r"^[A-Za-z0-9_./\-\[\]][A-Za-z0-9_./:\-\[\]]*$")
_LOOKS_TYPED = re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?|true|false|yes|no|on|off|"
                          r"null|~|y|n)$", re.IGNORECASE)


def _yaml_scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN_OK.match(s) and not _LOOKS_TYPED.match(s) and not s.startswith("["):
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars (enough for usher configs)."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 1)))
            elif isinstance(v, list) and v:
                lines.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 1)))
            elif isinstance(v, (dict, list)):
                lines.append("%s%s: %s\n" % (pad, k, "{}" if isinstance(v, dict) else "[]"))
            else:
                lines.append("%s%s: %s\n" % (pad, k, _yaml_scalar(v)))
        return "".join(lines)
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = to_yaml(item, indent + 1)
                # put the first line after the dash
                first, _, rest = sub.partition("\n")
                lines.append("%s- %s\n%s" % (pad, first.lstrip(), rest))
            else:
                lines.append("%s- %s\n" % (pad, _yaml_scalar(item)))
        return "".join(lines)
    return pad + _yaml_scalar(obj) + "\n"


# --- Prometheus text ---------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


class Metrics:
    """Parsed Prometheus text: .samples is [(name, {label: value}, float)]."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError("bad metrics line %r" % line)
            labels = {}
            if m.group(2):
                pos = 0
                s = m.group(2)
                while pos < len(s):
                    lm = _LABEL.match(s, pos)
                    if not lm:
                        raise ValueError("bad labels in %r" % line)
                    labels[lm.group(1)] = lm.group(2).encode().decode("unicode_escape")
                    pos = lm.end()
            self.samples.append((m.group(1), labels, float(m.group(3))))

    def find(self, name, **labels):
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == str(x) for k, x in labels.items())]

    def get(self, name, **labels):
        """The value of the one sample matching name and labels (a subset of
        its labels); None if there is none; AssertionError if several match."""
        f = self.find(name, **labels)
        if not f:
            return None
        assert len(f) == 1, "several samples of %s%r: %r" % (name, labels, f)
        return f[0][1]

    def sum(self, name, **labels):
        return sum(v for _, v in self.find(name, **labels))

    def names(self):
        return {n for n, _, _ in self.samples}

    def as_dict(self):
        """{'name{k="v",...}': value} with labels sorted."""
        out = {}
        for n, l, v in self.samples:
            key = n + ("{%s}" % ",".join('%s="%s"' % (k, l[k]) for k in sorted(l)) if l else "")
            out[key] = v
        return out


# --- logs ----------------------------------------------------------------------------

LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (debug|info|warn|error) (.*)$")
_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line):
    """'<time> <level> <event words> k=v ...' -> dict(time, level, event, kv) or None."""
    m = LOG_LINE.match(line)
    if not m:
        return None
    rest = m.group(3)
    first = _KV.search(rest)
    event = (rest[:first.start()] if first else rest).strip()
    kv = {}
    for km in _KV.finditer(rest):
        v = km.group(2)
        if v.startswith('"'):
            try:
                v = json.loads(v)
            except ValueError:
                v = v[1:-1]
        kv[km.group(1)] = v
    return {"time": m.group(1), "level": m.group(2), "event": event, "kv": kv}


# --- usher configs and processes --------------------------------------------------------

def _backend_entry(item):
    """A config backend entry from a Backend, (Backend, weight), or a dict."""
    if isinstance(item, dict):
        return dict(item)
    weight = 1
    if isinstance(item, tuple):
        item, weight = item
    return {"name": item.name, "address": item.address, "weight": weight}


def make_config(pools, split=None, listeners=None, timeouts=None, limits=None, log=None,
                shutdown=None, pool_opts=None, admin=True, extra=None):
    """An usher config dict (write it with to_yaml) for the given backends.

    pools:     {"blue": [b1, (b2, 3), {"name": .., "address": .., "weight": ..}], ...}
               (a Backend alone has weight 1)
    split:     the pools map of the single listener "web" (default: every pool 100)
    listeners: instead of split, a full list of listener dicts; "bind" may be
               omitted (a free port is picked)
    pool_opts: {"blue": {"balance": "least_conn", "health_check": {...}, ...}}
    timeouts, limits, log, shutdown: merged over the test defaults
               (shutdown: drain_delay 0s, timeout 3s; log: level info)
    admin:     True (free port), False (no admin section) or a bind string
    extra:     top-level keys merged last (e.g. to inject an unknown key)."""
    cfg = {}
    if admin:
        cfg["admin"] = {"bind": admin if isinstance(admin, str) else "%s:%d" % (HOST, free_port())}
    cfg["shutdown"] = dict({"drain_delay": "0s", "timeout": "3s"}, **(shutdown or {}))
    if timeouts:
        cfg["timeouts"] = dict(timeouts)
    if limits:
        cfg["limits"] = dict(limits)
    cfg["log"] = dict({"level": "info"}, **(log or {}))
    if listeners is None:
        listeners = [{"name": "web", "protocol": "http",
                      "pools": dict(split) if split is not None else {p: 100 for p in pools}}]
    ls = []
    for l in listeners:
        l = dict(l)
        l.setdefault("bind", "%s:%d" % (HOST, free_port()))
        l.setdefault("protocol", "http")
        ls.append(l)
    cfg["listeners"] = ls
    cfg["pools"] = []
    for name, items in pools.items():
        p = {"name": name}
        p.update((pool_opts or {}).get(name, {}))
        p["backends"] = [_backend_entry(i) for i in items]
        cfg["pools"].append(p)
    cfg.update(extra or {})
    return cfg


def _port_of(bind):
    return int(bind.rsplit(":", 1)[1])


SANITIZER_MARKERS = ("runtime error:", "AddressSanitizer", "LeakSanitizer",
                     "UndefinedBehaviorSanitizer", "ThreadSanitizer")


class Usher:
    """A running usher process (see conftest.usher_factory).

    port / ports[name]: listener ports; admin_port; url(path, listener=None);
    admin_get(path) -> (status, body str, headers dict); status_json();
    metrics() -> Metrics; log() -> stderr text so far; log_lines(event=None);
    wait_log(regex, timeout); wait_admin(path, status, timeout); send_signal(sig); reload(cfg) (rewrite + SIGHUP);
    wait_exit(timeout) -> returncode; stop() -> returncode; rss_kb();
    sanitizer_report() -> the offending text or None."""

    def __init__(self, binary, cfg, workdir, name="usher"):
        import os
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.cfg_path = os.path.join(str(workdir), "%s.yaml" % name)
        self.log_path = os.path.join(str(workdir), "%s.stderr" % name)
        self.proc = None
        self.write_config(cfg)

    def write_config(self, cfg):
        """Writes <cfg> (a dict, or YAML text) to the config file."""
        self.cfg = cfg
        text = cfg if isinstance(cfg, str) else to_yaml(cfg)
        with open(self.cfg_path, "w") as f:
            f.write(text)
        if isinstance(cfg, dict):
            self.ports = {l["name"]: _port_of(l["bind"]) for l in cfg.get("listeners", [])}
            self.port = next(iter(self.ports.values()), None)
            self.admin_port = _port_of(cfg["admin"]["bind"]) if "admin" in cfg else None

    def start(self, wait_ready=True, timeout=5.0, args=None):
        import subprocess
        self._log_file = open(self.log_path, "wb")
        cmd = [self.binary] + (args or []) + ["-c", self.cfg_path]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=self._log_file, cwd=str(self.workdir))
        if wait_ready:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=5.0):
        """Waits until /live and then /ready answer 200 (bounded)."""
        assert self.admin_port, "wait_ready needs an admin section"

        def probe(path):
            if not self.running():
                raise AssertionError("usher exited with %s before %s answered 200; stderr:\n%s"
                                     % (self.proc.returncode, path, self.log()))
            try:
                return self.admin_get(path, timeout=1.0)[0] == 200
            except OSError:
                return False

        deadline = time.monotonic() + timeout
        for path in ("/live", "/ready"):
            try:
                wait_until(lambda: probe(path), max(0.05, deadline - time.monotonic()),
                           interval=0.02, what="usher %s" % path)
            except AssertionError as e:
                raise AssertionError("%s\nusher stderr:\n%s" % (e, self.log())) from None
        return self

    def wait_admin(self, path, status=200, timeout=5.0):
        """Waits until GET <path> on the admin port answers <status>; fails
        at once (with the log) if usher exits meanwhile."""
        def probe():
            if not self.running():
                raise AssertionError("usher exited with %s; stderr:\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                return self.admin_get(path, timeout=1.0)[0] == status
            except OSError:
                return False
        try:
            return wait_until(probe, timeout, what="admin %s to answer %d" % (path, status))
        except AssertionError as e:
            if "usher exited" in str(e):
                raise
            raise AssertionError("%s\nusher stderr:\n%s" % (e, self.log())) from None

    def url(self, path="/", listener=None):
        port = self.ports[listener] if listener else self.port
        return "http://%s:%d%s" % (HOST, port, path)

    def admin_get(self, path, timeout=5.0, method="GET"):
        c = http.client.HTTPConnection(HOST, self.admin_port, timeout=timeout)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace"), {
                k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()

    def status_json(self):
        st, body, _ = self.admin_get("/status")
        assert st == 200, "/status answered %d: %s" % (st, body)
        return json.loads(body)

    def metrics(self):
        st, body, _ = self.admin_get("/metrics")
        assert st == 200, "/metrics answered %d: %s" % (st, body)
        return Metrics(body)

    def backend_status(self, pool, backend):
        for p in self.status_json()["pools"]:
            if p["name"] == pool:
                for b in p["backends"]:
                    if b["name"] == backend:
                        return b
        return None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, event=None):
        """Parsed log lines (parse_log_line), optionally only one event."""
        out = []
        for line in self.log().splitlines():
            p = parse_log_line(line)
            if p and (event is None or p["event"] == event):
                out.append(p)
        return out

    def wait_log(self, regex, timeout=5.0):
        rx = re.compile(regex, re.M)
        return wait_until(lambda: rx.search(self.log()), timeout, what="log line /%s/" % regex)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, cfg):
        import signal
        self.write_config(cfg)
        self.send_signal(signal.SIGHUP)

    def wait_exit(self, timeout=10.0):
        import subprocess
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError("usher still running after %.1fs" % timeout) from None

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=5.0):
        """SIGTERM, wait <timeout>, then SIGKILL. Returns the exit code."""
        import signal
        import subprocess
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        try:
            self._log_file.close()
        except Exception:  # pylint: disable=broad-except
            pass
        return self.proc.returncode

    def sanitizer_report(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i >= 0:
                start = text.rfind("\n", 0, max(0, i - 2000)) + 1
                return text[start:i + 4000]
        return None
