"""Nested, subject-grouped hyperparameter search: a typed search space per head and the inner search that
picks a head's parameters on the training subjects of one outer fold.

A :class:`Search` holds ``space`` (``{head: {parameter: [values] | LogUniform | Uniform}}``), the method
(``"grid"``: every combination of the lists; ``"random"``: ``n_iter`` draws, ranges sampled), the number of
inner folds and the metric. :func:`fit_search` runs scikit-learn's ``GridSearchCV``/``RandomizedSearchCV``
(``refit=True``) over a head's pipeline with ``cv`` = the (train, test) pairs of
``StratifiedGroupKFold(inner_folds, shuffle=True, random_state=seed)`` over the training subjects (plain
``StratifiedKFold`` when subjects are unknown: the row's note says so). Parameters of the estimator inside
the ``Pipeline`` are addressed as ``clf__<param>``. Nothing here writes a file.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedGroupKFold, StratifiedKFold

from featx.errors import FeatxError, arg
from featx.heads import check_params, fit_params, get_head
from featx.scoring import METRICS, get_metric

SEARCH_METHODS = ("grid", "random")


@dataclass(frozen=True)
class LogUniform:
    """A range sampled log-uniformly by random search (``C`` from 1e-3 to 1e3)."""
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.low:g}:{self.high:g}"

    def distribution(self):
        return stats.loguniform(self.low, self.high)


Space = dict[str, dict[str, list | LogUniform]]   # head -> {parameter: values or range}

# Sensible default grids per head (``--tune``): small enough for a grid search on a laptop.
DEFAULT_SPACES: dict[str, dict[str, list]] = {
    "logistic": {"C": [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3]},
    "linear-svm": {"C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0]},
    "svm": {"C": [0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 1e-4, 1e-3, 1e-2]},
    "xgboost": {"max_depth": [2, 4, 6], "learning_rate": [0.05, 0.1, 0.3], "n_estimators": [100, 200]},
    "random-forest": {"max_depth": [None, 8, 16], "min_samples_leaf": [1, 2, 5]},
    "knn": {"n_neighbors": [3, 5, 9, 15]},
    "softmax": {"lr": [1e-4, 1e-3, 1e-2], "weight_decay": [0.0, 1e-4, 1e-2]},
}


@dataclass(frozen=True)
class Search:
    """How each outer fold's head picks its parameters (see the module's text).

    ``metric``: one of :data:`featx.results.METRICS` (precision/recall/f1 of the positive class).
    ``n_jobs``: processes of each inner search, used only when the outer pool of heads x folds is serial
    (``jobs=1``); with ``jobs`` other than 1 every inner search runs serially so that the processes stay
    ``jobs`` (no oversubscription). ``seed``: the inner folds' and random draws' seed (None: the
    evaluation's seed).
    """
    space: Space = field(default_factory=dict)
    method: str = "grid"
    n_iter: int = 20
    inner_folds: int = 3
    metric: str = "f1_weighted"
    seed: int | None = None
    n_jobs: int = 1

    def head_space(self, head: str) -> dict[str, list | LogUniform]:
        """The space of ``head`` (by registry name); empty when it is not searched."""
        name = get_head(head).name
        return next((dict(v) for h, v in self.space.items() if get_head(h).name == name), {})

    def describe(self) -> dict:
        """The settings as plain values (the row's ``search``, the card's ``search``)."""
        return {"method": self.method, "metric": self.metric, "inner_folds": self.inner_folds,
                "n_iter": self.n_iter if self.method == "random" else None,
                "space": {get_head(h).name: space_text(v) for h, v in self.space.items()}}


def space_text(space: Mapping[str, Any]) -> str:
    """``{"C": [0.1, 1], "gamma": LogUniform(...)}`` -> ``"C=0.1,1; gamma=0.0001:0.01"``."""
    return "; ".join(f"{k}={','.join(_value_text(x) for x in v) if isinstance(v, list) else v}"
                     for k, v in space.items())


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_search(search: Search) -> Search:
    """Check a :class:`Search` before any fitting; :class:`FeatxError` naming the argument otherwise."""
    if search.method not in SEARCH_METHODS:
        raise FeatxError(f"{arg('search', search.method)}: use grid or random")
    if not isinstance(search.inner_folds, (int, np.integer)) or search.inner_folds < 2:
        raise FeatxError(f"{arg('inner_folds', search.inner_folds)}: the inner search needs at least 2 folds")
    if search.method == "random" and (not isinstance(search.n_iter, (int, np.integer)) or search.n_iter < 1):
        raise FeatxError(f"{arg('n_iter', search.n_iter)}: random search needs at least 1 draw")
    if search.metric not in METRICS:
        raise FeatxError(f"{arg('search_metric', search.metric)}: choose from {', '.join(METRICS)}")
    if not any(search.space.values()):
        raise FeatxError(f"{arg('search')}: the search space is empty; give a list of values (C=0.1,1,10) "
                         f"or {arg('tune')}")
    for head, space in search.space.items():
        for key, values in space.items():
            where = f"{arg('params', f'{get_head(head).name}.{key}')}"
            if isinstance(values, LogUniform):
                if search.method != "random":
                    raise FeatxError(f"{where}: a range ({values}) is sampled by {arg('search', 'random')}")
                if not (math.isfinite(values.low) and math.isfinite(values.high) and values.low < values.high):
                    raise FeatxError(f"{where}: a range needs low < high, got {values}")
                if isinstance(values, LogUniform) and values.low <= 0:
                    raise FeatxError(f"{where}: a log-uniform range needs low > 0, got {values}")
                check_params({head: {key: values.low}})
            elif not isinstance(values, list) or not values:
                raise FeatxError(f"{where}: give a non-empty list of values")
            else:
                for v in values:
                    check_params({head: {key: v}})
    return search


def inner_splits(y, groups, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner (train, test) index pairs over the training rows: subject-grouped when ``groups`` is not
    None (no subject on both sides), else stratified over images."""
    y = np.asarray(y)
    if groups is not None:
        n_subjects = len(np.unique(groups))
        if n_subjects < n_folds:
            raise FeatxError(f"{arg('inner_folds', n_folds)}: an outer training fold holds only {n_subjects} "
                             "subjects; use fewer inner folds")
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        return [(a, b) for a, b in splitter.split(np.zeros(len(y)), y, groups)]
    splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    return [(a, b) for a, b in splitter.split(np.zeros(len(y)), y)]


def fit_search(pipeline, X, y, groups, search: Search, head: str, *, positive: int = 0, seed: int = 0,
               n_jobs: int = 1):
    """Fit the inner search of ``head``'s ``pipeline`` on (``X``, ``y``) whose rows belong to subjects
    ``groups`` (None when unknown); returns the fitted ``GridSearchCV``/``RandomizedSearchCV`` (refit on all
    of ``X`` with the best parameters)."""
    seed = search.seed if search.seed is not None else seed
    space = {f"clf__{k}": (v.distribution() if isinstance(v, LogUniform) else list(v))
             for k, v in search.head_space(head).items()}
    cv = inner_splits(y, groups, search.inner_folds, seed)
    scoring = get_metric(search.metric).scorer(positive, int(np.max(y)) + 1)  # labels are class indices
    common = dict(scoring=scoring, cv=cv, refit=True, n_jobs=n_jobs, error_score="raise")
    if search.method == "random":
        searcher = RandomizedSearchCV(pipeline, space, n_iter=search.n_iter, random_state=seed, **common)
    else:
        searcher = GridSearchCV(pipeline, space, **common)
    return searcher.fit(X, y, **fit_params(head, groups))


def search_record(searcher, fold: int) -> tuple[dict, list[dict]]:
    """(the parameters chosen, every inner candidate as ``{fold, params, mean_test_score, std_test_score,
    rank, chosen}``) of a fitted search; ``fold`` counts from 1."""
    res = searcher.cv_results_
    chosen = {k.removeprefix("clf__"): v for k, v in searcher.best_params_.items()}
    scores = []
    for i, params in enumerate(res["params"]):
        scores.append({"fold": fold, "params": {k.removeprefix("clf__"): v for k, v in params.items()},
                       "mean_test_score": float(res["mean_test_score"][i]),
                       "std_test_score": float(res["std_test_score"][i]),
                       "rank": int(res["rank_test_score"][i]), "chosen": bool(i == searcher.best_index_)})
    return chosen, scores


def params_json(params: Mapping[str, Any]) -> str:
    """Chosen parameters as one JSON cell (``search/<row>.csv``)."""
    return json.dumps({k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()},
                      sort_keys=True)
