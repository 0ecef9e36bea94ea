"""Find the images of a data set, with label, subject and split, from its root alone (no torch here).

`discover(root)` recognises:

- ``cnmc`` and ``cnmc-kaggle``: the C-NMC 2019 release and its Kaggle mirror (see :mod:`featx.data.cnmc`);
- ``folders``: ``ROOT/<class>/**/<image>``; images directly in ROOT are unlabelled;
- ``manifest``: a CSV file ``path,label[,subject][,split]``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from featx.data.cnmc import cnmc_parts, parse_cnmc_name, read_cnmc
from featx.data.collection import Collection, Sample, make_collection
from featx.data.listing import IMAGE_EXTENSIONS, images_under, unread_note
from featx.data.text import read_csv
from featx.errors import FeatxError

MANIFEST_HEADER = "path,label[,subject][,split]"

LAYOUTS_HELP = (
    "C-NMC 2019 (C-NMC_training_data/fold_*/{all,hem}, C-NMC_test_prelim_phase_data, "
    "C-NMC_test_final_phase_data), its Kaggle mirror (C-NMC_Leukemia/training_data/fold_*/{all,hem}, "
    "validation_data, testing_data), class folders (ROOT/<class>/*" + "|".join(IMAGE_EXTENSIONS) + ") "
    f"or a CSV manifest ({MANIFEST_HEADER})"
)


def discover(source: str | Path, splits: Sequence[str] | str | None = None) -> Collection:
    """Read a data set's samples from a folder (any known layout) or a CSV manifest.

    ``splits`` keeps only those splits (a list, or a comma-separated string; ``train`` stands for every
    ``fold_*`` split when no split is literally called so). Raises FeatxError for a missing path, a folder
    without images, a malformed manifest or an absent split.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise FeatxError(f"data path {path} does not exist; give a folder of images or a CSV manifest")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise FeatxError(f"{path} is neither a folder nor a .csv manifest; featx reads {LAYOUTS_HELP}")
        collection = _read_manifest(path)
    else:
        collection = _discover_folder(path)
    if splits is not None:
        collection = _filter_splits(collection, splits)
    return collection


def _filter_splits(collection: Collection, splits: Sequence[str] | str) -> Collection:
    if isinstance(splits, str):
        splits = [s for s in splits.split(",")]
    wanted = [s.strip() for s in splits if s and s.strip()]
    available = collection.splits
    keep: set[str] = set()
    for name in wanted:
        if name in available:
            keep.add(name)
        elif name == "train" and any(s.startswith("fold_") for s in available):
            keep.update(s for s in available if s.startswith("fold_"))
        else:
            shown = ", ".join(available) if available else "none (this data set has no splits)"
            raise FeatxError(f"split {name!r} is not in {collection.root}; available splits: {shown}")
    if not keep:
        raise FeatxError(f"no split given; available splits: {', '.join(available) or 'none'}")
    samples = [s for s in collection.samples if s.split in keep]
    return Collection(collection.root, collection.layout, samples, list(collection.classes),
                      list(collection.unreadable_folders))


def _discover_folder(root: Path) -> Collection:
    try:
        os.scandir(root).close()
        root.joinpath(".").stat()  # can it be entered, not only listed
    except OSError as exc:
        raise FeatxError(f"cannot read data folder {root} ({exc.strerror or type(exc).__name__}); make it "
                         "readable (list and enter) or point to another folder") from None
    unreadable: list[str] = []
    cnmc = cnmc_parts(root, unreadable)
    if cnmc is not None:
        layout, parts = cnmc
        samples = read_cnmc(root, parts, unreadable)
        if not samples:
            raise FeatxError(f"no images found in {root} (a {layout} layout){unread_note(unreadable)}; "
                             f"featx reads {LAYOUTS_HELP}")
        return make_collection(root, layout, samples, unreadable)
    samples = []
    for p in images_under(root, unreadable):
        rel = p.relative_to(root)
        parsed = parse_cnmc_name(p.name)
        label = rel.parts[0].lower() if len(rel.parts) > 1 else None
        samples.append(Sample(rel.as_posix(), label, parsed[0] if parsed else None, None))
    if not samples:
        raise FeatxError(f"no images found in {root}{unread_note(unreadable)}; featx reads {LAYOUTS_HELP}")
    return make_collection(root, "folders", samples, unreadable)


def _read_manifest(path: Path) -> Collection:
    root = path.parent
    header, rows = read_csv(path, "manifest", MANIFEST_HEADER)
    names = [f.strip().lower() for f in header]
    if "path" not in names or "label" not in names:
        raise FeatxError(f"manifest {path} must start with the header {MANIFEST_HEADER} "
                         f"(found {','.join(header) or 'an empty file'})")
    column = {name: names.index(name) for name in ("path", "label", "subject", "split") if name in names}

    def field(fields: list[str], name: str) -> str:
        return fields[column[name]].strip() if name in column else ""

    samples, lines, seen, missing = [], [], set(), []
    for line, fields in rows:
        raw = field(fields, "path")
        if not raw:
            raise FeatxError(f"manifest {path} line {line}: empty path")
        file = Path(raw).expanduser()
        file = file if file.is_absolute() else root / file
        try:
            found = file.is_file()
        except OSError:  # in a folder that cannot be entered
            found = False
        if not found:
            missing.append(raw)
            continue
        try:
            rel = Path(os.path.relpath(file, root)).as_posix()
        except ValueError:  # another drive on Windows
            rel = file.as_posix()
        if rel in seen:
            raise FeatxError(f"manifest {path} line {line}: {raw} is listed twice; list each image once")
        seen.add(rel)
        subject = field(fields, "subject").upper() or None
        if subject is None:
            parsed = parse_cnmc_name(file.name)
            subject = parsed[0] if parsed else None
        samples.append(Sample(rel, field(fields, "label").lower() or None, subject, field(fields, "split") or None))
        lines.append(line)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FeatxError(f"manifest {path}: image {missing[0]}{more} not found "
                         f"(paths are relative to {root} or absolute)")
    if not samples:
        raise FeatxError(f"manifest {path} lists no images; add rows {MANIFEST_HEADER}")
    _refuse_blank_labels_among_labelled(path, samples, lines)
    return make_collection(root, "manifest", samples)


def _refuse_blank_labels_among_labelled(path: Path, samples: list[Sample], lines: list[int]) -> None:
    """A blank label beside labelled rows of the same split (the whole manifest without splits) is refused: it
    would make the image unlabelled, left out of training and scoring without anyone deciding so. Images meant
    to be unlabelled (to predict) have a split of their own, as the C-NMC final phase does."""
    labelled = {s.split for s in samples if s.label is not None}
    blank = [(line, s.split) for s, line in zip(samples, lines) if s.label is None and s.split in labelled]
    if not blank:
        return
    shown = ", ".join(str(line) for line, _ in blank[:5]) + (f" and {len(blank) - 5} more" if len(blank) > 5 else "")
    splits = sorted({str(split) for _, split in blank if split is not None})
    where = [f"of split{'s' if len(splits) > 1 else ''} {', '.join(splits)}"] if splits else []
    if any(split is None for _, split in blank) and any(s.split for s in samples):
        where.append("without a split")
    raise FeatxError(f"manifest {path}: {len(blank)} row(s) have a blank label beside labelled rows"
                     f"{' ' if where else ''}{' and '.join(where)} (line {shown}); such an image would be left out of "
                     "training and scoring: give every row its label, or give the images to predict a split of their "
                     "own (a split column, e.g. predict)")
