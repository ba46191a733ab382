"""`usher -t -c FILE`: the config check as a user runs it.

Every broken config must be reported as "file:line:column: key: reason" lines
on stderr (all of them, in file order) with exit code 2; a good one prints
"configuration ok" on stdout and exits 0. Self-contained: it only runs the
binary ($USHER_BIN, default <repo>/build/usher).

The broken files in configs/ carry what usher must print in trailing
"# expect: LINE:COL: key: reason" comments; FILE: is prepended as the path
given on the command line, and "{dir}" stands for the file's directory.
"""
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"
RUN_TIMEOUT = 10  # seconds; a config check is instant, a run that starts is killed

BROKEN = sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("good-"))
GOOD = [REPO / "conf" / "usher.yaml", REPO / "conf" / "demo.yaml"] + sorted(
    CONFIGS.glob("good-*.yaml")
)


@pytest.fixture(scope="module")
def usher():
    binary = pathlib.Path(os.environ.get("USHER_BIN", REPO / "build" / "usher"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"usher binary not found at {binary}: build it first (scripts/build) "
                    "or set USHER_BIN")
    return str(binary)


def run(usher, *args, cwd=REPO):
    """Runs usher to completion (bounded); returns (code, stdout lines, stderr lines)."""
    try:
        p = subprocess.run([usher, *args], cwd=cwd, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"usher {' '.join(args)} still running after {RUN_TIMEOUT}s")
    return p.returncode, p.stdout.splitlines(), p.stderr.splitlines()


def expected_lines(path, shown_as):
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            rest = line[len("# expect: "):].replace("{dir}", str(path.parent))
            out.append(f"{shown_as}:{rest}")
    return out


def test_every_broken_config_has_expectations():
    assert len(BROKEN) >= 8
    for name in BROKEN:
        assert expected_lines(CONFIGS / name, name), f"{name} has no '# expect:' lines"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_config(usher, path):
    code, out, err = run(usher, "-t", "-c", str(path))
    assert (code, out, err) == (0, ["configuration ok"], [])


@pytest.mark.parametrize("name", BROKEN)
def test_broken_config(usher, name):
    path = CONFIGS / name
    code, out, err = run(usher, "-t", "-c", str(path))
    assert code == 2
    assert out == []
    assert err == expected_lines(path, str(path))


@pytest.mark.parametrize("name", ["durations.yaml", "references.yaml", "syntax.yaml"])
def test_broken_config_without_check_flag(usher, name):
    """Starting for real with a broken config fails the same way, before any socket opens."""
    path = CONFIGS / name
    code, out, err = run(usher, "-c", str(path))
    assert code == 2
    assert err == expected_lines(path, str(path))


def test_file_name_as_given(usher):
    """A relative path is reported as typed, relative to where usher was started."""
    code, _, err = run(usher, "-t", "-c", "types.yaml", cwd=CONFIGS)
    assert code == 2
    assert err == expected_lines(CONFIGS / "types.yaml", "types.yaml")
    assert err[0] == "types.yaml:2:8: admin: expected a mapping"


def test_nonexistent_file(usher, tmp_path):
    missing = tmp_path / "nope.yaml"
    code, out, err = run(usher, "-t", "-c", str(missing))
    assert code == 2
    assert out == []
    assert err == [f"{missing}: cannot open: No such file or directory"]
    code, _, err = run(usher, "-c", str(missing))
    assert code == 2
    assert err == [f"{missing}: cannot open: No such file or directory"]


def test_directory_instead_of_file(usher, tmp_path):
    code, _, err = run(usher, "-t", "-c", str(tmp_path))
    assert code == 2
    assert err == [f"{tmp_path}: cannot read: Is a directory"]


BASE = """\
listeners:
  - name: web
    bind: 127.0.0.1:18080
    pools: {blue: 1}
pools:
  - name: blue
    backends:
      - name: blue-1
        address: 127.0.0.1:19001
"""


@pytest.mark.parametrize("text, errors", [
    # one of each kind, as a user would write them
    ("timeouts:\n  connect: 5\n" + BASE,
     ['2:12: timeouts.connect: invalid duration "5": missing unit (ms, s, m or h)']),
    ("timeouts:\n  conect: 5s\n" + BASE,
     ["2:3: timeouts.conect: unknown key, did you mean connect?"]),
    ("timeouts:\n  handshake: 5s\n" + BASE,
     ["2:3: timeouts.handshake: unknown key"]),
    ("limits:\n  max_connections: 0\n" + BASE,
     ["2:20: limits.max_connections: must be between 1 and 1000000"]),
    ("log:\n  format: yaml\n" + BASE,
     ['2:11: log.format: invalid value "yaml": must be one of text, json']),
    (BASE.replace("127.0.0.1:19001", '"[::1]:80"').replace("bind: 127.0.0.1:18080", "bind: ::1:80"),
     ['3:11: listeners[0].bind: invalid address "::1:80": IPv6 addresses need brackets, '
      'e.g. [::1]:80']),
    (BASE.replace("{blue: 1}", "{blue: 0}"),
     ["4:12: listeners[0].pools: all weights are 0: at least one pool needs a weight above 0"]),
    (BASE.replace("{blue: 1}", "{green: 1}"),
     ['4:13: listeners[0].pools.green: unknown pool "green"']),
    (BASE.replace("  - name: blue\n", "  - name: blue\n    health_check: {interval: 1s}\n"),
     ["7:30: pools[0].health_check.interval: must be longer than timeout (1s)"]),
    (BASE + "      - name: blue-1\n        address: 127.0.0.1:19002\n",
     ['10:15: pools[0].backends[1].name: duplicate backend name "blue-1" (first at line 8)']),
    (BASE.replace("        address: 127.0.0.1:19001\n", ""),
     ["8:9: pools[0].backends[0].address: missing required key"]),
    ("listeners: [\n", ["2:1: syntax error: did not find expected node content (while parsing "
                         "a flow node)"]),
    ("log:\n  level: info\n  format: \"json\n" + BASE,
     ["13:1: syntax error: found unexpected end of stream (while scanning a quoted scalar at "
      "line 3, column 11)"]),
    # all of them at once, in file order
    ("timeouts:\n  connect: 5\n  conect: 5s\nlog:\n  level: loud\n"
     + BASE.replace("{blue: 1}", "{blue: 1, red: 2}").replace("127.0.0.1:19001", "127.0.0.1:0"),
     ['2:12: timeouts.connect: invalid duration "5": missing unit (ms, s, m or h)',
      "3:3: timeouts.conect: unknown key, did you mean connect?",
      '5:10: log.level: invalid value "loud": must be one of debug, info, warn, error',
      '9:22: listeners[0].pools.red: unknown pool "red"',
      '14:18: pools[0].backends[0].address: invalid address "127.0.0.1:0": '
      "port must be between 1 and 65535"]),
], ids=["duration", "unknown-key", "unknown-key-no-hint", "range", "enum", "v6-brackets", "zero-weights", "unknown-pool",
        "timeout-vs-interval", "duplicate-backend", "missing-key", "syntax", "syntax-context", "all-at-once"])
def test_inline_errors(usher, tmp_path, text, errors):
    path = tmp_path / "usher.yaml"
    path.write_text(text)
    code, out, err = run(usher, "-t", "-c", str(path))
    assert (code, out) == (2, [])
    assert err == [f"{path}:{e}" for e in errors]


def test_tls_files_relative_to_the_config(usher, tmp_path):
    """cert/key are found next to the config file, wherever usher runs from."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(tmp_path / "server.key"),
                    "-out", str(tmp_path / "server.pem")],
                   check=True, capture_output=True, timeout=RUN_TIMEOUT)
    cfg = tmp_path / "tls.yaml"
    cfg.write_text(BASE.replace("    pools: {blue: 1}\n",
                                "    tls: {cert: server.pem, key: server.key}\n"
                                "    pools: {blue: 1}\n"))
    assert run(usher, "-t", "-c", str(cfg), cwd="/") == (0, ["configuration ok"], [])

    (tmp_path / "server.key").unlink()
    code, _, err = run(usher, "-t", "-c", str(cfg), cwd="/")
    assert code == 2
    assert err == [f'{cfg}:4:34: listeners[0].tls.key: cannot read "{tmp_path}/server.key": '
                   "No such file or directory"]


EVERY_NEW_KEY = """\
workers: 2
admin:
  bind: 127.0.0.1:19901
  token_file: secrets/admin.token
  state_file: state/overrides.json
  ready_requires_backends: true
upgrade:
  timeout: 10s
shutdown:
  drain_delay: 1s
  timeout: 20s
  close_spread: 5s
  idle_close: after_request
  tunnel_close_grace: 3s
timeouts:
  backend: 30s
  first_byte: 2s
listeners:
  - name: web
    bind: 127.0.0.1:18080
    pools: {blue: 100, green: 0}
pools:
  - name: blue
    slow_start: 30s
    passive_health:
      consecutive_failures: 3
      ejection_time: 10s
      max_ejected_percent: 34
    backends:
      - name: blue-1
        address: 127.0.0.1:19001
  - name: green
    discover:
      dns: green.internal
      port: 8080
      interval: 2s
  - name: canary
    discover:
      dns: _http._tcp.canary.internal
      srv: true
resolver:
  nameservers: [127.0.0.1:53, "[::1]:53"]
  hold: 1m
fleet:
  etcd: [127.0.0.1:2379, 127.0.0.1:22379]
  prefix: /prod/usher/
  instance: edge-1
"""


def test_every_new_key(usher, tmp_path):
    """Every key DESIGN.md added for workers, the admin API, upgrades,
    discovery and fleets, at a value other than its default: accepted.
    The paths are relative to the config; the state file need not exist,
    and the discovered names are not resolved by a check."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin.token").write_text("s3cret\n")
    (tmp_path / "state").mkdir()
    cfg = tmp_path / "usher.yaml"
    cfg.write_text(EVERY_NEW_KEY)
    assert run(usher, "-t", "-c", str(cfg), cwd="/") == (0, ["configuration ok"], [])


