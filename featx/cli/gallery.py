"""`featx gallery`: the error gallery of every row of results folders (a PNG sheet and a CSV per row)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import app, console, err_console, on_interrupt, user_errors
from featx.cli.options import Quiet
from featx.cli.progress import Bar
from featx.report.gallery import RIGHT, WRONG
from featx.report.gallery import gallery as draw_galleries

INTERRUPTED = ("the sheets finished so far are kept in --out (each is written whole); run the same command with "
               "--force to write them all again")


@app.command()
@user_errors
@on_interrupt(INTERRUPTED)
def gallery(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders holding them (compare, "
                                                        "classify, finetune and hybrid folders).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for one <row>.png sheet and <row>.csv per row.")],
    data: Annotated[Path | None, typer.Option(help="The data folder the images are under now (default: the one "
                                                   "the rows recorded).")] = None,
    wrong: Annotated[int, typer.Option(min=0, help="Misclassified cells drawn per row, most confident first "
                                                  "(the CSV lists all).")] = WRONG,
    right: Annotated[int, typer.Option(min=0, help="Correctly classified cells drawn per row, least confident "
                                                  "first.")] = RIGHT,
    force: Annotated[bool, typer.Option("--force", help="Replace gallery files already in --out.")] = False,
    quiet: Quiet = False,
) -> None:
    """Draw each row's test cells it got most confidently wrong and the least confident right ones, grouped by
    subject, from its predictions/ files and the images (nothing is recomputed)."""
    with Bar("row", quiet) as bar:
        done = draw_galleries(results, out, data=data, wrong=wrong, right=right, overwrite=force,
                               on_row=lambda i, n, name: bar.update(i, n, f"gallery {name}" if name else "gallery"))
    if done.skipped:
        rows = f"{len(done.skipped)} of {len(done.skipped) + len(done.rows)} rows"
        err_console.print(f"[bold yellow]warning:[/] {rows} have no predictions file, so no gallery "
                          f"({escape(', '.join(done.skipped))}): {escape(done.why)}", highlight=False, soft_wrap=True)
    wrong_total = sum(g.n_wrong for g in done.rows)
    console.print(f"wrote {len(done.rows)} gallery sheets (+ CSV) to {escape(str(out))}: {wrong_total} misclassified "
                  "cells listed", highlight=False, soft_wrap=True)
