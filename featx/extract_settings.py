"""What :func:`featx.extract` takes, as two typed values checked where they are made.

:class:`ExtractSettings` is what defines the features: the network, its weights and taps, the input size,
the pooling, the stored type and the seed. A store records them (its identity settings, compared when a
run resumes it; see :data:`featx.store.IDENTITY_KEYS`), so two stores of the same settings and images hold
the same features. :class:`ExtractRun` is which images and how this run computes them: the splits, the
shard, the device, the batch size, the decode workers and ``strict``; none of it changes a feature (the
device decides only the precision a store records: fp16 autocast on CUDA).

``extract(data, out, backbone="cnn", batch_size=8)`` still works: :func:`extract_arguments` maps the
keywords onto the two values.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featx.backbones import WeightsSpec, check_image_size
from featx.errors import FeatxError, arg
from featx.keywords import Slot, typed_arguments
from featx.store.shards import Shard, parse_shard

__all__ = ["DTYPES", "ExtractRun", "ExtractSettings", "extract_arguments"]

DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ExtractSettings:
    """What defines a store's features (recorded in it; a resumed store must match).

    ``weights``: ``"imagenet"``, ``"none"`` (seeded by ``seed``), a file, or a :class:`WeightsSpec`; parsed to a
    WeightsSpec (None: the backbone's default, imagenet where it has ImageNet weights). ``taps``: one name or
    several (None: every named tap). ``image_size``: the input side (None: the backbone's, or a fine-tuned
    checkpoint's). ``pool``: ``avg`` or ``max`` over the maps of graph-node taps. ``dtype``: ``float32`` or
    ``float16``. ``weights_never_saw_images``: the user's statement that the weights never saw these images
    (recorded as the store's weights provenance).
    """

    backbone: str = "vgg16"
    weights: WeightsSpec | str | Path | None = None
    taps: tuple[str, ...] | str | Sequence[str] | None = None
    image_size: int | None = None
    pool: str = "avg"
    dtype: str = "float32"
    seed: int = 0
    weights_never_saw_images: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise FeatxError(f"{arg('dtype', self.dtype)}: choose one of {', '.join(DTYPES)}")
        if self.image_size is not None:  # 0 is no size, not the default
            object.__setattr__(self, "image_size", check_image_size(self.image_size))
        if self.weights is not None:
            object.__setattr__(self, "weights", WeightsSpec.parse(self.weights))
        if self.taps is not None:
            object.__setattr__(self, "taps", (self.taps,) if isinstance(self.taps, str) else tuple(self.taps))


@dataclass(frozen=True)
class ExtractRun:
    """Which images and how one run computes them (not recorded as the store's identity).

    ``splits``: only the images of these splits (a sequence or a comma-separated string; None: all).
    ``shard``: ``(i, n)``, ``"i/n"`` or a :class:`featx.store.Shard`, the i-th of n contiguous blocks of the
    single-run order. ``device``: ``auto``, ``cpu``, ``cuda``...; ``batch_size``: images per forward pass;
    ``workers``: decode workers (None: chosen for the device, 0: in this process); ``strict``: an unreadable
    image or folder raises instead of being recorded.
    """

    splits: tuple[str, ...] | Sequence[str] | None = None
    shard: Shard | tuple[int, int] | str | None = None
    device: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    strict: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise FeatxError(f"{arg('batch_size', self.batch_size)}: must be at least 1")
        if self.workers is not None and self.workers < 0:
            raise FeatxError(f"{arg('workers', self.workers)}: must be 0 (decode in the main process) or more")
        if self.splits is not None:
            object.__setattr__(self, "splits", tuple(self.splits.split(",")) if isinstance(self.splits, str)
                               else tuple(self.splits))
        if self.shard is not None:
            object.__setattr__(self, "shard", parse_shard(self.shard))


def extract_arguments(settings: ExtractSettings | None, run: ExtractRun | None,
                      options: Mapping[str, Any], func: str = "extract") -> tuple[ExtractSettings, ExtractRun]:
    """The two values of an extraction: those given, or built from the keyword ``options`` (each keyword is
    a field of one of them). TypeError for an unknown keyword and for one also set by a value given."""
    made = typed_arguments(func, [Slot("settings", ExtractSettings, settings), Slot("run", ExtractRun, run)],
                           options)
    return made["settings"], made["run"]
