"""End-to-end fine-tuning of a registered backbone, with the reference study's protocol as a preset.

``finetune(data, out, ...)`` trains the whole network (or the layers after ``freeze``) on the labelled
images of ``data``, validates on a split drawn by the same protocol as ``featx classify`` (subject-grouped
by default), and leaves in ``out``: ``settings.json``, ``history.csv``, ``curves.png``, ``confusion.png``,
``results.json``/``.md``/``.csv`` (rows in the format of ``featx compare``), ``best.pt`` and ``last.pt``.

``best.pt`` is a featx checkpoint that ``featx extract --weights best.pt`` reads (hybrid mode); ``last.pt``
also holds the optimizer, scheduler, scaler and RNG states so that ``resume=True`` continues an
interrupted run exactly (on the CPU, bit for bit). Every file is written atomically. Both checkpoints'
cards carry the run's provenance (:mod:`featx.provenance`: the images it trained and validated on), which
``extract`` copies into the store so that ``classify`` never scores a row the network has seen as unseen.
Unreadable images are left out and listed in ``skipped.csv`` (``strict=True`` stops at the first).
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import featx
from featx import provenance as prov_mod
from featx import report
from featx.backbones import check_input_size, create_backbone, get_config
from featx.data import Collection, discover
from featx.data.images import ImageDataset, make_transform
from featx.device import autocast, memory_format, pin_memory, resolve_device
from featx.errors import FeatxError
from featx.evaluation import METRICS, compute_metrics, make_splits, resolve_positive, roc_points, summarize_folds

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "none")
CLASS_WEIGHTS = ("none", "balanced")
HOLDOUT_FOLDS = 5  # --val subject/image hold out one fold of the 5-fold protocol of classify (20%)

#: The reference study's settings (Keras, ImageNet transfer learning). Values the study does not state
#: are Keras' defaults; ``PRESET_NOTES`` says which and why, and the run records both.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "weights": "imagenet",
        "image_size": 224,
        "optimizer": "sgd",
        "lr": 1e-5,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "schedule": "none",
        "epochs": 15,
        "batch_size": 32,
        "dropout": 0.5,
        "class_weight": "none",
        "augment": False,
        "color_jitter": False,
    },
}
PRESET_NOTES: dict[str, dict[str, str]] = {
    "paper": {
        "weights": "ImageNet transfer learning as in the study; cnn has no ImageNet weights and is trained "
                   "from scratch (weights none), as the study's traditional CNN was",
        "momentum": "0.0: the study names plain SGD and no momentum, and Keras' SGD defaults to momentum 0",
        "schedule": "none: a constant learning rate, as Keras' SGD without a schedule",
        "batch_size": "32: Keras' fit() default; the study names no batch size",
        "dropout": "0.5 (the study names no rate) on the first two fully connected layers: before fc6 and fc7 "
                   "for alexnet and cnn, as in the study; torchvision's vgg16 places it after fc6 and fc7",
        "augment": "off: the study describes no augmentation",
        "loss": "softmax cross-entropy (the output layer is a softmax over the classes)",
    },
}
#: Options that affect only speed, not the numbers: they may differ when a run is resumed.
_RUNTIME_KEYS = ("device", "workers")
#: Recorded for information; never compared on resume.
_INFO_KEYS = ("sources", "notes", "featx_version", "torch_version", "torchvision_version", "data_root",
              "weights_sha256", "weights_source", "n_train", "n_val", "protocol_label", "class_weights", "strict",
              "n_skipped")
#: Files a run writes before its first checkpoint: removed again when it fails before saving one.
_EARLY_FILES = ("settings.json", "skipped.csv", "provenance.csv", "history.csv")


def default_settings(backbone: str) -> dict[str, Any]:
    """Sensible fine-tuning defaults for ``backbone`` when no preset is given (not the study's)."""
    cfg = get_config(backbone)
    pretrained = cfg.imagenet is not None
    return {
        "weights": "imagenet" if pretrained else "none",
        "image_size": int(cfg.input_size),
        "optimizer": "adamw",
        "lr": 1e-4 if pretrained else 1e-3,
        "momentum": 0.9,
        "weight_decay": 0.01,
        "schedule": "cosine",
        "epochs": 10,
        "batch_size": 32,
        "dropout": 0.5,
        "class_weight": "balanced",
        "augment": True,
        "color_jitter": False,
    }


def resolve_settings(backbone: str, preset: str | None, **options) -> dict[str, Any]:
    """Merge ``default_settings`` (or the preset) with the explicit ``options`` (``None`` = not given).

    Returns the settings used, with ``sources``: for each key, ``"option"``, ``"preset"`` or ``"default"``.
    """
    if preset is not None and preset not in PRESETS:
        raise FeatxError(f"--preset {preset}: unknown preset; choose one of: {', '.join(PRESETS)}")
    base = dict(default_settings(backbone))
    sources = {k: "default" for k in base}
    notes: dict[str, str] = {}
    if preset is not None:
        for key, value in PRESETS[preset].items():
            base[key] = value
            sources[key] = "preset"
        if get_config(backbone).imagenet is None:
            base["weights"] = "none"
        notes = dict(PRESET_NOTES[preset])
    for key, value in options.items():
        if key not in base:
            raise TypeError(f"unknown fine-tuning setting {key!r}")
        if value is not None:
            base[key] = value
            sources[key] = "option"
            notes.pop(key, None)
    base["weights"] = str(base["weights"])
    base["preset"] = preset
    base["sources"] = sources
    base["notes"] = notes
    return base


def finetune(data: str | Path | Collection, out: str | Path, *, backbone: str = "vgg16",
             weights: str | Path | None = None, preset: str | None = None, epochs: int | None = None,
             lr: float | None = None, batch_size: int | None = None, optimizer: str | None = None,
             momentum: float | None = None, weight_decay: float | None = None, schedule: str | None = None,
             dropout: float | None = None, class_weight: str | None = None, freeze: str | None = None,
             image_size: int | None = None, augment: bool | None = None, color_jitter: bool | None = None,
             val: str = "subject", early_stopping: str | None = None, patience: int = 5,
             positive: str | None = None, device: str = "auto", workers: int | None = None, seed: int = 0,
             resume: bool = False, callback: Callable[[str, dict], None] | None = None,
             strict: bool = False) -> dict:
    """Fine-tune ``backbone`` on the labelled images of ``data``; write the run folder ``out``; return a summary.

    Settings left ``None`` come from ``preset`` (``"paper"``: the reference study) or from the backbone's
    defaults (``default_settings``); an explicit value always wins, and ``settings.json`` records the values
    used and where each came from. ``val``: ``"subject"`` (a subject-grouped holdout, one fold of the
    5-fold protocol of ``classify``), ``"image"`` (image-level holdout; leaks subjects, marked as such),
    a split name such as ``"fold_2"`` (validate on it, train on the other training folds) or ``"prelim"``
    (train on all training folds, validate on C-NMC's preliminary test phase). ``early_stopping`` names the
    validation metric to watch (``loss``, ``accuracy``, ``f1``, ``f1_weighted``, ...; ``best.pt`` is the best
    epoch by it, by validation loss otherwise) and stops after ``patience`` epochs without improvement.
    ``freeze``: ``"head"`` trains only the final layer; a stage name freezes every stage before it.
    ``callback(event, info)`` is called with ``"start"``, ``"batch"``, ``"epoch"`` (after ``last.pt`` is
    written) and ``"end"``. ``resume=True`` continues from ``out/last.pt`` and refuses other settings.

    Images that cannot be read are left out of training and validation, listed in ``out/skipped.csv``
    (path, subject, error) and in the summary's ``skipped``; ``strict=True`` raises instead. A run that
    fails before its first checkpoint leaves no run folder behind (when it created it).

    The summary holds the paths of every output, the result row, the best epoch and the settings.
    """
    out = Path(out)
    existed = {name for name in _EARLY_FILES if (out / name).exists()} if out.exists() else None
    try:
        run = _Run.prepare(data, out, backbone=backbone, preset=preset, resume=resume, val=val,
                           early_stopping=early_stopping, patience=patience, positive=positive, freeze=freeze,
                           device=device, workers=workers, seed=seed, callback=callback, strict=strict,
                           options=dict(weights=None if weights is None else str(weights), epochs=epochs, lr=lr,
                                        batch_size=batch_size, optimizer=optimizer, momentum=momentum,
                                        weight_decay=weight_decay, schedule=schedule, dropout=dropout,
                                        class_weight=class_weight, image_size=image_size, augment=augment,
                                        color_jitter=color_jitter))
        return run.fit()
    except BaseException:
        _remove_unsaved_run(out, existed)
        raise


def _remove_unsaved_run(out: Path, existed: set[str] | None) -> None:
    """After a failure before any checkpoint: remove what this call wrote, and ``out`` if it made it."""
    if not out.is_dir() or (out / "last.pt").exists() or (out / "best.pt").exists():
        return
    for name in _EARLY_FILES:
        if existed is None or name not in existed:
            (out / name).unlink(missing_ok=True)
    for tmp in out.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    if existed is None:
        try:
            out.rmdir()  # only when empty: a folder holding anything else stays
        except OSError:
            pass


# --------------------------------------------------------------------------------------------- helpers

def _check_settings(s: dict) -> None:
    """Validate resolved settings; each error names the option and the allowed values."""
    if s["optimizer"] not in OPTIMIZERS:
        raise FeatxError(f"--optimizer {s['optimizer']}: choose one of: {', '.join(OPTIMIZERS)}")
    if s["schedule"] not in SCHEDULES:
        raise FeatxError(f"--schedule {s['schedule']}: choose one of: {', '.join(SCHEDULES)}")
    if s["class_weight"] not in CLASS_WEIGHTS:
        raise FeatxError(f"--class-weight {s['class_weight']}: choose one of: {', '.join(CLASS_WEIGHTS)}")
    if int(s["epochs"]) < 1:
        raise FeatxError(f"--epochs {s['epochs']}: must be at least 1")
    if int(s["batch_size"]) < 1:
        raise FeatxError(f"--batch-size {s['batch_size']}: must be at least 1")
    if not (float(s["lr"]) > 0 and math.isfinite(float(s["lr"]))):
        raise FeatxError(f"--lr {s['lr']}: must be a positive number")
    if not 0.0 <= float(s["dropout"]) < 1.0:
        raise FeatxError(f"--dropout {s['dropout']}: must be in [0, 1)")
    if float(s["momentum"]) < 0 or float(s["weight_decay"]) < 0:
        raise FeatxError("--momentum and --weight-decay must not be negative")
    if int(s["patience"]) < 1:
        raise FeatxError(f"--patience {s['patience']}: must be at least 1")


_MONITORS_MIN = ("loss",)


def _monitor_name(early_stopping: str | None) -> str:
    """``"val_f1"``/``"f1"``/``"acc"`` -> the metric key of ``compute_metrics`` (``loss`` for the val loss)."""
    if early_stopping is None:
        return "loss"
    name = early_stopping.lower().strip()
    name = name[4:] if name.startswith("val_") else name
    name = {"acc": "accuracy", "auc": "roc_auc", "f1_score": "f1"}.get(name, name)
    allowed = ("loss", "accuracy", "precision", "recall", "f1", "f1_weighted", "f1_macro", "balanced_accuracy",
               "roc_auc")
    if name not in allowed:
        raise FeatxError(f"--early-stopping {early_stopping}: unknown metric; choose one of: {', '.join(allowed)}")
    return name


def _plain(value):
    """Numpy scalars/arrays and tuples -> plain Python, so a card pickles with ``weights_only`` and dumps as JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, Path)):  # also str subclasses such as torch.__version__
        return str(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: an interruption never leaves a broken checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _rng_state(loader_gen: torch.Generator) -> dict:
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


def _set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed numpy and random from the per-worker torch seed (itself from the generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _pick_split(collection: Collection, val: str, seed: int):
    """The validation split for ``val``, drawn by :func:`featx.evaluate.make_splits` (the protocol of classify).

    Returns (train indices, val indices, protocol name, protocol label, image_level); indices point into
    ``collection.samples``. ``subject``/``image``: the first fold of the 5-fold protocol, as a holdout;
    a split name: that split held out (``make_splits(eval_set=...)``), training on the other training rows.
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
            raise FeatxError(f"--val subject: {int((subjects == '').sum())} labelled image(s) in {collection.root} "
                             "have no subject id; use --val image (image-level holdout, leaks subjects) or a "
                             "manifest with a subject column")
        protocol = make_splits(subjects, y, splits, cv=val, n_folds=HOLDOUT_FOLDS, seed=seed)
        name = f"1/{HOLDOUT_FOLDS} of {val}s"  # reports print "held-out 1/5 of subjects"
        label = f"held out fold 1 of a {protocol.label} split (seed {seed})"
    else:
        known = sorted({str(v) for v in splits if v})
        if val not in known:
            raise FeatxError(f"--val {val}: no labelled images in a split of that name in {collection.root}; "
                             f"choose subject, image{''.join(', ' + s for s in known)}")
        protocol = make_splits(subjects, y, splits, eval_set=val, seed=seed)
        name, label = protocol.name, protocol.label
    train, test = protocol.folds[0]
    return ([labelled[i] for i in train], [labelled[i] for i in test], name, label, bool(protocol.image_level))


# --------------------------------------------------------------------------------------------- the run

class _Run:
    """One fine-tuning run: model, data, optimizer and the files of its folder."""

    @classmethod
    def prepare(cls, data, out: Path, *, backbone, preset, resume, val, early_stopping, patience, positive,
                freeze, device, workers, seed, callback, options, strict: bool = False) -> "_Run":
        self = cls()
        self.out = out
        self.callback = callback
        self.strict = bool(strict)
        collection = data if isinstance(data, Collection) else discover(data)
        self.collection = collection
        classes = list(collection.classes)
        if len(classes) < 2:
            raise FeatxError(f"{collection.root}: fine-tuning needs at least two classes, found "
                             f"{classes or 'no labelled images'}")
        self.pos = resolve_positive(classes, positive)
        positive = classes[self.pos]
        self.classes, self.positive = classes, positive
        settings = resolve_settings(backbone, preset, **options)
        settings.update(backbone=backbone, val=val, monitor=_monitor_name(early_stopping),
                        early_stopping=early_stopping is not None, patience=int(patience),
                        freeze=freeze, seed=int(seed), positive=positive, classes=classes,
                        dataset_fingerprint=collection.fingerprint(), data_root=str(collection.root))
        settings["loss"] = "softmax cross-entropy" + (" (class-weighted)" if settings["class_weight"] == "balanced"
                                                      else "")
        _check_settings(settings)
        check_input_size(backbone, int(settings["image_size"]))
        self.device = resolve_device(device)
        self.workers = (max(0, min(4, (os.cpu_count() or 1) - 1)) if workers is None else int(workers))
        settings.update(device=str(self.device), workers=self.workers)

        train, test, protocol, protocol_label, image_level = _pick_split(collection, val, seed)
        if not test:
            raise FeatxError(f"--val {val}: the validation set is empty; choose another --val")
        # the split is drawn on every labelled image, then unreadable ones are left out of both sides
        self.skipped = _scan_images(collection, sorted(set(train) | set(test)), self.workers, strict=self.strict)
        bad = {i for i, _ in self.skipped}
        train, test = [i for i in train if i not in bad], [i for i in test if i not in bad]
        if not train or not test:
            side = "training" if not train else "validation"
            raise FeatxError(f"every {side} image of {collection.root} is unreadable ({len(bad)} skipped, first: "
                             f"{self.skipped[0][1]}); fix the files or choose another --val")
        self.train_idx, self.val_idx = train, test
        self.protocol, self.image_level = protocol, image_level
        settings.update(protocol=protocol, protocol_label=protocol_label, image_level=image_level,
                        n_train=len(train), n_val=len(test), strict=self.strict, n_skipped=len(self.skipped),
                        skipped=sorted(collection.samples[i].path for i in bad))
        y_all = torch.full((len(collection.samples),), -1, dtype=torch.int64)
        for i, s in enumerate(collection.samples):
            if s.label is not None:
                y_all[i] = classes.index(s.label)
        self.y_all = y_all

        self.last_path, self.best_path = out / "last.pt", out / "best.pt"
        last = None
        if resume:
            if not self.last_path.exists():
                raise FeatxError(f"--resume: {self.last_path} does not exist; run without --resume to start")
            last = _read_last(self.last_path)
            _compare_settings(last["card"]["settings"], settings, self.last_path)
            # what the first run recorded about its weights stays the truth for this run
            for key in ("weights_source", "weights_sha256"):
                settings[key] = last["card"]["settings"].get(key)
        elif self.last_path.exists():
            raise FeatxError(f"{out} already holds a run ({self.last_path.name}); pass --resume to continue it "
                             "or choose another --out")

        model = create_backbone(backbone, "none" if last is not None else settings["weights"],
                                dropout=float(settings["dropout"]), seed=int(seed))
        if last is not None:  # what the first run recorded (including a starting checkpoint's samples) stays
            self.provenance = last["card"].get("provenance") or prov_mod.record(collection, train, test,
                                                                                sorted(bad))
        else:
            self.provenance = prov_mod.record(collection, train, test, sorted(bad),
                                              start_card=model.weights_info.card)
        if last is not None or model.classes != classes:  # keep the head of a featx checkpoint of these classes
            model.reset_classifier(len(classes), seed=int(seed))
        if last is None:
            settings["weights_source"] = model.weights_info.source
            settings["weights_sha256"] = model.weights_info.sha256
        if freeze is not None:
            if freeze not in model.stages:
                raise FeatxError(f"--freeze {freeze}: unknown stage of {backbone}; choose one of: "
                                 f"{', '.join(model.stages)}")
            model.freeze(freeze)
        fmt = memory_format(self.device)
        self.model = model.to(device=self.device, memory_format=fmt)
        self.fmt = fmt
        self.settings = settings

        params = [p for p in model.parameters() if p.requires_grad]
        if settings["optimizer"] == "sgd":
            opt = torch.optim.SGD(params, lr=float(settings["lr"]), momentum=float(settings["momentum"]),
                                  weight_decay=float(settings["weight_decay"]))
        else:
            opt = torch.optim.AdamW(params, lr=float(settings["lr"]), weight_decay=float(settings["weight_decay"]))
        self.optimizer = opt
        epochs = int(settings["epochs"])
        if settings["schedule"] == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        elif settings["schedule"] == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
        else:
            self.scheduler = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")

        weight = None
        if settings["class_weight"] == "balanced":
            counts = torch.bincount(y_all[train], minlength=len(classes)).double()
            weight = (counts.sum() / (len(classes) * counts.clamp(min=1))).float()
        settings["class_weights"] = None if weight is None else [round(float(w), 6) for w in weight]
        self.criterion = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(self.device))

        cfg = model.config
        size = int(settings["image_size"])
        self.preprocessing = {"input_size": size, "mean": [float(v) for v in cfg.mean],
                              "std": [float(v) for v in cfg.std],
                              "resize": f"resize to {size}x{size} (bilinear, antialias), ToTensor, normalise"}
        self.train_tf = make_transform(size, cfg.mean, cfg.std, augment=bool(settings["augment"]),
                                       color_jitter=bool(settings["color_jitter"]))
        self.eval_tf = make_transform(size, cfg.mean, cfg.std)
        self.loader_gen = torch.Generator()
        self.loader_gen.manual_seed(int(seed))

        out.mkdir(parents=True, exist_ok=True)
        self.history: list[dict] = []
        self.epoch = 0
        self.best = {"value": None, "epoch": 0}
        self.bad_epochs = 0
        self.finished = False
        if last is not None:
            model.load_state_dict(last["model"])
            opt.load_state_dict(last["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(last["scheduler"])
            if last.get("scaler"):
                self.scaler.load_state_dict(last["scaler"])
            self.history = [dict(r) for r in last["history"]]
            self.epoch = int(last["epoch"])
            self.best = dict(last["best"])
            self.bad_epochs = int(last["bad_epochs"])
            self.finished = bool(last["finished"])
            self.rng_to_restore = last["rng"]
        else:
            self.rng_to_restore = None
            _atomic_text(json.dumps(_plain(settings), indent=2) + "\n", out / "settings.json")
        self._write_lists()
        return self

    def _write_lists(self) -> None:
        """``skipped.csv`` (unreadable images) and ``provenance.csv`` (the role of every image it used)."""
        rows = [("path", "subject", "error")] + [(self.collection.samples[i].path,
                                                  self.collection.samples[i].subject or "", e)
                                                 for i, e in self.skipped]
        _atomic_csv(rows, self.out / "skipped.csv")
        prov = self.provenance
        rows = [("path", "subject", "role")]
        for role in ("train", "val", "skipped"):
            part = prov.get(role) or {}
            rows += [(p, s, role) for p, s in zip(part.get("paths", []), part.get("subjects", []))]
        _atomic_csv(rows, self.out / "provenance.csv")

    # -- loop --------------------------------------------------------------------------------------

    def _loader(self, indices: Sequence[int], *, train: bool) -> DataLoader:
        ds = ImageDataset(self.collection, self.train_tf if train else self.eval_tf, indices=list(indices))
        bs = int(self.settings["batch_size"])
        return DataLoader(ds, batch_size=bs, shuffle=train, num_workers=self.workers,
                          generator=self.loader_gen if train else None,
                          worker_init_fn=_seed_worker, pin_memory=pin_memory(self.device),
                          drop_last=train and len(indices) > bs and len(indices) % bs == 1,
                          persistent_workers=False)

    def _emit(self, event: str, info: dict) -> None:
        if self.callback is not None:
            self.callback(event, info)

    def _batches(self, loader: DataLoader):
        for images, index, error in loader:
            bad = [e for e in error if e]
            if bad:  # readable when scanned, unreadable now (changed on disk, or a transform failed)
                if self.strict:
                    raise FeatxError(f"{bad[0]}; --strict stops at an unreadable image: fix or remove the file")
                ok = torch.tensor([not e for e in error], dtype=torch.bool)
                for i, e in zip(index[~ok].tolist(), bad):
                    if i not in {j for j, _ in self.skipped}:
                        self.skipped.append((int(i), e))
                        self._write_lists()
                    # out of later epochs and of the validation metrics (the loader holds its own copy)
                    self.train_idx = [j for j in self.train_idx if j != i]
                    self.val_idx = [j for j in self.val_idx if j != i]
                if not ok.any():
                    continue
                images, index = images[ok], index[ok]
            y = self.y_all[index]
            yield (images.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt),
                   y.to(self.device, non_blocking=True), index)

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        model, opt = self.model, self.optimizer
        model.train()
        loader = self._loader(self.train_idx, train=True)
        total, correct, seen = 0.0, 0, 0
        steps = len(loader)
        for step, (x, y, _) in enumerate(self._batches(loader), start=1):
            opt.zero_grad(set_to_none=True)
            with autocast(self.device):
                logits = model(x)
            loss = self.criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise FeatxError(f"training diverged at epoch {epoch}, step {step} (loss {loss.item()}); "
                                 f"lower --lr (now {self.settings['lr']})")
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
            n = y.numel()
            total += float(loss.detach()) * n
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += n
            self._emit("batch", {"epoch": epoch, "step": step, "steps": steps, "loss": float(loss.detach())})
        return total / max(seen, 1), correct / max(seen, 1)

    @torch.inference_mode()
    def _evaluate(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(mean unweighted cross-entropy, y_true, predicted class, class probabilities) on the val set."""
        model = self.model
        model.eval()
        loss_sum, ys, probs = 0.0, [], []
        for x, y, _ in self._batches(self._loader(self.val_idx, train=False)):
            with autocast(self.device):
                logits = model(x)
            logits = logits.float()
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            ys.append(y.cpu())
            probs.append(torch.softmax(logits, 1).cpu())
        y_true = torch.cat(ys).numpy()
        p = torch.cat(probs).numpy()
        return loss_sum / max(len(y_true), 1), y_true, p.argmax(1), p

    def _metrics(self, y_true, y_pred, proba) -> dict:
        subjects = [self.collection.samples[i].subject or "" for i in self.val_idx]
        return _plain(compute_metrics(y_true, y_pred, proba[:, self.pos], classes=self.classes,
                                      positive=self.pos, subjects=subjects))

    def _card(self, epoch: int, metrics: dict) -> dict:
        return _plain({"backbone": self.settings["backbone"], "classes": self.classes, "positive": self.positive,
                       "preprocessing": self.preprocessing, "settings": self.settings, "metrics": metrics,
                       "epoch": epoch, "featx_version": featx.__version__, "torch_version": torch.__version__,
                       "provenance": self.provenance})

    def fit(self) -> dict:
        """Train the remaining epochs and write the outputs; the caller's RNG states and torch flags are restored."""
        prev_det = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled())
        prev_bench = torch.backends.cudnn.benchmark
        np_state, py_state = np.random.get_state(), random.getstate()
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):
                if self.rng_to_restore is not None:
                    _set_rng_state(self.rng_to_restore, self.loader_gen)
                else:
                    seed = int(self.settings["seed"])
                    torch.manual_seed(seed)
                    np.random.seed(seed)
                    random.seed(seed)
                self._emit("start", {"settings": self.settings, "n_train": len(self.train_idx),
                                     "n_val": len(self.val_idx), "epoch": self.epoch})
                while not self.finished and self.epoch < int(self.settings["epochs"]):
                    self._one_epoch(self.epoch + 1)
                return self._finish()
        finally:
            torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
            torch.backends.cudnn.benchmark = prev_bench
            np.random.set_state(np_state)
            random.setstate(py_state)

    def _one_epoch(self, epoch: int) -> None:
        t0 = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        train_loss, train_acc = self._train_epoch(epoch)
        val_loss, y_true, y_pred, proba = self._evaluate()
        if self.scheduler is not None:
            self.scheduler.step()
        metrics = self._metrics(y_true, y_pred, proba)
        metrics["loss"] = val_loss
        predictions = {"y_true": torch.from_numpy(y_true.astype(np.int64)),
                       "y_pred": torch.from_numpy(y_pred.astype(np.int64)),
                       "y_score": torch.from_numpy(proba[:, self.pos].astype(np.float32))}
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
               "val_acc": float(metrics["accuracy"]), "val_f1_weighted": float(metrics["f1_weighted"]),
               "lr": lr, "seconds": round(time.perf_counter() - t0, 3)}
        self.history.append(row)
        monitor = self.settings["monitor"]
        value = float(metrics[monitor])
        best = self.best["value"]
        # a NaN metric (e.g. roc_auc on a one-class validation set) never beats a number, and is beaten by one
        better = best is None or (math.isfinite(value) and (
            not math.isfinite(best) or (value < best if monitor in _MONITORS_MIN else value > best)))
        if better:
            self.best = {"value": value, "epoch": epoch}
            self.bad_epochs = 0
            self._save_best(epoch, metrics, predictions)
        else:
            self.bad_epochs += 1
        self.epoch = epoch
        if self.settings["early_stopping"] and self.bad_epochs >= int(self.settings["patience"]):
            self.finished = True
        if epoch >= int(self.settings["epochs"]):
            self.finished = True
        self._write_history()
        self._save_last(epoch, metrics, predictions)
        self._emit("epoch", dict(row, best_epoch=self.best["epoch"], monitor=monitor, monitor_value=value,
                                 stopping=self.finished and epoch < int(self.settings["epochs"])))

    def _save_best(self, epoch: int, metrics: dict, predictions: dict) -> None:
        _atomic_save({"featx_checkpoint": 1, "backbone": self.settings["backbone"], "classes": self.classes,
                      "model": _cpu_state(self.model), "card": self._card(epoch, metrics),
                      "val_predictions": predictions}, self.best_path)

    def _save_last(self, epoch: int, metrics: dict, predictions: dict) -> None:
        _atomic_save({"featx_checkpoint": 1, "backbone": self.settings["backbone"], "classes": self.classes,
                      "model": _cpu_state(self.model), "card": self._card(epoch, metrics),
                      "val_predictions": predictions,
                      "optimizer": self.optimizer.state_dict(),
                      "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                      "scaler": self.scaler.state_dict(), "epoch": epoch, "rng": _rng_state(self.loader_gen),
                      "history": _plain(self.history), "best": dict(self.best), "bad_epochs": self.bad_epochs,
                      "finished": self.finished}, self.last_path)

    def _write_history(self) -> None:
        path = self.out / "history.csv"
        tmp = path.with_name(path.name + ".tmp")
        fields = list(self.history[0])
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(tmp, path)

    # -- outputs -----------------------------------------------------------------------------------

    def _finish(self) -> dict:
        best = torch.load(self.best_path, map_location="cpu", weights_only=True)
        card = dict(best["card"])  # the sample lists stay in the checkpoint (and provenance.csv)
        card["provenance"] = prov_mod.summary(card.get("provenance") or {})
        _atomic_text(json.dumps(card, indent=2) + "\n", self.out / "card.json")
        # Without early stopping the run is a fixed number of epochs (the study's protocol): report the last
        # epoch, since choosing the best epoch on the validation set and scoring it there is optimistic.
        # best.pt (lowest validation loss) is still kept for `featx extract --weights`.
        scored = best if self.settings["early_stopping"] else torch.load(self.last_path, map_location="cpu",
                                                                          weights_only=True)
        metrics = scored["card"]["metrics"]
        row = self._row(metrics, scored["val_predictions"], int(best["card"]["epoch"]), int(scored["card"]["epoch"]))
        paths = {k: Path(v) for k, v in report.write_results([row], self.out, plots=False).items()}
        title = f"{row['model']}: {row['protocol_label']}"
        curves = report.plot_history(self.history, self.out / "curves.png", title=title)
        confusion = report.plot_confusion(metrics["confusion"], self.classes, self.out / "confusion.png",
                                          title=f"{title}\nepoch {row['scored_epoch']}")
        if row.get("roc"):
            paths["roc"] = report.plot_roc(row["roc"]["fpr"], row["roc"]["tpr"], row.get("roc_auc"),
                                           self.out / "roc.png", title=title)
        summary = {"out": self.out, "best": self.best_path, "last": self.last_path,
                   "history": self.out / "history.csv", "settings": self.out / "settings.json",
                   "card": self.out / "card.json", "curves": curves, "confusion": confusion, "results": paths,
                   "row": row, "epochs_run": self.epoch, "best_epoch": int(best["card"]["epoch"]),
                   "stopped_early": self.epoch < int(self.settings["epochs"]), "settings_used": self.settings,
                   "history_rows": list(self.history), "provenance": self.out / "provenance.csv",
                   "skipped": [{"path": self.collection.samples[i].path, "error": e} for i, e in self.skipped],
                   "skipped_csv": self.out / "skipped.csv"}
        self._emit("end", summary)
        return summary

    def _row(self, metrics: dict, pred: dict, best_epoch: int, scored_epoch: int) -> dict:
        """The result row of the scored epoch, in the format of ``featx compare`` (one fold; head "finetune")."""
        s = self.settings
        subjects = [self.collection.samples[i].subject or "" for i in self.val_idx]
        pooled = {"y_true": pred["y_true"].numpy(), "y_pred": pred["y_pred"].numpy(),
                  "y_score": pred["y_score"].numpy().astype(np.float64), "subjects": subjects, "classes": self.classes,
                  "positive": self.pos}
        summary = summarize_folds([metrics], pooled=pooled, seed=int(s["seed"]))
        name = f"{s['backbone']} fine-tuned" + (" (early-stopped on val)" if s["early_stopping"] else "")
        row = {"model": name, "backbone": s["backbone"], "tap": "logits",
               "head": "finetune", "protocol": self.protocol, "protocol_label": s["protocol_label"],
               "image_level": bool(self.image_level), "n_folds": 1, "n_train": len(self.train_idx),
               "n_test": len(self.val_idx), "n_subjects": len({x for x in subjects if x}),
               "classes": self.classes, "positive": self.classes[self.pos]}
        row.update(summary)
        for m in METRICS:  # one validation set: there is no spread over folds (the CI is the uncertainty)
            row[f"{m}_std"] = None
        row["roc"] = roc_points(pooled["y_true"] == self.pos, pooled["y_score"])
        row["fit_seconds"] = round(sum(float(h["seconds"]) for h in self.history), 3)
        row["best_epoch"] = best_epoch
        row["scored_epoch"] = scored_epoch
        row["epochs_run"] = self.epoch
        row["n_skipped"] = len(self.skipped)
        row["selection"] = (f"epoch {scored_epoch} of {self.epoch}, chosen by validation {s['monitor']} on the "
                            "set it is scored on (optimistic)" if s["early_stopping"] else
                            f"last epoch ({scored_epoch}) of a fixed-length run; best.pt is epoch {best_epoch} "
                            f"by validation {s['monitor']}")
        row["settings"] = _plain({k: v for k, v in s.items() if k not in ("notes", "classes")})
        return _plain(row)


