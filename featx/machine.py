"""What this machine offers the processes featx starts, without importing torch (worker processes import this)."""
from __future__ import annotations

import os

__all__ = ["cpu_cores", "local_processes"]


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """The processes of this job that share this node's cores: torchrun's ``LOCAL_WORLD_SIZE``, else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1
