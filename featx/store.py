"""The HDF5 feature store: one file per (dataset, backbone, weights, preprocessing), one dataset per tap.

Layout (schema version 1)::

    /                attrs: schema_version, featx_version, backbone, weights, weights_kind, weights_sha256,
                            weights_seed, input_size, mean, std, resize, dtype, taps, torch/torchvision
                            versions, created, dataset_fingerprint, data_root, layout
    /samples/path    vlen utf-8 (N)    relative to data_root: the key that aligns stores
    /samples/label   int64 (N)         index into attrs["classes"], -1 = unlabelled
    /samples/subject vlen utf-8 (N)    "" when unknown
    /samples/split   vlen utf-8 (N)    "" when none
    /samples/done    bool (N)          rows whose features are written (resume)
    /samples/error   vlen utf-8 (N)    why a row could not be extracted ("" when fine)
    /samples/network_role  vlen utf-8 (N)  only with fine-tuned weights: train, train-subject, val, "" (never
                     seen) or unknown (see featx.provenance); attrs["tuned_provenance"] says what was matched
    /features/<tap>  float32|float16 (rows, D), chunked along rows, maxshape (None, D)

A store is reopened, never rebuilt: finished rows are kept and a store made with other settings is refused.
"""
from __future__ import annotations

import errno
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from featx.errors import FeatxError

SCHEMA_VERSION = 1
DEFAULT_TAPS = {"vgg16": "fc7", "alexnet": "fc7", "cnn": "fc"}
CHUNK_BYTES = 1 << 20
# Settings that make two stores' features incomparable; a reopened store must match on each.
IDENTITY_KEYS = ("backbone", "weights", "weights_sha256", "weights_seed", "input_size", "mean", "std",
                 "resize", "dtype", "precision", "taps", "dataset_fingerprint")
_STR = h5py.string_dtype()


def _attr(value):
    """Python value -> something h5py stores as an attribute (None becomes "")."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__ is one) have no HDF5 conversion
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return np.array(value, dtype=_STR)
    return value


def _plain(value):
    """h5py attribute -> plain Python value."""
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return [str(x) for x in np.atleast_1d(a)] == [str(x) for x in np.atleast_1d(b)]
    return str(a) == str(b)


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise FeatxError(f"{path}: no such feature store; create it with `featx extract DATA --out {path}`") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise FeatxError(f"disk full while opening {path}; free space and run the same command again") from None
        if "lock" in str(exc).lower():
            raise FeatxError(f"{path} is in use by another process (HDF5 file lock); wait for that featx command "
                             "to finish, or set HDF5_USE_FILE_LOCKING=FALSE on file systems without locks") from None
        raise FeatxError(f"{path}: not a readable HDF5 feature store ({exc.__class__.__name__}); "
                         "point to a file written by `featx extract`") from None


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC however it surfaces (h5py reports write failures as RuntimeError text)."""
    return getattr(exc, "errno", None) == errno.ENOSPC or any(
        needle in str(exc) for needle in ("No space left", "errno = 28", "errno 28"))


