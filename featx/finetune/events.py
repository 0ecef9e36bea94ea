"""What a run reports while it trains, and what it returns.

``finetune(callback=...)`` calls ``callback(kind, info)`` with these kinds, in order:

- ``"warning"`` (:class:`WarningInfo`): before ``"start"``, for settings that will not do what the caller
  likely expects (``preset="paper"`` from random weights); without a callback it goes to :func:`warnings.warn`;
- ``"start"`` (:class:`StartInfo`): once, before the first step (``epoch`` > 0 when resuming);
- ``"batch"`` (:class:`BatchInfo`): after every training step (``steps`` per epoch; the step's loss and the
  epoch's so far, read from the one wait for the device a step has anyway);
- ``"epoch"`` (:class:`EpochInfo`): after every epoch, once ``last.pt`` holds it;
- ``"end"`` (:class:`RunSummary`): once, after every output is written; ``finetune`` returns the same dict.

An exception raised by the callback stops the run (``KeyboardInterrupt`` after an ``"epoch"`` event leaves a
run that ``resume=True`` continues).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypedDict

from featx.results import ResultRow

EventKind = Literal["warning", "start", "batch", "epoch", "end"]
Callback = Callable[[str, dict], None]


class WarningInfo(TypedDict):
    message: str  # arguments spelled as Python (weights='none')
    template: str  # the same with featx.errors.arg markers (FeatxError(template).render spells them as flags)


class StartInfo(TypedDict):
    settings: dict  # the run's settings (as in settings.json)
    n_train: int
    n_val: int
    epoch: int  # epochs already done (0 for a new run)


class BatchInfo(TypedDict):
    epoch: int
    step: int  # 1-based
    steps: int  # steps in this epoch
    loss: float  # the step's training loss
    mean_loss: float  # the epoch's training loss so far (mean over its images)


class EpochInfo(TypedDict):
    """A ``history.csv`` line and what early stopping makes of it."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    val_f1_weighted: float
    lr: float
    seconds: float
    best_epoch: int  # best epoch so far by the monitored metric (``best.pt``)
    monitor: str  # the validation metric watched ("loss" without early stopping)
    monitor_value: float
    stopping: bool  # early stopping ends the run after this epoch
    timings: dict[str, float]  # seconds: train (the pass, data_wait included), data_wait (waiting for batches),
    # validate (validate_data_wait included), validate_data_wait, metrics, checkpoints (history.csv, best.pt when
    # it improved, last.pt)


class SkippedImage(TypedDict):
    path: str
    error: str


class RunSummary(TypedDict):
    """What ``finetune`` returns: the paths of its outputs, the result row and how training went."""

    out: Path
    best: Path | None  # None when ``keep`` removed it
    last: Path | None
    history: Path
    settings: Path
    card: Path
    curves: Path
    confusion: Path
    results: dict[str, Path]  # results.json/.csv/.md (and roc.png as "roc")
    row: ResultRow  # the scored epoch (the last one; the best one with early stopping)
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    settings_used: dict
    history_rows: list[dict]
    provenance: Path
    skipped: list[SkippedImage]
    skipped_csv: Path
    already_finished: bool  # resume=True on a finished run: nothing was trained, the outputs were read back
