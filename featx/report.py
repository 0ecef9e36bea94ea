"""Reports of result rows: the terminal table (the study's Table 2 layout), CSV/JSON/Markdown, PNG plots.

A result row is a flat dict (see :mod:`featx.evaluate`): ``model``, ``backbone``, ``tap``, ``head``,
``protocol``, ``protocol_label``, ``image_level``, ``n_folds``, ``n_train``, ``n_test``, each metric as
``<metric>`` (mean over folds), ``<metric>_std`` (sample std over folds, ddof=1), ``<metric>_ci_low``/``_high``
(bootstrap of the mean over folds), ``confusion``, ``settings``, and optionally ``predictions`` (out-of-fold,
written to ``predictions/<row>.csv``, never to results.json).
Image-level rows are marked everywhere: their numbers leak subjects between train and test; so are
OPTIMISTIC rows (``optimistic``: cross-validation over rows a fine-tuned network trained on).
"""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["STATS_NOTE", "TABLE_METRICS", "format_pct", "short_protocol", "plot_bars", "plot_confusion", "plot_history",
           "plot_roc", "results_table", "slug", "write_predictions", "write_results"]

# (key, header) of the columns of the study's Table 2, then the challenge's metric.
TABLE_METRICS = (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                 ("f1_weighted", "Weighted F1"), ("roc_auc", "ROC-AUC"))
TERMINAL_METRICS = (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                    ("f1_weighted", "wF1"))
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "f1_weighted", "f1_macro", "balanced_accuracy", "roc_auc")
IMAGE_LEVEL_NOTE = ("IMAGE-LEVEL rows split cells of one subject across train and test (or cannot tell, when "
                    "subjects are unknown): optimistic, not an estimate for new patients.")
# What ± and the interval are (the README's "Honest evaluation" says the same).
STATS_NOTE = ("± is the sample standard deviation (ddof=1) of the per-fold values; the estimate is their mean over "
              "folds; 95% CI: percentile bootstrap of that same mean over folds, resampling subjects (images when "
              "subjects are unknown) within each test fold. ROC-AUC is computed within each fold and "
              "averaged (scores of different folds are not comparable); the ROC plot is the vertical average of "
              "the per-fold curves. Precision, recall and F1 are those of the positive class.")
OPTIMISTIC_NOTE = ("OPTIMISTIC rows test on images (or subjects) the fine-tuned network trained on: features "
                   "tuned on test subjects, not an estimate for new patients.")


def _legacy(rows) -> list[dict]:
    """Transitional: ResultRow objects as the flat dicts this module reads (``model`` = the row's name)."""
    from featx.results import ResultRow

    out = []
    for r in rows:
        if isinstance(r, ResultRow):
            d = r.to_dict(predictions=True)
            d["model"] = d.pop("name")
            d["head"] = d["head"] or "finetune"
            r = d
        out.append(r)
    return out


def _flag(row: dict) -> str:
    """``OPTIMISTIC``, ``IMAGE-LEVEL`` or ``""``: why a row's number is not an estimate for new patients."""
    if row.get("optimistic"):
        return "OPTIMISTIC"
    return "IMAGE-LEVEL" if row.get("image_level") else ""