class FeatureStore:
    """A feature file open for writing rows batch by batch (use ``open_for_extraction``)."""

    def __init__(self, path: Path, h5: h5py.File):
        self.path = path
        self.h5 = h5

    @classmethod
    def open_for_extraction(cls, path: str | Path, settings: dict, samples: Sequence, classes: Sequence[str],
                            tap_dims: dict[str, int], *, roles: Sequence[str] | None = None) -> "FeatureStore":
        """Create the store, or reopen it for resuming when it was made with the same settings.

        ``samples`` are ``featx.data.Sample`` rows; ``settings`` the root attributes (see module doc).
        A store whose settings differ is refused with a message naming the first differing setting.
        ``roles``: the fine-tuned network's role of each sample (``/samples/network_role``).
        """
        path = Path(path)
        if path.exists():
            h5 = _open(path, "r+")
            store = cls(path, h5)
            try:
                store._check_resumable(dict(settings, taps=list(tap_dims)))
                if roles is not None and "network_role" not in h5["samples"]:  # made before roles were kept
                    cls._write_roles(h5, roles, settings)
            except Exception:
                h5.close()
                raise
            return store
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        h5 = h5py.File(tmp, "w")
        try:
            cls._initialise(h5, settings, samples, classes, tap_dims)
            if roles is not None:
                cls._write_roles(h5, roles, settings)
            h5.close()
            tmp.replace(path)  # a store either exists with its sample table complete, or not at all
        except BaseException:
            h5.close()
            tmp.unlink(missing_ok=True)
            raise
        return cls(path, h5py.File(path, "r+"))

    @staticmethod
    def _initialise(h5: h5py.File, settings: dict, samples: Sequence, classes: Sequence[str],
                    tap_dims: dict[str, int]) -> None:
        import featx
        import torch
        import torchvision

        attrs = dict(settings)
        attrs.update(schema_version=SCHEMA_VERSION, featx_version=featx.__version__,
                     torch_version=torch.__version__, torchvision_version=torchvision.__version__,
                     h5py_version=h5py.__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     taps=list(tap_dims))
        for key, value in attrs.items():
            h5.attrs[key] = _attr(value)
        n = len(samples)
        grp = h5.create_group("samples")
        grp.attrs["classes"] = np.array(list(classes), dtype=_STR)
        index = {c: i for i, c in enumerate(classes)}
        grp.create_dataset("path", data=np.array([s.path for s in samples], dtype=object), dtype=_STR)
        grp.create_dataset("label", data=np.array([index[s.label] if s.label is not None else -1 for s in samples],
                                                  dtype=np.int64))
        grp.create_dataset("subject", data=np.array([s.subject or "" for s in samples], dtype=object), dtype=_STR)
        grp.create_dataset("split", data=np.array([s.split or "" for s in samples], dtype=object), dtype=_STR)
        grp.create_dataset("done", data=np.zeros(n, dtype=bool))
        grp.create_dataset("error", data=np.array([""] * n, dtype=object), dtype=_STR)
        feats = h5.create_group("features")
        dtype = np.dtype(settings.get("dtype", "float32"))
        for tap, dim in tap_dims.items():
            rows = max(1, min(max(n, 1), CHUNK_BYTES // (dim * dtype.itemsize)))
            ds = feats.create_dataset(tap, shape=(0, dim), maxshape=(None, dim), dtype=dtype, chunks=(rows, dim))
            ds.attrs["dim"] = dim
            ds.attrs["tap"] = tap
            ds.attrs["backbone"] = settings.get("backbone", "")

    @staticmethod
    def _write_roles(h5: h5py.File, roles: Sequence[str], settings: dict) -> None:
        if len(roles) != h5["samples/done"].shape[0]:
            raise ValueError("one network role per sample row is needed")
        h5["samples"].create_dataset("network_role", data=np.array(list(roles), dtype=object), dtype=_STR)
        if "tuned_provenance" in settings:
            h5.attrs["tuned_provenance"] = str(settings["tuned_provenance"])

    def _check_resumable(self, settings: dict) -> None:
        attrs = self.h5.attrs
        version = _plain(attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise FeatxError(f"{self.path}: store schema version {version}, this featx writes {SCHEMA_VERSION}; "
                             "choose another --out (or delete the file to rebuild it)")
        wanted = dict(settings)
        for key in IDENTITY_KEYS:
            if key not in wanted:
                continue
            have = _plain(attrs.get(key, ""))
            if not _same(have, wanted[key]):
                raise FeatxError(f"{self.path} was made with {key}={have!r}, this run asks for {key}={wanted[key]!r}; "
                                 "use another --out for different settings (or delete the file to rebuild it)")

    # -- writing -----------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.h5["samples/done"].shape[0])

    @property
    def done(self) -> np.ndarray:
        return self.h5["samples/done"][:]

    def write_rows(self, indices: np.ndarray, features: dict[str, np.ndarray]) -> None:
        """Write features of sample rows ``indices`` (sorted or not), mark them done and flush."""
        try:
            self._write_rows(indices, features)
        except (OSError, RuntimeError) as exc:
            if is_disk_full(exc):
                raise FeatxError(f"disk full while writing {self.path}; free space and run the same command "
                                 f"again (the {int(self.done.sum())} finished rows are kept)") from None
            raise

    def _write_rows(self, indices: np.ndarray, features: dict[str, np.ndarray]) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        order = np.argsort(indices)
        indices = indices[order]
        # a contiguous run writes as one slice (fast); otherwise h5py takes increasing indices
        where = slice(int(indices[0]), int(indices[-1]) + 1) if _contiguous(indices) else indices
        for tap, values in features.items():
            ds = self.h5["features"][tap]
            if ds.shape[0] < int(indices[-1]) + 1:
                ds.resize(int(indices[-1]) + 1, axis=0)
            ds[where] = np.asarray(values)[order].astype(ds.dtype, copy=False)
        self.h5["samples/error"][where] = np.array([""] * len(indices), dtype=object)
        self.h5["samples/done"][where] = True  # last, so a row is never marked done before its features
        self.h5.flush()

    def mark_errors(self, indices: Sequence[int], messages: Sequence[str]) -> None:
        """Record why rows could not be extracted; they stay not-done so a re-run retries them."""
        err = self.h5["samples/error"]
        for i, msg in zip(indices, messages):
            err[int(i)] = msg
        self.h5.flush()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except (OSError, RuntimeError):
            if exc_type is None:  # a failing close must not hide the error that is already on its way
                raise


def _contiguous(indices: np.ndarray) -> bool:
    return indices.size > 0 and int(indices[-1]) - int(indices[0]) + 1 == indices.size


# -- reading ---------------------------------------------------------------------------------------------------
def store_settings(path: str | Path) -> dict:
    """The root attributes of a store as plain Python values."""
    path = Path(path)
    with _open(path, "r") as h5:
        _require_store(path, h5)
        return {k: _plain(v) for k, v in h5.attrs.items()}


def _require_store(path: Path, h5: h5py.File) -> None:
    if "schema_version" not in h5.attrs or "samples" not in h5 or "features" not in h5:
        raise FeatxError(f"{path}: HDF5 file is not a featx feature store (no samples/features groups); "
                         "create one with `featx extract`")


@dataclass
class FeatureSet:
    """Features of one or more taps/stores, aligned row by row, with labels, subjects and splits."""

    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    paths: np.ndarray
    subjects: np.ndarray
    splits: np.ndarray
    name: str
    backbone: str
    tap: str
    settings: list[dict] = field(default_factory=list)
    fingerprint: str = ""
    root: str = ""
    positive: str | None = None
    stores: list[str] = field(default_factory=list)
    store_taps: list[list[str]] = field(default_factory=list)   # the taps read from each store, in order
    # per row, what the fine-tuned network of the features did with it (featx.provenance); None: not tuned
    roles: np.ndarray | None = None
    tuned: list[dict] = field(default_factory=list)             # each tuned store's tuned_provenance attribute

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def subjects_known(self) -> bool:
        """True when every row has a subject id (then subject-grouped splits are possible)."""
        return len(self.subjects) > 0 and bool(np.all(self.subjects != ""))

    def select(self, rows) -> "FeatureSet":
        """A new FeatureSet of the given boolean mask or indices."""
        return replace(self, X=self.X[rows], y=self.y[rows], paths=self.paths[rows],
                       subjects=self.subjects[rows], splits=self.splits[rows],
                       roles=None if self.roles is None else self.roles[rows])


def _split_spec(spec) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, (str, Path)):
        return [p for p in str(spec).split("+") if p]
    out: list[str] = []
    for item in spec:
        out.extend(_split_spec(item))
    return out


def _read_one(path: Path, taps: list[str] | None) -> dict:
    with _open(path, "r") as h5:
        _require_store(path, h5)
        attrs = {k: _plain(v) for k, v in h5.attrs.items()}
        backbone = str(attrs.get("backbone", ""))
        available = list(h5["features"].keys())
        chosen = taps or [DEFAULT_TAPS.get(backbone, available[-1] if available else "")]
        for tap in chosen:
            if tap not in available:
                raise FeatxError(f"{path}: no tap {tap!r} in this store; it holds {', '.join(available) or 'none'} "
                                 "(extract it with `featx extract --taps`)")
        s = h5["samples"]
        done = s["done"][:]
        rows = np.flatnonzero(done)
        blocks = []
        for tap in chosen:
            ds = h5["features"][tap]
            if rows.size and rows[-1] >= ds.shape[0]:
                raise FeatxError(f"{path}: tap {tap} holds {ds.shape[0]} rows but row {rows[-1]} is marked done; "
                                 "the store is damaged: extract it again into a new --out")
            blocks.append(ds[: ds.shape[0]][rows].astype(np.float32, copy=False))
        if not rows.size:
            raise FeatxError(f"{path}: no finished rows yet; run `featx extract` to fill the store")
        return dict(
            X=np.hstack(blocks) if len(blocks) > 1 else blocks[0],
            paths=s["path"].asstr()[:][rows],
            labels=s["label"][:][rows],
            classes=[str(c) for c in _plain(s.attrs["classes"])],
            subjects=s["subject"].asstr()[:][rows],
            splits=s["split"].asstr()[:][rows],
            roles=s["network_role"].asstr()[:][rows] if "network_role" in s else None,
            attrs=attrs, taps=chosen, backbone=backbone,
        )


def _weights_label(attrs: dict) -> str:
    """``vgg16`` for torchvision or random weights; ``cnn[cnn/best.pt]`` for weights read from a file."""
    backbone = str(attrs.get("backbone", ""))
    if attrs.get("weights_kind") != "file":
        return backbone
    source = Path(str(attrs.get("weights", "")))
    return f"{backbone}[{'/'.join(source.parts[-2:])}]"


def load_features(stores, taps: str | Sequence[str] | None = None, *, splits: Sequence[str] | None = None,
                  labelled: bool | None = None) -> FeatureSet:
    """Load finished rows of one or more stores as one feature matrix.

    ``stores`` is ``"a.h5"``, ``"a.h5+b.h5"`` or a list; ``taps`` is ``"fc7"``, ``"fc7+pool5"`` or ``None``
    (the backbone's default tap). Several stores are joined on the sample path and must hold the same
    samples. ``splits`` keeps those splits; ``labelled`` keeps labelled (True) or unlabelled (False) rows.
    """
    paths = [Path(p) for p in _split_spec(stores)]
    if not paths:
        raise FeatxError("no feature store given; pass a file written by `featx extract`")
    tap_list = _split_spec(taps) or None
    parts = [_read_one(p, tap_list) for p in paths]
    first = parts[0]
    for p, part in zip(paths[1:], parts[1:]):
        if part["classes"] != first["classes"]:
            raise FeatxError(f"{p} has classes {part['classes']}, {paths[0]} has {first['classes']}; "
                             "fuse stores extracted from the same data")
        if set(part["paths"]) != set(first["paths"]):
            only_a = len(set(first["paths"]) - set(part["paths"]))
            only_b = len(set(part["paths"]) - set(first["paths"]))
            raise FeatxError(f"{paths[0]} and {p} do not hold the same samples ({only_a} only in the first, "
                             f"{only_b} only in the second); extract both from the same data and splits")
        pos = {q: i for i, q in enumerate(part["paths"])}
        order = np.array([pos[q] for q in first["paths"]])
        if not (np.array_equal(part["labels"][order], first["labels"])
                and np.array_equal(part["subjects"][order], first["subjects"])):
            raise FeatxError(f"{paths[0]} and {p} disagree on labels or subjects of the same paths; "
                             "they were extracted from different data")
        part["X"] = part["X"][order]
        if part["roles"] is not None:
            part["roles"] = part["roles"][order]
    X = np.hstack([part["X"] for part in parts]) if len(parts) > 1 else first["X"]
    tapname = "+".join(first["taps"])
    names = [f"{_weights_label(part['attrs'])}/{'+'.join(part['taps'])}" for part in parts]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part["attrs"].get("dataset_fingerprint", "")).encode())
        digest.update(str(part["attrs"].get("weights_sha256", "")).encode())
        digest.update(str(part["attrs"].get("weights", "")).encode())
        digest.update("+".join(part["taps"]).encode())
    classes = first["classes"]
    fs = FeatureSet(
        X=np.ascontiguousarray(X, dtype=np.float32), y=first["labels"].astype(np.int64), classes=classes,
        paths=first["paths"], subjects=first["subjects"], splits=first["splits"],
        name="+".join(names), backbone="+".join(part["backbone"] for part in parts),
        tap=tapname if len(parts) == 1 else "+".join("+".join(part["taps"]) for part in parts),
        settings=[part["attrs"] for part in parts], fingerprint=digest.hexdigest(),
        root=str(first["attrs"].get("data_root", "")), positive="all" if "all" in classes else None,
        stores=[str(p) for p in paths], store_taps=[list(part["taps"]) for part in parts],
        roles=_fuse_roles([part["roles"] for part in parts]),
        tuned=[_tuned_attr(part["attrs"], p) for p, part in zip(paths, parts) if part["roles"] is not None],
    )
    keep = np.ones(len(fs), dtype=bool)
    if splits:
        known = sorted(set(fs.splits))
        missing = [s for s in splits if s not in known]
        if missing:
            raise FeatxError(f"{paths[0]}: no rows of split {', '.join(missing)}; the store has {', '.join(known)}")
        keep &= np.isin(fs.splits, list(splits))
    if labelled is True:
        keep &= fs.y >= 0
    elif labelled is False:
        keep &= fs.y < 0
    return fs if keep.all() else fs.select(keep)


