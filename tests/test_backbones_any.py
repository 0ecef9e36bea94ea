"""Any torchvision model by name (taps from the graph), `featx backbones`, finetune -> extract, timm optional.

CPU, random weights, 32-64 px (the ViT at its fixed 224 on two images). Every feature is compared with a
direct ``create_feature_extractor`` forward of the same torchvision model holding the same weights, with a
tolerance (BLAS kernels differ between machines).
"""
from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from featx.backbones import check_input_size, create_backbone, get_config
from featx.backbones.timm_models import timm_module
from featx.cli.app import flag
from featx.data import discover
from featx.data.images import load_image, make_transform
from featx.errors import FeatxError
from featx.extract import extract
from featx.finetune import finetune
from tests.cli_helpers import invoke

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference(name: str, state: dict) -> torch.nn.Module:
    """torchvision's own ``name`` holding ``state`` (built on meta: no second random initialisation)."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    model.load_state_dict(state, assign=True)
    return model.eval()


def _direct(model: torch.nn.Module, node: str, x: torch.Tensor) -> torch.Tensor:
    out = create_feature_extractor(model, return_nodes=[node])(x)[node]
    return out.mean(dim=(2, 3)) if out.dim() == 4 else out


def test_resnet18_pool_and_layer3_equal_torchvision_seeded_the_same_way():
    net = create_backbone("resnet18", "none", seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        tv = torchvision.models.resnet18().eval()       # featx's seeded "none" is torchvision's seeded init
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), tv.state_dict().values()))
    cfg = get_config("resnet18")
    assert cfg.default_tap == "pool" and cfg.taps == {"pool": 512} and cfg.classifier_layer == "fc"
    assert cfg.tap_widths()["layer3"] == 256 and cfg.imagenet_file == "resnet18-f37072fd.pth"
    assert cfg.stages == ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head")
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = net.forward_taps(x, ["layer3", "pool"])
        want = {"pool": _direct(tv, "flatten", x), "layer3": _direct(tv, "layer3", x)}
    assert list(got) == ["layer3", "pool"]
    assert got["pool"].shape == (3, 512) and got["layer3"].shape == (3, 256)
    for tap in got:
        torch.testing.assert_close(got[tap], want[tap], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, node, width", [
    ("efficientnet_b0", "flatten", 1280),
    # the classifier's input: LayerNorm, Flatten, Linear follow
    pytest.param("convnext_tiny", "avgpool", 768, marks=pytest.mark.slow),
    ("mobilenet_v3_small", "flatten", 576),   # pooled, before the hidden Linear of its classifier
])
def test_default_tap_equals_create_feature_extractor(name, node, width):
    net = create_backbone(name, "none", seed=0)
    assert get_config(name).taps == {"pool": width}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = net.forward_taps(x, ["pool"])["pool"]
        want = _direct(_reference(name, net.state_dict()), node, x)
    assert got.shape == (2, width)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_vit_at_its_fixed_size_gives_the_class_token_and_refuses_other_sizes():
    net = create_backbone("vit_b_32", "none", seed=0)
    ref = _reference("vit_b_32", net.state_dict())
    eval_nodes = get_graph_node_names(ref)[1]
    cls_token = eval_nodes[eval_nodes.index("heads.head") - 1]        # x[:, 0], the input of the head
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = net.forward_taps(x, ["pool", "encoder.layers.encoder_layer_0"])
        torch.testing.assert_close(got["pool"], _direct(ref, cls_token, x), rtol=1e-4, atol=1e-4)
        tokens = create_feature_extractor(ref, ["encoder.layers.encoder_layer_0"])(x)
        torch.testing.assert_close(got["encoder.layers.encoder_layer_0"],
                                   tokens["encoder.layers.encoder_layer_0"].mean(dim=1), rtol=1e-4, atol=1e-4)
    assert got["pool"].shape == (2, 768)
    with pytest.raises(FeatxError) as err:
        check_input_size("vit_b_32", 64)
    assert str(err.value) == ("vit_b_32 takes only 224x224 images (a fixed-size model), not 64x64; "
                              "use image_size=224")
    with pytest.raises(FeatxError, match="takes only 224x224"):
        net.forward_taps(torch.zeros(1, 3, 64, 64), ["pool"])


@pytest.mark.slow
def test_finetune_resnet18_then_extract_with_its_checkpoint(cnmc_tree, tmp_path):
    run = tmp_path / "run"
    finetune(cnmc_tree, run, backbone="resnet18", weights="none", epochs=1, image_size=32, batch_size=8,
             workers=0, device="cpu", val="fold_2", freeze="layer4")
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["backbone"] == "resnet18" and ckpt["model"]["fc.weight"].shape == (2, 512)
    initial = create_backbone("resnet18", "none", seed=0).state_dict()
    assert torch.equal(ckpt["model"]["layer3.0.conv1.weight"], initial["layer3.0.conv1.weight"])   # frozen
    assert not torch.equal(ckpt["model"]["layer4.0.conv1.weight"], initial["layer4.0.conv1.weight"])  # trained
    store = extract(cnmc_tree, tmp_path / "tuned.h5", backbone="resnet18", weights=run / "best.pt",
                    taps=["pool", "layer3"], workers=0, device="cpu", splits=["fold_0"], pool="max")
    with h5py.File(store) as h5:
        assert h5.attrs["backbone"] == "resnet18" and h5.attrs["input_size"] == 32   # the checkpoint's size
        assert h5.attrs["pooling"] == "max"
        assert h5.attrs["weights"] == str((run / "best.pt").resolve()) and len(h5.attrs["weights_sha256"]) == 64
        paths = h5["samples/path"].asstr()[:]
        stored = {tap: h5[f"features/{tap}"][:] for tap in ("pool", "layer3")}
    # the tuned network itself: torchvision's resnet18 with the checkpoint's weights, fed as extract feeds it
    tuned = torchvision.models.resnet18(num_classes=2).eval()
    tuned.load_state_dict(ckpt["model"])
    collection = discover(cnmc_tree, ["fold_0"])
    cfg = get_config("resnet18")
    tf = make_transform(32, cfg.mean, cfg.std)
    by_path = {s.path: i for i, s in enumerate(collection.samples)}
    x = torch.stack([tf(load_image(collection.abspath(by_path[p]))) for p in paths])
    with torch.no_grad():
        np.testing.assert_allclose(stored["pool"], _direct(tuned, "flatten", x).numpy(), rtol=1e-4, atol=1e-4)
        layer3 = create_feature_extractor(tuned, ["layer3"])(x)["layer3"].amax(dim=(2, 3))   # --pool max
        np.testing.assert_allclose(stored["layer3"], layer3.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(FeatxError, match="pool='max': choose avg or max"):
        extract(cnmc_tree, tmp_path / "cnn.h5", backbone="cnn", weights="none", pool="max")


def test_featx_backbones_lists_widths_and_taps(wide_console):
    result, out = invoke("backbones", "resnet18")
    assert result.exit_code == 0, out
    assert "resnet18 │ torchvision │ pool │ 512 │ 224px │ 11.7M │ resnet18-f37072fd.pth" in out
    result, out = invoke("backbones", "alexnet", "--json")
    rows = json.loads(result.output)
    assert [(r["name"], r["default_tap"], r["width"], r["source"]) for r in rows] == [
        ("alexnet", "fc7", 4096, "featx")]
    result, out = invoke("backbones", "resnet18", "--taps", "--json")
    taps = {r["tap"]: r["width"] for r in json.loads(result.output)}
    assert taps["layer3"] == 256 and taps["layer4"] == 512 and taps["pool"] == 512 and taps["fc"] == 1000
    result, out = invoke("backbones", "resnet18", "--taps")
    assert "│ layer3 │ 256 │" in out and "│ layer4 │ 512 │" in out


def test_imagenet_offline_names_the_exact_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    with pytest.raises(FeatxError) as err:
        create_backbone("resnet18", "imagenet")
    message = str(err.value)
    assert "\n" not in message and "resnet18-f37072fd.pth" in message
    assert str((tmp_path / "torch" / "hub" / "checkpoints").resolve()) in message


def test_unknown_model_suggests_close_names_in_one_line():
    with pytest.raises(FeatxError) as err:
        get_config("resnt50")
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown backbone 'resnt50'; did you mean resnet50")
    assert "`featx.backbones.catalog.list_rows()` lists them" in message  # the CLI: `featx backbones`
    assert "`featx backbones` lists them" in err.value.render(flag)
    result, out = invoke("backbones", "efficientnet_b9", "--taps")
    assert result.exit_code == 1 and "did you mean efficientnet_b" in out and "Traceback" not in out


def test_timm_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)      # as if not installed
    with pytest.raises(FeatxError, match=r"^timm is not installed: pip install 'featx\[timm\]'"):
        timm_module()


@pytest.mark.slow
def test_timm_model_default_tap_is_forward_head_pre_logits():
    timm = pytest.importorskip("timm", reason="timm is optional: pip install 'featx[timm]'")
    net = create_backbone("timm:resnet18", "none", seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref = timm.create_model("resnet18").eval()
    cfg = get_config("timm:resnet18")
    assert cfg.taps == {"pool": 512} and cfg.input_size == 224 and cfg.classifier_layer == "fc"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = net.forward_taps(x, ["pool"])["pool"]
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_torchvision_state_dict_loads_by_path(tmp_path):
    # RegNet's builder computes with tensors, so it cannot be built under torch.device("meta") as others are
    with torch.random.fork_rng():
        torch.manual_seed(5)
        tv = torchvision.models.regnet_x_400mf(num_classes=3).eval()
    torch.save(tv.state_dict(), tmp_path / "regnet.pt")
    net = create_backbone("regnet_x_400mf", tmp_path / "regnet.pt")
    assert net.num_classes == 3 and net.weights_info.kind == "file" and len(net.weights_info.sha256) == 64
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(net(x), tv(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(net.forward_taps(x, "pool")["pool"], _direct(tv, "flatten", x),
                                   rtol=1e-4, atol=1e-4)