@pytest.mark.parametrize("edit, errors", [
    (("workers: 2", "workers: 0"), ["1:10: workers: must be auto or between 1 and 256"]),
    (("workers: 2", "workers: many"), ["1:10: workers: expected auto or an integer"]),
    (("secrets/admin.token", "secrets/nope"),
     ['4:15: admin.token_file: cannot read "{dir}/secrets/nope": No such file or directory']),
    (("state/overrides.json", "gone/overrides.json"),
     ['5:15: admin.state_file: cannot use "{dir}/gone/overrides.json": its directory: '
      "No such file or directory"]),
    (("idle_close: after_request", "idle_close: later"),
     ['13:15: shutdown.idle_close: invalid value "later": must be one of now, after_request']),
    (("      port: 8080\n", ""),
     ["34:7: pools[1].discover.port: missing required key (only SRV records carry a port: "
      "srv: true)"]),
    (("dns: green.internal", "dns: green.internal:8080"),
     ['34:12: pools[1].discover.dns: invalid host name "green.internal:8080": expected '
      "dot-separated labels of letters, digits, '-' or '_' (no port, no brackets)"]),
    (("prefix: /prod/usher/", "prefix: prod"),
     ['46:11: fleet.prefix: invalid prefix "prod": must start and end with / and contain no '
      "spaces or control characters"]),
    (("  hold: 1m", "  hodl: 1m"), ["43:3: resolver.hodl: unknown key, did you mean hold?"]),
], ids=["workers-range", "workers-type", "token-missing", "state-dir-missing", "idle-close",
        "discover-port", "discover-dns", "fleet-prefix", "resolver-typo"])
