"""GraphNet: any classification ``nn.Module`` (a torchvision or timm model) as a featx network with taps.

Taps:

- ``pool`` (the default): the penultimate, globally pooled feature, i.e. the input of the model's classifier
  (the top-level submodule holding its final layer), read by a hook: a (B, C, H, W) map is averaged over
  H, W; a flattened map (VGG's 512x7x7) is taken back as its map and averaged; a (B, D) input (ViT's class
  token, an already pooled vector) is kept as it is. The forward pass stops there.
- any node of the model's graph (``layer3``, ``features.6``, ``encoder.layers.encoder_layer_3``), computed by
  ``torchvision.models.feature_extraction.create_feature_extractor``: a map, (B, C, H, W) or channels-last
  (B, H, W, C), is averaged over H, W, a token sequence over its tokens, a (B, D) output is kept
  (``pooling = "max"``: the maximum instead; ``pool`` keeps the model's own pooling). Which axes are the
  channels was decided by probing (:mod:`featx.backbones.layouts`); a node whose layout is unclear is refused.

The state dict is the model's own (torchvision's / timm's keys): weight files load unchanged. Stages for
``--freeze``: the model's top-level submodules in order, then ``head`` (the final layer).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.feature_extraction import create_feature_extractor

from featx.backbones.layouts import listing_taps
from featx.backbones.network import replace_classifier
from featx.backbones.registry import BackboneConfig, check_input_size
from featx.backbones.tapped import TappedNetwork
from featx.errors import FeatxError, arg

POOL_TAP = "pool"


@contextlib.contextmanager
def parameters_on_meta():
    """Move every parameter to the meta device as it is registered (the tensors a builder computes with stay
    real): initialising it then costs nothing. For builders that cannot run under ``torch.device("meta")``."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


class SizeProbe:
    """Which square image sizes a model takes, found by a trial forward pass on the meta device (once per size).

    Subclasses set ``model`` (on meta), ``size`` (the default side), ``label`` (the name in messages) and
    ``_sizes = {}`` (the answers so far)."""

    model: nn.Module
    size: int
    label: str
    _sizes: dict[int, str | None]

    def _fails_at(self, size: int) -> str | None:
        sizes = self._sizes
        if size not in sizes:
            try:
                with torch.no_grad():
                    self.model(torch.empty(1, 3, size, size, device="meta"))
                sizes[size] = None
            except Exception as exc:   # any failure of the trial forward pass is the answer
                sizes[size] = " ".join(f"{type(exc).__name__}: {exc}".split())[:120]
        return sizes[size]

    def check_size(self, size: int) -> None:
        """FeatxError (one line) when ``size`` x ``size`` images do not go through the model."""
        if size < 1:
            raise FeatxError(f"{arg('image_size', size)}: must be at least 1")
        if size == self.size or self._fails_at(size) is None:
            return
        if self._fails_at(self.size + 32) is not None:
            raise FeatxError(f"{self.label} takes only {self.size}x{self.size} images (a fixed-size model), not "
                             f"{size}x{size}; use {arg('image_size', self.size)}")
        raise FeatxError(f"image size {size} does not fit {self.label} ({self._fails_at(size)}); raise "
                         f"{arg('image_size')} (default {self.size})")


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: no memory, no initialisation (a skeleton to read shapes from or to load
    weights into with ``assign=True``)."""
    try:
        with torch.device("meta"):
            return build()
    except NotImplementedError:   # builders that compute with tensors (RegNet's widths, timm's drop-path rates)
        with torch.device("cpu"), parameters_on_meta():   # cpu: also inside a caller's meta context
            model = build()
        return model.to("meta")


class _Reached(Exception):
    """Raised by the hook on the classifier's input: the rest of the forward pass is not needed."""


def final_layer(model: nn.Module) -> str:
    """Qualified name of the model's final layer: its last ``nn.Linear`` (or a 1x1 ``Conv2d`` classifier, as
    SqueezeNet's), found in the module tree, not per architecture."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    conv = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    if conv:
        return conv[-1]
    raise FeatxError(f"{type(model).__name__} has no final Linear layer featx can replace")


def _holds_params(module: nn.Module, prefix: str, classifier_layer: str) -> bool:
    return any(not (n == classifier_layer or n.startswith(classifier_layer + "."))
               for n, _ in module.named_parameters(prefix=prefix))


def model_stages(model: nn.Module, classifier_layer: str) -> tuple[str, ...]:
    """Stages for freezing, in order, then ``head`` (the final layer alone): the top-level submodules holding
    parameters; when there are fewer than four, a ``Sequential``/``ModuleList`` trunk among them is split
    into its children (``features.0``, ``features.1``, ... of EfficientNet, ConvNeXt, MobileNet)."""
    top = [(n, c) for n, c in model.named_children() if _holds_params(c, n, classifier_layer)]
    names: list[str] = []
    for name, child in top:
        if len(top) < 4 and isinstance(child, (nn.Sequential, nn.ModuleList)) \
                and not classifier_layer.startswith(name + "."):
            names += [f"{name}.{n}" for n, c in child.named_children() if _holds_params(c, f"{name}.{n}", "")]
        else:
            names.append(name)
    return (*names, "head")


POOLINGS = ("avg", "max")


def pooled(x: Tensor, pooling: str = "avg") -> Tensor:
    """A node's output as (B, D): maps pooled over H, W, token sequences over their tokens (``avg``/``max``)."""
    if x.dim() in (3, 4):
        dims = (2, 3) if x.dim() == 4 else (1,)
        return x.amax(dim=dims) if pooling == "max" else x.mean(dim=dims)
    return x.flatten(1)


