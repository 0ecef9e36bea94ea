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
from featx.cli import app
from featx.cli.app import flag
from featx.data import discover
from featx.data.images import ImageDataset, make_transform
from featx.errors import FeatxError, FeatxWarning
from featx.evaluation import compare, evaluate, tuned_protocol
from featx.extract import extract
from featx.finetune import finetune
from featx.store import FeatureSet, load_features, store_settings, summarize

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import invoke as _cli  # noqa: E402
from cli_helpers import runner  # noqa: E402
from digits_data import make_random_label_digits  # noqa: E402

CPU = dict(workers=0, device="cpu")
EXTRACT = dict(backbone="cnn", taps="fc", **CPU)


# small fits: one thread is faster on a busy CPU
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread", "wide_console")]




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
        assert "\n" not in str(err.value) and "use `featx.hybrid(...)`" in str(err.value)
        assert "use `featx hybrid`, or add --optimistic" in err.value.render(flag)
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
    with pytest.raises(FeatxError, match=r"none is left to test on.*featx\.hybrid\(\.\.\.\).*val='subject'"):
        tuned_protocol(_featureset(["train"] * 10 + ["train-subject"] * 2, subjects))
    # a checkpoint that recorded nothing: every row counts as seen
    with pytest.raises(FeatxError, match="none is left to test on"):
        tuned_protocol(_featureset(["unknown"] * 12, subjects))


