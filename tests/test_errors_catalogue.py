"""Bad inputs of docs/errors.md not covered elsewhere: NaN features and an output folder featx cannot write."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import invoke as _invoke

from featx.backbones import create_backbone
from featx.errors import FeatxError
from featx.extract import extract
from featx.store import load_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(cnn_store) -> Path:
    """conftest's shared cnn store of the tiny C-NMC tree (32 px, seed 0; read-only)."""
    return cnn_store


def test_nan_features_are_refused_naming_the_store_and_the_first_row(cnmc_tree, tmp_path):
    # a diverged network: weights holding NaN give NaN features (whose checksums are fine: the store is not damaged)
    model = create_backbone("cnn", "none", seed=0)
    state = {k: (torch.full_like(v, float("nan")) if k.endswith("weight") and v.dim() == 2 else v)
             for k, v in model.state_dict().items()}
    weights = tmp_path / "diverged.pt"
    torch.save(state, weights)
    out = tmp_path / "nan.h5"
    extract(cnmc_tree, out, backbone="cnn", weights=weights, image_size=32, workers=0)
    with pytest.raises(FeatxError, match=r"hold NaN or infinite features \(first: C-NMC_training_data/"):
        load_features(out, "fc")
    result, text = _invoke("classify", out, "--tap", "fc", "--out", tmp_path / "r", "--no-plots")
    assert result.exit_code == 1 and "NaN or infinite features" in text and "Traceback" not in result.output
    assert not (tmp_path / "r" / "results.json").exists()
    # pool5 comes before the NaN weights: that tap is still usable
    assert load_features(out, "pool5").X.shape[0] > 0


def test_an_output_folder_that_cannot_be_written_is_one_line(store, read_only_dir):
    target = read_only_dir / "results"
    result, text = _invoke("classify", store, "--out", target, "--no-plots")
    assert result.exit_code == 1, result.output
    assert f"cannot access {target}" in text and "Traceback" not in result.output
    result, text = _invoke("info", store, "--json")  # the store itself is untouched
    assert result.exit_code == 0


def test_every_test_the_catalogue_names_exists():
    """docs/errors.md names a test for each bad input: each one is a test function of that file."""
    import re

    root = Path(__file__).resolve().parents[1]
    catalogue = (root / "docs" / "errors.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)::(test_[a-z0-9_]+)`", catalogue))
    assert len(named) > 50
    missing = [f"{f}::{t}" for f, t in sorted(named)
               if not (root / "tests" / f"{f}.py").is_file()
               or not re.search(rf"^def {t}\(", (root / "tests" / f"{f}.py").read_text(), re.M)]
    assert not missing, missing
