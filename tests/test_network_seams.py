"""The seams of featx.backbones: one base for tapped networks, a typed weights spec, one input-size rule."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from featx.backbones import (
    FeatureNet,
    GraphNet,
    TappedNetwork,
    WeightsSpec,
    create_backbone,
    get_config,
    input_size,
)
from featx.data import discover
from featx.errors import FeatxError
from featx.extract import extract
from featx.finetune.plan import plan_run
from featx.store import store_settings


@pytest.mark.parametrize("name, kind", [("cnn", FeatureNet), ("alexnet", FeatureNet), ("resnet18", GraphNet)])
def test_every_network_is_a_tapped_network(name, kind):
    net = create_backbone(name, "none")
    assert isinstance(net, TappedNetwork) and isinstance(net, kind)
    assert net.stages[-1] == "head" and net.input_size() == get_config(name).input_size == 224
    out = net.forward_taps(torch.zeros(1, 3, 64, 64), [net.config.default_tap])
    assert list(out) == [net.config.default_tap] and out[net.config.default_tap].shape[0] == 1


class _Linear(TappedNetwork):
    """The smallest network: one tap ``x`` (the flattened image), one stage ``lin`` then the head."""

    def __init__(self):
        super().__init__(get_config("cnn"), num_classes=2)
        self.lin = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12))
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        self._check_input(x)
        return self.fc(self.lin(x))

    def forward_taps(self, x, taps):
        return {t: self.lin(x) for t in self._wanted(taps)}

    def _check_size(self, x):
        pass

    def _set_trainable(self, frozen):
        for p in self.lin.parameters():
            p.requires_grad_(bool(frozen) is False)

    def _frozen_batch_norms(self):
        return iter([self.lin[1]] if self._frozen else [])

    def reset_classifier(self, num_classes, seed=0):
        self.fc = nn.Linear(12, num_classes)


def test_the_base_enforces_its_abstract_methods_and_shares_the_rest():
    class Half(TappedNetwork):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="abstract method.*forward_taps"):
        Half(get_config("cnn"), num_classes=2)
    net = _Linear()
    net.freeze("block4")   # cnn's stages: block1..4 frozen up to block4 means block1-3 frozen
    assert net._frozen == ("block1", "block2", "block3")
    assert not any(p.requires_grad for p in net.lin.parameters())
    net.train()
    assert net.training and not net.lin[1].training   # a frozen stage's batch norm stays in eval mode
    with pytest.raises(FeatxError, match=r"unknown stage 'nope' for cnn; its stages are: block1, "):
        net.freeze("nope")
    with pytest.raises(FeatxError, match=r"cnn expects a batch of images \(B, 3, H, W\), got shape \(3, 2, 2\)"):
        net(torch.zeros(3, 2, 2))
    assert "name='cnn', num_classes=2, weights='none'" in repr(net)


def test_weights_spec_parses_the_words_once(tmp_path):
    assert WeightsSpec.parse(None) == WeightsSpec.parse(" Random ") == WeightsSpec.parse("none") == WeightsSpec("none")
    assert WeightsSpec.parse("ImageNet") == WeightsSpec("imagenet")
    spec = WeightsSpec.parse("~/w.pt")
    assert spec.kind == "file" and spec.path == Path("~/w.pt").expanduser().resolve() and str(spec) == str(spec.path)
    assert WeightsSpec.parse(Path("none")).kind == "file"    # a Path is always a file, as before
    assert WeightsSpec.parse(spec) is spec and str(WeightsSpec("imagenet")) == "imagenet"
    with pytest.raises(ValueError, match="kind is one of none, imagenet, file"):
        WeightsSpec("random")
    with pytest.raises(ValueError):
        WeightsSpec("file")
    assert WeightsSpec.default_for(get_config("cnn")) == WeightsSpec("none")
    assert WeightsSpec.default_for(get_config("vgg16")) == WeightsSpec("imagenet")


def test_a_weights_spec_builds_what_its_text_builds(cnmc_tree, tmp_path):
    a = create_backbone("cnn", WeightsSpec("none"), seed=3)
    b = create_backbone("cnn", "random", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    torch.save(a.state_dict(), tmp_path / "w.pt")
    data = discover(cnmc_tree, splits=["fold_2"])
    given = [WeightsSpec.parse(str(tmp_path / "w.pt")), str(tmp_path / "w.pt")]
    stores = [extract(data, tmp_path / f"{i}.h5", backbone="cnn", weights=w, image_size=16, workers=0,
                      weights_never_saw_images=True) for i, w in enumerate(given)]
    s0, s1 = (store_settings(s) for s in stores)
    assert s0["weights"] == s1["weights"] == str((tmp_path / "w.pt").resolve())
    assert s0["weights_kind"] == s1["weights_kind"] == "file" and s0["weights_sha256"] == s1["weights_sha256"]
    with pytest.raises(FeatxError, match="weights file .*nope.pt does not exist"):
        create_backbone("cnn", WeightsSpec.parse(tmp_path / "nope.pt"))


def _checkpoint(path: Path, trained_at: int) -> Path:
    """A featx checkpoint of the cnn whose card says it was trained at ``trained_at`` px."""
    net = create_backbone("cnn", "none")
    torch.save({"featx_checkpoint": 1, "backbone": "cnn", "model": net.state_dict(),
                "card": {"preprocessing": {"input_size": trained_at}}}, path)
    return path


@pytest.mark.parametrize("requested", [pytest.param(None, marks=pytest.mark.slow), 16, 48])
def test_extract_finetune_and_hybrid_agree_on_the_input_size(cnmc_tree, tmp_path, requested):
    """extract (and its early decode), fine-tuning's plan and the hybrid's tuned network use one rule:
    the requested side, else the checkpoint's, else the backbone's (cnn: 224)."""
    data = discover(cnmc_tree, splits=["fold_2"])
    default = input_size(get_config("cnn"), requested)
    assert default == (requested or 224)
    store = extract(data, tmp_path / "a.h5", backbone="cnn", weights="none", image_size=requested, workers=0)
    plan = plan_run(cnmc_tree, tmp_path / "run", backbone="cnn", preset=None,
                    options={"weights": "none", "image_size": requested}, val="subject", early_stopping=None,
                    patience=1, positive=None, freeze=None, device="cpu", workers=0, seed=0, resume=False,
                    strict=False)
    assert store_settings(store)["input_size"] == plan.preprocessing["input_size"] == default
    assert plan.settings["image_size"] == default
    # a fine-tuned checkpoint brings the side it was trained at (hybrid scores its network at it)
    ckpt = _checkpoint(tmp_path / "tuned.pt", 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # weights of unknown provenance: said, not checked here
        tuned = extract(data, tmp_path / "t.h5", backbone="cnn", weights=ckpt, image_size=requested, workers=0)
    expected = requested or 32
    assert store_settings(tuned)["input_size"] == create_backbone("cnn", ckpt).input_size(requested) == expected


def test_extract_finetune_and_the_network_refuse_a_side_alike(cnmc_tree, tmp_path):
    data = discover(cnmc_tree, splits=["fold_2"])
    messages = set()
    for call in (lambda: extract(data, tmp_path / "a.h5", backbone="cnn", weights="none", image_size=8, workers=0),
                 lambda: plan_run(cnmc_tree, tmp_path / "run", backbone="cnn", preset=None,
                                  options={"weights": "none", "image_size": 8}, val="subject", early_stopping=None,
                                  patience=1, positive=None, freeze=None, device="cpu", workers=0, seed=0,
                                  resume=False, strict=False),
                 lambda: create_backbone("cnn").input_size(8)):
        with pytest.raises(FeatxError) as err:
            call()
        messages.add(str(err.value))
    assert messages == {"image size 8 is too small for cnn: it needs at least 16 px (default 224); raise image_size"}
