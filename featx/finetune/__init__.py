"""End-to-end fine-tuning of a registered backbone, with the reference study's protocol as a preset.

``finetune(data, out, ...)`` trains the whole network (or the layers after ``freeze``) on the labelled
images of ``data``, validates on a split drawn by the same protocol as ``featx classify`` (subject-grouped
by default), and leaves in ``out``: ``settings.json``, ``history.csv``, ``curves.png``, ``confusion.png``,
``results.json``/``.md``/``.csv`` (one :class:`featx.results.ResultRow`) and ``best.pt`` (``keep``: ``last.pt``
or both; ``last.pt`` is there while the run is unfinished).

``best.pt`` is a featx checkpoint that ``featx extract --weights best.pt`` reads (hybrid mode); ``last.pt``
also holds the optimizer, scheduler, scaler and RNG states so that ``resume=True`` continues an
interrupted run exactly (on the CPU, bit for bit). Every file is written atomically. Both checkpoints'
cards carry the run's provenance (:mod:`featx.provenance`: the images it trained and validated on), which
``extract`` copies into the store so that ``classify`` never scores a row the network has seen as unseen.
Unreadable images are left out and listed in ``skipped.csv`` (``strict=True`` stops at the first).

Modules: :mod:`~featx.finetune.presets` (settings), :mod:`~featx.finetune.split` (images and split),
:mod:`~featx.finetune.plan` (what a run is), :mod:`~featx.finetune.batches` (decode workers and device batches),
:mod:`~featx.finetune.loop` (training), :mod:`~featx.finetune.checkpoint` (the run folder's files),
:mod:`~featx.finetune.events` (progress), :mod:`~featx.finetune.run` (``finetune``),
:mod:`~featx.finetune.settings` (:class:`FinetuneSettings`, the options as one typed value).
"""
from featx.finetune.checkpoint import KEEP
from featx.finetune.events import BatchInfo, Callback, EpochInfo, EventKind, RunSummary, StartInfo, WarningInfo
from featx.finetune.presets import (
                                    CLASS_WEIGHTS,
                                    OPTIMIZERS,
                                    PRESET_NOTES,
                                    PRESETS,
                                    SCHEDULES,
                                    default_settings,
                                    preset_warning,
                                    resolve_settings,
)
from featx.finetune.run import finetune
from featx.finetune.settings import FinetuneSettings
from featx.finetune.split import HOLDOUT_FOLDS
from featx.imports import callable_module

__all__ = ["CLASS_WEIGHTS", "HOLDOUT_FOLDS", "KEEP", "OPTIMIZERS", "PRESETS", "PRESET_NOTES", "SCHEDULES",
           "BatchInfo", "Callback", "EpochInfo", "EventKind", "FinetuneSettings", "RunSummary", "StartInfo",
           "WarningInfo",
           "default_settings", "finetune", "preset_warning", "resolve_settings"]

callable_module(__name__, "finetune")  # featx.finetune(...) (see featx/__init__.py)
