"""The fine-tuning options as one typed value: :class:`FinetuneSettings` (what ``featx.hybrid`` fine-tunes
each fold with; ``None`` = the preset's or the backbone's default, as in :func:`featx.finetune.finetune`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from featx.backbones import WeightsSpec
from featx.finetune.presets import resolve_settings

__all__ = ["RESOLVED", "FinetuneSettings"]

#: The fields that :func:`resolve_settings` merges with the preset and the backbone's defaults.
RESOLVED = ("weights", "epochs", "lr", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "dropout",
             "class_weight", "image_size", "augment", "color_jitter")


@dataclass(frozen=True)
class FinetuneSettings:
    """What a fine-tune trains with, as :func:`featx.finetune.finetune` takes it (each ``None``: the value of
    ``preset``, else the backbone's default; :func:`featx.finetune.resolve_settings`). ``class_weight`` is the
    loss's class weights (``none`` or ``balanced``), not the heads'."""

    weights: str | Path | WeightsSpec | None = None
    preset: str | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    dropout: float | None = None
    class_weight: str | None = None
    freeze: str | None = None
    image_size: int | None = None
    augment: bool | None = None
    color_jitter: bool | None = None
    early_stopping: str | None = None
    patience: int = 5
    weights_never_saw_images: bool = False

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`featx.finetune.finetune` (``weights`` as text)."""
        return dict(asdict(self), weights=None if self.weights is None else str(self.weights))

    def resolve(self, backbone: str) -> dict[str, Any]:
        """The settings a fine-tune of ``backbone`` uses (:func:`featx.finetune.resolve_settings`: the preset or
        the defaults, overridden by every field given; with ``sources`` and ``notes``)."""
        given = self.options()
        return resolve_settings(backbone, self.preset, **{key: given[key] for key in RESOLVED})
