"""The HDF5 feature store: one file per (dataset, backbone, weights, preprocessing), one dataset per tap.

Layout (schema version 2)::

    /                attrs: schema_version, featx_version, backbone, weights, weights_kind, weights_sha256,
                            weights_seed, input_size, mean, std, resize, dtype, taps, torch/torchvision
                            versions, created, dataset_fingerprint, data_root, layout
    /samples/path    vlen utf-8 (N)    relative to data_root: the key that aligns stores
    /samples/label   int64 (N)         index into attrs["classes"], -1 = unlabelled
    /samples/subject vlen utf-8 (N)    "" when unknown
    /samples/split   vlen utf-8 (N)    "" when none
    /samples/done    bool (N)          rows whose features are written (resume)
    /samples/error   utf-8, 512 bytes (N) why a row could not be extracted ("" when fine)
    /samples/checksum uint64 (N, T)    per row and tap (column order: its attrs["taps"]): crc32 of the row's
                                       stored bytes and its index, plus 2**32; 0 = never written
    /samples/network_role  vlen utf-8 (N)  only with fine-tuned weights: train, train-subject, val, "" (never
                     seen) or unknown (see featx.provenance); attrs["tuned_provenance"] says what was matched
    /features/<tap>  float32|float16 (N, D), chunked along rows, every chunk allocated (and zero-filled)
                     when the store is created

A store is reopened, never rebuilt: finished rows are kept and a store made with other settings is refused.

Crash consistency: the file gets its full size when it is created (in ``<out>.tmp``, renamed when complete),
so writing rows later only overwrites bytes already on disk: no HDF5 metadata changes while rows are written
and a full disk shows up when the store is created, not in the middle. Each batch writes its features and
checksums, flushes, and only then sets ``done`` and flushes again, so ``kill -9`` never leaves a row marked
done without its features. Checksums catch everything else (a lost write, a disk that lied): rows whose
features do not match are recomputed on resume, refused by ``load_features`` and listed by ``verify``.
One writer at a time: ``<out>.lock`` (``filelock``) is held from opening the store for writing to closing it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import traceback
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from featx.errors import FeatxError

SCHEMA_VERSION = 2
DEFAULT_TAPS = {"vgg16": "fc7", "alexnet": "fc7", "cnn": "fc"}
CHUNK_BYTES = 1 << 20
ERROR_BYTES = 512  # room for an error message (longer ones are cut)
# Settings that make two stores' features incomparable; a reopened store must match on each.
IDENTITY_KEYS = ("backbone", "weights", "weights_sha256", "weights_seed", "input_size", "mean", "std",
                 "resize", "dtype", "precision", "taps", "dataset_fingerprint")
_STR = h5py.string_dtype()


def _attr(value):
    """Python value -> something h5py stores as an attribute (None becomes "")."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__ is one) have no HDF5 conversion
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return np.array(value, dtype=_STR)
    return value


def _plain(value):
    """h5py attribute -> plain Python value."""
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return [str(x) for x in np.atleast_1d(a)] == [str(x) for x in np.atleast_1d(b)]
    return str(a) == str(b)


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise FeatxError(f"{path}: no such feature store; create it with `featx extract DATA --out {path}`") from None
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
            raise FeatxError(_damaged(path, exc)) from None
        raise FeatxError(f"{path}: not a readable HDF5 feature store ({exc.__class__.__name__}); "
                         "point to a file written by `featx extract`") from None


def _has_hdf5_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _damaged(path: Path, exc: BaseException | str) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = reason.split("(", 1)[-1].split(",")[0].rstrip(")") if "(" in reason else reason
    return (f"{path}: the feature store is damaged ({reason}); delete it and run the same `featx extract` "
            "again, or extract into another --out")


