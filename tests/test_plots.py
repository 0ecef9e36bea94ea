"""Figures a reviewer would put in a paper: the comparison chart, training curves, confusion and ROC plots."""
from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from report_rows import make_row, many_rows

from featx.report import plots
from featx.report.plots import plot_bars, plot_confusion, plot_history, plot_roc
from featx.results import Score

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


@pytest.mark.slow
def test_comparison_chart_has_a_fixed_width_and_grows_with_the_rows(tmp_path):
    small = Image.open(plot_bars(many_rows(2), tmp_path / "two.png")).size
    large = Image.open(plot_bars(many_rows(40), tmp_path / "forty.png")).size
    huge = Image.open(plot_bars(many_rows(60), tmp_path / "sixty.png")).size
    assert small[0] == large[0] == huge[0] == plots.CHART_WIDTH_IN * plots.DPI <= 1200  # no 3000 px wide images
    assert small[1] < 700 and small[1] < large[1] < huge[1]
    assert (huge[1] - large[1]) / 20 > 50  # every row gets room (pixels per added row)


def test_comparison_chart_is_sorted_zoomed_capped_and_says_what_the_bars_are(drawn, tmp_path):
    rows = many_rows(12)
    rows[0] = make_row("best/fc7 + svm", 0.99, 0.03, ci=False)  # + sd passes 100
    plot_bars(rows, tmp_path / "c.png")
    fig = drawn[-1]
    ax = fig.axes[0]
    labels = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]
    ordered = sorted(rows, key=lambda r: -r.mean("f1_weighted"))
    assert labels == [r.name for r in ordered]  # best on top
    left, right = ax.get_xlim()
    lowest = min(100 * (r.score("f1_weighted").ci_low or r.mean("f1_weighted") - r.score("f1_weighted").std)
                 for r in rows)
    assert 0 < left < lowest and right <= 100  # zoomed, capped
    err_x = [x for coll in ax.collections for seg in coll.get_segments() for x, _ in seg]
    assert err_x and max(err_x) <= 100 and min(err_x) >= left
    xlabel = ax.get_xlabel()
    assert "95% CI (subject jackknife)" in xlabel and "sd over folds" in xlabel  # both kinds here, both named
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"Accuracy", "F1 (ALL)", "Weighted F1"} <= set(legend) and "f1" not in legend
    assert any("IMAGE-LEVEL / OPTIMISTIC" in t for t in legend)
    assert "sorted by Weighted F1" in fig._suptitle.get_text()


def test_comparison_chart_hatches_and_labels_image_level_and_optimistic_rows(drawn, tmp_path):
    rows = [make_row("a/fc7 + svm", 0.9), make_row("b/fc7 + svm", 0.95, image_level=True, protocol="image"),
            make_row("c/fc7 + svm", 0.92, optimistic=True)]
    plot_bars(rows, tmp_path / "c.png", metrics=("accuracy", "f1_weighted"))
    ax = drawn[-1].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("b/") and "IMAGE-LEVEL" in labels[0]
    assert labels[1].startswith("c/") and "OPTIMISTIC" in labels[1] and labels[2].startswith("a/")
    bars = [p for p in ax.patches if p.get_width() > 0]
    hatched = {round(p.get_y() + p.get_height() / 2) for p in bars if p.get_hatch()}
    assert len(bars) == 6 and hatched == {0, 1}  # both bars of rows b and c, none of a
    assert "sd over folds" not in ax.get_xlabel() and "95% CI (subject jackknife)" in ax.get_xlabel()


def test_comparison_chart_hatches_rows_from_weights_of_unknown_provenance(drawn, tmp_path):
    rows = [make_row("a/fc7 + svm", 0.9), make_row("plain/fc7 + svm", 0.95, weights_provenance="unknown"),
            make_row("said/fc7 + svm", 0.92, weights_provenance="stated-unseen")]
    plot_bars(rows, tmp_path / "c.png", metrics=("accuracy",))
    fig = drawn[-1]
    ax = fig.axes[0]
    labels = [" ".join(t.get_text().split()) for t in ax.get_yticklabels()]
    assert labels[0].startswith("plain/") and labels[0].count("weights of unknown provenance") == 1
    assert labels[1].startswith("said/") and "weights stated unseen by the user" in labels[1]
    hatched = [round(p.get_y() + p.get_height() / 2) for p in ax.patches if p.get_width() > 0 and p.get_hatch()]
    assert hatched == [0]  # the statement of the user is recorded, not hatched
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "weights of unknown provenance: not an estimate for new patients" in legend


def test_comparison_chart_names_sd_bars_and_leaves_undefined_scores_out(drawn, tmp_path):
    rows = [make_row("a/fc7 + svm", 0.9, ci=False), make_row("b/fc7 + svm", 0.8, ci=False)]
    rows[1] = dataclasses.replace(rows[1], scores={**rows[1].scores, "roc_auc": Score(None)})  # one class in a fold
    plot_bars(rows, tmp_path / "c.png", metrics=("accuracy", "roc_auc"), sort_by="accuracy")
    ax = drawn[-1].axes[0]
    assert "± sample sd over folds" in ax.get_xlabel() and "CI" not in ax.get_xlabel()
    assert len([p for p in ax.patches if p.get_width() > 0]) == 3  # the undefined AUC is not a bar at 0
    assert "n/a" in [t.get_text().strip() for t in ax.texts]
    assert ax.get_xlim()[0] > 0


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


def test_roc_names_the_positive_class_and_titles_fit(drawn, tmp_path):
    plot_roc([0, 0.2, 1], [0, 0.7, 1], 0.8, tmp_path / "roc.png", title=LONG, folds=5, positive="all")
    fig = drawn[-1]
    ax = fig.axes[0]
    assert "positive class: all" in ax.get_title() and "all" in ax.get_ylabel()
    assert _inside(fig, ax.title)
    plot_confusion([[5, 1], [2, 7]], ["all", "hem"], tmp_path / "cm.png", title=LONG)
    fig = drawn[-1]
    assert _inside(fig, fig.axes[0].title) and fig.axes[0].get_title().count("\n") >= 2
    plot_bars(many_rows(3), tmp_path / "bars.png", title="a comparison with a title far too long to fit " * 4)
    assert _inside(drawn[-1], drawn[-1]._suptitle)


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
