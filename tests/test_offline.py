"""Honest defaults offline: the missing-weights message offers every way out, --preset paper from random
weights warns, a failed run leaves no empty folder (and keeps finished epochs), --keep best|last|both."""
from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import h5py
import pytest
import torch
from cli_helpers import invoke

from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.finetune import finetune, preset_warning, resolve_settings
from featx.results import read_json
from featx.workflows.hybrid import hybrid

# tiny and fast: the cnn from scratch at 32 px, validating on fold_2, no worker processes
TINY = dict(backbone="cnn", weights="none", image_size=32, batch_size=8, val="fold_2", workers=0, device="cpu",
            seed=0)
CLI_TINY = ["--backbone", "cnn", "--image-size", "32", "--batch-size", "8", "--val", "fold_2", "--workers", "0",
            "--device", "cpu", "-q"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """3 ALL + 3 HEM training subjects x 3 cells (one subject of each class per fold), 32 px."""
    root = tmp_path_factory.mktemp("cnmc") / "data"
    synthesize(root, subjects_all=3, subjects_hem=3, cells_per_subject=3, prelim_subjects_all=1,
               prelim_subjects_hem=1, prelim_cells_per_subject=2, final_cells=2, image_size=32, seed=0)
    return root


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty torch cache and no download attempt; returns the cache folder the message must name."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    return home / "hub" / "checkpoints"


# ------------------------------------------------------------------------------- 1. the weights message

@pytest.mark.parametrize("command", [["extract", "--out", "{tmp}/new/feats/x.h5"],
                                     ["finetune", "--out", "{tmp}/new/runs/a"],
                                     ["hybrid", "--folds", "3", "--out", "{tmp}/new/runs/h"]])
def test_missing_imagenet_weights_is_one_line_with_every_way_out(tree, tmp_path, offline, command):
    args = [a.format(tmp=tmp_path) for a in command]
    result, _ = invoke(args[0], tree, *args[1:], "--backbone", "alexnet", "--image-size", "64", "--workers", "0",
                       "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1  # one line (hybrid prints its fold's start line before it)
    if args[0] != "hybrid":
        assert result.output.strip() == errors[0]
    line = errors[0]
    assert "alexnet-owt-7be5be79.pth" in line and str(offline.resolve()) in line  # the exact file and folder
    assert "--weights none" in line and "TORCH_HOME" in line and "--weights PATH" in line
    assert "weights=" not in line  # the CLI spells arguments as flags
    assert not (tmp_path / "new").exists()  # no folder left behind


def test_missing_weights_message_in_python_terms(offline):
    from featx.backbones import create_backbone

    with pytest.raises(FeatxError) as info:
        create_backbone("alexnet", "imagenet")
    message = str(info.value)
    assert "weights='none'" in message and "weights='PATH'" in message and "$TORCH_HOME/hub/checkpoints" in message
    assert "alexnet-owt-7be5be79.pth" in message and str(offline.resolve()) in message
    assert "\n" not in message


# ------------------------------------------------------------------- 2. --preset paper from random weights

def test_preset_warning_names_the_cause_and_the_fixes():
    vgg = preset_warning("vgg16", resolve_settings("vgg16", "paper", weights="none"))
    text = str(FeatxError(vgg))
    assert "ImageNet" in text and "lr 1e-05" in text and "15 epochs" in text
    assert "weights='imagenet'" in text and "drop preset" in text
    cnn = str(FeatxError(preset_warning("cnn", resolve_settings("cnn", "paper"))))
    assert "cnn has no ImageNet weights" in cnn and "weights='imagenet'" not in cnn
    # no warning for the study's own setting, an explicit lr, a checkpoint start, or without the preset
    assert preset_warning("vgg16", resolve_settings("vgg16", "paper")) is None
    assert preset_warning("cnn", resolve_settings("cnn", "paper", lr=1e-3)) is None
    assert preset_warning("vgg16", resolve_settings("vgg16", "paper", weights="run/best.pt")) is None
    assert preset_warning("cnn", resolve_settings("cnn", None)) is None


@pytest.mark.slow
def test_paper_preset_from_scratch_warns_before_training_and_records_it(tree, tmp_path):
    events = []
    finetune(tree, tmp_path / "cb", preset="paper", epochs=1, keep="best",
             callback=lambda kind, info: events.append((kind, info)), **TINY)
    kinds = [k for k, _ in events]
    assert kinds[0] == "warning" and kinds[1] == "start"  # before the first step
    assert "\u27e6preset\u27e7" in events[0][1]["template"] and "weights='none'" in events[0][1]["message"]
    settings = json.loads((tmp_path / "cb" / "settings.json").read_text())
    assert settings["warning"] == events[0][1]["message"]
    row = read_json(tmp_path / "cb" / "results.json")[0]
    assert "ImageNet" in row.settings["warning"]  # the result row says so too
    # without a callback: Python's warnings
    with pytest.warns(UserWarning, match=r"preset paper from random weights .*will not learn in 1 epoch "):
        finetune(tree, tmp_path / "py", preset="paper", epochs=1, **TINY)
    # an explicit learning rate: the caller chose it, no warning and none recorded
    events.clear()
    finetune(tree, tmp_path / "lr", preset="paper", epochs=1, lr=1e-3,
             callback=lambda kind, info: events.append((kind, info)), **TINY)
    assert "warning" not in [k for k, _ in events]
    assert "warning" not in json.loads((tmp_path / "lr" / "settings.json").read_text())


def test_cli_paper_preset_warning_is_a_yellow_line_before_training(tree, tmp_path):
    result, text = invoke("finetune", tree, "--preset", "paper", "--weights", "none", "--epochs", "1", *CLI_TINY,
                          "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "warning: preset paper from random weights (--weights none)" in text
    assert "drop --preset" in text and "--lr" in text and "weights=" not in text
    assert text.index("warning:") < text.index("epoch 1")


def test_hybrid_paper_preset_warns_and_a_failed_start_leaves_no_folder(tree, tmp_path):
    events = []

    def stop_at_first_fold(kind, info):
        events.append(kind)
        if kind == "fold":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hybrid(tree, tmp_path / "h", backbone="cnn", heads=["logistic"], n_folds=3, preset="paper", image_size=32,
               epochs=1, device="cpu", workers=0, callback=stop_at_first_fold)
    assert events[:2] == ["warning", "fold"]
    assert not (tmp_path / "h").exists()  # interrupted before any fold work: no folder left
    # the CLI: the warning as a yellow line, then a setting refused in fold 1: one error line, no folder
    result, text = invoke("hybrid", tree, "--backbone", "cnn", "--heads", "logistic", "--folds", "3", "--preset",
                          "paper", "--image-size", "32", "--epochs", "1", "--freeze", "conv9", "--workers", "0",
                          "--device", "cpu", "--out", tmp_path / "cli")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "warning: preset paper from random weights" in text and "error: --freeze conv9" in text
    assert text.index("warning:") < text.index("error:")
    assert not (tmp_path / "cli").exists()


# ---------------------------------------------------------------------- 3. failed runs and their folders

@pytest.mark.slow
def test_disk_full_in_epoch_2_keeps_epoch_1_and_resumes(tree, tmp_path, monkeypatch):
    """A real fault: the second epoch's checkpoint write fails with ENOSPC."""
    real = torch.save

    def full_disk_in_epoch_2(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("card", {}).get("epoch") == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(obj, path, *args, **kwargs)

    out = tmp_path / "run"
    opts = dict(TINY, epochs=2, keep="best")
    monkeypatch.setattr(torch, "save", full_disk_in_epoch_2)
    kept = r"^disk full while writing \S+/best\.pt; \S+ keeps last.pt of epoch 1, best.pt of epoch 1; "
    with pytest.raises(FeatxError, match=kept):
        finetune(tree, out, **opts)
    monkeypatch.setattr(torch, "save", real)
    # the folder stays with epoch 1's work, and nothing half-written
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and not last["finished"]
    assert (out / "best.pt").is_file() and (out / "settings.json").is_file() and not list(out.glob("*.tmp"))
    assert not (out / "results.json").exists()
    with pytest.raises(FeatxError, match="resume=True"):
        finetune(tree, out, **opts)  # the same call without resume refuses, saying how to continue
    summary = finetune(tree, out, resume=True, **opts)
    assert summary["epochs_run"] == 2 and [h["epoch"] for h in summary["history_rows"]] == [1, 2]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt"]


def test_cli_missing_weights_in_an_existing_folder_keeps_the_folder_and_its_files(tree, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("user file")
    result, text = invoke("finetune", tree, "--weights", tmp_path / "nope.pt", *CLI_TINY, "--out", mine)
    assert result.exit_code == 1 and "nope.pt" in text
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------------------------- 4. --keep

@pytest.mark.parametrize("keep, files", [("best", ["best.pt"]),
                                         pytest.param("last", ["last.pt"], marks=pytest.mark.slow),
                                         pytest.param("both", ["best.pt", "last.pt"], marks=pytest.mark.slow)])
def test_keep_leaves_the_named_checkpoints_and_extract_reads_them(tree, tmp_path, keep, files):
    from featx.extract import extract

    out = tmp_path / "run"
    summary = finetune(tree, out, epochs=2, keep=keep, **TINY)
    assert sorted(p.name for p in out.glob("*.pt")) == files
    assert (summary["best"] is not None) == ("best.pt" in files) and (summary["last"] is not None) == (
        "last.pt" in files)
    assert json.loads((out / "settings.json").read_text())["keep"] == keep
    again = finetune(tree, out, epochs=2, keep=keep, resume=True, **TINY)  # a finished run: reported, not retrained
    assert again["already_finished"] and again["row"] == summary["row"]
    assert sorted(p.name for p in out.glob("*.pt")) == files
    assert [again[k] for k in ("best", "last")] == [summary[k] for k in ("best", "last")]
    kept = out / files[0]
    store = extract(tree, tmp_path / "t.h5", backbone="cnn", weights=kept, taps="fc", device="cpu", workers=0)
    with h5py.File(store) as f:
        assert f["features/fc"].shape[1] == 128 and Path(f.attrs["weights"]) == kept.resolve()


@pytest.mark.slow
def test_a_finished_run_is_never_trained_over_and_resume_reports_it(tree, tmp_path):
    out = tmp_path / "run"
    first = finetune(tree, out, epochs=2, **TINY)  # default keep: best
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt"]
    best_bytes = (out / "best.pt").read_bytes()
    with pytest.raises(FeatxError, match=r"holds a finished run .*best\.pt.*resume=True"):
        finetune(tree, out, epochs=2, **TINY)
    with pytest.raises(FeatxError, match="'epochs'"):
        finetune(tree, out, epochs=3, resume=True, **TINY)  # other settings are refused as for any resume
    events = []
    again = finetune(tree, out, epochs=2, resume=True, callback=lambda kind, info: events.append(kind), **TINY)
    assert events == ["end"]  # nothing trained
    assert again["already_finished"] and again["row"] == first["row"] and again["epochs_run"] == 2
    assert again["history_rows"] == [{k: float(v) if k != "epoch" else v for k, v in h.items()}
                                     for h in first["history_rows"]]
    assert (out / "best.pt").read_bytes() == best_bytes
    # the CLI says so, and the `featx finetune ... --resume` a script runs twice works
    result, text = invoke("finetune", tree, "--weights", "none", "--epochs", "2", "--seed", "0", *CLI_TINY,
                          "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "finished earlier" in text and "epoch 1 " not in text
    assert re.search(r"scored epoch 2 of 2; best\.pt holds (the same epoch|epoch 1) \(the weights extract", text)
    assert "best.pt, history.csv" in text and "last.pt" not in text
