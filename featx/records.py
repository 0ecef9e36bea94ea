"""Typed results that still read as the dicts they replace.

A frozen dataclass that inherits :class:`Record` is also a read-only :class:`~collections.abc.Mapping` of its
fields: ``summary.taps`` and ``summary["taps"]`` (``.get``, ``in``, ``dict(summary)``) are the same, so code
written when the function returned a dict keeps working. :meth:`Record.as_dict` gives the plain dict (for
JSON).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any

__all__ = ["Record"]


class Record(Mapping):
    """Mixin for a frozen dataclass: its fields by name, as a mapping (the old dict's keys = the field names)."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (values as they are, not copied)."""
        return {name: getattr(self, name) for name in self._names()}
