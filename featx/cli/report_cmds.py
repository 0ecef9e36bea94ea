"""`featx table`: one table from the results of several compare / classify / finetune runs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featx.cli.app import app, console, user_errors
from featx.report import read_results, results_table, write_results


@app.command()
@user_errors
def table(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders holding one "
                                                        "(a compare --out folder, a finetune run folder).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the merged rows as "
                                                                    "results.csv/.json/.md (+ plots) here.")] = None,
    title: Annotated[str, typer.Option(help="Title of the table.")] = "featx",
) -> None:
    """Print one table (the study's Table 2 layout) over the rows of several results files."""
    rows = read_results(results)
    console.print(results_table(rows, title=title))
    if out is not None:
        paths = write_results(rows, out)
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))
