"""Progress of the grid: one :class:`FitEvent` per head fitted on one fold, as the fits finish in the pool.

:func:`featx.evaluation.grid.run_grid` (and :func:`~featx.evaluation.grid.score_features`,
:func:`~featx.evaluation.grid.run_plan`, :func:`~featx.evaluation.grid.compare`) take ``on_fit``, a callable
that gets each event; what to draw is the caller's choice (the CLI draws a bar with rate and ETA). The
results do not depend on it: they are mapped back to their tasks whatever order the fits finish in.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from joblib import Parallel
from joblib.parallel import get_active_backend


@dataclass(frozen=True)
class FitEvent:
    """One fit finished: ``done`` of ``total`` fits (of one pool, or of a whole grid under ``run_plan``)."""

    done: int
    total: int
    head: str
    fold: int  # 1-based
    features: str  # the feature set's name (``cnn/fc``)
    protocol: str  # the protocol's name (``subject``, ``image``, ``prelim``, ...)


OnFit = Callable[[FitEvent], None]


def _indexed(i: int, function, args, kwargs):
    return i, function(*args, **kwargs)


def run_calls(calls: Sequence, n_jobs: int, done: Callable[[int, int], None] | None = None) -> list:
    """Run joblib ``delayed`` calls in the active backend; their results in the order of ``calls``.
    ``done(i, count)`` is called as call ``i`` finishes, the ``count``-th to finish (in completion order where
    the backend streams results, else once all have finished)."""
    if done is None:
        return Parallel(n_jobs=n_jobs, prefer="processes")(calls)
    backend, _ = get_active_backend()
    streams = n_jobs == 1 or getattr(backend, "supports_return_generator", False)
    results: list = [None] * len(calls)
    indexed = [(_indexed, (i, f, args, kwargs), {}) for i, (f, args, kwargs) in enumerate(calls)]
    finished = Parallel(n_jobs=n_jobs, prefer="processes", return_as="generator_unordered" if streams else "list")
    for count, (i, result) in enumerate(finished(indexed), start=1):
        results[i] = result
        done(i, count)
    return results


class GridFits:
    """Counts fits across the pools of a grid (feature sets x protocols): ``done`` carries over from pool to
    pool, ``total`` is every cell's fits. A cell's folds are known once it is split (its pool's first event);
    until then a protocol counts the folds it had on the last feature set (``guess`` before any)."""

    def __init__(self, on_fit: OnFit, n_sets: int, guess: dict):
        self.on_fit = on_fit
        self.per_cell = dict(guess)  # protocol's key -> fits of one cell, as last seen
        self.unseen = {p: n_sets for p in guess}  # cells of each protocol whose pool has not started
        self.known = 0  # fits of the cells started
        self.done = 0
        self.pool: tuple | None = None

    @property
    def total(self) -> int:
        return self.known + sum(self.per_cell[p] * n for p, n in self.unseen.items())

    def cell(self, protocol) -> OnFit:
        """The ``on_fit`` of one cell's pool (``protocol``: its key in ``guess``)."""
        started = False

        def on_fit(event: FitEvent) -> None:
            nonlocal started
            if not started:
                started = True
                self.unseen[protocol] -= 1
                self.per_cell[protocol] = event.total
                self.known += event.total
            self.done += 1
            self.on_fit(replace(event, done=self.done, total=self.total))
        return on_fit
