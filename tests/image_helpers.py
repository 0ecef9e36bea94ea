"""Tiny images and class folders for the data and decoding fault tests."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

# a quick extraction of tiny images, for the CLI
CLI_ARGS = ["--backbone", "cnn", "--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0",
            "-q"]


def png(path: Path, colour=(200, 100, 50), size=(12, 10)) -> Path:
    """A one-colour PNG at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def two_classes(root: Path) -> Path:
    """``root/all`` and ``root/hem`` with two PNGs each."""
    for i in range(2):
        png(root / "all" / f"a{i}.png", (200, 40 * i, 50))
        png(root / "hem" / f"h{i}.png", (40 * i, 100, 200))
    return root
