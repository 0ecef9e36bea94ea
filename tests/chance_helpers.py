"""Chance-level checks pooled over seeds, with a tolerance taken from the design, not from one lucky draw.

Under random labels (labels independent of the images or features) a row's test predictions are fixed before
the test labels are looked at, so its count of correct predictions is a sum of fair coins: variance n/4 for
n test rows. Where the labels are balanced within each subject of c cells (``digits_data`` and the
selection tests) the count of one subject is hypergeometric, with variance at most c/(c-1) times the coins'.
Pooling the test counts of several seeds (independent data, folds and fits) gives the pooled accuracy a
standard deviation of at most ``sqrt(0.25 / n_pooled * c / (c - 1))``; a leak is a bias that does not shrink
as seeds are added, so the pooled check is both steadier and stronger than one seed's interval.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

#: Tolerance in standard deviations: a row truly at chance fails one check with probability below 0.3 %.
Z = 3.0


def correct_and_tested(row) -> tuple[int, int]:
    """(correct predictions, test rows) of a :class:`featx.results.ResultRow`, from its summed confusion."""
    confusion = np.asarray(row.confusion)
    return int(np.trace(confusion)), int(confusion.sum())


def pooled_accuracy(rows: Iterable) -> tuple[float, int]:
    """Accuracy of the test counts of ``rows`` (one per seed) pooled, and the pooled number of test rows."""
    counts = [correct_and_tested(r) for r in rows]
    n = sum(t for _, t in counts)
    return sum(c for c, _ in counts) / n, n


def chance_sd(n: int, cells: int | None = None) -> float:
    """Upper bound of the standard deviation of an accuracy over ``n`` test rows at chance (two balanced
    classes); ``cells``: the labels are balanced within each subject of that many cells."""
    inflation = cells / (cells - 1) if cells else 1.0
    return math.sqrt(0.25 / n * inflation)


def assert_at_chance(rows: Iterable, *, cells: int | None = None, what: str = "") -> tuple[float, float]:
    """Assert that the pooled accuracy of ``rows`` lies within :data:`Z` chance standard deviations of 0.5;
    returns (pooled accuracy, tolerance)."""
    acc, n = pooled_accuracy(rows)
    tol = Z * chance_sd(n, cells)
    assert abs(acc - 0.5) <= tol, f"{what}: pooled accuracy {acc:.3f} over {n} test rows, chance 0.5 +- {tol:.3f}"
    return acc, tol
