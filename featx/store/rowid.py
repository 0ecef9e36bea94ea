"""Each row's identity besides its features: a checksum of its metadata and the content of its image file.

- ``/samples/meta_checksum`` uint64 (N): crc32 of the row's index, label, path, subject and split, plus 2**32,
  written with the sample table. A flipped byte in any of them is caught by ``load_features``, ``featx info
  --verify``, a resume and ``featx merge``, naming the row.
- ``/samples/file`` (N) compound ``size``, ``mtime_ns``, ``ctime_ns`` (int64), ``sha256`` (hex): what
  identified the image file's content when its features were computed (:mod:`featx.data.content`), written
  with the row's features (size -1 and sha256 "" before). A resume, ``predict --cache`` and
  ``predict --store`` compare it with the file on disk.

Both came with schema version 3: an older store has neither (its metadata is unchecked, its rows' content
unknown) and still loads.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from featx.errors import FeatxError
from featx.store.hints import extracting

META = "meta_checksum"
FILE = "file"
FILE_DTYPE = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("ctime_ns", "<i8"), ("sha256", "S64")])
UNKNOWN_FILE = np.array((-1, 0, 0, b""), dtype=FILE_DTYPE)[()]


def meta_checksums(labels: Sequence[int], paths: Sequence[str], subjects: Sequence[str],
                   splits: Sequence[str]) -> np.ndarray:
    """Per row: crc32 of its index and label (8 bytes each, little-endian) and of its path, subject and split
    (UTF-8, NUL-separated), plus 2**32."""
    out = np.empty(len(paths), dtype=np.uint64)
    for i, (label, path, subject, split) in enumerate(zip(labels, paths, subjects, splits)):
        head = i.to_bytes(8, "little") + int(label).to_bytes(8, "little", signed=True)
        text = "\0".join((str(path), str(subject), str(split))).encode("utf-8")
        out[i] = (1 << 32) | zlib.crc32(text, zlib.crc32(head))
    return out


def create_row_ids(grp: h5py.Group, labels: np.ndarray, paths: Sequence[str], subjects: Sequence[str],
                   splits: Sequence[str]) -> None:
    """Write ``meta_checksum`` of the sample table and a ``file`` table of unknown contents (both allocated
    now, so writing rows later never grows the file)."""
    grp.create_dataset(META, data=meta_checksums(labels, paths, subjects, splits))
    grp.create_dataset(FILE, data=np.full(len(paths), UNKNOWN_FILE, dtype=FILE_DTYPE))


def bad_metadata(h5: h5py.File) -> np.ndarray | None:
    """The rows whose label, path, subject or split do not match their checksum; None when the store has no
    metadata checksums (schema < 3)."""
    s = h5["samples"]
    if META not in s:
        return None
    stored = s[META][:]
    text = [s[key].asstr(errors="replace")[:] for key in ("path", "subject", "split")]  # a flipped byte: not UTF-8
    return np.flatnonzero(meta_checksums(s["label"][:], *text) != stored)


def metadata_message(path: Path, h5: h5py.File, bad: np.ndarray, *, fix: str | None = None) -> str:
    """The one-line refusal of a store whose rows ``bad`` do not match their metadata checksums (a template,
    :mod:`featx.errors`); ``fix``: what to do instead of extracting the store again."""
    first = int(bad[0])
    return bad_metadata_text(path, bad.size, first, h5["samples/path"].asstr(errors="replace")[first], fix=fix)


def bad_metadata_text(path, n_bad: int, first: int, first_path: str, *, fix: str | None = None) -> str:
    """:func:`metadata_message` from its counts (``featx info --verify`` has them from :func:`verify`)."""
    fix = fix or f"delete it and run the same {extracting()} again"
    return (f"{path}: the label, path, subject or split of {n_bad} row(s) do not match their checksums "
            f"(first: row {first}, {first_path}); the store is damaged: {fix}")


def check_metadata(path: Path, h5: h5py.File) -> None:
    """FeatxError naming the first row whose metadata does not match its checksum (nothing for schema < 3)."""
    bad = bad_metadata(h5)
    if bad is not None and bad.size:
        raise FeatxError(metadata_message(path, h5, bad))


def file_records(size, mtime_ns, ctime_ns, sha256) -> np.ndarray:
    """The ``file`` rows of per-row arrays (or tensors, or sequences) of each field."""
    out = np.empty(len(sha256), dtype=FILE_DTYPE)
    out["size"] = np.asarray(size, dtype=np.int64)
    out["mtime_ns"] = np.asarray(mtime_ns, dtype=np.int64)
    out["ctime_ns"] = np.asarray(ctime_ns, dtype=np.int64)
    out["sha256"] = [s.encode() if isinstance(s, str) else s for s in sha256]
    return out


def read_files(h5: h5py.File) -> np.ndarray | None:
    """Every row's ``file`` record; None for a store of schema < 3 (no content recorded)."""
    s = h5["samples"]
    return s[FILE][:] if FILE in s else None
