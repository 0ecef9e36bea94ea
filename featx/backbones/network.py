"""FeatureNet: a :class:`~featx.backbones.tapped.TappedNetwork` whose forward pass is a plan of steps.

A backbone's forward pass is a plan of :class:`ForwardStep`s over submodules ``features``, ``avgpool`` and
``classifier`` (torchvision's names, so state dict keys are torchvision's); each step belongs to a stage
(for freezing) and may record a tap.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from featx.backbones.registry import BackboneConfig, check_input_size
from featx.backbones.tapped import TappedNetwork, batch_norms
from featx.errors import FeatxError


class ForwardStep(NamedTuple):
    """One step of a backbone's forward pass.

    op "run" calls submodule ``target``; "flatten" flattens to (B, D); "gap" records the global average pool
    of the current activation as tap ``tap`` without changing it. After "run"/"flatten", ``tap`` (if set)
    records the activation itself.
    """

    op: str
    target: str
    stage: str
    tap: str | None = None


class FeatureNet(TappedNetwork):
    """A network whose forward pass is a plan of :class:`ForwardStep`s (the named backbones: vgg16, alexnet, cnn).

    Submodules ``features``, ``avgpool``, ``classifier`` follow torchvision's layout, so state dict keys are
    torchvision's. The interface is :class:`~featx.backbones.tapped.TappedNetwork`'s. Build one with
    :func:`featx.backbones.create_backbone`.
    """

    def __init__(self, config: BackboneConfig, features: nn.Module, avgpool: nn.Module, classifier: nn.Module,
                 *, plan: Sequence[ForwardStep], num_classes: int):
        super().__init__(config, num_classes=num_classes)
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        self._plan = tuple(plan)
        if tuple(s.stage for s in _unique_stages(self._plan)) != config.stages:   # pragma: no cover
            raise AssertionError(f"{config.name}: plan stages differ from the config")

    # -- forward ------------------------------------------------------------------------------------------
    def _check_size(self, x: Tensor) -> None:
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

        The pass stops after the last requested tap, so the later layers (and the classifier layer) are not
        computed when not needed. Unknown tap: FeatxError listing the backbone's taps.
        """
        wanted = self._wanted(taps)
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

    def _set_trainable(self, frozen: tuple[str, ...]) -> None:
        for stage in self.config.stages:
            for module in self._stage_modules(stage):
                for p in module.parameters():
                    p.requires_grad_(stage not in frozen)

    def _frozen_batch_norms(self) -> Iterator[nn.Module]:
        for stage in self._frozen:
            for module in self._stage_modules(stage):
                yield from batch_norms(module)

    def reset_classifier(self, num_classes: int, seed: int = 0) -> None:
        """Replace the classifier layer (the final Linear) by a new one with ``num_classes`` outputs (seeded)."""
        self.num_classes = replace_classifier(self, self.config.classifier_layer, num_classes, seed)
        self.classes = None


def replace_classifier(root: nn.Module, layer: str, num_classes: int, seed: int) -> int:
    """Put a new, seeded final layer with ``num_classes`` outputs at ``layer`` of ``root`` (a Linear, or a 1x1
    convolution where the old one was one, as in SqueezeNet), on the old layer's device and dtype."""
    num_classes = int(num_classes)
    if num_classes < 1:
        raise FeatxError(f"num_classes must be at least 1, got {num_classes}")
    old = root.get_submodule(layer)
    with seeded(seed):
        new = (nn.Linear(old.in_features, num_classes, bias=old.bias is not None) if isinstance(old, nn.Linear)
               else nn.Conv2d(old.in_channels, num_classes, 1))
    parent, _, attr = layer.rpartition(".")
    setattr(root.get_submodule(parent), attr, new.to(device=old.weight.device, dtype=old.weight.dtype))
    return num_classes


def _unique_stages(plan: Sequence[ForwardStep]) -> list[ForwardStep]:
    seen: dict[str, ForwardStep] = {}
    for step in plan:
        seen.setdefault(step.stage, step)
    return list(seen.values())


@contextlib.contextmanager
def seeded(seed: int):
    """Seed the CPU generator inside a ``fork_rng`` scope: the global RNG state is restored on exit.

    Only the CPU generator is seeded (``torch.manual_seed`` would also queue a CUDA re-seed); networks are
    always built on the CPU (or the meta device).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield
