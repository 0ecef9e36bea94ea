"""Decoding one image file into upright 8-bit RGB with PIL (no torch here).

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a photo is turned upright before anything
  else, and stores record it (``exif_orientation``, see :func:`featx.data.images.describe_preprocessing`).
- 16-bit, 32-bit integer and float images are scaled to 8 bits by their own range; one without a single
  finite value (all NaN) is unreadable, not a black image.
- An image over PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485 px by default,
  about 9459 x 9459) is unreadable: featx reads its size from the header and never decodes it, so it holds no
  memory. Under the limit an image is decoded whole (about 4 bytes per pixel for RGB) before featx resizes it.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from featx.data.content import UNKNOWN, FileId, read_file
from featx.errors import FeatxError

EXIF_ORIENTATION = "applied"      # the stores' attribute: images turned upright by their EXIF tag (before: "ignored")
_OPENING = threading.Lock()       # PIL's size check warns through the global warnings filters: one opener at a time


def load_image(path: str | Path) -> Image.Image:
    """Open an image as upright RGB, fully decoded; FeatxError naming the file when it cannot be read (not an
    image, damaged, a dangling link, over the pixel limit, no finite value).

    16-bit, 32-bit integer and float images are scaled to 8 bits by their own range (minimum -> 0,
    maximum -> 255), not clipped at 255.
    """
    return read_image(path, identify=False)[0]


def read_image(path: str | Path, identify: bool = True) -> tuple[Image.Image, FileId]:
    """:func:`load_image` and, with ``identify``, the :class:`~featx.data.content.FileId` of the bytes it
    decoded (one read of the file; ``UNKNOWN`` without)."""
    try:
        if identify:
            data, ident = read_file(path)
            source = io.BytesIO(data)
        else:
            source, ident = path, UNKNOWN
        with _open(source, path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return to_rgb(img), ident
    except FeatxError:
        raise
    except Image.UnidentifiedImageError:
        raise FeatxError(f"cannot read image {path}: not an image file (or a format PIL does not know)") from None
    except FileNotFoundError:
        if os.path.islink(path):
            raise FeatxError(f"cannot read image {path}: a dangling symbolic link (to {os.readlink(path)}); restore "
                             "its target or remove the link") from None
        raise FeatxError(f"cannot read image {path}: no such file") from None
    except Exception as exc:  # PIL raises several types for broken files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeatxError(f"cannot read image {path}: {reason}") from None


def _open(source, path: str | Path) -> Image.Image:
    """``Image.open``, refusing (FeatxError) an image over ``PIL.Image.MAX_IMAGE_PIXELS`` from its header alone,
    instead of PIL's two-line DecompressionBombWarning that names no file."""
    with _OPENING, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except Image.DecompressionBombError:  # over twice the limit: PIL refuses before featx sees the size
            img = None
    limit = Image.MAX_IMAGE_PIXELS
    if img is None or (limit is not None and img.width * img.height > limit):
        size = "" if img is None else f"{img.width}x{img.height} px, "
        if img is not None:
            img.close()
        raise FeatxError(f"cannot read image {path}: {size}over the {limit:,} px limit that guards against "
                         "decompression bombs (PIL.Image.MAX_IMAGE_PIXELS), so featx does not decode it; "
                         "downscale the file (featx resizes every image to the network's input size anyway)")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """A PIL image as 8-bit RGB; high-bit-depth and float modes (I;16*, I, F) are scaled by their range (NaN and
    infinite pixels become the minimum). ValueError for an image without a single finite value."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            raise ValueError(f"no finite pixel value (all {a.size} pixels are NaN or infinite); featx would see a "
                             "black image: fix or replace the file")
        lo, hi = float(a[finite].min()), float(a[finite].max())
        a = np.where(finite, a, lo)
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    # an RGB image as it is: convert("RGB") would only copy it (about 5% of a 450 px BMP's decode)
    return img if img.mode == "RGB" else img.convert("RGB")
