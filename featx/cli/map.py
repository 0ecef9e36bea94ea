"""`featx map`: a 2-D map of a store's features coloured by class and by subject, with how strongly rows cluster
by each."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import app, console, on_interrupt, user_errors
from featx.cli.options import Quiet
from featx.cli.parsing import parse_taps
from featx.cli.progress import StepStatus
from featx.report.feature_map import METHOD_NAMES, FeatureMap
from featx.report.feature_map_plot import plot_feature_map


@app.command(name="map")
@user_errors
@on_interrupt("no map was written (it is drawn once every number is measured); run the same command again")
def map_(
    store: Annotated[Path, typer.Argument(help="An HDF5 feature store written by `featx extract`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The figure to write: .png (or .svg, .pdf).")],
    tap: Annotated[str | None, typer.Option("--tap", "--taps", help="The tap to map (default: the store's default "
                                                                    "tap); fc7+pool5 concatenates taps.")
                   ] = None,
    method: Annotated[str, typer.Option(help="auto (UMAP when umap-learn is installed, else t-SNE), tsne, umap or "
                                             "pca.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed draws the same map.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace --out when it exists.")] = False,
    quiet: Quiet = False,
) -> None:
    """Draw the labelled rows of STORE in 2-D, coloured by class and, beside it, by subject, each panel titled
    with how strongly rows cluster by that label (measured in the features, not on the map) beside its chance
    level: the picture of why image-level splits score higher than subject-level ones."""
    with StepStatus(quiet) as steps:
        fmap = plot_feature_map(store, out, tap=parse_taps(tap), method=method, seed=seed, overwrite=force,
                                on_step=steps)
    for line in summary_lines(fmap):
        console.print(line, highlight=False, soft_wrap=True)


def summary_lines(fmap: FeatureMap) -> list[str]:
    """What ``featx map`` prints: the two numbers, then the file written (and the note on missing subjects)."""
    lines = []
    if fmap.subject_clustering is not None:
        s = fmap.subject_clustering
        lines.append(f"subject clustering {s.text()}, {s.sds_above:.1f} sd above chance: of a cell's {s.k} nearest "
                     "neighbours of its class, the share from its own subject")
    c = fmap.class_clustering
    lines.append(f"class clustering {c.text()}: of a cell's {c.k} nearest neighbours, the share of its class "
                 f"(in {fmap.pca_dims} PCA dimensions of the standardised features)")
    if fmap.note:
        lines.append(f"note: {escape(fmap.note)}")
    subjects = f", {fmap.n_subjects} subjects" if fmap.n_subjects else ""
    lines.append(f"wrote {escape(str(fmap.path))} ({METHOD_NAMES[fmap.method]} of {fmap.n_cells} cells{subjects}, "
                 f"tap {escape(fmap.tap)})")
    return lines
