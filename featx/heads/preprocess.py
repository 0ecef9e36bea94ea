"""What runs on the features before a head, as a typed value.

``preprocess`` is a sequence of steps applied in order, each ``"standard"`` (zero mean and unit variance per
feature), ``"l2"`` (each row scaled to unit length) or ``("pca", n)`` (projection on ``n`` principal
components); ``None`` or ``()`` is no step, and a lone step name is that one step. Each step may appear once.
:func:`preprocess_text` writes it as result settings and model cards show it:
``["standard", ("pca", 128)]`` -> ``"standard+pca:128"`` (``"none"`` when empty).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.decomposition import PCA
from sklearn.preprocessing import Normalizer, StandardScaler

from featx.errors import FeatxError, arg

Step = str | tuple[str, int]
Preprocess = Step | Sequence[Step] | None

__all__ = ["Preprocess", "Step", "check_preprocess", "preprocess_steps", "preprocess_text"]


def check_preprocess(preprocess: Preprocess) -> tuple[Step, ...]:
    """The steps of ``preprocess``, in order and checked (a ``["pca", n]`` list from JSON becomes a tuple);
    :class:`FeatxError` naming the argument otherwise."""
    if preprocess is None:
        return ()
    steps = tuple(_step(item, preprocess) for item in _items(preprocess))
    names = [s if isinstance(s, str) else s[0] for s in steps]
    if len(set(names)) != len(names):
        raise FeatxError(f"{_named(preprocess)}: each step may appear once")
    return steps


def preprocess_text(preprocess: Preprocess) -> str:
    """The display text of ``preprocess``: ``["standard", ("pca", 128)]`` -> ``"standard+pca:128"``; ``"none"``."""
    return "+".join(_text(s) for s in check_preprocess(preprocess)) or "none"


def preprocess_steps(preprocess: Preprocess) -> list[tuple[str, TransformerMixin]]:
    """Unfitted pipeline steps ``(name, transformer)`` for ``preprocess``; ``[]`` when it has none."""
    out: list[tuple[str, TransformerMixin]] = []
    for step in check_preprocess(preprocess):
        if step == "standard":
            out.append(("standard", StandardScaler()))
        elif step == "l2":
            out.append(("l2", Normalizer(norm="l2")))
        else:
            out.append(("pca", PCA(n_components=step[1], random_state=0)))
    return out


def _items(preprocess) -> list:
    """The steps as given: a lone step is one; anything but a list or tuple is one (to be refused)."""
    if preprocess is None:
        return []
    if isinstance(preprocess, (list, tuple)) and not _is_pca(preprocess):
        return list(preprocess)
    return [preprocess]


def _is_pca(item) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and item[0] == "pca"


def _step(item, preprocess) -> Step:
    if isinstance(item, str) and item in ("standard", "l2"):
        return item
    if _is_pca(item) or (isinstance(item, str) and item == "pca"):
        n = item[1] if _is_pca(item) else None
        if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1:
            return ("pca", int(n))
        raise FeatxError(f"{_named(preprocess)}: pca needs a positive whole number of components, "
                         "e.g. ('pca', 128)")
    raise FeatxError(f"{_named(preprocess)}: unknown step {item!r}; use 'standard', 'l2' or ('pca', n) in the "
                     "order they run, or None for no step")


def _text(step) -> str:
    return f"{step[0]}:{step[1]}" if _is_pca(step) else str(step)


def _named(preprocess) -> str:
    """The argument with its value as display text, also when the value is not valid."""
    return arg("preprocess", "+".join(_text(s) for s in _items(preprocess)) or "none")
