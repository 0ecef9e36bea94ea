"""`featx hybrid`: per outer subject fold, fine-tune, extract, fit heads, test on held-out subjects."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from featx.cli.app import app, console, user_errors


@app.command()
@user_errors
def hybrid(
    data: Annotated[Path, typer.Argument(help="Image root (C-NMC, ROOT/<class>/...) or a CSV manifest "
                                              "path,label,subject[,split]; every labelled image needs a subject.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: fold_<k>/ (fine-tune run, features.h5, "
                                                         "result.json), settings.json, results.*.")],
    backbone: Annotated[str, typer.Option(help="Backbone: vgg16, alexnet or cnn.")] = "vgg16",
    heads: Annotated[str, typer.Option(help="Comma-separated heads fit on each fold's tuned features.")]
    = "softmax,logistic,svm,xgboost",
    taps: Annotated[Optional[str], typer.Option(help="Comma-separated taps, each possibly fused (fc7,fc7+pool5); "
                                                     "default: the backbone's (fc7; fc for cnn).")] = None,
    folds: Annotated[int, typer.Option(help="Outer subject-grouped folds (those of `featx classify`).")] = 5,
    preprocess: Annotated[str, typer.Option(help="Head preprocessing: standard, none, l2 or pca:N, joined "
                                                 "with +.")] = "standard",
    param: Annotated[Optional[list[str]], typer.Option(help="Head parameter head.key=value or key=value "
                                                            "(repeat).")] = None,
    class_weight: Annotated[Optional[str], typer.Option(help="Heads: balanced weights classes inversely to "
                                                             "their frequency.")] = None,
    positive: Annotated[Optional[str], typer.Option(help="Positive class (default: all when present).")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Starting weights of each fold's fine-tune: imagenet, "
                                                        "none or a file (default: imagenet, none for cnn).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Fine-tuning preset: paper (the reference study).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Fine-tuning epochs per fold (default 10).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Fine-tuning learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per training step (also per forward pass "
                                                           "when extracting; default 32).")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd or adamw.")] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay.")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="cosine, step or none.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout on the fully connected layers.")] = None,
    finetune_class_weight: Annotated[Optional[str], typer.Option(
        "--loss-weight", help="Fine-tuning loss weights per class: none or balanced (default balanced); "
                              "--class-weight is the heads'.")] = None,
    freeze: Annotated[Optional[str], typer.Option(help="head, or a stage name: freeze every stage before it.")]
    = None,
    image_size: Annotated[Optional[int], typer.Option(help="Square input size (default: the backbone's).")] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment",
                                                    help="Training augmentation (default on).")] = None,
    color_jitter: Annotated[Optional[bool], typer.Option("--color-jitter/--no-color-jitter",
                                                         help="Also jitter colours.")] = None,
    early_stopping: Annotated[Optional[str], typer.Option(
        help="Stop each fold's fine-tune when this metric stops improving on its inner validation subjects; "
             "the network is then scored and extracted at best.pt (else at the last epoch).")] = None,
    patience: Annotated[int, typer.Option(help="Epochs without improvement before early stopping.")] = 5,
    jobs: Annotated[int, typer.Option(help="Heads x folds fitted in parallel (joblib processes).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the folds, the fine-tunes, the heads and the bootstrap.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Decode worker processes.")] = None,
    boot: Annotated[int, typer.Option(help="Bootstrap resamples (over subjects) for the 95% intervals.")] = 1000,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
) -> None:
    """The honest hybrid protocol: for each outer subject fold, fine-tune on the training subjects, extract
    with the tuned weights, fit the heads on the training rows and test them and the network on the held-out
    subjects. Resumable: run the same command again after an interruption."""
    from featx.cli.parsing import parse_params, parse_preprocess
    from featx.report import results_table
    from featx.workflows.hybrid import hybrid as run_hybrid

    result = run_hybrid(
        data, out, backbone=backbone, heads=_names(heads), taps=_tap_lists(taps), n_folds=folds, seed=seed,
        preprocess=parse_preprocess(preprocess), params=parse_params(param, _names(heads)),
        class_weight=class_weight, positive=positive, jobs=jobs, n_boot=boot,
        weights=weights, preset=preset, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
        momentum=momentum, weight_decay=weight_decay, schedule=schedule, dropout=dropout,
        finetune_class_weight=finetune_class_weight, freeze=freeze, image_size=image_size, augment=augment,
        color_jitter=color_jitter, early_stopping=early_stopping, patience=patience, device=device,
        workers=workers, plots=not no_plots, callback=_progress)
    rows = result["rows"]
    console.print(results_table(rows, title="featx hybrid"))
    note = rows[0].settings.get("cv_note")
    lines = [rows[0].protocol_label + (f"; {note}" if note else ""), "95% CI of accuracy (bootstrap over subjects): "
             + ", ".join(f"{r.name} {_pct(r.scores['accuracy'].ci_low)}-{_pct(r.scores['accuracy'].ci_high)}%"
                         for r in rows)]
    for line in lines:
        console.print(escape(line), style="dim", highlight=False)
    console.print("wrote " + ", ".join(escape(str(p)) for p in result["paths"].values()), highlight=False)


def _names(text: str) -> list[str]:
    """``svm,logistic`` -> ``["svm", "logistic"]`` (to move to cli/parsing.py)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _tap_lists(text: str | None) -> list[list[str]] | None:
    """``fc7,fc7+pool5`` -> ``[["fc7"], ["fc7", "pool5"]]`` (to move to cli/parsing.py)."""
    return None if text is None else [[t for t in spec.split("+") if t] for spec in _names(text)]


def _pct(value) -> str:
    return "nan" if value is None else f"{100 * value:.1f}"


def _progress(event: str, info: dict) -> None:
    """One line per fold and per fine-tuning epoch."""
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
