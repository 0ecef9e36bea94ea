"""Table 2 of a paper: one row per backbone/tap + head, one column per protocol, each cell a metric's mean and
its 95% interval (%), the best of each column in bold and rows not distinguishable from it marked ``≈``; marks
(IMAGE-LEVEL, OPTIMISTIC, weights of unknown provenance, PARTIAL) as footnotes. :func:`pivot_table` builds it
(a value); :func:`to_markdown`, :func:`to_latex`, :func:`to_csv` and :func:`to_html` write it.
"""
from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from featx import csvfiles
from featx.errors import FeatxError, arg, speak
from featx.report.notes import (
    EPOCH_OPTIMISTIC_NOTE,
    IMAGE_LEVEL_NOTE,
    OPTIMISTIC_NOTE,
    STATED_UNSEEN_NOTE,
    UNKNOWN_WEIGHTS_NOTE,
    protocol_text,
)
from featx.results import ResultRow
from featx.scoring import check_metric, get_metric

PIVOTS = ("protocol",)
CLOSE = "\u2248"


@dataclass(frozen=True)
class Cell:
    """One row x protocol: the metric's mean and 95% interval (fractions; None where there is none), the
    labels of its footnotes, whether it is its column's best and whether it is not distinguishable from it."""
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    notes: tuple[str, ...] = ()
    best: bool = False
    close: bool = False


@dataclass(frozen=True)
class Table2:
    """What :func:`pivot_table` returns. ``cells[i][j]``: row ``row_keys[i]`` under column ``column_keys[j]``
    (None where that row has no such protocol); ``sources[i]``: the row's results folder (empty when the rows
    come from one); ``row_notes``/``column_notes``: footnote labels a whole row or column carries;
    ``footnotes``: ``(label, mark, text)``, ``("a", "IMAGE-LEVEL", "IMAGE-LEVEL rows split ...")``."""
    metric: str
    pivot: str
    row_keys: tuple[str, ...]
    column_keys: tuple[str, ...]
    cells: tuple[tuple[Cell | None, ...], ...]
    sources: tuple[str, ...] = ()
    row_notes: tuple[tuple[str, ...], ...] = ()
    column_notes: tuple[tuple[str, ...], ...] = ()
    footnotes: tuple[tuple[str, str, str], ...] = ()

    def cell(self, row: str, column: str, source: str = "") -> Cell | None:
        """The cell of ``row`` (from ``source`` when the table has sources) under ``column``."""
        for i, key in enumerate(self.row_keys):
            if key == row and (not self.sources or self.sources[i] == source):
                return self.cells[i][self.column_keys.index(column)]
        raise KeyError(row)

    @property
    def legend(self) -> str:
        """What the cells, bold and ``≈`` mean."""
        m = get_metric(self.metric)
        return (f"{m.label} (%), mean over folds with its 95% interval (n/a where the design supports none). Bold: "
                f"the best of each column; {CLOSE}: the paired 95% interval of the row's difference from it holds 0.")


def _marks(row: ResultRow) -> list[tuple[str, str]]:
    """``(mark, footnote text)`` of each mark the row carries."""
    marks = []
    if row.optimistic:
        marks.append(("OPTIMISTIC", OPTIMISTIC_NOTE if row.kind == "head" else EPOCH_OPTIMISTIC_NOTE))
    elif row.image_level:
        marks.append(("IMAGE-LEVEL", IMAGE_LEVEL_NOTE))
    if row.weights_provenance == "unknown":
        marks.append(("weights of unknown provenance", UNKNOWN_WEIGHTS_NOTE))
    elif row.weights_provenance == "stated-unseen":
        marks.append(("weights stated unseen", STATED_UNSEEN_NOTE))
    if row.partial:
        marks.append(("PARTIAL", "PARTIAL: computed on an unfinished store (its rows so far); finish the store "
                                 "and run again for the full number."))
    return marks


def _column(row: ResultRow) -> str:
    return row.protocol_short or protocol_text(row)


def _best(rows: list[tuple[int, ResultRow]], metric: str) -> int | None:
    """The index of the column's best row: its protocol's reference row by this metric (the best of the
    rows that estimate new patients, :func:`featx.evaluation.compare_rows`), else the best mean."""
    scored = [(i, r) for i, r in rows if math.isfinite(r.mean(metric))]
    pick = max if get_metric(metric).greater_is_better else min
    refs = [(i, r) for i, r in scored if (r.comparison or {}).get("is_reference")
            and r.comparison.get("chosen_by") == "best" and r.comparison.get("metric") == metric]
    honest = [(i, r) for i, r in scored if not (r.marked or r.partial)] or scored
    candidates = refs or honest
    return pick(candidates, key=lambda ir: ir[1].mean(metric))[0] if candidates else None


