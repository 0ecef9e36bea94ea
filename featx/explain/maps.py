"""The maps themselves, through Captum: Grad-CAM (``LayerGradCam``) at a layer and occlusion (``Occlusion``, which
needs no gradient), each brought to the image's own size with ``LayerAttribution.interpolate``."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


@contextmanager
def out_of_place(network: nn.Module) -> Iterator[nn.Module]:
    """``network`` with its in-place activations (``ReLU(inplace=True)``) computing out of place meanwhile: an
    in-place op after the mapped layer would overwrite the output whose gradient Grad-CAM reads."""
    changed = [m for m in network.modules() if getattr(m, "inplace", None) is True]
    for m in changed:
        m.inplace = False
    try:
        yield network
    finally:
        for m in changed:
            m.inplace = True


def _captum():
    # deferred: captum.attr takes about 2 s to import; only drawing maps pays for it
    import captum.attr

    return captum.attr


def _to_size(attr: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (1, 1, h, w) attribution as an (H, W) float array at the image's ``size`` (bilinear)."""
    LayerAttribution = _captum().LayerAttribution
    if tuple(attr.shape[-2:]) != tuple(size):
        attr = LayerAttribution.interpolate(attr, tuple(size), interpolate_mode="bilinear")
    return attr.detach().float().cpu().numpy()[0, 0]


def gradcam(network: nn.Module, layer: nn.Module, x: torch.Tensor, target: int, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM of class ``target`` for the one image ``x`` (1, 3, h, w) at ``layer``: the ReLU of the layer's
    channels weighted by their mean gradient of the class's logit, as an (H, W) map of ``size``."""
    with out_of_place(network):
        attr = _captum().LayerGradCam(network, layer).attribute(x, target=int(target), relu_attributions=True)
    return _to_size(attr, size)


def occlusion(network: nn.Module, x: torch.Tensor, target: int, size: tuple[int, int], *,
              baseline: torch.Tensor, window: int, stride: int) -> np.ndarray:
    """Occlusion of class ``target`` for the one image ``x``: how much the class's probability drops when a
    ``window`` x ``window`` square (moved by ``stride``) is set to ``baseline`` (the background), summed over the
    colour channels, as an (H, W) map of ``size``."""
    def probability(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(network(batch), dim=1)

    with torch.no_grad():
        attr = _captum().Occlusion(probability).attribute(x, sliding_window_shapes=(3, window, window),
                                                strides=(3, stride, stride), baselines=baseline,
                                                target=int(target), perturbations_per_eval=32)
    return _to_size(attr.sum(dim=1, keepdim=True), size)


def occlusion_window(image_size: int) -> tuple[int, int]:
    """The occluding square and its stride for images of ``image_size``: an eighth of the side (at least 2 px),
    moved by half of it."""
    window = max(2, int(image_size) // 8)
    return window, max(1, window // 2)


def mass_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """The fraction of the map's positive mass that lies inside ``mask`` (bool, the map's shape); NaN when the map
    has no positive mass."""
    positive = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = float(positive.sum())
    return float(positive[np.asarray(mask, dtype=bool)].sum() / total) if total > 0 else float("nan")