def _fuse_roles(per_store: list) -> np.ndarray | None:
    """One role per row of fused stores: the most-seen role any of their networks gave the row."""
    from featx.provenance import ROLES

    have = [np.asarray(r).astype(str) for r in per_store if r is not None]
    if not have:
        return None
    rank = {"train": 0, "train-subject": 1, "unknown": 2, "val": 3, "": 4}
    out = have[0].astype(object)
    for other in have[1:]:
        pick = np.array([rank.get(b, 0) < rank.get(a, 0) for a, b in zip(out, other)], dtype=bool)
        out[pick] = other[pick]
    bad = set(out) - set(ROLES)
    if bad:
        raise FeatxError(f"unknown network role {sorted(bad)[0]!r} in the store; it was written by another featx")
    return out.astype(str)


def _role_counts(roles: np.ndarray) -> dict[str, int]:
    from featx.provenance import ROLES

    order = [r for r in ROLES if r in set(roles)] + sorted(set(roles) - set(ROLES))
    return {r or "unseen": int(np.sum(roles == r)) for r in order}


def _tuned_attr(attrs: dict, path: Path) -> dict:
    from featx.provenance import ATTR, parse_attr

    info = parse_attr(attrs.get(ATTR)) or {"provenance": "missing"}
    info["store"] = str(path)
    return info


