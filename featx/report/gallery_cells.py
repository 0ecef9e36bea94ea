"""Which test cells an error gallery shows, and what their scores mean.

A row's out-of-fold predictions (``predictions/<row>.csv``: path, subject, fold, y_true, y_pred, score) say for
every test cell its true and predicted class and a ``score`` of the positive class. What that score is depends
on the row (:func:`score_kind`): a probability for heads with ``predict_proba`` and for fine-tuned networks (their
softmax), a signed decision value for the SVM heads. A cell's *confidence* in its predicted class is derived
from it (:func:`confidence_meaning` says how, in words the sheet and its CSV carry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from featx.data import natural_key
from featx.results import ResultRow

PROBABILITY, DECISION, MIXED, UNKNOWN, NONE = "probability", "decision", "mixed", "unknown", "none"


@dataclass(frozen=True)
class Cell:
    """One test cell of a row's predictions, with its confidence in the class it was given and its place in the
    gallery: ``rank`` 1 is the most confidently wrong cell (``wrong``) or the least confident right one."""
    path: str
    subject: str
    fold: int | None
    y_true: str
    y_pred: str
    score: float | None
    confidence: float
    wrong: bool
    rank: int
    drawn: bool


def score_kind(row: ResultRow) -> str:
    """What the ``score`` column of ``row``'s predictions is: ``"probability"`` (the positive class's
    ``predict_proba`` of a head that has one; a fine-tuned network's softmax), ``"decision"`` (the signed
    ``decision_function`` of a head without ``predict_proba``: linear-svm, svm), ``"mixed"`` (a row selected per
    outer fold whose folds chose heads of both kinds), ``"unknown"`` (a head this process does not know) or
    ``"none"`` (no score)."""
    p = row.predictions or {}
    if not any(s is not None and not _nan(s) for s in p.get("score") or []):
        return NONE
    kinds = set(fold_kinds(row).values()) or {_head_kind(row)}
    return kinds.pop() if len(kinds) == 1 else MIXED


def fold_kinds(row: ResultRow) -> dict[int, str]:
    """For a row selected per outer fold (``compare(select=...)``): each fold's score kind, from the head that
    fold chose (``settings["selected"]``); ``{}`` for other rows."""
    chosen = (row.settings or {}).get("selected") if row.head == "selected" else None
    return {k + 1: _head_kind(str(name).rsplit(" + ", 1)[-1]) for k, name in enumerate(chosen or [])}


def _head_kind(row_or_head) -> str:
    head = row_or_head.head if isinstance(row_or_head, ResultRow) else row_or_head
    if head is None:  # a fine-tuned network's own row: its softmax
        return PROBABILITY
    from featx.heads import get_head, list_heads  # deferred: every head's scikit-learn, not needed by featx --help

    if head in list_heads():
        return PROBABILITY if get_head(head).probability else DECISION
    return UNKNOWN


def confidence_meaning(row: ResultRow) -> str:
    """One sentence: what the row's ``score`` is and how a cell's confidence is made from it."""
    kind, pos = score_kind(row), row.positive
    if kind == PROBABILITY:
        source = ("the network's softmax" if row.head is None else
                  "predict_proba of the head each fold selected" if row.head == "selected" else
                  f"{row.head}'s predict_proba")
        binary = len(row.classes or []) <= 2
        return (f"score = probability of class {pos} ({source}); confidence = probability of the predicted class "
                f"(score when {pos} was predicted, else 1 - score"
                + ("" if binary else f", the probability of not {pos}: at least that of the predicted class")
                + ")")
    if kind == DECISION:
        head = "the head each fold selected" if row.head == "selected" else row.head
        return (f"score = {head}'s signed decision value toward class {pos} (not a probability); confidence = "
                f"the margin toward the predicted class (score when {pos} was predicted, else -score), in "
                "decision-function units: it ranks this row's cells, not rows against each other")
    if kind == MIXED:
        folds = fold_kinds(row)
        which = {k: [str(i) for i, v in folds.items() if v == k] for k in (PROBABILITY, DECISION)}
        by = "; ".join(f"{k} in fold{'s' if len(f) > 1 else ''} {', '.join(f)}" for k, f in which.items() if f)
        return (f"score = the positive class ({pos}) score of the head each outer fold selected: a probability or a "
                f"decision value ({by}); confidence = probability of the predicted class in probability folds, "
                "the margin toward it in decision folds: unlike units, so cells of different folds rank only roughly")
    if kind == UNKNOWN:
        return (f"score = the positive class ({pos}) score of head {row.head}, of a scale featx does not know "
                f"(probability or decision value); confidence = score when {pos} was predicted, else its "
                "complement (1 - score for scores in [0, 1], -score otherwise)")
    return "no score recorded: confidence unknown, cells in the order of the predictions file"


def cell_confidences(row: ResultRow) -> np.ndarray:
    """Each predicted cell's confidence in its predicted class (:func:`confidence_meaning`; NaN without score)."""
    p = row.predictions or {}
    kind, pos = score_kind(row), str(row.positive)
    scores = np.array([np.nan if s is None else float(s) for s in p.get("score") or [None] * len(p["path"])])
    if kind == NONE:
        return np.full(len(p["path"]), np.nan)
    is_pos = np.array([str(y) == pos for y in p["y_pred"]])
    if kind == MIXED:
        folds = fold_kinds(row)
        probability_like = np.array([folds.get(f) == PROBABILITY for f in p["fold"]])
    else:
        probability_like = kind == PROBABILITY or (kind == UNKNOWN and np.nanmin(scores) >= 0
                                                   and np.nanmax(scores) <= 1)
    return np.where(is_pos, scores, np.where(probability_like, 1.0 - scores, -scores))


