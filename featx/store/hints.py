"""The steps store messages name, in both spellings (:func:`featx.errors.command`): the library names
:func:`featx.extract.extract`, the CLI ``featx extract``."""
from __future__ import annotations

from pathlib import Path

from featx.errors import arg, command


def extracting(data: str = "", *, shard: object = None, out: str | Path | None = None) -> str:
    """The step that writes (or finishes) a feature store: ``featx extract [DATA] [--shard i/n] [--out OUT]`` on
    the command line, ``featx.extract(..., shard="i/n", out=OUT)`` in Python. ``data``: ``"DATA"`` or ``"..."``
    where the command line shows the data argument."""
    named = [arg(name, value) for name, value in (("shard", shard), ("out", out)) if value is not None]
    cli, python = ["extract"] + ([data] if data else []), ["data" if data == "DATA" else "..."]
    return command(" ".join(cli + named), f"featx.extract({', '.join(python + named)})")
