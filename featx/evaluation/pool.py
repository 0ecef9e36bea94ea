"""How many processes fit the heads x folds of a grid, and how many threads each may use.

``jobs=None`` (auto) sizes the pool to the machine: one process per core, fewer when the memory available
would not hold that many fits at once (each fit's estimate: the training rows copied and scaled, plus what
the head itself allocates, e.g. the RBF SVM's n x n kernel), and one process when the feature matrix is so
small that starting workers costs more than it saves. Inside a worker the BLAS and OpenMP pools (numpy,
torch, xgboost) are limited to the worker's share of the cores, so that ``jobs`` processes never run more
threads than there are cores.
"""
from __future__ import annotations

import contextlib
import importlib
import signal
from collections.abc import Sequence

from joblib import parallel_config
from threadpoolctl import threadpool_limits

from featx.errors import FeatxError, arg
from featx.heads import get_head
from featx.heads.memory import available_memory
from featx.imports import import_paused
from featx.machine import cpu_cores

__all__ = ["SMALL_BYTES", "check_jobs", "cores_for", "fit_bytes", "native_modules", "plan_jobs", "process_pool",
           "thread_limits"]

SMALL_BYTES = 8 * 2**20  # below this feature matrix size, auto jobs fits serially (worker start-up dominates)


def check_jobs(jobs: int | None) -> int | None:
    """``jobs`` if it is a number of processes joblib understands (N >= 1, or -1 all cores, -2 all but one,
    ...) or None (auto); a one-line error otherwise."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs == 0):
        raise FeatxError(f"{arg('jobs', jobs)}: give 1 or more processes, -1 for all cores, or leave it out "
                         "to size it to the machine")
    return jobs


def cores_for(jobs: int | None) -> int:
    """Processes for ``jobs`` on this machine: N as given, -1 every core, -2 all but one, ...; None every core."""
    check_jobs(jobs)
    if jobs is None:
        return cpu_cores()
    return jobs if jobs > 0 else max(1, cpu_cores() + 1 + jobs)


def fit_bytes(pipeline, n_rows: int, n_features: int) -> int:
    """Estimated peak bytes of fitting ``pipeline`` (from :func:`featx.heads.make_head`) on ``n_rows`` x
    ``n_features``: the fold's rows copied and scaled (float64 at worst), plus the estimator's own arrays
    where it states them (``fit_bytes``)."""
    estimator = pipeline.steps[-1][1]
    own = estimator.fit_bytes(n_rows, n_features) if hasattr(estimator, "fit_bytes") else 0
    return 3 * 8 * n_rows * n_features + own


def plan_jobs(jobs: int | None, n_tasks: int, feature_bytes: int, task_bytes: int) -> int:
    """The number of processes for ``n_tasks`` fits: ``jobs`` as given (:func:`cores_for`), or with None the
    cores, capped by the tasks and by the memory available over ``task_bytes`` per fit; 1 when the feature
    matrix (``feature_bytes``) is below :data:`SMALL_BYTES`."""
    if jobs is not None:
        return cores_for(jobs)
    if feature_bytes < SMALL_BYTES or n_tasks < 2:
        return 1
    free = available_memory()
    by_memory = n_tasks if free is None else max(1, free // max(task_bytes, 1))
    return int(max(1, min(cpu_cores(), n_tasks, by_memory)))


def native_modules(heads: Sequence[str]) -> tuple[str, ...]:
    """The native libraries (modules with thread pools) that fitting ``heads`` loads, sorted."""
    return tuple(sorted({module for head in heads for module in get_head(head).native}))


@contextlib.contextmanager
def process_pool(backend: str, heads: Sequence[str]):
    """Inside the block, joblib's loky worker processes (``backend`` "loky"; a cluster's pool is left as
    :func:`featx.evaluation.backends.engine` set it) import the native libraries of ``heads`` when they start.

    loky restarts a reused worker whose memory grows by 300 MB after its first task, with a warning, and
    importing torch grows it that much: a grid whose heads need a library the warm workers lack (softmax after
    logistic) gets fresh workers instead, and a grid that needs what they have reuses them. A worker imports
    them with the garbage collector paused (:mod:`featx.imports`): the process is featx's own. Workers ignore
    SIGINT: Ctrl-C in a terminal reaches the whole process group, and the featx process alone handles it (the
    CLI stops its workers); a worker interrupted mid-task would only print its own traceback."""
    if backend != "loky":
        yield
        return
    with parallel_config(backend="loky", initializer=start_worker, initargs=native_modules(heads)):
        yield


def start_worker(*modules: str) -> None:
    """A grid worker's start: SIGINT ignored, then ``modules`` imported with the collector paused."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_paused(*modules)


@contextlib.contextmanager
def thread_limits(threads: int | None, heads: Sequence[str] = ()):
    """Limit the BLAS and OpenMP thread pools to ``threads`` (None: leave them as they are). The native
    libraries the ``heads`` load are imported first, so that their pools exist to be limited."""
    if threads is None:
        yield
        return
    for module in native_modules(heads):
        importlib.import_module(module)
    with threadpool_limits(limits=threads):
        yield
