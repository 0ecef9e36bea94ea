"""`featx compare` compares each row with its protocol's best row, paired, and the difference and the ``≈ best``
mark travel into every output: the terminal, results.json/.csv/.md, `featx table` and the HTML report."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
from cli_helpers import invoke

from featx.data.synth import synthesize
from featx.extract import extract

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A cnn store of 8 ALL + 8 HEM subjects (2 of each class in every test fold of 4) and an exact copy of it:
    their rows predict alike, so one is the best and the other is ``≈ best`` whatever the data."""
    root = tmp_path_factory.mktemp("diff")
    synthesize(root / "tree", subjects_all=8, subjects_hem=8, cells_per_subject=3, prelim_subjects_all=0,
               prelim_subjects_hem=0, final_cells=0, image_size=32, seed=3)
    a = extract(root / "tree", root / "a.h5", backbone="cnn", weights="none", image_size=32, workers=0)
    b = root / "b.h5"
    shutil.copy(a, b)
    return a, b


@pytest.fixture(scope="module")
def compared(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("compared")
    result, text = invoke("compare", *stores, "--heads", "logistic,knn", "--cv", "subject", "--folds", "4",
                          "--no-plots", "--out", out)
    assert result.exit_code == 0, result.output
    return out, text


def test_each_row_carries_its_paired_difference_from_the_best(compared):
    out, _ = compared
    rows = json.loads((out / "results.json").read_text())
    best = max(rows, key=lambda r: r["f1_weighted"])
    assert sum(r["comparison"]["is_reference"] for r in rows) == 1
    for r in rows:
        c = r["comparison"]
        assert c["metric"] == "f1_weighted" and c["reference"] in (best["name"], _twin(best, rows)["name"])
        ref = next(x for x in rows if x["name"] == c["reference"])
        assert c["delta"] == pytest.approx(r["f1_weighted"] - ref["f1_weighted"], abs=1e-12)
        assert c["method"] == "paired subject jackknife t-test" and c["level"] == 0.95
        if not c["is_reference"]:
            assert c["ci_low"] <= c["delta"] <= c["ci_high"] and 0 <= c["p_value"] <= 1
    # the same head on the copied store: identical predictions, a difference of exactly 0, marked
    twin = _twin(next(r for r in rows if r["comparison"]["is_reference"]), rows)
    assert twin["comparison"]["delta"] == 0 and twin["comparison"]["close"] is True
    assert twin["marks"] == ["\u2248 best"]


def _twin(row, rows):
    """The row of the same head on the other (identical) store."""
    return next(r for r in rows if r["head"] == row["head"] and r["name"] != row["name"])


@pytest.mark.slow
def test_the_difference_and_the_mark_are_in_every_file_and_the_terminal(compared, tmp_path):
    out, text = compared
    rows = json.loads((out / "results.json").read_text())
    twin = _twin(next(r for r in rows if r["comparison"]["is_reference"]), rows)
    assert "\u0394 wF1" in text and "\u2248" in text and "best" in text
    assert "paired difference (points) from the protocol's best row by f1_weighted" in text
    with (out / "results.csv").open(newline="") as fh:
        records = {r["name"]: r for r in csv.DictReader(fh)}
    assert json.loads(records[twin["name"]]["marks"]) == ["\u2248 best"]
    assert json.loads(records[twin["name"]]["comparison"])["close"] is True
    md = (out / "results.md").read_text()
    assert "\u0394 wF1 (points, 95% CI)" in md and "paired delete-one-subject jackknife t-test" in md
    assert f"| {twin['name']} |" in md and "+0.00 [+0.00, +0.00] \u2248" in md
    result, table = invoke("table", out)
    assert result.exit_code == 0, result.output
    assert "\u0394 wF1" in table and "\u2248" in table
    result, _ = invoke("report", out, "--out", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert "\u0394 vs best (points, 95% CI)" in html and "+0.00 [+0.00, +0.00] \u2248" in html


@pytest.mark.slow
def test_vs_picks_the_reference(stores, tmp_path):
    result, text = invoke("compare", *stores, "--heads", "logistic,knn", "--cv", "subject", "--folds", "4",
                          "--no-plots", "--sort-by", "accuracy", "--vs", "cnn/fc [b] + knn", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert rows["cnn/fc [b] + knn"]["comparison"]["is_reference"]
    assert all(r["comparison"]["reference"] == "cnn/fc [b] + knn" and r["comparison"]["metric"] == "accuracy"
               for r in rows.values())
    assert rows["cnn/fc [a] + knn"]["marks"] == ["\u2248 ref"]
    result, text = invoke("compare", *stores, "--heads", "logistic", "--sort-by", "auc", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "--sort-by auc is not a metric" in text and "Traceback" not in text
