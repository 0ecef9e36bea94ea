"""`featx synth`, `featx extract`, `featx info`."""
from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from featx.cli.app import app, console, err_console, loads_torch, user_errors
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
from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.provenance import ATTR, STATED, UNKNOWN, WEIGHTS_ATTR, parse_attr
from featx.results import WEIGHTS_MARKS
from featx.store import StoreSummary, summarize
from featx.store import verify as verify_store
from featx.store.rowid import bad_metadata_text

#: `featx synth`'s defaults are the library's (sized so that subject-grouped 5-fold CV has 3 subjects per class
#: in every test fold): one place to change them.
_SYNTH = {name: p.default for name, p in inspect.signature(synthesize).parameters.items()}


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the C-NMC-like tree into (created).")],
    subjects_all: Annotated[int, typer.Option(
        help="Training subjects with ALL (leukemic) cells.")] = _SYNTH["subjects_all"],
    subjects_hem: Annotated[int, typer.Option(
        help="Training subjects with normal (HEM) cells.")] = _SYNTH["subjects_hem"],
    cells_per_subject: Annotated[int, typer.Option(help="Cells per training subject.")] = _SYNTH["cells_per_subject"],
    prelim_subjects_all: Annotated[int, typer.Option(
        help="Preliminary-test subjects with ALL cells.")] = _SYNTH["prelim_subjects_all"],
    prelim_subjects_hem: Annotated[int, typer.Option(
        help="Preliminary-test subjects with HEM cells.")] = _SYNTH["prelim_subjects_hem"],
    prelim_cells_per_subject: Annotated[int, typer.Option(
        help="Cells per preliminary-test subject.")] = _SYNTH["prelim_cells_per_subject"],
    final_cells: Annotated[int, typer.Option(
        help="Unlabelled images of the final test phase.")] = _SYNTH["final_cells"],
    image_size: Annotated[int, typer.Option(
        help="Side of each square BMP in pixels (real data: 450).")] = _SYNTH["image_size"],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes identical files.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace C-NMC folders already in OUT.")] = False,
) -> None:
    """Write a synthetic C-NMC 2019 tree (training folds, preliminary test with labels CSV, final test).

    Each subject has its own stain tint, so image-level splits leak exactly as on the real data.
    """
    summary = synthesize(out, subjects_all=subjects_all, subjects_hem=subjects_hem,
                         cells_per_subject=cells_per_subject, prelim_subjects_all=prelim_subjects_all,
                         prelim_subjects_hem=prelim_subjects_hem, prelim_cells_per_subject=prelim_cells_per_subject,
                         final_cells=final_cells, image_size=image_size, seed=seed, overwrite=force)
    console.print(f"wrote synthetic C-NMC data to [bold]{out}[/]")
    console.print_json(json.dumps(summary, default=str))


@app.command()
@user_errors
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
    _print_summary(summary)
    _warn_skipped(summary)


@app.command()
@user_errors
def info(
    store: Annotated[Path, typer.Argument(help="An HDF5 feature store written by `featx extract`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Also check every finished row's features, and every "
                                                          "row's label, path, subject and split, against their "
                                                          "checksums; exit 1 when some do not match.")] = False,
) -> None:
    """Summarise a feature store: settings, taps, rows done, counts per split and class."""
    summary = summarize(store)
    checked = verify_store(store) if verify else None
    if as_json:
        print(json.dumps(dict(summary.as_dict(), verify=checked) if checked else summary.as_dict(), indent=2,
                         default=str))
    else:
        _print_summary(summary)
        _warn_skipped(summary)
    if checked is not None:
        if checked["bad_metadata"]:
            first = checked["bad_metadata_rows"][0]
            raise FeatxError(bad_metadata_text(store, checked["bad_metadata"], first["row"], first["path"]))
        if checked["bad"]:
            raise FeatxError(f"{store}: {checked['bad']} of {checked['checked']} finished rows do not match their "
                             f"checksums (first: {checked['bad_paths'][0]}); the store is damaged: run the same "
                             "`featx extract` again to recompute them")
        if not as_json:
            older = "" if checked["metadata_checked"] else (" (their features: this store's schema is older than "
                                                             "featx's metadata checksums)")
            console.print(f"verified {checked['checked']} finished rows: every one matches its checksums{older}")


def _print_summary(s: StoreSummary) -> None:
    st = s.settings
    console.print(f"[bold]{s.file}[/]  {st.get('backbone')}  weights={st.get('weights')}  "
                  f"input={st.get('input_size')}px  {s.done}/{s.samples} rows done, "
                  f"{s.subjects} subjects, {s.errors} errors")
    console.print("taps:")
    for tap, v in s.taps.items():
        text = v.get("description") or "(not described: a store made before featx described its taps)"
        console.print(f"  {tap} ({v['dim']}): {escape(text)}", highlight=False)
    table = Table("split", *s.classes, "unlabelled", title=None)
    for split, row in s.counts.items():
        table.add_row(split, *[str(row[c]) for c in s.classes], str(row["unlabelled"]))
    console.print(table)
    console.print(f"labels: {escape(s.labels['meaning'])}; classify and compare use the labelled rows",
                  highlight=False)
    exif = s.exif_orientation
    console.print(f"EXIF orientation: {exif}" + (" (a store made before featx turned photos upright by their EXIF "
                                                 "tag)" if exif == "ignored" else ""), highlight=False)
    if st.get("shard"):
        console.print(f"shard {st['shard']} of a collection of {st.get('shard_of_samples')} images; join the parts "
                      "with `featx merge`", highlight=False)
    if st.get("merged") == "virtual":
        console.print("merged with --virtual: the features are read from the part files beside it "
                      "(merged_from); keep them there", highlight=False)
    origin = st.get(WEIGHTS_ATTR)
    if origin in (UNKNOWN, STATED):
        console.print(f"{WEIGHTS_MARKS[origin]}: every result row from this store says so", highlight=False)
    roles = s.network_roles
    if roles:  # features of a fine-tuned featx checkpoint: which rows its network saw
        counts = ", ".join(f"{k} {v}" for k, v in roles.items())
        match = (parse_attr(st.get(ATTR)) or {}).get("match", "")
        console.print(f"fine-tuned network's rows: {counts}; classify tests only rows it never saw "
                      f"(unseen, val). {escape(match)}", highlight=False)


def _warn_skipped(s: StoreSummary) -> None:
    """Warn (stderr) about images recorded as unreadable and folders discovery could not read."""
    if s.unfinished:
        err_console.print(f"[yellow]warning:[/] {escape(s.file)}: {s.unfinished} of {s.samples} rows not "
                          "extracted yet; run the same `featx extract` again to finish", highlight=False,
                          soft_wrap=True)
    if s.errors:
        names = ", ".join(f["path"] for f in s.failed[:3])
        more = f" and {s.errors - 3} more" if s.errors > 3 else ""
        err_console.print(f"[yellow]warning:[/] {s.errors} image(s) could not be read and were skipped: "
                          f"{escape(names)}{more} (first error: {escape(s.failed[0]['error'])}); they are "
                          "recorded in the store, left out of classify/compare, and retried by the next "
                          "`featx extract`", highlight=False, soft_wrap=True)
    folders = s.unreadable_folders or []
    if folders:
        more = f" and {len(folders) - 3} more" if len(folders) > 3 else ""
        err_console.print(f"[yellow]warning:[/] could not read folder(s) {escape(', '.join(folders[:3]))}{more}; "
                          "their images are not in the store", highlight=False, soft_wrap=True)


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
