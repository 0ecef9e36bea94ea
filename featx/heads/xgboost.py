"""XGBoost's gradient-boosted trees as a scikit-learn classifier for any class labels, with class weights and
early stopping on a subject-grouped inner split of the training rows."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_array
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["MIN_VALIDATION_ROWS", "XGBoostClassifier", "validation_split"]

MIN_VALIDATION_ROWS = 200  # early stopping on fewer held-out rows stops at random (and saves no time)


class XGBoostClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees (XGBoost ``hist``; CUDA when present) for any class labels.

    XGBoost wants labels 0..K-1 and has no ``class_weight``; this wrapper encodes the labels and turns
    ``class_weight`` into sample weights.

    Early stopping (``early_stopping_rounds`` set, the default): a ``validation_fraction`` of the training
    rows, whole subjects when ``fit`` gets their ``groups`` (:func:`validation_split`), is held out of the
    trees; boosting stops once the log-loss on it has not improved for ``early_stopping_rounds`` rounds
    (at most ``n_estimators``), and the model keeps the trees up to its best round, trained on the other
    rows (as scikit-learn's ``HistGradientBoostingClassifier`` does). Only the rows given to ``fit`` are
    used: under cross-validation those are the training fold's. When the held-out part would hold fewer
    than :data:`MIN_VALIDATION_ROWS` rows, or the rows cannot be split so that both sides hold every class
    (too few subjects), all ``n_estimators`` trees are trained on every row: a small validation part stops
    at random.
    ``early_stopping_rounds=None`` trains all ``n_estimators`` trees on every row.

    ``sketch_rows``: the histogram bin edges (``max_bin`` per feature) come from at most this many of the
    training rows, drawn with the seed (None: all); every training row is then binned on those edges.

    Fitted: ``booster_`` (an ``xgboost.Booster``), ``n_trees_`` (trees kept), ``validation_rows_``
    (indices into the rows given to ``fit`` held out for early stopping; empty without).
    """

    def __init__(self, n_estimators=200, max_depth=4, learning_rate=0.15, subsample=0.8, colsample_bytree=0.3,
                 max_bin=32, early_stopping_rounds=5, validation_fraction=0.1, sketch_rows=2000,
                 class_weight=None, device="auto", n_jobs=None, random_state=0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.sketch_rows = sketch_rows
        self.class_weight = class_weight
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_params(self) -> None:
        for name in ("n_estimators", "max_depth", "max_bin"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        rounds = self.early_stopping_rounds
        if rounds is not None and (not isinstance(rounds, (int, np.integer)) or isinstance(rounds, bool)
                                   or rounds < 1):
            raise ValueError(f"early_stopping_rounds must be a positive integer or None; got {rounds!r}")
        fraction = self.validation_fraction
        if not isinstance(fraction, (int, float, np.number)) or isinstance(fraction, bool) or not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must be a number between 0 and 1; got {fraction!r}")
        rows = self.sketch_rows
        if rows is not None and (not isinstance(rows, (int, np.integer)) or isinstance(rows, bool) or rows < 1):
            raise ValueError(f"sketch_rows must be a positive integer or None; got {rows!r}")

    def fit(self, X, y, sample_weight=None, groups=None):
        """Train the booster; ``class_weight`` multiplies ``sample_weight``. ``groups``: the subject of each row
        (the early-stopping rows are then whole subjects); None: rows are held out one by one."""
        self._check_params()
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
        self.validation_rows_ = np.zeros(0, dtype=np.intp)
        if len(self.classes_) == 1:
            self.booster_ = None
            self.n_trees_ = 0
            return self
        if groups is not None and len(groups) != X.shape[0]:
            raise ValueError(f"groups has {len(groups)} entries for {X.shape[0]} rows")
        seed = 0 if self.random_state is None else int(self.random_state)
        fit_rows = np.arange(X.shape[0])
        if self.early_stopping_rounds is not None:
            split = validation_split(y_idx, groups, self.validation_fraction, seed)
            if split is not None:
                fit_rows, self.validation_rows_ = split
        self._train(X, y_idx, weight, fit_rows, seed)
        return self

    def _train(self, X, y_idx, weight, fit_rows, seed) -> None:
        import xgboost as xgb  # deferred: a heavy import (~1 s) that only xgboost heads need

        from featx.device import resolve_device  # deferred: it imports torch

        device = resolve_device(self.device).type
        n_classes = len(self.classes_)
        params = {"max_depth": int(self.max_depth), "eta": float(self.learning_rate),
                  "subsample": float(self.subsample), "colsample_bytree": float(self.colsample_bytree),
                  "max_bin": int(self.max_bin), "tree_method": "hist", "device": device, "seed": seed,
                  "objective": "binary:logistic" if n_classes == 2 else "multi:softprob",
                  **({"num_class": n_classes} if n_classes > 2 else {}),
                  **({"nthread": int(self.n_jobs)} if self.n_jobs is not None else {})}
        nthread = params.get("nthread", -1)
        ref = None
        if self.sketch_rows is not None and self.sketch_rows < len(fit_rows):
            sample = np.sort(np.random.default_rng(seed).choice(fit_rows, int(self.sketch_rows), replace=False))
            ref = xgb.QuantileDMatrix(X[sample], max_bin=params["max_bin"], nthread=nthread)
        rows = fit_rows if len(fit_rows) < X.shape[0] else slice(None)
        train = xgb.QuantileDMatrix(X[rows], y_idx[rows], weight=weight[rows], ref=ref,
                                    max_bin=params["max_bin"], nthread=nthread)
        evals, stop = [], None
        if len(self.validation_rows_):
            val = self.validation_rows_
            evals = [(xgb.QuantileDMatrix(X[val], y_idx[val], weight=weight[val], ref=train,
                                          max_bin=params["max_bin"], nthread=nthread), "validation")]
            stop = int(self.early_stopping_rounds)
        booster = xgb.train(params, train, num_boost_round=int(self.n_estimators), evals=evals,
                            early_stopping_rounds=stop, verbose_eval=False)
        self.n_trees_ = booster.best_iteration + 1 if stop is not None else booster.num_boosted_rounds()
        booster = booster[: self.n_trees_]  # the trees up to the best round only
        booster.set_param({"device": "cpu"})  # predict where the caller's numpy data lives
        self.booster_ = booster

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        if self.booster_ is None:
            return np.ones((X.shape[0], 1))
        if not hasattr(self.booster_, "inplace_predict"):  # saved by featx <= 0.x: an XGBClassifier
            return self.booster_.predict_proba(X)
        p = np.asarray(self.booster_.inplace_predict(X), dtype=np.float64)
        if p.ndim == 1:
            p = np.column_stack([1.0 - p, p])
        return p

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


XGBoostClassifier.__module__ = "featx.heads"  # saved models (pickle, skops) name it by its public path


def validation_split(y, groups, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(fit rows, validation rows)``: about ``fraction`` of the rows held out, stratified by class, whole
    groups (subjects) when ``groups`` is given; None when that part would hold fewer than
    :data:`MIN_VALIDATION_ROWS` rows or no such split leaves every class on both sides."""
    y = np.asarray(y)
    if fraction * len(y) < MIN_VALIDATION_ROWS:
        return None
    k = max(2, int(round(1 / fraction)))
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if groups is not None:
        groups = np.asarray(groups)
        if len(np.unique(groups)) < k:
            return None
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    else:
        if counts.min() < k:
            return None
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    fit_rows, val_rows = next(splitter.split(np.zeros((len(y), 1)), y, groups))
    n_classes = len(counts)
    if len(np.unique(y[fit_rows])) < n_classes or len(np.unique(y[val_rows])) < n_classes:
        return None
    return fit_rows, val_rows


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
