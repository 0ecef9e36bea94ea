"""What `featx classify` and `featx compare` run: evaluate, then write the reports (and, asked, the model)."""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx import persist
from featx.errors import FeatxError, arg
from featx.evaluation import (
    HELD_OUT_SPLITS,
    GridPlan,
    check_grid,
    evaluate,
    every_row_has_subject,
    labelled_rows,
    protocol_name,
    tuned_protocol,
    without_unknown_subjects,
)
from featx.evaluation.backends import check_backend, engine
from featx.evaluation.grid import Params, StorePath, run_plan
from featx.evaluation.search import Search, check_search, fit_search
from featx.heads import Preprocess, check_params, get_head, make_head
from featx.report import claimed, free_folder, results_commit, write_manifest, write_results
from featx.report.outputs import DEFAULT_ROOT
from featx.results import ResultRow
from featx.store import load_features, store_settings
from featx.store.schema import default_tap


@dataclass(frozen=True)
class ClassifyResult:
    """What :func:`run_classify` returns."""
    row: ResultRow                                   # the evaluated head's result row
    paths: dict[str, Path] = field(default_factory=dict)  # the files written to ``out`` by kind ({}: none)
    model: Path | None = None                        # the saved model (.joblib), with ``save``
    run: dict = field(default_factory=dict)          # where the folds ran (backend, cluster, workers)
    skops: Path | None = None                        # its .skops copy, with ``skops``


@dataclass(frozen=True)
class CompareResult:
    """What :func:`run_compare` returns."""
    rows: list[ResultRow]                            # one per store x tap x head x protocol (and selection)
    paths: dict[str, Path] = field(default_factory=dict)  # the files written to ``out`` by kind ({}: none)
    run: dict = field(default_factory=dict)          # where the grid ran (backend, cluster, workers)


def run_classify(store: StorePath | Sequence[StorePath], head, *, tap: str | Sequence[str] | None = None,
                 cv: str = "auto", n_folds: int = 5, seed: int = 0, jobs: int = 1, eval_set: str | None = None,
                 positive: str | None = None, preprocess: Preprocess = ("standard",), class_weight=None,
                 device: str = "auto", params: Params | None = None, out=None,
                 save: bool = False, skops: bool = False, plots: bool = True, allow_optimistic: bool = False,
                 allow_partial: bool = False, drop_unknown_subjects: bool = False,
                 search: Search | None = None, overwrite: bool = False, backend: str = "loky",
                 scheduler=None, on_fit=None) -> ClassifyResult:
    """Load a store (a sequence of stores is fused side by side; a sequence of taps concatenated), evaluate
    one head, write the reports to ``out`` and, with ``save``, the model to ``out/models`` (``skops`` adds a
    .skops copy). Returns a :class:`ClassifyResult` (the row, the files, the model; ``run``: where the folds
    ran). ``head``: a registered head or a scikit-learn classifier of your own (see
    :func:`featx.evaluation.evaluate`).

    The saved model is the evaluated pipeline (head, parameters, preprocessing, seed) fitted on the rows the
    protocol trains on: with ``eval_set`` exactly the model that was scored on that split; under
    cross-validation the same pipeline fitted on every training row. With a ``search`` (nested CV), the
    saved model is the search refit on those rows (inner folds grouped by their subjects): the card records
    the chosen parameters, the search's settings and its inner best score.

    ``out`` (None: nothing written) is refused before any fit when it holds the results of another command
    or another store, tap, head or protocol (``overwrite`` replaces them; :func:`featx.report.check_out`);
    :func:`default_out` names a folder of its own. ``backend`` / ``scheduler``: where the folds run
    (:func:`featx.evaluation.backends.engine`; run.json records it). ``on_fit``: each fit's progress
    (:func:`featx.evaluation.run_grid`)."""
    check_backend(backend, scheduler)
    if skops:
        if not save:
            raise FeatxError(f"{arg('skops')} exports the saved model; add {arg('save')}")
        persist.require_skops()
        if get_head(head).template is not None:  # its fitted parts (e.g. HGB's TreePredictor) are not allow-listed
            raise FeatxError(f"{arg('skops')}: a .skops copy holds only the types of featx's registered heads, and "
                             f"{get_head(head).name} is an estimator of your own; drop {arg('skops')} (the "
                             ".joblib model is saved)")

    features = load_features(store, tap, allow_partial=allow_partial)
    grid = _classify_grid(features.stores, features.store_taps, head, cv, eval_set)
    claim = nullcontext() if out is None else claimed(
        out, "classify", grid, overwrite=overwrite,
        same_rows=_same_cells({(tuple(grid["stores"]), features.tap, grid["heads"][0])}, 1))
    with claim:  # one writer of `out` until its files (and the model) are written
        with engine(backend, scheduler, jobs) as where:
            row = evaluate(features, head, cv=cv, n_folds=n_folds, seed=seed, jobs=jobs, eval_set=eval_set,
                           positive=positive, preprocess=preprocess, class_weight=class_weight, device=device,
                           params=params, allow_optimistic=allow_optimistic,
                           drop_unknown_subjects=drop_unknown_subjects, search=search, backend=backend,
                           scheduler=scheduler, on_fit=on_fit)
        paths, model, skops_copy = {}, None, None
        if out is not None:
            with results_commit(out):  # the results and run.json together, or (a full disk) the earlier ones whole
                paths = write_results([row], out, plots=plots)
                write_manifest(out, "classify", grid, 1, run=where.describe())
        if save:
            features.positive = row.positive
            fit_on = without_unknown_subjects(features)[0] if drop_unknown_subjects else features
            if row.protocol == "tuned-holdout":  # the scored model trained on the rows the network saw
                fit_on = labelled_rows(fit_on)
                fit_on = fit_on.select(tuned_protocol(fit_on, seed=seed).folds[0][0])
            own = check_params(params).get(row.head, {})
            searched = None
            if row.nested:
                chosen, searched = _search_all(fit_on, row.head, search, eval_set=eval_set, preprocess=preprocess,
                                               class_weight=class_weight, seed=seed, device=device, params=own,
                                               positive=features.classes.index(row.positive), jobs=jobs)
                own = {**own, **chosen}
            pipeline, n_train = persist.fit_final(fit_on, row.head, preprocess=preprocess, class_weight=class_weight,
                                                  seed=seed, device=device, params=own, eval_set=eval_set)
            model = persist.save_model(pipeline, features, Path(out or ".") / "models", head=row.head,
                                       n_train=n_train, preprocess=preprocess, class_weight=class_weight,
                                       seed=seed, params=own, row=row, search=searched)
            if skops:
                skops_copy = persist.export_skops(model, trust_pickle=True)  # this run wrote it
        return ClassifyResult(row=row, paths=paths, model=model, run=where.describe(), skops=skops_copy)


