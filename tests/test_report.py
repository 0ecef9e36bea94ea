"""Reports: the terminal table, CSV/JSON/Markdown files and the PNG plots."""
from __future__ import annotations

import csv
import dataclasses
import json
import re

import pytest
from rich.console import Console

from featx.cli.results_table import results_table
from featx.report import (
    STATS_NOTE,
    format_pct,
    plot_confusion,
    plot_history,
    short_protocol,
    slug,
    write_results,
)
from featx.results import METRICS, ResultRow, Score

PNG = b"\x89PNG\r\n\x1a\n"


def _row(name, protocol, label, image_level, acc, std, roc_auc=None, **extra):
    scores = {m: Score(acc, std, acc - 0.05, acc + 0.03) for m in METRICS}
    if roc_auc is not None:
        scores["roc_auc"] = Score(roc_auc, std, acc - 0.05, acc + 0.03)
    row = ResultRow(name=name, backbone=name.split("/")[0], tap="fc7", head=name.split(" + ")[-1], protocol=protocol,
                    protocol_label=label, image_level=image_level, n_folds=5, n_train=80, n_test=100, n_subjects=10,
                    positive="all", classes=["all", "hem"], scores=scores, confusion=[[60, 8], [4, 28]],
                    roc={"fpr": [0, 0.1, 1], "tpr": [0, 0.8, 1]},
                    settings={"preprocess": "standard", "class_weight": None, "seed": 0, "params": {"C": 1}})
    return dataclasses.replace(row, **extra)


ROWS = [_row("vgg16/fc7 + svm", "subject", "subject-level 5-fold", False, 0.8712, 0.031),
        _row("vgg16/fc7 + svm", "image", "IMAGE-LEVEL 5-fold (cells of one subject on both sides)", True,
             0.9744, 0.012, roc_auc=float("nan"), roc=None)]


def test_format_pct():
    assert format_pct(0.9744, 0.012) == "97.44 ± 1.20"
    assert format_pct(0.5) == "50.00" and format_pct(float("nan"), 0.1) == "-" and format_pct(None) == "-"


def test_table_has_the_study_columns_and_marks_image_level_rows():
    console = Console(record=True, width=220)
    console.print(results_table(ROWS))
    text = console.export_text()
    for header in ("Model", "Protocol", "Accuracy", "Precision", "Recall", "F1", "wF1", "ROC-AUC",
                   "(mean ± sd over 5 folds, %)"):
        assert header in text
    flat = " ".join(text.split())
    assert ("± = sample std (ddof=1) over folds; 95% CIs of the mean over folds (jackknife over subjects, "
            "t-interval on the logit scale)") in flat
    lines = [ln for ln in text.splitlines() if "vgg16/fc7 + svm" in ln]
    assert "87.12 ± 3.10" in lines[0] and "subject 5-fold" in lines[0] and "*" not in lines[0]
    assert "97.44 ± 1.20" in lines[1] and "* IMAGE-LEVEL 5-fold" in lines[1]
    assert "one subject's cells on both sides" in text  # the caption explains the mark


def test_write_results_files(tmp_path):
    paths = write_results(ROWS, tmp_path / "res")
    assert {k: p.name for k, p in paths.items()} == {"csv": "results.csv", "json": "results.json",
                                                     "md": "results.md", "plot": "comparison.png"}
    with paths["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2
    assert table[0]["name"] == "vgg16/fc7 + svm" and table[1]["image_level"] == "True"
    assert float(table[0]["accuracy"]) == pytest.approx(0.8712) and float(table[0]["accuracy_std"]) == 0.031
    assert float(table[0]["f1_weighted_ci_low"]) == pytest.approx(0.8212)
    assert table[1]["roc_auc"] == "" and json.loads(table[0]["confusion"]) == [[60, 8], [4, 28]]
    assert json.loads(table[0]["settings.params"]) == {"C": 1} and table[0]["settings.preprocess"] == "standard"
    data = json.loads(paths["json"].read_text())
    assert data[0]["accuracy"] == 0.8712 and data[1]["roc_auc"] is None and data[1]["image_level"] is True
    md = paths["md"].read_text()
    assert "| vgg16/fc7 + svm | subject-level 5-fold | 87.12 ± 3.10 |" in md
    assert "**\\* IMAGE-LEVEL 5-fold (cells of one subject on both sides)**" in md and "optimistic" in md
    plots = sorted(p.name for p in (tmp_path / "res" / "plots").iterdir())
    assert plots == ["confusion-vgg16-fc7-svm-image.png", "confusion-vgg16-fc7-svm-subject.png",
                     "roc-vgg16-fc7-svm-subject.png"]  # no ROC where the AUC is undefined
    for p in [paths["plot"], *(tmp_path / "res" / "plots").iterdir()]:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000


@pytest.mark.slow
def test_plots_and_slugs(tmp_path):
    path = plot_confusion([[5, 1], [2, 7]], ["all", "hem"], tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:8] == PNG
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 1 - 0.5 / e,
                "val_acc": 1 - 0.6 / e} for e in range(1, 6)]
    out = plot_history(history, tmp_path / "curves" / "history.png", title="finetune")
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10000
    # partial histories (no validation) still plot
    assert plot_history([{"epoch": 1, "train_loss": 0.7}], tmp_path / "h2.png").exists()
    row = _row("vgg16+alexnet/fc7+pool5 + svm", "subject", "subject-level 5-fold", False, 0.9, 0.1,
               backbone="vgg16+alexnet", tap="fc7+pool5")
    assert slug(row) == "vgg16+alexnet-fc7+pool5-svm-subject"
    assert slug("a/b c") == "a_b_c"


