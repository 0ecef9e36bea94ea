"""What `featx classify` and `featx compare` run: evaluate, then write the reports (and, asked, the model)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featx import persist
from featx.errors import FeatxError, arg
from featx.evaluation import (
    HELD_OUT_SPLITS,
    compare,
    evaluate,
    every_row_has_subject,
    labelled_rows,
    tuned_protocol,
    without_unknown_subjects,
)
from featx.evaluation.grid import Params, StorePath
from featx.evaluation.search import Search, check_search, fit_search
from featx.heads import Preprocess, check_params, make_head
from featx.report import write_results
from featx.store import load_features


def run_classify(store: StorePath | Sequence[StorePath], head: str, *, tap: str | Sequence[str] | None = None,
                 cv: str = "auto", n_folds: int = 5, seed: int = 0, jobs: int = 1, eval_set: str | None = None,
                 positive: str | None = None, preprocess: Preprocess = ("standard",), class_weight=None,
                 device: str = "auto", params: Params | None = None, n_boot: int = 1000, out=None,
                 save: bool = False, skops: bool = False, plots: bool = True, allow_optimistic: bool = False,
                 allow_partial: bool = False, drop_unknown_subjects: bool = False,
                 search: Search | None = None) -> dict:
    """Load a store (a sequence of stores is fused side by side; a sequence of taps concatenated), evaluate
    one head, write the reports to ``out`` and, with ``save``, the model to ``out/models`` (``skops`` adds a
    .skops copy). Returns ``{"row", "paths", "model"}`` (and ``"skops"``).

    The saved model is the evaluated pipeline (head, parameters, preprocessing, seed) fitted on the rows the
    protocol trains on: with ``eval_set`` exactly the model that was scored on that split; under
    cross-validation the same pipeline fitted on every training row. With a ``search`` (nested CV), the
    saved model is the search refit on those rows (inner folds grouped by their subjects): the card records
    the chosen parameters, the search's settings and its inner best score."""
    if skops:
        if not save:
            raise FeatxError(f"{arg('skops')} exports the saved model; add {arg('save')}")
        persist.require_skops()

    features = load_features(store, tap, allow_partial=allow_partial)
    row = evaluate(features, head, cv=cv, n_folds=n_folds, seed=seed, jobs=jobs, eval_set=eval_set,
                   positive=positive, preprocess=preprocess, class_weight=class_weight, device=device,
                   params=params, n_boot=n_boot, allow_optimistic=allow_optimistic,
                   drop_unknown_subjects=drop_unknown_subjects, search=search)
    result = {"row": row, "paths": {}, "model": None}
    if out is not None:
        result["paths"] = write_results([row], out, plots=plots)
    if save:
        features.positive = row.positive
        fit_on = without_unknown_subjects(features)[0] if drop_unknown_subjects else features
        if row.protocol == "tuned-holdout":  # the scored model trained on the rows the network saw
            fit_on = labelled_rows(fit_on)
            fit_on = fit_on.select(tuned_protocol(fit_on, seed=seed).folds[0][0])
        own = check_params(params).get(row.head, {})
        searched = None
        if row.nested:
            chosen, searched = _search_all(fit_on, row.head, search, eval_set=eval_set, preprocess=preprocess,
                                           class_weight=class_weight, seed=seed, device=device, params=own,
                                           positive=features.classes.index(row.positive), jobs=jobs)
            own = {**own, **chosen}
        pipeline, n_train = persist.fit_final(fit_on, row.head, preprocess=preprocess, class_weight=class_weight,
                                              seed=seed, device=device, params=own, eval_set=eval_set)
        result["model"] = persist.save_model(pipeline, features, Path(out or ".") / "models", head=row.head,
                                             n_train=n_train, preprocess=preprocess, class_weight=class_weight,
                                             seed=seed, params=own, row=row, search=searched)
        if skops:
            result["skops"] = persist.export_skops(result["model"])
    return result


def _search_all(features, head: str, search: Search, *, eval_set, preprocess, class_weight, seed, device,
                params, positive: int, jobs: int) -> tuple[dict, dict]:
    """The search refit on every row the protocol trains on (as :func:`featx.persist.fit_final` picks them),
    inner folds grouped by their subjects: (chosen parameters, the card's ``search``)."""
    check_search(search)
    held_out = [*HELD_OUT_SPLITS, *([eval_set] if eval_set else [])]
    keep = (np.asarray(features.y) >= 0) & ~np.isin(np.asarray(features.splits).astype(str), held_out)
    subjects = np.asarray(features.subjects).astype(str)[keep] if len(features.subjects) else None
    groups = subjects if subjects is not None and every_row_has_subject(subjects) else None
    pipeline = make_head(head, preprocess=preprocess, class_weight=class_weight, seed=seed, device=device, **params)
    searcher = fit_search(pipeline, features.X[keep], features.y[keep], groups, search, head, positive=positive,
                          seed=seed, n_jobs=search.n_jobs if jobs == 1 else jobs)
    chosen = {k.removeprefix("clf__"): v for k, v in searcher.best_params_.items()}
    record = {**search.describe(), "chosen_params": chosen, "best_score": float(searcher.best_score_),
              "inner_groups": "subject" if groups is not None else "image", "n_train": int(keep.sum())}
    return chosen, record


def run_compare(stores, heads: Sequence[str], taps=None, *, out=None, plots: bool = True, **kwargs) -> dict:
    """:func:`featx.evaluation.compare` (same arguments), then the reports in ``out``.
    Returns ``{"rows", "paths"}``."""
    rows = compare(stores, heads, taps, **kwargs)
    paths = write_results(rows, out, plots=plots) if out is not None else {}
    return {"rows": rows, "paths": paths}
