"""Drawing figures, for every module that draws: matplotlib loaded on first use (headless), titles wrapped to a
figure's width, PNGs written whole or not at all."""
from __future__ import annotations

import textwrap
from pathlib import Path

from featx.files import atomic_write

DPI = 120


def pyplot():
    # deferred: matplotlib takes about half a second to import; only commands that draw pay for it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    return plt


def wrap_title(title: str, width_in: float, fontsize: float) -> str:
    """``title`` with each line wrapped to fit ``width_in`` inches at ``fontsize`` points (DejaVu Sans
    averages under 0.62 em a character)."""
    chars = max(12, int(width_in * 72 / (fontsize * 0.62)))
    return "\n".join(textwrap.fill(line, chars) or line for line in title.splitlines())


def save_png(fig, path) -> Path:
    """Write the PNG (creating its folder; atomically: a full disk never leaves a cut PNG) and free the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    finally:
        pyplot().close(fig)
    return path


def palette_png(path: str | Path, colours: int = 256) -> Path:
    """Rewrite the PNG at ``path`` with a palette of ``colours`` (median cut, no dithering): a sheet of cell
    thumbnails and text takes about a third of the bytes, and looks the same at the sizes a report shows."""
    from PIL import Image  # deferred: only the report's galleries use it

    path = Path(path)
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT,
                                              dither=Image.Dither.NONE)
    atomic_write(path, lambda tmp: small.save(tmp, format="PNG", optimize=True))
    return path
