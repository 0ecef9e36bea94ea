"""Honest selection among rows: pick the best feature set x head inside each outer fold by an inner CV.

``compare`` puts many rows side by side on the same folds; reporting the best of them is optimistic. The
selection procedure is scored as its own row: in each outer fold of a protocol, every candidate (a feature
set with a head, all on the same rows) is scored by an inner cross-validation over the outer training rows
only (``StratifiedGroupKFold`` over the training subjects; ``StratifiedKFold`` when subjects are unknown),
the best one is fitted on the outer training rows and predicts the outer test rows. The pooled out-of-fold
predictions are summarised exactly like every other row (:func:`featx.evaluation.summarize_folds`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score

from featx.errors import FeatxError, arg
from featx.evaluation.metrics import compute_metrics, resolve_positive, roc_points, summarize_folds
from featx.evaluation.splits import (
    Protocol,
    every_row_has_subject,
    labelled_rows,
    split_features,
    without_unknown_subjects,
)
from featx.heads import HeadSpec, fit_params, get_head, make_head, positive_scores, preprocess_text
from featx.provenance import rows_mark
from featx.results import ResultRow, summary_scores
from featx.row_names import tag_names, with_tag
from featx.scoring import check_metric, get_metric

SELECTED_NAME = "selected by inner {metric}"


def _inner_splits(y, groups, inner_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner folds over the outer training rows (indices into them), grouped by subject when known."""
    cv = (StratifiedGroupKFold(inner_folds, shuffle=True, random_state=seed) if groups is not None
          else StratifiedKFold(inner_folds, shuffle=True, random_state=seed))
    try:
        return list(cv.split(np.zeros(len(y)), y, groups))
    except ValueError as exc:
        raise FeatxError(f"{arg('inner_folds', inner_folds)}: {' '.join(str(exc).split())}; give fewer inner "
                         "folds") from None


def _inner_score(head: HeadSpec, kwargs: dict, X, y, rows, splits, scoring, groups=None) -> float:
    """Mean inner-CV score of one candidate on the outer training ``rows`` only (``splits`` index them);
    ``groups``: every row's subject (None when unknown), for the heads that split by it inside ``fit``."""
    try:
        scores = cross_val_score(make_head(head, **kwargs), X[rows], y[rows], cv=splits, scoring=scoring,
                                 error_score="raise",
                                 params=fit_params(head, None if groups is None else groups[rows]))
    except ValueError as exc:
        raise FeatxError(f"head {head.name}: {' '.join(str(exc).split())}; change {arg('params')} or "
                         f"{arg('preprocess')}") from None
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("-inf")


def _fit_outer(head: HeadSpec, kwargs: dict, X, y, train, test, positive: int, groups=None):
    pipeline = make_head(head, **kwargs)
    t0 = time.perf_counter()
    pipeline.fit(X[train], y[train], **fit_params(head, None if groups is None else groups[train]))
    fit_s = time.perf_counter() - t0
    return pipeline.predict(X[test]), positive_scores(pipeline, X[test], positive), fit_s


def check_same_rows(feature_sets: Sequence) -> list:
    """The feature sets with their rows in the order of the first; a one-line :class:`FeatxError` naming the
    stores when they do not hold the same labelled rows."""
    first = feature_sets[0]
    ref = [str(p) for p in np.asarray(first.paths)]
    index = {p: i for i, p in enumerate(ref)}
    out = [first]
    for fs in feature_sets[1:]:
        paths = [str(p) for p in np.asarray(fs.paths)]
        if paths == ref:
            out.append(fs)
            continue
        if len(paths) != len(ref) or set(paths) != set(index) or len(set(paths)) != len(paths):
            stores = ", ".join(dict.fromkeys([*first.stores, *fs.stores])) or f"{first.name}, {fs.name}"
            raise FeatxError(f"{arg('select')}: the candidates do not cover the same rows ({stores}); select "
                             "among stores of the same images")
        order = np.argsort([index[p] for p in paths], kind="stable")
        out.append(fs.select(order))
    return out


