"""featx.finetune: training works, resume is exact, best.pt feeds extract, the paper preset, errors, CLI."""
from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from featx.backbones import create_backbone
from featx.data import discover
from featx.data.images import ImageDataset, make_transform
from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.finetune import PRESETS, finetune, resolve_settings
from featx.finetune import split as ft_split
from featx.finetune.loop import Trainer
from featx.results import ResultRow

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

# small and fast: 32 px for cnn, 64 px for AlexNet (it needs >= 63), no worker processes unless tested
TINY = dict(workers=0, device="cpu", val="fold_2")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A tiny C-NMC tree: 4 ALL + 3 HEM training subjects x 6 cells, 64 px; prelim 3 subjects x 4 cells."""
    root = tmp_path_factory.mktemp("cnmc") / "data"
    synthesize(root, subjects_all=4, subjects_hem=3, cells_per_subject=6, prelim_subjects_all=2,
               prelim_subjects_hem=1, prelim_cells_per_subject=4, final_cells=3, image_size=64, seed=0)
    return root


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _train_accuracy(run: Path, data: Path, backbone: str, size: int, split_out: str = "fold_2") -> float:
    """Accuracy of the final network (last.pt) on the training images (eval mode, no augmentation)."""
    network = create_backbone(backbone, run / "last.pt")
    col = discover(data)
    idx = [i for i, s in enumerate(col.samples)
           if s.label is not None and s.split not in ("prelim", "final", split_out)]
    ds = ImageDataset(col, make_transform(size, network.config.mean, network.config.std), indices=idx)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([network.classes.index(col.samples[i].label) for i in idx])
    with torch.no_grad():
        pred = network(x).argmax(1)
    return float((pred == y).float().mean())


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _chance(data: Path, split_out: str = "fold_2") -> float:
    """Accuracy of always predicting the majority class of the training images."""
    col = discover(data)
    labels = [s.label for s in col.samples if s.label and s.split not in ("prelim", "final", split_out)]
    return max(labels.count(c) for c in set(labels)) / len(labels)


def test_cnn_learns_and_writes_the_run_folder(tree, tmp_path):
    run = tmp_path / "cnn"
    events = []
    rng_before = torch.get_rng_state()
    summary = finetune(tree, run, backbone="cnn", weights="none", image_size=32, epochs=6, lr=3e-3,
                       batch_size=8, dropout=0.0, augment=False, schedule="none", seed=0, keep="both",
                       callback=lambda e, info: events.append(e), **TINY)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left as it was
    assert not torch.are_deterministic_algorithms_enabled()
    hist = _history(run)
    assert [int(r["epoch"]) for r in hist] == [1, 2, 3, 4, 5, 6]
    assert set(hist[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert float(hist[-1]["train_loss"]) < 0.7 * float(hist[0]["train_loss"])
    assert _train_accuracy(run, tree, "cnn", 32) > _chance(tree) + 0.1
    # every output of the run folder is there and well formed
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "confusion.png", "results.json",
                 "results.md", "settings.json", "card.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((run / "results.json").read_text())
    rows = [ResultRow.from_dict(r) for r in (rows["rows"] if isinstance(rows, dict) else rows)]
    # results.json round-trips the run's result row (its predictions go to predictions/<row>.csv)
    assert len(rows) == 1 and rows[0] == dataclasses.replace(summary["row"], predictions=None)
    row = rows[0]
    assert row.head is None and row.tap == "logits" and row.backbone == "cnn"
    assert row.n_test == summary["row"].n_test == sum(np.sum(row.confusion, axis=1))
    assert 0.0 <= row.mean("accuracy") <= 1.0 and "f1_weighted" in row.scores
    assert row.scores["accuracy"].std is None  # one validation set: no spread over folds
    # checkpoints: plain data only, the documented card
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert best["featx_checkpoint"] == 1 and best["backbone"] == "cnn" and best["classes"] == ["all", "hem"]
    card = best["card"]
    assert card["preprocessing"]["input_size"] == 32 and len(card["preprocessing"]["mean"]) == 3
    assert card["positive"] == "all" and card["epoch"] == summary["best_epoch"]
    assert card["settings"]["lr"] == 3e-3 and "accuracy" in card["metrics"]
    # a fixed-length run reports its last epoch, not the epoch picked on the set it is scored on
    assert row.scored_epoch == row.epochs_run == last["card"]["epoch"]
    assert row.mean("accuracy") == pytest.approx(last["card"]["metrics"]["accuracy"])
    assert row.name == "cnn fine-tuned" and row.selection.startswith("last epoch")
    assert last["epoch"] == 6 and {"optimizer", "scheduler", "scaler", "rng"} <= set(last)
    assert not list(run.glob("*.tmp"))
    assert events[0] == "start" and events[-1] == "end" and events.count("epoch") == 6


def test_alexnet_learns_at_64px(tree, tmp_path):
    run = tmp_path / "alexnet"
    # plain SGD keeps the steps and last.pt of this 57M-parameter network cheap on the CPU
    finetune(tree, run, backbone="alexnet", weights="none", image_size=64, epochs=4, optimizer="sgd", lr=0.1,
             momentum=0.0, weight_decay=0.0, batch_size=8, dropout=0.0, augment=False, schedule="none", seed=0,
             keep="last", **TINY)
    losses = [float(r["train_loss"]) for r in _history(run)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert _train_accuracy(run, tree, "alexnet", 64) > _chance(tree) + 0.1


def _final_state(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)


def test_resume_after_interruption_equals_uninterrupted_run(tree, tmp_path):
    opts = dict(backbone="cnn", weights="none", image_size=32, epochs=3, lr=1e-3, batch_size=8, dropout=0.3,
                augment=True, schedule="cosine", optimizer="adamw", seed=3, workers=0, device="cpu", val="fold_2",
                keep="last")
    finetune(tree, tmp_path / "full", **opts)

    def stop_after_first_epoch(event, info):
        if event == "epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tree, tmp_path / "cut", callback=stop_after_first_epoch, **opts)
    assert _final_state(tmp_path / "cut")["epoch"] == 1
    torch.manual_seed(12345)  # the resumed run must not depend on the caller's RNG
    finetune(tree, tmp_path / "cut", resume=True, **opts)

    full, cut = _final_state(tmp_path / "full"), _final_state(tmp_path / "cut")
    assert cut["epoch"] == full["epoch"] == 3
    assert full["model"].keys() == cut["model"].keys()
    for key in full["model"]:
        assert torch.equal(full["model"][key], cut["model"][key]), key
    assert _history(tmp_path / "full")[-1]["train_loss"] == _history(tmp_path / "cut")[-1]["train_loss"]

    with pytest.raises(FeatxError, match="'lr'"):
        finetune(tree, tmp_path / "cut", resume=True, **dict(opts, lr=1e-2))
    with pytest.raises(FeatxError, match="resume=True"):
        finetune(tree, tmp_path / "full", **opts)
    with pytest.raises(FeatxError, match="last.pt does not exist"):
        finetune(tree, tmp_path / "nothing", resume=True, **opts)


def test_best_checkpoint_feeds_extract_with_tuned_features(tree, tmp_path):
    from featx.extract import extract

    run = tmp_path / "run"
    finetune(tree, run, backbone="cnn", weights="none", image_size=32, epochs=2, lr=3e-3, batch_size=8,
             seed=0, **TINY)
    common = dict(backbone="cnn", taps=["fc"], image_size=32, device="cpu", workers=0)
    tuned = extract(tree, tmp_path / "tuned.h5", weights=run / "best.pt", **common)
    untuned = extract(tree, tmp_path / "untuned.h5", weights="none", seed=0, **common)  # fine-tuning's start
    with h5py.File(tuned) as a, h5py.File(untuned) as b:
        fa, fb = a["features/fc"][:], b["features/fc"][:]
        assert fa.shape == fb.shape == (len(discover(tree).samples), 128)
        assert Path(a.attrs["weights"]) == (run / "best.pt").resolve()
        assert a.attrs["weights_sha256"] != ""
    assert np.isfinite(fa).all()
    assert np.abs(fa - fb).mean() > 1e-3
    # without --image-size, the checkpoint's own input size is used (32 here, not the backbone's 224)
    again = extract(tree, tmp_path / "again.h5", weights=run / "best.pt", backbone="cnn", taps="fc", device="cpu",
                    workers=0)
    with h5py.File(again) as c:
        assert c.attrs["input_size"] == 32
        np.testing.assert_allclose(c["features/fc"][:], fa, rtol=1e-5, atol=1e-6)


def test_paper_preset_is_recorded_and_options_override_it(tree, tmp_path):
    s = resolve_settings("vgg16", "paper")
    assert (s["lr"], s["epochs"], s["optimizer"], s["image_size"], s["weights"]) == (1e-5, 15, "sgd", 224, "imagenet")
    assert s["momentum"] == 0.0 and s["dropout"] == 0.5 and s["schedule"] == "none"
    assert "Keras" in s["notes"]["momentum"]
    assert resolve_settings("cnn", "paper")["weights"] == "none"  # cnn has no ImageNet weights
    s = resolve_settings("alexnet", "paper", lr=1e-3, epochs=2, optimizer="adamw", image_size=96)
    assert (s["lr"], s["epochs"], s["optimizer"], s["image_size"]) == (1e-3, 2, "adamw", 96)
    assert s["sources"]["lr"] == "option" and s["sources"]["batch_size"] == "preset"
    default = resolve_settings("vgg16", None)
    assert default["optimizer"] == "adamw" and default["schedule"] == "cosine" and default["lr"] != 1e-5

    run = tmp_path / "paper"
    with pytest.warns(UserWarning, match="preset paper from random weights"):  # test_offline tests the warning
        finetune(tree, run, backbone="cnn", preset="paper", image_size=32, epochs=1, batch_size=16, **TINY)
    used = json.loads((run / "settings.json").read_text())
    assert used["preset"] == "paper" and used["lr"] == PRESETS["paper"]["lr"] and used["optimizer"] == "sgd"
    assert used["momentum"] == 0.0 and used["image_size"] == 32 and used["epochs"] == 1
    assert used["sources"]["image_size"] == "option" and used["sources"]["lr"] == "preset"
    card = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["card"]
    assert card["settings"]["preset"] == "paper" and card["settings"]["lr"] == 1e-5
    assert len(_history(run)) == 1


def test_subject_holdout_keeps_subjects_apart(tree, tmp_path):
    summary = finetune(tree, tmp_path / "r", backbone="cnn", weights="none", image_size=32, epochs=1,
                       batch_size=16, workers=0, device="cpu")  # default --val subject
    row = summary["row"]
    assert row.protocol == "1/5 of subjects" and row.image_level is False
    assert row.n_train + row.n_test == 7 * 6  # every training-fold image, prelim/final left out
    val_subjects = set(row.per_subject_accuracy)
    col = discover(tree)
    pool = [s for s in col.samples if s.split not in ("prelim", "final")]
    assert sum(1 for s in pool if s.subject in val_subjects) == row.n_test


def test_early_stopping_and_freeze(tree, tmp_path):
    # a learning rate too small to change any prediction: validation accuracy never improves after epoch 1
    summary = finetune(tree, tmp_path / "stop", backbone="cnn", weights="none", image_size=32, epochs=10,
                       optimizer="sgd", lr=1e-12, momentum=0.0, early_stopping="val_acc", patience=2,
                       augment=False, **TINY)
    assert summary["stopped_early"] and summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    row = summary["row"]
    assert row.scored_epoch == 1 and row.name == "cnn fine-tuned (early-stopped on val)"
    assert "optimistic" in row.selection
    assert len(_history(tmp_path / "stop")) == 3

    finetune(tree, tmp_path / "head", backbone="cnn", weights="none", image_size=32, epochs=2, lr=1e-2,
             freeze="head", seed=0, keep="last", **TINY)
    start = create_backbone("cnn", "none", seed=0)
    start.reset_classifier(2, seed=0)
    tuned = torch.load(tmp_path / "head" / "last.pt", map_location="cpu", weights_only=True)["model"]
    changed = sorted(k for k, v in start.state_dict().items() if not torch.equal(v, tuned[k]))
    assert changed == ["classifier.4.bias", "classifier.4.weight"]  # only the final layer trained


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="adam"), "optimizer='adam'"),
    (dict(schedule="linear"), "schedule='linear'"),
    (dict(val="fold_9"), "val='fold_9'"),
    (dict(freeze="conv9"), "freeze='conv9'"),
    (dict(early_stopping="speed"), "early_stopping='speed'"),
    (dict(preset="keras"), "preset='keras'"),
    (dict(backbone="alexnet", image_size=32), "at least 63"),
    (dict(backbone="resnet"), "unknown backbone"),
])
def test_bad_settings_are_refused(tree, tmp_path, kwargs, message):
    opts = dict(dict(backbone="cnn", weights="none", image_size=32, epochs=1), **TINY)
    opts.update(kwargs)
    with pytest.raises(FeatxError, match=re.escape(message)):
        finetune(tree, tmp_path / "bad", **opts)


def test_unreadable_images_are_skipped_and_recorded_or_stop_with_strict(tree, tmp_path, monkeypatch):
    import shutil

    from featx.cli import app

    data = tmp_path / "copy"
    shutil.copytree(tree, data)
    victims = sorted((data / "C-NMC_training_data" / "fold_0" / "all").glob("*.bmp"))[:2]
    victims[0].write_bytes(b"not an image")
    victims[1].write_bytes(victims[1].read_bytes()[:60])  # truncated
    opts = dict(backbone="cnn", weights="none", image_size=32, epochs=1, batch_size=8, **TINY)
    summary = finetune(data, tmp_path / "r", **opts)
    bad = sorted(str(v.relative_to(data).as_posix()) for v in victims)
    assert sorted(s["path"] for s in summary["skipped"]) == bad
    assert all(v.name in s["error"] for v, s in zip(victims, sorted(summary["skipped"], key=lambda s: s["path"])))
    with open(tmp_path / "r" / "skipped.csv", newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in listed) == bad and all(r["error"] and r["subject"] for r in listed)
    settings = json.loads((tmp_path / "r" / "settings.json").read_text())
    assert settings["skipped"] == bad and settings["n_skipped"] == 2
    col = discover(tree)
    # left out of training (the validation split, drawn before, is unchanged), and never listed as trained on
    assert summary["row"].n_train == sum(s.split in ("fold_0", "fold_1") for s in col.samples) - 2
    assert summary["row"].n_test == sum(s.split == "fold_2" for s in col.samples)
    assert summary["row"].n_skipped == 2
    prov = torch.load(tmp_path / "r" / "best.pt", map_location="cpu", weights_only=True)["card"]["provenance"]
    assert not set(bad) & set(prov["train"]["paths"]) and sorted(prov["skipped"]["paths"]) == bad

    with pytest.raises(FeatxError, match="strict=True") as err:
        finetune(data, tmp_path / "strict", strict=True, **opts)
    assert victims[0].name in str(err.value) or victims[1].name in str(err.value)
    assert not (tmp_path / "strict").exists()  # failed before saving anything: no empty run folder left

    args = ["finetune", str(data), "--backbone", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "1",
            "--val", "fold_2", "--workers", "0", "--device", "cpu", "-q"]
    ok = CliRunner().invoke(app, args + ["--out", str(tmp_path / "cli")])
    assert ok.exit_code == 0, ok.output
    assert "warning" in ok.output and "2 unreadable image(s)" in ok.output and "skipped.csv" in ok.output
    strict = CliRunner().invoke(app, args + ["--out", str(tmp_path / "cli2"), "--strict"])
    assert strict.exit_code == 1 and "--strict" in strict.output and "Traceback" not in strict.output
    assert len(strict.output.strip().splitlines()) == 1

    # files that break after the scan (changed on disk) are dropped from their batch and recorded too
    val_victim = sorted((data / "C-NMC_training_data" / "fold_2" / "hem").glob("*.bmp"))[0]
    val_victim.write_bytes(b"broken later")
    bad = sorted(bad + [val_victim.relative_to(data).as_posix()])
    monkeypatch.setattr(ft_split, "scan_images", lambda *a, **k: [])
    late = finetune(data, tmp_path / "late", **opts)
    assert sorted(s["path"] for s in late["skipped"]) == bad
    assert late["row"].n_test == summary["row"].n_test - 1 == sum(np.sum(late["row"].confusion, axis=1))
    with open(tmp_path / "late" / "skipped.csv", newline="") as fh:
        assert sorted(r["path"] for r in csv.DictReader(fh)) == bad
    with pytest.raises(FeatxError, match="strict=True"):
        finetune(data, tmp_path / "late-strict", strict=True, **opts)


def test_damaged_checkpoints_are_one_line(tree, tmp_path):
    from featx.cli import app
    from featx.extract import extract

    run = tmp_path / "r"
    opts = dict(backbone="cnn", weights="none", image_size=32, epochs=2, batch_size=8, **TINY)

    def stop(event, info):
        if event == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tree, run, callback=stop, **opts)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated
    with pytest.raises(FeatxError, match=r"resume=True: .*last.pt is damaged"):
        finetune(tree, run, resume=True, **opts)
    args = ["finetune", str(tree), "--backbone", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "2",
            "--batch-size", "8", "--val", "fold_2", "--workers", "0", "--device", "cpu", "-q", "--out", str(run)]
    assert (run / "best.pt").is_file()
    res = CliRunner().invoke(app, args + ["--resume"])
    assert res.exit_code == 1 and "damaged" in res.output and "Traceback" not in res.output
    assert (run / "best.pt").is_file()  # the failed resume removed nothing of the run
    torch.save({"just": torch.zeros(1)}, last)  # readable, but not a last.pt
    with pytest.raises(FeatxError, match="not a complete featx last.pt"):
        finetune(tree, run, resume=True, **opts)

    best = run / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(FeatxError, match="not a weights file featx can read"):
        extract(tree, tmp_path / "x.h5", backbone="cnn", weights=best, workers=0, device="cpu")
    res = CliRunner().invoke(app, ["extract", str(tree), "--backbone", "cnn", "--weights", str(best), "--workers",
                                   "0", "--device", "cpu", "-q", "--out", str(tmp_path / "y.h5")])
    assert res.exit_code == 1 and "Traceback" not in res.output and not (tmp_path / "y.h5").exists()


def test_failed_run_leaves_no_empty_folder(tree, tmp_path):
    def boom(event, info):
        if event == "batch":
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        finetune(tree, tmp_path / "new", backbone="cnn", weights="none", image_size=32, epochs=1, callback=boom,
                 **TINY)
    assert not (tmp_path / "new").exists()
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("user file")
    with pytest.raises(FeatxError, match="freeze="):
        finetune(tree, keep, backbone="cnn", weights="none", image_size=32, epochs=1, freeze="conv9", **TINY)
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]  # the user's folder and file stay


def test_cli_interrupt_then_resume(tree, tmp_path, monkeypatch):
    from featx.cli import app

    real = Trainer.run_epoch

    def ctrl_c_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    args = ["finetune", str(tree), "--backbone", "cnn", "--image-size", "32", "--epochs", "2", "--val", "fold_2",
            "--workers", "0", "--out", str(tmp_path / "r"), "--quiet"]
    monkeypatch.setattr(Trainer, "run_epoch", ctrl_c_in_epoch_2)
    cut = CliRunner().invoke(app, args)
    assert cut.exit_code == 130 and "epoch 1 is saved" in cut.output and "--resume" in cut.output
    monkeypatch.setattr(Trainer, "run_epoch", real)
    resumed = CliRunner().invoke(app, args + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after epoch 1" in resumed.output and "epoch   2" in resumed.output
    assert [int(r["epoch"]) for r in _history(tmp_path / "r")] == [1, 2]


def test_cli_finetune_prints_epochs_and_table(tree, tmp_path):
    from featx.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["finetune", str(tree), "--backbone", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "2",
            "--batch-size", "16", "--val", "fold_2", "--workers", "0", "--device", "cpu", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "epoch   1" in result.output and "epoch   2" in result.output
    assert "featx finetune" in result.output and "Accura" in result.output and (out / "best.pt").is_file()
    again = runner.invoke(app, args)  # same folder without --resume: one-line refusal, exit 1
    assert again.exit_code == 1 and "--resume" in again.output and "Traceback" not in again.output
    helptext = runner.invoke(app, ["finetune", "--help"]).output
    for option in ("--preset", "--lr", "--momentum", "--freeze", "--early-stopping", "--resume", "--val"):
        assert option in helptext


def test_cli_eval_prelim_validates_on_the_preliminary_phase(tree, tmp_path):
    from featx.cli import app

    runner = CliRunner()
    out = tmp_path / "prelim"
    base = ["finetune", str(tree), "--backbone", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "1",
            "--batch-size", "16", "--workers", "0", "--device", "cpu", "-q"]
    result = runner.invoke(app, base + ["--eval", "prelim", "--out", str(out)])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "settings.json").read_text())
    n_prelim = sum(s.split == "prelim" for s in discover(tree).samples)
    assert settings["val"] == "prelim" and settings["n_val"] == n_prelim
    clash = runner.invoke(app, base + ["--eval", "prelim", "--val", "fold_2", "--out", str(tmp_path / "x")])
    assert clash.exit_code == 1 and "two validation sets" in clash.output
