"""Figures a reviewer would put in a paper: training curves, confusion and ROC plots (the comparison figure:
tests/test_forest.py)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from report_rows import many_rows

from featx.report import plots
from featx.report.forest import plot_forest
from featx.report.plots import plot_confusion, plot_history, plot_roc

LONG = ("cnn[runs/cnn-very-long-run-name/best.pt]/logits fine-tuned (early-stopped on val)\n"
        "subject-level holdout (one fold of the 5-fold protocol), validated on 20% of the subjects of C-NMC")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save (kept after they are written and closed)."""
    figures = []
    real_save = Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return real_save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _inside(fig, text) -> bool:
    """Whether ``text``'s drawn box lies inside the figure (nothing cut off), drawn again on an Agg canvas as
    ``savefig`` drew it (a closed figure has lost its own)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = text.get_window_extent(canvas.get_renderer())
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def test_training_curves_have_integer_epochs_and_mark_the_best(drawn, tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e + 0.1 * e, "train_acc": 1 - 0.5 / e,
                "val_acc": 1 - 0.6 / e} for e in range(1, 4)]
    plot_history(history, tmp_path / "h.png", title=LONG, best_epoch=2, monitor="loss", scored_epoch=3)
    fig = drawn[-1]
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == [1, 2, 3] and all(float(t).is_integer() for t in ticks)
        best = [ln for ln in ax.lines if ln.get_label().startswith("best.pt")]
        assert len(best) == 1 and list(best[0].get_xdata()) == [2, 2] and "best val loss" in best[0].get_label()
        assert [ln.get_label() for ln in ax.lines if ln.get_label().startswith("scored")] == ["scored: epoch 3"]
    assert _inside(fig, fig._suptitle) and "\n" in fig._suptitle.get_text()


def test_training_curves_give_accuracy_in_percent_and_keep_the_legend_off_the_data(drawn, tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.5 + 0.1 * e,
                "val_acc": 0.45 + 0.1 * e} for e in range(1, 6)]
    plot_history(history, tmp_path / "h.png", best_epoch=4, monitor="loss")
    fig = drawn[-1]
    acc = fig.axes[0]
    assert acc.get_ylabel() == "accuracy (%)"
    curves = {ln.get_label(): list(ln.get_ydata()) for ln in acc.lines if ln.get_label() in ("train", "val")}
    assert curves["train"] == pytest.approx([60, 70, 80, 90, 100])
    assert curves["val"] == pytest.approx([55, 65, 75, 85, 95])
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["train", "val", "best.pt: epoch 4, best val loss"]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = legend.get_window_extent(canvas.get_renderer())
    for ax in fig.axes:  # below both panels, over no curve
        assert not box.overlaps(ax.get_window_extent()) and box.y1 <= ax.get_window_extent().y0
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_roc_names_the_positive_class_and_titles_fit(drawn, tmp_path):
    plot_roc([0, 0.2, 1], [0, 0.7, 1], 0.8, tmp_path / "roc.png", title=LONG, folds=5, positive="all")
    fig = drawn[-1]
    ax = fig.axes[0]
    assert "positive class: all" in ax.get_title() and "all" in ax.get_ylabel()
    assert _inside(fig, ax.title)
    plot_confusion([[5, 1], [2, 7]], ["all", "hem"], tmp_path / "cm.png", title=LONG)
    fig = drawn[-1]
    assert _inside(fig, fig.axes[0].title) and fig.axes[0].get_title().count("\n") >= 2
    plot_forest(many_rows(3), tmp_path / "forest.png", title="a comparison with a title far too long to fit " * 4)
    assert all(_inside(drawn[-1], t) for t in drawn[-1].texts) and "\n" in drawn[-1].texts[0].get_text()


def test_unwrapped_long_titles_would_be_cut(tmp_path):
    """The check above can fail: the same long title, unwrapped, runs off a figure of the ROC plot's width."""
    fig = plt.figure(figsize=(4.4, 4.4), dpi=plots.DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(LONG.replace("\n", " "), fontsize=8)
    fig.savefig(tmp_path / "cut.png")
    assert not _inside(fig, ax.title)
    plt.close(fig)


def test_metric_labels_are_human():
    assert plots.metric_label("f1_weighted") == "Weighted F1" and plots.metric_label("f1", "all") == "F1 (ALL)"
    assert plots.metric_label("accuracy", "all") == "Accuracy" and plots.metric_label("roc_auc") == "ROC-AUC"
