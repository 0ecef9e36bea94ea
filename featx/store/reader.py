"""Reading feature stores: one or more taps of one or more stores as one aligned :class:`FeatureSet`."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from featx.errors import FeatxError, arg, command
from featx.provenance import ATTR, ROLES, parse_attr, read_roles
from featx.store.hints import extracting
from featx.store.rowid import check_metadata
from featx.store.schema import (
    damaged,
    decode_attr,
    default_tap,
    open_store,
    read_attrs,
    require_store,
    rows_match,
    stored_taps,
)
from featx.store.shards import check_virtual_sources


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
    partial: str | None = None   # "156 of 330 rows" when loaded with allow_partial from an unfinished store
    excluded: int = 0            # images recorded as unreadable, left out
    unlabelled_excluded: int = 0  # unlabelled rows (label -1) left out by load_features(labelled=True)
    # per row, what the fine-tuned network of the features did with it (featx.provenance); None: not tuned
    roles: np.ndarray | None = None
    tuned: list[dict] = field(default_factory=list)             # each tuned store's tuned_provenance attribute

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def every_row_has_subject(self) -> bool:
        """True when every row has a subject id (then subject-grouped splits are possible)."""
        return len(self.subjects) > 0 and bool(np.all(self.subjects != ""))

    def select(self, rows) -> FeatureSet:
        """A new FeatureSet of the given boolean mask or indices."""
        return replace(self, X=self.X[rows], y=self.y[rows], paths=self.paths[rows],
                       subjects=self.subjects[rows], splits=self.splits[rows],
                       roles=None if self.roles is None else self.roles[rows])


def _read_one(path: Path, wanted: Sequence[list[str] | None], allow_partial: bool = False) -> dict:
    """Open ``path`` once and read every tap of the tap lists ``wanted`` (None: the store's default tap),
    each checked against its checksums once; :func:`_taps_of` then takes any of those lists from it."""
    with open_store(path, "r") as h5:
        require_store(path, h5)
        try:
            return _read_open(path, h5, wanted, allow_partial)
        except (OSError, RuntimeError, KeyError, UnicodeDecodeError) as exc:  # a store of schema < 3: unchecked text
            raise FeatxError(damaged(path, exc)) from None


def _read_open(path: Path, h5: h5py.File, wanted: Sequence[list[str] | None], allow_partial: bool) -> dict:
    check_virtual_sources(path, h5)
    check_metadata(path, h5)  # a label, path, subject or split that changed on disk (schema 3)
    attrs = read_attrs(h5)
    backbone = str(attrs.get("backbone", ""))
    available = [t for t in stored_taps(attrs) if t in h5["features"]] or sorted(h5["features"])
    default = default_tap(path, attrs)
    chosen = list(dict.fromkeys(t for taps in wanted for t in (taps or [default])))
    for tap in chosen:
        if tap not in available:
            fill = command(f"extract {arg('taps')}", f"featx.extract(..., taps={tap!r})")
            raise FeatxError(f"{path}: no tap {tap!r} in this store; it holds {', '.join(available) or 'none'} "
                             f"(extract it with {fill})")
    s = h5["samples"]
    done = s["done"][:]
    errors = s["error"].asstr()[:]
    failed = ~done & (errors != "")
    unfinished = int(np.sum(~done & (errors == "")))
    rows = np.flatnonzero(done)
    n = int(done.size)
    if unfinished and not allow_partial:
        more = f" ({int(failed.sum())} unreadable images excluded)" if failed.any() else ""
        raise FeatxError(f"{path}: {rows.size} of {n} rows extracted{more}; finish it by running the same "
                         f"{extracting()} again, or pass {arg('allow_partial', True)}")
    if not rows.size:
        raise FeatxError(f"{path}: no finished rows yet; run {extracting()} to fill the store")
    raw = {}
    for tap in chosen:
        ds = h5["features"][tap]
        if rows[-1] >= ds.shape[0]:
            raise FeatxError(f"{path}: tap {tap} holds {ds.shape[0]} rows but row {rows[-1]} is marked done; "
                             f"the store is damaged: extract it again into a new {arg('out')}")
        raw[tap] = ds[: int(rows[-1]) + 1][rows]
    paths = s["path"].asstr()[:]
    if "checksum" in s:  # schema 1 stores have none
        bad = rows[~rows_match(h5, rows, chosen, blocks=raw)]
        if bad.size:
            raise FeatxError(f"{path}: {bad.size} of the {rows.size} finished rows do not match their checksums "
                             f"(first: {paths[bad[0]]}); the store is damaged: run the same {extracting()} again "
                             "to recompute them")
    blocks = {tap: raw[tap].astype(np.float32, copy=False) for tap in chosen}
    for tap, block in blocks.items():  # e.g. a diverged fine-tuned network, or float16 overflow
        bad = rows[~np.isfinite(block).all(axis=1)]
        if bad.size:
            raise FeatxError(f"{path}: {bad.size} row(s) of tap {tap} hold NaN or infinite features (first: "
                             f"{paths[bad[0]]}); extract again with other weights, or {arg('dtype', 'float32')} if "
                             "the store is float16")
    return dict(
        blocks=blocks, default=default,
        paths=paths[rows],
        labels=s["label"][:][rows],
        classes=[str(c) for c in decode_attr(s.attrs["classes"])],
        subjects=s["subject"].asstr()[:][rows],
        splits=s["split"].asstr()[:][rows],
        roles=read_roles(s["network_role"].asstr()[:][rows], parse_attr(attrs.get(ATTR))) if "network_role" in s
        else None,
        attrs=attrs, backbone=backbone,
        n_samples=n, unfinished=unfinished, failed_paths=set(paths[failed]),
    )


def _taps_of(read: dict, taps: list[str] | None) -> dict:
    """One store's part for the tap list ``taps`` (None: its default tap), from what :func:`_read_one` read:
    features ``X`` side by side in that order, the taps' names in ``taps``."""
    chosen = taps or [read["default"]]
    blocks = [read["blocks"][tap] for tap in chosen]
    part = {k: v for k, v in read.items() if k not in ("blocks", "default")}
    part.update(X=np.hstack(blocks) if len(blocks) > 1 else blocks[0], taps=list(chosen))
    return part


def _weights_label(attrs: dict) -> str:
    """``vgg16`` for torchvision or random weights; ``cnn[cnn/best.pt]`` for weights read from a file."""
    backbone = str(attrs.get("backbone", ""))
    if attrs.get("weights_kind") != "file":
        return backbone
    source = Path(str(attrs.get("weights", "")))
    return f"{backbone}[{'/'.join(source.parts[-2:])}]"


def load_features(stores: str | Path | Sequence[str | Path], taps: str | Sequence[str] | None = None, *,
                  splits: Sequence[str] | None = None, labelled: bool | None = True,
                  allow_partial: bool = False) -> FeatureSet:
    """Load finished rows of one or more stores as one feature matrix.

    ``stores`` is one store's path or a sequence of paths: several stores give their features side by side,
    joined on the sample path (they must hold the same samples). ``taps`` is one tap name, a sequence of
    names (concatenated, in that order) or ``None`` (each store's default tap). ``splits`` keeps those
    splits. ``labelled``: ``True`` (the default) keeps the labelled rows, what classifiers train and test on,
    and counts the unlabelled ones left out (label -1, e.g. the C-NMC final phase) in
    ``unlabelled_excluded``; ``False`` keeps only the unlabelled rows (to predict them); ``None`` keeps every
    row. When the labelled rows asked for are none, FeatxError says so (rather than an empty set). Images
    recorded as unreadable are left out (counted in ``excluded``). A store with rows not yet extracted is refused unless
    ``allow_partial``; then ``partial`` says how many rows there are (``"156 of 330 rows"``). Rows whose
    features, label, path, subject or split do not match their checksums are refused (the store is damaged).
    """
    paths = [Path(p) for p in ([stores] if isinstance(stores, (str, Path)) else stores)]
    if not paths:
        raise FeatxError(f"{arg('stores')}: no feature store given; pass a file written by {extracting()}")
    names = None if taps is None else ([taps] if isinstance(taps, str) else list(taps))
    parts = [_taps_of(_read_one(p, [names or None], allow_partial), names or None) for p in paths]
    return _finish(paths, parts, splits, labelled)


def load_feature_grid(store_groups: Sequence[Sequence[str | Path]], tap_groups: Sequence[Sequence[str] | None], *,
                      labelled: bool | None = True, allow_partial: bool = False
                      ) -> Iterator[tuple[tuple[int, int], FeatureSet]]:
    """Yield ``((i, j), features)`` for every store group ``i`` x tap group ``j`` (a group of stores is fused
    side by side; a tap group is concatenated, None: each store's default tap), as :func:`load_features`
    would load each, in that order, but opening and reading each store file once: all the taps any group
    needs are read (and checked against their checksums) together, and a store's rows are dropped after the
    last group that uses it."""
    groups = [[Path(p) for p in group] for group in store_groups]
    taps = [None if t is None else list(t) for t in tap_groups]
    last = {p: i for i, group in enumerate(groups) for p in group}
    read: dict[Path, dict] = {}
    for i, group in enumerate(groups):
        if not group:
            raise FeatxError(f"{arg('stores')}: no feature store given; pass a file written by {extracting()}")
        for p in group:
            if p not in read:
                read[p] = _read_one(p, taps, allow_partial)
        for j, names in enumerate(taps):
            yield (i, j), _finish(group, [_taps_of(read[p], names) for p in group], None, labelled)
        for p in group:
            if last[p] == i:
                read.pop(p, None)


def _finish(paths: list[Path], parts: list[dict], splits, labelled: bool | None) -> FeatureSet:
    """The FeatureSet of the stores' parts (aligned when several), filtered by ``splits`` and ``labelled``."""
    unfinished = any(part["unfinished"] for part in parts)
    failed = set().union(*(part["failed_paths"] for part in parts))
    if len(parts) > 1:
        _align(paths, parts, failed, unfinished)
    fs = _feature_set(paths, parts, unfinished, failed)
    keep = np.ones(len(fs), dtype=bool)
    if splits:
        known = sorted(set(fs.splits))
        missing = [s for s in splits if s not in known]
        if missing:
            raise FeatxError(f"{paths[0]}: no rows of split {', '.join(missing)} ({arg('splits')}); the store has "
                             f"{', '.join(known)}")
        keep &= np.isin(fs.splits, list(splits))
    if labelled is not None:
        wanted = keep & ((fs.y >= 0) if labelled else (fs.y < 0))
        if keep.any() and not wanted.any():
            raise FeatxError(_none_left(paths[0], fs, keep, labelled, splits))
        if labelled:
            fs.unlabelled_excluded = int(np.sum(keep & (fs.y < 0)))
        keep = wanted
    return fs if keep.all() else fs.select(keep)


def _none_left(path: Path, fs: FeatureSet, keep: np.ndarray, labelled: bool, splits) -> str:
    """The message for a labelled/unlabelled filter that leaves no row."""
    where = f" of split {', '.join(splits)}" if splits else ""
    n = int(keep.sum())
    if labelled:
        predict = command("predict", "featx.predict(...)")
        return (f"{path}: no labelled rows to load: the {n} rows{where} are unlabelled (label -1); heads need labelled "
                f"rows to train and test; predict these with a saved model ({predict})")
    return f"{path}: no unlabelled rows{where}: all {n} rows have a label; load them with the default labelled=True"


def _align(paths: list[Path], parts: list[dict], failed: set, unfinished: bool) -> None:
    """Put the rows of every store in the order of the first; refuse stores of other samples or labels.

    An image unreadable in one store is left out of all; unfinished stores of the same data keep the rows
    every store has."""
    same_data = len({str(part["attrs"].get("dataset_fingerprint")) for part in parts}) == 1
    common = set.intersection(*(set(part["paths"]) for part in parts)) if unfinished and same_data else None
    for part in parts:
        keep = ~np.isin(part["paths"], list(failed))
        if common is not None:
            keep &= np.isin(part["paths"], list(common))
        if not keep.all():
            for key in ("X", "paths", "labels", "subjects", "splits", "roles"):
                if part[key] is not None:
                    part[key] = part[key][keep]
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


def _feature_set(paths: list[Path], parts: list[dict], unfinished: bool, failed: set) -> FeatureSet:
    """One FeatureSet of the aligned parts: features side by side, names and fingerprint of them all."""
    first = parts[0]
    X = np.hstack([part["X"] for part in parts]) if len(parts) > 1 else first["X"]
    names = [f"{_weights_label(part['attrs'])}/{'+'.join(part['taps'])}" for part in parts]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part["attrs"].get("dataset_fingerprint", "")).encode())
        digest.update(str(part["attrs"].get("weights_sha256", "")).encode())
        digest.update(str(part["attrs"].get("weights", "")).encode())
        digest.update("+".join(part["taps"]).encode())
    classes = first["classes"]
    return FeatureSet(
        X=np.ascontiguousarray(X, dtype=np.float32), y=first["labels"].astype(np.int64), classes=classes,
        paths=first["paths"], subjects=first["subjects"], splits=first["splits"],
        name="+".join(names), backbone="+".join(part["backbone"] for part in parts),
        tap="+".join("+".join(part["taps"]) for part in parts),
        settings=[part["attrs"] for part in parts], fingerprint=digest.hexdigest(),
        root=str(first["attrs"].get("data_root", "")), positive="all" if "all" in classes else None,
        stores=[str(p) for p in paths], store_taps=[list(part["taps"]) for part in parts],
        partial=f"{len(first['paths'])} of {first['n_samples']} rows" if unfinished else None,
        excluded=len(failed),
        roles=_fuse_roles([part["roles"] for part in parts]),
        tuned=[_tuned_attr(part["attrs"], p) for p, part in zip(paths, parts) if part["roles"] is not None],
    )


def _fuse_roles(per_store: list) -> np.ndarray | None:
    """One role per row of fused stores: the most-seen role any of their networks gave the row."""
    have = [np.asarray(r).astype(str) for r in per_store if r is not None]
    if not have:
        return None
    rank = {"train": 0, "train-subject": 1, "unknown": 2, "val-choose": 3, "val": 4, "": 5}
    out = have[0].astype(object)
    for other in have[1:]:
        pick = np.array([rank.get(b, 0) < rank.get(a, 0) for a, b in zip(out, other)], dtype=bool)
        out[pick] = other[pick]
    bad = set(out) - set(ROLES)
    if bad:
        raise FeatxError(f"unknown network role {sorted(bad)[0]!r} in the store; it was written by another featx")
    return out.astype(str)


def _tuned_attr(attrs: dict, path: Path) -> dict:
    info = parse_attr(attrs.get(ATTR)) or {"provenance": "missing"}
    info["store"] = str(path)
    return info
