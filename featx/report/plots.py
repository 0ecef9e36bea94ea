"""PNG plots: a row's confusion matrix and ROC curve, training curves (the comparison figure is
:mod:`featx.report.forest`).

Every figure has a fixed width, wraps its title to that width (constrained layout keeps it inside the
figure) and names what its numbers are: the ROC plot names the positive class, the curves mark ``best.pt``'s
epoch and show accuracy in % as the tables do, with their legend under the axes, off the data.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featx.figures import DPI, pyplot, save_png, wrap_title
from featx.scoring import METRIC_TABLE


def metric_label(metric: str, positive: str | None = None) -> str:
    """``f1_weighted`` -> ``Weighted F1``; ``f1`` with ``positive="all"`` -> ``F1 (ALL)``."""
    return METRIC_TABLE[metric].label_for(positive) if metric in METRIC_TABLE else metric


def _figure(width: float, height: float):
    return pyplot().figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _title(fig, ax, title: str | None, fontsize: float = 8) -> None:
    if title:
        ax.set_title(wrap_title(title, fig.get_figwidth() * 0.95, fontsize), fontsize=fontsize)


def plot_confusion(cm, classes: Sequence[str], path, *, title: str | None = None) -> Path:
    """Confusion matrix (rows true, columns predicted) as a PNG with counts and row percentages."""
    cm = np.asarray(cm)
    fig = _figure(4.4, 4.2)
    ax = fig.add_subplot()
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
    ax.set_ylabel("true (row % of the true class)")
    _title(fig, ax, title)
    return save_png(fig, path)


def plot_roc(fpr, tpr, auc, path, *, title: str | None = None, folds: int = 1, positive: str | None = None) -> Path:
    """ROC curve of the positive class as a PNG (with ``folds`` > 1: the vertical average of the per-fold
    curves, labelled with the mean per-fold AUC). ``positive`` (the row's positive class) is named in the
    title and the axis label."""
    fig = _figure(4.4, 4.4)
    ax = fig.add_subplot()
    label = "ROC" if auc is None or math.isnan(auc) else f"AUC {auc:.3f}"
    if folds > 1:
        label = f"mean of {folds} fold curves" + ("" if label == "ROC" else f", mean {label}")
    ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate" + (f" ({positive} detected)" if positive else ""))
    ax.legend(loc="lower right", fontsize=8)
    pos = f"ROC, positive class: {positive}" if positive else "ROC"
    _title(fig, ax, f"{title}\n{pos}" if title else pos)
    return save_png(fig, path)


def plot_history(history_rows: Sequence[dict], path, *, title: str | None = None, best_epoch: int | None = None,
                 monitor: str | None = None, scored_epoch: int | None = None) -> Path:
    """Training curves: accuracy (in %, as the tables give it) and loss per epoch, train and validation, side
    by side; integer epoch ticks, ``best_epoch`` (``best.pt``, best by validation ``monitor``) marked by a dotted
    line and, when another epoch was scored (``scored_epoch``), that one by a dashed line. One legend for both
    panels, under them: it never covers a curve.

    ``history_rows``: one dict per epoch (a fine-tuning run's history.csv) with ``epoch`` and any of
    ``train_acc``, ``val_acc`` (fractions, 0-1), ``train_loss``, ``val_loss`` (``train_accuracy``/``val_accuracy``
    are accepted too).
    """
    from matplotlib.ticker import MaxNLocator  # deferred: matplotlib (see pyplot)

    history = list(history_rows)
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    fig = _figure(9, 3.8)
    ax_acc, ax_loss = fig.subplots(1, 2)
    legend: dict[str, object] = {}  # label -> handle, once for both panels
    for ax, kind in ((ax_acc, "acc"), (ax_loss, "loss")):
        for split, color in (("train", "C0"), ("val", "C1")):
            keys = [f"{split}_{kind}"] + ([f"{split}_accuracy"] if kind == "acc" else [])
            key = next((k for k in keys if any(h.get(k) is not None for h in history)), None)
            if key is None:
                continue
            scale = 100.0 if kind == "acc" else 1.0
            pts = [(e, scale * float(h[key])) for e, h in zip(epochs, history) if h.get(key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=color, label=split)
        if best_epoch is not None:
            by = f", best val {monitor}" if monitor else ""
            ax.axvline(best_epoch, color="green", ls=":", lw=1.5, label=f"best.pt: epoch {best_epoch}{by}")
        if scored_epoch is not None and scored_epoch != best_epoch:
            ax.axvline(scored_epoch, color="purple", ls="--", lw=1, label=f"scored: epoch {scored_epoch}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if kind == "acc" else "loss")
        for line in ax.lines:
            legend.setdefault(line.get_label(), line)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(4, len(legend)),
                   fontsize=7, frameon=False)
    if title:
        fig.suptitle(wrap_title(title, 9, 9), fontsize=9)
    return save_png(fig, path)
