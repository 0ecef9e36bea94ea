"""What ``featx backbones`` shows: every backbone with its default tap and width, input size, parameters and
whether its pretrained weights are cached; and the taps (graph nodes) of one model."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import torch

from featx.backbones.registry import get_config, list_backbones
from featx.backbones.timm_models import PREFIX as TIMM_PREFIX
from featx.backbones.timm_models import timm_model
from featx.backbones.torchvision_any import torchvision_model, torchvision_names
from featx.errors import FeatxError, command


@dataclass(frozen=True)
class BackboneRow:
    """One line of ``featx backbones``."""

    name: str
    source: str               # "featx" (the named backbones), "torchvision" or "timm"
    default_tap: str
    width: int                # of the default tap
    input_size: int
    parameters: int
    weights_file: str | None  # the pretrained file's name (None: no pretrained weights)
    cached: bool              # whether that file is in the cache


def _hub_file(name: str | None) -> tuple[str | None, bool]:
    if name is None:
        return None, False
    return name, (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def backbone_row(name: str) -> BackboneRow:
    """The row of one backbone (any name ``get_config`` resolves)."""
    cfg = get_config(name)
    if cfg.name.startswith(TIMM_PREFIX):
        model = timm_model(cfg.name)
        found = model.cached_file()
        repo = model.model.pretrained_cfg.get("hf_hub_id")
        return BackboneRow(cfg.name, "timm", cfg.default_tap, cfg.taps[cfg.default_tap], cfg.input_size,
                           model.parameters, repo, found is not None)
    tv = torchvision_model(cfg.name) if cfg.name not in list_backbones() else None
    if tv is not None:
        params, source = tv.parameters, "torchvision"
    else:
        with torch.device("meta"):
            params = sum(p.numel() for p in cfg.builder(cfg, cfg.default_num_classes, 0.5).parameters())
        source = "featx"
    file, cached = _hub_file(cfg.imagenet_file)
    return BackboneRow(cfg.name, source, cfg.default_tap, cfg.taps[cfg.default_tap], cfg.input_size, params,
                       file, cached)


def list_rows(pattern: str | None = None) -> list[BackboneRow]:
    """Rows of the named backbones, then of every torchvision model, whose name matches ``pattern``
    (shell-style, e.g. ``resnet*``; a plain word matches names containing it); ``timm:NAME`` gives that one."""
    if pattern and pattern.lower().startswith(TIMM_PREFIX):
        return [backbone_row(pattern.lower())]
    names = list_backbones() + torchvision_names()
    if pattern:
        glob = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
        names = [n for n in names if fnmatch.fnmatchcase(n, glob)]
        if not names:
            raise FeatxError(f"no backbone matches {pattern!r}; "
                             f"{command('backbones', 'featx.backbones.catalog.list_rows()')} lists them all")
    return [backbone_row(n) for n in names]


def tap_rows(name: str) -> list[tuple[str, int, str]]:
    """The usable taps of backbone ``name``: name, width and layout per image (``C,H,W``, ``H,W,C``, ``L,C``,
    ``C,L`` or ``D`` for a graph node, "" for the backbone's own taps), in forward order (graph nodes, then
    ``pool``)."""
    cfg = get_config(name)
    return [(tap, width, lay.layout if (lay := cfg.graph_layout(tap)) is not None else "")
            for tap, width in cfg.tap_widths().items()]


def refused_taps(name: str) -> list[str]:
    """The graph nodes of backbone ``name`` featx refuses as taps: it cannot tell their channel axis (window
    partitions, ...); ``extract --taps`` says why for each."""
    cfg = get_config(name)
    graph = cfg.graph_taps() if cfg.graph_taps is not None else {}
    return [tap for tap, lay in graph.items() if not lay.usable]
