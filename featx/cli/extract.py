"""`featx extract`: images through a backbone into a feature store, with a progress bar."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from featx.cli.app import INTERRUPT_LINES, app, loads_torch, on_interrupt, user_errors
from featx.cli.options import (
    DATA,
    NETWORK,
    OUTPUT,
    RUN,
    Backbone,
    Device,
    Images,
    ImageSize,
    Quiet,
    WeightsNeverSawImages,
    Workers,
)
from featx.cli.parsing import parse_extract_taps
from featx.cli.store_summary import print_brief, print_summary, warn_skipped
from featx.store import summarize


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["extract"])
@loads_torch
def extract(
    data: Images,
    out: Annotated[Path, typer.Option("--out", "-o", help="HDF5 store to write (resumed if it exists).",
                                      rich_help_panel=OUTPUT)],
    backbone: Backbone = "vgg16",
    weights: Annotated[str | None, typer.Option(help="imagenet (torchvision cache, TORCH_HOME), none (seeded "
                                                     "random), or a state dict / featx checkpoint (best.pt); "
                                                     "default imagenet, none for cnn.",
                                                rich_help_panel=NETWORK)] = None,
    weights_never_saw_images: WeightsNeverSawImages = False,
    taps: Annotated[str | None, typer.Option("--taps", "--tap", help="Comma-separated taps, e.g. fc7,pool5 or "
                                                                      "layer3,pool (default: every named tap; "
                                                                      "`featx backbones NAME --taps` lists graph "
                                                                      "nodes).",
                                             rich_help_panel=NETWORK)] = None,
    image_size: ImageSize = None,
    pool: Annotated[str, typer.Option(help="avg or max: how maps of graph-node taps (layer3) are pooled over H, W.",
                                      rich_help_panel=NETWORK)] = "avg",
    split: Annotated[list[str] | None, typer.Option(help="Only these splits (repeat): fold_0, fold_1, fold_2, "
                                                            "prelim, final, or a manifest's.",
                                                    rich_help_panel=DATA)] = None,
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", rich_help_panel=RUN)] = 32,
    workers: Workers = None,
    dtype: Annotated[str, typer.Option(help="Stored feature type: float32 or float16.",
                                       rich_help_panel=OUTPUT)] = "float32",
    seed: Annotated[int, typer.Option(help="Seed of random initialisation with --weights none.",
                                      rich_help_panel=NETWORK)] = 0,
    quiet: Quiet = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print the store's whole summary (taps described, "
                                                                 "rows per split and class), as `featx info`.",
                                          rich_help_panel=OUTPUT)] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero when an image or folder cannot be read "
                                                          "(default: skip it, record it in the store, warn).",
                                         rich_help_panel=DATA)] = False,
    shard: Annotated[str | None, typer.Option(
        metavar="I/N", help="Only shard I of N (I from 0): one contiguous block of the single-run order, into "
                            "a resumable part store; join the parts with `featx merge`. Under torchrun each "
                            "rank takes its own shard: leave this out.", rich_help_panel=RUN)] = None,
) -> None:
    """Extract deep features of every image into one HDF5 store (resumable).

    Under torchrun (`torchrun --nproc-per-node N -m featx extract ...`) each rank extracts its shard into
    OUT's part file beside it (vgg16.part-0-of-N.h5), and rank 0 merges the parts into OUT.
    """
    # deferred: these import torch, which would slow down every `featx --help`
    from featx.backbones import get_config
    from featx.distributed import extract_ranks, launch_from_env

    # deferred: as above (the settings check their weights and sizes with featx.backbones)
    from featx.extract import ExtractRun, ExtractSettings
    from featx.extract import extract as run_extract

    launch = launch_from_env()
    settings = ExtractSettings(backbone=backbone, weights=weights, taps=parse_extract_taps(taps),
                               image_size=image_size, pool=pool, dtype=dtype, seed=seed,
                               weights_never_saw_images=weights_never_saw_images)
    run = ExtractRun(splits=split or None, shard=shard, device=device, batch_size=batch_size, workers=workers,
                     strict=strict)
    with _ExtractBar(lambda: f"{get_config(backbone).name} -> {out.name}", quiet or bool(launch and launch.rank)) \
            as bar:
        if launch is None:
            path = run_extract(data, out, settings, run=run, on_progress=bar)
        else:
            path = extract_ranks(data, out, settings, run=run, on_progress=bar, launch=launch)
    if launch is not None and launch.rank != 0:
        return  # rank 0 prints the merged store
    summary = summarize(path)
    (print_summary if verbose else print_brief)(summary)
    warn_skipped(summary)




class _ExtractBar:
    """Draws the library's ``on_progress(done, total)`` reports as a rich bar with images/s; nothing when
    ``quiet``. The first report (rows finished by earlier runs) starts the bar and its clock."""

    def __init__(self, label: Callable[[], str], quiet: bool):
        self.label = label  # called at the first report, once the backbone's name is known to be valid
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task = None
        self.start = 0.0
        self.first = 0  # rows finished before this run: the rate counts only the images of this run

    def __enter__(self) -> _ExtractBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.start, self.first = time.perf_counter(), done
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]} img/s"), TimeElapsedColumn(),
                                TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(self.label(), total=total, completed=done, rate="-")
            self.bar.__enter__()
            return
        rate = (done - self.first) / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, completed=done, rate=f"{rate:.1f}")
