"""Which images a fine-tuned network has seen: recorded by ``finetune``, carried into stores by ``extract``.

A ``featx finetune`` checkpoint's card holds ``provenance``: the data root and fingerprint and the
relative paths and subjects it trained and validated on (and those of any featx checkpoint it started
from). ``extract --weights CKPT`` turns that into one role per store row (``/samples/network_role``):

- ``train``: the network trained on this image;
- ``train-subject``: not trained on, but of a subject it trained on (cells of one patient share stain
  and shape, so these are not unseen either);
- ``val-choose``: a validation image that chose this checkpoint's epoch (``best.pt``, and ``last.pt`` of a run
  that stopped early): never trained on, but seen by the choice;
- ``val``: a validation image that chose nothing (the part that scores ``best.pt``, or any validation image
  of ``last.pt`` of a fixed-length run);
- ``""``: never seen;
- ``unknown``: a fine-tuned checkpoint that records no samples (treated as seen).

Only ``val`` and ``""`` rows may be scored as unseen (:data:`UNSEEN_ROLES`). A run's validation set is split
into the part that chooses the epoch (``val_choose``) and the part that scores it
(:func:`featx.finetune.split.choose_part`); checkpoints of featx before that split (provenance version 1)
chose on every validation image, and stores extracted before it count their ``val`` rows as ``val-choose``.

What featx knows of where a network's weights come from is the store attribute ``weights_provenance``
(:func:`weights_origin`): ``random``, ``imagenet``, ``featx`` (a checkpoint that records its images),
``unknown`` (a plain state dict, another tool's checkpoint, a featx checkpoint that lost its records or was
fine-tuned from such weights) or ``stated-unseen`` (the user stated that the weights never saw these
images). Result rows of ``unknown`` and ``stated-unseen`` stores carry that mark (:func:`rows_mark`).
"""
from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence

import numpy as np

from featx.errors import FeatxError, arg

PROVENANCE_VERSION = 2  # 2: the validation images that chose the epoch are recorded apart (val_choose)
ROLES = ("train", "train-subject", "val-choose", "val", "", "unknown")
UNSEEN_ROLES = ("val", "")
SEEN_ROLES = ("train", "train-subject", "val-choose", "unknown")
ATTR = "tuned_provenance"  # root attribute of a store (JSON): what the roles came from
WEIGHTS_ATTR = "weights_provenance"  # root attribute of a store: what featx knows of where its weights come from
UNKNOWN, STATED = "unknown", "stated-unseen"
#: The card's ``epoch_choice`` of a checkpoint whose epoch no validation image chose (last.pt, fixed length).
FIXED = "fixed"


def _part(samples: Sequence) -> dict:
    return {"paths": [str(s.path) for s in samples], "subjects": [str(s.subject or "") for s in samples]}


def record(collection, train: Sequence[int], val: Sequence[int], skipped: Sequence[int] = (),
           start_card: dict | None = None, *, choose: Sequence[int] | None = None,
           start_weights: str | None = None) -> dict:
    """The provenance of a fine-tuning run on ``collection`` (indices into ``collection.samples``).

    ``choose``: the validation images that choose ``best.pt``'s epoch (default: all of ``val``).
    ``start_card``: the card of the featx checkpoint the run started from; what it trained on (and the
    validation images that chose its epoch, and any checkpoint before it) counts as trained on here too.
    ``start_weights``: :data:`UNKNOWN` or :data:`STATED` when the run started from weights of unknown
    provenance (see :func:`weights_origin`); checkpoints of this run carry it on.
    """
    samples = collection.samples
    prov = {
        "version": PROVENANCE_VERSION,
        "data_root": str(collection.root),
        "dataset_fingerprint": collection.fingerprint(),
        "train": _part([samples[i] for i in train]),
        "val": _part([samples[i] for i in val]),
        "val_choose": _part([samples[i] for i in (val if choose is None else choose)]),
        "skipped": _part([samples[i] for i in skipped]),
    }
    if start_weights in (UNKNOWN, STATED):
        prov["start_weights"] = start_weights
    if start_card is not None:
        earlier = start_card.get("provenance")
        stated = start_weights == STATED  # the user's statement stands in for a lost record
        if not isinstance(earlier, dict):
            if not stated:
                prov["inherited_unknown"] = True  # started from a fine-tuned checkpoint that records nothing
        else:
            inherited = {"paths": [], "subjects": [], "data_roots": []}
            chose = choosing_part(earlier) if chose_epoch(start_card) else {}
            for part in (earlier.get("train") or {}, chose, earlier.get("inherited") or {}):
                inherited["paths"] += list(part.get("paths", []))
                inherited["subjects"] += list(part.get("subjects", []))
            inherited["data_roots"] = sorted({str(earlier.get("data_root", ""))}
                                             | set((earlier.get("inherited") or {}).get("data_roots", [])))
            prov["inherited"] = inherited
            if earlier.get("inherited_unknown") and not stated:
                prov["inherited_unknown"] = True
            if earlier.get("start_weights") in (UNKNOWN, STATED) and "start_weights" not in prov:
                prov["start_weights"] = earlier["start_weights"]
    return prov


