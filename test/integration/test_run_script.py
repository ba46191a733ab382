"""scripts/run, the demo (README "Quick start"): backends first, hints only
once usher is ready, usher's own error and a non-zero exit when it cannot
start, everything it started stopped at the end. It uses the demo's fixed
ports (8080, 9901, 9001-9004): skipped when one is busy."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

import usher_proc
import wire

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORTS = [8080, 9901, 9001, 9002, 9003, 9004]


def busy(port):
    s = socket.socket()
    try:
        return s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        s.close()


@pytest.fixture
def demo_ports_free():
    taken = [p for p in PORTS if busy(p)]
    if taken:
        pytest.skip("demo ports in use: %s" % taken)


def start_run(tmp_path):
    out = open(tmp_path / "run.out", "wb")
    # SIGINT at its default in the script: a shell cannot trap a signal it
    # inherited ignored, as pytest does when it runs as a background job
    p = subprocess.Popen([os.path.join(REPO, "scripts", "run")], cwd=REPO, stdin=subprocess.DEVNULL,
                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return p, out


def read(tmp_path):
    return (tmp_path / "run.out").read_text(errors="replace")


def test_hints_after_ready_and_ctrl_c_stops_everything(demo_ports_free, tmp_path):
    p, out = start_run(tmp_path)
    try:
        wire.wait_until(lambda: "usher demo is ready" in read(tmp_path) or p.poll() is not None,
                        120, what="the demo's hints")
        text = read(tmp_path)
        assert p.poll() is None, text
        # the hints came only once /ready said 200, so it says 200 now
        assert urllib.request.urlopen("http://127.0.0.1:9901/ready", timeout=2).status == 200
        assert "info ready generation=1" in text.split("usher demo is ready")[0]
        body = urllib.request.urlopen("http://127.0.0.1:8080/", timeout=2).read()
        assert body.startswith(b"hello from blue-")
        usher_pid = int(re.search(r"kill -HUP (\d+)", text).group(1))
        blue1_pid = int(re.search(r"kill -TERM (\d+) +# blue-1", text).group(1))
        assert "scripts/demo-backend blue-1 9001 &" in text  # how to start it again
        assert wire.pid_alive(usher_pid) and wire.pid_alive(blue1_pid)
        with open("/proc/%d/cmdline" % usher_pid, "rb") as f:
            assert b"build/usher" in f.read()

        # Ctrl-C reaches the script only (its children have their own sessions)
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0, read(tmp_path)
        text = read(tmp_path)
        assert "shutdown started signal=SIGTERM" in text
        assert "shutdown forced" not in text
        wire.wait_until(lambda: not wire.pid_alive(usher_pid) and not wire.pid_alive(blue1_pid), 10,
                        what="the demo's processes to stop")
        wire.wait_until(lambda: not any(busy(port) for port in PORTS), 10,
                        what="the demo's ports to close")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)
        out.close()


def test_usher_failing_to_start_fails_the_script(demo_ports_free, tmp_path):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 8080))
    s.listen(1)
    p, out = start_run(tmp_path)
    try:
        code = p.wait(120)
        text = read(tmp_path)
        assert code != 0, text
        assert re.search(r"error listener failed name=web bind=127\.0\.0\.1:8080 "
                         r"reason=\"bind failed: Address already in use\"", text), text
        assert "usher exited with code 1 before it was ready" in text
        assert "Try, in another terminal" not in text
        wire.wait_until(lambda: not any(busy(port) for port in PORTS[1:]), 10,
                        what="the demo backends to stop")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)
        out.close()
        s.close()
