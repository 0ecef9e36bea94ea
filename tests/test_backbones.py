"""featx.backbones: registry, taps against torchvision's own modules, weights (none / imagenet / file), freeze.

Random weights only: the "ImageNet" files written here are random torchvision state dicts saved under
torchvision's cache file name, to show that the cache is read; nothing here is pretrained.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import AlexNet_Weights, VGG16_Weights

from featx.backbones import check_input_size, create_backbone, get_config, list_backbones, register_backbone, registry
from featx.backbones.cnn import build_cnn
from featx.cli.app import flag
from featx.errors import FeatxError

torch.set_num_threads(2)


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def vgg16():
    return create_backbone("vgg16", seed=0)


@pytest.fixture(scope="module")
def alexnet():
    return create_backbone("alexnet", seed=0)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory, alexnet):
    """A TORCH_HOME whose hub cache holds a (random) AlexNet state dict under torchvision's exact file name."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(alexnet.state_dict(), folder / "alexnet-owt-7be5be79.pth")
    return home


# ------------------------------------------------------------------------------------------- registry

def test_registry_configs_follow_torchvision_weights():
    assert list_backbones() == ["alexnet", "cnn", "vgg16"]
    vgg = get_config("vgg16")
    tf = VGG16_Weights.IMAGENET1K_V1.transforms()
    assert vgg.mean == tuple(tf.mean) and vgg.std == tuple(tf.std) and vgg.input_size == tf.crop_size[0] == 224
    assert vgg.imagenet is VGG16_Weights.IMAGENET1K_V1 and vgg.imagenet_file == "vgg16-397923af.pth"
    assert vgg.taps == {"pool5": 512, "fc6": 4096, "fc7": 4096}
    alex = get_config("alexnet")
    assert alex.imagenet is AlexNet_Weights.IMAGENET1K_V1 and alex.imagenet_file == "alexnet-owt-7be5be79.pth"
    assert alex.taps == {"pool5": 256, "fc6": 4096, "fc7": 4096} and alex.min_input_size == 63
    cnn = get_config("CNN")
    assert cnn.taps == {"pool5": 256, "fc": 128} and cnn.imagenet is None and cnn.mean == vgg.mean
    assert cnn.stages == ("block1", "block2", "block3", "block4", "fc", "head")
    # any torchvision model resolves by name (tests/test_backbones_any.py); a name that is none is refused
    with pytest.raises(FeatxError, match="unknown backbone 'resnet5000'; did you mean .*choose one of: alexnet, "
                                         "cnn, vgg16, any torchvision classification model"):
        get_config("resnet5000")
    with pytest.raises(FeatxError, match="choose one of: alexnet, cnn, vgg16"):
        create_backbone("vgg99x")


def test_check_input_size():
    check_input_size("alexnet", 63)
    check_input_size("vgg16", 32)
    with pytest.raises(FeatxError, match="image size 62 is too small for alexnet: it needs at least 63 px"):
        check_input_size("alexnet", 62)
    with pytest.raises(FeatxError, match="at least 32 px") as err:
        check_input_size("vgg16", 31)
    assert str(err.value).endswith("raise image_size") and err.value.render(flag).endswith("raise --image-size")


def test_each_config_holds_its_default_tap_classifier_layer_and_classes():
    expected = {"alexnet": ("fc7", "classifier.6", 1000), "cnn": ("fc", "classifier.4", 2),
                "vgg16": ("fc7", "classifier.6", 1000)}
    for name, (tap, layer, n) in expected.items():
        cfg = get_config(name)
        assert (cfg.default_tap, cfg.classifier_layer, cfg.default_num_classes) == (tap, layer, n)
        assert list(cfg.taps)[-1] == cfg.default_tap        # the penultimate layer: the last tap before the logits
        with torch.device("meta"):
            net = cfg.builder(cfg, n, 0.5)
        final = net.get_submodule(cfg.classifier_layer)
        assert isinstance(final, nn.Linear) and final.out_features == n
        assert list(net.state_dict())[-1] == f"{cfg.classifier_layer}.bias"


