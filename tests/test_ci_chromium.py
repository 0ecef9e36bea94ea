"""`make test` (and .ci/run) makes headless Chromium available to the report's browser test: installed when absent
and root, a note saying why the test will be skipped otherwise, nothing when a browser is there."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure_chromium.sh"


def _run(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(SCRIPT)], env={"PATH": path}, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_test_ensures_chromium_before_pytest():
    plan = subprocess.run(["make", "-n", "test", "STAMP=Makefile"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout.splitlines()
    ensure = next(i for i, line in enumerate(plan) if "scripts/ensure_chromium.sh" in line)
    assert ensure < next(i for i, line in enumerate(plan) if "pytest" in line)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_nothing_is_done_when_a_browser_is_on_path(tmp_path):
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "chromium").chmod(0o755)
    (tmp_path / "apt-get").write_text(f"#!/bin/sh\ntouch {tmp_path}/apt-ran\n")   # must not run
    (tmp_path / "apt-get").chmod(0o755)
    for _ in range(2):   # idempotent
        done = _run(str(tmp_path))
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not (tmp_path / "apt-ran").exists()


@pytest.mark.parametrize("uid, apt, says", [("1000", True, "not root"), ("0", False, "no apt-get")])
def test_without_a_browser_it_says_why_the_test_is_skipped(tmp_path, uid, apt, says):
    (tmp_path / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (tmp_path / "id").chmod(0o755)
    if apt:
        (tmp_path / "apt-get").write_text(f"#!/bin/sh\ntouch {tmp_path}/apt-ran\n")
        (tmp_path / "apt-get").chmod(0o755)
    done = _run(str(tmp_path))
    assert done.returncode == 0 and says in done.stderr and "will be skipped" in done.stderr
    assert not (tmp_path / "apt-ran").exists()


def test_as_root_with_apt_it_installs_debians_chromium(tmp_path):
    (tmp_path / "id").write_text("#!/bin/sh\necho 0\n")
    (tmp_path / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/apt-calls\n")
    for tool in ("id", "apt-get"):
        (tmp_path / tool).chmod(0o755)
    done = _run(str(tmp_path))
    assert done.returncode == 0 and "installing Debian's chromium" in done.stderr
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    assert calls[0].split()[0] == "update"
    assert calls[1].split()[:2] == ["install", "-y"] and calls[1].endswith("chromium")
