"""`featx finetune`: train a whole backbone end to end (the reference study's protocol with --preset paper)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from featx.cli.app import app, console, err_console, flag, interrupted, loads_torch, on_interrupt, user_errors
from featx.cli.options import (
    DATA,
    EVALUATION,
    OUTPUT,
    TRAINING,
    Augment,
    Backbone,
    ColorJitter,
    Device,
    Dropout,
    EarlyStopping,
    Epochs,
    Freeze,
    Images,
    ImageSize,
    LearningRate,
    Momentum,
    Optimizer,
    Patience,
    Positive,
    Preset,
    Schedule,
    Seed,
    StartWeights,
    TrainBatch,
    WeightDecay,
    WeightsNeverSawImages,
    Workers,
)
from featx.cli.results_table import results_table
from featx.errors import FeatxError


def _nothing_saved(out: Path, resume: bool) -> str:
    """What an interrupt before this run saved an epoch leaves: a resumed run's last.pt as it was, else nothing
    (the library removes what the run wrote)."""
    if resume and (out / "last.pt").is_file():
        return f"{out / 'last.pt'} is kept as it was; run the same command again to resume from it"
    return "no epoch was saved, so nothing of this run was kept; run the same command again to start over"


@app.command()
@user_errors
@on_interrupt(lambda kwargs: _nothing_saved(Path(kwargs["out"]), kwargs["resume"]))
@loads_torch
def finetune(
    data: Images,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, history, plots, results.",
                                      rich_help_panel=OUTPUT)],
    backbone: Backbone = "vgg16",
    weights: StartWeights = None,
    weights_never_saw_images: WeightsNeverSawImages = False,
    preset: Preset = None,
    epochs: Epochs = None,
    lr: LearningRate = None,
    batch_size: TrainBatch = None,
    optimizer: Optimizer = None,
    momentum: Momentum = None,
    weight_decay: WeightDecay = None,
    schedule: Schedule = None,
    dropout: Dropout = None,
    class_weight: Annotated[str | None, typer.Option(
        help="none or balanced (loss weights inverse to class frequency; default balanced, paper none).",
        rich_help_panel=TRAINING)] = None,
    freeze: Freeze = None,
    image_size: ImageSize = None,
    augment: Augment = None,
    color_jitter: ColorJitter = None,
    val: Annotated[str, typer.Option(
        help="Validation set: subject (subject-grouped holdout), image (image-level, leaks subjects), a split "
             "such as fold_2, or prelim (C-NMC's preliminary test).", rich_help_panel=EVALUATION)] = "subject",
    eval_set: Annotated[str | None, typer.Option(
        "--eval", help="As in classify: validate on this split (e.g. prelim); the same as --val SPLIT.",
        rich_help_panel=EVALUATION)] = None,
    early_stopping: EarlyStopping = None,
    patience: Patience = 5,
    positive: Positive = None,
    device: Device = "auto",
    workers: Workers = None,
    seed: Seed = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out from last.pt "
                                                          "(refused if a setting differs); on a finished run, "
                                                          "print its results again.",
                                         rich_help_panel=TRAINING)] = False,
    keep: Annotated[str, typer.Option(
        help="Checkpoints kept when the run finishes: best (default; what extract --weights reads), last or "
             "both. last.pt, 2-3x larger (optimizer state), is kept only until the run finishes.",
        rich_help_panel=OUTPUT)] = "best",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (per-epoch lines only).",
                                        rich_help_panel=OUTPUT)] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unreadable image (default: leave "
                                                          "it out, list it in OUT/skipped.csv and warn).",
                                         rich_help_panel=DATA)] = False,
) -> None:
    """Fine-tune a whole network end to end and report it in the format of `featx compare`.

    The run folder holds best.pt (use it with `featx extract --weights`; see --keep), last.pt while the run
    is unfinished (for --resume), history.csv, curves.png, confusion.png, results.json/.md/.csv,
    settings.json, provenance.csv (the images it trained and validated on; `extract` carries them into the
    store) and skipped.csv.
    """
    from featx.finetune import FinetuneSettings  # deferred: torch, which `featx --help` does not need
    from featx.finetune import finetune as run_finetune

    if eval_set is not None:
        if val not in ("subject", eval_set):
            raise FeatxError(f"--val {val} and --eval {eval_set} name two validation sets; give one")
        val = eval_set
    progress = _Progress(quiet)
    try:
        with progress:
            tuning = FinetuneSettings(
                weights=weights, preset=preset, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                momentum=momentum, weight_decay=weight_decay, schedule=schedule, dropout=dropout,
                class_weight=class_weight, freeze=freeze, image_size=image_size, augment=augment,
                color_jitter=color_jitter, early_stopping=early_stopping, patience=patience,
                weights_never_saw_images=weights_never_saw_images)
            summary = run_finetune(data, out, tuning, backbone=backbone, val=val, positive=positive, device=device,
                                   workers=workers, seed=seed, resume=resume, callback=progress, strict=strict,
                                   keep=keep)
    except KeyboardInterrupt as exc:
        if progress.last_epoch is None:  # no epoch of this run saved: _nothing_saved says what is left
            raise
        raise interrupted(exc, f"epoch {progress.last_epoch} is saved in {out / 'last.pt'}; run the same command "
                               "with --resume to continue") from None
    if summary.get("already_finished"):
        console.print(f"the run in [bold]{escape(str(summary['out']))}[/] finished earlier; nothing to train, its "
                      "results:", highlight=False)
    console.print(results_table([summary["row"]], title="featx finetune"))
    kept = [Path(summary[k]).name for k in ("best", "last") if summary.get(k)]
    scored, best = summary["row"].scored_epoch, summary["best_epoch"]
    holds = "the same epoch" if scored == best else f"epoch {best}"
    console.print(f"scored epoch {scored} of {summary['epochs_run']}"
                  f"{' (stopped early)' if summary['stopped_early'] else ''}; best.pt holds {holds} (the weights "
                  f"extract --weights reads); run folder [bold]{summary['out']}[/]: "
                  f"{', '.join(kept + ['history.csv'])}, {Path(summary['curves']).name}, "
                  f"{Path(summary['confusion']).name}, results.json, provenance.csv")
    skipped = summary.get("skipped") or []
    if skipped:
        err_console.print(f"[bold yellow]warning:[/] {len(skipped)} unreadable image(s) left out of training and "
                          f"validation, first: {escape(skipped[0]['error'])}; all listed in {summary['skipped_csv']} "
                          "(--strict stops instead)", highlight=False, soft_wrap=True)


def print_warning(info: dict) -> None:
    """A library warning event (featx.finetune.events.WarningInfo) as one yellow line, arguments as flags."""
    err_console.print(f"[bold yellow]warning:[/] {escape(FeatxError(info['template']).render(flag))}",
                      highlight=False, soft_wrap=True)


class _Progress:
    """Turns the library's progress events (featx.finetune.events) into a rich progress bar and one line
    per epoch."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.task = None
        self.task_epoch = None
        self.epoch_start = 0.0
        self.last_epoch: int | None = None  # the last epoch saved in last.pt

    def __enter__(self):
        if not self.quiet:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]} batch/s  loss {task.fields[loss]}"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "warning":
            print_warning(info)
        elif kind == "start":
            s = info["settings"]
            self.last_epoch = info["epoch"] or None  # a resumed run's last.pt
            head = f"resuming after epoch {info['epoch']}; " if info["epoch"] else ""
            console.print(f"{head}fine-tuning [bold]{s['backbone']}[/] (weights {s['weights']}, "
                          f"preset {s['preset'] or 'none'}) on {info['n_train']} images, validating on "
                          f"{info['n_val']} ({s['protocol_label']}); {s['optimizer']} lr {s['lr']:g}, "
                          f"{s['epochs']} epochs, {s['image_size']}px, batch {s['batch_size']}; "
                          f"{s.get('val_choose', '')}", highlight=False)
        elif kind == "batch" and self.bar is not None:
            if self.task_epoch != info["epoch"]:
                if self.task is not None:
                    self.bar.remove_task(self.task)
                self.task = self.bar.add_task(f"epoch {info['epoch']}", total=info["steps"], loss="-", rate="-")
                self.task_epoch, self.epoch_start = info["epoch"], time.perf_counter()
            rate = info["step"] / max(time.perf_counter() - self.epoch_start, 1e-9)
            self.bar.update(self.task, completed=info["step"], loss=f"{info['mean_loss']:.4f}", rate=f"{rate:.2f}")
        elif kind == "epoch":
            self.last_epoch = info["epoch"]
            best = " *" if info["best_epoch"] == info["epoch"] else ""
            console.print(f"epoch {info['epoch']:>3}  train loss {info['train_loss']:.4f} acc {info['train_acc']:.3f}"
                          f"  val loss {info['val_loss']:.4f} acc {info['val_acc']:.3f}"
                          f" f1w {info['val_f1_weighted']:.3f}  lr {info['lr']:.2e}  {info['seconds']:.1f}s{best}")
            if info.get("stopping"):
                console.print(f"early stopping: validation {info['monitor']} has not improved since epoch "
                              f"{info['best_epoch']}")
