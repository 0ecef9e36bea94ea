"""Weight files: torchvision's ImageNet cache (and its download), state dicts and featx checkpoints.

- ImageNet: torchvision's file in ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``).
  When it is missing, torchvision's own download is tried (15 s socket timeout); set ``FEATX_OFFLINE=1``
  to skip that attempt. Without the file the error names the exact file and folder, ``TORCH_HOME``, and the
  alternatives (``weights=PATH``, ``weights="none"``: seeded random weights).
- A path: a state dict or a featx checkpoint, read with ``torch.load(..., weights_only=True)``: a weights
  file is data, never code.
"""
from __future__ import annotations

import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import WeightsEnum

from featx.backbones.registry import BackboneConfig
from featx.errors import FeatxError, arg
from featx.provenance import weights_origin

CHECKPOINT_VERSION = 1          # the "featx_checkpoint" value featx writes and reads
DOWNLOAD_TIMEOUT_S = 15.0       # socket timeout of the ImageNet download attempt
OFFLINE_ENV = "FEATX_OFFLINE"   # "1": never try to download ImageNet weights


@dataclass(frozen=True)
class WeightsInfo:
    """Where a network's weights came from (recorded in feature stores and run cards)."""

    kind: str                   # "none" | "imagenet" | "file"
    source: str                 # "none", "imagenet" or the absolute file path
    sha256: str | None          # of the file loaded (the cache file for imagenet); None for random weights
    seed: int | None            # the seed of random initialisation ("none")
    card: dict | None = None    # the featx checkpoint card, when a fine-tuned checkpoint was loaded
    file: str | None = None     # absolute path of the file read (the cache file for imagenet)


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights a network starts from, as asked (what :class:`WeightsInfo` records once they are loaded).

    ``kind``: ``"none"`` (seeded random initialisation), ``"imagenet"`` (torchvision's cached file) or
    ``"file"`` (``path``: a state dict or a featx checkpoint). Parse a user's text once with :meth:`parse`.
    """

    kind: str                   # "none" | "imagenet" | "file", the words WeightsInfo.kind records
    path: Path | None = None    # the file (absolute), for kind "file"

    KINDS = ("none", "imagenet", "file")

    def __post_init__(self):
        if self.kind not in self.KINDS or (self.kind == "file") != (self.path is not None):
            raise ValueError(f"WeightsSpec(kind={self.kind!r}, path={self.path!r}): kind is one of "
                             f"{', '.join(self.KINDS)}, with a path exactly for 'file'")

    @classmethod
    def parse(cls, weights: str | Path | WeightsSpec | None) -> WeightsSpec:
        """``"none"``/``"random"`` (or None), ``"imagenet"`` (any case, spaces ignored), else a file path."""
        if isinstance(weights, WeightsSpec):
            return weights
        if weights is None:
            return cls("none")
        if isinstance(weights, str) and weights.strip().lower() in ("none", "random", "imagenet"):
            return cls("imagenet" if weights.strip().lower() == "imagenet" else "none")
        return cls("file", Path(weights).expanduser().resolve())

    @classmethod
    def default_for(cls, cfg: BackboneConfig) -> WeightsSpec:
        """ImageNet weights where the backbone has them, else random ones (the cnn)."""
        return cls("none" if cfg.imagenet is None else "imagenet")

    def __str__(self) -> str:
        return str(self.path) if self.kind == "file" else self.kind


def imagenet_path(cfg: BackboneConfig) -> Path:
    """torchvision's cached ImageNet file for ``cfg``, downloaded by torchvision when possible."""
    if cfg.imagenet is None:
        raise FeatxError(f"{cfg.name} has no ImageNet weights; use {arg('weights', 'none')} (random init, trained "
                         f"from scratch) or {arg('weights', 'PATH')} of a {cfg.name} checkpoint")
    folder = Path(torch.hub.get_dir()).resolve() / "checkpoints"
    path = folder / cfg.imagenet_file
    if path.is_file():
        return path
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        reason = f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]} forbids downloading"
    else:
        reason = _try_download(cfg.imagenet)
        if reason is None and path.is_file():
            return path
        reason = reason or "the download left no file"
    raise FeatxError(
        f"ImageNet weights for {cfg.name} are not cached and could not be downloaded ({reason}): put "
        f"torchvision's file {cfg.imagenet_file} (from {cfg.imagenet.url}) into {folder} "
        f"($TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to ~/.cache/torch; set TORCH_HOME to use another "
        f"cache folder), or pass {arg('weights', 'PATH')} to a saved {cfg.name} state dict, or "
        f"{arg('weights', 'none')} to start from seeded random weights (no ImageNet transfer)")


