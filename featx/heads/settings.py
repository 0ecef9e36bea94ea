"""What every head fit of one evaluation shares, checked once: :class:`HeadSettings`.

``HeadSettings(preprocess=["standard"], class_weight="balanced", params={"svm": {"C": 10}}, seed=1)``
refuses a bad step, class weight or parameter at construction (the messages of :func:`check_preprocess`,
:func:`make_head` and :func:`check_params`), before any fit; :meth:`HeadSettings.for_head` gives the keyword
arguments of :func:`make_head` for one head, :meth:`HeadSettings.make` builds it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

from sklearn.pipeline import Pipeline

from featx.errors import FeatxError, arg
from featx.heads.preprocess import Preprocess, Step, check_preprocess
from featx.heads.registry import check_params, get_head, make_head

__all__ = ["HeadSettings"]


@dataclass(frozen=True)
class HeadSettings:
    """The preprocessing, class weights, per-head parameters, device and seed of every head fit.

    ``preprocess``: the steps before each head (:mod:`featx.heads.preprocess`), kept as the checked tuple;
    ``class_weight``: None, ``"balanced"`` or a dict; ``params``: ``{head: {parameter: value}}``, kept keyed by
    registry name (``"SVM"`` -> ``"svm"``); ``device``: where torch heads train; ``seed``: every head's
    ``random_state``. Plain values only, so the settings travel to worker processes whole.
    """

    preprocess: tuple[Step, ...] | Preprocess = ("standard",)
    class_weight: str | dict | None = None
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if self.class_weight not in (None, "balanced") and not isinstance(self.class_weight, dict):
            raise FeatxError(f"{arg('class_weight', self.class_weight)}: use 'balanced' or leave it out")
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral):
            raise FeatxError(f"{arg('seed', self.seed)}: give a whole number")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "preprocess", check_preprocess(self.preprocess))
        object.__setattr__(self, "params", check_params(self.params))

    def for_head(self, head) -> dict[str, Any]:
        """The keyword arguments of :func:`make_head` for ``head`` (a name, a spec or an estimator): the shared
        settings and that head's own parameters."""
        return dict(preprocess=self.preprocess, class_weight=self.class_weight, seed=self.seed,
                    device=self.device, **self.params.get(get_head(head).name, {}))

    def make(self, head) -> Pipeline:
        """The unfitted head ``head`` with these settings (:func:`make_head`)."""
        return make_head(head, **self.for_head(head))
