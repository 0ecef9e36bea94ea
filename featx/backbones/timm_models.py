"""timm models, optional: ``--backbone timm:NAME`` (``pip install 'featx[timm]'``).

- tap ``pool`` (the default and only tap): ``forward_head(forward_features(x), pre_logits=True)``, timm's
  own penultimate feature;
- preprocessing (input size, mean, std) from timm's pretrained config of the model;
- ``--weights imagenet``: timm's pretrained file from the Hugging Face cache (downloaded by timm when
  possible; with ``FEATX_OFFLINE=1`` or offline, one line naming the repository, file and cache folder);
  ``--weights PATH``: a state dict of the timm model or a featx checkpoint; ``none``: seeded random;
- the final layer is timm's ``get_classifier()``; a fixed-size model (a ViT) refuses other sizes in one line.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from featx.backbones.generic import POOL_TAP, GraphNet, SizeProbe, final_layer, model_stages, on_meta
from featx.backbones.registry import BackboneConfig, register_resolver
from featx.backbones.weights import OFFLINE_ENV
from featx.errors import FeatxError, arg

PREFIX = "timm:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")   # what timm's Hugging Face repositories hold


def timm_module():
    """The ``timm`` package, or one line saying how to install it."""
    try:
        import timm  # deferred: an optional dependency (featx[timm]), imported only for timm:NAME
    except ImportError:
        raise FeatxError("timm is not installed: pip install 'featx[timm]' (or pip install timm) to use "
                         f"{arg('backbone', 'timm:NAME')}") from None
    return timm


class TimmNet(GraphNet):
    """A timm model: tap ``pool`` is ``forward_head(forward_features(x), pre_logits=True)``."""

    def pool(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class TimmModel(SizeProbe):
    """What featx works out once about one timm model; its bound methods fill a BackboneConfig."""

    def __init__(self, name: str):
        self.timm = timm_module()
        self.name = name
        self.model = on_meta(lambda: self.timm.create_model(name, pretrained=False)).eval()
        data = self.timm.data.resolve_data_config({}, model=self.model)
        self.size = int(data["input_size"][-1])
        self.mean = tuple(float(v) for v in data["mean"])
        self.std = tuple(float(v) for v in data["std"])
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self._sizes: dict[int, str | None] = {}
        self.label = f"timm:{name}"
        head = self.model.get_classifier()
        layer = next((n for n, m in self.model.named_modules() if m is head and isinstance(m, (nn.Linear, nn.Conv2d))),
                     None) or final_layer(self.model)
        cfg = BackboneConfig(
            name=PREFIX + name, builder=self.build, taps={POOL_TAP: 0}, default_tap=POOL_TAP, input_size=self.size,
            mean=self.mean, std=self.std, imagenet=None, min_input_size=1, stages=model_stages(self.model, layer),
            default_num_classes=int(getattr(self.model, "num_classes", 1000) or 1000), classifier_layer=layer,
            description=f"{name} (timm, {self.parameters / 1e6:.1f}M parameters)",
            check_size=self.check_size, imagenet_state=self.imagenet_state)
        x = torch.empty(1, 3, self.size, self.size, device="meta")
        width = int(TimmNet(cfg, self.model, num_classes=cfg.default_num_classes).pool(x).shape[1])
        self.config = dataclasses.replace(cfg, taps={POOL_TAP: width})

    def build(self, config: BackboneConfig, num_classes: int, dropout: float) -> TimmNet:
        def build() -> nn.Module:
            return self.timm.create_model(self.name, pretrained=False, num_classes=int(num_classes))

        # under meta (create_backbone loading weights): a skeleton, also for builders that cannot run on meta
        model = on_meta(build).train() if torch.empty(0).is_meta else build()
        return TimmNet(config, model, num_classes=num_classes)

    def cached_file(self) -> Path | None:
        """timm's pretrained file of this model in the Hugging Face cache, or None."""
        return hub_cached_file(self.model.pretrained_cfg.get("hf_hub_id"))

    def imagenet_state(self) -> tuple[Path, dict]:
        """timm's pretrained weights from the Hugging Face cache (downloaded by timm unless offline)."""
        path = self.cached_file()
        if path is None:
            if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
                reason = f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]} forbids downloading"
            else:
                try:
                    self.timm.create_model(self.name, pretrained=True)
                    reason = "the download left no file"
                except Exception as exc:  # offline, DNS failure, timeout...
                    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
                path = self.cached_file()
            if path is None:
                from huggingface_hub import constants  # deferred: comes with timm, which is optional

                repo = self.model.pretrained_cfg.get("hf_hub_id") or "(none)"
                raise FeatxError(f"pretrained weights of timm:{self.name} are not cached and could not be downloaded "
                                 f"({reason}): put {WEIGHT_FILES[0]} of the Hugging Face repository {repo} into "
                                 f"the cache {constants.HF_HUB_CACHE} (HF_HOME), or pass "
                                 f"{arg('weights', 'PATH')} to a saved state dict of the timm model")
        model = self.timm.create_model(self.name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        return path, model.state_dict()


def hub_cached_file(repo: str | None) -> Path | None:
    """The pretrained file of Hugging Face repository ``repo`` in the Hugging Face cache, or None."""
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache  # deferred: comes with timm, which is optional

    for filename in WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


_MODELS: dict[str, TimmModel] = {}


def _resolve(key: str) -> BackboneConfig | None:
    if not key.startswith(PREFIX):
        return None
    name = key[len(PREFIX):]
    if name not in _MODELS:
        timm = timm_module()
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
            raise FeatxError(f"unknown timm model {name!r}{hint} (timm.list_models() lists them)")
        _MODELS[name] = TimmModel(name)
    return _MODELS[name].config


def timm_model(name: str) -> TimmModel:
    """The :class:`TimmModel` behind ``timm:NAME``."""
    _resolve(name.lower())
    return _MODELS[name.lower()[len(PREFIX):]]


register_resolver(_resolve, lambda: [])
