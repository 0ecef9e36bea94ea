"""Joining shard stores (``featx extract --shard i/n``) into the store a single run would have written.

The parts are checked before anything is written: each is a finished shard store (every row extracted or
recorded as an unreadable image) whose rows match their checksums; all were made with the same settings and
from the same collection; together they hold every row of it exactly once. The result is written to
``<out>.tmp`` and renamed, so ``out`` is whole or absent. ``virtual=True`` writes only the sample table and
maps ``/features/<tap>`` into the parts through HDF5 virtual datasets (no copy; the parts must stay beside it).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from featx.errors import FeatxError, arg
from featx.store.describe import MERGED_NOTE, VIRTUAL_NOTE, write_descriptions
from featx.store.hints import extracting
from featx.store.lock import acquire_writer_lock
from featx.store.rowid import FILE, bad_metadata, metadata_message, read_files
from featx.store.schema import (
    SCHEMA_VERSION,
    VERSION_KEYS,
    damaged,
    decode_attr,
    joined_versions,
    open_store,
    read_attrs,
    require_store,
    row_checksums,
    stored_taps,
)
from featx.store.shards import INDEX, SHARD_KEYS, Shard, parse_shard, shard_rows
from featx.store.whole import write_whole
from featx.store.writer import FeatureStore, _bytes_needed, _fit

# Root attributes that differ between the parts of one extraction. The rest must agree, except the library
# versions (VERSION_KEYS): the merged store records every one of them.
PER_PART = ("created", "dataset_fingerprint", "shard", "description", "featx_version", "h5py_version")
BLOCK = 4096  # rows copied at a time


class _Row(NamedTuple):  # what FeatureStore._initialise reads of a sample
    path: str
    label: str | None
    subject: str
    split: str


@dataclass
class _Part:
    path: Path
    attrs: dict
    shard: Shard
    index: np.ndarray
    rows: list[_Row]
    done: np.ndarray
    error: np.ndarray         # the raw fixed-length bytes
    roles: np.ndarray | None
    files: np.ndarray | None  # each row's image file content (None: a part of schema < 3)
    classes: list[str]
    dims: dict[str, int]
    descriptions: dict[str, str]


def merge_stores(parts: Sequence[str | Path], out: str | Path, *, virtual: bool = False,
                 overwrite: bool = False, on_part: Callable[[int, int, int], None] | None = None) -> Path:
    """Join the shard stores ``parts`` (any order) into ``out``, the store of a single run; return its path.

    Refuses, with one line naming the file at fault, parts that are not shard stores, unfinished or damaged
    parts, parts made with other settings or from other data, rows held twice and rows held by none. Rows
    recorded as unreadable images stay recorded (not done, with their error), as in a single run. ``virtual``:
    ``/features`` reads the parts through HDF5 virtual datasets (paths relative to ``out``; keep the parts
    beside it). An existing ``out`` is refused unless ``overwrite`` (it is replaced only once the new one is
    complete). The parts are left as they are. ``on_part(i, n, rows)``: part ``i`` of ``n`` (1-based, in the
    single-run order) is checked and written, ``rows`` its rows.
    """
    paths = [Path(p) for p in parts]
    out = Path(out)
    if not paths:
        raise FeatxError(f"{arg('parts')}: no shard store given; pass the files of {extracting(shard='i/n')}")
    if len({p.resolve() for p in paths}) < len(paths):
        twice = next(p for i, p in enumerate(paths) if p.resolve() in {q.resolve() for q in paths[:i]})
        raise FeatxError(f"{twice} is given twice; pass each shard once")
    if any(p.resolve() == out.resolve() for p in paths):
        raise FeatxError(f"{arg('out', out)} is one of the parts; write the merged store to another file")
    if out.exists() and not overwrite:
        raise FeatxError(f"{out} exists; choose another {arg('out')}, or add {arg('overwrite', True)} to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    locks = [acquire_writer_lock(out)]
    try:
        for p in paths:  # no part changes while it is read
            if not p.exists():
                raise FeatxError(f"{p}: no such shard store; extract it with {extracting('DATA', shard='i/n', out=p)}")
            locks.append(acquire_writer_lock(p))
        # in the single-run order (stable: of two parts starting at the same row, the later given is named)
        loaded = sorted((_read_part(p) for p in paths), key=lambda part: int(part.index[0]) if part.index.size else 0)
        _check_same_settings(loaded)
        order = _check_rows(loaded)
        _write(out, loaded, order, virtual, on_part)
    finally:
        for lock in locks:
            lock.release()
    return out


def _read_part(path: Path) -> _Part:
    with open_store(path, "r") as h5:
        require_store(path, h5)
        attrs = read_attrs(h5)
        if not attrs.get("shard") or INDEX not in h5["samples"]:
            raise FeatxError(f"{path} is not a shard store (no shard attribute); merge the files written by "
                             f"{extracting(shard='i/n')}")
        try:
            s = h5["samples"]
            done = s["done"][:].astype(bool)
            error = s["error"][:]
            meta = bad_metadata(h5)  # copied into the merged store, a damaged label would get a fresh checksum
            if meta is not None and meta.size:
                again = f"delete it and extract shard {attrs['shard']} again"
                raise FeatxError(metadata_message(path, h5, meta, fix=again))
            unfinished = int(np.sum(~done & (error == b"")))
            if unfinished:
                raise FeatxError(f"{path}: shard {attrs['shard']} is unfinished ({unfinished} of {done.size} rows not "
                                 f"extracted); run its {extracting('...', shard=attrs['shard'])} again, then merge")
            names = s["path"].asstr()[:]
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in s.attrs["classes"]]
            labels = s["label"][:]
            rows = [_Row(p, classes[lab] if lab >= 0 else None, subj, split) for p, lab, subj, split
                    in zip(names, labels, s["subject"].asstr()[:], s["split"].asstr()[:])]
            taps = [t for t in stored_taps(attrs) if t in h5["features"]]
            return _Part(path=path, attrs=attrs, shard=parse_shard(str(attrs["shard"])), index=s[INDEX][:],
                         rows=rows, done=done, error=error,
                         roles=s["network_role"].asstr()[:] if "network_role" in s else None, files=read_files(h5),
                         classes=classes,
                         dims={t: int(h5["features"][t].shape[1]) for t in taps},
                         descriptions={t: str(h5["features"][t].attrs.get("description", "")) for t in taps})
        except FeatxError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise FeatxError(damaged(path, exc)) from None


def _check_same_settings(parts: list[_Part]) -> None:
    first = parts[0]
    free = PER_PART + VERSION_KEYS
    keys = [k for k in first.attrs if k not in free]
    for part in parts[1:]:
        for key in keys + [k for k in part.attrs if k not in free and k not in first.attrs]:
            have, want = part.attrs.get(key, ""), first.attrs.get(key, "")
            if str(have) != str(want):
                raise FeatxError(f"{part.path} was made with {key}={_short(have)}, {first.path} with "
                                 f"{key}={_short(want)}; merge the shards of one extraction (same data and "
                                 "settings)")
        if part.classes != first.classes or part.dims != first.dims:
            what = "classes" if part.classes != first.classes else "tap widths"
            raise FeatxError(f"{part.path} has other {what} than {first.path}; merge the shards of one extraction")


def _check_rows(parts: list[_Part]) -> np.ndarray:
    """Every row of the whole collection exactly once; returns, per row of the single-run order, (part, row)."""
    total = int(parts[0].attrs["shard_of_samples"])
    owner = np.full((total, 2), -1, dtype=np.int64)
    for k, part in enumerate(parts):
        idx = part.index
        if idx.size != len(part.rows) or (idx.size and (idx.min() < 0 or idx.max() >= total)):
            raise FeatxError(f"{part.path}: its /samples/index does not fit a collection of {total} rows; the store "
                             "is damaged: extract that shard again")
        held = owner[idx, 0]
        if (held >= 0).any() or np.unique(idx).size < idx.size:
            j = int(np.flatnonzero(held >= 0)[0]) if (held >= 0).any() else 0
            other = parts[int(held[j])].path if held[j] >= 0 else part.path
            raise FeatxError(f"{part.path} and {other} both hold row {int(idx[j])} ({part.rows[j].path}): the parts "
                             f"overlap; pass each shard once (one {arg('shard', 'i/n')} per part, the same n)")
        owner[idx, 0] = k
        owner[idx, 1] = np.arange(idx.size)
    missing = np.flatnonzero(owner[:, 0] < 0)
    if missing.size:
        n = parts[0].shard.count
        have = {p.shard for p in parts}
        lost = [str(i) for i in range(n) if Shard(i, n) not in have
                and np.isin(shard_rows(total, Shard(i, n)), missing).any()] if n <= total else []
        which = ", ".join(f"{i}/{n}" for i in lost) or "I/N"
        raise FeatxError(f"{missing.size} of the {total} rows are in none of the parts given (first: row "
                         f"{int(missing[0])}): shard {which} missing; extract it with "
                         f"{extracting('DATA', shard=which.split(',')[0])} and merge all the parts again")
    fingerprint = _fingerprint([parts[k].rows[r] for k, r in owner])
    if fingerprint != str(parts[0].attrs["shard_of_fingerprint"]):
        raise FeatxError(f"the rows of {parts[0].path} and the other parts do not make up the collection they were "
                         "sharded from (its fingerprint differs); extract every shard from the same data again")
    return owner


def _fingerprint(rows: list[_Row]) -> str:
    """The same digest as ``featx.data.Collection.fingerprint`` of these rows (tests compare the two)."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update("\t".join((r.path, r.label or "", r.subject or "", r.split or "")).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _write(out: Path, parts: list[_Part], owner: np.ndarray, virtual: bool, on_part=None) -> None:
    first = parts[0]
    attrs = {k: v for k, v in first.attrs.items() if k not in PER_PART and k not in SHARD_KEYS}
    attrs["dataset_fingerprint"] = str(first.attrs["shard_of_fingerprint"])
    for key in VERSION_KEYS:
        if key in first.attrs:
            attrs[key] = joined_versions(*(decode_attr(p.attrs.get(key, "")) for p in parts))
    attrs["merged_from"] = json.dumps([{"file": os.path.relpath(p.path.resolve(), out.parent.resolve()),
                                        "shard": str(p.shard), "created": str(p.attrs.get("created", ""))}
                                       for p in parts])
    attrs["merged"] = "virtual" if virtual else "copy"
    rows = [parts[k].rows[r] for k, r in owner]
    dtype = np.dtype(str(attrs.get("dtype", "float32")))
    need = _bytes_needed(rows, {} if virtual else first.dims, dtype)
    write_whole(out, need, lambda h5: _fill(h5, out, parts, owner, attrs, rows, virtual, on_part),
                f"disk full while creating {out} (the merged store needs about {need / 1e6:.1f} MB); free space and "
                "merge again (the parts are untouched)",
                f"disk full while writing {out}; free space and merge again (the parts are untouched)")