def test_table_shows_model_names_with_brackets_verbatim():
    console = Console(record=True, width=220)
    row = _row("cnn[cnn/best.pt]/fc + svm", "subject", "subject-level 5-fold", False, 0.9, 0.1)
    console.print(results_table([row]))
    assert "cnn[cnn/best.pt]/fc + svm" in console.export_text()


@pytest.mark.slow
def test_rows_with_the_same_slug_get_their_own_plots(tmp_path):
    rows = [_row("vgg16/fc7 + svm", "subject", "subject-level 5-fold", False, 0.9, 0.1),
            _row("vgg16[run/best.pt]/fc7 + svm", "subject", "subject-level 5-fold", False, 0.8, 0.1)]
    rows[1] = dataclasses.replace(rows[1], backbone="vgg16")
    write_results(rows, tmp_path)
    assert sorted(p.name for p in (tmp_path / "plots").glob("confusion-*.png")) == [
        "confusion-vgg16-fc7-svm-subject-2.png", "confusion-vgg16-fc7-svm-subject.png"]


def test_markdown_says_what_the_plus_minus_and_the_interval_are(tmp_path):
    md = write_results(ROWS, tmp_path, plots=False)["md"].read_text()
    assert STATS_NOTE in md
    for words in ("sample standard deviation (ddof=1)", "mean over the folds where a metric is defined",
                  "undefined, not 0", "delete-one-subject jackknife stratified by class", "logit scale",
                  "scripts/interval_study.py", "n/a", "ROC-AUC is computed within each fold and averaged",
                  "## 95% intervals"):
        assert words in md