def summarize(path: str | Path) -> dict:
    """What ``featx info`` shows: settings, taps with dimensions, rows done, counts by split and class."""
    path = Path(path)
    with _open(path, "r") as h5:
        _require_store(path, h5)
        attrs = {k: _plain(v) for k, v in h5.attrs.items()}
        s = h5["samples"]
        classes = [str(c) for c in _plain(s.attrs["classes"])]
        labels = s["label"][:]
        splits = s["split"].asstr()[:]
        done = s["done"][:]
        errors = s["error"].asstr()[:]
        order = [t for t in _plain(attrs.get("taps", [])) if t in h5["features"]] or list(h5["features"])
        taps = {tap: {"dim": int(ds.shape[1]), "rows": int(ds.shape[0]), "dtype": str(ds.dtype),
                      "chunks": list(ds.chunks or ())} for tap, ds in ((t, h5["features"][t]) for t in order)}
        counts: dict[str, dict[str, int]] = {}
        for split in sorted(set(splits)):
            sel = splits == split
            row = {c: int(np.sum(labels[sel] == i)) for i, c in enumerate(classes)}
            row["unlabelled"] = int(np.sum(labels[sel] < 0))
            counts[split or "(none)"] = row
        subjects = s["subject"].asstr()[:]
        failed = [{"path": p, "error": e} for p, e in zip(s["path"].asstr()[:], errors) if e]
        roles = s["network_role"].asstr()[:] if "network_role" in s else None
    return {
        "file": str(path), "samples": int(len(done)), "done": int(done.sum()), "errors": len(failed),
        "failed": failed[:20], "classes": classes, "subjects": len(set(subjects) - {""}),
        "taps": taps, "counts": counts, "settings": attrs,
        "network_roles": None if roles is None else _role_counts(roles),
    }


def settings_json(settings: dict) -> str:
    """Settings as compact JSON (for cards and reports)."""
    return json.dumps(settings, sort_keys=True, default=str)


def sample_table(path: str | Path) -> dict:
    """Every row of a store, finished or not, in store order: ``path``, ``split``, ``done``, ``error``."""
    path = Path(path)
    with _open(path, "r") as h5:
        _require_store(path, h5)
        s = h5["samples"]
        return {"path": s["path"].asstr()[:], "split": s["split"].asstr()[:], "done": s["done"][:].astype(bool),
                "error": s["error"].asstr()[:]}