def test_evaluate_marks_rows_and_plain_stores_are_unchanged():
    subjects = [s for s in "AABBCCDDEEFFGGHH"]
    roles = ["train"] * 10 + ["val"] * 2 + [""] * 4
    fs = _featureset(roles, subjects)
    row = evaluate(fs, "logistic")
    assert row.protocol == "tuned-holdout" and row.optimistic is False
    assert row.n_test == 6 and row.n_train == 10
    assert row.tuned["n_seen"] == 10 and row.tuned["n_unseen"] == 6
    opt = evaluate(fs, "logistic", cv="subject", n_folds=4, allow_optimistic=True)
    assert opt.optimistic is True and "OPTIMISTIC" in opt.protocol_label and opt.n_test == 16
    plain = _featureset(roles, subjects)
    plain.roles, plain.tuned = None, []
    row = evaluate(plain, "logistic", n_folds=4)
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
    # fold_2 holds one subject per class: too few to split, so every validation image chose best.pt's epoch
    assert sorted(prov["val_choose"]["paths"]) == fold2
    assert best["card"]["epoch_choice"] == "val-choose" and last["card"]["epoch_choice"] == "fixed"
    assert prov["data_root"] == str(col.root) and prov["dataset_fingerprint"] == col.fingerprint()
    by_path = {s.path: s.subject for s in col.samples}
    assert all(by_path[p] == s for p, s in zip(prov["train"]["paths"], prov["train"]["subjects"]))
    card = json.loads((tuned_run / "card.json").read_text())  # the readable card has counts, not path lists
    assert card["provenance"]["n_train"] == len(folds01) and card["provenance"]["n_val"] == len(fold2)
    with open(tuned_run / "provenance.csv", newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in listed if r["role"] == "train") == folds01
    assert sorted(r["path"] for r in listed if r["role"] == "val-choose") == fold2

    store = extract(cnmc_tree, tmp_path / "t.h5", weights=tuned_run / "best.pt", **EXTRACT)
    with h5py.File(store) as h5:
        roles = dict(zip(h5["samples/path"].asstr()[:], h5["samples/network_role"].asstr()[:]))
        attr = json.loads(h5.attrs["tuned_provenance"])
        assert h5.attrs["weights_provenance"] == "featx"
    expect = {s.path: ("train" if s.split in ("fold_0", "fold_1") else "val-choose" if s.split == "fold_2" else "")
              for s in col.samples}
    assert roles == expect
    assert attr["sha256"] == last_sha(tuned_run / "best.pt") and attr["n_train"] == len(folds01)
    assert attr["same_root"] is True and attr["roles"] == {"train": 16, "val-choose": 8, "unseen": 10}
    assert summarize(store)["network_roles"] == {"train": 16, "val-choose": 8, "unseen": 10}
    result, out = _cli("info", store)
    assert result.exit_code == 0 and "fine-tuned network's rows: train 16, val-choose 8, unseen 10" in out
    fs = load_features(store)
    assert [fs.roles[list(fs.paths).index(p)] for p in folds01] == ["train"] * len(folds01)

    # default classify: heads on the 24 rows best.pt saw (16 trained on, 8 that chose its epoch), tested on
    # the 6 labelled prelim rows it never saw
    result, out = _cli("classify", store, "--head", "logistic", "--out", tmp_path / "res")
    assert result.exit_code == 0, out
    row = json.loads((tmp_path / "res" / "results.json").read_text())[0]
    assert row["protocol"] == "tuned-holdout" and row["n_train"] == 16 + 8 and row["n_test"] == 6
    assert "8 rows were validation images that chose the checkpoint's epoch" in row["settings"]["cv_note"]
    assert "tuned-holdout" in out and "OPTIMISTIC" not in out and "provenance" not in out
    # last.pt of this fixed-length run: no validation image chose its epoch, so fold_2 is unseen
    store_last = extract(cnmc_tree, tmp_path / "last.h5", weights=tuned_run / "last.pt", **EXTRACT)
    assert summarize(store_last)["network_roles"] == {"train": 16, "val": 8, "unseen": 10}
    assert evaluate(load_features(store_last), "logistic").n_test == 8 + 6
    # --eval prelim: never seen, so allowed and named as tuned
    result, out = _cli("classify", store, "--head", "logistic", "--eval", "prelim", "--out", tmp_path / "p")
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
    row = evaluate(load_features(store), "logistic")
    assert row.protocol == "tuned-holdout" and "data root differs" in row.settings["cv_note"]

    # a store of only the rows the network trained on: nothing to test, refused with what to do
    seen = extract(cnmc_tree, tmp_path / "seen.h5", weights=tuned_run / "last.pt", splits=["fold_0", "fold_1"],
                   **EXTRACT)
    result, out = _cli("classify", seen, "--head", "logistic", "--out", tmp_path / "r")
    assert result.exit_code == 1 and "featx hybrid" in out and "--eval prelim" in out
    assert "Traceback" not in out

    # a fine-tuned checkpoint that lost its provenance: every row counts as seen, and its weights are of
    # unknown provenance (a warning; the OPTIMISTIC rows asked for say so too)
    ck = torch.load(tuned_run / "last.pt", map_location="cpu", weights_only=True)
    del ck["card"]["provenance"]
    torch.save(ck, tmp_path / "old.pt")
    with pytest.warns(FeatxWarning, match=r"old.pt: weights of unknown provenance \(a featx checkpoint that does "
                                          r"not record.*weights_never_saw_images"):
        old = extract(cnmc_tree, tmp_path / "old.h5", weights=tmp_path / "old.pt", **EXTRACT)
    assert set(load_features(old).roles) == {"unknown"}
    with pytest.raises(FeatxError, match="none is left to test on"):
        evaluate(load_features(old), "logistic")
    row = evaluate(load_features(old), "logistic", cv="subject", n_folds=3, allow_optimistic=True)
    assert row.optimistic and row.weights_provenance == "unknown"
    assert row.marks == ["OPTIMISTIC", "weights of unknown provenance"]
    # the user's statement replaces the lost record: no roles, plain subject CV, rows say what was stated
    stated = extract(cnmc_tree, tmp_path / "stated.h5", weights=tmp_path / "old.pt", weights_never_saw_images=True,
                     **EXTRACT)
    assert load_features(stated).roles is None
    row = evaluate(load_features(stated), "logistic", n_folds=3)
    assert row.protocol == "subject" and not row.marked and row.marks == ["weights stated unseen by the user"]
    # a checkpoint that records its images refuses the statement (its record is what counts)
    with pytest.raises(FeatxError, match=r"weights_never_saw_images is for weights of unknown provenance; .*last.pt "
                                         r"is a featx checkpoint that records the images it trained on"):
        extract(cnmc_tree, tmp_path / "x.h5", weights=tuned_run / "last.pt", weights_never_saw_images=True, **EXTRACT)

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
# Digits with random labels carry no signal: a row above chance has seen its test images (or chose on them).
# Every statistical check pools the test images of all seeds and allows 3 binomial sd around chance.
SEEDS = (0, 1, 2)
DIGITS = dict(n_subjects=40, per_subject=4, size=32)  # 8 validation subjects (32 images) per run, 128 trained on
# a cosine schedule to lr 0 ends every run memorised (train accuracy 0.99-1.0 with these settings)
MEMORISE = ("--backbone", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "16", "--lr", "4e-3",
            "--batch-size", "8", "--dropout", "0", "--no-augment", "--schedule", "cosine", "--weight-decay", "0",
            "--class-weight", "none", "--workers", "0", "--device", "cpu", "--keep", "both", "-q")


