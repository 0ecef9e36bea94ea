"""Metrics of a test set, their summary over folds with an interval over subjects, and ROC curves.

Every metric is defined once in :mod:`featx.scoring` (:func:`compute_metrics` applies them);
:func:`summarize_folds` gives each metric's mean over folds, the sample std of the fold values and the 95%
interval of that mean from :mod:`featx.evaluation.intervals` (subjects as the unit). ROC curves of several
folds are averaged vertically (:func:`roc_points`), never pooled.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from featx.errors import FeatxError, arg
from featx.evaluation.intervals import LEVEL, METHOD, METHOD_IMAGES, OutOfFold, intervals
from featx.evaluation.splits import every_row_has_subject
from featx.scoring import METRIC_TABLE, METRICS


def resolve_positive(classes: Sequence[str], positive: str | None = None) -> int:
    """Index of the positive class: ``positive`` if given, else "all" when present, else the last class."""
    classes = list(classes)
    if positive is not None:
        if positive not in classes:
            raise FeatxError(f"{arg('positive', positive)} is not a class of this data; classes: "
                             f"{', '.join(classes)}")
        return classes.index(positive)
    return classes.index("all") if "all" in classes else len(classes) - 1


def compute_metrics(y_true, y_pred, y_score=None, *, classes, positive, subjects=None) -> dict:
    """Every metric of one test set (:data:`featx.scoring.METRIC_TABLE`: scikit-learn's own functions).

    ``y_true``/``y_pred`` are class indices, ``y_score`` a score of the positive class per row (or None);
    ``positive`` a class name or index. Precision, recall and F1 are those of the positive class. A metric that
    is 0/0 on this test set (precision with no positive prediction, recall and F1 with no positive row, ROC-AUC
    with one class) is NaN: undefined, not 0.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    k = len(classes)
    pos = classes.index(positive) if isinstance(positive, str) else int(positive)
    out: dict = {m.name: m(y_true, y_pred, y_score, positive=pos, n_classes=k) for m in METRIC_TABLE.values()}
    out["confusion"] = skm.confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist()
    out["n"] = int(len(y_true))
    if subjects is not None and every_row_has_subject(subjects):
        out["per_subject_accuracy"] = _per_subject_accuracy(y_true, y_pred, subjects)
    return out


def _per_subject_accuracy(y_true, y_pred, subjects) -> dict[str, float]:
    subjects = np.asarray(subjects).astype(str)
    correct = np.asarray(y_true) == np.asarray(y_pred)
    return {s: float(correct[subjects == s].mean()) for s in sorted(set(subjects))}


def summarize_folds(fold_metrics: list[dict], *, pooled: dict | None = None, level: float = LEVEL) -> dict:
    """What a result row reports about its folds.

    Each metric: its mean over the folds where it is defined (``<metric>``), the sample standard deviation
    of those fold values (``<metric>_std``, ddof=1; NaN for a single fold) and, given the out-of-fold
    predictions ``pooled``, the ``level`` interval of that same mean (``<metric>_ci_low``/``_high``; NaN where
    the design cannot support one: ``interval["na"]`` says why) from :mod:`featx.evaluation.intervals`. Also
    the summed confusion matrix, ``interval`` (method, level, unit, units, reasons), ``per_subject_accuracy``,
    ``ci_unit`` and ``n_folds``.

    ``pooled``: ``{"y_true", "y_pred", "y_score" (or None), "subjects" (or None), "classes", "positive",
    "fold"}``; ``positive`` a class name or index; ``fold`` the test fold of each row (needed with several folds).
    """
    out: dict = {"n_folds": len(fold_metrics)}
    for m in METRICS:
        vals = np.array([f.get(m, np.nan) for f in fold_metrics], dtype=float)
        finite = vals[np.isfinite(vals)]
        out[m] = float(finite.mean()) if finite.size else float("nan")
        out[f"{m}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")  # no spread from one fold
    out["confusion"] = np.sum([np.asarray(f["confusion"]) for f in fold_metrics], axis=0).tolist()
    if pooled is None:
        return out
    classes = list(pooled["classes"])
    positive = pooled["positive"]
    pos = classes.index(positive) if isinstance(positive, str) else int(positive)
    folds = pooled.get("fold")
    if folds is None and len(fold_metrics) > 1:
        raise ValueError("summarize_folds: pooled predictions of several folds need 'fold' (the fold of each row)")
    subjects = pooled.get("subjects")
    known = subjects is not None and every_row_has_subject(subjects)
    oof = OutOfFold(pooled["y_true"], pooled["y_pred"], pooled.get("y_score"),
                    np.zeros(len(pooled["y_true"]), dtype=int) if folds is None else folds,
                    np.asarray(subjects) if known else None, len(classes), pos)
    found = intervals(oof, level=level, class_names=classes)
    for m, iv in found.items():
        out[f"{m}_ci_low"] = float("nan") if iv.low is None else iv.low
        out[f"{m}_ci_high"] = float("nan") if iv.high is None else iv.high
    unit, _ = oof.units()
    out["interval"] = {"method": METHOD if known else METHOD_IMAGES, "level": level, "unit": oof.unit,
                       "n_units": int(unit.max() + 1) if len(unit) else 0,
                       "na": {m: iv.reason for m, iv in found.items() if iv.reason}}
    out["ci_unit"] = oof.unit
    if known:
        out["per_subject_accuracy"] = _per_subject_accuracy(pooled["y_true"], pooled["y_pred"], subjects)
    return out


def roc_points(is_pos, score, max_points: int = 200, folds=None) -> dict | None:
    """At most ``max_points`` (fpr, tpr) points of the ROC curve; None when a class is absent.

    With ``folds`` (the test fold of each row) the curve is the vertical average of the per-fold curves
    (Fawcett 2006): scores of different folds come from different models and are not comparable, so they
    are never pooled; its area is the mean of the per-fold AUCs (folds holding one class are left out).
    """
    if score is None:
        return None
    is_pos = np.asarray(is_pos, dtype=bool)
    score = np.asarray(score, dtype=float)
    folds = np.zeros(len(score), dtype=int) if folds is None else np.asarray(folds)
    curves = []
    for f in np.unique(folds):
        rows = folds == f
        if is_pos[rows].all() or not is_pos[rows].any():
            continue
        fpr, tpr, _ = skm.roc_curve(is_pos[rows], score[rows], drop_intermediate=False)
        curves.append((fpr, tpr))
    if not curves:
        return None
    if len(curves) == 1:
        fpr, tpr = curves[0]
    else:
        fpr, tpr = _vertical_average(curves)
    if len(fpr) > max_points:
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, max_points).round().astype(int)])
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def _vertical_average(curves) -> tuple[np.ndarray, np.ndarray]:
    """Mean TPR of piecewise-linear ROC curves at every FPR where any of them bends; at a vertical step
    the lower and the upper TPR both enter, so the area under the mean is the mean of the areas."""
    grid = np.unique(np.concatenate([f for f, _ in curves]))
    low, high = np.zeros(len(grid)), np.zeros(len(grid))
    for fpr, tpr in curves:
        last = np.searchsorted(fpr, grid, side="right") - 1     # last point with fpr <= x (its highest tpr)
        first = np.searchsorted(fpr, grid, side="left")         # first point with fpr >= x (its lowest tpr)
        on = fpr[last] == grid
        nxt = np.minimum(last + 1, len(fpr) - 1)
        span = fpr[nxt] - fpr[last]
        frac = np.divide(grid - fpr[last], span, out=np.zeros(len(grid)), where=span > 0)
        between = tpr[last] + frac * (tpr[nxt] - tpr[last])
        high += np.where(on, tpr[last], between)
        low += np.where(on, tpr[np.minimum(first, len(fpr) - 1)], between)
    n = len(curves)
    fpr = np.repeat(grid, 2)
    tpr = np.column_stack([low / n, high / n]).ravel()
    keep = np.r_[True, (np.diff(fpr) != 0) | (np.diff(tpr) != 0)]
    return fpr[keep], tpr[keep]
