"""The registry of heads and the one factory that builds any of them as a scikit-learn ``Pipeline``.

Each :class:`HeadSpec` names its estimator class and featx's settings for it (``defaults``, where they
differ from the estimator's own); :func:`make_head` builds ``estimator(**{**defaults, **params})`` behind the
preprocessing steps, and gives the seed, the device and the class weights to the estimators that take them.
Parameters are checked before any fitting: each name against the estimator's ``get_params()``, each value by
the estimator's own validation (see :func:`check_params`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from featx.errors import FeatxError, arg
from featx.heads.preprocess import Preprocess, preprocess_steps
from featx.heads.softmax import SoftmaxClassifier
from featx.heads.svm import RBFSVMClassifier
from featx.heads.xgboost import XGBoostClassifier

__all__ = ["HEADS", "MANAGED_PARAMS", "HeadSpec", "check_params", "fit_params", "get_head", "head_params",
           "list_heads", "make_head", "settable_params"]

# Estimator parameters that make_head sets from its own arguments (on the estimators that have them).
MANAGED_PARAMS = {"random_state": "seed", "device": "device", "class_weight": "class_weight"}


@dataclass(frozen=True)
class HeadSpec:
    """One head of the registry: its estimator, featx's settings for it, and what it offers."""
    name: str
    description: str
    estimator: type[BaseEstimator]            # make_head builds estimator(**{**defaults, **params})
    defaults: Mapping[str, Any] = field(default_factory=dict)   # where featx differs from the estimator
    class_weight: bool = True                 # takes class weights
    probability: bool = True                  # has predict_proba (else decision_function is the score)
    groups: bool = False                      # fit takes the subject of each row as ``groups``
    native: tuple[str, ...] = ()              # modules with thread pools the head loads on its first fit
    cost: float = 1.0                         # rough seconds of one fold on 10,000 x 4,096 (longest run first)
    scale_free: bool = False                  # splits on thresholds: a last "standard" step changes nothing


HEADS: dict[str, HeadSpec] = {spec.name: spec for spec in (
    HeadSpec("softmax", "torch softmax head (linear, or hidden=N units with dropout); CUDA when present",
             SoftmaxClassifier, native=("torch",), cost=1.5),
    HeadSpec("logistic", "multinomial logistic regression (lbfgs, C=1)", LogisticRegression,
             {"C": 1.0, "max_iter": 1000}, cost=1.0),
    HeadSpec("linear-svm", "linear SVM (LinearSVC, C=0.01); decision function as the score", LinearSVC,
             {"C": 0.01, "max_iter": 5000}, probability=False),
    HeadSpec("svm", "RBF-kernel SVM (libsvm on a BLAS-computed float32 kernel, C=1, gamma=scale); decision "
             "function as the score", RBFSVMClassifier, {"C": 1.0, "gamma": "scale"}, probability=False, cost=6.0),
    HeadSpec("xgboost", "gradient-boosted trees (XGBoost hist, up to 200 trees, early stopping on a subject-grouped "
             "tenth of the training rows); CUDA when present", XGBoostClassifier, groups=True,
             native=("xgboost", "torch"), cost=10.0, scale_free=True),
    HeadSpec("random-forest", "random forest (300 trees)", RandomForestClassifier,
             {"n_estimators": 300, "n_jobs": 1}, cost=8.0, scale_free=True),
    HeadSpec("knn", "k nearest neighbours (k=5; no class weighting)", KNeighborsClassifier, {"n_neighbors": 5},
             class_weight=False),
)}


def list_heads() -> list[str]:
    """Names of the registered heads, in registry order."""
    return list(HEADS)


def get_head(name: str) -> HeadSpec:
    """The registry entry for ``name``; :class:`FeatxError` listing the known heads otherwise."""
    key = (name or "").strip().lower().replace("_", "-")
    if key not in HEADS:
        raise FeatxError(f"unknown head {name!r}; choose from: {', '.join(HEADS)}")
    return HEADS[key]


def settable_params(name: str) -> list[str]:
    """The parameters one may set on head ``name``: its estimator's, less those make_head sets itself."""
    return [p for p in get_head(name).estimator().get_params(deep=False) if p not in MANAGED_PARAMS]


