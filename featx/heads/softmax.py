"""The study's fully connected softmax head in torch, as a scikit-learn classifier."""
from __future__ import annotations

import threading

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["SoftmaxClassifier"]

# torch's CPU generator is one per process: fits in several threads at once (a Dask worker's threads) would
# draw from each other's seeded stream, so one fit at a time holds it.
_TORCH_RNG = threading.Lock()


def _torch():
    """torch, imported on first use: it takes seconds to import, and evaluation workers that fit no softmax head
    should not pay for it."""
    import torch  # deferred: see above

    return torch


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

    def __init__(self, hidden=0, dropout=0.5, lr=0.01, epochs=10, batch_size=256, weight_decay=1e-4,
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
        nn = _torch().nn
        if self.hidden:
            net = nn.Sequential(nn.Dropout(float(self.dropout)), nn.Linear(n_in, int(self.hidden)), nn.ReLU(),
                                nn.Dropout(float(self.dropout)), nn.Linear(int(self.hidden), n_out))
        else:
            net = nn.Sequential(nn.Linear(n_in, n_out))
        return net

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and labels ``y``; returns ``self``."""
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

        from featx.device import resolve_device  # deferred: it imports torch

        device = resolve_device(self.device)
        seed = 0 if self.random_state is None else int(self.random_state)
        rng = np.random.RandomState(seed)
        fork = [device.index or 0] if device.type == "cuda" else []
        self._train(_torch(), net_args=(X, y_idx, n_classes, weights), device=device, seed=seed, rng=rng, fork=fork)
        return self

    def _train(self, torch, *, net_args, device, seed, rng, fork) -> None:
        X, y_idx, n_classes, weights = net_args
        with _TORCH_RNG, torch.random.fork_rng(devices=fork):
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
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if self.module_ is None:
            return np.zeros((X.shape[0], 1))
        torch = _torch()
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
        state = dict(state)
        arrays = state.pop("module_arrays_", None)
        super().__setstate__(state)
        if arrays is not None:
            torch = _torch()
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


SoftmaxClassifier.__module__ = "featx.heads"  # saved models (pickle, skops) name it by its public path
