"""Result rows as a pandas ``DataFrame`` (pandas is optional: featx itself never needs it)."""
from __future__ import annotations

import importlib
from collections.abc import Iterable

from featx.errors import FeatxError
from featx.results import ResultRow, csv_columns

__all__ = ["rows_to_frame"]


def rows_to_frame(rows: Iterable[ResultRow]):
    """One ``DataFrame`` row per :class:`ResultRow`, with the columns of results.csv: identity (name,
    backbone, tap, head, protocol, ...), every metric's mean and its ``_std``, ``_ci_low`` and ``_ci_high``,
    the other fields, then ``settings.<key>``. ``rows``: result rows, or a result that holds them
    (:class:`featx.workflows.classify.CompareResult`, :class:`featx.report.MergedResults`). A one-line
    :class:`FeatxError` when pandas is not installed."""
    try:
        pandas = importlib.import_module("pandas")
    except ImportError:
        raise FeatxError("rows_to_frame needs pandas, which is not installed; install it (pip install pandas) "
                         "or read results.csv with the csv module") from None
    rows = list(getattr(rows, "rows", rows))
    columns = csv_columns(rows)
    records = []
    for row in rows:
        flat = row.to_dict()
        records.append({c: row.settings.get(c[9:]) if c.startswith("settings.") else flat.get(c) for c in columns})
    return pandas.DataFrame.from_records(records, columns=columns)
