"""Evaluation protocol: splits, metrics, summaries over folds, and the heads x stores grid.

Protocols (``make_splits``):
- ``subject``: stratified k-fold grouped by subject (``StratifiedGroupKFold``); the only honest estimate
  for a cell classifier, and the default when every row has a subject.
- ``image``: plain stratified k-fold; cells of one subject land on both sides, so every report marks it
  IMAGE-LEVEL.
- ``fold``: the data's own folds (C-NMC ``fold_0/1/2``), leave one fold out.
- ``eval_set="prelim"``: train on the training rows, test on the rows of that split once.

Rows of the held-out phases (``prelim``, ``final``, ``test``) never enter cross-validation.

Features of a fine-tuned network (a store whose rows carry ``roles``, see :mod:`featx.provenance`) get
``tuned-holdout`` by default (``tuned_protocol``): heads train on the rows the network saw and are tested
only on rows it never saw. Cross-validation over seen rows is refused unless ``allow_optimistic``, and
then the row is marked OPTIMISTIC (``optimistic: True``) in every output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn import metrics as skm
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from featx.errors import FeatxError

HELD_OUT_SPLITS = ("prelim", "final", "test")
CV_CHOICES = ("auto", "subject", "image", "fold")
METRICS = ("accuracy", "precision", "recall", "f1", "f1_weighted", "f1_macro", "balanced_accuracy", "roc_auc")

__all__ = ["CV_CHOICES", "HELD_OUT_SPLITS", "METRICS", "Protocol", "bootstrap_ci", "compare", "compute_metrics",
           "evaluate", "make_splits", "resolve_positive", "summarize_folds", "tuned_protocol"]


# --------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------
@dataclass
class Protocol:
    """Train/test index pairs and how to name them in a report."""
    name: str                                   # "subject", "image", "fold" or the held-out split ("prelim")
    label: str                                  # e.g. "subject-level 5-fold", "IMAGE-LEVEL 5-fold (...)"
    image_level: bool                           # True when one subject's cells sit on both sides
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train indices, test indices) into the rows given
    seed: int = 0
    note: str = ""                              # e.g. why "auto" chose image-level
    groups: np.ndarray | None = field(default=None, repr=False)  # subject of each row (None when unknown)
    optimistic: bool = False                    # CV over rows a fine-tuned network saw (asked for explicitly)

    @property
    def n_folds(self) -> int:
        return len(self.folds)


def _subjects_known(subjects) -> bool:
    return subjects is not None and len(subjects) > 0 and bool(np.all(np.asarray(subjects) != ""))


def make_splits(subjects, y, splits, *, cv: str = "auto", n_folds: int = 5, seed: int = 0,
                eval_set: str | None = None, paths=None) -> Protocol:
    """Build the train/test folds of one protocol over labelled rows.

    ``subjects``/``splits`` are per-row strings ("" when unknown/none) or None; ``y`` class indices;
    ``paths`` (optional) name the rows in messages. ``eval_set`` (e.g. "prelim") trains on the training rows
    and tests on that split, ignoring ``cv``. When some cross-validation rows have a subject and others do
    not, ``cv`` "auto"/"subject" refuse (naming those files) rather than fall back to image-level folds.
    Impossible requests (one class, fewer subjects than folds, ...) raise :class:`FeatxError` saying what
    to change.
    """
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        raise FeatxError("no labelled rows to evaluate; the feature store holds only unlabelled samples")
    if np.any(y < 0):
        raise FeatxError("make_splits got unlabelled rows (label -1); load the features with labelled=True")
    splits = np.asarray(splits if splits is not None else [""] * n).astype(str)
    subj = np.asarray(subjects).astype(str) if subjects is not None and len(subjects) else np.full(n, "")

    if eval_set:
        return _held_out(y, splits, subj if _subjects_known(subj) else None, eval_set, seed)

    cv = (cv or "auto").lower()
    if cv not in CV_CHOICES:
        raise FeatxError(f"--cv {cv!r}: choose one of {', '.join(CV_CHOICES)}")
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise FeatxError(f"--folds {n_folds}: cross-validation needs at least 2 folds")
    pool = np.flatnonzero(~np.isin(splits, HELD_OUT_SPLITS))
    if pool.size == 0:
        raise FeatxError(f"every labelled row belongs to a held-out split ({', '.join(sorted(set(splits)))}); "
                         "use --eval SPLIT to test on one of them")
    skipped = n - pool.size
    note = f"{skipped} rows of held-out splits ({', '.join(sorted(set(splits[~np.isin(np.arange(n), pool)])))}) " \
           "left out of cross-validation" if skipped else ""
    y_pool = y[pool]
    _require_two_classes(y_pool, "the cross-validation rows")

    unknown = pool[subj[pool] == ""]
    groups = subj if unknown.size == 0 else None  # held-out rows may lack a subject: they are never folded
    if 0 < unknown.size < pool.size and cv in ("auto", "subject"):
        raise FeatxError(_unknown_subjects_message(unknown, pool.size, paths))

    if cv == "auto":
        if groups is None:
            cv = "image"
            why = "subjects unknown (no row has a subject id): fell back to image-level folds"
            note = "; ".join(filter(None, [why, note]))
        else:
            cv = "subject"

    if cv == "subject":
        if groups is None:
            raise FeatxError("--cv subject needs a subject id for every row, and no row of this data has one; "
                             "use --cv image (image-level, optimistic) or a manifest with a subject column")
        g = groups[pool]
        n_subj = len(np.unique(g))
        if n_subj < n_folds:
            raise FeatxError(f"only {n_subj} subjects for --folds {n_folds}: subject-grouped CV needs at least one "
                             f"subject per fold; use --folds {max(2, n_subj)} (or --cv image, which leaks subjects)")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = [(pool[a], pool[b]) for a, b in splitter.split(np.zeros(len(pool)), y_pool, g)]
        label = f"subject-level {n_folds}-fold"
        prot = Protocol("subject", label, False, folds, seed, note, groups)
    elif cv == "image":
        counts = np.bincount(y_pool)
        smallest = int(counts[counts > 0].min())
        if smallest < n_folds:
            raise FeatxError(f"the rarest class has {smallest} labelled rows, too few for --folds {n_folds}; "
                             f"use --folds {max(2, smallest)} or fewer")
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = [(pool[a], pool[b]) for a, b in splitter.split(np.zeros(len(pool)), y_pool)]
        why = ("cells of one subject on both sides" if groups is not None else
               "subjects unknown" if unknown.size == pool.size else "some subjects unknown")
        prot = Protocol("image", f"IMAGE-LEVEL {n_folds}-fold ({why})", True, folds, seed, note, groups)
    else:  # given folds
        values = splits[pool]
        if np.any(values == ""):
            raise FeatxError("--cv fold needs every training row to carry a split (fold_0, fold_1, ...); "
                             "this data has rows without one; use --cv subject or --cv image")
        names = sorted(set(values))
        if len(names) < 2:
            raise FeatxError(f"--cv fold needs at least 2 folds in the data; found only {names[0]!r}; "
                             "use --cv subject or --cv image")
        folds = [(pool[values != f], pool[values == f]) for f in names]
        kind = "C-NMC folds" if all(f.startswith("fold") for f in names) else "given splits"
        leak = groups is not None and _leaks(folds, groups)
        label = f"{kind} ({', '.join(names)}; leave one out)"
        if leak:
            label = f"IMAGE-LEVEL {label}: subjects on both sides"
        elif groups is None:
            label = f"{label}, subjects unknown: may leak"
        prot = Protocol("fold", label, leak or groups is None, folds, seed, note, groups)

    for k, (train, test) in enumerate(prot.folds):
        _require_two_classes(y[train], f"the training part of fold {k + 1} ({prot.label})",
                             hint=f"use fewer --folds (now {prot.n_folds})")
    if prot.name == "subject" and _leaks(prot.folds, groups):  # pragma: no cover - guaranteed by the splitter
        raise RuntimeError("subject-grouped folds share a subject")
    return prot


def _held_out(y, splits, groups, eval_set: str, seed: int) -> Protocol:
    test = np.flatnonzero(splits == eval_set)
    if test.size == 0:
        have = ", ".join(sorted(set(splits) - {""})) or "none"
        raise FeatxError(f"--eval {eval_set}: no labelled rows of split {eval_set!r}; labelled splits here: {have}")
    train_mask = ~np.isin(splits, [*HELD_OUT_SPLITS, eval_set])
    train = np.flatnonzero(train_mask)
    if train.size == 0:
        raise FeatxError(f"--eval {eval_set}: no training rows left (all rows are in held-out splits)")
    _require_two_classes(y[train], f"the training rows for --eval {eval_set}")
    names = sorted(set(splits[train]) - {""})
    folds = [(train, test)]
    trained_on = ", ".join(names) if names else "all other rows"
    leak = groups is not None and _leaks(folds, groups)
    label = f"held-out {eval_set} (trained on {trained_on})"
    if leak:
        label = f"IMAGE-LEVEL {label}: subjects on both sides"
    return Protocol(eval_set, label, leak, folds, seed, "", groups)


def _unknown_subjects_message(unknown, n_rows: int, paths) -> str:
    """One line naming the rows without a subject (first 3 and a count) and the three ways on."""
    names = [str(paths[i]) for i in unknown[:3]] if paths is not None else [f"row {i}" for i in unknown[:3]]
    more = f" and {unknown.size - 3} more" if unknown.size > 3 else ""
    return (f"{unknown.size} of {n_rows} labelled rows have no subject id (their names do not parse): "
            f"{', '.join(names)}{more}; subject-grouped CV cannot place them: fix those file names, drop the rows "
            "(--drop-unknown-subjects), or use --cv image (image-level, optimistic)")


def _leaks(folds, groups) -> bool:
    return any(np.intersect1d(groups[a], groups[b]).size for a, b in folds)


def _require_two_classes(y, what: str, hint: str = "check the labels of the data") -> None:
    if len(np.unique(y)) < 2:
        raise FeatxError(f"{what} hold only one class; a classifier needs at least two ({hint})")


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def resolve_positive(classes: Sequence[str], positive: str | None = None) -> int:
    """Index of the positive class: ``positive`` if given, else "all" when present, else the last class."""
    classes = list(classes)
    if positive is not None:
        if positive not in classes:
            raise FeatxError(f"--positive {positive!r} is not a class of this data; classes: {', '.join(classes)}")
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
    if subjects is not None and _subjects_known(subjects):
        subjects = np.asarray(subjects).astype(str)
        correct = y_true == y_pred
        out["per_subject_accuracy"] = {s: float(correct[subjects == s].mean()) for s in sorted(set(subjects))}
    return out


def _balanced_accuracy(y_true, y_pred) -> float:
    import warnings

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
        known = subjects is not None and _subjects_known(subjects)
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


# --------------------------------------------------------------------------------------------------
# running heads over folds
# --------------------------------------------------------------------------------------------------
def _fit_fold(head: str, head_kwargs: dict, X, y, train, test, positive: int):
    """Fit one head on one fold; returns predictions, positive-class scores and timings."""
    from featx.heads import make_head, positive_scores

    model = make_head(head, **head_kwargs)
    try:
        t0 = time.perf_counter()
        model.fit(X[train], y[train])
        t1 = time.perf_counter()
        Xt = X[test]
        pred = model.predict(Xt)
        score = positive_scores(model, Xt, positive)
    except ValueError as exc:  # a parameter that does not fit the data (pca:N > features, n_neighbors > rows, ...)
        raise FeatxError(f"head {head}: {' '.join(str(exc).split())}; change --param/--preprocess") from None
    return pred, score, t1 - t0, time.perf_counter() - t1


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


def _head_params(params: dict | None, head: str) -> dict:
    """Pick the parameters for ``head`` from ``{"C": 1}`` (every head that has a ``C``) or
    ``{"svm": {"C": 1}}`` (scoped to one head)."""
    from featx.heads import HEADS

    if not params:
        return {}
    out = {k: v for k, v in params.items() if k not in HEADS and k in _accepted_params(head)}
    scoped = params.get(head)
    if isinstance(scoped, dict):
        out.update(scoped)
    return out


def _accepted_params(head: str) -> set[str]:
    from featx.heads import get_head

    spec = get_head(head)
    return set(spec.factory(None, 0, "cpu").get_params(deep=False))


def _check_params(params: dict | None, heads: Sequence[str]) -> None:
    """Refuse an unscoped parameter that none of ``heads`` takes (a typo would otherwise vanish)."""
    from featx.heads import HEADS

    for key in (params or {}):
        if key not in HEADS and not any(key in _accepted_params(h) for h in heads):
            raise FeatxError(f"--param {key}: none of the heads {', '.join(heads)} takes it; scope it as "
                             "head.key=value or check its name")


def _settings_of(features) -> dict:
    keep = ("backbone", "weights", "weights_kind", "weights_sha256", "input_size", "resize", "dtype")
    return {"stores": list(getattr(features, "stores", []) or []), "fingerprint": features.fingerprint,
            "extraction": [{k: s.get(k) for k in keep if k in s} for s in features.settings]}


def _run_grid(features, heads: Sequence[str], protocol: Protocol, *, positive: int, jobs: int, seed: int,
              preprocess, class_weight, device, params, n_boot: int) -> list[dict]:
    from joblib import Parallel, delayed

    from featx.heads import get_head

    X, y = features.X, features.y
    if jobs == 0:
        raise FeatxError("--jobs 0: give 1 or more processes, or -1 for all cores")
    specs = [get_head(h) for h in heads]
    _check_params(params, [s.name for s in specs])
    kwargs = {s.name: dict(preprocess=preprocess, class_weight=class_weight, seed=seed, device=device,
                           **_head_params(params, s.name)) for s in specs}
    tasks = [(s.name, k) for s in specs for k in range(protocol.n_folds)]
    t0 = time.perf_counter()
    results = Parallel(n_jobs=jobs, prefer="processes")(
        delayed(_fit_fold)(name, kwargs[name], X, y, *protocol.folds[k], positive) for name, k in tasks)
    wall = time.perf_counter() - t0
    by_task = dict(zip(tasks, results))

    classes = list(features.classes)
    test_rows = np.concatenate([test for _, test in protocol.folds])
    subjects = np.asarray(features.subjects).astype(str) if len(features.subjects) else None
    if subjects is not None and not _subjects_known(subjects[test_rows]):
        subjects = None  # the bootstrap resamples images then (ci_unit "image")
    fold_of = np.concatenate([np.full(len(test), k) for k, (_, test) in enumerate(protocol.folds)])
    rows = []
    for spec in specs:
        fold_metrics, preds, scores, fit_s = [], [], [], 0.0
        for k, (train, test) in enumerate(protocol.folds):
            pred, score, fs, _ = by_task[(spec.name, k)]
            fold_metrics.append(compute_metrics(y[test], pred, score, classes=classes, positive=positive,
                                                subjects=None if subjects is None else subjects[test]))
            preds.append(pred), scores.append(score)
            fit_s += fs
        used = np.unique(np.concatenate([test_rows, *[a for a, _ in protocol.folds]]))
        pooled = {"y_true": y[test_rows], "y_pred": np.concatenate(preds), "y_score": np.concatenate(scores),
                  "classes": classes, "positive": positive, "fold": fold_of,
                  "subjects": None if subjects is None else subjects[test_rows]}
        summary = summarize_folds(fold_metrics, pooled=pooled, n_boot=n_boot, seed=seed)
        row = {
            "model": f"{features.name} + {spec.name}",
            "backbone": features.backbone, "tap": features.tap, "head": spec.name,
            "protocol": protocol.name, "protocol_label": protocol.label, "image_level": bool(protocol.image_level),
            "n_folds": protocol.n_folds,
            "n_train": int(round(np.mean([len(a) for a, _ in protocol.folds]))),
            "n_test": int(len(test_rows)),
            "n_subjects": int(len(np.unique(subjects[used]))) if subjects is not None else 0,
            "classes": classes, "positive": classes[positive],
        }
        row.update(summary)
        row["roc"] = roc_points(pooled["y_true"] == positive, pooled["y_score"], folds=fold_of)
        row["predictions"] = _predictions(features, test_rows, fold_of, pooled, classes)
        row["fit_seconds"] = round(fit_s, 3)
        row["wall_seconds"] = round(wall, 3)
        row["settings"] = {
            "preprocess": preprocess, "class_weight": class_weight if spec.class_weight else None,
            "params": _head_params(params, spec.name), "seed": seed, "device": device, "n_boot": n_boot,
            "cv_note": protocol.note, **_settings_of(features),
        }
        rows.append(row)
    return rows


_OPTIMISTIC_REASON = "features tuned on test subjects"  # in OPTIMISTIC labels


def _no_unseen_message(features, what: str) -> str:
    stores = ", ".join(t.get("store", "") for t in features.tuned) or "this store"
    return (f"{stores}: {what}; its features come from a fine-tuned network, so no row it saw may be scored: "
            "use `featx hybrid` (fine-tunes per outer fold), or fine-tune with a validation split (--val subject "
            "or --eval prelim) and extract again, or pass --optimistic to cross-validate anyway (marked OPTIMISTIC)")


def _match_note(features) -> str:
    parts = []
    for t in features.tuned:
        if t.get("provenance") != "recorded":
            parts.append(f"{t.get('store', '')}: {t.get('match', 'the checkpoint records no samples')}")
        elif not t.get("same_root", True) or "differs" in str(t.get("match", "")):
            parts.append(f"{t.get('store', '')}: {t.get('match', '')}")
    return "; ".join(parts)


def tuned_protocol(features, *, cv: str = "auto", eval_set: str | None = None, n_folds: int = 5, seed: int = 0,
                   allow_optimistic: bool = False) -> Protocol:
    """The protocol for features of a fine-tuned network (``features.roles`` set; labelled rows only).

    ``cv="auto"`` without ``eval_set``: ``tuned-holdout``, heads train on the rows the network saw (trained
    on, or of subjects it trained on) and are tested once on the labelled rows it never saw (its validation
    images and any other unseen rows). ``eval_set``: that split, refused when the network saw any of its
    rows. ``cv`` subject/image/fold: refused unless ``allow_optimistic``; then the usual folds, labelled
    OPTIMISTIC. Rows of held-out phases the network never saw stay out of the heads' training rows.
    """
    from featx.provenance import UNSEEN_ROLES

    roles = np.asarray(features.roles).astype(str)
    y = np.asarray(features.y)
    unseen = np.isin(roles, UNSEEN_ROLES)
    subjects = features.subjects
    groups = np.asarray(subjects).astype(str) if _subjects_known(subjects) else None
    splits = np.asarray(features.splits).astype(str)
    cv = (cv or "auto").lower()
    if cv not in CV_CHOICES:
        raise FeatxError(f"--cv {cv!r}: choose one of {', '.join(CV_CHOICES)}")
    note = _match_note(features)
    if groups is not None:  # a subject with any seen row is seen (the store's subject ids may differ from
        shared = unseen & np.isin(groups, groups[~unseen])  # the checkpoint's, e.g. another manifest)
        if shared.any():
            unseen &= ~shared
            note = "; ".join(filter(None, [note, f"{int(shared.sum())} rows never trained on count as seen: "
                                                 "their subject has rows the network saw"]))
    optimistic_label = None
    if eval_set:
        prot = make_splits(subjects, y, splits, eval_set=eval_set, seed=seed, paths=features.paths)
        train, test = prot.folds[0]
        seen = int((~unseen[test]).sum())
        if seen:
            if not allow_optimistic:
                raise FeatxError(_no_unseen_message(
                    features, f"--eval {eval_set}: the network trained on {seen} of its {len(test)} rows "
                              "(or on their subjects)"))
            optimistic_label = f"OPTIMISTIC {prot.label} ({_OPTIMISTIC_REASON}: {seen} of {len(test)} test rows seen)"
        else:
            prot.name = f"tuned-{eval_set}"
            prot.label = f"tuned-holdout: {prot.label}, rows the network never saw"
    elif cv != "auto":
        if not allow_optimistic:
            raise FeatxError(f"--cv {cv}: the fine-tuned network of these features saw {int((~unseen).sum())} of "
                             f"the {len(y)} labelled rows, so its test folds would score images it trained on; "
                             "leave --cv out for the tuned-holdout protocol (tests only rows it never saw), use "
                             "`featx hybrid`, or add --optimistic to run it anyway (marked OPTIMISTIC)")
        prot = make_splits(subjects, y, splits, cv=cv, n_folds=n_folds, seed=seed, paths=features.paths)
        optimistic_label = f"OPTIMISTIC {prot.label} ({_OPTIMISTIC_REASON})"
    else:
        test = np.flatnonzero(unseen)
        if test.size == 0:
            raise FeatxError(_no_unseen_message(features, "the network trained on every labelled row (or on "
                                                          "its subject), none is left to test on"))
        train = np.flatnonzero(~unseen & ~np.isin(splits, HELD_OUT_SPLITS))
        if train.size == 0:
            raise FeatxError(_no_unseen_message(features, "no labelled row the network trained on is in this "
                                                          "store to train the heads on"))
        _require_two_classes(y[train], "the rows the fine-tuned network saw (the heads' training rows)")
        n_subj = len(np.unique(groups[test])) if groups is not None else 0
        label = (f"tuned-holdout: heads trained on {train.size} rows the network saw, tested on {test.size} "
                 f"rows it never saw" + (f" ({n_subj} subjects)" if groups is not None else ""))
        if groups is None:
            label += ", subjects unknown: may leak"
        prot = Protocol("tuned-holdout", label, groups is None, [(train, test)], seed, "", groups)
        if np.any(roles[test] == "val"):
            note = "; ".join(filter(None, [note, f"{int(np.sum(roles[test] == 'val'))} test rows were the "
                                                 "fine-tuning's validation images (used to pick best.pt's "
                                                 "epoch)"]))
    if optimistic_label is not None:
        prot.label = optimistic_label
        prot.optimistic = True
    prot.note = "; ".join(filter(None, [prot.note, note]))
    return prot


def _predictions(features, rows, fold_of, pooled, classes) -> dict:
    """The out-of-fold prediction of every test row (written to ``predictions/<row>.csv``, not results.json)."""
    names = np.asarray(classes, dtype=object)
    subjects = np.asarray(features.subjects).astype(str) if len(features.subjects) else np.full(len(features.y), "")
    return {"path": [str(p) for p in np.asarray(features.paths)[rows]], "subject": subjects[rows].tolist(),
            "fold": (fold_of + 1).tolist(), "y_true": names[pooled["y_true"]].tolist(),
            "y_pred": names[np.asarray(pooled["y_pred"], dtype=int)].tolist(),
            "score": np.asarray(pooled["y_score"], dtype=float).tolist()}


def _drop_unknown_subjects(features):
    """``features`` without its rows that have no subject id, and how many were dropped."""
    subj = np.asarray(features.subjects).astype(str) if len(features.subjects) else np.full(len(features), "")
    unknown = subj == ""
    if unknown.all():
        raise FeatxError(f"--drop-unknown-subjects: no row of {features.name} has a subject id, so every row would "
                         "be dropped; leave the option out (--cv auto then uses image-level folds, marked IMAGE-LEVEL)")
    return (features.select(~unknown) if unknown.any() else features), int(unknown.sum())


def _labelled(features):
    keep = np.asarray(features.y) >= 0
    return features if keep.all() else features.select(keep)


def evaluate(features, head: str, *, cv: str = "auto", n_folds: int = 5, seed: int = 0, jobs: int = 1,
             eval_set: str | None = None, positive: str | None = None, preprocess: str | None = "standard",
             class_weight=None, device: str = "auto", params: dict | None = None, n_boot: int = 1000,
             allow_optimistic: bool = False, drop_unknown_subjects: bool = False) -> dict:
    """Cross-validate (or hold out) one head on a :class:`featx.store.FeatureSet`; returns one result row.

    The row holds every metric's mean over folds (``accuracy``), its sample standard deviation over folds
    (``accuracy_std``, ddof=1) and a 95% bootstrap interval of that mean resampling subjects within each
    test fold (``accuracy_ci_low``/``_high``), the summed confusion matrix, the protocol's label, the
    settings, and every test row's out-of-fold prediction (``predictions``). Unlabelled rows are ignored;
    ``drop_unknown_subjects`` leaves out the rows without a subject id (the row says how many). Features of
    a fine-tuned network are scored only on rows it never saw (see :func:`tuned_protocol`;
    ``allow_optimistic`` permits CV, marked OPTIMISTIC).
    """
    return evaluate_many(features, [head], cv=cv, n_folds=n_folds, seed=seed, jobs=jobs, eval_set=eval_set,
                         positive=positive, preprocess=preprocess, class_weight=class_weight, device=device,
                         params=params, n_boot=n_boot, allow_optimistic=allow_optimistic,
                         drop_unknown_subjects=drop_unknown_subjects)[0]


def evaluate_many(features, heads: Sequence[str], *, cv: str = "auto", n_folds: int = 5, seed: int = 0,
                  jobs: int = 1, eval_set: str | None = None, positive: str | None = None,
                  preprocess: str | None = "standard", class_weight=None, device: str = "auto",
                  params: dict | None = None, n_boot: int = 1000, allow_optimistic: bool = False,
                  drop_unknown_subjects: bool = False) -> list[dict]:
    """Like :func:`evaluate` for several heads on the same folds (one parallel pool): one row per head."""
    from featx.heads import get_head

    for h in heads:
        get_head(h)  # unknown names fail before any work
    data = _labelled(features)
    dropped = 0
    if drop_unknown_subjects:
        data, dropped = _drop_unknown_subjects(data)
    pos = resolve_positive(data.classes, positive)
    if getattr(data, "roles", None) is not None:
        protocol = tuned_protocol(data, cv=cv, eval_set=eval_set, n_folds=n_folds, seed=seed,
                                  allow_optimistic=allow_optimistic)
    else:
        protocol = make_splits(data.subjects, data.y, data.splits, cv=cv, n_folds=n_folds, seed=seed,
                               eval_set=eval_set, paths=data.paths)
    if dropped:
        protocol.label += f"; {dropped} row{'s' if dropped != 1 else ''} without a subject id dropped"
        protocol.note = "; ".join(filter(None, [protocol.note, f"{dropped} rows without a subject id dropped "
                                                                "(--drop-unknown-subjects)"]))
    rows = _run_grid(data, heads, protocol, positive=pos, jobs=jobs, seed=seed, preprocess=preprocess,
                     class_weight=class_weight, device=device, params=params, n_boot=n_boot)
    for row in rows:
        row["dropped_unknown_subjects"] = dropped
    if getattr(data, "roles", None) is not None:
        _mark_tuned(rows, data, protocol)
    return _note_store(features, rows)


def _mark_tuned(rows: list[dict], data, protocol: Protocol) -> None:
    """Every row of tuned features says so: the roles it used and, for CV over seen rows, OPTIMISTIC."""
    from featx.provenance import UNSEEN_ROLES

    roles = np.asarray(data.roles).astype(str)
    for row in rows:
        row["optimistic"] = bool(protocol.optimistic)
        row["tuned"] = {"n_seen": int((~np.isin(roles, UNSEEN_ROLES)).sum()),
                        "n_unseen": int(np.isin(roles, UNSEEN_ROLES).sum()),
                        "checkpoints": [{k: t.get(k) for k in ("store", "checkpoint", "sha256", "provenance")}
                                        for t in data.tuned]}


def _note_store(features, rows: list[dict]) -> list[dict]:
    """Mark rows computed on an unfinished store (``partial``: "156 of 330 rows") and say how many
    unreadable images were left out (``excluded_images``)."""
    for row in rows:
        if getattr(features, "partial", None):
            row["partial"] = features.partial
        if getattr(features, "excluded", 0):
            row["excluded_images"] = int(features.excluded)
    return rows


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def compare(stores: Sequence[str], heads: Sequence[str] | str, taps: Sequence[str] | str | None = None, *,
            cv: Sequence[str] | str | None = "auto", n_folds: int = 5, seed: int = 0, jobs: int = 1,
            eval_set: str | None = None, positive: str | None = None, preprocess: str | None = "standard",
            class_weight=None, device: str = "auto", params: dict | None = None, n_boot: int = 1000,
            progress: Callable[[str], None] | None = None, allow_optimistic: bool = False,
            allow_partial: bool = False, drop_unknown_subjects: bool = False) -> list[dict]:
    """Evaluate every head on every store x tap under every protocol; one row each.

    ``stores``: feature files, each possibly fused (``"a.h5+b.h5"``); ``taps``: e.g. ``["fc7", "fc7+pool5"]``
    (None = each store's default tap); ``cv``: one protocol or several (``"subject,image"``); ``eval_set``
    adds a held-out protocol (train on the training rows, test on that split). Stores of fine-tuned
    weights get ``tuned-holdout`` under ``auto`` (see :func:`tuned_protocol`); explicit CV over rows their
    network saw needs ``allow_optimistic`` and is marked OPTIMISTIC. A store with rows not yet
    extracted is refused unless ``allow_partial`` (then every row says so in ``partial``). ``drop_unknown_subjects``
    leaves out rows without a subject id (every row says how many).
    """
    from featx.store import load_features

    heads = _as_list(heads)
    if not heads:
        raise FeatxError("no heads given; pass e.g. --heads softmax,svm,xgboost")
    from featx.heads import get_head

    heads = [get_head(h).name for h in heads]
    stores = _as_list(stores) if isinstance(stores, str) else [str(s) for s in stores]
    if not stores:
        raise FeatxError("no feature store given; pass files written by `featx extract`")
    tap_list = _as_list(taps) or [None]
    protocols = _as_list(cv)
    if not protocols and not eval_set:
        protocols = ["auto"]
    for p in protocols:
        if p not in CV_CHOICES:
            raise FeatxError(f"--cv {p!r}: choose from {', '.join(CV_CHOICES)} (several joined by commas)")
    runs = [(p, None) for p in protocols] + ([("auto", eval_set)] if eval_set else [])
    rows: list[dict] = []
    for store in stores:
        for tap in tap_list:
            features = load_features(store, tap, labelled=True, allow_partial=allow_partial)
            for p, ev in runs:
                if progress:
                    progress(f"{features.name}: {', '.join(heads)} under {ev or p}")
                rows.extend(evaluate_many(features, heads, cv=p, n_folds=n_folds, seed=seed, jobs=jobs,
                                          eval_set=ev, positive=positive, preprocess=preprocess,
                                          class_weight=class_weight, device=device, params=params, n_boot=n_boot,
                                          allow_optimistic=allow_optimistic,
                                          drop_unknown_subjects=drop_unknown_subjects))
    return rows


# --------------------------------------------------------------------------------------------------
# one-call workflows (what `featx classify` and `featx compare` run)
# --------------------------------------------------------------------------------------------------
def run_classify(store: str, head: str, *, tap: str | None = None, cv: str = "auto", n_folds: int = 5,
                 seed: int = 0, jobs: int = 1, eval_set: str | None = None, positive: str | None = None,
                 preprocess: str | None = "standard", class_weight=None, device: str = "auto",
                 params: dict | None = None, n_boot: int = 1000, out=None, save: bool = False,
                 skops: bool = False, plots: bool = True, allow_optimistic: bool = False,
                 allow_partial: bool = False, drop_unknown_subjects: bool = False) -> dict:
    """Load a store, evaluate one head, write the reports to ``out`` and, with ``save``, the model to
    ``out/models`` (``skops`` adds a .skops copy). Returns ``{"row", "paths", "model"}``.

    The saved model is the evaluated pipeline (head, parameters, preprocessing, seed) fitted on the rows the
    protocol trains on: with ``eval_set`` exactly the model that was scored on that split; under
    cross-validation the same pipeline fitted on every training row."""
    from pathlib import Path

    from featx.store import load_features

    if skops:
        if not save:
            raise FeatxError("--skops exports the saved model; add --save")
        from featx.persist import require_skops

        require_skops()

    features = load_features(store, tap, allow_partial=allow_partial)
    row = evaluate(features, head, cv=cv, n_folds=n_folds, seed=seed, jobs=jobs, eval_set=eval_set,
                   positive=positive, preprocess=preprocess, class_weight=class_weight, device=device,
                   params=params, n_boot=n_boot, allow_optimistic=allow_optimistic,
                   drop_unknown_subjects=drop_unknown_subjects)
    result = {"row": row, "paths": {}, "model": None}
    if out is not None:
        from featx.report import write_results

        result["paths"] = write_results([row], out, plots=plots)
    if save:
        from featx.persist import fit_final, save_model

        features.positive = row["positive"]
        fit_on = _drop_unknown_subjects(features)[0] if drop_unknown_subjects else features
        if row.get("protocol") == "tuned-holdout":  # the scored model trained on the rows the network saw
            fit_on = _labelled(fit_on)
            fit_on = fit_on.select(tuned_protocol(fit_on, seed=seed).folds[0][0])
        model, n_train = fit_final(fit_on, head, preprocess=preprocess, class_weight=class_weight, seed=seed,
                                   device=device, params=params, eval_set=eval_set)
        result["model"] = save_model(model, features, Path(out or ".") / "models", head=head, n_train=n_train,
                                     preprocess=preprocess, class_weight=class_weight, seed=seed, params=params,
                                     row=row)
        if skops:
            from featx.persist import export_skops

            result["skops"] = export_skops(result["model"])
    return result


def run_compare(stores: Sequence[str], heads, taps=None, *, out=None, plots: bool = True, **kwargs) -> dict:
    """:func:`compare`, then the reports in ``out``. Returns ``{"rows", "paths"}``."""
    rows = compare(stores, heads, taps, **kwargs)
    paths = {}
    if out is not None:
        from featx.report import write_results

        paths = write_results(rows, out, plots=plots)
    return {"rows": rows, "paths": paths}
