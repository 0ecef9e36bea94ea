"""Shared by tests/test_shards.py and tests/test_torchrun.py: a tree with unreadable images, and the check that
a merged store is the single-run store row for row."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

from featx.data import discover
from featx.store import load_features, verify

# tiny and fast: the small CNN with seeded random weights at 32 px, no decode workers
KW = dict(backbone="cnn", weights="none", image_size=32, workers=0, batch_size=4)
# root attributes that name the file itself, not its features (shard bookkeeping, time, description)
BOOKKEEPING = {"created", "description", "merged", "merged_from"}
BAD_ROWS = (3, 25)  # one unreadable image in each half of the single-run order (34 rows)


def tree_with_bad_images(src: Path, dst: Path) -> tuple[Path, list[str]]:
    """A copy of the C-NMC test tree in which the images at rows BAD_ROWS (single-run order) are not images."""
    shutil.copytree(src, dst)
    samples = discover(dst).samples
    bad = [samples[i].path for i in BAD_ROWS]
    for path in bad:
        (dst / path).write_bytes(b"not an image")
    return dst, bad


def assert_same_store(single: Path, merged: Path) -> None:
    """``merged`` holds what ``single`` holds: the same rows in the same order (paths, labels, subjects, splits,
    done flags, errors), features within 1e-6, the same root attributes apart from bookkeeping, checksums that
    match its own rows, and the same FeatureSet through load_features."""
    with h5py.File(single) as a, h5py.File(merged) as b:
        for name in ("path", "subject", "split", "error"):
            np.testing.assert_array_equal(a["samples"][name].asstr()[:], b["samples"][name].asstr()[:], name)
        for name in ("label", "done"):
            np.testing.assert_array_equal(a["samples"][name][:], b["samples"][name][:], name)
        assert list(a["samples"].attrs["classes"]) == list(b["samples"].attrs["classes"])
        assert "index" not in b["samples"]  # shard bookkeeping stays in the parts
        assert sorted(a["features"]) == sorted(b["features"])
        for tap in a["features"]:
            x, y = a["features"][tap], b["features"][tap]
            assert x.shape == y.shape and x.dtype == y.dtype
            np.testing.assert_allclose(y[:], x[:], rtol=0, atol=1e-6, err_msg=tap)
            assert dict(x.attrs) == dict(y.attrs) or _same_attrs(x.attrs, y.attrs)
        done = b["samples/done"][:]
        assert ((b["samples/checksum"][:] != 0).all(axis=1) == done).all()  # written exactly where done
        np.testing.assert_array_equal(a["samples/meta_checksum"][:], b["samples/meta_checksum"][:])
        # each row's image file content, as the single run recorded it (unknown where no features were written)
        for field in ("size", "sha256"):
            np.testing.assert_array_equal(a["samples/file"][field], b["samples/file"][field], field)
        assert (b["samples/file"]["size"][done] > 0).all() and (b["samples/file"]["sha256"][~done] == b"").all()
        attrs_a = {k: a.attrs[k] for k in a.attrs if k not in BOOKKEEPING}
        attrs_b = {k: b.attrs[k] for k in b.attrs if k not in BOOKKEEPING}
        assert sorted(attrs_a) == sorted(attrs_b), set(attrs_a) ^ set(attrs_b)
        for key in attrs_a:
            assert str(attrs_a[key]) == str(attrs_b[key]), key
    check = verify(merged)
    assert check["bad"] == 0 and check["checked"] == int(done.sum())
    assert check["metadata_checked"] and check["bad_metadata"] == 0
    fa, fb = load_features(single, labelled=None), load_features(merged, labelled=None)
    for name in ("paths", "y", "subjects", "splits"):
        np.testing.assert_array_equal(getattr(fa, name), getattr(fb, name))
    np.testing.assert_allclose(fb.X, fa.X, rtol=0, atol=1e-6)
    assert (fa.fingerprint, fa.excluded, fa.classes) == (fb.fingerprint, fb.excluded, fb.classes)


def _same_attrs(a, b) -> bool:
    return sorted(a) == sorted(b) and all(str(a[k]) == str(b[k]) for k in a)
