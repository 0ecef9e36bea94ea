"""The backbone registry: ``vgg16``, ``alexnet`` and ``cnn``, their weights and their named taps.

One place knows every network (as timm's registry does): :func:`list_backbones`, :func:`get_config` and
:func:`create_backbone`. Each backbone declares its taps (named feature layers), its preprocessing (taken
from torchvision's weights objects, not copied by hand) and its stages for ``--freeze``.

``vgg16`` and ``alexnet`` are torchvision's own modules, kept under torchvision's names (``features``,
``avgpool``, ``classifier``), so ``FeatureNet.state_dict()`` has exactly torchvision's keys: torchvision's
weight files load unchanged, and a state dict saved from a :class:`FeatureNet` loads into
``torchvision.models.vgg16()``/``alexnet()`` (with the same number of classes) and back.

Weights (``create_backbone(name, weights=...)``):

- ``"none"``: seeded random initialisation (the same seed gives the same weights; the global RNG is untouched).
- ``"imagenet"``: torchvision's file in ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``).
  When it is missing, torchvision's own download is tried (15 s socket timeout); set ``FEATX_OFFLINE=1``
  to skip that attempt. Without the file the error names the exact file and folder.
- a path: a state dict or a featx checkpoint, read with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from featx.errors import FeatxError
from featx.files import sha256_file

CHECKPOINT_VERSION = 1          # the "featx_checkpoint" value this module reads
DOWNLOAD_TIMEOUT_S = 15.0       # socket timeout of the ImageNet download attempt
OFFLINE_ENV = "FEATX_OFFLINE"   # "1": never try to download ImageNet weights


@dataclass(frozen=True)
class BackboneConfig:
    """What a backbone is: taps, preprocessing, stages and where its ImageNet weights come from."""

    name: str
    taps: dict[str, int]                    # tap name -> feature dimension, in forward order
    input_size: int                         # default image side (224)
    mean: tuple[float, float, float]        # normalisation that belongs to the weights
    std: tuple[float, float, float]
    imagenet: object | None                 # torchvision WeightsEnum member, None when there is none
    description: str
    min_input_size: int = 32                # smallest image side the network accepts
    stages: tuple[str, ...] = ()            # names for --freeze, in forward order; "head" is the final layer
    default_tap: str = ""                   # the tap heads read when none is named ("": the last tap)

    @property
    def imagenet_file(self) -> str | None:
        """File name of torchvision's ImageNet weights in the hub cache (e.g. ``vgg16-397923af.pth``)."""
        if self.imagenet is None:
            return None
        return os.path.basename(urlparse(self.imagenet.url).path)


@dataclass(frozen=True)
class WeightsInfo:
    """Where a network's weights came from (recorded in feature stores and run cards)."""

    kind: str                   # "none" | "imagenet" | "file"
    source: str                 # "none", "imagenet" or the absolute file path
    sha256: str | None          # of the file loaded (the cache file for imagenet); None for random weights
    seed: int | None            # the seed of random initialisation ("none")
    card: dict | None = None    # the featx checkpoint card, when a fine-tuned checkpoint was loaded
    file: str | None = None     # absolute path of the file read (the cache file for imagenet)


# ----------------------------------------------------------------------------------------------- registry

_NAMES = ("alexnet", "cnn", "vgg16")


