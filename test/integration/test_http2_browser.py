"""A real browser over HTTP/2 through usher during a blue/green switch (issue
21 item 7; DESIGN "HTTP/2 and gRPC", "Runtime control"): headless Chromium
(Debian `chromium`), driven over the DevTools protocol on a pipe, loads over
TLS a page with 50 subresources (25 async scripts, 25 images) from a pool of
backends; half-way through the load `usher ctl switch web green` moves the
listener from blue to green. The page (its HTML is still streaming from
blue) and every subresource load: the page's own script counts what loaded
and failed and which pool served each one (a script's body names its pool,
an image's width does), the browser reports every response as h2, usher's
access log says HTTP/2.0 for each. A screenshot of the page goes to
build/artifacts/http2-switch-page.png.

The half-way point is made exact, not timed: blue streams the page's HTML in
parts and holds the second half until the test has switched, after blue got
the first 25 subresource requests (each answered 300 ms later, so they are
still in flight on blue when the switch happens)."""

import base64
import fcntl
import http.server
import json
import os
import select
import shutil
import subprocess
import threading
import time

import pytest

import usher_proc
import wire
from admin_util import ctl

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ARTIFACTS = os.path.join(REPO, "build", "artifacts")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

RESOURCES = 50           # subresources on the page: scripts and images, alternating
GROUP = 5                # the page's HTML goes in parts of this many subresources
HALF = RESOURCES // 2    # blue holds the rest of the HTML here until the switch
SUB_DELAY_S = 0.3        # each subresource is answered this late: in flight across the switch
PART_GAP_S = 0.05        # between two parts of the HTML
HOLD_MAX_S = 20.0        # blue never holds the page longer than this
BROWSER_TIMEOUT_S = 60.0
IMG_WIDTH = {"blue": 40, "green": 41}  # an image's pool, as the page can read it

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is needed")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for localhost, and its SPKI hash (what
    --ignore-certificate-errors-spki-list takes: base64 of the SHA-256 of
    the DER public key)."""
    d = tmp_path_factory.mktemp("browsercert")
    c, k = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", k, "-out", c], check=True, capture_output=True, timeout=30)
    pub = subprocess.run(["openssl", "x509", "-in", c, "-pubkey", "-noout"], check=True,
                         capture_output=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True, timeout=30).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der, check=True,
                            capture_output=True, timeout=30).stdout
    return c, k, base64.b64encode(digest).decode()


# --- the backends: the same files in both pools, tagged by pool ---------------------------

PAGE_HEAD = """<!doctype html>
<html><head><meta charset="utf-8"><title>usher: HTTP/2 through a switch</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px sans-serif; margin: 12px; }
#tiles { display: flex; flex-wrap: wrap; width: 560px; }
#tiles img, #tiles span { width: 40px; height: 40px; margin: 3px; }
#tiles span { display: inline-block; color: white; font-size: 11px; text-align: center;
              line-height: 40px; }
