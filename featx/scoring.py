"""Every metric featx reports, defined once.

A :class:`Metric` holds a metric's name (its key in rows and files), its label, its direction, its value on one
test set (scikit-learn's own function), its batched form over stacks of confusion matrices (what intervals
resample) and its scikit-learn scorer (nested search and selection). The grid, the intervals, the nested search,
the selection, fine-tuning's monitors and the reports all read :data:`METRIC_TABLE`.

A metric that is a ratio 0/0 on a test set (precision when nothing is predicted positive, recall and F1 when a
test fold holds no positive row, ROC-AUC with one class) is undefined there: NaN, never 0. Summaries average a
metric over the folds where it is defined; scorers of a search count an undefined inner fold as 0 (the worst
value), so that an undefined fold never favours a candidate.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from featx.errors import FeatxError, arg


class _MetricNames(Sequence):
    """The names of :data:`METRIC_TABLE`, in table order, read when used: a metric added by
    :func:`register_metric` is in every row, summary, interval and results file from then on."""

    def __getitem__(self, i):
        return tuple(METRIC_TABLE)[i]

    def __len__(self) -> int:
        return len(METRIC_TABLE)

    def __iter__(self):
        return iter(tuple(METRIC_TABLE))

    def __contains__(self, name) -> bool:
        return name in METRIC_TABLE

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, _MetricNames)) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))


# Every metric a row reports, in table order.
METRICS = _MetricNames()


@dataclass(frozen=True)
class Metric:
    """One metric: how it is computed, named and compared.

    ``of_positive``: precision, recall and F1 are those of the positive class (their label names it);
    ``needs_score``: computed from a score of the positive class (ROC-AUC), not from predicted classes.
    ``function``: for a metric added by :func:`register_metric`, a scikit-learn style ``function(y_true, y_pred,
    sample_weight=None)`` of class indices (e.g. ``sklearn.metrics.matthews_corrcoef``); None for featx's own.
    """

    name: str
    label: str
    short: str
    of_positive: bool = False
    needs_score: bool = False
    greater_is_better: bool = True
    function: Callable | None = None

    def __call__(self, y_true, y_pred, y_score=None, *, positive: int, n_classes: int) -> float:
        """The metric of one test set (class indices ``y_true``/``y_pred``, ``y_score`` of the positive class);
        NaN where it is undefined (see the module docstring)."""
        if self.function is not None:
            return _weighted(self.function, np.asarray(y_true), np.asarray(y_pred))
        return _FUNCTIONS[self.name](np.asarray(y_true), np.asarray(y_pred), y_score, positive, n_classes)

    def batched(self, confusion: np.ndarray, positive: int) -> np.ndarray:
        """The metric of each confusion matrix of a stack ``(B, K, K)`` (rows: true class); NaN where undefined.
        Same definitions as :meth:`__call__`. Not for ROC-AUC (it needs scores)."""
        if self.needs_score:
            raise ValueError(f"{self.name} needs scores, not confusion matrices")
        if self.function is not None:  # each matrix as its K*K (true, predicted) pairs weighted by their counts
            C = np.asarray(confusion, dtype=float)
            k = C.shape[-1]
            true, pred = np.divmod(np.arange(k * k), k)
            return np.array([_weighted(self.function, true, pred, c.ravel()) for c in C])
        return _confusion_metric(np.asarray(confusion, dtype=float), positive, self.name)

    def scorer(self, positive: int, n_classes: int):
        """A scikit-learn scorer of this metric (``sklearn.metrics.make_scorer``; greater is better; an undefined
        inner fold scores 0). Labels are class indices, ``positive`` the positive class's."""
        common = dict(metric=self.name, positive=positive, n_classes=n_classes)
        if self.needs_score:  # scikit-learn orients a binary decision function towards pos_label
            return skm.make_scorer(_scored_by_score, response_method=("predict_proba", "decision_function"),
                                   pos_label=positive, **common)
        return skm.make_scorer(_scored_by_prediction, response_method="predict", **common)

    def label_for(self, positive: str | None = None) -> str:
        """``Weighted F1``; ``F1 (ALL)`` for a metric of the positive class ``"all"``."""
        return f"{self.label} ({positive.upper()})" if positive and self.of_positive else self.label


