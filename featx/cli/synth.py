"""`featx synth`: C-NMC-like synthetic cells in the real layout."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import INTERRUPT_LINES, app, console, on_interrupt, user_errors
from featx.data.synth import synthesize

#: `featx synth`'s defaults are the library's (sized so that subject-grouped 5-fold CV has 3 subjects per class
#: in every test fold): one place to change them.
_SYNTH = {name: p.default for name, p in inspect.signature(synthesize).parameters.items()}


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["synth"])
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the C-NMC-like tree into (created).")],
    subjects_all: Annotated[int, typer.Option(
        help="Training subjects with ALL (leukemic) cells.")] = _SYNTH["subjects_all"],
    subjects_hem: Annotated[int, typer.Option(
        help="Training subjects with normal (HEM) cells.")] = _SYNTH["subjects_hem"],
    cells_per_subject: Annotated[int, typer.Option(help="Cells per training subject.")] = _SYNTH["cells_per_subject"],
    prelim_subjects_all: Annotated[int, typer.Option(
        help="Preliminary-test subjects with ALL cells.")] = _SYNTH["prelim_subjects_all"],
    prelim_subjects_hem: Annotated[int, typer.Option(
        help="Preliminary-test subjects with HEM cells.")] = _SYNTH["prelim_subjects_hem"],
    prelim_cells_per_subject: Annotated[int, typer.Option(
        help="Cells per preliminary-test subject.")] = _SYNTH["prelim_cells_per_subject"],
    final_cells: Annotated[int, typer.Option(
        help="Unlabelled images of the final test phase.")] = _SYNTH["final_cells"],
    image_size: Annotated[int, typer.Option(
        help="Side of each square BMP in pixels (real data: 450).")] = _SYNTH["image_size"],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes identical files.")] = 0,
    masks: Annotated[bool, typer.Option("--masks", help="Also write each cell's nucleus mask (PNG, 255 inside) under "
                                                         "OUT/C-NMC_nucleus_masks/, at the image's path.")] = False,
    class_signal: Annotated[str, typer.Option(
        help="Where the classes differ: 'cell' (ALL cells larger, with lobed nuclei; a network can tell them by "
             "size) or 'nucleus' (the same cells, ALL and HEM differ only inside the nucleus: lobed, coarse "
             "chromatin vs round, smooth, dense; for checking that class-activation maps lie in the nucleus, with "
             "--masks).")] = _SYNTH["class_signal"],
    force: Annotated[bool, typer.Option("--force", help="Replace C-NMC folders already in OUT.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written (counts per split and class, "
                                                         "subjects per split) as JSON instead of one line.")]
    = False,
) -> None:
    """Write a synthetic C-NMC 2019 tree (training folds, preliminary test with labels CSV, final test).

    Each subject has its own stain tint, so image-level splits leak exactly as on the real data.
    """
    summary = synthesize(out, subjects_all=subjects_all, subjects_hem=subjects_hem,
                         cells_per_subject=cells_per_subject, prelim_subjects_all=prelim_subjects_all,
                         prelim_subjects_hem=prelim_subjects_hem, prelim_cells_per_subject=prelim_cells_per_subject,
                         final_cells=final_cells, image_size=image_size, seed=seed, overwrite=force,
                         masks=masks, class_signal=class_signal)
    if as_json:
        console.print_json(json.dumps(summary, default=str))
        return
    console.print(summary_line(out, summary), highlight=False, soft_wrap=True)


def summary_line(out: Path, summary: dict) -> str:
    """``wrote 36 images of 10 subjects to d (fold_0 6, ..., final 2 unlabelled), 32 px, seed 0``."""
    splits = ", ".join(f"{split} {sum(n.values())}" + (" unlabelled" if set(n) == {"unlabelled"} else "")
                       for split, n in summary["counts"].items())
    subjects = len({s for names in summary["subjects"].values() for s in names})
    return (f"wrote {summary['total']} synthetic C-NMC images of {subjects} subjects to {escape(str(out))} "
            f"({splits}), {summary['image_size']} px, seed {summary['seed']}"
            + (f"; class signal in the {summary['class_signal']}" if summary.get("class_signal", "cell") != "cell"
               else "")
            + (f"; nucleus masks in {escape(summary['masks'])}" if summary.get("masks") else ""))
