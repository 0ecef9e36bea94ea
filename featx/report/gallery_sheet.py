"""The error gallery's PNG sheet: thumbnails of a row's cells (most confidently wrong, least confident right),
each annotated with its file, subject and fold, true and predicted class, score and confidence, grouped by subject.

Laid out in inches: a fixed width (``columns`` cells), a height that follows the cells; every annotation is
measured and shortened (the file name from the left, with ``…``) to fit its cell, so no text overlaps another.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from featx.figures import DPI, pyplot, save_png, wrap_title
from featx.report.gallery_cells import Cell, by_subject

CELL_W, IMAGE_H, TEXT_H = 1.45, 1.05, 0.76   # inches: one cell's width, its image and its 5 annotation lines
MARGIN, HEADER_H, GAP = 0.15, 0.3, 0.1       # inches: the sheet's margin, a part's header line, between cells
FONT, TITLE_FONT = 6.5, 9.0                  # points
THUMB = 128                                  # pixels: the longest side of a thumbnail
COLUMNS = 8

LoadImage = Callable[[Cell], np.ndarray]


def sheet_width(columns: int = COLUMNS) -> float:
    """The sheet's width in inches (it does not depend on the cells)."""
    return 2 * MARGIN + columns * CELL_W


def draw_sheet(wrong: Sequence[Cell], right: Sequence[Cell], load: LoadImage, *, title: str, caption: str,
               n_wrong: int, n_right: int, columns: int = COLUMNS):
    """The figure: a title, a part per kind of cell (its header says how many of how many are drawn), one
    thumbnail per cell (``load(cell)``: an RGB array) with five lines under it, subjects framed in turn of
    colour, and the caption (what the score and the confidence are) at the bottom."""
    plt = pyplot()
    width = sheet_width(columns)
    text_w = width - 2 * MARGIN
    title = wrap_title(title, text_w, TITLE_FONT)
    caption = wrap_title(caption, text_w, FONT + 0.5)
    parts = [(f"Most confidently wrong: {len(wrong)} of {n_wrong} misclassified cells drawn "
              "(grouped by subject; each subject's cells most confident first)", by_subject(list(wrong))),
             (f"Least confident right: {len(right)} of {n_right} correctly classified cells drawn "
              "(grouped by subject; each subject's cells least confident first)", by_subject(list(right)))]
    line_h = IMAGE_H + TEXT_H + GAP
    title_h = _lines_height(title, TITLE_FONT)
    caption_h = _lines_height(caption, FONT + 0.5)
    heights = [HEADER_H + max(1, -(-len(cells) // columns)) * line_h for _, cells in parts]
    height = MARGIN + title_h + sum(heights) + caption_h + MARGIN
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    renderer = fig.canvas.get_renderer()
    top = height - MARGIN  # inches from the bottom, moving down
    fig.text(MARGIN, top, title, fontsize=TITLE_FONT, va="top", ha="left", weight="bold",
             transform=fig.dpi_scale_trans)
    top -= title_h
    colours = plt.get_cmap("tab10").colors
    for (header, cells), part_h in zip(parts, heights):
        fig.text(MARGIN, top - 0.05, _fit(fig, renderer, header, text_w, FONT + 1), fontsize=FONT + 1, va="top",
                 ha="left", transform=fig.dpi_scale_trans)
        if not cells:
            fig.text(MARGIN, top - HEADER_H - 0.05, "(none)", fontsize=FONT, va="top", ha="left", color="0.4",
                     transform=fig.dpi_scale_trans)
        subjects = list(dict.fromkeys(c.subject for c in cells))
        for k, cell in enumerate(cells):
            x = MARGIN + (k % columns) * CELL_W
            y = top - HEADER_H - (k // columns) * line_h  # the cell's top
            colour = colours[subjects.index(cell.subject) % len(colours)]
            _draw_cell(fig, renderer, cell, load(cell), x, y, width, height, colour)
        top -= part_h
    fig.text(MARGIN, MARGIN + caption_h, caption, fontsize=FONT + 0.5, va="top", ha="left", color="0.25",
             transform=fig.dpi_scale_trans)
    return fig


def save_sheet(fig, path: str | Path) -> Path:
    """Write the figure as a PNG (atomically) and free it."""
    return save_png(fig, path)


def _draw_cell(fig, renderer, cell: Cell, image: np.ndarray, x: float, y: float, width: float, height: float,
               colour) -> None:
    """The thumbnail in a frame of its subject's colour, and its five lines under it: file, subject and fold, true
    class, predicted class (red when wrong), score and confidence; each shortened alone to fit the cell."""
    pad = 0.06
    ax = fig.add_axes(((x + pad) / width, (y - IMAGE_H) / height, (CELL_W - 2 * pad) / width, IMAGE_H / height))
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.0)
    name = cell.path.replace("\\", "/").rsplit("/", 1)[-1]
    score = "n/a" if cell.score is None else f"{cell.score:.3f}"
    confidence = "n/a" if np.isnan(cell.confidence) else f"{cell.confidence:.3f}"
    fold = "" if cell.fold is None else f" · fold {cell.fold}"
    lines = [(name, "left", ""), (f"subject {cell.subject or '?'}", "right", fold),
             (f"true {cell.y_true}", "right", ""), (f"pred {cell.y_pred}", "right", ""),
             (f"score {score} · conf {confidence}", "right", "")]
    room = CELL_W - 2 * pad
    line_h = TEXT_H / len(lines)
    for i, (text, cut, keep) in enumerate(lines):
        fig.text(x + pad, y - IMAGE_H - 0.04 - i * line_h, _fit(fig, renderer, text, room, FONT, cut=cut, keep=keep),
                 fontsize=FONT, va="top", ha="left", color="darkred" if cell.wrong and i == 3 else "black",
                 transform=fig.dpi_scale_trans)


def _fit(fig, renderer, text: str, inches: float, fontsize: float, cut: str = "right", keep: str = "") -> str:
    """``text`` + ``keep``, ``text`` shortened (from the ``cut`` side, marked ``…``) until the whole is at most
    ``inches`` wide."""
    shown = text + keep
    probe = fig.text(0, 0, shown, fontsize=fontsize)
    try:
        while len(text) > 1 and probe.get_window_extent(renderer).width > inches * fig.dpi:
            text = text[1:] if cut == "left" else text[:-1]
            shown = (f"…{text}" if cut == "left" else f"{text}…") + keep
            probe.set_text(shown)
        return shown
    finally:
        probe.remove()


def _lines_height(text: str, fontsize: float) -> float:
    """Inches that ``text``'s lines take at ``fontsize`` (1.3 line spacing), plus a small gap."""
    return (text.count("\n") + 1) * fontsize * 1.3 / 72 + 0.08
