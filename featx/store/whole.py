"""Writing an HDF5 file whole or not at all: into ``<path>.tmp`` with its space reserved first, then renamed."""
from __future__ import annotations

import errno
import os
import traceback
from collections.abc import Callable
from pathlib import Path

import h5py

from featx.errors import FeatxError, arg
from featx.files import is_disk_full


def write_whole(path: Path, need: int, fill: Callable[[h5py.File], None], full_before: str,
                full_during: str | None = None) -> None:
    """Write an HDF5 file with ``fill(h5)`` into ``<path>.tmp`` and rename it: it exists whole or not at all.

    ``need`` bytes are reserved first, so that the OS, not HDF5, finds a full disk (FeatxError
    ``full_before``); a full disk while writing or closing removes the temporary file and raises FeatxError
    ``full_during`` (default ``full_before``). Any other failure also removes it and propagates.
    """
    tmp = path.with_name(path.name + ".tmp")
    full = _reserve(tmp, need)
    if full:
        raise FeatxError(full_before)
    try:
        h5 = h5py.File(tmp, "w")
        try:
            fill(h5)
            h5.close()  # a failure here (the final flush) must not leave a half-written file behind
        except BaseException as exc:
            full = isinstance(exc, (OSError, RuntimeError, ValueError)) and is_disk_full(exc)
            forget(exc)
            close_quietly(h5)
            raise
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not full:
            raise
        forget(exc)
    if full:  # raised outside the handler, so no traceback keeps h5py objects of the failed file alive
        raise FeatxError(full_during or full_before)


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
        raise FeatxError(f"cannot write {tmp} ({exc.strerror or exc}); choose an {arg('out')} in a folder you "
                         "can write to") from None


def forget(exc: BaseException) -> None:
    """Drop the local variables of the frames an exception went through (h5py objects of a failed write):
    freed after their file is closed, HDF5 can crash the process."""
    while exc is not None:
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__context__


def close_quietly(h5: h5py.File) -> None:
    try:
        if h5.id.valid:
            h5.close()
    except (OSError, RuntimeError, ValueError):
        pass
