"""Nucleus masks beside a data set: the tree ``featx.data.synth.synthesize(..., masks=True)`` writes.

Layout: ``DATA/C-NMC_nucleus_masks/<the image's path relative to DATA, with .png>``, one 8-bit PNG per image
(255 inside the nucleus, 0 outside). The C-NMC reader never lists this folder, so a tree with masks is the same
collection of images as one without.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from featx.errors import FeatxError, arg, command

#: the folder under the data root that holds the masks
MASKS = "C-NMC_nucleus_masks"
_WRITE = command(f"synth DATA {arg('masks', True)}", "featx.data.synth.synthesize(data, masks=True)")


def mask_path(data_root: str | Path, relative_image_path: str | Path) -> Path:
    """Where the nucleus mask of the image at ``relative_image_path`` (relative to ``data_root``) lives."""
    relative = PurePosixPath(Path(relative_image_path).as_posix())
    return Path(data_root) / MASKS / Path(*relative.with_suffix(".png").parts)


def has_masks(data_root: str | Path) -> bool:
    """Whether ``data_root`` holds a nucleus-mask tree."""
    return (Path(data_root) / MASKS).is_dir()


def nucleus_mask(data_root: str | Path, relative_image_path: str | Path) -> np.ndarray:
    """The nucleus mask (bool, H x W, True inside the nucleus) of the image at ``relative_image_path``.

    FeatxError (one line) when ``data_root`` has no mask tree, or the tree has no mask for this image.
    """
    root = Path(data_root)
    if not has_masks(root):
        raise FeatxError(f"{root} holds no nucleus masks ({MASKS}/); write it with synth's masks option "
                         f"({_WRITE})")
    path = mask_path(root, relative_image_path)
    if not path.is_file():
        raise FeatxError(f"no nucleus mask {path} for image {relative_image_path}; write the data again with "
                         f"synth's masks option ({_WRITE})")
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) >= 128
