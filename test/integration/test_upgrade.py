"""SIGUSR2 binary upgrade, systemd notify and socket activation (DESIGN.md
"The upgrade (SIGUSR2)"): the new process inherits every listening socket
and the backends' health; the old one drains and exits 0; a new process
that fails is rolled back. Each test cleans up the new process it made
(it is not the test's child: the old usher started it)."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import usher_proc
import wire
from load import Load


def stop_pid(pid, timeout=5.0):
    if pid and wire.pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        try:
            wire.wait_until(lambda: not wire.pid_alive(pid), timeout, what="pid %d to exit" % pid)
        except AssertionError:
            os.kill(pid, signal.SIGKILL)


def serving_pid(u):
    return u.status_json()["pid"]


def upgrade(u, old_pid, timeout=8.0):
    """Sends SIGUSR2 to <old_pid> and waits until another pid answers /status
    and <old_pid> has exited. Returns the new pid."""
    os.kill(old_pid, signal.SIGUSR2)
    wire.wait_until(lambda: not wire.pid_alive(old_pid), timeout,
                    what="old usher %d to drain and exit" % old_pid)
    new = serving_pid(u)
    assert new != old_pid
    return new


@pytest.fixture
def upgradable(backend_factory, tmp_path, usher_bin):
    """usher started from a copy of the binary (so a test may replace the
    file an upgrade starts), listener web -> blue-1, health checks on, and
    idle_close: after_request (what clients that reuse connections need)."""
    b = backend_factory("blue-1")
    binary = str(tmp_path / "usher-bin")
    shutil.copy(usher_bin, binary)
    cfg = usher_proc.make_config(
        pools={"blue": [b]}, pool_opts={"blue": {"health_check": usher_proc.hc_opts()}},
        shutdown={"idle_close": "after_request", "timeout": "5s"},
        extra={"upgrade": {"timeout": "2s"}})
    u = usher_proc.Usher(binary, cfg, tmp_path)
    u.start()
    made = []
    yield u, b, binary, made
    u.stop(timeout=5.0)
    for pid in made:
        stop_pid(pid)


def test_upgrade_hands_over_sockets_and_health(upgradable):
    u, b, _, made = upgradable
    old = u.pid
    assert u.status_json()["upgrade"] is None
    new = upgrade(u, old)
    made.append(new)
    assert u.proc.wait(5) == 0, u.log()
    st = u.status_json()
    assert st["upgrade"] is None and st["state"] == "running"
    # health inherited: the backend is healthy at once, not checking
    assert "upgrade state inherited backends=1" in u.log()
    assert wire.http_get(u.port)[0] == 200
    log = u.log()
    assert "upgrade started role=old" in log and "upgrade ready new_pid=%d" % new in log
    assert "shutdown started signal=upgrade" in log


def test_upgrades_under_load_cost_no_client_an_error(upgradable):
    """20 upgrades in a row under keep-alive load plus clients that connect,
    request and close as fast as they go, with slow requests across each
    hand-over: no refused connection, no error, every slow request 200."""
    u, b, _, made = upgradable
    load = Load(u.port, threads=3, fresh=True, duration=60.0).start()
    keepalive = Load(u.port, threads=3, duration=60.0).start()
    slow_results = []

    def slow_request():
        slow_results.append(wire.http_get(u.port, "/slow?ms=600", timeout=5.0)[0])

    pid = u.pid
    try:
        for i in range(20):
            t = threading.Thread(target=slow_request)
            t.start()
            time.sleep(0.05)
            new = upgrade(u, pid)
            if pid != u.pid:
                made.append(pid) if wire.pid_alive(pid) else None
            made.append(new)
            pid = new
            t.join(5)
    finally:
        load.stop()
        keepalive.stop()
    assert load.total > 200 and keepalive.total > 200, (load.summary(), keepalive.summary())
    assert not load.errors, load.summary()
    assert not keepalive.errors, keepalive.summary()
    assert keepalive.reconnects > 0  # the old processes did close their idle connections
    assert slow_results == [200] * 20, slow_results
    assert u.log().count("upgrade ready") == 20


def test_bad_config_rolls_back(upgradable):
    u, b, _, made = upgradable
    cfg = dict(u.cfg)
    with open(u.cfg_path, "w") as f:
        f.write(usher_proc.to_yaml(cfg) + "\nnot_a_key: 1\n")
    os.kill(u.pid, signal.SIGUSR2)
    u.wait_log(r"upgrade failed reason=\"new process rejected the config\"", 5.0)
    assert u.running()
    assert serving_pid(u) == u.pid
    assert wire.http_get(u.port)[0] == 200
    assert u.status_json()["upgrade"] is None


def test_binary_that_never_gets_ready_is_killed(upgradable, tmp_path):
    u, b, binary, made = upgradable
    os.unlink(binary)
    with open(binary, "w") as f:
        f.write("#!/bin/sh\nexec sleep 60\n")
    os.chmod(binary, 0o755)
    os.kill(u.pid, signal.SIGUSR2)
    time.sleep(0.2)
    os.kill(u.pid, signal.SIGUSR2)  # a second one during the upgrade is ignored
    u.wait_log(r"upgrade ignored reason=\"an upgrade is under way\"", 3.0)
    u.wait_log(r"upgrade failed reason=\"new process not ready within upgrade.timeout\"", 6.0)
    assert u.running()
    assert wire.http_get(u.port)[0] == 200
    assert serving_pid(u) == u.pid


def _notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5.0)
    return s, path


def _messages(sock, want, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(any(w in m for m in got) for w in want):
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
    return got


def test_sd_notify_ready_reloading_stopping(backend_factory, tmp_path, usher_bin):
    b = backend_factory("blue-1")
    sock, path = _notify_socket(tmp_path)
    cfg = usher_proc.make_config(pools={"blue": [b]})
    u = usher_proc.Usher(usher_bin, cfg, tmp_path)
    os.environ["NOTIFY_SOCKET"] = path
    try:
        u.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        got = _messages(sock, ["READY=1"])
        assert any("READY=1" in m for m in got), got
        u.send_signal(signal.SIGHUP)
        got = _messages(sock, ["RELOADING=1", "READY=1"])
        reloading = [m for m in got if "RELOADING=1" in m]
        assert reloading and "MONOTONIC_USEC=" in reloading[0], got
        assert any("READY=1" in m for m in got[got.index(reloading[0]):]), got
        u.send_signal(signal.SIGTERM)
        got = _messages(sock, ["STOPPING=1"])
        assert any("STOPPING=1" in m for m in got), got
        assert u.wait_exit(5) == 0
    finally:
        u.stop()
        sock.close()


def test_socket_activation_by_name(backend_factory, tmp_path, usher_bin):
    """systemd-socket-activate binds web and admin; usher takes them by
    FileDescriptorName and binds nothing itself."""
    if not shutil.which("systemd-socket-activate"):
        pytest.skip("systemd-socket-activate not installed")
    b = backend_factory("blue-1")
    cfg = usher_proc.make_config(pools={"blue": [b]})
    u = usher_proc.Usher(usher_bin, cfg, tmp_path)
    web = cfg["listeners"][0]["bind"]
    admin = cfg["admin"]["bind"]
    log = open(u.log_path, "wb")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", web, "-l", admin,
                             "--fdname=web:admin", usher_bin, "-c", u.cfg_path],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            cwd=str(tmp_path))
    u.proc = proc
    try:
        u.wait_ready(5.0)
        assert wire.http_get(u.port)[0] == 200
        assert "inherited socket closed" not in u.log()
    finally:
        u.stop()
        log.close()


def test_runtime_overrides_are_handed_over(upgradable, backend_factory):
    """An admin drain and a weight set through the API before SIGUSR2 are in
    force in the new process too (no state_file: only the hand-over)."""
    u, b, _, made = upgradable
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", u.admin_port, timeout=5)
    conn.request("POST", "/backends/blue/blue-1/weight", body='{"weight": 7}',
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    r.read()
    conn.close()
    new = upgrade(u, u.pid)
    made.append(new)
    st = u.status_json()
    be = st["pools"][0]["backends"][0]
    assert be["weight_override"] == 7 and be["weight"] == 7, be
    assert "overrides=1" in u.log(), u.log()
