"""Data sets whose images a hostile run saw lost or mislabelled without a word, or that gave a traceback (issue 24,
items 9-16): symbolic links, blank labels and ragged rows, a damaged C-NMC labels file, CSV files that are no
UTF-8 text. Every file here is real: real links and loops, real Latin-1 and random bytes, a real NUL."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from cli_helpers import invoke
from image_helpers import CLI_ARGS, png, two_classes

from featx.data import discover
from featx.data.images import load_image
from featx.errors import FeatxError, FeatxWarning
from featx.store import summarize

PRELIM = "C-NMC_test_prelim_phase_data"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- symbolic links (items 9, 10, 11) ---------------------------------------------------------------------------
def test_symlinked_folders_and_files_are_followed_and_a_loop_is_listed_once(cnmc_tree, tmp_path):
    outside = tmp_path / "outside"
    for i in range(12):
        png(outside / "batch1" / f"b{i}.png")
    png(outside / "hem_cells" / "h0.png")
    png(outside / "hem_cells" / "h1.png")
    png(outside / "single.png")
    root = tmp_path / "cells"
    png(root / "all" / "a0.png")
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
        png(extra / f"UID_77_{i}_1_all.bmp")
    (fold0 / "all" / "extra").symlink_to(extra, target_is_directory=True)
    fold = [s for s in discover(data).samples if s.split == "fold_0"]
    assert len(fold) == 8 + 3 and sum(s.label == "hem" for s in fold) == 4
    assert [(s.label, s.subject) for s in fold if "/extra/" in s.path] == [("all", "77")] * 3


def test_dangling_links_are_counted_as_errors_and_named(tmp_path):
    root = two_classes(tmp_path / "cells")
    (root / "all" / "gone.png").symlink_to(tmp_path / "deleted.png")                       # a dangling image
    (root / "hem" / "batch2").symlink_to(tmp_path / "deleted_folder", target_is_directory=True)  # a dangling folder
    png(root / "all" / "._a0.png")  # a hidden file (a macOS resource fork) is no image of the data set
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


# -- manifests and the C-NMC labels file (items 12, 13) ---------------------------------------------------------
def test_blank_labels_beside_labelled_rows_and_ragged_rows_are_refused(tmp_path):
    for i in range(56):
        png(tmp_path / f"x{i}.png")
    blank = {3, 18, 39}  # rows (0-based) without a label: lines 5, 20 and 41
    rows = [f"x{i}.png,{'' if i in blank else ('all' if i % 2 else 'hem')}" for i in range(56)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(FeatxError) as err:
        discover(manifest)
    assert str(err.value) == (
        f"manifest {manifest}: 3 row(s) have a blank label beside labelled rows (line 5, 20, 41); "
        "such an image would be left out of training and scoring: give every row its label, or give the images "
        "to predict a split of their own (a split column, e.g. predict)")
    split = tmp_path / "split.csv"
    split.write_text("path,label,split\n" + "\n".join(f"{r},{'predict' if i in blank else 'train'}"
                                                      for i, r in enumerate(rows)) + "\n")
    col = discover(split)  # unlabelled by decision: a split of their own, counted there (featx info)
    assert len(col) == 56 and [s.path for s in col.samples if s.label is None] == ["x3.png", "x18.png", "x39.png"]
    assert {s.split for s in col.samples if s.label is None} == {"predict"}
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("path,label,split\nx0.png,hem,train\nx1.png,,train\nx2.png,,predict\n")
    with pytest.raises(FeatxError, match=r"1 row\(s\) have a blank label beside labelled rows of split train "
                                         r"\(line 3\)"):
        discover(mixed)
    wide = tmp_path / "wide.csv"  # an unquoted comma in a path
    wide.write_text("path,label\nx0.png,all\nx1,b.png,hem\n")
    with pytest.raises(FeatxError) as err:
        discover(wide)
    assert str(err.value) == (f"manifest {wide} line 3 has 3 fields but the header has 2 (path,label); quote a "
                              "field that holds a comma, or give the row every field (empty ones as ,,)")
    short = tmp_path / "short.csv"
    short.write_text("path,label,subject\nx0.png,all,P1\nx1.png,hem\n")
    with pytest.raises(FeatxError, match=r"short\.csv line 3 has 2 fields but the header has 3"):
        discover(short)


@pytest.fixture
def prelim(cnmc_tree, tmp_path) -> Path:
    """A copy of the C-NMC preliminary phase (6 images and the labels file); returns its folder."""
    root = tmp_path / "cnmc" / PRELIM
    shutil.copytree(cnmc_tree / PRELIM, root)
    return root


def test_cnmc_labels_file_with_a_duplicated_or_missing_row_is_refused_or_named(prelim):
    labels = prelim / (PRELIM + "_labels.csv")
    lines = labels.read_text().splitlines()
    assert lines[0] == "Patient_ID,new_names,labels" and lines[3].split(",")[1] == "3.bmp"
    first = lines[3].split(",")[0]
    labels.write_text("\n".join(lines + ["UID_H99_1_1_hem.bmp,3.bmp,0"]) + "\n")  # 3.bmp again, another patient
    with pytest.raises(FeatxError) as err:
        discover(prelim.parent)
    assert str(err.value) == (f"labels file {labels}: 3.bmp is listed twice (line 4: {first}, line 8: "
                              "UID_H99_1_1_hem.bmp); keep the one row that is right: list each image once")
    # a missing row (5.bmp) and a row for an image that is not there (9.bmp)
    labels.write_text("\n".join([r for r in lines if ",5.bmp," not in r] + ["UID_H99_1_1_hem.bmp,9.bmp,0"]) + "\n")
    with pytest.warns(FeatxWarning) as caught:
        col = discover(prelim.parent)
    message, = [str(w.message) for w in caught]
    assert message == (f"labels file {labels} has no row for 1 of the 6 images in {prelim} (5.bmp): they "
                       "are unlabelled and without a subject (left out of training and scoring); it lists 1 image(s) "
                       f"that are not in {prelim} (9.bmp); add the missing rows or images")
    unlabelled = [s.path for s in col.samples if s.label is None]
    assert unlabelled == [f"{PRELIM}/{PRELIM}/5.bmp"] and len(col) == 6


# -- CSV files that are no UTF-8 text (items 14, 15, 16) -------------------------------------------------------
def _bad_csvs(folder: Path, header: str, row: str) -> dict[str, Path]:
    """A Latin-1 file, random bytes, and a NUL in a label, each a real file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    latin = folder / "latin.csv"
    latin.write_bytes(f"{header}\n{row.replace('LABEL', 'blasté')}\n".encode("latin-1"))
    noise = folder / "noise.csv"
    noise.write_bytes(random.Random(24).randbytes(4096))
    nul = folder / "nul.csv"
    nul.write_bytes(f"{header}\n{row.replace('LABEL', 'al' + chr(0) + 'l')}\n".encode())
    return {"latin": latin, "noise": noise, "nul": nul}


