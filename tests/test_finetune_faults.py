"""kill -9 at several points of `featx finetune`: the next run either resumes to the uninterrupted result or
refuses in one line, and no checkpoint is ever left half-written."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from disk_helpers import tmpfs_mounter

from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.finetune import finetune

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

OPTS = dict(backbone="cnn", weights="none", image_size=32, epochs=3, lr=1e-3, batch_size=8, dropout=0.3,
            augment=True, schedule="cosine", optimizer="adamw", seed=3, workers=0, device="cpu", val="fold_2",
            keep="both")

# Runs finetune in a fresh interpreter (one torch thread, like the reference) and SIGKILLs itself at KILL:
# ("batch", epoch, step), ("epoch", epoch) right after last.pt is written, or ("save", n): inside the n-th
# checkpoint save, after the temporary file is half written and before it replaces the checkpoint.
DRIVER = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
import featx.finetune as ft
data, out = sys.argv[1], sys.argv[2]
opts, kill, resume = json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5] == "1"

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kill and kill[0] == "save":
    real, calls = torch.save, []
    def save(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == kill[1]:
            real(obj, f, *a, **k)
            if hasattr(f, "flush"):  # featx saves through an open file
                f.flush()
            path = getattr(f, "name", f)
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) // 2)
            die()
        return real(obj, f, *a, **k)
    torch.save = save

def callback(event, info):
    if not kill:
        return
    if kill[0] == "batch" and event == "batch" and [info["epoch"], info["step"]] == kill[1:]:
        die()
    if kill[0] == "epoch" and event == "epoch" and info["epoch"] == kill[1]:
        die()

ft.finetune(data, out, callback=callback, resume=resume, **opts)
"""


def _run(tree: Path, out: Path, kill=None, resume: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, str(tree), str(out), json.dumps(OPTS), json.dumps(kill),
                           "1" if resume else "0"], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cnmc") / "data"
    synthesize(root, subjects_all=3, subjects_hem=3, cells_per_subject=4, prelim_subjects_all=1,
               prelim_subjects_hem=1, prelim_cells_per_subject=2, final_cells=2, image_size=40, seed=0)
    return root


@pytest.fixture(scope="module")
def reference_run(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    done = _run(tree, out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def reference(reference_run) -> dict:
    return torch.load(reference_run / "last.pt", map_location="cpu", weights_only=True)


def _assert_equal_runs(out: Path, reference: dict) -> None:
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == reference["epoch"] == OPTS["epochs"] and last["finished"]
    for key, value in reference["model"].items():
        assert torch.equal(last["model"][key], value), key
    assert [h["train_loss"] for h in last["history"]] == [h["train_loss"] for h in reference["history"]]
    assert not list(out.glob("*.tmp"))
    assert json.loads((out / "results.json").read_text())  # the run's outputs were written


@pytest.mark.parametrize("kill", [("batch", 2, 1), ("epoch", 1), ("save", 3)],
                         ids=["mid-epoch-2", "after-epoch-1", "inside-a-checkpoint-save"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tree, reference, tmp_path, kill):
    out = tmp_path / "run"
    killed = _run(tree, out, list(kill))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # every checkpoint on disk is whole: last.pt loads (a half-written save never replaced it)
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert 1 <= last["epoch"] < OPTS["epochs"]
    # the same command without --resume refuses in one line, saying how to continue
    with pytest.raises(FeatxError, match="resume=True"):
        finetune(tree, out, **OPTS)
    resumed = _run(tree, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    _assert_equal_runs(out, reference)


def test_kill_9_before_the_first_checkpoint_then_the_same_command_starts_over(tree, reference, tmp_path):
    out = tmp_path / "run"
    killed = _run(tree, out, ["batch", 1, 1])
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    with pytest.raises(FeatxError, match="last.pt does not exist; run without resume=True"):
        finetune(tree, out, resume=True, **OPTS)
    again = _run(tree, out)
    assert again.returncode == 0, again.stderr
    _assert_equal_runs(out, reference)


# -- a real full disk ------------------------------------------------------------------------------------------
CLI_OPTS = ["--backbone", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "3", "--lr", "1e-3",
            "--batch-size", "8", "--dropout", "0.3", "--augment", "--schedule", "cosine", "--optimizer", "adamw",
            "--seed", "3", "--workers", "0", "--device", "cpu", "--val", "fold_2", "--keep", "both", "--quiet"]
# the CLI in a fresh interpreter with one torch thread, as DRIVER runs the reference
CLI = "import sys, torch; torch.set_num_threads(1); from featx.cli import main; sys.argv[0] = 'featx'; main()"


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size, remount=False)``: a tmpfs to size (root only); unmounted afterwards."""
    yield from tmpfs_mounter(tmp_path / "mnt")


def test_real_full_disk_in_a_checkpoint_save_is_one_line_and_the_run_resumes(tree, reference, reference_run, tmpfs):
    # room for epoch 1's best.pt and last.pt (and a new best.pt.tmp), not for epoch 2's last.pt.tmp beside them:
    # torch.save fails inside its zip writer (RuntimeError "[enforce fail at inline_container.cc] unexpected pos")
    best, last = ((reference_run / name).stat().st_size for name in ("best.pt", "last.pt"))
    mnt = tmpfs(best + last + last // 2)
    out = mnt / "run"
    done = subprocess.run([sys.executable, "-c", CLI, "finetune", str(tree), *CLI_OPTS, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    best_epoch = torch.load(out / "best.pt", map_location="cpu", weights_only=True)["card"]["epoch"]
    assert lines == [f"error: disk full while writing {out / 'last.pt'}; {out} keeps last.pt of epoch 1, best.pt of "
                     f"epoch {best_epoch}; free space, then run the same command with --resume (it resumes after "
                     "epoch 1)"], lines
    # what it says is kept is whole (best.pt: epoch 2 when epoch 2 improved, saved before last.pt), nothing
    # half-written is left
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=True)["epoch"] == 1
    assert best_epoch in (1, 2)
    assert not list(out.glob("*.tmp"))
    tmpfs(64 << 20, remount=True)  # the user frees space
    resumed = _run(tree, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    _assert_equal_runs(out, reference)


def test_real_full_disk_before_the_first_checkpoint_keeps_nothing_and_says_so(tree, tmpfs):
    mnt = tmpfs(64 << 10)  # the run's lists fit; not even best.pt does
    out = mnt / "run"
    with pytest.raises(FeatxError) as info:
        finetune(tree, out, **OPTS)
    assert str(info.value) == (f"disk full while writing {out / 'best.pt'}; no epoch was saved, so nothing of this "
                               "run was kept; free space, then run the same command again")
    assert not out.exists()
