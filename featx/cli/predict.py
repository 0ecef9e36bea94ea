"""`featx predict`: a saved model applied to new images or a feature store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import INTERRUPT_LINES, app, console, loads_torch, on_interrupt, user_errors
from featx.cli.options import (
    DATA,
    OUTPUT,
    RUN,
    Device,
    Workers,
)
from featx.cli.parsing import (
    parse_stores,
)


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["predict"])
@loads_torch
def predict(
    model: Annotated[Path, typer.Argument(help="A model saved by `featx classify --save`: .skops (safe to load; "
                                               "card NAME.skops.json) or, with --trust-pickle, .joblib (a pickle; "
                                               "card NAME.json).")],
    data: Annotated[Path | None, typer.Argument(help="Images to predict (any layout `featx extract` "
                                                        "reads); not needed with --store.")] = None,
    split: Annotated[str | None, typer.Option(help="Only this split, e.g. final.", rich_help_panel=DATA)] = None,
    store: Annotated[str | None, typer.Option(help="Read features from this store (a.h5+b.h5 for fused) "
                                                      "instead of extracting; it must match the model.",
                                              rich_help_panel=DATA)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write, one row per requested image: path, "
                                                         "prediction, probability (or score), error.",
                                      rich_help_panel=OUTPUT)] = Path("predictions.csv"),
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass when extracting.",
                                            rich_help_panel=RUN)] = 32,
    workers: Workers = None,
    cache: Annotated[Path | None, typer.Option(help="Keep the extracted features in this folder (reused next "
                                                       "time); default: a temporary folder.",
                                               rich_help_panel=DATA)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any requested image could not be "
                                                          "predicted (the CSV is still written).",
                                         rich_help_panel=OUTPUT)] = False,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Load a .joblib model: a pickle, which runs "
                                                                      "any code it holds when loaded; only for files "
                                                                      "you made. Share and predict .skops instead.")]
    = False,
) -> None:
    """Predict new images with a saved model; one CSV row per requested image.

    Images that could not be predicted get a row too, with the reason in its error column."""
    from featx.workflows.predict import predict as run_predict  # deferred: torch, which `featx --help` does not need

    stores = parse_stores(store) if store else None
    summary = run_predict(model, data, split=split, store=stores, out=out, device=device, batch_size=batch_size,
                          workers=workers, cache=cache, strict=strict, trust_pickle=trust_pickle)
    counts = ", ".join(f"{c} {n}" for c, n in summary.counts.items())
    console.print(f"wrote {summary.rows} rows to [bold]{escape(str(summary.out))}[/]: {summary.predicted} "
                  f"predicted ({escape(counts)}; column {summary.output}), {summary.failed} could not be "
                  "predicted", soft_wrap=True)
    if summary.failed:
        path, error = summary.errors[0]
        console.print(f"[yellow]warning:[/] {summary.failed} image(s) could not be predicted (see the error "
                      f"column), first: {escape(path)}: {escape(error)}", highlight=False, soft_wrap=True)
