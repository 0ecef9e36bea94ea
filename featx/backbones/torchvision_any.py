"""Any torchvision classification model by name (``resnet50``, ``efficientnet_b0``, ``convnext_tiny``, ``vit_b_16``).

A name that is not one of the named backbones (vgg16, alexnet, cnn) and is in
``torchvision.models.list_models(module=torchvision.models)`` becomes a :class:`BackboneConfig` on first use:

- preprocessing (input size, mean, std) from the model's DEFAULT weights entry, and ``--weights imagenet``
  is that entry's file in the torch cache (torchvision itself reads it, fixing old key names as it does);
- taps ``pool`` and every graph node whose output is per image (:class:`featx.backbones.generic.GraphNet`; its
  layout, channels first or last, probed at two sizes: :mod:`featx.backbones.layouts`);
- the final layer found in the module tree; stages are the top-level submodules, then ``head``;
- image sizes are tried on the meta device: a model that needs a fixed size (ViT) says so in one line.

``torch.nn.Dropout`` rates stay torchvision's (``--dropout`` applies to vgg16, alexnet and cnn).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from featx.backbones.generic import POOL_TAP, GraphNet, SizeProbe, final_layer, model_stages, on_meta
from featx.backbones.layouts import NodeLayout, may_be_map, probe_layouts, with_refusals
from featx.backbones.registry import BackboneConfig, list_backbones, preprocessing, register_resolver
from featx.backbones.weights import imagenet_path
from featx.errors import FeatxError, command

#: torchvision models featx leaves out, and why.
EXCLUDED = {
    "googlenet": "its ImageNet weights change the network (input transform, auxiliary classifiers removed)",
    "inception_v3": "its ImageNet weights change the network (input transform, auxiliary classifiers removed)",
}


def torchvision_names() -> list[str]:
    """The torchvision classification models usable by name (the named backbones excluded)."""
    named = set(list_backbones())
    return [n for n in list_models(module=torchvision.models) if n not in named and n not in EXCLUDED]


def skeleton(name: str, **kwargs) -> nn.Module:
    """torchvision's model ``name`` on the meta device (no memory, no initialisation), in eval mode."""
    return on_meta(lambda: get_model(name, weights=None, **kwargs)).eval()


