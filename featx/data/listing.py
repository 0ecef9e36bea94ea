"""Listing image files below a folder; folders that cannot be listed or entered are recorded, not fatal."""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    """A visible file with one of IMAGE_EXTENSIONS."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def images_under(folder: Path, unreadable: list[str] | None = None) -> list[Path]:
    """Image files below a folder (recursively), skipping hidden files and folders. Folders that cannot be
    listed or entered are appended to ``unreadable`` (and skipped)."""
    unreadable = [] if unreadable is None else unreadable
    found = []

    def cannot_list(exc: OSError) -> None:
        unreadable.append(str(exc.filename or folder))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=cannot_list):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if not is_image(p):
                continue
            try:
                if p.is_file():
                    found.append(p)
            except OSError:  # listed but not entered (read without execute permission)
                unreadable.append(dirpath)
                dirnames[:] = []
                break
    return found


def is_dir(path: Path, unreadable: list[str]) -> bool:
    """``path.is_dir()``, recording its parent when that cannot be entered."""
    try:
        return path.is_dir()
    except OSError:
        unreadable.append(str(path.parent))
        return False


def subdirs(folder: Path, unreadable: list[str]) -> list[Path]:
    """Visible subfolders of ``folder``, or [] (and ``folder`` recorded) when it cannot be listed or entered."""
    try:
        return [d for d in folder.iterdir() if not d.name.startswith(".") and d.is_dir()]
    except OSError:
        unreadable.append(str(folder))
        return []


def rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, as a POSIX string."""
    return path.relative_to(root).as_posix()


def unread_note(unreadable: list[str]) -> str:
    """`` (could not read folder X and N more)`` for an error message, or "" when every folder was read."""
    if not unreadable:
        return ""
    more = f" and {len(set(unreadable)) - 1} more" if len(set(unreadable)) > 1 else ""
    return f" (could not read folder {sorted(set(unreadable))[0]}{more})"
