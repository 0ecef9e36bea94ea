"""One writer at a time: ``<path>.lock`` beside a store (or a results folder), an OS lock through ``filelock``.

The lock file says who holds it (``pid 4242, started ...: featx extract ...``), so a refused command can name
the run it waits for, and it is removed when its holder releases it: no ``.lock`` stays beside a store once a
run ends (only a run killed with ``kill -9`` leaves one; the next run takes it over and removes it). The file
is unlinked while the lock is still held: a process that opened it just before finds it unlinked once it
gets the lock (filelock checks) and is refused instead of sharing the folder with the next holder.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from featx.errors import FeatxError, arg
from featx.files import is_disk_full

_MARK = "featx writer: "


def lock_path(path: str | Path) -> Path:
    """The lock file a writer holds: ``<store>.lock`` beside the store."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def holder(path: str | Path) -> str | None:
    """Who holds ``path``'s writer lock, as its lock file says (``pid 4242, started 2025-01-31 12:00:03:
    featx classify ...``); None when the file is absent, empty or not featx's."""
    try:
        with open(lock_path(path), encoding="utf-8", errors="replace") as fh:
            text = fh.read(2000)
    except OSError:
        return None
    return text.splitlines()[0][len(_MARK):] if text.startswith(_MARK) else None


def _this_process() -> str:
    program = Path(sys.argv[0] if sys.argv and sys.argv[0] else "python")
    argv = [program.parent.name if program.name == "__main__.py" else program.name, *sys.argv[1:]]  # -m featx
    command = " ".join(argv).replace("\r", " ").replace("\n", " ")
    return f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {command[:300]}"


class WriterLock:
    """The OS lock on ``<path>.lock`` (never blocks); ``record`` writes who holds it into the file.

    :meth:`release` removes the file first, unless it is another program's file of that name (not empty and
    not written by featx), which is left as it was."""

    def __init__(self, path: str | Path, *, record: bool = True):
        self.file = lock_path(path)
        self._record = record
        self._ours: os.stat_result | None = None
        self._lock = FileLock(self.file, timeout=0, is_singleton=False, thread_local=False)

    @property
    def is_locked(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> WriterLock:
        """Take the lock (:class:`filelock.Timeout` when another process holds it)."""
        self._lock.acquire()
        try:
            with open(self.file, "r+b") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size and fh.read(len(_MARK)) != _MARK.encode():
                    return self  # another program's file (or filelock's own soft-lock marker): not ours to touch
                self._ours = st
                if self._record:
                    fh.seek(0)
                    fh.truncate()
                    fh.write((_MARK + _this_process() + "\n").encode())
        except OSError:
            pass  # a full disk: the lock holds without saying who holds it
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding the lock), then release the lock."""
        if not self._lock.is_locked:
            return
        try:
            if self._ours is not None and os.path.samestat(os.stat(self.file), self._ours):
                os.unlink(self.file)
        except OSError:
            pass  # already gone, or a folder that became read-only: the lock is released all the same
        finally:
            self._ours = None
            self._lock.release()


def writer_active(path: str | Path) -> bool:
    """True while a featx command holds the store's writer lock (a lock file nobody holds is removed)."""
    if not lock_path(path).exists():
        return False
    probe = WriterLock(path, record=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:
        return False
    probe.release()
    return False


def acquire_writer_lock(path: Path, busy: Callable[[str], str] | None = None) -> WriterLock:
    """Hold ``<path>.lock`` (released by the kernel if the process dies; the file removed by
    :meth:`WriterLock.release`); refuse when another writer holds it. ``busy(who)`` is the refusal (``who``:
    the holder as its lock file names it); by default a store's."""
    lock = WriterLock(path)
    try:
        return lock.acquire()
    except Timeout:
        who = holder(path)
        if busy is not None:
            raise FeatxError(busy(who or f"it holds {lock_path(path).name}")) from None
        raise FeatxError(f"{path} is being written by another featx command (it holds {lock_path(path).name}); "
                         f"wait for it{f' ({who})' if who else ''} to finish, then run this command again") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise FeatxError(f"disk full while creating {lock_path(path)}; free space and run the same command "
                             "again") from None
        raise FeatxError(f"cannot create the lock file {lock_path(path)} ({exc.strerror or exc}); "
                         f"choose an {arg('out')} in a folder you can write to") from None
