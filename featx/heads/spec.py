"""What featx knows of one head: :class:`HeadSpec`, a registry entry or a user's own estimator."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sklearn.base import BaseEstimator, clone

__all__ = ["HeadSpec"]


@dataclass(frozen=True)
class HeadSpec:
    """One head: its estimator, featx's settings for it, and what it offers.

    A registry head builds ``estimator(**{**defaults, **params})``. A user's estimator (see
    :func:`featx.heads.custom.head_of`) keeps an unfitted copy as ``template``: each build is a
    ``clone(template)`` with ``params`` set on it. A spec is picklable, so it travels to worker processes.
    """
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
    template: BaseEstimator | None = None     # a user's estimator (unfitted), cloned by each build

    def build(self, **params) -> BaseEstimator:
        """A new unfitted estimator of this head with ``params`` set (names as :meth:`own_params` gives them)."""
        if self.template is None:
            return self.estimator(**{**self.defaults, **params})
        return clone(self.template).set_params(**params)

    def own_params(self) -> dict[str, Any]:
        """Every parameter of the estimator as built with no ``params``; a user's Pipeline's as
        ``step__parameter`` (scikit-learn's names for the parameters of its steps)."""
        estimator = self.build()
        if hasattr(estimator, "steps"):
            return {k: v for k, v in estimator.get_params(deep=True).items() if "__" in k}
        return estimator.get_params(deep=False)