def _within_chance(correct: int, n: int) -> bool:
    """Pooled accuracy within 3 binomial sd of 0.5."""
    return abs(correct / n - 0.5) <= 3 * (0.25 / n) ** 0.5


def _above_chance(correct: int, n: int) -> bool:
    """Pooled accuracy more than 3 binomial sd above 0.5."""
    return correct / n > 0.5 + 3 * (0.25 / n) ** 0.5


def _correct(row: dict) -> int:
    return int(round(row["accuracy"] * row["n_test"]))


@pytest.fixture(scope="module")
def memorised(tmp_path_factory) -> list[dict]:
    """Per seed: random-label digits and a cnn fine-tuned on them (fixed length, validated on 8 subjects) until it
    memorised its training images. ``run`` holds best.pt and last.pt."""
    runs = []
    for seed in SEEDS:
        root = tmp_path_factory.mktemp(f"memorised{seed}")
        manifest = make_random_label_digits(root / "digits", seed=seed, **DIGITS)
        result, out = _cli("finetune", manifest, *MEMORISE, "--seed", seed, "--out", root / "run")
        assert result.exit_code == 0, out
        prov = torch.load(root / "run" / "best.pt", map_location="cpu", weights_only=True)["card"]["provenance"]
        runs.append({"seed": seed, "root": root, "manifest": manifest, "run": root / "run", "prov": prov})
    return runs


def _train_accuracy(run: dict) -> float:
    """last.pt's accuracy on the images it trained on (eval mode, no augmentation)."""
    model = create_backbone("cnn", run["run"] / "last.pt")
    col = discover(run["manifest"])
    index = {s.path: i for i, s in enumerate(col.samples)}
    train = [index[p] for p in run["prov"]["train"]["paths"]]
    ds = ImageDataset(col, make_transform(32, model.config.mean, model.config.std), indices=train)
    with torch.no_grad():
        pred = model(torch.stack([ds[i][0] for i in range(len(ds))])).argmax(1)
    truth = torch.tensor([model.classes.index(col.samples[i].label) for i in train])
    return float((pred == truth).float().mean())


