"""Real signals (os.kill) on a real `featx` process: SIGTERM and SIGINT stop joblib's worker processes with the
command, and the one line it prints says what was kept and whether a re-run resumes (issue 24 items 26, 27)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featx.data.synth import synthesize

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

# the console script's entry point (it turns SIGTERM into an interrupt), run by this interpreter
CLI = "import sys; from featx.cli import main; sys.argv[0] = 'featx'; main()"
COMPARE_LINE = ("compare keeps nothing of an unfinished run (it writes its results once every model is fitted); "
                "run the same command again to start over")


@pytest.fixture(scope="module")
def store(cnn_store) -> Path:
    """conftest's shared cnn store of the tiny C-NMC tree (32 px, seed 0; read-only)."""
    return cnn_store


def _start(args, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """``featx ARGS`` in its own session, stdout and stderr to files (a worker that outlives the command would
    hold a pipe open)."""
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], stdout=out, stderr=err, env=env,
                                start_new_session=True)
    return proc, stdout, stderr


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _loky_workers(pid: int) -> list[int]:
    return [p for p in _children(pid) if "LokyProcess" in _cmdline(p)]


def _alive(pids) -> list[int]:
    """Those of ``pids`` that still run (a zombie has stopped)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout} s")


def _stop(proc: subprocess.Popen, pids) -> None:
    """Whatever a failed test left running: the command and the processes it started."""
    for pid in [proc.pid, *_alive(pids)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.mark.parametrize("sig, code, word, group", [(signal.SIGTERM, 143, "terminated", False),
                                                    (signal.SIGINT, 130, "interrupted", False),
                                                    (signal.SIGINT, 130, "interrupted", True)],
                         ids=["SIGTERM", "SIGINT", "Ctrl-C to the process group"])
def test_a_signal_during_compare_stops_its_workers_and_says_nothing_was_kept(store, tmp_path, sig, code, word,
                                                                             group):
    """``group``: the signal goes to the whole process group, as a terminal sends Ctrl-C (the workers get it too
    and must not print tracebacks of their own)."""
    # a nested search long enough to be running when the signal comes (minutes), on 2 loky workers
    out = tmp_path / "results"
    proc, _, stderr = _start(["compare", store, "--heads", "logistic", "--search", "random", "--param",
                              "C=1e-3:1e3", "--n-iter", "100000", "--folds", "3", "--jobs", "2", "--no-plots",
                              "--out", out], tmp_path)
    started: list[int] = []
    try:
        workers = _wait(lambda: w if len(w := _loky_workers(proc.pid)) >= 2 else None, 120, "2 loky workers")
        time.sleep(1.0)  # the workers are fitting
        started = _children(proc.pid)  # the workers and the resource trackers
        assert set(workers) <= set(started) and proc.poll() is None
        (os.killpg if group else os.kill)(proc.pid, sig)  # its own session: the group's id is its pid
        rc = proc.wait(timeout=60)
        # the workers used to stay, re-parented, until loky's 300 s idle timeout
        left = _alive(started)
        deadline = time.monotonic() + 15
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = _alive(started)
    finally:
        _stop(proc, started)
    assert left == [], [_cmdline(p) for p in left]
    assert rc == code
    # one line (no traceback, no "leaked semaphore" warning of a resource tracker), read once every child is gone
    assert stderr.read_text().strip().splitlines() == [f"{word}: {COMPARE_LINE}"]
    assert not (out / "results.json").exists()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """240 training images: an epoch of the cnn at 192 px takes seconds."""
    root = tmp_path_factory.mktemp("interrupt_tree") / "cnmc"
    synthesize(root, subjects_all=3, subjects_hem=3, cells_per_subject=40, prelim_subjects_all=1,
               prelim_subjects_hem=1, prelim_cells_per_subject=2, final_cells=2, image_size=48, seed=0)
    return root


def test_sigint_in_the_first_epoch_of_finetune_says_nothing_was_kept_and_a_rerun_starts_over(tree, tmp_path):
    out = tmp_path / "run"
    proc, stdout, stderr = _start(["finetune", tree, "--backbone", "cnn", "--weights", "none", "--image-size", "192",
                                   "--epochs", "3", "--batch-size", "4", "--workers", "2", "--device", "cpu",
                                   "--quiet", "--out", out], tmp_path)
    started: list[int] = []
    try:
        _wait(lambda: "fine-tuning cnn" in stdout.read_text(), 180, "start line")
        time.sleep(1.0)
        started = _children(proc.pid)  # decode workers
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=60)
        _wait(lambda: not _alive(started) or None, 15, "exit of the decode workers")
    finally:
        _stop(proc, started)
    # the signal came during epoch 1: no epoch line was printed
    assert not [line for line in stdout.read_text().splitlines() if line.startswith("epoch ")], stdout.read_text()
    assert rc == 130
    assert stderr.read_text().strip().splitlines() == [
        "interrupted: no epoch was saved, so nothing of this run was kept; run the same command again to start over"]
    assert not out.exists()
