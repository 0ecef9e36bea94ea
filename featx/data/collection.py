"""What discovery returns: :class:`Sample` rows in a deterministic order, gathered in a :class:`Collection`."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_ORDER = ("fold_0", "fold_1", "fold_2", "prelim", "final")


@dataclass(frozen=True)
class Sample:
    """One image: where it is (relative to the collection root) and what is known about it."""

    path: str            # POSIX path relative to Collection.root
    label: str | None    # lower-case class name; None = unlabelled
    subject: str | None  # upper-cased subject id; None when unknown
    split: str | None    # fold_0, fold_1, fold_2, prelim, final, a manifest's value, or None


@dataclass
class Collection:
    """The samples of one data set, in a deterministic order, and the layout they were read from."""

    root: Path
    layout: str
    samples: list[Sample]
    classes: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)  # folders discovery could not list or enter

    def __len__(self) -> int:
        return len(self.samples)

    def abspath(self, sample_or_index: Sample | int) -> Path:
        """Absolute path of a sample (given as a Sample or an index into `samples`)."""
        sample = self.samples[sample_or_index] if isinstance(sample_or_index, int) else sample_or_index
        return self.root / sample.path

    def fingerprint(self) -> str:
        """sha256 hex digest of the (path, label, subject, split) rows, in order."""
        digest = hashlib.sha256()
        for s in self.samples:
            row = "\t".join(v if v is not None else "" for v in (s.path, s.label, s.subject, s.split))
            digest.update(row.encode("utf-8") + b"\n")
        return digest.hexdigest()

    @property
    def every_labelled_sample_has_subject(self) -> bool:
        """True when there are labelled samples and every one of them has a subject."""
        labelled = [s for s in self.samples if s.label is not None]
        return bool(labelled) and all(s.subject for s in labelled)

    @property
    def splits(self) -> list[str]:
        """The splits present, in the canonical order (None is left out)."""
        return sorted({s.split for s in self.samples if s.split is not None}, key=split_key)

    def subset(self, indices: Sequence[int]) -> Collection:
        """A collection of some samples (same root, layout and classes, so label indices still match)."""
        return Collection(self.root, self.layout, [self.samples[int(i)] for i in indices], list(self.classes),
                          list(self.unreadable_folders))


def natural_key(text: str) -> tuple:
    """Sort key that puts 2.bmp before 10.bmp."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p), text


def split_key(split: str | None) -> tuple:
    """Sort key of a split: the C-NMC splits in SPLIT_ORDER, then others naturally, then None."""
    if split is None:
        return (2, ())
    if split in SPLIT_ORDER:
        return (0, SPLIT_ORDER.index(split))
    return (1, natural_key(split))


def _sample_key(sample: Sample) -> tuple:
    return split_key(sample.split), natural_key(sample.path)


def make_collection(root: Path, layout: str, samples: list[Sample], unreadable: Sequence[str] = ()) -> Collection:
    """A Collection of ``samples`` in the canonical order (split, then natural path order)."""
    samples = sorted(samples, key=_sample_key)
    classes = sorted({s.label for s in samples if s.label is not None})
    return Collection(root=root, layout=layout, samples=samples, classes=classes,
                      unreadable_folders=sorted(set(unreadable), key=natural_key))
