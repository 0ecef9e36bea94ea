"""The comparison figure: a forest plot of one metric, a dot (the mean) and its 95% interval per row.

One panel per protocol, best row on top; IMAGE-LEVEL and OPTIMISTIC rows in panels of their own whose titles
say so. A dashed line marks each protocol's reference row (its best, or the row given to compare with) and the
right column writes each row's difference from it (:attr:`featx.results.ResultRow.comparison`, the paired
difference with its interval and ``≈``). A row without an interval shows its dot alone and ``n/a``, never
[0, 100] whiskers. The figure has a fixed width; its height follows the rows. Everything is placed in inches
and every label is wrapped to its column by measuring it, so no text overlaps another at any number of rows.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from featx.figures import DPI, save_png
from featx.report.notes import difference_text, protocol_text
from featx.report.plots import metric_label
from featx.results import ResultRow
from featx.scoring import METRIC_TABLE

FOREST_WIDTH_IN = 7.5
MARGIN_IN = 0.1
LABEL_IN = 2.5      # the row labels' column
DIFF_IN = 1.55      # the differences' column (right of the axes)
GAP_IN = 0.08       # between a column and the axes
ROW_IN = 0.2        # a row whose texts take one line
LINE_IN = 0.12      # each further line of a wrapped label
TICKS_IN = 0.25     # the x tick labels under each panel
LABEL_PT, SMALL_PT, PANEL_PT, TITLE_PT = 7.0, 6.5, 8.0, 10.0
MAX_LINES = 4       # a row label longer than this is shortened (its end replaced by "…")
HONEST, FLAGGED = "#1f4e79", "darkred"
MINUS = "\u2212"


@dataclass
class _Panel:
    title: str
    rows: list[ResultRow]            # best first; rows without a score last
    reference: ResultRow | None      # where the dashed line is (may be a row of another panel)


class _Measure:
    """Text widths in pixels as the figure's renderer draws them, and texts wrapped to a width."""

    def __init__(self, fig):
        from matplotlib.font_manager import FontProperties  # deferred: matplotlib (see plots.pyplot)

        self._renderer = fig.canvas.get_renderer()
        self._props = FontProperties
        self._cache: dict[tuple[str, float, str], float] = {}

    def width(self, text: str, size: float, weight: str = "normal") -> float:
        key = (text, size, weight)
        if key not in self._cache:
            prop = self._props(size=size, weight=weight)
            self._cache[key] = self._renderer.get_text_width_height_descent(text, prop, ismath=False)[0]
        return self._cache[key]

    def wrap(self, text: str, width_in: float, size: float, *, weight: str = "normal",
             max_lines: int | None = None) -> str:
        """``text`` broken after ``/``, ``+`` and spaces and before ``[`` into lines that fit ``width_in``; a piece
        wider than a line alone is cut where it must; past ``max_lines`` the last line ends with ``…``."""
        limit = width_in * DPI
        if "\n" not in text and self.width(text, size, weight) <= limit:
            return text
        limit *= 0.97  # a line's width is summed over its pieces (kerning between them left out)
        lines: list[str] = []
        for paragraph in text.splitlines() or [""]:
            line, used = "", 0.0
            for piece in re.split(r"(?<=[/+ ])|(?=\[)", paragraph):
                if line and used + self.width(piece.rstrip(), size, weight) > limit:
                    lines.append(line.rstrip())
                    line, used, piece = "", 0.0, piece.lstrip()
                while len(piece) > 1 and self.width(piece.rstrip(), size, weight) > limit:  # a piece too long
                    cut = max([i for i in range(2, len(piece)) if self.width(piece[:i], size, weight) <= limit] or [1])
                    lines.append(piece[:cut])
                    piece = piece[cut:]
                line += piece
                used += self.width(piece, size, weight)
            lines.append(line.rstrip())
        if max_lines and len(lines) > max_lines:
            last = lines[max_lines - 1]
            while last and self.width(last + "…", size, weight) > limit:
                last = last[:-1]
            lines = lines[:max_lines - 1] + [last.rstrip() + "…"]
        return "\n".join(lines)