@functools.lru_cache(maxsize=None)
def _configs() -> dict[str, BackboneConfig]:
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    def preprocessing(weights) -> tuple[int, tuple, tuple]:
        t = weights.transforms()
        return int(t.crop_size[0]), tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)

    vgg = VGG16_Weights.IMAGENET1K_V1
    alex = AlexNet_Weights.IMAGENET1K_V1
    vsize, vmean, vstd = preprocessing(vgg)
    asize, amean, astd = preprocessing(alex)
    return {
        "alexnet": BackboneConfig(
            name="alexnet", taps={"pool5": 256, "fc6": 4096, "fc7": 4096}, input_size=asize,
            mean=amean, std=astd, imagenet=alex, min_input_size=63,
            stages=("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "head"), default_tap="fc7",
            description="AlexNet (torchvision): 5 conv layers, 2 dropout FC layers of 4096, final FC"),
        "cnn": BackboneConfig(
            name="cnn", taps={"pool5": 256, "fc": 128}, input_size=vsize,
            mean=vmean, std=vstd, imagenet=None, min_input_size=16,
            stages=("block1", "block2", "block3", "block4", "fc", "head"), default_tap="fc",
            description="small traditional CNN: 4 conv-BN-ReLU-maxpool blocks (32-256), GAP, "
                        "dropout FC 128, final FC; trained from scratch"),
        "vgg16": BackboneConfig(
            name="vgg16", taps={"pool5": 512, "fc6": 4096, "fc7": 4096}, input_size=vsize,
            mean=vmean, std=vstd, imagenet=vgg, min_input_size=32,
            stages=("block1", "block2", "block3", "block4", "block5", "fc6", "fc7", "head"), default_tap="fc7",
            description="VGG-16 (torchvision): 13 conv layers in 5 blocks, 2 dropout FC layers of 4096, final FC"),
    }


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return list(_NAMES)


def get_config(name: str) -> BackboneConfig:
    """The config of backbone ``name``; FeatxError listing the known names if there is none."""
    key = str(name).strip().lower()
    if key not in _NAMES:
        raise FeatxError(f"unknown backbone {name!r}; choose one of: {', '.join(_NAMES)}")
    return _configs()[key]


def check_input_size(name: str, size: int) -> None:
    """FeatxError when ``size`` px images are too small for backbone ``name``."""
    cfg = get_config(name)
    if int(size) < cfg.min_input_size:
        raise FeatxError(f"image size {size} is too small for {cfg.name}: it needs at least "
                         f"{cfg.min_input_size} px (default {cfg.input_size}); raise --image-size")


# ----------------------------------------------------------------------------------------------- the network

class _Step(NamedTuple):
    """One step of a backbone's forward pass.

    op "run" calls submodule ``target``; "flatten" flattens to (B, D); "gap" records the global average pool
    of the current activation as tap ``tap`` without changing it. After "run"/"flatten", ``tap`` (if set)
    records the activation itself.
    """

    op: str
    target: str
    stage: str
    tap: str | None = None


class FeatureNet(nn.Module):
    """A classification network whose intermediate layers can be read by name (taps).

    Attributes: ``name``, ``config`` (:class:`BackboneConfig`), ``weights_info`` (:class:`WeightsInfo`),
    ``num_classes``, ``classes`` (class names from a featx checkpoint, else None), ``stages``.
    Submodules ``features``, ``avgpool``, ``classifier`` follow torchvision's layout, so state dict keys are
    torchvision's. Build one with :func:`create_backbone`.
    """

    def __init__(self, config: BackboneConfig, features: nn.Module, avgpool: nn.Module, classifier: nn.Module,
                 *, plan: Sequence[_Step], head: str, num_classes: int):
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        self.name = config.name
        self.config = config
        self.num_classes = int(num_classes)
        self.classes: list[str] | None = None
        self.weights_info = WeightsInfo(kind="none", source="none", sha256=None, seed=None)
        self._plan = tuple(plan)
        self._head = head                 # qualified name of the final Linear layer
        self._frozen: tuple[str, ...] = ()
        if tuple(s.stage for s in _unique_stages(self._plan)) != config.stages:   # pragma: no cover
            raise AssertionError(f"{config.name}: plan stages differ from the config")

    # -- forward ------------------------------------------------------------------------------------------
    @property
    def stages(self) -> list[str]:
        """Stage names for :meth:`freeze`, in forward order; the last one, ``head``, is the final layer."""
        return list(self.config.stages)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise FeatxError(f"{self.name} expects a batch of images (B, 3, H, W), got shape {tuple(x.shape)}")
        size = min(int(x.shape[-2]), int(x.shape[-1]))
        if size < self.config.min_input_size:
            check_input_size(self.name, size)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes); softmax is left to the loss / predict_proba."""
        self._check_input(x)
        for step in self._plan:
            if step.op == "run":
                x = self.get_submodule(step.target)(x)
            elif step.op == "flatten":
                x = torch.flatten(x, 1)
        return x

    def forward_taps(self, x: Tensor, taps: Sequence[str]) -> dict[str, Tensor]:
        """Features (B, D) of each requested tap from one forward pass, in the order asked.

        The pass stops after the last requested tap, so the later layers (and the final classifier) are not
        computed when not needed. Unknown tap: FeatxError listing the backbone's taps.
        """
        wanted = [taps] if isinstance(taps, str) else list(taps)
        if not wanted:
            raise FeatxError(f"no taps requested; {self.name} has: {', '.join(self.config.taps)}")
        for tap in wanted:
            if tap not in self.config.taps:
                raise FeatxError(f"unknown tap {tap!r} for {self.name}; its taps are: "
                                 f"{', '.join(self.config.taps)}")
        self._check_input(x)
        pending = set(wanted)
        out: dict[str, Tensor] = {}
        for step in self._plan:
            if step.op == "gap":
                if step.tap in pending:
                    out[step.tap] = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            else:
                x = self.get_submodule(step.target)(x) if step.op == "run" else torch.flatten(x, 1)
                if step.tap in pending:
                    out[step.tap] = x
            pending.discard(step.tap)
            if not pending:
                break
        return {tap: out[tap] for tap in wanted}

    # -- training helpers ---------------------------------------------------------------------------------
    def _stage_modules(self, stage: str) -> list[nn.Module]:
        return [self.get_submodule(s.target) for s in self._plan if s.stage == stage and s.op == "run"]

    def freeze(self, up_to: str) -> None:
        """Freeze every stage before ``up_to``; ``up_to`` and the stages after it train.

        ``freeze("head")`` trains only the final layer; ``freeze(stages[0])`` trains everything.
        Batch-norm layers of frozen stages stay in eval mode (their running statistics do not move).
        """
        if up_to not in self.config.stages:
            raise FeatxError(f"unknown stage {up_to!r} for {self.name}; its stages are: "
                             f"{', '.join(self.config.stages)}")
        k = self.config.stages.index(up_to)
        for i, stage in enumerate(self.config.stages):
            for module in self._stage_modules(stage):
                for p in module.parameters():
                    p.requires_grad_(i >= k)
        self._frozen = self.config.stages[:k]
        self.train(self.training)

    def train(self, mode: bool = True) -> "FeatureNet":
        """Like ``nn.Module.train``, but batch-norm layers of frozen stages stay in eval mode."""
        super().train(mode)
        for stage in getattr(self, "_frozen", ()):
            for module in self._stage_modules(stage):
                for m in module.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    def reset_classifier(self, num_classes: int, seed: int = 0) -> None:
        """Replace the final Linear layer by a new one with ``num_classes`` outputs (seeded init)."""
        num_classes = int(num_classes)
        if num_classes < 1:
            raise FeatxError(f"num_classes must be at least 1, got {num_classes}")
        old = self.get_submodule(self._head)
        with _seeded(seed):
            new = nn.Linear(old.in_features, num_classes)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        parent, _, attr = self._head.rpartition(".")
        setattr(self.get_submodule(parent), attr, new)
        self.num_classes = num_classes
        self.classes = None

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, weights={self.weights_info.source!r}"


def _unique_stages(plan: Sequence[_Step]) -> list[_Step]:
    seen: dict[str, _Step] = {}
    for step in plan:
        seen.setdefault(step.stage, step)
    return list(seen.values())


# ----------------------------------------------------------------------------------------------- builders

def _fc_steps(stages: Sequence[str], taps: dict[int, str]) -> list[_Step]:
    """Steps running ``classifier.0..n-1``; ``stages[i]`` is the stage of module i, ``taps[i]`` its tap."""
    return [_Step("run", f"classifier.{i}", stage, taps.get(i)) for i, stage in enumerate(stages)]


_FC_STAGES = ("fc6", "fc6", "fc6", "fc7", "fc7", "fc7", "head")   # torchvision's 7-module classifier


def _build_vgg16(num_classes: int, dropout: float) -> FeatureNet:
    tv = torchvision.models.vgg16(weights=None, num_classes=num_classes, dropout=dropout)
    plan, block = [], 1
    for i, m in enumerate(tv.features):
        plan.append(_Step("run", f"features.{i}", f"block{block}"))
        block += isinstance(m, nn.MaxPool2d)
    plan += [_Step("gap", "", "block5", "pool5"), _Step("run", "avgpool", "block5"),
             _Step("flatten", "", "block5")]
    # classifier: Linear ReLU Dropout | Linear ReLU Dropout | Linear  (fc6 / fc7 taps after the ReLUs)
    plan += _fc_steps(_FC_STAGES, {1: "fc6", 4: "fc7"})
    return FeatureNet(get_config("vgg16"), tv.features, tv.avgpool, tv.classifier,
                      plan=plan, head=_HEADS["vgg16"], num_classes=num_classes)


def _build_alexnet(num_classes: int, dropout: float) -> FeatureNet:
    tv = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    plan, conv = [], 0
    for i, m in enumerate(tv.features):
        conv += isinstance(m, nn.Conv2d)
        plan.append(_Step("run", f"features.{i}", f"conv{conv}"))
    plan += [_Step("gap", "", "conv5", "pool5"), _Step("run", "avgpool", "conv5"),
             _Step("flatten", "", "conv5")]
    # classifier: Dropout Linear ReLU | Dropout Linear ReLU | Linear  (fc6 / fc7 taps after the ReLUs)
    plan += _fc_steps(_FC_STAGES, {2: "fc6", 5: "fc7"})
    return FeatureNet(get_config("alexnet"), tv.features, tv.avgpool, tv.classifier,
                      plan=plan, head=_HEADS["alexnet"], num_classes=num_classes)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def _build_cnn(num_classes: int, dropout: float) -> FeatureNet:
    """The small "traditional" CNN of the reference study's baseline.

    Layers (input 3 x H x W, any H, W >= 16; 224 by default):

    - ``features.block1..block4``: Conv2d 3x3 (padding 1, no bias) -> BatchNorm2d -> ReLU -> MaxPool2d 2,
      with 32, 64, 128, 256 channels (each block halves the image side);
    - ``avgpool``: global average pool -> tap ``pool5`` (256);
    - ``classifier``: Dropout(p) -> Linear 256->128 -> ReLU (tap ``fc``, the penultimate layer) ->
      Dropout(p) -> Linear 128->num_classes (logits; softmax is applied by the loss / predict_proba).
    """
    widths = (3, 32, 64, 128, 256)
    features = nn.Sequential(OrderedDict(
        (f"block{i + 1}", _conv_block(widths[i], widths[i + 1])) for i in range(4)))
    classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(256, 128), nn.ReLU(inplace=True),
                               nn.Dropout(dropout), nn.Linear(128, num_classes))
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    plan = [_Step("run", f"features.block{i}", f"block{i}") for i in range(1, 5)]
    plan += [_Step("run", "avgpool", "block4"), _Step("flatten", "", "block4", "pool5")]
    plan += [_Step("run", "classifier.0", "fc"), _Step("run", "classifier.1", "fc"),
             _Step("run", "classifier.2", "fc", "fc"),
             _Step("run", "classifier.3", "head"), _Step("run", "classifier.4", "head")]
    return FeatureNet(get_config("cnn"), features, nn.AdaptiveAvgPool2d(1), classifier,
                      plan=plan, head=_HEADS["cnn"], num_classes=num_classes)


_BUILDERS = {"alexnet": _build_alexnet, "cnn": _build_cnn, "vgg16": _build_vgg16}
_DEFAULT_CLASSES = {"alexnet": 1000, "cnn": 2, "vgg16": 1000}
_HEADS = {"alexnet": "classifier.6", "cnn": "classifier.4", "vgg16": "classifier.6"}   # the final Linear


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed the CPU generator inside a ``fork_rng`` scope: the global RNG state is restored on exit.

    Only the CPU generator is seeded (``torch.manual_seed`` would also queue a CUDA re-seed); networks are
    always built on the CPU (or the meta device).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


# ----------------------------------------------------------------------------------------------- weights

def create_backbone(name: str, weights: str | Path | None = "none", *, num_classes: int | None = None,
                    dropout: float = 0.5, seed: int = 0) -> FeatureNet:
    """Build backbone ``name`` with ``weights`` ("none", "imagenet" or a file path), in eval mode.

    ``num_classes`` defaults to 1000 (vgg16, alexnet), 2 (cnn) or the size of the loaded weights' final
    layer; when given and different from the loaded weights, the final layer is replaced (seeded with
    ``seed``). ``dropout`` is the probability of the classifier's two Dropout layers. A featx checkpoint
    also sets ``classes`` and ``weights_info.card``. Call ``.train()`` before fine-tuning.
    """
    cfg = get_config(name)
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise FeatxError(f"dropout must be in [0, 1), got {dropout}")
    if num_classes is not None and int(num_classes) < 1:
        raise FeatxError(f"num_classes must be at least 1, got {num_classes}")
    spec = "none" if weights is None else weights
    classes = None
    if isinstance(spec, str) and spec.strip().lower() in ("none", "random"):
        with _seeded(seed):
            net = _BUILDERS[cfg.name](int(num_classes or _DEFAULT_CLASSES[cfg.name]), dropout)
        info = WeightsInfo(kind="none", source="none", sha256=None, seed=int(seed))
    elif isinstance(spec, str) and spec.strip().lower() == "imagenet":
        path = _imagenet_path(cfg)
        net = _from_state_dict(cfg, _read_weights(path), path, dropout)
        info = WeightsInfo(kind="imagenet", source="imagenet", sha256=sha256_file(path), seed=None,
                           file=str(path))
    else:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FeatxError(f"weights file {path} does not exist; give --weights none, imagenet or the path "
                             f"of a saved {cfg.name} state dict / featx checkpoint")
        obj = _read_weights(path)
        card = None
        if isinstance(obj, dict) and "featx_checkpoint" in obj:
            state, classes, card = _unpack_checkpoint(cfg, obj, path)
        else:
            state = obj
        net = _from_state_dict(cfg, state, path, dropout)
        if classes is not None and len(classes) != net.num_classes:
            raise FeatxError(f"{path}: the checkpoint lists {len(classes)} classes but its final layer has "
                             f"{net.num_classes} outputs; the file is inconsistent, re-save it")
        info = WeightsInfo(kind="file", source=str(path), sha256=sha256_file(path), seed=None,
                           card=card, file=str(path))
    net.classes = list(classes) if classes is not None else None
    if num_classes is not None and int(num_classes) != net.num_classes:
        net.reset_classifier(int(num_classes), seed=seed)
    net.weights_info = info
    return net.eval()


def _imagenet_path(cfg: BackboneConfig) -> Path:
    """torchvision's cached ImageNet file for ``cfg``, downloaded by torchvision when possible."""
    if cfg.imagenet is None:
        raise FeatxError(f"{cfg.name} has no ImageNet weights; use --weights none (random init, trained from "
                         f"scratch) or --weights PATH of a {cfg.name} checkpoint")
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
        f"(torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another cache folder), "
        f"or pass --weights PATH to a saved {cfg.name} state dict")


