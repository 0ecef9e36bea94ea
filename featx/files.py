"""Small file helpers shared by the library: hashes and atomic writes.

Every file featx writes as a whole (CSV, JSON, Markdown, PNG, HTML, models) goes to ``<name>.tmp`` in the same
folder and is renamed onto its name once complete: a crash or a full disk leaves the earlier file as it was
and never a cut one. :func:`one_commit` renames the files of a block together (a results folder holds the
earlier results or the new ones, never a mix).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from featx.errors import FeatxError


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Commit:
    """The temporary files of a :func:`one_commit` block, the names they go to, and files to remove."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.before = self._folders()  # the folder and its subfolders before the block
        self.renames: dict[Path, Path] = {}  # final name -> its temporary file
        self.removals: list[Path] = []

    def _folders(self) -> set[Path]:
        if not self.folder.is_dir():
            return set()
        return {self.folder, *(p for p in self.folder.iterdir() if p.is_dir() and not p.is_symlink())}

    def commit(self) -> None:
        try:
            for path, tmp in self.renames.items():
                os.replace(tmp, path)
        finally:
            for tmp in self.renames.values():
                tmp.unlink(missing_ok=True)
        for path in self.removals:
            if path not in self.renames:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        for tmp in self.renames.values():
            tmp.unlink(missing_ok=True)
        for folder in sorted(self._folders() - self.before, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty: folders that hold anything stay
            except OSError:
                pass


_COMMIT: ContextVar[_Commit | None] = ContextVar("featx_commit", default=None)


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` says the disk (or the user's quota) is full, however it surfaces: an OSError's errno,
    or the text of h5py's and torch's RuntimeErrors, which carry the errno only in their message."""
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        needle in str(exc) for needle in ("No space left", "Disk quota exceeded", "errno = 28", "errno 28"))


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` then rename onto ``path``: a crash or a full disk never leaves half a file under its name
    (an OSError names ``path``, not the temporary file). Inside :func:`one_commit` the rename waits for the
    end of the block."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    batch = _COMMIT.get()
    try:
        write(tmp)
        if batch is None:
            os.replace(tmp, path)
        else:
            batch.renames[path] = tmp
    except OSError as exc:
        if exc.filename in (None, str(tmp)):
            exc.filename = str(path)
        raise
    finally:
        if batch is None or path not in batch.renames:
            tmp.unlink(missing_ok=True)
    return path


@contextmanager
def one_commit(folder: str | Path) -> Iterator[None]:
    """The files :func:`atomic_write` writes inside the block (and :func:`remove_on_commit` removes) change
    together when the block ends without an error; on an error no file under its own name changed: the
    temporary files go, and so do ``folder`` and its subfolders when the block made them (and left them empty).
    A block inside another joins the outer one."""
    if _COMMIT.get() is not None:
        yield
        return
    batch = _Commit(Path(folder))
    token = _COMMIT.set(batch)
    try:
        yield
    except BaseException:
        batch.discard()
        raise
    finally:
        _COMMIT.reset(token)
    batch.commit()


def remove_on_commit(path: str | Path) -> None:
    """Remove ``path`` now, or inside :func:`one_commit` when the block's files are renamed (unless one of
    them takes its name)."""
    batch = _COMMIT.get()
    if batch is None:
        Path(path).unlink(missing_ok=True)
    else:
        batch.removals.append(Path(path))


def write_or_keep(path: str | Path, write: Callable[[Path], object]) -> Path:
    """:func:`atomic_write`, with a full disk a one-line :class:`FeatxError` that says what was kept."""
    path = Path(path)
    existed = path.exists()
    try:
        return atomic_write(path, write)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        kept = f"the earlier {path.name} is kept as it was" if existed else f"no {path.name} was written"
        raise FeatxError(f"disk full while writing {path}; {kept} (no part of a file is left); free space and run "
                         "the same command again") from None


def atomic_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def json_shaped(value):
    """A JSON-shaped copy of ``value`` as written to a file (tuples -> lists, numpy values -> numbers or lists,
    anything else JSON cannot hold -> its text)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
