"""Shards: one process's deterministic part of a collection, stored as a normal store that knows its place.

Shard ``i/n`` of a collection of ``N`` samples holds the contiguous rows ``floor(i*N/n)`` to
``floor((i+1)*N/n) - 1`` of the single-run order (every shard has ``N/n`` rows, give or take one). Its store
is a normal, resumable store of those rows, with bookkeeping that :func:`featx.store.merge.merge_stores`
checks: the root attributes ``shard`` (``"i/n"``), ``shard_of_fingerprint`` and ``shard_of_samples`` (the
whole collection's fingerprint and size) and ``/samples/index`` (each row's index in the single-run order).
Its ``dataset_fingerprint`` is that of its own rows, like any store's.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from featx.errors import FeatxError, arg
from featx.store.describe import SHARD_NOTE
from featx.store.hints import extracting

SHARD_KEYS = ("shard", "shard_of_fingerprint", "shard_of_samples")  # root attributes of a shard store
INDEX = "index"  # /samples/index: each row's index in the single-run order
INDEX_DESCRIPTION = ("only in shard stores (`featx extract --shard i/n`): the row's index in the order of a "
                     "single run over the whole collection (what `featx merge` puts it back at)")
_SPEC = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")


class Shard(NamedTuple):
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: Shard | tuple[int, int] | str) -> Shard:
    """``"1/4"`` or ``(1, 4)`` -> ``Shard(1, 4)``; FeatxError for anything else (``4/4``, ``0/0``, ``abc``)."""
    if isinstance(value, str):
        match = _SPEC.match(value)
        if not match:
            raise FeatxError(f"{arg('shard', value)}: write it as i/n, e.g. 0/4 for the first of 4 shards "
                             "(i from 0 to n-1)")
        value = (int(match.group(1)), int(match.group(2)))
    try:
        index, count = (int(v) for v in value)
    except (TypeError, ValueError):
        raise FeatxError(f"{arg('shard', value)}: write it as i/n, e.g. 0/4 (i from 0 to n-1)") from None
    if count < 1:
        raise FeatxError(f"{arg('shard', f'{index}/{count}')}: n must be at least 1")
    if not 0 <= index < count:
        raise FeatxError(f"{arg('shard', f'{index}/{count}')}: i must be from 0 to {count - 1} (shards count from "
                         f"0; a SLURM array runs --array=0-{count - 1})")
    return Shard(index, count)


def shard_rows(n_samples: int, shard: Shard) -> np.ndarray:
    """The rows of the single-run order that ``shard`` holds: one contiguous block, in order."""
    if shard.count > n_samples:
        raise FeatxError(f"{arg('shard', shard)}: the collection has {n_samples} image(s), fewer than {shard.count} "
                         f"shards; use at most {n_samples} shards")
    start = shard.index * n_samples // shard.count
    stop = (shard.index + 1) * n_samples // shard.count
    return np.arange(start, stop, dtype=np.int64)


def shard_settings(shard: Shard, fingerprint: str, n_samples: int) -> dict:
    """The root attributes that make a store a shard of the collection of ``fingerprint`` (``n_samples`` rows)."""
    return {"shard": str(shard), "shard_of_fingerprint": fingerprint, "shard_of_samples": int(n_samples)}


def part_path(out: str | Path, shard: Shard) -> Path:
    """Where the shard of a job writing ``out`` goes: ``feats/vgg16.h5`` -> ``feats/vgg16.part-0-of-2.h5``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.part-{shard.index}-of-{shard.count}{out.suffix or '.h5'}")


def write_index(h5: h5py.File, rows) -> None:
    """Write ``/samples/index`` of a new shard store and say in its root description what the file is."""
    rows = np.asarray(rows, dtype=np.int64)
    ds = h5["samples"].create_dataset(INDEX, data=rows)
    ds.attrs["description"] = INDEX_DESCRIPTION
    note = SHARD_NOTE.format(shard=_text(h5.attrs.get("shard", "")), start=int(rows[0]) if rows.size else 0,
                             stop=int(rows[-1]) if rows.size else -1, total=_text(h5.attrs.get("shard_of_samples", "")))
    h5.attrs["description"] = str(_text(h5.attrs.get("description", ""))) + note


def check_shard_resume(path: Path, attrs, settings: dict) -> None:
    """Refuse to resume a store as another shard (or a shard as the whole collection, or the reverse)."""
    have = {k: str(_text(attrs.get(k, ""))) for k in SHARD_KEYS}
    want = {k: str(settings.get(k, "")) for k in SHARD_KEYS}
    if have == want:
        return
    if have["shard"] != want["shard"]:
        what = f"shard {have['shard']}" if have["shard"] else "the whole collection (no shard)"
        asked = f"shard {want['shard']}" if want["shard"] else "the whole collection"
        raise FeatxError(f"{path} holds {what}, this run asks for {asked}; use another {arg('out')} for each "
                         "shard (or delete the file to rebuild it)")
    raise FeatxError(f"{path} is shard {have['shard']} of another collection ({have['shard_of_samples']} images, "
                     f"this data has {want['shard_of_samples']}, or the same number of other files); use another "
                     f"{arg('out')} (or delete the file to rebuild it)")


def check_writable(path: Path, h5: h5py.File) -> None:
    """A store merged with ``--virtual`` only points into its parts: refuse to write into it."""
    if any(ds.is_virtual for ds in h5["features"].values()):
        raise FeatxError(f"{path} is a virtual merged store (its features live in its part files); extract "
                         f"into the parts with {extracting(shard='i/n')} and merge again, or choose another "
                         f"{arg('out')}")


def check_virtual_sources(path: Path, h5: h5py.File) -> None:
    """A store merged with ``--virtual`` reads its features from its parts: refuse, naming it, a part gone
    (HDF5 would read zeros in its place)."""
    for ds in h5["features"].values():
        if not ds.is_virtual:
            continue
        for source in ds.virtual_sources():
            where = Path(source.file_name)
            where = where if where.is_absolute() else Path(path).parent / where
            if not where.is_file():
                raise FeatxError(f"{path}: its features are read from {where}, which is missing (a store merged "
                                 f"with {arg('virtual', True)} needs its parts beside it); put the part back, or "
                                 f"merge the parts again without {arg('virtual')}")


def _text(value):
    return value.decode() if isinstance(value, bytes) else value.item() if hasattr(value, "item") else value