def test_out_of_fold_predictions_go_to_their_own_csv_not_to_results_json(tmp_path):
    pred = {"path": ["a/1.bmp", "a/2.bmp", "b/3.bmp"], "subject": ["S1", "S1", "S2"], "fold": [1, 1, 2],
            "y_true": ["all", "all", "hem"], "y_pred": ["all", "hem", "hem"], "score": [0.25, -1.5, -0.125]}
    rows = [dataclasses.replace(ROWS[0], predictions=pred), dataclasses.replace(ROWS[1], predictions=pred)]
    paths = write_results(rows, tmp_path, plots=False)
    assert paths["predictions"] == tmp_path / "predictions"
    assert sorted(p.name for p in paths["predictions"].iterdir()) == ["vgg16-fc7-svm-image.csv",
                                                                      "vgg16-fc7-svm-subject.csv"]
    with (tmp_path / "predictions" / "vgg16-fc7-svm-subject.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["path"] for r in table] == pred["path"] and [r["y_pred"] for r in table] == pred["y_pred"]
    assert [float(r["score"]) for r in table] == pred["score"] and [r["fold"] for r in table] == ["1", "1", "2"]
    assert "predictions" not in json.loads(paths["json"].read_text())[0]
    with paths["csv"].open() as fh:
        assert "predictions" not in next(csv.reader(fh))


def test_terminal_protocol_names_unknown_subjects_and_dropped_rows():
    unknown = _row("x/fc + svm", "image", "IMAGE-LEVEL 5-fold (subjects unknown)", True, 0.9, 0.1)
    assert short_protocol(unknown) == "IMAGE-LEVEL 5-fold (subjects unknown)"
    dropped = _row("x/fc + svm", "subject", "subject-level 5-fold; 2 rows without a subject id dropped", False, 0.9,
                   0.1, dropped_unknown_subjects=2)
    assert short_protocol(dropped) == "subject 5-fold, 2 rows w/o subject dropped"
    console = Console(record=True, width=220)
    console.print(results_table([unknown, dropped]))
    text = console.export_text()
    assert "* IMAGE-LEVEL 5-fold (subjects unknown)" in text and "2 rows w/o subject dropped" in text
    assert "or subjects unknown (optimistic)" in text


@pytest.mark.slow
def test_featx_table_merges_results_json_files_and_folders_old_and_new(tmp_path, monkeypatch):
    from featx.results import read_json
    from tests.cli_helpers import invoke

    monkeypatch.setenv("COLUMNS", "200")  # one table line per row

    write_results(ROWS, tmp_path / "cmp", plots=False)
    old = {"model": "cnn fine-tuned", "backbone": "cnn", "tap": "logits", "head": "finetune", "protocol": "val",
           "protocol_label": "held-out val", "image_level": False, "n_folds": 1, "n_train": 40, "n_test": 10,
           "n_subjects": 4, "classes": ["all", "hem"], "positive": "all", "accuracy": 0.7, "accuracy_std": None,
           "accuracy_ci_low": 0.5, "accuracy_ci_high": 0.9, "roc_auc": None, "confusion": [[3, 2], [1, 4]],
           "settings": {"lr": 0.001}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps([old]))  # written by featx before ResultRow
    result, text = invoke("table", tmp_path / "cmp", tmp_path / "run" / "results.json", "--title", "merged",
                          "--out", tmp_path / "all")
    assert result.exit_code == 0, text
    assert "merged" in text and "vgg16/fc7 + svm cmp subject 5-fold 87.12 ± 3.10" in text  # cmp: its source folder
    assert "cmp * IMAGE-LEVEL 5-fold 97.44 ± 1.20" in text and "cnn fine-tuned run held-out val 70.00" in text
    merged = read_json(tmp_path / "all" / "results.json")
    assert merged[:2] == ROWS and merged[2].name == "cnn fine-tuned" and merged[2].head is None
    assert (tmp_path / "all" / "comparison.png").is_file()
    assert "confusion-cnn-logits-finetune-val.png" in {p.name for p in (tmp_path / "all" / "plots").iterdir()}


@pytest.mark.parametrize("content, message", [
    (None, "no such results file; point to a results.json written by `featx compare`"),
    ("{not json", "not a featx results.json (not JSON)"),
    ('{"model": "x"}', "not a featx results.json (expected a list of result rows)"),
    ('[{"model": "x"}]', ("not a featx results.json (expected a list of result rows; row 1 is not a result row: "
                          "missing keys")),
])
def test_featx_table_names_the_file_that_is_not_a_results_json(tmp_path, content, message):
    from featx.errors import FeatxError
    from featx.report import read_results
    from tests.cli_helpers import invoke

    if content is not None:
        (tmp_path / "results.json").write_text(content)
    source = tmp_path if content is not None else tmp_path / "results.json"  # a folder with none: test_outputs
    python = message.replace("`featx compare`", "`featx.compare(...)`")  # the library speaks Python
    with pytest.raises(FeatxError, match=re.escape(f"{tmp_path / 'results.json'}: {python}")):
        read_results([source])
    result, text = invoke("table", source)
    assert result.exit_code == 1 and message in text and "Traceback" not in text


def test_a_table_mixing_folds_and_one_split_says_what_each_interval_is_of():
    from report_rows import make_row

    from featx.report.table import TERMINAL_METRICS, table_captions  # the text under the terminal table

    folds = make_row("vgg16/fc7 + svm", 0.87)
    split = make_row("vgg16/fc7 + svm", 0.85, std=None, protocol="prelim", label="held-out prelim", n_folds=1)
    def caption(rows):
        return next(line for line in table_captions(rows, TERMINAL_METRICS, 200) if "95% CIs" in line)

    mixed, only_split = caption([folds, split]), caption([split])
    assert "a row of one split has none" in mixed and "or of a single split's score" in mixed
    assert only_split.startswith("one split, so no ±; 95% CIs (jackknife over subjects") and "folds" not in only_split
    assert "single split" not in caption([folds])


def test_a_fine_tuned_rows_scored_epoch_and_best_pt_epoch_are_said_under_its_table():
    from report_rows import make_row

    from featx.report.markdown import results_markdown
    from featx.report.notes import epoch_notes
    from featx.results import NetworkRecord

    selection = "last epoch (5) of a fixed-length run; best.pt is epoch 3 by validation loss (every validation image)"
    record = NetworkRecord(best_epoch=3, scored_epoch=5, selection=selection)
    network = dataclasses.replace(make_row("cnn fine-tuned", 0.9, protocol="1/5 of subjects", n_folds=1), head=None,
                                  tap="logits", network=record)
    head = make_row("vgg16/fc7 + svm", 0.87)
    assert epoch_notes([head, network]) == [f"cnn fine-tuned: {selection}"]
    assert f"cnn fine-tuned: {selection}." in results_markdown([head, network])
    assert "best.pt" not in results_markdown([head])
