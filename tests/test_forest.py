"""The comparison figure is a forest plot a reviewer can read at any number of rows: one metric, a dot and its
95% interval per row, one panel per protocol (IMAGE-LEVEL and OPTIMISTIC rows apart), the best row's line and
each row's difference from it; no text overlaps another and nothing leaves the figure (measured)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from report_rows import make_row, many_rows

from featx import figures, report
from featx.report import forest
from featx.report.forest import draw_forest, plot_forest

LONG = "vgg16[runs/vgg16-a-very-long-fine-tuning-run-name/checkpoints/best.pt]/features.30 + logistic[C=0.1]"


def _compared(rows: list, metric: str = "f1_weighted") -> list:
    """``rows`` with hand-made ``comparison`` records (as compare_rows writes them) against the best row of the
    subject protocol among rows that estimate new patients: Δ = the difference of means, interval Δ ± 2 points."""
    subject = [r for r in rows if r.protocol == "subject"]
    best = max((r for r in subject if not r.marked), key=lambda r: r.mean(metric))
    out = []
    for r in rows:
        if r.protocol != "subject":
            out.append(r)
            continue
        d = r.mean(metric) - best.mean(metric)
        close = r is not best and d - 0.02 <= 0 <= d + 0.02
        out.append(dataclasses.replace(r, comparison={
            "metric": metric, "reference": best.name, "chosen_by": "best", "is_reference": r is best,
            "delta": d, "ci_low": None if r is best else d - 0.02, "ci_high": None if r is best else d + 0.02,
            "p_value": 0.5, "close": close if r is not best else None, "mark": "\u2248 best" if close else None}))
    return out


def _mixed(n: int) -> list:
    """``n`` rows: subject-level ones (every 3rd without an interval), IMAGE-LEVEL ones (every 7th), one OPTIMISTIC,
    one held-out row whose interval is n/a with its reason, long names; subject rows carry comparisons."""
    rows = many_rows(n)
    rows[0] = make_row(LONG, 0.91, ci=False, protocol="heldout", label="held-out test (one split)", n_folds=1,
                       interval={"na": {"f1_weighted": "one split: nothing to jackknife"}})
    if n > 2:
        rows[1] = dataclasses.replace(rows[1], optimistic=True, name=LONG.replace("vgg16", "tuned", 1))
    rows = [dataclasses.replace(r, protocol_label="IMAGE-LEVEL 5-fold (cells of one subject on both sides)")
            if r.image_level else r for r in rows]
    return _compared(rows)


def _texts(fig):
    """Every text drawn on the figure, with its window extent: figure texts, the axes' texts, y tick labels
    and the x tick labels within the axis limits."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.texts]
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        texts += ax.texts + ax.get_yticklabels()
        texts += [t for t in ax.get_xticklabels() if lo - 1e-9 <= t.get_position()[0] <= hi + 1e-9]
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    return texts, np.array([t.get_window_extent(renderer).extents for t in texts])


def _overlaps(boxes: np.ndarray, texts) -> list[tuple[str, str]]:
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    ox = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
    oy = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
    hit = np.triu((ox > 0.5) & (oy > 0.5), 1)
    return [(texts[i].get_text(), texts[j].get_text()) for i, j in zip(*np.nonzero(hit))]


def _panel_of(fig, name: str):
    """The axes and y of the row named ``name`` (its label unwrapped)."""
    want = "".join(name.split())
    for ax in fig.axes:
        for tick, y in zip(ax.get_yticklabels(), ax.get_yticks()):
            label = "".join(tick.get_text().split())
            if label == want or (label.endswith("…") and want.startswith(label[:-1])):
                return ax, y
    raise AssertionError(f"no row labelled {name}")


@pytest.mark.parametrize("n", [2, 20, pytest.param(60, marks=pytest.mark.slow),
                               pytest.param(150, marks=pytest.mark.slow)])
def test_no_text_overlaps_another_or_leaves_the_figure(n):
    fig = draw_forest(_mixed(n), title="featx comparison")
    texts, boxes = _texts(fig)
    assert len(texts) >= 2 * n  # every row's label and difference were measured
    assert _overlaps(boxes, texts) == []
    width, height = fig.bbox.width, fig.bbox.height
    outside = [t.get_text() for t, b in zip(texts, boxes) if b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height]
    assert outside == []


def test_the_overlap_check_can_fail():
    """The measure above sees an overlap: two labels drawn at one place."""
    fig = draw_forest(_mixed(4))
    fig.text(0.5, 0.5, "one label")
    fig.text(0.5, 0.5, "another")
    texts, boxes = _texts(fig)
    assert ("one label", "another") in _overlaps(boxes, texts)