def choosing_part(prov: dict) -> dict:
    """The validation images (``{"paths", "subjects"}``) that chose the epoch: ``val_choose``, or every
    validation image for provenance recorded before featx split the validation set (version 1)."""
    part = prov.get("val_choose")
    return part if isinstance(part, dict) else (prov.get("val") or {})


def chose_epoch(card: dict) -> bool:
    """Whether the checkpoint of ``card`` had its epoch chosen (or its run stopped) on validation images:
    every ``best.pt``, and ``last.pt`` of a run that stopped early. Cards from before featx recorded it
    (no ``epoch_choice``) count as chosen."""
    return card.get("epoch_choice") != FIXED


def summary(prov: dict) -> dict:
    """Counts for cards, settings and reports (no path lists)."""
    def count(part):
        part = prov.get(part) or {}
        return len(part.get("paths", [])), len({s for s in part.get("subjects", []) if s})

    (nt, st), (nv, sv), (nc, sc), (ns, _) = count("train"), count("val"), count("val_choose"), count("skipped")
    out = {"n_train": nt, "n_train_subjects": st, "n_val": nv, "n_val_subjects": sv, "n_skipped": ns,
           "data_root": prov.get("data_root", ""), "dataset_fingerprint": prov.get("dataset_fingerprint", "")}
    if "val_choose" in prov:
        out.update(n_val_choose=nc, n_val_choose_subjects=sc)
    if prov.get("start_weights"):
        out["start_weights"] = prov["start_weights"]
    if prov.get("inherited"):
        out["n_inherited"] = len(prov["inherited"].get("paths", []))
    if prov.get("inherited_unknown"):
        out["inherited_unknown"] = True
    return out


def store_roles(card: dict | None, collection, *, checkpoint: str, sha256: str,
                stated: bool = False) -> tuple[list[str], dict] | None:
    """One role per sample of ``collection`` from a featx checkpoint ``card`` and the provenance attribute.

    Returns None for weights that are not a fine-tuned featx checkpoint (no card), and for a checkpoint that
    records no samples when the user ``stated`` that its weights never saw these images. Rows are matched on
    the relative path and subject; when the store's data root differs from the checkpoint's, also on the
    file name and subject, and the attribute says how many rows each way matched.
    """
    if not card:
        return None
    n = len(collection.samples)
    prov = card.get("provenance")
    attr = {"checkpoint": str(checkpoint), "sha256": sha256, "epoch": card.get("epoch"),
            "provenance_version": PROVENANCE_VERSION}
    if not isinstance(prov, dict) and stated:
        return None
    if not isinstance(prov, dict) or (prov.get("inherited_unknown") and not stated):
        attr.update(provenance="missing", match="the checkpoint does not record which images it (or the "
                    "checkpoint it started from) trained on: every row counts as seen")
        return ["unknown"] * n, attr
    inherited = prov.get("inherited") or {}
    train_paths = set(prov["train"]["paths"]) | set(inherited.get("paths", []))
    train_subj = {s for s in list(prov["train"]["subjects"]) + list(inherited.get("subjects", [])) if s}
    val_paths = set(prov["val"]["paths"])
    chosen = chose_epoch(card)
    choose = choosing_part(prov) if chosen else {}
    choose_paths = set(choose.get("paths", []))
    same_root = str(prov.get("data_root", "")) == str(collection.root)
    by_name: dict[tuple[str, str], int] = {}
    val_names, choose_names = set(), set()
    if not same_root:  # another copy or layout of the data: the file name and subject still identify an image
        for p, s in zip(list(prov["train"]["paths"]) + list(inherited.get("paths", [])),
                        list(prov["train"]["subjects"]) + list(inherited.get("subjects", []))):
            key = (posixpath.basename(p), s)
            by_name[key] = by_name.get(key, 0) + 1
        val_names = {(posixpath.basename(p), s) for p, s in zip(prov["val"]["paths"], prov["val"]["subjects"])}
        choose_names = {(posixpath.basename(p), s) for p, s in zip(choose.get("paths", []),
                                                                    choose.get("subjects", []))}
    roles, counts = [], {"path": 0, "name": 0, "subject": 0}
    for s in collection.samples:
        subject = str(s.subject or "")
        name_key = (posixpath.basename(s.path), subject)
        if s.path in train_paths:
            roles.append("train")
            counts["path"] += 1
        elif not same_root and by_name.get(name_key):
            roles.append("train")
            counts["name"] += 1
        elif subject and subject in train_subj:
            roles.append("train-subject")
            counts["subject"] += 1
        elif s.path in val_paths or name_key in val_names:
            roles.append("val-choose" if s.path in choose_paths or name_key in choose_names else "val")
        else:
            roles.append("")
    n_train_ckpt = len(prov["train"]["paths"])
    chose = (f"{roles.count('val-choose')} were validation images that chose its epoch (seen), "
             f"{roles.count('val')} validation images that did not" if chosen else
             f"{roles.count('val')} were its validation images (the epoch of this fixed-length run chose nothing)")
    text = (f"{counts['path'] + counts['name']} of the {n} rows are images the network trained on "
            f"(the checkpoint lists {n_train_ckpt}), {counts['subject']} more are of subjects it trained on, "
            f"{chose}, {roles.count('')} it never saw")
    if not same_root:
        text += (f"; the data root differs from the checkpoint's ({prov.get('data_root')}): rows matched by "
                 f"relative path and subject ({counts['path']}) or file name and subject ({counts['name']}); "
                 "images renamed in this copy would count as unseen")
    elif str(prov.get("dataset_fingerprint", "")) != collection.fingerprint():
        text += "; the data differs from the checkpoint's (another split or changed files): rows matched by path"
    attr.update(provenance="recorded", same_root=same_root, match=text, **summary(prov),
                epoch_choice=str(card.get("epoch_choice") or "val-choose"),
                roles={r or "unseen": roles.count(r) for r in ROLES if roles.count(r)})
    return roles, attr


