"""Logs that parse (DESIGN "Logs"): with adversarial input -- quotes,
backslashes and invalid UTF-8 in request paths with the access log on,
broken configs reloaded by SIGHUP, a warning printed before the first
listener starts -- every stderr line is one JSON object (log.format json)
or one logfmt record (text), from the very first line."""

import json
import re
import resource
import signal
import subprocess

import pytest

import usher_proc
import wire
from wire import RawConn

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
TEXT_HEAD = re.compile(r"^(%s) (debug|info|warn|error) ([^=\"]*?)(?= [A-Za-z_]+=|$)" % TIME)
KEY = re.compile(r" ([A-Za-z_][A-Za-z0-9_]*)=")
BARE = re.compile(r'[^\s"=\\]+')

# request targets a client may send (visible bytes, obs-text): quotes,
# backslashes, '=' and bytes that are not UTF-8
PATHS = [b'/q"uote', b'/back\\slash"', b'/a=b"c=d', b"/bad\xff\xfeutf8", b'/x?k="v"&\xc3\xa9',
         b'/"},"forged":{"x":1', b'/end\\']


def parse_logfmt(line):
    """A strict logfmt reader: time level event-words then key=value
    pairs; a quoted value is a JSON string. Raises ValueError on anything
    else. Returns (level, event, {key: value})."""
    m = TEXT_HEAD.match(line)
    if not m:
        raise ValueError("no time/level/event: %r" % line)
    pos, kv = m.end(), {}
    while pos < len(line):
        km = KEY.match(line, pos)
        if not km:
            raise ValueError("expected ' key=' at %d: %r" % (pos, line))
        pos = km.end()
        if line.startswith('"', pos):
            dec = json.JSONDecoder()
            value, end = dec.raw_decode(line, pos)
            if not isinstance(value, str):
                raise ValueError("quoted value is not a string: %r" % line)
            pos = end
        else:
            vm = BARE.match(line, pos)
            if not vm:
                raise ValueError("empty or invalid bare value at %d: %r" % (pos, line))
            value, pos = vm.group(0), vm.end()
        if km.group(1) in kv:
            raise ValueError("key %s twice: %r" % (km.group(1), line))
        kv[km.group(1)] = value
    return m.group(2), m.group(3), kv


def parse_json(line):
    obj = json.loads(line)
    if not isinstance(obj, dict) or not {"time", "level", "event"} <= obj.keys():
        raise ValueError("not a log object: %r" % line)
    return obj["level"], obj["event"], obj


def low_fd_limit():
    # below what max_connections 10000 needs: the "max_connections lowered"
    # warning comes before any listener starts
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


BROKEN_CONFIGS = [
    # a pool name with quotes, echoed in the error message
    lambda cfg: cfg.replace("blue: 100", "'gr\"e\"n\\\\': 100", 1),
    # a YAML syntax error
    lambda cfg: cfg + "\nlisteners: [ {\n",
    # an unknown key with a quote, an '=' and a backslash
    lambda cfg: cfg + '\n"we\\"i=rd\\\\": 1\n',
    # bytes that are not UTF-8
    lambda cfg: cfg.replace("blue: 100", "bl\udcffue: 100", 1),
]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_line_parses(fmt, usher_bin, backend_factory, tmp_path):
    b = backend_factory("blue-1")
    cfg = usher_proc.make_config(pools={"blue": [b]}, log={"format": fmt, "access": True,
                                                     "level": "debug"},
                           limits={"max_connections": 10000})
    u = usher_proc.Usher(usher_bin, cfg, tmp_path)
    good = usher_proc.to_yaml(cfg)
    log_file = open(u.log_path, "wb")
    u._log_file = log_file
    u.proc = subprocess.Popen([usher_bin, "-c", u.cfg_path], stdin=subprocess.DEVNULL,
                              stdout=log_file, stderr=log_file, cwd=str(tmp_path),
                              preexec_fn=low_fd_limit)
    try:
        u.wait_ready(timeout=5.0)
        for path in PATHS:
            with RawConn(u.port) as c:
                c.send(b"GET " + path + b" HTTP/1.1\r\nHost: a.test\r\nUser-Agent: \"x\"\r\n\r\n")
                assert c.read_response().status == 200
        with RawConn(u.port) as c:  # an error usher answers itself
            c.send(b"GET /\"x HTTP/1.1\r\nHost: a\"b\r\n\r\n")
            assert c.read_response().status == 400

        for n, breaker in enumerate(BROKEN_CONFIGS, 1):
            with open(u.cfg_path, "wb") as f:
                f.write(breaker(good).encode("utf-8", "surrogateescape"))
            u.send_signal(signal.SIGHUP)
            wire.wait_until(lambda: u.log().count("reload failed") >= n, 5.0,
                            what="reload failure %d" % n)
        assert u.stop() == 0
    finally:
        u.stop()
        log_file.close()

    raw = open(u.log_path, "rb").read()
    text = raw.decode("utf-8")  # strict: never invalid UTF-8
    lines = text.splitlines()
    assert lines, "no log output"
    parse = parse_json if fmt == "json" else parse_logfmt
    parsed = []
    for line in lines:
        try:
            parsed.append(parse(line))
        except ValueError as e:
            pytest.fail("line does not parse as %s: %s\n%r" % (fmt, e, line))

    events = [ev for _, ev, _ in parsed]
    assert events[0] == "max_connections lowered", "log.format from the first line: %r" % lines[0]
    access = [kv for _, ev, kv in parsed if ev == "access"]
    assert len(access) == len(PATHS) + 1
    assert [a["path"] for a in access[:len(PATHS)]] == [
        p.decode("utf-8", "replace").replace('"', "_").replace("\\", "_") for p in PATHS] or \
        [a["path"] for a in access[:len(PATHS)]] == [p.decode("utf-8", "replace") for p in PATHS]
    errors = [kv for _, ev, kv in parsed if ev == "config error"]
    assert len(errors) >= len(BROKEN_CONFIGS)
    assert any('gr"e"n' in e["error"] for e in errors), errors
    if fmt == "json":
        assert all(a["status"] == 200 for a in access[:len(PATHS)])
        assert all(isinstance(a["ms"], (int, float)) for a in access)
        assert all(set(kv) >= {"time", "level", "event"} for _, _, kv in parsed)
        assert not any("forged" in kv for _, _, kv in parsed)