class _ScanSet(torch.utils.data.Dataset):
    """Decodes each image once (no transform): ``""`` or the one-line reason it cannot be read."""

    def __init__(self, collection: Collection, indices: Sequence[int]):
        self.collection, self.indices = collection, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, str]:
        from featx.data.images import load_image

        index = self.indices[i]
        try:
            load_image(self.collection.abspath(index))
        except FeatxError as exc:
            return index, str(exc)
        return index, ""


def _keep_batch(batch):
    return batch


def _scan_images(collection: Collection, indices: Sequence[int], workers: int, *,
                 strict: bool) -> list[tuple[int, str]]:
    """(index, error) of the images among ``indices`` that cannot be read; ``strict`` raises at the first."""
    loader = DataLoader(_ScanSet(collection, indices), batch_size=64, shuffle=False, num_workers=workers,
                        collate_fn=_keep_batch, generator=torch.Generator())  # leaves the global RNG alone
    bad: list[tuple[int, str]] = []
    for batch in loader:
        for index, error in batch:
            if error:
                if strict:
                    raise FeatxError(f"{error}; --strict stops at an unreadable image: fix or remove the file "
                                     "(or run without --strict to skip and record unreadable images)")
                bad.append((int(index), error))
    return bad


def _read_last(path: Path) -> dict:
    """``last.pt`` for ``--resume``; a damaged or foreign file is one line, never a traceback."""
    hint = (f"delete it to start the run again, or choose another --out (best.pt, if present, still holds "
            f"the best epoch so far)")
    try:
        last = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FeatxError(f"--resume: {path} is damaged or not a featx checkpoint ({type(exc).__name__}); "
                         f"{hint}") from None
    need = ("model", "optimizer", "card", "epoch", "rng", "history", "best", "bad_epochs", "finished")
    if not isinstance(last, dict) or any(k not in last for k in need) or not isinstance(last["card"], dict) \
            or "settings" not in last["card"]:
        raise FeatxError(f"--resume: {path} is not a complete featx last.pt (missing training state); {hint}")
    return last


def _atomic_csv(rows: list[tuple], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    os.replace(tmp, path)


def _cpu_state(model: nn.Module) -> dict:
    """The state dict on the CPU, contiguous (channels-last weights saved in the standard layout)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _compare_settings(before: dict, now: dict, path: Path) -> None:
    """Refuse to resume with settings that change the numbers; the message names the first differing one."""
    skip = set(_RUNTIME_KEYS) | set(_INFO_KEYS)
    for key in sorted(set(before) | set(now)):
        if key in skip:
            continue
        a, b = _plain(before.get(key)), _plain(now.get(key))
        if key == "skipped" and not a and not b:  # runs from before skipping was recorded
            continue
        if a != b:
            name = "data" if key == "dataset_fingerprint" else key
            raise FeatxError(f"--resume: setting {name!r} differs from the run in {path.parent} "
                             f"({a!r} there, {b!r} now); use the run's settings (see {path.parent / 'settings.json'}) "
                             "or choose another --out")
