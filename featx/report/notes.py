"""What a result row's numbers and marks mean, as text: protocol names, notes under tables, marks.

Rows whose number is not an estimate for new patients are marked everywhere: IMAGE-LEVEL (one subject on
both sides of the split, or subjects unknown), OPTIMISTIC (scored on rows a fine-tuned network trained
on, or on the validation images that chose a network's epoch) and rows from weights of unknown provenance
(:attr:`featx.results.ResultRow.marks`); so are PARTIAL rows (an unfinished store) and stores that left
unreadable images out. The terminal table (:mod:`featx.report.table`), results.md
(:mod:`featx.report.markdown`) and the HTML report take their texts from here; a note that names an argument
or a step is spoken by :func:`featx.errors.speak` (flags and commands while the CLI runs).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

from featx.errors import arg, command, speak
from featx.results import ResultRow, Score
from featx.row_names import TAG
from featx.scoring import METRIC_TABLE
from featx.store.hints import extracting

# (metric, header) of the columns of the study's Table 2, then the challenge's metric.
TABLE_METRICS = tuple((m, METRIC_TABLE[m].label) for m in ("accuracy", "precision", "recall", "f1", "f1_weighted",
                                                            "roc_auc"))
IMAGE_LEVEL_NOTE = ("IMAGE-LEVEL rows split cells of one subject across train and test (or cannot tell, when "
                    "subjects are unknown): optimistic, not an estimate for new patients.")
# What ± and the interval are (the README's "Honest evaluation" says the same).
STATS_NOTE = ("± is the sample standard deviation (ddof=1) of the per-fold values; the estimate is their mean over "
              "the folds where a metric is defined (0/0, e.g. recall of a fold without a positive row, is undefined, "
              "not 0). 95% CI: t-interval of that same mean from a delete-one-subject jackknife stratified by class, "
              "on the logit scale (images are the unit when subjects are unknown); it covers what the classifiers "
              "these folds trained score on new subjects, as scripts/interval_study.py shows by simulation; n/a, "
              "with the reason, where the design cannot support one. ROC-AUC is computed within each fold and "
              "averaged (scores of different folds are not comparable); the ROC plot is the vertical average of "
              "the per-fold curves. Precision, recall and F1 are those of the positive class.")
DIFFERENCE_NOTE = ("Δ: each row's paired difference from its protocol's reference row (the best by {metric} among "
                   f"rows that estimate new patients, or the row given by {arg('vs')}), both scored on the same "
                   "folds and subjects: the difference, its 95% interval and p-value from a paired delete-one-subject "
                   "jackknife t-test. {close}: the interval holds 0, so the row is not distinguishable from the "
                   "reference; these are not corrected for comparing many rows, and the best row's own estimate "
                   "is the highest of several (optimistic when rows are many).")
OPTIMISTIC_NOTE = ("OPTIMISTIC rows test on images (or subjects) the fine-tuned network trained on: features "
                   "tuned on test subjects, not an estimate for new patients.")
EPOCH_OPTIMISTIC_NOTE = ("OPTIMISTIC fine-tuned network rows are scored on the validation images that chose their "
                         "epoch (early stopping on a validation set too small to split into a part that chooses "
                         "and a part that scores): not an estimate for new patients.")
UNKNOWN_WEIGHTS_NOTE = ("Weights of unknown provenance: the weights (a plain state dict, another tool's checkpoint, "
                        "or one fine-tuned from such weights) record no images they were trained on, so they may "
                        "have seen the test images; if they did not, state it with "
                        f"{arg('weights_never_saw_images', True)} when extracting (or fine-tuning).")
STATED_UNSEEN_NOTE = ("Weights stated unseen by the user: featx cannot tell which images these weights were "
                      "trained on; the user stated that they never saw these images "
                      f"({arg('weights_never_saw_images', True)}).")


def mark_notes(rows: Sequence[ResultRow]) -> list[str]:
    """What the OPTIMISTIC and weights-provenance marks of ``rows`` mean (one note per kind present)."""
    notes = []
    if any(r.optimistic and r.kind == "head" for r in rows):
        notes.append(OPTIMISTIC_NOTE)
    if any(r.optimistic and r.kind == "network" for r in rows):
        notes.append(EPOCH_OPTIMISTIC_NOTE)
    if any(r.weights_provenance == "unknown" for r in rows):
        notes.append(UNKNOWN_WEIGHTS_NOTE)
    if any(r.weights_provenance == "stated-unseen" for r in rows):
        notes.append(STATED_UNSEEN_NOTE)
    return [speak(note) for note in notes]


def provenance_suffix(row: ResultRow) -> str:
    """``"; weights of unknown provenance"`` (or stated unseen) to put after a row's protocol; ``""`` otherwise."""
    return f"; {row.provenance_mark}" if row.provenance_mark else ""


