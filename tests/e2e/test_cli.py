#!/usr/bin/env python3
"""The command line as a whole: every subcommand has --help, and the
man page documents every subcommand and renders without warnings.

Run: tests/e2e/test_cli.py help   (BEAMFLEET_BIN=build/beamfleet)
"""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fleet import Fleet, main  # noqa: E402

MAN = os.path.join(HERE, "..", "..", "docs", "beamfleet.1")


def commands(fleet):
    r = fleet.cli("--help")
    names = re.findall(r"^  ([a-z]+) ", r.stdout, re.M)
    assert len(names) >= 12, r.stdout
    return names


def test_help(fleet: Fleet):
    for name in commands(fleet):
        r = fleet.cli(name, "--help")
        assert r.stdout.startswith(f"usage: beamfleet {name}"), (name, r.stdout[:200])
        assert not r.stderr, (name, r.stderr)
        r = fleet.cli(name, "--no-such-flag", check=False, timeout=20)
        assert r.returncode == 2 and "--no-such-flag" in r.stderr and \
            len(r.stderr.strip().splitlines()) == 1, (name, r.returncode, r.stderr)
    r = fleet.cli("no-such-command", check=False)
    assert r.returncode == 2 and "no-such-command" in r.stderr, r.stderr


def test_man_page(fleet: Fleet):
    text = open(MAN).read()
    for name in commands(fleet):
        assert re.search(rf"^\.B(?:R)? (?:beamfleet )?{name}\b", text, re.M), f"{name} missing from the man page"
        assert f".B {name}\n" in text, f"no COMMANDS entry for {name}"
    if not shutil.which("groff"):
        print("groff not installed: rendering not checked")
        return
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", MAN], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = subprocess.run(["groff", "-man", "-Tutf8", MAN], capture_output=True, text=True)
    assert "beamfleet keygen" in re.sub(r".\x08", "", r.stdout), "rendered page lacks keygen"


TESTS = {"help": test_help, "man_page": test_man_page}

if __name__ == "__main__":
    main(TESTS)
