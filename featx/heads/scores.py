"""The score of a fitted head: what ROC curves and saved predictions rank rows by."""
from __future__ import annotations

import numpy as np

__all__ = ["has_probability", "positive_scores", "predict_and_score"]


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
    return _oriented(model.decision_function(X), col)


def predict_and_score(model, X, positive) -> tuple[np.ndarray, np.ndarray]:
    """``(model.predict(X), positive_scores(model, X, positive))``; in one pass over ``X`` when the head
    offers ``predict_and_decision`` behind its preprocessing (the RBF SVM: its test kernel is computed once)."""
    head = model.steps[-1][1] if hasattr(model, "steps") else model
    if not hasattr(head, "predict_and_decision"):
        return model.predict(X), positive_scores(model, X, positive)
    Xt = model[:-1].transform(X) if hasattr(model, "steps") else X
    pred, scores = head.predict_and_decision(Xt)
    classes = list(head.classes_)
    if positive not in classes:
        return pred, np.zeros(len(X))
    return pred, _oriented(scores, classes.index(positive))


def _oriented(scores: np.ndarray, col: int) -> np.ndarray:
    """The decision function's score of class ``col``: a binary score grows with ``classes_[1]``."""
    if scores.ndim == 1:
        return scores if col == 1 else -scores
    return scores[:, col]
