"""featx.results: a ResultRow reads back equal from its dict, from results.json and from results.csv."""
from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from featx.results import (
    METRICS,
    NetworkRecord,
    ResultRow,
    Score,
    TunedRecord,
    csv_columns,
    read_json,
    rows_from_csv,
    write_csv,
    write_json,
)

NAN = float("nan")


def _head_row(**extra) -> ResultRow:
    """A head's row as evaluation builds it: numpy numbers, NaN where a metric is undefined."""
    scores = {m: Score(np.float64(0.8 + i / 100), np.float64(0.02), 0.75, 0.85) for i, m in enumerate(METRICS)}
    scores["roc_auc"] = Score(NAN, NAN, None, None)  # one class in a test fold: no AUC
    scores["precision"] = Score(0.5, None)             # one fold: no spread, no interval
    row = ResultRow(
        name="vgg16/fc7 + svm", backbone="vgg16", tap="fc7", head="svm", protocol="subject",
        protocol_label="subject-level 5-fold", image_level=False, n_folds=np.int64(5), n_train=80, n_test=100,
        n_subjects=10, classes=["all", "hem"], positive="all", scores=scores,
        confusion=np.array([[60, 8], [4, 28]]), ci_unit="subject",
        per_subject_accuracy={"S1": 1.0, "S2": 0.5, "10": 0.75},
        roc={"fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.8, 1.0]}, fit_seconds=1.234, wall_seconds=NAN,
        settings={"preprocess": "standard+pca:128", "class_weight": None, "seed": 0, "n_boot": 1000,
                  "params": {"C": 10.0, "kernel": "rbf", "gamma": None, "degree": "3", "tol": 1e-7},
                  "stores": ["a.h5", "b.h5"], "device": "null", "cv_note": "", "one": "1", "flag": True,
                  "text_true": "True", "quoted": '"q"', "nested": [{"a": None, "b": [1, "2", NAN]}, [], {}],
                  "lr": 3e-4, "epochs": 30, "nan_text": "NaN"},
        optimistic=True, partial="156 of 330 rows", excluded_images=2, dropped_unknown_subjects=1,
        tuned_store=TunedRecord(12, 4, [{"store": "t.h5", "checkpoint": "run/last.pt", "sha256": "ab" * 32,
                                         "provenance": None}]))
    return dataclasses.replace(row, **extra)


def _network_row(**extra) -> ResultRow:
    """A fine-tuned network's own row (no head; one validation set)."""
    row = ResultRow(
        name="cnn fine-tuned", backbone="cnn", tap="logits", head=None, protocol="val",
        protocol_label="held-out val", image_level=True, n_folds=1, n_train=40, n_test=10, n_subjects=0,
        classes=["all", "hem"], positive="hem",
        scores={m: Score(0.6, None, 0.4, 0.8) for m in METRICS}, confusion=[[3, 2], [2, 3]], ci_unit="image",
        network=NetworkRecord(best_epoch=3, scored_epoch=4, epochs_run=4, n_skipped=0,
                              selection="last epoch (4) of a fixed-length run"),
        settings={"backbone": "cnn", "early_stopping": None, "monitor": "val_loss", "lr": 0.001})
    return dataclasses.replace(row, **extra)


ROWS = [_head_row(), _network_row(), _head_row(name="1", head="null", partial=None, tuned_store=None, optimistic=False,
                                               settings={"other": "x"})]


def test_a_row_holds_json_ready_values_from_construction_on():
    row = _head_row()
    assert row.scores["roc_auc"] == Score(None) and row.mean("roc_auc") != row.mean("roc_auc")  # NaN
    assert type(row.scores["accuracy"].mean) is float and type(row.n_folds) is int
    assert row.confusion == [[60, 8], [4, 28]] and row.wall_seconds is None
    assert row.settings["nested"][0]["b"] == [1, "2", None]
    assert list(row.scores) == list(METRICS)
    partial = ResultRow(**{**{f.name: getattr(row, f.name) for f in dataclasses.fields(row)},
                           "scores": {"accuracy": Score(0.9)}})
    assert partial.scores["f1"] == Score(None) and partial.score("f1").std is None


@pytest.mark.parametrize("row", ROWS, ids=["head", "network", "odd-strings"])
def test_to_dict_from_dict_is_exact(row):
    flat = row.to_dict()
    assert json.loads(json.dumps(flat)) == flat  # JSON-ready, no NaN
    assert ResultRow.from_dict(flat) == row
    assert "predictions" not in flat and flat["name"] == row.name and "model" not in flat


def test_json_round_trip_is_exact(tmp_path):
    path = write_json(ROWS, tmp_path / "results.json")
    assert read_json(path) == ROWS
    data = json.loads(path.read_text())
    assert data[0]["roc_auc"] is None and data[0]["precision_std"] is None and data[1]["head"] is None
    def no_constant(name):
        raise AssertionError(f"results.json holds {name}")

    json.loads(path.read_text(), parse_constant=no_constant)  # strict JSON: no NaN or Infinity


def test_csv_round_trip_is_exact(tmp_path):
    path = write_csv(ROWS, tmp_path / "results.csv")
    assert rows_from_csv(path) == ROWS
    with path.open(newline="") as fh:
        cells = list(csv.DictReader(fh))
    head, network, odd = cells
    # the cells read as featx always wrote them: booleans as True/False, None/NaN empty, JSON for structures
    assert head["image_level"] == "False" and network["image_level"] == "True" and head["optimistic"] == "True"
    assert head["roc_auc"] == "" and network["head"] == "" and float(head["accuracy"]) == pytest.approx(0.8)
    assert json.loads(head["confusion"]) == [[60, 8], [4, 28]] and head["settings.preprocess"] == "standard+pca:128"
    # a setting that is None differs from one the row lacks; strings that read as something else are quoted
    assert head["settings.class_weight"] == "null" and head["settings.other"] == "" and odd["settings.other"] == "x"
    assert head["settings.one"] == '"1"' and head["settings.device"] == '"null"' and odd["head"] == '"null"'
    assert head["settings.text_true"] == '"True"' and head["settings.flag"] == "True" and odd["name"] == '"1"'


def test_csv_leaves_out_fields_no_row_sets(tmp_path):
    cols = csv_columns([_head_row()])
    assert cols[:2] == ["name", "backbone"] and "best_epoch" not in cols and "predictions" not in cols
    assert {"per_subject_accuracy", "roc", "tuned", "confusion", "optimistic"} <= set(cols)
    assert "best_epoch" in csv_columns(ROWS) and "settings.other" in csv_columns(ROWS)
    plain = _head_row(optimistic=False, tuned_store=None, partial=None, excluded_images=0, dropped_unknown_subjects=0)
    path = write_csv([plain], tmp_path / "r.csv")
    assert "optimistic" not in path.read_text().splitlines()[0]
    assert rows_from_csv(path) == [plain]


def test_a_results_json_of_featx_before_the_typed_rows_reads(tmp_path):
    old = {"model": "cnn fine-tuned", "backbone": "cnn", "tap": "logits", "head": "finetune", "protocol": "val",
           "protocol_label": "held-out val", "image_level": False, "n_folds": 1, "n_train": 40, "n_test": 10,
           "n_subjects": 4, "classes": ["all", "hem"], "positive": "all", "accuracy": 0.7, "accuracy_std": None,
           "accuracy_ci_low": 0.5, "accuracy_ci_high": 0.9, "roc_auc": None, "confusion": [[3, 2], [1, 4]],
           "settings": {"lr": 0.001}, "best_epoch": 2}
    (tmp_path / "results.json").write_text(json.dumps([old]))
    row, = read_json(tmp_path / "results.json")
    assert row.name == "cnn fine-tuned" and row.head is None and row.kind == "network"
    assert row.scores["accuracy"] == Score(0.7, None, 0.5, 0.9) and math.isnan(row.mean("roc_auc"))
    assert row.best_epoch == 2 and row.settings == {"lr": 0.001} and row.optimistic is False
    assert ResultRow.from_dict(row.to_dict()) == row


def test_what_is_not_a_result_row_is_named(tmp_path):
    flat = _network_row().to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        ResultRow.from_dict({**flat, "colour": "red"})
    with pytest.raises(ValueError, match=r"missing keys \['positive'\]"):
        ResultRow.from_dict({k: v for k, v in flat.items() if k != "positive"})
    (tmp_path / "r.json").write_text(json.dumps([flat, {**flat, "colour": "red"}]))
    with pytest.raises(ValueError, match="row 2 is not a result row"):
        read_json(tmp_path / "r.json")


def test_flag_and_kind():
    assert _head_row().flag == "OPTIMISTIC" and _network_row().flag == "IMAGE-LEVEL"
    assert _head_row(optimistic=False).flag == "" and _head_row().kind == "head"
