"""The command line (DESIGN "Command line"): --help names every flag and
ctl, --version the commit and the linked libraries, a bad argument is
named."""

import re
import subprocess


def run(usher_bin, *args):
    return subprocess.run([usher_bin] + list(args), capture_output=True, text=True, timeout=10)


def test_help_lists_every_flag(usher_bin):
    for flag in ("--help", "-h"):
        r = run(usher_bin, flag)
        assert r.returncode == 0 and r.stderr == ""
        for word in ("-c, --config FILE", "-t, --test", "--version", "--help", "usher ctl",
                     "--admin HOST:PORT", "--token-file"):
            assert word in r.stdout, (word, r.stdout)


def test_version_names_commit_and_libraries(usher_bin):
    r = run(usher_bin, "--version")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"usher \d+\.\d+\.\d+", lines[0]), lines
    assert re.fullmatch(r"commit (unknown|\S+)", lines[1]), lines
    assert re.fullmatch(r"libev \d+\.\d+", lines[2]), lines
    assert re.fullmatch(r"OpenSSL \d+\.\d+\.\d+.*", lines[3]), lines
    assert re.fullmatch(r"libyaml \d+\.\d+\.\d+", lines[4]), lines
    assert re.fullmatch(r"c-ares \d+\.\d+\.\d+", lines[5]), lines
    assert run(usher_bin, "-V").stdout == r.stdout


def test_unexpected_argument_is_named(usher_bin, tmp_path):
    cfg = tmp_path / "u.yaml"
    cfg.write_text("listeners: []\n")
    r = run(usher_bin, "-c", str(cfg), "stray-arg")
    assert r.returncode == 2
    assert r.stderr.startswith("usher: unexpected argument 'stray-arg'\n"), r.stderr
    assert "usage:" in r.stderr


def test_unknown_option_and_missing_config(usher_bin):
    r = run(usher_bin, "--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr and "usage:" in r.stderr
    r = run(usher_bin)
    assert r.returncode == 2 and r.stderr.startswith("usher: missing -c FILE\n")
