"""Images that a hostile run saw decoded wrongly without a word (issue 24, items 25, 29, 30, 33): an all-NaN
float TIFF, a decompression bomb (a real 10000 x 10000 PNG: its message, and the memory it no longer holds), a
real EXIF-rotated JPEG made with PIL."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import invoke
from image_helpers import CLI_ARGS, png, two_classes
from PIL import Image

from featx.data.images import load_image
from featx.errors import FeatxError
from featx.extract import extract
from featx.persist import MATCH_KEYS, check_store_matches
from featx.store import load_features, store_settings, summarize

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
ARGS = dict(backbone="cnn", weights="none", image_size=32, batch_size=4, workers=0)


def test_an_all_nan_float_tiff_is_unreadable_not_a_black_image(tmp_path):
    root = two_classes(tmp_path / "cells")
    nan = root / "all" / "nan.tif"
    Image.fromarray(np.full((16, 16), np.nan, np.float32), mode="F").save(nan)
    assert np.isnan(np.asarray(Image.open(nan))).all()
    with pytest.raises(FeatxError) as err:
        load_image(nan)
    assert str(err.value) == (f"cannot read image {nan}: no finite pixel value (all 256 pixels are NaN or "
                              "infinite); featx would see a black image: fix or replace the file")
    half = np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (16, 1))
    half[:, :8] = np.nan
    Image.fromarray(half, mode="F").save(root / "all" / "half.tif")  # some finite values: scaled by them
    grey = np.asarray(load_image(root / "all" / "half.tif"))[0, :, 0]
    assert (grey[:8] == 0).all() and grey[8] == 0 and grey[-1] == 255
    out = tmp_path / "s.h5"
    result, text = invoke("extract", root, *CLI_ARGS, "--out", out)
    assert result.exit_code == 0, result.output
    assert "warning: 1 image(s) could not be read and were skipped: all/nan.tif" in text and "NaN" in text
    s = summarize(out)
    assert (s["done"], s["errors"]) == (5, 1) and "no finite pixel value" in s["failed"][0]["error"]


def _bomb(path: Path, side: int = 10000) -> Path:
    """A real side x side greyscale PNG (one zlib stream of zero rows: 0.4 MB on disk, 100 Mpx decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(1)
    rows = (b"\x00" + bytes(side)) * 100
    data = b"".join([pack.compress(rows) for _ in range(side // 100)] + [pack.flush()])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


PEAK = r'''
import json, resource, sys, warnings
from featx.data.images import ResizeUint8, load_image
from featx.errors import FeatxError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    try:
        ResizeUint8(224)(load_image(sys.argv[1]))
        outcome = "decoded"
    except FeatxError as exc:
        outcome = str(exc)
added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcome": outcome, "added_mb": added / 1024, "warnings": [str(w.message) for w in seen]}))
'''


@pytest.mark.slow
def test_a_decompression_bomb_is_one_line_naming_the_file_and_is_never_decoded(tmp_path, monkeypatch):
    root = two_classes(tmp_path / "cells")
    bomb = _bomb(root / "all" / "big.png")
    message = (f"cannot read image {bomb}: 10000x10000 px, over the 89,478,485 px limit that guards against "
               "decompression bombs (PIL.Image.MAX_IMAGE_PIXELS), so featx does not decode it; downscale the file "
               "(featx resizes every image to the network's input size anyway)")
    # memory: a fresh process, its peak resident size before and after (decoding it whole added 390-480 MB)
    run = subprocess.run([sys.executable, "-c", PEAK, str(bomb)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr
    peak = json.loads(run.stdout)
    assert peak["outcome"] == message and peak["warnings"] == [] and peak["added_mb"] < 50, peak
    result, text = invoke("extract", root, *CLI_ARGS, "--out", tmp_path / "s.h5")
    assert result.exit_code == 0, result.output
    assert "DecompressionBomb" not in result.output and "could be decompression bomb DOS attack" not in text
    assert f"warning: 1 image(s) could not be read and were skipped: all/big.png (first error: {message})" in text
    assert summarize(tmp_path / "s.h5")["errors"] == 1
    # the limit is PIL's setting, read at each image (None: no limit)
    small = png(tmp_path / "small.png", size=(12, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(FeatxError, match=r"small\.png: 12x10 px, over the 100 px limit"):
        load_image(small)
    with pytest.raises(FeatxError, match=r"twice\.png: over the 100 px limit"):
        load_image(png(tmp_path / "twice.png", size=(30, 10)))  # over twice the limit: PIL refuses at once
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 120)
    assert load_image(small).size == (12, 10)


def _orientation_6(path: Path, pixels: np.ndarray) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": a phone held upright
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


def test_exif_orientation_is_applied_and_recorded_and_an_older_store_says_it_was_ignored(tmp_path):
    yy, xx = np.mgrid[0:24, 0:40]
    pixels = np.stack([xx * 6, yy * 10, 255 - xx * 6], axis=-1).astype(np.uint8)  # 40 wide, 24 high, no symmetry
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    tagged = _orientation_6(root / "a" / "tagged.jpg", pixels)
    plain = tmp_path / "plain.jpg"
    Image.fromarray(pixels).save(plain, quality=95)  # the same JPEG data without the tag
    stored = np.asarray(Image.open(plain).convert("RGB"))
    upright = np.asarray(load_image(tagged))
    assert upright.shape == (40, 24, 3)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))  # turned 90 degrees clockwise
    Image.fromarray(np.rot90(stored, k=-1).copy()).save(root / "a" / "upright.png")
    Image.fromarray(stored).save(root / "a" / "as_stored.png")
    png(root / "b" / "other.png")
    out = tmp_path / "s.h5"
    extract(root, out, **ARGS)
    fs = load_features(out, "fc")
    row = {Path(p).name: x for p, x in zip(fs.paths, fs.X)}
    np.testing.assert_allclose(row["tagged.jpg"], row["upright.png"], rtol=1e-5, atol=1e-6)
    assert np.abs(row["tagged.jpg"] - row["as_stored.png"]).max() > 1e-3
    settings = store_settings(out)
    assert settings["exif_orientation"] == "applied" and summarize(out)["exif_orientation"] == "applied"
    assert "turned upright by its EXIF orientation (PIL.ImageOps.exif_transpose)" in settings["preprocessing"]
    # a store made before featx applied EXIF orientation has no attribute: it reads, and says, "ignored"
    old = tmp_path / "old.h5"
    shutil.copy(out, old)
    with h5py.File(old, "r+") as h5:
        del h5.attrs["exif_orientation"]
    assert summarize(old)["exif_orientation"] == "ignored"
    result, text = invoke("info", old)
    assert result.exit_code == 0 and "EXIF orientation: ignored (a store made before featx turned photos " \
                                      "upright by their EXIF tag)" in text
    assert "EXIF orientation: applied" in invoke("info", out)[1]
    with pytest.raises(FeatxError, match=r"old\.h5 was made with exif_orientation='ignored', this run asks for "
                                         r"exif_orientation='applied'"):
        extract(root, old, **ARGS)
    # a model card records the store's setting: an older store's features do not fit a newer model
    card = {"file": "m.skops", "stores": [{k: fs.settings[0][k] for k in MATCH_KEYS if k in fs.settings[0]}]}
    assert card["stores"][0]["exif_orientation"] == "applied"
    check_store_matches(card, [store_settings(out)], [str(out)])
    with pytest.raises(FeatxError, match=r"old\.h5: exif_orientation is 'ignored' in the store but 'applied' in the "
                                         r"model card \(m\.skops\)"):
        check_store_matches(card, [store_settings(old)], [str(old)])
