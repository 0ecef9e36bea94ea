"""The cache of ``featx backbones``' rows: one JSON file under the user's cache folder (``$FEATX_CACHE_DIR``,
else ``$XDG_CACHE_HOME/featx``, else ``~/.cache/featx``), keyed by the installed featx, torch, torchvision and
timm versions, so the full listing probes each model once per installation. Written atomically; a file that
cannot be read, has another shape or another key is ignored and rebuilt, never trusted."""
from __future__ import annotations

import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

CACHE_ENV = "FEATX_CACHE_DIR"
FILE_NAME = "backbones.json"


def cache_path() -> Path:
    """Where the catalogue is kept: ``$FEATX_CACHE_DIR/backbones.json``, by default in ``$XDG_CACHE_HOME/featx``
    (``~/.cache/featx``)."""
    if folder := os.environ.get(CACHE_ENV):
        return Path(folder) / FILE_NAME
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "featx" / FILE_NAME


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def version_key() -> dict[str, str | None]:
    """The installed versions the rows depend on (a change of any rebuilds the catalogue)."""
    return {p: _version(p) for p in ("featx", "torch", "torchvision", "timm")}


def load(fields: set[str]) -> dict[str, dict]:
    """The cached rows by name (each a dict with exactly ``fields``), or {} when the file is absent, unreadable,
    of another shape or made for other versions."""
    try:
        data = json.loads(cache_path().read_text())
        rows = data["rows"]
        if data.get("key") != version_key() or not isinstance(rows, dict):
            return {}
        if not all(isinstance(r, dict) and set(r) == fields for r in rows.values()):
            return {}
        return rows
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def save(rows: dict[str, dict]) -> None:
    """Write the catalogue atomically (a temporary file renamed over it); a folder that cannot be written
    leaves the listing uncached rather than failing it."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".backbones-", suffix=".json")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"key": version_key(), "rows": rows}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