def test_new_key_errors(usher, tmp_path, edit, errors):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin.token").write_text("s3cret\n")
    (tmp_path / "state").mkdir()
    cfg = tmp_path / "usher.yaml"
    assert edit[0] in EVERY_NEW_KEY
    cfg.write_text(EVERY_NEW_KEY.replace(edit[0], edit[1], 1))
    code, out, err = run(usher, "-t", "-c", str(cfg))
    assert (code, out) == (2, [])
    assert err == [f"{cfg}:" + e.replace("{dir}", str(tmp_path)) for e in errors]


EVERY_ROUTING_KEY = """\
limits:
  h2_max_streams: 250
listeners:
  - name: web
    bind: 127.0.0.1:18443
    tls:
      cert: server.pem
      key: server.key
      certificates:
        - {cert: api.pem, key: api.key}
      strict_sni: true
    http2: auto
    proxy_protocol: v2
    proxy_protocol_from: [127.0.0.0/8, "::1"]
    routes:
      - name: api
        hosts: [api.example.com, "*.api.example.com"]
        paths: [/v1/, =/healthz]
        headers: {x-canary: "1"}
        strip_prefix: true
        pools: {api-blue: 100, api-green: 0}
      - name: grpc
        hosts: [grpc.example.com]
        pools: {grpc: 1}
  - name: plain
    bind: 127.0.0.1:18080
    http2: false
    proxy_protocol: any
    proxy_protocol_from: [10.0.0.0/8]
    routes:
      - name: all
        pools: {api-blue: 1}
    pools: {web: 1}
pools:
  - name: web
    passive_health: false
    backends:
      - {name: web-1, address: 127.0.0.1:19001}
  - name: api-blue
    protocol: h2
    tls:
      ca: ca.pem
      verify: true
      sni: api.internal
      cert: client.pem
      key: client.key
    send_proxy: v1
    backends:
      - {name: api-blue-1, address: 127.0.0.1:19002}
  - name: api-green
    protocol: http1
    tls: {verify: false}
    send_proxy: v2
    passive_health: {consecutive_failures: 3}
    backends: []
  - name: grpc
    protocol: h2c
    health_check:
      protocol: grpc
      service: grpc.health.v1.Health
    backends:
      - {name: grpc-1, address: 127.0.0.1:19003}
"""