def _pct(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else 100 * value


def _greater_is_better(metric: str) -> bool:
    return METRIC_TABLE[metric].greater_is_better if metric in METRIC_TABLE else True


def _sorted(rows: Sequence[ResultRow], metric: str) -> list[ResultRow]:
    sign = -1 if _greater_is_better(metric) else 1
    return sorted(rows, key=lambda r: sign * r.mean(metric) if math.isfinite(r.mean(metric)) else math.inf)


def _reference(group: list[ResultRow], rows: Sequence[ResultRow], metric: str) -> tuple[ResultRow | None, bool]:
    """The row the group's differences are from (and whether a user named it): the protocol's reference in the
    rows' ``comparison`` on ``metric``, else the group's best among rows that estimate new patients."""
    for r in rows:
        c = r.comparison or {}
        if r.protocol == group[0].protocol and c.get("metric") == metric and c.get("is_reference"):
            return r, c.get("chosen_by") == "vs"
    scored = [r for r in group if math.isfinite(r.mean(metric))]
    honest = [r for r in scored if not (r.marked or r.partial)] or scored
    return (_sorted(honest, metric)[0] if honest else None), False


def _difference(row: ResultRow, ref: ResultRow | None, metric: str) -> str:
    """The right column: the paired difference of ``comparison`` (``-1.63 [-3.46, +0.19] ≈``, ``best``) when it is
    on ``metric``, else the plain difference of means in points; minus signs typeset."""
    if row.comparison and row.comparison.get("metric") == metric:
        text = difference_text(row)
    elif row is ref:
        text = "best"
    elif ref is not None and math.isfinite(row.mean(metric)):
        text = f"{100 * (row.mean(metric) - ref.mean(metric)):+.2f}"
    else:
        text = "n/a"
    return text.replace("-", MINUS)


def forest_panels(rows: Sequence[ResultRow], metric: str = "f1_weighted") -> list[_Panel]:
    """The panels of the forest plot in order: protocols that estimate new patients first (in the rows' order),
    then IMAGE-LEVEL, then OPTIMISTIC ones; each with its rows, best first, and its reference row."""
    groups: dict[tuple[str, str, str], list[ResultRow]] = {}
    for r in rows:
        groups.setdefault((r.flag, r.protocol, r.protocol_label or r.protocol), []).append(r)
    order = {"": 0, "IMAGE-LEVEL": 1, "OPTIMISTIC": 2}
    panels = []
    for (flag, _, label), group in sorted(groups.items(), key=lambda kv: order.get(kv[0][0], 3)):
        ref, named = _reference(group, rows, metric)
        title = label[len(flag):].strip(" :") if flag and label.startswith(flag) else label
        if flag:
            why = "IMAGE-LEVEL (optimistic)" if flag == "IMAGE-LEVEL" else flag
            title = f"{why}: {title} \u2014 not an estimate for new patients"
        title += f" \u00b7 {len(group)} row{'s' if len(group) != 1 else ''}"
        if ref is not None:
            title += f" \u00b7 dashed line: {'reference' if named else 'best'}, {ref.name}"
            if ref not in group:
                title += f" ({protocol_text(ref)})"
        panels.append(_Panel(title, _sorted(group, metric), ref))
    return panels


def _x_limits(rows: Sequence[ResultRow], metric: str) -> tuple[float, float]:
    """Fitted to the means and intervals (in %), not from 0: a small margin each side, within 0-100."""
    values = [v for r in rows for v in (_pct(r.score(metric).mean), _pct(r.score(metric).ci_low),
                                        _pct(r.score(metric).ci_high)) if v is not None]
    if not values:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    pad = max(1.0, 0.06 * (hi - lo))
    return max(0.0, lo - pad), min(100.0, hi + pad) if hi + pad > lo - pad else lo + 1


def _row_label(row: ResultRow) -> str:
    extra = [t for t in ("nested" if row.nested else "", row.provenance_mark, "PARTIAL" if row.partial else "") if t]
    return row.name + (f" ({'; '.join(extra)})" if extra else "")


def _lines(text: str) -> int:
    return text.count("\n") + 1


def draw_forest(rows: Sequence[ResultRow], *, metric: str = "f1_weighted", title: str | None = None):
    """The forest plot of ``rows`` on ``metric`` as a matplotlib Figure (Agg canvas; see :func:`plot_forest`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib (see plots.pyplot)
    from matplotlib.figure import Figure  # deferred: as above
    from matplotlib.transforms import blended_transform_factory  # deferred: as above

    rows = list(rows)
    fig = Figure(figsize=(FOREST_WIDTH_IN, 1.0), dpi=DPI)
    FigureCanvasAgg(fig)
    measure = _Measure(fig)
    positives = {r.positive for r in rows}
    axis_label = f"{metric_label(metric, positives.pop() if len(positives) == 1 else None)} (%)"
    W, full = FOREST_WIDTH_IN, FOREST_WIDTH_IN - 2 * MARGIN_IN
    ax_x0 = MARGIN_IN + LABEL_IN + GAP_IN
    ax_x1 = W - MARGIN_IN - DIFF_IN
    head = f"{title}: " if title else ""
    head = measure.wrap(f"{head}{axis_label}, mean and 95% interval of {len(rows)} row{'s' if len(rows) != 1 else ''}",
                        full, TITLE_PT, weight="bold")
    panels = forest_panels(rows, metric)
    reasons = list(dict.fromkeys((r.interval or {}).get("na", {}).get(metric) or "no interval recorded"
                                 for r in rows if r.score(metric).ci_low is None))
    note = ("Dot: the mean over folds; line: its 95% interval"
            + (f"; n/a: no interval ({'; '.join(reasons[:3])})" if reasons else "")
            + ". Dashed line: the protocol's best row (or the reference row); right: each row's difference from it "
              "in points, with the 95% interval of the paired difference where there is one; \u2248: that interval "
              "holds 0.")
    note = measure.wrap(note, full, SMALL_PT)

    # the layout, top down in inches
    pt = 1 / 72
    y = MARGIN_IN
    placed: list[tuple[str, float, dict]] = [(head, y, {"size": TITLE_PT, "weight": "bold", "x": MARGIN_IN})]
    y += _lines(head) * TITLE_PT * 1.25 * pt + 0.08
    placed.append(("mean, 95% interval", y, {"size": SMALL_PT, "x": (ax_x0 + ax_x1) / 2, "ha": "center",
                                             "style": "italic"}))
    placed.append(("\u0394 from best (points)", y, {"size": SMALL_PT, "x": ax_x1 + GAP_IN, "style": "italic"}))
    y += SMALL_PT * 1.3 * pt + 0.08
    layout = []
    for panel in panels:
        ptitle = measure.wrap(panel.title, full, PANEL_PT, weight="bold")
        placed.append((ptitle, y, {"size": PANEL_PT, "weight": "bold", "x": MARGIN_IN,
                                   "color": FLAGGED if panel.rows[0].flag else "black", "gid": "panel-title"}))
        y += _lines(ptitle) * PANEL_PT * 1.25 * pt + 0.06
        labels = [measure.wrap(_row_label(r), LABEL_IN, LABEL_PT, max_lines=MAX_LINES) for r in panel.rows]
        diffs = [measure.wrap(_difference(r, panel.reference, metric), DIFF_IN - GAP_IN, SMALL_PT)
                 for r in panel.rows]
        heights = [ROW_IN + (max(_lines(a), _lines(b)) - 1) * LINE_IN for a, b in zip(labels, diffs)]
        layout.append((panel, y, sum(heights) + 0.06, labels, diffs, heights))
        y += sum(heights) + 0.06 + TICKS_IN + 0.12
    placed.append((axis_label, y - 0.12 - TICKS_IN + 0.2, {"size": PANEL_PT, "x": (ax_x0 + ax_x1) / 2,
                                                            "ha": "center", "gid": "axis-label"}))
    y += 0.12
    placed.append((note, y, {"size": SMALL_PT, "x": MARGIN_IN}))
    y += _lines(note) * SMALL_PT * 1.25 * pt + MARGIN_IN
    H = y
    fig.set_size_inches(W, H)

    for text, top, kw in placed:
        x = kw.pop("x")
        fig.text(x / W, 1 - top / H, text, va="top", ha=kw.pop("ha", "left"), linespacing=1.25, **kw)
    left, right = _x_limits(rows, metric)
    for panel, top, height, labels, diffs, heights in layout:
        ax = fig.add_axes((ax_x0 / W, 1 - (top + height) / H, (ax_x1 - ax_x0) / W, height / H))
        ys = [0.03 + sum(heights[:i]) + h / 2 for i, h in enumerate(heights)]
        ax.set_xlim(left, right)
        ax.set_ylim(height, 0)
        _draw_panel(ax, panel, ys, labels, diffs, metric, blended_transform_factory(ax.transAxes, ax.transData))
        ax.tick_params(axis="y", length=0, pad=GAP_IN * 72)
        ax.tick_params(axis="x", labelsize=SMALL_PT, length=3, pad=2)
        ax.grid(axis="x", color="0.88", lw=0.6)
        ax.set_axisbelow(True)
    return fig


def _draw_panel(ax, panel: _Panel, ys, labels, diffs, metric: str, right_of_axes) -> None:
    ax.set_yticks(ys, labels, fontsize=LABEL_PT, linespacing=1.2)
    for tick, r in zip(ax.get_yticklabels(), panel.rows):
        tick.set_color(FLAGGED if r.marked else "black")
    if panel.reference is not None and math.isfinite(panel.reference.mean(metric)):
        ax.axvline(100 * panel.reference.mean(metric), color="green", ls="--", lw=0.9, gid="best")
    middle = sum(ax.get_xlim()) / 2
    for r, yi, diff in zip(panel.rows, ys, diffs):
        s = r.score(metric)
        color = FLAGGED if r.marked else HONEST
        ax.text(1 + GAP_IN / 3, yi, diff, transform=right_of_axes, va="center", ha="left", fontsize=SMALL_PT,
                linespacing=1.2, gid="difference")
        mean = _pct(s.mean)
        if mean is None:
            ax.text(0.01, yi, "no score", transform=right_of_axes, va="center", fontsize=SMALL_PT, gid="na")
            continue
        if s.ci_low is not None and s.ci_high is not None:
            ax.plot([100 * s.ci_low, 100 * s.ci_high], [yi, yi], color=color, lw=1.3, solid_capstyle="butt",
                    gid="interval")
        ax.plot([mean], [yi], "o", ms=4, color=color, clip_on=False, gid="mean")
        if s.ci_low is None:
            right = mean < middle  # the text on the side with room
            ax.annotate("n/a", (mean, yi), xytext=(5 if right else -5, 0), textcoords="offset points", va="center",
                        ha="left" if right else "right", fontsize=SMALL_PT, color="0.3", gid="na")


def plot_forest(rows: Sequence[ResultRow], path, *, metric: str = "f1_weighted", title: str | None = None) -> Path:
    """The comparison figure as a PNG (see the module's docstring): ``metric`` (the sort metric) of each row, a dot
    and its 95% interval, one panel per protocol, the best row's line and each row's difference from it.
    :data:`FOREST_WIDTH_IN` wide; the height grows with the rows."""
    return save_png(draw_forest(rows, metric=metric, title=title), path)