def make_head(name: str, *, preprocess: Preprocess = ("standard",), class_weight=None, seed: int = 0,
              device: str = "auto", **params) -> Pipeline:
    """Build an unfitted head: ``Pipeline([*preprocessing, ("clf", estimator)])``.

    ``preprocess``: the steps before the head (see :mod:`featx.heads.preprocess`; an identity step when
    none). ``class_weight`` is None, "balanced" or a dict; heads without class weighting (knn) ignore it.
    ``params`` go to the estimator, e.g. ``C=10``, after the checks of :func:`check_params`. The same call
    builds the head that is evaluated and the one that is saved; heads without ``predict_proba`` (svm,
    linear-svm) score by their decision function. Tree heads (xgboost, random-forest) pass a last
    ``"standard"`` step through: their splits are the same on standardised features.
    """
    spec = get_head(name)
    if class_weight not in (None, "balanced") and not isinstance(class_weight, dict):
        raise FeatxError(f"{arg('class_weight', class_weight)}: use 'balanced' or leave it out")
    _check(spec, params)
    own = spec.estimator().get_params(deep=False)
    given = {"random_state": seed, "device": device, "class_weight": class_weight if spec.class_weight else None}
    estimator = spec.estimator(**{**spec.defaults, **{k: v for k, v in given.items() if k in own}, **params})
    steps = preprocess_steps(preprocess) or [("identity", FunctionTransformer())]
    if spec.scale_free and steps[-1][0] == "standard":
        # a tree splits an increasingly rescaled feature at the rescaled threshold: same model, so the
        # step stays in the pipeline by name but passes the features through (it would only cost time)
        steps[-1] = ("standard", "passthrough")
    return Pipeline([*steps, ("clf", estimator)])


def fit_params(name: str, groups) -> dict[str, Any]:
    """What ``Pipeline.fit`` of head ``name`` takes besides ``X`` and ``y``: the subject of each row
    (``groups``, None when unknown) for the heads that use it (xgboost's early-stopping split), else nothing."""
    return {"clf__groups": groups} if groups is not None and get_head(name).groups else {}


def head_params(pipeline) -> dict[str, Any]:
    """Every parameter of a head's estimator (the last step of a pipeline from :func:`make_head`) as it is
    built: featx's defaults, the estimator's own and those given, less those set from make_head's own
    arguments (seed, device, class weights); what a result row and a model card record as ``head_params``."""
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    own = estimator.get_params(deep=False)
    return {k: v for k, v in own.items() if k not in MANAGED_PARAMS}


def check_params(params: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Check head parameters ``{head: {parameter: value}}`` before any work; return them keyed by registry name.

    One-line :class:`FeatxError` for an unknown head, a parameter the head does not take (listing those it
    takes), one that make_head sets itself (``random_state`` comes from ``seed``...), or a value the
    estimator's own validation refuses (``C="abc"``, ``C=-1``). Values that only data can refute
    (``n_neighbors`` above the number of training rows) fail when the head is fitted.
    """
    out: dict[str, dict[str, Any]] = {}
    for head, values in (params or {}).items():
        spec = get_head(head)
        if not isinstance(values, Mapping):
            raise FeatxError(f"{arg('params')}: head {spec.name} maps to {values!r}; give a dict "
                             "{parameter: value} for each head")
        _check(spec, values)
        out.setdefault(spec.name, {}).update(values)
    return out


def _check(spec: HeadSpec, params: Mapping[str, Any]) -> None:
    own = spec.estimator().get_params(deep=False)
    for key, value in params.items():
        where = f"head {spec.name}: bad parameter {arg('params', f'{spec.name}.{key}={value}')}"
        if key in MANAGED_PARAMS and key in own:
            raise FeatxError(f"{where}: set it with {arg(MANAGED_PARAMS[key])}")
        if key not in own:
            raise FeatxError(f"{where}: {spec.name} takes {', '.join(settable_params(spec.name))}")
        refused = _refusal(spec.estimator(**{**spec.defaults, key: value}))
        if refused != _refusal(spec.estimator(**spec.defaults)):
            raise FeatxError(f"{where}: {refused}")


_NO_ROWS = (np.empty((0, 2)), np.empty(0))


def _refusal(estimator: BaseEstimator) -> str | None:
    """Why ``estimator`` refuses to fit no rows, in one line: its first check, before any work.

    scikit-learn's estimators (and featx's softmax) validate their parameters first, so with valid
    parameters the refusal is the one about the empty data; a different one is the parameter's.
    """
    try:
        estimator.fit(*_NO_ROWS)
    except (TypeError, ValueError) as exc:
        return " ".join(str(exc).split())
    return None
