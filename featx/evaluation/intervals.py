"""Intervals of a row's estimate, and paired differences between rows, with subjects as the unit.

A row's estimate of a metric is its mean over the test folds where it is defined (one held-out split: that
split's value; with repeated folds, the mean over every fold of every repeat). Cells of one subject are not
independent, so subjects, not cells, are the unit: the interval is a t-interval from a class-stratified
delete-one-subject jackknife of that same estimate (each subject left out of its test fold, the models kept),
on the logit scale (standard error by the delta method) so that it stays inside [0, 1]. A paired difference
between two rows scored on the same folds is the jackknife of the difference, subject by subject, with its
t-interval and p-value.
``scripts/interval_study.py`` measures the coverage of these intervals and the error rates of the paired test
by simulation (learners trained per fold); its fast version is a test.

The interval covers what the classifiers this protocol trained score on new subjects of the same population.
Where the design cannot support it (a test fold with fewer than :data:`MIN_SUBJECTS_PER_CLASS` subjects of a
class, a metric without spread), the interval is ``n/a`` with the reason; it is never widened to fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from featx.scoring import METRICS, get_metric

#: A test fold needs at least this many subjects of each class for subject intervals of its protocol.
MIN_SUBJECTS_PER_CLASS = 2
LEVEL = 0.95
METHOD = "subject jackknife t-interval (class-stratified, logit scale)"
METHOD_IMAGES = "image jackknife t-interval (class-stratified, logit scale; subjects unknown)"
DIFFERENCE_METHOD = "paired subject jackknife t-test"


@dataclass
class OutOfFold:
    """Out-of-fold predictions of one row: class indices, the positive class's score (or None), the test
    fold of each row (with repeats, a fold index unique across repeats), the subject of each row (None when
    unknown: rows are then the unit) and the repeat of each row (None: one repeat)."""

    y_true: np.ndarray
    y_pred: np.ndarray
    score: np.ndarray | None
    fold: np.ndarray
    subject: np.ndarray | None
    n_classes: int
    positive: int
    repeat: np.ndarray | None = None
    _units: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        self.y_true = np.asarray(self.y_true, dtype=int)
        self.y_pred = np.asarray(self.y_pred, dtype=int)
        self.fold = np.asarray(self.fold)
        if self.score is not None:
            self.score = np.asarray(self.score, dtype=float)
        if self.subject is not None:
            self.subject = np.asarray(self.subject).astype(str)
        self.repeat = np.zeros(len(self.y_true), dtype=int) if self.repeat is None else np.asarray(self.repeat)

    @property
    def unit(self) -> str:
        """``"subject"`` or ``"image"``: the unit the jackknife leaves out, one at a time."""
        return "image" if self.subject is None else "subject"

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """(the unit index of each row, the stratum (majority true class) of each unit)."""
        if self._units is None:
            names = np.arange(len(self.y_true)).astype(str) if self.subject is None else self.subject
            _, unit = np.unique(names, return_inverse=True)
            counts = np.zeros((unit.max() + 1, self.n_classes))
            np.add.at(counts, (unit, self.y_true), 1)
            self._units = (unit, counts.argmax(axis=1))
        return self._units


@dataclass(frozen=True)
class Interval:
    """A 95% interval (``low``/``high`` None when ``reason`` says why there is none)."""

    low: float | None
    high: float | None
    reason: str | None = None


@dataclass(frozen=True)
class Difference:
    """A row's paired difference from a reference row on one metric (``delta`` = row - reference)."""

    delta: float | None
    low: float | None
    high: float | None
    p_value: float | None
    reason: str | None = None

    @property
    def distinguishable(self) -> bool | None:
        """False when the interval holds 0 (``≈`` the reference), None when there is no interval."""
        return None if self.low is None else not (self.low <= 0 <= self.high)


