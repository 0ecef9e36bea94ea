"""Classifier heads on cached deep features: one registry, each head a scikit-learn ``Pipeline``.

``make_head("svm", preprocess="standard")`` returns ``Pipeline([("pre", StandardScaler()), ("clf", SVC())])``.
Every head accepts the class labels as integers or strings, so it drops into ``cross_validate`` or
``GridSearchCV`` like any scikit-learn classifier. The torch ``SoftmaxClassifier`` is the study's
fully connected softmax head (optionally one hidden layer with dropout); it trains on CUDA when present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, LabelEncoder, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from featx.errors import FeatxError

__all__ = ["HEADS", "HeadSpec", "RBFSVMClassifier", "SoftmaxClassifier", "XGBoostClassifier", "list_heads", "make_head",
           "parse_preprocess", "positive_scores", "has_probability"]


# --------------------------------------------------------------------------------------------------
# the torch softmax head
# --------------------------------------------------------------------------------------------------
class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """A softmax classifier in torch: linear, or one hidden layer with dropout (the study's FC head).

    Mini-batch training with AdamW (or SGD with momentum) on the cross-entropy loss, weighted per class
    when ``class_weight`` is given. Training runs on ``device`` ("auto" = CUDA when present); the fitted
    network is kept on the CPU in float64, so predictions do not depend on the batch or the device and
    the estimator pickles anywhere. Given ``random_state`` the CPU result is deterministic.

    Parameters
    ----------
    hidden : int, units of the hidden layer; 0 = a linear softmax head.
    dropout : float, dropout before each fully connected layer (only used when ``hidden > 0``).
    lr, epochs, batch_size, weight_decay : optimisation settings.
    min_steps : int, at least this many optimiser steps: small data sets get more epochs.
    optimizer : "adamw" or "sgd" (momentum 0.9).
    class_weight : None, "balanced" or a dict {label: weight}.
    device : "auto", "cpu" or "cuda".
    random_state : int seed for the weights, the dropout masks and the batch order.
    """

    def __init__(self, hidden=0, dropout=0.5, lr=0.01, epochs=30, batch_size=256, weight_decay=1e-4,
                 min_steps=200, optimizer="adamw", class_weight=None, device="auto", random_state=0):
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.min_steps = min_steps
        self.optimizer = optimizer
        self.class_weight = class_weight
        self.device = device
        self.random_state = random_state

    def _check_params(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be one of 'adamw', 'sgd'; got {self.optimizer!r}")
        if not isinstance(self.min_steps, (int, np.integer)) or self.min_steps < 0:
            raise ValueError(f"min_steps must be an integer >= 0; got {self.min_steps!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not isinstance(self.hidden, (int, np.integer)) or self.hidden < 0:
            raise ValueError(f"hidden must be an integer >= 0; got {self.hidden!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        if float(self.lr) <= 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}")

    def _build(self, n_in: int, n_out: int):
        import torch.nn as nn

        if self.hidden:
            net = nn.Sequential(nn.Dropout(float(self.dropout)), nn.Linear(n_in, int(self.hidden)), nn.ReLU(),
                                nn.Dropout(float(self.dropout)), nn.Linear(int(self.hidden), n_out))
        else:
            net = nn.Sequential(nn.Linear(n_in, n_out))
        return net

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and labels ``y``; returns ``self``."""
        import torch

        from featx.device import resolve_device

        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        y_idx = encoder.transform(y)
        n_classes = len(self.classes_)
        if n_classes == 1:  # nothing to learn: always predict the one class
            self.module_ = None
            self.n_iter_ = 0
            return self
        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y) \
            if self.class_weight is not None else np.ones(n_classes)

        device = resolve_device(self.device)
        seed = 0 if self.random_state is None else int(self.random_state)
        rng = np.random.RandomState(seed)
        fork = [device.index or 0] if device.type == "cuda" else []
        self._train(torch, net_args=(X, y_idx, n_classes, weights), device=device, seed=seed, rng=rng, fork=fork)
        return self

    def _train(self, torch, *, net_args, device, seed, rng, fork) -> None:
        X, y_idx, n_classes, weights = net_args
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(seed)
            net = self._build(X.shape[1], n_classes).to(device)
            Xt = torch.tensor(X, dtype=torch.float32, device=device)
            yt = torch.tensor(y_idx, dtype=torch.long, device=device)
            loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))
            if self.optimizer == "sgd":
                opt = torch.optim.SGD(net.parameters(), lr=float(self.lr), momentum=0.9,
                                      weight_decay=float(self.weight_decay))
            else:
                opt = torch.optim.AdamW(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            n = X.shape[0]
            bs = int(min(self.batch_size, n))
            steps_per_epoch = -(-n // bs)
            epochs = max(int(self.epochs), -(-int(self.min_steps) // steps_per_epoch))
            net.train()
            for _ in range(epochs):
                order = torch.from_numpy(rng.permutation(n)).to(device)
                for start in range(0, n, bs):
                    idx = order[start:start + bs]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(net(Xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
            self.loss_ = float(loss.detach().cpu())
        self.n_iter_ = epochs
        self.module_ = net.to("cpu", torch.float64).eval()

    def _logits(self, X) -> np.ndarray:
        import torch

        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if self.module_ is None:
            return np.zeros((X.shape[0], 1))
        with torch.no_grad():
            return self.module_(torch.tensor(X, dtype=torch.float64)).numpy()

    def __getstate__(self):
        """The fitted network as numpy arrays, so pickle and skops store no torch objects."""
        state = dict(super().__getstate__())
        module = state.get("module_")
        if module is not None:
            state["module_"] = None
            state["module_arrays_"] = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
        return state

    def __setstate__(self, state):
        import torch

        state = dict(state)
        arrays = state.pop("module_arrays_", None)
        super().__setstate__(state)
        if arrays is not None:
            net = self._build(int(self.n_features_in_), len(self.classes_)).to("cpu", torch.float64)
            net.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()})
            self.module_ = net.eval()

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]


# --------------------------------------------------------------------------------------------------
# XGBoost with label encoding and class weights
# --------------------------------------------------------------------------------------------------
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
        from xgboost import XGBClassifier

        from featx.device import resolve_device

        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        y_idx = encoder.transform(y)
        weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if not np.any(weight > 0):
            raise ValueError("sample_weight: at least one weight must be non-zero (all sample weights are zero)")
        if self.class_weight is not None:
            weight = weight * compute_sample_weight(self.class_weight, y)
        if len(self.classes_) == 1:
            self.booster_ = None
            return self
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


# --------------------------------------------------------------------------------------------------
# RBF SVM on a BLAS-computed kernel
# --------------------------------------------------------------------------------------------------
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

    def _gamma(self, X) -> float:
        if self.gamma == "scale":
            var = float(np.var(X, dtype=np.float64))
            return 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        if isinstance(self.gamma, (int, float, np.number)) and not isinstance(self.gamma, bool) and self.gamma > 0:
            return float(self.gamma)
        raise ValueError(f"gamma must be 'scale', 'auto' or a positive number; got {self.gamma!r}")

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


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSpec:
    """One head of the registry: how to build it and what it offers."""
    name: str
    description: str
    factory: Callable[..., BaseEstimator]   # factory(class_weight=..., seed=..., device=..., **params)
    class_weight: bool = True                # supports class weighting
    probability: bool = True                 # has predict_proba (else decision_function is the score)
    defaults: dict = field(default_factory=dict)


def _softmax(class_weight, seed, device, **params):
    return SoftmaxClassifier(class_weight=class_weight, device=device, random_state=seed, **params)


def _logistic(class_weight, seed, device, **params):
    params = {"C": 1.0, "max_iter": 1000, **params}
    return LogisticRegression(class_weight=class_weight, random_state=seed, **params)


def _linear_svm(class_weight, seed, device, **params):
    params = {"C": 0.01, "max_iter": 5000, **params}
    return LinearSVC(class_weight=class_weight, random_state=seed, **params)


def _svm(class_weight, seed, device, **params):
    params = {"C": 1.0, "gamma": "scale", **params}
    return RBFSVMClassifier(class_weight=class_weight, random_state=seed, **params)


def _xgboost(class_weight, seed, device, **params):
    return XGBoostClassifier(class_weight=class_weight, device=device, random_state=seed, **params)


def _random_forest(class_weight, seed, device, **params):
    params = {"n_estimators": 300, "n_jobs": 1, **params}
    return RandomForestClassifier(class_weight=class_weight, random_state=seed, **params)


def _knn(class_weight, seed, device, **params):
    params = {"n_neighbors": 5, **params}
    return KNeighborsClassifier(**params)


HEADS: dict[str, HeadSpec] = {spec.name: spec for spec in (
    HeadSpec("softmax", "torch softmax head (linear, or --param hidden=N with dropout); CUDA when present",
             _softmax),
    HeadSpec("logistic", "multinomial logistic regression (lbfgs, C=1)", _logistic),
    HeadSpec("linear-svm", "linear SVM (LinearSVC, C=0.01); decision function as the score", _linear_svm,
             probability=False),
    HeadSpec("svm", "RBF-kernel SVM (libsvm on a BLAS-computed kernel, C=1, gamma=scale); decision function "
             "as the score", _svm,
             probability=False),
    HeadSpec("xgboost", "gradient-boosted trees (XGBoost hist, 200 trees); CUDA when present", _xgboost),
    HeadSpec("random-forest", "random forest (300 trees)", _random_forest),
    HeadSpec("knn", "k nearest neighbours (k=5; no class weighting)", _knn, class_weight=False),
)}


def list_heads() -> list[str]:
    """Names of the registered heads, in registry order."""
    return list(HEADS)


def get_head(name: str) -> HeadSpec:
    """The registry entry for ``name``; :class:`FeatxError` listing the known heads otherwise."""
    key = (name or "").strip().lower().replace("_", "-")
    if key not in HEADS:
        raise FeatxError(f"unknown head {name!r}; choose from: {', '.join(HEADS)}")
    return HEADS[key]


def parse_preprocess(spec: str | None) -> list[tuple[str, BaseEstimator]]:
    """Turn ``standard`` / ``none`` / ``l2`` / ``pca:N`` (joined with ``+`` in order) into pipeline steps.

    ``standard+pca:256`` standardises then projects on 256 principal components; ``l2`` scales each row
    to unit length.
    """
    steps: list[tuple[str, BaseEstimator]] = []
    for token in (spec or "none").lower().replace(" ", "").split("+"):
        if token in ("", "none"):
            continue
        if token == "standard":
            steps.append(("standard", StandardScaler()))
        elif token == "l2":
            steps.append(("l2", Normalizer(norm="l2")))
        elif token.startswith("pca:"):
            try:
                n = int(token[4:])
                if n < 1:
                    raise ValueError
            except ValueError:
                raise FeatxError(f"--preprocess {spec!r}: 'pca:N' needs a positive whole number of components, "
                                 "e.g. pca:128") from None
            steps.append(("pca", PCA(n_components=n, random_state=0)))
        else:
            raise FeatxError(f"--preprocess {spec!r}: unknown step {token!r}; use standard, none, l2 or pca:N, "
                             "joined with '+' (e.g. standard+pca:128)")
    if len({name for name, _ in steps}) != len(steps):
        raise FeatxError(f"--preprocess {spec!r}: each step may appear once")
    return steps


def make_head(name: str, *, preprocess: str | None = "standard", class_weight=None, seed: int = 0,
              device: str = "auto", **params) -> Pipeline:
    """Build an unfitted head: ``Pipeline([*preprocessing, ("clf", estimator)])``.

    ``class_weight`` is None, "balanced" or a dict; heads without class weighting (knn) ignore it.
    ``params`` go to the estimator, e.g. ``C=10``. The same call builds the head that is evaluated and
    the one that is saved; heads without ``predict_proba`` (svm, linear-svm) score by their decision function.
    """
    spec = get_head(name)
    if class_weight not in (None, "balanced") and not isinstance(class_weight, dict):
        raise FeatxError(f"--class-weight {class_weight!r}: use 'balanced' or leave it out")
    try:
        clf = spec.factory(class_weight if spec.class_weight else None, seed, device, **params)
        if hasattr(clf, "_parameter_constraints"):  # scikit-learn's own check of values (C="abc", ...)
            clf._validate_params()
    except (TypeError, ValueError) as exc:
        raise FeatxError(f"head {spec.name}: bad parameter ({exc}); see its scikit-learn/featx documentation") \
            from None
    steps = parse_preprocess(preprocess) or [("identity", FunctionTransformer())]
    return Pipeline([*steps, ("clf", clf)])


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



def parse_params(items: list[str] | None) -> dict:
    """``["C=10", "svm.gamma=0.01", "hidden=256"]`` -> ``{"C": 10, "svm": {"gamma": 0.01}, "hidden": 256}``.

    ``head.key=value`` applies to one head, ``key=value`` to every head; values are read as JSON when they
    parse (numbers, true/false, null), else kept as text.
    """
    import json

    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FeatxError(f"--param {item!r}: write it as key=value (e.g. C=10) or head.key=value (svm.C=10)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, dot, name = key.rpartition(".")
        if dot:
            out.setdefault(get_head(head).name, {})[name] = value
        else:
            out[key] = value
    return out
