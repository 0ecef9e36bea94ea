"""`featx classify`: one head on cached features, cross-validated or held out."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import app, console, on_interrupt, user_errors
from featx.cli.options import (
    CV_HELP,
    DATA,
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
    Out,
    Param,
    Positive,
    Preprocess,
    Quiet,
    Scheduler,
    SearchMethod,
    SearchMetric,
    Seed,
    Tune,
)
from featx.cli.parsing import (
    parse_preprocess,
    parse_search,
    parse_stores,
    parse_taps,
)
from featx.cli.progress import FitBar
from featx.cli.results_table import print_rows
from featx.errors import FeatxError


@app.command()
@user_errors
@on_interrupt(NOTHING_KEPT.format(command="classify"))
def classify(
    store: Annotated[str, typer.Argument(help="Feature store (HDF5 from `featx extract`); fuse stores with "
                                              "a.h5+b.h5 (aligned by image path).")],
    head: Annotated[str, typer.Option(help="softmax, logistic, linear-svm, svm, xgboost, random-forest or knn; or "
                                           "any scikit-learn classifier as package.module:Class (e.g. "
                                           "sklearn.naive_bayes:GaussianNB).",
                                      rich_help_panel=EVALUATION)] = "svm",
    tap: Annotated[str | None, typer.Option(
        "--tap", "--taps", help="Tap to use, e.g. fc7, or fused taps fc7+pool5 (default: the backbone's, fc7; "
                                "fc for cnn).", rich_help_panel=DATA)] = None,
    cv: Annotated[str, typer.Option(help=CV_HELP, rich_help_panel=EVALUATION)] = "auto",
    eval_set: Annotated[str | None, typer.Option("--eval", help="Instead of CV: train on the training rows, test "
                                                                   "once on this split (e.g. prelim).",
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
    save: Annotated[bool, typer.Option("--save", help="Also save the pipeline, fitted on the protocol's training "
                                            "rows, to OUT/models/ (.joblib and .skops, each with a JSON card).",
                                       rich_help_panel=OUTPUT)] = False,
    no_skops: Annotated[bool, typer.Option("--no-skops", help="With --save, skip the .skops copy (the one that "
                                                              "loads without running code).",
                                           rich_help_panel=OUTPUT)] = False,
    out: Out = None,
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
    quiet: Quiet = False,
) -> None:
    """Evaluate one head on one store (or fused stores/taps); print and write the metrics.

    With a search (--param lists, --tune), nested: the parameters are picked inside each outer fold on its
    training subjects."""
    if tap and "," in tap:
        raise FeatxError(f"--tap {tap}: classify evaluates one tap (fuse taps with +, e.g. fc7+pool5); compare "
                         "takes a comma-separated list")
    from featx.heads import get_head  # deferred: sklearn
    from featx.workflows.classify import default_out, run_classify

    params, nested = parse_search(param, [head], method=search, n_iter=n_iter, tune=tune, inner_folds=inner_folds,
                                  metric=search_metric)
    stores, taps = parse_stores(store), parse_taps(tap)
    if out is None:
        out = default_out("classify", stores, head, taps, cv=cv, eval_set=eval_set)
    own = get_head(head).template is not None  # an estimator of the user's: not on the .skops allow-list
    if save and own and not no_skops:
        console.print(f"[yellow]note:[/] {escape(get_head(head).name)} is an estimator of your own: the model is "
                      "saved as .joblib only (a .skops copy holds only the types of featx's registered heads)")
    with FitBar(quiet) as bar:
        result = run_classify(stores, head, tap=taps, cv=cv, n_folds=folds, seed=seed, jobs=jobs, eval_set=eval_set,
                              positive=positive, preprocess=parse_preprocess(preprocess), class_weight=class_weight,
                              device=device, params=params, search=nested, out=out, overwrite=force, save=save,
                              skops=save and not no_skops and not own, plots=not no_plots, backend=backend,
                              scheduler=scheduler, allow_optimistic=optimistic, allow_partial=allow_partial,
                              drop_unknown_subjects=drop_unknown_subjects, on_fit=bar)
    row = result.row
    print_rows([row], result.paths, title="featx classify", run=result.run)
    accuracy = row.scores["accuracy"]
    if accuracy.ci_low is None:
        ci = f"n/a ({(row.interval or {}).get('na', {}).get('accuracy', 'not computed')})"
    else:
        ci = f"{100 * accuracy.ci_low:.1f}-{100 * accuracy.ci_high:.1f}% ({row.interval['method']})"
    console.print(f"weighted F1 {100 * row.mean('f1_weighted'):.2f}%, balanced accuracy "
                  f"{100 * row.mean('balanced_accuracy'):.2f}%, 95% CI of accuracy {escape(ci)}")
    if result.model:
        console.print(f"saved model {result.model}" + (f" and {result.skops}" if result.skops else ""))