def format_pct(mean, std=None) -> str:
    """``0.9744, 0.012`` -> ``"97.44 ± 1.20"`` (percent); missing values -> ``"-"``."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{100 * mean:.2f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.2f}"
    return text


def _protocol_text(row: dict) -> str:
    return row.get("protocol_label") or row.get("protocol", "")


def short_protocol(row: dict) -> str:
    """A compact protocol name for the terminal: ``subject 5-fold``, ``IMAGE-LEVEL 5-fold``, ``prelim``."""
    name, k = row.get("protocol", ""), row.get("n_folds")
    if name in ("subject", "image", "hybrid"):
        text = f"{name} {k}-fold"
    elif name == "fold":
        kind = "C-NMC folds" if "C-NMC" in _protocol_text(row) else "given folds"
        text = f"{kind} ({k})"
    elif name.startswith("tuned-"):
        text = name if name == "tuned-holdout" else f"tuned held-out {name[6:]}"
    else:
        text = f"held-out {name}" if name else _protocol_text(row)
    if row.get("image_level"):
        text = "IMAGE-LEVEL " + text.replace("image ", "")
        if "subjects unknown" in _protocol_text(row):
            text += " (subjects unknown)"
    if row.get("dropped_unknown_subjects"):
        n = row["dropped_unknown_subjects"]
        text += f", {n} row{'s' if n != 1 else ''} w/o subject dropped"
    if row.get("optimistic"):
        text = "OPTIMISTIC " + text
    return text


def results_table(rows: Sequence[dict], title: str | None = "featx compare"):
    """A rich Table: model, protocol, then accuracy, precision, recall, F1 (mean over folds ± sample std over
    folds, %) and the weighted F1 (the challenge's metric); image-level rows in yellow with a ``*``."""
    rows = _legacy(rows)
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    title = f"{title}  [dim](mean over folds ± sample std (ddof=1) over folds, %)[/]" if title else None
    captions = ["± = sample std (ddof=1) over folds; 95% CIs (bootstrap of the mean over folds, subjects resampled "
                "within each test fold) in results.md/.csv"]
    if any(r.get("image_level") for r in rows):
        captions.append("* IMAGE-LEVEL: one subject's cells on both sides of the split, or subjects unknown "
                        "(optimistic)")
    if any(r.get("optimistic") for r in rows):
        captions.append("* OPTIMISTIC: features tuned on test subjects (the fine-tuned network saw them)")
    captions += [f"PARTIAL: {escape(p)}" for p in _partial_notes(rows)]
    captions += [escape(note) for note in _excluded_notes(rows)]
    table = Table(title=title, caption="\n".join(captions), caption_style="dim", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("Model", style="bold", overflow="fold", min_width=12)
    table.add_column("Protocol", min_width=11)
    for _, header in TERMINAL_METRICS:
        table.add_column(header)  # justify="right" makes rich crop narrow tables
    for r in rows:
        image = bool(_flag(r))
        cells = [escape(str(r.get("model", ""))), ("* " if image else "") + escape(short_protocol(r))
                 + (f" PARTIAL ({escape(str(r['partial']))})" if r.get("partial") else "")]
        cells += [format_pct(r.get(k), r.get(f"{k}_std")) for k, _ in TERMINAL_METRICS]
        table.add_row(*cells, style="yellow" if image or r.get("partial") else None)
    return table


def _excluded_notes(rows: Sequence[dict]) -> list[str]:
    """One line per distinct model whose store recorded unreadable images (left out of its rows)."""
    seen = dict.fromkeys((r.get("model", ""), r["excluded_images"]) for r in rows if r.get("excluded_images"))
    return [f"{model}: {n} unreadable image(s) left out (listed by `featx info`)" for model, n in seen]


def _partial_notes(rows: Sequence[dict]) -> list[str]:
    """One line per distinct model computed on an unfinished store (``--allow-partial``)."""
    notes = []
    for r in rows:
        if r.get("partial"):
            note = (f"{r.get('model', '')} used {r['partial']} of an unfinished store; finish it with the same "
                    "`featx extract`")
            if note not in notes:
                notes.append(note)
    return notes


def markdown_table(rows: Sequence[dict]) -> str:
    """The same table as Markdown (image-level rows in bold with a ``*``)."""
    rows = _legacy(rows)
    head = ["Model", "Protocol", *[f"{h} (%)" for _, h in TABLE_METRICS], "95% CI accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        protocol = _protocol_text(r)
        if r.get("optimistic") and "OPTIMISTIC" not in protocol:
            protocol = f"OPTIMISTIC {protocol}"
        if _flag(r):
            protocol = f"**\\* {protocol}**"
        if r.get("partial"):
            protocol += f" **PARTIAL ({r['partial']})**"
        ci = "-"
        if r.get("accuracy_ci_low") is not None and not _isnan(r.get("accuracy_ci_low")):
            ci = f"{100 * r['accuracy_ci_low']:.1f} - {100 * r['accuracy_ci_high']:.1f}"
        metrics = [format_pct(r.get(k), r.get(f"{k}_std")) for k, _ in TABLE_METRICS]
        cells = [str(r.get("model", "")), protocol, *metrics, ci]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def slug(row_or_text) -> str:
    """A file-name-safe name of a row: backbone-tap-head-protocol."""
    if isinstance(row_or_text, dict):
        r = row_or_text
        text = "-".join(str(r.get(k, "")) for k in ("backbone", "tap", "head", "protocol") if r.get(k, "") != "")
    else:
        text = str(row_or_text)
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("_") or "row"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_columns(rows: Sequence[dict]) -> list[str]:
    first = ["model", "backbone", "tap", "head", "protocol", "protocol_label", "image_level", "n_folds",
             "n_train", "n_test", "n_subjects", "positive"]
    metric_cols = [f"{m}{suffix}" for m in METRIC_KEYS for suffix in ("", "_std", "_ci_low", "_ci_high")]
    seen = set(first) | set(metric_cols) | {"roc", "per_subject_accuracy", "settings", "predictions"}
    extra = []
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                extra.append(k)
    settings_keys = []
    for r in rows:
        for k in (r.get("settings") or {}):
            if f"settings.{k}" not in settings_keys:
                settings_keys.append(f"settings.{k}")
    return first + metric_cols + extra + settings_keys


def _csv_value(value) -> str:
    if value is None or _isnan(value):
        return ""
    if isinstance(value, (dict, list, tuple, np.ndarray)):
        return json.dumps(_jsonable(value), sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_results(rows: Sequence[dict], out_dir, *, plots: bool = True, stem: str = "results") -> dict[str, Path]:
    """Write ``results.csv``, ``results.json`` and ``results.md`` (one row per backbone x tap x head x
    protocol, every metric and the settings) and, with ``plots``, a confusion-matrix and a ROC PNG per row
    under ``plots/`` plus ``comparison.png``. Returns ``{kind: path}``."""
    rows = _legacy(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    paths: dict[str, Path] = {}

    cols = _csv_columns(rows)
    paths["csv"] = out / f"{stem}.csv"
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for r in rows:
            settings = r.get("settings") or {}
            writer.writerow([_csv_value(settings.get(c[9:]) if c.startswith("settings.") else r.get(c)) for c in cols])

    paths["json"] = out / f"{stem}.json"
    lean = [{k: v for k, v in r.items() if k != "predictions"} for r in rows]
    paths["json"].write_text(json.dumps(_jsonable(lean), indent=2, sort_keys=False) + "\n", encoding="utf-8")

    paths["md"] = out / f"{stem}.md"
    md = ["# featx results", "", markdown_table(rows)]
    if any(r.get("image_level") for r in rows):
        md += [f"\\* {IMAGE_LEVEL_NOTE}", ""]
    if any(r.get("optimistic") for r in rows):
        md += [f"\\* {OPTIMISTIC_NOTE}", ""]
    md += [f"PARTIAL: {note}.\n" for note in _partial_notes(rows)]
    md += [f"{note}.\n" for note in _excluded_notes(rows)]
    md += [STATS_NOTE, ""]
    paths["md"].write_text("\n".join(md), encoding="utf-8")

    if any(r.get("predictions") for r in rows):
        paths["predictions"] = write_predictions(rows, out / "predictions")

    if plots and rows:
        plot_dir = out / "plots"
        plot_dir.mkdir(exist_ok=True)
        used: dict[str, int] = {}
        for r in rows:
            name = slug(r)
            used[name] = used.get(name, 0) + 1
            if used[name] > 1:  # e.g. frozen and fine-tuned weights of one backbone: never overwrite a plot
                name = f"{name}-{used[name]}"
            title = f"{r.get('model', '')}\n{_protocol_text(r)}"
            if r.get("confusion") is not None:
                plot_confusion(r["confusion"], r.get("classes") or [str(i) for i in range(len(r["confusion"]))],
                               plot_dir / f"confusion-{name}.png", title=title)
            if r.get("roc"):
                plot_roc(r["roc"]["fpr"], r["roc"]["tpr"], r.get("roc_auc"), plot_dir / f"roc-{name}.png", title=title,
                         folds=r.get("n_folds") or 1)
        paths["plot"] = plot_bars(rows, out / "comparison.png")
    return paths


PREDICTION_COLUMNS = ("path", "subject", "fold", "y_true", "y_pred", "score")


def write_predictions(rows: Sequence[dict], out_dir) -> Path:
    """``<out_dir>/<row slug>.csv`` per row that carries out-of-fold ``predictions``: one line per test image
    (path, subject, fold, y_true, y_pred, score of the positive class). Returns the folder."""
    rows = _legacy(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: dict[str, int] = {}
    for r in rows:
        pred = r.get("predictions")
        if not pred:
            continue
        name = slug(r)
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:
            name = f"{name}-{used[name]}"
        with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(PREDICTION_COLUMNS)
            for values in zip(*(pred[c] for c in PREDICTION_COLUMNS)):
                writer.writerow([f"{v:.9g}" if isinstance(v, float) else v for v in values])
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, ax, path, title: str | None) -> Path:
    """Title, tight layout, write the PNG and free the figure."""
    if title:
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
    return _save(fig, ax, path, title)


def plot_roc(fpr, tpr, auc, path, *, title: str | None = None, folds: int = 1) -> Path:
    """ROC curve of the positive class as a PNG (with ``folds`` > 1: the vertical average of the per-fold
    curves, labelled with the mean per-fold AUC)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    label = "ROC" if auc is None or _isnan(auc) else f"AUC {auc:.3f}"
    if folds > 1:
        label = f"mean of {folds} fold curves" + ("" if label == "ROC" else f", mean {label}")
    ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    return _save(fig, ax, path, title)


def plot_bars(rows: Sequence[dict], path, metrics: Sequence[str] = ("accuracy", "f1", "f1_weighted")) -> Path:
    """One bar chart comparing rows on ``metrics`` (mean with the std over folds as error bars).
    Image-level rows are hatched."""
    rows = _legacy(rows)
    plt = _plt()
    rows = list(rows)
    n = len(rows)
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * n + 2), 4.2), dpi=100)
    x = np.arange(n)
    for i, m in enumerate(metrics):
        means = [100 * (r.get(m) if r.get(m) is not None and not _isnan(r.get(m)) else 0.0) for r in rows]
        stds = [100 * (r.get(f"{m}_std") or 0.0) if not _isnan(r.get(f"{m}_std") or 0.0) else 0.0 for r in rows]
        bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=m)
        for bar, r in zip(bars, rows):
            if _flag(r):
                bar.set_hatch("//")
    labels = [f"{r.get('model', '')}\n{_flag(r) + ' ' if _flag(r) else ''}{r.get('protocol', '')}" for r in rows]
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 115)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, loc="upper right", ncol=len(metrics))
    ax.set_title("featx comparison (hatched: image-level split or OPTIMISTIC)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_history(history_rows: Sequence[dict], path, *, title: str | None = None) -> Path:
    """Training curves: accuracy and loss per epoch, train and validation, side by side.

    ``history_rows``: dicts with ``epoch`` and any of ``train_acc``, ``val_acc``, ``train_loss``, ``val_loss``
    (``train_accuracy``/``val_accuracy`` are accepted too).
    """
    plt = _plt()
    rows = list(history_rows)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for ax, kind in ((ax_acc, "acc"), (ax_loss, "loss")):
        for split in ("train", "val"):
            keys = [f"{split}_{kind}"] + ([f"{split}_accuracy"] if kind == "acc" else [])
            key = next((k for k in keys if any(r.get(k) is not None for r in rows)), None)
            if key is None:
                continue
            pts = [(e, r[key]) for e, r in zip(epochs, rows) if r.get(key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if kind == "acc" else "loss")
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def read_results(sources: Sequence) -> list[dict]:
    """Result rows from ``results.json`` files, or folders holding one (compare outputs, finetune runs)."""
    from featx.errors import FeatxError

    rows: list[dict] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            path = path / "results.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FeatxError(f"{path}: no such results file; point to a results.json written by "
                             "`featx compare`, `featx classify` or `featx finetune` (or its folder)") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FeatxError(f"{path}: not a featx results.json (not JSON)") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) and "model" in r for r in data):
            raise FeatxError(f"{path}: not a featx results.json (expected a list of result rows)")
        rows.extend(data)
    return rows
