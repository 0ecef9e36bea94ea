"""PNG plots: a row's confusion matrix and ROC curve, a chart comparing rows, training curves.

Every figure has a fixed width, wraps its title to that width (constrained layout keeps it inside the
figure) and names what its numbers are: the comparison chart says whether its error bars are 95%
intervals or ± sd over folds, the ROC plot names the positive class, the curves mark ``best.pt``'s epoch.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featx.files import atomic_write
from featx.report.notes import short_protocol
from featx.results import ResultRow
from featx.scoring import METRIC_TABLE

# Human names of the metrics (precision, recall and F1 are the positive class's: see metric_label).
CHART_WIDTH_IN = 9.0  # the comparison chart's width; its height grows with the rows
DPI = 120
HATCH = "//"


def _plt():
    # deferred: matplotlib takes about half a second to import; only commands that draw pay for it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    return plt


def metric_label(metric: str, positive: str | None = None) -> str:
    """``f1_weighted`` -> ``Weighted F1``; ``f1`` with ``positive="all"`` -> ``F1 (ALL)``."""
    return METRIC_TABLE[metric].label_for(positive) if metric in METRIC_TABLE else metric


def wrap_title(title: str, width_in: float, fontsize: float) -> str:
    """``title`` with each line wrapped to fit ``width_in`` inches at ``fontsize`` points (DejaVu Sans
    averages under 0.62 em a character)."""
    chars = max(12, int(width_in * 72 / (fontsize * 0.62)))
    return "\n".join(textwrap.fill(line, chars) or line for line in title.splitlines())


def _figure(width: float, height: float):
    return _plt().figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path) -> Path:
    """Write the PNG (creating its folder; atomically: a full disk never leaves a cut PNG) and free the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    finally:
        _plt().close(fig)
    return path


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
    return _save(fig, path)


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
    return _save(fig, path)


def _interval(row: ResultRow, metric: str) -> tuple[float, float, str] | None:
    """(low, high, kind) in %, capped to 0-100: the 95% CI when the row has one, else ± sd."""
    s = row.score(metric)
    if s.mean is None:
        return None
    if s.ci_low is not None and s.ci_high is not None:
        low, high, kind = s.ci_low, s.ci_high, "ci"
    elif s.std is not None:
        low, high, kind = s.mean - s.std, s.mean + s.std, "sd"
    else:
        low = high = s.mean
        kind = "none"
    return max(0.0, 100 * min(low, s.mean)), min(100.0, 100 * max(high, s.mean)), kind


def _axis_limits(bounds: list[tuple[float, float]]) -> tuple[float, float]:
    """A zoomed axis: from a little below the lowest lower bound (a multiple of 5) to 100 at most."""
    if not bounds:
        return 0.0, 100.0
    lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
    pad = max(1.0, 0.08 * (hi - lo))
    left = max(0.0, 5 * math.floor((lo - pad) / 5))
    right = min(100.0, 5 * math.ceil((hi + pad) / 5))
    return left, max(right, left + 5)


def _row_label(row: ResultRow) -> str:
    return textwrap.fill(row.name, 38) + "\n" + textwrap.fill(short_protocol(row), 38)


