"""Row identity: a row's name is unique within a results set.

A row is identified by its name and its protocol (the table shows the protocol in its own column). Rows of
one name and protocol (the same backbone, tap and head read from several stores, or merged from several
results folders) get a tag in brackets after their feature part, ``cnn/fc [a] + logistic`` for ``a.h5``: the
shortest form that tells them apart (the store's file stem; its parent folders when stems repeat; the results
folder a merged row came from when that is shorter or the stores do not differ). Rows already unique keep
their names. ``settings["tag"]`` records the tag, and the row's files (``predictions/<row>.csv``, plots) are
named after it (:func:`featx.report.slug`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from featx.results import ResultRow

TAG = "tag"  # the settings key of a row's tag


def unique_names(rows: list[ResultRow], origins: Sequence[str | Path] | None = None) -> list[ResultRow]:
    """``rows`` (new rows, in their order) with a tag on every row that shares its name and protocol with another.

    ``origins``: where each row was read from (``featx table``: its results.json), a tag when that is shorter
    than the stores' or the stores do not tell the rows apart. Applying it again changes nothing."""
    groups = [(r.name, r.protocol) for r in rows]
    stores = [tuple(str(p) for p in r.settings.get("stores") or []) for r in rows]
    folders = None if origins is None else [str(Path(o).resolve().parent) for o in origins]
    rows = [r if tag is None else _retag(r, tag) for r, tag in zip(rows, tag_names(groups, stores, folders))]
    n = 1
    while len({(r.name, r.protocol) for r in rows}) < len(rows):  # a new name met another row's: number it
        seen = set()
        for i, r in enumerate(rows):
            if (r.name, r.protocol) in seen:
                n += 1
                rows[i] = r = _retag(r, f"{r.settings.get(TAG) or ''} #{n}".strip())
            seen.add((r.name, r.protocol))
    return rows


def _retag(row: ResultRow, tag: str) -> ResultRow:
    return replace(row, name=with_tag(untagged(row), tag, row.head), settings={**row.settings, TAG: tag})


def tag_names(groups: Sequence, stores: Sequence[tuple[str, ...]],
              origins: Sequence[str] | None = None) -> list[str | None]:
    """The tag of each entry (None when no other entry is in its group): the shortest labels that tell the
    entries of one group apart, from their stores (``stores``: the paths of each entry) or their ``origins``
    (folders), else ``#1``, ``#2``, ... in order."""
    members: dict = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    tags: list[str | None] = [None] * len(groups)
    for idx in members.values():
        if len(idx) < 2:
            continue
        forms = [_shortest([stores[i] for i in idx])]
        if origins is not None:
            forms.append(_shortest([(origins[i],) for i in idx], stems=False))
        found = [f for f in forms if f is not None]
        labels = min(found, key=lambda f: max(len(t) for t in f)) if found else [f"#{n}" for n in
                                                                                 range(1, len(idx) + 1)]
        for i, label in zip(idx, labels):
            tags[i] = label
    return tags


def _shortest(keys: list[tuple[str, ...]], stems: bool = True) -> list[str] | None:
    """Labels of the entries' paths ("+" between several): the file stem (with ``stems``), then as many parent
    folders as it takes to tell every entry apart (the file's suffix too when only that differs); None when
    two entries have the same (or no) paths."""
    if len(set(keys)) < len(keys) or not all(Path(p).parts for key in keys for p in key) or not all(keys):
        return None
    depth = max(len(Path(p).parts) for key in keys for p in key)
    for stem in (True, False) if stems else (False,):
        for k in range(1, depth + 1):
            labels = ["+".join(_last_parts(p, k, stem) for p in key) for key in keys]
            if len(set(labels)) == len(labels):
                return labels
    return None


def _last_parts(path: str, k: int, stem: bool) -> str:
    p = Path(path)
    return "/".join([*p.parent.parts[-(k - 1):][:k - 1], p.stem if stem else p.name])


def with_tag(name: str, tag: str, head: str | None = None) -> str:
    """``name`` with `` [tag]`` after its feature part (``cnn/fc [a] + logistic``), else at its end."""
    suffix = f" + {head}"
    if head and name.endswith(suffix):
        return f"{name[:-len(suffix)]} [{tag}]{suffix}"
    return f"{name} [{tag}]"


def untagged(row: ResultRow) -> str:
    """The row's name without the tag a results set gave it."""
    tag = row.settings.get(TAG)
    return row.name.replace(f" [{tag}]", "", 1) if tag else row.name
