"""Which layer a class-activation map is taken at: the network's last convolutional stage, or a layer named.

One rule for every network featx fine-tunes (cnn, alexnet, vgg16, any torchvision model, timm): run one image
of the network's input size through it and note, in the order they finish, the modules whose output is a map
in torch's layout (1, C, H, W) with a spatial extent (H = W >= 2: images are square, so a channels-last map,
(1, H, W, C) as in Swin, is not taken for one), leaving out pooling to a fixed grid (adaptive pools) and identities.
The default layer is the last of them: the last spatial map before global pooling. A module that holds a whole
stage finishes after the blocks inside it, so the default is that stage: ``features.block4`` of cnn,
``features.30`` (pool5) of vgg16 at 64 px or more, ``model.layer4`` of resnet18, ``model.features`` of
torchvision's MobileNet and EfficientNet, ``model.stages`` of a timm ConvNeXt.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from featx.errors import FeatxError, arg

#: modules that are no convolutional stage: pooling to a fixed grid (vgg16's and alexnet's avgpool blows a 2x2
#: map up to 7x7 at small images) and pass-throughs (timm's norm_pre is an Identity in ConvNeXt)
_NOT_STAGES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity)


@dataclasses.dataclass(frozen=True)
class MapLayer:
    """A module whose output is a spatial map: its path in the network (``model.layer4``) and output shape."""

    name: str
    shape: tuple[int, ...]


def map_layers(network: nn.Module, image_size: int) -> list[MapLayer]:
    """The modules of ``network`` whose output for one ``image_size`` image is a (1, C, H, W) map with
    H = W >= 2, in the order they finish (see the module docstring)."""
    found: list[MapLayer] = []
    hooks = []

    def note(name: str):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                shape = tuple(int(v) for v in output.shape)
                if shape[2] == shape[3] >= 2:
                    found.append(MapLayer(name, shape))
        return hook

    for name, module in network.named_modules():
        if name and not isinstance(module, _NOT_STAGES):
            hooks.append(module.register_forward_hook(note(name)))
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            network(torch.zeros(1, 3, int(image_size), int(image_size), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    seen: dict[str, MapLayer] = {}
    for layer in found:          # a module run twice counts where it last finished
        seen.pop(layer.name, None)
        seen[layer.name] = layer
    return list(seen.values())


def resolve_layer(network: nn.Module, image_size: int, layer: str | None = None) -> MapLayer:
    """The layer to map: ``layer`` (a module path such as ``model.layer3``, or the unique path ending in it:
    ``layer3``, ``block4``), else the default (the last spatial map). FeatxError naming the valid ones."""
    layers = map_layers(network, image_size)
    name = getattr(network, "name", type(network).__name__)
    if not layers:
        raise FeatxError(f"{name} gives no spatial map at {image_size} px (no module outputs a (C, H, W) map with "
                         f"H, W >= 2), so it has no layer to map; use a larger {arg('image_size')} or a convolutional "
                         "backbone")
    if layer is None:
        return layers[-1]
    by_name = {m.name: m for m in layers}
    if layer in by_name:
        return by_name[layer]
    ends = [m for m in layers if m.name.endswith("." + layer)]
    if len(ends) == 1:
        return ends[0]
    names = [m.name for m in layers]
    shown = ", ".join(names if len(names) <= 24 else ["...", *names[-24:]])
    why = (f"matches {len(ends)} modules of {name} ({', '.join(m.name for m in ends)})" if ends else
           f"is no module of {name}" if layer not in dict(network.named_modules())
           else f"gives no spatial (C, H, W) map in {name} at {image_size} px")
    raise FeatxError(f"{arg('layer', layer)} {why}; choose one of its {len(names)} map layers: {shown}")
