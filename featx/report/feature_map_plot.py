"""The feature map's figure: the 2-D embedding of :mod:`featx.report.feature_map` coloured by class and, beside it,
by subject, each panel titled with its clustering number and chance level.

Many subjects (C-NMC has about a hundred) cannot each get a colour one tells apart: a subject is drawn in one of
20 colours with one of 8 markers (160 combinations), and its id is written at the centre of its cells.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from featx.data import natural_key
from featx.errors import FeatxError, arg
from featx.figures import DPI, pyplot, wrap_title
from featx.files import write_or_keep
from featx.report.feature_map import METHOD_NAMES, Clustering, FeatureMap, MapStep, feature_map

FORMATS = (".png", ".svg", ".pdf")
MARKERS = "os^Dv<>P"
MAX_LABELLED_SUBJECTS = 60   # subject ids written at their centres up to this many subjects
MAX_LEGEND_SUBJECTS = 12     # a legend of subjects up to this many


def plot_feature_map(store: str | Path | Sequence[str | Path], path: str | Path, *,
                     tap: str | Sequence[str] | None = None, method: str = "auto",
                     seed: int = 0, overwrite: bool = False, permutations: int = 200,
                     on_step: Callable[[MapStep], None] | None = None) -> FeatureMap:
    """Map the labelled rows of ``store`` at ``tap`` (:func:`featx.report.feature_map.feature_map`) and draw it
    to ``path`` (PNG, SVG or PDF, written whole or not at all); an existing ``path`` is replaced only with
    ``overwrite``. Returns the map, its ``path`` set."""
    path = check_map_out(path, store, overwrite=overwrite)
    fmap = feature_map(store, tap=tap, method=method, seed=seed, permutations=permutations, on_step=on_step)
    if on_step is not None:
        on_step(MapStep("draw", f"drawing {path}"))
    return replace(fmap, path=draw_feature_map(fmap, path))


def check_map_out(path: str | Path, store: str | Path | Sequence[str | Path], *, overwrite: bool = False) -> Path:
    """Refuse, before any work, an ``out`` that is a store read, a folder, under a file, not writable, of a format
    other than PNG/SVG/PDF, or that exists (unless ``overwrite``)."""
    path = Path(path)
    stores = [Path(store)] if isinstance(store, (str, Path)) else [Path(s) for s in store]
    if path.exists() and any(s.exists() and path.resolve() == s.resolve() for s in stores):
        raise FeatxError(f"{arg('out', path)} is a store the map reads; draw the map into another file")
    if path.is_dir():
        raise FeatxError(f"{arg('out', path)} is a folder; give the file to write, e.g. "
                         f"{arg('out', path / 'map.png')}")
    if path.suffix.lower() not in FORMATS:
        raise FeatxError(f"{arg('out', path)}: give a .png (or .svg, .pdf) file to draw the map into, e.g. "
                         f"{arg('out', path.with_suffix('.png'))}")
    above = next((p for p in path.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise FeatxError(f"{arg('out', path)}: {above} is a file, not a folder; choose another {arg('out')}")
    if path.exists() and not overwrite:
        raise FeatxError(f"{path} exists; choose another {arg('out')}, or add {arg('overwrite', True)} to replace it")
    if above is not None and not os.access(above, os.W_OK | os.X_OK):
        raise FeatxError(_cannot_write(path, above))
    return path


def caption(fmap: FeatureMap) -> str:
    """One line for a report: ``t-SNE of cnn.h5 (fc), 30 cells of 8 subjects: subject clustering 0.41 (chance
    0.21 ± 0.04), class clustering 0.94 (chance 0.48 ± 0.06), in the features' PCA space``."""
    name = " + ".join(Path(s).name for s in fmap.store.split(" + ")) if fmap.store else "features"
    subjects = f" of {fmap.n_subjects} subjects" if fmap.n_subjects else ""
    numbers = [f"class clustering {fmap.class_clustering.text()}"]
    if fmap.subject_clustering is not None:
        numbers.insert(0, f"subject clustering {fmap.subject_clustering.text()}")
    note = f"; {fmap.note}" if fmap.note else ""
    return (f"{METHOD_NAMES[fmap.method]} of {name} ({fmap.tap}), {fmap.n_cells} cells{subjects}: "
            f"{', '.join(numbers)}, in the features' {fmap.pca_dims}-dimensional PCA space{note}")


