"""Listing image files below a folder, through symbolic links (loops are entered once); folders that cannot be
listed or entered and dangling links are recorded, not fatal."""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    """A visible file with one of IMAGE_EXTENSIONS."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def images_under(folder: Path, unreadable: list[str] | None = None) -> list[Path]:
    """Image files below a folder (recursively), skipping hidden files and folders.

    Symbolic links to folders and files are followed; a link back to a folder above it (a loop) is not
    entered again. A dangling link named like an image is listed (reading it fails, so it is counted and named
    as an unreadable image); any other dangling link, and folders that cannot be listed or entered, are
    appended to ``unreadable`` (and skipped).
    """
    unreadable = [] if unreadable is None else unreadable
    found = []
    top = os.fspath(folder)
    above = {top: (_identity(top),)}  # each folder to list: the identities of it and the folders above it

    def cannot_list(exc: OSError) -> None:
        unreadable.append(str(exc.filename or folder))

    for dirpath, dirnames, filenames in os.walk(top, onerror=cannot_list, followlinks=True):
        chain = above.pop(dirpath, ())
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            child = os.path.join(dirpath, name)
            identity = _identity(child)
            if identity is not None and identity in chain:  # a link to itself or a folder above it: a loop
                continue
            above[child] = chain + (identity,)
            kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            p = Path(dirpath) / name
            if name.startswith("."):
                continue
            if not is_image(p):
                if is_dangling(p):
                    unreadable.append(dangling(p))
                continue
            try:
                if p.is_file() or is_dangling(p):
                    found.append(p)
            except OSError:  # listed but not entered (read without execute permission)
                unreadable.append(dirpath)
                dirnames[:] = []
                break
    return found


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the folder ``path`` leads to (through links), or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def is_dangling(path: Path) -> bool:
    """A symbolic link whose target does not exist."""
    return os.path.islink(path) and not os.path.exists(path)


def dangling(path: Path) -> str:
    """How ``unreadable`` records a dangling link: ``PATH (dangling link to TARGET)``."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"{path} (dangling link to {target})"


def is_dir(path: Path, unreadable: list[str]) -> bool:
    """``path.is_dir()``, recording its parent when that cannot be entered."""
    try:
        return path.is_dir()
    except OSError:
        unreadable.append(str(path.parent))
        return False


def subdirs(folder: Path, unreadable: list[str]) -> list[Path]:
    """Visible subfolders of ``folder`` (links to folders included), or [] (and ``folder`` recorded) when it
    cannot be listed or entered; dangling links not named like images are recorded in ``unreadable``."""
    try:
        entries = [d for d in folder.iterdir() if not d.name.startswith(".")]
        found = [d for d in entries if d.is_dir()]
    except OSError:
        unreadable.append(str(folder))
        return []
    unreadable.extend(dangling(d) for d in entries if not is_image(d) and is_dangling(d))
    return found


def rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, as a POSIX string."""
    return path.relative_to(root).as_posix()


def unread_note(unreadable: list[str]) -> str:
    """`` (could not read folder X and N more)`` for an error message, or "" when every folder was read."""
    if not unreadable:
        return ""
    more = f" and {len(set(unreadable)) - 1} more" if len(set(unreadable)) > 1 else ""
    return f" (could not read folder {sorted(set(unreadable))[0]}{more})"
