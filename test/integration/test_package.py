"""Packages (issue 14 item 4): scripts/package builds a .deb; extracted with
`dpkg-deb -x` into a temporary root (never installed on this system), its
binary checks its packaged configs, its systemd units point at what it
ships, and usher(8) renders without a warning."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN_PAGE = os.path.join(REPO, "conf", "usher.8")

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                reason="dpkg-deb missing (scripts/deps test installs dpkg-dev)")


def run(args, timeout=30, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def deb():
    """(path of the .deb, root it was extracted into), in one temporary directory."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb missing (scripts/deps test installs dpkg-dev)")
    tmp = tempfile.mkdtemp(prefix="usher-test-package-")
    try:
        r = run([os.path.join(REPO, "scripts", "package"), os.path.join(tmp, "out")], timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        path = r.stdout.strip().splitlines()[-1]
        assert os.path.isfile(path) and path.endswith(".deb"), r.stdout
        root = os.path.join(tmp, "root")
        x = run(["dpkg-deb", "-x", path, root])
        assert x.returncode == 0, x.stderr
        yield path, root
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def field(path, name):
    r = run(["dpkg-deb", "-f", path, name])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@needs_dpkg
def test_control_names_package_version_and_runtime_libraries(deb):
    path, root = deb
    assert field(path, "Package") == "usher"
    v = run([os.path.join(root, "usr", "bin", "usher"), "--version"])
    assert v.returncode == 0, v.stderr
    assert v.stdout.splitlines()[0] == "usher " + field(path, "Version")
    assert field(path, "Architecture") == run(["dpkg", "--print-architecture"]).stdout.strip()
    depends = field(path, "Depends")
    for lib in ("libev4", "libssl3", "libyaml-0-2", "libc-ares2", "libjansson4", "libsystemd0", "libc6"):
        assert lib in depends, depends
    # an edited /etc/usher/usher.yaml survives an upgrade
    info = run(["dpkg-deb", "--info", path, "conffiles"])
    assert info.stdout.split() == ["/etc/usher/usher.yaml"], info.stdout


@needs_dpkg
def test_package_holds_binary_units_configs_and_man_page(deb):
    path, root = deb
    for rel in ("usr/bin/usher", "etc/usher/usher.yaml",
                "usr/lib/systemd/system/usher.service", "usr/lib/systemd/system/usher.socket",
                "usr/share/man/man8/usher.8.gz",
                "usr/share/doc/usher/examples/usher.yaml",
                "usr/share/doc/usher/examples/demo.yaml",
                "usr/share/doc/usher/examples/container.yaml"):
        assert os.path.isfile(os.path.join(root, rel)), rel
    assert os.access(os.path.join(root, "usr/bin/usher"), os.X_OK)
    listing = run(["dpkg-deb", "-c", path]).stdout
    for line in listing.splitlines():
        assert " root/root " in line, line  # owned by root whoever built it


@needs_dpkg
@pytest.mark.parametrize("config", ["etc/usher/usher.yaml",
                                    "usr/share/doc/usher/examples/usher.yaml",
                                    "usr/share/doc/usher/examples/demo.yaml",
                                    "usr/share/doc/usher/examples/container.yaml"])
def test_packaged_binary_checks_packaged_config(deb, config):
    """-t binds nothing, so the configs' ports may be in use; run from the
    extracted root so that relative paths resolve as they would there."""
    _, root = deb
    r = run([os.path.join(root, "usr", "bin", "usher"), "-t", "-c", os.path.join(root, config)],
            cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "configuration ok", r.stdout + r.stderr


@needs_dpkg
def test_units_point_at_the_packaged_binary_and_config(deb):
    _, root = deb
    with open(os.path.join(root, "usr/lib/systemd/system/usher.service")) as f:
        unit = f.read()
    execs = [l.split("=", 1)[1] for l in unit.splitlines() if l.startswith(("ExecStart", "ExecReload"))]
    assert execs, unit
    assert "/usr/local/" not in unit, unit
    for cmd in execs:
        argv = cmd.split()
        if argv[0].endswith("/usher"):
            assert argv[0] == "/usr/bin/usher", cmd
            assert os.access(os.path.join(root, argv[0].lstrip("/")), os.X_OK), cmd
            if "-c" in argv:
                assert argv[argv.index("-c") + 1] == "/etc/usher/usher.yaml", cmd
    with open(os.path.join(root, "usr/lib/systemd/system/usher.socket")) as f:
        sock = f.read()
    assert "FileDescriptorName=web" in sock and "ListenStream=" in sock, sock


def man_warnings(path):
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    r = run(["man", "--warnings", "-l", path], env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff missing (groff-base)")
def test_man_page_source_has_no_groff_warning():
    r = run(["groff", "-ww", "-man", "-z", MAN_PAGE])
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man missing (man-db)")
def test_man_page_renders_without_warning_and_covers_the_contract():
    out, err = man_warnings(MAN_PAGE)
    assert err == "", err
    for word in ("usher -c", "usher -t -c", "usher ctl", "--version", "--help",
                 "SIGTERM", "SIGINT", "SIGHUP", "SIGUSR2", "SIGPIPE", "EXIT STATUS",
                 "FILES", "/etc/usher/usher.yaml", "configuration ok"):
        assert word in out, word
    # every exit code of DESIGN "Exit codes"
    status = out.split("EXIT STATUS", 1)[1].split("ENVIRONMENT", 1)[0]
    for code in ("0", "1", "2"):
        assert re.search(r"^\s+%s(\s|$)" % code, status, re.M), status


@needs_dpkg
@pytest.mark.skipif(shutil.which("man") is None, reason="man missing (man-db)")
def test_packaged_man_page_renders_without_warning(deb):
    _, root = deb
    out, err = man_warnings(os.path.join(root, "usr/share/man/man8/usher.8.gz"))
    assert err == "" and "usher" in out, err


def dockerfile_stages():
    """[(FROM line, [instruction lines])] of the Dockerfile, continuations joined."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append((line, []))
        else:
            stages[-1][1].append(line)
    return stages


def test_dockerfile_is_consistent_with_the_tree_and_the_package():
    """No image can be built here (no registry access): this checks what can
    be checked without docker. The build stage installs through scripts/deps,
    the runtime stage is bookworm-slim with the .deb's runtime libraries, a
    numeric non-root USER, the config and the HEALTHCHECK on /live; every
    file COPY takes from the context exists, and the config it ships loads."""
    stages = dockerfile_stages()
    assert len(stages) == 2, stages
    (build_from, build), (run_from, runtime) = stages
    assert build_from.split()[1] == "debian:bookworm", build_from
    assert run_from.split()[1] == "debian:bookworm-slim", run_from
    assert any("scripts/deps build" in l for l in build), build
    installs = " ".join(l for l in runtime if "apt-get install" in l)
    for pkg in ("libev4", "libssl3", "libyaml-0-2", "libc-ares2", "libjansson4", "libsystemd0", "curl"):
        assert pkg in installs.split(), installs
    assert not any(w.endswith("-dev") for w in installs.split()), installs
    user = [l.split()[1] for l in runtime if l.startswith("USER ")]
    assert user and not user[-1].split(":")[0] in ("0", "root"), user
    assert any(l.startswith("EXPOSE ") and {"8080", "9901"} <= set(l.split()[1:]) for l in runtime)
    health = [l for l in runtime if l.startswith("HEALTHCHECK ")]
    assert health and "/live" in health[0] and "curl" in health[0], health
    copies = [l.split()[1:] for _, st in stages for l in st if l.startswith("COPY ")]
    for args in copies:
        if args[0].startswith("--from"):
            continue
        for src in args[:-1]:
            if src != ".":
                assert os.path.exists(os.path.join(REPO, src)), src
    conf_copy = [a for a in copies if a[-1] == "/etc/usher/usher.yaml"]
    assert conf_copy, copies
    usher_bin = os.environ.get("USHER_BIN", os.path.join(REPO, "build", "usher"))
    if os.access(usher_bin, os.X_OK):
        r = run([usher_bin, "-t", "-c", os.path.join(REPO, conf_copy[0][0])])
        assert r.returncode == 0 and r.stdout.strip() == "configuration ok", r.stdout + r.stderr
