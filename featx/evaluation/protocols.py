"""Protocols as objects: each says how labelled rows are split into train and test, and how its folds are named.

``SubjectKFold(k)`` (stratified k-fold grouped by subject), ``ImageKFold(k)`` (plain stratified k-fold, marked
IMAGE-LEVEL), ``DataFolds()`` (the data's own folds, leave one out), ``HeldOut(split)`` (train on the training
rows, test once on that split), ``AutoProtocol(k)`` (subject folds when every row has a subject, else image
folds), ``Hybrid(k)`` (the outer subject folds of ``featx.hybrid``) and ``SplitterProtocol(splitter)`` (any
scikit-learn splitter with ``split(X, y, groups)``). ``TunedHoldout()`` (features of a fine-tuned network) is in
:mod:`featx.evaluation.tuned`. Each has ``split(features) -> Folds``: the train/test index pairs with the
protocol's facts as fields (its name, label, whether it is image-level, its compact name ``short``), so no
report reads them back from the label.

Rows of the held-out phases (``prelim``, ``final``, ``test``) never enter cross-validation.

:mod:`featx.evaluation.splits` maps the ``cv`` names onto these objects (its registry ``PROTOCOLS``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from featx.errors import FeatxError, arg

HELD_OUT_SPLITS = ("prelim", "final", "test")


@dataclass
class Folds:
    """Train/test index pairs of one protocol and its facts, as reports print them."""
    name: str                                   # "subject", "image", "fold" or the held-out split ("prelim")
    label: str                                  # e.g. "subject-level 5-fold", "IMAGE-LEVEL 5-fold (...)"
    image_level: bool                           # True when one subject's cells sit on both sides
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train indices, test indices) into the rows given
    seed: int = 0
    note: str = ""                              # e.g. why "auto" chose image-level
    groups: np.ndarray | None = field(default=None, repr=False)  # subject of each row (None when unknown)
    optimistic: bool = False                    # CV over rows a fine-tuned network saw (asked for explicitly)
    short: str = ""                             # compact name: "subject 5-fold", "IMAGE-LEVEL C-NMC folds (3)"

    @property
    def n_folds(self) -> int:
        return len(self.folds)


def short_name(text: str, image_level: bool, subjects_unknown: bool = False) -> str:
    """A protocol's compact name as terminal tables print it: ``IMAGE-LEVEL 5-fold (subjects unknown)`` for
    ``image 5-fold``, image-level, without subjects."""
    if not image_level:
        return text
    return "IMAGE-LEVEL " + text.replace("image ", "") + (" (subjects unknown)" if subjects_unknown else "")


# --------------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------------
def every_row_has_subject(subjects) -> bool:
    """True when there is at least one row and every row has a subject id (``""`` means unknown)."""
    return subjects is not None and len(subjects) > 0 and bool(np.all(np.asarray(subjects) != ""))


@dataclass
class _Rows:
    """Labelled rows as every protocol reads them; ``pool``: the rows cross-validation may use."""
    y: np.ndarray
    splits: np.ndarray
    subj: np.ndarray
    paths: Any = None
    classes: Any = None


def _rows(subjects, y, splits, paths=None, classes=None) -> _Rows:
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        raise FeatxError("no labelled rows to evaluate; the feature store holds only unlabelled samples")
    if np.any(y < 0):
        raise FeatxError("make_splits got unlabelled rows (label -1); load the features with labelled=True")
    splits = np.asarray(splits if splits is not None else [""] * n).astype(str)
    subj = np.asarray(subjects).astype(str) if subjects is not None and len(subjects) else np.full(n, "")
    return _Rows(y, splits, subj, paths, classes)


def check_folds(n_folds) -> None:
    """:class:`FeatxError` unless ``n_folds`` is an integer of at least 2."""
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise FeatxError(f"{arg('n_folds', n_folds)}: cross-validation needs at least 2 folds")


# --------------------------------------------------------------------------------------------------
# the protocols
# --------------------------------------------------------------------------------------------------
class BaseProtocol:
    """A protocol: ``split(features)`` gives its :class:`Folds`. Subclasses set ``name`` and implement
    :meth:`split_rows`; ``kfold`` says whether ``n_folds`` (``--folds``) sets its number of folds."""
    name: str = ""
    kfold: bool = False

    def split(self, features) -> Folds:
        """The folds of this protocol over the (labelled) rows of a :class:`featx.store.FeatureSet`."""
        return self.split_rows(features.subjects, features.y, features.splits, paths=features.paths,
                               classes=features.classes)

    def split_rows(self, subjects, y, splits, *, paths=None, classes=None) -> Folds:
        """The folds over rows given as arrays (``subjects``/``splits``: strings, ``""`` when unknown, or None;
        ``y``: class indices; ``paths``/``classes`` name rows and classes in messages)."""
        raise NotImplementedError


class _CrossValidation(BaseProtocol):
    """Folds over the rows outside the held-out phases, each training part checked to hold two classes."""

    def split_rows(self, subjects, y, splits, *, paths=None, classes=None) -> Folds:
        rows = _rows(subjects, y, splits, paths, classes)
        self._check()
        n, splits = len(rows.y), rows.splits
        pool = np.flatnonzero(~np.isin(splits, HELD_OUT_SPLITS))
        if pool.size == 0:
            raise FeatxError(f"every labelled row belongs to a held-out split ({', '.join(sorted(set(splits)))}); "
                             f"use {arg('eval_set')} to test on one of them")
        skipped = n - pool.size
        note = f"{skipped} rows of held-out splits ({', '.join(sorted(set(splits[~np.isin(np.arange(n), pool)])))})" \
               " left out of cross-validation" if skipped else ""
        _require_two_classes(rows.y[pool], "the cross-validation rows")
        prot = self._folds(rows, pool, note)
        for k, (train, _test) in enumerate(prot.folds):
            _require_two_classes(rows.y[train], f"the training part of fold {k + 1} ({prot.label})",
                                 hint=self._fewer(prot))
        return prot

    def _check(self) -> None:
        check_folds(getattr(self, "k", 2))

    def _folds(self, rows: _Rows, pool: np.ndarray, note: str) -> Folds:
        raise NotImplementedError

    def _fewer(self, prot: Folds) -> str:
        if prot.n_folds > 2:
            return f"use fewer folds than {arg('n_folds', prot.n_folds)}"
        return f"its test fold holds every row of a class; try another {arg('seed')}"


def _groups(rows: _Rows, pool: np.ndarray, refuse_partial: bool) -> np.ndarray | None:
    """The subject of every row, None when a cross-validation row has none (refused when only some have)."""
    unknown = pool[rows.subj[pool] == ""]
    if 0 < unknown.size < pool.size and refuse_partial:
        raise FeatxError(_unknown_subjects_message(unknown, pool.size, rows.paths))
    return rows.subj if unknown.size == 0 else None  # held-out rows may lack a subject: they are never folded


@dataclass(frozen=True)
class SubjectKFold(_CrossValidation):
    """Stratified k-fold grouped by subject (``StratifiedGroupKFold``): no subject on both sides."""
    k: int = 5
    seed: int = 0
    name = "subject"
    kfold = True

    def _folds(self, rows, pool, note):
        return _subject_folds(rows.y, pool, _groups(rows, pool, True), self.k, self.seed, note, rows.classes)


@dataclass(frozen=True)
class ImageKFold(_CrossValidation):
    """Plain stratified k-fold over images: cells of one subject land on both sides (IMAGE-LEVEL)."""
    k: int = 5
    seed: int = 0
    name = "image"
    kfold = True

    def _folds(self, rows, pool, note):
        return _image_folds(rows, pool, _groups(rows, pool, False), self.k, self.seed, note)


@dataclass(frozen=True)
class AutoProtocol(_CrossValidation):
    """``cv="auto"``: :class:`SubjectKFold` when every row has a subject, else :class:`ImageKFold` (the note says
    why); refused when only some rows have one."""
    k: int = 5
    seed: int = 0
    name = "auto"
    kfold = True

    def _folds(self, rows, pool, note):
        groups = _groups(rows, pool, True)
        if groups is not None:
            return _subject_folds(rows.y, pool, groups, self.k, self.seed, note, rows.classes)
        why = "subjects unknown (no row has a subject id): fell back to image-level folds"
        return _image_folds(rows, pool, None, self.k, self.seed, "; ".join(filter(None, [why, note])))


@dataclass(frozen=True)
class DataFolds(_CrossValidation):
    """The data's own folds (C-NMC ``fold_0/1/2``), leave one fold out. ``n_folds`` does not change them; it
    is only checked as ``--folds`` is for every cross-validation."""
    seed: int = 0
    n_folds: int | None = None
    name = "fold"

    def _check(self) -> None:
        if self.n_folds is not None:
            check_folds(self.n_folds)

    def _folds(self, rows, pool, note):
        return _given_folds(rows.splits, pool, _groups(rows, pool, False), self.seed, note)

    def _fewer(self, prot: Folds) -> str:
        return f"that fold holds every row of a class; use {arg('cv', 'subject')} or {arg('cv', 'image')}"


@dataclass(frozen=True)
class Hybrid(SubjectKFold):
    """The outer folds of ``featx.hybrid``: subject-grouped k-fold, a network fine-tuned per fold."""
    name = "hybrid"

    def _folds(self, rows, pool, note):
        return self.named(super()._folds(rows, pool, note))

    def named(self, folds: Folds) -> Folds:
        """``folds`` as this protocol's (its name, label and short name)."""
        return replace(folds, name=self.name, label=hybrid_label(folds.n_folds), image_level=False,
                       short=f"hybrid {folds.n_folds}-fold")