@pytest.fixture
def routing_dir(tmp_path):
    """A directory with EVERY_ROUTING_KEY's certificates and keys, real ones
    (the listener's are loaded by the check)."""
    for name, cn in [("server", "localhost"), ("api", "api.example.com"), ("ca", "ca"),
                     ("client", "usher")]:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}",
                        "-keyout", str(tmp_path / f"{name}.key"),
                        "-out", str(tmp_path / f"{name}.pem")],
                       check=True, capture_output=True, timeout=RUN_TIMEOUT)
    return tmp_path


def test_every_routing_key(usher, routing_dir):
    """Every key DESIGN.md added for routes, certificates, HTTP/2, the PROXY
    protocol, TLS to backends and gRPC health checks, at a value other than
    its default: accepted. A listener with routes needs no pools."""
    cfg = routing_dir / "usher.yaml"
    cfg.write_text(EVERY_ROUTING_KEY)
    assert run(usher, "-t", "-c", str(cfg), cwd="/") == (0, ["configuration ok"], [])


@pytest.mark.parametrize("edit, errors", [
    (("      - name: grpc\n", "      - name: api\n"),
     ['22:15: listeners[0].routes[1].name: duplicate route name "api" (first at line 16, '
      "column 15)"]),
    (("hosts: [api.example.com,", "hosts: [api.example.com:443,"),
     ['17:17: listeners[0].routes[0].hosts[0]: invalid host "api.example.com:443": expected a '
      "DNS name, or *. and a DNS name (no port)"]),
    (('"*.api.example.com"', '"*api.example.com"'),
     ['17:34: listeners[0].routes[0].hosts[1]: invalid host "*api.example.com": expected a '
      "DNS name, or *. and a DNS name (no port)"]),
    (("paths: [/v1/,", "paths: [v1/,"),
     ['18:17: listeners[0].routes[0].paths[0]: invalid path "v1/": must start with / (=/ for an '
      "exact path) and contain no spaces, control characters, ? or #"]),
    (('{x-canary: "1"}', '{"x canary": "1"}'),
     ['19:19: listeners[0].routes[0].headers.x canary: invalid header name "x canary": expected '
      "letters, digits or !#$%&'*+-.^_`|~"]),
    (("{grpc: 1}", "{grpc2: 1}"),
     ['24:17: listeners[0].routes[1].pools.grpc2: unknown pool "grpc2"']),
    (("{api-blue: 100, api-green: 0}", "{api-blue: 0, api-green: 0}"),
     ["21:16: listeners[0].routes[0].pools: all weights are 0: at least one pool needs a weight "
      "above 0"]),
    (("        pools: {api-blue: 1}\n",
      "        pools: {api-blue: 1}\n      - {name: everything, pools: {web: 1}}\n"),
     ['33:9: listeners[1].routes[1]: same hosts, paths and headers as route "all" (line 31, '
      "column 9): it could never match"]),
    (("        hosts: [grpc.example.com]\n", "        hosts: [\"*.API.example.com\", API.example.com., api.example.com]\n"
      "        paths: [=/healthz, /v1, /v1/]\n        headers: {X-Canary: \"1\"}\n"),
     ['22:9: listeners[0].routes[1]: same hosts, paths and headers as route "api" (line 16, '
      "column 9): it could never match"]),
    (("    http2: false\n", "    protocol: tcp\n"),
     ["30:5: listeners[1].routes: allowed on http listeners only"]),
    (("    pools: {web: 1}\n", ""), None),
    (("    proxy_protocol_from: [10.0.0.0/8]\n", ""),
     ["25:5: listeners[1].proxy_protocol_from: missing required key (proxy_protocol is any: the "
      "networks allowed to connect)"]),
    (("[10.0.0.0/8]", "[10.0.0.1/8]"),
     ['29:27: listeners[1].proxy_protocol_from[0]: invalid network "10.0.0.1/8": address bits '
      "set beyond the prefix length"]),
    (("http2: false", "http2: off"),
     ['27:12: listeners[1].http2: invalid value "off": must be one of auto, false']),
    (("h2_max_streams: 250", "h2_max_streams: 10001"),
     ["2:19: limits.h2_max_streams: must be between 1 and 10000"]),
    (("      key: client.key\n", ""),
     ["42:7: pools[1].tls.key: missing required key (cert and key go together)"]),
    (("    protocol: http1\n", "    protocol: h2c\n"),
     ["52:5: pools[2].tls: not allowed with protocol h2c (HTTP/2 without TLS): use protocol h2"]),
    (("    protocol: h2c\n", "    protocol: http1\n"),
     ["59:17: pools[3].health_check.protocol: grpc needs the pool's protocol h2c or h2 (gRPC "
      "runs over HTTP/2)"]),
    (("      service: grpc.health.v1.Health\n",
      "      service: grpc.health.v1.Health\n      path: /healthz\n"),
     ["61:7: pools[3].health_check.path: not allowed with protocol grpc (it asks "
      "grpc.health.v1.Health/Check)"]),
    (("      protocol: grpc\n", "      protocol: http\n"),
     ["60:7: pools[3].health_check.service: only for protocol grpc"]),
    (("send_proxy: v2", "send_proxy: any"),
     ['53:17: pools[2].send_proxy: invalid value "any": must be one of false, v1, v2']),
    (("passive_health: false", "passive_health: off"),
     ["36:21: pools[0].passive_health: expected a mapping, true or false"]),
], ids=["route-name", "route-host-port", "route-wildcard", "route-path", "route-header",
        "route-pool", "route-weights", "route-shadowed", "route-shadowed-normalised",
        "routes-on-tcp", "pools-optional-with-routes", "proxy-from-missing", "proxy-from-bits",
        "http2", "h2-streams", "client-cert-alone", "h2c-with-tls", "grpc-needs-h2",
        "grpc-path", "service-not-grpc", "send-proxy-any", "passive-off-word"])
def test_routing_key_errors(usher, routing_dir, edit, errors):
    """Each mistake at its file:line:column (a case without errors is one
    more valid config)."""
    cfg = routing_dir / "usher.yaml"
    assert edit[0] in EVERY_ROUTING_KEY
    cfg.write_text(EVERY_ROUTING_KEY.replace(edit[0], edit[1], 1))
    code, out, err = run(usher, "-t", "-c", str(cfg))
    if errors is None:
        assert (code, out, err) == (0, ["configuration ok"], [])
        return
    assert (code, out) == (2, [])
    assert err == [f"{cfg}:" + e for e in errors]
