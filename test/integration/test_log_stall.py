"""A log write never blocks serving (DESIGN "Logs"): usher with its stderr
into a pipe nobody reads, the access log on, serves 20,000 requests on
keep-alive connections as if nothing were wrong, counts the lines it had to
drop in usher_log_lines_dropped_total, logs again once the reader comes
back (in order, whole lines), and exits cleanly on SIGTERM -- also with a
reader that never comes back."""

import fcntl
import os
import re
import select
import signal
import subprocess
import threading
import time

import usher_proc
import wire
from wire import RawConn

REQUESTS = 20000
CLIENTS = 4
# A long path (the access log keeps 128 bytes of it) makes each access line
# about 350 bytes: 20,000 of them are 7 MB, three times what the pipe (64
# KiB) and usher's buffers (128 KiB per thread, 2 MiB shared) hold.
PATH = "/stall/" + "x" * 1000
# The longest a request may take: the bug this guards against left every
# request waiting forever; a busy shared host is slow, never that slow.
REQUEST_MAX_S = 2.0
# Beyond shutdown.timeout (3 s in the test configs): the bound usher gives
# a stalled stderr at exit (0.5 s without progress) and a margin.
EXIT_MAX_S = 8.0
F_SETPIPE_SZ = 1031  # <linux/fcntl.h>; Python has it as fcntl.F_SETPIPE_SZ from 3.10
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) \S")


def dropped(u):
    return u.metrics().get("usher_log_lines_dropped_total")


def run_clients(port, total, clients):
    """<total> GETs over <clients> keep-alive connections in parallel:
    (statuses that were not 200, the slowest request in seconds, errors)."""
    bad, slowest, errors = [], [0.0], []
    lock = threading.Lock()

    def client(n):
        try:
            with RawConn(port, timeout=REQUEST_MAX_S + 3) as c:
                for i in range(n):
                    t0 = time.monotonic()
                    r = c.request("GET", "%s?i=%d" % (PATH, i))
                    dt = time.monotonic() - t0
                    with lock:
                        slowest[0] = max(slowest[0], dt)
                        if r.status != 200:
                            bad.append(r.status)
        except Exception as e:  # pylint: disable=broad-except
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(total // clients,), daemon=True)
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client is still waiting for usher"
    return bad, slowest[0], errors


class PipeReader(threading.Thread):
    """Reads a pipe into memory until EOF, once started."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd = fd
        self.data = bytearray()
        self.lock = threading.Lock()

    def run(self):
        while True:
            r, _, _ = select.select([self.fd], [], [], 30.0)
            if not r:
                return
            d = os.read(self.fd, 1 << 20)
            if not d:
                return
            with self.lock:
                self.data += d

    def text(self):
        with self.lock:
            return bytes(self.data).decode("utf-8", "replace")


def start_usher_into_pipe(usher_bin, backend, tmp_path, workers, pipe_size=None):
    cfg = usher_proc.make_config(pools={"blue": [backend]}, log={"access": True},
                                 extra={"workers": workers})
    u = usher_proc.Usher(usher_bin, cfg, tmp_path)
    open(u.log_path, "wb").close()  # u.log() is empty: the log is in the pipe
    u._log_file = open(os.devnull, "wb")
    r, w = os.pipe()
    if pipe_size:
        fcntl.fcntl(w, F_SETPIPE_SZ, pipe_size)
    u.proc = subprocess.Popen([usher_bin, "-c", u.cfg_path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=w, cwd=str(tmp_path))
    os.close(w)
    return u, r


def check_lines(text):
    """Every line whole and well formed; returns them."""
    lines = text.splitlines()
    for line in lines:
        assert LINE.match(line), "a broken log line: %r" % line[:200]
    assert text.endswith("\n"), "the log ends inside a line: %r" % text[-200:]
    return lines


def test_stalled_stderr_costs_lines_never_requests(usher_bin, backend_factory, tmp_path):
    b = backend_factory("blue-1")
    u, rfd = start_usher_into_pipe(usher_bin, b, tmp_path, workers=2)
    reader = PipeReader(rfd)
    try:
        u.wait_ready(timeout=5.0)
        # nobody reads: the pipe fills with the first lines, then usher's buffers
        bad, slowest, errors = run_clients(u.port, REQUESTS // 2, CLIENTS)
        assert not errors and not bad, (errors[:3], bad[:10])
        assert slowest < REQUEST_MAX_S, "a request took %.2fs" % slowest
        first = dropped(u)
        assert first and first > 0, "stderr stalled, yet no line counted as dropped"
        bad, slowest, errors = run_clients(u.port, REQUESTS // 2, CLIENTS)
        assert not errors and not bad, (errors[:3], bad[:10])
        assert slowest < REQUEST_MAX_S, "a request took %.2fs" % slowest
        second = dropped(u)
        assert second > first, "the counter did not rise: %s then %s" % (first, second)
        assert second < REQUESTS + 100, "more lines dropped than were logged: %s" % second

        # the reader comes back: what usher still holds drains, then lines
        # flow again, promptly and in order
        reader.start()
        sizes = []

        def quiet():
            sizes.append(len(reader.text()))
            return len(sizes) > 5 and sizes[-1] == sizes[-6] and sizes[-1] > 0
        wire.wait_until(quiet, 20.0, interval=0.1, what="usher's buffered lines to drain")
        with RawConn(u.port) as c:
            for i in range(5):
                assert c.request("GET", "/back?n=%d" % i).status == 200
        wire.wait_until(lambda: "/back?n=4" in reader.text(), 5.0,
                        what="the access lines after the reader came back")
        text = reader.text()
        back = [text.index("/back?n=%d" % i) for i in range(5)]
        assert back == sorted(back), "access lines out of order"
        assert dropped(u) == second, "lines dropped while the reader reads"

        u.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert u.wait_exit(EXIT_MAX_S) == 0
        assert time.monotonic() - t0 < EXIT_MAX_S
        reader.join(10)
        lines = check_lines(reader.text())
        assert any(" info usher starting " in l for l in lines[:5]), lines[:5]
        assert " info usher stopped " in lines[-1], "the last line at exit: %r" % lines[-1][:200]
        # every access line was either written or counted
        access = [l for l in lines if " info access " in l]
        assert len(access) + second == REQUESTS + 5, (len(access), second)
    finally:
        u.stop(check=False)
        if not reader.is_alive():
            os.close(rfd)


def test_exit_does_not_wait_for_a_reader_that_never_comes(usher_bin, backend_factory,
                                                          tmp_path):
    b = backend_factory("blue-1")
    # a one-page pipe: full after the first lines
    u, rfd = start_usher_into_pipe(usher_bin, b, tmp_path, workers=1, pipe_size=4096)
    try:
        u.wait_ready(timeout=5.0)
        bad, slowest, errors = run_clients(u.port, 10000, 2)
        assert not errors and not bad, (errors[:3], bad[:10])
        assert dropped(u) > 0
        u.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert u.wait_exit(EXIT_MAX_S) == 0
        assert time.monotonic() - t0 < EXIT_MAX_S
        # what did get through is whole lines
        os.set_blocking(rfd, False)
        data = b""
        while True:
            try:
                d = os.read(rfd, 1 << 16)
            except BlockingIOError:
                break
            if not d:
                break
            data += d
        check_lines(data.decode("utf-8", "replace"))
    finally:
        u.stop(check=False)
        os.close(rfd)
