"""Protocols for features of a fine-tuned network (a store whose rows carry ``roles``, see :mod:`featx.provenance`).

``TunedHoldout()`` (what ``cv="auto"`` gives them): heads train on the rows the network saw and are tested only on
rows it never saw. :func:`tuned_split` applies any protocol to such features: a held-out split is refused when the
network saw any of its rows, cross-validation over seen rows unless ``allow_optimistic`` (then marked OPTIMISTIC).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featx.errors import FeatxError, arg, command
from featx.evaluation.protocols import (
    HELD_OUT_SPLITS,
    AutoProtocol,
    BaseProtocol,
    Folds,
    HeldOut,
    _require_two_classes,
    every_row_has_subject,
    short_name,
)
from featx.provenance import OLD_STORE_NOTE, UNSEEN_ROLES

HYBRID = command("hybrid", "featx.hybrid(...)")  # fine-tunes per outer fold: no row of a test fold seen

_OPTIMISTIC_REASON = "features tuned on test subjects"  # in OPTIMISTIC labels


@dataclass(frozen=True)
class TunedHoldout(BaseProtocol):
    """Heads train on the rows the fine-tuned network saw and are tested once on the labelled rows it never saw
    (its validation images and any other unseen rows). Only for features with ``roles``."""
    seed: int = 0
    name = "tuned-holdout"

    def split(self, features) -> Folds:
        return tuned_split(features, self)


def tuned_split(features, protocol: BaseProtocol, *, allow_optimistic: bool = False) -> Folds:
    """The folds of ``protocol`` over features of a fine-tuned network (``features.roles`` set; labelled rows).

    :class:`AutoProtocol` or :class:`TunedHoldout`: tuned-holdout. :class:`HeldOut`: that split, refused when
    the network saw any of its rows (or their subjects). Any other protocol: refused unless
    ``allow_optimistic``; then its folds, labelled OPTIMISTIC. Rows of held-out phases the network never saw
    stay out of the heads' training rows.
    """
    roles = np.asarray(features.roles).astype(str)
    y = np.asarray(features.y)
    unseen = np.isin(roles, UNSEEN_ROLES)
    subjects = features.subjects
    groups = np.asarray(subjects).astype(str) if every_row_has_subject(subjects) else None
    splits = np.asarray(features.splits).astype(str)
    note = _match_note(features)
    if groups is not None:  # a subject with any seen row is seen (the store's subject ids may differ from
        shared = unseen & np.isin(groups, groups[~unseen])  # the checkpoint's, e.g. another manifest)
        if shared.any():
            unseen &= ~shared
            note = "; ".join(filter(None, [note, f"{int(shared.sum())} rows never trained on count as seen: "
                                                 "their subject has rows the network saw"]))
    optimistic_label = None
    if isinstance(protocol, HeldOut):
        eval_set = protocol.split_name
        prot = protocol.split_rows(subjects, y, splits, paths=features.paths)
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
            prot.short = short_name(f"tuned held-out {eval_set}", prot.image_level)
    elif not isinstance(protocol, (AutoProtocol, TunedHoldout)):
        if not allow_optimistic:
            raise FeatxError(f"{arg('cv', protocol.name)}: the fine-tuned network of these features saw "
                             f"{int((~unseen).sum())} of the {len(y)} labelled rows, so its test folds would score "
                             f"images it trained on; leave {arg('cv')} out for the tuned-holdout protocol (tests "
                             f"only rows it never saw), use {HYBRID}, or add {arg('allow_optimistic')} to run "
                             "it anyway (marked OPTIMISTIC)")
        prot = protocol.split_rows(subjects, y, splits, paths=features.paths)
        optimistic_label = f"OPTIMISTIC {prot.label} ({_OPTIMISTIC_REASON})"
    else:
        prot, note = _tuned_holdout(features, y, roles, unseen, splits, groups, protocol.seed, note)
    if optimistic_label is not None:
        prot.label = optimistic_label
        prot.optimistic = True
    prot.note = "; ".join(filter(None, [prot.note, note]))
    return prot


def _no_unseen_message(features, what: str) -> str:
    stores = ", ".join(t.get("store", "") for t in features.tuned) or "this store"
    return (f"{stores}: {what}; its features come from a fine-tuned network, so no row it saw may be scored: "
            f"use {HYBRID} (fine-tunes per outer fold), or fine-tune with a validation split "
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


def _tuned_holdout(features, y, roles, unseen, splits, groups, seed: int, note: str) -> tuple[Folds, str]:
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
    prot = Folds("tuned-holdout", label, groups is None, [(train, test)], seed, "", groups,
                 short=short_name("tuned-holdout", groups is None, groups is None))
    chose, scored = int(np.sum(roles == "val-choose")), int(np.sum(roles[test] == "val"))
    if chose:
        note = "; ".join(filter(None, [note, f"{chose} rows were validation images that chose the checkpoint's "
                                             "epoch: seen, so never test rows"]))
    if scored:
        note = "; ".join(filter(None, [note, f"{scored} test rows were validation images that did not choose "
                                             "the checkpoint's epoch"]))
    return prot, note