def gallery_cells(row: ResultRow, *, wrong: int = 24, right: int = 8) -> list[Cell]:
    """Every misclassified cell of ``row``'s predictions, most confident first (the first ``wrong`` are drawn),
    then the ``right`` least confident correctly classified cells (drawn). Ties keep the file's order."""
    p = row.predictions or {}
    conf = cell_confidences(row)
    n = len(p.get("path") or [])
    is_wrong = [str(t) != str(q) for t, q in zip(p["y_true"], p["y_pred"])] if n else []
    unknown = np.isnan(conf)
    order = np.lexsort((np.arange(n), np.where(unknown, 0.0, -conf)))  # most confident first; NaN last
    wrong_idx = [int(i) for i in order if is_wrong[i]]
    right_idx = [int(i) for i in order[::-1] if not is_wrong[i]]  # least confident first
    if unknown.all():
        right_idx = right_idx[::-1]  # file order
    folds = p.get("fold") or [None] * n
    subjects = p.get("subject") or [""] * n
    scores = p.get("score") or [None] * n

    def cell(i: int, rank: int, bad: bool, drawn: bool) -> Cell:
        return Cell(path=str(p["path"][i]), subject=str(subjects[i] or ""), fold=folds[i],
                    y_true=str(p["y_true"][i]), y_pred=str(p["y_pred"][i]), score=scores[i],
                    confidence=float(conf[i]), wrong=bad, rank=rank, drawn=drawn)

    return ([cell(i, k + 1, True, k < wrong) for k, i in enumerate(wrong_idx)]
            + [cell(i, k + 1, False, True) for k, i in enumerate(right_idx[:right])])


def by_subject(cells: list[Cell]) -> list[Cell]:
    """``cells`` grouped by subject: subjects in the order of their first (best ranked) cell, each subject's
    cells by rank; cells without a subject last."""
    first: dict[str, int] = {}
    for c in sorted(cells, key=lambda c: c.rank):
        first.setdefault(c.subject, c.rank)
    return sorted(cells, key=lambda c: (not c.subject, first[c.subject], natural_key(c.subject), c.rank))


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)