def _try_download(weights: WeightsEnum) -> str | None:
    """Let torchvision download ``weights`` into its cache; None on success, else a one-line reason."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        weights.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as exc:  # offline, DNS failure, timeout, hash mismatch, disk full...
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    finally:
        socket.setdefaulttimeout(previous)
    return None


_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")  # torchvision's file names carry their sha256's first digits


def is_imagenet_file(cfg: BackboneConfig, sha256: str | None) -> bool:
    """Whether a file of this sha256 is torchvision's ImageNet file of ``cfg`` (as ``check_hash`` tells it:
    the digest starts with the digits in the file name, e.g. ``vgg16-397923af.pth``)."""
    found = _HASH_PREFIX.search(cfg.imagenet_file or "")
    return bool(found and sha256 and sha256.startswith(found.group(1)))


def origin_of(cfg: BackboneConfig, info: WeightsInfo) -> str:
    """What featx knows of where the weights of ``info`` come from (:func:`featx.provenance.weights_origin`):
    torchvision's own ImageNet file given as a path counts as ImageNet weights."""
    return weights_origin(info.kind, info.card,
                          imagenet_file=info.kind == "file" and is_imagenet_file(cfg, info.sha256))


_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
# torch's note on a pickle of another protocol than its own; the file is refused or loaded either way
_PROTOCOL_NOTE = re.compile(r"Detected pickle protocol \d+ in the checkpoint")


def read_weights(path: Path):
    """The object saved in ``path`` (a state dict or a featx checkpoint), loaded as data only.

    torch's warnings while reading a file that is no weights file are not shown (the refusal says it all);
    those about a file it loads are shown, but for its note on the pickle protocol.
    """
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            found = _GLOBAL.search(str(exc))
            what = (f"it refers to {found.group(1)}, which no weights file holds; refused without running it"
                    if found else f"torch.load with weights_only=True failed: {type(exc).__name__}")
            failed = FeatxError(f"{path} is not a weights file featx can read ({what}); expected a state dict saved "
                                "with torch.save(model.state_dict(), path) or a featx checkpoint")
        else:
            failed = None
    if failed is not None:
        raise failed
    for w in seen:
        if not _PROTOCOL_NOTE.search(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return obj


def is_checkpoint(obj) -> bool:
    """Whether a loaded weights object is a featx checkpoint (not a bare state dict)."""
    return isinstance(obj, dict) and "featx_checkpoint" in obj


def unpack_checkpoint(cfg: BackboneConfig, obj: dict, path: Path) -> tuple[dict, list[str] | None, dict | None]:
    """The state dict, class names and card of a featx checkpoint of backbone ``cfg``."""
    version = obj.get("featx_checkpoint")
    if version != CHECKPOINT_VERSION:
        raise FeatxError(f"{path} is a featx checkpoint of version {version!r}; this featx reads version "
                         f"{CHECKPOINT_VERSION}: upgrade featx or re-create the checkpoint")
    backbone = str(obj.get("backbone", "")).lower()
    if backbone != cfg.name:
        raise FeatxError(f"{path} is a featx checkpoint of backbone {backbone or '?'!r}, not {cfg.name}; "
                         f"use {arg('backbone', backbone or '<its backbone>')} with this file")
    if "model" not in obj:
        raise FeatxError(f"{path} is a featx checkpoint without a 'model' state dict; re-save it")
    classes = obj.get("classes")
    classes = [str(c) for c in classes] if classes else None
    card = obj.get("card")
    return obj["model"], classes, (dict(card) if isinstance(card, dict) else None)