def panel_title(what: str, clustering: Clustering) -> str:
    """``by subject: subject clustering 0.41 (chance 0.20 ± 0.04)`` and, on a second line, what it counts."""
    if clustering.label == "subject":
        said = f"of a cell's {clustering.k} nearest neighbours of its class, the share from its own subject"
    else:
        said = f"of a cell's {clustering.k} nearest neighbours, the share of its class"
    return f"by {what}: {what} clustering {clustering.text()}\n{said}"


def draw_feature_map(fmap: FeatureMap, path: str | Path) -> Path:
    """Draw ``fmap`` (:func:`map_figure`) to ``path``, written whole or not at all."""
    fig = map_figure(fmap)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_or_keep(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".").lower()))
    except OSError as exc:  # a full disk is write_or_keep's FeatxError; this is a folder featx may not write
        raise FeatxError(_cannot_write(path, Path(exc.filename or path.parent), exc)) from None
    finally:
        pyplot().close(fig)


def map_figure(fmap: FeatureMap):
    """The matplotlib figure of ``fmap``: by class, and by subject beside it when the rows have subjects; each
    panel titled with its clustering number and chance level."""
    plt = pyplot()
    panels = 2 if fmap.subject_clustering is not None else 1
    fig = plt.figure(figsize=(6.0 * panels, 6.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _by_class(fig, axes[0], fmap)
    if fmap.subject_clustering is not None:
        _by_subject(fig, axes[1], fmap)
    name = " + ".join(Path(s).name for s in fmap.store.split(" + ")) if fmap.store else "features"
    subjects = f", {fmap.n_subjects} subjects" if fmap.n_subjects else ""
    head = (f"{name}{f' ({fmap.tap})' if fmap.tap else ''}: {METHOD_NAMES[fmap.method]} of {fmap.n_cells} cells"
            f"{subjects}, seed {fmap.seed}")
    foot = (f"numbers measured in the {fmap.pca_dims}-dimensional PCA space of the standardised features, not on "
            "this map (which distorts distances); chance: labels shuffled "
            f"{fmap.class_clustering.permutations} times (mean ± sd)")
    if fmap.note:
        foot += f"\n{fmap.note}"
    width = fig.get_figwidth()
    fig.suptitle(wrap_title(head, width * 0.95, 10), fontsize=10)
    fig.supxlabel(wrap_title(foot, width * 0.95, 7), fontsize=7, color="dimgrey")
    return fig


def _cannot_write(path: Path, where: Path, exc: OSError | None = None) -> str:
    if exc is not None and exc.strerror:
        why = exc.strerror.lower()
    elif os.statvfs(where).f_flag & os.ST_RDONLY:
        why = "read-only file system"
    else:
        why = "permission denied"
    return f"cannot access {path} ({why}); choose another {arg('out')} or fix its permissions"


def _panel(fig, ax, title: str) -> None:
    ax.set_title(wrap_title(title, fig.get_figwidth() / len(fig.axes) * 0.95, 8), fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def _by_class(fig, ax, fmap: FeatureMap) -> None:
    colours = pyplot().get_cmap("tab10")
    for i, name in enumerate(fmap.classes):
        rows = fmap.y == i
        if rows.any():
            ax.scatter(*fmap.embedding[rows].T, s=16, color=colours(i % 10), alpha=0.8, linewidths=0,
                       label=f"{name} ({int(rows.sum())})")
    ax.legend(fontsize=7, loc="best", markerscale=1.5)
    _panel(fig, ax, panel_title("class", fmap.class_clustering))


def _by_subject(fig, ax, fmap: FeatureMap) -> None:
    colours = pyplot().get_cmap("tab20")
    ids = sorted(set(fmap.subjects), key=natural_key)
    for i, subject in enumerate(ids):
        rows = fmap.subjects == subject
        points = fmap.embedding[rows]
        ax.scatter(*points.T, s=16, color=colours(i % 20), marker=MARKERS[(i // 20) % len(MARKERS)], alpha=0.8,
                   linewidths=0, label=subject)
        if len(ids) <= MAX_LABELLED_SUBJECTS:
            centre = np.median(points, axis=0)
            ax.annotate(subject, centre, fontsize=6, ha="center", va="center", color="black",
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.6))
    if len(ids) <= MAX_LEGEND_SUBJECTS:
        ax.legend(fontsize=6, loc="best", ncols=2)
    _panel(fig, ax, panel_title("subject", fmap.subject_clustering))
