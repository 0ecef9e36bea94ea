"""The steps store messages name, in both spellings (:func:`featx.errors.command`): the library names
:func:`featx.extract.extract`, the CLI ``featx extract``."""
from __future__ import annotations

from pathlib import Path

from featx.errors import arg, command


def extracting(data: str = "", *, shard: object = None, out: str | Path | None = None) -> str:
    """The step that writes (or finishes) a feature store: ``featx extract [DATA] [--shard i/n] [--out OUT]`` on
    the command line, ``featx.extract(..., shard="i/n", out=OUT)`` in Python. ``data``: ``"DATA"`` or ``"..."``
    where the command line shows the data argument."""
    cli, python = ["extract"] + ([data] if data else []), ["data" if data == "DATA" else "..."]
    if shard is not None:
        cli.append(f"--shard {shard}")
        python.append(f"shard={str(shard)!r}")
    if out is not None:
        cli.append(arg("out", out))
        python.append(arg("out", out))
    return command(" ".join(cli), f"featx.extract({', '.join(python)})")
