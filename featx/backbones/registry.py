"""One registry of backbones (as timm's): each builder registers its :class:`BackboneConfig` beside itself.

:func:`register_backbone` fills the registry; :func:`list_backbones` and :func:`get_config` read it. The
preprocessing (input size, mean, std) is read from torchvision's weights enums, not copied by hand.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from torchvision.models import WeightsEnum

from featx.backbones.layouts import NodeLayout
from featx.errors import FeatxError, arg, command


@dataclass(frozen=True)
class BackboneConfig:
    """Everything featx knows about one backbone: how to build it, its taps, preprocessing and weights."""

    name: str
    builder: Callable                       # builder(config, num_classes, dropout) -> TappedNetwork
    taps: dict[str, int]                    # tap name -> feature dimension, in forward order
    default_tap: str                        # the tap used when none is chosen
    input_size: int                         # default image side (224)
    mean: tuple[float, float, float]        # normalisation that belongs to the weights
    std: tuple[float, float, float]
    imagenet: WeightsEnum | None            # torchvision's ImageNet weights, None when there are none
    min_input_size: int                     # smallest image side the network accepts
    stages: tuple[str, ...]                 # stages for freezing, in forward order; "head" is the classifier layer
    default_num_classes: int                # outputs of the classifier layer when neither weights nor caller say
    classifier_layer: str                   # qualified name of the network's final Linear (classifier) layer
    description: str
    # tap name -> what its values are (layer, before/after which activation, how many values); written
    # beside each tap in the feature store
    tap_descriptions: dict[str, str] = field(default_factory=dict)
    # Models resolved by name (any torchvision model, timm:NAME) fill these; the named backbones leave them None.
    check_size: Callable[[int], None] | None = None              # raises FeatxError when a side does not fit
    graph_taps: Callable[[], dict[str, NodeLayout]] | None = None  # graph nodes -> layout, refused ones too (lazy)
    imagenet_state: Callable[[], tuple[Path, dict]] | None = None  # pretrained weights: (cached file, state dict)

    def tap_widths(self) -> dict[str, int]:
        """Every usable tap and its width: the graph nodes (for models resolved by name), then ``taps``."""
        graph = self.graph_taps() if self.graph_taps is not None else {}
        return {**{t: lay.width for t, lay in graph.items() if lay.usable}, **self.taps}

    def graph_layout(self, tap: str) -> NodeLayout | None:
        """The layout of graph node ``tap`` (refused ones too); None for the other taps and unknown names."""
        if self.graph_taps is None or tap in self.taps:
            return None
        return self.graph_taps().get(tap)

    def check_taps(self, taps) -> None:
        """FeatxError (one line, naming a node that works) for the first of ``taps`` that is a refused graph node."""
        for tap in [taps] if isinstance(taps, str) else list(taps or ()):
            lay = self.graph_layout(str(tap).strip())
            if lay is not None and not lay.usable:
                raise FeatxError(lay.refusal)

    def __post_init__(self):
        if self.default_tap not in self.taps:   # pragma: no cover - a registration mistake
            raise AssertionError(f"{self.name}: default tap {self.default_tap!r} is not one of its taps")
        if set(self.tap_descriptions) - set(self.taps):   # pragma: no cover - a registration mistake
            raise AssertionError(f"{self.name}: tap descriptions of unknown taps")

    def describe_tap(self, tap: str) -> str:
        """What tap ``tap`` holds, in words (its registered description, else its name and size)."""
        if tap in self.tap_descriptions:
            return self.tap_descriptions[tap]
        if self.graph_taps is None:
            return f"tap {tap} of {self.name}, {self.taps[tap]} values"
        if tap == "pool":
            return (f"the penultimate feature of {self.name}: the input of its classifier, feature maps averaged over "
                    f"their spatial positions (the class token for a ViT), {self.taps[tap]} values")
        lay = self.graph_layout(tap)
        layout = f" (layout {lay.layout})" if lay is not None and lay.usable else ""
        return (f"graph node {tap} of {self.name}{layout}, its maps pooled over the spatial positions (or tokens) "
                f"as the store's pooling attribute says, {self.tap_widths().get(tap, '?')} values")

    @property
    def imagenet_file(self) -> str | None:
        """File name of torchvision's ImageNet weights in the hub cache (e.g. ``vgg16-397923af.pth``)."""
        if self.imagenet is None:
            return None
        return os.path.basename(urlparse(self.imagenet.url).path)


_REGISTRY: dict[str, BackboneConfig] = {}
# (resolve, names): resolve(name) -> a config for a name outside the registry, or None; names() -> known names
_RESOLVERS: list[tuple[Callable[[str], BackboneConfig | None], Callable[[], list[str]]]] = []


