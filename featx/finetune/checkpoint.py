"""The files of a run folder: ``best.pt``/``last.pt`` (with every RNG state, for an exact resume), the refusal
to resume with other settings, and the lists ``settings.json``, ``skipped.csv``, ``provenance.csv``,
``history.csv``. Every file is written atomically: an interruption never leaves half a file under its name.

A checkpoint is ``{"featx_checkpoint": CHECKPOINT_VERSION, "backbone", "classes", "model": state dict,
"card", "val_predictions"}`` (read by :func:`featx.backbones.create_backbone`); ``last.pt`` adds
``optimizer``, ``scheduler``, ``scaler``, ``epoch``, ``rng``, ``history``, ``best``, ``bad_epochs``, ``finished``.

When a run finishes, :func:`prune` removes the checkpoint ``keep`` does not name; a finished run without
``last.pt`` is recognised by its ``results.json`` (:func:`is_pruned_finished`), so that it is never trained
over and ``resume=True`` reports it again.
"""
from __future__ import annotations

import errno
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featx import csvfiles
from featx.backbones import CHECKPOINT_VERSION
from featx.data import Collection
from featx.errors import FeatxError, arg
from featx.files import atomic_json, atomic_write, is_disk_full
from featx.results import jsonable

#: Options that affect only speed or what is kept, not the numbers: they may differ when a run is resumed.
RUNTIME_KEYS = ("device", "workers", "keep")
#: Recorded for information; never compared on resume.
INFO_KEYS = ("sources", "notes", "featx_version", "torch_version", "torchvision_version", "data_root",
             "weights_sha256", "weights_source", "n_train", "n_val", "protocol_label", "class_weights", "strict",
             "n_skipped", "warning", "weights_provenance")
#: Files a run writes before its first checkpoint: removed again when it fails before saving one.
EARLY_FILES = ("settings.json", "skipped.csv", "provenance.csv", "history.csv")
#: Which checkpoints a finished run keeps (both exist while the run is in progress).
KEEP = ("best", "last", "both")
#: What ``last.pt`` must hold to resume from it.
_TRAINING_STATE = ("model", "optimizer", "card", "epoch", "rng", "history", "best", "bad_epochs", "finished")


