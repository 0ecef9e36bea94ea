"""Protocols by name: the ``cv``/``n_folds``/``eval_set`` strings of the CLI and of the library's functions,
turned into the protocol objects of :mod:`featx.evaluation.protocols` and split.

- ``subject``: stratified k-fold grouped by subject (``StratifiedGroupKFold``); the only honest estimate
  for a cell classifier, and the default when every row has a subject.
- ``image``: plain stratified k-fold; cells of one subject land on both sides, so every report marks it
  IMAGE-LEVEL.
- ``fold``: the data's own folds (C-NMC ``fold_0/1/2``), leave one fold out.
- ``eval_set="prelim"``: train on the training rows, test on the rows of that split once.

Rows of the held-out phases (``prelim``, ``final``, ``test``) never enter cross-validation.

Features of a fine-tuned network (a store whose rows carry ``roles``, see :mod:`featx.provenance`) get
``tuned-holdout`` by default (:func:`tuned_protocol`, :mod:`featx.evaluation.tuned`): heads train on the rows
the network saw and are tested only on rows it never saw. Cross-validation over seen rows is refused unless
``allow_optimistic``, and then the protocol is marked OPTIMISTIC.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from featx.errors import FeatxError, arg
from featx.evaluation.protocols import (
    HELD_OUT_SPLITS,
    AutoProtocol,
    BaseProtocol,
    DataFolds,
    Folds,
    HeldOut,
    ImageKFold,
    SplitterProtocol,
    SubjectKFold,
    _rows,
    check_folds,
    every_row_has_subject,
    held_out_protocol,
)
from featx.evaluation.tuned import tuned_split

__all__ = ["CV_CHOICES", "HELD_OUT_SPLITS", "PROTOCOLS", "Protocol", "check_cv", "every_row_has_subject",
           "held_out_protocol", "labelled_rows", "make_splits", "protocol_from", "protocol_name", "register_protocol",
           "split_features", "tuned_protocol", "without_unknown_subjects"]

Protocol = Folds  # the name of the folds before protocols were objects

ProtocolFactory = Callable[[int, int], BaseProtocol]  # (n_folds, seed) -> protocol

#: ``cv`` name -> factory ``(n_folds, seed)``; the order is the order messages list them in.
PROTOCOLS: dict[str, ProtocolFactory] = {
    "auto": AutoProtocol,
    "subject": SubjectKFold,
    "image": ImageKFold,
    "fold": lambda n_folds, seed: DataFolds(seed, n_folds),
}
CV_CHOICES = tuple(PROTOCOLS)  # the built-in names; check_cv reads PROTOCOLS, which register_protocol extends


def register_protocol(name: str, factory: ProtocolFactory) -> None:
    """Make ``cv=name`` (and ``--cv name``) build ``factory(n_folds, seed)``, e.g.
    ``register_protocol("loso", lambda k, seed: SplitterProtocol(LeaveOneGroupOut(), name="loso"))``."""
    PROTOCOLS[name.lower()] = factory


def check_cv(cv: str | None) -> str:
    """``cv`` in lower case ("auto" for None); :class:`FeatxError` when it names no protocol."""
    cv = (cv or "auto").lower()
    if cv not in PROTOCOLS:
        raise FeatxError(f"{arg('cv', cv)}: choose one of {', '.join(PROTOCOLS)}")
    return cv


def protocol_from(cv: str | BaseProtocol | Any | None = "auto", *, n_folds: int = 5, seed: int = 0,
                  eval_set: str | None = None) -> BaseProtocol:
    """The protocol object for ``cv`` (a name of :data:`PROTOCOLS`, a protocol, or a scikit-learn splitter:
    :class:`SplitterProtocol`); ``eval_set`` (a split name) gives :class:`HeldOut` whatever ``cv`` says."""
    if eval_set:
        return HeldOut(eval_set, seed)
    if isinstance(cv, BaseProtocol):
        return cv
    if cv is None or isinstance(cv, str):
        return PROTOCOLS[check_cv(cv)](n_folds, seed)
    return SplitterProtocol(cv)


def protocol_name(cv) -> str:
    """The name rows and results folders give ``cv`` (a name, a protocol or a splitter)."""
    return check_cv(cv) if cv is None or isinstance(cv, str) else protocol_from(cv).name


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


def make_splits(subjects, y, splits, *, cv: str = "auto", n_folds: int = 5, seed: int = 0,
                eval_set: str | None = None, paths=None, classes=None) -> Folds:
    """Build the train/test folds of one protocol over labelled rows (:func:`protocol_from` ``(cv, n_folds,
    seed, eval_set)`` split over these rows).

    ``subjects``/``splits`` are per-row strings ("" when unknown/none) or None; ``y`` class indices; ``paths`` and
    ``classes`` (optional) name the rows and classes in messages. ``eval_set`` (e.g. "prelim") trains on the
    training rows and tests on that split, ignoring ``cv``. When some cross-validation rows have a subject and
    others do not, ``cv`` "auto"/"subject" refuse (naming those files) rather than fall back to image-level folds.
    Impossible requests (one class, fewer subjects than folds, ...) raise :class:`FeatxError` saying what to change.
    """
    _rows(subjects, y, splits)  # no rows, unlabelled rows: refused before the protocol's name is checked
    protocol = protocol_from(cv, n_folds=n_folds, seed=seed, eval_set=eval_set)
    if not eval_set:
        check_folds(n_folds)
    return protocol.split_rows(subjects, y, splits, paths=paths, classes=classes)


def split_features(features, cv="auto", *, n_folds: int = 5, seed: int = 0, eval_set: str | None = None,
                   allow_optimistic: bool = False) -> Folds:
    """The folds of ``cv`` (a name, a protocol object or a scikit-learn splitter; ``eval_set``: that held-out
    split) over the labelled rows of ``features``; features of a fine-tuned network through
    :func:`featx.evaluation.tuned.tuned_split`."""
    if features.roles is not None:
        if cv is None or isinstance(cv, str):
            return tuned_protocol(features, cv=cv, eval_set=eval_set, n_folds=n_folds, seed=seed,
                                  allow_optimistic=allow_optimistic)
        return tuned_split(features, protocol_from(cv), allow_optimistic=allow_optimistic)
    if cv is None or isinstance(cv, str):
        return make_splits(features.subjects, features.y, features.splits, cv=cv, n_folds=n_folds, seed=seed,
                           eval_set=eval_set, paths=features.paths, classes=features.classes)
    protocol = protocol_from(cv, eval_set=eval_set, seed=seed)
    return protocol.split(features)


def tuned_protocol(features, *, cv: str = "auto", eval_set: str | None = None, n_folds: int = 5, seed: int = 0,
                   allow_optimistic: bool = False) -> Folds:
    """The protocol for features of a fine-tuned network (``features.roles`` set; labelled rows only).

    ``cv="auto"`` without ``eval_set``: ``tuned-holdout``, heads train on the rows the network saw (trained
    on, or of subjects it trained on) and are tested once on the labelled rows it never saw (its validation
    images and any other unseen rows). ``eval_set``: that split, refused when the network saw any of its
    rows. ``cv`` subject/image/fold: refused unless ``allow_optimistic``; then the usual folds, labelled
    OPTIMISTIC. Rows of held-out phases the network never saw stay out of the heads' training rows.
    """
    cv = check_cv(cv)
    protocol: BaseProtocol = protocol_from(cv, n_folds=n_folds, seed=seed, eval_set=eval_set)
    return tuned_split(features, protocol, allow_optimistic=allow_optimistic)
