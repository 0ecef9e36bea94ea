"""What identifies an image file's content: its size, mtime and ctime (cheap to compare) and the sha256 of its
bytes (computed from the bytes the decoder reads: no second read while extracting).

A feature store records one :class:`FileId` per row. Whether a file changed since is :func:`check_files`:
a file whose size, mtime and ctime are those recorded is taken as unchanged (ctime: replacing a file, even
with ``cp -p`` or ``tar`` that restore its mtime, sets it); any other is read again and its sha256 decides.
A file changed within :data:`RACY_NS` of being read may change again within the file system's timestamp
granularity without its times moving: its times are recorded as unknown (0), so the next check reads it.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

RACY_NS = 2_000_000_000   # a file changed less than 2 s before it was read: its times are not trusted


class FileId(NamedTuple):
    """A file's content identity when it was read (size -1 and sha256 "": unknown, e.g. an unreadable file)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str


UNKNOWN = FileId(-1, 0, 0, "")


def _times(st: os.stat_result, now_ns: int) -> tuple[int, int]:
    """(mtime_ns, ctime_ns) to record; (0, 0) when the file changed within RACY_NS of ``now_ns``."""
    if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
        return 0, 0
    return st.st_mtime_ns, st.st_ctime_ns


def read_file(path: str | Path) -> tuple[bytes, FileId]:
    """The bytes of ``path`` (one read) and their :class:`FileId` (stat of the same open file)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        data = fh.read()
    mtime, ctime = _times(st, time.time_ns())
    return data, FileId(len(data), mtime, ctime, hashlib.sha256(data).hexdigest())


def file_id(path: str | Path) -> FileId:
    """The :class:`FileId` of ``path`` now (read in 1 MiB blocks; OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        size = 0
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    mtime, ctime = _times(st, time.time_ns())
    return FileId(size, mtime, ctime, digest.hexdigest())


class FileCheck(NamedTuple):
    """What :func:`check_files` found, as positions into the rows it was given."""

    changed: np.ndarray     # content differs from the recorded sha256
    refreshed: np.ndarray   # same content, other times: record ``ids`` for them
    ids: list[FileId]       # the new FileIds of ``refreshed``
    unknown: np.ndarray     # no content recorded (a store of an older featx): cannot be checked
    missing: np.ndarray     # the file is gone or unreadable: cannot be checked


def check_files(root: str | Path, paths: Sequence[str], records) -> FileCheck:
    """Compare the files ``root/paths`` with their recorded identities ``records`` (one per path, with the
    fields of :class:`FileId`; ``sha256`` as str or bytes): a stat each, and a read of those whose size or
    times differ."""
    root = Path(root)
    changed, refreshed, ids, unknown, missing = [], [], [], [], []
    for k, rel in enumerate(paths):
        rec = records[k]
        want = rec["sha256"].decode() if isinstance(rec["sha256"], bytes) else str(rec["sha256"])
        if not want:
            unknown.append(k)
            continue
        try:
            st = os.stat(root / rel)
            if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (int(rec["size"]), int(rec["mtime_ns"]),
                                                                 int(rec["ctime_ns"])):
                continue
            now = file_id(root / rel)
        except OSError:
            missing.append(k)
            continue
        if now.sha256 != want:
            changed.append(k)
        else:
            refreshed.append(k)
            ids.append(now)
    as_array = lambda rows: np.asarray(rows, dtype=np.int64)  # noqa: E731
    return FileCheck(as_array(changed), as_array(refreshed), ids, as_array(unknown), as_array(missing))


def name_some(paths: Sequence[str], rows: Sequence[int], n: int = 3) -> str:
    """The first ``n`` of ``paths[rows]`` and how many more: ``a.bmp, b.bmp, c.bmp and 2 more``."""
    more = f" and {len(rows) - n} more" if len(rows) > n else ""
    return ", ".join(str(paths[int(k)]) for k in rows[:n]) + more