def select_rows(candidates: Sequence[tuple], protocol: Protocol, *, positive: int, metric: str = "f1_weighted",
                inner_folds: int = 3, seed: int = 0, jobs: int = 1, preprocess=None, class_weight=None,
                device: str = "auto", params: dict | None = None) -> ResultRow:
    """The row of the selection procedure among ``candidates`` ((feature set, head) pairs on the same rows in
    the same order, see :func:`check_same_rows`) under ``protocol``: per outer fold, the candidate with the
    best mean inner-CV ``metric`` over the outer training rows is fitted there and predicts the outer test
    rows. ``settings["selected"]`` names the candidate chosen in each outer fold as `compare` names its row
    (the store's tag where candidates share a name), ``settings["selected_stores"]`` its store files."""
    check_metric(metric, "select")
    if not candidates:
        raise FeatxError(f"{arg('select')}: no candidate to select among")
    data = candidates[0][0]
    y = np.asarray(data.y)
    classes = list(data.classes)
    params = params or {}
    candidates = [(fs, get_head(head)) for fs, head in candidates]  # specs travel to the workers whole
    kwargs = [dict(preprocess=preprocess, class_weight=class_weight, seed=seed, device=device,
                   **params.get(head.name, {})) for _, head in candidates]
    labels = _candidate_names(candidates)
    subjects = np.asarray(data.subjects).astype(str) if len(data.subjects) else None
    train_all = np.concatenate([a for a, _ in protocol.folds])
    grouped = subjects is not None and every_row_has_subject(subjects[train_all])
    scoring = get_metric(metric).scorer(positive, len(classes))
    inner = [_inner_splits(y[train], subjects[train] if grouped else None, inner_folds, seed)
             for train, _ in protocol.folds]
    tasks = [(k, c) for k in range(protocol.n_folds) for c in range(len(candidates))]
    t0 = time.perf_counter()
    scores = Parallel(n_jobs=jobs, prefer="processes")(
        delayed(_inner_score)(candidates[c][1], kwargs[c], candidates[c][0].X, y, protocol.folds[k][0], inner[k],
                              scoring, subjects if grouped else None) for k, c in tasks)
    by_task = dict(zip(tasks, scores))
    chosen = [max(range(len(candidates)), key=lambda c, k=k: (by_task[(k, c)], -c)) for k in range(protocol.n_folds)]
    outer = Parallel(n_jobs=jobs, prefer="processes")(
        delayed(_fit_outer)(candidates[c][1], kwargs[c], candidates[c][0].X, y, train, test, positive,
                            subjects if grouped else None)
        for c, (train, test) in zip(chosen, protocol.folds))
    wall = time.perf_counter() - t0

    test_rows = np.concatenate([test for _, test in protocol.folds])
    ci_subjects = subjects if subjects is not None and every_row_has_subject(subjects[test_rows]) else None
    fold_of = np.concatenate([np.full(len(test), k) for k, (_, test) in enumerate(protocol.folds)])
    fold_metrics = [compute_metrics(y[test], pred, score, classes=classes, positive=positive,
                                    subjects=None if ci_subjects is None else ci_subjects[test])
                    for (pred, score, _), (_, test) in zip(outer, protocol.folds)]
    pooled = {"y_true": y[test_rows], "y_pred": np.concatenate([o[0] for o in outer]),
              "y_score": np.concatenate([o[1] for o in outer]), "classes": classes, "positive": positive,
              "fold": fold_of, "subjects": None if ci_subjects is None else ci_subjects[test_rows]}
    summary = summarize_folds(fold_metrics, pooled=pooled)
    used = np.unique(np.concatenate([test_rows, train_all]))
    names = np.asarray(classes, dtype=object)
    inner_cv = (f"StratifiedGroupKFold({inner_folds}) over training subjects" if grouped else
                f"StratifiedKFold({inner_folds}): subjects unknown, inner folds split images")
    row = ResultRow(
        name=SELECTED_NAME.format(metric=metric), backbone="selected", tap="", head="selected",
        protocol=protocol.name, protocol_label=protocol.label, image_level=bool(protocol.image_level),
        protocol_short=protocol.short or None, n_folds=protocol.n_folds,
        n_train=int(round(np.mean([len(a) for a, _ in protocol.folds]))),
        n_test=int(len(test_rows)),
        n_subjects=int(len(np.unique(ci_subjects[used]))) if ci_subjects is not None else 0,
        classes=classes, positive=classes[positive], confusion=summary["confusion"],
        ci_unit=summary.get("ci_unit"), interval=summary.get("interval"),
        per_subject_accuracy=summary.get("per_subject_accuracy"),
        roc=roc_points(pooled["y_true"] == positive, pooled["y_score"], folds=fold_of),
        predictions={"path": [str(p) for p in np.asarray(data.paths)[test_rows]],
                     "subject": (subjects[test_rows].tolist() if subjects is not None else [""] * len(test_rows)),
                     "fold": (fold_of + 1).tolist(), "y_true": names[pooled["y_true"]].tolist(),
                     "y_pred": names[np.asarray(pooled["y_pred"], dtype=int)].tolist(),
                     "score": np.asarray(pooled["y_score"], dtype=float).tolist()},
        fit_seconds=round(sum(o[2] for o in outer), 3), wall_seconds=round(wall, 3),
        settings={"selected": [labels[c] for c in chosen],
                  "selected_stores": [list(candidates[c][0].stores) for c in chosen], "select_metric": metric,
                  "inner_scores": [[round(by_task[(k, c)], 6) for c in range(len(candidates))]
                                   for k in range(protocol.n_folds)],
                  "candidates": labels, "n_candidates": len(candidates), "inner_cv": inner_cv,
                  "preprocess": preprocess_text(preprocess), "class_weight": class_weight, "params": params,
                  "seed": seed, "device": device, "cv_note": protocol.note},
        scores=summary_scores(summary),
    )
    return row