def test_random_labels_tuned_store_scores_chance_and_optimistic_cv_is_marked(memorised):
    """The cnn memorised its training images; classify with default options must report chance on rows it never
    saw, and the explicit OPTIMISTIC CV (which leaks) must say so."""
    honest, optimistic = [0, 0], [0, 0]  # (correct, n) pooled over seeds
    for run in memorised:
        assert _train_accuracy(run) > 0.85, run["seed"]  # the network saw and memorised its training images
        root, store = run["root"], run["root"] / "tuned.h5"
        result, out = _cli("extract", run["manifest"], "--backbone", "cnn", "--weights", run["run"] / "last.pt",
                           "--workers", "0", "--device", "cpu", "-q", "--out", store)
        assert result.exit_code == 0 and "warning" not in out, out

        # default options: only rows the network never saw are scored (last.pt of a fixed-length run: every
        # validation image, none of which chose its epoch)
        result, out = _cli("classify", store, "--out", root / "default", "--no-plots")
        assert result.exit_code == 0, out
        row = json.loads((root / "default" / "results.json").read_text())[0]
        assert row["protocol"] == "tuned-holdout" and not row["optimistic"] and "tuned-holdout" in out
        assert row["n_test"] == len(run["prov"]["val"]["paths"]) and "OPTIMISTIC" not in out
        honest = [honest[0] + _correct(row), honest[1] + row["n_test"]]

        # asked for explicitly: CV over rows the network memorised
        opt_dir = root / "optimistic"
        result, out = _cli("classify", store, "--cv", "subject", "--optimistic", "--out", opt_dir)
        assert result.exit_code == 0, out
        opt = json.loads((opt_dir / "results.json").read_text())[0]
        assert opt["optimistic"] is True and opt["protocol_label"].startswith("OPTIMISTIC")
        optimistic = [optimistic[0] + _correct(opt), optimistic[1] + opt["n_test"]]
    assert _within_chance(*honest), honest
    assert _above_chance(*optimistic), optimistic  # it leaks, which is why it is marked

    # --cv subject without --optimistic: refused in one line
    store, root = memorised[0]["root"] / "tuned.h5", memorised[0]["root"]
    result, out = _cli("classify", store, "--cv", "subject", "--out", root / "refused")
    assert result.exit_code == 1 and "--optimistic" in out and "Traceback" not in out
    # every output of the OPTIMISTIC run says so
    result, out = _cli("table", root / "optimistic")
    assert "OPTIMISTIC" in out and "features tuned on test subjects" in out          # terminal table + caption
    md = (root / "optimistic" / "results.md").read_text()
    assert "**\\* OPTIMISTIC" in md and "OPTIMISTIC rows test on images" in md
    with open(root / "optimistic" / "results.csv", newline="") as fh:
        csv_row = next(csv.DictReader(fh))
    assert csv_row["optimistic"] == "True" and csv_row["protocol_label"].startswith("OPTIMISTIC")
    assert (root / "optimistic" / "comparison.png").is_file()