def selection_note(rows: Sequence[ResultRow]) -> str | None:
    """The note under a table whose rows were compared with a selected row (``compare --select``)."""
    if not any(r.selection_uncorrected for r in rows):
        return None
    n = max([int(r.settings.get("n_candidates") or 0) for r in rows] or [0]) or sum(
        r.selection_uncorrected for r in rows)
    return (f"\u2020 per-row scores are not corrected for selection among {n} rows; the 'selected' row is corrected "
            "(inner CV per outer fold)")


def selection_choices(rows: Sequence[ResultRow]) -> list[str]:
    """One line per selected row (``compare --select``): the candidate (store, tap and head) it chose in each
    outer fold, e.g. ``selected by inner f1_weighted (subject 5-fold) chose cnn/fc [b] + logistic in folds
    1, 3; cnn/fc [a] + logistic in fold 2``."""
    lines = []
    for r in rows:
        chosen = r.settings.get("selected") if r.head == "selected" else None
        if not isinstance(chosen, list) or not chosen:
            continue
        folds: dict[str, list[str]] = {}
        for k, name in enumerate(chosen, 1):
            folds.setdefault(str(name), []).append(str(k))
        picks = [f"{name} in fold{'s' if len(ks) > 1 else ''} {', '.join(ks)}" for name, ks in folds.items()]
        lines.append(f"{r.name} ({short_protocol(r)}) chose {'; '.join(picks)}")
    return lines


def interval_text(score: Score, missing: str = "-") -> str:
    """A score's 95% interval in percent, ``91.2 - 97.4``; ``missing`` when it has none."""
    if score.ci_low is None or score.ci_high is None:
        return missing
    return f"{100 * score.ci_low:.1f} - {100 * score.ci_high:.1f}"


def difference_bounds(row: ResultRow) -> str | None:
    """The 95% interval of the row's Δ in points, ``[-2.90, +0.44]``; None when it has none."""
    c = row.comparison or {}
    if c.get("ci_low") is None:
        return None
    return f"[{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}]"


def p_value_text(row: ResultRow) -> str:
    """The p-value of the row's Δ (``0.0312``), or ``-``."""
    p = (row.comparison or {}).get("p_value")
    return "-" if p is None else f"{p:.3g}"


def difference_text(row: ResultRow, *, interval: bool = True) -> str:
    """The row's Δ from its reference (points): ``best`` (or ``ref``) for the reference itself,
    ``-1.23 [-2.90, +0.44] ≈``, ``-4.10 [-6.02, -2.20]``, ``-1.23 (n/a)``; ``""`` without a comparison."""
    c = row.comparison
    if not c:
        return ""
    if c.get("is_reference"):
        return "ref" if c.get("chosen_by") == "vs" else "best"
    if c.get("delta") is None:
        return "n/a"
    text = f"{100 * c['delta']:+.2f}"
    bounds = difference_bounds(row)
    if bounds is None:
        return f"{text} (n/a)"
    if interval:
        text += f" {bounds}"
    return f"{text} {c['mark'].split()[0]}" if c.get("mark") else text


def difference_note(rows: Sequence[ResultRow]) -> str | None:
    """What the Δ column and the ``≈ best`` mark mean, or None when no row was compared."""
    compared = [r.comparison for r in rows if r.comparison]
    if not compared:
        return None
    metric = compared[0].get("metric", "f1_weighted")
    marks = sorted({c["mark"] for c in compared if c.get("mark")}) or ["≈ best"]
    return speak(DIFFERENCE_NOTE.format(metric=metric, close=" / ".join(marks)))


def interval_notes(rows: Sequence[ResultRow], *, names: bool = True) -> list[str]:
    """Why intervals are n/a (``featx.evaluation.intervals``): one line per row and reason, or (``names=False``,
    for the terminal) one line per reason with the number of rows."""
    by_reason: dict[str, list[str]] = {}
    for r in rows:
        na = (r.interval or {}).get("na") or {}
        for reason in dict.fromkeys(na.values()):
            metrics = [m for m, why in na.items() if why == reason]
            by_reason.setdefault(reason, []).append(f"{r.name} ({short_protocol(r)}): 95% CI n/a for "
                                                    f"{', '.join(metrics)}: {reason}")
    if names:
        return [line for lines in by_reason.values() for line in dict.fromkeys(lines)]
    return [f"95% CI n/a in {len(lines)} row{'s' if len(lines) != 1 else ''}: {reason}"
            for reason, lines in by_reason.items()]