def pivot_table(rows: Sequence[ResultRow], *, metric: str = "f1_weighted", pivot: str = "protocol",
                sources: Sequence[str] | None = None) -> Table2:
    """Table 2 of ``rows``: one row per name (backbone/tap + head; per name and source when ``sources``, each
    row's results folder, tells several apart), one column per protocol, each cell ``metric``'s mean and 95%
    interval. Bold: each column's best (the protocol's reference row of :func:`featx.evaluation.compare_rows`
    when the rows were compared on ``metric``, else the best mean among rows that estimate new patients);
    ``close``: the row's comparison says its difference from that row is not distinguishable from 0."""
    check_metric(metric, "metric")
    if pivot not in PIVOTS:
        raise FeatxError(f"{arg('pivot', pivot)}: cannot pivot on that; choose one of {', '.join(PIVOTS)}")
    rows = list(rows)
    sources = [str(s) for s in sources] if sources else []
    if sources and len(sources) != len(rows):
        raise FeatxError(f"{arg('sources')}: {len(sources)} sources for {len(rows)} rows; give one per row")
    keys = list(dict.fromkeys((r.name, sources[i] if sources else "") for i, r in enumerate(rows)))
    columns = list(dict.fromkeys(_column(r) for r in rows))
    at: dict[tuple[int, int], int] = {}
    for i, r in enumerate(rows):
        at.setdefault((keys.index((r.name, sources[i] if sources else "")), columns.index(_column(r))), i)
    labels: dict[str, str] = {}
    footnotes: list[tuple[str, str, str]] = []

    def label(mark: str, text: str) -> str:
        if text not in labels:
            labels[text] = chr(ord("a") + len(labels))
            footnotes.append((labels[text], mark, speak(text)))
        return labels[text]

    marks = {i: [label(m, t) for m, t in _marks(r)] for i, r in enumerate(rows)}
    column_notes = [_shared([marks[i] for (k, j), i in at.items() if j == c]) for c in range(len(columns))]
    row_notes = [_shared([marks[i] for (k, j), i in at.items() if k == key]) for key in range(len(keys))]
    grid: list[list[Cell | None]] = [[None] * len(columns) for _ in keys]
    for c in range(len(columns)):
        members = [(i, rows[i]) for (k, j), i in at.items() if j == c]
        best = _best(members, metric)
        ref = rows[best].comparison if best is not None else None
        for (k, j), i in at.items():
            if j != c:
                continue
            r, score = rows[i], rows[i].score(metric)
            comp = r.comparison or {}
            close = bool(i != best and ref and comp.get("close") and comp.get("metric") == metric
                         and comp.get("reference") == ref.get("reference")
                         and (not sources or sources[i] == sources[best]))
            notes = tuple(n for n in marks[i] if n not in column_notes[c] and n not in row_notes[k])
            grid[k][c] = Cell(score.mean, score.ci_low, score.ci_high, notes, best=i == best, close=close)
    return Table2(metric=metric, pivot=pivot, row_keys=tuple(n for n, _ in keys), column_keys=tuple(columns),
                  cells=tuple(tuple(g) for g in grid), sources=tuple(s for _, s in keys) if sources else (),
                  row_notes=tuple(row_notes), column_notes=tuple(column_notes), footnotes=tuple(footnotes))


def _shared(lists: list[list[str]]) -> tuple[str, ...]:
    """The labels every list holds (none when there is a single list: a lone cell keeps its own)."""
    if len(lists) < 2:
        return ()
    return tuple(n for n in lists[0] if all(n in other for other in lists[1:]))


