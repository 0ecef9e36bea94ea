"""libsvm's RBF-kernel SVM with the kernel matrix computed by BLAS matrix products."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.errors import FeatxError
from featx.heads.memory import available_memory, size_text

__all__ = ["KERNEL_DTYPES", "RBFSVMClassifier"]

KERNEL_DTYPES = ("float32", "float64")
_BLOCK = 1024  # rows of the training kernel per matrix product


class RBFSVMClassifier(ClassifierMixin, BaseEstimator):
    """libsvm's RBF-kernel SVM (``SVC``), with the kernel matrix computed by matrix products.

    ``SVC(kernel="rbf")`` evaluates each kernel value with its own loop over the features, which dominates
    on 4,096-dimensional deep features; here the training Gram matrix comes from matrix products
    (``|x|^2 + |y|^2 - 2 x.y``) over its lower triangle in row blocks, mirrored, and libsvm solves the same
    problem on it (``kernel="precomputed"``), so the solution equals ``SVC(kernel="rbf", gamma=...)``'s up to
    rounding. ``kernel_dtype`` is the precision of those training products: ``"float32"`` (the default:
    twice the speed of float64 BLAS, kernel values within ~1e-6 of float64's) or ``"float64"``.
    Scores are always computed in float64, so a row's score does not depend on the rows predicted with it.

    Memory: libsvm takes the n x n training kernel in float64 (8 n^2 bytes) and keeps a cache of kernel rows
    (``cache_size`` MiB; on a precomputed kernel the cache only copies rows, so a small one costs no time);
    ``fit`` refuses, before allocating, a kernel that with that cache and its block workspace would not fit
    in the memory available (:func:`featx.heads.memory.available_memory`). Only the support vectors are
    kept. ``decision_function`` is the score (no ``predict_proba``).
    """

    def __init__(self, C=1.0, gamma="scale", class_weight=None, tol=1e-3, cache_size=100, max_iter=-1,
                 kernel_dtype="float32", random_state=0):
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.tol = tol
        self.cache_size = cache_size
        self.max_iter = max_iter
        self.kernel_dtype = kernel_dtype
        self.random_state = random_state

    def _check_params(self) -> None:
        """Refuse a bad C or gamma before looking at the data (libsvm would only see C after the kernel)."""
        if not _positive(self.C):
            raise ValueError(f"C must be a positive number; got {self.C!r}")
        if self.gamma not in ("scale", "auto") and not _positive(self.gamma):
            raise ValueError(f"gamma must be 'scale', 'auto' or a positive number; got {self.gamma!r}")
        if self.kernel_dtype not in KERNEL_DTYPES:
            raise ValueError(f"kernel_dtype must be one of {', '.join(KERNEL_DTYPES)}; got {self.kernel_dtype!r}")

    def _gamma(self, X) -> float:
        if self.gamma == "scale":
            var = float(np.var(X, dtype=np.float64))
            return 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        return float(self.gamma)

    def fit_bytes(self, n_rows: int, n_features: int) -> int:
        """Bytes :meth:`fit` allocates for ``n_rows`` training rows: the float64 kernel, libsvm's row cache,
        the rows in ``kernel_dtype`` and one block of products."""
        item = np.dtype(self.kernel_dtype if self.kernel_dtype in KERNEL_DTYPES else "float64").itemsize
        block = min(_BLOCK, n_rows)
        return 8 * n_rows * n_rows + int(self.cache_size) * 2**20 + item * n_rows * (n_features + 2 * block)

    def _require_memory(self, n_rows: int, n_features: int) -> None:
        """:class:`FeatxError` (one line) when the training kernel would not fit in the memory available."""
        need = self.fit_bytes(n_rows, n_features)
        free = available_memory()
        if free is not None and need > free:
            raise FeatxError(
                f"head svm: the RBF kernel of {n_rows:,} training rows is {n_rows:,} x {n_rows:,} float64 "
                f"({size_text(8 * n_rows * n_rows)}; {size_text(need)} with libsvm's cache and the products) but "
                f"only {size_text(free)} of memory is available; use head linear-svm (no n x n kernel), train on "
                "fewer rows, or run where more memory is free")

    def _gram(self, X) -> np.ndarray:
        """exp(-gamma |a - b|^2) for every pair of training rows: float64 for libsvm, products in
        ``kernel_dtype`` over the lower triangle in row blocks, each block also written to its mirror.
        The diagonal is exactly 1."""
        A = np.asarray(X, dtype=self.kernel_dtype, order="C")
        n = len(A)
        sq = np.empty(n, dtype=np.float64)
        for start in range(0, n, _BLOCK):
            a = np.asarray(A[start:start + _BLOCK], dtype=np.float64)
            sq[start:start + len(a)] = np.einsum("ij,ij->i", a, a)
        sq_k = sq.astype(A.dtype)
        out = np.empty((n, n), dtype=np.float64)
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            d = A[start:stop] @ A[:stop].T
            d *= -2.0
            d += sq_k[start:stop, None]
            d += sq_k[None, :stop]
            np.maximum(d, 0.0, out=d)
            d *= -self.gamma_
            np.exp(d, out=d)
            out[start:stop, :stop] = d
            out[:start, start:stop] = d[:, :start].T
        np.fill_diagonal(out, 1.0)
        return out

    def _kernel(self, A, B, block: int = 1024) -> np.ndarray:
        """exp(-gamma |a - b|^2) for every row pair, in float64 and in row blocks of ``A`` (the scores).

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
        """Solve the SVM on the RBF Gram matrix of ``X``; returns ``self``. Refuses (:class:`FeatxError`) a
        training kernel larger than the memory available."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self._require_memory(*X.shape)
        self.gamma_ = self._gamma(X)
        self.svc_ = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight, tol=self.tol,
                        cache_size=self.cache_size, max_iter=self.max_iter, random_state=self.random_state)
        self.svc_.fit(self._gram(X), y)
        self.classes_ = self.svc_.classes_
        self.support_vectors_ = np.asarray(X[self.svc_.support_], dtype=np.float64)
        self.n_train_ = X.shape[0]
        self.n_iter_ = self.svc_.n_iter_
        return self

    def _test_kernels(self, X):
        """The float64 kernel of ``X`` against the training rows in blocks of 1,024 rows; the columns of
        training rows that are not support vectors are never read by libsvm and stay zero."""
        for start in range(0, X.shape[0], 1024):
            K = np.zeros((min(1024, X.shape[0] - start), self.n_train_))
            K[:, self.svc_.support_] = self._kernel(X[start:start + 1024], self.support_vectors_)
            yield K

    def predict_and_decision(self, X) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` and :meth:`decision_function` of ``X`` from one computation of its kernel."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        preds, scores = [], []
        for K in self._test_kernels(X):
            preds.append(self.svc_.predict(K))
            scores.append(self.svc_.decision_function(K))
        if not preds:
            return np.zeros(0, dtype=self.classes_.dtype), np.zeros(0)
        return np.concatenate(preds), np.concatenate(scores)

    def decision_function(self, X) -> np.ndarray:
        """Signed distance to the margin (binary: positive means ``classes_[1]``), as ``SVC``'s."""
        return self.predict_and_decision(X)[1]

    def predict(self, X) -> np.ndarray:
        """The class on the positive side of each decision function (one-vs-one vote when multiclass)."""
        return self.predict_and_decision(X)[0]


RBFSVMClassifier.__module__ = "featx.heads"  # saved models (pickle, skops) name it by its public path


def _positive(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and value > 0
