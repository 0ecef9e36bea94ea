"""Loading heavy libraries in the processes featx owns (its command line, its grid's worker processes).

torch and torchvision allocate some 600,000 long-lived objects as they load, and the garbage collector,
seeing the heap grow, walks all of them again and again: 0.6-1.2 s of their 3-4 s import on a 2-core
machine. None of them is garbage. Loaded with the collector paused and then frozen, they cost nothing, and
later full collections (the one at exit too) skip them. Only a process featx starts does this: the library
never changes the collector of a caller's process.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import types

__all__ = ["callable_module", "collector_paused", "import_paused"]


@contextlib.contextmanager
def collector_paused():
    """Pause the garbage collector inside the block, then freeze every object so far and resume it."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def import_paused(*modules: str) -> None:
    """Import ``modules`` inside :func:`collector_paused` (nothing when all are imported already)."""
    if all(m in sys.modules for m in modules):
        return
    with collector_paused():
        for module in modules:
            importlib.import_module(module)


class _CallableModule(types.ModuleType):
    """A module that is also its main function (see :func:`callable_module`)."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self._featx_function)(*args, **kwargs)


def callable_module(name: str, function: str) -> None:
    """Make module ``name`` callable as its function ``function``: ``featx.extract(...)`` is
    ``featx.extract.extract(...)``, where the top-level name and the module's are one (the module stays a
    module: ``from featx.extract import ...`` and ``import featx.extract as fx`` are unchanged)."""
    module = sys.modules[name]
    module._featx_function = function
    module.__class__ = _CallableModule
