"""A result row is a value: frozen once built (sub-records for networks, nested searches and tuned stores), written
to results.json with exactly the keys featx always wrote, and marked from its fields, never from its label's words."""
from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest
from report_rows import make_row

from featx.evaluation import Search, evaluate
from featx.evaluation.differences import compare_rows
from featx.report import markdown_table
from featx.report.html import results_html
from featx.results import (
    METRICS,
    NetworkRecord,
    ResultRow,
    SearchRecord,
    TunedRecord,
    read_json,
    rows_from_csv,
    write_csv,
    write_json,
)
from featx.row_names import unique_names
from featx.store import FeatureSet

# The keys of a results.json row, in the order featx wrote them before rows were frozen (its 39 fields, flat).
KEYS = ["marks", "name", "backbone", "tap", "head", "protocol", "protocol_label", "image_level", "n_folds", "n_train",
        "n_test", "n_subjects", "classes", "positive",
        *[m + s for m in METRICS for s in ("", "_std", "_ci_low", "_ci_high")],
        "confusion", "ci_unit", "interval", "comparison", "per_subject_accuracy", "roc", "fit_seconds",
        "wall_seconds", "settings", "protocol_short", "optimistic", "tuned", "partial", "excluded_images",
        "dropped_unknown_subjects",
        "selection_uncorrected", "weights_provenance", "best_epoch", "scored_epoch", "epochs_run", "n_skipped",
        "selection", "scored_epochs", "train_accuracy_last_epoch", "nested", "chosen_params", "search"]

SEARCH = {"method": "grid", "metric": "f1_weighted", "inner_folds": 3, "n_iter": None,
          "space": {"logistic": "C=0.1,1"}}
INNER = [{"fold": k, "C": c, "score": 0.5 + k / 10, "chosen": c == 1.0} for k in (1, 2, 3) for c in (0.1, 1.0)]


def _head_row(**extra) -> ResultRow:
    tuned = TunedRecord(np.int64(12), 4, [{"store": "t.h5", "checkpoint": "run/best.pt", "sha256": "ab" * 32,
                                           "provenance": "recorded"}])
    return make_row("cnn/fc + logistic", 0.8, tuned_store=tuned, settings={"seed": 0, "stores": ["t.h5"]}, **extra)


def _nested_row() -> ResultRow:
    return make_row("cnn/fc + logistic", 0.8,
                    nested_search=SearchRecord.of(SEARCH, [{"C": 1.0}, {"C": 0.1}, {"C": 1.0}], INNER))


def _network_row() -> ResultRow:
    return make_row("cnn fine-tuned", 0.7, head=None, tap="logits", protocol="val", label="held-out val",
                    n_folds=1, network=NetworkRecord(best_epoch=3, scored_epoch=4, epochs_run=np.int64(4), n_skipped=0,
                                                     selection="last epoch (4) of a fixed-length run"))


ROWS = {"head": _head_row, "nested": _nested_row, "network": _network_row}


@pytest.mark.parametrize("kind", ROWS)
def test_a_row_cannot_be_changed_after_it_is_built(kind):
    row = ROWS[kind]()
    for name, value in (("name", "other"), ("optimistic", True), ("best_epoch", 1), ("comparison", {})):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(row, name, value)
    with pytest.raises(TypeError, match="read-only"):
        row.settings["seed"] = 1
    with pytest.raises(TypeError, match="read-only"):
        row.settings.update(tag="a")
    with pytest.raises(TypeError, match="read-only"):
        del row.roc["fpr"]
    with pytest.raises(TypeError, match="read-only"):
        row.scores["accuracy"] = row.scores["f1"]
    record = row.network or row.nested_search or row.tuned_store
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.n_skipped = 2
    assert row.settings == dict(row.settings) and json.loads(json.dumps(row.settings)) == row.settings
    # a changed row is a new one; the old one stays as it was
    tagged = dataclasses.replace(row, settings={**row.settings, "tag": "a"})
    assert tagged.settings["tag"] == "a" and "tag" not in row.settings


def test_sub_records_hold_read_only_values():
    head, nested = _head_row(), _nested_row()
    with pytest.raises(TypeError):
        head.tuned_store.checkpoints[0]["store"] = "other.h5"
    with pytest.raises(TypeError):
        nested.nested_search.chosen_params[0]["C"] = 10.0
    assert isinstance(nested.nested_search.chosen_params, tuple)
    chosen = nested.chosen_params  # the results.json form: a fresh plain list, changing it changes no row
    chosen[0]["C"] = 10.0
    assert nested.chosen_params[0] == {"C": 1.0} and type(head.tuned["n_seen"]) is int


