"""Every input of a compare grid checked before anything is computed.

:func:`check_grid` opens every store once (its attributes and sample columns, not its features) and checks
what a grid of stores x taps x heads x protocols needs: each store is a featx store, each requested tap is
in it, its rows are extracted (or ``allow_partial``), the ``eval_set`` split holds labelled rows; heads,
their parameters, the search, the protocols and the selection metric are known. A mistake anywhere in the
grid fails in one line before the first head is fitted, not after the first store's rows are computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from featx.errors import FeatxError, arg, command
from featx.evaluation.backends import check_backend
from featx.evaluation.pool import check_jobs
from featx.evaluation.search import Search, check_search
from featx.evaluation.splits import check_cv, protocol_from, protocol_name
from featx.heads import HeadSettings, HeadSpec, Preprocess, head_specs
from featx.scoring import check_metric
from featx.store import summarize
from featx.store.hints import extracting
from featx.store.schema import default_tap


@dataclass(frozen=True)
class GridPlan:
    """A checked grid, passed down whole: store groups (each fused side by side), tap groups (None: each
    store's default), the heads (:class:`featx.heads.HeadSpec`), the protocols ``(cv, eval_set)``, per store
    group x tap group the tap name its rows will carry (``FeatureSet.tap``), what every head fit shares
    (:class:`featx.heads.HeadSettings`) and how the grid runs. :func:`check_grid` builds it for
    :func:`featx.evaluation.compare` (stores), :func:`plan_heads` for one feature set (no stores)."""

    heads: tuple[HeadSpec, ...]
    settings: HeadSettings
    protocols: tuple[tuple, ...]  # (protocol name or object, held-out split or None)
    store_groups: tuple[tuple[str, ...], ...] = ()
    tap_groups: tuple[tuple[str, ...] | None, ...] = (None,)
    row_taps: dict[tuple[int, int], str] = field(default_factory=dict)
    n_folds: int = 5
    jobs: int | None = None
    positive: str | None = None
    allow_optimistic: bool = False
    allow_partial: bool = False
    drop_unknown_subjects: bool = False
    search: Search | None = None
    select: str | None = None
    backend: str = "loky"
    scheduler: object = None
    sort_by: str = "f1_weighted"
    vs: str | None = None

    @property
    def head_names(self) -> list[str]:
        return [spec.name for spec in self.heads]

    @property
    def params(self) -> dict:
        return dict(self.settings.params)

    def describe(self) -> dict:
        """The grid as recorded in a results folder's manifest (stores resolved to absolute paths)."""
        return {"stores": [[str(Path(p).resolve()) for p in g] for g in self.store_groups],
                "taps": None if self.tap_groups == (None,) else [list(t) for t in self.tap_groups],
                "heads": self.head_names,
                "protocols": [ev and f"eval={ev}" or protocol_name(cv) for cv, ev in self.protocols]}

    def cells(self) -> set[tuple[tuple[str, ...], str, str]]:
        """``(resolved stores, tap, head)`` of every row the grid computes under each protocol."""
        return {(tuple(str(Path(p).resolve()) for p in group), self.row_taps[(i, j)], head)
                for i, group in enumerate(self.store_groups) for j in range(len(self.tap_groups))
                for head in self.head_names}


def store_groups(stores) -> list[list[str]]:
    """One path, or a sequence whose items are paths or sequences of paths (fused): a list of path groups."""
    items = [stores] if isinstance(stores, (str, Path)) else list(stores)
    return [[str(s)] if isinstance(s, (str, Path)) else [str(p) for p in s] for s in items]


def tap_groups(taps) -> list[list[str] | None]:
    """None (each store's default tap), a name, or a sequence of names or of fused name sequences."""
    taps = [taps] if isinstance(taps, str) else taps
    return [[t] if isinstance(t, str) else list(t) for t in taps] if taps else [None]


def grid_protocols(cv, eval_set: str | None) -> list[tuple]:
    """``(cv, eval_set)`` of every protocol of a grid: each CV protocol (a name checked and in lower case, or a
    protocol object or scikit-learn splitter), then the held-out one."""
    one = cv is None or isinstance(cv, str) or not isinstance(cv, (list, tuple))
    protocols = [check_cv(p) if p is None or isinstance(p, str) else protocol_from(p)
                 for p in ([cv] if one and cv is not None else list(cv or []))]
    if not protocols and not eval_set:
        protocols = ["auto"]
    return [(p, None) for p in protocols] + ([("auto", eval_set)] if eval_set else [])


def plan_heads(heads, protocols, *, n_folds: int = 5, seed: int = 0, jobs: int | None = None,
               positive: str | None = None, preprocess: Preprocess = ("standard",), class_weight=None,
               device: str = "auto", params=None, allow_optimistic: bool = False,
               drop_unknown_subjects: bool = False, search: Search | None = None, backend: str = "loky",
               scheduler=None, select: str | None = None, sort_by: str = "f1_weighted",
               vs: str | None = None) -> GridPlan:
    """Check what scoring heads on any feature set needs (heads, their shared settings, the search, the
    pool, the metrics) and return it as a :class:`GridPlan` without stores; ``protocols``: ``(cv, eval_set)`` pairs."""
    check_metric(sort_by, "sort_by")
    if select is not None:
        check_metric(select, "select")
        if search is not None:
            raise FeatxError(f"{arg('select', select)} compares rows at their fixed parameters and cannot be "
                             f"combined with a parameter search ({arg('search')}) yet; run them separately")
    specs = head_specs(heads)
    if not specs:
        raise FeatxError(f"{arg('heads')}: no head given; name at least one, e.g. svm")
    settings = HeadSettings(preprocess=preprocess, class_weight=class_weight, params=params or {}, device=device,
                            seed=seed)
    if search is not None:
        check_search(search)
    check_jobs(jobs)
    check_backend(backend, scheduler)
    return GridPlan(tuple(specs), settings, tuple(protocols), n_folds=n_folds, jobs=jobs, positive=positive,
                    allow_optimistic=allow_optimistic, drop_unknown_subjects=drop_unknown_subjects, search=search,
                    select=select, backend=backend, scheduler=scheduler, sort_by=sort_by, vs=vs)


def check_grid(stores, heads, taps=None, *, cv="auto", eval_set: str | None = None, n_folds: int = 5,
               allow_partial: bool = False, **options) -> GridPlan:
    """Check every input of :func:`featx.evaluation.compare` (same arguments; ``options`` are those of
    :func:`plan_heads`) and return the grid (the ``backend`` is checked to be installed; its cluster is not
    contacted)."""
    protocols = grid_protocols(cv, eval_set)
    plan = plan_heads(heads, protocols, n_folds=n_folds, **options)
    if n_folds < 2 and any(ev is None and isinstance(p, str) and protocol_from(p, n_folds=2).kfold
                           for p, ev in protocols):
        raise FeatxError(f"{arg('n_folds', n_folds)}: cross-validation needs at least 2 folds")
    groups = store_groups(stores)
    if not groups or not all(groups):
        raise FeatxError(f"no feature store given; pass files written by {extracting()}")
    tgroups = tap_groups(taps)
    summaries: dict[str, dict] = {}
    row_taps = {}
    for i, group in enumerate(groups):
        for p in group:
            if p not in summaries:
                summaries[p] = _check_store(Path(p), allow_partial, eval_set)
        _check_fused(group, summaries)
        for j, tgroup in enumerate(tgroups):
            parts = []
            for p in group:
                info = summaries[p]
                wanted = tgroup or [default_tap(Path(p), info["settings"])]
                for tap in wanted:
                    if tap not in info["taps"]:
                        fill = command(f"extract {arg('taps')}", f"featx.extract(..., taps={tap!r})")
                        raise FeatxError(f"{p}: no tap {tap!r} in this store; it holds "
                                         f"{', '.join(info['taps']) or 'none'} (extract it with {fill})")
                parts.append("+".join(wanted))
            row_taps[(i, j)] = "+".join(parts)
    return replace(plan, store_groups=tuple(tuple(g) for g in groups),
                   tap_groups=tuple(None if t is None else tuple(t) for t in tgroups), row_taps=row_taps,
                   allow_partial=allow_partial)


def _check_store(path: Path, allow_partial: bool, eval_set: str | None) -> dict:
    """The store's summary (:func:`featx.store.summarize`), refused when its rows cannot serve the grid."""
    info = summarize(path)
    done, total = info["done"], info["samples"]
    if info["unfinished"] and not allow_partial:
        raise FeatxError(f"{path}: {done} of {total} rows extracted; finish it by running the same "
                         f"{extracting()} again, or pass {arg('allow_partial', True)}")
    if not done:
        raise FeatxError(f"{path}: no finished rows yet; run {extracting()} to fill the store")
    if eval_set is not None:
        labelled = {split: sum(n for c, n in counts.items() if c != "unlabelled")
                    for split, counts in info["counts"].items()}
        if not labelled.get(eval_set):
            have = ", ".join(s for s, n in labelled.items() if n and s != "(none)") or "none"
            raise FeatxError(f"{path}: no labelled rows of split {eval_set!r} for {arg('eval_set', eval_set)}; "
                             f"labelled splits here: {have}")
    return info


def _check_fused(group: list[str], summaries: dict[str, dict]) -> None:
    first = summaries[group[0]]
    for p in group[1:]:
        if summaries[p]["classes"] != first["classes"]:
            raise FeatxError(f"{p} has classes {summaries[p]['classes']}, {group[0]} has {first['classes']}; "
                             "fuse stores extracted from the same data")