def test_register_backbone_adds_a_network_to_the_one_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_backbone("tiny", preprocessed_as=AlexNet_Weights.IMAGENET1K_V1, imagenet=None,
                      taps={"pool5": 256, "fc": 128}, default_tap="pool5", min_input_size=16,
                      stages=("block1", "block2", "block3", "block4", "fc", "head"), default_num_classes=3,
                      classifier_layer="classifier.4", description="the cnn under another name")(build_cnn)
    assert list_backbones() == ["alexnet", "cnn", "tiny", "vgg16"]
    net = create_backbone("tiny", seed=1)
    assert net.name == "tiny" and net.num_classes == 3 and net.config.default_tap == "pool5"
    assert net.config.mean == tuple(AlexNet_Weights.IMAGENET1K_V1.transforms().mean)
    reference = create_backbone("cnn", num_classes=3, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))


# ------------------------------------------------------------------------------------------- taps

@pytest.mark.slow
def test_vgg16_taps_equal_torchvision_modules(vgg16):
    # the state dict has torchvision's keys and shapes
    with torch.device("meta"):
        ref = torchvision.models.vgg16()
    assert {k: v.shape for k, v in vgg16.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    x = images(2, 32)
    with torch.inference_mode():
        taps = vgg16.forward_taps(x, ["fc7", "pool5", "fc6"])
        assert list(taps) == ["fc7", "pool5", "fc6"]
        assert [tuple(v.shape) for v in taps.values()] == [(2, 4096), (2, 512), (2, 4096)]
        conv = vgg16.features(x)
        flat = torch.flatten(vgg16.avgpool(conv), 1)
        assert torch.allclose(taps["pool5"], conv.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(taps["fc6"], vgg16.classifier[:2](flat), atol=1e-6)
        assert torch.allclose(taps["fc7"], vgg16.classifier[:5](flat), atol=1e-6)
        logits = vgg16(x)
        assert logits.shape == (2, 1000)
        assert torch.allclose(logits, torchvision.models.VGG.forward(vgg16, x), atol=1e-6)


@pytest.mark.slow
def test_alexnet_taps_equal_a_torchvision_alexnet(alexnet):
    ref = torchvision.models.alexnet()
    ref.load_state_dict(alexnet.state_dict())          # torchvision's keys, strict
    ref.eval()
    x = images(2, 64)
    with torch.inference_mode():
        taps = alexnet.forward_taps(x, ["pool5", "fc6", "fc7"])
        assert {k: tuple(v.shape) for k, v in taps.items()} == {"pool5": (2, 256), "fc6": (2, 4096),
                                                                 "fc7": (2, 4096)}
        conv = ref.features(x)
        flat = torch.flatten(ref.avgpool(conv), 1)
        assert torch.allclose(taps["pool5"], conv.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(taps["fc6"], ref.classifier[:3](flat), atol=1e-6)
        assert torch.allclose(taps["fc7"], ref.classifier[:6](flat), atol=1e-6)
        assert torch.allclose(alexnet(x), ref(x), atol=1e-6)
        assert (taps["fc7"] >= 0).all() and (taps["fc7"] > 0).any()      # after the ReLU


@pytest.mark.slow
def test_one_pass_equals_separate_calls_and_stops_after_last_tap(alexnet):
    x = images(3, 64, seed=1)
    calls = {"fc7_linear": 0, "head": 0}

    def counter(key):
        def hook(*_):
            calls[key] += 1
        return hook

    hooks = [alexnet.classifier[4].register_forward_hook(counter("fc7_linear")),
             alexnet.classifier[6].register_forward_hook(counter("head"))]
    try:
        with torch.inference_mode():
            together = alexnet.forward_taps(x, ["pool5", "fc6", "fc7"])
            assert calls == {"fc7_linear": 1, "head": 0}          # the final classifier never ran
            for tap in ("pool5", "fc6", "fc7"):
                assert torch.equal(together[tap], alexnet.forward_taps(x, [tap])[tap])
            assert calls == {"fc7_linear": 2, "head": 0}          # pool5 and fc6 alone stop before fc7
            alexnet(x)
            assert calls == {"fc7_linear": 3, "head": 1}
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("size", [32, 64])
def test_cnn_taps_at_small_sizes(size):
    net = create_backbone("cnn", seed=0)
    assert net.num_classes == 2 and net.stages == list(get_config("cnn").stages)
    x = images(2, size)
    with torch.inference_mode():
        taps = net.forward_taps(x, ["pool5", "fc"])
        assert taps["pool5"].shape == (2, 256) and taps["fc"].shape == (2, 128)
        conv = net.features(x)
        assert conv.shape == (2, 256, size // 16, size // 16)
        assert torch.allclose(taps["pool5"], conv.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(taps["fc"], net.classifier[:3](taps["pool5"]), atol=1e-6)
        logits = net(x)
        assert logits.shape == (2, 2)
        assert torch.allclose(logits, net.classifier[3:](taps["fc"]), atol=1e-6)


@pytest.mark.slow
def test_unknown_tap_and_too_small_input(vgg16, alexnet):
    with pytest.raises(FeatxError, match=r"unknown tap 'fc8' for vgg16; its taps are: pool5, fc6, fc7"):
        vgg16.forward_taps(images(1, 32), ["fc7", "fc8"])
    with pytest.raises(FeatxError, match=r"its taps are: pool5, fc$"):
        create_backbone("cnn").forward_taps(images(1, 32), ["fc7"])
    with pytest.raises(FeatxError, match="image size 48 is too small for alexnet"):
        alexnet.forward_taps(images(1, 48), ["fc7"])


# ------------------------------------------------------------------------------------------- weights

def test_seeded_random_init_is_deterministic_and_leaves_global_rng():
    before = torch.get_rng_state()
    a = create_backbone("cnn", seed=3).state_dict()
    b = create_backbone("cnn", "none", seed=3).state_dict()
    c = create_backbone("cnn", seed=4).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.block1.0.weight"], c["features.block1.0.weight"])
    assert not torch.equal(a["classifier.4.weight"], c["classifier.4.weight"])
    info = create_backbone("cnn", seed=3).weights_info
    assert (info.kind, info.source, info.sha256, info.seed) == ("none", "none", None, 3)


def test_dropout_is_configurable(alexnet):
    ps = [m.p for m in alexnet.classifier if isinstance(m, nn.Dropout)]
    assert ps == [0.5, 0.5]
    net = create_backbone("cnn", dropout=0.2)
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    with pytest.raises(FeatxError, match=r"dropout must be in \[0, 1\)"):
        create_backbone("cnn", dropout=1.5)


def test_state_dict_file_round_trip(tmp_path):
    net = create_backbone("cnn", num_classes=3, seed=5)
    path = tmp_path / "cnn.pt"
    torch.save(net.state_dict(), path)
    loaded = create_backbone("cnn", path)
    assert loaded.num_classes == 3 and loaded.classes is None and not loaded.training
    info = loaded.weights_info
    assert (info.kind, info.source, info.sha256, info.seed) == ("file", str(path.resolve()), sha256(path), None)
    x = images(2, 40)
    with torch.inference_mode():
        assert torch.equal(loaded(x), net(x))
        assert torch.equal(loaded.forward_taps(x, ["fc"])["fc"], net.forward_taps(x, ["fc"])["fc"])


@pytest.mark.slow
def test_alexnet_state_dict_file_loads(alexnet, torch_home):
    loaded = create_backbone("alexnet", torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    x = images(2, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x), alexnet(x))


def test_featx_checkpoint_sets_classes_and_card(tmp_path):
    net = create_backbone("cnn", num_classes=3, seed=1)
    path = tmp_path / "best.pt"
    card = {"epochs": 2, "metrics": {"f1": 0.5}, "image_size": 32}
    torch.save({"featx_checkpoint": 1, "backbone": "cnn", "classes": ["all", "hem", "other"],
                "model": net.state_dict(), "card": card}, path)
    loaded = create_backbone("cnn", path)
    assert loaded.num_classes == 3 and loaded.classes == ["all", "hem", "other"]
    assert loaded.weights_info.card == card and loaded.weights_info.kind == "file"
    x = images(2, 32)
    with torch.inference_mode():
        assert torch.equal(loaded(x), net(x))
    # asking for another number of classes keeps the features and replaces the final layer
    two = create_backbone("cnn", path, num_classes=2, seed=7)
    assert two.num_classes == 2 and two.classes is None and two.classifier[4].out_features == 2
    with torch.inference_mode():
        assert torch.equal(two.forward_taps(x, ["fc"])["fc"], net.forward_taps(x, ["fc"])["fc"])
        assert two(x).shape == (2, 2)


def test_wrong_or_broken_weights_files_are_refused(tmp_path):
    cnn = create_backbone("cnn")
    ckpt = tmp_path / "cnn_best.pt"
    torch.save({"featx_checkpoint": 1, "backbone": "cnn", "classes": ["all", "hem"],
                "model": cnn.state_dict(), "card": {}}, ckpt)
    with pytest.raises(FeatxError) as err:
        create_backbone("alexnet", ckpt)
    msg = str(err.value)
    assert str(ckpt) in msg and "backbone 'cnn', not alexnet" in msg and "use backbone='cnn' with" in msg
    assert "use --backbone cnn with" in err.value.render(flag)

    plain = tmp_path / "cnn_state.pt"
    torch.save(cnn.state_dict(), plain)
    with pytest.raises(FeatxError) as err:
        create_backbone("vgg16", plain)
    msg = str(err.value)
    assert str(plain) in msg and "does not hold vgg16 weights" in msg and "expected a vgg16 state dict" in msg

    bad_shape = dict(cnn.state_dict())
    bad_shape["features.block2.0.weight"] = torch.zeros(64, 16, 3, 3)
    torch.save(bad_shape, tmp_path / "bad.pt")
    with pytest.raises(FeatxError, match=r"1 shape mismatches \(e.g. features.block2.0.weight: \(64, 16, 3, 3\)"):
        create_backbone("cnn", tmp_path / "bad.pt")

    text = tmp_path / "notes.txt"
    text.write_text("not weights\n")
    with pytest.raises(FeatxError, match="notes.txt is not a weights file featx can read"):
        create_backbone("cnn", text)

    with pytest.raises(FeatxError, match=r"weights file .*missing\.pt does not exist; give weights='none', imagenet") \
            as err:
        create_backbone("cnn", tmp_path / "missing.pt")
    assert "does not exist; give --weights none, imagenet" in err.value.render(flag)


def test_imagenet_offline_message_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(FeatxError) as err:
        create_backbone("vgg16", "imagenet")
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    folder = tmp_path.resolve() / "hub" / "checkpoints"
    assert "\n" not in msg
    assert "vgg16-397923af.pth" in msg and f"into {folder} " in msg
    assert "TORCH_HOME" in msg and "weights='PATH'" in msg and "FEATX_OFFLINE=1" in msg
    assert "or pass --weights PATH to a saved vgg16" in err.value.render(flag)
    with pytest.raises(FeatxError, match="cnn has no ImageNet weights; use weights='none'") as err:
        create_backbone("cnn", "imagenet")
    cli = err.value.render(flag)
    assert "use --weights none (random init" in cli and "--weights PATH of a cnn" in cli


def test_imagenet_failed_download_is_one_line(tmp_path, monkeypatch):
    """Without FEATX_OFFLINE torchvision's download is tried; its failure becomes the same message."""
    import urllib.error

    calls = []

    def offline(self, *args, **kwargs):
        calls.append(self.url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("FEATX_OFFLINE", raising=False)
    monkeypatch.setattr(type(AlexNet_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(FeatxError) as err:
        create_backbone("alexnet", "imagenet")
    msg = str(err.value)
    assert calls == ["https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]
    assert "URLError" in msg and "alexnet-owt-7be5be79.pth" in msg and "\n" not in msg
    assert str(tmp_path.resolve() / "hub" / "checkpoints") in msg


@pytest.mark.slow
def test_imagenet_reads_torchvision_cache(alexnet, torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    cached = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    loaded = create_backbone("alexnet", "imagenet")
    info = loaded.weights_info
    assert (info.kind, info.source, info.file, info.sha256) == ("imagenet", "imagenet", str(cached.resolve()),
                                                                 sha256(cached))
    x = images(2, 64, seed=2)
    with torch.inference_mode():
        assert loaded.num_classes == 1000
        assert torch.equal(loaded(x), alexnet(x))
        two = create_backbone("alexnet", "imagenet", num_classes=2)
        assert two.num_classes == 2 and two(x).shape == (2, 2)
        assert torch.equal(two.forward_taps(x, ["fc7"])["fc7"], alexnet.forward_taps(x, ["fc7"])["fc7"])


# ------------------------------------------------------------------------------------------- training helpers

def trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.slow
def test_freeze_vgg16_and_alexnet(vgg16, alexnet):
    try:
        assert vgg16.stages == ["block1", "block2", "block3", "block4", "block5", "fc6", "fc7", "head"]
        vgg16.freeze("head")
        assert trainable(vgg16) == 4096 * 1000 + 1000
        vgg16.freeze("fc6")
        assert trainable(vgg16) == sum(p.numel() for p in vgg16.classifier.parameters())
        assert not any(p.requires_grad for p in vgg16.features.parameters())
        vgg16.freeze("block5")     # blocks 1-4 (features 0..23) frozen
        assert [p.requires_grad for p in vgg16.features[23:].parameters()] == [True] * 6
        assert not any(p.requires_grad for p in vgg16.features[:23].parameters())

        assert alexnet.stages == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "head"]
        alexnet.freeze("conv3")    # conv1, conv2 frozen
        frozen = sum(p.numel() for p in alexnet.parameters() if not p.requires_grad)
        assert frozen == sum(p.numel() for m in (alexnet.features[0], alexnet.features[3]) for p in m.parameters())
        with pytest.raises(FeatxError, match="unknown stage 'conv6' for alexnet; its stages are: conv1, conv2, "
                                             "conv3, conv4, conv5, fc6, fc7, head"):
            alexnet.freeze("conv6")
    finally:
        vgg16.freeze("block1")
        alexnet.freeze("conv1")
    assert trainable(vgg16) == sum(p.numel() for p in vgg16.parameters())


def test_freeze_cnn_keeps_frozen_batchnorm_in_eval():
    net = create_backbone("cnn", seed=0)
    net.freeze("head")
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["classifier.4.weight", "classifier.4.bias"]
    net.freeze("fc")
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias"]
    net.freeze("block4")
    net.train()
    bn1, bn4 = net.features.block1[1], net.features.block4[1]
    assert not bn1.training and bn4.training and net.classifier.training
    mean1, mean4 = bn1.running_mean.clone(), bn4.running_mean.clone()
    net(images(3, 32))
    assert torch.equal(bn1.running_mean, mean1) and not torch.equal(bn4.running_mean, mean4)
    net.freeze("block1")
    net.train()
    assert bn1.training


def test_reset_classifier_is_seeded():
    net = create_backbone("cnn", seed=0)
    net.freeze("fc")
    net.reset_classifier(5, seed=1)
    head = net.classifier[4]
    assert net.num_classes == 5 and head.out_features == 5 and head.in_features == 128
    assert head.weight.requires_grad
    other = create_backbone("cnn", seed=0)
    other.reset_classifier(5, seed=1)
    assert torch.equal(other.classifier[4].weight, head.weight)
    other.reset_classifier(5, seed=2)
    assert not torch.equal(other.classifier[4].weight, head.weight)
    with torch.inference_mode():
        assert net(images(2, 32)).shape == (2, 5)
