"""What the terminal's results table (the study's Table 2 layout) shows, as text: its columns, the cell of
each row and metric, and the notes under it. The CLI draws it (rich) at the terminal's width.

Marked rows (:attr:`featx.results.ResultRow.marks`) get a ``*``; the notes under the table say what the
marks, the ± and the intervals are (:mod:`featx.report.notes`).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from featx.errors import arg, speak
from featx.report.notes import (
    TABLE_METRICS,
    difference_bounds,
    difference_text,
    excluded_notes,
    format_pct,
    interval_notes,
    partial_notes,
    selection_choices,
    selection_note,
    short_protocol,
)
from featx.results import ResultRow
from featx.scoring import METRIC_TABLE, get_metric

# The terminal's columns: the study's Table 2 with the challenge's weighted F1 shortened to wF1.
TERMINAL_METRICS = tuple((m, METRIC_TABLE[m].short if m == "f1_weighted" else METRIC_TABLE[m].label)
                         for m, _ in TABLE_METRICS)
# Dropped first when a narrow terminal cannot show every column (accuracy and wF1 always stay).
DROP_ORDER = ("roc_auc", "precision", "recall", "f1")
DELTA = "delta"  # the column of each row's paired difference from its protocol's reference row


_BREAKS = re.compile(r"(?<=[/+\[ ])")   # a name may break after these, never inside a word


def name_pieces(text: str) -> list[str]:
    """``text`` cut after each ``/``, ``+``, ``[`` and space: the pieces a wrapped name keeps whole."""
    return [p for p in _BREAKS.split(text) if p]


def wrap_name(text: str, width: int) -> str:
    """``text`` on lines of at most ``width`` characters, broken only after ``/``, ``+``, ``[`` and spaces
    (``vgg16[vgg16/`` / ``best.pt]/fc7 +`` / ``svm``); a piece longer than ``width`` keeps a line of its own."""
    lines: list[str] = []
    for piece in name_pieces(text):
        if lines and len((lines[-1] + piece).rstrip()) <= width:
            lines[-1] += piece
        else:
            if lines:
                lines[-1] = lines[-1].rstrip()
            lines.append(piece.lstrip() if lines else piece)
    return "\n".join(line.rstrip() for line in lines)


def layouts() -> Iterator[tuple[bool, list[tuple[str, str]]]]:
    """(stacked, metric columns) from the widest layout to the narrowest: every column on one line, then
    ``± sd`` stacked under the mean, then :data:`DROP_ORDER` left out one by one."""
    yield False, list(TERMINAL_METRICS)
    for k in range(len(DROP_ORDER) + 1):
        yield True, [(m, h) for m, h in TERMINAL_METRICS if m not in DROP_ORDER[:k]]


def delta_column(rows: Sequence[ResultRow]) -> list[tuple[str, str]]:
    """``[(DELTA, "Δ wF1")]`` when a row was compared with its protocol's reference row, else ``[]``."""
    metrics = {r.comparison["metric"] for r in rows if r.comparison}
    if not metrics:
        return []
    return [(DELTA, f"Δ {get_metric(metrics.pop()).short}" if len(metrics) == 1 else "Δ (own metric)")]


def cell_text(row: ResultRow, metric: str, stacked: bool) -> str:
    """The cell of ``row`` under ``metric`` (or :data:`DELTA`): ``mean ± sd`` in %, on two lines when
    ``stacked``."""
    if metric == DELTA:
        text = difference_text(row, interval=False)
        if bounds := difference_bounds(row):
            text = f"{text}\n{bounds}" if stacked else text.replace(" ≈", "") + f" {bounds}" + (
                " ≈" if row.close_mark else "")
        return text
    score = row.score(metric)
    text = format_pct(score.mean, score.std)
    return text.replace(" ± ", "\n± ") if stacked else text


def protocol_cell(row: ResultRow) -> str:
    """The protocol column of ``row``: its short protocol, ``*`` when marked, ``†`` when uncorrected for a
    selection, and ``PARTIAL (...)`` for an unfinished store."""
    text = ("* " if row.marked else "") + ("\u2020 " if row.selection_uncorrected else "") + short_protocol(row)
    return text + (f" PARTIAL ({row.partial})" if row.partial else "")


def table_captions(rows: Sequence[ResultRow], metrics: Sequence[tuple[str, str]], width: int | None) -> list[str]:
    """The lines under the table of ``rows`` with these metric columns at ``width`` columns (plain text)."""
    unit = "images" if any(r.ci_unit == "image" for r in rows) else "subjects"
    method = f"jackknife over {unit}, t-interval on the logit scale"
    if all(r.n_folds > 1 for r in rows):
        captions = [f"± = sample std (ddof=1) over folds; 95% CIs of the mean over folds ({method}) in "
                    "results.md/.csv"]
    elif any(r.n_folds > 1 for r in rows):  # each row's interval is of its own estimate
        captions = [f"± = sample std (ddof=1) over folds (a row of one split has none); 95% CIs of the mean over "
                    f"folds, or of a single split's score ({method}) in results.md/.csv"]
    else:
        captions = [f"one split, so no ±; 95% CIs ({method}) in results.md/.csv"]
    if delta := [h for m, h in metrics if m == DELTA]:
        metric = next(r.comparison["metric"] for r in rows if r.comparison)
        captions.append(f"{delta[0]}: paired difference (points) from the protocol's best row by {metric} "
                        "(paired subject jackknife, 95% CI); ≈: the CI holds 0, not distinguishable from it")
    shown = {m for m, _ in metrics}
    hidden = [h for m, h in TERMINAL_METRICS if m not in shown]
    captions += interval_notes(rows, names=False)
    if hidden:
        captions.insert(0, f"{', '.join(hidden)} not shown at {width} columns; all metrics are in "
                           "results.md/.csv")
    if any(r.image_level for r in rows):
        captions.append("* IMAGE-LEVEL: one subject's cells on both sides of the split, or subjects unknown "
                        "(optimistic)")
    if any(r.optimistic and r.kind == "head" for r in rows):
        captions.append("* OPTIMISTIC: features tuned on test subjects (the fine-tuned network saw them)")
    if any(r.optimistic and r.kind == "network" for r in rows):
        captions.append("* OPTIMISTIC: epoch chosen on the validation images it is scored on (too few to split)")
    if any(r.weights_provenance == "unknown" for r in rows):
        captions.append(speak("* weights of unknown provenance: they may have seen the test images (extracting "
                              f"with {arg('weights_never_saw_images', True)} states they did not)"))
    if any(r.weights_provenance == "stated-unseen" for r in rows):
        captions.append("weights stated unseen by the user: featx cannot check where they come from")
    if note := selection_note(rows):
        captions.append(note)
    captions += selection_choices(rows)
    captions += [f"PARTIAL: {p}" for p in partial_notes(rows)]
    captions += excluded_notes(rows)
    return captions