def _fill(h5: h5py.File, out: Path, parts: list[_Part], owner: np.ndarray, attrs: dict, rows: list[_Row],
          virtual: bool, on_part=None) -> None:
    first = parts[0]
    FeatureStore._initialise(h5, attrs, rows, first.classes, first.dims, features=not virtual)
    if first.roles is not None:
        roles = [parts[k].roles[r] for k, r in owner]
        FeatureStore._write_roles(h5, roles, attrs)
    s = h5["samples"]
    done = np.zeros(len(rows), dtype=bool)
    error = s["error"]
    files = s[FILE][:]  # unknown content for the rows of parts that record none
    for part in parts:
        done[part.index] = part.done
        if part.files is not None:
            files[part.index] = part.files
        for j in np.flatnonzero(part.error != b""):
            error[int(part.index[j])] = _fit(part.error[j].decode("utf-8", "ignore"), error.dtype)
    if virtual:
        _map_virtual(h5, out, parts, attrs)
    checksums = np.zeros((len(rows), len(first.dims)), dtype=np.uint64)
    for i, part in enumerate(parts, start=1):
        _copy_part(h5, part, checksums, copy=not virtual)
        if on_part is not None:
            on_part(i, len(parts), int(part.index.size))
    s["checksum"][:] = checksums
    s[FILE][:] = files
    write_descriptions(h5, first.classes, first.descriptions, SCHEMA_VERSION)
    h5.attrs["description"] = h5.attrs["description"] + MERGED_NOTE.format(virtual=VIRTUAL_NOTE if virtual else "")
    h5.flush()  # features and checksums before the rows are marked done, as the writer does
    s["done"][:] = done


