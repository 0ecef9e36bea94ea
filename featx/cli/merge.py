"""`featx merge`: shard stores into one store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import INTERRUPT_LINES, app, console, on_interrupt, user_errors
from featx.cli.options import Quiet
from featx.cli.progress import Bar
from featx.cli.store_summary import print_summary, warn_skipped
from featx.store import merge_stores, summarize


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["merge"])
def merge(
    parts: Annotated[list[Path], typer.Argument(help="Shard stores of `featx extract --shard I/N`, any order.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The merged store to write.")],
    virtual: Annotated[bool, typer.Option("--virtual", help="Join through HDF5 virtual datasets without copying "
                                                            "the features: the parts must stay beside OUT.")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    quiet: Quiet = False,
) -> None:
    """Join shard stores into the store a single `featx extract` would have written.

    Checks that the parts were made with the same settings from the same data, are finished, and hold every
    row exactly once; OUT is written whole (through OUT.tmp) or not at all. The parts are left in place.
    """
    rows = 0

    def on_part(i: int, n: int, part_rows: int) -> None:
        nonlocal rows
        rows += part_rows
        bar.update(i, n, f"merge -> {out.name}", amount=rows)

    with Bar("part", quiet, rate_unit="row") as bar:
        path = merge_stores(parts, out, virtual=virtual, overwrite=force, on_part=on_part)
    how = "virtual: its features are read from the parts, keep them beside it" if virtual else "copied"
    console.print(f"merged {len(parts)} parts into {escape(str(path))} ({how})", highlight=False, soft_wrap=True)
    summary = summarize(path)
    print_summary(summary)
    warn_skipped(summary)
