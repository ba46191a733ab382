"""The one fixture system of the integration tests (real usher binary, real
backends and clients).

  usher_bin        path of the binary: $USHER_BIN or <repo>/build/usher
                   (USHER_BIN=build-tsan/usher runs the same tests against the
                   ThreadSanitizer build; USHER_TEST_WORKERS=N gives every
                   config `workers: N` unless the test set it: usher_proc)
  servers          a Servers registry: everything a test starts (servers,
                   clients, load loops) is added to it and stopped or closed
                   at teardown, last added first
  backend_factory  make_backend(name="backend", **Backend kwargs) -> started
                   servers.Backend (servers.backend)
  usher_factory    start_usher(cfg=None, wait_ready=True, timeout=5.0, name=None,
                   args=None, **make_config kwargs) -> usher_proc.Usher; waits for
                   /live and /ready 200; at teardown SIGTERM, 5 s, SIGKILL, and the
                   test fails if usher printed a sanitizer report (ASan, UBSan,
                   a ThreadSanitizer data race)
  proxy            one backend "blue-1" in pool "blue" behind listener "web":
                   a namespace with .usher, .backend, .port, .conn() (wire.RawConn)
  pki              (session) a test CA, a rogue CA and the leaf certificates of
                   edge_util.LEAVES, made with the openssl CLI (edge_util.Pki)

Ask for servers / backend_factory before usher_factory: fixtures are torn
down in reverse order, so usher stops before the servers behind it.

Helpers, one module per role: usher_proc (the process and its config), wire
(raw HTTP, payloads, waiting), servers (scripted servers), clients (asyncio
thread, WebSocket and TCP clients, background calls), load (the load loop).
"""

import os
import types

import pytest

import edge_util
import usher_proc
import wire
from servers import Backend

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class Servers:
    """Owns what a test starts and stops or closes all of it, last added first."""

    def __init__(self):
        self.items = []

    def add(self, obj):
        self.items.append(obj)
        return obj

    def backend(self, name="backend", **kw):
        """A started servers.Backend."""
        return self.add(Backend(name, **kw).start())

    def stop(self):
        for o in reversed(self.items):
            try:
                if hasattr(o, "stop"):
                    o.stop()
                else:
                    o.close()
            except Exception:  # pylint: disable=broad-except
                pass


def binary_path():
    return os.environ.get("USHER_BIN") or os.path.join(REPO, "build", "usher")


def pytest_report_header(config):
    w = usher_proc.env_workers()
    return "usher: %s, workers: %s" % (binary_path(), "as each test says" if w is None else
                                       "%s (USHER_TEST_WORKERS)" % w)


@pytest.fixture(scope="session")
def usher_bin():
    path = binary_path()
    if not os.access(path, os.X_OK):
        pytest.fail("usher binary not found at %s (build it with scripts/build or set USHER_BIN)"
                    % path)
    return path


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.stop()


@pytest.fixture
def backend_factory(servers):
    return servers.backend


@pytest.fixture
def usher_factory(usher_bin, tmp_path):
    started = []

    def start_usher(cfg=None, wait_ready=True, timeout=5.0, name=None, args=None, **kw):
        if cfg is None:
            cfg = usher_proc.make_config(**kw)
        u = usher_proc.Usher(usher_bin, cfg, tmp_path, name=name or "usher%d" % len(started))
        started.append(u)
        u.start(wait_ready=wait_ready, timeout=timeout, args=args)
        return u

    yield start_usher
    problems = []
    for u in started:
        u.stop(timeout=5.0, check=False)  # every usher is stopped before the test fails
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
    ns.conn = lambda timeout=5.0: wire.RawConn(u.port, timeout=timeout)
    return ns


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The edge tests' certificates (edge_util.make_pki), made once per run."""
    return edge_util.make_pki(tmp_path_factory.mktemp("pki"))