.blue { background: #2563eb; } .green { background: #16a34a; }
#result { display: none; }
</style>
<script>
var R = {loaded: 0, failed: [], pools: {}, by: {}};
function served(id, pool, el) {
  R.loaded++;
  R.pools[pool] = (R.pools[pool] || 0) + 1;
  R.by[id] = pool;
  if (!el) {
    el = document.createElement("span");
    el.textContent = id;
    document.getElementById("tiles").appendChild(el);
  }
  el.className = pool;
}
function image(el) {
  served(el.dataset.id, el.naturalWidth == %(blue)d ? "blue" :
         el.naturalWidth == %(green)d ? "green" : "width " + el.naturalWidth, el);
}
function failed(el) { R.failed.push(el.dataset.id); }
window.addEventListener("load", function () {
  var out = document.getElementById("result");
  out.textContent = JSON.stringify(R);
  out.dataset.done = "1";
  document.getElementById("summary").textContent = R.loaded + " loaded, " + R.failed.length +
      " failed; from blue " + (R.pools.blue || 0) + ", from green " + (R.pools.green || 0);
});
</script></head>
<body><h1>page from %%(pool)s</h1><p id="summary">loading</p><pre id="result"></pre>
<div id="tiles">
""" % IMG_WIDTH


def resource_tag(i):
    if i % 2 == 0:
        return ('<script async src="/s/%d.js" data-id="s%d" onerror="failed(this)"></script>\n'
                % (i, i))
    return ('<img src="/i/%d.svg" data-id="i%d" onload="image(this)" onerror="failed(this)">\n'
            % (i, i))


class PageBackend:
    """An HTTP/1.1 backend (http.server, a thread per connection, keep-alive)
    serving the page and its subresources, each response tagged X-Pool.
    /page streams its HTML (chunked) in parts of GROUP subresources and,
    after HALF of them, waits for <release> (the test's switch)."""

    def __init__(self, pool, release):
        self.pool = pool
        self.release = release
        self.log = []  # (path, started, ended) of every answer
        self.arrived = 0  # subresource requests received (answered or not)
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                t0 = time.monotonic()
                try:
                    backend.serve(self)
                finally:
                    with backend.lock:
                        backend.log.append((self.path, t0, time.monotonic()))

        self.httpd = http.server.ThreadingHTTPServer((wire.HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.address = "%s:%d" % (wire.HOST, self.port)
        self.name = pool + "-1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def subresources(self):
        with self.lock:
            return [e for e in self.log if e[0].startswith(("/s/", "/i/"))]

    def serve(self, h):
        p = h.path
        if p.startswith(("/s/", "/i/")):
            with self.lock:
                self.arrived += 1
            time.sleep(SUB_DELAY_S)
            n = int(p[3:].split(".")[0])
            if p.startswith("/s/"):
                body = ('served("s%d", "%s");\n' % (n, self.pool)).encode()
                ctype = "text/javascript"
            else:
                w = IMG_WIDTH[self.pool]
                color = "#2563eb" if self.pool == "blue" else "#16a34a"
                body = ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="40">'
                        '<rect width="%d" height="40" fill="%s"/></svg>' % (w, w, color)).encode()
                ctype = "image/svg+xml"
            self.reply(h, 200, ctype, body)
        elif p == "/page":
            self.stream_page(h)
        else:
            self.reply(h, 404, "text/plain", b"not here\n")

    def reply(self, h, status, ctype, body):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Cache-Control", "no-store")
        h.send_header("X-Pool", self.pool)
        h.end_headers()
        h.wfile.write(body)

    def stream_page(self, h):
        h.send_response(200)
        h.send_header("Content-Type", "text/html; charset=utf-8")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-store")
        h.send_header("X-Pool", self.pool)
        h.end_headers()

        def chunk(s):
            b = s.encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            h.wfile.flush()

        chunk(PAGE_HEAD % {"pool": self.pool})
        for first in range(0, RESOURCES, GROUP):
            if first == HALF:
                self.release.wait(HOLD_MAX_S)
            chunk("".join(resource_tag(i) for i in range(first, first + GROUP)))
            time.sleep(PART_GAP_S)
        chunk("</div></body></html>\n")
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# --- Chromium over the DevTools protocol (--remote-debugging-pipe) ------------------------

def high_fd(fd):
    """<fd> moved to 10 or above, so bash's 3<& and 4>& cannot clobber it (dash takes one digit only)."""
    hi = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return hi


class Browser:
    """Headless Chromium; DevTools messages are NUL-terminated JSON on fd 3
    (to the browser) and fd 4 (from it). Every wait is bounded."""

    def __init__(self, tmp_path, extra=()):
        to_r, to_w = (high_fd(f) for f in os.pipe())
        from_r, from_w = (high_fd(f) for f in os.pipe())
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--disable-sync",
                "--user-data-dir=%s" % os.path.join(str(tmp_path), "chromium"),
                "--window-size=800,600", "--remote-debugging-pipe"] + list(extra) + ["about:blank"]
        self.stderr = open(os.path.join(str(tmp_path), "chromium.stderr"), "wb")
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", 'exec "$@" 3<&%d 4>&%d %d<&- %d>&-' % (to_r, from_w, to_r, from_w),
             "sh"] + argv, pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL,
            stdout=self.stderr, stderr=self.stderr, start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        self.w, self.r = to_w, from_r
        self.buf = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message from chromium")
            ready, _, _ = select.select([self.r], [], [], min(left, 0.5))
            if ready:
                data = os.read(self.r, 1 << 20)
                if not data:
                    raise EOFError("chromium closed its DevTools pipe (exit %r)" % self.proc.poll())
                self.buf += data
        one, self.buf = self.buf.split(b"\0", 1)
        return json.loads(one)

    def call(self, method, params=None, session=None, timeout=30.0):
        want = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == want:
                assert "error" not in m, (method, m["error"])
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_event(self, method, timeout):
        deadline = time.monotonic() + timeout
        for m in self.events:
            if m["method"] == method:
                return m
        while True:
            m = self._read(deadline)
            if "method" in m:
                self.events.append(m)
                if m["method"] == method:
                    return m

    def close(self):
        try:
            self.send("Browser.close")
            self.proc.wait(10)
        except Exception:  # pylint: disable=broad-except
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
        os.close(self.w)
        os.close(self.r)
        self.stderr.close()


# --- the test ------------------------------------------------------------------------------

def test_chromium_loads_50_subresources_over_http2_across_a_switch(usher_factory, usher_bin,
                                                                   tmp_path, cert):
    c, k, spki = cert
    release = threading.Event()
    blue, green = PageBackend("blue", release), PageBackend("green", release)
    try:
        cfg = usher_proc.make_config(
            pools={"blue": [blue], "green": [green]}, log={"access": True},
            listeners=[{"name": "web", "pools": {"blue": 100, "green": 0},
                        "tls": {"cert": c, "key": k}}])
        u = usher_factory(cfg)
        switched = {}

        def switch_half_way():
            # every subresource of the first half has reached blue (each is
            # answered SUB_DELAY_S later: still in flight), then the switch
            try:
                wire.wait_until(lambda: blue.arrived >= HALF, HOLD_MAX_S,
                                what="the first %d subresource requests at blue" % HALF)
                switched["at"] = time.monotonic()
                switched["blue_answered"] = len(blue.subresources())
                r = ctl(usher_bin, u, "switch", "web", "green")
                switched["rc"], switched["out"] = r.returncode, r.stdout + r.stderr
            except Exception as e:  # pylint: disable=broad-except
                switched["error"] = repr(e)
            finally:
                release.set()

        b = Browser(tmp_path, ["--ignore-certificate-errors-spki-list=%s" % spki])
        t = threading.Thread(target=switch_half_way, daemon=True)
        try:
            target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            b.call("Network.enable", session=s)
            b.call("Page.enable", session=s)
            t.start()
            nav = b.call("Page.navigate", {"url": "https://localhost:%d/page" % u.port}, session=s)
            assert not nav.get("errorText"), nav
            try:
                b.wait_event("Page.loadEventFired", BROWSER_TIMEOUT_S)
            except TimeoutError:
                failed = [ev["params"].get("errorText") for ev in b.events
                          if ev["method"] == "Network.loadingFailed"]
                raise AssertionError(
                    "the page never finished loading: switch %r; subresource requests at blue "
                    "%d, green %d; usher running %s (exit %r); loads failed %r" % (
                        switched, blue.arrived, green.arrived, u.running(),
                        u.proc.returncode, failed)) from None
            got = b.call("Runtime.evaluate", {
                "expression": "document.getElementById('result').textContent",
                "returnByValue": True}, session=s)["result"]["value"]
            shot = b.call("Page.captureScreenshot", {"format": "png"}, session=s)["data"]
            events = list(b.events)
        finally:
            release.set()
            if t.is_alive():
                t.join(HOLD_MAX_S + 30)
            b.close()
    finally:
        release.set()
        blue.stop()
        green.stop()

    os.makedirs(ARTIFACTS, exist_ok=True)
    png = base64.b64decode(shot)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(ARTIFACTS, "http2-switch-page.png"), "wb") as f:
        f.write(png)

    # the switch happened half-way, with blue's subresources in flight
    assert "error" not in switched and switched.get("rc") == 0, switched
    assert switched["blue_answered"] < HALF, \
        "every blue subresource was answered before the switch: %r" % switched

    # the page's own count: everything loaded, each half from its pool
    result = json.loads(got)
    assert result["failed"] == [] and result["loaded"] == RESOURCES, result
    assert result["pools"] == {"blue": HALF, "green": RESOURCES - HALF}, result["pools"]
    for i in range(RESOURCES):
        rid = ("s%d" if i % 2 == 0 else "i%d") % i
        assert result["by"][rid] == ("blue" if i < HALF else "green"), (rid, result["by"])

    # the browser's view: every response h2 and 200, none failed
    origin = "https://localhost:%d/" % u.port
    responses = [e["params"]["response"] for e in events
                 if e["method"] == "Network.responseReceived"
                 and e["params"]["response"]["url"].startswith(origin)]
    assert len(responses) == RESOURCES + 1, [r["url"] for r in responses]
    assert {r["protocol"] for r in responses} == {"h2"}, {r["url"]: r["protocol"] for r in responses}
    assert {r["status"] for r in responses} == {200}
    failures = [e["params"] for e in events if e["method"] == "Network.loadingFailed"]
    assert failures == [], failures
    page = next(r for r in responses if r["url"] == origin + "page")
    assert {k.lower(): v for k, v in page["headers"].items()}["x-pool"] == "blue"

    # usher's view: 51 HTTP/2.0 requests, the page and the first half to
    # blue (the page answered after the switch), the second half to green
    assert blue.log and max(e[2] for e in blue.log if e[0] == "/page") > switched["at"]
    def access():
        got = u.log_lines("access")
        return got if len(got) >= RESOURCES + 1 else None
    lines = wire.wait_until(access, 10.0, what="%d access log lines" % (RESOURCES + 1))
    assert len(lines) == RESOURCES + 1, [l["kv"] for l in lines]
    assert {l["kv"]["protocol"] for l in lines} == {"HTTP/2.0"}, [l["kv"] for l in lines]
    assert {l["kv"]["status"] for l in lines} == {"200"}
    pools = {}
    for l in lines:
        pools[l["kv"]["pool"]] = pools.get(l["kv"]["pool"], 0) + 1
    assert pools == {"blue": HALF + 1, "green": RESOURCES - HALF}, pools
    m = u.metrics()
    assert m.sum("usher_requests_total", protocol="http2") >= RESOURCES + 1
