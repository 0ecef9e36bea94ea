"""`featx table`: one table from the results of several compare / classify / finetune runs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featx.cli.app import INTERRUPT_LINES, app, console, on_interrupt, user_errors
from featx.cli.options import Force
from featx.cli.results_table import results_table
from featx.report import merge_results


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["table"])
def table(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders: every results.json "
                                                        "under a folder is read (compare, classify, finetune "
                                                        "and hybrid folders).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the merged rows as "
                                                                    "results.csv/.json/.md (+ plots) here.")] = None,
    title: Annotated[str, typer.Option(help="Title of the table.")] = "featx",
    force: Force = False,
) -> None:
    """Print one table (the study's Table 2 layout) over the rows of several results files."""
    merged = merge_results(results, out, overwrite=force)
    console.print(results_table(merged.rows, title=title))
    if merged.paths:
        console.print("wrote " + ", ".join(str(p) for p in merged.paths.values()))