def format_pct(mean, std=None) -> str:
    """``0.9744, 0.012`` -> ``"97.44 ± 1.20"`` (percent); missing values -> ``"-"``."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{100 * mean:.2f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.2f}"
    return text


def protocol_text(row: ResultRow) -> str:
    """The row's protocol as its label says it (``subject-level 5-fold``), else its short name; a nested row
    (parameters searched inside each outer fold) adds ``, nested``."""
    text = row.protocol_label or row.protocol
    return f"{text}, nested" if row.nested else text


def flagged_protocol(row: ResultRow) -> tuple[str, str]:
    """The row's :attr:`~featx.results.ResultRow.flag` (decided by its fields ``optimistic`` and ``image_level``,
    never by its label's words) and the :func:`protocol_text` to write after it: a label that starts with the
    flag (featx's protocols write it first) goes on after it (``" 5-fold (...)"``), any other after a space;
    ``("", text)`` for a row without a flag."""
    text = protocol_text(row)
    if not row.flag:
        return "", text
    return row.flag, text[len(row.flag):] if text.startswith(row.flag) else f" {text}"


def short_protocol(row: ResultRow) -> str:
    """A compact protocol name for the terminal: ``subject 5-fold``, ``IMAGE-LEVEL 5-fold``, ``prelim``: the
    protocol's own compact name (``row.protocol_short``, set from its protocol object), then the row's marks."""
    text = row.protocol_short or _short_of_unmarked(row)
    if n := row.dropped_unknown_subjects:
        text += f", {n} row{'s' if n != 1 else ''} w/o subject dropped"
    if row.nested:
        text += ", nested"
    if row.optimistic:
        text = "OPTIMISTIC " + text
    return text + provenance_suffix(row)


def _short_of_unmarked(row: ResultRow) -> str:
    """The compact name of a row without ``protocol_short``: a row of a results.json written before protocols
    were objects (the facts then only in its label). Every row featx builds now carries its own."""
    name, k = row.protocol, row.n_folds
    if name in ("subject", "image", "hybrid"):
        text = f"{name} {k}-fold"
    elif name == "fold":
        kind = "C-NMC folds" if "C-NMC" in protocol_text(row) else "given folds"
        text = f"{kind} ({k})"
    elif name.startswith("tuned-"):
        text = name if name == "tuned-holdout" else f"tuned held-out {name[6:]}"
    else:
        text = f"held-out {name}" if name else protocol_text(row)
    if row.image_level:
        text = "IMAGE-LEVEL " + text.replace("image ", "")
        if "subjects unknown" in protocol_text(row):
            text += " (subjects unknown)"
    return text


def protocol_title(rows: Sequence[ResultRow]) -> str:
    """What the numbers of a table are, for its title: ``mean ± sd over 5 subject-grouped folds``, ``one
    held-out split (prelim)``, ``fine-tuned network, one validation split``; tables mixing cross-validated and
    held-out rows say ``mean ± sd over folds; held-out rows: one split`` (each row's protocol is in its row)."""
    phrases = list(dict.fromkeys(_row_phrase(r) for r in rows))
    if len(phrases) <= 1:
        return phrases[0] if phrases else "no rows"
    if all(r.n_folds > 1 for r in rows):
        ks = {r.n_folds for r in rows}
        return f"mean ± sd over {ks.pop()} folds" if len(ks) == 1 else "mean ± sd over folds"
    if all(r.n_folds <= 1 for r in rows):
        return "one held-out split per row"
    return "mean ± sd over folds; held-out rows: one split"


def _row_phrase(row: ResultRow) -> str:
    if row.n_folds > 1:
        kind = _FOLD_KINDS.get(row.protocol, "")
        kind = "image-level" if row.image_level and kind else kind
        return f"mean ± sd over {row.n_folds} {kind + ' ' if kind else ''}folds"
    if row.head is None and row.protocol != "hybrid":
        return "fine-tuned network, one validation split"
    return f"one held-out split ({row.protocol})"


_FOLD_KINDS = {"subject": "subject-grouped", "hybrid": "subject-grouped", "image": "image-level", "fold": "given"}


def epoch_notes(rows: Sequence[ResultRow]) -> list[str]:
    """Which epoch each fine-tuned network's row scores and which epoch its best.pt holds (the checkpoint whose
    features a tuned store holds), one line per such row: its ``selection``."""
    return [f"{r.name}: {r.selection}" for r in rows if r.head is None and r.selection]


def excluded_notes(rows: Sequence[ResultRow]) -> list[str]:
    """One line per distinct name whose store recorded unreadable images (left out of its rows)."""
    seen = dict.fromkeys((r.name, r.excluded_images) for r in rows if r.excluded_images)
    listed = command("info", "featx.store.summarize(...)")
    return [speak(f"{name}: {n} unreadable image(s) left out (listed by {listed})") for name, n in seen]


def partial_notes(rows: Sequence[ResultRow]) -> list[str]:
    """One line per distinct name computed on an unfinished store."""
    notes = [speak(f"{r.name} used {r.partial} of an unfinished store; finish it with the same {extracting()}")
             for r in rows if r.partial]
    return list(dict.fromkeys(notes))


def slug(row_or_text: ResultRow | str) -> str:
    """A file-name-safe name of a row (backbone-tap-head-protocol, with the tag that tells it from rows of the
    same name after the tap: :mod:`featx.row_names`; a fine-tuned network's own row keeps ``finetune`` in the
    head's place, as its files were always named) or of a text."""
    if isinstance(row_or_text, ResultRow):
        r = row_or_text
        parts = (r.backbone, r.tap, r.settings.get(TAG) or "", r.head or "finetune", r.protocol)
        text = "-".join(str(v) for v in parts if v != "")
    else:
        text = str(row_or_text)
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("_") or "row"
