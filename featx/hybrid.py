"""The fully honest hybrid protocol: per outer subject fold, fine-tune, extract, fit heads, test.

``hybrid(data, out, backbone=..., heads=...)`` draws the subject-grouped folds that ``featx classify``
would use over the labelled training rows (held-out phases such as ``prelim``/``final`` stay out). For each
fold it fine-tunes the backbone on the fold's training subjects only (validating on a subject holdout drawn
from those same subjects), extracts the features of the fold's rows with the tuned weights, and scores
every head (fit on the training rows) and the network's own softmax on the held-out subjects. No image or
subject of a test fold ever reaches the network or a head before it is scored, so the head rows and the
"B fine-tuned" row are unbiased and directly comparable (same outer folds).

The run folder::

    out/settings.json                 what the fold work depends on (a re-run must match it)
    out/fold_<k>/finetune/            the fold's `featx finetune` run folder (last.pt, best.pt, history, ...)
    out/fold_<k>/features.h5          the fold's rows (train + test) extracted with the tuned weights
    out/fold_<k>/result.json          written last (atomically): the fold is finished
    out/results.json/.md/.csv         one row per tap x head, and the fine-tuned network's row

Re-running the same call skips finished folds, resumes an interrupted fine-tune (``last.pt``) and an
interrupted extraction (the store resumes by itself). Heads are refit from the stored features on every
run, so head options (``heads``, ``preprocess``, ``params``, ``class_weight``) may change between runs.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import featx
from featx.errors import FeatxError

__all__ = ["INNER_TRAIN", "INNER_VAL", "hybrid", "protocol_label"]

#: Split names given to a fold's training rows for its fine-tune run: the network trains on INNER_TRAIN
#: and validates (early stopping, best.pt) on INNER_VAL, a subject holdout of the fold's training subjects.
INNER_TRAIN, INNER_VAL = "hybrid-train", "hybrid-val"
INNER_FOLDS = 5  # the inner holdout is fold 1 of a subject-grouped 5-fold split, as `featx finetune --val subject`

#: Fine-tuning options passed through to :func:`featx.finetune.finetune` (``None`` = its default).
FINETUNE_OPTIONS = ("weights", "preset", "epochs", "lr", "batch_size", "optimizer", "momentum", "weight_decay",
                    "schedule", "dropout", "finetune_class_weight", "freeze", "image_size", "augment",
                    "color_jitter", "early_stopping", "patience")


def protocol_label(n_folds: int) -> str:
    return f"hybrid subject-level {n_folds}-fold (network fine-tuned per fold on training subjects)"


def hybrid(data: str | Path, out: str | Path, *, backbone: str, heads: Sequence[str] | str,
           taps: Sequence[str] | str | None = None, n_folds: int = 5, seed: int = 0,
           preprocess: str | None = "standard", params: dict | None = None, class_weight=None,
           positive: str | None = None, jobs: int = 1, n_boot: int = 1000,
           weights: str | None = None, preset: str | None = None, epochs: int | None = None,
           lr: float | None = None, batch_size: int | None = None, optimizer: str | None = None,
           momentum: float | None = None, weight_decay: float | None = None, schedule: str | None = None,
           dropout: float | None = None, finetune_class_weight: str | None = None, freeze: str | None = None,
           image_size: int | None = None, augment: bool | None = None, color_jitter: bool | None = None,
           early_stopping: str | None = None, patience: int = 5, device: str = "auto",
           workers: int | None = None, plots: bool = True,
           callback: Callable[[str, dict], None] | None = None) -> dict:
    """Run the hybrid protocol on the images of ``data``; write ``out``; return ``{"rows", "paths", "folds"}``.

    ``heads``: head names (``"svm,logistic"``); ``taps``: tap specs, one row set each (``["fc7", "fc7+pool5"]``,
    default the backbone's tap); ``n_folds``/``seed``: the outer subject folds (as ``featx classify``);
    ``preprocess``/``params``/``class_weight``/``jobs``/``n_boot``: as in :func:`featx.evaluate.compare`.
    The fine-tuning options are those of :func:`featx.finetune.finetune` (``finetune_class_weight`` is its
    ``class_weight``); the network is scored at ``last.pt`` for a fixed-length run, at ``best.pt`` (chosen on
    the inner holdout) with ``early_stopping``. ``callback(event, info)`` gets ``"fold"`` (info ``status``:
    ``start``, ``skipped`` or ``done``), ``"epoch"`` (the fine-tune's epoch info) and ``"heads"``;
    every ``info`` holds ``fold`` and ``n_folds``.
    """
    from featx.data import discover
    from featx.evaluate import _as_list, _check_params, make_splits, resolve_positive
    from featx.heads import get_head

    head_names = [get_head(h).name for h in _as_list(heads)]
    if not head_names:
        raise FeatxError("no heads given; pass e.g. --heads svm,logistic")
    _check_params(params, head_names)  # a typo fails now, not after hours of fine-tuning
    tap_specs, extract_taps = _taps(backbone, taps)
    out = Path(out)
    collection = discover(data)
    classes = list(collection.classes)
    if len(classes) < 2:
        raise FeatxError(f"{collection.root}: the hybrid protocol needs at least two classes, found "
                         f"{classes or 'no labelled images'}")
    pos = resolve_positive(classes, positive)
    labelled = [i for i, s in enumerate(collection.samples) if s.label is not None]
    if not labelled:
        raise FeatxError(f"{collection.root}: no labelled images; the hybrid protocol needs class labels")
    subjects = np.array([collection.samples[i].subject or "" for i in labelled], dtype=object)
    if (subjects == "").any():
        names = [collection.samples[labelled[i]].path for i in np.flatnonzero(subjects == "")[:3]]
        raise FeatxError(f"{int((subjects == '').sum())} labelled image(s) in {collection.root} have no subject id "
                         f"(first: {', '.join(names)}); the hybrid protocol holds out subjects: fix those file "
                         "names or use a manifest with a subject column")
    y = np.array([classes.index(collection.samples[i].label) for i in labelled], dtype=np.int64)
    splits = np.array([collection.samples[i].split or "" for i in labelled], dtype=object)
    outer = make_splits(subjects, y, splits, cv="subject", n_folds=n_folds, seed=seed)
    folds = [(np.array([labelled[i] for i in a]), np.array([labelled[i] for i in b])) for a, b in outer.folds]

    ft_options = dict(weights=None if weights is None else str(weights), preset=preset, epochs=epochs, lr=lr,
                      batch_size=batch_size, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                      schedule=schedule, dropout=dropout, finetune_class_weight=finetune_class_weight, freeze=freeze,
                      image_size=image_size, augment=augment, color_jitter=color_jitter,
                      early_stopping=early_stopping, patience=int(patience))
    settings = {"kind": "featx hybrid", "backbone": backbone, "taps": extract_taps, "n_folds": int(n_folds),
                "seed": int(seed), "positive": classes[pos], "classes": classes,
                "dataset_fingerprint": collection.fingerprint(), "finetune": ft_options,
                "data_root": str(collection.root), "featx_version": featx.__version__}
    _check_or_write_settings(out, settings)

    emit = callback or (lambda event, info: None)
    runtime = dict(device=device, workers=workers, batch_size=int(batch_size or 32))
    records = []
    for k, (train, test) in enumerate(folds, start=1):
        records.append(_run_fold(collection, out / f"fold_{k}", k, len(folds), train, test, backbone=backbone,
                                 taps=extract_taps, seed=seed, positive=classes[pos], options=ft_options,
                                 runtime=runtime, emit=emit))

    rows = []
    for spec in tap_specs:
        emit("heads", {"fold": None, "n_folds": len(folds), "tap": spec, "heads": head_names})
        rows.extend(_head_rows(out, records, folds, collection, spec, head_names, backbone=backbone, pos=pos,
                               seed=seed, preprocess=preprocess, params=params, class_weight=class_weight,
                               device=device, jobs=jobs, n_boot=n_boot, note=outer.note))
    rows.append(_network_row(records, collection, folds, backbone=backbone, pos=pos, seed=seed, n_boot=n_boot,
                             early_stopping=early_stopping, settings=settings))
    from featx.report import write_results

    paths = write_results(rows, out, plots=plots)
    return {"rows": rows, "paths": paths, "folds": records, "out": out}


# --------------------------------------------------------------------------------------------- settings

def _taps(backbone: str, taps) -> tuple[list[str], list[str]]:
    """Tap specs (one row set each) and the taps to extract, in the backbone's order."""
    from featx.backbones import get_config
    from featx.evaluate import _as_list
    from featx.extract import parse_taps
    from featx.store import DEFAULT_TAPS

    available = list(get_config(backbone).taps)
    specs = _as_list(taps) or [DEFAULT_TAPS.get(backbone, available[-1])]
    needed = {t for spec in specs for t in spec.split("+") if t}
    return specs, parse_taps(sorted(needed), available)


def _atomic_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


_INFO_KEYS = ("data_root", "featx_version")


def _check_or_write_settings(out: Path, settings: dict) -> None:
    """Write ``out/settings.json`` while no fold work exists; once it does, refuse a setting that changes it."""
    path = out / "settings.json"
    work = [p for pattern in ("fold_*/result.json", "fold_*/features.h5", "fold_*/finetune/last.pt")
            for p in out.glob(pattern)]
    if not work:  # nothing to resume: a first run, or one that failed before any epoch (e.g. a bad --lr)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_json(settings, path)
        return
    if not path.exists():
        raise FeatxError(f"{out} holds fold work ({work[0].relative_to(out)}) but no settings.json; it is not a "
                         "`featx hybrid` run folder (or it was damaged): choose another --out")
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FeatxError(f"{path} is not readable JSON; restore it or choose another --out") from None
    flat_before, flat_now = _flatten(before), _flatten(json.loads(json.dumps(settings)))
    for key in sorted(set(flat_before) | set(flat_now)):
        if key in _INFO_KEYS:
            continue
        a, b = flat_before.get(key), flat_now.get(key)
        if a != b:
            name = "data" if key == "dataset_fingerprint" else key.replace("finetune.", "")
            raise FeatxError(f"{out}: setting {name!r} differs from the run there ({a!r} there, {b!r} now); "
                             f"re-run with the settings in {path} to resume, or choose another --out")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------------------------- one fold

def _inner_collection(collection, train: np.ndarray, seed: int, fold: int):
    """The fold's training rows, with splits INNER_TRAIN/INNER_VAL: fold 1 of a subject-grouped split of
    the fold's training subjects is the fine-tune's validation set (the same draw as ``--val subject``)."""
    from featx.evaluate import make_splits

    sub = collection.subset(train)
    y = np.array([sub.classes.index(s.label) for s in sub.samples], dtype=np.int64)
    subjects = np.array([s.subject for s in sub.samples], dtype=object)
    n_subjects = len(set(subjects))
    inner = None
    for k in range(min(INNER_FOLDS, n_subjects), 1, -1):  # fewer inner folds when few subjects allow no other
        try:
            inner = make_splits(subjects, y, None, cv="subject", n_folds=k, seed=seed)
            break
        except FeatxError:
            continue
    if inner is None:
        raise FeatxError(f"fold {fold}: its {n_subjects} training subject(s) cannot be split into inner training "
                         "and validation subjects with both classes in training; use fewer --folds (more training "
                         "subjects per fold) or data with more subjects")
    val = set(inner.folds[0][1].tolist())
    sub.samples = [replace(s, split=INNER_VAL if i in val else INNER_TRAIN) for i, s in enumerate(sub.samples)]
    return sub


def _run_fold(collection, fold_dir: Path, k: int, n_folds: int, train: np.ndarray, test: np.ndarray, *,
              backbone: str, taps: list[str], seed: int, positive: str, options: dict, runtime: dict,
              emit) -> dict:
    """Fine-tune, extract and score the network on one outer fold, or read the record of a finished fold."""
    from featx.files import sha256_file
    from featx.extract import extract
    from featx.finetune import finetune

    train_subjects = sorted({collection.samples[i].subject for i in train})
    test_subjects = sorted({collection.samples[i].subject for i in test})
    done_path = fold_dir / "result.json"
    info = {"fold": k, "n_folds": n_folds, "train_subjects": train_subjects, "test_subjects": test_subjects,
            "n_train": int(len(train)), "n_test": int(len(test))}
    if done_path.exists():
        record = json.loads(done_path.read_text(encoding="utf-8"))
        if record.get("train_subjects") != train_subjects or record.get("test_subjects") != test_subjects:
            raise FeatxError(f"{done_path} was made with other folds (subjects differ); the data or the fold "
                             f"draw changed: delete {fold_dir.parent} or choose another --out")
        if not (fold_dir / record["store"]).exists():
            raise FeatxError(f"{fold_dir / record['store']} is missing although the fold is marked finished; "
                             f"delete {fold_dir} to recompute that fold")
        emit("fold", dict(info, status="skipped"))
        return record

    emit("fold", dict(info, status="start"))
    inner = _inner_collection(collection, train, seed, k)
    ft_dir = fold_dir / "finetune"
    ft_kwargs = {key: value for key, value in options.items() if key != "finetune_class_weight"}
    summary = finetune(inner, ft_dir, backbone=backbone, class_weight=options["finetune_class_weight"],
                       val=INNER_VAL, positive=positive, device=runtime["device"], workers=runtime["workers"],
                       seed=seed, resume=(ft_dir / "last.pt").exists(),
                       callback=lambda event, e: emit("epoch", dict(e, fold=k, n_folds=n_folds))
                       if event == "epoch" else None, **ft_kwargs)
    checkpoint = Path(summary["best"] if summary["settings_used"]["early_stopping"] else summary["last"])

    rows = np.sort(np.concatenate([train, test]))
    store = fold_dir / "features.h5"
    extract(collection.subset(rows), store, backbone=backbone, weights=checkpoint, taps=taps,
            device=runtime["device"], batch_size=runtime["batch_size"], workers=runtime["workers"], seed=seed,
            progress=False)
    proba = _network_proba(collection, test, checkpoint, backbone, device=runtime["device"],
                           batch_size=runtime["batch_size"], workers=runtime["workers"])
    last = summary["history_rows"][-1]
    record = dict(info, checkpoint=str(checkpoint.relative_to(fold_dir)), store=store.name,
                  checkpoint_sha256=sha256_file(checkpoint), epochs_run=int(summary["epochs_run"]),
                  scored_epoch=int(summary["row"].scored_epoch or summary["epochs_run"]),
                  best_epoch=int(summary["best_epoch"]), finetune_seconds=float(summary["row"].fit_seconds),
                  train_acc_last_epoch=float(last["train_acc"]),
                  inner_val_subjects=sorted({s.subject for s in inner.samples if s.split == INNER_VAL}),
                  network={"paths": [collection.samples[i].path for i in test],
                           "y_true": [collection.classes.index(collection.samples[i].label) for i in test],
                           "proba": [[round(float(p), 8) for p in r] for r in proba]})
    _atomic_json(record, done_path)  # last: the fold is finished
    emit("fold", dict(info, status="done", train_acc=record["train_acc_last_epoch"]))
    return record


def _network_proba(collection, indices: np.ndarray, checkpoint: Path, backbone: str, *, device: str,
                   batch_size: int, workers: int | None) -> np.ndarray:
    """Softmax of the tuned network on ``indices`` (eval mode, the checkpoint's preprocessing), in that order."""
    import torch
    from torch.utils.data import DataLoader

    from featx.backbones import create_backbone
    from featx.data import ImageDataset, make_transform
    from featx.device import autocast, resolve_device
    from featx.extract import default_workers

    model = create_backbone(backbone, checkpoint)
    if model.classes is not None and list(model.classes) != list(collection.classes):
        raise FeatxError(f"{checkpoint}: classes {model.classes} differ from the data's {collection.classes}")
    card = model.weights_info.card or {}
    size = int(card.get("preprocessing", {}).get("input_size") or model.config.input_size)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    ds = ImageDataset(collection, make_transform(size, model.config.mean, model.config.std),
                      indices=[int(i) for i in indices])
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False,
                        num_workers=default_workers() if workers is None else int(workers))
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        for images, index, error in loader:
            bad = [e for e in error if e]
            if bad:
                raise FeatxError(f"{bad[0]}; the hybrid protocol needs every image of the fold: fix or remove it")
            with autocast(dev):
                logits = model(images.to(dev))
            for i, p in zip(index.tolist(), torch.softmax(logits.float(), 1).cpu().numpy()):
                out[int(i)] = p
    return np.stack([out[int(i)] for i in indices])


# --------------------------------------------------------------------------------------------- rows

def _head_rows(out: Path, records: list[dict], folds, collection, tap: str, heads: list[str], *, backbone: str,
               pos: int, seed: int, preprocess, params, class_weight, device, jobs: int, n_boot: int,
               note: str) -> list[dict]:
    """Every head on every fold's own tuned features: one FeatureSet of the folds' blocks stacked, each
    fold training and testing only inside its block, through the grid `featx compare` runs."""
    from featx.evaluate import Protocol, _run_grid
    from featx.store import load_features

    parts, protocol_folds, offset = [], [], 0
    for (train, test), record in zip(folds, records):
        store = out / f"fold_{record['fold']}" / record["store"]
        fs = load_features(store, tap, labelled=True)
        where = {p: i for i, p in enumerate(fs.paths)}
        want = [collection.samples[i].path for i in train] + [collection.samples[i].path for i in test]
        missing = [p for p in want if p not in where]
        if missing:
            raise FeatxError(f"{store}: {len(missing)} row(s) of fold {record['fold']} have no features "
                             f"(first {missing[0]}); delete {store.parent} to recompute that fold")
        block = fs.select(np.array([where[p] for p in want]))
        parts.append(block)
        protocol_folds.append((offset + np.arange(len(train)), offset + len(train) + np.arange(len(test))))
        offset += len(want)
    first = parts[0]
    digest = hashlib.sha256("".join(p.fingerprint for p in parts).encode()).hexdigest()
    per_row = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(first)
               if all(isinstance(getattr(p, f.name), np.ndarray) and len(getattr(p, f.name)) == len(p) for p in parts)}
    stacked = replace(first, **per_row, name=f"{backbone}[fine-tuned per fold]/{tap}",
                      settings=[s for p in parts for s in p.settings], fingerprint=digest,
                      stores=[s for p in parts for s in p.stores], store_taps=[t for p in parts for t in p.store_taps])
    protocol = Protocol("hybrid", protocol_label(len(folds)), False, protocol_folds, seed, note, stacked.subjects)
    rows = _run_grid(stacked, heads, protocol, positive=pos, jobs=jobs, seed=seed, preprocess=preprocess,
                     class_weight=class_weight, device=device, params=params, n_boot=n_boot)
    for row in rows:
        row["settings"]["checkpoints"] = [f"fold_{r['fold']}/{r['checkpoint']}" for r in records]
    return rows


