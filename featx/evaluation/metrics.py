"""Metrics of a test set, their summary over folds with a subject bootstrap, and ROC curves.

Every metric is that of scikit-learn's own function (:func:`compute_metrics`); :func:`summarize_folds` gives
each metric's mean over folds, the sample std of the fold values and a 95% bootstrap interval of that mean
that resamples subjects within each test fold (:func:`bootstrap_ci`). ROC curves of several folds are
averaged vertically (:func:`roc_points`), never pooled.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from featx.errors import FeatxError, arg
from featx.evaluation.splits import every_row_has_subject
from featx.results import METRICS


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
    """Every metric of one test set, computed with scikit-learn's own functions.

    ``y_true``/``y_pred`` are class indices, ``y_score`` a score of the positive class per row (or None);
    ``positive`` a class name or index. Precision, recall and F1 are those of the positive class;
    ``roc_auc`` is the positive class against the rest (NaN when the test set holds one class only).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    k = len(classes)
    pos = classes.index(positive) if isinstance(positive, str) else int(positive)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=[pos], average=None,
                                                           zero_division=0)
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(prec[0]),
        "recall": float(rec[0]),
        "f1": float(f1[0]),
        "f1_weighted": float(skm.f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "balanced_accuracy": float(_balanced_accuracy(y_true, y_pred)),
        "roc_auc": float("nan"),
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
        "n": int(len(y_true)),
    }
    is_pos = y_true == pos
    if y_score is not None and 0 < is_pos.sum() < len(is_pos):
        out["roc_auc"] = float(skm.roc_auc_score(is_pos, np.asarray(y_score, dtype=float)))
    if subjects is not None and every_row_has_subject(subjects):
        subjects = np.asarray(subjects).astype(str)
        correct = y_true == y_pred
        out["per_subject_accuracy"] = {s: float(correct[subjects == s].mean()) for s in sorted(set(subjects))}
    return out


def _balanced_accuracy(y_true, y_pred) -> float:
    with warnings.catch_warnings():  # y_pred may hold a class absent from y_true (one-class test fold)
        warnings.simplefilter("ignore", UserWarning)
        return skm.balanced_accuracy_score(y_true, y_pred)


def _confusion_metrics(C: np.ndarray, pos: int) -> dict[str, np.ndarray]:
    """The confusion-based metrics for a stack of confusion matrices ``C`` (B, K, K), vectorised.

    Same definitions as :func:`compute_metrics` (zero when a ratio is 0/0); used by the bootstrap.
    """
    C = C.astype(float)
    rows = C.sum(axis=2)   # true counts (support)
    cols = C.sum(axis=1)   # predicted counts
    diag = np.diagonal(C, axis1=1, axis2=2)
    total = rows.sum(axis=1)

    def div(a, b):
        return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)

    tp, fp, fn = diag[:, pos], cols[:, pos] - diag[:, pos], rows[:, pos] - diag[:, pos]
    f1_k = div(2 * diag, rows + cols)
    present = (rows + cols) > 0
    in_true = rows > 0
    return {
        "accuracy": div(diag.sum(axis=1), total),
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "f1_weighted": div((f1_k * rows).sum(axis=1), total),
        "f1_macro": div((f1_k * present).sum(axis=1), present.sum(axis=1)),
        "balanced_accuracy": div((div(diag, rows) * in_true).sum(axis=1), in_true.sum(axis=1)),
    }