def cpu_state(network: nn.Module) -> dict:
    """The state dict on the CPU, contiguous (channels-last weights saved in the standard layout)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}


def save_checkpoint(path: Path, *, backbone: str, classes: list[str], network: nn.Module, card: dict,
                    val_predictions: dict, **training_state) -> None:
    """Write a featx checkpoint (``training_state``: the extra entries of ``last.pt``)."""
    obj = {"featx_checkpoint": CHECKPOINT_VERSION, "backbone": backbone, "classes": classes,
           "model": cpu_state(network), "card": card, "val_predictions": val_predictions, **training_state}

    def write(tmp: Path) -> None:
        # through a Python file: a full disk then shows as the OSError behind torch's RuntimeError (saving to
        # a path, torch reports it only as "[enforce fail at inline_container.cc] unexpected pos ...")
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as exc:
        if not _disk_full(exc):
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc


def _disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised while handling is ENOSPC / EDQUOT."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and is_disk_full(exc):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def load_checkpoint(path: Path) -> dict:
    """A checkpoint this run wrote (plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read_last(path: Path) -> dict:
    """``last.pt`` to resume from; a damaged or foreign file is one line, never a traceback."""
    if not path.exists():
        raise FeatxError(f"{arg('resume', True)}: {path} does not exist; run without {arg('resume', True)} "
                         "to start")
    hint = (f"delete it to start the run again, or choose another run folder ({arg('out')}; best.pt, if "
            "present, still holds the best epoch so far)")
    try:
        last = load_checkpoint(path)
    except Exception as exc:
        raise FeatxError(f"{arg('resume', True)}: {path} is damaged or not a featx checkpoint "
                         f"({type(exc).__name__}); {hint}") from None
    if not isinstance(last, dict) or any(k not in last for k in _TRAINING_STATE) \
            or not isinstance(last["card"], dict) or "settings" not in last["card"]:
        raise FeatxError(f"{arg('resume', True)}: {path} is not a complete featx last.pt (missing training "
                         f"state); {hint}")
    return last


def refuse_other_settings(before: dict, now: dict, path: Path) -> None:
    """Refuse to resume with settings that change the numbers; the message names the first differing one."""
    skip = set(RUNTIME_KEYS) | set(INFO_KEYS)
    for key in sorted(set(before) | set(now)):
        if key in skip:
            continue
        a, b = jsonable(before.get(key)), jsonable(now.get(key))
        if key == "skipped" and not a and not b:  # runs from before skipping was recorded
            continue
        if a != b:
            name = "data" if key == "dataset_fingerprint" else key
            raise FeatxError(f"{arg('resume', True)}: setting {name!r} differs from the run in {path.parent} "
                             f"({a!r} there, {b!r} now); use the run's settings (see "
                             f"{path.parent / 'settings.json'}) or choose another run folder ({arg('out')})")


# ------------------------------------------------------------------------------------------ RNG states

def rng_state(loader_gen: torch.Generator) -> dict:
    """Every RNG a training epoch draws from, as tensors and ints (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "loader": loader_gen.get_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ the run folder's lists

def _write_csv(path: Path, rows: Sequence[Sequence]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csvfiles.writer(fh).writerows(rows)

    atomic_write(path, write)


def write_settings(out: Path, settings: dict) -> None:
    """``settings.json``: the settings used and where each came from."""
    atomic_json(out / "settings.json", jsonable(settings))


def write_lists(out: Path, collection: Collection, skipped: Sequence[tuple[int, str]], provenance: dict) -> None:
    """``skipped.csv`` (unreadable images) and ``provenance.csv`` (the role of every image the run used:
    ``train``, ``val-choose`` (a validation image that chooses best.pt's epoch), ``val`` (one that scores it),
    ``skipped``)."""
    samples = collection.samples
    _write_csv(out / "skipped.csv", [("path", "subject", "error")]
               + [(samples[i].path, samples[i].subject or "", e) for i, e in skipped])
    rows = [("path", "subject", "role")]
    chose = set((provenance.get("val_choose") or {}).get("paths", []))
    for role in ("train", "val", "skipped"):
        part = provenance.get(role) or {}
        rows += [(p, s, "val-choose" if role == "val" and p in chose else role)
                 for p, s in zip(part.get("paths", []), part.get("subjects", []))]
    _write_csv(out / "provenance.csv", rows)


def write_history(out: Path, history: list[dict]) -> None:
    """``history.csv``: one line per epoch."""
    _write_csv(out / "history.csv", [list(history[0])] + [list(row.values()) for row in history])


def new_root(path: Path) -> Path | None:
    """The highest folder of ``path`` (itself included) that does not exist yet: what a call that creates
    ``path`` with its parents may remove again on failure. None when ``path`` exists."""
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def remove_unsaved_run(out: Path, existed: set[str] | None, root: Path | None = None) -> None:
    """After a failure before any checkpoint: remove what this call wrote, and ``out`` if it made it.

    ``existed``: the early files that were there before the call (None when ``out`` did not exist);
    ``root``: the folder :func:`new_root` found before the call; the empty parents of ``out`` up to it go too.
    """
    if not out.is_dir() or (out / "last.pt").exists() or (out / "best.pt").exists():
        return
    for name in EARLY_FILES:
        if existed is None or name not in existed:
            (out / name).unlink(missing_ok=True)
    for tmp in out.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    if existed is None:
        folder = out.absolute()
        stop = root.parent if root is not None else folder.parent
        while folder != stop:
            try:
                folder.rmdir()  # only when empty: a folder holding anything else stays
            except OSError:
                break
            folder = folder.parent


def early_files(out: Path) -> set[str] | None:
    """The early files already in ``out`` (None when ``out`` does not exist), for :func:`remove_unsaved_run`."""
    return {name for name in EARLY_FILES if (out / name).exists()} if out.exists() else None


# ------------------------------------------------------------------------------ finished runs and --keep

def check_keep(keep: str) -> None:
    if keep not in KEEP:
        raise FeatxError(f"{arg('keep', keep)}: choose one of: {', '.join(KEEP)}")


def is_pruned_finished(out: Path) -> bool:
    """Whether ``out`` holds a finished run that ``keep`` left with one checkpoint: its results are written
    (results.json is written only when a run finishes), and ``best.pt`` or ``last.pt`` is gone (an unfinished
    run has both from its first epoch on)."""
    return ((out / "results.json").is_file() and (out / "settings.json").is_file()
            and not ((out / "last.pt").exists() and (out / "best.pt").exists()))


def has_run(out: Path) -> bool:
    """Whether ``out`` holds a run that ``resume=True`` continues (``last.pt``) or reports (finished)."""
    return (out / "last.pt").exists() or is_pruned_finished(out)


def prune(out: Path, keep: str) -> dict[str, Path | None]:
    """After a run finished: remove the checkpoint ``keep`` does not name; ``{"best", "last"}`` -> path or None."""
    kept = {}
    for name in ("best", "last"):
        path = out / f"{name}.pt"
        if keep not in (name, "both"):
            path.unlink(missing_ok=True)
        kept[name] = path if path.exists() else None
    return kept


def kept_checkpoints(out: Path) -> list[str]:
    """The checkpoint files in ``out`` (``["best.pt"]``, ...)."""
    return [name for name in ("best.pt", "last.pt") if (out / name).exists()]


def read_settings(out: Path) -> dict:
    """``settings.json`` of a finished run; unreadable is one line."""
    path = out / "settings.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FeatxError(f"{path} is not readable JSON; restore it or choose another run folder "
                         f"({arg('out')})") from None
