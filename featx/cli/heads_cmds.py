"""`featx classify`, `featx compare`, `featx predict`: heads on cached features."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from featx.cli.app import app, console, loads_torch, on_interrupt, user_errors
from featx.cli.options import (
    CV_HELP,
    DATA,
    EVALUATION,
    OUTPUT,
    RUN,
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
    Scheduler,
    SearchMethod,
    SearchMetric,
    Seed,
    Select,
    SortBy,
    Taps,
    Tune,
    Versus,
    Workers,
)
from featx.cli.parsing import (
    parse_name_list,
    parse_preprocess,
    parse_search,
    parse_store_groups,
    parse_stores,
    parse_tap_groups,
    parse_taps,
)
from featx.cli.tables import results_table
from featx.errors import FeatxError

# featx.workflows.classify (scikit-learn, ~1 s) is imported by the commands that use it, not by `featx extract`

# classify and compare fit in memory and write their results at the end: an interrupt keeps nothing to resume
NOTHING_KEPT = ("{command} keeps nothing of an unfinished run (it writes its results once every model is fitted); "
                "run the same command again to start over")


def _print_rows(rows, paths=None, title="featx", run=None) -> None:
    console.print(results_table(rows, title=title))
    shown = set()
    for r in rows:  # each protocol's note once (heads on the same folds share it)
        note = r.settings.get("cv_note")
        if note and note not in shown:
            shown.add(note)
            console.print(f"[dim]{escape(str(r.backbone))}/{escape(str(r.tap))} ({r.protocol}): {escape(note)}[/]")
    if run and run["backend"] != "loky":
        console.print(f"[dim]ran on {run['backend']} ({run['cluster']} cluster {escape(str(run['scheduler']))}, "
                      f"{run['workers']} worker{'s' if run['workers'] != 1 else ''})[/]")
    if paths:
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))


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
    result = run_classify(stores, head, tap=taps, cv=cv, n_folds=folds, seed=seed,
                          jobs=jobs, eval_set=eval_set, positive=positive, preprocess=parse_preprocess(preprocess),
                          class_weight=class_weight, device=device, params=params, search=nested,
                          out=out, overwrite=force, save=save, skops=save and not no_skops and not own,
                          plots=not no_plots, backend=backend, scheduler=scheduler,
                          allow_optimistic=optimistic, allow_partial=allow_partial,
                          drop_unknown_subjects=drop_unknown_subjects)
    row = result.row
    _print_rows([row], result.paths, title="featx classify", run=result.run)
    accuracy = row.scores["accuracy"]
    if accuracy.ci_low is None:
        ci = f"n/a ({(row.interval or {}).get('na', {}).get('accuracy', 'not computed')})"
    else:
        ci = f"{100 * accuracy.ci_low:.1f}-{100 * accuracy.ci_high:.1f}% ({row.interval['method']})"
    console.print(f"weighted F1 {100 * row.mean('f1_weighted'):.2f}%, balanced accuracy "
                  f"{100 * row.mean('balanced_accuracy'):.2f}%, 95% CI of accuracy {escape(ci)}")
    if result.model:
        console.print(f"saved model {result.model}" + (f" and {result.skops}" if result.skops else ""))


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
    result = run_compare(plan, out=out or default_out("compare", plan), overwrite=force, plots=not no_plots,
                         progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    _print_rows(result.rows, result.paths, title="featx compare", run=result.run)


@app.command()
@user_errors
@loads_torch
def predict(
    model: Annotated[Path, typer.Argument(help="A model saved by `featx classify --save`: .skops (safe to load; "
                                               "card NAME.skops.json) or, with --trust-pickle, .joblib (a pickle; "
                                               "card NAME.json).")],
    data: Annotated[Path | None, typer.Argument(help="Images to predict (any layout `featx extract` "
                                                        "reads); not needed with --store.")] = None,
    split: Annotated[str | None, typer.Option(help="Only this split, e.g. final.", rich_help_panel=DATA)] = None,
    store: Annotated[str | None, typer.Option(help="Read features from this store (a.h5+b.h5 for fused) "
                                                      "instead of extracting; it must match the model.",
                                              rich_help_panel=DATA)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write, one row per requested image: path, "
                                                         "prediction, probability (or score), error.",
                                      rich_help_panel=OUTPUT)] = Path("predictions.csv"),
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass when extracting.",
                                            rich_help_panel=RUN)] = 32,
    workers: Workers = None,
    cache: Annotated[Path | None, typer.Option(help="Keep the extracted features in this folder (reused next "
                                                       "time); default: a temporary folder.",
                                               rich_help_panel=DATA)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any requested image could not be "
                                                          "predicted (the CSV is still written).",
                                         rich_help_panel=OUTPUT)] = False,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Load a .joblib model: a pickle, which runs "
                                                                      "any code it holds when loaded; only for files "
                                                                      "you made. Share and predict .skops instead.")]
    = False,
) -> None:
    """Predict new images with a saved model; one CSV row per requested image.

    Images that could not be predicted get a row too, with the reason in its error column."""
    from featx.workflows.predict import predict as run_predict  # deferred: torch, which `featx --help` does not need

    stores = parse_stores(store) if store else None
    summary = run_predict(model, data, split=split, store=stores, out=out, device=device, batch_size=batch_size,
                          workers=workers, cache=cache, strict=strict, trust_pickle=trust_pickle)
    counts = ", ".join(f"{c} {n}" for c, n in summary.counts.items())
    console.print(f"wrote {summary.rows} rows to [bold]{escape(str(summary.out))}[/]: {summary.predicted} "
                  f"predicted ({escape(counts)}; column {summary.output}), {summary.failed} could not be "
                  "predicted", soft_wrap=True)
    if summary.failed:
        path, error = summary.errors[0]
        console.print(f"[yellow]warning:[/] {summary.failed} image(s) could not be predicted (see the error "
                      f"column), first: {escape(path)}: {escape(error)}", highlight=False, soft_wrap=True)
