"""`featx report`: one self-contained HTML file (table, notes, every figure) from results of several runs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featx.cli.app import INTERRUPT_LINES, app, console, on_interrupt, user_errors
from featx.cli.options import Quiet
from featx.cli.progress import StepStatus
from featx.report import write_html_report


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["report"])
def report(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders holding them "
                                                        "(compare --out folders, finetune run folders).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="Title of the report.")] = "featx report",
    sort_by: Annotated[str, typer.Option("--sort-by", help="Metric the comparison chart sorts rows by.")
                       ] = "f1_weighted",
    maps: Annotated[str, typer.Option(help="The feature map of each store the rows compare: auto (UMAP when "
                                           "umap-learn is installed, else t-SNE), tsne, umap, pca, or none.")
                    ] = "auto",
    quiet: Quiet = False,
) -> None:
    """Write one HTML file to mail: the results table, its notes and every figure inlined (no other files)."""
    with StepStatus(quiet) as steps:
        path = write_html_report(results, out, title=title, sort_by=sort_by, maps=maps, on_step=steps)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, self-contained)")
