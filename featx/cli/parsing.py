"""The CLI's mini-languages, parsed into the typed arguments of the library."""
from __future__ import annotations

from pathlib import Path


# --- store and extract ---
def parse_stores(text: str) -> list[Path]:
    """``"a.h5+b.h5"`` -> ``[Path("a.h5"), Path("b.h5")]``: stores whose features go side by side."""
    return [Path(part) for part in str(text).split("+") if part]


def parse_taps(text: str | None) -> list[str] | None:
    """``"fc7+pool5"`` -> ``["fc7", "pool5"]``: taps read and concatenated; ``None`` or ``""`` -> ``None``
    (the store's default tap)."""
    names = [part.strip() for part in str(text or "").split("+") if part.strip()]
    return names or None


def parse_extract_taps(text: str | None) -> list[str] | None:
    """``--taps`` of ``featx extract``: ``"fc7,pool5"`` -> ``["fc7", "pool5"]``; ``None``, ``""`` or ``"all"``
    -> ``None`` (every tap of the backbone)."""
    if text is None or text.strip() in ("", "all"):
        return None
    return [part.strip() for part in text.split(",") if part.strip()]
