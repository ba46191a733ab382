"""usher ctl (DESIGN.md "Runtime control"): every command, --json, exit
codes 0/1/2, the token from -c or --token-file, and the blue/green user
story end to end under keep-alive load."""

import json
import os
import subprocess
import threading
import time

import pytest

import usher_proc
import wire
from load import Load
from admin_util import admin, backend_of, ctl, listener_of, write_token


@pytest.fixture
def bg(backend_factory, usher_factory):
    b1 = backend_factory("blue-1")
    g1 = backend_factory("green-1")
    u = usher_factory(pools={"blue": [b1], "green": [g1]}, split={"blue": 100, "green": 0},
                      pool_opts={"blue": {"deregistration_delay": "20s"},
                                 "green": {"deregistration_delay": "20s"}})
    return u


def test_status_table_and_json(usher_bin, bg):
    r = ctl(usher_bin, bg, "status")
    assert r.returncode == 0, r.stderr
    assert "LISTENER" in r.stdout and "web" in r.stdout and "blue=100 green=0" in r.stdout
    assert "blue/blue-1" in r.stdout and "healthy" in r.stdout
    r = ctl(usher_bin, bg, "--json", "status")
    assert r.returncode == 0
    st = json.loads(r.stdout)
    assert st["pid"] == bg.pid
    # --admin instead of -c
    r = ctl(usher_bin, bg, "status", config=False, extra=["--admin", "127.0.0.1:%d" % bg.admin_port])
    assert r.returncode == 0 and "blue/blue-1" in r.stdout
    # global options after the command work too
    r = ctl(usher_bin, bg, "status", "--json", "--admin", "127.0.0.1:%d" % bg.admin_port,
            config=False)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == bg.pid


def test_drain_ready_weight_split_commands(usher_bin, bg):
    r = ctl(usher_bin, bg, "drain", "blue/blue-1", "--deadline", "5s")
    assert r.returncode == 0, r.stderr
    assert "draining" in r.stdout and "admin" in r.stdout
    assert bg.backend_status("blue", "blue-1")["reason"] == "admin"
    r = ctl(usher_bin, bg, "ready", "blue/blue-1")
    assert r.returncode == 0 and "healthy" in r.stdout
    r = ctl(usher_bin, bg, "weight", "blue/blue-1", "4")
    assert r.returncode == 0 and "override" in r.stdout
    assert bg.backend_status("blue", "blue-1")["weight"] == 4
    r = ctl(usher_bin, bg, "--json", "weight", "blue/blue-1", "--clear")
    assert r.returncode == 0 and json.loads(r.stdout)["weight_override"] is None
    r = ctl(usher_bin, bg, "split", "web", "blue=30", "green=70")
    assert r.returncode == 0 and "blue=30 green=70" in r.stdout and "override" in r.stdout
    r = ctl(usher_bin, bg, "split", "web", "--clear")
    assert r.returncode == 0 and "blue=100 green=0" in r.stdout
    assert listener_of(bg.status_json(), "web")["split_override"] is None
    r = ctl(usher_bin, bg, "drain-pool", "green", "--wait", "2s")
    assert r.returncode == 0 and "drained: yes" in r.stdout, r.stdout + r.stderr
    r = ctl(usher_bin, bg, "ready-pool", "green")
    assert r.returncode == 0 and "healthy" in r.stdout
    r = ctl(usher_bin, bg, "reload")
    assert r.returncode == 0 and "reload ok: generation 2" in r.stdout


def test_exit_codes(usher_bin, bg):
    # 1: the operation failed
    r = ctl(usher_bin, bg, "drain", "blue/nope")
    assert r.returncode == 1 and "404" in r.stderr and "nope" in r.stderr
    r = ctl(usher_bin, bg, "split", "web", "red=1")
    assert r.returncode == 1 and "red" in r.stderr
    with open(bg.cfg_path, "a") as f:
        f.write("bogus_key: 1\n")
    r = ctl(usher_bin, bg, "reload", config=False,
            extra=["--admin", "127.0.0.1:%d" % bg.admin_port])
    assert r.returncode == 1 and "bogus_key" in r.stderr and bg.cfg_path in r.stderr
    # 2: bad usage
    for args in (["frobnicate"], ["drain", "nopool"], ["weight", "blue/blue-1", "x"],
                 ["split", "web", "blue"], []):
        r = ctl(usher_bin, bg, *args, config=False,
                extra=["--admin", "127.0.0.1:%d" % bg.admin_port])
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    # 2: cannot reach the admin API
    r = ctl(usher_bin, bg, "status", config=False,
            extra=["--admin", "127.0.0.1:%d" % wire.free_port()])
    assert r.returncode == 2 and "cannot reach" in r.stderr


