"""`featx finetune`: train a whole backbone end to end (the reference study's protocol with --preset paper)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from featx.cli.app import app, console, err_console, user_errors
from featx.errors import FeatxError
from featx.finetune import finetune as run_finetune
from featx.report import results_table


@app.command()
@user_errors
def finetune(
    data: Annotated[Path, typer.Argument(help="Image root: C-NMC (TCIA or Kaggle layout), ROOT/<class>/..., "
                                              "or a CSV manifest path,label[,subject][,split].")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, history, plots, results.")],
    backbone: Annotated[str, typer.Option(help="Backbone: vgg16, alexnet or cnn.")] = "vgg16",
    weights: Annotated[Optional[str], typer.Option(
        help="Starting weights: imagenet, none (seeded random) or a state dict / featx checkpoint "
             "(default: imagenet, none for cnn).")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help="paper: the reference study (224x224, ImageNet, SGD lr 1e-5 momentum 0, 15 epochs, dropout 0.5, "
             "softmax cross-entropy). Any option given explicitly overrides the preset.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 10; paper 15).")] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Learning rate (default 1e-4 pretrained / 1e-3 from scratch; paper 1e-5).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per training step (default 32).")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd or adamw (default adamw; paper sgd).")] = None,
    momentum: Annotated[Optional[float], typer.Option(
        help="SGD momentum (default 0.9; paper 0, Keras' SGD default).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(
        help="Weight decay (default 0.01 for AdamW; paper 0).")] = None,
    schedule: Annotated[Optional[str], typer.Option(
        help="Learning-rate schedule per epoch: cosine, step (x0.1 every third of the run) or none "
             "(default cosine; paper none).")] = None,
    dropout: Annotated[Optional[float], typer.Option(
        help="Dropout rate on the fully connected layers (default 0.5).")] = None,
    class_weight: Annotated[Optional[str], typer.Option(
        help="none or balanced (loss weights inverse to class frequency; default balanced, paper none).")] = None,
    freeze: Annotated[Optional[str], typer.Option(
        help="head: train only the network's classifier layer; a stage name (e.g. fc6): freeze every stage before it.")] = None,
    image_size: Annotated[Optional[int], typer.Option(
        help="Square input size (default: the backbone's, 224; AlexNet needs at least 63).")] = None,
    augment: Annotated[Optional[bool], typer.Option(
        "--augment/--no-augment",
        help="Flips, 90-degree rotations and a small affine on training images (default on; paper off).")] = None,
    color_jitter: Annotated[Optional[bool], typer.Option(
        "--color-jitter/--no-color-jitter", help="Also jitter brightness/contrast/saturation/hue.")] = None,
    val: Annotated[str, typer.Option(
        help="Validation set: subject (subject-grouped holdout, the protocol of classify), image (image-level "
             "holdout, leaks subjects), a split such as fold_2, or prelim (C-NMC's preliminary test).")] = "subject",
    eval_set: Annotated[Optional[str], typer.Option(
        "--eval", help="As in classify: train on the training folds, validate on this split (e.g. prelim); "
                       "the same as --val SPLIT.")] = None,
    early_stopping: Annotated[Optional[str], typer.Option(
        help="Stop when this validation metric stops improving: loss, accuracy, f1, f1_weighted, "
             "balanced_accuracy, roc_auc (best.pt is the best epoch by it; by loss otherwise).")] = None,
    patience: Annotated[int, typer.Option(help="Epochs without improvement before early stopping.")] = 5,
    positive: Annotated[Optional[str], typer.Option(
        help="Positive class for precision/recall/F1 (default: all when present).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Decode worker processes (default: cores - 1, "
                                                        "at most 4).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling, augmentation and dropout.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out from last.pt "
                                                          "(refused if a setting differs).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (per-epoch lines only).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unreadable image (default: leave "
                                                          "it out, list it in OUT/skipped.csv and warn).")] = False,
) -> None:
    """Fine-tune a whole network end to end and report it in the format of `featx compare`.

    The run folder holds best.pt (use it with `featx extract --weights`), last.pt (for --resume),
    history.csv, curves.png, confusion.png, results.json/.md/.csv, settings.json, provenance.csv (the
    images it trained and validated on; `extract` carries them into the store) and skipped.csv.
    """
    if eval_set is not None:
        if val not in ("subject", eval_set):
            raise FeatxError(f"--val {val} and --eval {eval_set} name two validation sets; give one")
        val = eval_set
    progress = _Progress(quiet)
    try:
        with progress:
            summary = run_finetune(
                data, out, backbone=backbone, weights=weights, preset=preset, epochs=epochs, lr=lr,
                batch_size=batch_size, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                schedule=schedule, dropout=dropout, class_weight=class_weight, freeze=freeze,
                image_size=image_size, augment=augment, color_jitter=color_jitter, val=val,
                early_stopping=early_stopping, patience=patience, positive=positive, device=device,
                workers=workers, seed=seed, resume=resume, callback=progress, strict=strict)
    except KeyboardInterrupt:
        if progress.last_epoch is None:
            raise
        err_console.print(f"[bold red]interrupted:[/] epoch {progress.last_epoch} is saved in {out / 'last.pt'}; "
                          "run the same command with --resume to continue", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(results_table([summary["row"]], title="featx finetune"))
    console.print(f"best epoch {summary['best_epoch']} of {summary['epochs_run']}"
                  f"{' (stopped early)' if summary['stopped_early'] else ''}; run folder [bold]{summary['out']}[/]: "
                  f"best.pt, last.pt, history.csv, {Path(summary['curves']).name}, "
                  f"{Path(summary['confusion']).name}, results.json, provenance.csv")
    skipped = summary.get("skipped") or []
    if skipped:
        err_console.print(f"[bold yellow]warning:[/] {len(skipped)} unreadable image(s) left out of training and "
                          f"validation, first: {escape(skipped[0]['error'])}; all listed in {summary['skipped_csv']} "
                          "(--strict stops instead)", highlight=False, soft_wrap=True)


class _Progress:
    """Turns the library's progress events (featx.finetune.events) into a rich progress bar and one line
    per epoch."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.task = None
        self.task_epoch = None
        self.last_epoch: int | None = None  # the last epoch saved in last.pt

    def __enter__(self):
        if not self.quiet:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console,
                                transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "start":
            s = info["settings"]
            head = "resuming after epoch %d; " % info["epoch"] if info["epoch"] else ""
            console.print(f"{head}fine-tuning [bold]{s['backbone']}[/] (weights {s['weights']}, "
                          f"preset {s['preset'] or 'none'}) on {info['n_train']} images, validating on "
                          f"{info['n_val']} ({s['protocol_label']}); {s['optimizer']} lr {s['lr']:g}, "
                          f"{s['epochs']} epochs, {s['image_size']}px, batch {s['batch_size']}")
        elif kind == "batch" and self.bar is not None:
            if self.task_epoch != info["epoch"]:
                if self.task is not None:
                    self.bar.remove_task(self.task)
                self.task = self.bar.add_task(f"epoch {info['epoch']}", total=info["steps"], loss="-")
                self.task_epoch = info["epoch"]
            self.bar.update(self.task, completed=info["step"], loss=f"{info['loss']:.4f}")
        elif kind == "epoch":
            self.last_epoch = info["epoch"]
            best = " *" if info["best_epoch"] == info["epoch"] else ""
            console.print(f"epoch {info['epoch']:>3}  train loss {info['train_loss']:.4f} acc {info['train_acc']:.3f}"
                          f"  val loss {info['val_loss']:.4f} acc {info['val_acc']:.3f}"
                          f" f1w {info['val_f1_weighted']:.3f}  lr {info['lr']:.2e}  {info['seconds']:.1f}s{best}")
            if info.get("stopping"):
                console.print(f"early stopping: validation {info['monitor']} has not improved since epoch "
                              f"{info['best_epoch']}")
