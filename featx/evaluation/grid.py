"""The grid: every head fitted on every fold of a protocol (joblib), each scored into a result row.

:func:`evaluate` / :func:`evaluate_many` score heads on one :class:`featx.store.FeatureSet`; :func:`compare`
loads every store x tap and runs every protocol. These functions return :class:`featx.results.ResultRow`
lists and write nothing (``featx.workflows`` writes the reports and saved models).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
from joblib import delayed
from sklearn.base import BaseEstimator

from featx.errors import FeatxError, arg
from featx.evaluation.backends import Engine, engine
from featx.evaluation.differences import compare_rows
from featx.evaluation.inputs import GridPlan, check_grid, plan_heads
from featx.evaluation.metrics import compute_metrics, resolve_positive, roc_points, summarize_folds
from featx.evaluation.pool import fit_bytes, plan_jobs, process_pool, thread_limits
from featx.evaluation.progress import FitEvent, GridFits, OnFit, run_calls
from featx.evaluation.search import Search, check_search, fit_search, search_record
from featx.evaluation.selection import selection_row
from featx.evaluation.splits import (
    Protocol,
    every_row_has_subject,
    labelled_rows,
    protocol_name,
    split_features,
    without_unknown_subjects,
)
from featx.files import json_shaped
from featx.heads import (
    HeadSettings,
    HeadSpec,
    Preprocess,
    fit_params,
    head_params,
    head_specs,
    make_head,
    predict_and_score,
    preprocess_text,
)
from featx.machine import cpu_cores
from featx.provenance import UNSEEN_ROLES, rows_mark
from featx.results import ResultRow, SearchRecord, TunedRecord, summary_scores
from featx.row_names import unique_names
from featx.store.reader import load_feature_grid

StorePath = str | Path
Params = dict[str, dict]  # head name -> {parameter: value}


# --------------------------------------------------------------------------------------------------
# heads x folds
# --------------------------------------------------------------------------------------------------
def _fit_fold(head: HeadSpec, head_kwargs: dict, X, y, train, test, positive: int, search: Search | None = None,
              groups=None, fold: int = 0, inner_jobs: int = 1, threads: int | None = None):
    """Fit one head (its spec: it travels to a worker process whole) on one fold; returns predictions,
    positive-class scores, timings and, with a ``search`` (nested), the inner search's record (chosen
    parameters, every inner score) else None. ``groups``: the subject of every row (None when unknown).
    ``threads``: the BLAS/OpenMP threads of a worker process (None: as they are)."""
    pipeline = make_head(head, **head_kwargs)
    record = None
    train_groups = None if groups is None else groups[train]
    try:
        with thread_limits(threads, [head]):
            t0 = time.perf_counter()
            if search is not None:
                pipeline = fit_search(pipeline, X[train], y[train], train_groups, search, head, positive=positive,
                                      seed=head_kwargs.get("seed", 0), n_jobs=inner_jobs)
                record = search_record(pipeline, fold + 1)
            else:
                pipeline.fit(X[train], y[train], **fit_params(head, train_groups))
            t1 = time.perf_counter()
            pred, score = predict_and_score(pipeline, X[test], positive)
    except ValueError as exc:  # a parameter that does not fit the data (pca:N > features, n_neighbors > rows, ...)
        raise FeatxError(f"head {head.name}: {' '.join(str(exc).split())}; change {arg('params')} or "
                         f"{arg('preprocess')}") from None
    return pred, score, t1 - t0, time.perf_counter() - t1, record


def _settings_of(features) -> dict:
    keep = ("backbone", "weights", "weights_kind", "weights_sha256", "input_size", "resize", "dtype")
    return {"stores": list(getattr(features, "stores", []) or []), "fingerprint": features.fingerprint,
            "extraction": [{k: s.get(k) for k in keep if k in s} for s in features.settings]}


def _predictions(features, rows, fold_of, pooled, classes) -> dict:
    """The out-of-fold prediction of every test row (written to ``predictions/<row>.csv``, not results.json)."""
    names = np.asarray(classes, dtype=object)
    subjects = np.asarray(features.subjects).astype(str) if len(features.subjects) else np.full(len(features.y), "")
    return {"path": [str(p) for p in np.asarray(features.paths)[rows]], "subject": subjects[rows].tolist(),
            "fold": (fold_of + 1).tolist(), "y_true": names[pooled["y_true"]].tolist(),
            "y_pred": names[np.asarray(pooled["y_pred"], dtype=int)].tolist(),
            "score": np.asarray(pooled["y_score"], dtype=float).tolist()}


def run_grid(features, heads: Sequence, protocol: Protocol, *, positive: int, settings: HeadSettings | None = None,
             jobs: int | None = None, search: Search | None = None, where: Engine | None = None,
             backend: str = "loky", scheduler=None, on_fit: OnFit | None = None) -> list[ResultRow]:
    """Fit every head on every fold of ``protocol`` over ``features`` (one joblib pool of heads x folds);
    one result row per head. ``positive`` is the index of the positive class; ``settings``: what every head fit
    shares (:class:`featx.heads.HeadSettings`: preprocessing, class weights, parameters, device, seed). ``where``:
    an engine already open (:func:`featx.evaluation.backends.engine`), else one is opened on ``backend`` /
    ``scheduler`` for this pool; the numbers do not depend on where the pool runs.

    ``jobs``: processes of the pool (-1: every core); None sizes it to the cores and the memory available
    (:func:`featx.evaluation.pool.plan_jobs`). Each worker limits its BLAS/OpenMP threads to its share of
    the cores. Every head's parameters as built (featx's defaults included) are recorded in the row's
    ``settings["head_params"]``.

    With a ``search``, every head that has a space in it is nested: in each outer fold an inner search over
    that fold's training subjects (:func:`featx.evaluation.search.fit_search`) picks its parameters and the
    refit search is scored on the outer test fold. Inner searches run serially when the outer pool is
    parallel (``jobs`` other than 1, or a cluster), else with ``search.n_jobs`` processes. ``on_fit`` gets a
    :class:`featx.evaluation.progress.FitEvent` as each fit finishes (the rows do not depend on it)."""
    X, y = features.X, features.y
    settings = settings or HeadSettings()
    specs = head_specs(list(heads))
    by_name = {s.name: s for s in specs}
    kwargs = {s.name: settings.for_head(s) for s in specs}
    tasks = [(s.name, k) for s in specs for k in range(protocol.n_folds)]
    order = sorted(tasks, key=lambda t: -by_name[t[0]].cost)  # longest first: the pool ends on short tasks
    searched = {s.name for s in specs if search is not None and search.head_space(s.name)}
    if searched:
        check_search(search)
    groups = np.asarray(features.subjects).astype(str) if len(features.subjects) else None
    if groups is not None and not every_row_has_subject(groups):
        groups = None  # image-level inner folds (the row's note says so)
    built = {s.name: make_head(s, **kwargs[s.name]) for s in specs}  # unfitted: sizes and parameters
    n_train = max((len(a) for a, _ in protocol.folds), default=0)
    task_bytes = max(fit_bytes(built[s.name], n_train, X.shape[1]) for s in specs)
    t0 = time.perf_counter()
    with (nullcontext(where) if where else engine(backend, scheduler, jobs)) as where, \
            process_pool(where.backend, specs):
        if where.backend == "loky":  # this machine: processes sized to its cores and memory
            n_jobs = plan_jobs(jobs, len(tasks), X.nbytes, task_bytes)
            threads = max(1, cpu_cores() // n_jobs) if n_jobs > 1 else None
        else:  # a cluster's workers are single-threaded already
            n_jobs, threads = where.n_jobs, None
        inner_jobs = search.n_jobs if search is not None and n_jobs == 1 else 1
        calls = [delayed(_fit_fold)(by_name[name], kwargs[name], X, y, *protocol.folds[k], positive,
                                    search if name in searched else None, groups, k, inner_jobs, threads)
                 for name, k in order]
        results = run_calls(calls, n_jobs, None if on_fit is None else lambda i, count: on_fit(
            FitEvent(count, len(order), order[i][0], order[i][1] + 1, features.name, protocol.name)))
    wall = time.perf_counter() - t0
    by_task = dict(zip(order, results))

    classes = list(features.classes)
    test_rows = np.concatenate([test for _, test in protocol.folds])
    subjects = np.asarray(features.subjects).astype(str) if len(features.subjects) else None
    if subjects is not None and not every_row_has_subject(subjects[test_rows]):
        subjects = None  # intervals resample images then (ci_unit "image")
    fold_of = np.concatenate([np.full(len(test), k) for k, (_, test) in enumerate(protocol.folds)])
    used = np.unique(np.concatenate([test_rows, *[a for a, _ in protocol.folds]]))
    rows = []
    for spec in specs:
        fold_metrics, preds, scores, fit_s = [], [], [], 0.0
        for k, (_train, test) in enumerate(protocol.folds):
            pred, score, fs, _, _ = by_task[(spec.name, k)]
            fold_metrics.append(compute_metrics(y[test], pred, score, classes=classes, positive=positive,
                                                subjects=None if subjects is None else subjects[test]))
            preds.append(pred), scores.append(score)
            fit_s += fs
        pooled = {"y_true": y[test_rows], "y_pred": np.concatenate(preds), "y_score": np.concatenate(scores),
                  "classes": classes, "positive": positive, "fold": fold_of,
                  "subjects": None if subjects is None else subjects[test_rows]}
        summary = summarize_folds(fold_metrics, pooled=pooled)
        nested = (_nested_search(search, [by_task[(spec.name, k)][4] for k in range(protocol.n_folds)])
                  if spec.name in searched else None)
        rows.append(ResultRow(
            name=f"{features.name} + {spec.name}", backbone=features.backbone, tap=features.tap, head=spec.name,
            protocol=protocol.name, protocol_label=protocol.label, image_level=bool(protocol.image_level),
            protocol_short=protocol.short or None, n_folds=protocol.n_folds,
            n_train=int(round(np.mean([len(a) for a, _ in protocol.folds]))),
            n_test=int(len(test_rows)),
            n_subjects=int(len(np.unique(subjects[used]))) if subjects is not None else 0,
            classes=classes, positive=classes[positive],
            confusion=summary["confusion"], ci_unit=summary.get("ci_unit"), interval=summary.get("interval"),
            per_subject_accuracy=summary.get("per_subject_accuracy"),
            roc=roc_points(pooled["y_true"] == positive, pooled["y_score"], folds=fold_of),
            predictions=_predictions(features, test_rows, fold_of, pooled, classes),
            fit_seconds=round(fit_s, 3), wall_seconds=round(wall, 3),
            settings={"preprocess": preprocess_text(settings.preprocess),
                      "class_weight": settings.class_weight if spec.class_weight else None,
                      "params": dict(settings.params.get(spec.name, {})),
                      "head_params": json_shaped(head_params(built[spec.name])),
                      "seed": settings.seed, "device": settings.device, "backend": where.backend,
                      "cv_note": _nested_note(protocol.note, search, groups is None) if nested else protocol.note,
                      **_settings_of(features)},
            scores=summary_scores(summary), weights_provenance=rows_mark(features.settings), nested_search=nested,
        ))
    return rows


def _nested_search(search: Search, records: list) -> SearchRecord:
    """A nested row's record: the search's settings, the parameters chosen per outer fold, every inner score."""
    return SearchRecord.of(search.describe(), [chosen for chosen, _ in records],
                           [s for _, scores in records for s in scores])


def _nested_note(cv_note: str, search: Search, image_inner: bool) -> str:
    """The protocol's note with how a nested row's inner folds split."""
    if image_inner:
        note = (f"nested: inner {search.inner_folds}-fold search stratified over images (subjects unknown: "
                "IMAGE-LEVEL inner folds)")
    else:
        note = f"nested: inner {search.inner_folds}-fold search grouped by subject (StratifiedGroupKFold)"
    return "; ".join(filter(None, [cv_note, note]))


# --------------------------------------------------------------------------------------------------
# one feature set
# --------------------------------------------------------------------------------------------------
def evaluate(features, head: str | HeadSpec | BaseEstimator, *, cv: str = "auto", n_folds: int = 5, seed: int = 0,
             jobs: int | None = None, eval_set: str | None = None, positive: str | None = None,
             preprocess: Preprocess = ("standard",), class_weight=None, device: str = "auto",
             params: Params | None = None, allow_optimistic: bool = False, drop_unknown_subjects: bool = False,
             search: Search | None = None, backend: str = "loky", scheduler=None,
             on_fit: OnFit | None = None) -> ResultRow:
    """Cross-validate (or hold out) one head on a :class:`featx.store.FeatureSet`; returns one result row.

    The row holds every metric's mean over folds, its sample standard deviation over folds (ddof=1) and a
    95% bootstrap interval of that mean resampling subjects within each test fold, the summed confusion
    matrix, the protocol's label, the settings, and every test row's out-of-fold prediction
    (``predictions``). Unlabelled rows are ignored; ``drop_unknown_subjects`` leaves out the rows without a
    subject id (the row says how many). Features of a fine-tuned network are scored only on rows it never
    saw (see :func:`featx.evaluation.tuned_protocol`; ``allow_optimistic`` permits CV, marked OPTIMISTIC).
    ``params``: ``{head: {parameter: value}}``. ``search``: a nested parameter search, ``backend`` /
    ``scheduler`` where the folds run, ``on_fit`` each fit's progress (see :func:`run_grid`).

    ``head``: a registered head's name, or any scikit-learn classifier of your own (an instance, a class, a
    ``Pipeline``, or ``"package.module:Class"``): it is scored under the same folds and intervals, named after
    its class (a Pipeline's last step's), behind the same ``preprocess`` as any head (``preprocess=()`` to
    use a Pipeline as it is); see :func:`featx.heads.make_head`.
    """
    return evaluate_many(features, [head], cv=cv, n_folds=n_folds, seed=seed, jobs=jobs, eval_set=eval_set,
                         positive=positive, preprocess=preprocess, class_weight=class_weight, device=device,
                         params=params, allow_optimistic=allow_optimistic,
                         drop_unknown_subjects=drop_unknown_subjects, search=search, backend=backend,
                         scheduler=scheduler, on_fit=on_fit)[0]


def evaluate_many(features, heads: Sequence[str | HeadSpec | BaseEstimator], *, cv="auto", n_folds: int = 5,
                  seed: int = 0, jobs: int | None = None, eval_set: str | None = None, positive: str | None = None,
                  preprocess: Preprocess = ("standard",), class_weight=None, device: str = "auto",
                  params: Params | None = None, allow_optimistic: bool = False,
                  drop_unknown_subjects: bool = False, search: Search | None = None, backend: str = "loky",
                  scheduler=None, on_fit: OnFit | None = None) -> list[ResultRow]:
    """Like :func:`evaluate` for several heads on the same folds (one parallel pool): one row per head.
    Every input is checked once (:func:`featx.evaluation.inputs.plan_heads`) before the first fit."""
    plan = plan_heads(heads, [(cv, eval_set)], n_folds=n_folds, seed=seed, jobs=jobs, positive=positive,
                      preprocess=preprocess, class_weight=class_weight, device=device, params=params,
                      allow_optimistic=allow_optimistic, drop_unknown_subjects=drop_unknown_subjects,
                      search=search, backend=backend, scheduler=scheduler)
    with engine(plan.backend, plan.scheduler, plan.jobs) as where:
        return score_features(features, plan, plan.protocols[0], where, on_fit)


def score_features(features, plan: GridPlan, protocol: tuple, where: Engine, on_fit: OnFit | None = None
                   ) -> list[ResultRow]:
    """The rows of ``plan``'s heads on one feature set under one of its protocols ``(cv, eval_set)``, in the
    open engine ``where``: its labelled rows split by the protocol, every head fitted on every fold
    (``on_fit``: as in :func:`run_grid`)."""
    cv, eval_set = protocol
    data = labelled_rows(features)
    dropped = 0
    if plan.drop_unknown_subjects:
        data, dropped = without_unknown_subjects(data)
    pos = resolve_positive(data.classes, plan.positive)
    tuned = data.roles is not None
    protocol = split_features(data, cv, n_folds=plan.n_folds, seed=plan.settings.seed, eval_set=eval_set,
                              allow_optimistic=plan.allow_optimistic)
    if dropped:
        protocol.label += f"; {dropped} row{'s' if dropped != 1 else ''} without a subject id dropped"
        protocol.note = "; ".join(filter(None, [protocol.note, f"{dropped} rows without a subject id dropped "
                                                                "(drop_unknown_subjects)"]))
    rows = run_grid(data, plan.heads, protocol, positive=pos, settings=plan.settings, jobs=plan.jobs,
                    search=plan.search, where=where, on_fit=on_fit)
    facts = {"dropped_unknown_subjects": dropped, **(_tuned_facts(data, protocol) if tuned else {}),
             **_store_facts(features)}
    return [replace(row, **facts) for row in rows]


def _tuned_facts(data, protocol: Protocol) -> dict:
    """What every row of tuned features says: the roles it used and, for CV over seen rows, OPTIMISTIC."""
    roles = np.asarray(data.roles).astype(str)
    unseen = np.isin(roles, UNSEEN_ROLES)
    return {"optimistic": bool(protocol.optimistic),
            "tuned_store": TunedRecord(int((~unseen).sum()), int(unseen.sum()),
                                       [{k: t.get(k) for k in ("store", "checkpoint", "sha256", "provenance")}
                                        for t in data.tuned])}


def _store_facts(features) -> dict:
    """Rows computed on an unfinished store say so (``partial``: "156 of 330 rows"), and how many unreadable
    images were left out (``excluded_images``)."""
    return {**({"partial": features.partial} if features.partial else {}),
            **({"excluded_images": int(features.excluded)} if features.excluded else {})}


# --------------------------------------------------------------------------------------------------
# stores x taps x protocols
# --------------------------------------------------------------------------------------------------
def compare(stores: Sequence[StorePath | Sequence[StorePath]], heads: Sequence[str],
            taps: Sequence[str | Sequence[str]] | None = None, *, cv: Sequence[str] | str | None = "auto",
            n_folds: int = 5, seed: int = 0, jobs: int | None = None, eval_set: str | None = None,
            positive: str | None = None, preprocess: Preprocess = ("standard",), class_weight=None,
            device: str = "auto", params: Params | None = None, progress: Callable[[str], None] | None = None,
            allow_optimistic: bool = False,
            allow_partial: bool = False, drop_unknown_subjects: bool = False,
            search: Search | None = None, select: str | None = None, backend: str = "loky",
            scheduler=None, sort_by: str = "f1_weighted", vs: str | None = None,
            on_fit: OnFit | None = None) -> list[ResultRow]:
    """Evaluate every head on every store x tap under every protocol; one row each.

    ``stores``: feature files; an item that is a sequence of files fuses them side by side. ``taps``: None
    (each store's default tap) or tap names; an item that is a sequence of names concatenates those taps.
    ``cv``: one protocol or several; ``eval_set`` adds a held-out protocol (train on the training rows, test
    on that split). Stores of fine-tuned weights get ``tuned-holdout`` under ``auto`` (see
    :func:`featx.evaluation.tuned_protocol`); explicit CV over rows their network saw needs
    ``allow_optimistic`` and is marked OPTIMISTIC. A store with rows not yet extracted is refused unless
    ``allow_partial`` (then every row says so in ``partial``). ``drop_unknown_subjects`` leaves out rows
    without a subject id (every row says how many). ``progress`` gets one line per feature set x protocol,
    ``on_fit`` one event per fit, counted over the whole grid (see :func:`run_plan`).
    ``search``: a nested parameter search for the heads it has a space for (see :func:`run_grid`).
    Every input (stores, taps, heads, parameters, protocols, the ``eval_set`` split) is checked before the
    first fit (:func:`featx.evaluation.inputs.check_grid`).
    ``select`` (a metric): also one row per protocol of selecting the best store x tap x head by that metric
    inside each outer fold (:mod:`featx.evaluation.selection`); the other rows are then marked
    ``selection_uncorrected``.
    Rows of one name and protocol (one backbone x tap x head from several stores) are told apart by their
    stores' names (:func:`featx.row_names.unique_names`: ``cnn/fc [a] + logistic`` for a.h5).
    ``backend`` (loky, dask or ray) / ``scheduler``: where every pool of the grid runs, opened once for the
    whole grid (:func:`featx.evaluation.backends.engine`); the rows are the same on every backend.
    Each row is then compared, paired, with its protocol's best row by ``sort_by`` (or the row named ``vs``):
    :func:`featx.evaluation.differences.compare_rows` sets ``row.comparison`` (difference, 95% interval, p-value,
    ``≈ best``).
    """
    plan = check_grid(stores, heads, taps, cv=cv, eval_set=eval_set, n_folds=n_folds, seed=seed, jobs=jobs,
                      positive=positive, preprocess=preprocess, class_weight=class_weight, device=device,
                      params=params, allow_optimistic=allow_optimistic, allow_partial=allow_partial,
                      drop_unknown_subjects=drop_unknown_subjects, search=search, select=select, backend=backend,
                      scheduler=scheduler, sort_by=sort_by, vs=vs)
    return run_plan(plan, progress=progress, on_fit=on_fit)


def run_plan(plan: GridPlan, *, progress: Callable[[str], None] | None = None,
             where: Engine | None = None, on_fit: OnFit | None = None) -> list[ResultRow]:
    """The rows of a checked grid (:func:`featx.evaluation.inputs.check_grid`), as :func:`compare` returns them.
    ``where``: the engine already open (``featx compare`` opens it once for the whole command), else one is
    opened on the plan's backend for the whole grid. ``on_fit``: a :class:`~featx.evaluation.progress.FitEvent`
    per fit, ``done`` and ``total`` over every feature set x protocol x head x fold (a protocol's folds are
    known once it is split: until then it counts those of the last feature set, ``n_folds`` before any)."""
    with (nullcontext(where) if where else engine(plan.backend, plan.scheduler, plan.jobs)) as where:
        names, settings = plan.head_names, plan.settings
        rows: list[ResultRow] = []
        loaded = []
        guess = {i: len(names) * (1 if ev else plan.n_folds) for i, (_, ev) in enumerate(plan.protocols)}
        fits = on_fit and GridFits(on_fit, len(plan.store_groups) * len(plan.tap_groups), guess)
        for _, features in load_feature_grid(plan.store_groups, plan.tap_groups, labelled=True,
                                             allow_partial=plan.allow_partial):  # each store file read once
            if plan.select is not None:
                loaded.append(features)
            for i, (p, ev) in enumerate(plan.protocols):
                if progress:
                    progress(f"{features.name}: {', '.join(names)} under {ev or protocol_name(p)}")
                rows.extend(score_features(features, plan, (p, ev), where, fits and fits.cell(i)))
        if plan.select is not None:
            rows = [replace(row, selection_uncorrected=True) for row in rows]
            for p, ev in plan.protocols:
                if progress:
                    progress(f"selecting by inner {plan.select} among {len(loaded) * len(names)} rows under "
                             f"{ev or protocol_name(p)}")
                with process_pool(where.backend, plan.heads):
                    selected = selection_row(loaded, plan.heads, cv=p, eval_set=ev, n_folds=plan.n_folds,
                                             seed=settings.seed,
                                             jobs=cpu_cores() if where.n_jobs is None else where.n_jobs,
                                             positive=plan.positive, preprocess=settings.preprocess,
                                             class_weight=settings.class_weight, device=settings.device,
                                             params=dict(settings.params), metric=plan.select,
                                             allow_optimistic=plan.allow_optimistic,
                                             drop_unknown_subjects=plan.drop_unknown_subjects)
                rows.append(replace(selected, settings={**selected.settings, "backend": where.backend}))
        return compare_rows(unique_names(rows), metric=plan.sort_by, reference=plan.vs)