def _search_all(features, head: str, search: Search, *, eval_set, preprocess, class_weight, seed, device,
                params, positive: int, jobs: int) -> tuple[dict, dict]:
    """The search refit on every row the protocol trains on (as :func:`featx.persist.fit_final` picks them),
    inner folds grouped by their subjects: (chosen parameters, the card's ``search``)."""
    check_search(search)
    held_out = [*HELD_OUT_SPLITS, *([eval_set] if eval_set else [])]
    keep = (np.asarray(features.y) >= 0) & ~np.isin(np.asarray(features.splits).astype(str), held_out)
    subjects = np.asarray(features.subjects).astype(str)[keep] if len(features.subjects) else None
    groups = subjects if subjects is not None and every_row_has_subject(subjects) else None
    pipeline = make_head(head, preprocess=preprocess, class_weight=class_weight, seed=seed, device=device, **params)
    searcher = fit_search(pipeline, features.X[keep], features.y[keep], groups, search, head, positive=positive,
                          seed=seed, n_jobs=search.n_jobs if jobs == 1 else jobs)
    chosen = {k.removeprefix("clf__"): v for k, v in searcher.best_params_.items()}
    record = {**search.describe(), "chosen_params": chosen, "best_score": float(searcher.best_score_),
              "inner_groups": "subject" if groups is not None else "image", "n_train": int(keep.sum())}
    return chosen, record


