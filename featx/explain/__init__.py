"""Class-activation maps of fine-tuned networks: what in a cell drives the network's decision.

:func:`explain` maps chosen cells with Grad-CAM and occlusion (both through Captum) and writes a sheet and a CSV;
:func:`plot_explanations` draws a small sheet for a report; :func:`featx.explain.layers.resolve_layer` is the rule
that picks the mapped layer (the last convolutional stage) of any backbone featx fine-tunes. Names load on first
use: ``featx.explain.methods`` (what the CLI's help lists) does not import torch.
"""
from __future__ import annotations

import importlib

from featx.imports import callable_module

_NAMES = {"ExplainResult": "core", "ImageExplanation": "core", "compute": "core", "explain": "core",
          "plot_explanations": "core", "MapLayer": "layers", "map_layers": "layers", "resolve_layer": "layers",
          "METHODS": "methods"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'featx.explain' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"featx.explain.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})


callable_module(__name__, "explain")  # featx.explain(...) is featx.explain.explain(...) (see featx/__init__.py)
