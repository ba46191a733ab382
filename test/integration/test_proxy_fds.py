"""File descriptors: usher caps max_connections to what its fd limit can
serve (a client needs a second descriptor for its backend), and when it runs
out anyway it pauses accepting, logs it, keeps serving, and resumes by
itself; it never crashes or spins."""

import os
import resource
import shutil
import time

import wire
from wire import RawConn


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_fd_limit_caps_max_connections(backend_factory, usher_factory, usher_bin):
    """Started with 100 descriptors, usher serves (100 - 64 reserved - 1
    listener - 1 backend) / 2 = 17 clients at once, each with its upstream;
    the others wait in the accept queue and are served as clients leave."""
    prlimit = shutil.which("prlimit")
    assert prlimit, "prlimit (util-linux) is needed"
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]}, wait_ready=False, name="capped")
    u.binary = prlimit
    u.proc.kill()
    u.proc.wait()
    u.start(args=["--nofile=100:100", usher_bin])
    lowered = u.log_lines("max_connections lowered")
    assert lowered and lowered[0]["kv"]["effective"] == "17", u.log()
    clients = [RawConn(u.port, timeout=3.0) for _ in range(25)]
    try:
        for c in clients[:17]:
            r = c.request("GET", "/")
            assert r.status == 200 and r.body == b"blue-1", r
        u.wait_log(r"accept paused reason=max_connections", 3.0)
        for c in clients[17:]:
            c.send(wire.build_request("GET", "/"))
        for c in clients[:8]:
            c.close()
        for c in clients[17:]:
            r = c.read_response(timeout=3.0)
            assert r.status == 200, r
    finally:
        for c in clients:
            c.close()


def test_emfile_pauses_accepting_and_recovers(backend_factory, usher_factory):
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    in_use = len(os.listdir("/proc/%d/fd" % u.pid))
    # the limit drops under usher's feet: room for a few descriptors only
    soft, hard = resource.prlimit(u.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(u.pid, resource.RLIMIT_NOFILE, (in_use + 6, hard))
    held = []
    try:
        for _ in range(30):
            held.append(RawConn(u.port, timeout=3.0))
        u.wait_log(r"accept paused reason=\"Too many open files\"", 5.0)
        # paused, not spinning on a listening socket it cannot accept from
        cpu0 = _cpu_seconds(u.pid)
        time.sleep(1.0)
        assert _cpu_seconds(u.pid) - cpu0 < 0.3, "usher spins while out of file descriptors"
        # an accepted client is answered, never left hanging: 200 if a
        # descriptor was free for its backend, else 503 and a close
        for c in held[:3]:
            r = c.request("GET", "/")
            assert r.status in (200, 503), r
    finally:
        for c in held:
            c.close()
    resource.prlimit(u.pid, resource.RLIMIT_NOFILE, (soft, hard))
    wire.wait_until(lambda: wire.http_get(u.port, "/", timeout=2.0)[0] == 200, 5.0,
                    what="serving to resume")
    assert u.running()
    assert u.metrics().get("usher_accept_paused_total") >= 1
