"""Data sets whose images a hostile run saw lost or mislabelled without a word, or that gave a traceback (issue 24,
items 9-16): symbolic links, blank labels and ragged rows, a damaged C-NMC labels file, CSV files that are no
UTF-8 text. Every file here is real: real links and loops, real Latin-1 and random bytes, a real NUL."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helpers import invoke
from PIL import Image

from featx.data import discover
from featx.data.images import load_image
from featx.errors import FeatxError
from featx.store import summarize

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLI_ARGS = ["--backbone", "cnn", "--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0",
            "-q"]


def _png(path: Path, colour=(200, 100, 50), size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _two_classes(root: Path) -> Path:
    for i in range(2):
        _png(root / "all" / f"a{i}.png", (200, 40 * i, 50))
        _png(root / "hem" / f"h{i}.png", (40 * i, 100, 200))
    return root


# -- symbolic links (items 9, 10, 11) ---------------------------------------------------------------------------
def test_symlinked_folders_and_files_are_followed_and_a_loop_is_listed_once(cnmc_tree, tmp_path):
    outside = tmp_path / "outside"
    for i in range(12):
        _png(outside / "batch1" / f"b{i}.png")
    _png(outside / "hem_cells" / "h0.png")
    _png(outside / "hem_cells" / "h1.png")
    _png(outside / "single.png")
    root = tmp_path / "cells"
    _png(root / "all" / "a0.png")
    (root / "all" / "batch1").symlink_to(outside / "batch1", target_is_directory=True)  # 12 images behind a link
    (root / "all" / "linked.png").symlink_to(outside / "single.png")
    (root / "hem").symlink_to(outside / "hem_cells", target_is_directory=True)          # a linked class folder
    (root / "all" / "loop").symlink_to(root, target_is_directory=True)                  # back to the root
    (outside / "batch1" / "again").symlink_to(outside / "batch1", target_is_directory=True)  # to itself
    col = discover(root)
    assert [(s.path, s.label) for s in col.samples] == (
        [("all/a0.png", "all")] + [(f"all/batch1/b{i}.png", "all") for i in range(12)]
        + [("all/linked.png", "all"), ("hem/h0.png", "hem"), ("hem/h1.png", "hem")])  # 13 ALL, each once
    assert col.unreadable_folders == [] and col.abspath(1).is_file()
    # every class folder a link (was "no images found")
    links = tmp_path / "links"
    links.mkdir()
    (links / "all").symlink_to(outside / "batch1", target_is_directory=True)
    (links / "hem").symlink_to(outside / "hem_cells", target_is_directory=True)
    col = discover(links)
    assert len(col) == 14 and col.classes == ["all", "hem"] and sum(s.label == "all" for s in col.samples) == 12
    # C-NMC: a linked batch inside a class folder, and a linked class folder
    data = tmp_path / "cnmc"
    shutil.copytree(cnmc_tree, data)
    fold0 = data / "C-NMC_training_data" / "fold_0"
    shutil.move(fold0 / "hem", tmp_path / "fold0_hem")
    (fold0 / "hem").symlink_to(tmp_path / "fold0_hem", target_is_directory=True)
    extra = tmp_path / "extra"
    for i in range(3):
        _png(extra / f"UID_77_{i}_1_all.bmp")
    (fold0 / "all" / "extra").symlink_to(extra, target_is_directory=True)
    fold = [s for s in discover(data).samples if s.split == "fold_0"]
    assert len(fold) == 8 + 3 and sum(s.label == "hem" for s in fold) == 4
    assert [(s.label, s.subject) for s in fold if "/extra/" in s.path] == [("all", "77")] * 3


def test_dangling_links_are_counted_as_errors_and_named(tmp_path):
    root = _two_classes(tmp_path / "cells")
    (root / "all" / "gone.png").symlink_to(tmp_path / "deleted.png")                       # a dangling image
    (root / "hem" / "batch2").symlink_to(tmp_path / "deleted_folder", target_is_directory=True)  # a dangling folder
    _png(root / "all" / "._a0.png")  # a hidden file (a macOS resource fork) is no image of the data set
    col = discover(root)
    assert [(s.path, s.label) for s in col.samples if "gone" in s.path] == [("all/gone.png", "all")]
    folder_note = f"{root / 'hem' / 'batch2'} (dangling link to {tmp_path / 'deleted_folder'})"
    assert col.unreadable_folders == [folder_note]
    with pytest.raises(FeatxError) as err:
        load_image(root / "all" / "gone.png")
    assert str(err.value) == (f"cannot read image {root / 'all' / 'gone.png'}: a dangling symbolic link (to "
                              f"{tmp_path / 'deleted.png'}); restore its target or remove the link")
    out = tmp_path / "s.h5"
    result, text = invoke("extract", root, *CLI_ARGS, "--out", out)
    assert result.exit_code == 0, result.output
    assert "warning: 1 image(s) could not be read and were skipped: all/gone.png" in text
    assert "a dangling symbolic link" in text and f"could not read folder(s) {folder_note}" in text
    s = summarize(out)
    assert (s["samples"], s["done"], s["errors"]) == (5, 4, 1) and s["failed"][0]["path"] == "all/gone.png"
    assert s["unreadable_folders"] == [folder_note]
    result, text = invoke("extract", root, *CLI_ARGS, "--strict", "--out", tmp_path / "strict.h5")
    assert result.exit_code == 1 and "Traceback" not in result.output and folder_note in text
    assert not (tmp_path / "strict.h5").exists()
