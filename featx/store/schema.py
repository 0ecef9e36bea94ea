"""The store's file format: version, attribute encoding, row checksums, and opening a file with one-line
messages for what can be wrong with it (missing, locked, damaged, not a store)."""
from __future__ import annotations

import errno
import zlib
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from featx.errors import FeatxError, arg
from featx.files import is_disk_full
from featx.store.hints import extracting
from featx.store.lock import writer_active

SCHEMA_VERSION = 3   # 3: rows record their metadata checksums and their files' content (featx.store.rowid)
CHUNK_BYTES = 1 << 20
ERROR_BYTES = 512  # room for an error message (longer ones are cut)
# Settings that make two stores' features incomparable; a reopened store must match on each.
IDENTITY_KEYS = ("backbone", "weights", "weights_sha256", "weights_seed", "input_size", "mean", "std",
                 "resize", "dtype", "precision", "taps", "dataset_fingerprint", "exif_orientation")
# What a store made before featx recorded a setting did: such a store has no attribute, and reads as this.
LEGACY_SETTINGS = {"exif_orientation": "ignored"}  # featx applies EXIF orientation since it records it
STRING = h5py.string_dtype()
# The libraries that computed the rows: a resumed or merged store may hold rows of several versions, and
# records each of them (``joined_versions``) rather than refusing or keeping only the first.
VERSION_KEYS = ("torch_version", "torchvision_version")


def joined_versions(*versions) -> str:
    """Every version in ``versions`` (each one version or several joined by ", "), in the order first seen,
    joined by ", "."""
    seen: list[str] = []
    for value in versions:
        for one in str(value).split(", "):
            if one and one not in seen:
                seen.append(one)
    return ", ".join(seen)


