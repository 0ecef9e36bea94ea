"""Which images a fine-tuned network has seen: recorded by ``finetune``, carried into stores by ``extract``.

A ``featx finetune`` checkpoint's card holds ``provenance``: the data root and fingerprint and the
relative paths and subjects it trained and validated on (and those of any featx checkpoint it started
from). ``extract --weights CKPT`` turns that into one role per store row (``/samples/network_role``):

- ``train``: the network trained on this image;
- ``train-subject``: not trained on, but of a subject it trained on (cells of one patient share stain
  and shape, so these are not unseen either);
- ``val``: validated on (never trained on; ``best.pt``'s epoch was chosen on these rows);
- ``""``: never seen;
- ``unknown``: a fine-tuned checkpoint that records no samples (treated as seen).

Only ``val`` and ``""`` rows may be scored as unseen (:data:`UNSEEN_ROLES`).
"""
from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence

PROVENANCE_VERSION = 1
ROLES = ("train", "train-subject", "val", "", "unknown")
UNSEEN_ROLES = ("val", "")
SEEN_ROLES = ("train", "train-subject", "unknown")
ATTR = "tuned_provenance"  # root attribute of a store (JSON): what the roles came from


def _part(samples: Sequence) -> dict:
    return {"paths": [str(s.path) for s in samples], "subjects": [str(s.subject or "") for s in samples]}


def record(collection, train: Sequence[int], val: Sequence[int], skipped: Sequence[int] = (),
           start_card: dict | None = None) -> dict:
    """The provenance of a fine-tuning run on ``collection`` (indices into ``collection.samples``).

    ``start_card``: the card of the featx checkpoint the run started from; what it trained on (and any
    checkpoint before it) counts as trained on here too.
    """
    samples = collection.samples
    prov = {
        "version": PROVENANCE_VERSION,
        "data_root": str(collection.root),
        "dataset_fingerprint": collection.fingerprint(),
        "train": _part([samples[i] for i in train]),
        "val": _part([samples[i] for i in val]),
        "skipped": _part([samples[i] for i in skipped]),
    }
    if start_card is not None:
        earlier = start_card.get("provenance")
        if not isinstance(earlier, dict):
            prov["inherited_unknown"] = True  # started from a fine-tuned checkpoint that records nothing
        else:
            inherited = {"paths": [], "subjects": [], "data_roots": []}
            for part in (earlier.get("train") or {}, earlier.get("inherited") or {}):
                inherited["paths"] += list(part.get("paths", []))
                inherited["subjects"] += list(part.get("subjects", []))
            inherited["data_roots"] = sorted({str(earlier.get("data_root", ""))}
                                             | set((earlier.get("inherited") or {}).get("data_roots", [])))
            prov["inherited"] = inherited
            if earlier.get("inherited_unknown"):
                prov["inherited_unknown"] = True
    return prov


def summary(prov: dict) -> dict:
    """Counts for cards, settings and reports (no path lists)."""
    def count(part):
        part = prov.get(part) or {}
        return len(part.get("paths", [])), len({s for s in part.get("subjects", []) if s})

    (nt, st), (nv, sv), (ns, _) = count("train"), count("val"), count("skipped")
    out = {"n_train": nt, "n_train_subjects": st, "n_val": nv, "n_val_subjects": sv, "n_skipped": ns,
           "data_root": prov.get("data_root", ""), "dataset_fingerprint": prov.get("dataset_fingerprint", "")}
    if prov.get("inherited"):
        out["n_inherited"] = len(prov["inherited"].get("paths", []))
    if prov.get("inherited_unknown"):
        out["inherited_unknown"] = True
    return out


def store_roles(card: dict | None, collection, *, checkpoint: str, sha256: str) -> tuple[list[str], dict] | None:
    """One role per sample of ``collection`` from a featx checkpoint ``card`` and the provenance attribute.

    Returns None for weights that are not a fine-tuned featx checkpoint (no card). Rows are matched on
    the relative path and subject; when the store's data root differs from the checkpoint's, also on the
    file name and subject, and the attribute says how many rows each way matched.
    """
    if not card:
        return None
    n = len(collection.samples)
    prov = card.get("provenance")
    attr = {"checkpoint": str(checkpoint), "sha256": sha256, "epoch": card.get("epoch")}
    if not isinstance(prov, dict) or prov.get("inherited_unknown"):
        attr.update(provenance="missing", match="the checkpoint does not record which images it (or the "
                    "checkpoint it started from) trained on: every row counts as seen")
        return ["unknown"] * n, attr
    train_paths = set(prov["train"]["paths"]) | set((prov.get("inherited") or {}).get("paths", []))
    train_subj = {s for s in list(prov["train"]["subjects"]) + list((prov.get("inherited") or {}).get("subjects", []))
                  if s}
    val_paths = set(prov["val"]["paths"])
    same_root = str(prov.get("data_root", "")) == str(collection.root)
    by_name: dict[tuple[str, str], int] = {}
    if not same_root:  # another copy or layout of the data: the file name and subject still identify an image
        for p, s in zip(list(prov["train"]["paths"]) + list((prov.get("inherited") or {}).get("paths", [])),
                        list(prov["train"]["subjects"]) + list((prov.get("inherited") or {}).get("subjects", []))):
            key = (posixpath.basename(p), s)
            by_name[key] = by_name.get(key, 0) + 1
        val_names = {(posixpath.basename(p), s) for p, s in zip(prov["val"]["paths"], prov["val"]["subjects"])}
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
        elif s.path in val_paths or (not same_root and name_key in val_names):
            roles.append("val")
        else:
            roles.append("")
    n_train_ckpt = len(prov["train"]["paths"])
    text = (f"{counts['path'] + counts['name']} of the {n} rows are images the network trained on "
            f"(the checkpoint lists {n_train_ckpt}), {counts['subject']} more are of subjects it trained on, "
            f"{roles.count('val')} were its validation images, {roles.count('')} it never saw")
    if not same_root:
        text += (f"; the data root differs from the checkpoint's ({prov.get('data_root')}): rows matched by "
                 f"relative path and subject ({counts['path']}) or file name and subject ({counts['name']}); "
                 "images renamed in this copy would count as unseen")
    elif str(prov.get("dataset_fingerprint", "")) != collection.fingerprint():
        text += "; the data differs from the checkpoint's (another split or changed files): rows matched by path"
    attr.update(provenance="recorded", same_root=same_root, match=text, **summary(prov),
                roles={r or "unseen": roles.count(r) for r in ROLES if roles.count(r)})
    return roles, attr


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