# --------------------------------------------------------------------------------------------------
# fold values and their leave-one-unit-out values
# --------------------------------------------------------------------------------------------------
def fold_values(oof: OutOfFold, metric: str) -> np.ndarray:
    """The metric on each test fold (NaN where undefined), in fold order: the metric table's batched form of
    each fold's confusion matrix (equal to scikit-learn's function, tests/test_scoring.py), ROC-AUC by its
    Mann-Whitney count (scikit-learn's value)."""
    m = get_metric(metric)
    rows_of = _fold_rows(oof)
    if m.needs_score:
        if oof.score is None:
            return np.full(len(rows_of), np.nan)
        return np.array([_auc_without(oof.y_true[r] == oof.positive, oof.score[r], np.zeros(len(r), dtype=int),
                                      1, keep=True)[0] for r in rows_of])
    k = oof.n_classes
    C = np.stack([np.bincount(oof.y_true[r] * k + oof.y_pred[r], minlength=k * k) for r in rows_of])
    return m.batched(C.reshape(-1, k, k), oof.positive)


def estimate(oof: OutOfFold, metric: str) -> float:
    """The row's estimate: the mean over repeats of the mean over their folds where the metric is defined."""
    values = fold_values(oof, metric)
    return _mean_of_repeats(values[None], _fold_repeat(oof))[0]


def _fold_rows(oof: OutOfFold) -> list[np.ndarray]:
    return [np.flatnonzero(oof.fold == f) for f in np.unique(oof.fold)]


def _fold_repeat(oof: OutOfFold) -> np.ndarray:
    return np.array([oof.repeat[r[0]] for r in _fold_rows(oof)])


def _mean_of_repeats(values: np.ndarray, fold_repeat: np.ndarray) -> np.ndarray:
    """``values`` (B, folds) -> (B,): per repeat the mean over defined folds, then the mean over repeats."""
    means = []
    for r in np.unique(fold_repeat):
        v = values[:, fold_repeat == r]
        n = np.isfinite(v).sum(axis=1)
        means.append(np.divide(np.nansum(v, axis=1), n, out=np.full(len(v), np.nan), where=n > 0))
    return np.mean(means, axis=0)


def leave_one_out(oof: OutOfFold, metric: str) -> np.ndarray:
    """The estimate with each unit (subject, or row when subjects are unknown) left out of its test folds:
    one value per unit (the models are kept: only the test rows change)."""
    unit, _ = oof.units()
    m = get_metric(metric)
    # values[u, f]: fold f's metric without unit u (the fold's own value where u has no row in it)
    values = np.tile(fold_values(oof, metric), (unit.max() + 1, 1))
    for f, rows in enumerate(_fold_rows(oof)):
        present, local = np.unique(unit[rows], return_inverse=True)
        if m.needs_score:
            values[present, f] = _auc_without(oof.y_true[rows] == oof.positive,
                                              None if oof.score is None else oof.score[rows], local, len(present))
        else:
            whole, per_unit = _unit_counts(oof, rows, local, len(present))
            values[present, f] = m.batched(_as_matrices(whole - per_unit, oof.n_classes), oof.positive)
    return _mean_of_repeats(values, _fold_repeat(oof))


def _unit_counts(oof: OutOfFold, rows: np.ndarray, local: np.ndarray, n_local: int) -> tuple[np.ndarray, np.ndarray]:
    """The flattened confusion counts of the test fold ``rows`` (1, K*K) and of each of its units (``local``:
    the unit of each row, 0..n_local-1) (n_local, K*K)."""
    k = oof.n_classes
    per_unit = np.zeros((n_local, k * k))
    np.add.at(per_unit, (local, oof.y_true[rows] * k + oof.y_pred[rows]), 1.0)
    return per_unit.sum(axis=0)[None], per_unit


def _as_matrices(counts: np.ndarray, k: int) -> np.ndarray:
    return counts.reshape(-1, k, k)


