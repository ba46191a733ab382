"""The usher process and its config: a YAML writer, configs for a test
(make_config) and for a reload of a running usher (config_for), the Usher
process (start, admin API, logs, signals, reloads), a Prometheus text parser,
log parsing and the /status views tests poll (backend states, fields).

USHER_TEST_WORKERS=N (or "auto"): every config dict the helpers build
(make_config, config_for) or write (Usher.write_config, hence Usher(),
usher_factory and Usher.reload) gets `workers: N` unless the test set
`workers` itself; unset, configs say what the test wrote (the default is
`auto`). Text configs are written byte for byte: the tests that pass YAML
text (test_cli, test_config_check, test_discover_dns' kubernetes example,
test_package, test_run_script's conf/demo.yaml, the broken reloads of
test_reload_changes and test_log_format) check config errors or `-t` and
never run a data plane on them; the broken texts of test_reload_changes,
test_log_format and test_tls come from to_yaml(make_config(...)), so they
carry the variable's `workers` too.

Standard library only (run with /usr/bin/python3)."""

import http.client
import json
import os
import re
import signal
import subprocess
import time

import wire
from wire import HOST, free_port, wait_until


# The order DESIGN.md "The process drain" gives for a clean drain with no
# drain_delay: one log line per step, then the releases in reverse order of
# acquisition.
RELEASE_ORDER = ["listeners", "client_connections", "health_checks", "backend_pools",
                 "admin_listener"]


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


# --- the worker count of a test run ------------------------------------------------------

# DESIGN.md "Config": workers is auto or 1..256.
WORKERS_MAX = 256


def env_workers():
    """USHER_TEST_WORKERS as a config value: None when unset or empty,
    "auto", or an int in 1..WORKERS_MAX (ValueError otherwise)."""
    v = os.environ.get("USHER_TEST_WORKERS", "").strip()
    if not v:
        return None
    if v == "auto":
        return v
    n = int(v)
    if not 1 <= n <= WORKERS_MAX:
        raise ValueError("USHER_TEST_WORKERS=%s: must be auto or 1..%d" % (v, WORKERS_MAX))
    return n


