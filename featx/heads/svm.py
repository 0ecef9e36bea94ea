"""libsvm's RBF-kernel SVM with the kernel matrix computed by BLAS matrix products."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["RBFSVMClassifier"]


class RBFSVMClassifier(ClassifierMixin, BaseEstimator):
    """libsvm's RBF-kernel SVM (``SVC``), with the kernel matrix computed by matrix products.

    ``SVC(kernel="rbf")`` evaluates each kernel value with its own loop over the features, which dominates
    on 4,096-dimensional deep features; here the Gram matrix comes from float64 matrix products in row
    blocks (``|x|^2 + |y|^2 - 2 x.y``) and libsvm solves the same problem on it (``kernel="precomputed"``),
    so the solution equals ``SVC(kernel="rbf", gamma=...)``'s up to rounding, and a row's score does not
    depend on the rows predicted with it. Memory: n_train^2 float64 during fit.
    Only the support vectors are kept. ``decision_function`` is the score (no ``predict_proba``).
    """

    def __init__(self, C=1.0, gamma="scale", class_weight=None, tol=1e-3, cache_size=500, max_iter=-1,
                 random_state=0):
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.tol = tol
        self.cache_size = cache_size
        self.max_iter = max_iter
        self.random_state = random_state

    def _check_params(self) -> None:
        """Refuse a bad C or gamma before looking at the data (libsvm would only see C after the kernel)."""
        if not _positive(self.C):
            raise ValueError(f"C must be a positive number; got {self.C!r}")
        if self.gamma not in ("scale", "auto") and not _positive(self.gamma):
            raise ValueError(f"gamma must be 'scale', 'auto' or a positive number; got {self.gamma!r}")

    def _gamma(self, X) -> float:
        if self.gamma == "scale":
            var = float(np.var(X, dtype=np.float64))
            return 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        return float(self.gamma)

    def _kernel(self, A, B, block: int = 1024) -> np.ndarray:
        """exp(-gamma |a - b|^2) for every row pair, in float64 and in row blocks of ``A``.

        float64 keeps each value independent of how many rows are computed together (BLAS uses other
        kernels for one row than for many; in float32 their rounding differs by ~1e-7).
        """
        B = np.asarray(B, dtype=np.float64)
        b_sq = np.einsum("ij,ij->i", B, B)
        out = np.empty((len(A), len(B)), dtype=np.float64)
        for start in range(0, len(A), block):
            a = np.asarray(A[start:start + block], dtype=np.float64)
            d = a @ B.T
            d *= -2.0
            d += np.einsum("ij,ij->i", a, a)[:, None]
            d += b_sq[None, :]
            np.maximum(d, 0.0, out=d)
            d *= -self.gamma_
            np.exp(d, out=out[start:start + len(a)])
        return out

    def fit(self, X, y):
        """Solve the SVM on the RBF Gram matrix of ``X``; returns ``self``."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.gamma_ = self._gamma(X)
        self.svc_ = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight, tol=self.tol,
                        cache_size=self.cache_size, max_iter=self.max_iter, random_state=self.random_state)
        self.svc_.fit(self._kernel(X, X), y)
        self.classes_ = self.svc_.classes_
        self.support_vectors_ = np.asarray(X[self.svc_.support_], dtype=np.float64)
        self.n_train_ = X.shape[0]
        self.n_iter_ = self.svc_.n_iter_
        return self

    def decision_function(self, X) -> np.ndarray:
        """Signed distance to the margin (binary: positive means ``classes_[1]``), as ``SVC``'s."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        parts = []
        for start in range(0, X.shape[0], 1024):  # columns of non-support vectors are never read: zeros
            K = np.zeros((min(1024, X.shape[0] - start), self.n_train_))
            K[:, self.svc_.support_] = self._kernel(X[start:start + 1024], self.support_vectors_)
            parts.append(self.svc_.decision_function(K))
        return np.concatenate(parts) if parts else np.zeros(0)

    def predict(self, X) -> np.ndarray:
        """The class on the positive side of each decision function (one-vs-one vote when multiclass)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        parts = []
        for start in range(0, X.shape[0], 1024):
            K = np.zeros((min(1024, X.shape[0] - start), self.n_train_))
            K[:, self.svc_.support_] = self._kernel(X[start:start + 1024], self.support_vectors_)
            parts.append(self.svc_.predict(K))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.classes_.dtype)


RBFSVMClassifier.__module__ = "featx.heads"  # saved models (pickle, skops) name it by its public path


def _positive(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and value > 0