@pytest.mark.parametrize("kind", ROWS)
def test_to_dict_from_dict_round_trips_with_the_keys_featx_always_wrote(kind, tmp_path):
    row = ROWS[kind]()
    flat = row.to_dict()
    assert list(flat) == KEYS
    assert json.loads(json.dumps(flat)) == flat and "inner_scores" not in flat and "predictions" not in flat
    full = row.to_dict(predictions=True)
    assert ResultRow.from_dict(full) == row
    assert set(full) == {*KEYS, "inner_scores", "predictions"}
    written = read_json(write_json([row], tmp_path / "results.json"))
    search = row.nested_search and dataclasses.replace(row.nested_search, inner_scores=None)  # search/<row>.csv
    assert written == [dataclasses.replace(row, predictions=None, nested_search=search)]
    assert rows_from_csv(write_csv([row], tmp_path / "r.csv")) == written
    assert pickle.loads(pickle.dumps(row)) == row and copy.deepcopy(row) == row


def test_each_kind_writes_its_record_where_the_flat_keys_were():
    head, nested, network = (ROWS[k]().to_dict(predictions=True) for k in ("head", "nested", "network"))
    assert head["tuned"] == {"n_seen": 12, "n_unseen": 4, "checkpoints": [
        {"store": "t.h5", "checkpoint": "run/best.pt", "sha256": "ab" * 32, "provenance": "recorded"}]}
    assert head["nested"] is False and head["search"] is None and head["best_epoch"] is None
    assert nested["nested"] is True and nested["search"] == SEARCH and nested["inner_scores"] == INNER
    assert nested["chosen_params"] == [{"C": 1.0}, {"C": 0.1}, {"C": 1.0}] and nested["tuned"] is None
    assert (network["best_epoch"], network["scored_epoch"], network["epochs_run"], network["n_skipped"]) == (3, 4, 4, 0)
    assert network["selection"] == "last epoch (4) of a fixed-length run" and network["scored_epochs"] is None
    # a row with no record reads back with none (an empty network record is none)
    assert ResultRow.from_dict(head).network is None and ResultRow.from_dict(head).nested_search is None
    assert make_row("x", 0.5, network=NetworkRecord()).network is None


def test_a_nested_row_is_built_with_its_search():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12) % 2, 4)
    features = FeatureSet(X=(rng.normal(size=(48, 4)) + y[:, None]).astype(np.float32), y=y, classes=["all", "hem"],
                          paths=np.array([f"img/{i}.bmp" for i in range(48)]),
                          subjects=np.repeat([f"S{i}" for i in range(12)], 4), splits=np.full(48, ""),
                          name="sig/fc", backbone="sig", tap="fc")
    row = evaluate(features, "logistic", cv="subject", n_folds=3, jobs=1,
                   search=Search(space={"logistic": {"C": [0.1, 1.0]}}, inner_folds=2))
    assert row.nested and isinstance(row.nested_search, SearchRecord)
    assert len(row.nested_search.chosen_params) == 3 and len(row.inner_scores) == 3 * 2
    assert row.search["method"] == "grid" and row.search["space"] == {"logistic": "C=0.1,1"}
    assert "nested: inner 2-fold search grouped by subject" in row.settings["cv_note"]
    assert list(row.to_dict()) == KEYS


def test_marks_come_from_the_fields_not_the_label_words():
    # the label mentions OPTIMISTIC, but not as its mark: the row's field puts the mark in front
    odd = make_row("a/fc + svm", 0.9, optimistic=True, protocol="prelim",
                   label="held-out prelim (see the OPTIMISTIC note)")
    assert "**\\* OPTIMISTIC held-out prelim (see the OPTIMISTIC note)**" in markdown_table([odd])
    assert '<span class="flag">* OPTIMISTIC</span> held-out prelim' in results_html([odd])
    # subjects unknown: image-level by its field although its label lacks the word
    leaky = make_row("b/fc + svm", 0.9, image_level=True, protocol="fold",
                     label="given splits (f1, f2; leave one out), subjects unknown: may leak")
    assert '<span class="flag">* IMAGE-LEVEL</span> given splits' in results_html([leaky])
    assert "**\\* given splits" in markdown_table([leaky])
    # a label that starts with the mark word is not marked unless its fields say so
    plain = make_row("c/fc + svm", 0.9, label="OPTIMISTIC-looking name, subject-level 5-fold")
    assert not plain.marked and '<span class="flag">' not in results_html([plain])
    # the label of a featx protocol carries its mark first: written once
    image = make_row("d/fc + svm", 0.9, image_level=True, protocol="image", label="IMAGE-LEVEL 5-fold (why)")
    assert '<span class="flag">* IMAGE-LEVEL</span> 5-fold (why)' in results_html([image])


def test_comparing_and_naming_rows_makes_new_rows():
    rows = [make_row("cnn/fc + svm", 0.8, settings={"stores": ["/d/a.h5"]}),
            make_row("cnn/fc + svm", 0.9, settings={"stores": ["/d/b.h5"]})]
    named = unique_names(rows)
    assert [r.name for r in named] == ["cnn/fc [a] + svm", "cnn/fc [b] + svm"] and named[0].settings["tag"] == "a"
    assert [r.name for r in rows] == ["cnn/fc + svm"] * 2 and "tag" not in rows[0].settings
    compared = compare_rows(named, metric="accuracy")
    assert compared[1].comparison["is_reference"] and compared[0].comparison["reference"] == "cnn/fc [b] + svm"
    assert all(r.comparison is None for r in named)