def _copy_part(h5: h5py.File, part: _Part, checksums: np.ndarray, copy: bool) -> None:
    """Check a part's finished rows against its checksums, then set their checksums at their merged row
    indices and, with ``copy``, write their features (one read of the part)."""
    with open_store(part.path, "r") as src:
        stored = src["samples/checksum"][:]
        order = [str(t) for t in decode_attr(src["samples/checksum"].attrs["taps"])]
        for k, tap in enumerate(part.dims):  # k: the merged store's checksum column, j: the part's
            j = order.index(tap)
            dst = h5["features"][tap]
            for a in range(0, part.index.size, BLOCK):
                block = src["features"][tap][a:a + BLOCK]
                done = part.done[a:a + BLOCK]
                local = np.arange(a, a + block.shape[0])[done]
                bad = local[row_checksums(block[done], local) != stored[local, j]]
                if bad.size:
                    raise FeatxError(f"{part.path}: finished rows do not match their checksums (first: "
                                     f"{part.rows[int(bad[0])].path}); run its {extracting('...', shard=part.shard)} "
                                     "again to recompute them, then merge")
                block[~done] = 0  # as a single run leaves rows it could not read
                where = part.index[a:a + BLOCK]
                if copy:
                    if where.size and int(where[-1]) - int(where[0]) + 1 == where.size:
                        dst[int(where[0]):int(where[-1]) + 1] = block
                    else:
                        dst[np.sort(where)] = block[np.argsort(where)]
                checksums[where[done], k] = row_checksums(block[done], where[done])