def pool_input(x: Tensor, last: Tensor | None) -> Tensor:
    """The ``pool`` tap from the classifier's input ``x`` and the output ``last`` of the module before it."""
    if x.dim() == 2 and last is not None and last.dim() == 4 and last.shape[2] * last.shape[3] > 1 \
            and last[0].numel() == x.shape[1]:
        return last.mean(dim=(2, 3))      # the classifier takes the map flattened (VGG): average it instead
    return pooled(x)


class GraphNet(TappedNetwork):
    """A classification model with taps ``pool`` and its graph nodes (see the module docstring).

    The interface is :class:`~featx.backbones.tapped.TappedNetwork`'s, as :class:`featx.backbones.FeatureNet`'s.
    ``state_dict``/``load_state_dict`` are the wrapped model's.
    """

    def __init__(self, config: BackboneConfig, model: nn.Module, *, num_classes: int):
        super().__init__(config, num_classes=num_classes)
        self.model = model
        self.pooling = "avg"            # how graph-node maps and tokens are pooled: avg or max
        self._extractors: dict[tuple[str, ...], nn.Module] = {}   # a plain dict: not submodules

    # -- the wrapped model's state ---------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        """The wrapped model's state dict (torchvision's / timm's keys)."""
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._extractors.clear()
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn, *args, **kwargs):
        self._extractors.clear()   # traced extractors hold the model's tensors: trace again after a move
        return super()._apply(fn, *args, **kwargs)

    # -- forward ---------------------------------------------------------------------------------------
    def _check_size(self, x: Tensor) -> None:
        if int(x.shape[-2]) != int(x.shape[-1]):
            raise FeatxError(f"{self.name} expects square images, got {tuple(x.shape[-2:])}")
        if int(x.shape[-1]) != self.config.input_size:
            check_input_size(self.name, int(x.shape[-1]))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes)."""
        self._check_input(x)
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out

    def forward_taps(self, x: Tensor, taps: Sequence[str]) -> dict[str, Tensor]:
        """Features (B, D) of each requested tap, in the order asked."""
        wanted = self._wanted(taps)
        if not wanted:
            raise FeatxError(f"no taps requested; {self.name}'s default tap is {self.config.default_tap}")
        nodes = tuple(t for t in wanted if t not in self.config.taps)
        layouts = {t: self.config.graph_layout(t) for t in nodes}
        unknown = [t for t in nodes if layouts[t] is None]
        if unknown:
            raise FeatxError(f"unknown tap {unknown[0]!r} for {self.name}; {listing_taps(self.name)} lists its taps "
                             f"({arg('taps', unknown[0])})")
        self.config.check_taps(nodes)
        self._check_input(x)
        out: dict[str, Tensor] = {}
        if nodes:
            feats = self._extractor(nodes)(x)
            out.update({n: layouts[n].pool(feats[n], self.pooling, n, x.shape[0]) for n in nodes})
        if POOL_TAP in wanted:
            out[POOL_TAP] = self.pool(x)
        return {t: out[t] for t in wanted}

    def pool(self, x: Tensor) -> Tensor:
        """The ``pool`` tap: the classifier's input, pooled (the forward pass stops at the classifier)."""
        root = self.config.classifier_layer.split(".")[0]
        seen: dict[str, Tensor] = {}

        def keep(_module, _args, output):
            if isinstance(output, Tensor):
                seen["last"] = output

        def stop(_module, args):
            seen["input"] = args[0]
            raise _Reached

        handles = [child.register_forward_hook(keep) for name, child in self.model.named_children() if name != root]
        handles.append(self.model.get_submodule(root).register_forward_pre_hook(stop))
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if "input" not in seen:   # pragma: no cover - a model that never calls its classifier
            raise FeatxError(f"{self.name}: the forward pass never reached {root}; use a graph node as tap")
        return pool_input(seen["input"], seen.get("last"))

    def _extractor(self, nodes: tuple[str, ...]) -> nn.Module:
        if nodes not in self._extractors:
            ex = create_feature_extractor(self.model, return_nodes={n: n for n in nodes},
                                          suppress_diff_warning=True)
            self.train(self.training)   # tracing switches train/eval: restore frozen batch norms
            self._extractors[nodes] = ex
        ex = self._extractors[nodes]
        if ex.training != self.training:    # the graph of the current mode (the submodules are the model's)
            ex.train(self.training)
            self.train(self.training)
        return ex

    # -- training helpers -------------------------------------------------------------------------------
    def _stage_of(self, qualname: str) -> str:
        layer = self.config.classifier_layer
        if qualname == layer or qualname.startswith(layer + "."):
            return "head"
        parts = qualname.split(".")
        for stage in (".".join(parts[:2]), parts[0]):
            if stage in self.config.stages:
                return stage
        return self.config.stages[0]   # parameters of the model itself (ViT's class token) and the like

    def _set_trainable(self, frozen: tuple[str, ...]) -> None:
        for name, p in self.model.named_parameters():
            p.requires_grad_(self._stage_of(name) not in frozen)

    def _frozen_batch_norms(self) -> Iterator[nn.Module]:
        return (m for name, m in self.model.named_modules()
                if isinstance(m, _BatchNorm) and self._stage_of(name) in self._frozen)

    def reset_classifier(self, num_classes: int, seed: int = 0) -> None:
        """Replace the final layer by a new one with ``num_classes`` outputs (seeded)."""
        self.num_classes = replace_classifier(self.model, self.config.classifier_layer, num_classes, seed)
        self._extractors.clear()
        self.classes = None