def test_token_from_config_and_flag(usher_bin, backend_factory, usher_factory, tmp_path):
    b1 = backend_factory("blue-1")
    tok = write_token(tmp_path, "ctl-token")
    cfg = usher_proc.make_config(pools={"blue": [b1]})
    cfg["admin"]["token_file"] = tok
    u = usher_factory(cfg)
    # -c: the token comes from the config's token_file
    r = ctl(usher_bin, u, "weight", "blue/blue-1", "2")
    assert r.returncode == 0, r.stderr
    # --admin without a token: refused, exit 2
    admin_flag = ["--admin", "127.0.0.1:%d" % u.admin_port]
    r = ctl(usher_bin, u, "weight", "blue/blue-1", "3", config=False, extra=admin_flag)
    assert r.returncode == 2 and "401" in r.stderr
    wrong = write_token(tmp_path, "nope", name="wrong.token")
    r = ctl(usher_bin, u, "weight", "blue/blue-1", "3", config=False,
            extra=admin_flag + ["--token-file", wrong])
    assert r.returncode == 2
    r = ctl(usher_bin, u, "weight", "blue/blue-1", "3", config=False,
            extra=admin_flag + ["--token-file", tok])
    assert r.returncode == 0
    # reads need no token
    r = ctl(usher_bin, u, "status", config=False, extra=admin_flag)
    assert r.returncode == 0


def test_switch_wait_times_out_exit_1(usher_bin, bg):
    t = threading.Thread(target=lambda: wire.http_get(bg.port, "/slow?ms=2500", timeout=10))
    t.start()
    wire.wait_until(lambda: bg.backend_status("blue", "blue-1")["inflight_requests"] == 1, 3.0)
    r = ctl(usher_bin, bg, "switch", "web", "green", "--wait-drained", "500ms")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "wait timed out" in r.stdout and "blue/blue-1 1" in r.stdout
    t.join(5)


def test_blue_green_switch_under_load(usher_bin, bg, tmp_path):
    """The user story: keep-alive load on web, a slow request running on
    blue; `usher ctl switch web green --wait-drained` returns only after the
    slow request completed with 200, every request after the switch lands on
    green, and the load sees 0 errors."""
    load = Load(bg.port, threads=4, duration=60.0).start()
    slow = {}

    def slow_request():
        slow["status"] = wire.http_get(bg.port, "/slow?ms=2000", timeout=15)[0]
        slow["done"] = time.monotonic()

    try:
        wire.wait_until(lambda: len(load.records) > 50, 5.0, what="load running")
        st = threading.Thread(target=slow_request)
        st.start()
        wire.wait_until(lambda: bg.backend_status("blue", "blue-1")["inflight_requests"] >= 1,
                        3.0, what="the slow request on blue")
        cmd = [usher_bin, "ctl", "-c", bg.cfg_path, "switch", "web", "green", "--wait-drained",
               "20s"]
        t_launch = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
        first = p.stdout.readline()  # the split answer: the switch is in force
        t_switch = time.monotonic()
        rest, err = p.communicate(timeout=30)
        t_done = time.monotonic()
        out = first + rest
        with open(os.path.join(str(tmp_path), "switch.out"), "w") as f:
            f.write(out)
        print("usher ctl switch output:\n" + out)
        assert p.returncode == 0, out + err
        assert "blue=0 green=100" in first, out
        assert "waiting: blue/blue-1 1" in out, out
        assert "drained:" in out.splitlines()[-1], out
        st.join(10)
        assert slow.get("status") == 200
        assert slow["done"] <= t_done, "ctl returned before the slow request completed"
        time.sleep(0.3)
    finally:
        load.stop()
    assert load.errors == [], load.errors[:5]
    after = [r for r in load.records if r[0] > t_switch]
    assert len(after) > 20, len(after)
    assert {r[3] for r in after} == {"green-1"}, "a request after the switch went to blue"
    before = [r for r in load.records if r[1] < t_launch]
    assert before and {r[3] for r in before} == {"blue-1"}
    st = bg.status_json()
    assert listener_of(st, "web")["split_override"] == {"blue": 0, "green": 100}
    # blue stays in rotation for a rollback, with no connection left
    b = backend_of(st, "blue", "blue-1")
    assert b["state"] == "healthy" and b["active_connections"] == 0, b


def test_switch_progress_rewrites_one_line_on_a_terminal(usher_bin, bg):
    """On a terminal the progress is one line rewritten in place (\\r and
    erase-line), through `script` (util-linux) for a pseudo-terminal."""
    t = threading.Thread(target=lambda: wire.http_get(bg.port, "/slow?ms=1200", timeout=10))
    t.start()
    wire.wait_until(lambda: bg.backend_status("blue", "blue-1")["inflight_requests"] == 1, 3.0)
    cmd = "%s ctl -c %s switch web green --wait-drained 10s" % (usher_bin, bg.cfg_path)
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    t.join(5)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert out.count("\r\x1b[Kwaiting: blue/blue-1 1") >= 2, repr(out)
    assert "\nwaiting" not in out, "a terminal gets no new line per update: %r" % out
    assert "\r\x1b[Kdrained:" in out
