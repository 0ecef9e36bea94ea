"""Which images a run trains and validates on: the validation split, the part of it that chooses the epoch,
and the scan for unreadable images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch.utils.data import DataLoader, Dataset

from featx.data import Collection
from featx.data.images import load_image
from featx.errors import FeatxError, arg
from featx.evaluation import make_splits
from featx.evaluation.protocols import short_name

HOLDOUT_FOLDS = 5  # val "subject"/"image" hold out one fold of the 5-fold protocol of classify (20%)
MIN_PER_CLASS = 2  # subjects (images when subjects are unknown) of each class in each part of a split val set


@dataclass(frozen=True)
class Split:
    """The images of a run, as indices into ``collection.samples``; unreadable ones are left out of both
    sides and listed in ``skipped`` as (index, one-line error)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    protocol: str  # short name for reports, e.g. "1/5 of subjects"
    protocol_label: str
    image_level: bool
    skipped: tuple[tuple[int, str], ...] = ()
    # the part of ``val`` that chooses best.pt's epoch (and stops a run early); the rest scores it. When the
    # validation set is too small to split, all of ``val``, and ``unsplit`` says why
    choose: tuple[int, ...] = ()
    unsplit: str = ""
    short: str = ""  # the row's compact protocol name (ResultRow.protocol_short), e.g. "held-out 1/5 of subjects"

    @property
    def score(self) -> tuple[int, ...]:
        """The validation images that choose nothing: the ones that score an epoch chosen on ``choose``."""
        chosen = set(self.choose)
        return tuple(i for i in self.val if i not in chosen)


def pick_split(collection: Collection, val: str, seed: int) -> Split:
    """The validation split for ``val``, drawn by :func:`featx.evaluate.make_splits` (the protocol of classify).

    ``subject``/``image``: the first fold of the 5-fold protocol, as a holdout; a split name: that split held
    out (``make_splits(eval_set=...)``), training on the other training rows.
    """
    samples = collection.samples
    labelled = [i for i, s in enumerate(samples) if s.label is not None]
    if not labelled:
        raise FeatxError(f"{collection.root}: no labelled images; fine-tuning needs class labels "
                         "(class folders, the C-NMC training folds or a manifest with a label column)")
    y = np.array([collection.classes.index(samples[i].label) for i in labelled], dtype=np.int64)
    subjects = np.array([samples[i].subject or "" for i in labelled], dtype=object)
    splits = np.array([samples[i].split or "" for i in labelled], dtype=object)
    if val in ("subject", "image"):
        if val == "subject" and (subjects == "").any():
            raise FeatxError(f"{arg('val', 'subject')}: {int((subjects == '').sum())} labelled image(s) in "
                             f"{collection.root} have no subject id; use {arg('val', 'image')} (image-level "
                             "holdout, leaks subjects) or a manifest with a subject column")
        protocol = make_splits(subjects, y, splits, cv=val, n_folds=HOLDOUT_FOLDS, seed=seed)
        name = f"1/{HOLDOUT_FOLDS} of {val}s"  # reports print "held-out 1/5 of subjects"
        label = f"held out fold 1 of a {protocol.label} split (seed {seed})"
    else:
        known = sorted({str(v) for v in splits if v})
        if val not in known:
            raise FeatxError(f"{arg('val', val)}: no labelled images in a split of that name in {collection.root}; "
                             f"choose subject, image{''.join(', ' + s for s in known)}")
        protocol = make_splits(subjects, y, splits, eval_set=val, seed=seed)
        name, label = protocol.name, protocol.label
    train, test = protocol.folds[0]
    if not len(test):
        raise FeatxError(f"{arg('val', val)}: the validation set is empty; choose another {arg('val')}")
    val_idx = tuple(labelled[i] for i in test)
    choose, unsplit = choose_part(collection, val_idx, seed)
    short = short_name(f"held-out {name}", bool(protocol.image_level), protocol.groups is None)
    return Split(tuple(labelled[i] for i in train), val_idx, name, label, bool(protocol.image_level),
                 choose=choose, unsplit=unsplit, short=short)