def apply_env_workers(cfg):
    """Adds `workers: $USHER_TEST_WORKERS` to the config dict <cfg> (in place)
    unless the variable is unset or <cfg> names workers already; text is
    left alone. Returns <cfg>."""
    w = env_workers()
    if w is not None and isinstance(cfg, dict) and "workers" not in cfg:
        cfg["workers"] = w
    return cfg


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
    extra:     top-level keys merged last (e.g. to inject an unknown key,
               or `workers`); then USHER_TEST_WORKERS applies (apply_env_workers)."""
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
    return apply_env_workers(cfg)


def _port_of(bind):
    return int(bind.rsplit(":", 1)[1])


# What a sanitizer prints on stderr when it finds something; with
# TSAN_OPTIONS=halt_on_error=1 a data race is "WARNING: ThreadSanitizer: data
# race" and then an abort.
SANITIZER_MARKERS = ("runtime error:", "AddressSanitizer", "LeakSanitizer",
                     "UndefinedBehaviorSanitizer", "WARNING: ThreadSanitizer",
                     "ThreadSanitizer:")


class Usher:
    """A running usher process (see conftest.usher_factory).

    port / ports[name]: listener ports; admin_port; url(path, listener=None);
    admin_get(path) -> (status, body str, headers dict); status_json();
    metrics() -> Metrics; log() -> stderr text so far; log_lines(event=None);
    wait_log(regex, timeout); wait_admin(path, status, timeout); send_signal(sig); reload(cfg) (rewrite + SIGHUP);
    wait_exit(timeout) -> returncode; stop() -> returncode (AssertionError if
    usher printed a sanitizer report); rss_kb(); threads() -> thread ids;
    sanitizer_report() -> the offending text or None."""

    def __init__(self, binary, cfg, workdir, name="usher"):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.cfg_path = os.path.join(str(workdir), "%s.yaml" % name)
        self.log_path = os.path.join(str(workdir), "%s.stderr" % name)
        self.proc = None
        self.write_config(cfg)

    def write_config(self, cfg):
        """Writes <cfg> (a dict, or YAML text) to the config file; a dict gets
        USHER_TEST_WORKERS (apply_env_workers)."""
        self.cfg = apply_env_workers(cfg)
        text = cfg if isinstance(cfg, str) else to_yaml(cfg)
        with open(self.cfg_path, "w") as f:
            f.write(text)
        if isinstance(cfg, dict):
            self.ports = {l["name"]: _port_of(l["bind"]) for l in cfg.get("listeners", [])}
            self.port = next(iter(self.ports.values()), None)
            self.admin_port = _port_of(cfg["admin"]["bind"]) if "admin" in cfg else None

    def start(self, wait_ready=True, timeout=5.0, args=None):
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
        return wire.read_text(self.log_path)

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
        self.write_config(cfg)
        self.send_signal(signal.SIGHUP)

    def wait_exit(self, timeout=10.0):
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

    def threads(self):
        """The ids of usher's threads now (/proc/PID/task)."""
        return sorted(int(t) for t in os.listdir("/proc/%d/task" % self.proc.pid))

    def stop(self, timeout=5.0, check=True):
        """SIGTERM, wait <timeout>, then SIGKILL. Returns the exit code; with
        <check>, raises AssertionError if usher printed a sanitizer report
        (a ThreadSanitizer data race, say) at any point of its life."""
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
        if check:
            self.check_sanitizer()
        return self.proc.returncode

    def check_sanitizer(self):
        """AssertionError naming the report if usher's stderr has one."""
        rep = self.sanitizer_report()
        if rep:
            raise AssertionError("%s (pid %d) printed a sanitizer report:\n%s"
                                 % (self.name, self.proc.pid, rep))

    def sanitizer_report(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i >= 0:
                start = text.rfind("\n", 0, max(0, i - 2000)) + 1
                return text[start:i + 4000]
        return None


# --- reloads, logs in order, drain ------------------------------------------------------

def config_for(u, pools, split=None, listeners=None, **kw):
    """make_config() for a reload of the running usher <u>: same admin bind and,
    unless <listeners> is given, the single listener "web" on its current bind
    with <split> (default: every pool 100). Listeners given without a bind keep
    the bind of the running listener of the same name (a new one gets a free port)."""
    if listeners is None:
        listeners = [{"name": "web", "pools": dict(split) if split is not None else
                      {p: 100 for p in pools}}]
    ls = []
    for l in listeners:
        l = dict(l)
        if "bind" not in l and l["name"] in u.ports:
            l["bind"] = "%s:%d" % (HOST, u.ports[l["name"]])
        ls.append(l)
    return make_config(pools, listeners=ls, admin=u.cfg["admin"]["bind"], **kw)


def _outcomes(u):
    return re.findall(r"^\S+ \w+ reload (done|failed) .*generation=(\d+)", u.log(), re.M)


def reload_and_wait(u, cfg, timeout=5.0):
    """Writes <cfg>, sends SIGHUP and waits for the reload's outcome line.
    Returns ("done"|"failed", generation). Waiting for the outcome before the
    next SIGHUP matters: signals that arrive together are merged into one."""
    before = len(_outcomes(u))
    u.reload(cfg)
    wait_until(lambda: len(_outcomes(u)) > before, timeout,
                    what="reload done|failed after SIGHUP")
    kind, gen = _outcomes(u)[before]
    return kind, int(gen)


def log_events(u):
    """[(event, kv)] of every parsed log line so far."""
    return [(p["event"], p["kv"]) for p in u.log_lines()]


def assert_in_order(u, steps):
    """Asserts that the log has, in this order, lines matching <steps>: each
    step is (event, {key: value}) and matches the first line after the
    previous step's line with that event whose kv contains those pairs."""
    evs = log_events(u)
    pos = 0
    for event, kv in steps:
        for i in range(pos, len(evs)):
            e, k = evs[i]
            if e == event and all(k.get(a) == str(b) for a, b in kv.items()):
                pos = i + 1
                break
        else:
            raise AssertionError("log line %s %r not found after line %d (in order); log:\n%s"
                                 % (event, kv, pos, u.log()))


def drain_signal(u, sig=signal.SIGTERM):
    """Sends <sig> and returns the monotonic time just before it was sent."""
    t = time.monotonic()
    u.send_signal(sig)
    return t


# --- backend views in /status ------------------------------------------------------

def hc_opts(interval="250ms", timeout="120ms", healthy=2, unhealthy=2, protocol="http", **kw):
    """A health_check section with short intervals."""
    d = {"protocol": protocol, "interval": interval, "timeout": timeout,
         "healthy_threshold": healthy, "unhealthy_threshold": unhealthy}
    if protocol == "http":
        d["path"] = "/healthz"
    d.update(kw)
    return d


def backend_state(u, pool, name):
    b = u.backend_status(pool, name)
    return b["state"] if b else None


def wait_state(u, pool, name, state, timeout=5.0):
    """Waits until /status shows backend <pool>/<name> in <state> (None: gone);
    returns the backend's /status object (None when gone)."""
    def ok():
        b = u.backend_status(pool, name)
        if state is None:
            return b is None or "gone"
        return b if b and b["state"] == state else None
    r = wait_until(ok, timeout, interval=0.01,
                        what="backend %s/%s in state %s" % (pool, name, state))
    return None if r == "gone" else r


def wait_field(u, pool, name, key, at_least, timeout=3.0):
    """Waits until the backend's /status field <key> is >= <at_least>;
    returns the backend's /status object."""
    def ok():
        b = u.backend_status(pool, name)
        return b if b and b[key] >= at_least else None
    return wait_until(ok, timeout, interval=0.005,
                           what="%s/%s %s >= %d" % (pool, name, key, at_least))


def state_transitions(u, backend=None):
    """[(from, to, reason)] of the 'backend state' log lines, optionally of one backend."""
    out = []
    for l in u.log_lines("backend state"):
        kv = l["kv"]
        if backend is None or kv.get("backend") == backend:
            out.append((kv.get("from"), kv.get("to"), kv.get("reason")))
    return out
