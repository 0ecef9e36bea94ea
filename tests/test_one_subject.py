"""Designs too small for what was asked (issue 24 items 22-24): one subject with subject-grouped folds is refused
with advice that can work, image-level folds of one subject print no interval of zero width, and `--boot` is
gone (intervals are a subject jackknife)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke

from featx.errors import FeatxError
from featx.evaluation import make_splits
from featx.evaluation.intervals import OutOfFold, design_reason, intervals
from featx.extract import extract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONE_SUBJECT = ("subject-grouped CV is impossible here: only 1 subject (S1) has rows of class all, and a fold that "
               "tests it would train without that class (each class needs 2 or more subjects); add subjects, or use "
               "--cv image (image-level: one subject's cells on both sides, an optimistic estimate)")


@pytest.fixture(scope="module")
def store(cnmc_tree, tmp_path_factory) -> Path:
    """The 24 training cells of `cnmc_tree` (12 all, 12 hem), every one of subject S1, through a manifest."""
    folder = tmp_path_factory.mktemp("one_subject")
    cells = sorted((cnmc_tree / "C-NMC_training_data").rglob("*.bmp"))
    manifest = folder / "one.csv"
    manifest.write_text("path,label,subject\n" + "".join(f"{p},{p.stem.rsplit('_', 1)[1]},S1\n" for p in cells))
    out = folder / "one.h5"
    extract(manifest, out, backbone="cnn", weights="none", image_size=16, workers=0)
    return out


@pytest.mark.parametrize("command", ["compare", "classify"])
def test_one_subject_with_subject_folds_is_refused_with_advice_that_can_work(store, tmp_path, command):
    # it said "only 1 subjects for --folds 2 ... use --folds 2"
    for folds in ("2", "5"):
        result, text = invoke(command, store, "--folds", folds, "--no-plots", "--out", tmp_path / folds)
        # the last line (compare first names the grid it plans)
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == f"error: {ONE_SUBJECT}", text
        assert not (tmp_path / folds).exists()


def test_advice_of_the_fold_messages_is_something_that_can_work():
    rng = np.random.default_rng(0)
    # one subject of a class among several: no number of folds helps (it said "use fewer folds than n_folds=5")
    subjects = np.repeat(["A1", "A2", "A3", "A4", "H1"], 5)
    y = np.repeat([0, 0, 0, 0, 1], 5)
    for n_folds in (2, 5):
        with pytest.raises(FeatxError, match=r"^subject-grouped CV is impossible here: only 1 subject \(H1\) has rows "
                                             r"of class hem, .*use cv='image'"):
            make_splits(subjects, y, None, cv="subject", n_folds=n_folds, classes=["all", "hem"])
    # enough subjects of each class, too few for the folds: the largest number that works
    subjects = np.repeat(["A1", "A2", "H1", "H2"], 5)
    with pytest.raises(FeatxError, match=r"only 4 subjects for n_folds=5: .*use n_folds=4 or fewer"):
        make_splits(subjects, np.repeat([0, 0, 1, 1], 5), None, cv="subject", n_folds=5)
    assert make_splits(subjects, np.repeat([0, 0, 1, 1], 5), None, cv="subject", n_folds=2).n_folds == 2
    # image-level folds with a class of one row (it said "use n_folds=2 or fewer", which cannot work either)
    y = np.r_[np.zeros(9, dtype=int), 1]
    with pytest.raises(FeatxError, match=r"^the rarest class has 1 labelled row: cross-validation needs at least 2 "):
        make_splits(rng.permutation(np.repeat(["S1"], 10)), y, None, cv="image", n_folds=2)


def test_image_level_folds_of_one_subject_give_no_interval_and_say_why(store, tmp_path):
    # it printed "95% CI of accuracy 85.6-85.6%"
    reason = "only 1 test subject (S1): an interval over subjects needs 2 or more of each class"
    out = tmp_path / "r"
    result, text = invoke("classify", store, "--cv", "image", "--folds", "3", "--head", "logistic", "--no-plots",
                          "--out", out)
    assert result.exit_code == 0, result.output
    assert f"95% CI of accuracy n/a ({reason})" in text
    assert not re.search(r"(\d+(?:\.\d+)?)%? ?[-–] ?\1%", text), text  # no interval of zero width anywhere
    [row] = json.loads((out / "results.json").read_text())
    assert row["image_level"] and row["n_subjects"] == 1 and 0.5 <= row["accuracy"] <= 1
    assert row["interval"]["n_units"] == 1 and row["interval"]["unit"] == "subject"
    assert set(row["interval"]["na"].values()) == {reason}
    assert all(row[f"{m}_ci_low"] is None and row[f"{m}_ci_high"] is None for m in row["interval"]["na"])
    # the library: a subject holding both classes, image-level folds
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    oof = OutOfFold(y, np.where(rng.random(60) < 0.8, y, 1 - y), rng.random(60), np.arange(60) % 3,
                    np.repeat("S1", 60), 2, 0)
    assert design_reason(oof) == reason
    assert all(iv.low is None and iv.high is None and iv.reason == reason for iv in intervals(oof).values())


@pytest.mark.parametrize("command", ["classify", "compare"])
def test_boot_is_no_option_any_more(store, command):
    # --boot 0 wrote "95% CI nan-nan%"; intervals are now a subject jackknife with no resampling count
    result, text = invoke(command, store, "--boot", "0")
    assert result.exit_code == 2 and "No such option: --boot" in text
