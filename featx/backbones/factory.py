"""create_backbone: a registered backbone with random, ImageNet or saved weights, ready to use."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from featx.backbones.network import seeded
from featx.backbones.registry import BackboneConfig, get_config
from featx.backbones.tapped import TappedNetwork
from featx.backbones.weights import (
    WeightsInfo,
    WeightsSpec,
    imagenet_path,
    is_checkpoint,
    read_weights,
    unpack_checkpoint,
)
from featx.errors import FeatxError, arg
from featx.files import sha256_file


def create_backbone(name: str, weights: str | Path | WeightsSpec | None = "none", *, num_classes: int | None = None,
                    dropout: float = 0.5, seed: int = 0) -> TappedNetwork:
    """Build backbone ``name`` with ``weights`` ("none", "imagenet", a file path or a :class:`WeightsSpec`), in
    eval mode.

    - ``"none"``: seeded random initialisation (the same seed gives the same weights; the global RNG is
      untouched);
    - ``"imagenet"``: torchvision's cached file (see :mod:`featx.backbones.weights`);
    - a path: a state dict or a featx checkpoint (which also sets ``classes`` and ``weights_info.card``).

    ``num_classes`` defaults to the config's ``default_num_classes`` or the size of the loaded weights'
    classifier layer; when given and different from the loaded weights, the classifier layer is replaced
    (seeded with ``seed``). ``dropout`` is the probability of the classifier's two Dropout layers. Call
    ``.train()`` before fine-tuning.
    """
    cfg = get_config(name)
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise FeatxError(f"dropout must be in [0, 1), got {dropout}")
    if num_classes is not None and int(num_classes) < 1:
        raise FeatxError(f"num_classes must be at least 1, got {num_classes}")
    spec = WeightsSpec.parse(weights)
    classes = None
    if spec.kind == "none":
        with seeded(seed):
            net = cfg.builder(cfg, int(num_classes or cfg.default_num_classes), dropout)
        info = WeightsInfo(kind="none", source="none", sha256=None, seed=int(seed))
    elif spec.kind == "imagenet":
        if cfg.imagenet_state is not None:      # a model resolved by name loads its weights its own way
            path, state = cfg.imagenet_state()
        else:
            path = imagenet_path(cfg)
            state = read_weights(path)
        net = _from_state_dict(cfg, state, path, dropout)
        info = WeightsInfo(kind="imagenet", source="imagenet", sha256=sha256_file(path), seed=None,
                           file=str(path))
    else:
        path = spec.path
        if not path.is_file():
            raise FeatxError(f"weights file {path} does not exist; give {arg('weights', 'none')}, imagenet or the "
                             f"path of a saved {cfg.name} state dict / featx checkpoint")
        obj = read_weights(path)
        card = None
        if is_checkpoint(obj):
            state, classes, card = unpack_checkpoint(cfg, obj, path)
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


def _from_state_dict(cfg: BackboneConfig, state, path: Path, dropout: float) -> TappedNetwork:
    """A network of ``cfg`` holding ``state`` (its classifier layer size is read from the state)."""
    expect = f"expected a {cfg.name} state dict (torchvision layout) or a featx checkpoint of {cfg.name}"
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise FeatxError(f"{path} does not hold a state dict of tensors; {expect}")
    if all(k.startswith("module.") for k in state):            # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    classifier_key = f"{cfg.classifier_layer}.weight"
    if classifier_key not in state or state[classifier_key].dim() not in (2, 4):   # Linear, or 1x1 Conv2d
        raise FeatxError(f"{path} does not hold {cfg.name} weights (no final layer {classifier_key!r}); {expect}")
    num_classes = int(state[classifier_key].shape[0])
    with torch.device("meta"), seeded(0):
        net = cfg.builder(cfg, num_classes, dropout)
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
