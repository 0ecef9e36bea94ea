"""Hybrid rows never leak: a fine-tuned checkpoint's provenance reaches the store, and classify/compare
score only rows the network never saw (tuned-holdout) unless OPTIMISTIC CV is asked for explicitly."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from featx.backbones import create_backbone
from featx.data import discover
from featx.data.images import ImageDataset, make_transform
from featx.errors import FeatxError
from featx.evaluation import compare, evaluate, tuned_protocol
from featx.extract import extract
from featx.finetune import finetune
from featx.store import FeatureSet, load_features, summarize

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import invoke as _cli  # noqa: E402
from digits_data import make_random_label_digits  # noqa: E402

CPU = dict(workers=0, device="cpu")
EXTRACT = dict(backbone="cnn", taps="fc", **CPU)


# small fits: one thread is faster on a busy CPU
pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")




# --------------------------------------------------------------------------------------------------
# the protocol on rows with roles (no network needed)
# --------------------------------------------------------------------------------------------------
def _featureset(roles, subjects, splits=None, seed=0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    n = len(roles)
    y = np.array([i % 2 for i in range(n)])
    return FeatureSet(X=rng.normal(size=(n, 4)).astype(np.float32) + y[:, None], y=y, classes=["a", "b"],
                      paths=np.array([f"p{i}.png" for i in range(n)]), subjects=np.array(subjects),
                      splits=np.array(splits or [""] * n), name="cnn[run/best.pt]/fc", backbone="cnn", tap="fc",
                      roles=np.array(roles), tuned=[{"store": "t.h5", "provenance": "recorded", "same_root": True}])


def test_tuned_holdout_trains_on_seen_rows_and_tests_only_unseen_ones():
    # subjects A-D trained on (one row of D was skipped: train-subject), E validated, F never seen
    subjects = [s for s in "AABBCCDDEEFF"]
    roles = ["train"] * 7 + ["train-subject", "val", "val", "", ""]
    fs = _featureset(roles, subjects)
    prot = tuned_protocol(fs)
    (train, test), = prot.folds
    assert prot.name == "tuned-holdout" and not prot.optimistic and not prot.image_level
    assert list(train) == list(range(8)) and list(test) == [8, 9, 10, 11]
    assert "tuned-holdout" in prot.label and "4 rows it never saw (2 subjects)" in prot.label
    assert "validation images" in prot.note

    # CV over rows the network saw: refused with one line naming the way out
    for cv in ("subject", "image", "fold"):
        with pytest.raises(FeatxError, match="allow_optimistic") as err:
            tuned_protocol(fs, cv=cv, n_folds=2)
        assert "\n" not in str(err.value) and "featx hybrid" in str(err.value)
    opt = tuned_protocol(fs, cv="subject", n_folds=3, allow_optimistic=True)
    assert opt.optimistic and opt.label.startswith("OPTIMISTIC subject-level 3-fold")
    assert "features tuned on test subjects" in opt.label

    # --eval SPLIT: allowed when the network never saw that split, refused (or OPTIMISTIC) otherwise
    splits = ["fold_0"] * 8 + ["prelim"] * 4
    ok = tuned_protocol(_featureset(roles, subjects, splits), eval_set="prelim")
    assert ok.name == "tuned-prelim" and ok.label.startswith("tuned-holdout: held-out prelim")
    assert list(ok.folds[0][1]) == [8, 9, 10, 11]
    seen_split = ["fold_0"] * 6 + ["prelim"] * 6  # rows 6, 7 of prelim were trained on / of a trained subject
    with pytest.raises(FeatxError, match=r"eval_set='prelim': the network trained on 2 of its 6 rows"):
        tuned_protocol(_featureset(roles, subjects, seen_split), eval_set="prelim")
    marked = tuned_protocol(_featureset(roles, subjects, seen_split), eval_set="prelim", allow_optimistic=True)
    assert marked.optimistic and marked.label.startswith("OPTIMISTIC held-out prelim")

    # the store's subject ids say a "never seen" row shares a subject with a trained one: it counts as seen
    odd = tuned_protocol(_featureset(["train"] * 8 + ["", "val", "", ""], subjects[:8] + ["A", "E", "F", "F"]))
    assert list(odd.folds[0][1]) == [9, 10, 11] and "1 rows never trained on count as seen" in odd.note

    # nothing unseen: refused, saying what to do
    with pytest.raises(FeatxError, match=r"none is left to test on.*featx hybrid.*val='subject'"):
        tuned_protocol(_featureset(["train"] * 10 + ["train-subject"] * 2, subjects))
    # a checkpoint that recorded nothing: every row counts as seen
    with pytest.raises(FeatxError, match="none is left to test on"):
        tuned_protocol(_featureset(["unknown"] * 12, subjects))


def test_evaluate_marks_rows_and_plain_stores_are_unchanged():
    subjects = [s for s in "AABBCCDDEEFFGGHH"]
    roles = ["train"] * 10 + ["val"] * 2 + [""] * 4
    fs = _featureset(roles, subjects)
    row = evaluate(fs, "logistic", n_boot=50)
    assert row.protocol == "tuned-holdout" and row.optimistic is False
    assert row.n_test == 6 and row.n_train == 10
    assert row.tuned["n_seen"] == 10 and row.tuned["n_unseen"] == 6
    opt = evaluate(fs, "logistic", cv="subject", n_folds=4, n_boot=50, allow_optimistic=True)
    assert opt.optimistic is True and "OPTIMISTIC" in opt.protocol_label and opt.n_test == 16
    plain = _featureset(roles, subjects)
    plain.roles, plain.tuned = None, []
    row = evaluate(plain, "logistic", n_folds=4, n_boot=50)
    assert row.protocol == "subject" and row.optimistic is False and row.tuned is None
    # select() keeps the roles aligned
    sub = fs.select(np.array([0, 11, 15]))
    assert list(sub.roles) == ["train", "val", ""]


# --------------------------------------------------------------------------------------------------
# provenance: finetune -> checkpoint -> extract -> store
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned_run(cnmc_tree, tmp_path_factory) -> Path:
    """One epoch of the cnn on the tiny C-NMC tree, validating on fold_2 (prelim/final never seen)."""
    run = tmp_path_factory.mktemp("tuned") / "run"
    finetune(cnmc_tree, run, backbone="cnn", weights="none", image_size=32, epochs=1, batch_size=8, val="fold_2",
             seed=0, keep="both", **CPU)
    return run


def test_checkpoint_records_provenance_and_extract_copies_it(cnmc_tree, tuned_run, tmp_path):
    col = discover(cnmc_tree)
    best = torch.load(tuned_run / "best.pt", map_location="cpu", weights_only=True)
    last = torch.load(tuned_run / "last.pt", map_location="cpu", weights_only=True)
    prov = best["card"]["provenance"]
    assert last["card"]["provenance"] == prov
    folds01 = sorted(s.path for s in col.samples if s.split in ("fold_0", "fold_1"))
    fold2 = sorted(s.path for s in col.samples if s.split == "fold_2")
    assert sorted(prov["train"]["paths"]) == folds01 and sorted(prov["val"]["paths"]) == fold2
    assert prov["data_root"] == str(col.root) and prov["dataset_fingerprint"] == col.fingerprint()
    by_path = {s.path: s.subject for s in col.samples}
    assert all(by_path[p] == s for p, s in zip(prov["train"]["paths"], prov["train"]["subjects"]))
    card = json.loads((tuned_run / "card.json").read_text())  # the readable card has counts, not path lists
    assert card["provenance"]["n_train"] == len(folds01) and card["provenance"]["n_val"] == len(fold2)
    with open(tuned_run / "provenance.csv", newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in listed if r["role"] == "train") == folds01

    store = extract(cnmc_tree, tmp_path / "t.h5", weights=tuned_run / "best.pt", **EXTRACT)
    with h5py.File(store) as h5:
        roles = dict(zip(h5["samples/path"].asstr()[:], h5["samples/network_role"].asstr()[:]))
        attr = json.loads(h5.attrs["tuned_provenance"])
    expect = {s.path: ("train" if s.split in ("fold_0", "fold_1") else "val" if s.split == "fold_2" else "")
              for s in col.samples}
    assert roles == expect
    assert attr["sha256"] == last_sha(tuned_run / "best.pt") and attr["n_train"] == len(folds01)
    assert attr["same_root"] is True and attr["roles"] == {"train": 16, "val": 8, "unseen": 10}
    assert summarize(store)["network_roles"] == {"train": 16, "val": 8, "unseen": 10}
    result, out = _cli("info", store)
    assert result.exit_code == 0 and "fine-tuned network's rows: train 16, val 8, unseen 10" in out
    fs = load_features(store)
    assert [fs.roles[list(fs.paths).index(p)] for p in folds01] == ["train"] * len(folds01)

    # default classify: heads on the 16 trained rows, tested on the 8 fold_2 + 6 labelled prelim rows
    result, out = _cli("classify", store, "--head", "logistic", "--out", tmp_path / "res", "--boot", "50")
    assert result.exit_code == 0, out
    row = json.loads((tmp_path / "res" / "results.json").read_text())[0]
    assert row["protocol"] == "tuned-holdout" and row["n_train"] == 16 and row["n_test"] == 8 + 6
    assert "tuned-holdout" in out and "OPTIMISTIC" not in out
    # --eval prelim: never seen, so allowed and named as tuned
    result, out = _cli("classify", store, "--head", "logistic", "--eval", "prelim", "--out", tmp_path / "p",
                       "--boot", "50")
    assert result.exit_code == 0, out
    assert json.loads((tmp_path / "p" / "results.json").read_text())[0]["protocol"] == "tuned-prelim"
    # explicit CV over rows the network trained on: one line, exit 1
    result, out = _cli("classify", store, "--head", "logistic", "--cv", "fold", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "--optimistic" in out and "Traceback" not in out
    assert not (tmp_path / "x" / "results.json").exists()


def last_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_other_root_subset_and_unrecorded_checkpoints(cnmc_tree, tuned_run, tmp_path):
    # another copy of the data: matched by relative path and subject, and the store says so
    copy = tmp_path / "copy"
    shutil.copytree(cnmc_tree, copy)
    store = extract(copy, tmp_path / "copy.h5", weights=tuned_run / "last.pt", **EXTRACT)
    with h5py.File(store) as h5:
        attr = json.loads(h5.attrs["tuned_provenance"])
        roles = list(h5["samples/network_role"].asstr()[:])
    assert attr["same_root"] is False and "data root differs" in attr["match"]
    assert roles.count("train") == 16 and roles.count("val") == 8
    row = evaluate(load_features(store), "logistic", n_boot=20)
    assert row.protocol == "tuned-holdout" and "data root differs" in row.settings["cv_note"]

    # a store of only the rows the network trained on: nothing to test, refused with what to do
    seen = extract(cnmc_tree, tmp_path / "seen.h5", weights=tuned_run / "last.pt", splits=["fold_0", "fold_1"],
                   **EXTRACT)
    result, out = _cli("classify", seen, "--head", "logistic", "--out", tmp_path / "r")
    assert result.exit_code == 1 and "featx hybrid" in out and "--eval prelim" in out
    assert "Traceback" not in out

    # a fine-tuned checkpoint that lost its provenance: every row counts as seen
    ck = torch.load(tuned_run / "last.pt", map_location="cpu", weights_only=True)
    del ck["card"]["provenance"]
    torch.save(ck, tmp_path / "old.pt")
    old = extract(cnmc_tree, tmp_path / "old.h5", weights=tmp_path / "old.pt", **EXTRACT)
    assert set(load_features(old).roles) == {"unknown"}
    with pytest.raises(FeatxError, match="none is left to test on"):
        evaluate(load_features(old), "logistic")

    # fine-tuning again from a tuned checkpoint inherits what it trained on: fold_0/1 stay "train"
    again = tmp_path / "again"
    finetune(cnmc_tree, again, backbone="cnn", weights=tuned_run / "best.pt", image_size=32, epochs=1,
             batch_size=8, val="fold_0", seed=0, keep="last", **CPU)
    store2 = extract(cnmc_tree, tmp_path / "again.h5", weights=again / "last.pt", **EXTRACT)
    roles2 = dict(zip(load_features(store2).paths, load_features(store2).roles))
    col = discover(cnmc_tree)
    assert all(roles2[s.path] == "train" for s in col.samples if s.split in ("fold_0", "fold_1", "fold_2"))


# --------------------------------------------------------------------------------------------------
# acceptance: real images with random labels
# --------------------------------------------------------------------------------------------------
def test_random_labels_tuned_store_scores_chance_and_optimistic_cv_is_marked(tmp_path):
    """Digits with random labels: the cnn memorises its training images; classify with default options must
    report chance on rows it never saw, and the explicit OPTIMISTIC CV (which leaks) must say so."""
    manifest = make_random_label_digits(tmp_path / "digits", n_subjects=40, per_subject=4, size=32, seed=0)
    run = tmp_path / "run"
    result, out = _cli("finetune", manifest, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                       "--epochs", "12", "--lr", "2e-3", "--batch-size", "8", "--dropout", "0", "--no-augment",
                       "--schedule", "none", "--weight-decay", "0", "--class-weight", "none", "--workers", "0",
                       "--device", "cpu", "--keep", "last", "--out", run, "-q")
    assert result.exit_code == 0, out
    # the network memorised its training images (eval mode, no augmentation): far above chance
    model = create_backbone("cnn", run / "last.pt")
    prov = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["card"]["provenance"]
    col = discover(manifest)
    index = {s.path: i for i, s in enumerate(col.samples)}
    train = [index[p] for p in prov["train"]["paths"]]
    ds = ImageDataset(col, make_transform(32, model.config.mean, model.config.std), indices=train)
    with torch.no_grad():
        pred = model(torch.stack([ds[i][0] for i in range(len(ds))])).argmax(1)
    truth = torch.tensor([model.classes.index(col.samples[i].label) for i in train])
    train_acc = float((pred == truth).float().mean())
    assert train_acc > 0.85, train_acc

    store = tmp_path / "tuned.h5"
    result, out = _cli("extract", manifest, "--backbone", "cnn", "--weights", run / "last.pt", "--workers", "0",
                       "--device", "cpu", "-q", "--out", store)
    assert result.exit_code == 0, out

    # default options: only rows the network never saw are scored, and they score chance
    result, out = _cli("classify", store, "--out", tmp_path / "default", "--no-plots")
    assert result.exit_code == 0, out
    row = json.loads((tmp_path / "default" / "results.json").read_text())[0]
    assert row["protocol"] == "tuned-holdout" and not row["optimistic"]
    assert row["n_test"] == len(prov["val"]["paths"]) == 32 and "tuned-holdout" in out
    assert row["accuracy_ci_low"] <= 0.5 <= row["accuracy_ci_high"], row
    assert "OPTIMISTIC" not in out

    # --cv subject without --optimistic: refused in one line
    result, out = _cli("classify", store, "--cv", "subject", "--out", tmp_path / "refused")
    assert result.exit_code == 1 and "--optimistic" in out and "Traceback" not in out

    # asked for explicitly: it leaks (scores above the honest number) and every output says OPTIMISTIC
    opt_dir = tmp_path / "optimistic"
    result, out = _cli("classify", store, "--cv", "subject", "--optimistic", "--out", opt_dir)
    assert result.exit_code == 0, out
    opt = json.loads((opt_dir / "results.json").read_text())[0]
    assert opt["optimistic"] is True and opt["protocol_label"].startswith("OPTIMISTIC")
    assert opt["accuracy"] > row["accuracy"] + 0.1 and opt["accuracy_ci_low"] > 0.5, (opt["accuracy"], row["accuracy"])
    assert "OPTIMISTIC" in out and "features tuned on test subjects" in out          # terminal table + caption
    md = (opt_dir / "results.md").read_text()
    assert "**\\* OPTIMISTIC" in md and "OPTIMISTIC rows test on images" in md
    with open(opt_dir / "results.csv", newline="") as fh:
        csv_row = next(csv.DictReader(fh))
    assert csv_row["optimistic"] == "True" and csv_row["protocol_label"].startswith("OPTIMISTIC")
    assert (opt_dir / "comparison.png").is_file()


def test_plots_and_tables_mark_optimistic_rows(tmp_path, monkeypatch):
    from featx import report
    from featx.report import files as report_files

    titles, labels = [], []
    real_conf, real_bars = report_files.plot_confusion, report_files.plot_bars
    monkeypatch.setattr(report_files, "plot_confusion", lambda cm, classes, path, title=None: titles.append(title)
                        or real_conf(cm, classes, path, title=title))

    def bars(rows, path, **kw):
        labels.extend(f"{r.flag} {r.protocol}" for r in rows)
        return real_bars(rows, path, **kw)

    monkeypatch.setattr(report_files, "plot_bars", bars)
    fs = _featureset(["train"] * 10 + ["val"] * 2 + [""] * 4, [s for s in "AABBCCDDEEFFGGHH"])
    rows = [evaluate(fs, "logistic", n_boot=20), evaluate(fs, "logistic", cv="subject", n_folds=4, n_boot=20,
                                                          allow_optimistic=True)]
    report.write_results(rows, tmp_path)
    assert "OPTIMISTIC" not in titles[0] and "OPTIMISTIC" in titles[1]
    assert labels == [" tuned-holdout", "OPTIMISTIC subject"]
    assert report.short_protocol(rows[0]) == "tuned-holdout"
    assert report.short_protocol(rows[1]) == "OPTIMISTIC subject 4-fold"


def test_compare_mixes_frozen_and_tuned_stores_honestly(cnmc_tree, tuned_run, tmp_path):
    tuned = extract(cnmc_tree, tmp_path / "t.h5", weights=tuned_run / "last.pt", **EXTRACT)
    frozen = extract(cnmc_tree, tmp_path / "f.h5", weights="none", seed=0, **EXTRACT)
    rows = compare([frozen, tuned, [frozen, tuned]], ["logistic"], n_folds=3, n_boot=20)
    assert [r.protocol for r in rows] == ["subject", "tuned-holdout", "tuned-holdout"]
    assert rows[0].optimistic is False and rows[0].tuned is None and rows[1].optimistic is False
    assert rows[1].n_test == rows[2].n_test == 8 + 6  # a fused store keeps the tuned store's roles
    with pytest.raises(FeatxError, match="allow_optimistic"):
        compare([frozen, tuned], ["logistic"], cv="subject", n_folds=3)
    rows = compare([frozen, tuned], ["logistic"], cv="subject", n_folds=3, n_boot=20, allow_optimistic=True)
    assert [r.optimistic for r in rows] == [False, True]
    result, out = _cli("compare", frozen, tuned, "--heads", "logistic", "--cv", "subject", "--folds", "3",
                       "--optimistic", "--boot", "20", "--no-plots", "--out", tmp_path / "cmp")
    assert result.exit_code == 0, out
    assert "OPTIMISTIC subject 3-fold" in out and "features tuned on test subjects" in out
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [r.get("optimistic", False) for r in saved] == [False, True]


def test_store_roles_match_by_path_subject_and_name():
    from featx.data import Collection, Sample
    from featx.provenance import record, store_roles

    samples = [Sample(f"fold_0/all/UID_{s}_{i}_1_all.bmp", "all", s, "fold_0") for s in ("1", "2", "3")
               for i in range(2)]
    col = Collection(Path("/data/a"), "cnmc", samples, ["all", "hem"])
    # --val image: image 0 of each subject trained on, image 1 validated, so every val row shares a subject
    card = {"epoch": 1, "provenance": record(col, [0, 2, 4], [1, 3, 5])}
    roles, attr = store_roles(card, col, checkpoint="best.pt", sha256="x")
    assert roles == ["train", "train-subject"] * 3 and attr["same_root"] is True
    # subject-grouped: subject 3 validated only
    card = {"epoch": 1, "provenance": record(col, [0, 1, 2, 3], [4, 5])}
    assert store_roles(card, col, checkpoint="b", sha256="x")[0] == ["train"] * 4 + ["val", "val"]
    # another copy in another layout: the file name and subject still identify the trained images
    moved = Collection(Path("/elsewhere"), "kaggle", [Sample("training_data/" + s.path.split("/", 1)[1], s.label,
                                                             s.subject, s.split) for s in samples], ["all", "hem"])
    roles, attr = store_roles(card, moved, checkpoint="b", sha256="x")
    assert roles == ["train"] * 4 + ["val", "val"]
    assert attr["same_root"] is False and "file name and subject (4)" in attr["match"]
    # weights that are not a fine-tuned checkpoint: no roles at all
    assert store_roles(None, col, checkpoint="w.pt", sha256="x") is None
    # a checkpoint fine-tuned from one that recorded nothing: every row counts as seen
    chained = {"epoch": 1, "provenance": record(col, [0], [5], start_card={"epoch": 3})}
    assert set(store_roles(chained, col, checkpoint="b", sha256="x")[0]) == {"unknown"}