def _expected(kind: str, what: str, path: Path, field: str) -> str:
    """The start of the one-line message for ``kind`` of fault in the CSV file ``path``."""
    return {
        "latin": f"{what} {path} is not UTF-8 text (byte 0xe9 on line 2; saved as Latin-1 or Windows-1252?); save "
                 f"it as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 {path.name} > {path.stem}-utf8.csv`)",
        "noise": f"{what} {path} is not a text file (byte 0x",
        "nul": f"{what} {path} line 2: field {field!r} holds a NUL byte (\\x00); remove it (every field is text)",
    }[kind]


def test_a_latin_1_random_bytes_or_nul_csv_is_one_line_naming_the_file_and_the_fix(prelim, tmp_path):
    png(tmp_path / "data" / "x0.png")
    for kind, path in _bad_csvs(tmp_path / "data", "path,label", "x0.png,LABEL").items():
        expected = _expected(kind, "manifest", path, "label")
        with pytest.raises(FeatxError) as err:
            discover(path)
        assert str(err.value).startswith(expected), str(err.value)
        if kind == "noise":
            assert str(err.value).endswith("is no UTF-8, and it holds NUL or control bytes); give a UTF-8 CSV file "
                                           "with the header path,label[,subject][,split]")
        out = tmp_path / f"{kind}.h5"
        result, text = invoke("extract", path, *CLI_ARGS, "--out", out)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1 and text.strip().startswith(f"error: {expected}")
        assert not out.exists() and not Path(f"{out}.lock").exists() and not Path(f"{out}.tmp").exists()
    # the same three faults in the C-NMC labels file
    labels = prelim / (PRELIM + "_labels.csv")
    for kind, path in _bad_csvs(tmp_path / "labels", "Patient_ID,new_names,labels",
                                "UID_1_1_1_all.bmp,1.bmp,LABEL").items():
        shutil.copy(path, labels)
        with pytest.raises(FeatxError) as err:
            discover(prelim.parent)
        assert str(err.value).startswith(_expected(kind, "labels file", labels, "labels")), str(err.value)
