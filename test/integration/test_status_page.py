"""The status page at GET / (DESIGN.md "Admin endpoints"), in a real
browser: headless Chromium (Debian `chromium`) loads it while a backend
drains; the rendered DOM shows the backend draining with a countdown that
decreases between two reads. A screenshot is written to
build/artifacts/status-page.png."""

import html.parser
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

import usher_proc
import wire
from admin_util import admin

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ARTIFACTS = os.path.join(REPO, "build", "artifacts")
# Chromium runs the page's script for this much virtual time before it
# dumps the DOM: two /status polls (500 ms apart) and several countdown ticks.
VIRTUAL_TIME_MS = 1500
CHROMIUM_TIMEOUT_S = 60


def chromium_bin():
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    pytest.fail("chromium not found: install the Debian package chromium (scripts/deps test)")


def chromium(url, tmp_path, *extra):
    cmd = [chromium_bin(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--user-data-dir=%s" % os.path.join(str(tmp_path), "chromium"),
           "--virtual-time-budget=%d" % VIRTUAL_TIME_MS] + list(extra) + [url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class Rows(html.parser.HTMLParser):
    """Backend rows of the rendered page: {(pool, backend): {"class", "cells", "countdown"}}."""

    def __init__(self):
        super().__init__()
        self.rows = {}
        self._row = None
        self._cell = None
        self._in_countdown = False
        self.scripts_or_links = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "img", "iframe") and (a.get("src") or a.get("href")):
            self.scripts_or_links.append(a.get("src") or a.get("href"))
        if tag == "tr" and "backend" in a.get("class", "").split():
            self._row = {"class": a["class"], "cells": {}, "countdown": None,
                         "remaining_ms": None}
            self.rows[(a["data-pool"], a["data-backend"])] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = a.get("class", "")
            self._row["cells"][self._cell] = ""
        elif tag == "span" and "countdown" in a.get("class", "") and self._row is not None:
            self._in_countdown = True
            self._row["remaining_ms"] = float(a.get("data-remaining-ms", "nan"))
            self._row["countdown"] = ""

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = None
        elif tag == "span":
            self._in_countdown = False

    def handle_data(self, data):
        if self._row is not None and self._cell is not None:
            self._row["cells"][self._cell] += data
        if self._in_countdown:
            self._row["countdown"] += data


def parse_rows(text):
    p = Rows()
    p.feed(text)
    return p


def seconds(countdown):
    m = re.match(r"\s*([0-9]+(?:\.[0-9]+)?) s\s*$", countdown or "")
    assert m, "countdown %r" % countdown
    return float(m.group(1))


@pytest.fixture
def draining(backend_factory, usher_factory):
    """blue-1 admin-drained with a slow request still running on it."""
    b1, g1 = backend_factory("blue-1"), backend_factory("green-1")
    u = usher_factory(pools={"blue": [b1], "green": [g1]}, split={"blue": 100, "green": 0},
                      shutdown={"timeout": "1s"})
    def slow_request():
        try:
            wire.http_get(u.port, "/slow?ms=15000", timeout=30)
        except OSError:
            pass  # cut when the test stops usher: it only has to be in flight

    slow = threading.Thread(target=slow_request, daemon=True)
    slow.start()
    wire.wait_until(lambda: u.backend_status("blue", "blue-1")["inflight_requests"] == 1, 3.0)
    assert admin(u, "POST", "/backends/blue/blue-1/drain?deadline=60s")[0] == 200
    assert admin(u, "POST", "/listeners/web/split", {"green": 100})[0] == 200
    return u


def test_page_served_without_javascript(draining):
    st, body, h = draining.admin_get("/")
    assert st == 200 and h["content-type"].startswith("text/html")
    p = parse_rows(body)
    assert p.scripts_or_links == [], "the page must not load external resources"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", body)
    row = p.rows[("blue", "blue-1")]
    assert "state-draining" in row["class"] and row["cells"]["state"] == "draining"
    assert row["cells"]["inflight"] == "1" and row["cells"]["conns"] == "1"
    assert 50 < seconds(row["countdown"]) <= 60
    assert "override" in body  # the split override is marked
    assert p.rows[("green", "green-1")]["cells"]["state"] == "healthy"
    st, body, h = draining.admin_get("/", method="HEAD")
    assert st == 200 and body == "" and int(h["content-length"]) > 1000


def test_page_in_headless_chromium(draining, tmp_path):
    url = "http://127.0.0.1:%d/" % draining.admin_port
    first = parse_rows(chromium(url, tmp_path, "--dump-dom"))
    time.sleep(1.2)
    second = parse_rows(chromium(url, tmp_path, "--dump-dom"))
    for p in (first, second):
        row = p.rows[("blue", "blue-1")]
        assert "state-draining" in row["class"], row
        assert row["cells"]["state"] == "draining"
        assert row["countdown"], row
    a = seconds(first.rows[("blue", "blue-1")]["countdown"])
    b = seconds(second.rows[("blue", "blue-1")]["countdown"])
    assert 40 < b < a <= 60, (a, b)
    assert a - b >= 0.5, "the countdown did not go down between two reads: %s -> %s" % (a, b)
    assert second.rows[("green", "green-1")]["cells"]["state"] == "healthy"
    # the script ran: the live line says it fetched /status
    dom = chromium(url, tmp_path, "--dump-dom")
    assert "live: updated" in dom, dom[:500]
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "status-page.png")
    if os.path.exists(shot):
        os.unlink(shot)
    chromium(url, tmp_path, "--window-size=1100,700", "--screenshot=%s" % shot)
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(shot) > 5000
