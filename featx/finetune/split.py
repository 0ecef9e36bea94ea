"""Which images a run trains and validates on: the validation split, and the scan for unreadable images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featx.data import Collection
from featx.data.images import load_image
from featx.errors import FeatxError, arg
from featx.evaluation import make_splits

HOLDOUT_FOLDS = 5  # val "subject"/"image" hold out one fold of the 5-fold protocol of classify (20%)


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
    return Split(tuple(labelled[i] for i in train), tuple(labelled[i] for i in test), name, label,
                 bool(protocol.image_level))


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
    return Split(train, test, split.protocol, split.protocol_label, split.image_level, tuple(skipped))


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
