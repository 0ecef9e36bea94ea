"""The registry of heads and the one factory that builds any of them as a scikit-learn ``Pipeline``.

Each :class:`HeadSpec` names its estimator class and featx's settings for it (``defaults``, where they
differ from the estimator's own); :func:`make_head` builds ``estimator(**{**defaults, **params})`` behind the
preprocessing steps, and gives the seed, the device and the class weights to the estimators that take them.
Parameters are checked before any fitting: each name against the estimator's ``get_params()``, each value by
the estimator's own validation (see :func:`check_params`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
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
from featx.heads.custom import head_of, import_head, is_import_path
from featx.heads.preprocess import Preprocess, preprocess_steps
from featx.heads.softmax import SoftmaxClassifier
from featx.heads.spec import HeadSpec
from featx.heads.svm import RBFSVMClassifier
from featx.heads.xgboost import XGBoostClassifier

__all__ = ["HEADS", "MANAGED_PARAMS", "HeadSpec", "check_params", "fit_params", "get_head", "head_params",
           "head_specs", "list_heads", "make_head", "settable_params"]

# Estimator parameters that make_head sets from its own arguments (on the estimators that have them).
MANAGED_PARAMS = {"random_state": "seed", "device": "device", "class_weight": "class_weight"}
# Those make_head sets on a user's estimator (where the estimator leaves them None).
_MANAGED_OWN = ("random_state", "class_weight")


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


def get_head(head) -> HeadSpec:
    """The :class:`HeadSpec` of ``head``: a registry name, a :class:`HeadSpec`, or a scikit-learn classifier of
    your own (an instance, a class, a ``Pipeline``, or its import path ``package.module:Class``; see
    :mod:`featx.heads.custom`). A head of your own is then known by its name (its class's) in this process,
    so that parameters and rows can name it. :class:`FeatxError` listing the known heads otherwise."""
    if isinstance(head, HeadSpec):
        return head
    if not isinstance(head, str):
        return _remember(head_of(head))
    if is_import_path(head):
        return _remember(import_head(head))
    key = (head or "").strip().lower().replace("_", "-")
    if key in HEADS:
        return HEADS[key]
    if key in _YOURS:
        return _YOURS[key]
    raise FeatxError(f"unknown head {head!r}; choose from: {', '.join(HEADS)}")


_YOURS: dict[str, HeadSpec] = {}  # the heads of your own estimators met in this process, by name


def _remember(spec: HeadSpec) -> HeadSpec:
    key = spec.name.lower().replace("_", "-")
    if key in HEADS:  # a class named like a registry head keeps its module in its name
        spec = replace(spec, name=f"{spec.estimator.__module__}.{spec.name}")
        key = spec.name.lower().replace("_", "-")
    _YOURS[key] = spec
    return spec


def settable_params(name) -> list[str]:
    """The parameters one may set on head ``name``: its estimator's, less those make_head sets itself."""
    spec = get_head(name)
    return [p for p in spec.own_params() if p.rpartition("__")[2] not in _managed(spec)]


def _managed(spec: HeadSpec):
    return MANAGED_PARAMS if spec.template is None else _MANAGED_OWN


def make_head(head, *, preprocess: Preprocess = ("standard",), class_weight=None, seed: int = 0,
              device: str = "auto", **params) -> Pipeline:
    """Build an unfitted head: ``Pipeline([*preprocessing, ("clf", estimator)])``.

    ``preprocess``: the steps before the head (see :mod:`featx.heads.preprocess`; an identity step when
    none). ``class_weight`` is None, "balanced" or a dict; heads without class weighting (knn) ignore it.
    ``params`` go to the estimator, e.g. ``C=10``, after the checks of :func:`check_params`. The same call
    builds the head that is evaluated and the one that is saved; heads without ``predict_proba`` (svm,
    linear-svm) score by their decision function. Tree heads (xgboost, random-forest) pass a last
    ``"standard"`` step through: their splits are the same on standardised features.

    ``head``: anything :func:`get_head` takes. A scikit-learn classifier of your own (a Pipeline too) goes
    behind the same preprocessing as any head (``preprocess=()`` for none); the seed and the class weights
    fill its ``random_state`` / ``class_weight`` (a Pipeline's steps' too) where it leaves them None.
    """
    spec = get_head(head)
    if class_weight not in (None, "balanced") and not isinstance(class_weight, dict):
        raise FeatxError(f"{arg('class_weight', class_weight)}: use 'balanced' or leave it out")
    _check(spec, params)
    own = spec.own_params()
    if spec.template is None:
        given = {"random_state": seed, "device": device, "class_weight": class_weight if spec.class_weight else None}
        given = {k: v for k, v in given.items() if k in own}
    else:  # a user's estimator: fill what it leaves unset
        wanted = {"random_state": seed, "class_weight": class_weight}
        given = {k: wanted[k.rpartition("__")[2]] for k, v in own.items()
                 if k.rpartition("__")[2] in wanted and v is None and wanted[k.rpartition("__")[2]] is not None}
    estimator = spec.build(**{**given, **params})
    steps = preprocess_steps(preprocess) or [("identity", FunctionTransformer())]
    if spec.scale_free and steps[-1][0] == "standard":
        # a tree splits an increasingly rescaled feature at the rescaled threshold: same model, so the
        # step stays in the pipeline by name but passes the features through (it would only cost time)
        steps[-1] = ("standard", "passthrough")
    return Pipeline([*steps, ("clf", estimator)])


def fit_params(name, groups) -> dict[str, Any]:
    """What ``Pipeline.fit`` of head ``name`` takes besides ``X`` and ``y``: the subject of each row
    (``groups``, None when unknown) for the heads that use it (xgboost's early-stopping split), else nothing."""
    return {"clf__groups": groups} if groups is not None and get_head(name).groups else {}


def head_params(pipeline) -> dict[str, Any]:
    """Every parameter of a head's estimator (the last step of a pipeline from :func:`make_head`) as it is
    built: featx's defaults, the estimator's own and those given, less those set from make_head's own
    arguments (seed, device, class weights); what a result row and a model card record as ``head_params``."""
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if hasattr(estimator, "steps"):  # a user's Pipeline as the head: its steps' parameters (step__parameter)
        own = {k: v for k, v in estimator.get_params(deep=True).items() if "__" in k}
    else:
        own = estimator.get_params(deep=False)
    return {k: v for k, v in own.items() if k.rpartition("__")[2] not in MANAGED_PARAMS}


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
    own = spec.own_params()
    for key, value in params.items():
        where = f"head {spec.name}: bad parameter {arg('params', f'{spec.name}.{key}={value}')}"
        if key.rpartition("__")[2] in _managed(spec) and key in own:
            raise FeatxError(f"{where}: set it with {arg(MANAGED_PARAMS[key.rpartition('__')[2]])}")
        if key not in own:
            raise FeatxError(f"{where}: {spec.name} takes {', '.join(settable_params(spec))}")
        refused = _refusal(spec.build(**{key: value}))
        if refused != _refusal(spec.build()):
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


def head_specs(heads) -> list[HeadSpec]:
    """The specs of ``heads`` (one head, or a sequence of names, specs and estimators), unknown names refused;
    two different heads of one name are refused too (a row is named after its head)."""
    specs = [get_head(h) for h in (list(heads) if isinstance(heads, (list, tuple)) else [heads])]
    for i, spec in enumerate(specs):
        if any(s.name == spec.name and s != spec for s in specs[:i]):
            raise FeatxError(f"{arg('heads')}: two different heads are named {spec.name}; score them in "
                             "separate calls")
    return specs
