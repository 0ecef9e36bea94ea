"""What ``featx backbones`` shows: every backbone with its default tap and width, input size, parameters and
whether its pretrained weights are cached (rows kept in :mod:`featx.backbones.catalog_cache`, probed once per
installed version); and the taps (graph nodes) of one model, stage-level ones unless all are asked for."""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import torch

from featx.backbones import catalog_cache
from featx.backbones.registry import BackboneConfig, get_config, list_backbones
from featx.backbones.timm_models import PREFIX as TIMM_PREFIX
from featx.backbones.timm_models import hub_cached_file, timm_model
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


def _matching(pattern: str | None) -> list[str]:
    if pattern and pattern.lower().startswith(TIMM_PREFIX):
        return [pattern.lower()]
    names = list_backbones() + torchvision_names()
    if pattern:
        glob = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
        names = [n for n in names if fnmatch.fnmatchcase(n, glob)]
        if not names:
            raise FeatxError(f"no backbone matches {pattern!r}; "
                             f"{command('backbones', 'featx.backbones.catalog.list_rows()')} lists them all")
    return names


# what the catalogue keeps of a row: all but whether its weights are cached (looked up at each listing)
_KEPT = {f.name for f in dataclasses.fields(BackboneRow)} - {"cached"}


def _cacheable(name: str) -> bool:
    """Rows fixed by the installed versions: torchvision and timm models and featx's own named backbones (not
    a backbone registered by the user's code, which may change without a version)."""
    return name not in list_backbones() or get_config(name).builder.__module__.startswith("featx.")


def _from_catalogue(kept: dict) -> BackboneRow:
    if kept["source"] == "timm":
        cached = kept["weights_file"] is not None and hub_cached_file(kept["weights_file"]) is not None
    else:
        cached = _hub_file(kept["weights_file"])[1]
    return BackboneRow(**kept, cached=cached)


def uncatalogued(pattern: str | None = None) -> list[str]:
    """The names :func:`list_rows` of ``pattern`` has to probe (not in the catalogue yet)."""
    kept = catalog_cache.load(_KEPT)
    return [n for n in _matching(pattern) if n not in kept or not _cacheable(n)]


def list_rows(pattern: str | None = None) -> list[BackboneRow]:
    """Rows of the named backbones, then of every torchvision model, whose name matches ``pattern``
    (shell-style, e.g. ``resnet*``; a plain word matches names containing it); ``timm:NAME`` gives that one.

    Each model is probed (built on the meta device) once per installed featx/torch/torchvision/timm version;
    its row is kept in the catalogue (:func:`featx.backbones.catalog_cache.cache_path`) for later listings."""
    names = _matching(pattern)
    kept = catalog_cache.load(_KEPT)
    rows, added = [], {}
    try:
        for name in names:
            cacheable = _cacheable(name)
            if cacheable and name in kept:
                rows.append(_from_catalogue(kept[name]))
                continue
            rows.append(backbone_row(name))
            if cacheable:
                added[name] = {k: v for k, v in dataclasses.asdict(rows[-1]).items() if k in _KEPT}
    finally:  # an interrupted first listing keeps what it probed
        if added:
            catalog_cache.save({**kept, **added})
    return rows


def tap_rows(name: str, every_node: bool = False) -> list[tuple[str, int, str]]:
    """The usable taps of backbone ``name``: name, width and layout per image (``C,H,W``, ``H,W,C``, ``L,C``,
    ``C,L`` or ``D`` for a graph node, "" for the backbone's own taps), in forward order (graph nodes, then
    ``pool``). Only the stage-level ones (:func:`stage_level`) unless ``every_node``."""
    cfg = get_config(name)
    widths = cfg.tap_widths()
    shown = set(widths) if every_node else stage_level(cfg, list(widths))
    return [(tap, width, lay.layout if (lay := cfg.graph_layout(tap)) is not None else "")
            for tap, width in widths.items() if tap in shown]


def stage_level(cfg: BackboneConfig, taps: list[str]) -> set[str]:
    """The taps worth listing first: those no deeper in the module tree than the model's stages (resnet50:
    conv1 ... layer1-4, avgpool, fc, pool; convnext: features.0-7, classifier), the default tap, and, for a model
    of one or two stages (a ViT's encoder), the repeated blocks inside them (encoder_layer_0-11)."""
    body = [s for s in cfg.stages if s != "head"] or [""]
    depth = max(s.count(".") for s in body)
    shown = {t for t in taps if t.count(".") <= depth} | {cfg.default_tap}
    if len(body) <= 2:
        blocks = [t for t in taps if any(other.startswith(t + ".") for other in taps)
                  and any(t.startswith(s + ".") for s in body)]
        by_depth: dict[int, list[str]] = {}
        for t in blocks:
            by_depth.setdefault(t.count("."), []).append(t)
        shown |= set(next((group for _, group in sorted(by_depth.items()) if len(group) >= 2), []))
    return shown & set(taps)


def refused_taps(name: str) -> list[str]:
    """The graph nodes of backbone ``name`` featx refuses as taps: it cannot tell their channel axis (window
    partitions, ...); ``extract --taps`` says why for each."""
    cfg = get_config(name)
    graph = cfg.graph_taps() if cfg.graph_taps is not None else {}
    return [tap for tap, lay in graph.items() if not lay.usable]
