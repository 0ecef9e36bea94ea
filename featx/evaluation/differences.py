"""Paired differences between the rows of a results set: each row against its protocol's reference row.

Rows of one protocol are scored on the same folds and the same subjects, so they are compared paired
(:func:`featx.evaluation.intervals.difference`): the difference on the sort metric, its 95% interval and
p-value. The reference is the protocol's best row on that metric among rows that are estimates for new
patients (not OPTIMISTIC, PARTIAL or of unknown provenance, when any such row exists), or the row named by
``reference``. A row whose interval holds 0 is not distinguishable from the reference: ``≈ best``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from featx.errors import FeatxWarning, arg
from featx.evaluation.intervals import DIFFERENCE_METHOD, LEVEL, OutOfFold, difference
from featx.results import ResultRow
from featx.scoring import check_metric, get_metric

CLOSE_MARK = "\u2248 best"        # the row is not distinguishable from its protocol's best row
CLOSE_TO_REFERENCE = "\u2248 ref"  # ... from the row named by ``reference``


def out_of_fold(row: ResultRow) -> tuple[OutOfFold, np.ndarray] | None:
    """The row's out-of-fold predictions (and their paths), or None when the row carries none."""
    p = row.predictions
    if not p or not p.get("y_true"):
        return None
    classes = list(row.classes)
    subjects = np.asarray(p["subject"]).astype(str) if p.get("subject") else None
    known = subjects is not None and bool(np.all(subjects != ""))
    score = p.get("score")
    oof = OutOfFold([classes.index(c) for c in p["y_true"]], [classes.index(c) for c in p["y_pred"]],
                    None if score is None else np.asarray(score, dtype=float), np.asarray(p["fold"]),
                    subjects if known else None, len(classes), classes.index(row.positive))
    return oof, np.asarray(p["path"]).astype(str)


def _aligned(a: tuple[OutOfFold, np.ndarray], b: tuple[OutOfFold, np.ndarray]) -> OutOfFold | None:
    """``b``'s predictions in ``a``'s row order, or None when the two were not scored on the same rows."""
    (oa, pa), (ob, pb) = a, b
    if len(pa) != len(pb) or oa.n_classes != ob.n_classes:
        return None
    if np.array_equal(pa, pb) and np.array_equal(oa.fold, ob.fold):
        return ob
    keys_a = np.char.add(oa.fold.astype(str), np.char.add("\0", pa))
    keys_b = np.char.add(ob.fold.astype(str), np.char.add("\0", pb))
    order_a, order_b = np.argsort(keys_a, kind="stable"), np.argsort(keys_b, kind="stable")
    if not np.array_equal(keys_a[order_a], keys_b[order_b]):
        return None
    take = np.empty(len(pa), dtype=int)
    take[order_a] = order_b
    return OutOfFold(ob.y_true[take], ob.y_pred[take], None if ob.score is None else ob.score[take],
                     ob.fold[take], None if ob.subject is None else ob.subject[take], ob.n_classes, ob.positive)


def _is_estimate(row: ResultRow) -> bool:
    """Whether a row may serve as its protocol's best: a number for new patients."""
    return not (row.marked or row.partial)


def _best(rows: Sequence[ResultRow], metric: str) -> ResultRow | None:
    m = get_metric(metric)
    scored = [r for r in rows if math.isfinite(r.mean(metric))]
    honest = [r for r in scored if _is_estimate(r)] or scored
    if not honest:
        return None
    return (max if m.greater_is_better else min)(honest, key=lambda r: r.mean(metric))


def compare_rows(rows: Sequence[ResultRow], *, metric: str = "f1_weighted", reference: str | None = None,
                 level: float = LEVEL) -> list[ResultRow]:
    """``rows`` (new rows, in their order) each with its ``comparison``: its paired difference on ``metric`` from
    the reference row of its protocol (the best, or the row named ``reference`` where that protocol has one; a
    ``reference`` that names no row warns and the best rows are used: the rows are kept).

    ``comparison``: ``{"metric", "reference", "chosen_by" ("best" or "vs"), "is_reference", "delta", "ci_low",
    "ci_high", "p_value", "level", "method", "close", "mark", "reason"}``; ``close`` is True when the interval
    holds 0 (the row's mark is ``≈ best``), None when there is no interval (``reason`` says why)."""
    check_metric(metric, "sort_by")
    rows = list(rows)
    if reference is not None and not any(r.name == reference for r in rows):
        names = ", ".join(dict.fromkeys(r.name for r in rows))
        warnings.warn(FeatxWarning(f"{arg('vs', reference)} names no row, so each protocol's rows are compared "
                                   f"with its best row; rows: {names}"), stacklevel=2)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.protocol, []).append(i)
    compared = list(rows)
    for group in groups.values():
        named = [rows[i] for i in group if reference is not None and rows[i].name == reference]
        ref = named[0] if named else _best([rows[i] for i in group], metric)
        if ref is None:
            continue
        mark = CLOSE_TO_REFERENCE if named else CLOSE_MARK
        ref_oof = out_of_fold(ref)
        for i in group:
            compared[i] = replace(rows[i], comparison={**_comparison(rows[i], ref, ref_oof, metric, mark, level),
                                                       "chosen_by": "vs" if named else "best"})
    return compared


def _comparison(row: ResultRow, ref: ResultRow, ref_oof, metric: str, mark: str, level: float) -> dict:
    base = {"metric": metric, "reference": ref.name, "is_reference": row is ref, "level": level,
            "method": DIFFERENCE_METHOD, "delta": None, "ci_low": None, "ci_high": None, "p_value": None,
            "close": None, "mark": None, "reason": None}
    if row is ref:
        return {**base, "delta": 0.0}
    own = out_of_fold(row)
    if own is None or ref_oof is None:
        return {**base, "reason": "no out-of-fold predictions to pair"}
    theirs = _aligned(own, ref_oof)
    if theirs is None:
        return {**base, "reason": "not scored on the same test rows and folds as the reference"}
    d = difference(own[0], theirs, metric, level=level)
    close = None if d.low is None else bool(d.low <= 0 <= d.high)
    return {**base, "delta": d.delta, "ci_low": d.low, "ci_high": d.high, "p_value": d.p_value, "close": close,
            "mark": mark if close else None, "reason": d.reason}
