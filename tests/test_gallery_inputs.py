"""`featx gallery` on bad input (one line each, no traceback), on images that moved (``--data``), and on a
fine-tuning run folder (its scored images' predictions, then a gallery)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from report_rows import csv_rows


@pytest.fixture
def results(cnn_compare) -> Path:
    return cnn_compare


def _one_error_line(result, output: str) -> None:
    assert result.exit_code == 1, output
    assert "Traceback" not in result.output and output.startswith("error: ")


def test_a_folder_without_results_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result, output = invoke("gallery", tmp_path / "empty", "--out", tmp_path / "g")
    _one_error_line(result, output)
    assert f"{tmp_path / 'empty'}: no results.json in this folder or below it" in output
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
def test_rows_without_predictions_are_named_with_why(results, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(results, old)
    shutil.rmtree(old / "predictions")
    result, output = invoke("gallery", old, "--out", tmp_path / "g")
    _one_error_line(result, output)
    assert "no row has a predictions file" in output and "cnn/fc + logistic" in output
    assert "written before featx kept out-of-fold predictions" in output and "`featx table`" in output
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
def test_images_missing_name_the_file_and_data(results, tmp_path):
    (tmp_path / "moved").mkdir()
    result, output = invoke("gallery", results, "--out", tmp_path / "g", "--data", tmp_path / "moved")
    _one_error_line(result, output)
    assert f"{tmp_path / 'moved'}/C-NMC_training_data/" in output and "not found" in output
    assert f"check --data {tmp_path / 'moved'}" in output and "cnn/fc + logistic" in output  # option, row


@pytest.mark.slow
def test_images_that_moved_are_found_with_data(results, cnmc_tree, tmp_path):
    from featx.report.gallery import gallery

    moved = tmp_path / "elsewhere"
    shutil.copytree(cnmc_tree, moved)
    here = gallery(results, tmp_path / "here").rows[0]
    there = gallery(results, tmp_path / "there", data=moved).rows[0]
    assert csv_rows(here.csv) == csv_rows(there.csv) and there.sheet.stat().st_size > 0


def test_a_row_whose_data_folder_is_not_recorded_asks_for_data(tmp_path):
    from featx.errors import FeatxError
    from featx.report.gallery import plot_gallery
    from featx.results import ResultRow

    row = ResultRow(name="x/fc + logistic", backbone="x", tap="fc", head="logistic", protocol="subject",
                    protocol_label="subject-level 3-fold", image_level=False, n_folds=3, n_train=4, n_test=2,
                    n_subjects=2, classes=["all", "hem"], positive="all",
                    predictions={"path": ["a.bmp", "b.bmp"], "subject": ["1", "2"], "fold": [1, 2],
                                 "y_true": ["all", "hem"], "y_pred": ["hem", "hem"], "score": [0.2, 0.1]},
                    settings={"stores": [str(tmp_path / "gone.h5")]})
    with pytest.raises(FeatxError, match=r"row x/fc \+ logistic: no data folder recorded .* give data the folder"):
        plot_gallery(row, tmp_path / "g.png")
    (tmp_path / "settings.json").write_text('{"data_root": "%s"}' % (tmp_path / "data"))
    with pytest.raises(FeatxError, match=r"data/a.bmp: image of row x/fc \+ logistic not found"):
        plot_gallery(row, tmp_path / "g.png", source=tmp_path / "results.json")  # a hybrid run's settings.json


@pytest.mark.slow
def test_existing_gallery_files_are_refused_without_force(results, tmp_path):
    out = tmp_path / "g"
    first, output = invoke("gallery", results, "--out", out, "--wrong", 2, "--right", 1)
    assert first.exit_code == 0, output
    assert "wrote 2 gallery sheets (+ CSV)" in output  # logistic and svm
    sheet = out / "cnn-fc-logistic-subject.png"
    before = sheet.read_bytes()
    again, output = invoke("gallery", results, "--out", out)
    _one_error_line(again, output)
    assert f"{sheet} exists" in output and "--force" in output and sheet.read_bytes() == before
    forced, output = invoke("gallery", results, "--out", out, "--force")
    assert forced.exit_code == 0, output
    assert sheet.read_bytes() != before  # 24 + 8 cells now, not 2 + 1
    assert len(csv_rows(out / "cnn-fc-logistic-subject.csv")) > 3


@pytest.mark.slow
def test_a_finetuned_run_writes_predictions_and_gets_a_gallery(cnmc_tree, tmp_path):
    from featx.finetune import finetune
    from featx.report.gallery import gallery

    run = tmp_path / "run"
    summary = finetune(cnmc_tree, run, backbone="cnn", weights="none", image_size=32, epochs=1, batch_size=8,
                       val="fold_2", workers=0, device="cpu", seed=0)
    row = summary["row"]
    files = list((run / "predictions").glob("*.csv"))
    assert len(files) == 1 and files[0].name.startswith("cnn-logits-finetune-")  # named as head rows' files are
    lines = csv_rows(files[0])
    assert len(lines) == row.n_test > 0 and {x["fold"] for x in lines} == {"1"}
    assert all((cnmc_tree / x["path"]).is_file() and "fold_2" in x["path"] for x in lines)
    pairs = np.zeros((2, 2), dtype=int)
    for x in lines:
        pairs[row.classes.index(x["y_true"]), row.classes.index(x["y_pred"])] += 1
    assert pairs.tolist() == row.confusion  # the same images the row was scored on
    scores = np.array([float(x["score"]) for x in lines])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert ((scores > 0.5) == np.array([x["y_pred"] == row.positive for x in lines])).all()  # the softmax's argmax
    done = gallery(run, tmp_path / "g")
    g = done.rows[0]
    assert g.score_kind == "probability" and "softmax" in g.confidence
    assert g.n_wrong == int(pairs.sum() - np.trace(pairs)) == sum(x["cell"] == "wrong" for x in csv_rows(g.csv))


@pytest.mark.slow
def test_every_row_is_checked_before_the_first_sheet_is_written(results, tmp_path):
    from featx.errors import FeatxError
    from featx.report.gallery import gallery

    moved = tmp_path / "b"  # a second results folder whose store (and so its data root) is gone
    shutil.copytree(results, moved)
    text = (moved / "results.json").read_text()
    (moved / "results.json").write_text(text.replace(str(Path(_stores(text)[0])), str(tmp_path / "gone.h5")))
    with pytest.raises(FeatxError, match=r"row cnn/fc \+ logistic: no data folder recorded"):
        gallery([results, moved], tmp_path / "g")
    assert not (tmp_path / "g").exists()  # not even the first folder's sheet


def _stores(results_json: str) -> list[str]:
    import json

    data = json.loads(results_json)
    rows = data["rows"] if isinstance(data, dict) else data
    return rows[0]["settings"]["stores"]


def test_a_row_selected_per_fold_gives_each_fold_its_head_s_confidence():
    from featx.report.gallery_cells import cell_confidences, confidence_meaning, score_kind
    from featx.results import ResultRow

    row = ResultRow(name="selected by inner f1_weighted", backbone="selected", tap="", head="selected",
                    protocol="subject", protocol_label="subject-level 2-fold", image_level=False, n_folds=2, n_train=4,
                    n_test=4, n_subjects=4, classes=["all", "hem"], positive="all",
                    predictions={"path": list("abcd"), "subject": list("1234"), "fold": [1, 1, 2, 2],
                                 "y_true": ["all", "hem", "all", "hem"], "y_pred": ["all", "all", "hem", "hem"],
                                 "score": [0.9, 0.7, -0.4, -1.5]},
                    settings={"selected": ["x/fc + logistic", "x/fc [b] + svm"]})
    assert score_kind(row) == "mixed"
    assert "probability in fold 1; decision in fold 2" in confidence_meaning(row)
    np.testing.assert_allclose(cell_confidences(row), [0.9, 0.7, 0.4, 1.5])  # fold 2: the margin, not 1 - score


def test_a_store_given_as_a_relative_path_is_found_from_where_the_command_ran(cnn_store, tmp_path, monkeypatch):
    """README's flow: `featx compare feats/x.h5` records the store as typed, relative to the working folder (not to
    the results folder), and `featx gallery` run from there finds the images through it."""
    from featx.workflows.classify import run_compare

    monkeypatch.chdir(Path(cnn_store).parent)
    run_compare([Path(cnn_store).name], ["logistic"], cv="subject", n_folds=3, jobs=1, out=tmp_path / "res",
                plots=False)
    result, output = invoke("gallery", tmp_path / "res", "--out", tmp_path / "g")
    assert result.exit_code == 0, output
    assert len(csv_rows(next((tmp_path / "g").glob("*.csv")))) > 0
