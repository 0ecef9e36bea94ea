"""The results table (the study's Table 2 layout) for the terminal (rich), fitted to the terminal's width.

Marked rows (:attr:`featx.results.ResultRow.marks`) are yellow with a ``*``; the notes under the table say
what the marks, the ± and the intervals are (:mod:`featx.report.notes`).
"""
from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from featx.report.notes import (
    TABLE_METRICS,
    difference_bounds,
    difference_text,
    excluded_notes,
    format_pct,
    interval_notes,
    partial_notes,
    protocol_title,
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
_MARKER_WIDTH = len("IMAGE-LEVEL")  # the protocol column never splits a marker
_NAME_MIN = 14


def results_table(rows: Sequence[ResultRow], title: str | None = "featx compare", *, width: int | None = None
                  ) -> Table:
    """A rich Table: name, protocol, then accuracy, precision, recall, F1, the weighted F1 (the challenge's
    metric) and ROC-AUC (%, ``mean ± sd`` over folds; the title says which protocol), and, for compared rows,
    Δ: the paired difference from the protocol's reference row with its 95% interval and ``≈`` when the
    interval holds 0; marked rows in yellow with a ``*``.

    No number is ever cut: at ``width`` columns (default: the width of the console it is printed on) the
    table stacks ``± sd`` under the mean when one line does not fit, then leaves out ROC-AUC, precision,
    recall and F1 in that order and says so under the table. Names and protocols wrap; numbers never do.
    """
    rows = list(rows)
    delta = _delta_column(rows)
    if width is None:  # every column on one line; laid out again for the console that prints it
        table = _build(_FitsConsole, rows, title, [*TERMINAL_METRICS, *delta], stacked=False, width=None)
        table.fit_args = (rows, title)
        return table
    for stacked, metrics in _layouts():
        table = _build(Table, rows, title, [*metrics, *delta], stacked=stacked, width=width)
        if table is not None:
            return table
    # narrower than accuracy and wF1 with the shortest names (about 50 columns): the narrowest layout
    return _build(Table, rows, title, [*metrics, *delta], stacked=True, width=width, force=True)


def _layouts():
    """(stacked, metrics) from the widest layout to the narrowest."""
    yield False, list(TERMINAL_METRICS)
    for k in range(len(DROP_ORDER) + 1):
        yield True, [(m, h) for m, h in TERMINAL_METRICS if m not in DROP_ORDER[:k]]


class _FitsConsole(Table):
    """A results table laid out again for the width of the console it is printed on."""

    fit_args: tuple = ()

    def __rich_console__(self, console, options):
        yield results_table(*self.fit_args, width=options.max_width)

    def __rich_measure__(self, console, options):
        return Measurement.get(console, options, results_table(*self.fit_args, width=options.max_width))


DELTA = "delta"  # the column of each row's paired difference from its protocol's reference row


def _delta_column(rows: Sequence[ResultRow]) -> list[tuple[str, str]]:
    """``[(DELTA, "Δ wF1")]`` when a row was compared with its protocol's reference row, else ``[]``."""
    metrics = {r.comparison["metric"] for r in rows if r.comparison}
    if not metrics:
        return []
    return [(DELTA, f"Δ {get_metric(metrics.pop()).short}" if len(metrics) == 1 else "Δ (own metric)")]


def _cell(row: ResultRow, metric: str, stacked: bool) -> str:
    if metric == DELTA:
        text = difference_text(row, interval=False)
        if bounds := difference_bounds(row):
            text = f"{text}\n{bounds}" if stacked else text.replace(" ≈", "") + f" {bounds}" + (
                " ≈" if row.close_mark else "")
        return text
    score = row.score(metric)
    text = format_pct(score.mean, score.std)
    return text.replace(" ± ", "\n± ") if stacked else text


def _protocol_cell(row: ResultRow) -> str:
    text = ("* " if row.marked else "") + ("\u2020 " if row.selection_uncorrected else "") + short_protocol(row)
    return text + (f" PARTIAL ({row.partial})" if row.partial else "")


def _width(texts) -> int:
    return max((cell_len(line) for t in texts for line in t.split("\n")), default=1)


def _build(cls, rows, title, metrics, *, stacked, width, force=False):
    """The table of ``rows`` with these metric columns, or None when it does not fit in ``width``."""
    cells = [[_cell(r, m, stacked) for m, _ in metrics] for r in rows]
    num_widths = [_width([h, *(c[i] for c in cells)]) for i, (_, h) in enumerate(metrics)]
    names, protocols = [r.name for r in rows], [_protocol_cell(r) for r in rows]
    name_w, proto_w = _width(["Model", *names]), _width(["Protocol", *protocols])
    name_col, proto_col = None, None  # fixed widths of the wrapping columns when the natural ones do not fit
    if width is not None:
        spare = width - sum(num_widths) - _overhead(len(metrics) + 2)
        longest = max((cell_len(w) for p in protocols for w in p.split()), default=1)
        name_min, proto_min = _NAME_MIN, max(_MARKER_WIDTH, min(longest, 16))
        if not stacked:  # one line per row only while names and protocols stay readable
            name_min, proto_min = 2 * name_min, 2 * proto_min
        name_min, proto_min = min(name_w, name_min), min(proto_w, proto_min)
        if spare < name_w + proto_w:
            if spare < name_min + proto_min and not force:
                return None
            extra = max(spare - name_min - proto_min, 0)
            need_n, need_p = name_w - name_min, proto_w - proto_min
            add_n = extra * need_n // max(need_n + need_p, 1)
            name_col, proto_col = name_min + add_n, proto_min + extra - add_n
    table = cls(title=f"{title}  [dim]({protocol_title(rows)}, %)[/]" if title else None,
                caption="\n".join(_captions(rows, metrics, width)), caption_style="dim", box=box.SIMPLE_HEAD,
                pad_edge=False)
    table.add_column("Model", style="bold", overflow="fold", width=name_col)
    table.add_column("Protocol", overflow="fold", width=proto_col)
    for (_, header), w in zip(metrics, num_widths):
        table.add_column(header, justify="right", no_wrap=True, min_width=w)
    for r, name, protocol, row_cells in zip(rows, names, protocols, cells):
        table.add_row(escape(name), escape(protocol), *row_cells,
                      style="yellow" if r.marked or r.partial else None)
    return table


def _overhead(n_columns: int) -> int:
    """Characters a table with ``n_columns`` spends outside its cells: edges, separators and padding."""
    probe = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for _ in range(n_columns):
        probe.add_column(width=1)
    return Measurement.get(_PROBE, _PROBE.options, probe).maximum - n_columns


_PROBE = Console(width=1000)


def _captions(rows: Sequence[ResultRow], metrics, width: int | None) -> list[str]:
    unit = "images" if any(r.ci_unit == "image" for r in rows) else "subjects"
    method = f"jackknife over {unit}, t-interval on the logit scale"
    if any(r.n_folds > 1 for r in rows):
        captions = [f"± = sample std (ddof=1) over folds; 95% CIs of the mean over folds ({method}) in "
                    "results.md/.csv"]
    else:
        captions = [f"one split, so no ±; 95% CIs ({method}) in results.md/.csv"]
    if delta := [h for m, h in metrics if m == DELTA]:
        metric = next(r.comparison["metric"] for r in rows if r.comparison)
        captions.append(f"{delta[0]}: paired difference (points) from the protocol's best row by {metric} "
                        "(paired subject jackknife, 95% CI); ≈: the CI holds 0, not distinguishable from it")
    shown = {m for m, _ in metrics}
    hidden = [h for m, h in TERMINAL_METRICS if m not in shown]
    captions += [escape(note) for note in interval_notes(rows, names=False)]
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
        captions.append("* weights of unknown provenance: they may have seen the test images (featx extract "
                        "--weights-never-saw-images states they did not)")
    if any(r.weights_provenance == "stated-unseen" for r in rows):
        captions.append("weights stated unseen by the user: featx cannot check where they come from")
    if note := selection_note(rows):
        captions.append(escape(note))
    captions += [escape(line) for line in selection_choices(rows)]
    captions += [f"PARTIAL: {escape(p)}" for p in partial_notes(rows)]
    captions += [escape(note) for note in excluded_notes(rows)]
    return captions