def preprocessing(weights: WeightsEnum) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Input size, mean and std of the transforms that belong to torchvision ``weights``."""
    t = weights.transforms()
    return int(t.crop_size[0]), tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)


def register_backbone(name: str, *, preprocessed_as: WeightsEnum, imagenet: WeightsEnum | None, taps: dict[str, int],
                      default_tap: str, stages: tuple[str, ...], min_input_size: int, default_num_classes: int,
                      classifier_layer: str, description: str,
                      tap_descriptions: dict[str, str] | None = None) -> Callable:
    """Decorator registering a builder ``(config, num_classes, dropout) -> TappedNetwork`` as backbone ``name``.

    ``preprocessed_as``: the torchvision weights whose transforms give the input size, mean and std (the
    backbone's own ImageNet weights, or those of another network for one trained from scratch).
    ``tap_descriptions``: per tap, what its values are (the layer, pre- or post-activation, how many values);
    feature stores write it beside the tap.
    """
    def register(builder: Callable) -> Callable:
        if name in _REGISTRY:   # pragma: no cover - a registration mistake
            raise AssertionError(f"backbone {name!r} is registered twice")
        size, mean, std = preprocessing(preprocessed_as)
        _REGISTRY[name] = BackboneConfig(
            name=name, builder=builder, taps=dict(taps), default_tap=default_tap, input_size=size, mean=mean,
            std=std, imagenet=imagenet, description=description, min_input_size=min_input_size,
            stages=tuple(stages), default_num_classes=default_num_classes, classifier_layer=classifier_layer,
            tap_descriptions=dict(tap_descriptions or {}))
        return builder

    return register


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_REGISTRY)


def register_resolver(resolve: Callable[[str], BackboneConfig | None], names: Callable[[], list[str]]) -> None:
    """Let ``resolve(name)`` supply configs for names outside the registry (any torchvision model, timm:NAME);
    ``names()`` lists the names it knows (for suggestions on a typo)."""
    _RESOLVERS.append((resolve, names))


def get_config(name: str) -> BackboneConfig:
    """The config of backbone ``name``; FeatxError suggesting close names if there is none."""
    key = str(name).strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    for resolve, _ in _RESOLVERS:
        cfg = resolve(key)
        if cfg is not None:
            return cfg
    known = list_backbones() + [n for _, names in _RESOLVERS for n in names()]
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise FeatxError(f"unknown backbone {name!r}; {hint}choose one of: {', '.join(list_backbones())}, any "
                     f"torchvision classification model or timm:NAME "
                     f"({command('backbones', 'featx.backbones.catalog.list_rows()')} lists them)")


#: The largest image side featx takes (px). A network's input batch is batch x 3 x side^2 float32: at 4096 px
#: one image is 192 MiB (32 of them 6 GiB), four times the side of any ImageNet model's input and of C-NMC's
#: 450 px cells; 30000 px would need 10 GiB per image.
MAX_INPUT_SIZE = 4096


def check_image_size(size) -> int:
    """``size`` as an int when it is a side featx takes (1 to :data:`MAX_INPUT_SIZE` px); FeatxError otherwise.
    None (the backbone's default) is for the caller to resolve first."""
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size != int(size) \
            or not 1 <= int(size) <= MAX_INPUT_SIZE:
        raise FeatxError(f"{arg('image_size', size)}: give the image side in pixels, from 1 to {MAX_INPUT_SIZE} "
                         f"(leave it out for the backbone's own, e.g. 224)")
    return int(size)


def check_input_size(name: str, size: int) -> None:
    """FeatxError when ``size`` is no image side featx takes (:func:`check_image_size`) or ``size`` px images
    are too small for backbone ``name``."""
    size = check_image_size(size)
    cfg = get_config(name)
    if cfg.check_size is not None:
        cfg.check_size(int(size))
        return
    if int(size) < cfg.min_input_size:
        raise FeatxError(f"image size {size} is too small for {cfg.name}: it needs at least "
                         f"{cfg.min_input_size} px (default {cfg.input_size}); raise {arg('image_size')}")


def input_size(config: BackboneConfig, requested: int | None = None, card: dict | None = None) -> int:
    """The one input-size rule: the image side (px) a network of ``config`` computes at.

    ``requested`` (a caller's ``image_size``) when given; else the side a fine-tuned featx checkpoint was
    trained at (its ``card``'s ``preprocessing.input_size``); else the backbone's own (``config.input_size``).
    FeatxError (:func:`check_input_size`) when the side is no size featx takes or too small for the backbone.
    """
    if requested is not None:
        size = requested
    else:
        size = int((card or {}).get("preprocessing", {}).get("input_size") or config.input_size)
    check_input_size(config.name, size)
    return int(size)
