"""Keyword arguments onto typed settings objects: how a function that takes a few settings objects still
accepts the long keyword form (``extract(data, out, backbone="cnn", batch_size=8)``).

Each keyword belongs to one field of one object; a keyword no object takes, or one given both as a keyword
and inside an object passed in, is refused with :class:`TypeError` naming it (as Python refuses an unknown
keyword).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Slot", "typed_arguments"]


@dataclass(frozen=True)
class Slot:
    """One settings parameter of a function: its name, its class, the object passed (None: built from the
    keywords) and the keywords it takes, each mapped to its field (default: every field under its own name)."""
    name: str
    cls: type
    given: Any = None
    keywords: Mapping[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        return dict(self.keywords) or {f.name: f.name for f in fields(self.cls) if f.init}


def typed_arguments(func: str, slots: list[Slot], options: Mapping[str, Any]) -> dict[str, Any]:
    """The object of each slot (by its name): the one given, or one built from the ``options`` of its fields
    (the rest at their defaults). TypeError for an unknown keyword (listing those ``func`` takes), for a
    keyword also set by an object given, and for an object of the wrong class."""
    owner = {key: slot for slot in slots for key in slot.fields()}
    unknown = [key for key in options if key not in owner]
    if unknown:
        objects = ", ".join(f"{s.name}={s.cls.__name__}(...)" for s in slots)
        raise TypeError(f"{func}() got an unexpected keyword argument {unknown[0]!r}; it takes the settings "
                        f"{objects} or these keywords: {', '.join(owner)}")
    out = {}
    for slot in slots:
        mine = {slot.fields()[key]: value for key, value in options.items() if owner[key] is slot}
        if slot.given is None:
            out[slot.name] = slot.cls(**mine)
            continue
        if not isinstance(slot.given, slot.cls):
            raise TypeError(f"{func}(): {slot.name} is a {slot.cls.__name__}, not {type(slot.given).__name__}")
        twice = [key for key in options if owner[key] is slot]
        if twice:
            raise TypeError(f"{func}(): {twice[0]!r} is given twice, as a keyword and in {slot.name}="
                            f"{slot.cls.__name__}(...); give it in one place")
        out[slot.name] = slot.given
    return out
