"""featx.workflows.hybrid: per outer subject fold fine-tune -> extract -> heads; no leak, resumable, chance on
noise."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from chance_helpers import assert_at_chance
from digits_data import make_random_label_digits
from typer.testing import CliRunner

from featx.backbones import create_backbone
from featx.data import Collection, discover
from featx.data.images import ImageDataset, make_transform
from featx.errors import FeatxError, FeatxWarning
from featx.heads import make_head
from featx.store import load_features
from featx.workflows.hybrid import INNER_TRAIN, INNER_VAL, hybrid

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

LABEL = "hybrid subject-level 3-fold (network fine-tuned per fold on training subjects)"
# tiny and fast: cnn from scratch at 32 px, 2 epochs, no worker processes, no plots
TINY = dict(backbone="cnn", heads=["svm", "logistic"], n_folds=3, weights="none", image_size=32, epochs=2, batch_size=8,
            augment=False, device="cpu", workers=0, plots=False)
METRIC_KEYS = ("accuracy", "f1", "f1_weighted", "roc_auc", "accuracy_ci_low", "accuracy_ci_high", "confusion",
               "n_train", "n_test", "n_subjects", "roc", "per_subject_accuracy")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is as fast, and spins less on a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clean(cnmc_tree, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("hybrid") / "run"
    return hybrid(cnmc_tree, out, **TINY)


def _rows_by_model(rows) -> dict:
    return {r.name: r.to_dict() for r in rows}


def _file_times(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rows_for_each_head_and_the_network_on_subject_folds(clean, cnmc_tree):
    rows = _rows_by_model(clean["rows"])
    assert list(rows) == ["cnn[fine-tuned per fold]/fc + svm", "cnn[fine-tuned per fold]/fc + logistic",
                          "cnn fine-tuned"]
    for r in rows.values():
        assert (r["protocol"], r["protocol_label"], r["image_level"], r["n_folds"]) == ("hybrid", LABEL, False, 3)
        assert r["n_test"] == 24 and r["n_subjects"] == 6  # the 24 training images; prelim/final stay out
        assert sum(map(sum, r["confusion"])) == 24
        # one subject of each class per test fold: no interval over subjects, and every output says why
        assert r["accuracy_ci_low"] is None and "holds 1 subject of class" in r["interval"]["na"]["accuracy"]
    assert (rows["cnn fine-tuned"]["head"], rows["cnn fine-tuned"]["tap"]) == (None, "logits")
    # the heads and the network share the outer folds: each row is paired with the best one
    best = max(rows.values(), key=lambda r: r["f1_weighted"])
    for r in rows.values():
        c = r["comparison"]
        assert c["reference"] == best["name"] and c["delta"] == pytest.approx(r["f1_weighted"] - best["f1_weighted"])

    col = discover(cnmc_tree)
    training = {s.subject for s in col.samples if s.label and s.split not in ("prelim", "final")}
    tested = []
    for f in clean["folds"]:
        train, test = set(f["train_subjects"]), set(f["test_subjects"])
        assert train and test and not train & test and train | test == training
        tested.extend(f["test_subjects"])
    assert sorted(tested) == sorted(training)  # every subject is tested exactly once

    out = clean["out"]
    for name in ("results.json", "results.md", "results.csv", "settings.json"):
        assert (out / name).is_file()
    assert LABEL in (out / "results.md").read_text()
    assert [r["protocol_label"] for r in json.loads((out / "results.json").read_text())] == [LABEL] * 3


def test_each_fold_fine_tunes_only_on_its_training_subjects(clean, cnmc_tree):
    col = discover(cnmc_tree)
    for f in clean["folds"]:
        fold = clean["out"] / f"fold_{f['fold']}"
        settings = json.loads((fold / "finetune" / "settings.json").read_text())
        train = set(f["train_subjects"])
        val = set(f["inner_val_subjects"])
        assert val and val < train  # the inner holdout is drawn from the fold's training subjects
        # the fine-tune saw exactly the fold's training images, split into inner train / inner val by subject
        expected = Collection(col.root, col.layout, [
            type(s)(s.path, s.label, s.subject, INNER_VAL if s.subject in val else INNER_TRAIN)
            for s in col.samples if s.label and s.subject in train and s.split not in ("prelim", "final")],
            list(col.classes))
        assert settings["dataset_fingerprint"] == expected.fingerprint()
        assert settings["n_train"] + settings["n_val"] == f["n_train"] == len(expected.samples)
        assert settings["val"] == INNER_VAL
        assert f["checkpoint"] == "finetune/last.pt"  # a fixed-length run is scored at its last epoch
        ckpt = torch.load(fold / "finetune" / "last.pt", map_location="cpu", weights_only=True)
        assert not (fold / "finetune" / "best.pt").exists()  # the fold keeps only the checkpoint it is scored at
        assert ckpt["card"]["settings"]["dataset_fingerprint"] == expected.fingerprint()
        # the fold's store holds its training and test rows only, extracted with the tuned weights
        fs = load_features(fold / "features.h5", "fc")
        assert len(fs) == f["n_train"] + f["n_test"]
        assert set(fs.subjects) == train | set(f["test_subjects"])
        assert fs.settings[0]["weights"] == str((fold / "finetune" / "last.pt").resolve())


def test_rows_are_the_folds_own_heads_and_network(clean, cnmc_tree):
    """Recompute the svm row and one fold's network scores from the files of each fold."""
    col = discover(cnmc_tree)
    accs = []
    for f in clean["folds"]:
        fold = clean["out"] / f"fold_{f['fold']}"
        fs = load_features(fold / "features.h5", "fc")
        test = np.isin(fs.subjects, f["test_subjects"])
        svm = make_head("svm", seed=0, device="cpu").fit(fs.X[~test], fs.y[~test])
        accs.append(float(np.mean(svm.predict(fs.X[test]) == fs.y[test])))
    svm_row = _rows_by_model(clean["rows"])["cnn[fine-tuned per fold]/fc + svm"]
    assert svm_row["accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)

    f = clean["folds"][0]
    model = create_backbone("cnn", clean["out"] / "fold_1" / "finetune" / "last.pt")
    where = {s.path: i for i, s in enumerate(col.samples)}
    ds = ImageDataset(col, make_transform(32, model.config.mean, model.config.std),
                      indices=[where[p] for p in f["network"]["paths"]])
    with torch.no_grad():
        proba = torch.softmax(model(torch.stack([ds[i][0] for i in range(len(ds))])), 1).numpy()
    np.testing.assert_allclose(proba, np.array(f["network"]["proba"]), atol=1e-5)
    assert {col.samples[where[p]].subject for p in f["network"]["paths"]} == set(f["test_subjects"])


def test_interrupted_run_resumes_per_fold_and_equals_a_clean_run(clean, cnmc_tree, tmp_path):
    out = tmp_path / "run"

    def stop_in_fold_2(event, info):
        if event == "epoch" and info["fold"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hybrid(cnmc_tree, out, callback=stop_in_fold_2, **TINY)
    assert (out / "fold_1" / "result.json").exists() and not (out / "fold_2" / "result.json").exists()
    assert torch.load(out / "fold_2" / "finetune" / "last.pt", weights_only=True)["epoch"] == 1
    fold_1 = _file_times(out / "fold_1")

    events = []
    result = hybrid(cnmc_tree, out, callback=lambda e, info: events.append((e, info.get("fold"),
                                                                           info.get("status") or info.get("epoch"))),
                    **TINY)
    assert ("fold", 1, "skipped") in events and not [e for e in events if e[1] == 1 and e[0] == "epoch"]
    assert [e[2] for e in events if e[0] == "epoch" and e[1] == 2] == [2]  # fold 2 resumed after epoch 1
    assert [e[2] for e in events if e[0] == "epoch" and e[1] == 3] == [1, 2]
    assert _file_times(out / "fold_1") == fold_1  # the finished fold was not touched
    for a, b in zip(result["rows"], clean["rows"]):
        a, b = a.to_dict(), b.to_dict()
        assert a["name"] == b["name"]
        for key in METRIC_KEYS:
            assert a[key] == b[key], (a["name"], key)
    for a, b in zip(result["folds"], clean["folds"]):
        assert a["network"] == b["network"]
    tuned = [torch.load(run / "fold_2" / "finetune" / "last.pt", weights_only=True)["model"]
             for run in (out, clean["out"])]
    assert all(torch.equal(tuned[0][k], tuned[1][k]) for k in tuned[1])  # the resumed fine-tune is bit for bit

    # a finished fold whose record is lost is recomputed, and only that fold
    (out / "fold_3" / "result.json").unlink()
    others = {**_file_times(out / "fold_1"), **_file_times(out / "fold_2")}
    again = hybrid(cnmc_tree, out, **TINY)
    assert {**_file_times(out / "fold_1"), **_file_times(out / "fold_2")} == others
    assert (out / "fold_3" / "result.json").exists()
    assert [r.mean("accuracy") for r in again["rows"]] == [r.mean("accuracy") for r in clean["rows"]]


def test_other_settings_on_rerun_are_refused_in_one_line(clean, cnmc_tree, tmp_path):
    for change, name in ((dict(epochs=3), "epochs"), (dict(n_folds=2), "n_folds"), (dict(seed=1), "seed"),
                         (dict(taps=["pool5"]), "taps")):
        with pytest.raises(FeatxError) as exc:
            hybrid(cnmc_tree, clean["out"], **{**TINY, **change})
        msg = str(exc.value)
        assert f"'{name}'" in msg and "settings.json" in msg and "\n" not in msg
    # head options are refit from the stored features on every run, so they may change
    shutil.copytree(clean["out"], tmp_path / "run")
    rows = hybrid(cnmc_tree, tmp_path / "run", **{**TINY, "heads": ["knn"]})["rows"]
    assert [r.head for r in rows] == ["knn", None]  # None: the fine-tuned network's own softmax
    assert rows[1].mean("accuracy") == clean["rows"][2].mean("accuracy")


def test_a_run_that_failed_before_any_work_can_be_corrected(cnmc_tree, tmp_path):
    with pytest.raises(FeatxError, match=r"lr=-1\.0: must be a positive number"):
        hybrid(cnmc_tree, tmp_path / "run", **{**TINY, "lr": -1.0})
    assert not (tmp_path / "run").exists()  # nothing worth keeping: the folder it created is gone
    result = hybrid(cnmc_tree, tmp_path / "run", **{**TINY, "heads": ["logistic"], "epochs": 1})
    assert [r.n_folds for r in result["rows"]] == [3, 3]
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["finetune"]["epochs"] == 1


def test_cli_hybrid_resumes_and_prints_the_table(clean, cnmc_tree, wide_console):
    from featx.cli import app

    args = ["hybrid", str(cnmc_tree), "--backbone", "cnn", "--heads", "svm,logistic", "--folds", "3", "--weights",
            "none", "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--no-augment", "--device", "cpu",
            "--workers", "0", "--no-plots", "--out", str(clean["out"])]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.count("finished earlier") == 3
    assert "cnn fine-tuned" in res.output and "hybrid 3-fold" in res.output
    res = CliRunner().invoke(app, [*args[:-2], "--epochs", "5", "--out", str(clean["out"])])
    assert res.exit_code == 1 and "'epochs'" in res.output and "Traceback" not in res.output


def test_weights_of_unknown_provenance_mark_every_row_unless_stated_unseen(cnmc_tree, tmp_path, wide_console):
    """A plain state dict as the starting weights: the heads' rows and the network's own row are marked (the
    network row was not); --weights-never-saw-images records the statement instead, on every row."""
    from featx.cli import app

    plain = tmp_path / "plain.pt"
    torch.save(create_backbone("cnn", "none").state_dict(), plain)
    opts = dict(TINY, heads=["logistic"], epochs=1, weights=str(plain))
    with pytest.warns(FeatxWarning, match="weights of unknown provenance"):
        unknown = hybrid(cnmc_tree, tmp_path / "unknown", **opts)
    assert [(r.name, r.weights_provenance) for r in unknown["rows"]] == [
        ("cnn[fine-tuned per fold]/fc + logistic", "unknown"), ("cnn fine-tuned", "unknown")]
    with (tmp_path / "unknown" / "results.csv").open(newline="") as fh:
        assert [json.loads(r["marks"]) for r in csv.DictReader(fh)] == [["weights of unknown provenance"]] * 2

    args = ["hybrid", str(cnmc_tree), "--backbone", "cnn", "--heads", "logistic", "--folds", "3", "--weights",
            str(plain), "--weights-never-saw-images", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
            "--no-augment", "--device", "cpu", "--workers", "0", "--no-plots", "--out", str(tmp_path / "stated")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "weights of unknown provenance" not in res.output
    rows = json.loads((tmp_path / "stated" / "results.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert [r["weights_provenance"] for r in rows] == ["stated-unseen", "stated-unseen"]
    assert json.loads((tmp_path / "stated" / "settings.json").read_text())["finetune"]["weights_never_saw_images"]


def test_random_labels_on_real_images_give_chance(tmp_path):
    """The acceptance test: each fold's cnn memorises its random-labelled training images, and the hybrid
    rows (heads on the tuned features, and the network itself) still report chance on held-out subjects.

    Three seeds (images, labels, folds and training each), two outer folds of 6 subjects; every row's test
    counts pooled over the seeds (144 rows) stay within 3 chance standard deviations of 0.5:
    sd = sqrt(0.25 / 144 * 4/3) = 0.048 (labels balanced within subjects of 4 images, see chance_helpers),
    tolerance 0.144. Fine-tuning each fold on all 12 subjects instead (test subjects included) scores
    0.86-0.87 pooled on these seeds, every row far outside it."""
    rows: dict[str, list] = {}
    for seed in (0, 1, 2):
        root = tmp_path / f"seed{seed}"
        manifest = make_random_label_digits(root / "digits", n_subjects=12, per_subject=4, size=32, seed=seed)
        result = hybrid(manifest, root / "run", backbone="cnn", heads=["svm", "logistic"], n_folds=2, seed=seed,
                        weights="none", image_size=32, epochs=20, lr=3e-3, batch_size=8, dropout=0.0, augment=False,
                        schedule="cosine", weight_decay=0.0, device="cpu", workers=0, plots=False)
        col = discover(manifest)
        for f in result["folds"]:
            inner_train = set(f["train_subjects"]) - set(f["inner_val_subjects"])
            idx = [i for i, s in enumerate(col.samples) if s.subject in inner_train]
            model = create_backbone("cnn", root / "run" / f"fold_{f['fold']}" / f["checkpoint"])
            ds = ImageDataset(col, make_transform(32, model.config.mean, model.config.std), indices=idx)
            y = torch.tensor([col.classes.index(col.samples[i].label) for i in idx])
            with torch.no_grad():
                train_acc = float((model(torch.stack([ds[i][0] for i in range(len(ds))])).argmax(1) == y)
                                  .float().mean())
            assert train_acc >= 0.9, f"seed {seed} fold {f['fold']}: the network did not memorise its training " \
                                     f"rows ({train_acc})"
        assert [r.head for r in result["rows"]] == ["svm", "logistic", None]
        for r in result["rows"]:
            assert r.n_test == 48
            rows.setdefault(r.head or "network", []).append(r)
    for name, per_seed in rows.items():
        assert_at_chance(per_seed, cells=4, what=f"hybrid {name} row on random labels")


def test_rows_without_a_subject_are_refused_by_name_before_any_work(tmp_path):
    manifest = make_random_label_digits(tmp_path / "digits", n_subjects=6, per_subject=4, size=32, seed=0)
    lines = manifest.read_text().splitlines()
    path, label, _ = lines[3].split(",")
    lines[3] = f"{path},{label},"  # one image lost its subject
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeatxError, match=rf"1 labelled image\(s\) .* no subject id \(first: {path}\)"):
        hybrid(manifest, tmp_path / "run", backbone="cnn", heads=["svm"], n_folds=3, weights="none", device="cpu")
    assert not (tmp_path / "run").exists()
