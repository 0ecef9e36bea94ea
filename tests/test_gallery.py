"""The error gallery (featx.report.gallery, `featx gallery`): the CSV of a row lists exactly the misclassified cells
of its predictions file, wrong cells by confidence, the right ones the least confident; the sheet's size follows
its cells and no text overlaps another; bad input is one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_rows import csv_rows


@pytest.fixture
def results(cnn_compare) -> Path:
    return cnn_compare


@pytest.mark.slow
@pytest.mark.parametrize("wrong, right", [(3, 2), (24, 8)])
def test_the_csv_lists_exactly_the_misclassified_cells_of_the_predictions_file(results, tmp_path, wrong, right):
    from featx.report.gallery import gallery

    done = gallery(results, tmp_path / "g", wrong=wrong, right=right)
    assert sorted(g.sheet.name for g in done.rows) == sorted(p.with_suffix(".png").name
                                                             for p in (results / "predictions").glob("*.csv"))
    assert done.skipped == []
    for g in done.rows:
        predictions = csv_rows(results / "predictions" / g.csv.name)
        misclassified = {p["path"] for p in predictions if p["y_true"] != p["y_pred"]}
        correct = [p for p in predictions if p["y_true"] == p["y_pred"]]
        listed = csv_rows(g.csv)
        wrong_cells = [c for c in listed if c["cell"] == "wrong"]
        assert 0 < len(misclassified) < len(predictions)  # random features: the test has cells of both kinds
        assert {c["path"] for c in wrong_cells} == misclassified and len(wrong_cells) == len(misclassified)
        assert g.n_wrong == len(misclassified) and g.n_test == len(predictions)
        assert [c["drawn"] for c in wrong_cells] == ["yes"] * min(wrong, len(misclassified)) + \
            ["no"] * max(0, len(misclassified) - wrong)
        right_cells = [c for c in listed if c["cell"] == "right"]
        assert len(right_cells) == min(right, len(correct)) and {c["drawn"] for c in right_cells} == {"yes"}
        assert all(c["y_true"] == c["y_pred"] for c in right_cells)
        assert (g.drawn_wrong, g.drawn_right) == (min(wrong, len(misclassified)), len(right_cells))


def _confidence(p: dict, kind: str) -> float:
    """The confidence the gallery should give a predictions line (binary, positive class 'all')."""
    score = float(p["score"])
    if kind == "probability":
        return score if p["y_pred"] == "all" else 1 - score
    return abs(score)  # a binary decision value: the margin toward the predicted class


@pytest.mark.slow
def test_wrong_cells_by_confidence_and_right_cells_the_least_confident(results, tmp_path):
    from featx.report.gallery import gallery

    done = gallery(results, tmp_path / "g", wrong=4, right=3)
    kinds = {g.name.rsplit(" + ", 1)[1]: g for g in done.rows}
    assert kinds["logistic"].score_kind == "probability" and kinds["svm"].score_kind == "decision"
    assert "decision value" in kinds["svm"].confidence and "not a probability" in kinds["svm"].confidence
    for head, g in kinds.items():
        predictions = csv_rows(results / "predictions" / g.csv.name)
        conf = {p["path"]: _confidence(p, g.score_kind) for p in predictions}
        listed = csv_rows(g.csv)
        for c in listed:
            assert float(c["confidence"]) == pytest.approx(conf[c["path"]], abs=1e-6), head
            assert c["confidence_means"] == g.confidence
        wrong = [float(c["confidence"]) for c in listed if c["cell"] == "wrong"]
        assert wrong == sorted(wrong, reverse=True) and [int(c["rank"]) for c in listed if c["cell"] == "wrong"] \
            == list(range(1, len(wrong) + 1))
        if g.score_kind == "probability":
            assert min(wrong) >= 0.5 - 1e-9  # a predicted class has at least half the probability
        right = [c for c in listed if c["cell"] == "right"]
        others = [conf[p["path"]] for p in predictions
                  if p["y_true"] == p["y_pred"] and p["path"] not in {c["path"] for c in right}]
        assert max(float(c["confidence"]) for c in right) <= min(others) + 1e-9


@pytest.mark.slow
def test_the_sheet_is_a_png_of_fixed_width_a_line_of_cells_taller_per_eight_cells(results, tmp_path):
    from featx.figures import DPI
    from featx.report.gallery import gallery
    from featx.report.gallery_sheet import CELL_W, COLUMNS, GAP, IMAGE_H, MARGIN, TEXT_H

    sizes = {}
    for right in (8, 9):
        done = gallery(results, tmp_path / str(right), wrong=2, right=right)
        g = next(g for g in done.rows if g.n_test - g.n_wrong >= 9)
        assert g.sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        sizes[right] = Image.open(g.sheet).size
    assert sizes[8][0] == sizes[9][0] == round((2 * MARGIN + COLUMNS * CELL_W) * DPI)
    assert sizes[9][1] - sizes[8][1] == pytest.approx((IMAGE_H + TEXT_H + GAP) * DPI, abs=1.5)  # a second line
    assert sizes[8][1] > 2 * (IMAGE_H + TEXT_H) * DPI  # a line of wrong cells and one of right cells


def _cells(n: int, wrong: bool, long: bool = False):
    from featx.report.gallery_cells import Cell

    name = "a-very-long-folder-name/" * 4 + "UID_H123_456_7_hem-with-a-long-tail.bmp" if long else "UID_2_5_1_all.bmp"
    classes = ("a-long-class-name-all", "another-long-class-hem") if long else ("all", "hem")
    return [Cell(path=f"{k}/{name}", subject=f"H{k % 5}{'-subject-id-long' if long else ''}", fold=k % 3 + 1,
                 y_true=classes[0], y_pred=classes[wrong], score=-12.345678 + k, confidence=0.5 + k / 100,
                 wrong=wrong, rank=k + 1, drawn=True) for k in range(n)]


def _texts(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.texts if t.get_visible() and t.get_text().strip()]
    return texts, np.array([t.get_window_extent(renderer).extents for t in texts]), \
        np.array([ax.get_window_extent(renderer).extents for ax in fig.axes]).reshape(-1, 4)


def _hits(a: np.ndarray, b: np.ndarray, same: bool) -> list[tuple[int, int]]:
    ox = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    oy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    hit = (ox > 0.5) & (oy > 0.5)
    return list(zip(*np.nonzero(np.triu(hit, 1) if same else hit)))


@pytest.mark.parametrize("n_wrong, n_right, long", [(0, 3, False), (5, 0, True),
                                                    pytest.param(24, 8, False, marks=pytest.mark.slow),
                                                    pytest.param(24, 8, True, marks=pytest.mark.slow)])
def test_no_text_overlaps_another_an_image_or_leaves_the_sheet(n_wrong, n_right, long):
    from featx.report.gallery_sheet import draw_sheet

    image = np.zeros((40, 40, 3), dtype=np.uint8)
    title = ("cnn[fine-tuned per fold]/fc + logistic: error gallery\nhybrid subject-level 3-fold (network fine-tuned "
             "per fold on training subjects); 44 of 180 test cells misclassified" * (2 if long else 1))
    fig = draw_sheet(_cells(n_wrong, True, long), _cells(n_right, False, long), lambda c: image, title=title,
                     caption="score = probability of class all; confidence = probability of the predicted class " * 3,
                     n_wrong=n_wrong + 7, n_right=n_right + 100)
    texts, boxes, axes = _texts(fig)
    assert [(texts[i].get_text(), texts[j].get_text()) for i, j in _hits(boxes, boxes, True)] == []
    assert [texts[i].get_text() for i, _ in _hits(boxes, axes, False)] == []
    width, height = fig.bbox.width, fig.bbox.height
    assert [t.get_text() for t, b in zip(texts, boxes) if b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height] == []
    assert len(texts) >= 5 * (n_wrong + n_right) + 3  # every cell's five lines, the title, headers, caption
    subjects = [t.get_text() for t in texts if t.get_text().startswith("subject ")]
    assert len(subjects) == n_wrong + n_right and all(" · fold " in s for s in subjects)  # kept by a long subject
    assert len([t for t in texts if t.get_text().startswith("pred ")]) == n_wrong + n_right
    if long:  # a long file name keeps its end (the file), cut from the left
        assert any(t.get_text().startswith("…") and t.get_text().endswith(".bmp") for t in texts)


def test_the_overlap_check_can_fail():
    from featx.report.gallery_sheet import draw_sheet

    fig = draw_sheet(_cells(2, True), [], lambda c: np.zeros((8, 8, 3), dtype=np.uint8), title="t", caption="c",
                     n_wrong=2, n_right=0)
    fig.text(0.5, 0.5, "one label")
    fig.text(0.5, 0.5, "another")
    texts, boxes, _ = _texts(fig)
    assert ("one label", "another") in [(texts[i].get_text(), texts[j].get_text()) for i, j in _hits(boxes, boxes,
                                                                                                       True)]
