"""One writer at a time: ``<store>.lock`` beside the store, an OS lock through ``filelock``."""
from __future__ import annotations

import errno
from pathlib import Path

from filelock import FileLock, Timeout

from featx.errors import FeatxError, arg


def lock_path(path: str | Path) -> Path:
    """The lock file a writer holds: ``<store>.lock`` beside the store."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def writer_active(path: str | Path) -> bool:
    """True while a featx command holds the store's writer lock."""
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


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC however it surfaces (h5py reports write failures as RuntimeError text)."""
    return getattr(exc, "errno", None) == errno.ENOSPC or any(
        needle in str(exc) for needle in ("No space left", "errno = 28", "errno 28"))


def acquire_writer_lock(path: Path) -> FileLock:
    """Hold ``<store>.lock`` (released by the kernel if the process dies); refuse when another writer holds it."""
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
                         f"choose an {arg('out')} in a folder you can write to") from None
    return lock
