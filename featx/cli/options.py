"""Options shared by several commands, declared once as ``Annotated`` types."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

CV_HELP = ("Protocol: subject (k-fold grouped by subject; the default when subjects are known), image "
           "(plain k-fold, IMAGE-LEVEL: leaks subjects), fold (the data's fold_0/1/2), or auto. On a store "
           "of fine-tuned weights, auto is tuned-holdout (test only rows the network never saw).")

# classify and compare
Folds = Annotated[int, typer.Option(help="Number of folds for --cv subject/image.")]
Seed = Annotated[int, typer.Option(help="Seed of the folds, the heads and the bootstrap.")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda (softmax and xgboost heads).")]
Boot = Annotated[int, typer.Option(help="Bootstrap resamples (over subjects) for the 95% intervals.")]
NoPlots = Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")]
Optimistic = Annotated[bool, typer.Option(
    "--optimistic", help="Allow --cv (or --eval) over rows a fine-tuned network trained on; the row is marked "
                         "OPTIMISTIC (features tuned on test subjects) in every output.")]
AllowPartial = Annotated[bool, typer.Option(
    "--allow-partial", help="Use a store whose extraction is not finished; every output row then says how many "
                            "rows it used.")]
DropUnknownSubjects = Annotated[bool, typer.Option(
    "--drop-unknown-subjects", help="Leave out rows whose file name gives no subject id (each output row says "
                                    "how many), instead of refusing subject-grouped CV.")]
ClassWeight = Annotated[Optional[str], typer.Option(help="balanced: weight classes inversely to their frequency "
                                                         "(the 2:1 ALL/HEM imbalance).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Folder for results.csv/.json/.md, plots and models.")]
