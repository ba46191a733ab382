"""The reload runs off the loops (DESIGN "The reload", "Ownership and
state"): the file is parsed and the certificates loaded on the background
thread, POST /reload answers when its reload ended, and reloads asked for
while one runs are queued and folded into one more run.

The background thread is held up on purpose by a state file write whose
temp file is a FIFO nobody reads yet (its jobs run in order: the reload
waits behind the write), so a reload stays in its loading phase for as long
as the test needs, with nothing timed.

Standard library only (run with /usr/bin/python3); every wait is bounded."""

import json
import os
import signal
import threading
import time

import usher_proc
from admin_util import admin
from clients import slow_request
from wire import RawConn, wait_until


class Call(threading.Thread):
    """An admin request in the background: .result (status, body, headers)."""

    def __init__(self, u, method, path, body=None):
        super().__init__(daemon=True)
        self.args = (u, method, path, body)
        self.result = None

    def run(self):
        self.result = admin(*self.args, timeout=30.0)


def start(backend_factory, usher_factory, tmp_path):
    b1 = backend_factory("blue-1")
    state = os.path.join(str(tmp_path), "usher.state")
    cfg = usher_proc.make_config(pools={"blue": [b1]})
    cfg["admin"]["state_file"] = state
    return usher_factory(cfg), state


def hold_background_thread(u, state):
    """Makes the next state file write block (a FIFO for its temp file) and
    triggers it; returns (the fifo path, the mutation's Call)."""
    fifo = "%s.tmp.%d" % (state, u.pid)
    os.mkfifo(fifo)
    m = Call(u, "POST", "/backends/blue/blue-1/weight", {"weight": 3})
    m.start()
    wait_until(lambda: u.status_json()["pools"][0]["backends"][0]["weight_override"] == 3, 3.0,
               what="the mutation in force")
    return fifo, m


def release(fifo):
    with open(fifo, "rb") as f:
        f.read()


def count(u, needle):
    return u.log().count(needle)


def test_reloads_asked_for_during_one_fold_into_one_more(backend_factory, usher_factory,
                                                         tmp_path):
    u, state = start(backend_factory, usher_factory, tmp_path)
    b2 = backend_factory("blue-2")
    fifo, m = hold_background_thread(u, state)

    # the first reload: its load waits behind the held write
    first = Call(u, "POST", "/reload")
    first.start()
    wait_until(lambda: count(u, " reload started ") == 1, 3.0, what="the first reload")
    # the config changes, then three more requests while the first one runs
    cfg = json.loads(json.dumps(u.cfg))
    cfg["pools"][0]["backends"].append({"name": "blue-2", "address": b2.address, "weight": 1})
    u.write_config(cfg)
    second = Call(u, "POST", "/reload")
    second.start()
    wait_until(lambda: count(u, " reload queued ") == 1, 3.0, what="the second one queued")
    third = Call(u, "POST", "/reload")
    third.start()
    u.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    # nothing waits for the load but these answers: the control loop, the
    # probe and the data plane answer at once
    t0 = time.monotonic()
    assert u.admin_get("/status")[0] == 200
    assert u.admin_get("/live")[0] == 200
    with RawConn(u.port) as c:
        assert c.request("GET", "/").status == 200
    assert time.monotonic() - t0 < 1.0
    assert first.result is None and second.result is None and third.result is None
    assert u.status_json()["generation"] == 1
    assert count(u, " reload queued ") == 1, "one queued run for all of them"

    release(fifo)
    for c in (m, first, second, third):
        c.join(20.0)
    st, body, _ = first.result
    assert st == 200 and body["result"] == "ok" and body["generation"] == 2, first.result
    for c in (second, third):
        st, body, _ = c.result
        assert st == 200 and body["generation"] == 3, c.result
    wait_until(lambda: count(u, " reload done generation=3") == 1, 5.0, what="the second run")
    time.sleep(0.3)
    assert count(u, " reload started ") == 2, "the three requests made one more run"
    assert count(u, " reload done ") == 2
    backends = [b["name"] for b in u.status_json()["pools"][0]["backends"]]
    assert "blue-2" in backends, backends


def test_a_reload_that_fails_while_queued_answers_422(backend_factory, usher_factory, tmp_path):
    u, state = start(backend_factory, usher_factory, tmp_path)
    fifo, m = hold_background_thread(u, state)
    first = Call(u, "POST", "/reload")
    first.start()
    wait_until(lambda: count(u, " reload started ") == 1, 3.0, what="the first reload")
    with open(u.cfg_path, "a") as f:
        f.write("bogus_key: 1\n")
    release(fifo)
    first.join(20.0)
    st, body, _ = first.result
    assert st == 422 and body["result"] == "error" and body["generation"] == 1, first.result
    assert "bogus_key" in body["errors"][0], body
    assert u.wait_log(r"reload failed reason=\"invalid config, running config kept\"")
    m.join(10.0)
    with RawConn(u.port) as c:
        assert c.request("GET", "/").status == 200


def test_sigterm_during_a_reload_applies_nothing(backend_factory, usher_factory, tmp_path):
    u, state = start(backend_factory, usher_factory, tmp_path)
    fifo, m = hold_background_thread(u, state)
    first = Call(u, "POST", "/reload")
    first.start()
    wait_until(lambda: count(u, " reload started ") == 1, 3.0, what="the reload")
    u.send_signal(signal.SIGTERM)
    # no client connection: the drain ends at once, before the load; the
    # exit waits for the state file write queued before it, then answers
    # both: the mutation (its write happened) and the reload (it never will)
    assert u.wait_log(r"reload failed reason=\"usher is stopping\"")
    release(fifo)
    first.join(10.0)
    m.join(10.0)
    st, body, _ = first.result
    assert st == 422 and body["generation"] == 1, first.result
    assert body["errors"] == ["usher is stopping"], body
    assert m.result[0] == 200, m.result
    assert u.wait_exit(10.0) == 0
    assert " reload done " not in u.log()


def test_a_queued_reload_after_sigterm_does_not_run(backend_factory, usher_factory, tmp_path):
    """A client connection keeps the drain going while the load finishes:
    the loaded config is not applied (reason draining)."""
    u, state = start(backend_factory, usher_factory, tmp_path)
    fifo, m = hold_background_thread(u, state)
    first = Call(u, "POST", "/reload")
    first.start()
    wait_until(lambda: count(u, " reload started ") == 1, 3.0, what="the reload")
    slow = slow_request(u.port, 1500, check_close=False)  # the drain waits for it
    wait_until(lambda: u.status_json()["connections"] == 1, 3.0, what="the slow request")
    u.send_signal(signal.SIGTERM)
    u.wait_log(r"shutdown started", 3.0)
    release(fifo)
    first.join(10.0)
    st, body, _ = first.result
    assert st == 422 and body["generation"] == 1, first.result
    assert u.wait_log(r"reload failed reason=draining")
    r, _ = slow.join(5.0)
    assert r.status == 200
    assert u.wait_exit(10.0) == 0
