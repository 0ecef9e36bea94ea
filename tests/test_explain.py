"""featx explain: the mapped layer of every kind of backbone, the maps (Captum's Grad-CAM and occlusion), the sheet and
CSV of a fine-tuned run, and bad input in one line."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from cli_helpers import invoke

from featx.backbones import create_backbone
from featx.data import discover
from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.explain import explain, plot_explanations, resolve_layer
from featx.explain.maps import gradcam, mass_inside, occlusion
from featx.finetune import finetune

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("backbone, size, layer", [
    ("cnn", 48, "features.block4"),        # 3x3 after four halvings
    ("alexnet", 64, "features.11"),        # its last ReLU (3x3); the max-pool after it is 1x1, avgpool left out
    ("vgg16", 64, "features.30"),          # pool5 (2x2), not the adaptive avgpool's 7x7 blow-up
    ("resnet18", 64, "model.layer4"),      # any torchvision model by name: the stage, not a block inside it
    ("timm:resnet18", 64, "model.layer4"),
])
def test_default_layer_is_the_last_convolutional_stage_and_its_map_has_the_image_shape(backbone, size, layer):
    network = create_backbone(backbone, "none", num_classes=2)
    found = resolve_layer(network, size)
    assert found.name == layer and found.shape[2] == found.shape[3] >= 2
    assert resolve_layer(network, size, layer).name == layer
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    heat = gradcam(network, network.get_submodule(layer), x, 1, (size + 7, size + 7))
    assert heat.shape == (size + 7, size + 7) and np.isfinite(heat).all() and heat.min() >= 0
    # the in-place activations were computing out of place only meanwhile
    assert any(getattr(m, "inplace", False) for m in network.modules())


def test_a_layer_is_named_by_its_path_or_its_unique_ending_and_an_unknown_one_lists_the_valid_ones():
    network = create_backbone("cnn", "none", num_classes=2)
    assert resolve_layer(network, 32, "block3").name == "features.block3"
    assert resolve_layer(network, 32, "features.block2.0").shape == (1, 64, 16, 16)
    with pytest.raises(FeatxError, match=r"layer='nope' is no module of cnn; choose one of its \d+ map layers: "
                                         r"features\.block1\.0, .*, features\.block4$"):
        resolve_layer(network, 32, "nope")
    with pytest.raises(FeatxError, match=r"layer='classifier.1' gives no spatial \(C, H, W\) map in cnn at 32 px"):
        resolve_layer(network, 32, "classifier.1")
    with pytest.raises(FeatxError, match=r"layer=0 matches 4 modules of cnn \(features.block1.0, "):
        resolve_layer(network, 32, "0")


def test_occlusion_map_has_the_image_shape_and_black_background_carries_nothing():
    """Occluding with the background (black) changes nothing where the window covers only black: zero there."""
    network = create_backbone("cnn", "none", num_classes=2)
    img = torch.zeros(1, 3, 32, 32)
    img[:, :, 8:16, 8:16] = 1.0
    mean, std = torch.tensor(network.config.mean).view(1, 3, 1, 1), torch.tensor(network.config.std).view(1, 3, 1, 1)
    x, black = (img - mean) / std, ((torch.zeros(1, 3, 32, 32) - mean) / std)
    heat = occlusion(network, x, 0, (32, 32), baseline=black, window=4, stride=4)
    assert heat.shape == (32, 32) and np.isfinite(heat).all()
    square = np.abs(heat[8:16, 8:16]).max()
    assert square > 1e-4                                # the bright square matters
    assert np.abs(heat[20:, 20:]).max() < 1e-3 * square   # windows over black only: no change (but rounding)


def test_mass_inside_is_the_share_of_positive_mass_in_the_mask():
    heat = np.array([[3.0, 1.0], [-5.0, 0.0]])
    mask = np.array([[True, False], [True, False]])
    assert mass_inside(heat, mask) == pytest.approx(0.75)   # negative values carry no mass
    assert math.isnan(mass_inside(np.zeros((2, 2)), mask))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A cnn fine-tuned for 2 epochs at 32 px on a small synth tree written with nucleus masks: (data, run)."""
    root = tmp_path_factory.mktemp("explain")
    data = root / "data"
    synthesize(data, subjects_all=3, subjects_hem=3, cells_per_subject=4, prelim_subjects_all=1,
               prelim_subjects_hem=1, prelim_cells_per_subject=4, final_cells=2, image_size=40, masks=True)
    finetune(data, root / "run", backbone="cnn", weights="none", image_size=32, epochs=2, batch_size=8,
             augment=False, schedule="none", workers=0, device="cpu", val="fold_2")
    return data, root / "run"


