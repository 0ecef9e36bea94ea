"""`featx hybrid`: per outer subject fold, fine-tune, extract, fit heads, test on held-out subjects."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import INTERRUPT_LINES, app, console, loads_torch, on_interrupt, user_errors
from featx.cli.finetune import print_warning
from featx.cli.options import (
    EVALUATION,
    OUTPUT,
    TRAINING,
    Augment,
    Backbone,
    ClassWeight,
    ColorJitter,
    Device,
    Dropout,
    Epochs,
    Freeze,
    ImageSize,
    Jobs,
    LearningRate,
    Momentum,
    NoPlots,
    Optimizer,
    Param,
    Patience,
    Positive,
    Preprocess,
    Preset,
    Quiet,
    Schedule,
    Seed,
    StartWeights,
    Taps,
    WeightDecay,
    WeightsNeverSawImages,
    Workers,
)
from featx.cli.parsing import parse_name_list, parse_params, parse_preprocess, parse_tap_groups
from featx.cli.progress import Bar
from featx.cli.results_table import results_table


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["hybrid"])
@loads_torch
def hybrid(
    data: Annotated[Path, typer.Argument(help="Image root (C-NMC, ROOT/<class>/...) or a CSV manifest "
                                              "path,label,subject[,split]; every labelled image needs a subject.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: fold_<k>/ (fine-tune run, features.h5, "
                                                         "result.json), settings.json, results.*.",
                                      rich_help_panel=OUTPUT)],
    backbone: Backbone = "vgg16",
    heads: Annotated[str, typer.Option(help="Comma-separated heads fit on each fold's tuned features.",
                                       rich_help_panel=EVALUATION)] = "softmax,logistic,svm,xgboost",
    taps: Taps = None,
    folds: Annotated[int, typer.Option(help="Outer subject-grouped folds (those of `featx classify`).",
                                       rich_help_panel=EVALUATION)] = 5,
    preprocess: Preprocess = "standard",
    param: Param = None,
    class_weight: ClassWeight = None,
    positive: Positive = None,
    weights: StartWeights = None,
    preset: Preset = None,
    epochs: Epochs = None,
    lr: LearningRate = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per training step and per forward pass when "
                                                           "extracting (default 32).",
                                                   rich_help_panel=TRAINING)] = None,
    optimizer: Optimizer = None,
    momentum: Momentum = None,
    weight_decay: WeightDecay = None,
    schedule: Schedule = None,
    dropout: Dropout = None,
    finetune_class_weight: Annotated[str | None, typer.Option(
        "--loss-weight", help="Fine-tuning loss weights per class: none or balanced (default balanced); "
                              "--class-weight is the heads'.", rich_help_panel=TRAINING)] = None,
    freeze: Freeze = None,
    image_size: ImageSize = None,
    augment: Augment = None,
    color_jitter: ColorJitter = None,
    early_stopping: Annotated[str | None, typer.Option(
        help="Stop each fold's fine-tune when this metric stops improving on its inner validation subjects, "
             "then score and extract at best.pt (else at the last epoch).", rich_help_panel=TRAINING)] = None,
    patience: Patience = 5,
    weights_never_saw_images: WeightsNeverSawImages = False,
    jobs: Jobs = None,
    seed: Seed = 0,
    device: Device = "auto",
    workers: Workers = None,
    no_plots: NoPlots = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune, extract and fit heads inside each outer subject fold: the honest hybrid protocol.

    For each outer subject fold, fine-tune on the training subjects, extract with the tuned weights, fit the
    heads on the training rows and test them and the network on the held-out subjects. Resumable: run the
    same command again after an interruption."""
    # deferred: torch, which `featx --help` does not need
    from featx.evaluation import Hybrid
    from featx.finetune import FinetuneSettings
    from featx.heads import HeadSettings

    # deferred: as above
    from featx.workflows.hybrid import hybrid as run_hybrid

    head_names = parse_name_list(heads)
    tuning = FinetuneSettings(weights=weights, preset=preset, epochs=epochs, lr=lr, batch_size=batch_size,
                              optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
                              dropout=dropout, class_weight=finetune_class_weight, freeze=freeze,
                              image_size=image_size, augment=augment, color_jitter=color_jitter,
                              early_stopping=early_stopping, patience=patience,
                              weights_never_saw_images=weights_never_saw_images)
    heads_settings = HeadSettings(preprocess=parse_preprocess(preprocess), params=parse_params(param, head_names),
                                  class_weight=class_weight, device=device, seed=seed)
    with _Progress(quiet) as progress:
        result = run_hybrid(data, out, backbone=backbone, heads=head_names, taps=parse_tap_groups(taps),
                            folds=Hybrid(folds, seed), heads_settings=heads_settings, finetune=tuning,
                            positive=positive, jobs=jobs, device=device, workers=workers, plots=not no_plots,
                            callback=progress)
    rows = result.rows
    console.print(results_table(rows, title="featx hybrid"))
    note = rows[0].settings.get("cv_note")
    lines = [rows[0].protocol_label + (f"; {note}" if note else ""), "95% CI of accuracy (subject jackknife): "
             + ", ".join(f"{r.name} {_pct(r.scores['accuracy'].ci_low)}-{_pct(r.scores['accuracy'].ci_high)}%"
                         for r in rows)]
    for line in lines:
        console.print(escape(line), style="dim", highlight=False)
    console.print("wrote " + ", ".join(escape(str(p)) for p in result.paths.values()), highlight=False)


def _pct(value) -> str:
    return "nan" if value is None else f"{100 * value:.1f}"


class _Progress:
    """One line per fold and per fine-tuning epoch, a bar over the heads' fits; warnings alone with -q."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar: Bar | None = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, event: str, info: dict) -> None:
        if event == "warning":
            print_warning(info)
        elif event == "fit":
            self.bar.update(info["done"], info["total"], f"heads on {info['tap']}")
        elif not self.quiet:
            _line(event, info)
        if event == "heads":  # a bar per tap's grid
            if self.bar is not None:
                self.bar.__exit__(None, None, None)
            self.bar = Bar("fit", self.quiet).__enter__()


def _line(event: str, info: dict) -> None:
    where = f"fold {info['fold']}/{info['n_folds']}" if info.get("fold") else "all folds"
    if event == "fold":
        if info["status"] == "start":
            console.print(f"[bold]{where}[/]: fine-tuning on {info['n_train']} images of "
                          f"{len(info['train_subjects'])} subjects, testing on {info['n_test']} images of subjects "
                          f"{escape(', '.join(info['test_subjects']))}", highlight=False)
        elif info["status"] == "skipped":
            console.print(f"[bold]{where}[/]: finished earlier, reused")
        else:
            console.print(f"[bold]{where}[/]: done (last-epoch training accuracy {info['train_acc']:.3f})")
    elif event == "epoch":
        console.print(f"{where} epoch {info['epoch']:>3}  train loss {info['train_loss']:.4f} acc "
                      f"{info['train_acc']:.3f}  inner val loss {info['val_loss']:.4f} acc {info['val_acc']:.3f}"
                      f"  {info['seconds']:.1f}s")
    elif event == "heads":
        console.print(f"{where}: heads {', '.join(info['heads'])} on tap {escape(info['tap'])}", highlight=False)