def _weighted_auc(is_pos: np.ndarray, score: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC for each row of row-weights ``W`` (B, N) (Mann-Whitney with ties counted half)."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    Wo = W[:, order]
    pos_w = np.add.reduceat(Wo * is_pos[order], starts, axis=1)
    neg_w = np.add.reduceat(Wo * ~is_pos[order], starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w
    num = (pos_w * (below + 0.5 * neg_w)).sum(axis=1)
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    return np.divide(num, den, out=np.full(len(W), np.nan), where=den > 0)


def bootstrap_ci(y_true, y_pred, y_score, groups, *, n_classes: int, positive: int, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95, folds=None) -> dict[str, tuple[float, float]]:
    """Percentile interval of each metric's mean over test folds, resampling ``groups`` (subjects).

    Each draw resamples, within every test fold (``folds``: the fold of each row; None = one fold), as many
    subjects as the fold holds, with replacement; all rows of a drawn subject enter together, as often as
    it was drawn. The metric is computed per fold, as :func:`compute_metrics` does, and averaged over the
    folds where it is defined (as :func:`summarize_folds` does: a draw whose fold lost a class has no AUC
    there), so the interval is that of the reported estimate. With ``groups=None`` single rows are
    resampled. Returns ``{metric: (low, high)}``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if n_boot <= 0 or len(y_true) == 0:
        return {m: (float("nan"), float("nan")) for m in METRICS}
    groups = np.arange(len(y_true)).astype(str) if groups is None else np.asarray(groups).astype(str)
    folds = np.zeros(len(y_true), dtype=int) if folds is None else np.asarray(folds)
    score = None if y_score is None else np.asarray(y_score, dtype=float)
    rng = np.random.default_rng(seed)
    per_fold = []  # one {metric: (n_boot,) values} per fold
    for f in np.unique(folds):
        rows = np.flatnonzero(folds == f)
        t, p = y_true[rows], y_pred[rows]
        _, gidx = np.unique(groups[rows], return_inverse=True)
        n_groups = gidx.max() + 1
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(float)  # (B, G)
        # per-group confusion matrices, then each draw's confusion = counts @ per-group
        per_group = np.zeros((n_groups, n_classes * n_classes))
        np.add.at(per_group, (gidx, t * n_classes + p), 1.0)
        values = _confusion_metrics((counts @ per_group).reshape(n_boot, n_classes, n_classes), positive)
        if score is not None:
            is_pos = t == positive
            values["roc_auc"] = np.concatenate([_weighted_auc(is_pos, score[rows], counts[i:i + 100][:, gidx])
                                                for i in range(0, n_boot, 100)])
        else:
            values["roc_auc"] = np.full(n_boot, np.nan)
        per_fold.append(values)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for m in METRICS:
        stack = np.stack([v[m] for v in per_fold])  # (folds, n_boot)
        finite = np.isfinite(stack)
        n_def = finite.sum(axis=0)
        mean = np.divide(np.where(finite, stack, 0.0).sum(axis=0), n_def, out=np.full(n_boot, np.nan),
                         where=n_def > 0)
        v = mean[np.isfinite(mean)]
        out[m] = (float(np.percentile(v, lo)), float(np.percentile(v, hi))) if v.size else (float("nan"),) * 2
    return out


def summarize_folds(fold_metrics: list[dict], *, pooled: dict | None = None, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict:
    """What a result row reports about its folds.

    Each metric: its mean over the folds where it is defined (``<metric>``), the sample standard deviation
    of those fold values (``<metric>_std``, ddof=1; NaN for a single fold) and, given the out-of-fold
    predictions ``pooled``, a 95% percentile bootstrap interval of that same mean over folds
    (``<metric>_ci_low``/``_high``, see :func:`bootstrap_ci`; widened to the estimate in the rare small sample
    where the percentile interval misses it). Also the
    summed confusion matrix, ``per_subject_accuracy``, ``ci_unit`` and ``n_folds``.

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
    if pooled is not None:
        classes = list(pooled["classes"])
        positive = pooled["positive"]
        pos = classes.index(positive) if isinstance(positive, str) else int(positive)
        folds = pooled.get("fold")
        if folds is None and len(fold_metrics) > 1:
            raise ValueError("summarize_folds: pooled predictions of several folds need 'fold' (the fold of each row)")
        subjects = pooled.get("subjects")
        known = subjects is not None and every_row_has_subject(subjects)
        ci = bootstrap_ci(pooled["y_true"], pooled["y_pred"], pooled.get("y_score"),
                          np.asarray(subjects) if known else None, n_classes=len(classes), positive=pos,
                          n_boot=n_boot, seed=seed, level=level, folds=folds)
        for m, (lo, hi) in ci.items():
            est = out[m]
            if np.isfinite(est) and np.isfinite(lo):  # a percentile interval may miss a tiny sample's estimate
                lo, hi = min(lo, est), max(hi, est)
            out[f"{m}_ci_low"], out[f"{m}_ci_high"] = lo, hi
        out["ci_unit"] = "subject" if known else "image"
        if known:
            s = np.asarray(subjects).astype(str)
            correct = np.asarray(pooled["y_true"]) == np.asarray(pooled["y_pred"])
            out["per_subject_accuracy"] = {g: float(correct[s == g].mean()) for g in sorted(set(s))}
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
