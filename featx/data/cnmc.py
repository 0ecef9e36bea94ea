"""The C-NMC 2019 layouts: the original (TCIA) release and its Kaggle mirror.

- ``cnmc``: ``C-NMC_training_data/fold_{0,1,2}/{all,hem}``, ``C-NMC_test_prelim_phase_data/`` (images
  ``1..N.bmp`` and the labels CSV that restores each image's subject and class),
  ``C-NMC_test_final_phase_data/`` (unlabelled). The root may be the folder holding these, or one of them.
- ``cnmc-kaggle``: ``C-NMC_Leukemia/{training_data,validation_data,testing_data}`` (the root may be the
  folder holding ``C-NMC_Leukemia`` or ``C-NMC_Leukemia`` itself).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from featx.data.collection import Sample, natural_key
from featx.data.content import name_some
from featx.data.listing import images_under, is_dir, rel, subdirs
from featx.data.text import read_csv
from featx.errors import FeatxError, FeatxWarning

CNMC_TRAIN = "C-NMC_training_data"
CNMC_PRELIM = "C-NMC_test_prelim_phase_data"
CNMC_FINAL = "C-NMC_test_final_phase_data"
CNMC_PRELIM_LABELS = CNMC_PRELIM + "_labels.csv"
KAGGLE_ROOT = "C-NMC_Leukemia"
KAGGLE_PARTS = {"training_data": "train", "validation_data": "prelim", "testing_data": "final"}

_CNMC_NAME = re.compile(r"^UID_([A-Za-z0-9]+)_(\d+)_(\d+)_(all|hem)\.[A-Za-z]+$", re.IGNORECASE)


def parse_cnmc_name(name: str) -> tuple[str, str] | None:
    """Subject (upper-cased) and class of a C-NMC file name, or None when the name is not one.

    ``UID_11_10_1_all.bmp`` -> ("11", "all"); ``UID_h3_1_2_hem.bmp`` -> ("H3", "hem").
    """
    match = _CNMC_NAME.match(os.path.basename(str(name)).strip())
    if match is None:
        return None
    return match.group(1).upper(), match.group(4).lower()


def cnmc_parts(root: Path, unreadable: list[str]) -> tuple[str, dict[str, Path]] | None:
    """Which C-NMC layout `root` holds, and the folder of each part (train / prelim / final); None if none."""
    name = root.name
    if name == KAGGLE_ROOT or is_dir(root / KAGGLE_ROOT, unreadable):
        base = root if name == KAGGLE_ROOT else root / KAGGLE_ROOT
        parts = {part: base / folder for folder, part in KAGGLE_PARTS.items() if is_dir(base / folder, unreadable)}
        if parts:
            return "cnmc-kaggle", parts
    if name in KAGGLE_PARTS and root.parent.name == KAGGLE_ROOT:
        return "cnmc-kaggle", {KAGGLE_PARTS[name]: root}
    tcia = {"train": CNMC_TRAIN, "prelim": CNMC_PRELIM, "final": CNMC_FINAL}
    for part, folder in tcia.items():
        if name == folder:
            return "cnmc", {part: root}
    parts = {part: root / folder for part, folder in tcia.items() if is_dir(root / folder, unreadable)}
    if parts:
        return "cnmc", parts
    names = [d.name for d in subdirs(root, unreadable)]
    if names and all(re.fullmatch(r"fold_\d+", d, re.IGNORECASE) for d in names):
        return "cnmc", {"train": root}  # the training folder under another name
    return None


def read_cnmc(root: Path, parts: dict[str, Path], unreadable: list[str]) -> list[Sample]:
    """The samples of the C-NMC ``parts`` found by :func:`cnmc_parts` (paths relative to ``root``)."""
    samples: list[Sample] = []
    if "train" in parts:
        samples += _cnmc_train(root, parts["train"], unreadable)
    if "prelim" in parts:
        samples += _cnmc_prelim(root, parts["prelim"], unreadable)
    if "final" in parts:
        samples += [Sample(rel(p, root), None, None, "final") for p in images_under(parts["final"], unreadable)]
    return samples


def _cnmc_train(root: Path, train: Path, unreadable: list[str]) -> list[Sample]:
    """fold_*/<class>/ images; label from the class folder, subject from the file name."""
    folds = sorted((d for d in subdirs(train, unreadable) if d.name.lower().startswith("fold")),
                   key=lambda d: natural_key(d.name))
    groups = [(d.name.lower(), d) for d in folds] if folds else [(None, train)]
    samples = []
    for split, fold in groups:
        for class_dir in sorted(subdirs(fold, unreadable)):
            for p in images_under(class_dir, unreadable):
                parsed = parse_cnmc_name(p.name)
                samples.append(Sample(rel(p, root), class_dir.name.lower(),
                                      parsed[0] if parsed else None, split))
    return samples


def _cnmc_prelim(root: Path, prelim: Path, unreadable: list[str]) -> list[Sample]:
    """Numbered test images; the labels CSV gives each its subject (Patient_ID) and label. Images the CSV does
    not list (and rows for images that are not there) are named in a warning: those images are unlabelled."""
    table = None
    csvs = sorted((p for p in prelim.rglob("*.csv") if not p.name.startswith(".")),
                  key=lambda p: ("label" not in p.name.lower(), len(p.parts), p.as_posix()))
    if not csvs and prelim.parent.is_dir():  # Kaggle keeps the CSV beside the image folder
        csvs = sorted(p for p in prelim.parent.glob("*prelim*labels*.csv"))
    if csvs:
        table = _read_prelim_labels(csvs[0])
    samples, unlisted = [], []
    for p in images_under(prelim, unreadable):
        entry = (table or {}).get(p.name.lower())
        if entry is None:
            unlisted.append(p.name)
            samples.append(Sample(rel(p, root), None, None, "prelim"))
        else:
            samples.append(Sample(rel(p, root), entry[1], entry[0], "prelim"))
    absent = sorted(set(table or {}) - {Path(s.path).name.lower() for s in samples}, key=natural_key)
    if unlisted or absent:
        warnings.warn(FeatxWarning(_prelim_note(prelim, csvs[0] if csvs else None, unlisted, absent, len(samples))),
                      stacklevel=5)  # discover's caller
    return samples


def _prelim_note(prelim: Path, labels: Path | None, unlisted: list[str], absent: list[str], n: int) -> str:
    """The warning for prelim images without a row in the labels file, and rows without an image."""

    def some(names: list[str]) -> str:
        names = sorted(names, key=natural_key)
        return name_some(names, range(len(names)))

    if labels is None:
        return (f"no labels file (*labels*.csv, Patient_ID,new_names,labels) in or beside {prelim}: its {n} images "
                f"are unlabelled and without subjects (left out of training and scoring); put {CNMC_PRELIM_LABELS} "
                "there to label them")
    parts = []
    if unlisted:
        parts.append(f"has no row for {len(unlisted)} of the {n} images in {prelim} ({some(unlisted)}): they are "
                     "unlabelled and without a subject (left out of training and scoring)")
    if absent:
        parts.append(f"lists {len(absent)} image(s) that are not in {prelim} ({some(absent)})")
    return f"labels file {labels} " + "; it ".join(parts) + "; add the missing rows or images"


def _read_prelim_labels(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """new_names (lower-case) -> (subject, label) from a `Patient_ID,new_names,labels` file; an image listed
    twice is refused (naming both lines), never decided by its last row."""
    header, rows = read_csv(path, "labels file", "Patient_ID,new_names,labels")
    fields = {f.strip().lower(): i for i, f in enumerate(header)}
    if "new_names" not in fields or "patient_id" not in fields:
        raise FeatxError(f"labels file {path} must have the header Patient_ID,new_names,labels "
                         f"(found {','.join(header) or 'nothing'})")
    table: dict[str, tuple[str | None, str | None]] = {}
    first: dict[str, tuple[int, str]] = {}
    for line, row in rows:
        new = row[fields["new_names"]].strip()
        if not new:
            continue
        patient = row[fields["patient_id"]].strip()
        if new.lower() in first:
            before, other = first[new.lower()]
            raise FeatxError(f"labels file {path}: {new} is listed twice (line {before}: {other}, line {line}: "
                             f"{patient}); keep the one row that is right: list each image once")
        first[new.lower()] = (line, patient)
        parsed = parse_cnmc_name(patient)
        subject = parsed[0] if parsed else None
        label = parsed[1] if parsed else None
        raw = row[fields["labels"]].strip() if "labels" in fields else ""
        if raw in ("1", "0"):
            label = "all" if raw == "1" else "hem"
        elif raw.lower() in ("all", "hem"):
            label = raw.lower()
        table[new.lower()] = (subject, label)
    return table