def _try_download(weights) -> str | None:
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


def _read_weights(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FeatxError(f"{path} is not a weights file featx can read (torch.load with weights_only=True "
                         f"failed: {type(exc).__name__}); expected a state dict saved with "
                         f"torch.save(model.state_dict(), path) or a featx checkpoint") from None


def _unpack_checkpoint(cfg: BackboneConfig, obj: dict, path: Path):
    version = obj.get("featx_checkpoint")
    if version != CHECKPOINT_VERSION:
        raise FeatxError(f"{path} is a featx checkpoint of version {version!r}; this featx reads version "
                         f"{CHECKPOINT_VERSION}: upgrade featx or re-create the checkpoint")
    backbone = str(obj.get("backbone", "")).lower()
    if backbone != cfg.name:
        raise FeatxError(f"{path} is a featx checkpoint of backbone {backbone or '?'!r}, not {cfg.name}; "
                         f"use --backbone {backbone or '<its backbone>'} with this file")
    if "model" not in obj:
        raise FeatxError(f"{path} is a featx checkpoint without a 'model' state dict; re-save it")
    classes = obj.get("classes")
    classes = [str(c) for c in classes] if classes else None
    card = obj.get("card")
    return obj["model"], classes, (dict(card) if isinstance(card, dict) else None)


def _from_state_dict(cfg: BackboneConfig, state, path: Path, dropout: float) -> FeatureNet:
    """A network of ``cfg`` holding ``state`` (its final layer size is read from the state)."""
    expect = f"expected a {cfg.name} state dict (torchvision layout) or a featx checkpoint of {cfg.name}"
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise FeatxError(f"{path} does not hold a state dict of tensors; {expect}")
    if all(k.startswith("module.") for k in state):            # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    head_key = f"{_HEADS[cfg.name]}.weight"
    if head_key not in state or state[head_key].dim() != 2:
        raise FeatxError(f"{path} does not hold {cfg.name} weights (no final layer {head_key!r}); {expect}")
    num_classes = int(state[head_key].shape[0])
    with torch.device("meta"), _seeded(0):
        net = _BUILDERS[cfg.name](num_classes, dropout)
    reference = net.state_dict()
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    wrong = [k for k in reference if k in state and tuple(state[k].shape) != tuple(reference[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} in the file, "
                         f"{tuple(reference[k].shape)} in {cfg.name})")
        raise FeatxError(f"{path} does not hold {cfg.name} weights: {', '.join(parts)}; {expect}")
    state = {k: (v.to(reference[k].dtype) if v.is_floating_point() else v).contiguous()
             for k, v in state.items()}
    net.load_state_dict(state, strict=True, assign=True)
    return net