def _network_row(records: list[dict], collection, folds, *, backbone: str, pos: int, seed: int, n_boot: int,
                 early_stopping: str | None, settings: dict) -> dict:
    """The tuned networks' own softmax on the same outer folds, summarised as the head rows are."""
    from featx.evaluate import compute_metrics, roc_points, summarize_folds

    classes = list(collection.classes)
    subjects_of = {s.path: s.subject for s in collection.samples}
    fold_metrics, trues, preds, scores, subj, fold_of = [], [], [], [], [], []
    for k, record in enumerate(records):
        net = record["network"]
        y_true = np.asarray(net["y_true"], dtype=np.int64)
        proba = np.asarray(net["proba"], dtype=np.float64)
        y_pred = proba.argmax(1)
        fold_subjects = np.array([subjects_of[p] for p in net["paths"]], dtype=object)
        fold_metrics.append(compute_metrics(y_true, y_pred, proba[:, pos], classes=classes, positive=pos,
                                            subjects=fold_subjects))
        trues.append(y_true), preds.append(y_pred), scores.append(proba[:, pos]), subj.append(fold_subjects)
        fold_of.append(np.full(len(y_true), k))
    pooled = {"y_true": np.concatenate(trues), "y_pred": np.concatenate(preds), "y_score": np.concatenate(scores),
              "classes": classes, "positive": pos, "subjects": np.concatenate(subj),
              "fold": np.concatenate(fold_of)}
    summary = summarize_folds(fold_metrics, pooled=pooled, n_boot=n_boot, seed=seed)
    name = f"{backbone} fine-tuned" + (" (early-stopped on inner val)" if early_stopping else "")
    row: dict[str, Any] = {
        "model": name, "backbone": backbone, "tap": "logits", "head": "finetune", "protocol": "hybrid",
        "protocol_label": protocol_label(len(folds)), "image_level": False, "n_folds": len(folds),
        "n_train": int(round(np.mean([len(a) for a, _ in folds]))), "n_test": int(len(pooled["y_true"])),
        "n_subjects": len({collection.samples[int(i)].subject for a, b in folds for i in np.concatenate([a, b])}),
        "classes": classes, "positive": classes[pos],
    }
    row.update(summary)
    row["roc"] = roc_points(pooled["y_true"] == pos, pooled["y_score"], folds=pooled["fold"])
    row["fit_seconds"] = round(sum(r["finetune_seconds"] for r in records), 3)
    row["train_accuracy_last_epoch"] = [r["train_acc_last_epoch"] for r in records]
    row["scored_epochs"] = [r["scored_epoch"] for r in records]
    row["settings"] = {"finetune": settings["finetune"], "seed": seed, "n_boot": n_boot,
                       "checkpoints": [f"fold_{r['fold']}/{r['checkpoint']}" for r in records]}
    return row