def run_compare(stores, heads: Sequence[str] = (), taps=None, *, out=None, plots: bool = True,
                overwrite: bool = False, progress=None, on_fit=None, **options) -> CompareResult:
    """:func:`featx.evaluation.compare` (same arguments), then the reports in ``out`` (None: nothing written).
    ``stores`` may be a grid checked already (:func:`featx.evaluation.check_grid`), given alone. Every input,
    ``out`` included, is checked before the first fit (and before a cluster is started): a folder holding the
    results of another command or grid is refused unless ``overwrite``. The grid's engine (``backend`` /
    ``scheduler``) is opened once for the whole grid; run.json records it. ``progress`` / ``on_fit``: as in
    :func:`featx.evaluation.grid.run_plan`. Returns a :class:`CompareResult`."""
    plan = _plan(stores, heads, taps, options)
    claim = nullcontext() if out is None else claimed(out, "compare", plan.describe(), overwrite=overwrite,
                                                      same_rows=_plan_rows(plan))
    with claim:  # one writer of `out` until its files are written
        with engine(plan.backend, plan.scheduler, plan.jobs) as where:
            rows = run_plan(plan, progress=progress, where=where, on_fit=on_fit)
        paths = {}
        if out is not None:
            with results_commit(out):
                paths = write_results(rows, out, plots=plots)
                write_manifest(out, "compare", plan.describe(), len(rows), run=where.describe())
    return CompareResult(rows=rows, paths=paths, run=where.describe())


def _plan(stores, heads, taps, options: dict) -> GridPlan:
    """``stores`` when it is a checked grid (then nothing else may be given), else the grid checked now."""
    if not isinstance(stores, GridPlan):
        return check_grid(stores, heads, taps, **options)
    if heads or taps is not None or options:
        raise TypeError("a checked grid (GridPlan) is given alone: its heads, taps and options are in it")
    return stores


def default_out(command: str, stores, heads: Sequence[str] | str = (), taps=None, *, cv="auto", eval_set=None,
                root=DEFAULT_ROOT) -> Path:
    """Where ``featx compare`` / ``featx classify`` write without ``--out``: ``results/compare`` and
    ``results/classify-<store>-<tap>-<head>[-<protocol>]`` (e.g. ``classify-vgg16-fc7-svm``, and
    ``classify-vgg16-fc7-svm-prelim`` with ``eval_set="prelim"``: the store's file name without ``.h5``, fused
    stores and taps joined by ``+``, the protocol named when one is asked for), numbered ``-2``, ``-3``, ...
    when that folder holds another command's or grid's results: a default never replaces other results, and a
    re-run of the same grid replaces its own. ``stores``/``taps`` as :func:`run_compare` takes them (a checked
    grid alone for ``compare``), or as :func:`run_classify` for ``classify``."""
    if command == "compare":
        plan = stores if isinstance(stores, GridPlan) else check_grid(stores, heads, taps, cv=cv, eval_set=eval_set,
                                                                       allow_partial=True)
        return free_folder("compare", plan.describe(), root=root, same_rows=_plan_rows(plan))
    if command != "classify":
        raise FeatxError(f"{command!r}: only compare and classify have a default results folder")
    head = heads if isinstance(heads, str) else heads[0]
    paths = [Path(p) for p in ([stores] if isinstance(stores, (str, Path)) else stores)]
    named = None if taps is None else ([taps] if isinstance(taps, str) else list(taps))
    attrs = [store_settings(p) for p in paths]
    store_taps = [named or [default_tap(p, a)] for p, a in zip(paths, attrs)]
    grid = _classify_grid(paths, store_taps, head, cv, eval_set)
    tap = "+".join("+".join(t) for t in store_taps)
    named = cv if cv is None or isinstance(cv, str) else protocol_name(cv)  # a protocol object: its name
    protocol = eval_set or (named if named != "auto" else None)
    name = f"{'+'.join(p.stem for p in paths)}-{tap}-{grid['heads'][0]}" + (f"-{protocol}" if protocol else "")
    return free_folder("classify", grid, name=name, root=root,
                       same_rows=_same_cells({(tuple(grid["stores"]), tap, grid["heads"][0])}, 1))


def _classify_grid(stores, store_taps, head: str, cv: str, eval_set: str | None) -> dict:
    """The grid of one classify run as its run.json records it."""
    return {"stores": [str(Path(p).resolve()) for p in stores], "taps": [list(t) for t in store_taps],
            "heads": [get_head(head).name], "protocols": [f"eval={eval_set}" if eval_set else protocol_name(cv)]}


def _plan_rows(plan: GridPlan):
    return _same_cells(plan.cells(), len(plan.cells()) * len(plan.protocols))


def _same_cells(cells: set, n_rows: int):
    """Whether rows of a results.json with no run.json are exactly this grid's: one row per cell and protocol
    (``compare --select`` rows aside)."""
    def same(rows: list[ResultRow]) -> bool:
        rows = [r for r in rows if not (r.backbone == r.head == "selected")]
        found = {(tuple(str(Path(p).resolve()) for p in r.settings.get("stores") or []), r.tap, r.head)
                 for r in rows}
        return len(rows) == n_rows and found == cells
    return same
