"""An epoch chosen on validation images is never scored on them: `finetune --early-stopping` chooses best.pt's
epoch on half of the validation subjects and scores it on the other half, or, when the validation set is too
small to split, marks its row OPTIMISTIC in every output. Real digit images with random labels: a row above
chance has chosen on its test images."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from featx.finetune import finetune
from featx.store import load_features

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import invoke as _cli  # noqa: E402
from digits_data import make_random_label_digits  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread", "wide_console")]

SEEDS = (0, 1, 2, 3)
# 40 subjects: the 1/5 validation holdout has 8 subjects of both (random) classes, split 4/4
TRAIN = dict(backbone="cnn", weights="none", image_size=32, epochs=6, lr=3e-3, batch_size=8, dropout=0.0,
             augment=False, schedule="none", weight_decay=0.0, class_weight="none", workers=0, device="cpu")


def test_random_labels_early_stopping_scores_images_that_did_not_choose_the_epoch(tmp_path):
    correct = n = 0
    for seed in SEEDS:
        manifest = make_random_label_digits(tmp_path / f"d{seed}", n_subjects=40, per_subject=4, size=32, seed=seed)
        # patience as long as the run: best.pt is the best of every epoch by the choosing part's accuracy
        summary = finetune(manifest, tmp_path / f"run{seed}", early_stopping="accuracy", patience=6, seed=seed,
                           **TRAIN)
        row = summary["row"]
        prov = torch.load(summary["best"], map_location="cpu", weights_only=True)["card"]["provenance"]
        chose = set(prov["val_choose"]["paths"])
        choose_subjects = set(prov["val_choose"]["subjects"])
        score = {p: s for p, s in zip(prov["val"]["paths"], prov["val"]["subjects"]) if p not in chose}
        assert chose and score and not choose_subjects & set(score.values())
        # the row scores best.pt on the validation subjects that did not choose it, and says so
        assert not row.optimistic and row.marks == [] and row.n_test == len(score)
        assert set(row.per_subject_accuracy) == set(score.values())
        assert row.name == "cnn fine-tuned (early-stopped on other val subjects)"
        assert row.protocol_label.endswith("scored on the subjects that did not choose the epoch")
        assert f"chosen by validation accuracy on {len(chose)} validation images" in row.selection
        assert summary["settings_used"]["val_choose"].startswith(f"{len(chose)} validation images of "
                                                                  f"{len(choose_subjects)} subjects choose")
        # the choice was made on the choosing part: history's val_acc is that part's, best.pt its first maximum
        acc = [h["val_acc"] for h in summary["history_rows"]]
        assert summary["best_epoch"] == 1 + acc.index(max(acc))
        correct += int(round(row.mean("accuracy") * row.n_test))
        n += row.n_test
    assert abs(correct / n - 0.5) <= 3 * (0.25 / n) ** 0.5, (correct, n)  # chance, pooled over the seeds


def test_random_labels_early_stopping_on_a_small_validation_set_is_optimistic_everywhere(tmp_path):
    """2 validation subjects cannot be split: the epoch is chosen on the images the row is scored on, and every
    output (terminal, results.json/.csv/.md, featx table, the HTML report) marks the row OPTIMISTIC."""
    manifest = make_random_label_digits(tmp_path / "d", n_subjects=10, per_subject=8, size=32, seed=0)
    run = tmp_path / "run"
    result, out = _cli("finetune", manifest, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                       "--epochs", "3", "--early-stopping", "accuracy", "--patience", "3", "--batch-size", "8",
                       "--workers", "0", "--device", "cpu", "--keep", "both", "-q", "--out", run)
    assert result.exit_code == 0, out
    assert "is too small to split into a part that chooses the epoch and a part that scores it" in out
    assert "* OPTIMISTIC held-out 1/5 of subjects" in out
    assert "* OPTIMISTIC: epoch chosen on the validation images it is scored on" in out
    row = json.loads((run / "results.json").read_text())[0]
    assert row["optimistic"] is True and row["n_test"] == 16
    assert row["protocol_label"].startswith("OPTIMISTIC held out fold 1") and "optimistic: the validation" in \
        row["selection"] and row["name"] == "cnn fine-tuned (early-stopped on val)"
    with open(run / "results.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["optimistic"] == "True"
    md = (run / "results.md").read_text()
    assert "**\\* OPTIMISTIC held out fold 1" in md and "OPTIMISTIC fine-tuned network rows are scored on" in md
    result, out = _cli("table", run)
    assert "* OPTIMISTIC held-out 1/5 of subjects" in out and "epoch chosen on the validation images" in out
    result, out = _cli("report", run, "--out", tmp_path / "report.html")
    assert result.exit_code == 0, out
    html = (tmp_path / "report.html").read_text()
    assert '<span class="flag">* OPTIMISTIC</span>' in html and "OPTIMISTIC fine-tuned network rows" in html

    # every validation image chose best.pt's epoch: features extracted with it never test on them
    from featx.extract import extract

    prov = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["card"]["provenance"]
    assert prov["val_choose"] == prov["val"]
    fs = load_features(extract(manifest, tmp_path / "b.h5", backbone="cnn", weights=run / "best.pt", workers=0,
                               device="cpu"))
    assert sorted(p for p, r in zip(fs.paths, fs.roles) if r == "val-choose") == sorted(prov["val"]["paths"])
    assert "val" not in set(fs.roles)
