"""The score of a fitted head: what ROC curves and saved predictions rank rows by."""
from __future__ import annotations

import numpy as np

__all__ = ["has_probability", "positive_scores"]


def has_probability(model) -> bool:
    """True when the fitted model offers ``predict_proba``."""
    return hasattr(model, "predict_proba")


def positive_scores(model, X, positive) -> np.ndarray:
    """A score per row that grows with the chance of class ``positive`` (a label of ``model.classes_``).

    ``predict_proba``'s column when the model has one, else the (signed) ``decision_function``.
    A positive class unseen in training scores 0 everywhere.
    """
    classes = list(model.classes_)
    if positive not in classes:
        return np.zeros(len(X))
    col = classes.index(positive)
    if has_probability(model):
        return model.predict_proba(X)[:, col]
    scores = model.decision_function(X)
    if scores.ndim == 1:
        return scores if col == 1 else -scores
    return scores[:, col]
