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
    out/fold_<k>/finetune/            the fold's `featx finetune` run folder (history, ...) with the one
                                      checkpoint the fold is scored at: last.pt, or best.pt with early_stopping
    out/fold_<k>/features.h5          the fold's rows (train + test) extracted with the tuned weights
    out/fold_<k>/result.json          written last (atomically): the fold is finished
    out/results.json/.md/.csv         one row per tap x head, and the fine-tuned network's row (hybrid_rows.py)

Re-running the same call skips finished folds, resumes an interrupted fine-tune (``last.pt``) and an
interrupted extraction (the store resumes by itself). A call that fails before any fold work (e.g. missing
ImageNet weights) removes the run folder it created. ``preset="paper"`` from random weights warns (the
``"warning"`` event, or :func:`warnings.warn` without a callback) and ``settings.json`` records it. Heads
are refit from the stored features on every run, so head options (``heads``, ``preprocess``, ``params``,
``class_weight``) may change between runs.
"""
from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import featx
from featx.backbones import create_backbone, get_config
from featx.data import discover
from featx.data.images import ImageDataset, make_transform
from featx.device import autocast, resolve_device
from featx.errors import FeatxError, arg, command
from featx.evaluation import Hybrid, SubjectKFold, compare_rows, resolve_positive
from featx.extract import extract, select_taps
from featx.files import atomic_json, sha256_file
from featx.finetune import FinetuneSettings, preset_warning
from featx.finetune import finetune as run_finetune
from featx.finetune.batches import default_workers
from featx.finetune.checkpoint import has_run, new_root
from featx.heads import HeadSettings, get_head
from featx.keywords import Slot, typed_arguments
from featx.records import Record
from featx.report import refuse_results_folder, write_results
from featx.results import ResultRow
from featx.workflows.hybrid_rows import head_rows, network_row, protocol_label

__all__ = ["FINETUNE_OPTIONS", "INNER_TRAIN", "INNER_VAL", "HybridResult", "hybrid", "protocol_label"]

#: Split names given to a fold's training rows for its fine-tune run: the network trains on INNER_TRAIN
#: and validates (early stopping, best.pt) on INNER_VAL, a subject holdout of the fold's training subjects.
INNER_TRAIN, INNER_VAL = "hybrid-train", "hybrid-val"
INNER_FOLDS = 5  # the inner holdout is fold 1 of a subject-grouped 5-fold split, as `featx finetune --val subject`

#: The fine-tuning keywords ``hybrid`` still takes, each a field of :class:`FinetuneSettings` (``None`` = the
#: preset's or the backbone's default); ``finetune_class_weight`` is its ``class_weight``.
FINETUNE_OPTIONS = ("weights", "preset", "epochs", "lr", "batch_size", "optimizer", "momentum", "weight_decay",
                    "schedule", "dropout", "finetune_class_weight", "freeze", "image_size", "augment",
                    "color_jitter", "early_stopping", "patience", "weights_never_saw_images")


@dataclass(frozen=True)
class HybridResult(Record):
    """What :func:`hybrid` returns; also a read-only mapping of its fields (``result["rows"]``, as the dict it
    returned before; :class:`featx.records.Record`)."""
    rows: list[ResultRow]          # one per tap x head, then the fine-tuned network's row
    paths: dict[str, Path]         # the files written to ``out`` by kind
    folds: list[dict]              # each outer fold's record (its result.json)
    out: Path                      # the run folder


def hybrid(data: str | Path, out: str | Path, *, backbone: str, heads: Sequence[str],
           taps: Sequence[str | Sequence[str]] | None = None, folds: Hybrid | None = None,
           heads_settings: HeadSettings | None = None, finetune: FinetuneSettings | None = None,
           positive: str | None = None, jobs: int | None = None, device: str = "auto", workers: int | None = None,
           plots: bool = True, callback: Callable[[str, dict], None] | None = None, **options) -> HybridResult:
    """Run the hybrid protocol on the images of ``data`` and write its run folder ``out``.

    ``heads``: head names (``["svm", "logistic"]``); ``taps``: one row set each, a tap name or a list of taps
    whose features are concatenated (``["fc7", ["fc7", "pool5"]]``; default the backbone's default tap);
    ``folds``: the outer subject folds (:class:`featx.evaluation.Hybrid`, as ``featx classify``'s; default
    ``Hybrid(5, seed=0)``); its seed is the run's: the inner holdout, the fine-tunes, the extraction and every
    head. ``heads_settings`` (:class:`featx.heads.HeadSettings`): the heads' preprocessing, parameters and class
    weights (its device and seed are the run's); ``jobs``: as in :func:`featx.evaluation.compare`.
    ``finetune`` (:class:`featx.finetune.FinetuneSettings`): the options of :func:`featx.finetune.finetune`;
    the network is scored at ``last.pt`` for a fixed-length run, at ``best.pt`` (chosen on the inner holdout)
    with ``early_stopping``. The fields of the three may be given as keywords instead: ``n_folds``, ``seed``,
    ``preprocess``, ``params``, ``class_weight`` and :data:`FINETUNE_OPTIONS` (``finetune_class_weight`` is
    the fine-tune's ``class_weight``); a keyword also set in an object given is a TypeError.
    ``callback(event, info)`` gets ``"fold"`` (info ``status``: ``start``, ``skipped`` or ``done``),
    ``"epoch"`` (the fine-tune's epoch info), ``"heads"`` and, per head fitted on an outer fold, ``"fit"``
    (``done``, ``total``, ``head``, ``head_fold``, ``tap``); every ``info`` holds ``fold`` and ``n_folds``.
    Returns a :class:`HybridResult` (``rows``, ``paths``, ``folds``: each fold's record, ``out``).
    """
    made = typed_arguments("hybrid", [
        Slot("folds", Hybrid, folds, {"n_folds": "k", "seed": "seed"}),
        Slot("heads_settings", HeadSettings, heads_settings, {k: k for k in ("preprocess", "params", "class_weight")}),
        Slot("finetune", FinetuneSettings, finetune,
             {k: "class_weight" if k == "finetune_class_weight" else k for k in FINETUNE_OPTIONS})], options)
    folds, tuning = made["folds"], made["finetune"]
    n_folds, seed = folds.k, folds.seed
    heads_settings = replace(made["heads_settings"], device=device, seed=seed)
    head_names = [get_head(h).name for h in ([heads] if isinstance(heads, str) else heads)]
    if not head_names:
        raise FeatxError(f"{arg('heads')}: no heads given; name at least one (e.g. svm)")
    # a typo in a head's parameters failed already (HeadSettings), not after hours of fine-tuning
    tap_specs, extract_taps = _tap_specs(backbone, taps)
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
    outer = folds.split_rows(subjects, y, splits)
    fold_rows = [(np.array([labelled[i] for i in a]), np.array([labelled[i] for i in b])) for a, b in outer.folds]

    ft_options = _recorded(tuning)
    settings = {"kind": "featx hybrid", "backbone": backbone, "taps": extract_taps, "n_folds": int(n_folds),
                "seed": int(seed), "positive": classes[pos], "classes": classes,
                "dataset_fingerprint": collection.fingerprint(), "finetune": ft_options,
                "data_root": str(collection.root), "featx_version": featx.__version__}
    warning = preset_warning(backbone, tuning.resolve(backbone))
    if warning:
        settings["warning"] = str(FeatxError(warning))
    refuse_results_folder(out, "hybrid")
    created = new_root(out)
    _check_or_write_settings(out, settings)

    emit = callback or (lambda event, info: None)
    if warning and callback is not None:
        emit("warning", {"message": str(FeatxError(warning)), "template": warning})
    elif warning:
        warnings.warn(str(FeatxError(warning)), UserWarning, stacklevel=2)
    runtime = dict(device=device, workers=workers, batch_size=int(tuning.batch_size or 32))
    records = []
    try:
        for k, (train, test) in enumerate(fold_rows, start=1):
            records.append(_run_fold(collection, out / f"fold_{k}", k, len(fold_rows), train, test, backbone=backbone,
                                     taps=extract_taps, seed=seed, positive=classes[pos], options=ft_options,
                                     runtime=runtime, emit=emit))
    except BaseException:
        if created is not None and not _fold_work(out):  # failed before any work worth keeping: no folder left
            shutil.rmtree(created, ignore_errors=True)
        raise

    rows: list[ResultRow] = []
    for spec in tap_specs:
        where = {"fold": None, "n_folds": len(fold_rows), "tap": "+".join(spec)}
        emit("heads", dict(where, heads=head_names))
        rows.extend(head_rows(out, records, fold_rows, collection, spec, head_names, backbone=backbone, pos=pos,
                              settings=heads_settings, jobs=jobs, note=outer.note,
                              on_fit=lambda e, where=where: emit("fit", dict(where, done=e.done, total=e.total,
                                                                             head=e.head, head_fold=e.fold))))
    rows.append(network_row(out, records, collection, fold_rows, backbone=backbone, pos=pos, seed=seed,
                            early_stopping=tuning.early_stopping, finetune_options=ft_options))
    rows = compare_rows(rows)  # every row on the same outer folds: paired differences from the best
    paths = write_results(rows, out, plots=plots)
    return HybridResult(rows=rows, paths=paths, folds=records, out=out)


# --------------------------------------------------------------------------------------------- settings

def _tap_specs(backbone: str, taps) -> tuple[list[list[str]], list[str]]:
    """The taps of each row set (a list: several are concatenated) and the taps to extract, in the backbone's
    order."""
    config = get_config(backbone)
    if isinstance(taps, str):
        taps = [taps]
    specs = [[t] if isinstance(t, str) else list(t) for t in (taps or [config.default_tap])]
    needed = {t for spec in specs for t in spec}
    config.check_taps(sorted(needed))
    available = config.taps if needed <= set(config.taps) else config.tap_widths()   # graph nodes: any model
    return specs, select_taps(sorted(needed), list(available))


def _recorded(tuning: FinetuneSettings) -> dict:
    """The fine-tuning options as settings.json records them (a re-run must match): FINETUNE_OPTIONS' names,
    ``weights_never_saw_images`` only when set (run folders of an earlier featx resume with the same settings)."""
    given = tuning.options()
    recorded = {key: given["class_weight" if key == "finetune_class_weight" else key] for key in FINETUNE_OPTIONS
                if key != "weights_never_saw_images"}
    recorded["patience"] = int(recorded["patience"])
    if tuning.weights_never_saw_images:
        recorded["weights_never_saw_images"] = True
    return recorded


_INFO_KEYS = ("data_root", "featx_version", "warning")


def _check_or_write_settings(out: Path, settings: dict) -> None:
    """Write ``out/settings.json`` while no fold work exists; once it does, refuse a setting that changes it."""
    path = out / "settings.json"
    work = _fold_work(out)
    if not work:  # nothing to resume: a first run, or one that failed before any epoch (e.g. a bad --lr)
        out.mkdir(parents=True, exist_ok=True)
        atomic_json(path, settings)
        return
    if not path.exists():
        raise FeatxError(f"{out} holds fold work ({work[0].relative_to(out)}) but no settings.json; it is not a "
                         f"{command('hybrid', 'featx.hybrid(...)')} run folder (or it was damaged): choose another "
                         f"{arg('out')}")
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FeatxError(f"{path} is not readable JSON; restore it or choose another {arg('out')}") from None
    flat_before, flat_now = _flatten(before), _flatten(json.loads(json.dumps(settings)))
    for key in sorted(set(flat_before) | set(flat_now)):
        if key in _INFO_KEYS:
            continue
        a, b = flat_before.get(key), flat_now.get(key)
        if a != b:
            name = "data" if key == "dataset_fingerprint" else key.replace("finetune.", "")
            raise FeatxError(f"{out}: setting {name!r} differs from the run there ({a!r} there, {b!r} now); "
                             f"re-run with the settings in {path} to resume, or choose another {arg('out')}")


def _fold_work(out: Path) -> list[Path]:
    """What a re-run resumes from: finished folds, stores, fine-tunes with a checkpoint or finished."""
    return [p for pattern in ("fold_*/result.json", "fold_*/features.h5", "fold_*/finetune/last.pt",
                              "fold_*/finetune/best.pt", "fold_*/finetune/results.json") for p in out.glob(pattern)]


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
    sub = collection.subset(train)
    y = np.array([sub.classes.index(s.label) for s in sub.samples], dtype=np.int64)
    subjects = np.array([s.subject for s in sub.samples], dtype=object)
    n_subjects = len(set(subjects))
    inner = None
    for k in range(min(INNER_FOLDS, n_subjects), 1, -1):  # fewer inner folds when few subjects allow no other
        try:
            inner = SubjectKFold(k, seed).split_rows(subjects, y, None)
            break
        except FeatxError:
            continue
    if inner is None:
        raise FeatxError(f"fold {fold}: its {n_subjects} training subject(s) cannot be split into inner training "
                         f"and validation subjects with both classes in training; use fewer {arg('n_folds')} (more "
                         "training subjects per fold) or data with more subjects")
    val = set(inner.folds[0][1].tolist())
    sub.samples = [replace(s, split=INNER_VAL if i in val else INNER_TRAIN) for i, s in enumerate(sub.samples)]
    return sub


def _run_fold(collection, fold_dir: Path, k: int, n_folds: int, train: np.ndarray, test: np.ndarray, *,
              backbone: str, taps: list[str], seed: int, positive: str, options: dict, runtime: dict,
              emit) -> dict:
    """Fine-tune, extract and score the network on one outer fold, or read the record of a finished fold."""
    train_subjects = sorted({collection.samples[i].subject for i in train})
    test_subjects = sorted({collection.samples[i].subject for i in test})
    done_path = fold_dir / "result.json"
    info = {"fold": k, "n_folds": n_folds, "train_subjects": train_subjects, "test_subjects": test_subjects,
            "n_train": int(len(train)), "n_test": int(len(test))}
    if done_path.exists():
        record = json.loads(done_path.read_text(encoding="utf-8"))
        if record.get("train_subjects") != train_subjects or record.get("test_subjects") != test_subjects:
            raise FeatxError(f"{done_path} was made with other folds (subjects differ); the data or the fold "
                             f"draw changed: delete {fold_dir.parent} or choose another {arg('out')}")
        if not (fold_dir / record["store"]).exists():
            raise FeatxError(f"{fold_dir / record['store']} is missing although the fold is marked finished; "
                             f"delete {fold_dir} to recompute that fold")
        emit("fold", dict(info, status="skipped"))
        return record

    emit("fold", dict(info, status="start"))
    inner = _inner_collection(collection, train, seed, k)
    ft_dir = fold_dir / "finetune"
    ft_kwargs = {key: value for key, value in options.items() if key != "finetune_class_weight"}
    # keep only the checkpoint the fold is scored and extracted at (last.pt while the fine-tune is unfinished)
    summary = run_finetune(inner, ft_dir, backbone=backbone, class_weight=options["finetune_class_weight"],
                       val=INNER_VAL, positive=positive, device=runtime["device"], workers=runtime["workers"],
                       seed=seed, resume=has_run(ft_dir), keep="best" if options["early_stopping"] else "last",
                       callback=lambda event, e: emit("epoch", dict(e, fold=k, n_folds=n_folds))
                       if event == "epoch" else None, **ft_kwargs)
    checkpoint = Path(summary["best"] if summary["settings_used"]["early_stopping"] else summary["last"])

    rows = np.sort(np.concatenate([train, test]))
    store = fold_dir / "features.h5"
    extract(collection.subset(rows), store, backbone=backbone, weights=checkpoint, taps=taps,
            device=runtime["device"], batch_size=runtime["batch_size"], workers=runtime["workers"], seed=seed)
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
    atomic_json(done_path, record)  # last: the fold is finished
    emit("fold", dict(info, status="done", train_acc=record["train_acc_last_epoch"]))
    return record


def _network_proba(collection, indices: np.ndarray, checkpoint: Path, backbone: str, *, device: str,
                   batch_size: int, workers: int | None) -> np.ndarray:
    """Softmax of the tuned network on ``indices`` (eval mode, the checkpoint's preprocessing), in that order."""
    network = create_backbone(backbone, checkpoint)
    if network.classes is not None and list(network.classes) != list(collection.classes):
        raise FeatxError(f"{checkpoint}: classes {network.classes} differ from the data's {collection.classes}")
    size = network.input_size()   # the side the checkpoint was trained at
    dev = resolve_device(device)
    network = network.to(dev).eval()
    ds = ImageDataset(collection, make_transform(size, network.config.mean, network.config.std),
                      indices=[int(i) for i in indices])
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False,
                        num_workers=default_workers(dev) if workers is None else int(workers))
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        for images, index, error in loader:
            bad = [e for e in error if e]
            if bad:
                raise FeatxError(f"{bad[0]}; the hybrid protocol needs every image of the fold: fix or remove it")
            with autocast(dev):
                logits = network(images.to(dev))
            for i, p in zip(index.tolist(), torch.softmax(logits.float(), 1).cpu().numpy()):
                out[int(i)] = p
    return np.stack([out[int(i)] for i in indices])
