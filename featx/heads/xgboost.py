"""XGBoost's gradient-boosted trees as a scikit-learn classifier for any class labels, with class weights."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_array
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["XGBoostClassifier"]


class XGBoostClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees (XGBoost ``hist``; CUDA when present) for any class labels.

    XGBoost wants labels 0..K-1 and has no ``class_weight``; this wrapper encodes the labels and turns
    ``class_weight`` into sample weights.
    """

    def __init__(self, n_estimators=200, max_depth=4, learning_rate=0.1, subsample=0.8, colsample_bytree=0.3,
                 max_bin=64, class_weight=None, device="auto", n_jobs=None, random_state=0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.max_bin = max_bin
        self.class_weight = class_weight
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        """Train the booster; ``class_weight`` multiplies ``sample_weight``."""
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        y_idx = encoder.transform(y)
        weight = _sample_weight(sample_weight, X.shape[0])
        if not np.any(weight > 0):
            raise ValueError("sample_weight: at least one weight must be non-zero (all sample weights are zero)")
        if self.class_weight is not None:
            weight = weight * compute_sample_weight(self.class_weight, y)
        if len(self.classes_) == 1:
            self.booster_ = None
            return self
        from xgboost import XGBClassifier  # deferred: a heavy import (~1 s) that only xgboost heads need

        from featx.device import resolve_device  # deferred: it imports torch

        device = resolve_device(self.device).type
        self.booster_ = XGBClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree, max_bin=self.max_bin,
            tree_method="hist", device=device, n_jobs=self.n_jobs, random_state=self.random_state,
            objective="binary:logistic" if len(self.classes_) == 2 else "multi:softprob",
        ).fit(X, y_idx, sample_weight=weight)
        self.booster_.set_params(device="cpu")  # predict where the caller's numpy data lives
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        if self.booster_ is None:
            return np.ones((X.shape[0], 1))
        return self.booster_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]




XGBoostClassifier.__module__ = "featx.heads"  # saved models (pickle, skops) name it by its public path


def _sample_weight(sample_weight, n_rows: int) -> np.ndarray:
    """``sample_weight`` as a fresh float64 vector of ``n_rows`` non-negative numbers (ones when None)."""
    if sample_weight is None:
        return np.ones(n_rows)
    if np.isscalar(sample_weight):
        return np.full(n_rows, float(sample_weight))
    weight = check_array(sample_weight, ensure_2d=False, dtype=np.float64, copy=True, input_name="sample_weight")
    if weight.shape != (n_rows,):
        raise ValueError(f"sample_weight.shape == {weight.shape}, expected {(n_rows,)}")
    if np.any(weight < 0):
        raise ValueError("Negative values in data passed to sample_weight")
    return weight