def test_random_labels_plain_state_dict_is_marked_unknown_provenance(memorised, tmp_path):
    """A plain state dict of a network that memorised these images bypasses featx provenance: extract warns in
    one line and every output of every row marks it; the user's statement is recorded instead when given."""
    scored = [0, 0]
    for run in memorised:
        plain = run["root"] / "plain.pt"
        torch.save(torch.load(run["run"] / "last.pt", map_location="cpu", weights_only=True)["model"], plain)
        store = run["root"] / "plain.h5"
        result = runner.invoke(app, [str(a) for a in ("extract", run["manifest"], "--backbone", "cnn", "--weights",
                                                      plain, "--image-size", "32", "--workers", "0", "--device",
                                                      "cpu", "-q", "--out", store)])
        assert result.exit_code == 0, result.output
        warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
        assert len(warning) == 1 and "plain.pt: weights of unknown provenance (not a featx checkpoint" in warning[0]
        assert warning[0].endswith("say so with --weights-never-saw-images"), warning
        with h5py.File(store) as h5:
            assert h5.attrs["weights_provenance"] == "unknown" and "network_role" not in h5["samples"]
        result, out = _cli("classify", store, "--out", run["root"] / "plain", *(["--no-plots"] if run["seed"] else []))
        assert result.exit_code == 0, out
        row = json.loads((run["root"] / "plain" / "results.json").read_text())[0]
        assert row["protocol"] == "subject" and row["weights_provenance"] == "unknown" and not row["optimistic"]
        scored = [scored[0] + _correct(row), scored[1] + row["n_test"]]
    # the leak the mark warns about: subject-level CV scores images the network memorised
    assert _above_chance(*scored), scored

    # every output of a run says so: terminal table and caption, results.json/.csv/.md, featx table, the report
    folder = memorised[0]["root"] / "plain"
    result, out = _cli("table", folder)
    assert "* subject 5-fold; weights of unknown provenance" in out
    assert "* weights of unknown provenance: they may have seen the test images" in out
    with open(folder / "results.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["weights_provenance"] == "unknown"
    md = (folder / "results.md").read_text()
    assert "**\\* subject-level 5-fold; weights of unknown provenance**" in md
    assert "Weights of unknown provenance: the weights" in md
    result, out = _cli("report", folder, "--out", tmp_path / "report.html")
    assert result.exit_code == 0, out
    html = (tmp_path / "report.html").read_text()
    assert '<span class="flag">* weights of unknown provenance</span>' in html and 'class="marked"' in html
    assert "Weights of unknown provenance: the weights" in html

    # the user states that the weights never saw these images: the store records it, rows carry it unmarked
    run = memorised[0]
    stated = tmp_path / "stated.h5"
    result, out = _cli("extract", run["manifest"], "--backbone", "cnn", "--weights", run["root"] / "plain.pt",
                       "--image-size", "32", "--weights-never-saw-images", "--workers", "0", "--device", "cpu", "-q",
                       "--out", stated)
    assert result.exit_code == 0 and "warning" not in out, out
    assert "weights stated unseen by the user: every result row from this store says so" in out
    with h5py.File(stated) as h5:
        assert h5.attrs["weights_provenance"] == "stated-unseen"
    result, out = _cli("classify", stated, "--out", tmp_path / "stated", "--no-plots")
    assert result.exit_code == 0, out
    row = json.loads((tmp_path / "stated" / "results.json").read_text())[0]
    assert row["weights_provenance"] == "stated-unseen" and "unknown provenance" not in out
    assert "subject 5-fold; weights stated unseen by the user" in out
    # resuming the plain store with the statement records it there too (the features are the same)
    result, out = _cli("extract", run["manifest"], "--backbone", "cnn", "--weights", run["root"] / "plain.pt",
                       "--image-size", "32", "--weights-never-saw-images", "--workers", "0", "--device", "cpu", "-q",
                       "--out", run["root"] / "plain.h5")
    assert result.exit_code == 0, out
    assert store_settings(run["root"] / "plain.h5")["weights_provenance"] == "stated-unseen"
    # torchvision's ImageNet weights and random init are of known provenance: the statement is refused
    result, out = _cli("extract", run["manifest"], "--backbone", "cnn", "--weights", "none",
                       "--weights-never-saw-images", "--workers", "0", "--device", "cpu", "--out", tmp_path / "n.h5")
    assert result.exit_code == 1 and "random weights, whose provenance featx knows" in out


def test_random_labels_best_pt_never_tests_the_images_that_chose_its_epoch(memorised):
    """best.pt's epoch was chosen on half of the validation subjects: classify trains the heads on them (seen) and
    tests only the other half, which scores chance."""
    scored = [0, 0]
    for run in memorised:
        prov = run["prov"]
        chose, val = set(prov["val_choose"]["paths"]), set(prov["val"]["paths"])
        # about half of the validation subjects chose the epoch, the others did not
        choose_subjects = set(prov["val_choose"]["subjects"])
        score_subjects = {s for p, s in zip(prov["val"]["paths"], prov["val"]["subjects"]) if p not in chose}
        assert chose < val and len(choose_subjects) >= 2 and len(score_subjects) >= 2
        assert not choose_subjects & score_subjects
        store = extract(run["manifest"], run["root"] / "best.h5", weights=run["run"] / "best.pt", **EXTRACT)
        fs = load_features(store)
        roles = dict(zip(fs.paths, fs.roles))
        assert {p for p, r in roles.items() if r == "val-choose"} == chose
        assert {p for p, r in roles.items() if r == "val"} == val - chose
        row = evaluate(fs, "svm")
        assert row.protocol == "tuned-holdout" and row.n_test == len(val - chose)
        assert row.n_train == len(prov["train"]["paths"]) + len(chose)  # the heads may train on seen rows
        tested = set(row.predictions["path"])
        assert tested == val - chose and not tested & chose
        scored = [scored[0] + int(round(row.mean("accuracy") * row.n_test)), scored[1] + row.n_test]
    assert _within_chance(*scored), scored


def test_plots_and_tables_mark_optimistic_rows(tmp_path, monkeypatch):
    from featx import report
    from featx.report import files as report_files

    titles, labels = [], []
    real_conf, real_forest = report_files.plot_confusion, report_files.plot_forest
    monkeypatch.setattr(report_files, "plot_confusion", lambda cm, classes, path, title=None: titles.append(title)
                        or real_conf(cm, classes, path, title=title))

    def forest(rows, path, **kw):
        labels.extend(f"{r.flag} {r.protocol}" for r in rows)
        return real_forest(rows, path, **kw)

    monkeypatch.setattr(report_files, "plot_forest", forest)
    fs = _featureset(["train"] * 10 + ["val"] * 2 + [""] * 4, [s for s in "AABBCCDDEEFFGGHH"])
    rows = [evaluate(fs, "logistic"), evaluate(fs, "logistic", cv="subject", n_folds=4,
                                                          allow_optimistic=True)]
    report.write_results(rows, tmp_path)
    assert "OPTIMISTIC" not in titles[0] and "OPTIMISTIC" in titles[1]
    assert labels == [" tuned-holdout", "OPTIMISTIC subject"]
    assert report.short_protocol(rows[0]) == "tuned-holdout"
    assert report.short_protocol(rows[1]) == "OPTIMISTIC subject 4-fold"


def test_fine_tuning_from_weights_of_unknown_provenance_carries_the_mark(cnmc_tree, tuned_run, tmp_path):
    """Fine-tuning does not launder weights of unknown provenance: the run warns, its row is marked, and so is every
    row of a store extracted with its checkpoint; a statement made when fine-tuning travels the same way."""
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(tuned_run / "last.pt", map_location="cpu", weights_only=True)["model"], plain)
    opts = dict(backbone="cnn", weights=plain, image_size=32, epochs=1, batch_size=8, val="fold_2", seed=0, **CPU)
    events = []
    summary = finetune(cnmc_tree, tmp_path / "run", callback=lambda kind, info: events.append((kind, info)), **opts)
    warnings = [info["template"] for kind, info in events if kind == "warning"]
    assert len(warnings) == 1 and "plain.pt: weights of unknown provenance (not a featx checkpoint" in \
        str(FeatxError(warnings[0])) and str(FeatxError(warnings[0])).endswith("weights_never_saw_images")
    assert summary["row"].weights_provenance == "unknown" and summary["row"].marked
    assert json.loads((tmp_path / "run" / "results.json").read_text())[0]["weights_provenance"] == "unknown"
    with pytest.warns(FeatxWarning, match="fine-tuned from weights of unknown provenance"):
        store = extract(cnmc_tree, tmp_path / "t.h5", weights=tmp_path / "run" / "best.pt", **EXTRACT)
    row = evaluate(load_features(store), "logistic")
    assert row.protocol == "tuned-holdout" and row.weights_provenance == "unknown"

    stated = finetune(cnmc_tree, tmp_path / "stated", weights_never_saw_images=True, **opts)
    assert stated["row"].weights_provenance == "stated-unseen" and not stated["row"].marked
    store = extract(cnmc_tree, tmp_path / "s.h5", weights=tmp_path / "stated" / "best.pt", **EXTRACT)
    assert store_settings(store)["weights_provenance"] == "stated-unseen"
    assert evaluate(load_features(store), "logistic").marks == ["weights stated unseen by the user"]