def _map_virtual(h5: h5py.File, out: Path, parts: list[_Part], attrs: dict) -> None:
    """``/features/<tap>`` as virtual datasets: each part's rows mapped to their rows of the single-run order."""
    first = parts[0]
    dtype = np.dtype(str(attrs.get("dtype", "float32")))
    total = sum(p.index.size for p in parts)
    for tap, dim in first.dims.items():
        layout = h5py.VirtualLayout(shape=(total, dim), dtype=dtype)
        for part in parts:
            name = os.path.relpath(part.path.resolve(), out.parent.resolve())
            source = h5py.VirtualSource(name, f"features/{tap}", shape=(part.index.size, dim), dtype=dtype)
            for a, b in _runs(part.index):  # one mapping per contiguous run (a shard is one run)
                layout[int(part.index[a]):int(part.index[a]) + b - a] = source[a:b]
        ds = h5["features"].create_virtual_dataset(tap, layout, fillvalue=0)
        ds.attrs["dim"] = dim
        ds.attrs["tap"] = tap
        ds.attrs["backbone"] = str(attrs.get("backbone", ""))


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of ``index`` whose values increase by one."""
    if not index.size:
        return []
    cuts = np.flatnonzero(np.diff(index) != 1) + 1
    bounds = [0, *cuts.tolist(), int(index.size)]
    return list(zip(bounds[:-1], bounds[1:]))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
