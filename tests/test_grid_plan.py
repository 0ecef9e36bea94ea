"""A compare grid is checked once into a GridPlan, passed down whole, and runs in one engine opened once."""
from __future__ import annotations

import dataclasses

import pytest
from cli_helpers import invoke

from featx.evaluation import GridPlan, backends, check_grid, compare, inputs
from featx.heads import HeadSettings
from featx.workflows.classify import run_compare

GRID = dict(cv="subject", n_folds=3, jobs=1, preprocess=("standard",), params={"logistic": {"C": 0.5}})


def _counting(monkeypatch):
    """Count the stores opened for checking (each check of a grid summarises every store) and the engines
    opened (an engine already open in this thread is reused, not opened again)."""
    counts = {"summaries": 0, "engines": 0}
    summarize = inputs.summarize

    def counted_summary(path):
        counts["summaries"] += 1
        return summarize(path)

    class CountedEngine(backends.Engine):
        def __init__(self, *args, **kwargs):
            counts["engines"] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(inputs, "summarize", counted_summary)
    monkeypatch.setattr(backends, "Engine", CountedEngine)
    return counts


def test_featx_compare_checks_its_grid_once_and_opens_one_engine(cnn_store, tmp_path, monkeypatch):
    counts = _counting(monkeypatch)
    result, text = invoke("compare", cnn_store, "--heads", "logistic,knn", "--cv", "subject,image", "--folds", "3",
                          "--jobs", "1", "--out", tmp_path / "cmp", "--no-plots")
    assert result.exit_code == 0, text
    assert counts == {"summaries": 1, "engines": 1}  # before: summarised twice (three times without --out)


def test_a_checked_plan_is_frozen_and_runs_as_the_keywords_do(cnn_store):
    plan = check_grid([cnn_store], ["logistic", "knn"], **GRID)
    assert isinstance(plan, GridPlan) and plan.head_names == ["logistic", "knn"]
    assert plan.settings == HeadSettings(preprocess=("standard",), params={"logistic": {"C": 0.5}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.n_folds = 5
    by_plan = run_compare(plan).rows
    by_keywords = compare([cnn_store], ["logistic", "knn"], **GRID)
    assert [r.name for r in by_plan] == [r.name for r in by_keywords]
    for a, b in zip(by_plan, by_keywords):
        assert a.settings["params"] == b.settings["params"] and a.confusion == b.confusion
        assert a.scores == b.scores
    with pytest.raises(TypeError, match="given alone"):
        run_compare(plan, ["svm"])


def test_check_grid_refuses_an_unknown_option_and_two_estimators_of_one_name(cnn_store):
    from sklearn.linear_model import LogisticRegression  # deferred: the other tests need no estimator of their own

    with pytest.raises(TypeError, match="n_fold"):
        check_grid([cnn_store], ["logistic"], n_fold=3)  # before: **_ignored took any keyword
    with pytest.raises(Exception, match="two different heads are named LogisticRegression"):
        check_grid([cnn_store], [LogisticRegression(C=1), LogisticRegression(C=2)])
