"""TappedNetwork: the one base of featx's networks (FeatureNet, GraphNet), whose layers (taps) are read by name.

A *network* (glossary) is an ``nn.Module`` built from a :class:`~featx.backbones.registry.BackboneConfig`:
``forward`` gives logits, ``forward_taps`` the features of named taps, ``freeze`` and ``reset_classifier``
prepare it for fine-tuning, and :meth:`TappedNetwork.input_size` is its side of the one input-size rule
(:func:`featx.backbones.registry.input_size`). Subclasses say how their forward pass runs.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from featx.backbones.registry import BackboneConfig, input_size
from featx.backbones.weights import WeightsInfo
from featx.errors import FeatxError


class TappedNetwork(nn.Module, abc.ABC):
    """A classification network whose intermediate layers can be read by name (taps).

    Attributes: ``name``, ``config`` (:class:`BackboneConfig`), ``weights_info`` (:class:`WeightsInfo`),
    ``num_classes``, ``classes`` (class names from a featx checkpoint, else None), ``stages``. Build one with
    :func:`featx.backbones.create_backbone`.
    """

    def __init__(self, config: BackboneConfig, *, num_classes: int):
        super().__init__()
        self.name = config.name
        self.config = config
        self.num_classes = int(num_classes)
        self.classes: list[str] | None = None
        self.weights_info = WeightsInfo(kind="none", source="none", sha256=None, seed=None)
        self._frozen: tuple[str, ...] = ()

    # -- what subclasses define -------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes); softmax is left to the loss / predict_proba."""

    @abc.abstractmethod
    def forward_taps(self, x: Tensor, taps: Sequence[str]) -> dict[str, Tensor]:
        """Features (B, D) of each requested tap, in the order asked: ``{tap: tensor}``."""

    @abc.abstractmethod
    def _check_size(self, x: Tensor) -> None:
        """FeatxError when the images of batch ``x`` (B, 3, H, W) have a size the network does not take."""

    @abc.abstractmethod
    def _set_trainable(self, frozen: tuple[str, ...]) -> None:
        """Parameters of the ``frozen`` stages stop training; the others train."""

    @abc.abstractmethod
    def _frozen_batch_norms(self) -> Iterator[nn.Module]:
        """The batch-norm layers of the frozen stages."""

    @abc.abstractmethod
    def reset_classifier(self, num_classes: int, seed: int = 0) -> None:
        """Replace the classifier layer (the final layer) by a new one with ``num_classes`` outputs (seeded)."""

    # -- shared -------------------------------------------------------------------------------------------
    @property
    def stages(self) -> list[str]:
        """Stage names for :meth:`freeze`, in forward order; the last one, ``head``, is the classifier layer."""
        return list(self.config.stages)

    def input_size(self, requested: int | None = None) -> int:
        """The image side this network computes at: ``requested``, else the one its checkpoint was trained at,
        else its backbone's (:func:`featx.backbones.registry.input_size`)."""
        return input_size(self.config, requested, self.weights_info.card)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise FeatxError(f"{self.name} expects a batch of images (B, 3, H, W), got shape {tuple(x.shape)}")
        self._check_size(x)

    @staticmethod
    def _wanted(taps: Sequence[str] | str) -> list[str]:
        return [taps] if isinstance(taps, str) else list(taps)

    def freeze(self, up_to: str) -> None:
        """Freeze every stage before ``up_to``; ``up_to`` and the stages after it train.

        ``freeze("head")`` trains only the classifier layer; ``freeze(stages[0])`` trains everything.
        Batch-norm layers of frozen stages stay in eval mode (their running statistics do not move).
        """
        if up_to not in self.config.stages:
            raise FeatxError(f"unknown stage {up_to!r} for {self.name}; its stages are: "
                             f"{', '.join(self.config.stages)}")
        k = self.config.stages.index(up_to)
        self._frozen = self.config.stages[:k]
        self._set_trainable(self._frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> TappedNetwork:
        """Like ``nn.Module.train``, but batch-norm layers of frozen stages stay in eval mode."""
        super().train(mode)
        if getattr(self, "_frozen", ()):
            for m in self._frozen_batch_norms():
                m.eval()
        return self

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, weights={self.weights_info.source!r}"


def batch_norms(module: nn.Module) -> Iterator[nn.Module]:
    """The batch-norm layers inside ``module``."""
    return (m for m in module.modules() if isinstance(m, _BatchNorm))