def lock_path(path: str | Path) -> Path:
    """The lock file a writer holds: ``<store>.lock`` beside the store."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def writer_active(path: str | Path) -> bool:
    """True while a featx command holds the store's writer lock."""
    from filelock import FileLock, Timeout

    lock = lock_path(path)
    if not lock.exists():
        return False
    probe = FileLock(lock, timeout=0, is_singleton=False, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:
        return False
    probe.release()
    return False


def _acquire_writer_lock(path: Path):
    """Hold ``<store>.lock`` (an OS lock through ``filelock``; released by the kernel if the process dies)."""
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise FeatxError(f"{path} is being written by another featx command (it holds {lock_path(path).name}); "
                         "wait for it to finish, then run this command again") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise FeatxError(f"disk full while creating {lock_path(path)}; free space and run the same command "
                             "again") from None
        raise FeatxError(f"cannot create the lock file {lock_path(path)} ({exc.strerror or exc}); "
                         "choose an --out in a folder you can write to") from None
    return lock


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC however it surfaces (h5py reports write failures as RuntimeError text)."""
    return getattr(exc, "errno", None) == errno.ENOSPC or any(
        needle in str(exc) for needle in ("No space left", "errno = 28", "errno 28"))


class FeatureStore:
    """A feature file open for writing rows batch by batch (use ``open_for_extraction``).

    It holds the store's writer lock until ``close``. After a failed write it makes no further HDF5 calls
    but closing the file.
    """

    def __init__(self, path: Path, h5: h5py.File, lock=None):
        self.path = path
        self.h5 = h5
        self.lock = lock
        self.taps = [str(t) for t in _plain(h5["samples/checksum"].attrs["taps"])]
        self._done = h5["samples/done"][:]
        self._errored = h5["samples/error"].asstr()[:] != ""
        self.failed = False
        self.repaired = 0  # rows marked done whose checksums did not match when the store was reopened

    @classmethod
    def open_for_extraction(cls, path: str | Path, settings: dict, samples: Sequence, classes: Sequence[str],
                            tap_dims: dict[str, int], *, extra_attrs: dict | None = None,
                            roles: Sequence[str] | None = None) -> "FeatureStore":
        """Take the writer lock, then create the store or reopen it for resuming when it was made with the
        same settings; rows marked done whose checksums do not match are marked not done (recomputed).

        ``samples`` are ``featx.data.Sample`` rows; ``settings`` the root attributes (see module doc);
        ``extra_attrs`` more root attributes written only when the store is created.
        A store whose settings differ is refused with a message naming the first differing setting.
        ``roles``: the fine-tuned network's role of each sample (``/samples/network_role``), written at creation.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _acquire_writer_lock(path)
        try:
            if path.exists():
                h5 = _open(path, "r+")
                try:
                    _require_store(path, h5)
                    store = cls._resume(path, h5, lock, dict(settings, taps=list(tap_dims)))
                except BaseException:
                    _close_quietly(h5)
                    raise
                return store
            cls._create(path, dict(settings, **(extra_attrs or {})), samples, classes, tap_dims, roles)
            return cls(path, _open(path, "r+"), lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _resume(cls, path: Path, h5: h5py.File, lock, settings: dict) -> "FeatureStore":
        try:
            _check_resumable(path, h5, settings)
            store = cls(path, h5, lock)
            bad = np.flatnonzero(store._done)[~_rows_match(h5, np.flatnonzero(store._done))]
        except FeatxError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise FeatxError(_damaged(path, exc)) from None
        if bad.size:
            store._done[bad] = False
            store.repaired = int(bad.size)
            store.h5["samples/done"][:] = store._done
            store.h5.flush()
        return store

    @classmethod
    def _create(cls, path: Path, settings: dict, samples: Sequence, classes: Sequence[str],
                tap_dims: dict[str, int], roles: Sequence[str] | None = None) -> None:
        """Write the complete store (full size) to ``<path>.tmp`` and rename it: it exists whole or not at all."""
        tmp = path.with_name(path.name + ".tmp")
        need = _bytes_needed(samples, tap_dims, np.dtype(settings.get("dtype", "float32")))
        full = _reserve(tmp, need)  # a full disk is found here, by the OS, before HDF5 writes a byte
        if not full:
            try:
                h5 = h5py.File(tmp, "w")
                try:
                    cls._initialise(h5, settings, samples, classes, tap_dims)
                    if roles is not None:
                        cls._write_roles(h5, roles, settings)
                    h5.close()  # a failure here (the final flush) must not leave a half-written store behind
                except BaseException as exc:
                    full = isinstance(exc, (OSError, RuntimeError, ValueError)) and is_disk_full(exc)
                    _forget(exc)
                    _close_quietly(h5)
                    raise
                tmp.replace(path)
            except BaseException as exc:
                tmp.unlink(missing_ok=True)
                if not full:
                    raise
                _forget(exc)
        if full:  # raised outside the handler, so no traceback keeps h5py objects of the failed file alive
            raise FeatxError(f"disk full while creating {path} (the store needs about {need / 1e6:.1f} MB); "
                             "free space and run the same command again")

    @staticmethod
    def _initialise(h5: h5py.File, settings: dict, samples: Sequence, classes: Sequence[str],
                    tap_dims: dict[str, int]) -> None:
        import featx
        import torch
        import torchvision

        attrs = dict(settings)
        attrs.update(schema_version=SCHEMA_VERSION, featx_version=featx.__version__,
                     torch_version=torch.__version__, torchvision_version=torchvision.__version__,
                     h5py_version=h5py.__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     taps=list(tap_dims))
        for key, value in attrs.items():
            h5.attrs[key] = _attr(value)
        n = len(samples)
        grp = h5.create_group("samples")
        grp.attrs["classes"] = np.array(list(classes), dtype=_STR)
        index = {c: i for i, c in enumerate(classes)}
        grp.create_dataset("path", data=np.array([s.path for s in samples], dtype=object), dtype=_STR)
        grp.create_dataset("label", data=np.array([index[s.label] if s.label is not None else -1 for s in samples],
                                                  dtype=np.int64))
        grp.create_dataset("subject", data=np.array([s.subject or "" for s in samples], dtype=object), dtype=_STR)
        grp.create_dataset("split", data=np.array([s.split or "" for s in samples], dtype=object), dtype=_STR)
        grp.create_dataset("done", data=np.zeros(n, dtype=bool))
        # fixed size, so recording an error overwrites bytes already on disk (a vlen string would grow the file)
        grp.create_dataset("error", shape=(n,), dtype=h5py.string_dtype("utf-8", ERROR_BYTES), dcpl=_early(),
                           fill_time="alloc")
        checksum = grp.create_dataset("checksum", data=np.zeros((n, len(tap_dims)), dtype=np.uint64))
        checksum.attrs["taps"] = np.array(list(tap_dims), dtype=_STR)
        feats = h5.create_group("features")
        dtype = np.dtype(settings.get("dtype", "float32"))
        for tap, dim in tap_dims.items():
            rows = max(1, min(max(n, 1), CHUNK_BYTES // (dim * dtype.itemsize)))
            # every chunk allocated and zero-filled now: writing rows later never grows the file
            ds = feats.create_dataset(tap, shape=(n, dim), maxshape=(None, dim), dtype=dtype, chunks=(rows, dim),
                                      dcpl=_early(), fillvalue=0, fill_time="alloc")
            ds.attrs["dim"] = dim
            ds.attrs["tap"] = tap
            ds.attrs["backbone"] = settings.get("backbone", "")

    @staticmethod
    def _write_roles(h5: h5py.File, roles: Sequence[str], settings: dict) -> None:
        if len(roles) != h5["samples/done"].shape[0]:
            raise ValueError("one network role per sample row is needed")
        h5["samples"].create_dataset("network_role", data=np.array(list(roles), dtype=object), dtype=_STR)
        if "tuned_provenance" in settings:
            h5.attrs["tuned_provenance"] = str(settings["tuned_provenance"])

    # -- writing -----------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self._done.shape[0])

    @property
    def done(self) -> np.ndarray:
        return self._done.copy()

    def write_rows(self, indices: np.ndarray, features: dict[str, np.ndarray]) -> None:
        """Write features of sample rows ``indices`` (sorted or not) with their checksums, flush, then mark
        them done and flush again."""
        self._checked(self._write_rows, indices, features)

    def _write_rows(self, indices: np.ndarray, features: dict[str, np.ndarray]) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        order = np.argsort(indices)
        indices = indices[order]
        # a contiguous run writes as one slice (fast); otherwise h5py takes increasing indices
        where = slice(int(indices[0]), int(indices[-1]) + 1) if _contiguous(indices) else indices
        sums = np.zeros((indices.size, len(self.taps)), dtype=np.uint64)
        for j, tap in enumerate(self.taps):
            ds = self.h5["features"][tap]
            values = np.ascontiguousarray(np.asarray(features[tap])[order], dtype=ds.dtype)
            ds[where] = values
            sums[:, j] = row_checksums(values, indices)
        self.h5["samples/checksum"][where] = sums
        stale = indices[self._errored[indices]]
        if stale.size:  # a retried row that failed before; other rows keep "" (no string written per batch)
            err = self.h5["samples/error"]
            for i in stale:
                err[int(i)] = b""
        self.h5.flush()  # features and checksums reach the OS before any of these rows is marked done
        self.h5["samples/done"][where] = True
        self.h5.flush()
        self._done[indices] = True
        self._errored[indices] = False

    def mark_errors(self, indices: Sequence[int], messages: Sequence[str]) -> None:
        """Record why rows could not be extracted; they stay not-done so a re-run retries them."""
        self._checked(self._mark_errors, indices, messages)

    def _mark_errors(self, indices: Sequence[int], messages: Sequence[str]) -> None:
        err = self.h5["samples/error"]
        for i, msg in zip(indices, messages):
            err[int(i)] = _fit(msg, err.dtype)
            self._errored[int(i)] = True
        self.h5.flush()

    def _checked(self, write, *args) -> None:
        """Run a write; after a failure make no further HDF5 writes, and report a full disk as one line."""
        if self.failed:
            raise FeatxError(f"{self.path}: an earlier write failed; run the same command again")
        full = False
        try:
            write(*args)
        except (OSError, RuntimeError, ValueError) as exc:
            self.failed = True
            full = is_disk_full(exc)
            _forget(exc)
            if not full:
                raise
        if full:  # raised outside the handler: no traceback holds h5py objects of the failed write
            raise FeatxError(f"disk full while writing {self.path}; free space and run the same command "
                             f"again (the {int(self._done.sum())} finished rows are kept)")

    def close(self) -> None:
        try:
            _close_quietly(self.h5) if self.failed else self.h5.close() if self.h5.id.valid else None
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except (OSError, RuntimeError):
            if exc_type is None:  # a failing close must not hide the error that is already on its way
                raise


def _early():
    """Dataset creation properties that allocate (and fill) the dataset's space when it is created."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _bytes_needed(samples: Sequence, tap_dims: dict[str, int], dtype: np.dtype) -> int:
    """A generous bound of a new store's size (features in whole chunks, sample table, HDF5 overhead)."""
    n = len(samples)
    total = 0
    for dim in tap_dims.values():
        rows = max(1, min(max(n, 1), CHUNK_BYTES // (dim * dtype.itemsize)))
        total += -(-max(n, 1) // rows) * rows * dim * dtype.itemsize
    text = sum(len(s.path.encode()) + len((s.subject or "").encode()) + len((s.split or "").encode()) for s in samples)
    total += text + n * (ERROR_BYTES + 8 * len(tap_dims) + 9 + 3 * 32)
    return int(total * 1.05) + (256 << 10)


def _reserve(tmp: Path, size: int) -> bool:
    """Make ``tmp`` and allocate ``size`` bytes for it; True when the disk is full (``tmp`` is then removed).

    HDF5 itself must never meet a full disk: after a failed write its state is broken and the process may
    crash when the file is closed. Creating the store truncates ``tmp`` and reuses the space just freed.
    """
    try:
        with open(tmp, "wb") as fh:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fh.fileno(), 0, size)
        return False
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc) or exc.errno == errno.EDQUOT:
            return True
        raise FeatxError(f"cannot write {tmp} ({exc.strerror or exc}); choose an --out in a folder you can "
                         "write to") from None


def _forget(exc: BaseException) -> None:
    """Drop the local variables of the frames an exception went through (h5py objects of a failed write):
    freed after their file is closed, HDF5 can crash the process."""
    while exc is not None:
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__context__


def _close_quietly(h5: h5py.File) -> None:
    try:
        if h5.id.valid:
            h5.close()
    except (OSError, RuntimeError, ValueError):
        pass


def _fit(text: str, dtype):
    """``text`` as UTF-8 bytes cut to a fixed-length string dtype's size (whole characters)."""
    if dtype.kind != "S":
        return text  # a variable-length string dataset
    return text.encode("utf-8")[:dtype.itemsize].decode("utf-8", errors="ignore").encode("utf-8")


def row_checksums(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row of ``values`` (as stored): crc32 of the row index and the row's little-endian bytes, + 2**32
    (so a checksum is never 0, the value of a row never written)."""
    values = np.ascontiguousarray(values)
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    out = np.empty(len(rows), dtype=np.uint64)
    for k, (i, row) in enumerate(zip(rows, values)):
        out[k] = (1 << 32) | zlib.crc32(row.tobytes(), zlib.crc32(int(i).to_bytes(8, "little")))
    return out


def _rows_match(h5: h5py.File, rows: np.ndarray, taps: Sequence[str] | None = None,
                blocks: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Whether each of ``rows`` (sorted) matches its stored checksum in ``taps`` (default: every tap).

    ``blocks`` may give the tap rows already read (stored dtype), else they are read in pieces.
    """
    sums = h5["samples/checksum"]
    order = [str(t) for t in _plain(sums.attrs["taps"])]
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


def _check_resumable(path: Path, h5: h5py.File, settings: dict) -> None:
    attrs = h5.attrs
    version = _plain(attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise FeatxError(f"{path}: store schema version {version}, this featx writes {SCHEMA_VERSION} (rows with "
                         "checksums); delete the file to rebuild it, or choose another --out")
    wanted = dict(settings)
    for key in IDENTITY_KEYS:
        if key not in wanted:
            continue
        have = _plain(attrs.get(key, ""))
        if not _same(have, wanted[key]):
            raise FeatxError(f"{path} was made with {key}={have!r}, this run asks for {key}={wanted[key]!r}; "
                             "use another --out for different settings (or delete the file to rebuild it)")


def _contiguous(indices: np.ndarray) -> bool:
    return indices.size > 0 and int(indices[-1]) - int(indices[0]) + 1 == indices.size


# -- reading ---------------------------------------------------------------------------------------------------
def store_settings(path: str | Path) -> dict:
    """The root attributes of a store as plain Python values."""
    path = Path(path)
    with _open(path, "r") as h5:
        _require_store(path, h5)
        return {k: _plain(v) for k, v in h5.attrs.items()}


def _require_store(path: Path, h5: h5py.File) -> None:
    if "schema_version" not in h5.attrs or "samples" not in h5 or "features" not in h5:
        raise FeatxError(f"{path}: HDF5 file is not a featx feature store (no samples/features groups); "
                         "create one with `featx extract`")


@dataclass
class FeatureSet:
    """Features of one or more taps/stores, aligned row by row, with labels, subjects and splits."""

    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    paths: np.ndarray
    subjects: np.ndarray
    splits: np.ndarray
    name: str
    backbone: str
    tap: str
    settings: list[dict] = field(default_factory=list)
    fingerprint: str = ""
    root: str = ""
    positive: str | None = None
    stores: list[str] = field(default_factory=list)
    store_taps: list[list[str]] = field(default_factory=list)   # the taps read from each store, in order
    partial: str | None = None   # "156 of 330 rows" when loaded with allow_partial from an unfinished store
    excluded: int = 0            # images recorded as unreadable, left out
    # per row, what the fine-tuned network of the features did with it (featx.provenance); None: not tuned
    roles: np.ndarray | None = None
    tuned: list[dict] = field(default_factory=list)             # each tuned store's tuned_provenance attribute

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def subjects_known(self) -> bool:
        """True when every row has a subject id (then subject-grouped splits are possible)."""
        return len(self.subjects) > 0 and bool(np.all(self.subjects != ""))

    def select(self, rows) -> "FeatureSet":
        """A new FeatureSet of the given boolean mask or indices."""
        return replace(self, X=self.X[rows], y=self.y[rows], paths=self.paths[rows],
                       subjects=self.subjects[rows], splits=self.splits[rows],
                       roles=None if self.roles is None else self.roles[rows])


def _split_spec(spec) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, (str, Path)):
        return [p for p in str(spec).split("+") if p]
    out: list[str] = []
    for item in spec:
        out.extend(_split_spec(item))
    return out


def _read_one(path: Path, taps: list[str] | None, allow_partial: bool = False) -> dict:
    with _open(path, "r") as h5:
        _require_store(path, h5)
        try:
            return _read_open(path, h5, taps, allow_partial)
        except (OSError, RuntimeError, KeyError) as exc:
            raise FeatxError(_damaged(path, exc)) from None


def _read_open(path: Path, h5: h5py.File, taps: list[str] | None, allow_partial: bool) -> dict:
    attrs = {k: _plain(v) for k, v in h5.attrs.items()}
    backbone = str(attrs.get("backbone", ""))
    available = list(h5["features"].keys())
    chosen = taps or [DEFAULT_TAPS.get(backbone, available[-1] if available else "")]
    for tap in chosen:
        if tap not in available:
            raise FeatxError(f"{path}: no tap {tap!r} in this store; it holds {', '.join(available) or 'none'} "
                             "(extract it with `featx extract --taps`)")
    s = h5["samples"]
    done = s["done"][:]
    errors = s["error"].asstr()[:]
    failed = ~done & (errors != "")
    unfinished = int(np.sum(~done & (errors == "")))
    rows = np.flatnonzero(done)
    n = int(done.size)
    if unfinished and not allow_partial:
        more = f" ({int(failed.sum())} unreadable images excluded)" if failed.any() else ""
        raise FeatxError(f"{path}: {rows.size} of {n} rows extracted{more}; finish it by running the same "
                         "`featx extract` again, or pass --allow-partial")
    if not rows.size:
        raise FeatxError(f"{path}: no finished rows yet; run `featx extract` to fill the store")
    raw = {}
    for tap in chosen:
        ds = h5["features"][tap]
        if rows[-1] >= ds.shape[0]:
            raise FeatxError(f"{path}: tap {tap} holds {ds.shape[0]} rows but row {rows[-1]} is marked done; "
                             "the store is damaged: extract it again into a new --out")
        raw[tap] = ds[: int(rows[-1]) + 1][rows]
    paths = s["path"].asstr()[:]
    if "checksum" in s:  # schema 1 stores have none
        bad = rows[~_rows_match(h5, rows, chosen, blocks=raw)]
        if bad.size:
            raise FeatxError(f"{path}: {bad.size} of the {rows.size} finished rows do not match their checksums "
                             f"(first: {paths[bad[0]]}); the store is damaged: run the same `featx extract` again "
                             "to recompute them")
    blocks = [raw[tap].astype(np.float32, copy=False) for tap in chosen]
    for tap, block in zip(chosen, blocks):  # e.g. a diverged fine-tuned network, or float16 overflow
        bad = rows[~np.isfinite(block).all(axis=1)]
        if bad.size:
            raise FeatxError(f"{path}: {bad.size} row(s) of tap {tap} hold NaN or infinite features (first: "
                             f"{paths[bad[0]]}); extract again with other weights, or --dtype float32 if the "
                             "store is float16")
    return dict(
        X=np.hstack(blocks) if len(blocks) > 1 else blocks[0],
        paths=paths[rows],
        labels=s["label"][:][rows],
        classes=[str(c) for c in _plain(s.attrs["classes"])],
        subjects=s["subject"].asstr()[:][rows],
        splits=s["split"].asstr()[:][rows],
        roles=s["network_role"].asstr()[:][rows] if "network_role" in s else None,
        attrs=attrs, taps=chosen, backbone=backbone,
        n_samples=n, unfinished=unfinished, failed_paths=set(paths[failed]),
    )


def _weights_label(attrs: dict) -> str:
    """``vgg16`` for torchvision or random weights; ``cnn[cnn/best.pt]`` for weights read from a file."""
    backbone = str(attrs.get("backbone", ""))
    if attrs.get("weights_kind") != "file":
        return backbone
    source = Path(str(attrs.get("weights", "")))
    return f"{backbone}[{'/'.join(source.parts[-2:])}]"


def load_features(stores, taps: str | Sequence[str] | None = None, *, splits: Sequence[str] | None = None,
                  labelled: bool | None = None, allow_partial: bool = False) -> FeatureSet:
    """Load finished rows of one or more stores as one feature matrix.

    ``stores`` is ``"a.h5"``, ``"a.h5+b.h5"`` or a list; ``taps`` is ``"fc7"``, ``"fc7+pool5"`` or ``None``
    (the backbone's default tap). Several stores are joined on the sample path and must hold the same
    samples. ``splits`` keeps those splits; ``labelled`` keeps labelled (True) or unlabelled (False) rows.
    Images recorded as unreadable are left out (counted in ``excluded``). A store with rows not yet extracted
    is refused unless ``allow_partial``; then ``partial`` says how many rows there are (``"156 of 330 rows"``).
    Rows whose features do not match their checksums are refused (the store is damaged).
    """
    paths = [Path(p) for p in _split_spec(stores)]
    if not paths:
        raise FeatxError("no feature store given; pass a file written by `featx extract`")
    tap_list = _split_spec(taps) or None
    parts = [_read_one(p, tap_list, allow_partial) for p in paths]
    first = parts[0]
    failed = set().union(*(part["failed_paths"] for part in parts))
    unfinished = any(part["unfinished"] for part in parts)
    if len(parts) > 1:
        same_data = len({str(part["attrs"].get("dataset_fingerprint")) for part in parts}) == 1
        common = set.intersection(*(set(part["paths"]) for part in parts)) if unfinished and same_data else None
        for part in parts:  # an image unreadable in one store is left out of all
            keep = ~np.isin(part["paths"], list(failed))
            if common is not None:
                keep &= np.isin(part["paths"], list(common))
            if not keep.all():
                for key in ("X", "paths", "labels", "subjects", "splits", "roles"):
                    if part[key] is not None:
                        part[key] = part[key][keep]
    for p, part in zip(paths[1:], parts[1:]):
        if part["classes"] != first["classes"]:
            raise FeatxError(f"{p} has classes {part['classes']}, {paths[0]} has {first['classes']}; "
                             "fuse stores extracted from the same data")
        if set(part["paths"]) != set(first["paths"]):
            only_a = len(set(first["paths"]) - set(part["paths"]))
            only_b = len(set(part["paths"]) - set(first["paths"]))
            raise FeatxError(f"{paths[0]} and {p} do not hold the same samples ({only_a} only in the first, "
                             f"{only_b} only in the second); extract both from the same data and splits")
        pos = {q: i for i, q in enumerate(part["paths"])}
        order = np.array([pos[q] for q in first["paths"]])
        if not (np.array_equal(part["labels"][order], first["labels"])
                and np.array_equal(part["subjects"][order], first["subjects"])):
            raise FeatxError(f"{paths[0]} and {p} disagree on labels or subjects of the same paths; "
                             "they were extracted from different data")
        part["X"] = part["X"][order]
        if part["roles"] is not None:
            part["roles"] = part["roles"][order]
    X = np.hstack([part["X"] for part in parts]) if len(parts) > 1 else first["X"]
    tapname = "+".join(first["taps"])
    names = [f"{_weights_label(part['attrs'])}/{'+'.join(part['taps'])}" for part in parts]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part["attrs"].get("dataset_fingerprint", "")).encode())
        digest.update(str(part["attrs"].get("weights_sha256", "")).encode())
        digest.update(str(part["attrs"].get("weights", "")).encode())
        digest.update("+".join(part["taps"]).encode())
    classes = first["classes"]
    fs = FeatureSet(
        X=np.ascontiguousarray(X, dtype=np.float32), y=first["labels"].astype(np.int64), classes=classes,
        paths=first["paths"], subjects=first["subjects"], splits=first["splits"],
        name="+".join(names), backbone="+".join(part["backbone"] for part in parts),
        tap=tapname if len(parts) == 1 else "+".join("+".join(part["taps"]) for part in parts),
        settings=[part["attrs"] for part in parts], fingerprint=digest.hexdigest(),
        root=str(first["attrs"].get("data_root", "")), positive="all" if "all" in classes else None,
        stores=[str(p) for p in paths], store_taps=[list(part["taps"]) for part in parts],
        partial=f"{len(first['paths'])} of {first['n_samples']} rows" if unfinished else None,
        excluded=len(failed),
        roles=_fuse_roles([part["roles"] for part in parts]),
        tuned=[_tuned_attr(part["attrs"], p) for p, part in zip(paths, parts) if part["roles"] is not None],
    )
    keep = np.ones(len(fs), dtype=bool)
    if splits:
        known = sorted(set(fs.splits))
        missing = [s for s in splits if s not in known]
        if missing:
            raise FeatxError(f"{paths[0]}: no rows of split {', '.join(missing)}; the store has {', '.join(known)}")
        keep &= np.isin(fs.splits, list(splits))
    if labelled is True:
        keep &= fs.y >= 0
    elif labelled is False:
        keep &= fs.y < 0
    return fs if keep.all() else fs.select(keep)


def _fuse_roles(per_store: list) -> np.ndarray | None:
    """One role per row of fused stores: the most-seen role any of their networks gave the row."""
    from featx.provenance import ROLES

    have = [np.asarray(r).astype(str) for r in per_store if r is not None]
    if not have:
        return None
    rank = {"train": 0, "train-subject": 1, "unknown": 2, "val": 3, "": 4}
    out = have[0].astype(object)
    for other in have[1:]:
        pick = np.array([rank.get(b, 0) < rank.get(a, 0) for a, b in zip(out, other)], dtype=bool)
        out[pick] = other[pick]
    bad = set(out) - set(ROLES)
    if bad:
        raise FeatxError(f"unknown network role {sorted(bad)[0]!r} in the store; it was written by another featx")
    return out.astype(str)


def _role_counts(roles: np.ndarray) -> dict[str, int]:
    from featx.provenance import ROLES

    order = [r for r in ROLES if r in set(roles)] + sorted(set(roles) - set(ROLES))
    return {r or "unseen": int(np.sum(roles == r)) for r in order}


def _tuned_attr(attrs: dict, path: Path) -> dict:
    from featx.provenance import ATTR, parse_attr

    info = parse_attr(attrs.get(ATTR)) or {"provenance": "missing"}
    info["store"] = str(path)
    return info


def summarize(path: str | Path) -> dict:
    """What ``featx info`` shows: settings, taps with dimensions, rows done, unfinished and failed (unreadable
    images, the first 20 with their error), folders discovery could not read, counts by split and class."""
    path = Path(path)
    with _open(path, "r") as h5:
        _require_store(path, h5)
        try:
            return _summarize(path, h5)
        except (OSError, RuntimeError, KeyError) as exc:
            raise FeatxError(_damaged(path, exc)) from None


def _summarize(path: Path, h5: h5py.File) -> dict:
    attrs = {k: _plain(v) for k, v in h5.attrs.items()}
    s = h5["samples"]
    classes = [str(c) for c in _plain(s.attrs["classes"])]
    labels = s["label"][:]
    splits = s["split"].asstr()[:]
    done = s["done"][:]
    errors = s["error"].asstr()[:]
    order = [t for t in _plain(attrs.get("taps", [])) if t in h5["features"]] or list(h5["features"])
    taps = {tap: {"dim": int(ds.shape[1]), "rows": int(ds.shape[0]), "dtype": str(ds.dtype),
                  "chunks": list(ds.chunks or ())} for tap, ds in ((t, h5["features"][t]) for t in order)}
    counts: dict[str, dict[str, int]] = {}
    for split in sorted(set(splits)):
        sel = splits == split
        row = {c: int(np.sum(labels[sel] == i)) for i, c in enumerate(classes)}
        row["unlabelled"] = int(np.sum(labels[sel] < 0))
        counts[split or "(none)"] = row
    subjects = s["subject"].asstr()[:]
    failed = [{"path": p, "error": e} for p, e, d in zip(s["path"].asstr()[:], errors, done) if e and not d]
    folders = attrs.get("unreadable_folders") or []
    roles = s["network_role"].asstr()[:] if "network_role" in s else None
    return {
        "file": str(path), "samples": int(len(done)), "done": int(done.sum()), "errors": len(failed),
        "unfinished": int(np.sum(~done & (errors == ""))), "failed": failed[:20],
        "unreadable_folders": [str(f) for f in np.atleast_1d(folders)] if len(folders) else [],
        "classes": classes, "subjects": len(set(subjects) - {""}),
        "taps": taps, "counts": counts, "settings": attrs,
        "network_roles": None if roles is None else _role_counts(roles),
    }


def verify(path: str | Path) -> dict:
    """Check every finished row of a store against its checksums (what ``featx info --verify`` runs).

    Returns ``{"file", "checked", "bad", "bad_paths"}`` (``bad_paths``: the first 20). Running the same
    ``featx extract`` again recomputes the bad rows. Schema-1 stores have no checksums and are refused.
    """
    path = Path(path)
    with _open(path, "r") as h5:
        _require_store(path, h5)
        if "checksum" not in h5["samples"]:
            raise FeatxError(f"{path}: store schema version {_plain(h5.attrs.get('schema_version', -1))} has no "
                             "row checksums to verify; extract it again with this featx into another --out")
        try:
            rows = np.flatnonzero(h5["samples/done"][:])
            bad = rows[~_rows_match(h5, rows)]
            paths = h5["samples/path"].asstr()[:]
        except (OSError, RuntimeError, KeyError) as exc:
            raise FeatxError(_damaged(path, exc)) from None
    return {"file": str(path), "checked": int(rows.size), "bad": int(bad.size),
            "bad_paths": [str(paths[i]) for i in bad[:20]]}


def settings_json(settings: dict) -> str:
    """Settings as compact JSON (for cards and reports)."""
    return json.dumps(settings, sort_keys=True, default=str)


def sample_table(path: str | Path) -> dict:
    """Every row of a store, finished or not, in store order: ``path``, ``split``, ``done``, ``error``."""
    path = Path(path)
    with _open(path, "r") as h5:
        _require_store(path, h5)
        s = h5["samples"]
        return {"path": s["path"].asstr()[:], "split": s["split"].asstr()[:], "done": s["done"][:].astype(bool),
                "error": s["error"].asstr()[:]}