def read_roles(roles: np.ndarray, attr: dict | None) -> np.ndarray:
    """A store's roles as evaluation uses them: a store extracted before featx recorded which validation
    images chose the checkpoint's epoch (its attribute has no ``provenance_version``) counts its ``val``
    rows as ``val-choose`` (seen), since its checkpoint may have been chosen on every one of them."""
    if attr is None or "provenance_version" in attr or attr.get("provenance") != "recorded":
        return roles
    return np.where(roles == "val", "val-choose", roles)


OLD_STORE_NOTE = ("extracted by a featx that did not record which validation images chose the checkpoint's "
                  "epoch: its validation rows count as seen (extract again to score those that did not)")


# --------------------------------------------------------------------------------------------------
# where the weights come from
# --------------------------------------------------------------------------------------------------
def weights_origin(kind: str, card: dict | None, *, imagenet_file: bool = False) -> str:
    """What featx knows of where weights come from (see the module's doc): ``kind`` and ``card`` of a
    :class:`featx.backbones.WeightsInfo`; ``imagenet_file``: a file that is torchvision's own ImageNet file."""
    if kind == "none":
        return "random"
    if kind == "imagenet" or imagenet_file:
        return "imagenet"
    prov = (card or {}).get("provenance")
    if not isinstance(prov, dict) or prov.get("inherited_unknown"):
        return UNKNOWN
    return str(prov.get("start_weights") or "featx")


def stated_origin(origin: str, stated: bool, source: str) -> str:
    """``origin`` with the user's statement that the weights never saw these images (``stated``): it replaces
    :data:`UNKNOWN`; weights of known provenance refuse it."""
    if not stated or origin in (UNKNOWN, STATED):
        return STATED if stated else origin
    what = ("a featx checkpoint that records the images it trained on (they are matched to these images)"
            if origin == "featx" else f"{origin} weights, whose provenance featx knows")
    raise FeatxError(f"{arg('weights_never_saw_images')} is for weights of unknown provenance; {source} is {what}: "
                     "drop the option")


def unknown_weights_warning(source: str, card: dict | None) -> str:
    """The one-line warning (a template with :func:`arg`) for weights of unknown provenance."""
    prov = (card or {}).get("provenance")
    if not card:
        what = "not a featx checkpoint: featx cannot tell which images they were trained on"
    elif not isinstance(prov, dict) or prov.get("inherited_unknown"):
        what = "a featx checkpoint that does not record the images it (or the one it started from) trained on"
    else:
        what = "fine-tuned from weights of unknown provenance"
    return (f"{source}: weights of unknown provenance ({what}); every result row from them is marked "
            f"'weights of unknown provenance'; if they never saw these images, say so with "
            f"{arg('weights_never_saw_images')}")


def store_origin(attrs: dict) -> str:
    """A store's :data:`WEIGHTS_ATTR`; for stores made before featx recorded it, read from its other attributes."""
    value = str(attrs.get(WEIGHTS_ATTR) or "")
    if value:
        return value
    if attrs.get("weights_kind") != "file":
        return "random" if attrs.get("weights_kind") == "none" else "imagenet"
    tuned = parse_attr(attrs.get(ATTR))
    return "featx" if tuned and tuned.get("provenance") == "recorded" else UNKNOWN


def mark_of(origin: str | None) -> str | None:
    """A result row's ``weights_provenance`` for weights of this origin: :data:`UNKNOWN`, :data:`STATED` or None."""
    return origin if origin in (UNKNOWN, STATED) else None


def rows_mark(store_attrs: Sequence[dict]) -> str | None:
    """The ``weights_provenance`` of result rows computed from stores with these attributes: :data:`UNKNOWN`
    when any store's weights are of unknown provenance, else :data:`STATED` when the user stated it for any,
    else None (known)."""
    origins = {store_origin(a) for a in store_attrs}
    return UNKNOWN if UNKNOWN in origins else STATED if STATED in origins else None


def attr_json(attr: dict) -> str:
    return json.dumps(attr, sort_keys=True, default=str)


def parse_attr(value) -> dict | None:
    """The store attribute back as a dict (None when absent or empty)."""
    if value is None or value == "":
        return None
    try:
        out = json.loads(str(value))
    except json.JSONDecodeError:
        return {"provenance": "unreadable"}
    return out if isinstance(out, dict) else None
