"""Row identity: a row's name is unique within a results set (three stores of one backbone give three names),
the selected row names the store that won, and every row's files carry its own name."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import invoke
from report_rows import csv_rows, make_row

from featx.report import slug, write_results
from featx.report.files import merge_results
from featx.results import read_json
from featx.row_names import unique_names
from featx.workflows.classify import run_compare

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")

TAGGED = ["cnn/fc [a] + logistic", "cnn/fc [b] + logistic", "cnn/fc [c] + logistic"]


@pytest.fixture(scope="module")
def stores(cnn_stores, tmp_path_factory) -> list[Path]:
    """Three 32 px cnn stores of the same images, random weights of seeds 0, 1, 2: a.h5, b.h5, c.h5 (copies of
    conftest's shared stores, under the names the rows are told apart by)."""
    folder = tmp_path_factory.mktemp("stores")
    return [Path(shutil.copy(cnn_stores(seed), folder / f"{name}.h5")) for seed, name in enumerate("abc")]


@pytest.fixture(scope="module")
def compared(stores, tmp_path_factory) -> dict:
    """`run_compare` of the three stores with logistic, subject 3-fold, plus the selected row."""
    out = tmp_path_factory.mktemp("compared")
    result = run_compare(stores, ["logistic"], cv="subject", n_folds=3, out=out, plots=False,
                         select="accuracy")
    return {"rows": result.rows, "out": out}


def test_three_stores_of_one_backbone_give_three_names_in_every_file(compared, stores):
    rows, out = compared["rows"], compared["out"]
    assert [r.name for r in rows] == [*TAGGED, "selected by inner accuracy"]
    assert [r.settings.get("tag") for r in rows] == ["a", "b", "c", None]
    assert [r["name"] for r in json.loads((out / "results.json").read_text())] == [r.name for r in rows]
    assert [r["name"] for r in csv_rows(out / "results.csv")] == [r.name for r in rows]
    md = (out / "results.md").read_text().split("## 95% intervals")[0]  # the results table
    for name in TAGGED:
        assert md.count(f"| {name} |") == 1, name
    for row, store in zip(rows, stores):
        assert row.settings["stores"] == [str(store)]


def test_the_selected_row_names_the_store_that_won_each_fold(compared, stores):
    rows, out = compared["rows"], compared["out"]
    selected = rows[-1]
    assert selected.settings["candidates"] == TAGGED
    chosen, chosen_stores = selected.settings["selected"], selected.settings["selected_stores"]
    assert len(chosen) == len(chosen_stores) == 3 and set(chosen) <= set(TAGGED)
    for name, store in zip(chosen, chosen_stores):  # the tag is the winning store's file name
        assert store == [str(stores[TAGGED.index(name)])]
    picks = {}
    for k, name in enumerate(chosen, 1):
        picks.setdefault(name, []).append(str(k))
    line = "selected by inner accuracy (subject 3-fold) chose " + "; ".join(
        f"{name} in fold{'s' if len(ks) > 1 else ''} {', '.join(ks)}" for name, ks in picks.items())
    assert f"{line}." in (out / "results.md").read_text()
    written = read_json(out / "results.json")[-1]
    assert written.settings["selected"] == chosen and written.settings["selected_stores"] == chosen_stores


def test_each_row_has_its_own_predictions_file(compared):
    rows, out = compared["rows"], compared["out"]
    files = sorted(p.name for p in (out / "predictions").iterdir())
    assert files == sorted(f"{slug(r)}.csv" for r in rows)
    assert files[:3] == ["cnn-fc-a-logistic-subject.csv", "cnn-fc-b-logistic-subject.csv",
                         "cnn-fc-c-logistic-subject.csv"]
    scores = []
    for r in rows:  # every file holds its own row's out-of-fold predictions
        table = csv_rows(out / "predictions" / f"{slug(r)}.csv")
        assert [t["path"] for t in table] == r.predictions["path"]
        assert [t["y_pred"] for t in table] == r.predictions["y_pred"]
        assert [float(t["score"]) for t in table] == pytest.approx(r.predictions["score"], rel=1e-6)
        scores.append(tuple(t["score"] for t in table))
    assert len(set(scores[:3])) == 3  # three stores of other weights: three different sets of scores


@pytest.mark.slow
def test_compare_cli_shows_three_names_and_which_store_won(stores, tmp_path):
    result, text = invoke("compare", *stores, "--heads", "logistic", "--cv", "subject", "--folds", "3",
                              "--no-plots", "--select", "accuracy", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    for name in TAGGED:
        assert text.count(name) >= 1, name
    lines = [ln.split("†")[0].strip() for ln in result.output.splitlines() if "† subject 3-fold" in ln]
    assert lines == [*TAGGED, "selected by inner accuracy"][:3]  # one table line per store
    chosen = json.loads((tmp_path / "results.json").read_text())[-1]["settings"]["selected"]
    assert "selected by inner accuracy (subject 3-fold) chose " + chosen[0] in text
    assert [r["name"] for r in csv_rows(tmp_path / "results.csv")] == [*TAGGED, "selected by inner accuracy"]


# --------------------------------------------------------------------------------------------------
# unique_names on rows built by hand
# --------------------------------------------------------------------------------------------------
def _row(stores, protocol="subject", name="cnn/fc + logistic"):
    return make_row(name, 0.8, protocol=protocol, backbone="cnn", tap="fc", head="logistic",
                    settings={"stores": list(stores)})


def test_unique_rows_keep_their_names_and_protocols_may_share_one():
    rows = [_row(["x/a.h5"]), _row(["x/a.h5"], protocol="image"), _row(["x/a.h5"], name="cnn/pool5 + logistic")]
    assert [r.name for r in unique_names(rows)] == ["cnn/fc + logistic", "cnn/fc + logistic",
                                                    "cnn/pool5 + logistic"]
    assert all("tag" not in r.settings for r in rows)


def test_parent_folders_join_when_file_names_repeat_and_fused_stores_name_each():
    rows = unique_names([_row(["/d/x/a.h5"]), _row(["/d/y/a.h5"]), _row(["/d/x/b.h5"])])
    assert [r.name for r in rows] == ["cnn/fc [x/a] + logistic", "cnn/fc [y/a] + logistic", "cnn/fc [x/b] + logistic"]
    fused = unique_names([_row(["a.h5", "b.h5"], name="cnn/fc+cnn/fc + logistic"),
                          _row(["a.h5", "c.h5"], name="cnn/fc+cnn/fc + logistic")])
    assert [r.name for r in fused] == ["cnn/fc+cnn/fc [a+b] + logistic", "cnn/fc+cnn/fc [a+c] + logistic"]
    suffixes = unique_names([_row(["/d/a.h5"]), _row(["/d/a.hdf5"])])  # only the suffix differs
    assert [r.name for r in suffixes] == ["cnn/fc [a.h5] + logistic", "cnn/fc [a.hdf5] + logistic"]


def test_tagging_again_changes_nothing_and_tags_that_meet_are_made_again_from_the_name():
    rows = unique_names([_row(["/d/x/a.h5"]), _row(["/d/x/b.h5"])])
    assert [r.name for r in unique_names(rows)] == ["cnn/fc [a] + logistic", "cnn/fc [b] + logistic"]
    others = unique_names([_row(["/d/y/a.h5"]), _row(["/d/y/c.h5"])])  # another folder's a.h5
    merged = unique_names([*rows, *others])
    assert [r.name for r in merged] == ["cnn/fc [x/a] + logistic", "cnn/fc [b] + logistic",
                                        "cnn/fc [y/a] + logistic", "cnn/fc [c] + logistic"]
    assert [r.settings["tag"] for r in merged] == ["x/a", "b", "y/a", "c"]


def test_rows_of_the_same_store_or_of_no_store_are_told_apart_by_their_folder_else_numbered(tmp_path):
    runs = [tmp_path / "runs" / "r1" / "results.json", tmp_path / "runs" / "r2" / "results.json"]
    network = [make_row("cnn fine-tuned", 0.8, head=None, backbone="cnn", tap="logits", protocol="val")
               for _ in runs]
    assert [r.name for r in unique_names(network, origins=runs)] == ["cnn fine-tuned [r1]", "cnn fine-tuned [r2]"]
    same = unique_names([_row(["/d/a.h5"]), _row(["/d/a.h5"])])
    assert [r.name for r in same] == ["cnn/fc [#1] + logistic", "cnn/fc [#2] + logistic"]


def test_table_over_two_folders_of_one_backbone_names_each_store(tmp_path):
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder, store in zip(folders, ("a", "b")):
        write_results([_row([str(tmp_path / "stores" / f"{store}.h5")])], folder, plots=False)
    assert [r.name for r in read_json(folders[0] / "results.json")] == ["cnn/fc + logistic"]
    merged = merge_results(folders, tmp_path / "table", plots=False)
    assert [r.name for r in merged.rows] == ["cnn/fc [a] + logistic", "cnn/fc [b] + logistic"]
    assert [r.name for r in read_json(tmp_path / "table" / "results.json")] == [r.name for r in merged.rows]
    result, text = invoke("table", *folders)
    assert result.exit_code == 0, result.output
    assert "cnn/fc [a] + logistic" in text and "cnn/fc [b] + logistic" in text


def test_a_tag_that_meets_another_rows_name_is_numbered():
    rows = unique_names([_row(["/s/q.h5"], name="cnn/fc [x/a] + logistic"), _row(["/d/x/a.h5"]), _row(["/d/y/a.h5"])])
    assert [r.name for r in rows] == ["cnn/fc [x/a] + logistic", "cnn/fc [x/a #2] + logistic",
                                      "cnn/fc [y/a] + logistic"]
    assert [r.name for r in unique_names(rows)] == [r.name for r in rows]
