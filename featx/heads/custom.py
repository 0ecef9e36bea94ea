"""A user's own scikit-learn classifier as a head: from an estimator (class or instance, a Pipeline too)
or from its import path ``package.module:Class`` (what ``--head`` takes).

The head is named after the estimator's class (a Pipeline's last step's), builds ``clone(estimator)``, and
scores by ``predict_proba`` when the estimator has it, else by ``decision_function``.
"""
from __future__ import annotations

import importlib

from sklearn.base import clone, is_classifier

from featx.errors import FeatxError, arg
from featx.heads.spec import HeadSpec

__all__ = ["head_of", "import_head", "is_import_path"]


def is_import_path(text: str) -> bool:
    """True for ``package.module:Class`` (a head given by its import path, not a registry name)."""
    return ":" in text


def import_head(text: str) -> HeadSpec:
    """The head of the classifier class at ``package.module:Class``, built with its default parameters;
    one-line :class:`FeatxError` naming the module or class when it cannot be imported or is no classifier."""
    module_name, _, qualname = text.strip().partition(":")
    if not module_name or not qualname:
        raise FeatxError(f"{arg('head', text)}: write a head of your own as package.module:Class, e.g. "
                         "sklearn.ensemble:HistGradientBoostingClassifier")
    try:
        found = importlib.import_module(module_name)
    except ImportError as exc:
        raise FeatxError(f"{arg('head', text)}: cannot import module {module_name!r} ({exc}); give the module of "
                         "an installed classifier, e.g. sklearn.ensemble:HistGradientBoostingClassifier") from None
    for part in qualname.split("."):
        if not hasattr(found, part):
            raise FeatxError(f"{arg('head', text)}: module {module_name} has no {qualname!r}; check the class "
                             "name (case matters)")
        found = getattr(found, part)
    return head_of(found, where=arg("head", text))


def head_of(estimator, *, where: str | None = None) -> HeadSpec:
    """The head of a user's scikit-learn classifier: an instance (its parameters kept), a class (built with
    its default parameters) or a ``Pipeline`` ending in a classifier. ``where`` names the argument in errors."""
    where = where or arg("head", type(estimator).__name__)
    if isinstance(estimator, type):
        try:
            estimator = estimator()
        except TypeError as exc:
            raise FeatxError(f"{where}: {estimator.__name__} cannot be built with its default parameters "
                             f"({exc}); pass an instance") from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise FeatxError(f"{where}: {type(estimator).__name__} is not a scikit-learn estimator; give a "
                         "classifier (or a Pipeline ending in one)")
    if not is_classifier(estimator):
        raise FeatxError(f"{where}: {type(estimator).__name__} is not a classifier; give a classifier (or a "
                         "Pipeline ending in one)")
    template = clone(estimator)
    last = template.steps[-1][1] if hasattr(template, "steps") else template
    names = template.get_params(deep=hasattr(template, "steps"))
    return HeadSpec(name=type(last).__name__, description=f"{type(last).__module__}.{type(last).__qualname__} "
                    "(your estimator)", estimator=type(template), template=template,
                    class_weight=any(k.rpartition("__")[2] == "class_weight" for k in names),
                    probability=hasattr(template, "predict_proba"))