def _candidate_names(candidates: Sequence[tuple]) -> list[str]:
    """Each candidate's name as `compare` names its row: ``<features> + <head>``, with the stores' tag where
    candidates share a name (:mod:`featx.row_names`)."""
    names = [f"{fs.name} + {head.name}" for fs, head in candidates]
    tags = tag_names(names, [tuple(str(p) for p in fs.stores) for fs, _ in candidates])
    return [name if tag is None else with_tag(name, tag, head.name)
            for name, tag, (_, head) in zip(names, tags, candidates)]


def selection_row(feature_sets: Sequence, heads: Sequence[str], *, cv: str = "auto", eval_set: str | None = None,
                  n_folds: int = 5, seed: int = 0, positive: str | None = None, allow_optimistic: bool = False,
                  drop_unknown_subjects: bool = False, **kwargs) -> ResultRow:
    """:func:`select_rows` among every feature set x head under one protocol, built from the labelled rows
    exactly as :func:`featx.evaluation.evaluate_many` builds it (same folds as the per-row grid)."""
    sets = [labelled_rows(fs) for fs in feature_sets]
    dropped = 0
    if drop_unknown_subjects:
        pairs = [without_unknown_subjects(fs) for fs in sets]
        sets, dropped = [p[0] for p in pairs], pairs[0][1]
    sets = check_same_rows(sets)
    data = sets[0]
    pos = resolve_positive(data.classes, positive)
    protocol = split_features(data, cv, n_folds=n_folds, seed=seed, eval_set=eval_set,
                              allow_optimistic=allow_optimistic)
    row = select_rows([(fs, h) for fs in sets for h in heads], protocol, positive=pos, seed=seed, **kwargs)
    return replace(row, dropped_unknown_subjects=dropped, optimistic=bool(protocol.optimistic),
                   weights_provenance=rows_mark([attrs for fs in sets for attrs in fs.settings]))
