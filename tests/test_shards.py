"""Sharded extraction and `featx merge`: shards are blocks of the single-run order, and merging them gives the
single-run store row for row (copied or through a virtual dataset), or one line naming the file at fault."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import invoke
from shard_helpers import BAD_ROWS, KW, assert_same_store, tree_with_bad_images

from featx.cli.app import flag
from featx.data import discover
from featx.errors import FeatxError
from featx.extract import extract
from featx.store import load_features, merge_stores, parse_shard, shard_rows, store_settings, summarize, verify
from featx.store import merge as merge_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def work(cnmc_tree, tmp_path_factory):
    """A tree with two unreadable images, its single-run store and its two shards (0/2 through the CLI)."""
    base = tmp_path_factory.mktemp("shards")
    root, bad = tree_with_bad_images(cnmc_tree, base / "data")
    single = extract(root, base / "single.h5", **KW)
    result, text = invoke("extract", root, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                          "--workers", "0", "--batch-size", "4", "--shard", "0/2", "--out", base / "part-0.h5", "-q")
    assert result.exit_code == 0, text
    extract(root, base / "part-1.h5", shard=(1, 2), **KW)
    return dict(root=root, bad=bad, single=single, parts=[base / "part-0.h5", base / "part-1.h5"], base=base)


def test_a_shard_is_a_block_of_the_single_run_order_that_records_its_place(work):
    collection = discover(work["root"])
    n = len(collection.samples)
    with h5py.File(work["single"]) as h5:
        single_paths = h5["samples/path"].asstr()[:]
    for i, part in enumerate(work["parts"]):
        rows = np.arange(i * n // 2, (i + 1) * n // 2)
        with h5py.File(part) as h5:
            assert h5.attrs["shard"] == f"{i}/2"
            assert h5.attrs["shard_of_fingerprint"] == collection.fingerprint()
            assert int(h5.attrs["shard_of_samples"]) == n
            # its own fingerprint is that of its rows, like any store's
            assert h5.attrs["dataset_fingerprint"] == collection.subset(rows).fingerprint()
            np.testing.assert_array_equal(h5["samples/index"][:], rows)
            np.testing.assert_array_equal(h5["samples/path"].asstr()[:], single_paths[rows])
            assert "shard" in h5["samples/index"].attrs["description"] and f"shard {i}/2" in h5.attrs["description"]
        # a normal store: summarised and loaded like any other (its unreadable image left out)
        assert summarize(part)["errors"] == 1
        assert len(load_features(part, labelled=None)) == len(rows) - 1


def test_shard_rows_cover_every_row_once_in_order():
    for n_samples in (1, 7, 34, 1001):
        for count in range(1, min(n_samples, 9) + 1):
            blocks = [shard_rows(n_samples, parse_shard(f"{i}/{count}")) for i in range(count)]
            np.testing.assert_array_equal(np.concatenate(blocks), np.arange(n_samples))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize("virtual", [False, True], ids=["copy", "virtual"])
def test_merged_shards_equal_the_single_run_store_row_for_row(work, tmp_path, virtual):
    out = tmp_path / "all.h5"
    args = ["merge", work["parts"][1], work["parts"][0], "--out", out] + (["--virtual"] if virtual else [])
    result, text = invoke(*args)  # any order of the parts
    assert result.exit_code == 0, text
    assert "merged 2 parts" in text and "34/34" not in text and "32/34 rows done" in text
    assert_same_store(work["single"], out)
    with h5py.File(out) as h5:
        assert h5.attrs["merged"] == ("virtual" if virtual else "copy")
        assert [p["shard"] for p in json.loads(h5.attrs["merged_from"])] == ["0/2", "1/2"]
        assert all(ds.is_virtual == virtual for ds in h5["features"].values())
        assert "Joined by `featx merge`" in h5.attrs["description"]
        # unreadable images stay recorded as a single run records them: not done, with their error
        errors = h5["samples/error"].asstr()[:]
        assert [i for i, e in enumerate(errors) if e] == list(BAD_ROWS)
    if virtual:
        assert out.stat().st_size < min(p.stat().st_size for p in work["parts"])
    assert not out.with_name("all.h5.tmp").exists()


def test_a_virtual_store_moves_with_its_parts_and_names_a_missing_one(work, tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    parts = [Path(shutil.copy(p, folder / p.name)) for p in work["parts"]]
    merge_stores(parts, folder / "all.h5", virtual=True)
    moved = Path(shutil.move(folder, tmp_path / "elsewhere"))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the part paths are relative to the merged file, not to the working directory
    try:
        fs = load_features(moved / "all.h5", labelled=None)
    finally:
        os.chdir(cwd)
    np.testing.assert_allclose(fs.X, load_features(work["single"], labelled=None).X, rtol=0, atol=1e-6)
    (moved / "part-1.h5").unlink()
    for read in (lambda: load_features(moved / "all.h5"), lambda: verify(moved / "all.h5")):
        with pytest.raises(FeatxError, match=r"part-1\.h5, which is missing .*virtual=True"):
            read()


def test_a_merged_store_resumes_like_a_single_run_and_a_virtual_one_is_read_only(work, tmp_path):
    copy, virtual = tmp_path / "copy.h5", tmp_path / "virtual.h5"
    merge_stores(work["parts"], copy)
    merge_stores(work["parts"], virtual, virtual=True)
    seen = []
    extract(work["root"], copy, on_progress=lambda done, total: seen.append((done, total)), **KW)
    assert seen[0] == (32, 34) and seen[-1] == (34, 34)  # only the two unreadable images are tried again
    with pytest.raises(FeatxError, match=r"virtual merged store .*`featx.extract\(..., shard='i/n'\)`") as err:
        extract(work["root"], virtual, **KW)
    assert "with `featx extract --shard i/n` and merge again" in err.value.render(flag)


def test_a_store_is_resumed_only_as_the_same_shard(work, tmp_path):
    part = tmp_path / "p.h5"
    shutil.copy(work["parts"][0], part)
    with pytest.raises(FeatxError, match=r"holds shard 0/2, this run asks for shard 1/2"):
        extract(work["root"], part, shard="1/2", **KW)
    with pytest.raises(FeatxError, match=r"holds shard 0/2, this run asks for the whole collection"):
        extract(work["root"], part, **KW)
    with pytest.raises(FeatxError, match=r"holds the whole collection \(no shard\), this run asks for shard 0/2"):
        extract(work["root"], work["single"], shard="0/2", **KW)
    with pytest.raises(FeatxError, match=r"shard 0/2 of another collection"):  # the data changed since
        extract(work["root"], part, shard="0/2", splits=["fold_0", "fold_1", "fold_2", "prelim"], **KW)


@pytest.mark.parametrize("value, needle", [
    ("abc", "--shard abc: write it as i/n"),
    ("2/2", "--shard 2/2: i must be from 0 to 1"),
    ("-1/2", "--shard -1/2: i must be from 0 to 1"),
    ("1/0", "--shard 1/0: n must be at least 1"),
    ("0/40", "--shard 0/40: the collection has 34 image(s), fewer than 40 shards"),
])
def test_bad_shard_values_are_one_line(work, tmp_path, value, needle):
    result, text = invoke("extract", work["root"], "--backbone", "cnn", "--shard", value, "--out", tmp_path / "x.h5")
    assert result.exit_code == 1 and needle in text, text
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2
    assert not (tmp_path / "x.h5").exists()


def test_parts_made_under_other_library_versions_merge_and_record_both(work, tmp_path, monkeypatch):
    import torch

    p0 = work["parts"][0]
    first = str(store_settings(p0)["torch_version"])
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    later = extract(work["root"], tmp_path / "later-1.h5", shard="1/2", **KW)
    out = merge_stores([p0, later], tmp_path / "all.h5")
    assert store_settings(out)["torch_version"] == f"{first}, 9.9.9"
    merged, single = load_features(out, labelled=None), load_features(work["single"], labelled=None)
    np.testing.assert_array_equal(merged.paths, single.paths)
    np.testing.assert_allclose(merged.X, single.X, rtol=0, atol=1e-6)


def _one_line_refusal(args, needle, out):
    result, text = invoke("merge", *args, "--out", out)
    assert result.exit_code == 1 and needle in text, text
    assert "Traceback" not in result.output and result.output.startswith("error:")
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()
    return text


@pytest.mark.slow
def test_merge_refuses_other_settings_overlaps_missing_and_unfinished_shards(work, tmp_path):
    p0, p1 = work["parts"]
    out = tmp_path / "all.h5"
    # other settings: shard 1/2 with another seed of the random weights
    seed1 = extract(work["root"], tmp_path / "seed1.h5", shard="1/2", **dict(KW, seed=1))
    _one_line_refusal([p0, seed1], f"{seed1} was made with weights_seed=1, {p0} with weights_seed=0", out)
    # other data: shard 1/2 of fewer splits
    other = extract(work["root"], tmp_path / "other.h5", shard="1/2", splits=["fold_0", "fold_1"], **KW)
    _one_line_refusal([p0, other], f"{other} was made with shard_of_", out)
    # overlapping rows: shard 0/2 twice (a copy), or a 0/2 beside a 0/3
    copy = Path(shutil.copy(p0, tmp_path / "copy-0.h5"))
    _one_line_refusal([p0, copy, p1], f"{copy} and {p0} both hold row 0 (", out)
    third = extract(work["root"], tmp_path / "third.h5", shard="0/3", **KW)
    _one_line_refusal([p0, p1, third], f"{third} and {p0} both hold row 0", out)
    # missing rows: a shard not given
    _one_line_refusal([p0], "17 of the 34 rows are in none of the parts given (first: row 17): shard 1/2 missing", out)
    # an unfinished shard (interrupted after its first batch)
    def stop(done, total):
        if done >= 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        extract(work["root"], tmp_path / "half.h5", shard="1/2", on_progress=stop, **KW)
    _one_line_refusal([p0, tmp_path / "half.h5"], "half.h5: shard 1/2 is unfinished (13 of 17 rows not extracted)",
                      out)
    # a store that is not a shard, and a damaged shard
    _one_line_refusal([p0, work["single"]], "single.h5 is not a shard store", out)
    damaged = Path(shutil.copy(p1, tmp_path / "damaged.h5"))
    with h5py.File(damaged, "r+") as h5:
        h5["features/fc"][0] = h5["features/fc"][0] + 1
    _one_line_refusal([p0, damaged], "damaged.h5: finished rows do not match their checksums (first: C-NMC", out)
    _one_line_refusal([p0, tmp_path / "absent.h5"], "absent.h5: no such shard store", out)
    # and nothing but valid input is merged: the output exists only once the parts are right
    merge_stores([p0, p1], out)
    result, text = invoke("merge", p0, p1, "--out", out)
    assert result.exit_code == 1 and "all.h5 exists; choose another --out, or add --force" in text
    result, text = invoke("merge", p0, p1, "--out", out, "--force")
    assert result.exit_code == 0, text


@pytest.mark.parametrize("fault", ["disk full", "interrupted"])
def test_a_failed_merge_leaves_no_output_and_keeps_the_parts(work, tmp_path, monkeypatch, fault):
    out = tmp_path / "all.h5"
    calls = []
    real = merge_module._copy_part

    def copy_then_fail(h5, part, checksums, copy):
        real(h5, part, checksums, copy)
        calls.append(part.path)
        if fault == "disk full":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_module, "_copy_part", copy_then_fail)
    if fault == "disk full":
        with pytest.raises(FeatxError, match=r"disk full while writing .*all\.h5; free space and merge again"):
            merge_stores(work["parts"], out)
    else:
        with pytest.raises(KeyboardInterrupt):
            merge_stores(work["parts"], out)
    assert calls and not out.exists() and not out.with_name("all.h5.tmp").exists()
    assert all(p.exists() for p in work["parts"])
    monkeypatch.undo()
    merge_stores(work["parts"], out)  # and the same merge then succeeds (no lock left behind)
    assert_same_store(work["single"], out)


def test_merge_refuses_a_part_whose_metadata_do_not_match_their_checksums(work, tmp_path):
    """A label flipped on disk in a part would get a fresh checksum in the merged store: refused, naming the row."""
    p0, p1 = work["parts"]
    flipped = Path(shutil.copy(p1, tmp_path / "flipped.h5"))
    with h5py.File(flipped) as h5:
        offset = h5["samples/label"].id.get_offset() + 8 * 2  # row 2 of the part, its label's low byte
        name = h5["samples/path"].asstr()[2]
        assert h5["samples/label"][2] in (0, 1)
    with open(flipped, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 1]))
    with h5py.File(flipped) as h5, h5py.File(p1) as ref:
        assert h5["samples/label"][2] == 1 - ref["samples/label"][2]
    _one_line_refusal([p0, flipped], f"{flipped}: the label, path, subject or split of 1 row(s) do not match their "
                                     f"checksums (first: row 2, {name}); the store is damaged: delete it and extract "
                                     "shard 1/2 again", tmp_path / "all.h5")
