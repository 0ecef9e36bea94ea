"""The store describes itself to plain h5py (label meaning, taps, preprocessing, layout); strings come back as
str; load_features leaves the unlabelled rows out unless asked; older stores without these attributes load."""
from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision import transforms as T
from typer.testing import CliRunner

from featx.backbones import create_backbone, get_config, list_backbones
from featx.cli import app
from featx.data import discover
from featx.data.images import load_image, make_transform
from featx.errors import FeatxError
from featx.extract import extract
from featx.store import load_features, sample_table, store_settings, summarize

runner = CliRunner()
N_FINAL = 4  # unlabelled final-phase images of the cnmc_tree fixture


@pytest.fixture(scope="module")
def store(cnn_store) -> Path:
    """conftest's shared cnn store of the tiny C-NMC tree (32 px, seed 0; read-only)."""
    return cnn_store


def _all_attrs(h5: h5py.File) -> dict[str, object]:
    """Every attribute of the file, keyed ``object/name``."""
    found = {f"/{k}": v for k, v in h5.attrs.items()}
    h5.visititems(lambda name, obj: found.update({f"{name}/{k}": v for k, v in obj.attrs.items()}))
    return found


def test_plain_h5py_reads_what_labels_samples_and_taps_mean(store):
    fs = load_features(store, labelled=None)
    with h5py.File(store) as h5:
        readme = h5.attrs["description"]
        assert isinstance(readme, str) and "/samples" in readme and "/features/<tap>" in readme
        assert ".asstr()" in readme and "-1 = unlabelled" in readme
        label = h5["samples/label"]
        assert list(label.attrs["classes"]) == fs.classes == ["all", "hem"]
        assert int(label.attrs["unlabelled"]) == -1
        assert label.attrs["meaning"].startswith("0 = all, 1 = hem; -1 = unlabelled")
        assert "final" in label.attrs["meaning"]
        # what the attribute says is what the rows hold: the final phase, and only it, is -1
        splits = h5["samples/split"].asstr()[:]
        assert set(splits[label[:] == -1]) == {"final"} and int(np.sum(label[:] == -1)) == N_FINAL
        for name, words in [("done", "True when"), ("error", "could not be read"), ("checksum", "crc32"),
                            ("path", "data_root"), ("subject", "subject"), ("split", "split")]:
            assert words in h5[f"samples/{name}"].attrs["description"], name
        # the checksum's description, followed by hand with zlib on the plain h5py values of row 5
        sums = h5["samples/checksum"]
        for j, tap in enumerate(sums.attrs["taps"]):
            row = h5["features"][tap][5].astype("<f4").tobytes()
            assert int(sums[5, j]) == 2**32 + zlib.crc32(row, zlib.crc32((5).to_bytes(8, "little")))
        cfg = get_config("cnn")
        for tap, ds in h5["features"].items():
            text = ds.attrs["description"]
            assert text and text == cfg.describe_tap(tap) == cfg.tap_descriptions[tap]
            assert "/samples/path[i]" in ds.attrs["rows"]
        assert "post-ReLU" in h5["features/fc"].attrs["description"]
        assert "global average" in h5["features/pool5"].attrs["description"]
        everything = _all_attrs(h5)
    # every string attribute comes back as str from plain h5py, arrays of strings as arrays of str
    assert not [k for k, v in everything.items() if isinstance(v, bytes)]
    assert all(isinstance(s, str) for v in everything.values() if isinstance(v, np.ndarray) and v.dtype == object
               for s in v)


def test_preprocessing_attributes_are_the_transform_extraction_used(store):
    s = store_settings(store)
    transform = make_transform(32, s["mean"], s["std"])
    resize = next(t for t in transform.transforms if isinstance(t, T.Resize))
    assert s["transform"] == repr(transform)
    assert s["resize_interpolation"] == resize.interpolation.value == "bilinear"
    assert s["resize_antialias"] is True and s["channel_order"] == "RGB"
    assert "Image.convert('RGB')" in s["colour_conversion"] and "minimum and maximum" in s["colour_conversion"]
    assert str(list(s["mean"])) in s["value_range"] and "0-1" in s["value_range"]
    assert "32x32 px (bilinear" in s["preprocessing"] and "no crop" in s["preprocessing"]
    # the words are true: the stored transform applied to an image gives what the words say
    x = transform(load_image(next((Path(s["data_root"]) / "C-NMC_training_data").rglob("*.bmp"))))
    assert tuple(x.shape) == (3, 32, 32)


def test_every_registered_tap_is_described_with_its_size():
    for name in list_backbones():
        cfg = get_config(name)
        assert set(cfg.tap_descriptions) == set(cfg.taps), name
        for tap, dim in cfg.taps.items():
            text = cfg.tap_descriptions[tap]
            assert f"{dim} " in text and "non-negative" in text, (name, tap)
            if tap.startswith("fc"):
                assert "post-ReLU" in text and "fully connected" in text, (name, tap)
            else:
                assert "global average" in text and "max-pool" in text, (name, tap)


