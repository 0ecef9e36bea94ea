"""featx.data: layouts, labels, subjects, splits, order, errors, transforms and the dataset."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featx.data import Collection, Sample, discover, parse_cnmc_name
from featx.data.images import ImageDataset, load_image, make_transform
from featx.errors import FeatxError, FeatxWarning

PRELIM = "C-NMC_test_prelim_phase_data"
FINAL = "C-NMC_test_final_phase_data"


def _prelim_table(root: Path) -> dict[str, tuple[str, str]]:
    with open(root / PRELIM / (PRELIM + "_labels.csv"), newline="") as fh:
        return {row["new_names"]: (row["Patient_ID"], row["labels"]) for row in csv.DictReader(fh)}


def _key(sample: Sample) -> tuple:
    """Layout-independent identity of a sample: file name, label, subject, split."""
    return Path(sample.path).name, sample.label, sample.subject, sample.split


@pytest.mark.parametrize("name, expected", [
    ("UID_11_10_1_all.bmp", ("11", "all")),
    ("UID_H10_43_1_hem.bmp", ("H10", "hem")),
    ("UID_h3_1_2_hem.bmp", ("H3", "hem")),
    ("some/folder/UID_57_29_1_ALL.BMP", ("57", "all")),
    ("1.bmp", None),
    ("UID_11_10_all.bmp", None),
    ("UID_11_10_1_blast.bmp", None),
])
def test_parse_cnmc_name(name, expected):
    assert parse_cnmc_name(name) == expected


def test_discover_tcia_tree(cnmc_tree):
    col = discover(cnmc_tree)
    assert col.layout == "cnmc" and col.root == cnmc_tree.resolve()
    files = sorted(p.relative_to(cnmc_tree).as_posix() for p in cnmc_tree.rglob("*.bmp"))
    paths = [s.path for s in col.samples]
    assert sorted(paths) == files and len(set(paths)) == len(paths) == 34  # every image exactly once
    assert col.classes == ["all", "hem"]
    assert col.splits == ["fold_0", "fold_1", "fold_2", "prelim", "final"]
    train = [s for s in col.samples if s.split.startswith("fold_")]
    assert len(train) == 24
    for s in train:
        parts = s.path.split("/")
        assert parts[0] == "C-NMC_training_data" and parts[1] == s.split and parts[2] == s.label
        assert s.subject == parse_cnmc_name(parts[3])[0] and s.subject == s.subject.upper()
    assert any(s.subject.startswith("H") and "_h" in s.path for s in train)  # `h3`-style names upper-cased
    table = _prelim_table(cnmc_tree)
    prelim = [s for s in col.samples if s.split == "prelim"]
    assert [Path(s.path).name for s in prelim] == [f"{i}.bmp" for i in range(1, 7)]  # natural order
    for s in prelim:
        patient_id, label = table[Path(s.path).name]
        assert s.subject == parse_cnmc_name(patient_id)[0]
        assert s.label == ("all" if label == "1" else "hem")
    assert not {s.subject for s in prelim} & {s.subject for s in train}
    final = [s for s in col.samples if s.split == "final"]
    assert len(final) == 4 and all(s.label is None and s.subject is None for s in final)
    assert col.every_labelled_sample_has_subject
    # Order: by split, then path; deterministic.
    order = ["fold_0", "fold_1", "fold_2", "prelim", "final"]
    assert [order.index(s.split) for s in col.samples] == sorted(order.index(s.split) for s in col.samples)
    assert discover(cnmc_tree).fingerprint() == col.fingerprint()
    assert len(col.fingerprint()) == 64


def test_discover_training_folder_itself(cnmc_tree):
    col = discover(cnmc_tree / "C-NMC_training_data")
    assert col.layout == "cnmc" and len(col.samples) == 24
    assert col.samples[0].path.startswith("fold_0/")
    full = [_key(s) for s in discover(cnmc_tree).samples if s.split.startswith("fold_")]
    assert [_key(s) for s in col.samples] == full


def test_discover_prelim_folder_itself_reads_labels_beside_it(cnmc_tree):
    col = discover(cnmc_tree / PRELIM / PRELIM)
    assert col.layout == "cnmc" and [s.path for s in col.samples] == [f"{i}.bmp" for i in range(1, 7)]
    assert all(s.label in ("all", "hem") and s.subject for s in col.samples)


def test_discover_kaggle_mirror_gives_same_samples(cnmc_tree, tmp_path):
    kaggle = tmp_path / "download" / "C-NMC_Leukemia"
    shutil.copytree(cnmc_tree / "C-NMC_training_data", kaggle / "training_data")
    shutil.copytree(cnmc_tree / PRELIM / PRELIM, kaggle / "validation_data" / PRELIM)
    shutil.copy(cnmc_tree / PRELIM / (PRELIM + "_labels.csv"), kaggle / "validation_data")
    shutil.copytree(cnmc_tree / FINAL / FINAL, kaggle / "testing_data" / FINAL)
    expected = [_key(s) for s in discover(cnmc_tree).samples]
    for root in (tmp_path / "download", kaggle):
        col = discover(root)
        assert col.layout == "cnmc-kaggle"
        assert [_key(s) for s in col.samples] == expected
        assert col.abspath(0).is_file()
    assert discover(tmp_path / "download").samples[0].path.startswith("C-NMC_Leukemia/training_data/fold_0/")
    # Without the labels CSV the prelim images are unlabelled, not an error.
    (kaggle / "validation_data" / (PRELIM + "_labels.csv")).unlink()
    with pytest.warns(FeatxWarning, match=r"no labels file .* its 6 images are unlabelled and without subjects"):
        prelim = discover(kaggle, splits=["prelim"]).samples
    assert len(prelim) == 6 and all(s.label is None and s.subject is None for s in prelim)


def _png(path: Path, colour=(200, 100, 50), size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_discover_generic_class_folders(tmp_path):
    root = tmp_path / "cells"
    _png(root / "Blast" / "a" / "img10.png")
    _png(root / "Blast" / "img2.jpg")
    _png(root / "normal" / "UID_h7_3_1_hem.tif")
    _png(root / "loose.png")
    (root / "normal" / "notes.txt").write_text("not an image")
    _png(root / ".hidden" / "x.png")
    col = discover(root)
    assert col.layout == "folders"
    assert [(s.path, s.label, s.subject, s.split) for s in col.samples] == [
        ("Blast/a/img10.png", "blast", None, None),
        ("Blast/img2.jpg", "blast", None, None),
        ("loose.png", None, None, None),
        ("normal/UID_h7_3_1_hem.tif", "normal", "H7", None),
    ]
    assert col.classes == ["blast", "normal"]
    assert not col.every_labelled_sample_has_subject
    with pytest.raises(FeatxError, match="split 'prelim' is not in .*none"):
        discover(root, splits=["prelim"])


def test_discover_manifest(tmp_path):
    data = tmp_path / "data"
    _png(data / "x1.png")
    _png(data / "sub" / "x2.png")
    _png(tmp_path / "elsewhere" / "UID_h3_1_1_hem.png")
    manifest = data / "list.csv"
    absolute = (tmp_path / "elsewhere" / "UID_h3_1_1_hem.png").resolve()
    manifest.write_text("path,label,subject,split\n"
                        "sub/x2.png,ALL,p1,train\n"
                        "x1.png,,,test\n"
                        f"{absolute},hem,,train\n")
    col = discover(manifest)
    assert col.layout == "manifest" and col.root == data.resolve()
    assert [(s.path, s.label, s.subject, s.split) for s in col.samples] == [  # by split, then path
        ("x1.png", None, None, "test"),
        ("../elsewhere/UID_h3_1_1_hem.png", "hem", "H3", "train"),
        ("sub/x2.png", "all", "P1", "train"),
    ]
    assert col.abspath(1).resolve() == absolute and col.abspath(0).is_file()
    assert col.classes == ["all", "hem"] and col.every_labelled_sample_has_subject
    assert [s.path for s in discover(manifest, splits="test").samples] == ["x1.png"]
    # Only path and label are required.
    short = data / "short.csv"
    short.write_text("path,label\nx1.png,a\nsub/x2.png,b\n")
    assert [(s.label, s.subject, s.split) for s in discover(short).samples] == [("b", None, None), ("a", None, None)]


def test_manifest_errors_name_the_file(tmp_path):
    _png(tmp_path / "x1.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx1.png,a\n")
    with pytest.raises(FeatxError,
                       match=r"manifest .*bad\.csv must start with the header path,label\[,subject\]\[,split\]"):
        discover(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("path,label\nx1.png,a\nnope.png,b\nnope2.png,b\n")
    with pytest.raises(FeatxError, match=r"missing\.csv: image nope\.png and 1 more not found"):
        discover(missing)
    twice = tmp_path / "twice.csv"
    twice.write_text("path,label\nx1.png,a\n./x1.png,a\n")
    with pytest.raises(FeatxError, match="listed twice"):
        discover(twice)
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(FeatxError, match="lists no images"):
        discover(empty)


def test_split_filter(cnmc_tree):
    assert {s.split for s in discover(cnmc_tree, splits=["prelim"]).samples} == {"prelim"}
    col = discover(cnmc_tree, splits="fold_0,final")
    assert [s.split for s in col.samples] == ["fold_0"] * 8 + ["final"] * 4
    assert col.classes == ["all", "hem"]
    assert len(discover(cnmc_tree, splits=["train"]).samples) == 24
    with pytest.raises(FeatxError) as err:
        discover(cnmc_tree, splits=["fold_0", "valid"])
    assert str(err.value) == (f"split 'valid' is not in {cnmc_tree.resolve()}; available splits: "
                              "fold_0, fold_1, fold_2, prelim, final")


def test_input_errors_name_the_path_and_layouts(tmp_path):
    with pytest.raises(FeatxError, match=r"data path .*nowhere does not exist"):
        discover(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    with pytest.raises(FeatxError) as err:
        discover(empty)
    msg = str(err.value)
    assert msg.startswith(f"no images found in {empty.resolve()}; featx reads")
    for layout in ("C-NMC_training_data", "C-NMC_Leukemia", "class folders", "CSV manifest"):
        assert layout in msg
    assert "\n" not in msg
    text = tmp_path / "list.txt"
    text.write_text("x")
    with pytest.raises(FeatxError, match=r"list\.txt is neither a folder nor a \.csv manifest; featx reads C-NMC"):
        discover(text)


def test_collection_fingerprint_and_subset(cnmc_tree):
    col = discover(cnmc_tree)
    sub = col.subset([0, 5, 30])
    assert [s.path for s in sub.samples] == [col.samples[i].path for i in (0, 5, 30)]
    assert sub.classes == col.classes and sub.root == col.root and sub.layout == col.layout
    assert sub.fingerprint() != col.fingerprint()
    changed = Collection(col.root, col.layout,
                         [Sample(col.samples[0].path, "hem", col.samples[0].subject, col.samples[0].split)]
                         + col.samples[1:], col.classes)
    assert changed.fingerprint() != col.fingerprint()
    assert Collection(col.root, "other", list(col.samples), col.classes).fingerprint() == col.fingerprint()


def test_make_transform_shape_and_normalisation():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    img = Image.new("RGB", (50, 30), (255, 128, 0))
    x = make_transform(32, mean, std)(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = [(255 / 255 - mean[0]) / std[0], (128 / 255 - mean[1]) / std[1], (0 - mean[2]) / std[2]]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4)
    assert torch.allclose(x.std(dim=(1, 2)), torch.zeros(3), atol=1e-4)


def test_make_transform_augment_varies_and_keeps_shape():
    arr = np.zeros((40, 40, 3), dtype=np.uint8)
    arr[2:12, 2:20] = (250, 20, 20)  # an asymmetric patch
    img = Image.fromarray(arr)
    aug = make_transform(24, (0.5,) * 3, (0.5,) * 3, augment=True, color_jitter=True)
    torch.manual_seed(0)
    outs = [aug(img) for _ in range(8)]
    assert all(o.shape == (3, 24, 24) for o in outs)
    assert len({tuple(o.flatten()[:200].round(decimals=3).tolist()) for o in outs}) > 1
    names = [type(t).__name__ for t in aug.transforms]
    assert {"RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotate90", "RandomAffine",
            "ColorJitter"} <= set(names)
    plain = make_transform(24, (0.5,) * 3, (0.5,) * 3)
    assert [type(t).__name__ for t in plain.transforms] == ["Resize", "ToTensor", "Normalize"]


def test_image_dataset_reports_unreadable_images(cnmc_tree, tmp_path):
    root = tmp_path / "cells"
    _png(root / "a" / "good.png", size=(20, 20))
    (root / "a" / "garbage.png").write_bytes(b"\x89PNG not really" * 10)
    good_bmp = next((cnmc_tree / "C-NMC_training_data").rglob("*.bmp")).read_bytes()
    (root / "b").mkdir()
    (root / "b" / "cut.bmp").write_bytes(good_bmp[: len(good_bmp) // 2])
    col = discover(root)
    assert [s.path for s in col.samples] == ["a/garbage.png", "a/good.png", "b/cut.bmp"]
    ds = ImageDataset(col, make_transform(16, (0.5,) * 3, (0.5,) * 3))
    assert len(ds) == 3
    x, index, error = ds[0]
    assert index == 0 and x.shape == (3, 16, 16) and torch.count_nonzero(x) == 0
    assert error.startswith("cannot read image ") and "garbage.png" in error and "\n" not in error
    x, index, error = ds[1]
    assert index == 1 and error == "" and x.shape == (3, 16, 16) and torch.count_nonzero(x) > 0
    x, index, error = ds[2]
    assert "cut.bmp" in error and "truncated" in error and torch.count_nonzero(x) == 0
    only = ImageDataset(col, make_transform(16, (0.5,) * 3, (0.5,) * 3), indices=[2, 1])
    assert len(only) == 2 and only[0][1] == 2 and only[1][1] == 1
    with pytest.raises(FeatxError, match="cannot read image .*garbage.png"):
        load_image(col.abspath(0))
    assert load_image(col.abspath(1)).mode == "RGB"


def test_image_dataset_in_a_dataloader(cnmc_tree):
    col = discover(cnmc_tree, splits=["prelim"])
    ds = ImageDataset(col, make_transform(24, (0.5,) * 3, (0.25,) * 3))
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0))
    images, indices, errors = batches[0]
    assert images.shape == (4, 3, 24, 24)
    assert indices.tolist() == [0, 1, 2, 3] and list(errors) == [""] * 4
    assert sum(len(b[1]) for b in batches) == 6


def test_listing_a_data_set_never_imports_torch():
    code = ("import sys, featx.data; from featx.data import Collection, discover; "
            "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'featx.data imported torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
