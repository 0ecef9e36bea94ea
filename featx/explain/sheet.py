"""What ``explain`` writes: the sheet (one row per image: the cell, then each map over it) and the CSV of per-image
numbers."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featx import csvfiles
from featx.explain.inputs import ROLE_WORDS
from featx.explain.methods import METHOD_TITLES
from featx.figures import pyplot, save_png, wrap_title
from featx.files import write_or_keep

#: the CSV's columns before one ``<method>_nucleus_mass`` column per method
CSV_COLUMNS = ("path", "subject", "split", "true", "role", "predicted", "score")


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.0f}%"


def draw_sheet(images: Sequence, methods: Sequence[str], layer: str, path: str | Path, *, title: str = "") -> Path:
    """One PNG: per image (an :class:`featx.explain.ImageExplanation`) a row of the cell and each method's map over
    it (red: what raised the predicted class's score), titled with path, subject, true and predicted class, score
    and the role the image had for the network; the share of each map inside the nucleus when masks were read."""
    plt = pyplot()
    cols = 1 + len(methods)
    width, row_h = 2.1 * cols + 0.3, 2.55
    fig, axes = plt.subplots(len(images), cols, figsize=(width, row_h * len(images) + 0.5), squeeze=False,
                             layout="constrained")  # keeps the suptitle and the cells' titles apart
    for r, item in enumerate(images):
        cell = item.image
        axes[r, 0].imshow(cell)
        head = (f"{item.path}\nsubject {item.subject or '?'} · true {item.true or '?'} · pred {item.predicted} "
                f"{item.score:.2f}\n{ROLE_WORDS.get(item.role, item.role)}")
        axes[r, 0].set_title(wrap_title(head, 2.1, 6.5), fontsize=6.5, loc="left")  # within its column
        for c, method in enumerate(methods, start=1):
            heat = item.maps[method]
            top = float(np.nanmax(heat)) if np.isfinite(heat).any() else 0.0
            axes[r, c].imshow(cell)
            axes[r, c].imshow(np.clip(heat, 0, None) / top if top > 0 else np.zeros_like(heat), cmap="jet",
                              alpha=0.45, vmin=0.0, vmax=1.0)
            name = METHOD_TITLES[method] + (f" ({layer})" if method == "gradcam" else "")
            mass = item.nucleus_mass.get(method)
            sub = name if mass is None else f"{name}\nin nucleus {_pct(mass)}"
            axes[r, c].set_title(wrap_title(sub, 2.1, 6.5), fontsize=6.5)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(wrap_title(title, width, 8), fontsize=8)
    return save_png(fig, path)


def write_csv(images: Sequence, methods: Sequence[str], path: str | Path) -> Path:
    """The per-image numbers: path, subject, split, true and predicted class, score, role, and per method the
    fraction of the map's positive mass inside the nucleus mask (empty without masks)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csvfiles.writer(fh, lineterminator="\n")
            out.writerow([*CSV_COLUMNS, *(f"{m}_nucleus_mass" for m in methods)])
            for item in images:
                masses = [item.nucleus_mass.get(m) for m in methods]
                out.writerow([item.path, item.subject or "", item.split or "", item.true or "", item.role or "unseen",
                              item.predicted, f"{item.score:.6f}",
                              *("" if v is None or math.isnan(v) else f"{v:.6f}" for v in masses)])

    return write_or_keep(path, write)