@pytest.mark.slow
def test_explain_writes_a_row_per_unseen_cell_balanced_across_classes(tuned, tmp_path):
    data, run = tuned
    seen = []
    result = explain(run, data, out=tmp_path / "x", images=5, device="cpu",
                     on_image=lambda done, total, item: seen.append((done, total)))
    assert seen == [(k, 5) for k in range(1, 6)]
    assert result.layer == "features.block4" and result.methods == ("gradcam", "occlusion")
    assert result.sheet.read_bytes()[:8] == PNG and result.sheet == tmp_path / "x" / "explain.png"
    with open(tmp_path / "x" / "explain.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [i.path for i in result.images] and len(rows) == 5
    assert set(rows[0]) == {"path", "subject", "split", "true", "role", "predicted", "score",
                            "gradcam_nucleus_mass", "occlusion_nucleus_mass"}
    # cells the network never saw (its validation fold or the preliminary phase), 3 + 2 across the classes
    assert {r["role"] for r in rows} <= {"val", "unseen"} and {r["split"] for r in rows} <= {"fold_2", "prelim"}
    assert sorted(r["true"] for r in rows) == ["all", "all", "all", "hem", "hem"]
    for r, item in zip(rows, result.images):
        assert r["predicted"] in ("all", "hem") and 0.5 <= float(r["score"]) <= 1.0
        assert 0.0 <= float(r["gradcam_nucleus_mass"]) <= 1.0
        with_image = np.asarray(item.image)
        assert item.maps["gradcam"].shape == item.maps["occlusion"].shape == with_image.shape[:2] == (40, 40)
    again = explain(run, data, out=tmp_path / "y", images=5, device="cpu", methods="gradcam")
    assert [i.path for i in again.images] == [i.path for i in result.images]   # the same cells each time
    with pytest.raises(FeatxError, match=r"already holds explain.png, explain.csv; choose another out or pass "
                                         r"overwrite=True"):
        explain(run, data, out=tmp_path / "x", images=1, device="cpu")
    trained = discover(data).samples[0].path                                  # a fold_0 image: trained on
    picked = explain(run, data, out=tmp_path / "x", paths=[trained], overwrite=True, device="cpu")
    assert [(i.path, i.role) for i in picked.images] == [(trained, "train")]
    assert plot_explanations(run, data, tmp_path / "small.png", images=2, device="cpu").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_explain_cli_draws_a_bar_free_summary_and_refuses_bad_input_in_one_line(tuned, tmp_path):
    data, run = tuned
    result, out = invoke("explain", run, data, "--out", tmp_path / "x", "--images", 2, "--method", "gradcam",
                         "--device", "cpu")
    assert result.exit_code == 0, out
    assert f"mapped 2 images with gradcam at features.block4 of {run / 'best.pt'}" in out
    assert (tmp_path / "x" / "explain.png").is_file()
    (tmp_path / "empty").mkdir()
    cases = [
        (("explain", tmp_path / "empty", data, "--out", tmp_path / "o"),
         f"{tmp_path / 'empty'} holds no best.pt (nor last.pt)", "featx finetune DATA --out RUN"),
        (("explain", run, data, "--out", tmp_path / "o", "--paths", "gone.bmp"),
         f"--paths gone.bmp: {data / 'gone.bmp'} does not exist", "give paths relative to"),
        (("explain", run, data, "--out", tmp_path / "o", "--paths", tmp_path / "elsewhere.bmp"),
         f"--paths {tmp_path / 'elsewhere.bmp'} is not under the data folder", "give paths relative to it"),
        (("explain", run, data, "--out", tmp_path / "o", "--layer", "nope"),
         "--layer nope is no module of cnn", "features.block3, features.block4.0"),
        (("explain", run, data, "--out", tmp_path / "o", "--images", 0), "--images 0 must be at least 1", ""),
        (("explain", run, data, "--out", tmp_path / "x"), f"{tmp_path / 'x'} already holds explain.png",
         "pass --force to replace them"),
    ]
    for args, what, fix in cases:
        result, out = invoke(*args)
        assert result.exit_code == 1 and what in out and fix in out, out
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3, result.output
    assert not (tmp_path / "o").exists()
