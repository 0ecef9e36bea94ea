"""`featx compare`: every head on every store x tap under every protocol."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featx.cli.app import app, on_interrupt, user_errors
from featx.cli.options import (
    CV_HELP,
    EVALUATION,
    NOTHING_KEPT,
    OUTPUT,
    AllowPartial,
    Backend,
    ClassWeight,
    Device,
    DropUnknownSubjects,
    Folds,
    Force,
    InnerFolds,
    Jobs,
    NIter,
    NoPlots,
    Optimistic,
    Param,
    Positive,
    Preprocess,
    Quiet,
    Scheduler,
    SearchMethod,
    SearchMetric,
    Seed,
    Select,
    SortBy,
    Taps,
    Tune,
    Versus,
)
from featx.cli.parsing import (
    parse_name_list,
    parse_preprocess,
    parse_search,
    parse_store_groups,
    parse_tap_groups,
)
from featx.cli.progress import FitBar
from featx.cli.results_table import print_rows


@app.command()
@user_errors
@on_interrupt(NOTHING_KEPT.format(command="compare"))
def compare(
    stores: Annotated[list[str], typer.Argument(help="Feature stores to compare; each may fuse stores as "
                                                     "a.h5+b.h5.")],
    heads: Annotated[str, typer.Option(help="Comma-separated heads (package.module:Class for a scikit-learn "
                                            "classifier of your own).", rich_help_panel=EVALUATION)]
    = "softmax,logistic,svm,xgboost",
    taps: Taps = None,
    cv: Annotated[str | None, typer.Option(help=CV_HELP + " Several, comma-separated (subject,image), give one "
                                                             "row each.", rich_help_panel=EVALUATION)] = None,
    eval_set: Annotated[str | None, typer.Option("--eval", help="Add a held-out protocol: train on the training "
                                                                   "rows, test on this split.",
                                                 rich_help_panel=EVALUATION)] = None,
    folds: Folds = 5,
    positive: Positive = None,
    class_weight: ClassWeight = None,
    preprocess: Preprocess = "standard",
    param: Param = None,
    search: SearchMethod = None,
    n_iter: NIter = 20,
    tune: Tune = False,
    inner_folds: InnerFolds = 3,
    search_metric: SearchMetric = "f1_weighted",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for results.csv/.json/.md and plots "
                                                                "(default: results/compare).",
                                             rich_help_panel=OUTPUT)] = None,
    force: Force = False,
    jobs: Jobs = None,
    backend: Backend = "loky",
    scheduler: Scheduler = None,
    seed: Seed = 0,
    device: Device = "auto",
    drop_unknown_subjects: DropUnknownSubjects = False,
    no_plots: NoPlots = False,
    optimistic: Optimistic = False,
    allow_partial: AllowPartial = False,
    select: Select = None,
    sort_by: SortBy = "f1_weighted",
    vs: Versus = None,
    quiet: Quiet = False,
) -> None:
    """Every head on every store x tap under every protocol: the study's Table 2 for any grid, each row with
    its paired difference from its protocol's best row."""
    from featx.evaluation import check_grid  # deferred: sklearn
    from featx.workflows.classify import default_out, run_compare

    head_names = parse_name_list(heads)
    params, nested = parse_search(param, head_names, method=search, n_iter=n_iter, tune=tune,
                                  inner_folds=inner_folds, metric=search_metric)
    plan = check_grid(parse_store_groups(stores), head_names, parse_tap_groups(taps), cv=parse_name_list(cv),
                      n_folds=folds, seed=seed, jobs=jobs, eval_set=eval_set, positive=positive,
                      preprocess=parse_preprocess(preprocess), class_weight=class_weight, device=device,
                      params=params, search=nested, backend=backend, scheduler=scheduler,
                      allow_optimistic=optimistic, allow_partial=allow_partial,
                      drop_unknown_subjects=drop_unknown_subjects, select=select, sort_by=sort_by, vs=vs)
    with FitBar(quiet) as bar:
        result = run_compare(plan, out=out or default_out("compare", plan), overwrite=force, plots=not no_plots,
                             progress=bar.say, on_fit=bar)
    print_rows(result.rows, result.paths, title="featx compare", run=result.run)
