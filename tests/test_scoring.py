"""The metric table: each metric's function, batched form and scorer agree with scikit-learn and with each
other, 0/0 is undefined (NaN), and every consumer (search, selection, fine-tuning monitors, reports) reads it."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from featx.finetune.presets import MONITORS, MONITORS_MIN
from featx.report.plots import metric_label
from featx.report.table import TERMINAL_METRICS
from featx.scoring import METRIC_TABLE, METRICS, get_metric

SKLEARN = {  # (y_true, y_pred, positive) -> scikit-learn's value
    "accuracy": lambda y, p, pos: skm.accuracy_score(y, p),
    "precision": lambda y, p, pos: skm.precision_score(y, p, labels=[pos], average="macro", zero_division=np.nan),
    "recall": lambda y, p, pos: skm.recall_score(y, p, labels=[pos], average="macro", zero_division=np.nan),
    "f1": lambda y, p, pos: skm.f1_score(y, p, labels=[pos], average="macro", zero_division=np.nan),
    "f1_weighted": lambda y, p, pos: skm.f1_score(y, p, average="weighted", zero_division=0),
    "f1_macro": lambda y, p, pos: skm.f1_score(y, p, average="macro", zero_division=0),
    "balanced_accuracy": lambda y, p, pos: skm.balanced_accuracy_score(y, p),
}


def _same(a, b) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # balanced accuracy with a class absent from y_true
def test_function_and_batched_form_equal_sklearn_on_random_and_degenerate_test_sets():
    rng = np.random.default_rng(0)
    for _ in range(400):
        k, n = int(rng.integers(2, 4)), int(rng.integers(1, 9))
        y, p = rng.integers(0, k, n), rng.integers(0, k, n)
        if rng.random() < 0.3:
            p[:] = rng.integers(0, k)  # one predicted class: precision of the others is 0/0
        if rng.random() < 0.3:
            y[:] = rng.integers(0, k)  # one true class: recall of the others is 0/0
        pos = int(rng.integers(0, k))
        C = skm.confusion_matrix(y, p, labels=list(range(k)))[None].astype(float)
        for name, reference in SKLEARN.items():
            m = METRIC_TABLE[name]
            value = m(y, p, positive=pos, n_classes=k)
            assert _same(value, m.batched(C, pos)[0]), (name, y, p, pos)
            assert _same(value, float(reference(y, p, pos))), (name, y, p, pos)


def test_zero_over_zero_is_nan_and_roc_auc_needs_both_classes():
    recall, precision, f1 = (get_metric(m) for m in ("recall", "precision", "f1"))
    assert np.isnan(recall([1, 1], [0, 1], positive=0, n_classes=2))      # no positive row
    assert np.isnan(precision([0, 1], [1, 1], positive=0, n_classes=2))   # nothing predicted positive
    assert np.isnan(f1([1, 1], [1, 1], positive=0, n_classes=2))
    assert f1([0, 1], [1, 1], positive=0, n_classes=2) == 0.0             # a missed positive: 0, not undefined
    auc = get_metric("roc_auc")
    assert np.isnan(auc([0, 0], None, [0.1, 0.2], positive=0, n_classes=2))
    assert auc([0, 1, 0], None, [0.9, 0.1, 0.4], positive=0, n_classes=2) == 1.0
    with pytest.raises(ValueError, match="needs scores"):
        auc.batched(np.zeros((1, 2, 2)), 0)
    with pytest.raises(ValueError, match="unknown metric 'auc'; choose one of accuracy"):
        get_metric("auc")


@pytest.mark.parametrize("estimator", [LogisticRegression(), LinearSVC()])
@pytest.mark.parametrize("positive", [0, 1])
def test_scorers_equal_the_metric_on_the_estimators_own_predictions(estimator, positive):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + rng.normal(size=120) > 0.3).astype(int)
    model = estimator.fit(X, y)
    raw = model.decision_function(X)
    score = raw if positive == 1 else -raw
    assert METRIC_TABLE["roc_auc"].scorer(positive, 2)(model, X, y) == pytest.approx(
        skm.roc_auc_score(y == positive, score))
    for name in ("accuracy", "precision", "recall", "f1", "f1_weighted", "balanced_accuracy"):
        expected = METRIC_TABLE[name](y, model.predict(X), positive=positive, n_classes=2)
        assert METRIC_TABLE[name].scorer(positive, 2)(model, X, y) == pytest.approx(expected)
    # an undefined inner fold scores 0, the worst value: it never favours a candidate
    nothing_positive = np.full(len(y), 1 - positive)
    assert METRIC_TABLE["precision"].scorer(positive, 2)(_Constant(nothing_positive), X, y) == 0.0


class _Constant(ClassifierMixin, BaseEstimator):
    """Predicts ``pred`` whatever it is given."""

    def __init__(self, pred=None):
        self.pred = pred
        self.classes_ = np.array([0, 1])

    def predict(self, X):
        return self.pred


def test_every_consumer_reads_the_one_table():
    assert MONITORS == ("loss", *METRICS) and MONITORS_MIN == ("loss",)
    assert metric_label("f1", "all") == "F1 (ALL)" and metric_label("f1_weighted") == METRIC_TABLE["f1_weighted"].label
    assert dict(TERMINAL_METRICS)["f1_weighted"] == METRIC_TABLE["f1_weighted"].short
    assert all(dict(TERMINAL_METRICS)[m] == METRIC_TABLE[m].label for m in ("accuracy", "precision", "roc_auc"))