@pytest.mark.slow
def test_vgg16_fc_taps_are_post_relu_and_pool5_is_the_mean_of_the_last_max_pool(cnmc_tree, tmp_path):
    collection = discover(cnmc_tree, splits=["fold_0"]).subset(range(3))
    out = extract(collection, tmp_path / "vgg.h5", backbone="vgg16", weights="none", image_size=32, batch_size=3,
                  workers=0, seed=4)
    cfg = get_config("vgg16")
    with h5py.File(out) as h5:
        stored = {tap: h5["features"][tap][:] for tap in h5["features"]}
        assert {t: h5["features"][t].attrs["description"] for t in stored} == cfg.tap_descriptions
    for tap in ("fc6", "fc7"):
        # post-ReLU: never negative, and the ReLU zeroed part of the random-weight outputs
        assert stored[tap].min() >= 0 and 0.05 < np.mean(stored[tap] == 0) < 0.95, tap
    # pool5: torchvision's own VGG-16 (same weights), last max-pool output averaged over its spatial dims
    tv = torchvision.models.vgg16(weights=None)
    tv.load_state_dict(create_backbone("vgg16", "none", seed=4).state_dict())
    assert isinstance(tv.features[-1], nn.MaxPool2d)  # features ends with the last max-pool
    s = store_settings(out)
    transform = make_transform(32, s["mean"], s["std"])
    x = torch.stack([transform(load_image(collection.abspath(i))) for i in range(3)])
    with torch.no_grad():
        direct = tv.eval().features(x).mean(dim=(2, 3)).numpy()
    assert direct.shape == stored["pool5"].shape == (3, 512)
    np.testing.assert_allclose(stored["pool5"], direct, rtol=1e-4, atol=1e-5)
    assert stored["pool5"].min() >= 0


def test_a_store_without_the_descriptive_attributes_still_loads(store, tmp_path):
    old = tmp_path / "old.h5"
    shutil.copy(store, old)
    new_root = ("description", "preprocessing", "transform", "resize_interpolation", "resize_antialias",
                "channel_order", "colour_conversion", "value_range")
    with h5py.File(old, "r+") as h5:
        for key in new_root:
            del h5.attrs[key]
        for key in ("classes", "unlabelled", "meaning"):
            del h5["samples/label"].attrs[key]
        for name in h5["samples"]:
            h5["samples"][name].attrs.pop("description", None)
        for ds in h5["features"].values():
            del ds.attrs["description"], ds.attrs["rows"]
        assert "description" not in h5["features/fc"].attrs and "meaning" not in h5["samples/label"].attrs
    np.testing.assert_array_equal(load_features(old).X, load_features(store).X)
    assert load_features(old).unlabelled_excluded == N_FINAL
    s = summarize(old)
    assert s["taps"]["fc"]["description"] == "" and s["labels"]["meaning"].startswith("0 = all, 1 = hem; -1 =")
    res = runner.invoke(app, ["info", str(old)])
    assert res.exit_code == 0, res.output
    assert "not described" in " ".join(res.output.split())
    # the same extraction reopens it (the new attributes are no identity settings): nothing to redo
    seen = []
    extract(Path(store_settings(old)["data_root"]), old, backbone="cnn", weights="none", image_size=32, workers=0,
            on_progress=lambda done, total: seen.append(done))
    assert seen == [] and "description" not in store_settings(old)


def test_load_features_leaves_unlabelled_rows_out_unless_asked(store):
    every = load_features(store, labelled=None)
    default = load_features(store)
    unlabelled = load_features(store, labelled=False)
    assert len(every) == summarize(store)["samples"] == len(default) + N_FINAL
    assert (default.y >= 0).all() and "final" not in set(default.splits)
    assert default.unlabelled_excluded == N_FINAL and every.unlabelled_excluded == 0
    assert set(every.splits[every.y < 0]) == {"final"}
    assert len(unlabelled) == N_FINAL and (unlabelled.y == -1).all() and set(unlabelled.splits) == {"final"}
    assert load_features(store, splits=["final"], labelled=None).paths.tolist() == unlabelled.paths.tolist()
    # asking for labelled rows of a split that has none is refused, not answered with an empty set
    with pytest.raises(FeatxError, match=r"no labelled rows to load: the 4 rows of split final are unlabelled "
                                         r"\(label -1\).*`featx.predict\(...\)`"):
        load_features(store, splits=["final"])
    with pytest.raises(FeatxError, match="no unlabelled rows of split prelim"):
        load_features(store, splits=["prelim"], labelled=False)


def test_strings_come_back_as_str(store):
    fs = load_features(store, labelled=None)
    for column in (fs.paths, fs.subjects, fs.splits):
        assert len(column) == len(fs) and all(type(v) is str for v in column)
    assert all(type(c) is str for c in fs.classes)
    assert all(not isinstance(v, bytes) for v in fs.settings[0].values())
    table = sample_table(store)
    assert all(type(v) is str for key in ("path", "split", "error") for v in table[key])
    with h5py.File(store) as h5:  # what the description says: plain h5py gives bytes, .asstr() gives str
        assert isinstance(h5["samples/path"][0], bytes) and h5["samples/path"].asstr()[0] == fs.paths[0]


def test_info_shows_tap_descriptions_and_label_meaning(store, wide_console):
    cfg = get_config("cnn")
    res = runner.invoke(app, ["info", str(store)])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert f"fc (128): {cfg.tap_descriptions['fc']}" in text and f"pool5 (256): {cfg.tap_descriptions['pool5']}" in text
    assert "labels: 0 = all, 1 = hem; -1 = unlabelled" in text
    res = runner.invoke(app, ["info", str(store), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {t: v["description"] for t, v in data["taps"].items()} == cfg.tap_descriptions
    assert data["labels"]["classes"] == ["all", "hem"] and data["labels"]["unlabelled"] == -1
    assert "-1 = unlabelled" in data["labels"]["meaning"] and ".asstr()" in data["settings"]["description"]
