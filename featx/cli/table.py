"""`featx table`: one table from the results of several compare / classify / finetune runs, or (``--pivot``)
the paper's Table 2 with the protocols as columns, printed or written as Markdown, LaTeX, CSV or HTML."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from featx.cli.app import INTERRUPT_LINES, app, console, on_interrupt, user_errors
from featx.cli.options import Force
from featx.cli.results_table import results_table
from featx.errors import FeatxError, arg
from featx.files import atomic_text
from featx.report import Table2, merge_results, pivot_table
from featx.report.table2 import CLOSE, FORMATS, PIVOTS, SUFFIXES, cell_text, format_table


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["table"])
def table(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders: every results.json "
                                                        "under a folder is read (compare, classify, finetune "
                                                        "and hybrid folders).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the merged rows as "
                                                                    "results.csv/.json/.md (+ plots) here; with "
                                                                    "--pivot, the file Table 2 is written to "
                                                                    "(its format from --format or the suffix "
                                                                    ".md/.tex/.csv/.html).")] = None,
    title: Annotated[str, typer.Option(help="Title of the table.")] = "featx",
    pivot: Annotated[str | None, typer.Option(help="protocol: Table 2, one row per backbone/tap + head and one "
                                                   "column per protocol (best bold, ≈ best marked).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="With --pivot: md, latex (booktabs tabular), csv "
                                                             "or html, to stdout or --out.")] = None,
    metric: Annotated[str, typer.Option(help="With --pivot: the metric of the cells.")] = "f1_weighted",
    force: Force = False,
) -> None:
    """Print one table (the study's Table 2 layout) over the rows of several results files."""
    if pivot is None:
        if fmt is not None:
            raise FeatxError(f"{arg('format', fmt)} writes Table 2: add {arg('pivot', 'protocol')} (the merged rows' "
                             f"results.csv/.md: {arg('out')} DIR)")
        merged = merge_results(results, out, overwrite=force)
        console.print(results_table(merged.rows, title=title, sources=merged.sources))
        if merged.paths:
            console.print("wrote " + ", ".join(str(p) for p in merged.paths.values()))
        return
    if pivot not in PIVOTS:  # before reading any results
        raise FeatxError(f"{arg('pivot', pivot)}: cannot pivot on that; choose one of {', '.join(PIVOTS)}")
    if fmt is None and out is not None:
        fmt = SUFFIXES.get(out.suffix.lower())
        if fmt is None:
            raise FeatxError(f"{arg('out', out)}: name the format of Table 2 with {arg('format')} "
                             f"({'|'.join(FORMATS)}) or end the file in {'/'.join(SUFFIXES)}")
    if fmt is not None and fmt not in FORMATS:
        raise FeatxError(f"{arg('format', fmt)}: not a table format; choose one of {', '.join(FORMATS)}")
    if out is not None and out.is_dir():
        raise FeatxError(f"{arg('out', out)} is a folder; with {arg('pivot')} it names the file to write "
                         "(e.g. table2.tex)")
    merged = merge_results(results)
    table2 = pivot_table(merged.as_read, metric=metric, pivot=pivot, sources=merged.sources or None)
    if fmt is None:
        console.print(pivot_rich(table2, title))
    elif out is None:
        typer.echo(format_table(table2, fmt), nl=False)
    else:
        console.print(f"wrote {atomic_text(out, format_table(table2, fmt))}")


def pivot_rich(table2: Table2, title: str | None) -> Table:
    """Table 2 drawn with rich: best cells bold, ``≈`` after close ones, footnote labels as ``^a``."""
    def sup(notes):
        return "".join(f"^{n}" for n in notes)

    captions = [table2.legend, *(f"^{n} {text}" for n, _, text in table2.footnotes)]
    out = Table(title=title, caption=escape("\n".join(captions)), caption_style="dim", box=box.SIMPLE_HEAD,
                pad_edge=False)
    out.add_column("Model", style="bold", overflow="fold")
    if table2.sources:
        out.add_column("Source", overflow="fold")
    for column, notes in zip(table2.column_keys, table2.column_notes):
        out.add_column(escape(column + sup(notes)), justify="right", overflow="fold")
    for i, key in enumerate(table2.row_keys):
        cells = []
        for cell in table2.cells[i]:
            text = escape(cell_text(cell))
            if cell is not None:
                text = (f"[bold]{text}[/]" if cell.best else text) + (f" {CLOSE}" if cell.close else "") + sup(
                    cell.notes)
            cells.append(text)
        out.add_row(escape(key + sup(table2.row_notes[i])), *([escape(table2.sources[i])] if table2.sources else []),
                    *cells)
    return out