def _pct(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def cell_text(cell: Cell | None, dash: str = " - ") -> str:
    """``87.12 (82.1 - 90.1)``; ``87.12 (n/a)`` without an interval; ``-`` for an undefined metric; ``""``
    where the row has no such protocol (no marks: each format writes its own)."""
    if cell is None:
        return ""
    if cell.mean is None:
        return "-"
    interval = "n/a" if cell.ci_low is None or cell.ci_high is None else (
        f"{_pct(cell.ci_low, 1)}{dash}{_pct(cell.ci_high, 1)}")
    return f"{_pct(cell.mean, 2)} ({interval})"


def _header(table: Table2, name: str = "Model") -> list[str]:
    return [name, *(["Source"] if table.sources else [])]


def _lines(table: Table2):
    """(row key, source, row notes, cells) of each row."""
    for i, key in enumerate(table.row_keys):
        yield key, table.sources[i] if table.sources else None, table.row_notes[i], table.cells[i]


def to_markdown(table: Table2) -> str:
    """The table as Markdown: bold best, `` ≈`` after close cells, footnote labels as ``<sup>``, then the
    footnotes and the legend."""
    def sup(notes):
        return "".join(f"<sup>{n}</sup>" for n in notes)

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    head = [*_header(table), *(esc(c) + sup(n) for c, n in zip(table.column_keys, table.column_notes))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, source, notes, cells in _lines(table):
        out = [esc(key) + sup(notes), *([esc(source)] if source is not None else [])]
        for cell in cells:
            text = cell_text(cell)
            if cell is not None:
                text = (f"**{text}**" if cell.best else text) + (f" {CLOSE}" if cell.close else "") + sup(cell.notes)
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", table.legend, *(f"<sup>{n}</sup> {text}" for n, _, text in table.footnotes)]
    return "\n".join(lines) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\u2248": r"$\approx$",
          "\u00b1": r"$\pm$", "\u2020": r"\dag{}", "\u0394": r"$\Delta$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``_`` -> ``\\_``, ``%`` -> ``\\%``, ...)."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(table: Table2) -> str:
    """The table as a booktabs ``tabular`` (``\\toprule``/``\\midrule``/``\\bottomrule``; needs
    ``\\usepackage{booktabs}``): bold best, ``$\\approx$`` after close cells, footnote labels as superscripts,
    the legend and footnotes after it."""
    def sup(notes):
        return "".join(f"\\textsuperscript{{{n}}}" for n in notes)

    head = [*(latex_escape(h) for h in _header(table)),
            *(latex_escape(c) + sup(n) for c, n in zip(table.column_keys, table.column_notes))]
    lines = [f"\\begin{{tabular}}{{{'l' * len(_header(table))}{'r' * len(table.column_keys)}}}", "\\toprule",
             " & ".join(head) + r" \\", "\\midrule"]
    for key, source, notes, cells in _lines(table):
        out = [latex_escape(key) + sup(notes), *([latex_escape(source)] if source is not None else [])]
        for cell in cells:
            text = latex_escape(cell_text(cell, dash="--"))
            if cell is not None:
                text = (f"\\textbf{{{text}}}" if cell.best else text) + (
                    " $\\approx$" if cell.close else "") + sup(cell.notes)
            out.append(text)
        lines.append(" & ".join(out) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", "", latex_escape(table.legend) + r"\par"]
    lines += [f"\\textsuperscript{{{n}}}~{latex_escape(text)}\\par" for n, _, text in table.footnotes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table2) -> str:
    """The table as CSV for a spreadsheet: per column its mean and 95% interval in % (empty where there is
    none) and its notes in words (``best``, ``≈ best``, ``IMAGE-LEVEL``, ...): it parses back as a table."""
    words = {n: mark for n, mark, _ in table.footnotes}
    buf = io.StringIO()
    writer = csvfiles.writer(buf, lineterminator="\n")  # a model name starting "=" stays text in a spreadsheet
    header = _header(table)
    for c in table.column_keys:
        header += [f"{c} (%)", f"{c} 95% CI low", f"{c} 95% CI high", f"{c} notes"]
    writer.writerow(header)
    for key, source, notes, cells in _lines(table):
        out = [key, *([source] if source is not None else [])]
        for c, cell in enumerate(cells):
            if cell is None:
                out += ["", "", "", ""]
                continue
            flags = (["best"] if cell.best else []) + ([f"{CLOSE} best"] if cell.close else [])
            flags += [words[n] for n in (*table.column_notes[c], *notes, *cell.notes)]
            out += [_pct(cell.mean, 2) if cell.mean is not None else "", _pct(cell.ci_low, 2)
                    if cell.ci_low is not None else "", _pct(cell.ci_high, 2) if cell.ci_high is not None else "",
                    "; ".join(dict.fromkeys(flags))]
        writer.writerow(out)
    return buf.getvalue()


def to_html(table: Table2) -> str:
    """The table as one ``<table class="featx-table2">`` element (to embed in a page): ``<strong>`` best,
    `` ≈`` after close cells, footnote labels as ``<sup>``; the legend and footnotes in its ``<tfoot>``."""
    def sup(notes):
        return "".join(f"<sup>{html.escape(n)}</sup>" for n in notes)

    e = html.escape
    head = [*(f"<th>{e(h)}</th>" for h in _header(table)),
            *(f"<th>{e(c)}{sup(n)}</th>" for c, n in zip(table.column_keys, table.column_notes))]
    out = ['<table class="featx-table2">', "<thead><tr>" + "".join(head) + "</tr></thead>", "<tbody>"]
    for key, source, notes, cells in _lines(table):
        tds = [f"<th scope=\"row\">{e(key)}{sup(notes)}</th>", *([f"<td>{e(source)}</td>"] if source is not None
                                                                  else [])]
        for cell in cells:
            text = e(cell_text(cell))
            if cell is not None:
                text = (f"<strong>{text}</strong>" if cell.best else text) + (f" {CLOSE}" if cell.close else "") + sup(
                    cell.notes)
            tds.append(f"<td>{text}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    span = len(_header(table)) + len(table.column_keys)
    out += ["</tbody>", "<tfoot>", f'<tr><td colspan="{span}">{e(table.legend)}</td></tr>']
    out += [f'<tr><td colspan="{span}"><sup>{e(n)}</sup> {e(text)}</td></tr>' for n, _, text in table.footnotes]
    out += ["</tfoot>", "</table>"]
    return "\n".join(out) + "\n"


FORMATS = {"md": to_markdown, "latex": to_latex, "csv": to_csv, "html": to_html}
SUFFIXES = {".md": "md", ".markdown": "md", ".tex": "latex", ".csv": "csv", ".html": "html", ".htm": "html"}


def format_table(table: Table2, fmt: str) -> str:
    """``table`` written in ``fmt``: ``md``, ``latex``, ``csv`` or ``html`` (:data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise FeatxError(f"{arg('fmt', fmt)}: not a table format; choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt](table)