def _weighted(function: Callable, y_true, y_pred, weight=None) -> float:
    """``function`` of (weighted) rows; NaN with no row, or where scikit-learn finds it undefined (ValueError)."""
    if weight is not None:
        keep = weight > 0
        y_true, y_pred, weight = y_true[keep], y_pred[keep], weight[keep]
    if len(y_true) == 0:
        return float("nan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return float(function(y_true, y_pred, sample_weight=weight))
    except ValueError:
        return float("nan")


def _scored_by_prediction(y_true, y_pred, *, metric: str, positive: int, n_classes: int) -> float:
    value = METRIC_TABLE[metric](y_true, y_pred, positive=positive, n_classes=n_classes)
    return float(value) if np.isfinite(value) else 0.0


def _scored_by_score(y_true, y_score, *, metric: str, positive: int, n_classes: int, pos_label: int) -> float:
    y_score = np.asarray(y_score)
    if y_score.ndim == 2:  # one column per class (more than two classes)
        y_score = y_score[:, positive]
    value = METRIC_TABLE[metric](y_true, None, y_score, positive=positive, n_classes=n_classes)
    return float(value) if np.isfinite(value) else 0.0


def _ratio(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _confusion_metric(C: np.ndarray, pos: int, name: str) -> np.ndarray:
    """``name`` of each matrix of ``C`` (B, K, K), vectorised (NaN where a ratio is 0/0)."""
    rows = C.sum(axis=2)   # true counts (support)
    cols = C.sum(axis=1)   # predicted counts
    diag = np.diagonal(C, axis1=1, axis2=2)
    total = rows.sum(axis=1)
    tp = diag[:, pos]
    if name == "accuracy":
        return _ratio(diag.sum(axis=1), total)
    if name == "precision":
        return _ratio(tp, cols[:, pos])
    if name == "recall":
        return _ratio(tp, rows[:, pos])
    if name == "f1":
        return _ratio(2 * tp, rows[:, pos] + cols[:, pos])
    f1_k = np.nan_to_num(_ratio(2 * diag, rows + cols))  # a class absent from both sides weighs nothing
    if name == "f1_weighted":
        return _ratio((f1_k * rows).sum(axis=1), total)
    if name == "f1_macro":
        present = (rows + cols) > 0
        return _ratio((f1_k * present).sum(axis=1), present.sum(axis=1))
    if name == "balanced_accuracy":
        in_true = rows > 0
        return _ratio((np.nan_to_num(_ratio(diag, rows)) * in_true).sum(axis=1), in_true.sum(axis=1))
    raise ValueError(f"no confusion form for {name}")


def _accuracy(y_true, y_pred, _score, _pos, _k):
    return float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")


def _precision_recall_f1(which: int) -> Callable:
    def metric(y_true, y_pred, _score, pos, _k):
        if len(y_true) == 0:
            return float("nan")
        values = skm.precision_recall_fscore_support(y_true, y_pred, labels=[pos], average=None,
                                                     zero_division=np.nan)[which]
        return float(values[0])
    return metric


def _f1_average(average: str) -> Callable:
    def metric(y_true, y_pred, _score, _pos, _k):
        return float(skm.f1_score(y_true, y_pred, average=average, zero_division=0)) if len(y_true) else float("nan")
    return metric


def _balanced_accuracy(y_true, y_pred, _score, _pos, _k):
    if len(y_true) == 0:
        return float("nan")
    with warnings.catch_warnings():  # y_pred may hold a class absent from y_true (one-class test fold)
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def _roc_auc(y_true, _pred, score, pos, _k):
    if score is None:
        return float("nan")
    is_pos = np.asarray(y_true) == pos
    if not 0 < is_pos.sum() < len(is_pos):
        return float("nan")
    return float(skm.roc_auc_score(is_pos, np.asarray(score, dtype=float)))


_FUNCTIONS: dict[str, Callable] = {
    "accuracy": _accuracy,
    "precision": _precision_recall_f1(0),
    "recall": _precision_recall_f1(1),
    "f1": _precision_recall_f1(2),
    "f1_weighted": _f1_average("weighted"),
    "f1_macro": _f1_average("macro"),
    "balanced_accuracy": _balanced_accuracy,
    "roc_auc": _roc_auc,
}

#: The metric table, in table order.
METRIC_TABLE: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "Accuracy", "Acc"),
    Metric("precision", "Precision", "Prec", of_positive=True),
    Metric("recall", "Recall", "Rec", of_positive=True),
    Metric("f1", "F1", "F1", of_positive=True),
    Metric("f1_weighted", "Weighted F1", "wF1"),
    Metric("f1_macro", "Macro F1", "mF1"),
    Metric("balanced_accuracy", "Balanced accuracy", "BAcc"),
    Metric("roc_auc", "ROC-AUC", "ROC-AUC", needs_score=True),
)}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` (with a ``function``, e.g. ``Metric("mcc", "Matthews correlation", "MCC",
    function=sklearn.metrics.matthews_corrcoef)``) to :data:`METRIC_TABLE`: every row then reports it (mean, std
    over folds and its interval over subjects, which is sized on the logit scale: a metric outside [0, 1] such as
    MCC gets one only where its estimate lies in (0, 1)), results.json/csv carry it, and ``sort_by``/``select``/
    search metrics may name it. Remove it with ``METRIC_TABLE.pop(name)``."""
    if metric.function is None or metric.needs_score:
        raise FeatxError(f"{arg('metric', metric.name)}: a metric added to featx needs a function(y_true, y_pred, "
                         "sample_weight=None) of predicted classes (metrics of scores are featx's own)")
    if metric.name in METRIC_TABLE:
        raise FeatxError(f"{arg('metric', metric.name)}: a metric of that name exists; choose another name")
    METRIC_TABLE[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """The :class:`Metric` called ``name``; ValueError listing the known names otherwise."""
    try:
        return METRIC_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}") from None


def check_metric(metric: str, option: str) -> str:
    """``metric`` when it names a metric, else a one-line :class:`FeatxError` naming the argument ``option`` that
    gave it (``sort_by``, ``select``) and listing the metrics."""
    if metric not in METRICS:
        raise FeatxError(f"{arg(option, metric)} is not a metric; choose one of {', '.join(METRICS)}")
    return metric