def hybrid_label(n_folds: int) -> str:
    return f"hybrid subject-level {n_folds}-fold (network fine-tuned per fold on training subjects)"


@dataclass(frozen=True)
class HeldOut(BaseProtocol):
    """Train on every row outside the held-out phases and ``split``; test once on the rows of ``split``."""
    split_name: str = "prelim"
    seed: int = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.split_name

    def split_rows(self, subjects, y, splits, *, paths=None, classes=None) -> Folds:
        rows = _rows(subjects, y, splits, paths, classes)
        return held_out_protocol(rows.y, rows.splits, rows.subj if every_row_has_subject(rows.subj) else None,
                                 self.split_name, self.seed)


@dataclass(frozen=True)
class SplitterProtocol(_CrossValidation):
    """Any scikit-learn splitter (``GroupKFold(3)``, ``LeaveOneGroupOut()``, ...) over the cross-validation rows,
    with the subjects as ``groups`` (None when a row has none). Image-level when a subject lands on both sides
    of a fold (or subjects are unknown)."""
    splitter: Any = None
    name: str = ""  # type: ignore[misc]

    def __post_init__(self):
        if not callable(getattr(self.splitter, "split", None)):
            raise FeatxError(f"{arg('cv', self.splitter)}: not a protocol name, a protocol or a splitter with "
                             ".split(X, y, groups)")
        if not self.name:
            object.__setattr__(self, "name", type(self.splitter).__name__)

    def _check(self) -> None:
        pass

    def _folds(self, rows, pool, note):
        groups = _groups(rows, pool, False)
        try:
            with warnings.catch_warnings():  # KFold & co. ignore the subjects; the leak check below says so
                warnings.filterwarnings("ignore", message="The groups parameter is ignored", category=UserWarning)
                folds = [(pool[a], pool[b]) for a, b in self.splitter.split(
                    np.zeros((len(pool), 1)), rows.y[pool], None if groups is None else groups[pool])]
        except ValueError as exc:
            raise FeatxError(f"{arg('cv', self.name)}: {' '.join(str(exc).split())}") from None
        leak = groups is None or _leaks(folds, groups)
        label = f"{self.name} ({len(folds)} folds)"
        if leak:
            label = f"IMAGE-LEVEL {label}: " + ("subjects unknown" if groups is None else "subjects on both sides")
        return Folds(self.name, label, leak, folds, 0, note, groups,
                     short=short_name(f"{self.name} ({len(folds)} folds)", leak, groups is None))