def _pair_counts(is_pos: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each positive's negatives scored below it, and each negative's positives scored above it (ties half):
    the Mann-Whitney pair counts of ROC-AUC."""
    neg_sorted, pos_sorted = np.sort(score[~is_pos]), np.sort(score[is_pos])
    below = (np.searchsorted(neg_sorted, score[is_pos], "left")
             + np.searchsorted(neg_sorted, score[is_pos], "right")) / 2
    above = len(pos_sorted) - (np.searchsorted(pos_sorted, score[~is_pos], "left")
                               + np.searchsorted(pos_sorted, score[~is_pos], "right")) / 2
    return below, above


def _own_pairs(is_pos, unit, n_units: int, below, above) -> np.ndarray:
    """The ordered pairs that involve each unit's rows (a unit with rows on both sides counts its own twice)."""
    own = np.zeros(n_units)
    np.add.at(own, unit[is_pos], below)
    np.add.at(own, unit[~is_pos], above)
    return own


def _auc_without(is_pos: np.ndarray, score: np.ndarray | None, unit: np.ndarray, n_units: int, *,
                 keep: bool = False) -> np.ndarray:
    """ROC-AUC of one fold with each of its units left out (Mann-Whitney; ties count half); ``keep``: with
    every unit kept (the fold's own AUC, once per unit)."""
    if score is None:
        return np.full(n_units, np.nan)
    below, above = _pair_counts(is_pos, score)
    pairs = below.sum()
    own = _own_pairs(is_pos, unit, n_units, below, above)
    n_pos = np.bincount(unit[is_pos], minlength=n_units).astype(float)
    n_neg = np.bincount(unit[~is_pos], minlength=n_units).astype(float)
    mixed = np.flatnonzero((n_pos > 0) & (n_neg > 0))
    for u in mixed:  # a unit with rows of both sides: its own pairs were counted twice
        rows = unit == u
        neg = np.sort(score[rows & ~is_pos])
        s = score[rows & is_pos]
        own[u] -= ((np.searchsorted(neg, s, "left") + np.searchsorted(neg, s, "right")) / 2).sum()
    if keep:
        own, n_pos, n_neg = np.zeros(n_units), np.zeros(n_units), np.zeros(n_units)
    den = (is_pos.sum() - n_pos) * ((~is_pos).sum() - n_neg)
    return np.divide(pairs - own, den, out=np.full(n_units, np.nan), where=den > 0)


def influence(oof: OutOfFold, metric: str, eps: float = 1e-4) -> np.ndarray:
    """The derivative of the estimate with respect to each unit's weight (every row of the unit weighted
    1 + t, at t = 0): one value per unit (central differences; the metrics are smooth in their counts)."""
    unit, _ = oof.units()
    n_units = unit.max() + 1
    m = get_metric(metric)
    rows_of = _fold_rows(oof)
    base = fold_values(oof, metric)
    slopes = np.zeros((n_units, len(rows_of)))
    for f, rows in enumerate(rows_of):
        if not np.isfinite(base[f]):
            continue
        present, local = np.unique(unit[rows], return_inverse=True)
        if m.needs_score:
            slopes[present, f] = _auc_slope(oof.y_true[rows] == oof.positive, oof.score[rows], local, len(present))
        else:
            whole, per_unit = _unit_counts(oof, rows, local, len(present))
            up = m.batched(_as_matrices(whole + eps * per_unit, oof.n_classes), oof.positive)
            down = m.batched(_as_matrices(whole - eps * per_unit, oof.n_classes), oof.positive)
            slopes[present, f] = (up - down) / (2 * eps)
    # the estimate is the mean over repeats of the mean over each repeat's defined folds
    fold_repeat = _fold_repeat(oof)
    out = np.zeros(n_units)
    repeats = np.unique(fold_repeat)
    for r in repeats:
        defined = (fold_repeat == r) & np.isfinite(base)
        if defined.any():
            out += slopes[:, defined].sum(axis=1) / defined.sum()
    return out / len(repeats)


def _auc_slope(is_pos: np.ndarray, score: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """d AUC / d (weight of each unit) for one fold: (own pairs - AUC * own share of all pairs) / pairs."""
    below, above = _pair_counts(is_pos, score)
    P, N = is_pos.sum(), (~is_pos).sum()
    if P == 0 or N == 0:
        return np.zeros(n_units)
    auc = below.sum() / (P * N)
    own = _own_pairs(is_pos, unit, n_units, below, above)
    n_pos = np.bincount(unit[is_pos], minlength=n_units)
    n_neg = np.bincount(unit[~is_pos], minlength=n_units)
    return (own - auc * (n_pos * N + n_neg * P)) / (P * N)


# --------------------------------------------------------------------------------------------------
# design checks
# --------------------------------------------------------------------------------------------------
def design_reason(oof: OutOfFold, class_names=None) -> str | None:
    """Why this design cannot support an interval, or None when it can."""
    unit, stratum = oof.units()
    names = class_names or [str(c) for c in range(oof.n_classes)]
    what = "subjects" if oof.subject is not None else "images"
    if oof.subject is not None and len(np.unique(oof.subject)) == 1:  # e.g. image-level folds of one subject
        return (f"only 1 test subject ({oof.subject[0]}): an interval over subjects needs "
                f"{MIN_SUBJECTS_PER_CLASS} or more of each class")
    present = [c for c in range(oof.n_classes) if np.any(stratum == c)]
    for c in present:
        if np.sum(stratum == c) < 2:
            return f"only 1 test {what[:-1]} of class {names[c]}"
    if oof.subject is None:
        return None
    for i, rows in enumerate(_fold_rows(oof)):
        units = np.unique(unit[rows])
        for c in present:
            n = int(np.sum(stratum[units] == c))
            if n < MIN_SUBJECTS_PER_CLASS:
                where = "the test split" if len(np.unique(oof.fold)) == 1 else f"test fold {i + 1}"
                return (f"{where} holds {n} subject{'s' if n != 1 else ''} of class {names[c]} (an interval needs "
                        f"{MIN_SUBJECTS_PER_CLASS} of each class in every test fold)")
    return None


# --------------------------------------------------------------------------------------------------
# intervals and paired differences
# --------------------------------------------------------------------------------------------------
def _jackknife_se(theta_minus: np.ndarray, stratum: np.ndarray) -> tuple[float, float]:
    """Stratified jackknife standard error and its degrees of freedom (:func:`_satterthwaite`)."""
    return _stratified_se(theta_minus, stratum, lambda n: (n - 1) / n)


def _stratified_se(values: np.ndarray, stratum: np.ndarray, scale) -> tuple[float, float]:
    """The standard error from each stratum's sum of squared deviations of ``values``, times ``scale(n)`` for a
    stratum of n units (strata of one unit add nothing), and its degrees of freedom (:func:`_satterthwaite`)."""
    parts = [(scale(len(t)) * float(np.sum((t - t.mean()) ** 2)), len(t) - 1)
             for t in (values[stratum == h] for h in np.unique(stratum)) if len(t) >= 2]
    return _satterthwaite(parts)


def _satterthwaite(parts: list[tuple[float, int]]) -> tuple[float, float]:
    """The standard error of a sum of stratum variances ``(variance, df)`` and its Welch-Satterthwaite degrees of
    freedom: near the df of the stratum that dominates (the 10 HEM subjects of a test split, for precision),
    not the df of every subject together."""
    var = sum(v for v, _ in parts)
    spread = sum(v * v / df for v, df in parts)
    df = var * var / spread if spread > 0 else float(sum(df for _, df in parts))
    return float(np.sqrt(var)), float(df)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _linearized_se(z: np.ndarray, stratum: np.ndarray) -> tuple[float, float]:
    """Stratified linearization (infinitesimal jackknife) standard error from each unit's influence, and its
    degrees of freedom (:func:`_satterthwaite`)."""
    return _stratified_se(z, stratum, lambda n: n / (n - 1))


def interval(oof: OutOfFold, metric: str, *, level: float = LEVEL, reason: str | None = None,
             method: str = "jackknife") -> Interval:
    """The ``level`` interval of the row's estimate of ``metric`` (see the module docstring); ``reason``: a
    design reason already found by :func:`design_reason` (then no interval)."""
    if reason is not None:
        return Interval(None, None, reason)
    theta = estimate(oof, metric)
    if not np.isfinite(theta):
        return Interval(None, None, "undefined in every test fold")
    _, stratum = oof.units()
    if theta <= 0 or theta >= 1:
        return Interval(None, None, f"the estimate is {100 * theta:.0f}%: no spread between subjects to size an "
                                    "interval")
    if method == "linearization":
        se, df = _linearized_se(influence(oof, metric), stratum)
    else:
        minus = leave_one_out(oof, metric)
        if not np.all(np.isfinite(minus)):
            return Interval(None, None, "undefined when one subject is left out")
        se, df = _jackknife_se(minus, stratum)
    if se == 0 or df < 1:
        return Interval(None, None, "no spread between subjects to size an interval")
    # the t-interval on the logit scale (its standard error by the delta method), mapped back: it stays inside
    # (0, 1) and is asymmetric near its ends; a leave-one-out value of 0 or 1 needs no logit of its own
    se = se / (theta * (1 - theta))
    q = stats.t.ppf((1 + level) / 2, df)
    centre = _logit(theta)
    low, high = 1 / (1 + np.exp(-(centre - q * se))), 1 / (1 + np.exp(-(centre + q * se)))
    return Interval(float(low), float(high))


def difference(oof: OutOfFold, reference: OutOfFold, metric: str, *, level: float = LEVEL) -> Difference:
    """``oof``'s estimate less ``reference``'s on ``metric``, both scored on the same test rows and folds: the
    difference, its ``level`` interval and two-sided p-value from the paired jackknife over subjects."""
    if not (np.array_equal(oof.y_true, reference.y_true) and np.array_equal(oof.fold, reference.fold)
            and (oof.subject is None) == (reference.subject is None)
            and (oof.subject is None or np.array_equal(oof.subject, reference.subject))):
        return Difference(None, None, None, None, "not scored on the same test rows and folds")
    delta = estimate(oof, metric) - estimate(reference, metric)
    if not np.isfinite(delta):
        return Difference(None, None, None, None, "undefined")
    reason = design_reason(oof)
    if reason is not None:
        return Difference(float(delta), None, None, None, reason)
    minus = leave_one_out(oof, metric) - leave_one_out(reference, metric)
    if not np.all(np.isfinite(minus)):
        return Difference(float(delta), None, None, None, "undefined when one subject is left out")
    _, stratum = oof.units()
    se, df = _jackknife_se(minus, stratum)
    if df < 1:
        return Difference(float(delta), None, None, None, "too few subjects")
    if se == 0:
        same = delta == 0
        return Difference(float(delta), float(delta), float(delta), 1.0 if same else 0.0,
                          None if same else "no spread between subjects")
    q = stats.t.ppf((1 + level) / 2, df)
    p = float(2 * stats.t.sf(abs(delta) / se, df))
    return Difference(float(delta), float(delta - q * se), float(delta + q * se), p)


def intervals(oof: OutOfFold, *, level: float = LEVEL, class_names=None) -> dict[str, Interval]:
    """:func:`interval` of every metric of :data:`featx.scoring.METRICS` (ROC-AUC n/a without scores)."""
    reason = design_reason(oof, class_names)
    out = {}
    for m in METRICS:
        if get_metric(m).needs_score and oof.score is None:
            out[m] = Interval(None, None, "no scores")
        else:
            out[m] = interval(oof, m, level=level, reason=reason)
    return out