def test_weights_origin_of_files_checkpoints_and_older_stores():
    from featx.backbones import WeightsInfo, get_config, origin_of
    from featx.data import Collection, Sample
    from featx.provenance import record, rows_mark, stated_origin, store_roles, weights_origin

    vgg = get_config("vgg16")  # torchvision's file vgg16-397923af.pth: its sha256 starts with 397923af
    assert origin_of(vgg, WeightsInfo("file", "/w/v.pth", "397923af" + "0" * 56, None)) == "imagenet"
    assert origin_of(vgg, WeightsInfo("file", "/w/v.pth", "12345678" + "0" * 56, None)) == "unknown"
    assert origin_of(vgg, WeightsInfo("imagenet", "imagenet", "x", None)) == "imagenet"
    assert origin_of(vgg, WeightsInfo("none", "none", None, 0)) == "random"
    for origin in ("random", "imagenet", "featx"):
        with pytest.raises(FeatxError, match="is for weights of unknown provenance"):
            stated_origin(origin, True, "w.pt")
    assert stated_origin("unknown", True, "w.pt") == "stated-unseen" and stated_origin("featx", False, "w") == "featx"

    samples = [Sample(f"a/{i}.png", "all", f"S{i // 2}", "") for i in range(6)]
    col = Collection(Path("/d"), "manifest", samples, ["all", "hem"])
    unknown_start = record(col, [0, 1], [2, 3], start_weights="unknown")
    assert weights_origin("file", {"provenance": unknown_start}) == "unknown"
    again = record(col, [0, 1], [2, 3], start_card={"epoch": 1, "provenance": unknown_start})
    assert weights_origin("file", {"provenance": again}) == "unknown"  # carried on through fine-tuning again
    # a statement made when fine-tuning from a checkpoint that lost its record stands in for that record
    lost = record(col, [0, 1], [2, 3], start_card={"epoch": 1}, start_weights="stated-unseen")
    card = {"epoch": 1, "provenance": lost}
    assert weights_origin("file", card) == "stated-unseen"
    assert store_roles(card, col, checkpoint="b", sha256="x")[0] == ["train", "train", "val-choose", "val-choose",
                                                                     "", ""]
    assert weights_origin("file", {"provenance": record(col, [0], [2], start_card={"epoch": 1})}) == "unknown"

    # rows from stores: stores of older featx (no weights_provenance) are read from their other attributes
    assert rows_mark([{"weights_kind": "imagenet"}, {"weights_kind": "none"}]) is None
    assert rows_mark([{"weights_kind": "file"}]) == "unknown"
    assert rows_mark([{"weights_kind": "file", "tuned_provenance": json.dumps({"provenance": "recorded"})}]) is None
    assert rows_mark([{"weights_provenance": "stated-unseen"}, {"weights_provenance": "featx"}]) == "stated-unseen"
    assert rows_mark([{"weights_provenance": "stated-unseen"}, {"weights_provenance": "unknown"}]) == "unknown"


