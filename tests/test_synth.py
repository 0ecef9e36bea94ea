"""featx.data.synth: the C-NMC-like generator writes the original layout, deterministically, and leaks by subject."""
from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from featx.cli import app
from featx.data import discover
from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.evaluation.splits import make_splits

TRAIN_NAME = re.compile(r"^UID_(\d+|[Hh]\d+)_(\d+)_(\d+)_(all|hem)\.bmp$")
PRELIM = "C-NMC_test_prelim_phase_data"
FINAL = "C-NMC_test_final_phase_data"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_tree_gives_every_subject_fold_and_prelim_three_subjects_of_each_class(tmp_path):
    """`featx synth` with its defaults (the demo's and README's data): featx's own subject-grouped 5-fold CV
    over the training subjects tests at least 3 subjects of each class in every fold (for several CV seeds),
    and the preliminary phase holds at least 3 subjects of each class; the tree stays small."""
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    samples = [s for s in discover(tmp_path / "d").samples if s.label is not None]
    subjects = np.array([s.subject for s in samples])
    labels = np.array([s.label for s in samples])
    splits = np.array([s.split for s in samples])
    train = ~np.isin(splits, ["prelim", "final"])
    assert len(set(subjects[train])) >= 45 and train.sum() <= 200  # ~30 ALL + 15 HEM, a few cells each
    y = (labels == "hem").astype(int)
    for seed in range(5):
        protocol = make_splits(subjects, y, splits, cv="subject", n_folds=5, seed=seed)
        assert protocol.name == "subject" and protocol.n_folds == 5
        for _, test in protocol.folds:
            for cls in ("all", "hem"):
                assert len(set(subjects[test][labels[test] == cls])) >= 3, (seed, cls, sorted(set(subjects[test])))
    prelim = splits == "prelim"
    for cls in ("all", "hem"):
        assert len(set(subjects[prelim & (labels == cls)])) >= 3, cls
    with Image.open(next((tmp_path / "d").rglob("*.bmp"))) as img:
        assert max(img.size) <= 96


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    kw = dict(subjects_all=2, subjects_hem=2, cells_per_subject=3, prelim_subjects_all=2, prelim_subjects_hem=1,
              prelim_cells_per_subject=2, final_cells=3, image_size=32)
    a = synthesize(tmp_path / "a", seed=7, **kw)
    b = synthesize(tmp_path / "b", seed=7, **kw)
    synthesize(tmp_path / "c", seed=8, **kw)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(fa) == 2 * 3 + 2 * 3 + 3 * 2 + 3 + 1  # train + prelim (3 subjects x 2) + final + CSV
    assert fa == fb
    assert fa != fc
    assert a["counts"] == b["counts"] and a["subjects"] == b["subjects"]
    assert a["total"] == 2 * 3 + 2 * 3 + 6 + 3


def test_training_layout_names_and_folds(cnmc_tree):
    train = cnmc_tree / "C-NMC_training_data"
    assert sorted(p.name for p in train.iterdir()) == ["fold_0", "fold_1", "fold_2"]
    fold_of: dict[str, set[str]] = {}
    count = {"all": 0, "hem": 0}
    for fold in ("fold_0", "fold_1", "fold_2"):
        assert sorted(p.name for p in (train / fold).iterdir()) == ["all", "hem"]
        for cls in ("all", "hem"):
            names = sorted(p.name for p in (train / fold / cls).iterdir())
            assert names, f"{fold}/{cls} is empty"
            for name in names:
                m = TRAIN_NAME.match(name)
                assert m, name
                assert m.group(4) == cls
                subject = m.group(1)
                assert subject[0].isdigit() == (cls == "all")
                fold_of.setdefault(subject, set()).add(fold)
                count[cls] += 1
    assert all(len(folds) == 1 for folds in fold_of.values())  # each subject lives in one fold
    assert count == {"all": 3 * 4, "hem": 3 * 4}
    subjects = set(fold_of)
    assert len(subjects) == 6
    assert sum(1 for s in subjects if s.startswith("h")) == 1  # one lower-case `h` subject, as in the data
    assert len({s.upper() for s in subjects}) == 6


