"""The CLI's mini-languages, parsed into the typed arguments of the library."""
from __future__ import annotations

from typing import Sequence

from featx.errors import FeatxError, arg
from featx.heads import HEADS, get_head


# --- evaluation ---
def parse_name_list(spec: str | None) -> list[str]:
    """``"softmax, svm"`` -> ``["softmax", "svm"]`` (comma-separated names; empty parts dropped)."""
    return [part.strip() for part in (spec or "").split(",") if part.strip()]


def parse_store_group(spec: str) -> list[str]:
    """``"a.h5+b.h5"`` -> ``["a.h5", "b.h5"]``: stores fused side by side (one store gives a list of one)."""
    return [part.strip() for part in spec.split("+") if part.strip()]


def parse_store_groups(specs: Sequence[str]) -> list[list[str]]:
    """``["a.h5", "a.h5+b.h5"]`` -> ``[["a.h5"], ["a.h5", "b.h5"]]``: one feature set per argument."""
    return [parse_store_group(spec) for spec in specs]


def parse_tap_group(spec: str | None) -> list[str] | None:
    """``"fc7+pool5"`` -> ``["fc7", "pool5"]`` (concatenated taps); None or empty -> None (the default tap)."""
    taps = [part.strip() for part in (spec or "").split("+") if part.strip()]
    return taps or None


def parse_tap_groups(spec: str | None) -> list[list[str]] | None:
    """``"fc7,pool5,fc7+pool5"`` -> ``[["fc7"], ["pool5"], ["fc7", "pool5"]]``; None or empty -> None."""
    groups = [parse_tap_group(part) for part in parse_name_list(spec)]
    return [g for g in groups if g] or None


def params_per_head(raw: dict, heads: Sequence[str]) -> dict[str, dict]:
    """Transitional adapter (until ``parse_params`` moves here and expands by itself): the output of
    :func:`featx.heads.parse_params` (``{"C": 10, "svm": {"gamma": 0.1}}``) in the library's typed form
    ``{head: {parameter: value}}``. An unscoped key goes to every head of ``heads`` that takes it; a key that
    none of them takes is refused (a typo would otherwise vanish)."""
    names = [get_head(h).name for h in heads]
    out: dict[str, dict] = {}
    scoped = {k: v for k, v in raw.items() if k in HEADS and isinstance(v, dict)}
    for key, value in raw.items():
        if key in scoped:
            continue
        takers = [h for h in names if key in _accepted_params(h)]
        if not takers:
            raise FeatxError(f"{arg('params', key)}: none of the heads {', '.join(names)} takes it; scope it as "
                             "head.key=value or check its name")
        for h in takers:
            out.setdefault(h, {})[key] = value
    for head, values in scoped.items():  # head.key=value wins over key=value
        out.setdefault(get_head(head).name, {}).update(values)
    return out


def _accepted_params(head: str) -> set[str]:
    return set(get_head(head).factory(None, 0, "cpu").get_params(deep=False))
