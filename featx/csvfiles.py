"""The CSV files featx writes (results.csv, predictions, history.csv, ...): no cell a spreadsheet would run.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (an image named
``=HYPERLINK(...).bmp``) is a formula to Excel and LibreOffice: :func:`writer` writes it with a leading ``'``,
which spreadsheets show as text. Numbers (``-0.25``, ``+1e-3``) are left as they are. A cell that already
starts with quotes before such a character gets one quote more, so :class:`DictReader` (featx's readers of
its own files) reads every value back exactly as it was given: a path ``=1+2.bmp`` round-trips.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a decimal number (no inf, nan: text to Excel)


def neutral(value):
    """``value`` as written to a cell: a text a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(value, str) and value.lstrip("'")[:1] in FORMULA_STARTS and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def restore(text: str) -> str:
    """The value :func:`neutral` was given, from the cell it wrote."""
    if text.startswith("'") and text.lstrip("'")[:1] in FORMULA_STARTS:
        return text[1:]
    return text


class _Writer:
    def __init__(self, fh, **kwargs):
        self._writer = csv.writer(fh, **kwargs)

    def writerow(self, row: Iterable):
        return self._writer.writerow([neutral(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable]) -> None:
        for row in rows:
            self.writerow(row)


def writer(fh, **kwargs) -> _Writer:
    """:func:`csv.writer` whose cells pass through :func:`neutral`."""
    return _Writer(fh, **kwargs)


class DictReader(csv.DictReader):
    """:class:`csv.DictReader` of a file :func:`writer` wrote: every value as it was given (:func:`restore`)."""

    def __next__(self) -> dict:
        row = super().__next__()
        return {k: restore(v) if isinstance(v, str) else v for k, v in row.items()}