@pytest.mark.slow
def test_width_is_fixed_and_height_follows_the_rows(tmp_path):
    sizes = [draw_forest(_mixed(n)).get_size_inches() for n in (2, 20, 60)]
    assert [w for w, _ in sizes] == [forest.FOREST_WIDTH_IN] * 3
    heights = [h for _, h in sizes]
    assert heights[0] < 3.5 and heights[0] < heights[1] < heights[2]
    per_row = (heights[2] - heights[1]) / 40
    assert forest.ROW_IN * 0.9 <= per_row <= forest.ROW_IN * 1.6  # in proportion to the rows, no more
    png = Image.open(plot_forest(_mixed(2), tmp_path / "c.png")).size
    assert png[0] == forest.FOREST_WIDTH_IN * figures.DPI <= 1000


def test_image_level_and_optimistic_rows_are_in_their_own_marked_panels():
    rows = _mixed(20)
    fig = draw_forest(rows)
    titles = [t.get_text().replace("\n", "") for t in fig.texts if t.get_gid() == "panel-title"]
    assert len(titles) == len(fig.axes) == 4  # subject, held-out, IMAGE-LEVEL, OPTIMISTIC
    for r in rows:
        ax, _ = _panel_of(fig, r.name)
        title = titles[fig.axes.index(ax)]
        if r.image_level:
            assert title.startswith("IMAGE-LEVEL (optimistic): ") and "5-fold (cells of one subject" in title
        elif r.optimistic:
            assert title.startswith("OPTIMISTIC: ")
        else:
            assert "IMAGE-LEVEL" not in title and "OPTIMISTIC" not in title
    assert titles[:2] == [t for t in titles if "not an estimate for new patients" not in t]  # honest panels first


def test_rows_are_sorted_and_the_best_line_sits_at_the_best_row():
    rows = _mixed(20)
    fig = draw_forest(rows)
    ax, _ = _panel_of(fig, rows[2].name)  # a subject-level row
    means = [ln.get_xdata()[0] for ln in ax.lines if ln.get_gid() == "mean"]
    assert means == sorted(means, reverse=True) and len(means) == sum(
        r.protocol == "subject" and not r.flag for r in rows)
    best = next(r for r in rows if (r.comparison or {}).get("is_reference"))
    [line] = [ln for ln in ax.lines if ln.get_gid() == "best"]
    assert list(line.get_xdata()) == pytest.approx([100 * best.mean("f1_weighted")] * 2)
    diffs = {t.get_position()[1]: t.get_text() for t in ax.texts if t.get_gid() == "difference"}
    assert diffs[_panel_of(fig, best.name)[1]] == "best"
    other = next(r for r in rows if r.comparison and not r.flag and not r.comparison["is_reference"]
                 and r.comparison["mark"])
    c = other.comparison
    text = f"{100 * c['delta']:+.2f} [{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}] \u2248"
    assert diffs[_panel_of(fig, other.name)[1]] == text.replace("-", "\u2212")
    lo, hi = ax.get_xlim()
    assert lo > 50 and hi <= 100  # fitted to the intervals, not from 0


def test_an_interval_that_is_na_is_drawn_as_such():
    rows = _mixed(20)
    fig = draw_forest(rows)
    ax, y = _panel_of(fig, LONG)
    assert not [ln for ln in ax.lines if ln.get_gid() == "interval" and ln.get_ydata()[0] == y]
    assert [ln.get_xdata()[0] for ln in ax.lines if ln.get_gid() == "mean" and ln.get_ydata()[0] == y] == [91.0]
    assert [t.get_text() for t in ax.texts if t.get_gid() == "na" and t.xy[1] == y] == ["n/a"]
    note = next(t.get_text() for t in fig.texts if t.get_text().startswith("Dot:")).replace("\n", " ")
    assert "one split: nothing to jackknife" in note
    lowest = min(100 * (r.score("f1_weighted").ci_low or r.mean("f1_weighted")) for r in rows)
    lo, hi = ax.get_xlim()
    assert lowest - 2 < lo < lowest and hi <= 100  # no [0, 100] whiskers stretch the axis


def test_long_names_wrap_at_their_separators():
    fig = draw_forest(_mixed(4))
    ax, _ = _panel_of(fig, LONG)
    [label] = [t.get_text() for t in ax.get_yticklabels() if "vgg16" in t.get_text()]
    assert "\n" in label and "".join(label.split()) == "".join(LONG.split())
    assert all(line[-1] in "/+ ]" or nxt[0] == "[" for line, nxt in zip(label.split("\n"), label.split("\n")[1:]))


@pytest.mark.slow
def test_results_folders_draw_the_forest_plot_as_comparison_png(tmp_path):
    paths = report.write_results(_mixed(6), tmp_path, stem="results")
    size = Image.open(paths["plot"]).size
    assert paths["plot"] == tmp_path / "comparison.png" and size[0] == forest.FOREST_WIDTH_IN * figures.DPI