def test_prelim_csv_and_final_phase(cnmc_tree):
    prelim = cnmc_tree / PRELIM
    assert sorted(p.name for p in prelim.iterdir()) == [PRELIM, PRELIM + "_labels.csv"]
    images = sorted(p.name for p in (prelim / PRELIM).iterdir())
    assert images == sorted(f"{i}.bmp" for i in range(1, 7))
    with open(prelim / (PRELIM + "_labels.csv"), newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Patient_ID", "new_names", "labels"]
    body = rows[1:]
    assert [r[1] for r in body] == [f"{i}.bmp" for i in range(1, 7)]
    train_subjects = {TRAIN_NAME.match(p.name).group(1).upper()
                      for p in (cnmc_tree / "C-NMC_training_data").rglob("*.bmp")}
    prelim_subjects = set()
    for patient_id, _, label in body:
        m = TRAIN_NAME.match(patient_id)
        assert m, patient_id
        assert label == ("1" if m.group(4) == "all" else "0")
        prelim_subjects.add(m.group(1).upper())
    assert len(prelim_subjects) == 2 and not prelim_subjects & train_subjects
    assert sorted(r[2] for r in body) == ["0"] * 3 + ["1"] * 3
    # The numbering is shuffled: not all ALL cells first.
    assert [r[2] for r in body] != sorted((r[2] for r in body), reverse=True)
    final = cnmc_tree / FINAL
    assert [p.name for p in final.iterdir()] == [FINAL]
    assert sorted(p.name for p in (final / FINAL).iterdir()) == sorted(f"{i}.bmp" for i in range(1, 5))


def test_images_are_rgb_cells_on_black_and_all_cells_are_larger(cnmc_tree):
    areas = {"all": [], "hem": []}
    for p in (cnmc_tree / "C-NMC_training_data").rglob("*.bmp"):
        with Image.open(p) as img:
            assert img.format == "BMP" and img.mode == "RGB" and img.size == (40, 40)
            a = np.asarray(img)
        assert a[:2, :2].max() == 0 and a[-2:, -2:].max() == 0  # black background corners
        assert a[18:22, 18:22].sum(-1).min() > 100  # the cell covers the centre
        areas[p.name[-7:-4]].append((a.sum(-1) > 30).mean())
    assert np.mean(areas["all"]) > 1.3 * np.mean(areas["hem"])


def test_summary_counts_match_files(tmp_path, cnmc_tree_settings):
    summary = synthesize(tmp_path / "d", **{**cnmc_tree_settings, "final_cells": 5})
    root = tmp_path / "d"
    assert summary["root"] == str(root.resolve())
    for fold in ("fold_0", "fold_1", "fold_2"):
        for cls in ("all", "hem"):
            n = len(list((root / "C-NMC_training_data" / fold / cls).glob("*.bmp")))
            assert summary["counts"][fold][cls] == n == 4
    assert summary["counts"]["prelim"] == {"all": 3, "hem": 3}
    assert summary["counts"]["final"] == {"unlabelled": 5}
    assert summary["total"] == 24 + 6 + 5
    assert len(summary["subjects"]["final"]) == 2


def test_refuses_existing_tree_and_bad_settings(tmp_path, cnmc_tree, cnmc_tree_settings):
    with pytest.raises(FeatxError, match="already holds C-NMC_training_data"):
        synthesize(cnmc_tree, **cnmc_tree_settings)
    with pytest.raises(FeatxError, match="image_size=8 must be an integer >= 16"):
        synthesize(tmp_path / "x", image_size=8)
    with pytest.raises(FeatxError, match="subjects_all=0"):
        synthesize(tmp_path / "x", subjects_all=0)
    tiny = dict(subjects_all=1, subjects_hem=1, cells_per_subject=1, prelim_subjects_all=0,
                prelim_subjects_hem=0, final_cells=0, image_size=16)
    synthesize(tmp_path / "y", **tiny, seed=1)
    synthesize(tmp_path / "y", **tiny, seed=2, overwrite=True)
    assert len(list((tmp_path / "y").rglob("*.bmp"))) == 2


def _colour_features(root: Path):
    X, y, groups = [], [], []
    for p in sorted((root / "C-NMC_training_data").rglob("*.bmp")):
        a = np.asarray(Image.open(p), dtype=np.float64)
        mask = a.sum(-1) > 30
        pixels = a[mask]
        X.append(np.r_[pixels.mean(0), pixels.std(0), mask.mean()])
        m = TRAIN_NAME.match(p.name)
        y.append(int(m.group(4) == "all"))
        groups.append(m.group(1).upper())
    return np.array(X), np.array(y), np.array(groups)


@pytest.mark.slow
def test_image_level_split_leaks_subjects(tmp_path):
    """Colour means/stds + cell area with logistic regression: image-level CV beats subject-level CV."""
    image_acc, subject_acc, majority = [], [], []
    for seed in (0, 1, 2):
        root = tmp_path / f"leak{seed}"
        synthesize(root, subjects_all=6, subjects_hem=4, cells_per_subject=8, prelim_subjects_all=0,
                   prelim_subjects_hem=0, final_cells=0, image_size=40, seed=seed)
        X, y, groups = _colour_features(root)
        assert len(set(groups)) == 10 and len(y) == 80
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        image_acc.append(cross_val_score(clf, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean())
        subject_acc.append(cross_val_score(clf, X, y, groups=groups,
                                           cv=StratifiedGroupKFold(5, shuffle=True, random_state=0)).mean())
        majority.append(max(y.mean(), 1 - y.mean()))
    margin = np.mean(image_acc) - np.mean(subject_acc)
    assert margin >= 0.08, (image_acc, subject_acc)
    assert np.mean(subject_acc) > np.mean(majority) + 0.1  # subject-level still learns the class
    assert np.mean(image_acc) >= 0.9


MASK_KW = dict(subjects_all=2, subjects_hem=2, cells_per_subject=3, prelim_subjects_all=1, prelim_subjects_hem=1,
               prelim_cells_per_subject=2, final_cells=3, image_size=48, seed=3)


def test_nucleus_masks_leave_the_images_and_their_listing_as_they_were(tmp_path):
    """`masks=True` writes one PNG per image (training, prelim, final) at the image's path under
    C-NMC_nucleus_masks/, draws nothing from the generator (every other file is byte-identical), and the C-NMC
    reader lists the same images, labels, subjects and splits as without masks."""
    from featx.data.masks import MASKS, mask_path, nucleus_mask

    plain = synthesize(tmp_path / "plain", **MASK_KW)
    masked = synthesize(tmp_path / "masked", masks=True, **MASK_KW)
    assert masked["masks"] == str(tmp_path / "masked" / MASKS) and "masks" not in plain
    files = _files(tmp_path / "masked")
    masks = {k: v for k, v in files.items() if k.startswith(MASKS + "/")}
    assert {k: v for k, v in files.items() if k not in masks} == _files(tmp_path / "plain")
    a, b = discover(tmp_path / "plain"), discover(tmp_path / "masked")
    rows = [[(s.path, s.label, s.subject, s.split) for s in c.samples] for c in (a, b)]
    assert rows[0] == rows[1] and len(rows[0]) == plain["total"]
    assert sorted(masks) == sorted(f"{MASKS}/{s.path[:-4]}.png" for s in b.samples)
    dark_inside = 0
    for s in b.samples:
        assert mask_path(tmp_path / "masked", s.path).is_file()
        with Image.open(tmp_path / "masked" / MASKS / (s.path[:-4] + ".png")) as png:
            assert png.mode == "L" and set(np.unique(np.asarray(png))) <= {0, 255}
        nucleus = nucleus_mask(tmp_path / "masked", s.path)
        img = np.asarray(Image.open(b.abspath(b.samples.index(s))).convert("RGB")).astype(float)
        assert nucleus.shape == img.shape[:2] and 0.03 < nucleus.mean() < 0.5, s.path
        cell = img.sum(axis=2) > 30
        assert cell[nucleus].mean() > 0.99           # the nucleus lies inside the cell
        cyto = cell & ~nucleus
        # and is stained as the nucleus: its green (62 of 255 in the base stain, cytoplasm 150) is darker
        dark_inside += img[nucleus, 1].mean() < np.median(img[cyto, 1])
    assert dark_inside == len(b.samples)


def test_nucleus_mask_of_a_tree_without_masks_is_one_line(tmp_path, cnmc_tree):
    from featx.data.masks import nucleus_mask

    with pytest.raises(FeatxError, match=r"holds no nucleus masks .*write it with synth's masks option "
                                         r"\(`featx.data.synth.synthesize\(data, masks=True\)`\)"):
        nucleus_mask(cnmc_tree, "C-NMC_training_data/fold_0/all/x.bmp")
    synthesize(tmp_path / "m", masks=True, **MASK_KW)
    with pytest.raises(FeatxError, match=r"no nucleus mask .*nope\.png for image nope\.bmp"):
        nucleus_mask(tmp_path / "m", "nope.bmp")


def test_synth_masks_flag_writes_the_masks_and_overwrite_removes_stale_ones(tmp_path):
    from featx.data.masks import MASKS

    out = tmp_path / "d"
    args = ["synth", str(out), "--subjects-all", "1", "--subjects-hem", "1", "--cells-per-subject", "2",
            "--prelim-subjects-all", "0", "--prelim-subjects-hem", "0", "--final-cells", "0", "--image-size", "32"]
    res = CliRunner().invoke(app, [*args, "--masks"])
    assert res.exit_code == 0, res.output
    assert f"nucleus masks in {out / MASKS}" in " ".join(res.output.split())
    assert len(list((out / MASKS).rglob("*.png"))) == 4
    res = CliRunner().invoke(app, args)            # refused: the tree (masks included) is there
    assert res.exit_code == 1 and MASKS in res.output and "--force" in res.output
    res = CliRunner().invoke(app, [*args, "--force"])   # replaced without masks: none left that fit no image
    assert res.exit_code == 0, res.output
    assert not (out / MASKS).exists()


def _pixel_digest(root: Path) -> str:
    """sha256 over every file's relative path and content, images as their decoded pixels (so the digest says what
    was drawn, not how PIL's encoders packed it)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            if p.suffix in (".bmp", ".png"):
                with Image.open(p) as img:
                    pixels = np.ascontiguousarray(np.asarray(img))
                h.update(str(pixels.shape).encode())
                h.update(pixels.tobytes())
            else:
                h.update(p.read_bytes())
    return h.hexdigest()


#: a small tree (masks included) drawn by the generator as it was before the class_signal option (main at 7d121dd)
DIGEST_KW = dict(subjects_all=2, subjects_hem=2, cells_per_subject=3, prelim_subjects_all=1, prelim_subjects_hem=1,
                 prelim_cells_per_subject=2, final_cells=3, image_size=40, seed=11, masks=True)
DIGEST_BEFORE_CLASS_SIGNAL = "4e4104b971534c42b941b0913ce115695afb0684ce9a6c002f9dec913e0c997c"


def test_default_class_signal_draws_what_synth_always_drew(tmp_path):
    """The default (class_signal="cell") is the generator every other test and the demo rely on: the same pixels,
    masks and labels as before the option existed; "nucleus" draws other cells from the same seed."""
    cell = synthesize(tmp_path / "default", **DIGEST_KW)
    assert cell["class_signal"] == "cell"
    assert _pixel_digest(tmp_path / "default") == DIGEST_BEFORE_CLASS_SIGNAL
    synthesize(tmp_path / "explicit", class_signal="cell", **DIGEST_KW)
    assert _files(tmp_path / "explicit") == _files(tmp_path / "default")
    nucleus = synthesize(tmp_path / "nucleus", class_signal="nucleus", **DIGEST_KW)
    assert nucleus["class_signal"] == "nucleus"
    assert (nucleus["subjects"], nucleus["counts"]) == (cell["subjects"], cell["counts"])  # same subjects and folds
    listed = [sorted((s.split, s.subject, s.label) for s in discover(tmp_path / name).samples)
              for name in ("default", "nucleus")]
    assert listed[0] == listed[1]
    default_files = _files(tmp_path / "default")
    assert all(v != default_files.get(k) for k, v in _files(tmp_path / "nucleus").items() if k.endswith(".bmp"))
    with pytest.raises(FeatxError, match=r"^synth setting class_signal='size' is not a class signal; "
                                         r"choose cell or nucleus$"):
        synthesize(tmp_path / "bad", class_signal="size")


def _cell_measures(root: Path) -> dict[str, np.ndarray]:
    """Per class, per subject (the unit the stain and the cell scale are drawn for): the mean over its cells of the
    cell's area (share of the image), the nucleus's share of the cell, the spread of the nucleus's green (chromatin)
    and its median green over the cytoplasm's (density)."""
    from featx.data.masks import nucleus_mask

    collection = discover(root)
    cells: dict[tuple[str, str], list] = {}
    for i, s in enumerate(collection.samples):
        img = np.asarray(Image.open(collection.abspath(i)).convert("RGB")).astype(float)
        nucleus = nucleus_mask(root, s.path)
        cell = img.sum(axis=2) > 30
        green = img[..., 1]
        cells.setdefault((s.label, s.subject), []).append(
            (cell.mean(), nucleus.sum() / cell.sum(), green[nucleus].std(),
             np.median(green[nucleus]) / np.median(green[cell & ~nucleus])))
    return {cls: np.array([np.mean(v, axis=0) for (c, _), v in cells.items() if c == cls]) for cls in ("all", "hem")}


@pytest.mark.slow
def test_nucleus_class_signal_draws_one_cell_for_both_classes_and_differs_inside_the_nucleus(tmp_path):
    """With class_signal="nucleus" ALL and HEM cells have the same size (and nucleus share of it); the classes
    differ in the nucleus: coarse chromatin (green spread about 33 vs 15 of 255) and density (HEM's nucleus is
    darker against its cytoplasm: about 0.35 vs 0.58). The default's cells differ in size (area 0.46 vs 0.25).
    Tolerances: a class's mean over 10 subjects has a standard error near 0.02 in area (subject sd about 0.06;
    the difference of two: 0.03), so 0.06 is two of them; the nucleus differences are many times theirs."""
    kw = dict(subjects_all=10, subjects_hem=10, cells_per_subject=4, prelim_subjects_all=0, prelim_subjects_hem=0,
              final_cells=0, image_size=64, seed=4, masks=True)
    synthesize(tmp_path / "cell", **kw)
    synthesize(tmp_path / "nucleus", class_signal="nucleus", **kw)
    cell, nucleus = _cell_measures(tmp_path / "cell"), _cell_measures(tmp_path / "nucleus")
    assert cell["all"][:, 0].mean() - cell["hem"][:, 0].mean() > 0.12
    all_, hem = nucleus["all"].mean(axis=0), nucleus["hem"].mean(axis=0)
    assert abs(all_[0] - hem[0]) < 0.06, (all_, hem)          # cell area
    assert abs(all_[1] - hem[1]) < 0.06, (all_, hem)          # nucleus share of the cell
    assert all_[2] > 1.6 * hem[2] and nucleus["all"][:, 2].min() > nucleus["hem"][:, 2].max(), (all_, hem)
    assert hem[3] < all_[3] - 0.1, (all_, hem)


def test_synth_class_signal_flag_is_passed_on_and_a_bad_one_is_one_line(tmp_path):
    out = tmp_path / "d"
    args = ["synth", str(out), "--subjects-all", "1", "--subjects-hem", "1", "--cells-per-subject", "2",
            "--prelim-subjects-all", "0", "--prelim-subjects-hem", "0", "--final-cells", "0", "--image-size", "32"]
    res = CliRunner().invoke(app, [*args, "--class-signal", "nucleus"])
    assert res.exit_code == 0, res.output
    assert "32 px, seed 0; class signal in the nucleus" in " ".join(res.output.split())
    synthesize(tmp_path / "lib", **{"subjects_all": 1, "subjects_hem": 1, "cells_per_subject": 2,
                                    "prelim_subjects_all": 0, "prelim_subjects_hem": 0, "final_cells": 0,
                                    "image_size": 32, "class_signal": "nucleus"})
    assert _files(out) == _files(tmp_path / "lib")
    res = CliRunner().invoke(app, [*args[:1], str(tmp_path / "e"), "--class-signal", "size"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert " ".join(res.output.split()) == ("error: synth setting --class-signal size is not a class signal; "
                                            "choose cell or nucleus")
    assert not (tmp_path / "e").exists()
    res = CliRunner().invoke(app, args)
    assert "class signal" not in res.output
