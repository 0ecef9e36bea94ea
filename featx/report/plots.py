"""PNG plots: a row's confusion matrix and ROC curve, a bar chart comparing rows, training curves."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featx.results import ResultRow


def _plt():
    # deferred: matplotlib takes about half a second to import; only commands that draw pay for it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    return plt


def _save(fig, path, *, ax=None, title: str | None = None) -> Path:
    """Title, tight layout, write the PNG and free the figure."""
    if title and ax is not None:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    _plt().close(fig)
    return path


def plot_confusion(cm, classes: Sequence[str], path, *, title: str | None = None) -> Path:
    """Confusion matrix (rows true, columns predicted) as a PNG with counts and row percentages."""
    plt = _plt()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    ax.imshow(cm, cmap="Blues")
    totals = cm.sum(axis=1, keepdims=True)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            share = cm[i, j] / totals[i, 0] if totals[i, 0] else 0.0
            ax.text(j, i, f"{cm[i, j]}\n{100 * share:.1f}%", ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _save(fig, path, ax=ax, title=title)


def plot_roc(fpr, tpr, auc, path, *, title: str | None = None, folds: int = 1) -> Path:
    """ROC curve of the positive class as a PNG (with ``folds`` > 1: the vertical average of the per-fold
    curves, labelled with the mean per-fold AUC)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    label = "ROC" if auc is None or math.isnan(auc) else f"AUC {auc:.3f}"
    if folds > 1:
        label = f"mean of {folds} fold curves" + ("" if label == "ROC" else f", mean {label}")
    ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    return _save(fig, path, ax=ax, title=title)


def plot_bars(rows: Sequence[ResultRow], path, metrics: Sequence[str] = ("accuracy", "f1", "f1_weighted")) -> Path:
    """One bar chart comparing rows on ``metrics`` (mean with the std over folds as error bars).
    Image-level and OPTIMISTIC rows are hatched."""
    plt = _plt()
    rows = list(rows)
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.2), dpi=100)
    x = np.arange(len(rows))
    for i, m in enumerate(metrics):
        means = [100 * (r.score(m).mean or 0.0) for r in rows]  # undefined (None) drawn as 0
        stds = [100 * (r.score(m).std or 0.0) for r in rows]
        bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=m)
        for bar, r in zip(bars, rows):
            if r.flag:
                bar.set_hatch("//")
    labels = [f"{r.name}\n{r.flag + ' ' if r.flag else ''}{r.protocol}" for r in rows]
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 115)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, loc="upper right", ncol=len(metrics))
    ax.set_title("featx comparison (hatched: image-level split or OPTIMISTIC)", fontsize=9)
    return _save(fig, path)


def plot_history(history_rows: Sequence[dict], path, *, title: str | None = None) -> Path:
    """Training curves: accuracy and loss per epoch, train and validation, side by side.

    ``history_rows``: one dict per epoch (a fine-tuning run's history.csv) with ``epoch`` and any of
    ``train_acc``, ``val_acc``, ``train_loss``, ``val_loss`` (``train_accuracy``/``val_accuracy`` are accepted too).
    """
    plt = _plt()
    history = list(history_rows)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for ax, kind in ((ax_acc, "acc"), (ax_loss, "loss")):
        for split in ("train", "val"):
            keys = [f"{split}_{kind}"] + ([f"{split}_accuracy"] if kind == "acc" else [])
            key = next((k for k in keys if any(h.get(k) is not None for h in history)), None)
            if key is None:
                continue
            pts = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if kind == "acc" else "loss")
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
