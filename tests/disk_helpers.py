"""A real full disk for fault tests: a tmpfs of a chosen size (root only; skipped elsewhere) and a filler file."""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def tmpfs_mounter(mnt: Path) -> Iterator[Callable[..., Path]]:
    """For a fixture: ``mount(size, remount=False)`` mounts (or resizes) a tmpfs at ``mnt``; unmounted after."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir(exist_ok=True)

    def mount(size: int, remount: bool = False) -> Path:
        opts = f"{'remount,' if remount else ''}size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        return mnt

    yield mount
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        gc.collect()  # a file a failed save left open (old torch writers hold it until collected)
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free in ``folder``'s file system."""
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * max(shutil.disk_usage(folder).free - leave, 0))
        except OSError:
            pass
    return filler
