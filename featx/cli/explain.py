"""`featx explain`: class-activation maps (Grad-CAM, occlusion) of a fine-tuned network on chosen cells."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import app, console, loads_torch, on_interrupt, user_errors
from featx.cli.options import Device, Quiet
from featx.cli.progress import Bar
from featx.explain.methods import METHODS


@app.command()
@user_errors
@on_interrupt("no sheet or CSV was written (both are written once every image is mapped); run the same command "
              "again")
@loads_torch
def explain(
    run: Annotated[Path, typer.Argument(help="A `featx finetune` run folder (its best.pt, else last.pt).")],
    data: Annotated[Path, typer.Argument(help="The images (the run's data, or other data of the same classes).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for explain.png (the sheet) and explain.csv.")],
    images: Annotated[int, typer.Option(help="How many cells the network never saw, balanced across its classes "
                                             "(ignored with --paths).")] = 8,
    paths: Annotated[list[str] | None, typer.Option(
        "--paths", help="Map these images (relative to DATA; repeat the option), whatever the network saw.")] = None,
    layer: Annotated[str | None, typer.Option(
        help="Module to take Grad-CAM at (e.g. model.layer3 or layer3); default: the last spatial map, the last "
             "convolutional stage.")] = None,
    methods: Annotated[str, typer.Option("--method", "--methods",
                                         help=f"Maps to draw, comma-separated: {', '.join(METHODS)}.")]
    = ",".join(METHODS),
    seed: Annotated[int, typer.Option(help="Which unseen cells --images picks.")] = 0,
    device: Device = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace explain.png and explain.csv in --out.")] = False,
    quiet: Quiet = False,
) -> None:
    """Grad-CAM and occlusion maps of the class a fine-tuned network predicts, one row per cell (Captum).

    The CSV holds per cell the predicted class, its probability, the role the cell had for the network (trained on,
    chose the epoch, unseen) and, when DATA holds nucleus masks (`featx synth --masks`), the share of each map's
    positive mass inside the nucleus.
    """
    from featx.explain import explain as explain_run  # deferred: torch and Captum, which `featx --help` does not need

    with Bar("image", quiet) as bar:
        result = explain_run(run, data, out=out, images=images, paths=paths or None, layer=layer,
                             methods=methods.split(","), device=device, seed=seed, overwrite=force,
                             on_image=lambda done, total, item: bar.update(done, total, "explain"))
    console.print(f"mapped {len(result.images)} images with {', '.join(result.methods)} at {result.layer} of "
                  f"{escape(str(result.checkpoint))}: {escape(str(result.sheet))}, {escape(str(result.table))}",
                  highlight=False, soft_wrap=True)
