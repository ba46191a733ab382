"""admin.state_file is written off the loops (DESIGN "Ownership and
state": no fsync on a loop thread), and still a mutation's answer means
the change is on disk:

  - while the write is held up (the temp file is a FIFO nobody reads yet),
    the mutation's answer does not come, yet the change is in force,
    /status, /live and the data plane answer at once; released, the answer
    comes, and mutations made meanwhile end in one write of the last state;
  - quick mutations from many clients at once end with the last state on
    disk, each answer arriving when the file holds at least its change.

Standard library only (run with /usr/bin/python3); every wait is bounded."""

import os
import threading
import time

import usher_proc
import wire
from admin_util import admin, backend_of
from wire import RawConn, wait_until


def start(backend_factory, usher_factory, tmp_path):
    b1 = backend_factory("blue-1")
    state = os.path.join(str(tmp_path), "usher.state")
    cfg = usher_proc.make_config(pools={"blue": [b1]})
    cfg["admin"]["state_file"] = state
    return usher_factory(cfg), state


def file_weight(state):
    """The weight override of blue/blue-1 in the state file, or None."""
    try:
        with open(state) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        f = line.split("\t")
        if f[:3] == ["weight", "blue", "blue-1"]:
            return int(f[3])
    return None


class Mutation(threading.Thread):
    """POST a weight in the background; .status, .answered_at and the
    weight the file held when the answer arrived."""

    def __init__(self, u, state, weight):
        super().__init__(daemon=True)
        self.u, self.state, self.weight = u, state, weight
        self.status = self.answered_at = self.file_then = None

    def run(self):
        self.status = admin(self.u, "POST", "/backends/blue/blue-1/weight",
                            {"weight": self.weight}, timeout=20.0)[0]
        self.answered_at = time.monotonic()
        self.file_then = file_weight(self.state)


def test_answer_waits_for_the_write_and_the_last_state_wins(backend_factory, usher_factory,
                                                            tmp_path):
    u, state = start(backend_factory, usher_factory, tmp_path)
    assert admin(u, "POST", "/backends/blue/blue-1/weight", {"weight": 2})[0] == 200
    assert file_weight(state) == 2
    # the next write's temp file: opening a FIFO for writing blocks until
    # someone reads it, so the background writer waits on us
    fifo = "%s.tmp.%d" % (state, u.pid)
    os.mkfifo(fifo)
    first = Mutation(u, state, 5)
    first.start()
    wait_until(lambda: backend_of(u.status_json(), "blue", "blue-1")["weight_override"] == 5,
               3.0, what="the first change in force")
    # later ones, in order, while the first write is held up
    later = []
    for w in (6, 7):
        m = Mutation(u, state, w)
        m.start()
        wait_until(lambda w=w: backend_of(u.status_json(), "blue", "blue-1")["weight_override"]
                   == w, 3.0, what="weight %d in force" % w)
        later.append(m)
    time.sleep(0.5)
    assert first.status is None, "answered before its write"
    assert all(m.status is None for m in later), "answered before their write"
    # nothing else waits for the disk: the control loop, the probe and the
    # data plane answer at once
    t0 = time.monotonic()
    assert u.admin_get("/status")[0] == 200
    assert u.admin_get("/live")[0] == 200
    with RawConn(u.port) as c:
        assert c.request("GET", "/").status == 200
    assert time.monotonic() - t0 < 1.0
    assert file_weight(state) == 2
    # release the writer: it writes the first state into the FIFO (which
    # cannot be fsynced: that save fails, logged), then one write of the
    # last state for the two that folded into it
    released = time.monotonic()
    with open(fifo, "rb") as f:
        held = f.read()
    assert b"weight\tblue\tblue-1\t5\n" in held, held
    for m in [first] + later:
        m.join(10.0)
        assert m.status == 200, m.status
        assert m.answered_at >= released
    assert u.wait_log(r"state file not saved .*reason=\"fsync failed\"")
    assert file_weight(state) == 7
    for m in later:
        assert m.file_then == 7, "answered %d before the file held it (%r)" % (m.weight,
                                                                             m.file_then)
    assert not os.path.exists(fifo)
    assert not [f for f in os.listdir(str(tmp_path)) if ".tmp." in f], "temp file left behind"
    # a restart reads what the last answer promised
    assert u.stop() == 0
    u2 = usher_factory(u.cfg, name="again")
    assert backend_of(u2.status_json(), "blue", "blue-1")["weight_override"] == 7


def test_quick_mutations_end_with_the_last_state_on_disk(backend_factory, usher_factory,
                                                         tmp_path):
    u, state = start(backend_factory, usher_factory, tmp_path)
    ms = []
    for round_ in range(5):
        batch = [Mutation(u, state, 10 * round_ + i + 1) for i in range(8)]
        for m in batch:
            m.start()
        ms += batch
    for m in ms:
        m.join(20.0)
        assert m.status == 200, m.status
        # the answer came once the file held a state at least as new as
        # this change: some weight of the mutations made so far
        assert m.file_then is not None
    final = backend_of(u.status_json(), "blue", "blue-1")["weight_override"]
    assert file_weight(state) == final
    # saved again by an unrelated change: still in step
    assert admin(u, "POST", "/backends/blue/blue-1/weight", {"weight": 99})[0] == 200
    assert file_weight(state) == 99
