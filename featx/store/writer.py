"""Writing a feature store: created whole in ``<out>.tmp`` at its full size, then filled row by row.

Crash consistency: the file gets its full size when it is created (in ``<out>.tmp``, renamed when complete),
so writing rows later only overwrites bytes already on disk: no HDF5 metadata changes while rows are written
and a full disk shows up when the store is created, not in the middle. Each batch writes its features and
checksums, flushes, and only then sets ``done`` and flushes again, so ``kill -9`` never leaves a row marked
done without its features. Checksums catch everything else (a lost write, a disk that lied): rows whose
features do not match are recomputed on resume, refused by ``load_features`` and listed by ``verify``.
One writer at a time: ``<out>.lock`` (``filelock``) is held from opening the store for writing to closing it.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from featx import __version__
from featx.errors import FeatxError
from featx.files import is_disk_full
from featx.store.describe import write_descriptions
from featx.store.lock import WriterLock, acquire_writer_lock
from featx.store.rowid import FILE, bad_metadata, create_row_ids, metadata_message, read_files
from featx.store.schema import (
    CHUNK_BYTES,
    ERROR_BYTES,
    SCHEMA_VERSION,
    STRING,
    VERSION_KEYS,
    check_resumable,
    damaged,
    decode_attr,
    encode_attr,
    joined_versions,
    open_store,
    require_store,
    row_checksums,
    rows_match,
)
from featx.store.shards import check_shard_resume, check_writable, write_index
from featx.store.whole import close_quietly, forget, write_whole


class FeatureStore:
    """A feature file open for writing rows batch by batch (use ``open_for_extraction``).

    It holds the store's writer lock until ``close``. After a failed write it makes no further HDF5 calls
    but closing the file.
    """

    def __init__(self, path: Path, h5: h5py.File, lock: WriterLock | None = None):
        self.path = path
        self.h5 = h5
        self.lock = lock
        self.taps = [str(t) for t in decode_attr(h5["samples/checksum"].attrs["taps"])]
        self._done = h5["samples/done"][:]
        self._errored = h5["samples/error"].asstr()[:] != ""
        self.failed = False
        self.repaired = 0  # rows marked done whose checksums did not match when the store was reopened
        self._versions: dict[str, str] = {}  # this run's library versions, recorded with its first rows

    @classmethod
    def open_for_extraction(cls, path: str | Path, settings: dict, samples: Sequence, classes: Sequence[str],
                            tap_dims: dict[str, int], *, default_tap: str | None = None,
                            extra_attrs: dict | None = None, roles: Sequence[str] | None = None,
                            tap_descriptions: dict[str, str] | None = None, row_index=None) -> FeatureStore:
        """Take the writer lock, then create the store or reopen it for resuming when it was made with the
        same settings; rows marked done whose checksums do not match are marked not done (recomputed).

        ``samples`` are ``featx.data.Sample`` rows; ``settings`` the root attributes (see :mod:`featx.store`);
        ``tap_dims`` each tap's feature dimension, in extraction order. ``default_tap`` (the tap readers load
        when none is named; default: the last of ``tap_dims``) and ``extra_attrs`` (more root attributes) are
        written only when the store is created.
        A store whose settings differ is refused with a message naming the first differing setting.
        ``roles``: the fine-tuned network's role of each sample (``/samples/network_role``), written at creation.
        ``tap_descriptions``: what each tap holds, written at creation as its dataset's ``description``
        attribute (with the other self-describing attributes of :mod:`featx.store.describe`).
        ``row_index``: a shard's rows' indices in the single-run order (``/samples/index``, see
        :mod:`featx.store.shards`), written at creation; a shard is resumed only as the same shard.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = acquire_writer_lock(path)
        try:
            if path.exists():
                h5 = open_store(path, "r+")
                try:
                    require_store(path, h5)
                    store = cls._resume(path, h5, lock, dict(settings, taps=list(tap_dims)))
                except BaseException:
                    close_quietly(h5)
                    raise
                return store
            attrs = dict(settings, default_tap=default_tap or next(reversed(tap_dims), ""))
            cls._create(path, dict(attrs, **(extra_attrs or {})), samples, classes, tap_dims, roles,
                        tap_descriptions, row_index)
            return cls(path, open_store(path, "r+"), lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _resume(cls, path: Path, h5: h5py.File, lock, settings: dict) -> FeatureStore:
        try:
            check_writable(path, h5)
            check_shard_resume(path, h5.attrs, settings)  # before the fingerprint, which differs per shard
            check_resumable(path, h5, settings)
            meta = bad_metadata(h5)  # the sample table itself cannot be recomputed: refused
            if meta is not None and meta.size:
                raise FeatxError(metadata_message(path, h5, meta))
            store = cls(path, h5, lock)
            store._versions = {k: str(settings[k]) for k in VERSION_KEYS if k in settings}
            bad = np.flatnonzero(store._done)[~rows_match(h5, np.flatnonzero(store._done))]
        except FeatxError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise FeatxError(damaged(path, exc)) from None
        if bad.size:
            store._done[bad] = False
            store.repaired = int(bad.size)
            store.h5["samples/done"][:] = store._done
            store.h5.flush()
        return store

    @classmethod
    def _create(cls, path: Path, settings: dict, samples: Sequence, classes: Sequence[str],
                tap_dims: dict[str, int], roles: Sequence[str] | None = None,
                tap_descriptions: dict[str, str] | None = None, row_index=None) -> None:
        """Write the complete store (full size) to ``<path>.tmp`` and rename it: it exists whole or not at all."""
        need = _bytes_needed(samples, tap_dims, np.dtype(settings.get("dtype", "float32")))

        def fill(h5: h5py.File) -> None:
            cls._initialise(h5, settings, samples, classes, tap_dims)
            if roles is not None:
                cls._write_roles(h5, roles, settings)
            write_descriptions(h5, classes, tap_descriptions, SCHEMA_VERSION)
            if row_index is not None:
                write_index(h5, row_index)

        write_whole(path, need, fill, f"disk full while creating {path} (the store needs about {need / 1e6:.1f} "
                    "MB); free space and run the same command again")

    @staticmethod
    def _initialise(h5: h5py.File, settings: dict, samples: Sequence, classes: Sequence[str],
                    tap_dims: dict[str, int], features: bool = True) -> None:
        """Write the attributes and sample table of a new store, and (``features``) its zero-filled taps."""
        attrs = dict(settings)
        attrs.update(schema_version=SCHEMA_VERSION, featx_version=__version__, h5py_version=h5py.__version__,
                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"), taps=list(tap_dims))
        for key, value in attrs.items():
            h5.attrs[key] = encode_attr(value)
        n = len(samples)
        grp = h5.create_group("samples")
        grp.attrs["classes"] = np.array(list(classes), dtype=STRING)
        index = {c: i for i, c in enumerate(classes)}
        paths, subjects, splits = ([getattr(s, key) or "" for s in samples] for key in ("path", "subject", "split"))
        labels = np.array([index[s.label] if s.label is not None else -1 for s in samples], dtype=np.int64)
        grp.create_dataset("path", data=np.array(paths, dtype=object), dtype=STRING)
        grp.create_dataset("label", data=labels)
        grp.create_dataset("subject", data=np.array(subjects, dtype=object), dtype=STRING)
        grp.create_dataset("split", data=np.array(splits, dtype=object), dtype=STRING)
        create_row_ids(grp, labels, paths, subjects, splits)
        grp.create_dataset("done", data=np.zeros(n, dtype=bool))
        # fixed size, so recording an error overwrites bytes already on disk (a vlen string would grow the file)
        grp.create_dataset("error", shape=(n,), dtype=h5py.string_dtype("utf-8", ERROR_BYTES), dcpl=_early(),
                           fill_time="alloc")
        checksum = grp.create_dataset("checksum", data=np.zeros((n, len(tap_dims)), dtype=np.uint64))
        checksum.attrs["taps"] = np.array(list(tap_dims), dtype=STRING)
        feats = h5.create_group("features")
        if not features:  # a merged virtual store maps its taps into the part files instead
            return
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
        h5["samples"].create_dataset("network_role", data=np.array(list(roles), dtype=object), dtype=STRING)
        if "tuned_provenance" in settings:
            h5.attrs["tuned_provenance"] = str(settings["tuned_provenance"])

    # -- writing -----------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self._done.shape[0])

    @property
    def done(self) -> np.ndarray:
        return self._done.copy()

    def write_rows(self, indices: np.ndarray, features: dict[str, np.ndarray], files: np.ndarray | None = None
                   ) -> None:
        """Write features of sample rows ``indices`` (sorted or not) with their checksums and ``files`` (their
        image files' content, :func:`featx.store.rowid.file_records`), flush, then mark them done and flush
        again."""
        self._checked(self._write_rows, indices, features, files)

    def files(self) -> np.ndarray | None:
        """Every row's recorded image file content (:mod:`featx.store.rowid`); None for an older schema."""
        return read_files(self.h5)

    def recompute(self, rows: np.ndarray) -> None:
        """Mark ``rows`` not done: their images changed, so this run computes them again."""
        self._checked(self._set_rows, "done", np.asarray(rows, dtype=np.int64), np.zeros(len(rows), dtype=bool))

    def record_files(self, rows: np.ndarray, files: np.ndarray) -> None:
        """Record ``files`` (same content, other times) as the image files of ``rows``."""
        self._checked(self._set_rows, FILE, np.asarray(rows, dtype=np.int64), np.asarray(files))

    def _set_rows(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        if rows.size:
            order = np.argsort(rows)
            self.h5["samples"][name][rows[order]] = values[order]
            if name == "done":
                self._done[rows] = values
            self.h5.flush()

    def _write_rows(self, indices: np.ndarray, features: dict[str, np.ndarray], files: np.ndarray | None) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        for key, version in self._versions.items():  # a resumed store: rows of this run's versions follow
            have = decode_attr(self.h5.attrs.get(key, ""))
            if (joined := joined_versions(have, version)) != have:
                self.h5.attrs[key] = joined
        self._versions = {}
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
        if files is not None:
            self.h5["samples"][FILE][where] = np.asarray(files)[order]
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
            forget(exc)
            if not full:
                raise
        if full:  # raised outside the handler: no traceback holds h5py objects of the failed write
            raise FeatxError(f"disk full while writing {self.path}; free space and run the same command "
                             f"again (the {int(self._done.sum())} finished rows are kept)")

    def close(self) -> None:
        try:
            close_quietly(self.h5) if self.failed else self.h5.close() if self.h5.id.valid else None
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def __enter__(self) -> FeatureStore:
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


def _fit(text: str, dtype):
    """``text`` as UTF-8 bytes cut to a fixed-length string dtype's size (whole characters)."""
    if dtype.kind != "S":
        return text  # a variable-length string dataset
    return text.encode("utf-8")[:dtype.itemsize].decode("utf-8", errors="ignore").encode("utf-8")


def _contiguous(indices: np.ndarray) -> bool:
    return indices.size > 0 and int(indices[-1]) - int(indices[0]) + 1 == indices.size