def encode_attr(value):
    """Python value -> something h5py stores as an attribute (None becomes "")."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__ is one) have no HDF5 conversion
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return np.array(value, dtype=STRING)
    return value


def decode_attr(value):
    """h5py attribute -> plain Python value."""
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def read_attrs(h5: h5py.File) -> dict:
    """The root attributes (the store's settings) as plain Python values."""
    return {k: decode_attr(v) for k, v in h5.attrs.items()}


def setting(attrs, key: str):
    """A store's setting ``key`` from its root attributes, or what a store made before featx recorded it did
    (:data:`LEGACY_SETTINGS`; "" for others)."""
    return decode_attr(attrs[key]) if key in attrs else LEGACY_SETTINGS.get(key, "")


def open_store(path: Path, mode: str) -> h5py.File:
    """Open ``path`` with h5py; every failure becomes a one-line FeatxError saying what to do."""
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise FeatxError(f"{path}: no such feature store; create it with {extracting('DATA', out=path)}") from None
    except OSError as exc:
        text = str(exc).lower()
        if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
            raise FeatxError(f"{path}: permission denied; make the file readable"
                             f"{' and writable' if mode != 'r' else ''} or choose another store") from None
        if is_disk_full(exc):
            raise FeatxError(f"disk full while opening {path}; free space and run the same command again") from None
        if "unable to lock file" in text:
            if writer_active(path):
                raise FeatxError(f"{path} is being written by another featx command; wait for it to finish, "
                                 "then run this command again") from None
            raise FeatxError(f"{path} is open in another process (HDF5 file lock); wait for that process to "
                             "finish, then run this command again") from None
        if "truncated file" in text or "addr overflow" in text or "bad object header" in text or (
                path.is_file() and path.stat().st_size >= 8 and _has_hdf5_signature(path)):
            raise FeatxError(damaged(path, exc)) from None
        raise FeatxError(f"{path}: not a readable HDF5 feature store ({exc.__class__.__name__}); "
                         f"point to a file written by {extracting()}") from None


def _has_hdf5_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def damaged(path: Path, exc: BaseException | str) -> str:
    """The message for a store whose file cannot be read as written (``exc``: what h5py said)."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = reason.split("(", 1)[-1].split(",")[0].rstrip(")") if "(" in reason else reason
    return (f"{path}: the feature store is damaged ({reason}); delete it and run the same {extracting()} "
            f"again, or extract into another {arg('out')}")


def require_store(path: Path, h5: h5py.File) -> None:
    """FeatxError unless the open HDF5 file is a featx feature store."""
    if "schema_version" not in h5.attrs or "samples" not in h5 or "features" not in h5:
        raise FeatxError(f"{path}: HDF5 file is not a featx feature store (no samples/features groups); "
                         f"create one with {extracting()}")


def default_tap(path: Path, attrs: dict) -> str:
    """The tap a store gives when none is named: its ``default_tap`` attribute, written by the extraction;
    stores made before featx recorded it give the last tap of their extraction order."""
    name = str(attrs.get("default_tap") or "")
    if name:
        return name
    taps = stored_taps(attrs)
    if not taps:
        raise FeatxError(f"{path}: the store names no default tap; pass {arg('taps')}")
    return taps[-1]


def stored_taps(attrs: dict) -> list[str]:
    """The store's taps in extraction order (the ``taps`` setting; h5py lists /features alphabetically)."""
    taps = attrs.get("taps")
    return [] if taps is None or (isinstance(taps, str) and not taps) else [str(t) for t in np.atleast_1d(taps)]


def row_checksums(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row of ``values`` (as stored): crc32 of the row index and the row's little-endian bytes, + 2**32
    (so a checksum is never 0, the value of a row never written)."""
    values = np.ascontiguousarray(values)
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    out = np.empty(len(rows), dtype=np.uint64)
    for k, (i, row) in enumerate(zip(rows, values)):
        out[k] = (1 << 32) | zlib.crc32(row.tobytes(), zlib.crc32(int(i).to_bytes(8, "little")))
    return out


def rows_match(h5: h5py.File, rows: np.ndarray, taps: Sequence[str] | None = None,
               blocks: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Whether each of ``rows`` (sorted) matches its stored checksum in ``taps`` (default: every tap).

    ``blocks`` may give the tap rows already read (stored dtype), else they are read in pieces.
    """
    sums = h5["samples/checksum"]
    order = [str(t) for t in decode_attr(sums.attrs["taps"])]
    taps = list(taps) if taps is not None else order
    ok = np.ones(len(rows), dtype=bool)
    if not len(rows):
        return ok
    stored = sums[:][rows]
    step = 4096
    for tap in taps:
        j = order.index(tap)
        ds = h5["features"][tap]
        for a in range(0, len(rows), step):
            part = rows[a:a + step]
            block = blocks[tap][a:a + step] if blocks is not None else ds[part[0]:part[-1] + 1][part - part[0]]
            ok[a:a + step] &= row_checksums(block, part) == stored[a:a + step, j]
    return ok


def check_resumable(path: Path, h5: h5py.File, settings: dict) -> None:
    """FeatxError unless the store at ``path`` (open) may be resumed by a run of ``settings``: this schema
    version and the same identity settings (the first differing one is named)."""
    attrs = h5.attrs
    version = decode_attr(attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise FeatxError(f"{path}: store schema version {version}, this featx writes {SCHEMA_VERSION} (rows that "
                         "record their image files' content, so that a resume sees images changed since; the rows "
                         "of this store cannot be checked); delete the file to rebuild it, or choose another "
                         f"{arg('out')}")
    wanted = dict(settings)
    for key in IDENTITY_KEYS:
        if key not in wanted:
            continue
        have = setting(attrs, key)
        if not _same_setting(have, wanted[key]):
            raise FeatxError(f"{path} was made with {key}={have!r}, this run asks for {key}={wanted[key]!r}; "
                             f"use another {arg('out')} for different settings (or delete the file to rebuild it)")


def _same_setting(have, wanted) -> bool:
    """Whether a stored setting equals the one asked for (lists element by element, compared as text)."""
    if isinstance(have, (list, tuple)) or isinstance(wanted, (list, tuple)):
        return [str(x) for x in np.atleast_1d(have)] == [str(x) for x in np.atleast_1d(wanted)]
    return str(have) == str(wanted)
