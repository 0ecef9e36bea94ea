"""Graph-node taps of channels-last models (Swin, ConvNeXt's blocks, MaxViT) against create_feature_extractor.

The oracle: torchvision's own model holding the same random weights, the node's raw output from
``create_feature_extractor``, averaged over the spatial axes written out in each test ((1, 2) for a
channels-last (N, H, W, C) map, (2, 3) for (N, C, H, W)). CPU, random weights; 64 px where the model takes
it, MaxViT at 224 (its partitions need sides of 224k).
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from featx.backbones import create_backbone, get_config
from featx.backbones.catalog import refused_taps
from featx.backbones.layouts import decide_layout
from featx.cli.app import flag
from featx.data import discover
from featx.data.images import load_image, make_transform
from featx.errors import FeatxError
from featx.extract import extract
from tests.cli_helpers import invoke

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TOL = dict(rtol=1e-5, atol=1e-5)


def _reference(name: str, state: dict) -> torch.nn.Module:
    """torchvision's own ``name`` holding ``state`` (built on meta: no second random initialisation)."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    model.load_state_dict(state, assign=True)
    return model.eval()


def _raw(model: torch.nn.Module, nodes: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return create_feature_extractor(model, return_nodes=nodes)(x)


@pytest.mark.parametrize("shapes, layout, width", [
    ([(2, 7, 7, 768), (3, 8, 8, 768)], "H,W,C", 768),          # Swin's norm at 224 and 256 px
    ([(2, 96, 56, 56), (3, 96, 64, 64)], "C,H,W", 96),
    ([(2, 512, 7, 7), (3, 512, 7, 7)], "C,H,W", 512),            # an adaptive pool: square H, W tell the channels
    ([(2, 7, 7, 768), (3, 7, 7, 768)], "H,W,C", 768),
    ([(2, 768, 1, 1), (3, 768, 1, 1)], "C,H,W", 768),
    ([(2, 197, 768), (3, 257, 768)], "L,C", 768),               # ViT's encoder tokens
    ([(2, 768, 196), (3, 768, 256)], "C,L", 768),               # ViT's patches before the permute
    ([(2, 1, 768), (3, 1, 768)], "L,C", 768),                   # the class token, expanded
    ([(2, 1280), (3, 1280)], "D", 1280),
])
def test_layouts_follow_the_axes_that_change_with_the_image_size(shapes, layout, width):
    lay = decide_layout(shapes)
    assert (lay.usable, lay.layout, lay.width) == (True, layout, width)


@pytest.mark.parametrize("shapes, why", [
    ([(2, 64, 8, 7, 8, 7), (3, 64, 16, 7, 16, 7)], "5 axes per image, not a map (a window partition"),
    ([(2, 64, 49, 64), (3, 256, 49, 64)], "featx cannot tell its channel axis"),   # MaxViT: windows x tokens
    ([(2, 7, 7, 7), (3, 7, 7, 7)], "featx cannot tell its channel axis"),          # C = H = W
    ([(2, 25088), (3, 32768)], "its width changes with the image size"),
    ([(2, 49, 64), (3, 49, 64)], "featx cannot tell its token axis from its channel axis"),
])
def test_layouts_featx_cannot_tell_are_refused(shapes, why):
    lay = decide_layout(shapes)
    assert not lay.usable and lay.width == 0 and lay.why.startswith(why)


@pytest.fixture(scope="module")
def swin():
    return create_backbone("swin_t", "none", seed=0)


def test_swin_t_norm_and_stage_5_equal_create_feature_extractor(swin):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    nodes = ["norm", "features.5"]
    raw = _raw(_reference("swin_t", swin.state_dict()), nodes, x)
    assert raw["norm"].shape == (2, 2, 2, 768) and raw["features.5"].shape == (2, 4, 4, 384)   # (N, H, W, C)
    with torch.no_grad():
        got = swin.forward_taps(x, nodes)
    assert got["norm"].shape == (2, 768) and got["features.5"].shape == (2, 384)
    for node in nodes:
        torch.testing.assert_close(got[node], raw[node].mean(dim=(1, 2)), **TOL)
    swin.pooling = "max"
    try:
        with torch.no_grad():
            torch.testing.assert_close(swin.forward_taps(x, ["norm"])["norm"], raw["norm"].amax(dim=(1, 2)), **TOL)
    finally:
        swin.pooling = "avg"
    widths = get_config("swin_t").tap_widths()
    assert (widths["norm"], widths["features.5"], widths["features.7"], widths["pool"]) == (768, 384, 768, 768)


def test_convnext_tiny_in_block_nodes_after_the_permute_equal_create_feature_extractor():
    net = create_backbone("convnext_tiny", "none", seed=1)
    nodes = ["features.1.0.block.2", "features.1.0.block.3", "features.1.0.block.6"]   # LayerNorm, Linear, back
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    raw = _raw(_reference("convnext_tiny", net.state_dict()), nodes, x)
    assert raw["features.1.0.block.3"].shape == (2, 16, 16, 384)                    # channels last
    with torch.no_grad():
        got = net.forward_taps(x, nodes)
    assert {n: tuple(v.shape) for n, v in got.items()} == {
        "features.1.0.block.2": (2, 96), "features.1.0.block.3": (2, 384), "features.1.0.block.6": (2, 96)}
    torch.testing.assert_close(got["features.1.0.block.2"], raw["features.1.0.block.2"].mean(dim=(1, 2)), **TOL)
    torch.testing.assert_close(got["features.1.0.block.3"], raw["features.1.0.block.3"].mean(dim=(1, 2)), **TOL)
    torch.testing.assert_close(got["features.1.0.block.6"], raw["features.1.0.block.6"].mean(dim=(2, 3)), **TOL)


MAXVIT_PARTITION = "blocks.0.layers.0.layers.window_attention.partition_op.reshape_1"   # (N, windows, 49, C)


def test_maxvit_t_maps_equal_create_feature_extractor_and_partitions_are_refused(cnmc_tree, tmp_path, wide_console):
    net = create_backbone("maxvit_t", "none", seed=2)
    nodes = ["blocks.1.layers.0.layers.grid_attention", "blocks.3"]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    raw = _raw(_reference("maxvit_t", net.state_dict()), [*nodes, MAXVIT_PARTITION], x)
    assert raw[MAXVIT_PARTITION].shape == (1, 64, 49, 64)
    with torch.no_grad():
        got = net.forward_taps(x, nodes)
    assert got[nodes[0]].shape == (1, 128) and got["blocks.3"].shape == (1, 512)
    for node in nodes:
        torch.testing.assert_close(got[node], raw[node].mean(dim=(2, 3)), **TOL)
    suggested = "blocks.0.layers.0.layers.window_attention"
    message = (f"graph node {MAXVIT_PARTITION} of maxvit_t gives (B, 64, 49, 64) at its default size: featx cannot "
               f"tell its channel axis (not a (C, H, W) or (H, W, C) map), so featx cannot store one vector per "
               f"image; use taps='{suggested}' (`featx.backbones.catalog.tap_rows('maxvit_t')` lists the taps)")
    with pytest.raises(FeatxError) as err:
        net.forward_taps(x, [MAXVIT_PARTITION])
    assert str(err.value) == message
    assert err.value.render(flag).endswith(f"use --taps {suggested} (`featx backbones maxvit_t --taps` lists the taps)")
    assert get_config("maxvit_t").tap_widths()[suggested] == 64 and MAXVIT_PARTITION not in \
        get_config("maxvit_t").tap_widths()
    out = tmp_path / "maxvit.h5"
    with pytest.raises(FeatxError) as err:
        extract(cnmc_tree, out, backbone="maxvit_t", weights="none", taps=[MAXVIT_PARTITION], workers=0,
                device="cpu", splits=["fold_0"])
    assert str(err.value) == message and not out.exists()
    result, text = invoke("backbones", "maxvit_t", "--taps", "--all")  # a deep node: --all lists every one
    assert result.exit_code == 0 and f"│ {suggested} │ 64 │ C,H,W │" in text
    refused = refused_taps("maxvit_t")
    assert MAXVIT_PARTITION in refused and f"│ {MAXVIT_PARTITION} │" not in text
    assert f"{len(refused)} graph nodes are left out: featx cannot tell which of their axes are channels" in text


def test_featx_backbones_taps_shows_swin_t_channel_widths(wide_console):
    result, _ = invoke("backbones", "swin_t", "--taps", "--json")
    assert result.exit_code == 0
    rows = {r["tap"]: (r["width"], r["layout"]) for r in json.loads(result.output)}
    assert rows["norm"] == (768, "H,W,C") and rows["features.5"] == (384, "H,W,C")
    assert rows["permute"] == (768, "C,H,W") and rows["pool"] == (768, "")
    result, text = invoke("backbones", "swin_t", "--taps")
    assert "│ norm │ 768 │ H,W,C │" in text and "│ features.5 │ 384 │ H,W,C │" in text
    assert "left out" not in text


def test_extract_stores_swin_t_norm_and_stage_5_as_channel_vectors(swin, cnmc_tree, tmp_path):
    store = extract(cnmc_tree, tmp_path / "swin.h5", backbone="swin_t", weights="none", seed=0, image_size=64,
                    taps=["norm", "features.5"], workers=0, device="cpu", splits=["fold_0"])
    with h5py.File(store) as h5:
        paths = h5["samples/path"].asstr()[:]
        stored = {tap: h5[f"features/{tap}"][:] for tap in ("norm", "features.5")}
        description = h5["features/norm"].attrs["description"]
    assert description.startswith("graph node norm of swin_t (layout H,W,C), ") and description.endswith("768 values")
    assert stored["norm"].shape == (len(paths), 768) and stored["features.5"].shape == (len(paths), 384)
    collection = discover(cnmc_tree, ["fold_0"])
    cfg = get_config("swin_t")
    tf = make_transform(64, cfg.mean, cfg.std)
    by_path = {s.path: i for i, s in enumerate(collection.samples)}
    x = torch.stack([tf(load_image(collection.abspath(by_path[p]))) for p in paths])
    raw = _raw(_reference("swin_t", swin.state_dict()), ["norm", "features.5"], x)   # the same seed-0 weights
    for tap in stored:
        np.testing.assert_allclose(stored[tap], raw[tap].mean(dim=(1, 2)).numpy(), rtol=1e-5, atol=1e-5)
