"""Per-subject results: each subject's accuracy in a row, and the patient-level majority vote (a subject's
predicted class is the class most of its cells were given; all cells of a subject share one class in C-NMC).
Out-of-fold predictions come with rows built in memory (``row.predictions``) or from a results folder's
``predictions/<row>.csv`` (:func:`with_predictions`)."""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from featx import csvfiles
from featx.data import natural_key
from featx.report.files import PREDICTION_COLUMNS, unique_slugs
from featx.report.notes import format_pct, short_protocol
from featx.results import ResultRow


@dataclass(frozen=True)
class Vote:
    """A row's patient-level majority vote: subjects whose majority class is their true class, of all subjects;
    ``ties``: subjects with no majority (counted as wrong)."""
    correct: int
    subjects: int
    ties: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.subjects if self.subjects else float("nan")


def read_predictions(path: str | Path) -> dict[str, list]:
    """A predictions CSV (:data:`featx.report.files.PREDICTION_COLUMNS`) as columns: ``fold`` as int, ``score``
    as float (None where empty), the rest as text."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        lines = list(csvfiles.DictReader(fh))
    out: dict[str, list] = {c: [] for c in PREDICTION_COLUMNS}
    for line in lines:
        for c in PREDICTION_COLUMNS:
            v = line.get(c)
            if c == "fold":
                v = int(v) if v not in (None, "") else None
            elif c == "score":
                v = float(v) if v not in (None, "") else None
            out[c].append(v)
    return out


def with_predictions(rows: Sequence[ResultRow], results_json: str | Path) -> list[ResultRow]:
    """``rows`` (read from ``results_json``) with the out-of-fold predictions their folder's ``predictions/``
    holds (named as :func:`featx.report.files.write_results` names them); rows without a file stay as they are."""
    folder = Path(results_json).parent / "predictions"
    if not folder.is_dir():
        return list(rows)
    out = []
    for r, name in zip(rows, unique_slugs(rows)):
        path = folder / f"{name}.csv"
        out.append(dataclasses.replace(r, predictions=read_predictions(path)) if path.is_file() and not r.predictions
                   else r)
    return out


def majority_vote(predictions: dict) -> Vote:
    """The patient-level majority vote of out-of-fold ``predictions`` (columns ``subject``, ``y_true``,
    ``y_pred``): each subject's most frequent predicted class against its true class."""
    cells: dict[str, list[tuple[str, str]]] = {}
    for subject, true, pred in zip(predictions["subject"], predictions["y_true"], predictions["y_pred"]):
        cells.setdefault(str(subject), []).append((str(true), str(pred)))
    correct = ties = 0
    for pairs in cells.values():
        true = Counter(t for t, _ in pairs).most_common(1)[0][0]
        top = Counter(p for _, p in pairs).most_common()
        if len(top) > 1 and top[0][1] == top[1][1]:
            ties += 1
        elif top[0][0] == true:
            correct += 1
    return Vote(correct=correct, subjects=len(cells), ties=ties)


def subject_truth(row: ResultRow) -> dict[str, str]:
    """Each subject's true class, from the row's predictions (``{}`` without them)."""
    p = row.predictions
    if not p or "subject" not in p:
        return {}
    return {str(s): str(t) for s, t in zip(p["subject"], p["y_true"])}


def subject_classes(row: ResultRow) -> dict[str, int]:
    """Test subjects per class, from the row's predictions (``{}`` without them)."""
    counts = Counter(subject_truth(row).values())
    return {c: counts[c] for c in (row.classes or sorted(counts)) if counts.get(c)}


def shown_rows(rows: Sequence[ResultRow], sort_by: str, most: int = 8) -> list[ResultRow]:
    """The rows whose per-subject accuracy is tabulated: all when at most ``most``, else the best row of each
    protocol (by ``sort_by``) then the next best overall, up to ``most``."""
    have = [r for r in rows if r.per_subject_accuracy]
    if len(have) <= most:
        return have
    ranked = sorted(have, key=lambda r: -(r.score(sort_by).mean or -1.0))
    best = list({short_protocol(r): r for r in reversed(ranked)}.values())[::-1]
    picked = best[:most] + [r for r in ranked if r not in best]
    return sorted(picked[:most], key=ranked.index)


def per_subject_lines(rows: Sequence[ResultRow]) -> list[tuple[str, str, list[str]]]:
    """``(subject, true class, accuracy % per row)`` for every subject of ``rows`` (``-``: not tested in a row)."""
    subjects = sorted({s for r in rows for s in (r.per_subject_accuracy or {})}, key=lambda s: natural_key(str(s)))
    truth: dict[str, str] = {}
    for r in rows:
        truth.update(subject_truth(r))
    return [(s, truth.get(s, "?"), [format_pct((r.per_subject_accuracy or {}).get(s)) for r in rows])
            for s in subjects]


def plot_per_subject(rows: Sequence[ResultRow], path: str | Path, *, dpi: int = 120) -> Path:
    """A strip plot of per-subject accuracy: one line per row (its name and protocol), one dot per subject
    (coloured by the subject's true class when the row's predictions give it), the row's mean as a bar."""
    # deferred: matplotlib takes about half a second to import; only reports draw
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    rows = list(rows)
    fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.45 * len(rows)), dpi=dpi, layout="constrained")
    classes = list(dict.fromkeys(c for r in rows for c in (r.classes or [])))
    colours = {c: plt.get_cmap("tab10")(i) for i, c in enumerate(classes)}
    labelled = set()
    for y, r in enumerate(rows):
        acc = r.per_subject_accuracy or {}
        truth = subject_truth(r)
        subjects = sorted(acc, key=lambda s: natural_key(str(s)))
        for k, s in enumerate(subjects):
            c = truth.get(s)
            jitter = 0.25 * ((k % 5) - 2) / 2
            ax.plot(100 * acc[s], y + jitter, "o", ms=5, alpha=0.75, color=colours.get(c, "0.4"),
                    label=c if c and c not in labelled else None)
            labelled.add(c)
        if acc:
            mean = 100 * sum(acc.values()) / len(acc)
            ax.plot([mean, mean], [y - 0.35, y + 0.35], color="black", lw=1.5)
    ax.set_yticks(range(len(rows)), [f"{r.name}\n{short_protocol(r)}" for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(-3, 103)
    ax.set_xlabel("accuracy of each subject's cells (%); bar: mean over subjects")
    ax.grid(axis="x", alpha=0.3)
    if labelled - {None}:
        ax.legend(title="true class", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
