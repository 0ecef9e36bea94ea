"""`featx` under torchrun with a test-only fault hook (tests/test_torchrun.py): after each batch a rank writes,
the rank appends the rows it wrote to ``$FEATX_TEST_LOG`` (``rank part-row`` lines), and the rank named by
``$FEATX_TEST_KILL_RANK`` then kills itself with SIGKILL, as a crashed node would die. Not part of featx."""
from __future__ import annotations

import os
import signal
import sys

from featx.cli import main
from featx.store import FeatureStore

_write_rows = FeatureStore.write_rows


def write_rows_then_maybe_die(self, indices, features, files=None):
    _write_rows(self, indices, features, files)
    rank = os.environ["RANK"]
    if os.environ.get("FEATX_TEST_LOG"):
        with open(os.environ["FEATX_TEST_LOG"], "a") as log:
            log.writelines(f"{rank} {int(i)}\n" for i in indices)
    if os.environ.get("FEATX_TEST_KILL_RANK") == rank:
        os.kill(os.getpid(), signal.SIGKILL)


FeatureStore.write_rows = write_rows_then_maybe_die
sys.argv[0] = "featx"
main()