def plot_bars(rows: Sequence[ResultRow], path, metrics: Sequence[str] = ("accuracy", "f1", "f1_weighted"), *,
              sort_by: str = "f1_weighted", title: str | None = "featx comparison") -> Path:
    """A horizontal bar chart comparing rows on ``metrics`` (%), one group of bars per row, best ``sort_by``
    on top. Fixed width (:data:`CHART_WIDTH_IN`); the height grows with the rows. The axis is zoomed to
    the scores (ticks say where it starts) and ends at 100. Error bars: a row's 95% CI when it has
    one, else ± sample sd over folds (grey); the legend says which. Image-level and OPTIMISTIC rows, and rows
    from weights of unknown provenance, are hatched and their labels say so. Undefined scores are drawn as
    ``n/a``, not as 0."""
    plt = _plt()
    rows = sorted(rows, key=lambda r: -r.mean(sort_by) if not math.isnan(r.mean(sort_by)) else math.inf)
    metrics = list(metrics)
    positives = {r.positive for r in rows}
    positive = positives.pop() if len(positives) == 1 else "positive class"
    bar_h = 0.8 / len(metrics)
    row_in = max(0.42, 0.17 * len(metrics) + 0.1)
    legend_in = 0.9 + 0.2 * math.ceil((len(metrics) + 3) / 3)
    fig = _figure(CHART_WIDTH_IN, 0.9 + legend_in + row_in * max(len(rows), 2))
    ax = fig.add_subplot()
    colors = plt.get_cmap("tab10").colors
    kinds, bounds = set(), []
    for i, m in enumerate(metrics):
        y = np.arange(len(rows)) + (i - (len(metrics) - 1) / 2) * bar_h
        for yi, r in zip(y, rows):
            iv = _interval(r, m)
            if iv is None:
                ax.text(0, yi, " n/a", va="center", fontsize=6, transform=ax.get_yaxis_transform())
                continue
            mean = 100 * r.score(m).mean
            bounds.append(iv[:2])
            kinds.add(iv[2])
            ax.barh(yi, mean, bar_h, color=colors[i % 10], alpha=0.85, edgecolor="black" if r.marked else "white",
                    hatch=HATCH if r.marked else None, linewidth=0.5)
            if iv[2] != "none":
                ax.errorbar(mean, yi, xerr=[[mean - iv[0]], [iv[1] - mean]], fmt="none", capsize=2, lw=0.9,
                            ecolor="black" if iv[2] == "ci" else "dimgrey")
            ax.text(1.01, yi, f"{mean:.1f}", va="center", fontsize=6, transform=ax.get_yaxis_transform())
    left, right = _axis_limits(bounds)
    ax.set_xlim(left, right)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # best on top
    ax.set_yticks(range(len(rows)), [_row_label(r) for r in rows], fontsize=7)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r.marked:
            tick.set_color("darkred")
    ax.grid(axis="x", color="0.85", lw=0.6)
    ax.set_axisbelow(True)
    what = {"ci": "95% CI (subject jackknife)", "sd": "± sample sd over folds"}
    bars_are = " / ".join(what[k] for k in ("ci", "sd") if k in kinds) or "no spread"
    ax.set_xlabel(f"score (%), axis from {left:g}; error bars: {bars_are}", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    _legend(fig, metrics, colors, positive, kinds, [r for r in rows if r.marked])
    head = f"{title}: {len(rows)} rows, sorted by {metric_label(sort_by, positive)}" if title else None
    if head:
        fig.suptitle(wrap_title(head, CHART_WIDTH_IN, 10), fontsize=10)
    return _save(fig, path)


def _legend(fig, metrics, colors, positive, kinds, hatched: Sequence[ResultRow]) -> None:
    from matplotlib.lines import Line2D  # deferred: matplotlib (see _plt)
    from matplotlib.patches import Patch  # deferred: matplotlib (see _plt)

    handles = [Patch(color=colors[i % 10], alpha=0.85, label=metric_label(m, positive)) for i, m in enumerate(metrics)]
    if "ci" in kinds:
        handles.append(Line2D([], [], color="black", marker="|", label="error bar: 95% CI (subject jackknife)"))
    if "sd" in kinds:
        handles.append(Line2D([], [], color="dimgrey", marker="|", label="error bar: ± sample sd over folds"))
    if hatched:
        why = [text for text, shown in (("IMAGE-LEVEL / OPTIMISTIC", any(r.flag for r in hatched)),
                                        ("weights of unknown provenance", any(not r.flag for r in hatched))) if shown]
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=HATCH,
                             label=f"{' or '.join(why)}: not an estimate for new patients"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), fontsize=7, frameon=False)


def plot_history(history_rows: Sequence[dict], path, *, title: str | None = None, best_epoch: int | None = None,
                 monitor: str | None = None, scored_epoch: int | None = None) -> Path:
    """Training curves: accuracy and loss per epoch, train and validation, side by side; integer epoch
    ticks, ``best_epoch`` (``best.pt``, best by validation ``monitor``) marked by a dotted line and, when
    another epoch was scored (``scored_epoch``), that one by a dashed line.

    ``history_rows``: one dict per epoch (a fine-tuning run's history.csv) with ``epoch`` and any of
    ``train_acc``, ``val_acc``, ``train_loss``, ``val_loss`` (``train_accuracy``/``val_accuracy`` are accepted too).
    """
    from matplotlib.ticker import MaxNLocator  # deferred: matplotlib (see _plt)

    history = list(history_rows)
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    fig = _figure(9, 3.8)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for ax, kind in ((ax_acc, "acc"), (ax_loss, "loss")):
        for split in ("train", "val"):
            keys = [f"{split}_{kind}"] + ([f"{split}_accuracy"] if kind == "acc" else [])
            key = next((k for k in keys if any(h.get(k) is not None for h in history)), None)
            if key is None:
                continue
            pts = [(e, float(h[key])) for e, h in zip(epochs, history) if h.get(key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=split)
        if best_epoch is not None:
            by = f", best val {monitor}" if monitor else ""
            ax.axvline(best_epoch, color="green", ls=":", lw=1.5, label=f"best.pt: epoch {best_epoch}{by}")
        if scored_epoch is not None and scored_epoch != best_epoch:
            ax.axvline(scored_epoch, color="purple", ls="--", lw=1, label=f"scored: epoch {scored_epoch}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if kind == "acc" else "loss")
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(wrap_title(title, 9, 9), fontsize=9)
    return _save(fig, path)
