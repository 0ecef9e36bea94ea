"""What this machine offers the processes featx starts, without importing torch (worker processes import this)."""
from __future__ import annotations

import os

__all__ = ["cpu_cores"]


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)