def choose_part(collection: Collection, val: Sequence[int], seed: int) -> tuple[tuple[int, ...], str]:
    """The validation images that choose best.pt's epoch, and ``""``, or all of ``val`` and why it was not split.

    Half the validation subjects (stratified by class, seeded; half the images when a validation image has no
    subject) choose the epoch; the other half scores it, so a run stopped early is scored on images that did
    not choose its epoch. A part needs :data:`MIN_PER_CLASS` subjects (images) of each class.
    """
    samples = collection.samples
    y = np.array([collection.classes.index(samples[i].label) for i in val])
    subjects = np.array([samples[i].subject or "" for i in val], dtype=object)
    grouped = bool(len(val)) and not (subjects == "").any()
    units = subjects if grouped else np.arange(len(val)).astype(str)
    unit = "subjects" if grouped else "images"
    need = {c: len(set(units[y == c])) for c in np.unique(y)}
    short = [collection.classes[c] for c, n in need.items() if n < 2 * MIN_PER_CLASS]
    if len(need) < 2 or short:
        have = ", ".join(f"{n} of {collection.classes[c]}" for c, n in need.items())
        return tuple(val), (f"the validation set ({unit}: {have}) is too small to split into a part that chooses "
                            f"the epoch and a part that scores it ({MIN_PER_CLASS} {unit} of each class each)")
    if grouped:
        splitter = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
        a, b = next(splitter.split(np.zeros(len(val)), y, units))
    else:
        a, b = next(StratifiedKFold(n_splits=2, shuffle=True, random_state=seed).split(np.zeros(len(val)), y))
    for part in (a, b):
        if any(len(set(units[part][y[part] == c])) < MIN_PER_CLASS for c in need):
            return tuple(val), (f"the validation {unit} could not be split into two parts with {MIN_PER_CLASS} "
                                f"{unit} of each class each")
    return tuple(val[i] for i in sorted(a)), ""


def select_images(collection: Collection, val: str, seed: int, *, workers: int, strict: bool) -> Split:
    """:func:`pick_split`, then the unreadable images left out of both sides (``strict``: the first one raises).

    The split is drawn on every labelled image, so that it does not depend on which files are readable.
    """
    split = pick_split(collection, val, seed)
    skipped = scan_images(collection, sorted(set(split.train) | set(split.val)), workers, strict=strict)
    bad = {i for i, _ in skipped}
    train = tuple(i for i in split.train if i not in bad)
    test = tuple(i for i in split.val if i not in bad)
    if not train or not test:
        side = "training" if not train else "validation"
        raise FeatxError(f"every {side} image of {collection.root} is unreadable ({len(bad)} skipped, first: "
                         f"{skipped[0][1]}); fix the files or choose another {arg('val')}")
    choose = tuple(i for i in split.choose if i not in bad)
    if not choose or (not split.unsplit and len(choose) == len(test)):  # a part left without readable images
        choose, unsplit = test, "every image of one part of the split validation set is unreadable"
    else:
        unsplit = split.unsplit
    return Split(train, test, split.protocol, split.protocol_label, split.image_level, tuple(skipped),
                 choose=choose, unsplit=unsplit, short=split.short)


def strict_stop(error: str) -> FeatxError:
    """The error ``strict`` raises at an unreadable image."""
    return FeatxError(f"{error}; {arg('strict', True)} stops at an unreadable image: fix or remove the file "
                      f"(or leave {arg('strict')} off to skip and record unreadable images)")


class _ScanSet(Dataset):
    """Decodes each image once (no transform): ``""`` or the one-line reason it cannot be read."""

    def __init__(self, collection: Collection, indices: Sequence[int]):
        self.collection, self.indices = collection, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, str]:
        index = self.indices[i]
        try:
            load_image(self.collection.abspath(index))
        except FeatxError as exc:
            return index, str(exc)
        return index, ""


def _keep_batch(batch):
    return batch


def scan_images(collection: Collection, indices: Sequence[int], workers: int, *,
                strict: bool) -> list[tuple[int, str]]:
    """(index, error) of the images among ``indices`` that cannot be read; ``strict`` raises at the first."""
    loader = DataLoader(_ScanSet(collection, indices), batch_size=64, shuffle=False, num_workers=workers,
                        collate_fn=_keep_batch, generator=torch.Generator())  # leaves the global RNG alone
    bad: list[tuple[int, str]] = []
    for batch in loader:
        for index, error in batch:
            if error:
                if strict:
                    raise strict_stop(error)
                bad.append((int(index), error))
    return bad


def labels(collection: Collection, classes: Sequence[str]) -> torch.Tensor:
    """The class index of every sample (-1 for unlabelled ones)."""
    y = torch.full((len(collection.samples),), -1, dtype=torch.int64)
    for i, s in enumerate(collection.samples):
        if s.label is not None:
            y[i] = list(classes).index(s.label)
    return y


def balanced_weights(y: torch.Tensor, train: Sequence[int], n_classes: int) -> torch.Tensor:
    """Loss weights inverse to the class frequencies of the training images."""
    counts = torch.bincount(y[list(train)], minlength=n_classes).double()
    return (counts.sum() / (n_classes * counts.clamp(min=1))).float()
