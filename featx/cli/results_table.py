"""The results table drawn with rich for the terminal, fitted to its width; what it shows comes from
:mod:`featx.report.table` (text, its notes naming flags and commands), marked and PARTIAL rows in yellow."""
from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from featx.cli.app import console, flag
from featx.errors import spoken_as
from featx.report.notes import epoch_notes, protocol_title
from featx.report.table import (
    TERMINAL_METRICS,
    cell_text,
    delta_column,
    layouts,
    name_pieces,
    protocol_cell,
    table_captions,
    wrap_name,
)
from featx.results import ResultRow

_MARKER_WIDTH = len("IMAGE-LEVEL")  # the protocol column never splits a marker
_NAME_MIN = 14
_PIECE_MAX = 24  # a name's longest unbreakable piece widens its column up to this (longer ones fold)


def results_table(rows: Sequence[ResultRow], title: str | None = "featx compare", *, width: int | None = None,
                  sources: Sequence[str] = ()) -> Table:
    """A rich Table: name, protocol, then accuracy, precision, recall, F1, the weighted F1 (the challenge's
    metric) and ROC-AUC (%, ``mean ± sd`` over folds; the title says which protocol), and, for compared rows,
    Δ: the paired difference from the protocol's reference row with its 95% interval and ``≈`` when the
    interval holds 0; marked rows in yellow with a ``*``.

    No number is ever cut: at ``width`` columns (default: the width of the console it is printed on) the
    table stacks ``± sd`` under the mean when one line does not fit, then leaves out ROC-AUC, precision,
    recall and F1 in that order and says so under the table. Names wrap after ``/``, ``+``, ``[`` and spaces
    (never inside a word), protocols at spaces; numbers never do. When a cell takes several lines, a blank
    line separates the rows.
    ``sources``: each row's results folder (``featx table`` over several), a Source column after the name.
    """
    rows, sources = list(rows), list(sources)
    delta = delta_column(rows)
    if width is None:  # every column on one line; laid out again for the console that prints it
        table = _build(_FitsConsole, rows, title, [*TERMINAL_METRICS, *delta], stacked=False, width=None,
                       sources=sources)
        table.fit_args = (rows, title, sources)
        return table
    for stacked, metrics in layouts():
        table = _build(Table, rows, title, [*metrics, *delta], stacked=stacked, width=width, sources=sources)
        if table is not None:
            return table
    # narrower than accuracy and wF1 with the shortest names (about 50 columns): the narrowest layout
    return _build(Table, rows, title, [*metrics, *delta], stacked=True, width=width, force=True, sources=sources)


class _FitsConsole(Table):
    """A results table laid out again for the width of the console it is printed on."""

    fit_args: tuple = ()

    def __rich_console__(self, console, options):
        rows, title, sources = self.fit_args
        yield results_table(rows, title, width=options.max_width, sources=sources)

    def __rich_measure__(self, console, options):
        rows, title, sources = self.fit_args
        return Measurement.get(console, options, results_table(rows, title, width=options.max_width, sources=sources))


def _width(texts) -> int:
    return max((cell_len(line) for t in texts for line in t.split("\n")), default=1)


def _build(cls, rows, title, metrics, *, stacked, width, force=False, sources=()):
    """The table of ``rows`` with these metric columns, or None when it does not fit in ``width``."""
    cells = [[cell_text(r, m, stacked) for m, _ in metrics] for r in rows]
    num_widths = [_width([h, *(c[i] for c in cells)]) for i, (_, h) in enumerate(metrics)]
    names, protocols = [r.name for r in rows], [protocol_cell(r) for r in rows]
    name_w, proto_w = _width(["Model", *names]), _width(["Protocol", *protocols])
    name_col, proto_col = None, None  # fixed widths of the wrapping columns when the natural ones do not fit
    if width is not None:
        source_w = _width(["Source", *sources]) if sources else 0
        spare = width - sum(num_widths) - source_w - _overhead(len(metrics) + 2 + bool(sources))
        longest = max((cell_len(w) for p in protocols for w in p.split()), default=1)
        piece = max((len(p.strip()) for n in names for p in name_pieces(n)), default=1)
        name_min, proto_min = max(_NAME_MIN, min(piece, _PIECE_MAX)), max(_MARKER_WIDTH, min(longest, 16))
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
    with spoken_as(flag):  # the terminal's table names flags and commands, wherever it is drawn
        captions = [escape(line) for line in table_captions(rows, metrics, width)]
    if name_col is not None:  # wrapped here, where rich would only break at spaces or inside a word
        names = [wrap_name(n, name_col) for n in names]
        protocols = [wrap_name(p, proto_col) for p in protocols]
    several_lines = any("\n" in c for c in [*names, *protocols, *(c for row in cells for c in row)])
    table = cls(title=f"{title}  [dim]({protocol_title(rows)}, %)[/]" if title else None,
                caption="\n".join(captions), caption_style="dim", box=box.SIMPLE_HEAD, pad_edge=False,
                show_lines=several_lines)
    table.add_column("Model", style="bold", overflow="fold", width=name_col)
    if sources:
        table.add_column("Source", overflow="fold")
    table.add_column("Protocol", overflow="fold", width=proto_col)
    for (_, header), w in zip(metrics, num_widths):
        table.add_column(header, justify="right", no_wrap=True, min_width=w)
    for i, (r, name, protocol, row_cells) in enumerate(zip(rows, names, protocols, cells)):
        table.add_row(escape(name), *([escape(sources[i])] if sources else []), escape(protocol), *row_cells,
                      style="yellow" if r.marked or r.partial else None)
    return table


def _overhead(n_columns: int) -> int:
    """Characters a table with ``n_columns`` spends outside its cells: edges, separators and padding."""
    probe = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for _ in range(n_columns):
        probe.add_column(width=1)
    return Measurement.get(_PROBE, _PROBE.options, probe).maximum - n_columns


_PROBE = Console(width=1000)


def print_rows(rows, paths=None, title="featx", run=None) -> None:
    """The results table, each protocol's note once, where the grid ran and the files written."""
    console.print(results_table(rows, title=title))
    shown = set()
    for r in rows:  # each protocol's note once (heads on the same folds share it)
        note = r.settings.get("cv_note")
        if note and note not in shown:
            shown.add(note)
            sets = {x.name.rsplit(" + ", 1)[0] for x in rows if x.protocol == r.protocol}
            noted = {x.name.rsplit(" + ", 1)[0] for x in rows if x.protocol == r.protocol
                     and x.settings.get("cv_note") == note}
            who = (f"all {len(sets)} feature sets" if len(sets) > 1 and noted == sets
                   else f"{escape(str(r.backbone))}/{escape(str(r.tap))}")
            console.print(f"[dim]{who} ({r.protocol}): {escape(note)}[/]")
    if run and run["backend"] != "loky":
        console.print(f"[dim]ran on {run['backend']} ({run['cluster']} cluster {escape(str(run['scheduler']))}, "
                      f"{run['workers']} worker{'s' if run['workers'] != 1 else ''})[/]")
    for line in epoch_notes(rows):
        console.print(f"[dim]{escape(line)}[/]")
    if paths:
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))