def test_a_store_of_an_older_featx_counts_its_validation_rows_as_seen(cnmc_tree, tuned_run, tmp_path):
    """Before featx recorded which validation images chose the epoch, best.pt chose on all of them: a store
    extracted then (no provenance_version in its attribute) counts its val rows as seen, and says why."""
    store = extract(cnmc_tree, tmp_path / "old.h5", weights=tuned_run / "last.pt", **EXTRACT)
    assert set(load_features(store).roles) == {"train", "val", ""}
    with h5py.File(store, "r+") as h5:
        attr = json.loads(h5.attrs["tuned_provenance"])
        del attr["provenance_version"]
        h5.attrs["tuned_provenance"] = json.dumps(attr)
    fs = load_features(store)
    assert sorted(set(fs.roles)) == ["", "train", "val-choose"]
    row = evaluate(fs, "logistic")
    assert row.n_test == 6 and "did not record which validation images chose" in row.settings["cv_note"]


def test_compare_mixes_frozen_and_tuned_stores_honestly(cnmc_tree, tuned_run, tmp_path):
    tuned = extract(cnmc_tree, tmp_path / "t.h5", weights=tuned_run / "last.pt", **EXTRACT)
    frozen = extract(cnmc_tree, tmp_path / "f.h5", weights="none", seed=0, **EXTRACT)
    rows = compare([frozen, tuned, [frozen, tuned]], ["logistic"], n_folds=3)
    assert [r.protocol for r in rows] == ["subject", "tuned-holdout", "tuned-holdout"]
    assert rows[0].optimistic is False and rows[0].tuned is None and rows[1].optimistic is False
    assert rows[1].n_test == rows[2].n_test == 8 + 6  # a fused store keeps the tuned store's roles
    with pytest.raises(FeatxError, match="allow_optimistic"):
        compare([frozen, tuned], ["logistic"], cv="subject", n_folds=3)
    rows = compare([frozen, tuned], ["logistic"], cv="subject", n_folds=3, allow_optimistic=True)
    assert [r.optimistic for r in rows] == [False, True]
    result, out = _cli("compare", frozen, tuned, "--heads", "logistic", "--cv", "subject", "--folds", "3",
                       "--optimistic", "--no-plots", "--out", tmp_path / "cmp")
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
    # subject-grouped: subject 3 validated only, image 4 chose best.pt's epoch, image 5 did not
    prov = record(col, [0, 1, 2, 3], [4, 5], choose=[4])
    card = {"epoch": 1, "epoch_choice": "val-choose", "provenance": prov}
    roles, attr = store_roles(card, col, checkpoint="b", sha256="x")
    assert roles == ["train"] * 4 + ["val-choose", "val"]
    assert "1 were validation images that chose its epoch (seen), 1 validation images that did not" in attr["match"]
    # last.pt of a fixed-length run: no validation image chose its epoch
    fixed = {"epoch": 1, "epoch_choice": "fixed", "provenance": prov}
    assert store_roles(fixed, col, checkpoint="b", sha256="x")[0] == ["train"] * 4 + ["val", "val"]
    # a card of featx before the split (no epoch_choice, no val_choose): every validation image chose the epoch
    old_prov = {k: v for k, v in prov.items() if k != "val_choose"}
    assert store_roles({"epoch": 1, "provenance": old_prov}, col, checkpoint="b", sha256="x")[0] == \
        ["train"] * 4 + ["val-choose", "val-choose"]
    # another copy in another layout: the file name and subject still identify the trained and choosing images
    moved = Collection(Path("/elsewhere"), "kaggle", [Sample("training_data/" + s.path.split("/", 1)[1], s.label,
                                                             s.subject, s.split) for s in samples], ["all", "hem"])
    roles, attr = store_roles(card, moved, checkpoint="b", sha256="x")
    assert roles == ["train"] * 4 + ["val-choose", "val"]
    assert attr["same_root"] is False and "file name and subject (4)" in attr["match"]
    # fine-tuning again from that checkpoint: the images that chose its epoch count as trained on
    again = record(col, [0], [5], start_card=card)
    assert sorted(again["inherited"]["paths"]) == sorted([samples[i].path for i in (0, 1, 2, 3, 4)])
    # weights that are not a fine-tuned checkpoint: no roles at all
    assert store_roles(None, col, checkpoint="w.pt", sha256="x") is None
    # a checkpoint fine-tuned from one that recorded nothing: every row counts as seen
    chained = {"epoch": 1, "provenance": record(col, [0], [5], start_card={"epoch": 3})}
    assert set(store_roles(chained, col, checkpoint="b", sha256="x")[0]) == {"unknown"}