class TorchvisionModel(SizeProbe):
    """What featx works out once about one torchvision model; its bound methods fill a BackboneConfig."""

    def __init__(self, name: str):
        self.name = name
        self.weights = get_model_weights(name).DEFAULT
        self.size, self.mean, self.std = preprocessing(self.weights)
        self.kwargs: dict = {}
        model = skeleton(name)
        if getattr(model, "image_size", None) not in (None, self.size):   # ViT: built for its weights' size
            self.kwargs = {"image_size": self.size}
            model = skeleton(name, **self.kwargs)
        self.model = model
        self.parameters = sum(p.numel() for p in model.parameters())
        self._sizes: dict[int, str | None] = {}
        self.label = name
        self._graph_taps: dict[str, NodeLayout] | None = None

    def config(self) -> BackboneConfig:
        layer = final_layer(self.model)
        cfg = BackboneConfig(
            name=self.name, builder=self.build, taps={POOL_TAP: 0}, default_tap=POOL_TAP, input_size=self.size,
            mean=self.mean, std=self.std, imagenet=self.weights, min_input_size=1,
            stages=model_stages(self.model, layer), default_num_classes=1000, classifier_layer=layer,
            description=f"{self.name} (torchvision, {self.parameters / 1e6:.1f}M parameters; weights "
                        f"{self.weights})",
            check_size=self.check_size, graph_taps=self.graph_taps, imagenet_state=self.imagenet_state)
        x = torch.empty(1, 3, self.size, self.size, device="meta")
        width = int(GraphNet(cfg, self.model, num_classes=1000).pool(x).shape[1])
        cfg = dataclasses.replace(cfg, taps={POOL_TAP: width})
        self.config_ = cfg
        return cfg

    def build(self, config: BackboneConfig, num_classes: int, dropout: float) -> GraphNet:
        """A new network (random weights from the current generator; ``dropout`` is not applied)."""
        if torch.empty(0).is_meta:   # a skeleton to load weights into (create_backbone builds under meta)
            model = skeleton(self.name, num_classes=int(num_classes), **self.kwargs).train()
        else:
            model = get_model(self.name, weights=None, num_classes=int(num_classes), **self.kwargs)
        return GraphNet(config, model, num_classes=num_classes)

    def graph_taps(self) -> dict[str, NodeLayout]:
        """Every graph node (and submodule) whose output is per image -> its layout and channel width, probed on
        the meta device at two sizes (:mod:`featx.backbones.layouts`); refused nodes carry their message."""
        if self._graph_taps is not None:
            return self._graph_taps
        nodes = get_graph_node_names(self.model)[1][1:]             # [0] is the input
        probes: list[tuple[int, dict]] = []
        for batch, model, size in self._probes():
            # the second size only for nodes that may be maps (torchvision checks each node asked against all)
            asked = nodes if not probes else [n for n in nodes if may_be_map(probes[0][1].get(n), probes[0][0])]
            extractor = create_feature_extractor(model, return_nodes={n: n for n in asked},
                                                 suppress_diff_warning=True)
            with torch.no_grad():
                probes.append((batch, extractor(torch.empty(batch, 3, size, size, device="meta"))))
        layouts = {n: lay for n, lay in probe_layouts(probes).items() if n != POOL_TAP}
        self._graph_taps = with_refusals(self.name, module_taps(nodes, layouts), POOL_TAP)
        return self._graph_taps

    def _probes(self) -> list[tuple[int, nn.Module, int]]:
        """(batch, model, image side) to probe layouts with: batch 2 at the default size, batch 3 at a second size
        the model takes (built again for it when it is built for one size: ViT's image_size, MaxViT's
        input_size); the default size alone when there is none."""
        probes: list[tuple[int, nn.Module, int]] = [(2, self.model, self.size)]
        for size in (self.size + 32, 2 * self.size):
            if self._fails_at(size) is None:
                return [*probes, (3, self.model, size)]
            for kwargs in ({"image_size": size}, {"input_size": (size, size)}):
                try:
                    model = skeleton(self.name, **kwargs)
                    with torch.no_grad():
                        model(torch.empty(1, 3, size, size, device="meta"))
                except Exception:   # no such argument, or the size does not fit it either
                    continue
                return [*probes, (3, model, size)]
        return probes

    def imagenet_state(self) -> tuple[Path, dict]:
        """The DEFAULT weights' cached file, read by torchvision's own builder (which fixes old key names)."""
        path = imagenet_path(self.config_)   # the cache, a download attempt, or one line naming file and folder
        model = get_model(self.name, weights=self.weights, **self.kwargs)
        return path, model.state_dict()


T = TypeVar("T")


def module_taps(nodes: list[str], widths: dict[str, T]) -> dict[str, T]:
    """Node widths (or layouts) plus every submodule name (``layer3``: the output of its last node, as
    ``create_feature_extractor`` reads a module name), in forward order, a module after its last node."""
    last: dict[str, str] = {}
    for node in nodes:
        parts = node.split(".")
        for k in range(len(parts) - 1, 0, -1):
            last[".".join(parts[:k])] = node
    after: dict[str, list[str]] = {}
    for module, node in last.items():
        after.setdefault(node, []).append(module)
    taps: dict[str, T] = {}
    for node in nodes:
        for name in [node, *sorted(after.get(node, []), key=lambda m: -m.count("."))]:
            source = last.get(name, name) if name != node else node
            if source in widths and name not in taps and name != POOL_TAP:
                taps[name] = widths[source]
    return taps


_MODELS: dict[str, TorchvisionModel] = {}


def _resolve(name: str) -> BackboneConfig | None:
    if name in EXCLUDED:
        raise FeatxError(f"featx does not support {name}: {EXCLUDED[name]}; "
                         f"{command('backbones', 'featx.backbones.catalog.list_rows()')} lists the models")
    if name not in _MODELS:
        if name not in list_models(module=torchvision.models) or name in list_backbones():
            return None
        _MODELS[name] = TorchvisionModel(name)
        _MODELS[name].config()
    return _MODELS[name].config_


def torchvision_model(name: str) -> TorchvisionModel | None:
    """The :class:`TorchvisionModel` behind a name (None for names that are not torchvision models)."""
    return _MODELS[name] if _resolve(name) is not None else None


register_resolver(_resolve, torchvision_names)
