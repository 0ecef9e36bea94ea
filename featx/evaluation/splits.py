"""Protocols: how labelled rows are split into train and test.

- ``subject``: stratified k-fold grouped by subject (``StratifiedGroupKFold``); the only honest estimate
  for a cell classifier, and the default when every row has a subject.
- ``image``: plain stratified k-fold; cells of one subject land on both sides, so every report marks it
  IMAGE-LEVEL.
- ``fold``: the data's own folds (C-NMC ``fold_0/1/2``), leave one fold out.
- ``eval_set="prelim"``: train on the training rows, test on the rows of that split once.

Rows of the held-out phases (``prelim``, ``final``, ``test``) never enter cross-validation.

Features of a fine-tuned network (a store whose rows carry ``roles``, see :mod:`featx.provenance`) get
``tuned-holdout`` by default (:func:`tuned_protocol`): heads train on the rows the network saw and are tested
only on rows it never saw. Cross-validation over seen rows is refused unless ``allow_optimistic``, and
then the protocol is marked OPTIMISTIC.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from featx.errors import FeatxError, arg
from featx.provenance import OLD_STORE_NOTE, UNSEEN_ROLES

HELD_OUT_SPLITS = ("prelim", "final", "test")
CV_CHOICES = ("auto", "subject", "image", "fold")
_OPTIMISTIC_REASON = "features tuned on test subjects"  # in OPTIMISTIC labels


@dataclass
class Protocol:
    """Train/test index pairs and how to name them in a report."""
    name: str                                   # "subject", "image", "fold" or the held-out split ("prelim")
    label: str                                  # e.g. "subject-level 5-fold", "IMAGE-LEVEL 5-fold (...)"
    image_level: bool                           # True when one subject's cells sit on both sides
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train indices, test indices) into the rows given
    seed: int = 0
    note: str = ""                              # e.g. why "auto" chose image-level
    groups: np.ndarray | None = field(default=None, repr=False)  # subject of each row (None when unknown)
    optimistic: bool = False                    # CV over rows a fine-tuned network saw (asked for explicitly)

    @property
    def n_folds(self) -> int:
        return len(self.folds)


# --------------------------------------------------------------------------------------------------
# subjects and rows
# --------------------------------------------------------------------------------------------------
def every_row_has_subject(subjects) -> bool:
    """True when there is at least one row and every row has a subject id (``""`` means unknown)."""
    return subjects is not None and len(subjects) > 0 and bool(np.all(np.asarray(subjects) != ""))


def labelled_rows(features):
    """``features`` without its unlabelled rows (label -1)."""
    keep = np.asarray(features.y) >= 0
    return features if keep.all() else features.select(keep)


def without_unknown_subjects(features):
    """``features`` without its rows that have no subject id, and how many were dropped."""
    subj = np.asarray(features.subjects).astype(str) if len(features.subjects) else np.full(len(features), "")
    unknown = subj == ""
    if unknown.all():
        raise FeatxError(f"{arg('drop_unknown_subjects', True)}: no row of {features.name} has a subject id, so "
                         f"every row would be dropped; leave the option out ({arg('cv', 'auto')} then uses "
                         "image-level folds, marked IMAGE-LEVEL)")
    return (features.select(~unknown) if unknown.any() else features), int(unknown.sum())


# --------------------------------------------------------------------------------------------------
# plain protocols
# --------------------------------------------------------------------------------------------------
def make_splits(subjects, y, splits, *, cv: str = "auto", n_folds: int = 5, seed: int = 0,
                eval_set: str | None = None, paths=None, classes=None) -> Protocol:
    """Build the train/test folds of one protocol over labelled rows.

    ``subjects``/``splits`` are per-row strings ("" when unknown/none) or None; ``y`` class indices; ``paths`` and
    ``classes`` (optional) name the rows and classes in messages. ``eval_set`` (e.g. "prelim") trains on the
    training rows and tests on that split, ignoring ``cv``. When some cross-validation rows have a subject and
    others do not, ``cv`` "auto"/"subject" refuse (naming those files) rather than fall back to image-level folds.
    Impossible requests (one class, fewer subjects than folds, ...) raise :class:`FeatxError` saying what to change.
    """
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        raise FeatxError("no labelled rows to evaluate; the feature store holds only unlabelled samples")
    if np.any(y < 0):
        raise FeatxError("make_splits got unlabelled rows (label -1); load the features with labelled=True")
    splits = np.asarray(splits if splits is not None else [""] * n).astype(str)
    subj = np.asarray(subjects).astype(str) if subjects is not None and len(subjects) else np.full(n, "")

    if eval_set:
        return held_out_protocol(y, splits, subj if every_row_has_subject(subj) else None, eval_set, seed)

    cv = check_cv(cv)
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise FeatxError(f"{arg('n_folds', n_folds)}: cross-validation needs at least 2 folds")
    pool = np.flatnonzero(~np.isin(splits, HELD_OUT_SPLITS))
    if pool.size == 0:
        raise FeatxError(f"every labelled row belongs to a held-out split ({', '.join(sorted(set(splits)))}); "
                         f"use {arg('eval_set')} to test on one of them")
    skipped = n - pool.size
    note = f"{skipped} rows of held-out splits ({', '.join(sorted(set(splits[~np.isin(np.arange(n), pool)])))}) " \
           "left out of cross-validation" if skipped else ""
    y_pool = y[pool]
    _require_two_classes(y_pool, "the cross-validation rows")

    unknown = pool[subj[pool] == ""]
    groups = subj if unknown.size == 0 else None  # held-out rows may lack a subject: they are never folded
    if 0 < unknown.size < pool.size and cv in ("auto", "subject"):
        raise FeatxError(_unknown_subjects_message(unknown, pool.size, paths))

    if cv == "auto":
        if groups is None:
            cv = "image"
            why = "subjects unknown (no row has a subject id): fell back to image-level folds"
            note = "; ".join(filter(None, [why, note]))
        else:
            cv = "subject"

    if cv == "subject":
        prot = _subject_folds(y, pool, groups, n_folds, seed, note, classes)
    elif cv == "image":
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
        why = ("cells of one subject on both sides" if groups is not None else
               "subjects unknown" if unknown.size == pool.size else "some subjects unknown")
        prot = Protocol("image", f"IMAGE-LEVEL {n_folds}-fold ({why})", True, folds, seed, note, groups)
    else:
        prot = _given_folds(splits, pool, groups, seed, note)

    if prot.name == "fold":  # the data's own folds: --folds and --seed do not change them
        fewer = f"that fold holds every row of a class; use {arg('cv', 'subject')} or {arg('cv', 'image')}"
    elif prot.n_folds > 2:
        fewer = f"use fewer folds than {arg('n_folds', prot.n_folds)}"
    else:
        fewer = f"its test fold holds every row of a class; try another {arg('seed')}"
    for k, (train, _test) in enumerate(prot.folds):
        _require_two_classes(y[train], f"the training part of fold {k + 1} ({prot.label})", hint=fewer)
    if prot.name == "subject" and _leaks(prot.folds, groups):  # pragma: no cover - guaranteed by the splitter
        raise RuntimeError("subject-grouped folds share a subject")
    return prot


def check_cv(cv: str | None) -> str:
    """``cv`` in lower case ("auto" for None); :class:`FeatxError` when it names no protocol."""
    cv = (cv or "auto").lower()
    if cv not in CV_CHOICES:
        raise FeatxError(f"{arg('cv', cv)}: choose one of {', '.join(CV_CHOICES)}")
    return cv


def _subject_folds(y, pool, groups, n_folds: int, seed: int, note: str, classes=None) -> Protocol:
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
    return Protocol("subject", f"subject-level {n_folds}-fold", False, folds, seed, note, groups)


def _given_folds(splits, pool, groups, seed: int, note: str) -> Protocol:
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
    return Protocol("fold", label, leak or groups is None, folds, seed, note, groups)


def held_out_protocol(y, splits, groups, eval_set: str, seed: int = 0) -> Protocol:
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
    return Protocol(eval_set, label, leak, folds, seed, "", groups)


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


# --------------------------------------------------------------------------------------------------
# stores of fine-tuned networks
# --------------------------------------------------------------------------------------------------
def _no_unseen_message(features, what: str) -> str:
    stores = ", ".join(t.get("store", "") for t in features.tuned) or "this store"
    return (f"{stores}: {what}; its features come from a fine-tuned network, so no row it saw may be scored: "
            f"use `featx hybrid` (fine-tunes per outer fold), or fine-tune with a validation split "
            f"({arg('val', 'subject')} or {arg('eval_set', 'prelim')}) and extract again, or pass "
            f"{arg('allow_optimistic')} to cross-validate anyway (marked OPTIMISTIC)")


def _match_note(features) -> str:
    parts = []
    for t in features.tuned:
        if t.get("provenance") != "recorded":
            parts.append(f"{t.get('store', '')}: {t.get('match', 'the checkpoint records no samples')}")
        elif not t.get("same_root", True) or "differs" in str(t.get("match", "")):
            parts.append(f"{t.get('store', '')}: {t.get('match', '')}")
        if "provenance_version" not in t and t.get("provenance") == "recorded":
            parts.append(f"{t.get('store', '')}: {OLD_STORE_NOTE}")
    return "; ".join(parts)


def tuned_protocol(features, *, cv: str = "auto", eval_set: str | None = None, n_folds: int = 5, seed: int = 0,
                   allow_optimistic: bool = False) -> Protocol:
    """The protocol for features of a fine-tuned network (``features.roles`` set; labelled rows only).

    ``cv="auto"`` without ``eval_set``: ``tuned-holdout``, heads train on the rows the network saw (trained
    on, or of subjects it trained on) and are tested once on the labelled rows it never saw (its validation
    images and any other unseen rows). ``eval_set``: that split, refused when the network saw any of its
    rows. ``cv`` subject/image/fold: refused unless ``allow_optimistic``; then the usual folds, labelled
    OPTIMISTIC. Rows of held-out phases the network never saw stay out of the heads' training rows.
    """
    roles = np.asarray(features.roles).astype(str)
    y = np.asarray(features.y)
    unseen = np.isin(roles, UNSEEN_ROLES)
    subjects = features.subjects
    groups = np.asarray(subjects).astype(str) if every_row_has_subject(subjects) else None
    splits = np.asarray(features.splits).astype(str)
    cv = check_cv(cv)
    note = _match_note(features)
    if groups is not None:  # a subject with any seen row is seen (the store's subject ids may differ from
        shared = unseen & np.isin(groups, groups[~unseen])  # the checkpoint's, e.g. another manifest)
        if shared.any():
            unseen &= ~shared
            note = "; ".join(filter(None, [note, f"{int(shared.sum())} rows never trained on count as seen: "
                                                 "their subject has rows the network saw"]))
    optimistic_label = None
    if eval_set:
        prot = make_splits(subjects, y, splits, eval_set=eval_set, seed=seed, paths=features.paths)
        train, test = prot.folds[0]
        seen = int((~unseen[test]).sum())
        if seen:
            if not allow_optimistic:
                raise FeatxError(_no_unseen_message(
                    features, f"{arg('eval_set', eval_set)}: the network trained on {seen} of its {len(test)} rows "
                              "(or on their subjects)"))
            optimistic_label = f"OPTIMISTIC {prot.label} ({_OPTIMISTIC_REASON}: {seen} of {len(test)} test rows seen)"
        else:
            prot.name = f"tuned-{eval_set}"
            prot.label = f"tuned-holdout: {prot.label}, rows the network never saw"
    elif cv != "auto":
        if not allow_optimistic:
            raise FeatxError(f"{arg('cv', cv)}: the fine-tuned network of these features saw {int((~unseen).sum())} "
                             f"of the {len(y)} labelled rows, so its test folds would score images it trained on; "
                             f"leave {arg('cv')} out for the tuned-holdout protocol (tests only rows it never saw), "
                             f"use `featx hybrid`, or add {arg('allow_optimistic')} to run it anyway (marked "
                             "OPTIMISTIC)")
        prot = make_splits(subjects, y, splits, cv=cv, n_folds=n_folds, seed=seed, paths=features.paths)
        optimistic_label = f"OPTIMISTIC {prot.label} ({_OPTIMISTIC_REASON})"
    else:
        prot, note = _tuned_holdout(features, y, roles, unseen, splits, groups, seed, note)
    if optimistic_label is not None:
        prot.label = optimistic_label
        prot.optimistic = True
    prot.note = "; ".join(filter(None, [prot.note, note]))
    return prot


def _tuned_holdout(features, y, roles, unseen, splits, groups, seed: int, note: str) -> tuple[Protocol, str]:
    """Heads train on the rows the network saw and test once on those it never saw."""
    test = np.flatnonzero(unseen)
    if test.size == 0:
        raise FeatxError(_no_unseen_message(features, "the network trained on every labelled row (or on "
                                                      "its subject), none is left to test on"))
    train = np.flatnonzero(~unseen & ~np.isin(splits, HELD_OUT_SPLITS))
    if train.size == 0:
        raise FeatxError(_no_unseen_message(features, "no labelled row the network trained on is in this "
                                                      "store to train the heads on"))
    _require_two_classes(y[train], "the rows the fine-tuned network saw (the heads' training rows)")
    n_subj = len(np.unique(groups[test])) if groups is not None else 0
    label = (f"tuned-holdout: heads trained on {train.size} rows the network saw, tested on {test.size} "
             f"rows it never saw" + (f" ({n_subj} subjects)" if groups is not None else ""))
    if groups is None:
        label += ", subjects unknown: may leak"
    prot = Protocol("tuned-holdout", label, groups is None, [(train, test)], seed, "", groups)
    chose, scored = int(np.sum(roles == "val-choose")), int(np.sum(roles[test] == "val"))
    if chose:
        note = "; ".join(filter(None, [note, f"{chose} rows were validation images that chose the checkpoint's "
                                             "epoch: seen, so never test rows"]))
    if scored:
        note = "; ".join(filter(None, [note, f"{scored} test rows were validation images that did not choose "
                                             "the checkpoint's epoch"]))
    return prot, note
