"""Looking into a store without loading features: its settings, a summary, every row, and a checksum audit."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featx.errors import FeatxError, arg
from featx.provenance import ROLES
from featx.records import Record
from featx.store.describe import read_descriptions
from featx.store.rowid import bad_metadata, check_metadata, read_files
from featx.store.schema import (
    damaged,
    decode_attr,
    open_store,
    read_attrs,
    require_store,
    rows_match,
    setting,
    stored_taps,
)
from featx.store.shards import check_virtual_sources


def store_settings(path: str | Path) -> dict:
    """The root attributes of a store as plain Python values."""
    path = Path(path)
    with open_store(path, "r") as h5:
        require_store(path, h5)
        return read_attrs(h5)


@dataclass(frozen=True)
class StoreSummary(Record):
    """What :func:`summarize` returns. Also a read-only mapping of its fields (``summary["taps"]``, as the dict
    it returned before; :class:`featx.records.Record`); :meth:`as_dict` for JSON."""
    file: str                          # the store's path
    samples: int                       # rows, finished or not
    done: int                          # finished rows
    errors: int                        # rows whose image could not be read
    unfinished: int                    # rows neither finished nor failed (an interrupted extraction)
    failed: list[dict]                 # the first 20 failed rows: {"path", "error"}
    unreadable_folders: list[str]      # folders discovery could not read
    classes: list[str]                 # the class names, in label order
    labels: dict                       # what the label integers mean
    subjects: int                      # distinct subjects (rows without one not counted)
    taps: dict[str, dict]              # tap -> {"dim", "rows", "dtype", "chunks", "description"}
    counts: dict[str, dict[str, int]]  # split -> {class: rows, "unlabelled": rows}
    settings: dict                     # the root attributes (store_settings)
    network_roles: dict[str, int] | None  # rows per role of a fine-tuned featx checkpoint's network; None: none
    exif_orientation: str              # "applied", or "ignored" in stores made before featx applied it


def summarize(path: str | Path) -> StoreSummary:
    """What ``featx info`` shows: settings, taps with dimensions and descriptions (what each holds; "" in
    stores made before featx wrote them), what the label integers mean (``labels``), rows done, unfinished
    and failed (unreadable images, the first 20 with their error), folders discovery could not read, counts
    by split and class (:class:`StoreSummary`)."""
    path = Path(path)
    with open_store(path, "r") as h5:
        require_store(path, h5)
        try:
            return _summarize(path, h5)
        except (OSError, RuntimeError, KeyError) as exc:
            raise FeatxError(damaged(path, exc)) from None


def _summarize(path: Path, h5: h5py.File) -> StoreSummary:
    attrs = read_attrs(h5)
    s = h5["samples"]
    classes = [str(c) for c in decode_attr(s.attrs["classes"])]
    labels = s["label"][:]
    splits = s["split"].asstr(errors="replace")[:]  # a damaged byte shows as U+FFFD (--verify names the row)
    done = s["done"][:]
    errors = s["error"].asstr(errors="replace")[:]
    order = [t for t in stored_taps(attrs) if t in h5["features"]] or sorted(h5["features"])
    described = read_descriptions(h5)
    taps = {tap: {"dim": int(ds.shape[1]), "rows": int(ds.shape[0]), "dtype": str(ds.dtype),
                  "chunks": list(ds.chunks or ()), "description": described["taps"].get(tap, "")}
            for tap, ds in ((t, h5["features"][t]) for t in order)}
    counts: dict[str, dict[str, int]] = {}
    for split in sorted(set(splits)):
        sel = splits == split
        row = {c: int(np.sum(labels[sel] == i)) for i, c in enumerate(classes)}
        row["unlabelled"] = int(np.sum(labels[sel] < 0))
        counts[split or "(none)"] = row
    subjects = s["subject"].asstr(errors="replace")[:]
    failed = [{"path": p, "error": e} for p, e, d in zip(s["path"].asstr(errors="replace")[:], errors, done)
              if e and not d]
    folders = attrs.get("unreadable_folders") or []
    roles = s["network_role"].asstr()[:] if "network_role" in s else None
    return StoreSummary(
        file=str(path), samples=int(len(done)), done=int(done.sum()), errors=len(failed),
        unfinished=int(np.sum(~done & (errors == ""))), failed=failed[:20],
        unreadable_folders=[str(f) for f in np.atleast_1d(folders)] if len(folders) else [],
        classes=classes, labels=described["labels"], subjects=len(set(subjects) - {""}),
        taps=taps, counts=counts, settings=attrs,
        network_roles=None if roles is None else _role_counts(roles),
        exif_orientation=setting(h5.attrs, "exif_orientation"),  # "ignored" in stores made before featx applied it
    )


def _role_counts(roles: np.ndarray) -> dict[str, int]:
    order = [r for r in ROLES if r in set(roles)] + sorted(set(roles) - set(ROLES))
    return {r or "unseen": int(np.sum(roles == r)) for r in order}


def verify(path: str | Path) -> dict:
    """Check every finished row of a store against its checksums (what ``featx info --verify`` runs), and
    every row's label, path, subject and split against theirs (schema 3).

    Returns ``{"file", "checked", "bad", "bad_paths", "metadata_checked", "bad_metadata", "bad_metadata_rows"}``
    (``bad_paths``: the first 20; ``bad_metadata_rows``: the first 20 as ``{"row", "path"}``;
    ``metadata_checked``: False for a store of schema < 3, which has no metadata checksums). Running the same
    ``featx extract`` again recomputes rows whose features are bad; a bad metadata row means extracting again
    into a new store. Schema-1 stores have no checksums and are refused.
    """
    path = Path(path)
    with open_store(path, "r") as h5:
        require_store(path, h5)
        check_virtual_sources(path, h5)
        if "checksum" not in h5["samples"]:
            raise FeatxError(f"{path}: store schema version {decode_attr(h5.attrs.get('schema_version', -1))} has no "
                             f"row checksums to verify; extract it again with this featx into another {arg('out')}")
        try:
            rows = np.flatnonzero(h5["samples/done"][:])
            bad = rows[~rows_match(h5, rows)]
            meta = bad_metadata(h5)
            paths = h5["samples/path"].asstr(errors="replace")[:]
        except (OSError, RuntimeError, KeyError) as exc:
            raise FeatxError(damaged(path, exc)) from None
    checked, meta = meta is not None, np.zeros(0, dtype=np.int64) if meta is None else meta
    return {"file": str(path), "checked": int(rows.size), "bad": int(bad.size),
            "bad_paths": [str(paths[i]) for i in bad[:20]], "metadata_checked": checked,
            "bad_metadata": int(meta.size),
            "bad_metadata_rows": [{"row": int(i), "path": str(paths[i])} for i in meta[:20]]}


def settings_json(settings: dict) -> str:
    """Settings as compact JSON (for cards and reports)."""
    return json.dumps(settings, sort_keys=True, default=str)


def sample_table(path: str | Path) -> dict:
    """Every row of a store, finished or not, in store order: ``path``, ``split``, ``done``, ``error`` and
    ``file`` (each row's image file content, :mod:`featx.store.rowid`; None in stores of schema < 3). Rows
    whose metadata do not match their checksums are refused."""
    path = Path(path)
    with open_store(path, "r") as h5:
        require_store(path, h5)
        check_metadata(path, h5)
        s = h5["samples"]
        return {"path": s["path"].asstr()[:], "split": s["split"].asstr()[:], "done": s["done"][:].astype(bool),
                "error": s["error"].asstr()[:], "file": read_files(h5)}
