"""What a store says about itself to someone who opens it with plain h5py: attributes in the file that explain
the layout, what the label integers mean, what each sample dataset and each tap holds.

Written when a store is created (:func:`write_descriptions`); read back by :func:`read_descriptions`, which
also serves stores made before featx wrote them (the label rule is the same in every schema version; tap
descriptions are then empty). All of these attributes are additive: no reader needs them.
"""
from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

from featx.store.schema import STRING

UNLABELLED = -1

README = (
    "featx feature store (schema version {version}), written by `featx extract`. /samples holds one row per "
    "image: path (relative to the root attribute data_root), label, subject, split, done, error, checksum, "
    "meta_checksum and file (what identified the image file's content); "
    "/features/<tap> holds the features of one layer (tap) of the backbone, row i belonging to /samples/path[i] "
    "and valid only where /samples/done[i] is True. Each dataset's `description` attribute says what it holds; "
    "/samples/label's `meaning` maps its integers to class names (-1 = unlabelled). Strings are variable-length "
    "UTF-8: h5py returns them as bytes unless read with .asstr(), e.g. h5['samples/path'].asstr()[:]. The root "
    "attributes record the backbone, its weights and the preprocessing (`preprocessing`, `transform`, "
    "input_size, mean, std); features were computed in eval mode (dropout off). featx reads a store with "
    "featx.store.load_features, which returns the labelled finished rows unless asked for the others."
)

# Appended to the root description of shard stores and of merged stores (see featx.store.shards, .merge).
SHARD_NOTE = (" This file is shard {shard} of a sharded extraction (`featx extract --shard i/n`): its rows are rows "
              "{start} to {stop} of the {total} of a single run over the whole collection; /samples/index gives each "
              "row's index in that order, and the root attributes shard_of_fingerprint and shard_of_samples the "
              "whole collection's fingerprint and size. `featx merge` joins the parts into one store.")
MERGED_NOTE = (" Joined by `featx merge` from the shard files listed in the root attribute merged_from (JSON), in "
               "the order of a single run{virtual}.")
VIRTUAL_NOTE = (": /features/<tap> are HDF5 virtual datasets that read the features from those files (paths "
                "relative to this file), so they must stay beside it")

SAMPLES = {
    "path": "image path relative to the root attribute data_root (the key that aligns stores); UTF-8, read "
            "with .asstr()",
    "subject": "subject (patient) id parsed from the file name or a labels file; \"\" when unknown; UTF-8, read "
               "with .asstr()",
    "split": "the data's split or phase (fold_0, prelim, final, ...); \"\" when none; UTF-8, read with .asstr()",
    "done": "True when the row's features are written in every /features/<tap> (and match their checksums); "
            "False: not extracted yet, or the image could not be read (see error)",
    "error": "why the image could not be read (\"\" when it was); fixed-length UTF-8, at most 512 bytes, read "
             "with .asstr(); such rows stay not done and are retried by the next `featx extract`",
    "checksum": "per row and tap (column order: this dataset's `taps` attribute): crc32 of the row index as 8 "
                "little-endian bytes followed by the row's stored little-endian bytes, plus 2**32; 0 = never "
                "written. featx refuses rows whose features do not match",
    "meta_checksum": "per row: crc32 of the row index and label (8 little-endian bytes each) and of its path, "
                     "subject and split (UTF-8, joined by NUL bytes), plus 2**32 (see featx.store.rowid); featx "
                     "refuses a store whose rows do not match",
    "file": "per row: the image file's size, mtime_ns and ctime_ns when it was read (times 0 when it had just "
            "changed) and the sha256 (hex) of the bytes its features were computed from; size -1 and sha256 \"\" "
            "until then. A resume recomputes rows whose file changed",
    "network_role": "only with fine-tuned weights: what the network did with the row (train, train-subject, "
                    "val-choose = a validation image that chose the checkpoint's epoch, val = one that did not, "
                    "\"\" = never seen, unknown); the root attribute tuned_provenance says what was matched",
}


def label_meaning(classes: Sequence[str]) -> str:
    """``0 = all, 1 = hem; -1 = unlabelled (...)``: what the integers of /samples/label stand for."""
    named = ", ".join(f"{i} = {c}" for i, c in enumerate(classes))
    return (f"{named}{'; ' if named else ''}{UNLABELLED} = unlabelled (no ground truth, e.g. the C-NMC final "
            "test phase)")


def write_descriptions(h5: h5py.File, classes: Sequence[str], tap_descriptions: dict[str, str] | None,
                       version: int) -> None:
    """Write the self-description of a new store (its groups and datasets must exist)."""
    h5.attrs["description"] = README.format(version=version)
    samples = h5["samples"]
    label = samples["label"]
    label.attrs["description"] = ("class index into the `classes` attribute (also /samples attribute "
                                  f"`classes`), {UNLABELLED} = unlabelled")
    label.attrs["classes"] = np.array(list(classes), dtype=STRING)
    label.attrs["unlabelled"] = UNLABELLED
    label.attrs["meaning"] = label_meaning(classes)
    for name, text in SAMPLES.items():
        if name in samples:
            samples[name].attrs["description"] = text
    for tap, ds in h5["features"].items():
        ds.attrs["description"] = (tap_descriptions or {}).get(tap) or f"tap {tap}"
        ds.attrs["rows"] = "row i is the image /samples/path[i]; valid only where /samples/done[i] is True"


def read_descriptions(h5: h5py.File) -> dict:
    """``{"description", "labels": {"classes", "unlabelled", "meaning"}, "taps": {tap: description}}``; stores
    made before featx described themselves get the label rule (the same in every version) and empty texts."""
    samples = h5["samples"]
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in samples.attrs["classes"]]
    taps = {tap: _text(ds.attrs.get("description", "")) for tap, ds in h5["features"].items()}
    return {"description": _text(h5.attrs.get("description", "")),
            "labels": {"classes": classes, "unlabelled": UNLABELLED, "meaning": label_meaning(classes)},
            "taps": taps}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