# --------------------------------------------------------------------------------------------------
# folds
# --------------------------------------------------------------------------------------------------
def _image_folds(rows: _Rows, pool, groups, n_folds: int, seed: int, note: str) -> Folds:
    y_pool = rows.y[pool]
    counts = np.bincount(y_pool)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        raise FeatxError("the rarest class has 1 labelled row: cross-validation needs at least 2 rows of each "
                         "class (one to test, one to train on); add rows of that class")
    if smallest < n_folds:
        raise FeatxError(f"the rarest class has {smallest} labelled rows, too few for {arg('n_folds', n_folds)}; "
                         f"use {arg('n_folds', max(2, smallest))} or fewer")
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = [(pool[a], pool[b]) for a, b in splitter.split(np.zeros(len(pool)), y_pool)]
    n_unknown = int(np.sum(rows.subj[pool] == ""))
    why = ("cells of one subject on both sides" if groups is not None else
           "subjects unknown" if n_unknown == pool.size else "some subjects unknown")
    return Folds("image", f"IMAGE-LEVEL {n_folds}-fold ({why})", True, folds, seed, note, groups,
                 short=short_name(f"image {n_folds}-fold", True, groups is None))


def _subject_folds(y, pool, groups, n_folds: int, seed: int, note: str, classes=None) -> Folds:
    if groups is None:
        raise FeatxError(f"{arg('cv', 'subject')} needs a subject id for every row, and no row of this data has "
                         f"one; use {arg('cv', 'image')} (image-level, optimistic) or a manifest with a subject "
                         "column")
    g = groups[pool]
    n_subj = len(np.unique(g))
    # the fold that tests the only subject of a class trains without that class, whatever the number of folds
    for c in np.unique(y[pool]):
        holders = np.unique(g[y[pool] == c])
        if len(holders) < 2:
            name = c if classes is None else classes[c]
            raise FeatxError(f"subject-grouped CV is impossible here: only 1 subject ({holders[0]}) has rows of "
                             f"class {name}, and a fold that tests it would train without that class (each class "
                             f"needs 2 or more subjects); add subjects, or use {arg('cv', 'image')} (image-level: "
                             "one subject's cells on both sides, an optimistic estimate)")
    if n_subj < n_folds:  # n_subj >= 2 here
        raise FeatxError(f"only {n_subj} subjects for {arg('n_folds', n_folds)}: subject-grouped CV needs at least "
                         f"one subject per fold; use {arg('n_folds', n_subj)} or fewer (or {arg('cv', 'image')}, "
                         "which leaks subjects)")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = [(pool[a], pool[b]) for a, b in splitter.split(np.zeros(len(pool)), y[pool], g)]
    if _leaks(folds, groups):  # pragma: no cover - guaranteed by the splitter
        raise RuntimeError("subject-grouped folds share a subject")
    return Folds("subject", f"subject-level {n_folds}-fold", False, folds, seed, note, groups,
                 short=f"subject {n_folds}-fold")


