"""Backends that die or restart under client load: a SIGKILLed backend
process (kernel resets its connections, connects refused) and an abruptly
closed one cost no client an error; a backend's graceful restart (503 on
/healthz, in-flight work finished, exit, new instance on the same port)
costs none either."""

import os
import signal
import subprocess
import sys
import time

import usher_proc
import wire
from load import Load
from usher_proc import hc_opts, state_transitions, wait_state

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs servers.Backend in its own process so the kernel does what it does to
# a crashed server: every connection reset, the port refused.
BACKEND_PROC = """
import sys, time
sys.path.insert(0, %r)
from servers import Backend
b = Backend(%r, port=%d).start()
sys.stdout.write("listening\\n"); sys.stdout.flush()
time.sleep(%d)
"""
# A backend process lives at most this long even if the test forgets it.
BACKEND_PROC_LIFETIME = 60


class ProcBackend:
    def __init__(self, name):
        self.name = name
        self.port = wire.free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BACKEND_PROC % (HERE, name, self.port, BACKEND_PROC_LIFETIME)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()  # bounded: the child prints at once or exits
        assert line.strip() == b"listening", "backend process failed to start: %r" % line

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()


def _cfg(backends, hc, delay="5s"):
    # these tests follow the active checks; passive health (on by default)
    # would eject the dead backend first and hide the transition they check
    return usher_proc.make_config(pools={"blue": backends},
                            pool_opts={"blue": {"deregistration_delay": delay, "health_check": hc,
                                                "passive_health": False}})


def test_sigkilled_backend_process_under_load_no_client_error(servers, usher_factory):
    b1 = servers.backend("blue-1")
    b2 = servers.add(ProcBackend("blue-2"))
    b3 = servers.backend("blue-3")
    u = usher_factory(_cfg([b1, b2, b3], hc_opts(interval="250ms", timeout="120ms", unhealthy=2)))
    for n in ("blue-1", "blue-2", "blue-3"):
        wait_state(u, "blue", n, "healthy")
    load = servers.add(Load(u.port, threads=3, pause=0.002).start())
    time.sleep(1.0)
    ok_before = dict(load.ok)
    b2.proc.send_signal(signal.SIGKILL)
    b2.proc.wait(5)
    t_kill = time.monotonic()
    time.sleep(2.0)
    load.stop()
    st = wait_state(u, "blue", "blue-2", "unhealthy", timeout=2.0)
    print("\nSIGKILL under load: %s; blue-2 %s/%s; connect failures logged: %d"
          % (load.summary(), st["state"], st["last_result"],
             len(u.log_lines("backend connect failed"))))
    assert ok_before.get("blue-2", 0) > 0, "blue-2 got no traffic before the kill"
    assert not load.errors, "client errors after the kill (at %r s): %s" % (
        [round(t - t_kill, 3) for t, _, _ in load.errors], load.summary())
    assert st["last_result"] in ("refused", "reset", "closed", "timeout"), st


def test_abruptly_closed_backend_under_load_no_client_error(servers, usher_factory):
    b1 = servers.backend("blue-1")
    b2 = servers.backend("blue-2")
    u = usher_factory(_cfg([b1, b2], hc_opts(interval="250ms", timeout="120ms", unhealthy=2)))
    wait_state(u, "blue", "blue-1", "healthy")
    wait_state(u, "blue", "blue-2", "healthy")
    load = servers.add(Load(u.port, threads=3, pause=0.002).start())
    time.sleep(1.0)
    b2.kill()   # listener closed, every connection reset
    t_kill = time.monotonic()
    time.sleep(2.0)
    load.stop()
    st = wait_state(u, "blue", "blue-2", "unhealthy", timeout=2.0)
    print("\nabrupt close under load: %s; blue-2 %s/%s" % (load.summary(), st["state"],
                                                          st["last_result"]))
    assert not load.errors, "client errors after the kill (at %r s): %s" % (
        [round(t - t_kill, 3) for t, _, _ in load.errors], load.summary())
    assert ("healthy", "unhealthy", "refused") in state_transitions(u, "blue-2"), \
        state_transitions(u)


def test_graceful_backend_restart_under_load_no_client_error(servers, usher_factory):
    b1 = servers.backend("blue-1")
    b2 = servers.backend("blue-2")
    u = usher_factory(_cfg([b1, b2], hc_opts(interval="250ms", timeout="120ms", healthy=2,
                                              unhealthy=2)))
    wait_state(u, "blue", "blue-1", "healthy")
    wait_state(u, "blue", "blue-2", "healthy")
    # requests take a little while, so some are in flight when the drain starts
    load = servers.add(Load(u.port, threads=3, path="/slow?ms=20", pause=0.0).start())
    time.sleep(0.7)

    # 1. the old instance announces its restart: /healthz 503 for about 1 s
    t_flip = time.monotonic()
    b1.health_status = 503
    wait_state(u, "blue", "blue-1", "draining", timeout=2.0)
    time.sleep(max(0.0, t_flip + 1.0 - time.monotonic()))
    # 2. it finishes what it has in flight: usher closes its connections once
    #    their requests are answered (health checks use short connections)
    wire.wait_until(lambda: b1.conns_active == 0, 2.0, interval=0.01,
                    what="usher to close its connections to the draining blue-1 "
                         "(conns_active=%d)" % b1.conns_active)
    inflight_at_exit = [r for r in b1.reqs() if r.time >= t_flip]
    # 3. it exits
    b1.stop()
    t_down = time.monotonic()
    time.sleep(0.3)
    # 4. the new instance starts on the same port and becomes healthy
    b1.health_status = 200
    b1.restart()
    t_up = time.monotonic()
    wait_state(u, "blue", "blue-1", "healthy", timeout=3.0)
    t_healthy = time.monotonic()
    time.sleep(0.5)
    load.stop()

    back = [r for r in b1.reqs() if r.time >= t_up]
    print("\nMEASURE graceful restart: client errors=%d (%s); blue-1 draining->down %.2fs, "
          "up->healthy %.2fs, requests after restart %d, transitions %r"
          % (len(load.errors), load.summary(), t_down - t_flip, t_healthy - t_up, len(back),
             state_transitions(u, "blue-1")))
    assert not load.errors, load.summary()
    assert back, "no request reached the restarted blue-1"
    assert all(r.time < t_flip + 0.5 for r in inflight_at_exit), \
        "requests reached blue-1 long after its 503"
