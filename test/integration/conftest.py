"""Fixtures for the integration tests (real usher binary, real backends).

  usher_bin        path of the binary: $USHER_BIN or <repo>/build/usher
  backend_factory  make_backend(name="backend", **Backend kwargs) -> started Backend;
                   every backend is stopped at teardown
  usher_factory    start_usher(cfg=None, wait_ready=True, timeout=5.0, name="usher",
                   **make_config kwargs) -> util.Usher; waits for /live and /ready 200;
                   at teardown SIGTERM, 5 s, SIGKILL, and the test fails if usher
                   printed a sanitizer report
  proxy            one backend "blue-1" in pool "blue" behind listener "web":
                   a namespace with .usher, .backend, .port, .conn() (util.RawConn)

Helpers live in util.py (RawConn, build_request, make_config, Metrics, ...) and
backend.py (Backend, Blackhole); import them directly: `from util import ...`.
"""

import os
import types

import pytest

import util
from backend import Backend

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def usher_bin():
    path = os.environ.get("USHER_BIN") or os.path.join(REPO, "build", "usher")
    if not os.access(path, os.X_OK):
        pytest.fail("usher binary not found at %s (build it with scripts/build or set USHER_BIN)"
                    % path)
    return path


@pytest.fixture
def backend_factory():
    made = []

    def make_backend(name="backend", **kw):
        b = Backend(name, **kw).start()
        made.append(b)
        return b

    yield make_backend
    for b in made:
        b.stop(timeout=2.0)


@pytest.fixture
def usher_factory(usher_bin, tmp_path):
    started = []

    def start_usher(cfg=None, wait_ready=True, timeout=5.0, name=None, args=None, **kw):
        if cfg is None:
            cfg = util.make_config(**kw)
        u = util.Usher(usher_bin, cfg, tmp_path, name=name or "usher%d" % len(started))
        started.append(u)
        u.start(wait_ready=wait_ready, timeout=timeout, args=args)
        return u

    yield start_usher
    problems = []
    for u in started:
        u.stop(timeout=5.0)
        rep = u.sanitizer_report()
        if rep:
            problems.append("%s printed a sanitizer report:\n%s" % (u.name, rep))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def proxy(backend_factory, usher_factory):
    """usher with listener web -> pool blue -> backend blue-1."""
    b = backend_factory("blue-1")
    u = usher_factory(pools={"blue": [b]})
    ns = types.SimpleNamespace(usher=u, backend=b, port=u.port)
    ns.conn = lambda timeout=5.0: util.RawConn(u.port, timeout=timeout)
    return ns
