"""The report's pictures of cells and features: a map of the feature space for every store the rows compare, each
row's error gallery, and the class-activation maps of each fine-tuning run folder. Text only; the figures go
through the ``figure`` callable of :mod:`featx.report.sections`."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from featx.errors import FeatxError, arg
from featx.figures import palette_png
from featx.report.feature_map import MapStep, check_method
from featx.report.feature_map_plot import caption, plot_feature_map
from featx.report.gallery import plot_gallery
from featx.report.methods import row_stores
from featx.report.sections import Figure
from featx.results import ResultRow

#: report map settings: ``"none"`` draws no feature map
MAP_CHOICES = ("auto", "tsne", "umap", "pca", "none")
TUNED_NOTE = ("; the features of a fine-tuned network, which trained on most of these cells: they may cluster more "
              "tightly than cells it never saw")


def mapped_stores(rows: Sequence[ResultRow]) -> list[tuple[tuple[str, ...], str, bool]]:
    """The (stores, tap, tuned) each row's features came from, once each, in row order. Hybrid rows are left
    out: each outer fold has its own fine-tuned network, so their stores are not one feature space."""
    seen: dict[tuple[tuple[str, ...], str], bool] = {}
    for r in rows:
        stores = tuple(row_stores(r))
        if not stores or r.protocol == "hybrid" or not r.tap:
            continue
        seen[(stores, r.tap)] = seen.get((stores, r.tap), False) or bool(r.tuned)
    return [(stores, tap, tuned) for (stores, tap), tuned in seen.items()]


def check_map_choice(maps: str) -> str:
    """``maps`` if it is one of :data:`MAP_CHOICES` (a one-line error otherwise)."""
    if maps not in MAP_CHOICES:
        raise FeatxError(f"{arg('maps', maps)}: choose one of {', '.join(MAP_CHOICES)}")
    return maps


def maps_html(rows: Sequence[ResultRow], figure: Figure, method: str = "auto", seed: int = 0,
              on_step: Callable[[MapStep], None] | None = None) -> str:
    """One feature map per store (and tap) the rows compare (:func:`mapped_stores`): its labelled cells in 2-D by
    class and by subject, each panel with how strongly the cells cluster beside the chance level. A store that
    cannot be read (moved, deleted) is named with the reason instead."""
    if method == "none":
        return "<p>(no feature maps: the report was asked for none)</p>"
    method = check_method(method)
    targets = mapped_stores(rows)
    if not targets:
        return "<p>(no row names a feature store, so there is no feature space to map)</p>"
    parts = ['<p class="meta">Cells that cluster by subject inside their class are what an image-level split lets '
             "a classifier recognise: the subject (its stain, its morphology), not the cell. Both numbers are "
             "measured in the features' PCA space, each beside its value with shuffled labels.</p>"]
    for stores, tap, tuned in targets:
        made = []

        def plot(path: Path, stores=stores, tap=tap, made=made) -> Path:
            made.append(plot_feature_map(list(stores), path, tap=tap.split("+"), method=method, seed=seed,
                                         on_step=on_step))
            return path

        def text(made=made, tuned=tuned) -> str:
            return caption(made[0]) + (TUNED_NOTE if tuned else "")

        try:
            parts.append(figure(plot, text))
        except FeatxError as exc:
            parts.append(f"<p>(no map of {escape(' + '.join(stores))} ({escape(tap)}): {escape(str(exc))})</p>")
    return "\n".join(parts)


#: cells drawn per row's gallery in a report (wrong, right): the sheets are most of a report's bytes;
#: featx gallery draws 24 and 8 by default, and its CSV lists every misclassified cell
REPORT_GALLERY = (12, 6)


def gallery_html(row: ResultRow, figure: Figure, source: Path | None = None) -> str:
    """``row``'s error gallery (:func:`featx.report.gallery.plot_gallery`: its most confidently misclassified
    test cells and its least confident right ones, grouped by subject), or why it has none: no out-of-fold
    predictions, or images that cannot be found where the row's data root says."""
    if not row.predictions:
        return ""
    made = []

    def plot(path: Path) -> Path:
        made.append(plot_gallery(row, path, source=source, wrong=REPORT_GALLERY[0], right=REPORT_GALLERY[1]))
        return palette_png(path)  # a third of the bytes: the sheets are most of a report

    def text() -> str:
        g = made[0]
        return (f"Error gallery of {row.name}: {g.drawn_wrong} of its {g.n_wrong} misclassified test cells (most "
                f"confident first) and {g.drawn_right} of the least confident right ones, grouped by subject; "
                f"{g.confidence} (featx gallery draws more, and lists every misclassified cell)")

    try:
        return figure(plot, text)
    except FeatxError as exc:
        return f"<p>(no error gallery: {escape(str(exc))})</p>"


#: cells mapped per run in a report (occlusion runs the network about 200 times a cell)
REPORT_CAM_IMAGES = 4


def explanations_html(run: Path, figure: Figure, images: int = REPORT_CAM_IMAGES,
                      on_step: Callable[[MapStep], None] | None = None) -> str:
    """Grad-CAM and occlusion maps of ``images`` cells fine-tuning run ``run``'s network never saw
    (:func:`featx.explain.plot_explanations`, on the data root the run recorded), or why there are none;
    ``on_step`` hears that the maps start."""
    if on_step is not None:
        on_step(MapStep("explain", f"class-activation maps of {run}"))
    # deferred: featx.explain loads torch and Captum; a report without run folders never pays for them
    from featx.explain import plot_explanations

    try:
        return figure(lambda path: plot_explanations(run, None, path, images=images),
                      f"Class-activation maps of the network fine-tuned in {run}: Grad-CAM at its last convolutional "
                      f"stage and occlusion (black patches), of the predicted class, on {images} cells it never saw, "
                      "balanced across classes (featx explain maps more)")
    except FeatxError as exc:
        return f"<p>(no class-activation maps of {escape(str(run))}: {escape(str(exc))})</p>"