def _given_folds(splits, pool, groups, seed: int, note: str) -> Folds:
    values = splits[pool]
    if np.any(values == ""):
        raise FeatxError(f"{arg('cv', 'fold')} needs every training row to carry a split (fold_0, fold_1, ...); "
                         f"this data has rows without one; use {arg('cv', 'subject')} or {arg('cv', 'image')}")
    names = sorted(set(values))
    if len(names) < 2:
        raise FeatxError(f"{arg('cv', 'fold')} needs at least 2 folds in the data; found only {names[0]!r}; "
                         f"use {arg('cv', 'subject')} or {arg('cv', 'image')}")
    folds = [(pool[values != f], pool[values == f]) for f in names]
    kind = "C-NMC folds" if all(f.startswith("fold") for f in names) else "given splits"
    leak = groups is not None and _leaks(folds, groups)
    label = f"{kind} ({', '.join(names)}; leave one out)"
    if leak:
        label = f"IMAGE-LEVEL {label}: subjects on both sides"
    elif groups is None:
        label = f"{label}, subjects unknown: may leak"
    short = f"{'C-NMC folds' if kind == 'C-NMC folds' else 'given folds'} ({len(folds)})"
    return Folds("fold", label, leak or groups is None, folds, seed, note, groups,
                 short=short_name(short, leak or groups is None, groups is None))


def held_out_protocol(y, splits, groups, eval_set: str, seed: int = 0) -> Folds:
    """Train on every row outside the held-out phases and ``eval_set``; test once on the rows of ``eval_set``."""
    test = np.flatnonzero(splits == eval_set)
    if test.size == 0:
        have = ", ".join(sorted(set(splits) - {""})) or "none"
        raise FeatxError(f"{arg('eval_set', eval_set)}: no labelled rows of split {eval_set!r}; labelled splits "
                         f"here: {have}")
    train = np.flatnonzero(~np.isin(splits, [*HELD_OUT_SPLITS, eval_set]))
    if train.size == 0:
        raise FeatxError(f"{arg('eval_set', eval_set)}: no training rows left (all rows are in held-out splits)")
    _require_two_classes(y[train], f"the training rows for {arg('eval_set', eval_set)}")
    names = sorted(set(splits[train]) - {""})
    folds = [(train, test)]
    trained_on = ", ".join(names) if names else "all other rows"
    leak = groups is not None and _leaks(folds, groups)
    label = f"held-out {eval_set} (trained on {trained_on})"
    if leak:
        label = f"IMAGE-LEVEL {label}: subjects on both sides"
    return Folds(eval_set, label, leak, folds, seed, "", groups, short=short_name(f"held-out {eval_set}", leak))


def _unknown_subjects_message(unknown, n_rows: int, paths) -> str:
    """One line naming the rows without a subject (first 3 and a count) and the three ways on."""
    names = [str(paths[i]) for i in unknown[:3]] if paths is not None else [f"row {i}" for i in unknown[:3]]
    more = f" and {unknown.size - 3} more" if unknown.size > 3 else ""
    return (f"{unknown.size} of {n_rows} labelled rows have no subject id (their names do not parse): "
            f"{', '.join(names)}{more}; subject-grouped CV cannot place them: fix those file names, drop the rows "
            f"({arg('drop_unknown_subjects')}), or use {arg('cv', 'image')} (image-level, optimistic)")


def _leaks(folds, groups) -> bool:
    return any(np.intersect1d(groups[a], groups[b]).size for a, b in folds)


def _require_two_classes(y, what: str, hint: str = "check the labels of the data") -> None:
    if len(np.unique(y)) < 2:
        raise FeatxError(f"{what} hold only one class; a classifier needs at least two ({hint})")
